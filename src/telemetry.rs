//! Logging, set up once: JSON lines in production, readable lines in development, filtered by
//! `RUST_LOG`. Every line of a request carries its span (request id, method, route, tenant, user).

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber; safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry.with(json_layer()).try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().compact())
            .try_init(),
    };
    // Already installed (tests start many servers in one process): keep the first.
    let _ = result;
}

/// The production JSON lines: the event's fields at the top level, the innermost span's fields
/// under `span`.
fn json_layer<S>() -> tracing_subscriber::fmt::Layer<S, JsonSpanFields, Format<Json>>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .fmt_fields(JsonSpanFields)
}

/// Span fields as one JSON object, written straight into the span's string. Every request
/// opens a span and records its tenant and user on it, so this runs on every request.
/// `tracing_subscriber`'s own `JsonFields` builds a map of JSON values for each span, and it
/// parses and re-serialises the whole object on each `record`. This writer appends instead.
/// The request span is a measurable share of a cache hit (bench/README.md, finding 17). The JSON
/// event formatter reads these objects back when a line is written, which happens rarely.
pub struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        writer.write_char('{')?;
        let mut visitor = JsonObject {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result?;
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        // The object written so far, reopened: `{"a":1}` becomes `{"a":1,"b":2}`.
        let first = match current.fields.as_str() {
            "" => {
                current.fields.push('{');
                true
            }
            "{}" => {
                current.fields.pop();
                true
            }
            _ => {
                current.fields.pop();
                false
            }
        };
        let mut writer = current.as_writer();
        let mut visitor = JsonObject {
            writer: &mut writer,
            first,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result?;
        writer.write_char('}')
    }
}

/// Writes the fields it visits as the members of a JSON object whose opening brace (and, unless
/// `first`, members) are already written.
struct JsonObject<'a, W: Write> {
    writer: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<W: Write> JsonObject<'_, W> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // `r#type` and the like are recorded under their plain name, as `JsonFields` does.
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = (|| {
            if !self.first {
                self.writer.write_char(',')?;
            }
            self.first = false;
            write_json_str(self.writer, format_args!("{name}"))?;
            self.writer.write_char(':')?;
            value(self.writer)
        })();
    }
}

impl<W: Write> Visit for JsonObject<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |w| write_json_str(w, format_args!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| write_json_str(w, format_args!("{value}")));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, |w| write_json_str(w, format_args!("{value}")));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; those are written as strings.
        if value.is_finite() {
            self.member(field, |w| write!(w, "{value}"));
        } else {
            self.member(field, |w| write_json_str(w, format_args!("{value}")));
        }
    }
}

/// Writes formatted text as a JSON string, escaping as it goes (no intermediate `String`).
fn write_json_str(writer: &mut impl Write, text: fmt::Arguments<'_>) -> fmt::Result {
    struct Escape<'a, W: Write>(&'a mut W);
    impl<W: Write> Write for Escape<'_, W> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let mut start = 0;
            for (i, byte) in s.bytes().enumerate() {
                let escaped = match byte {
                    b'"' => "\\\"",
                    b'\\' => "\\\\",
                    b'\n' => "\\n",
                    b'\r' => "\\r",
                    b'\t' => "\\t",
                    0..=0x1f => "",
                    _ => continue,
                };
                self.0.write_str(&s[start..i])?;
                if escaped.is_empty() {
                    write!(self.0, "\\u{byte:04x}")?;
                } else {
                    self.0.write_str(escaped)?;
                }
                start = i + 1;
            }
            self.0.write_str(&s[start..])
        }
    }
    writer.write_char('"')?;
    Escape(writer).write_fmt(text)?;
    writer.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    /// Collects what the JSON layer writes.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    #[test]
    fn span_fields_written_and_recorded_later_are_one_json_object_on_the_line() {
        let lines = Lines::default();
        let subscriber =
            tracing_subscriber::registry().with(json_layer().with_writer(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let odd = "quote \" backslash \\ newline \n tab \t bell \u{7} é";
            let span = tracing::info_span!(
                "request",
                request_id = %odd,
                method = "GET",
                count = 3_u64,
                delta = -2_i64,
                ok = true,
                ratio = 0.5_f64,
                nan = f64::NAN,
                tenant = tracing::field::Empty,
                user = tracing::field::Empty,
            );
            span.record("tenant", "acme");
            span.record("user", tracing::field::display("user-1"));
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "inside");
        assert_eq!(line["answer"], 42);
        let span = &line["span"];
        assert_eq!(
            span["request_id"],
            "quote \" backslash \\ newline \n tab \t bell \u{7} é"
        );
        assert_eq!(span["method"], "GET");
        assert_eq!(span["count"], 3);
        assert_eq!(span["delta"], -2);
        assert_eq!(span["ok"], true);
        assert_eq!(span["ratio"], 0.5);
        assert_eq!(span["nan"], "NaN");
        assert_eq!(span["tenant"], "acme");
        assert_eq!(span["user"], "user-1");
        assert_eq!(span["name"], "request");
    }

    #[test]
    fn a_span_opened_without_values_gets_the_ones_recorded_later() {
        let lines = Lines::default();
        let subscriber =
            tracing_subscriber::registry().with(json_layer().with_writer(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("outer", tenant = tracing::field::Empty);
            span.record("tenant", "acme");
            span.record("tenant", "other");
            let _entered = span.enter();
            tracing::warn!("inside");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        // Recorded twice: the object holds the key twice and a JSON reader keeps the last.
        assert_eq!(line["span"]["tenant"], "other");
        assert_eq!(line["span"]["name"], "outer");
    }
}
