//! Streaming reader for passage corpora in JSONL form.
//!
//! Two record shapes are accepted, line by line:
//! - FlashRAG: `{"id": "0", "contents": "\"Title\"\npassage text"}` (title quoted on the first line);
//! - plain: `{"id": "0", "title": "Title", "text": "passage text"}`.
//!
//! The reader never holds more than one line in memory, reports how many bytes it has consumed
//! (for progress bars), and names the file and line of any bad record. What happens to a bad
//! record is the caller's choice ([`OnBadRecord`]).

use serde_json::Value;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// One passage of a corpus.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CorpusRecord {
    /// The corpus id, always as a string (numeric ids are converted).
    pub id: String,
    /// The title, empty when the record has none.
    pub title: String,
    /// The passage text.
    pub text: String,
}

impl CorpusRecord {
    /// The record in FlashRAG `contents` form: `"Title"\ntext`, or the bare text without a title.
    /// This is the exact string an embedder sees (after its passage prefix).
    pub fn contents(&self) -> String {
        join_contents(&self.title, &self.text)
    }
}

/// FlashRAG `contents` of a title and a text: `"Title"\ntext`, or the bare text without a title.
pub fn join_contents(title: &str, text: &str) -> String {
    if title.is_empty() {
        text.to_string()
    } else {
        format!("\"{title}\"\n{text}")
    }
}

/// What to do with a record that cannot be read.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OnBadRecord {
    /// Stop with an error naming the file and line (the default: nothing is silently lost).
    #[default]
    Stop,
    /// Skip it, count it, and report the first few at the end.
    Skip,
}

/// A record that could not be read: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {reason}", path.display())]
pub struct BadRecord {
    /// The corpus file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// A streaming reader over one corpus file; yields `(line number, record)`.
pub struct CorpusReader {
    path: PathBuf,
    reader: BufReader<File>,
    buffer: String,
    line: u64,
    bytes_read: u64,
    total_bytes: u64,
    on_bad_record: OnBadRecord,
    skipped: Vec<BadRecord>,
    skipped_count: u64,
}

/// How many skipped records are kept for the final report.
const KEPT_BAD_RECORDS: usize = 20;

impl CorpusReader {
    /// Opens `path` for streaming.
    pub fn open(path: &Path, on_bad_record: OnBadRecord) -> anyhow::Result<CorpusReader> {
        let file = File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open corpus {}: {e}", path.display()))?;
        let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(CorpusReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            buffer: String::new(),
            line: 0,
            bytes_read: 0,
            total_bytes,
            on_bad_record,
            skipped: Vec::new(),
            skipped_count: 0,
        })
    }

    /// The corpus file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The file's size in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Lines read so far (including blank and skipped ones).
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    /// How many bad records were skipped.
    pub fn skipped_count(&self) -> u64 {
        self.skipped_count
    }

    /// The first skipped records (at most 20), for the final report.
    pub fn skipped(&self) -> &[BadRecord] {
        &self.skipped
    }

    fn bad(&self, reason: impl Into<String>) -> BadRecord {
        BadRecord {
            path: self.path.clone(),
            line: self.line,
            reason: reason.into(),
        }
    }
}

impl Iterator for CorpusReader {
    type Item = anyhow::Result<(u64, CorpusRecord)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buffer.clear();
            let read = match self.reader.read_line(&mut self.buffer) {
                Ok(0) => return None,
                Ok(read) => read,
                Err(e) => {
                    self.line += 1;
                    let error = if e.kind() == std::io::ErrorKind::InvalidData {
                        self.bad("not valid UTF-8 (save the file as UTF-8)")
                    } else {
                        self.bad(format!("cannot read the line: {e}"))
                    };
                    // Invalid UTF-8 consumes the line in BufRead; other I/O errors are fatal.
                    if e.kind() == std::io::ErrorKind::InvalidData
                        && self.on_bad_record == OnBadRecord::Skip
                    {
                        self.skip(error);
                        continue;
                    }
                    return Some(Err(error.into()));
                }
            };
            self.line += 1;
            self.bytes_read += read as u64;
            let text = self.buffer.trim();
            let text = if self.line == 1 {
                super::text_file::strip_bom(text)
            } else {
                text
            };
            if text.is_empty() {
                continue;
            }
            match parse_record(text) {
                Ok(record) => return Some(Ok((self.line, record))),
                Err(reason) => {
                    let error = self.bad(reason);
                    match self.on_bad_record {
                        OnBadRecord::Stop => return Some(Err(error.into())),
                        OnBadRecord::Skip => self.skip(error),
                    }
                }
            }
        }
    }
}

impl CorpusReader {
    fn skip(&mut self, error: BadRecord) {
        tracing::debug!("skipping {error}");
        self.skipped_count += 1;
        if self.skipped.len() < KEPT_BAD_RECORDS {
            self.skipped.push(error);
        }
    }
}

/// Parses one JSONL line into a record, or says what is wrong with it.
pub fn parse_record(line: &str) -> Result<CorpusRecord, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(object) = value else {
        return Err(
            "expected a JSON object with `id` and `contents` (or `title` and `text`)".into(),
        );
    };
    let id = match object.get("id") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        Some(Value::Number(id)) => id.to_string(),
        Some(Value::String(_)) => return Err("`id` is empty".into()),
        Some(_) => return Err("`id` must be a string or a number".into()),
        None => return Err("missing `id`".into()),
    };
    let string_field = |name: &str| -> Result<Option<&str>, String> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("`{name}` must be a string")),
        }
    };
    let (title, text) = match (string_field("contents")?, string_field("text")?) {
        (Some(contents), _) => split_contents(contents),
        (None, Some(text)) => (
            string_field("title")?.unwrap_or("").trim().to_string(),
            text.trim().to_string(),
        ),
        (None, None) => return Err("missing `contents` (or `text`)".into()),
    };
    if text.is_empty() && title.is_empty() {
        return Err(format!("passage `{id}` is empty"));
    }
    Ok(CorpusRecord { id, title, text })
}

/// Splits FlashRAG `contents` into title and text: the first line is the title when it is
/// wrapped in double quotes; otherwise the whole string is text.
pub fn split_contents(contents: &str) -> (String, String) {
    match contents.split_once('\n') {
        Some((first, rest))
            if first.len() >= 2 && first.starts_with('"') && first.ends_with('"') =>
        {
            (
                first[1..first.len() - 1].trim().to_string(),
                rest.trim().to_string(),
            )
        }
        _ => (String::new(), contents.trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_parse_to_the_same_record() {
        let flashrag = parse_record(r#"{"id": "7", "contents": "\"Paris\"\nThe capital."}"#);
        let plain = parse_record(r#"{"id": 7, "title": "Paris", "text": "The capital."}"#);
        assert_eq!(flashrag, plain);
        let record = flashrag.unwrap();
        assert_eq!(record.contents(), "\"Paris\"\nThe capital.");
    }

    #[test]
    fn contents_without_a_quoted_title_is_all_text() {
        let record = parse_record(r#"{"id": "a", "contents": "no title\nsecond line"}"#).unwrap();
        assert_eq!(record.title, "");
        assert_eq!(record.text, "no title\nsecond line");
        assert_eq!(record.contents(), "no title\nsecond line");
    }

    #[test]
    fn a_byte_order_mark_is_read_past_and_invalid_utf8_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.jsonl");
        std::fs::write(
            &path,
            b"\xEF\xBB\xBF{\"id\": \"1\", \"contents\": \"one\"}\n{\"id\": \"2\", \"contents\": \"t\xFFo\"}\n{\"id\": \"3\", \"contents\": \"three\"}\n",
        )
        .unwrap();
        let mut stop = CorpusReader::open(&path, OnBadRecord::Stop).unwrap();
        assert_eq!(stop.next().unwrap().unwrap().1.id, "1");
        let error = stop.next().unwrap().unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "{}:2: not valid UTF-8 (save the file as UTF-8)",
                path.display()
            )
        );
        let mut skip = CorpusReader::open(&path, OnBadRecord::Skip).unwrap();
        let ids: Vec<String> = skip.by_ref().map(|r| r.unwrap().1.id).collect();
        assert_eq!(ids, ["1", "3"]);
        assert_eq!(skip.skipped_count(), 1);
        assert_eq!(skip.skipped()[0].line, 2);
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        for (line, expected) in [
            ("{", "not valid JSON"),
            ("[1]", "expected a JSON object"),
            (r#"{"contents": "x"}"#, "missing `id`"),
            (r#"{"id": "", "contents": "x"}"#, "`id` is empty"),
            (r#"{"id": [1], "contents": "x"}"#, "`id` must be"),
            (r#"{"id": "1"}"#, "missing `contents`"),
            (
                r#"{"id": "1", "contents": 3}"#,
                "`contents` must be a string",
            ),
            (r#"{"id": "1", "contents": "  "}"#, "is empty"),
        ] {
            let error = parse_record(line).unwrap_err();
            assert!(error.contains(expected), "{line}: {error}");
        }
    }
}
