//! `host report RUN_DIR`: charts and an HTML page of a training run.

use crate::report::{EvalRun, write_report};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `host report`.
#[derive(Debug, Args)]
#[command(after_help = "\
Draws reward (train and validation), each reward component, validation EM/F1, response length, \
searches per rollout, KL and entropy over the steps of RUN_DIR/metrics.jsonl, as PNG charts and \
one self-contained HTML page (the charts are embedded: the page can be mailed alone). With \
--eval, adds a table comparing `host eval` results, e.g. before and after training:

  host report runs/research-20261121-101500
  host report runs/quickstart --eval before=runs/eval-before --eval after=runs/eval-after

With --before SFT_RUN (the `host sft` run whose model the GRPO run started from), the warm start \
and GRPO are drawn on one timeline: the warm start's steps and validations first, a rule where \
GRPO begins, then the run's, plus the warm start's loss:

  host report runs/grpo --before runs/sft")]
pub struct ReportArgs {
    /// A run folder written by `host train` or `host sft` (it holds metrics.jsonl).
    pub run_dir: PathBuf,
    /// A `host eval` output folder to compare, as LABEL=DIR or DIR (repeatable, in order; the
    /// table adds last − first).
    #[arg(long = "eval", value_name = "LABEL=DIR")]
    pub evals: Vec<String>,
    /// The warm-start run (`host sft`) the run started from: both phases on one timeline.
    #[arg(long, value_name = "SFT_RUN")]
    pub before: Option<PathBuf>,
    /// Where to write the page and charts [default: RUN_DIR/report].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Runs `host report`.
pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let evals = args
        .evals
        .iter()
        .map(|text| EvalRun::parse_and_read(text))
        .collect::<Result<Vec<_>>>()?;
    let out = args.out.unwrap_or_else(|| args.run_dir.join("report"));
    let files = write_report(&args.run_dir, args.before.as_deref(), &evals, &out)?;
    for chart in &files.charts {
        println!("chart  {}", chart.display());
    }
    println!("page   {}", files.html.display());
    if let Some(change) = &files.held_out {
        println!("{}", change.summary());
    }
    Ok(ExitCode::SUCCESS)
}
