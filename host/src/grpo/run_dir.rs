//! The run folder: resolved config, metrics JSONL, trajectories per step, and checkpoints
//! (policy in HF layout, optimiser state, trainer state) written atomically, the last K kept.
//!
//! ```text
//! RUN/config.toml                 the resolved configuration
//! RUN/metrics.jsonl               one JSON object per step (and per validation)
//! RUN/trajectories/step-000001.jsonl
//! RUN/checkpoints/step-000010/{model/, optimizer.safetensors, state.json}
//! ```

use crate::durable::{publish_dir, sha256_file, write_atomic};
use crate::run_metrics::MetricsLine;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Paths inside a run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

/// What a checkpoint records besides weights and optimiser moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Training steps completed.
    pub step: u64,
    /// Questions consumed (the data cursor).
    pub data_cursor: u64,
    /// Optimiser updates taken.
    pub optimizer_steps: u64,
    /// The run seed; every random draw derives from (seed, step, question).
    pub seed: u64,
}

impl RunDir {
    /// Creates the folder layout (idempotent).
    pub fn create(root: &Path) -> Result<RunDir> {
        for sub in ["", "trajectories", "checkpoints"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(RunDir {
            root: root.to_path_buf(),
        })
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// The trajectories file of a step (`name` is `step` or `validation`).
    pub fn trajectories(&self, name: &str, step: u64) -> PathBuf {
        self.root
            .join("trajectories")
            .join(format!("{name}-{step:06}.jsonl"))
    }

    /// The folder of the checkpoint after `step`.
    pub fn checkpoint(&self, step: u64) -> PathBuf {
        self.checkpoints().join(format!("step-{step:06}"))
    }

    /// Appends one line to the metrics file (synced, so a kill loses at most the line being
    /// written).
    pub fn append_metrics(&self, line: &MetricsLine) -> Result<()> {
        let path = self.metrics();
        let value = line.to_json()?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(file, "{value}")
            .and_then(|()| file.flush())
            .and_then(|()| file.sync_data())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Writes JSON lines to `path` atomically.
    pub fn write_jsonl<T: Serialize>(&self, path: &Path, rows: &[T]) -> Result<()> {
        let mut text = String::new();
        for row in rows {
            text.push_str(&serde_json::to_string(row)?);
            text.push('\n');
        }
        write_atomic(path, text.as_bytes())
    }

    /// Completed checkpoints, oldest first, as (step, folder).
    pub fn list_checkpoints(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut found = Vec::new();
        let dir = self.checkpoints();
        if !dir.is_dir() {
            return Ok(found);
        }
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(step) = name
                .strip_prefix("step-")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if entry.path().join("state.json").is_file() {
                found.push((step, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Reads a checkpoint's trainer state.
    pub fn read_state(checkpoint: &Path) -> Result<TrainerState> {
        Ok(read_state_file(checkpoint)?.trainer)
    }

    /// Reads a checkpoint's state and checks every file it lists against its SHA-256: a
    /// truncated or damaged file is named. (Checkpoints written before the hashes were
    /// recorded list none; loading them is then the only check.)
    pub fn verify_checkpoint(checkpoint: &Path) -> Result<TrainerState> {
        let state = read_state_file(checkpoint)?;
        for (name, expected) in &state.sha256 {
            let path = checkpoint.join(name);
            let actual = sha256_file(&path)?;
            if &actual != expected {
                bail!("{name} does not match the checksum in state.json (damaged or truncated)");
            }
        }
        Ok(state.trainer)
    }

    /// Publishes a fully written checkpoint folder `staged` as the checkpoint of `step` (one
    /// rename), then deletes all but the newest `keep_last`.
    pub fn publish_checkpoint(&self, staged: &Path, step: u64, keep_last: usize) -> Result<()> {
        let target = self.checkpoint(step);
        if target.exists() {
            std::fs::remove_dir_all(&target)
                .with_context(|| format!("cannot replace {}", target.display()))?;
        }
        publish_dir(staged, &target)?;
        let all = self.list_checkpoints()?;
        let keep = keep_last.max(1);
        if all.len() > keep {
            for (_, old) in &all[..all.len() - keep] {
                std::fs::remove_dir_all(old).ok();
            }
        }
        Ok(())
    }

    /// Writes the checkpoint of `state.step`: the policy in HF layout (tokenizer files from
    /// `tokenizer_dir`), the optimiser moments and the state with the files' SHA-256, staged in
    /// `.partial-*`, synced to the disk and then published with one rename; the newest
    /// `keep_last` are kept.
    pub fn save_checkpoint(
        &self,
        policy: &crate::model::Policy,
        tokenizer_dir: &Path,
        optimizer: &super::optim::AdamW,
        state: &TrainerState,
        keep_last: usize,
    ) -> Result<PathBuf> {
        let staged = self
            .checkpoints()
            .join(format!(".partial-step-{:06}", state.step));
        if staged.exists() {
            std::fs::remove_dir_all(&staged)
                .with_context(|| format!("cannot clear {}", staged.display()))?;
        }
        std::fs::create_dir_all(&staged)
            .with_context(|| format!("cannot create {}", staged.display()))?;
        crate::model::save_checkpoint(policy, tokenizer_dir, &staged.join("model"))?;
        optimizer.save(&staged.join("optimizer.safetensors"))?;
        let mut sha256 = BTreeMap::new();
        for name in CHECKSUMMED {
            sha256.insert(name.to_string(), sha256_file(&staged.join(name))?);
        }
        let state_file = StateFile {
            trainer: state.clone(),
            sha256,
        };
        let state_path = staged.join("state.json");
        std::fs::write(&state_path, serde_json::to_string_pretty(&state_file)?)
            .with_context(|| format!("cannot write {}", state_path.display()))?;
        self.publish_checkpoint(&staged, state.step, keep_last)?;
        Ok(self.checkpoint(state.step))
    }

    /// The complete checkpoints to resume from, newest first, after clearing half-written
    /// ones; the caller takes the first that verifies and loads.
    pub fn resume_candidates(&self) -> Result<Vec<(u64, PathBuf)>> {
        self.clear_partial()?;
        let mut all = self.list_checkpoints()?;
        all.reverse();
        Ok(all)
    }

    /// Removes half-written checkpoints left by a killed run.
    pub fn clear_partial(&self) -> Result<()> {
        for entry in std::fs::read_dir(self.checkpoints())? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(".partial-") {
                std::fs::remove_dir_all(entry.path()).ok();
            }
        }
        Ok(())
    }

    /// Before a resumed run continues: the metrics after its checkpoint's step are dropped;
    /// a run killed before its first checkpoint (`None`) starts over without them.
    pub fn reset_metrics_after(&self, checkpoint_step: Option<u64>) -> Result<()> {
        match checkpoint_step {
            Some(step) => self.truncate_metrics(step),
            None => {
                let metrics = self.metrics();
                if metrics.exists() {
                    std::fs::remove_file(&metrics)
                        .with_context(|| format!("cannot reset {}", metrics.display()))?;
                }
                Ok(())
            }
        }
    }

    /// Keeps only the metrics lines of steps ≤ `step` (what a resumed run continues from).
    pub fn truncate_metrics(&self, step: u64) -> Result<()> {
        let path = self.metrics();
        if !path.is_file() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&path)?;
        let mut kept = String::new();
        for line in text.lines() {
            if MetricsLine::step_of(line).is_some_and(|s| s <= step) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        write_atomic(&path, kept.as_bytes())
    }
}

/// The checkpoint files whose SHA-256 `state.json` records.
const CHECKSUMMED: [&str; 3] = [
    "model/config.json",
    "model/model.safetensors",
    "optimizer.safetensors",
];

/// `state.json`: the trainer state and the checksums of the checkpoint's files.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    #[serde(flatten)]
    trainer: TrainerState,
    /// SHA-256 (hex) by path inside the checkpoint folder.
    #[serde(default)]
    sha256: BTreeMap<String, String>,
}

fn read_state_file(checkpoint: &Path) -> Result<StateFile> {
    let path = checkpoint.join("state.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))
}

/// Refuses to start a fresh run in a folder that already holds one.
pub fn ensure_fresh(root: &Path) -> Result<()> {
    if root.join("metrics.jsonl").exists() || root.join("config.toml").exists() {
        bail!(
            "{} already holds a run; continue it with `--resume {}` or choose another --out",
            root.display(),
            root.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_metrics::ValidationMetrics;

    #[test]
    fn checkpoints_are_listed_pruned_and_metrics_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        for step in [2, 4, 6] {
            let staged = run.checkpoints().join(format!(".partial-step-{step}"));
            std::fs::create_dir_all(&staged).unwrap();
            std::fs::write(staged.join("state.json"), "{}").unwrap();
            run.publish_checkpoint(&staged, step, 2).unwrap();
        }
        let steps: Vec<u64> = run
            .list_checkpoints()
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(steps, vec![4, 6]);
        // A half-written one is not listed and is cleared.
        std::fs::create_dir_all(run.checkpoints().join(".partial-step-8")).unwrap();
        assert_eq!(run.list_checkpoints().unwrap().len(), 2);
        run.clear_partial().unwrap();
        assert!(!run.checkpoints().join(".partial-step-8").exists());

        for step in 0..5u64 {
            run.append_metrics(&MetricsLine::Validation(ValidationMetrics {
                step,
                validation: Default::default(),
            }))
            .unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(run.metrics())
            .unwrap()
            .write_all(b"{\"step\": 5, \"cut")
            .unwrap();
        run.truncate_metrics(3).unwrap();
        let text = std::fs::read_to_string(run.metrics()).unwrap();
        assert_eq!(text.lines().count(), 4);
        ensure_fresh(dir.path()).unwrap_err();
    }
}
