//! `file`: an uploaded CSV (header row; delimiter and encoding options), NDJSON or JSON array,
//! read from the request body as it arrives. A bad row is reported with its line number and the
//! rest goes on, unless the source says `"onError": "abort"`.

use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::Mutex;

use super::{Connector, Sink, SyncError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
    Ndjson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    /// ISO-8859-1 / Windows-1252 exports of older clinic systems.
    Latin1,
}

pub struct FileConnector<R> {
    format: Format,
    delimiter: u8,
    encoding: Encoding,
    /// The body can be read once; `pull` takes it.
    body: Mutex<Option<R>>,
}

impl<R: AsyncRead + Unpin + Send> FileConnector<R> {
    pub fn from_config(
        config: &Value,
        content_type: Option<&str>,
        body: R,
    ) -> Result<Self, SyncError> {
        let format = match config.get("format").and_then(Value::as_str) {
            Some("csv") => Format::Csv,
            Some("json") => Format::Json,
            Some("ndjson") => Format::Ndjson,
            None => match content_type.unwrap_or("") {
                t if t.starts_with("application/json") => Format::Json,
                t if t.starts_with("application/x-ndjson")
                    || t.starts_with("application/ndjson") =>
                {
                    Format::Ndjson
                }
                _ => Format::Csv,
            },
            Some(other) => {
                return Err(SyncError::Config(format!(
                    "config.format {other:?} is not csv, json or ndjson"
                )));
            }
        };
        let delimiter = match config.get("delimiter").and_then(Value::as_str) {
            None => b',',
            Some("\\t") | Some("\t") => b'\t',
            Some(d) if d.len() == 1 && d.is_ascii() => d.as_bytes()[0],
            Some(_) => {
                return Err(SyncError::Config(
                    "config.delimiter must be one ASCII character".to_owned(),
                ));
            }
        };
        let encoding = match config
            .get("encoding")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("utf-8") | Some("utf8") => Encoding::Utf8,
            Some("latin1") | Some("iso-8859-1") | Some("windows-1252") => Encoding::Latin1,
            Some(other) => {
                return Err(SyncError::Config(format!(
                    "config.encoding {other:?} is not utf-8 or latin1"
                )));
            }
        };
        Ok(Self {
            format,
            delimiter,
            encoding,
            body: Mutex::new(Some(body)),
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<String, String> {
        match self.encoding {
            Encoding::Utf8 => String::from_utf8(bytes.to_vec())
                .map_err(|_| "not valid UTF-8 (set config.encoding)".to_owned()),
            Encoding::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        }
    }
}

impl<R: AsyncRead + Unpin + Send> Connector for FileConnector<R> {
    async fn pull(&self, sink: &mut Sink) -> Result<(), SyncError> {
        let body = self
            .body
            .lock()
            .await
            .take()
            .ok_or_else(|| SyncError::Source("the upload was already read".to_owned()))?;
        match self.format {
            Format::Csv => self.pull_csv(body, sink).await,
            Format::Ndjson => self.pull_ndjson(body, sink).await,
            Format::Json => self.pull_json(body, sink).await,
        }
    }
}

impl<R: AsyncRead + Unpin + Send> FileConnector<R> {
    async fn pull_csv(&self, body: R, sink: &mut Sink) -> Result<(), SyncError> {
        let mut reader = csv_async::AsyncReaderBuilder::new()
            .delimiter(self.delimiter)
            .flexible(true)
            .create_reader(body);
        let headers = reader
            .byte_headers()
            .await
            .map_err(|e| SyncError::Source(format!("line 1: {e}")))?
            .clone();
        let mut names = Vec::with_capacity(headers.len());
        for field in headers.iter() {
            let name = self
                .decode(field)
                .map_err(|e| SyncError::Source(format!("line 1: {e}")))?;
            names.push(name.trim().trim_start_matches('\u{feff}').to_owned());
        }
        if names.iter().all(String::is_empty) {
            return Err(SyncError::Source(
                "line 1: the header row is empty".to_owned(),
            ));
        }
        let mut record = csv_async::ByteRecord::new();
        loop {
            let line_before = reader.position().line();
            match reader.read_byte_record(&mut record).await {
                Ok(false) => break,
                Ok(true) => {
                    let line = record.position().map_or(line_before, |p| p.line());
                    if record.len() != names.len() {
                        let message =
                            format!("expected {} fields, found {}", names.len(), record.len());
                        sink.row_error(line, message).await?;
                        continue;
                    }
                    let mut object = Map::with_capacity(names.len());
                    let mut bad = None;
                    for (name, field) in names.iter().zip(record.iter()) {
                        match self.decode(field) {
                            Ok(text) if text.is_empty() => {
                                object.insert(name.clone(), Value::Null);
                            }
                            Ok(text) => {
                                object.insert(name.clone(), Value::String(text));
                            }
                            Err(e) => bad = Some(e),
                        }
                    }
                    match bad {
                        Some(message) => sink.row_error(line, message).await?,
                        None => sink.record(line, Value::Object(object)).await?,
                    }
                }
                Err(e) => {
                    let line = e.position().map_or(line_before + 1, |p| p.line());
                    // A malformed row (e.g. an unclosed quote) is reported; reading goes on.
                    sink.row_error(line, e.to_string()).await?;
                    if matches!(e.kind(), csv_async::ErrorKind::Io(_)) {
                        return Err(SyncError::Source(format!(
                            "reading the upload failed at line {line}"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    async fn pull_ndjson(&self, body: R, sink: &mut Sink) -> Result<(), SyncError> {
        let mut lines = BufReader::new(body).split(b'\n');
        let mut line = 0u64;
        while let Some(bytes) = lines
            .next_segment()
            .await
            .map_err(|e| SyncError::Source(format!("reading the upload failed: {e}")))?
        {
            line += 1;
            let text = match self.decode(&bytes) {
                Ok(text) => text,
                Err(e) => {
                    sink.row_error(line, e).await?;
                    continue;
                }
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(text) {
                Ok(record) => sink.record(line, record).await?,
                Err(e) => sink.row_error(line, format!("invalid JSON: {e}")).await?,
            }
        }
        Ok(())
    }

    async fn pull_json(&self, mut body: R, sink: &mut Sink) -> Result<(), SyncError> {
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)
            .await
            .map_err(|e| SyncError::Source(format!("reading the upload failed: {e}")))?;
        let text = self.decode(&bytes).map_err(SyncError::Source)?;
        drop(bytes);
        let document: Value = serde_json::from_str(&text)
            .map_err(|e| SyncError::Source(format!("invalid JSON: {e}")))?;
        let records = match document {
            Value::Array(items) => items,
            Value::Object(mut map) => match map.remove("records") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(SyncError::Source(
                        "expected a JSON array of records (or {\"records\": [...]})".to_owned(),
                    ));
                }
            },
            _ => {
                return Err(SyncError::Source(
                    "expected a JSON array of records".to_owned(),
                ));
            }
        };
        for (i, record) in records.into_iter().enumerate() {
            sink.record(i as u64 + 1, record).await?;
        }
        Ok(())
    }
}
