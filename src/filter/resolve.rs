//! A filter tree resolved for one reader at one moment: each condition's operand typed for its
//! column. Relative dates become dates of the reader's time zone, `$CURRENT_USER` the reader's
//! e-mail, and a date compared with a datetime column the instants where that local day begins
//! and ends; the evaluator and the SQL compiler then see nothing but typed values.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use super::{CURRENT_USER, Condition, FieldKind, FilterGroup, FilterNode, Logic, Operator};
use crate::error::FieldError;

/// The moment, the place and the reader a tree is resolved for.
#[derive(Debug, Clone, Copy)]
pub struct Resolver<'a> {
    pub now: DateTime<Utc>,
    pub tz: Tz,
    /// The reader's e-mail (`$CURRENT_USER`); `None` when the credential carries none.
    pub current_user: Option<&'a str>,
}

/// A resolved tree: `All([])` matches every row, `Any([])` none.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    All(Vec<Resolved>),
    Any(Vec<Resolved>),
    Condition(ResolvedCondition),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedCondition {
    pub field: String,
    pub kind: FieldKind,
    pub test: Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A typed operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Text(String),
    Number(f64),
    Bool(bool),
    Date(NaiveDate),
    /// A datetime column compared with a datetime.
    Instant(DateTime<Utc>),
    /// A datetime column compared with a date: the local day from its first instant to the
    /// first instant of the next day (excluded).
    Day(DateTime<Utc>, DateTime<Utc>),
    /// `$CURRENT_USER` for a reader without an e-mail: equal to nothing.
    Nobody,
}

/// What a resolved condition asks of a cell. A blank cell passes `Empty`, `NotEquals`,
/// `NotIn` and `NotContains` only.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Empty,
    NotEmpty,
    Equals(Operand),
    NotEquals(Operand),
    Compare(Cmp, Operand),
    Between(Operand, Operand),
    In(Vec<Operand>),
    NotIn(Vec<Operand>),
    Contains(String),
    NotContains(String),
    StartsWith(String),
    EndsWith(String),
}

/// A date operand as written: a calendar date or an instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DateOperand {
    Date(NaiveDate),
    Instant(DateTime<Utc>),
}

/// `YYYY-MM-DD` or an RFC 3339 datetime.
pub fn parse_date_operand(s: &str) -> Option<DateOperand> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(DateOperand::Date(d));
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| DateOperand::Instant(t.with_timezone(&Utc)))
}

/// A relative date: `today ± n` days, weeks, months or years, or the start or end of the
/// current week (Monday to Sunday), month or year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relative {
    Days(i64),
    Weeks(i64),
    Months(i64),
    Years(i64),
    StartOfWeek,
    EndOfWeek,
    StartOfMonth,
    EndOfMonth,
    StartOfYear,
    EndOfYear,
}

/// The relative date of `{"relative": "…"}`, when the value is one.
pub fn relative_of(value: &Value) -> Option<Relative> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    parse_relative(map.get("relative")?.as_str()?)
}

fn parse_relative(token: &str) -> Option<Relative> {
    Some(match token.trim() {
        "today" => Relative::Days(0),
        "yesterday" => Relative::Days(-1),
        "tomorrow" => Relative::Days(1),
        "start_of_week" => Relative::StartOfWeek,
        "end_of_week" => Relative::EndOfWeek,
        "start_of_month" => Relative::StartOfMonth,
        "end_of_month" => Relative::EndOfMonth,
        "start_of_year" => Relative::StartOfYear,
        "end_of_year" => Relative::EndOfYear,
        other => {
            let (sign, rest) = match other.as_bytes().first()? {
                b'+' => (1, &other[1..]),
                b'-' => (-1, &other[1..]),
                _ => return None,
            };
            let unit = rest.chars().last()?;
            let digits = &rest[..rest.len() - unit.len_utf8()];
            if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let n = sign * digits.parse::<i64>().ok()?;
            match unit {
                'd' => Relative::Days(n),
                'w' => Relative::Weeks(n),
                'm' => Relative::Months(n),
                'y' => Relative::Years(n),
                _ => return None,
            }
        }
    })
}

/// The first and last dates a date column can hold (the formula readers' range).
fn first_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1, 1, 1).unwrap_or(NaiveDate::MIN)
}

fn last_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or(NaiveDate::MAX)
}

/// Shifts `today` by months, or clamps to the dates a column can hold.
fn shift_months(today: NaiveDate, months: i64) -> NaiveDate {
    let shifted = if months >= 0 {
        today.checked_add_months(Months::new(
            months.unsigned_abs().min(u32::MAX as u64) as u32
        ))
    } else {
        today.checked_sub_months(Months::new(
            months.unsigned_abs().min(u32::MAX as u64) as u32
        ))
    };
    shifted.unwrap_or(if months >= 0 {
        last_date()
    } else {
        first_date()
    })
}

/// The date a relative date means on `today`, kept within years 1 to 9999.
pub fn relative_date(relative: Relative, today: NaiveDate) -> NaiveDate {
    let days = |n: i64| {
        let shifted = if n >= 0 {
            today.checked_add_days(Days::new(n.unsigned_abs()))
        } else {
            today.checked_sub_days(Days::new(n.unsigned_abs()))
        };
        shifted.unwrap_or(if n >= 0 { last_date() } else { first_date() })
    };
    let monday = days(-i64::from(today.weekday().num_days_from_monday()));
    let first_of_month = today.with_day(1).unwrap_or(today);
    let date = match relative {
        Relative::Days(n) => days(n),
        Relative::Weeks(n) => days(n * 7),
        Relative::Months(n) => shift_months(today, n),
        Relative::Years(n) => shift_months(today, n * 12),
        Relative::StartOfWeek => monday,
        Relative::EndOfWeek => monday.checked_add_days(Days::new(6)).unwrap_or(monday),
        Relative::StartOfMonth => first_of_month,
        Relative::EndOfMonth => shift_months(first_of_month, 1)
            .pred_opt()
            .unwrap_or(first_of_month),
        Relative::StartOfYear => NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap_or(today),
        Relative::EndOfYear => NaiveDate::from_ymd_opt(today.year(), 12, 31).unwrap_or(today),
    };
    date.clamp(first_date(), last_date())
}

impl Resolver<'_> {
    /// Today in the reader's time zone.
    pub fn today(&self) -> NaiveDate {
        self.now.with_timezone(&self.tz).date_naive()
    }

    /// The first instant of a local day (the earliest, where a clock change repeats or skips
    /// midnight).
    fn start_of(&self, date: NaiveDate) -> DateTime<Utc> {
        let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
        match self.tz.from_local_datetime(&midnight) {
            chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
            chrono::LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
            // Midnight skipped by a clock change: the day begins an hour later at most.
            chrono::LocalResult::None => (1..=4)
                .find_map(|h| {
                    let later = midnight + chrono::Duration::minutes(30 * h);
                    self.tz.from_local_datetime(&later).earliest()
                })
                .map_or_else(|| midnight.and_utc(), |t| t.with_timezone(&Utc)),
        }
    }

    fn day(&self, date: NaiveDate) -> Operand {
        let next = date.succ_opt().unwrap_or(date);
        Operand::Day(self.start_of(date), self.start_of(next))
    }

    /// A validated operand, typed for a column of this kind.
    fn operand(&self, kind: FieldKind, value: &Value) -> Option<Operand> {
        match kind {
            FieldKind::Text | FieldKind::List => match value {
                Value::String(s) if s == CURRENT_USER => Some(
                    self.current_user
                        .map_or(Operand::Nobody, |email| Operand::Text(email.to_owned())),
                ),
                Value::String(s) => Some(Operand::Text(s.clone())),
                Value::Number(n) => Some(Operand::Text(n.to_string())),
                _ => None,
            },
            FieldKind::Number => value.as_f64().map(Operand::Number),
            FieldKind::Boolean => value.as_bool().map(Operand::Bool),
            FieldKind::Date | FieldKind::DateTime => {
                let written = match value {
                    Value::String(s) => parse_date_operand(s)?,
                    other => DateOperand::Date(relative_date(relative_of(other)?, self.today())),
                };
                Some(match (kind, written) {
                    (FieldKind::Date, DateOperand::Date(d)) => Operand::Date(d),
                    (FieldKind::Date, DateOperand::Instant(t)) => {
                        Operand::Date(t.with_timezone(&self.tz).date_naive())
                    }
                    (_, DateOperand::Date(d)) => self.day(d),
                    (_, DateOperand::Instant(t)) => Operand::Instant(t),
                })
            }
        }
    }

    fn operands(&self, kind: FieldKind, value: &Value) -> Option<Vec<Operand>> {
        value
            .as_array()?
            .iter()
            .map(|v| self.operand(kind, v))
            .collect()
    }

    fn condition(&self, c: &Condition, kind: FieldKind) -> Option<Test> {
        use Operator::*;
        let one = || self.operand(kind, &c.value);
        let text = || c.value.as_str().map(str::to_owned);
        Some(match c.operator {
            IsEmpty => Test::Empty,
            IsNotEmpty => Test::NotEmpty,
            Eq => Test::Equals(one()?),
            Neq => Test::NotEquals(one()?),
            Gt => Test::Compare(Cmp::Gt, one()?),
            Gte => Test::Compare(Cmp::Gte, one()?),
            Lt => Test::Compare(Cmp::Lt, one()?),
            Lte => Test::Compare(Cmp::Lte, one()?),
            Between => {
                let mut both = self.operands(kind, &c.value)?;
                if both.len() != 2 {
                    return None;
                }
                let high = both.pop()?;
                let low = both.pop()?;
                Test::Between(low, high)
            }
            In => Test::In(self.operands(kind, &c.value)?),
            NotIn => Test::NotIn(self.operands(kind, &c.value)?),
            Contains if kind == FieldKind::List => Test::In(vec![one()?]),
            NotContains if kind == FieldKind::List => Test::NotIn(vec![one()?]),
            Contains => Test::Contains(text()?),
            NotContains => Test::NotContains(text()?),
            StartsWith => Test::StartsWith(text()?),
            EndsWith => Test::EndsWith(text()?),
        })
    }

    /// Resolves a tree validated against `kind_of` (see [`FilterGroup::validate`]); a tree that
    /// does not validate answers the same errors, named under `prefix`.
    pub fn resolve(
        &self,
        tree: &FilterGroup,
        prefix: &str,
        kind_of: &dyn Fn(&str) -> Option<FieldKind>,
    ) -> Result<Resolved, Vec<FieldError>> {
        let errors = tree.validate(prefix, kind_of);
        if !errors.is_empty() {
            return Err(errors);
        }
        self.group(tree, prefix, kind_of)
    }

    fn group(
        &self,
        group: &FilterGroup,
        path: &str,
        kind_of: &dyn Fn(&str) -> Option<FieldKind>,
    ) -> Result<Resolved, Vec<FieldError>> {
        let mut nodes = Vec::with_capacity(group.conditions.len());
        for (i, node) in group.conditions.iter().enumerate() {
            let here = format!("{path}.conditions[{i}]");
            nodes.push(match node {
                FilterNode::Group(inner) => self.group(inner, &here, kind_of)?,
                FilterNode::Condition(c) => {
                    let kind = kind_of(&c.field).ok_or_else(|| {
                        vec![FieldError::new(&here, "not a column of this panel")]
                    })?;
                    let test = self.condition(c, kind).ok_or_else(|| {
                        vec![FieldError::new(&here, "value does not suit the operator")]
                    })?;
                    Resolved::Condition(ResolvedCondition {
                        field: c.field.clone(),
                        kind,
                        test,
                    })
                }
            });
        }
        Ok(match group.logic {
            Logic::AND => Resolved::All(nodes),
            Logic::OR => Resolved::Any(nodes),
        })
    }
}

impl Resolved {
    /// Both trees: `self AND other`.
    pub fn and(self, other: Resolved) -> Resolved {
        match (self, other) {
            (Resolved::All(a), other) if a.is_empty() => other,
            (this, Resolved::All(b)) if b.is_empty() => this,
            (this, other) => Resolved::All(vec![this, other]),
        }
    }

    /// Every column the tree tests.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Resolved::All(nodes) | Resolved::Any(nodes) => {
                nodes.iter().flat_map(Resolved::fields).collect()
            }
            Resolved::Condition(c) => vec![c.field.as_str()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn relative_dates_follow_the_calendar() {
        let today = date("2026-12-04"); // a Friday
        let cases = [
            ("today", "2026-12-04"),
            ("yesterday", "2026-12-03"),
            ("-7d", "2026-11-27"),
            ("+30d", "2027-01-03"),
            ("+2w", "2026-12-18"),
            ("-3m", "2026-09-04"),
            ("+1y", "2027-12-04"),
            ("start_of_week", "2026-11-30"),
            ("end_of_week", "2026-12-06"),
            ("start_of_month", "2026-12-01"),
            ("end_of_month", "2026-12-31"),
            ("start_of_year", "2026-01-01"),
            ("end_of_year", "2026-12-31"),
            ("-9999y", "0001-01-01"),
        ];
        for (token, expected) in cases {
            let relative = parse_relative(token).unwrap_or_else(|| panic!("{token}"));
            assert_eq!(relative_date(relative, today), date(expected), "{token}");
        }
        assert_eq!(
            relative_date(Relative::Months(1), date("2026-01-31")),
            date("2026-02-28")
        );
        for bad in ["", "7d", "+d", "+12345d", "+1x", "next week", "+1.5d"] {
            assert_eq!(parse_relative(bad), None, "{bad}");
        }
    }

    #[test]
    fn today_is_the_readers_today() {
        let resolver = Resolver {
            now: at("2026-12-04T23:30:00Z"),
            tz: "Asia/Tokyo".parse().expect("zone"),
            current_user: None,
        };
        assert_eq!(resolver.today(), date("2026-12-05"));
        // A date on a datetime column is the reader's whole local day.
        let day = resolver.operand(FieldKind::DateTime, &json!("2026-12-05"));
        assert_eq!(
            day,
            Some(Operand::Day(
                at("2026-12-04T15:00:00Z"),
                at("2026-12-05T15:00:00Z")
            ))
        );
        // A datetime on a date column is its local date.
        let local = resolver.operand(FieldKind::Date, &json!("2026-12-04T20:00:00Z"));
        assert_eq!(local, Some(Operand::Date(date("2026-12-05"))));
    }

    #[test]
    fn a_day_with_a_clock_change_keeps_its_length() {
        let resolver = Resolver {
            now: at("2026-03-29T12:00:00Z"),
            tz: "Europe/Amsterdam".parse().expect("zone"),
            current_user: None,
        };
        let Some(Operand::Day(start, end)) =
            resolver.operand(FieldKind::DateTime, &json!({"relative": "today"}))
        else {
            panic!("a day")
        };
        assert_eq!(start, at("2026-03-28T23:00:00Z"));
        assert_eq!(end - start, chrono::Duration::hours(23));
    }

    #[test]
    fn the_current_user_is_the_readers_email() {
        let tree: FilterGroup = serde_json::from_value(json!({"conditions": [
            {"field": "owner", "operator": "eq", "value": "$CURRENT_USER"},
            {"field": "tags", "operator": "contains", "value": "vip"}
        ]}))
        .expect("tree");
        let kinds = |f: &str| match f {
            "owner" => Some(FieldKind::Text),
            "tags" => Some(FieldKind::List),
            _ => None,
        };
        let resolver = Resolver {
            now: Utc::now(),
            tz: Tz::UTC,
            current_user: Some("ann@example.org"),
        };
        let resolved = resolver.resolve(&tree, "filter", &kinds).expect("valid");
        let Resolved::All(nodes) = resolved else {
            panic!("a group")
        };
        assert_eq!(
            nodes[0],
            Resolved::Condition(ResolvedCondition {
                field: "owner".into(),
                kind: FieldKind::Text,
                test: Test::Equals(Operand::Text("ann@example.org".into())),
            })
        );
        let Resolved::Condition(tags) = &nodes[1] else {
            panic!("a condition")
        };
        assert_eq!(tags.test, Test::In(vec![Operand::Text("vip".into())]));
        let anonymous = Resolver {
            current_user: None,
            ..resolver
        };
        let Resolved::All(nodes) = anonymous.resolve(&tree, "filter", &kinds).expect("valid")
        else {
            panic!("a group")
        };
        let Resolved::Condition(owner) = &nodes[0] else {
            panic!("a condition")
        };
        assert_eq!(owner.test, Test::Equals(Operand::Nobody));
    }
}
