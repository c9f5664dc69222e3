//! Number semantics shared by the evaluator and mirrored by the SQL helpers.
//!
//! Numbers are IEEE doubles on both sides (`f64` here, `float8` in PostgreSQL), so plain
//! operations round identically. PostgreSQL raises on float8 overflow and underflow where
//! Rust silently produces infinity or zero; each guarded operation here checks its operands
//! with exactly the same float8 computations the SQL helper of the same name performs
//! (`panels_add`, `panels_mul`, …) and yields `None` (blank) when the SQL would have had to
//! raise. The guard thresholds (1e300, 8e307) are deliberately inside the float8 range so
//! the checks themselves can never overflow.

/// Numbers read from data must be zero or within (1e-300, 1e300) in magnitude, matching
/// `panels_try_float8`.
pub fn in_range(x: f64) -> Option<f64> {
    if x == 0.0 {
        Some(0.0)
    } else if x.abs() < 1e300 && x.abs() > 1e-300 {
        Some(x)
    } else {
        None
    }
}

/// `panels_add`.
pub fn add(a: f64, b: f64) -> Option<f64> {
    if (a.abs() <= 8e307 && b.abs() <= 8e307) || ((a >= 0.0) != (b >= 0.0)) {
        Some(a + b)
    } else {
        None
    }
}

/// `panels_sub`.
pub fn sub(a: f64, b: f64) -> Option<f64> {
    add(a, -b)
}

/// `panels_mul`: no overflow past 1e300, no underflow to zero from non-zero operands.
pub fn mul(a: f64, b: f64) -> Option<f64> {
    if a == 0.0 || b == 0.0 {
        return Some(a * b);
    }
    let (x, y) = (a.abs(), b.abs());
    if x >= 1.0 && y >= 1.0 {
        (x <= 1e300 / y).then_some(a * b)
    } else if x < 1.0 && y < 1.0 {
        (x >= 1e-300 / y).then_some(a * b)
    } else {
        Some(a * b)
    }
}

/// `panels_div`: blank for division by zero, overflow or underflow.
pub fn div(a: f64, b: f64) -> Option<f64> {
    if b == 0.0 {
        return None;
    }
    if a == 0.0 {
        return Some(a / b);
    }
    let (x, y) = (a.abs(), b.abs());
    if y >= 1.0 {
        (x >= 1e-300 * y).then_some(a / b)
    } else {
        (x <= 1e300 * y).then_some(a / b)
    }
}

/// `panels_mod`: the result has the sign of the divisor, as in spreadsheets.
pub fn modulo(a: f64, b: f64) -> Option<f64> {
    let q = div(a, b)?.floor();
    sub(a, mul(b, q)?)
}

/// `panels_power`.
pub fn power(a: f64, b: f64) -> Option<f64> {
    if a == 0.0 {
        return if b > 0.0 {
            Some(0.0)
        } else if b == 0.0 {
            Some(1.0)
        } else {
            None
        };
    }
    if a < 0.0 && b.floor() != b {
        return None;
    }
    if a.abs() == 1.0 {
        return Some(a.powf(b));
    }
    (b.abs() <= 690.0 / a.abs().ln().abs()).then(|| a.powf(b))
}

/// `panels_sqrt`.
pub fn sqrt(x: f64) -> Option<f64> {
    (x >= 0.0).then(|| x.sqrt())
}

/// `panels_ln`.
pub fn ln(x: f64) -> Option<f64> {
    (x > 0.0).then(|| x.ln())
}

/// `panels_log10`.
pub fn log10(x: f64) -> Option<f64> {
    (x > 0.0).then(|| x.log10())
}

/// `panels_exp`.
pub fn exp(x: f64) -> Option<f64> {
    (-700.0..=700.0).contains(&x).then(|| x.exp())
}

/// PostgreSQL's `sign(float8)`: unlike `f64::signum`, zero maps to zero.
pub fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// `panels_int`: an integer argument (a count or a position), truncated toward zero and
/// clamped so PostgreSQL's int4 arithmetic cannot overflow.
pub fn to_int(x: f64) -> i64 {
    x.clamp(-1e9, 1e9).trunc() as i64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundMode {
    /// ROUND: half away from zero.
    HalfAway,
    /// ROUNDUP: away from zero.
    Up,
    /// ROUNDDOWN: toward zero.
    Down,
}

/// `panels_round`: rounds in decimal, as spreadsheets do, rather than on the binary value.
///
/// PostgreSQL converts a float8 to numeric through its 15-significant-digit decimal form
/// (`%.15g`), rounds the decimal, and converts back with correct rounding; this repeats the
/// same steps, so `ROUND(2.675, 2)` is 2.68 on both sides.
pub fn round(x: f64, digits: f64, mode: RoundMode) -> Option<f64> {
    if x.abs() >= 1e300 {
        return None;
    }
    let d = digits.clamp(-330.0, 330.0).trunc() as i64;
    if x == 0.0 {
        return Some(0.0);
    }
    // 15 significant digits, ties to even on the exact binary value, like glibc's printf.
    let sci = format!("{:.14e}", x.abs());
    let (mantissa, exp) = sci.split_once('e')?;
    let exp: i64 = exp.parse().ok()?;
    let digits_str: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    // The first digit is worth 10^exp; keep the digits worth at least 10^-d.
    let keep = exp + 1 + d;
    let (kept, rest): (&[u8], &[u8]) = if keep <= 0 {
        (&[], &digits_str[..])
    } else if keep as usize >= digits_str.len() {
        (&digits_str[..], &[])
    } else {
        digits_str.split_at(keep as usize)
    };
    let mut value: u64 = kept.iter().fold(0, |acc, c| acc * 10 + u64::from(c - b'0'));
    let increment = match mode {
        RoundMode::Down => false,
        RoundMode::HalfAway => keep >= 0 && rest.first().is_some_and(|&c| c >= b'5'),
        RoundMode::Up => rest.iter().any(|&c| c != b'0'),
    };
    if increment {
        value += 1;
    }
    if value == 0 {
        // numeric has no negative zero.
        return Some(0.0);
    }
    // The kept digits are worth 10^(exp + 1 - kept.len()) each when fewer than all digits
    // are kept, 10^-d otherwise.
    let scale = if kept.len() < digits_str.len() || keep <= 0 {
        -d
    } else {
        exp + 1 - kept.len() as i64
    };
    let sign = if x < 0.0 { "-" } else { "" };
    let result: f64 = format!("{sign}{value}e{scale}").parse().ok()?;
    in_range(result)
}

/// Formats a number as PostgreSQL's `float8::text` does (shortest round-trip digits; plain
/// notation for decimal exponents in [-4, 15), otherwise `1.5e+20` style).
pub fn format_number(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::with_capacity(24);
    if x < 0.0 {
        out.push('-');
    }
    if (-4..15).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    }
    out
}

/// `panels_try_float8`: decimal text (optionally signed, with an exponent of at most three
/// digits, surrounded by spaces) to a number in range; anything else is `None`.
pub fn parse_number(text: &str) -> Option<f64> {
    if text.len() > 1000 {
        return None;
    }
    let t = text.trim_matches(' ');
    let b = t.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - frac_start;
    }
    if int_digits == 0 && frac_digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if !(1..=3).contains(&(i - exp_start)) {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    in_range(t.parse::<f64>().ok()?)
}

/// `panels_try_bool`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "TRUE" | "True" => Some(true),
        "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_arithmetic() {
        assert_eq!(add(1.0, 2.0), Some(3.0));
        assert_eq!(add(1e308, 1e308), None);
        assert_eq!(add(1e308, -1e308), Some(0.0));
        assert_eq!(sub(-1e308, 1e308), None);
        assert_eq!(mul(1e200, 1e200), None);
        assert_eq!(mul(1e-200, 1e-200), None);
        assert_eq!(mul(1e-200, 1e200), Some(1e-200 * 1e200));
        assert_eq!(mul(0.0, 1e308), Some(0.0));
        assert_eq!(div(1.0, 0.0), None);
        assert_eq!(div(1.0, 4.0), Some(0.25));
        assert_eq!(div(1e300, 1e-10), None);
        assert_eq!(div(1e-300, 1e10), None);
        assert_eq!(modulo(-1.0, 3.0), Some(2.0));
        assert_eq!(modulo(7.0, -3.0), Some(-2.0));
        assert_eq!(modulo(1.0, 0.0), None);
        assert_eq!(power(2.0, 10.0), Some(1024.0));
        assert_eq!(power(0.0, -1.0), None);
        assert_eq!(power(-8.0, 0.5), None);
        assert_eq!(power(-2.0, 3.0), Some(-8.0));
        assert_eq!(power(10.0, 400.0), None);
        assert_eq!(power(1.0, 1e308), Some(1.0));
        assert_eq!(sqrt(-1.0), None);
        assert_eq!(ln(0.0), None);
        assert_eq!(log10(1000.0), Some(3.0));
        assert_eq!(exp(800.0), None);
        assert_eq!(sign(-0.0), 0.0);
        assert_eq!(to_int(2.9), 2);
        assert_eq!(to_int(-2.9), -2);
        assert_eq!(to_int(1e300), 1_000_000_000);
    }

    #[test]
    fn rounding_is_decimal_and_half_away_from_zero() {
        assert_eq!(round(2.5, 0.0, RoundMode::HalfAway), Some(3.0));
        assert_eq!(round(-2.5, 0.0, RoundMode::HalfAway), Some(-3.0));
        assert_eq!(round(0.5, 0.0, RoundMode::HalfAway), Some(1.0));
        assert_eq!(round(2.675, 2.0, RoundMode::HalfAway), Some(2.68));
        assert_eq!(round(1234.5, -2.0, RoundMode::HalfAway), Some(1200.0));
        assert_eq!(round(5.0, -1.0, RoundMode::HalfAway), Some(10.0));
        assert_eq!(round(0.04, 0.0, RoundMode::HalfAway), Some(0.0));
        assert_eq!(round(-0.4, 0.0, RoundMode::HalfAway), Some(0.0));
        assert_eq!(round(0.1 + 0.2, 20.0, RoundMode::HalfAway), Some(0.3));
        assert_eq!(round(1.21, 1.0, RoundMode::Up), Some(1.3));
        assert_eq!(round(-1.21, 1.0, RoundMode::Up), Some(-1.3));
        assert_eq!(round(0.001, 0.0, RoundMode::Up), Some(1.0));
        assert_eq!(round(1.29, 1.0, RoundMode::Down), Some(1.2));
        assert_eq!(round(-1.29, 1.0, RoundMode::Down), Some(-1.2));
        assert_eq!(round(3.7, 1.9, RoundMode::Down), Some(3.7));
        assert_eq!(round(1e301, 0.0, RoundMode::HalfAway), None);
        assert_eq!(round(9.5e299, -299.0, RoundMode::Up), None);
    }

    #[test]
    fn formats_like_postgres() {
        assert_eq!(format_number(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_number(100.0), "100");
        assert_eq!(format_number(1e15), "1e+15");
        assert_eq!(format_number(123456789012345.0), "123456789012345");
        assert_eq!(format_number(0.0001), "0.0001");
        assert_eq!(format_number(0.00001), "1e-05");
        assert_eq!(format_number(-1.5e300), "-1.5e+300");
        assert_eq!(format_number(-0.0), "-0");
        assert_eq!(format_number(2.5), "2.5");
    }

    #[test]
    fn parses_numbers_strictly() {
        assert_eq!(parse_number(" 12.5 "), Some(12.5));
        assert_eq!(parse_number("+.5"), Some(0.5));
        assert_eq!(parse_number("5."), Some(5.0));
        assert_eq!(parse_number("-1e3"), Some(-1000.0));
        assert_eq!(parse_number("-0"), Some(0.0));
        assert_eq!(parse_number("1e400"), None);
        assert_eq!(parse_number("1e1000"), None);
        assert_eq!(parse_number("NaN"), None);
        assert_eq!(parse_number("inf"), None);
        assert_eq!(parse_number("1,5"), None);
        assert_eq!(parse_number("."), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("\t1"), None);
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("yes"), None);
    }
}
