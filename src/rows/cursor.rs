//! Row cursors: where the next page starts, opaque to the client and signed, so a cursor cannot
//! be forged to read past a query's conditions or crafted to hold values of another type. A
//! cursor names the query it belongs to (its fingerprint): used with a query whose meaning has
//! changed since (the view's filters or sorts, a column's formula, the cohort rule), it is stale.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::query::{After, KeyType, KeyValue};

type HmacSha256 = Hmac<Sha256>;

/// How many bytes of the HMAC a cursor carries.
const TAG_BYTES: usize = 16;

/// The key that signs cursors: derived from `JWT_SECRET` (every instance of a deployment shares
/// it), or random for a process without one (its cursors then work on it alone, as its tokens).
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl CursorKey {
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(b"panels row cursor v1");
        Self(mac.finalize().into_bytes().into())
    }

    pub fn random() -> Self {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"))
    }
}

/// Why a cursor is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorError {
    /// Not a cursor of ours, or altered.
    Invalid,
    /// A cursor of this server, for a query that has changed since.
    Stale,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    /// The query's fingerprint.
    f: String,
    /// The sort keys of the last row, each `<type>:<value>`.
    k: Vec<String>,
    /// The last row's id.
    i: i64,
}

fn key_text(k: &KeyValue) -> String {
    match k {
        KeyValue::Text(s) => format!("t:{s}"),
        // Rust prints an f64 so that it parses back to the same bits (inf included).
        KeyValue::Number(n) => format!("n:{n}"),
        // Days and microseconds as numbers: the bounds that stand for an empty date lie outside
        // what a calendar text can say (years 0 and 10000).
        KeyValue::Date(d) => format!("d:{}", d.num_days_from_ce()),
        KeyValue::Instant(t) => format!("i:{}", t.timestamp_micros()),
        KeyValue::Null => "z:".to_owned(),
    }
}

fn parse_key(s: &str, ty: KeyType) -> Option<KeyValue> {
    let (tag, value) = s.split_once(':')?;
    Some(match (tag, ty) {
        ("z", _) if value.is_empty() => KeyValue::Null,
        ("t", KeyType::Text) => KeyValue::Text(value.to_owned()),
        ("n", KeyType::Number) => KeyValue::Number(value.parse().ok()?),
        ("d", KeyType::Date) => {
            KeyValue::Date(NaiveDate::from_num_days_from_ce_opt(value.parse().ok()?)?)
        }
        ("i", KeyType::Instant) => {
            KeyValue::Instant(DateTime::<Utc>::from_timestamp_micros(value.parse().ok()?)?)
        }
        _ => return None,
    })
}

/// A cursor for the rows after `after` in the query `fingerprint`.
pub fn encode(key: &CursorKey, fingerprint: &str, after: &After) -> String {
    let payload = Payload {
        f: fingerprint.to_owned(),
        k: after.keys.iter().map(key_text).collect(),
        i: after.id,
    };
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap_or_default());
    let mut mac = key.mac();
    mac.update(body.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]))
}

/// Reads a cursor of the query `fingerprint`, whose sort keys have these types.
pub fn decode(
    key: &CursorKey,
    cursor: &str,
    fingerprint: &str,
    types: &[KeyType],
) -> Result<After, CursorError> {
    let (body, tag) = cursor.split_once('.').ok_or(CursorError::Invalid)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| CursorError::Invalid)?;
    let mut mac = key.mac();
    mac.update(body.as_bytes());
    mac.verify_truncated_left(&tag)
        .map_err(|_| CursorError::Invalid)?;
    if tag.len() != TAG_BYTES {
        return Err(CursorError::Invalid);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| CursorError::Invalid)?;
    let payload: Payload = serde_json::from_slice(&bytes).map_err(|_| CursorError::Invalid)?;
    if payload.f != fingerprint || payload.k.len() != types.len() {
        return Err(CursorError::Stale);
    }
    let keys = payload
        .k
        .iter()
        .zip(types)
        .map(|(k, ty)| parse_key(k, *ty))
        .collect::<Option<Vec<_>>>()
        .ok_or(CursorError::Stale)?;
    Ok(After {
        keys,
        id: payload.i,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after() -> After {
        After {
            keys: vec![
                KeyValue::Text("ada, lovelace \u{10FFFF}".into()),
                KeyValue::Number(f64::NEG_INFINITY),
                KeyValue::Null,
                KeyValue::Date(NaiveDate::from_ymd_opt(0, 12, 31).expect("date")),
                KeyValue::Instant(
                    DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
                        .expect("rfc3339")
                        .with_timezone(&Utc)
                        + chrono::Duration::days(1),
                ),
                KeyValue::Instant(
                    DateTime::parse_from_rfc3339("2026-12-04T10:11:12.345678Z")
                        .expect("rfc3339")
                        .with_timezone(&Utc),
                ),
            ],
            id: 42,
        }
    }

    const TYPES: &[KeyType] = &[
        KeyType::Text,
        KeyType::Number,
        KeyType::Number,
        KeyType::Date,
        KeyType::Instant,
        KeyType::Instant,
    ];

    #[test]
    fn a_cursor_reads_back_exactly() {
        let key = CursorKey::derive(b"secret");
        let cursor = encode(&key, "abc", &after());
        assert_eq!(decode(&key, &cursor, "abc", TYPES), Ok(after()));
    }

    #[test]
    fn a_tampered_or_foreign_cursor_is_invalid_and_an_old_one_stale() {
        let key = CursorKey::derive(b"secret");
        let cursor = encode(&key, "abc", &after());
        let (body, tag) = cursor.split_once('.').expect("two parts");
        let mut altered = body.as_bytes().to_vec();
        altered[3] ^= 1;
        let altered = format!("{}.{tag}", String::from_utf8_lossy(&altered));
        assert_eq!(
            decode(&key, &altered, "abc", TYPES),
            Err(CursorError::Invalid)
        );
        let other = CursorKey::derive(b"another secret");
        assert_eq!(
            decode(&other, &cursor, "abc", TYPES),
            Err(CursorError::Invalid)
        );
        for junk in ["", "x", "x.y", "aWQ6MTA", "..."] {
            assert_eq!(
                decode(&key, junk, "abc", TYPES),
                Err(CursorError::Invalid),
                "{junk}"
            );
        }
        assert_eq!(decode(&key, &cursor, "abd", TYPES), Err(CursorError::Stale));
        assert_eq!(
            decode(&key, &cursor, "abc", &TYPES[..2]),
            Err(CursorError::Stale)
        );
    }
}
