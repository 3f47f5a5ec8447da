//! `host eval`'s loop: greedy (or seeded) rollouts of every question of a dataset through the
//! training engine, scored, appended batch by batch to `OUT/<dataset>.jsonl` so that a killed
//! evaluation continues where it stopped.

use super::metrics::{DatasetReport, EvalRecord, summarise};
use crate::data::qa::QaSet;
use crate::durable::write_atomic;
use crate::rollout::{Episodes, RolloutSettings, RolloutTimes};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

/// How one dataset is evaluated.
pub struct EvalOptions<'a> {
    /// At most this many questions (the first ones of the file).
    pub limit: Option<usize>,
    /// Questions rolled out together.
    pub batch: usize,
    pub seed: u64,
    pub progress: bool,
    /// An LLM judge that also decides each answer (its outputs are kept in the records).
    pub judge: Option<&'a dyn super::judge::JudgeBackend>,
}

/// Reads the records already written to `path`, dropping a line cut by a kill (the file is
/// rewritten without it).
pub fn read_records(path: &Path) -> Result<Vec<EvalRecord>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut records = Vec::new();
    let mut clean = String::new();
    for line in text.lines() {
        if let Ok(record) = serde_json::from_str::<EvalRecord>(line) {
            records.push(record);
            clean.push_str(line);
            clean.push('\n');
        }
    }
    if clean.len() != text.len() {
        write_atomic(path, clean.as_bytes())?;
    }
    Ok(records)
}

/// Evaluates `set`, continuing the records in `records_path`; returns the report over all
/// records (earlier and new).
pub fn evaluate(
    episodes: &Episodes,
    set: &QaSet,
    name: &str,
    settings: &RolloutSettings,
    options: &EvalOptions<'_>,
    records_path: &Path,
) -> Result<DatasetReport> {
    let mut records = read_records(records_path)?;
    let done: BTreeSet<usize> = records.iter().map(|r| r.trajectory.example).collect();
    let total = options
        .limit
        .map_or(set.examples.len(), |l| l.min(set.examples.len()));
    let todo: Vec<usize> = (0..total).filter(|i| !done.contains(i)).collect();
    let bar = if options.progress {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(name.to_string());
        bar.set_position((total - todo.len()) as u64);
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(records_path)
        .with_context(|| format!("cannot open {}", records_path.display()))?;
    let mut times = RolloutTimes::default();
    for chunk in todo.chunks(options.batch.max(1)) {
        let mut errors = Vec::new();
        let seed = options.seed;
        let trajectories = episodes.run(
            &set.examples,
            chunk,
            settings,
            |group| crate::grpo::trainer::derive_seed(seed, chunk[group] as u64, 0xE7A1),
            &mut times,
            &mut errors,
        )?;
        for error in &errors {
            tracing::warn!("{name}: plugin error: {error}");
        }
        let mut chunk_records: Vec<EvalRecord> =
            trajectories.into_iter().map(EvalRecord::new).collect();
        if let Some(judge) = options.judge {
            let items: Vec<super::judge::JudgeItem> = chunk_records
                .iter()
                .map(|r| super::judge::JudgeItem {
                    question: &r.trajectory.question,
                    golden_answers: &r.trajectory.golden_answers,
                    prediction: r.trajectory.answer.as_deref(),
                })
                .collect();
            let outcomes = super::judge::judge_all(judge, &items)
                .with_context(|| format!("the judge {} failed", judge.name()))?;
            for (record, outcome) in chunk_records.iter_mut().zip(outcomes) {
                record.judge = Some(outcome);
            }
        }
        let mut text = String::new();
        for record in chunk_records {
            text.push_str(&serde_json::to_string(&record)?);
            text.push('\n');
            records.push(record);
        }
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .and_then(|()| file.sync_data())
            .with_context(|| format!("cannot write {}", records_path.display()))?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    records.sort_by_key(|r| (r.trajectory.example, r.trajectory.sample));
    records.retain(|r| r.trajectory.example < total);
    Ok(summarise(name, &records))
}
