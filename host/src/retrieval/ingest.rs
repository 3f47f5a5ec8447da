//! Streams a corpus into an index: read a batch of records, drop the ids already stored, embed
//! the rest, commit them (passages, vectors and counters in one transaction), repeat; then build
//! the ANN forest. Re-running after a kill resumes where the last commit left off.

use super::embedder::Embedder;
use super::index::{Index, IndexMeta, IndexState};
use crate::data::corpus::{BadRecord, CorpusReader, OnBadRecord};
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::time::{Duration, Instant};

/// Passages committed per transaction unless told otherwise.
pub const DEFAULT_COMMIT_EVERY: usize = 512;

/// How a corpus goes in.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Stop at, or skip, bad records.
    pub on_bad_record: OnBadRecord,
    /// Passages per transaction (also the unit of work lost to a kill).
    pub commit_every: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            on_bad_record: OnBadRecord::Stop,
            commit_every: DEFAULT_COMMIT_EVERY,
            progress: true,
        }
    }
}

/// What one ingest did.
#[derive(Debug, Clone)]
pub struct IngestReport {
    /// Passages added now.
    pub added: u64,
    /// Records whose id was already stored.
    pub already_present: u64,
    /// Bad records skipped, and the first few of them.
    pub skipped: u64,
    pub skipped_examples: Vec<BadRecord>,
    /// Time spent embedding, and in total (including the tree build).
    pub embed_time: Duration,
    pub total_time: Duration,
    /// The index metadata after the run.
    pub meta: IndexMeta,
}

/// Adds every new passage of `corpus` to `index` (state `state` while it runs), then builds
/// the forest and marks the index complete.
pub fn ingest(
    index: &Index,
    embedder: &Embedder,
    corpus: &Path,
    state: IndexState,
    options: &IngestOptions,
) -> Result<IngestReport> {
    let started = Instant::now();
    index.check_embedder(embedder.identity())?;
    let mut reader = CorpusReader::open(corpus, options.on_bad_record)?;
    index.begin(state, corpus)?;
    let bar = if options.progress {
        let bar = ProgressBar::new(reader.total_bytes());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} indexing [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut added = 0u64;
    let mut already_present = 0u64;
    let mut skipped_reported = 0u64;
    let mut embed_time = Duration::ZERO;
    let mut batch = Vec::with_capacity(options.commit_every);
    let mut done = false;
    while !done {
        batch.clear();
        while batch.len() < options.commit_every.max(1) {
            match reader.next() {
                Some(record) => batch.push(record?.1),
                None => {
                    done = true;
                    break;
                }
            }
        }
        let (fresh, present) = index.new_records(std::mem::take(&mut batch))?;
        let embed_started = Instant::now();
        let contents: Vec<String> = fresh.iter().map(|r| r.contents()).collect();
        let vectors = embedder.embed_passages(&contents)?;
        embed_time += embed_started.elapsed();
        let skipped_now = reader.skipped_count() - skipped_reported;
        index.add_batch(&fresh, &vectors, present, skipped_now)?;
        skipped_reported = reader.skipped_count();
        added += fresh.len() as u64;
        already_present += present;
        bar.set_position(reader.bytes_read());
        bar.set_message(format!(
            "{added} passages, {:.0}/s",
            added as f64 / started.elapsed().as_secs_f64().max(1e-9)
        ));
    }
    bar.finish_and_clear();
    let spinner = if options.progress {
        let spinner = ProgressBar::new_spinner();
        spinner.set_message("building the ANN forest");
        spinner.enable_steady_tick(Duration::from_millis(200));
        spinner
    } else {
        ProgressBar::hidden()
    };
    let meta = index.finish(|_| {})?;
    spinner.finish_and_clear();
    Ok(IngestReport {
        added,
        already_present,
        skipped: reader.skipped_count(),
        skipped_examples: reader.skipped().to_vec(),
        embed_time,
        total_time: started.elapsed(),
        meta,
    })
}
