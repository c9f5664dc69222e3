//! Writing an export: CSV (RFC 4180, a header of column names) or NDJSON (one row object per
//! line), in chunks of the rows that are ready, so the response streams while the database
//! still sends.
//!
//! A CSV is read by spreadsheets, which run a cell that starts with `=`, `+`, `-` or `@` (or a tab
//! or carriage return before one) as a formula: a text value a tenant's source put there could
//! then fetch data or run commands on the reader's machine. Such text cells are prefixed with `'`
//! (OWASP's advice); numbers, dates and booleans are written as values and never start a formula.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};

use super::model::ExportFormat;
use super::service::ExportRow;
use crate::error::Result;
use crate::formula;

/// Rows written into one chunk of the response at most.
const CHUNK_ROWS: usize = 512;

/// The characters that make a spreadsheet read a cell as a formula.
fn needs_neutralising(text: &str) -> bool {
    matches!(
        text.chars().next(),
        Some('=' | '+' | '-' | '@' | '\t' | '\r')
    )
}

/// A cell as CSV text: blank is empty, text is neutralised where a spreadsheet would run it.
pub fn csv_cell(value: &formula::Value) -> String {
    match value {
        formula::Value::Text(s) if needs_neutralising(s) => format!("'{s}"),
        other => other.text().unwrap_or_default(),
    }
}

fn csv_line(fields: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(256));
    // Writing into memory cannot fail.
    let _ = writer.write_record(fields);
    writer.into_inner().unwrap_or_default()
}

/// The header line of a CSV export.
pub fn csv_header(header: &[String]) -> Bytes {
    let neutral: Vec<String> = header
        .iter()
        .map(|name| {
            if needs_neutralising(name) {
                format!("'{name}")
            } else {
                name.clone()
            }
        })
        .collect();
    Bytes::from(csv_line(&neutral))
}

fn ndjson_line(header: &[String], row: &ExportRow) -> Vec<u8> {
    let values: Map<String, Value> = header
        .iter()
        .zip(&row.values)
        .map(|(name, value)| (name.clone(), value.to_json()))
        .collect();
    let mut line = serde_json::to_vec(&json!({
        "id": row.id,
        "key": row.key,
        "dataSourceId": row.data_source_id,
        "values": values,
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

/// The response body: the header (CSV), then the rows as they come. A failure midway ends the
/// body with an error, so the client sees an incomplete transfer, never a short file that looks
/// whole.
pub fn body(
    format: ExportFormat,
    header: &[String],
    rows: impl Stream<Item = Result<ExportRow>> + Send + 'static,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let head = match format {
        ExportFormat::Csv => Some(Ok(csv_header(header))),
        ExportFormat::Ndjson => None,
    };
    let names = header.to_vec();
    let chunks = rows.ready_chunks(CHUNK_ROWS).map(move |batch| {
        let mut out = Vec::with_capacity(batch.len() * 128);
        match format {
            ExportFormat::Csv => {
                let mut writer = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(&mut out);
                for row in batch {
                    let row = row.map_err(|e| std::io::Error::other(e.to_string()))?;
                    writer.write_record(row.values.iter().map(csv_cell))?;
                }
                writer.flush()?;
            }
            ExportFormat::Ndjson => {
                for row in batch {
                    let row = row.map_err(|e| std::io::Error::other(e.to_string()))?;
                    out.extend(ndjson_line(&names, &row));
                }
            }
        }
        Ok(Bytes::from(out))
    });
    futures::stream::iter(head).chain(chunks)
}

/// `attachment; filename="…"; filename*=UTF-8''…` for a view's name: a plain ASCII name for old
/// clients and the exact one, percent-encoded (RFC 6266, RFC 8187).
pub fn content_disposition(view_name: &str, format: ExportFormat) -> String {
    let extension = match format {
        ExportFormat::Csv => "csv",
        ExportFormat::Ndjson => "ndjson",
    };
    let name = view_name.trim();
    let name = if name.is_empty() { "export" } else { name };
    let ascii: String = name
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in format!("{name}.{extension}").bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'!' | b'#' | b'$' | b'&' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            )
        {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}.{extension}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreadsheet_formulas_are_neutralised_in_text_cells_only() {
        for (cell, expected) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1", "'+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\r=1", "'\r=1"),
            ("plain", "plain"),
            ("a=b", "a=b"),
        ] {
            assert_eq!(csv_cell(&formula::Value::Text(cell.into())), expected);
        }
        assert_eq!(csv_cell(&formula::Value::Number(-5.0)), "-5");
        assert_eq!(csv_cell(&formula::Value::Blank), "");
        assert_eq!(csv_cell(&formula::Value::Boolean(true)), "TRUE");
    }

    #[test]
    fn csv_quotes_as_rfc_4180_says() {
        let line = csv_line(["a", "b,c", "say \"hi\"", "two\nlines", ""]);
        assert_eq!(
            String::from_utf8(line).expect("utf-8"),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n"
        );
    }

    #[test]
    fn the_file_name_follows_the_view() {
        assert_eq!(
            content_disposition("Überweisung / Q4", ExportFormat::Csv),
            "attachment; filename=\"_berweisung _ Q4.csv\"; filename*=UTF-8''%C3%9Cberweisung%20%2F%20Q4.csv"
        );
        assert_eq!(
            content_disposition("  ", ExportFormat::Ndjson),
            "attachment; filename=\"export.ndjson\"; filename*=UTF-8''export.ndjson"
        );
    }
}
