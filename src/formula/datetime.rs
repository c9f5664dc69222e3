//! Date and time semantics shared by the evaluator, mirrored by the SQL helpers.
//!
//! All calendar arithmetic happens on UTC wall-clock time (`NaiveDateTime` here,
//! `timestamp without time zone` via `at time zone 'UTC'` in SQL) so the session time zone
//! never changes a result. Results are kept within years 1–9999; anything outside is blank.

use chrono::{
    DateTime, Datelike, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike, Utc,
};

fn min_ts() -> NaiveDateTime {
    NaiveDateTime::MIN.max(first_day().and_time(NaiveTime::MIN))
}

fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(1, 1, 1).unwrap_or(NaiveDate::MIN)
}

fn last_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or(NaiveDate::MAX)
}

/// Exclusive upper bound for datetimes: 10000-01-01T00:00.
fn end_ts() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(10000, 1, 1)
        .unwrap_or(NaiveDate::MAX)
        .and_time(NaiveTime::MIN)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    next.and_then(|n| n.pred_opt()).map_or(28, |d| d.day())
}

/// A date from year/month/day, blank unless valid (`panels_make_date`).
pub fn make_date(y: f64, m: f64, d: f64) -> Option<NaiveDate> {
    let (y, m, d) = (y.trunc(), m.trunc(), d.trunc());
    if !(1.0..=9999.0).contains(&y) || !(1.0..=12.0).contains(&m) || d < 1.0 {
        return None;
    }
    let (y, m) = (y as i32, m as u32);
    if d > f64::from(days_in_month(y, m)) {
        return None;
    }
    NaiveDate::from_ymd_opt(y, m, d as u32)
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn strict_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = digits(&s[0..4])?;
    let m = digits(&s[5..7])?;
    let d = digits(&s[8..10])?;
    make_date(f64::from(y), f64::from(m), f64::from(d))
}

/// `panels_try_date`: `YYYY-MM-DD`, or a datetime accepted by [`parse_datetime`] taken as
/// its UTC date.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    strict_date(s).or_else(|| parse_datetime(s).map(|t| t.date_naive()))
}

/// `panels_try_timestamptz`: `YYYY-MM-DD[(T| )HH:MM[:SS[.ffffff]][Z|±HH:MM]]`, UTC when no
/// offset is given. A date alone is midnight UTC.
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    if !s.is_ascii() || s.len() < 10 {
        return None;
    }
    let date = strict_date(&s[..10])?;
    let rest = &s[10..];
    if rest.is_empty() {
        return Some(date.and_time(NaiveTime::MIN).and_utc());
    }
    let b = rest.as_bytes();
    if !(b[0] == b'T' || b[0] == b' ') || b.len() < 6 || b[3] != b':' {
        return None;
    }
    let h = digits(&rest[1..3])?;
    let mi = digits(&rest[4..6])?;
    let mut i = 6;
    let mut sec = 0;
    let mut micros = 0;
    if b.get(i) == Some(&b':') {
        sec = digits(rest.get(i + 1..i + 3)?)?;
        i += 3;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            let frac = &rest[start..end];
            if frac.is_empty() || frac.len() > 6 {
                return None;
            }
            micros = digits(frac)? * 10u32.pow(6 - frac.len() as u32);
            i = end;
        }
    }
    let offset_secs: i64 = match &rest[i..] {
        "" | "Z" => 0,
        zone => {
            let z = zone.as_bytes();
            if z.len() != 6 || !(z[0] == b'+' || z[0] == b'-') || z[3] != b':' {
                return None;
            }
            let oh = digits(&zone[1..3])?;
            let om = digits(&zone[4..6])?;
            if oh > 14 || om > 59 {
                return None;
            }
            let secs = i64::from(oh * 3600 + om * 60);
            if z[0] == b'-' { -secs } else { secs }
        }
    };
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let time = NaiveTime::from_hms_micro_opt(h, mi, sec, micros)?;
    let utc = date.and_time(time) - TimeDelta::seconds(offset_secs);
    Some(utc.and_utc())
}

/// Midnight UTC, for comparing and mixing dates with datetimes.
pub fn date_to_datetime(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(NaiveTime::MIN).and_utc()
}

/// `panels_date_add_days`: `n` whole units of `per` days.
pub fn add_days(d: NaiveDate, n: f64, per: i64) -> Option<NaiveDate> {
    let k = n.trunc();
    if k.abs() > 3_700_000.0 / per as f64 {
        return None;
    }
    let days = k as i64 * per;
    let offset = (d - first_day()).num_days() + days;
    if offset < 0 || offset > (last_day() - first_day()).num_days() {
        return None;
    }
    d.checked_add_signed(TimeDelta::days(days))
}

fn month_index(year: i32, month: u32) -> i64 {
    i64::from(year) * 12 + i64::from(month) - 1
}

fn shift_months<T: Datelike + Copy>(
    t: T,
    n: f64,
    per: i64,
    add: fn(T, Months) -> Option<T>,
    sub: fn(T, Months) -> Option<T>,
) -> Option<T> {
    let k = n.trunc();
    if k.abs() > 130_000.0 / per as f64 {
        return None;
    }
    let months = k as i64 * per;
    let idx = month_index(t.year(), t.month()) + months;
    if !(12..=9999 * 12 + 11).contains(&idx) {
        return None;
    }
    let m = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
    if months >= 0 { add(t, m) } else { sub(t, m) }
}

/// `panels_date_add_months`: `n` whole units of `per` months; the day is clamped to the end
/// of a shorter month (Jan 31 + 1 month = Feb 28/29), as PostgreSQL does.
pub fn add_months(d: NaiveDate, n: f64, per: i64) -> Option<NaiveDate> {
    shift_months(
        d,
        n,
        per,
        NaiveDate::checked_add_months,
        NaiveDate::checked_sub_months,
    )
}

/// `panels_ts_add_months`.
pub fn ts_add_months(t: NaiveDateTime, n: f64, per: i64) -> Option<NaiveDateTime> {
    shift_months(
        t,
        n,
        per,
        NaiveDateTime::checked_add_months,
        NaiveDateTime::checked_sub_months,
    )
}

/// `panels_ts_add_seconds`: `n` whole units of `per` seconds.
pub fn ts_add_seconds(t: NaiveDateTime, n: f64, per: i64) -> Option<NaiveDateTime> {
    let k = n.trunc();
    if k.abs() > 3.2e11 / per as f64 {
        return None;
    }
    let secs = k as i64 * per;
    let result = t.checked_add_signed(TimeDelta::seconds(secs))?;
    (result >= min_ts() && result < end_ts()).then_some(result)
}

/// `panels_datediff_micros`: whole units of `per_micros` from `b` to `a`, truncated toward
/// zero.
pub fn diff_micros(a: NaiveDateTime, b: NaiveDateTime, per_micros: i64) -> Option<f64> {
    let micros = (a - b).num_microseconds()?;
    Some((micros / per_micros) as f64)
}

fn into_month(t: NaiveDateTime) -> i64 {
    let start = NaiveDate::from_ymd_opt(t.year(), t.month(), 1)
        .unwrap_or(t.date())
        .and_time(NaiveTime::MIN);
    (t - start).num_microseconds().unwrap_or(0)
}

/// `panels_datediff_months`: complete months from `b` to `a` (a month is complete once the
/// day and time of month are reached again), in units of `per` months.
pub fn diff_months(a: NaiveDateTime, b: NaiveDateTime, per: i64) -> f64 {
    let mut k = month_index(a.year(), a.month()) - month_index(b.year(), b.month());
    let (ra, rb) = (into_month(a), into_month(b));
    if k > 0 && ra < rb {
        k -= 1;
    } else if k < 0 && ra > rb {
        k += 1;
    }
    (k / per) as f64
}

/// `WEEKDAY`: 1 = Sunday … 7 = Saturday.
pub fn weekday(t: NaiveDateTime) -> f64 {
    f64::from(t.weekday().num_days_from_sunday() + 1)
}

pub fn date_part(t: NaiveDateTime, part: DatePart) -> f64 {
    f64::from(match part {
        DatePart::Year => return f64::from(t.year()),
        DatePart::Month => t.month(),
        DatePart::Day => t.day(),
        DatePart::Hour => t.hour(),
        DatePart::Minute => t.minute(),
        DatePart::Second => t.second(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatePart {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

impl DatePart {
    /// The `date_part` field name in SQL.
    pub fn sql(self) -> &'static str {
        match self {
            DatePart::Year => "'year'",
            DatePart::Month => "'month'",
            DatePart::Day => "'day'",
            DatePart::Hour => "'hour'",
            DatePart::Minute => "'minute'",
            DatePart::Second => "'second'",
        }
    }
}

/// A DATEADD/DATEDIFF unit, from the literal the user wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
    Years,
}

impl Unit {
    pub fn parse(s: &str) -> Option<Unit> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_suffix('s').unwrap_or(&s);
        Some(match s {
            "second" => Unit::Seconds,
            "minute" => Unit::Minutes,
            "hour" => Unit::Hours,
            "day" => Unit::Days,
            "week" => Unit::Weeks,
            "month" => Unit::Months,
            "year" => Unit::Years,
            _ => return None,
        })
    }

    /// True for units that keep a date a date.
    pub fn is_calendar(self) -> bool {
        matches!(self, Unit::Days | Unit::Weeks | Unit::Months | Unit::Years)
    }

    pub fn seconds(self) -> i64 {
        match self {
            Unit::Seconds => 1,
            Unit::Minutes => 60,
            Unit::Hours => 3600,
            Unit::Days => 86_400,
            Unit::Weeks => 604_800,
            Unit::Months | Unit::Years => 0,
        }
    }

    pub fn months(self) -> i64 {
        match self {
            Unit::Years => 12,
            _ => 1,
        }
    }

    pub fn micros(self) -> i64 {
        self.seconds() * 1_000_000
    }
}

/// One piece of a DATETIME_FORMAT pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatItem {
    Literal(String),
    Token(&'static str, &'static str, &'static str),
}

/// Tokens (moment.js style), longest first: (token, to_char pattern, chrono format).
const FORMAT_TOKENS: &[(&str, &str, &str)] = &[
    ("YYYY", "YYYY", "%Y"),
    ("YY", "YY", "%y"),
    ("MMMM", "FMMonth", "%B"),
    ("MMM", "Mon", "%b"),
    ("MM", "MM", "%m"),
    ("M", "FMMM", "%-m"),
    ("DD", "DD", "%d"),
    ("D", "FMDD", "%-d"),
    ("dddd", "FMDay", "%A"),
    ("ddd", "Dy", "%a"),
    ("HH", "HH24", "%H"),
    ("H", "FMHH24", "%-H"),
    ("hh", "HH12", "%I"),
    ("h", "FMHH12", "%-I"),
    ("mm", "MI", "%M"),
    ("ss", "SS", "%S"),
    ("A", "AM", "%p"),
    ("a", "am", "%P"),
];

/// Splits a DATETIME_FORMAT pattern into tokens and literal text; `[...]` quotes literal
/// text. Double quotes and backslashes are refused because they are to_char's own quoting.
pub fn parse_format(pattern: &str) -> Result<Vec<FormatItem>, String> {
    let mut items = Vec::new();
    let mut literal = String::new();
    let mut rest = pattern;
    'outer: while let Some(c) = rest.chars().next() {
        if c == '"' || c == '\\' {
            return Err(format!("'{c}' is not allowed in a date format"));
        }
        if c == '[' {
            let Some(end) = rest.find(']') else {
                return Err("unclosed '[' in date format".into());
            };
            literal.push_str(&rest[1..end]);
            if literal.contains(['"', '\\']) {
                return Err("'\"' and '\\' are not allowed in a date format".into());
            }
            rest = &rest[end + 1..];
            continue;
        }
        for &(token, pg, chrono) in FORMAT_TOKENS {
            if rest.starts_with(token) {
                if !literal.is_empty() {
                    items.push(FormatItem::Literal(std::mem::take(&mut literal)));
                }
                items.push(FormatItem::Token(token, pg, chrono));
                rest = &rest[token.len()..];
                continue 'outer;
            }
        }
        literal.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if !literal.is_empty() {
        items.push(FormatItem::Literal(literal));
    }
    Ok(items)
}

/// The to_char pattern: tokens as they are, literal text double-quoted.
pub fn to_char_pattern(items: &[FormatItem]) -> String {
    let mut out = String::new();
    for item in items {
        match item {
            FormatItem::Token(_, pg, _) => out.push_str(pg),
            FormatItem::Literal(text) => {
                out.push('"');
                out.push_str(text);
                out.push('"');
            }
        }
    }
    out
}

pub fn format(t: NaiveDateTime, items: &[FormatItem]) -> String {
    let mut out = String::new();
    for item in items {
        match item {
            FormatItem::Token(_, _, chrono) => out.push_str(&t.format(chrono).to_string()),
            FormatItem::Literal(text) => out.push_str(text),
        }
    }
    out
}

/// `TEXT` of a date: `YYYY-MM-DD`.
pub fn date_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// `TEXT` of a datetime: `YYYY-MM-DDTHH:MM:SSZ` in UTC, without fractional seconds.
pub fn datetime_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid date")
    }

    fn ts(s: &str) -> NaiveDateTime {
        parse_datetime(s).expect("valid datetime").naive_utc()
    }

    #[test]
    fn parses_dates_and_datetimes() {
        assert_eq!(parse_date("2024-02-29"), Some(d(2024, 2, 29)));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("0000-01-01"), None);
        assert_eq!(parse_date("2024-1-1"), None);
        assert_eq!(parse_date("2024-01-01T23:30:00-05:00"), Some(d(2024, 1, 2)));
        assert_eq!(
            parse_datetime("2024-01-02T03:04:05.123456+05:30").map(|t| t.to_rfc3339()),
            Some("2024-01-01T21:34:05.123456+00:00".into())
        );
        assert_eq!(
            ts("2024-01-02 03:04"),
            d(2024, 1, 2).and_hms_opt(3, 4, 0).expect("ok")
        );
        assert_eq!(
            ts("2024-01-02"),
            d(2024, 1, 2).and_hms_opt(0, 0, 0).expect("ok")
        );
        assert_eq!(parse_datetime("2024-01-02T24:00"), None);
        assert_eq!(parse_datetime("2024-01-02T10:00:60"), None);
        assert_eq!(parse_datetime("2024-01-02T10:00:00.1234567Z"), None);
        assert_eq!(parse_datetime("2024-01-02T10:00+15:00"), None);
        assert_eq!(parse_datetime("2024-01-02T10:00z"), None);
        assert_eq!(parse_datetime("yesterday"), None);
    }

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(add_days(d(2024, 1, 31), 1.9, 1), Some(d(2024, 2, 1)));
        assert_eq!(add_days(d(2024, 1, 31), -2.0, 7), Some(d(2024, 1, 17)));
        assert_eq!(add_days(d(9999, 12, 31), 1.0, 1), None);
        assert_eq!(add_days(d(1, 1, 1), -1.0, 1), None);
        assert_eq!(add_days(d(2024, 1, 1), 1e300, 1), None);
        assert_eq!(add_months(d(2024, 1, 31), 1.0, 1), Some(d(2024, 2, 29)));
        assert_eq!(add_months(d(2024, 2, 29), 1.0, 12), Some(d(2025, 2, 28)));
        assert_eq!(add_months(d(2024, 3, 31), -1.0, 1), Some(d(2024, 2, 29)));
        assert_eq!(add_months(d(9999, 12, 1), 1.0, 1), None);
        let t = ts("2024-01-01T10:00:00Z");
        assert_eq!(
            ts_add_seconds(t, -11.0, 3600),
            Some(ts("2023-12-31T23:00:00Z"))
        );
        assert_eq!(ts_add_seconds(t, 1e12, 1), None);
        assert_eq!(ts_add_months(t, 13.0, 1), Some(ts("2025-02-01T10:00:00Z")));
        assert_eq!(make_date(2024.0, 2.0, 30.0), None);
        assert_eq!(make_date(2024.9, 2.5, 3.2), Some(d(2024, 2, 3)));
        assert_eq!(make_date(1e300, 1.0, 1.0), None);
    }

    #[test]
    fn differences_in_whole_units() {
        let a = ts("2024-03-01T00:00:00Z");
        let b = ts("2024-01-31T12:00:00Z");
        assert_eq!(diff_micros(a, b, Unit::Days.micros()), Some(29.0));
        assert_eq!(diff_micros(b, a, Unit::Days.micros()), Some(-29.0));
        assert_eq!(diff_micros(a, b, Unit::Hours.micros()), Some(708.0));
        // Jan 31 12:00 + 1 month is reached by Mar 1 (February has no 31st).
        assert_eq!(diff_months(a, b, 1), 1.0);
        assert_eq!(diff_months(ts("2024-03-31T12:00:00Z"), b, 1), 2.0);
        assert_eq!(diff_months(b, ts("2024-03-31T12:00:00Z"), 1), -2.0);
        assert_eq!(diff_months(ts("2026-01-30T00:00:00Z"), b, 12), 1.0);
        assert_eq!(weekday(ts("2024-01-07T00:00:00Z")), 1.0);
    }

    #[test]
    fn formats_dates() {
        let items = parse_format("dddd D MMMM YYYY [at] h:mm A").expect("valid");
        assert_eq!(
            to_char_pattern(&items),
            "FMDay\" \"FMDD\" \"FMMonth\" \"YYYY\" at \"FMHH12\":\"MI\" \"AM"
        );
        assert_eq!(
            format(ts("2024-01-07T15:04:00Z"), &items),
            "Sunday 7 January 2024 at 3:04 PM"
        );
        assert!(parse_format("YYYY\"").is_err());
        assert!(parse_format("[YYYY").is_err());
        assert_eq!(
            datetime_text(ts("2024-01-07T15:04:00.5Z").and_utc()),
            "2024-01-07T15:04:00Z"
        );
    }
}
