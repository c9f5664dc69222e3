//! `file`: an uploaded CSV (header row; delimiter and encoding options), NDJSON or JSON array,
//! read from the request body as it arrives. A bad row is reported with its line number and the
//! rest goes on, unless the source says `"onError": "abort"`.

use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Mutex;

use super::json_stream::{MAX_RECORD_BYTES, Piece, Splitter};
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
        // The CSV reader keeps a whole record: a line longer than a record may be ends the upload
        // instead of growing it without bound.
        let body = BoundedLines {
            inner: body,
            since_newline: 0,
        };
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

    /// One record per line, read as the body arrives; a line longer than [`MAX_RECORD_BYTES`] is
    /// reported and skipped without being kept.
    async fn pull_ndjson(&self, mut body: R, sink: &mut Sink) -> Result<(), SyncError> {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut line = Vec::new();
        let mut oversized = false;
        let mut number = 0u64;
        loop {
            let n = body.read(&mut buf).await.map_err(read_failed)?;
            if n == 0 {
                break;
            }
            for part in buf[..n].split_inclusive(|b| *b == b'\n') {
                let ends = part.last() == Some(&b'\n');
                let text = if ends { &part[..part.len() - 1] } else { part };
                if !oversized {
                    if line.len() + text.len() > MAX_RECORD_BYTES {
                        oversized = true;
                        line = Vec::new();
                    } else {
                        line.extend_from_slice(text);
                    }
                }
                if ends {
                    number += 1;
                    self.ndjson_line(number, &line, oversized, sink).await?;
                    line.clear();
                    oversized = false;
                }
            }
        }
        if !line.is_empty() || oversized {
            number += 1;
            self.ndjson_line(number, &line, oversized, sink).await?;
        }
        Ok(())
    }

    async fn ndjson_line(
        &self,
        number: u64,
        bytes: &[u8],
        oversized: bool,
        sink: &mut Sink,
    ) -> Result<(), SyncError> {
        if oversized {
            return sink.row_error(number, too_large()).await;
        }
        let text = match self.decode(bytes) {
            Ok(text) => text,
            Err(e) => return sink.row_error(number, e).await,
        };
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        match serde_json::from_str::<Value>(text) {
            Ok(record) => sink.record(number, record).await,
            Err(e) => sink.row_error(number, format!("invalid JSON: {e}")).await,
        }
    }

    /// A JSON array of records (or `{"records": [...]}`), split into records as the body arrives
    /// ([`json_stream`]): memory holds one record, however large the upload.
    async fn pull_json(&self, mut body: R, sink: &mut Sink) -> Result<(), SyncError> {
        let mut splitter = Splitter::new();
        let mut buf = vec![0u8; READ_CHUNK];
        let mut pieces = Vec::new();
        loop {
            let n = body.read(&mut buf).await.map_err(read_failed)?;
            if n == 0 {
                break;
            }
            splitter
                .feed(&buf[..n], &mut pieces)
                .map_err(SyncError::Source)?;
            for piece in pieces.drain(..) {
                self.json_piece(piece, sink).await?;
            }
        }
        splitter.finish(&mut pieces).map_err(SyncError::Source)?;
        for piece in pieces.drain(..) {
            self.json_piece(piece, sink).await?;
        }
        Ok(())
    }

    async fn json_piece(&self, piece: Piece, sink: &mut Sink) -> Result<(), SyncError> {
        match piece {
            Piece::TooLarge(i) => sink.row_error(i as u64, too_large()).await,
            Piece::Record(i, bytes) => {
                let text = match self.decode(&bytes) {
                    Ok(text) => text,
                    Err(e) => return sink.row_error(i as u64, e).await,
                };
                match serde_json::from_str::<Value>(&text) {
                    Ok(record) => sink.record(i as u64, record).await,
                    Err(e) => sink.row_error(i as u64, format!("invalid JSON: {e}")).await,
                }
            }
        }
    }
}

/// How much of the body one read takes.
const READ_CHUNK: usize = 64 * 1024;

fn too_large() -> String {
    format!("the record is larger than {MAX_RECORD_BYTES} bytes")
}

fn read_failed(e: std::io::Error) -> SyncError {
    SyncError::Source(format!("reading the upload failed: {e}"))
}

/// A reader that fails once more than [`MAX_RECORD_BYTES`] pass without a line break.
struct BoundedLines<R> {
    inner: R,
    since_newline: usize,
}

impl<R: AsyncRead + Unpin> AsyncRead for BoundedLines<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &polled {
            let fresh = &buf.filled()[before..];
            match fresh.iter().rposition(|b| *b == b'\n') {
                Some(last) => self.since_newline = fresh.len() - last - 1,
                None => self.since_newline += fresh.len(),
            }
            if self.since_newline > MAX_RECORD_BYTES {
                return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                    "a line is longer than {MAX_RECORD_BYTES} bytes"
                ))));
            }
        }
        polled
    }
}
