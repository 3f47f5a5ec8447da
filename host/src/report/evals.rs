//! Evaluation results (`host eval`'s `report.json`) shown side by side in a report.

use crate::eval::DatasetReport;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One labelled evaluation, e.g. `before` = the model before training.
#[derive(Debug, Clone)]
pub struct EvalRun {
    pub label: String,
    pub dir: PathBuf,
    pub datasets: Vec<DatasetReport>,
}

#[derive(Deserialize)]
struct ReportFile {
    datasets: Vec<DatasetReport>,
}

impl EvalRun {
    /// Parses `LABEL=DIR` (or a bare `DIR`, labelled by its folder name) and reads
    /// `DIR/report.json`.
    pub fn parse_and_read(text: &str) -> Result<EvalRun> {
        // A folder whose name holds `=` (runs/lr=1e-5) is a bare DIR.
        let split = if Path::new(text).is_dir() {
            None
        } else {
            text.split_once('=')
        };
        let (label, dir) = match split {
            Some((label, dir)) if !label.is_empty() && !dir.is_empty() => {
                (label.to_string(), PathBuf::from(dir))
            }
            Some(_) => bail!("--eval {text:?}: expected LABEL=DIR, e.g. before=runs/eval-before"),
            None => {
                let dir = PathBuf::from(text);
                let label = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| text.to_string());
                (label, dir)
            }
        };
        EvalRun::read(&label, &dir)
    }

    /// Reads `dir/report.json`.
    pub fn read(label: &str, dir: &Path) -> Result<EvalRun> {
        let path = dir.join("report.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (write it with `host eval --out {}`)",
                path.display(),
                dir.display()
            )
        })?;
        let file: ReportFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a `host eval` report", path.display()))?;
        Ok(EvalRun {
            label: label.to_string(),
            dir: dir.to_path_buf(),
            datasets: file.datasets,
        })
    }
}

/// One row of the comparison table: a dataset under one evaluation, or the change between the
/// first and last evaluation (`delta`).
#[derive(Debug, Clone, PartialEq)]
pub struct ComparisonRow {
    pub dataset: String,
    pub label: String,
    pub delta: bool,
    /// EM, F1, acc, searches, response tokens, answered fraction.
    pub values: [f64; 6],
}

/// Column names of [`ComparisonRow::values`].
pub const COLUMNS: [&str; 6] = ["EM", "F1", "acc", "searches", "response tokens", "answered"];

fn values(d: &DatasetReport) -> [f64; 6] {
    let answered = d.answered as f64 / d.questions.max(1) as f64;
    [d.em, d.f1, d.acc, d.searches, d.response_tokens, answered]
}

/// Rows per dataset (in the order the datasets first appear): one per evaluation that has it,
/// then `last − first` when two or more do.
pub fn comparison(evals: &[EvalRun]) -> Vec<ComparisonRow> {
    let mut names: Vec<&str> = Vec::new();
    for e in evals {
        for d in &e.datasets {
            if !names.contains(&d.dataset.as_str()) {
                names.push(&d.dataset);
            }
        }
    }
    let mut rows = Vec::new();
    for name in names {
        let found: Vec<(&EvalRun, &DatasetReport)> = evals
            .iter()
            .filter_map(|e| {
                e.datasets
                    .iter()
                    .find(|d| d.dataset == name)
                    .map(|d| (e, d))
            })
            .collect();
        for (e, d) in &found {
            rows.push(ComparisonRow {
                dataset: name.to_string(),
                label: format!("{} ({} questions)", e.label, d.questions),
                delta: false,
                values: values(d),
            });
        }
        if let [(first_eval, first), .., (last_eval, last)] = found.as_slice() {
            let (a, b) = (values(first), values(last));
            rows.push(ComparisonRow {
                dataset: name.to_string(),
                label: format!("{} − {}", last_eval.label, first_eval.label),
                delta: true,
                values: std::array::from_fn(|i| b[i] - a[i]),
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(dataset: &str, em: f64, answered: usize) -> DatasetReport {
        DatasetReport {
            dataset: dataset.into(),
            questions: 4,
            em,
            f1: em + 0.1,
            answered,
            ..DatasetReport::default()
        }
    }

    fn run(label: &str, datasets: Vec<DatasetReport>) -> EvalRun {
        EvalRun {
            label: label.into(),
            dir: PathBuf::from(label),
            datasets,
        }
    }

    #[test]
    fn before_and_after_give_a_delta_row() {
        let rows = comparison(&[
            run("before", vec![report("a", 0.25, 2), report("b", 0.0, 0)]),
            run("after", vec![report("a", 0.75, 4)]),
        ]);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].label, "before (4 questions)");
        assert_eq!(rows[1].label, "after (4 questions)");
        assert!(rows[2].delta);
        assert_eq!(rows[2].label, "after − before");
        assert!((rows[2].values[0] - 0.5).abs() < 1e-12);
        assert!(
            (rows[2].values[5] - 0.5).abs() < 1e-12,
            "answered 2/4 → 4/4"
        );
        assert_eq!(rows[3].dataset, "b");
        assert!(!rows[3].delta, "one evaluation of b: no delta");
    }

    #[test]
    fn bad_eval_arguments_and_files_are_named() {
        let error = format!("{:#}", EvalRun::parse_and_read("=x").unwrap_err());
        assert!(error.contains("LABEL=DIR"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        // A folder named with `=` is a bare DIR, labelled by its name.
        let odd = dir.path().join("lr=1e-5");
        std::fs::create_dir(&odd).unwrap();
        std::fs::write(odd.join("report.json"), "{\"datasets\": []}").unwrap();
        assert_eq!(
            EvalRun::parse_and_read(odd.to_str().unwrap())
                .unwrap()
                .label,
            "lr=1e-5"
        );
        let error = format!("{:#}", EvalRun::read("before", dir.path()).unwrap_err());
        assert!(error.contains("report.json"), "{error}");
        std::fs::write(dir.path().join("report.json"), "{\"x\":1}").unwrap();
        let error = format!("{:#}", EvalRun::read("before", dir.path()).unwrap_err());
        assert!(error.contains("not a `host eval` report"), "{error}");
    }
}
