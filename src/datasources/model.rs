//! Data-source shapes, as the existing client reads them, and the rules a config must follow.

use crate::ids::{DataSourceId, PanelId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use validator::Validate;

use super::crypto::mask_config;
use crate::error::FieldError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DataSourceRow {
    pub id: DataSourceId,
    pub panel_id: PanelId,
    #[sqlx(rename = "type")]
    pub kind: String,
    /// As stored: secrets encrypted.
    pub config: Value,
    pub last_sync: DateTime<Utc>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a source's records come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    Database,
    Api,
    File,
    Custom,
}

impl SourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::Api => "api",
            Self::File => "file",
            Self::Custom => "custom",
        }
    }
}

/// A data source; secrets in `config` are shown as `********`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceResponse {
    pub id: DataSourceId,
    #[serde(rename = "type")]
    #[schema(value_type = SourceType)]
    pub kind: String,
    /// The source's settings, secrets masked.
    #[schema(value_type = Object, example = json!({"connectionString": "********", "query": "select * from patients", "keyField": "id", "deletePolicy": "keep"}))]
    pub config: Value,
    pub last_sync: DateTime<Utc>,
    pub panel_id: PanelId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&DataSourceRow> for DataSourceResponse {
    fn from(row: &DataSourceRow) -> Self {
        Self {
            id: row.id,
            kind: row.kind.clone(),
            config: mask_config(&row.config),
            last_sync: row.last_sync,
            panel_id: row.panel_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Body of create and of update (which replaces the whole config). Other keys the old client
/// sends (`name`, `isActive`, `metadata`, `tenantId`, …) are ignored.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"type": "custom", "config": {"keyField": "mrn", "deletePolicy": "keep"}}))]
pub struct DataSourceRequest {
    #[serde(rename = "type")]
    pub kind: SourceType,
    /// Settings of the source (see the rules per type). On update, a secret sent as `********`
    /// keeps its stored value.
    #[schema(value_type = Object, example = json!({"connectionString": "postgres://reader:pw@db/clinic", "query": "select * from patients", "keyField": "id"}))]
    pub config: Map<String, Value>,
}

/// The key field when a config names none. The old client (and the Bruno "Create DataSource"
/// request) sends configs without `keyField`; requiring it would break them, so it is optional
/// and defaults to `id`, the usual primary key of the records a source returns.
pub const DEFAULT_KEY_FIELD: &str = "id";

const MAX_TEXT: usize = 4096;
const MAX_QUERY: usize = 100_000;
const MAX_URL: usize = 2048;
const MAX_TIMEOUT_MS: i64 = 120_000;
/// Longest interval of an `everyMinutes` schedule: a year.
const MAX_EVERY_MINUTES: i64 = 525_600;

/// Checks a plaintext config for its type and fills the defaults in (`keyField`, `deletePolicy`,
/// and for files `format` and `delimiter`). Keys no rule knows are kept as they are.
pub fn validate_config(kind: SourceType, config: &mut Map<String, Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut err = |field: &str, message: &str| {
        errors.push(FieldError::new(format!("config.{field}"), message))
    };

    match config.get("keyField") {
        None | Some(Value::Null) => {
            config.insert("keyField".into(), Value::String(DEFAULT_KEY_FIELD.into()));
        }
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 255 => {}
        Some(_) => err(
            "keyField",
            "must be a non-empty string of at most 255 characters",
        ),
    }
    match config.get("deletePolicy") {
        None | Some(Value::Null) => {
            config.insert("deletePolicy".into(), Value::String("keep".into()));
        }
        Some(Value::String(s)) if s == "keep" || s == "delete" => {}
        Some(_) => err("deletePolicy", "must be keep or delete"),
    }
    if let Some(schedule) = config.get("schedule") {
        check_schedule(schedule, &mut err);
    }

    match kind {
        SourceType::Database => {
            match config.get("connectionString") {
                Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_TEXT => {}
                None | Some(Value::Null) => err("connectionString", "is required"),
                Some(_) => err(
                    "connectionString",
                    "must be a non-empty string of at most 4096 characters",
                ),
            }
            match config.get("query") {
                Some(Value::String(q)) if q.len() > MAX_QUERY => {
                    err("query", "must be at most 100000 characters")
                }
                Some(Value::String(q)) if is_read_query(q) => {}
                None | Some(Value::Null) => err("query", "is required"),
                Some(_) => err("query", "must start with SELECT or WITH"),
            }
        }
        SourceType::Api => {
            match config.get("url") {
                Some(Value::String(u)) if is_http_url(u) => {}
                None | Some(Value::Null) => err("url", "is required"),
                Some(_) => err(
                    "url",
                    "must be an http or https URL of at most 2048 characters",
                ),
            }
            match config.get("headers") {
                None | Some(Value::Null) => {}
                Some(Value::Object(headers)) => {
                    for (name, value) in headers {
                        if !is_header_name(name) {
                            err(&format!("headers.{name}"), "is not a valid header name");
                        } else if !matches!(value, Value::String(v) if v.len() <= MAX_TEXT && !v.contains(['\r', '\n']))
                        {
                            err(
                                &format!("headers.{name}"),
                                "must be a string of at most 4096 characters on one line",
                            );
                        }
                    }
                }
                Some(_) => err("headers", "must be an object of strings"),
            }
            for key in ["recordsPointer", "nextPointer"] {
                match config.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(p)) if p.is_empty() || p.starts_with('/') => {}
                    _ => err(key, "must be a JSON pointer (\"\" or starting with \"/\")"),
                }
            }
            match config.get("timeoutMs") {
                None | Some(Value::Null) => {}
                Some(v)
                    if v.as_i64()
                        .is_some_and(|t| (1..=MAX_TIMEOUT_MS).contains(&t)) => {}
                Some(_) => err("timeoutMs", "must be an integer between 1 and 120000"),
            }
        }
        SourceType::File => {
            match config.get("format") {
                None | Some(Value::Null) => {
                    config.insert("format".into(), Value::String("csv".into()));
                }
                Some(Value::String(f)) if ["csv", "json", "ndjson"].contains(&f.as_str()) => {}
                Some(_) => err("format", "must be csv, json or ndjson"),
            }
            match config.get("delimiter") {
                None | Some(Value::Null) => {
                    config.insert("delimiter".into(), Value::String(",".into()));
                }
                Some(Value::String(d))
                    if d.chars().count() == 1 && !matches!(d.as_str(), "\"" | "\r" | "\n") => {}
                Some(_) => err(
                    "delimiter",
                    "must be one character (not a quote or a line break)",
                ),
            }
        }
        SourceType::Custom => {}
    }
    errors
}

fn check_schedule(schedule: &Value, err: &mut impl FnMut(&str, &str)) {
    let map = match schedule {
        Value::Null => return,
        Value::Object(map) => map,
        _ => {
            return err(
                "schedule",
                "must be {\"everyMinutes\": n} or {\"cron\": \"…\"}",
            );
        }
    };
    if let Some(key) = map.keys().find(|k| *k != "everyMinutes" && *k != "cron") {
        return err(
            &format!("schedule.{key}"),
            "is not a schedule field (everyMinutes or cron)",
        );
    }
    match (map.get("everyMinutes"), map.get("cron")) {
        (Some(every), None) => {
            if !every
                .as_i64()
                .is_some_and(|n| (1..=MAX_EVERY_MINUTES).contains(&n))
            {
                err(
                    "schedule.everyMinutes",
                    "must be an integer between 1 and 525600",
                );
            }
        }
        (None, Some(cron)) => {
            if !cron.as_str().is_some_and(is_cron) {
                err(
                    "schedule.cron",
                    "must be a cron expression of 5 or 6 fields",
                );
            }
        }
        _ => err("schedule", "must have exactly one of everyMinutes or cron"),
    }
}

/// A read query: its first word is SELECT or WITH (ignoring case, leading blanks and parentheses).
pub fn is_read_query(query: &str) -> bool {
    let start = query.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
    let word: String = start
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    word.eq_ignore_ascii_case("select") || word.eq_ignore_ascii_case("with")
}

/// An absolute http(s) URL with a host and no blanks.
pub fn is_http_url(url: &str) -> bool {
    if url.len() > MAX_URL || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let lower = url.to_ascii_lowercase();
    let rest = match lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    {
        Some(rest) => rest,
        None => return false,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    !host.is_empty() && !host.starts_with(':')
}

/// An HTTP header name (RFC 9110 token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Five or six fields of the usual cron characters (the scheduler parses it for real).
fn is_cron(expr: &str) -> bool {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    (5..=6).contains(&fields.len())
        && fields.iter().all(|f| {
            f.chars()
                .all(|c| c.is_ascii_alphanumeric() || "*/,-?#".contains(c))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(kind: SourceType, config: Value) -> (Map<String, Value>, Vec<String>) {
        let mut map = config.as_object().cloned().expect("object");
        let errors = validate_config(kind, &mut map)
            .into_iter()
            .map(|e| e.field)
            .collect();
        (map, errors)
    }

    #[test]
    fn defaults_are_filled_and_unknown_keys_kept() {
        let (map, errors) = check(
            SourceType::Database,
            json!({"connectionString": "postgres://u@x", "query": "  SELECT 1", "refreshInterval": 300}),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(map["keyField"], "id");
        assert_eq!(map["deletePolicy"], "keep");
        assert_eq!(map["refreshInterval"], 300);
        let (map, errors) = check(SourceType::File, json!({}));
        assert!(errors.is_empty());
        assert_eq!(
            (map["format"].as_str(), map["delimiter"].as_str()),
            (Some("csv"), Some(","))
        );
    }

    #[test]
    fn each_type_checks_its_fields() {
        let (_, errors) = check(SourceType::Database, json!({"query": "delete from x"}));
        assert_eq!(errors, ["config.connectionString", "config.query"]);
        let (_, errors) = check(
            SourceType::Api,
            json!({"url": "ftp://x", "headers": {"A": 1}, "recordsPointer": "data", "timeoutMs": 0}),
        );
        assert_eq!(
            errors,
            [
                "config.url",
                "config.headers.A",
                "config.recordsPointer",
                "config.timeoutMs"
            ]
        );
        let (_, errors) = check(
            SourceType::File,
            json!({"format": "xml", "delimiter": ";;"}),
        );
        assert_eq!(errors, ["config.format", "config.delimiter"]);
        let (_, errors) = check(
            SourceType::Custom,
            json!({"keyField": "", "deletePolicy": "purge", "schedule": {"everyMinutes": 0}}),
        );
        assert_eq!(
            errors,
            [
                "config.keyField",
                "config.deletePolicy",
                "config.schedule.everyMinutes"
            ]
        );
    }

    #[test]
    fn schedules_take_one_form() {
        assert!(
            check(
                SourceType::Custom,
                json!({"schedule": {"everyMinutes": 15}})
            )
            .1
            .is_empty()
        );
        assert!(
            check(
                SourceType::Custom,
                json!({"schedule": {"cron": "0 */2 * * *"}})
            )
            .1
            .is_empty()
        );
        assert!(
            !check(
                SourceType::Custom,
                json!({"schedule": {"everyMinutes": 5, "cron": "* * * * *"}})
            )
            .1
            .is_empty()
        );
        assert!(
            !check(
                SourceType::Custom,
                json!({"schedule": {"cron": "tomorrow"}})
            )
            .1
            .is_empty()
        );
        assert!(
            !check(SourceType::Custom, json!({"schedule": "hourly"}))
                .1
                .is_empty()
        );
    }

    #[test]
    fn queries_and_urls() {
        assert!(is_read_query("with a as (select 1) select * from a"));
        assert!(is_read_query("\n(SELECT 1)"));
        assert!(!is_read_query("selection"));
        assert!(!is_read_query("update t set x = 1"));
        assert!(is_http_url("https://api.example.com/v1/patients?page=1"));
        assert!(is_http_url("HTTP://localhost:8080"));
        assert!(!is_http_url("https:///nohost"));
        assert!(!is_http_url("https://exa mple.com"));
        assert!(!is_http_url("file:///etc/passwd"));
    }
}
