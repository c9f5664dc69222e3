//! The one error type of the API and the one JSON envelope every error answers with.
//!
//! `{"statusCode": 404, "error": "Not Found", "code": "PANEL_NOT_FOUND", "message": "Panel not found",
//! "requestId": "…"}`, plus `details` for validation errors. Axum's own rejections (bad JSON, bad
//! path or query) are converted here too, so a client only ever parses one shape. A 5xx keeps its
//! cause in the log (once, with the request id) and answers a generic message.

use std::borrow::Cow;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

tokio::task_local! {
    /// The id of the request being served, set by the request-context middleware so that errors
    /// built deep inside a handler (or a caught panic) can carry it.
    pub static REQUEST_ID: String;
}

/// The request id of the current task, if it is serving a request.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct FieldError {
    /// Where the problem is: a body field (`name`, `display.order`), `path`, `query` or `body`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The error envelope, as documented in OpenAPI.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[schema(example = 404)]
    pub status_code: u16,
    #[schema(example = "Not Found")]
    pub error: String,
    #[schema(example = "PANEL_NOT_FOUND")]
    pub code: String,
    #[schema(example = "Panel not found")]
    pub message: String,
    #[schema(example = "3f1c2e0a-8d5b-4c8e-9a61-2f0f3b1c7d11")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        /// `VALIDATION_ERROR`, or a more specific code naming what kind of input was refused.
        code: &'static str,
        message: String,
        details: Vec<FieldError>,
    },
    #[error("{message}")]
    BadRequest {
        code: Cow<'static, str>,
        message: String,
    },
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{message}")]
    NotFound {
        code: Cow<'static, str>,
        message: String,
    },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{message}")]
    Conflict {
        code: Cow<'static, str>,
        message: String,
    },
    #[error("{message}")]
    PreconditionFailed { message: String },
    #[error("Request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    #[error("{message}")]
    Unprocessable {
        code: Cow<'static, str>,
        message: String,
    },
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64, limit: u64 },
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn not_found(code: &'static str, message: &'static str) -> Self {
        Self::NotFound {
            code: Cow::Borrowed(code),
            message: message.to_owned(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code: Cow::Borrowed(code),
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code: Cow::Borrowed(code),
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized {
            code: "UNAUTHORIZED",
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::forbidden_coded("FORBIDDEN", message)
    }

    /// A 403 with a code of its own (`REGISTRATION_CLOSED`, `API_KEY_READ_ONLY`, …).
    pub fn forbidden_coded(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    pub fn validation(details: Vec<FieldError>) -> Self {
        Self::validation_coded("VALIDATION_ERROR", details)
    }

    /// Invalid fields under a code of their own (`INVALID_SOURCE_CONFIG`, `SECRET_REQUIRED`, …).
    pub fn validation_coded(code: &'static str, details: Vec<FieldError>) -> Self {
        let message = details
            .iter()
            .map(|d| format!("{}: {}", d.field, d.message))
            .collect::<Vec<_>>()
            .join(", ");
        Self::Validation {
            code,
            message,
            details,
        }
    }

    /// One invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } | Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            Self::Validation { code, .. } => code,
            Self::BadRequest { code, .. }
            | Self::NotFound { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unprocessable { code, .. } => code,
            Self::Unauthorized { code, .. }
            | Self::Unavailable { code, .. }
            | Self::Forbidden { code, .. } => code,
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::PreconditionFailed { .. } => "PRECONDITION_FAILED",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType { .. } => "UNSUPPORTED_MEDIA_TYPE",
            Self::TooManyRequests { .. } => "RATE_LIMITED",
            Self::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The envelope a client sees for this error (over a WebSocket, where no response carries it).
    pub fn body(&self) -> ErrorBody {
        if let Self::Internal(err) = self {
            tracing::error!(error.cause = ?err, "request failed");
        }
        envelope(
            self.status(),
            self.code(),
            self.public_message(),
            self.details(),
        )
    }

    /// The message a client sees; internal causes stay in the log.
    fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "Internal server error".to_owned(),
            // An extractor that hits the cap does not know it.
            Self::PayloadTooLarge { limit: 0 } => "Request body is too large".to_owned(),
            Self::TooManyRequests {
                retry_after_secs, ..
            } => {
                format!("Too many requests; retry after {retry_after_secs} s")
            }
            other => other.to_string(),
        }
    }

    fn details(&self) -> Vec<FieldError> {
        match self {
            Self::Validation { details, .. } => details.clone(),
            _ => Vec::new(),
        }
    }
}

/// A value as JSON (a stored idempotent response, a change record's snapshot). Our own types
/// always serialise, so a failure is a bug, answered as a 500.
pub fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.into()))
}

/// Builds the envelope body for a status, outside of `ApiError` (layers that answer on their own).
pub fn envelope(
    status: StatusCode,
    code: &str,
    message: String,
    details: Vec<FieldError>,
) -> ErrorBody {
    ErrorBody {
        status_code: status.as_u16(),
        error: status.canonical_reason().unwrap_or("Error").to_owned(),
        code: code.to_owned(),
        message,
        request_id: current_request_id(),
        details,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(err) = &self {
            // Logged once here, where the error stops travelling; the span carries the request id.
            tracing::error!(error.cause = ?err, "request failed");
        }
        let body = envelope(status, self.code(), self.public_message(), self.details());
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthorized { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"panels\", error=\"invalid_token\""),
                );
            }
            Self::TooManyRequests {
                retry_after_secs,
                limit,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                headers.insert("ratelimit-limit", HeaderValue::from(*limit));
                headers.insert("ratelimit-remaining", HeaderValue::from(0u64));
                headers.insert("ratelimit-reset", HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            // Constraint names are part of the schema contract: map the ones a client can cause.
            if let Some(constraint) = db.constraint() {
                match constraint {
                    "acl_unique_entry" => {
                        return Self::conflict("ACL_EXISTS", "ACL entry already exists");
                    }
                    "users_tenant_email_key" => {
                        return Self::conflict(
                            "EMAIL_TAKEN",
                            "A user with this email already exists",
                        );
                    }
                    "panel_column_name_key" => {
                        return Self::conflict(
                            "COLUMN_NAME_TAKEN",
                            "A column with this name already exists in this panel",
                        );
                    }
                    // One live run per source: a push, upload or custom sync racing another.
                    "sync_run_live_key" => {
                        return Self::conflict(
                            "SYNC_IN_PROGRESS",
                            "A sync of this data source is already running; retry when it ends",
                        );
                    }
                    "tenants_pkey" => {
                        return Self::conflict("TENANT_EXISTS", "This organisation already exists");
                    }
                    _ => {}
                }
            }
            match db.code().as_deref() {
                // string_data_right_truncation, numeric_value_out_of_range
                Some("22001") => return Self::invalid("body", "a value is too long"),
                Some("22003") => return Self::invalid("body", "a number is out of range"),
                // untranslatable_character (jsonb) / character_not_in_repertoire (text): PostgreSQL
                // stores no NUL character, which JSON allows as "\u0000".
                Some("22P05") | Some("22021") => {
                    return Self::invalid(
                        "body",
                        "text must not contain the NUL character (\\u0000)",
                    );
                }
                // lock_not_available / query_canceled (statement_timeout)
                Some("55P03") | Some("57014") => {
                    return Self::Unavailable {
                        code: "DATABASE_BUSY",
                        message: "The database is busy; retry shortly".to_owned(),
                    };
                }
                _ => {}
            }
        }
        if matches!(err, sqlx::Error::PoolTimedOut) {
            return Self::Unavailable {
                code: "DATABASE_BUSY",
                message: "The database is busy; retry shortly".to_owned(),
            };
        }
        Self::Internal(anyhow::Error::new(err))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType {
                message: "Expected a JSON body with Content-Type: application/json".to_owned(),
            },
            JsonRejection::BytesRejection(bytes) => {
                if bytes.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Self::PayloadTooLarge { limit: 0 }
                } else {
                    Self::invalid("body", bytes.body_text())
                }
            }
            JsonRejection::JsonSyntaxError(e) => Self::invalid(
                "body",
                format!("invalid JSON: {}", inner_message(&e.body_text())),
            ),
            JsonRejection::JsonDataError(e) => Self::invalid("body", inner_message(&e.body_text())),
            other => Self::invalid("body", other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::invalid("path", inner_message(&rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid("query", inner_message(&rejection.body_text()))
    }
}

impl From<validator::ValidationErrors> for ApiError {
    fn from(errors: validator::ValidationErrors) -> Self {
        let mut details = Vec::new();
        flatten_validation(&errors, "", &mut details);
        details.sort_by(|a, b| a.field.cmp(&b.field));
        Self::validation(details)
    }
}

fn flatten_validation(
    errors: &validator::ValidationErrors,
    prefix: &str,
    out: &mut Vec<FieldError>,
) {
    use validator::ValidationErrorsKind;
    for (field, kind) in errors.errors() {
        // validator names Rust fields; a client knows the camelCase names of the JSON it sent.
        let field = camel_case(field);
        let name = if prefix.is_empty() {
            field
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for e in list {
                    let message =
                        e.message
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_else(|| match e.code.as_ref() {
                                "length" => describe_length(e),
                                "range" => describe_range(e),
                                code => format!("is invalid ({code})"),
                            });
                    out.push(FieldError::new(name.clone(), message));
                }
            }
            ValidationErrorsKind::Struct(inner) => flatten_validation(inner, &name, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    flatten_validation(inner, &format!("{name}[{index}]"), out);
                }
            }
        }
    }
}

/// `refresh_token` → `refreshToken`; names without `_` are kept as they are.
fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn describe_length(e: &validator::ValidationError) -> String {
    match (e.params.get("min"), e.params.get("max")) {
        (Some(min), Some(max)) => format!("length must be between {min} and {max}"),
        (Some(min), None) => format!("length must be at least {min}"),
        (None, Some(max)) => format!("length must be at most {max}"),
        _ => "has an invalid length".to_owned(),
    }
}

fn describe_range(e: &validator::ValidationError) -> String {
    match (e.params.get("min"), e.params.get("max")) {
        (Some(min), Some(max)) => format!("must be between {min} and {max}"),
        (Some(min), None) => format!("must be at least {min}"),
        (None, Some(max)) => format!("must be at most {max}"),
        _ => "is out of range".to_owned(),
    }
}

/// Axum's rejection texts start with a generic prefix ("Failed to deserialize the JSON body into
/// the target type: "); the useful part is after it.
fn inner_message(text: &str) -> String {
    text.split_once(": ")
        .map(|(_, rest)| rest)
        .unwrap_or(text)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::Internal(anyhow::anyhow!("relation \"panel\" does not exist"));
        assert_eq!(err.public_message(), "Internal server error");
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn validation_details_name_fields_as_the_json_does() {
        assert_eq!(camel_case("refresh_token"), "refreshToken");
        assert_eq!(camel_case("notification_ids"), "notificationIds");
        assert_eq!(camel_case("name"), "name");
        assert_eq!(camel_case("sourceField"), "sourceField");
    }

    #[test]
    fn validation_message_lists_fields() {
        let err = ApiError::validation(vec![
            FieldError::new("name", "length must be at most 255"),
            FieldError::new("type", "is required"),
        ]);
        assert_eq!(
            err.to_string(),
            "name: length must be at most 255, type: is required"
        );
        assert_eq!(err.code(), "VALIDATION_ERROR");
    }
}
