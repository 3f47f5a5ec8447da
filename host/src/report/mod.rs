//! `host report`: the training dynamics of a run folder as PNG charts and one self-contained
//! HTML page, with a before/after table when evaluation results are given.
//!
//! ```text
//! RUN/report/index.html        the page (charts embedded, works when copied alone)
//! RUN/report/<chart>.png       one chart per quantity: reward, components, length, …
//! ```

pub mod charts;
pub mod evals;
pub mod held_out;
pub mod html;
pub mod metrics;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub use charts::{Chart, Line};
pub use evals::EvalRun;
pub use metrics::RunMetrics;

/// What a report wrote.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    /// The HTML page.
    pub html: PathBuf,
    /// Every chart, in page order.
    pub charts: Vec<PathBuf>,
    /// The change from the first validation to the last, when the run has two.
    pub held_out: Option<held_out::HeldOutChange>,
}

/// Reads `run_dir`'s metrics (with the warm-start run `before` it, and the given evaluations)
/// and writes the charts and the page into `out`.
pub fn write_report(
    run_dir: &Path,
    before: Option<&Path>,
    evals: &[EvalRun],
    out: &Path,
) -> Result<ReportFiles> {
    let metrics = RunMetrics::read(&run_dir.join("metrics.jsonl"))?;
    let warm = before
        .map(|dir| RunMetrics::read(&dir.join("metrics.jsonl")))
        .transpose()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut written = Vec::new();
    for chart in charts::training_charts(&metrics, warm.as_ref()) {
        let path = out.join(format!("{}.png", chart.file_stem));
        charts::render_png(&chart, &path)
            .with_context(|| format!("cannot draw the {} chart", chart.title))?;
        written.push((chart, path));
    }
    let config = std::fs::read_to_string(run_dir.join("config.toml")).ok();
    let held_out = held_out::run_change(run_dir)?;
    let page = html::page(&html::PageInput {
        run_dir,
        metrics: &metrics,
        before: warm.as_ref().zip(before),
        charts: &written,
        evals,
        held_out: held_out.as_ref(),
        config: config.as_deref(),
    })?;
    let html_path = out.join("index.html");
    crate::durable::write_atomic(&html_path, page.as_bytes())?;
    Ok(ReportFiles {
        html: html_path,
        charts: written.into_iter().map(|(_, path)| path).collect(),
        held_out,
    })
}
