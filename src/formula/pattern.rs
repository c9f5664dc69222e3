//! REGEX_MATCH patterns: a subset on which PostgreSQL's ARE engine and Rust's `regex` crate
//! agree, normalised into one text used by both.
//!
//! Accepted: literal characters, `.`, `^`, `$`, `|`, groups `( )` and `(?: )`, quantifiers
//! `* + ? {m} {m,} {m,n}` (optionally lazy with `?`), bracket classes `[a-z]`, `[^…]`, and
//! the escapes `\d \D \s \S \w \W` (ASCII only: rewritten to explicit classes, since the
//! two engines define them differently) and `\` before ASCII punctuation. Refused: other
//! escapes (`\b` means backspace in PostgreSQL), look-around, flags, back-references,
//! POSIX `[:classes:]`, and Rust-only class operators. `.` matches newlines in both.

use std::cell::RefCell;
use std::collections::HashMap;

use regex::Regex;

fn class_body(c: char) -> Option<&'static str> {
    match c {
        'd' => Some("0-9"),
        's' => Some(" \\t\\n\\r\\f\\v"),
        'w' => Some("a-zA-Z0-9_"),
        _ => None,
    }
}

/// Validates a pattern and returns the normalised form bound as the SQL parameter and
/// compiled (with `(?s)`) by the evaluator.
pub fn normalize(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    // Whether a quantifier may follow (an atom was just written), and whether the last
    // thing written was a quantifier (so only a lazy `?` may follow).
    let mut can_quantify = false;
    let mut after_quantifier = false;
    let mut depth = 0usize;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let next = *chars.get(i + 1).ok_or("pattern ends with '\\'")?;
                if let Some(body) = class_body(next.to_ascii_lowercase()) {
                    out.push('[');
                    if next.is_ascii_uppercase() {
                        out.push('^');
                    }
                    out.push_str(body);
                    out.push(']');
                } else if next.is_ascii_punctuation() {
                    out.push('\\');
                    out.push(next);
                } else {
                    return Err(format!("unsupported escape '\\{next}' in pattern"));
                }
                i += 2;
                can_quantify = true;
                after_quantifier = false;
                continue;
            }
            '[' => {
                let mut j = i + 1;
                out.push('[');
                if chars.get(j) == Some(&'^') {
                    out.push('^');
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    out.push_str("\\]");
                    j += 1;
                }
                loop {
                    let Some(&k) = chars.get(j) else {
                        return Err("unclosed '[' in pattern".into());
                    };
                    match k {
                        ']' => break,
                        '[' => return Err("'[' inside a class is not supported".into()),
                        '\\' => {
                            let next = *chars.get(j + 1).ok_or("pattern ends with '\\'")?;
                            if let Some(body) = class_body(next) {
                                out.push_str(body);
                            } else if next.is_ascii_punctuation() {
                                out.push('\\');
                                out.push(next);
                            } else {
                                return Err(format!("unsupported escape '\\{next}' in pattern"));
                            }
                            j += 2;
                            continue;
                        }
                        '&' | '~' | '-' if chars.get(j + 1) == Some(&k) => {
                            return Err(format!("'{k}{k}' inside a class is not supported"));
                        }
                        _ => out.push(k),
                    }
                    j += 1;
                }
                out.push(']');
                i = j + 1;
                can_quantify = true;
                after_quantifier = false;
                continue;
            }
            '(' => {
                if chars.get(i + 1) == Some(&'?') {
                    if chars.get(i + 2) != Some(&':') {
                        return Err("look-around and flags are not supported in patterns".into());
                    }
                    out.push_str("(?:");
                    i += 3;
                } else {
                    out.push('(');
                    i += 1;
                }
                if chars.get(i) == Some(&')') {
                    return Err("empty group in pattern".into());
                }
                depth += 1;
                can_quantify = false;
                after_quantifier = false;
                continue;
            }
            ')' => {
                depth = depth.checked_sub(1).ok_or("unbalanced ')' in pattern")?;
                out.push(')');
                can_quantify = true;
                after_quantifier = false;
            }
            '*' | '+' | '?' | '{' => {
                if c == '?' && after_quantifier {
                    out.push('?');
                    after_quantifier = false;
                    can_quantify = false;
                    i += 1;
                    continue;
                }
                if !can_quantify {
                    return Err(format!("'{c}' has nothing to repeat in pattern"));
                }
                if c == '{' {
                    let close = chars[i..]
                        .iter()
                        .position(|&k| k == '}')
                        .ok_or("unclosed '{' in pattern")?;
                    let body: String = chars[i + 1..i + close].iter().collect();
                    let valid = match body.split_once(',') {
                        None => !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()),
                        Some((m, n)) => {
                            !m.is_empty()
                                && m.bytes().all(|b| b.is_ascii_digit())
                                && n.bytes().all(|b| b.is_ascii_digit())
                        }
                    };
                    if !valid || body.len() > 7 {
                        return Err("a bound must look like {m}, {m,} or {m,n}".into());
                    }
                    out.push('{');
                    out.push_str(&body);
                    out.push('}');
                    i += close + 1;
                } else {
                    out.push(c);
                    i += 1;
                }
                can_quantify = false;
                after_quantifier = true;
                continue;
            }
            '}' => return Err("unmatched '}' in pattern".into()),
            '|' => {
                out.push('|');
                can_quantify = false;
                after_quantifier = false;
            }
            '^' | '$' => {
                out.push(c);
                can_quantify = false;
                after_quantifier = false;
            }
            _ => {
                out.push(c);
                can_quantify = true;
                after_quantifier = false;
            }
        }
        i += 1;
    }
    if depth != 0 {
        return Err("unclosed '(' in pattern".into());
    }
    Regex::new(&format!("(?s){out}")).map_err(|e| format!("invalid pattern: {e}"))?;
    Ok(out)
}

thread_local! {
    /// Compiled patterns: compiling per row would dominate evaluation time.
    static CACHE: RefCell<HashMap<String, Regex>> = RefCell::new(HashMap::new());
}

/// Whether `text` matches a pattern the checker accepted.
pub fn is_match(pattern: &str, text: &str) -> Option<bool> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(re) = cache.get(pattern) {
            return Some(re.is_match(text));
        }
        let normalized = normalize(pattern).ok()?;
        let re = Regex::new(&format!("(?s){normalized}")).ok()?;
        let result = re.is_match(text);
        if cache.len() > 256 {
            cache.clear();
        }
        cache.insert(pattern.to_string(), re);
        Some(result)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_the_shared_subset() {
        assert_eq!(
            normalize(r"^\d{3}-\w+$").expect("ok"),
            "^[0-9]{3}-[a-zA-Z0-9_]+$"
        );
        assert_eq!(normalize(r"[\d.]+\.x").expect("ok"), r"[0-9.]+\.x");
        assert_eq!(normalize(r"(?:ab|c)*?d").expect("ok"), "(?:ab|c)*?d");
        assert_eq!(normalize(r"\S").expect("ok"), r"[^ \t\n\r\f\v]");
        for bad in [
            r"\b",
            "(?=a)",
            "(?i)a",
            "a**",
            "*a",
            "a{x}",
            "[[:alpha:]]",
            "[a&&b]",
            "(",
            "a)",
            "()",
            "[abc",
            r"\1",
            "a}",
            "|*",
        ] {
            assert!(normalize(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn matches() {
        assert_eq!(is_match("^a.c$", "a\nc"), Some(true));
        assert_eq!(is_match(r"\d+", "abc"), Some(false));
        assert_eq!(is_match("[", "abc"), None);
    }
}
