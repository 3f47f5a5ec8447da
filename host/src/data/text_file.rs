//! Reading a user's text file whole: a leading UTF-8 byte-order mark is dropped (editors on
//! Windows write one), and bytes that are not UTF-8 are an error naming the file, the line and
//! the column, so every dataset, transcript, case and config reader reports them the same way.

use anyhow::{Context, Result};
use std::path::Path;

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads `path` as UTF-8 text without a leading byte-order mark; `what` names the file's role
/// in the error ("the dataset", "the cases file").
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    decode(bytes).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))
}

/// Where a file's bytes stop being UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: not valid UTF-8 (byte offset {offset}; save the file as UTF-8)")]
pub struct NotUtf8 {
    /// 1-based line of the first bad byte.
    pub line: usize,
    /// 1-based byte column within that line.
    pub column: usize,
    /// Byte offset in the file (after any byte-order mark).
    pub offset: usize,
}

/// The text of `bytes` without a leading byte-order mark, or where it is not UTF-8.
pub fn decode(mut bytes: Vec<u8>) -> Result<String, NotUtf8> {
    if bytes.starts_with(BOM) {
        bytes.drain(..BOM.len());
    }
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..offset];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        NotUtf8 {
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            column: offset - line_start + 1,
            offset,
        }
    })
}

/// `line` without a leading byte-order mark (for readers that stream line by line).
pub fn strip_bom(line: &str) -> &str {
    line.strip_prefix('\u{feff}').unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_byte_order_mark_is_dropped_and_only_that_one() {
        let text = decode(b"\xEF\xBB\xBF{\"a\": 1}\n\xEF\xBB\xBFx".to_vec()).unwrap();
        assert_eq!(text, "{\"a\": 1}\n\u{feff}x");
        assert_eq!(decode(b"plain".to_vec()).unwrap(), "plain");
        assert_eq!(decode(Vec::new()).unwrap(), "");
        assert_eq!(strip_bom("\u{feff}{}"), "{}");
        assert_eq!(strip_bom("{}"), "{}");
    }

    #[test]
    fn invalid_utf8_names_its_line_and_column() {
        let error = decode(b"{\"a\": 1}\n{\"b\": \"caf\xE9\"}\n".to_vec()).unwrap_err();
        assert_eq!(
            error,
            NotUtf8 {
                line: 2,
                column: 11,
                offset: 19
            }
        );
        // The offset counts from after a byte-order mark; the line count is unchanged.
        let error = decode(b"\xEF\xBB\xBF\xFF".to_vec()).unwrap_err();
        assert_eq!((error.line, error.column, error.offset), (1, 1, 0));
    }

    #[test]
    fn read_text_puts_the_file_in_front() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        std::fs::write(&path, b"ok\nbad \x80 here\n").unwrap();
        let message = read_text(&path, "the dataset").unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}:2:5: not valid UTF-8 (byte offset 7; save the file as UTF-8)",
                path.display()
            )
        );
        let missing = read_text(&dir.path().join("none"), "the dataset").unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot read the dataset "),
            "{missing}"
        );
    }
}
