//! The records of a JSON upload as they arrive: a top-level array, or the array under the
//! top-level key `records`, split into its elements without ever holding more than one element
//! (at most [`MAX_RECORD_BYTES`]) in memory, whatever the size of the document. Each element is
//! then parsed on its own (`serde_json`), so a bad record is reported by position and the rest
//! goes on. No crate splits an array pushed in chunks from an async body like this; the state
//! machine is small: structure is found by tracking strings (and their escapes) and nesting.

/// Largest record of a JSON or NDJSON upload, in bytes: a larger one is reported and skipped.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// What the splitter found.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// The bytes of one element, and its 1-based position in the array.
    Record(usize, Vec<u8>),
    /// An element larger than [`MAX_RECORD_BYTES`], skipped.
    TooLarge(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the document's first byte that is not blank.
    Start,
    /// Inside the top-level object, expecting a key (or its end).
    ObjectKey,
    /// Reading a key of the top-level object.
    InKey,
    /// After a key, expecting `:`.
    Colon,
    /// After `:`, expecting the value (the records array if the key was `records`).
    Value,
    /// Skipping the value of another key of the top-level object.
    SkipValue,
    /// After a value in the top-level object, expecting `,` or `}`.
    AfterValue,
    /// Inside the records array, expecting an element (or its end).
    Element,
    /// Inside an element.
    InElement,
    /// After an element, expecting `,` or `]`.
    AfterElement,
    /// The records array ended.
    Done,
}

/// Splits a JSON document fed in chunks into the elements of its records array.
pub struct Splitter {
    stage: Stage,
    /// Nesting inside the current element (or skipped value), and string state.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// A scalar element (number, literal) ends at a delimiter rather than a bracket.
    scalar: bool,
    buffer: Vec<u8>,
    oversized: bool,
    key: Vec<u8>,
    index: usize,
    /// Whether the top-level value is an object (so `records` must be found in it).
    in_object: bool,
}

impl Default for Splitter {
    fn default() -> Self {
        Self::new()
    }
}

impl Splitter {
    pub fn new() -> Self {
        Self {
            stage: Stage::Start,
            depth: 0,
            in_string: false,
            escaped: false,
            scalar: false,
            buffer: Vec::new(),
            oversized: false,
            key: Vec::new(),
            index: 0,
            in_object: false,
        }
    }

    /// Feeds the next bytes; every element completed in them goes to `out`. An error is a
    /// document that is not a records array, with a message for the uploader.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Piece>) -> Result<(), String> {
        for &b in chunk {
            self.byte(b, out)?;
        }
        Ok(())
    }

    /// The end of the document: an error when the records array never ended.
    pub fn finish(&mut self, out: &mut Vec<Piece>) -> Result<(), String> {
        if self.stage == Stage::InElement && self.scalar && self.depth == 0 && !self.in_string {
            self.emit(out);
            self.stage = Stage::AfterElement;
        }
        match self.stage {
            Stage::Done => Ok(()),
            Stage::Start => Err("the upload is empty".to_owned()),
            _ if self.in_object
                && self.stage != Stage::Element
                && self.stage != Stage::InElement
                && self.stage != Stage::AfterElement =>
            {
                Err("expected a JSON array of records (or {\"records\": [...]})".to_owned())
            }
            _ => Err("invalid JSON: the document ends before its records array does".to_owned()),
        }
    }

    fn push(&mut self, b: u8) {
        if self.oversized {
            return;
        }
        if self.buffer.len() >= MAX_RECORD_BYTES {
            self.oversized = true;
            self.buffer = Vec::new();
            return;
        }
        self.buffer.push(b);
    }

    fn emit(&mut self, out: &mut Vec<Piece>) {
        self.index += 1;
        while self.buffer.last().is_some_and(|b| b.is_ascii_whitespace()) {
            self.buffer.pop();
        }
        if self.oversized {
            out.push(Piece::TooLarge(self.index));
        } else {
            out.push(Piece::Record(self.index, std::mem::take(&mut self.buffer)));
        }
        self.oversized = false;
        self.buffer.clear();
    }

    /// Tracks strings and nesting for a byte inside an element or a skipped value; true when the
    /// byte closed the outermost bracket.
    fn track(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return false;
        }
        match b {
            b'"' => self.in_string = true,
            b'[' | b'{' => self.depth += 1,
            b']' | b'}' => {
                self.depth = self.depth.saturating_sub(1);
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }

    fn byte(&mut self, b: u8, out: &mut Vec<Piece>) -> Result<(), String> {
        let blank = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match self.stage {
            Stage::Start => match b {
                _ if blank => {}
                // A UTF-8 byte order mark.
                0xEF | 0xBB | 0xBF => {}
                b'[' => self.stage = Stage::Element,
                b'{' => {
                    self.in_object = true;
                    self.stage = Stage::ObjectKey;
                }
                _ => {
                    return Err(
                        "expected a JSON array of records (or {\"records\": [...]})".to_owned()
                    );
                }
            },
            Stage::ObjectKey => match b {
                _ if blank || b == b',' => {}
                b'"' => {
                    self.key.clear();
                    self.stage = Stage::InKey;
                }
                b'}' => {
                    return Err(
                        "expected a JSON array of records (or {\"records\": [...]})".to_owned()
                    );
                }
                _ => return Err("invalid JSON: expected a key".to_owned()),
            },
            Stage::InKey => {
                if self.escaped {
                    self.escaped = false;
                    self.key.push(b);
                } else if b == b'\\' {
                    self.escaped = true;
                    self.key.push(b);
                } else if b == b'"' {
                    self.stage = Stage::Colon;
                } else if self.key.len() < 256 {
                    self.key.push(b);
                }
            }
            Stage::Colon => match b {
                _ if blank => {}
                b':' => self.stage = Stage::Value,
                _ => return Err("invalid JSON: expected ':' after a key".to_owned()),
            },
            Stage::Value => {
                if blank {
                    return Ok(());
                }
                if self.key == b"records" {
                    if b == b'[' {
                        self.stage = Stage::Element;
                        return Ok(());
                    }
                    return Err("\"records\" must be an array of records".to_owned());
                }
                // Another key's value: skipped without keeping it.
                self.depth = 0;
                self.in_string = false;
                self.scalar = !matches!(b, b'[' | b'{' | b'"');
                self.stage = Stage::SkipValue;
                if self.scalar {
                    return Ok(());
                }
                if self.track(b) {
                    self.stage = Stage::AfterValue;
                }
            }
            Stage::SkipValue => {
                if self.scalar {
                    match b {
                        b',' => self.stage = Stage::ObjectKey,
                        b'}' => {
                            return Err(
                                "expected a JSON array of records (or {\"records\": [...]})"
                                    .to_owned(),
                            );
                        }
                        _ => {}
                    }
                    return Ok(());
                }
                let was_string_only = self.depth == 0 && self.in_string;
                let closed = self.track(b);
                if closed || (was_string_only && !self.in_string) {
                    self.stage = Stage::AfterValue;
                }
            }
            Stage::AfterValue => match b {
                _ if blank => {}
                b',' => self.stage = Stage::ObjectKey,
                b'}' => {
                    return Err(
                        "expected a JSON array of records (or {\"records\": [...]})".to_owned()
                    );
                }
                _ => return Err("invalid JSON: expected ',' or '}'".to_owned()),
            },
            Stage::Element => match b {
                _ if blank => {}
                b']' if self.index == 0 => self.stage = Stage::Done,
                b']' => return Err("invalid JSON: a ',' before ']'".to_owned()),
                _ => {
                    self.depth = 0;
                    self.in_string = false;
                    self.escaped = false;
                    self.scalar = !matches!(b, b'[' | b'{' | b'"');
                    self.stage = Stage::InElement;
                    self.push(b);
                    if !self.scalar {
                        let string_start = b == b'"';
                        let closed = self.track(b);
                        if closed && !string_start {
                            self.emit(out);
                            self.stage = Stage::AfterElement;
                        }
                    }
                }
            },
            Stage::InElement => {
                if self.scalar {
                    match b {
                        b',' => {
                            self.emit(out);
                            self.stage = Stage::Element;
                        }
                        b']' => {
                            self.emit(out);
                            self.stage = Stage::Done;
                        }
                        _ => self.push(b),
                    }
                    return Ok(());
                }
                self.push(b);
                let string_only = self.depth == 0;
                let closed = self.track(b);
                if closed || (string_only && !self.in_string) {
                    self.emit(out);
                    self.stage = Stage::AfterElement;
                }
            }
            Stage::AfterElement => match b {
                _ if blank => {}
                b',' => self.stage = Stage::Element,
                b']' => self.stage = Stage::Done,
                _ => return Err("invalid JSON: expected ',' or ']' between records".to_owned()),
            },
            // What follows the records array (the rest of an object) is not read further.
            Stage::Done => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_in(document: &str, chunk: usize) -> Result<Vec<Piece>, String> {
        let mut splitter = Splitter::new();
        let mut out = Vec::new();
        for part in document.as_bytes().chunks(chunk.max(1)) {
            splitter.feed(part, &mut out)?;
        }
        splitter.finish(&mut out)?;
        Ok(out)
    }

    fn records(document: &str) -> Vec<String> {
        // Every chunk size gives the same split.
        let whole = split_in(document, usize::MAX).expect("valid");
        for chunk in [1, 2, 3, 7] {
            assert_eq!(
                split_in(document, chunk).expect("valid"),
                whole,
                "chunks of {chunk}"
            );
        }
        whole
            .into_iter()
            .map(|p| match p {
                Piece::Record(_, bytes) => String::from_utf8(bytes).expect("utf-8"),
                Piece::TooLarge(i) => format!("too large: {i}"),
            })
            .collect()
    }

    #[test]
    fn arrays_and_records_objects_split_into_elements() {
        assert_eq!(
            records(r#" [ {"a": "x,]}"}, {"b": [1, {"c": "\"]"}]}, 7, "s", null ] "#),
            [
                r#"{"a": "x,]}"}"#,
                r#"{"b": [1, {"c": "\"]"}]}"#,
                "7",
                r#""s""#,
                "null"
            ]
        );
        assert_eq!(
            records(
                "\u{feff}{\"meta\": {\"x\": [1, 2]}, \"n\": 3, \"s\": \"]\", \"records\": [{\"id\": 1}], \"after\": 1}"
            ),
            [r#"{"id": 1}"#]
        );
        assert!(records("[]").is_empty());
        assert!(records(r#"{"records": []}"#).is_empty());
    }

    #[test]
    fn documents_that_are_not_a_records_array_are_refused() {
        for bad in [
            "",
            "  ",
            "42",
            r#""x""#,
            r#"{"data": [1]}"#,
            "[1, 2",
            r#"{"records": [1"#,
            r#"{"records": 5}"#,
            "[1,]",
        ] {
            assert!(split_in(bad, 3).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_oversized_record_is_skipped_and_memory_stays_bounded() {
        let mut splitter = Splitter::new();
        let mut out = Vec::new();
        splitter.feed(b"[{\"big\": \"", &mut out).expect("start");
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..(MAX_RECORD_BYTES >> 20) + 2 {
            splitter.feed(&chunk, &mut out).expect("more");
            assert!(splitter.buffer.capacity() <= MAX_RECORD_BYTES * 2);
        }
        splitter.feed(b"\"}, {\"id\": 2}]", &mut out).expect("end");
        splitter.finish(&mut out).expect("complete");
        assert_eq!(out[0], Piece::TooLarge(1));
        assert_eq!(out[1], Piece::Record(2, b"{\"id\": 2}".to_vec()));
    }
}
