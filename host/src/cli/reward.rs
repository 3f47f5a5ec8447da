//! `host reward`: score one response, or a JSONL file of cases (a reward regression set).

use super::PluginArgs;
use crate::plugins::{Finish, PluginKind, PluginSet, RewardPlugin, RewardSample, RewardScore};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  host reward --golden Paris --response-file answer.txt
  host reward --use reward=searchr1-reward --golden Paris --response '<answer> Paris </answer>'
  host reward --cases regression.jsonl --out scores.jsonl

A case line: {\"question\": \"…\", \"golden_answers\": [\"…\"], \"response\": \"…\", \"finish\": \"eos\"}
(optional: \"num_searches\", \"metadata\", \"expected_total\" — a case whose total differs from
expected_total by more than 1e-9 is reported and makes the command exit non-zero).")]
pub struct RewardArgs {
    #[command(flatten)]
    pub plugins: PluginArgs,
    /// An accepted answer (repeat for aliases).
    #[arg(long, value_name = "TEXT", conflicts_with = "cases")]
    pub golden: Vec<String>,
    /// The question (some rewards look at it).
    #[arg(long, default_value = "", conflicts_with = "cases")]
    pub question: String,
    /// File holding the response text to score.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["response", "cases"])]
    pub response_file: Option<PathBuf>,
    /// The response text to score.
    #[arg(long, value_name = "TEXT", conflicts_with = "cases")]
    pub response: Option<String>,
    /// Why the response ended: eos, length, max-turns or stop:SEQUENCE.
    #[arg(long, default_value = "eos")]
    pub finish: String,
    /// Searches the trajectory made [default: count of `</search>` in the response].
    #[arg(long)]
    pub num_searches: Option<u32>,
    /// Score every case of a JSONL file instead, one JSON line out per case.
    #[arg(long, value_name = "FILE.jsonl")]
    pub cases: Option<PathBuf>,
    /// Where case results go [default: stdout].
    #[arg(long, value_name = "FILE", requires = "cases")]
    pub out: Option<PathBuf>,
    /// Print the single result as JSON.
    #[arg(long)]
    pub json: bool,
    /// A model folder whose chat template gives plugins the assistant marker
    /// (`host.assistant-marker`), as `host train` and `host eval` do for their model.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
}

/// Runs `host reward`.
pub fn run(args: RewardArgs) -> Result<ExitCode> {
    let mut selection = args.plugins.selection()?;
    if let Some(dir) = &args.model
        && let Some(marker) = crate::model::ModelTokenizer::load(dir, None)
            .with_context(|| format!("cannot read the tokenizer of {}", dir.display()))?
            .assistant_marker()?
    {
        selection
            .host
            .insert(crate::plugins::ASSISTANT_MARKER.into(), marker);
    }
    let set = PluginSet::load(
        &args.plugins.plugins,
        &selection,
        &[PluginKind::Reward],
        args.plugins.cache_dir(),
        None,
    )?;
    let reward = set.reward()?;
    match &args.cases {
        Some(path) => score_cases(reward, path, args.out.as_ref()),
        None => score_one(reward, &args),
    }
}

fn score_one(reward: &RewardPlugin, args: &RewardArgs) -> Result<ExitCode> {
    let response = match (&args.response_file, &args.response) {
        (Some(path), _) => crate::data::text_file::read_text(path, "the response file")?,
        (None, Some(text)) => text.clone(),
        (None, None) => bail!(
            "give the response with --response-file FILE or --response TEXT (or use --cases FILE.jsonl)"
        ),
    };
    if args.golden.is_empty() {
        bail!("give at least one --golden ANSWER");
    }
    let sample = build_sample(
        &args.question,
        &args.golden,
        response,
        &args.finish,
        args.num_searches,
        None,
    )?;
    let score = reward.score(&sample)?;
    if args.json {
        let components = components_json(&score);
        println!(
            "{}",
            serde_json::json!({"plugin": reward.name(), "total": score.total, "components": components})
        );
    } else {
        println!("reward plugin: {}", reward.name());
        println!("{:<12} {}", "total", score.total);
        for (name, value) in &score.components {
            println!("{name:<12} {value}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of a cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    question: String,
    golden_answers: Vec<String>,
    response: String,
    #[serde(default = "default_finish")]
    finish: String,
    #[serde(default)]
    num_searches: Option<u32>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    expected_total: Option<f64>,
}

fn default_finish() -> String {
    "eos".to_string()
}

fn score_cases(reward: &RewardPlugin, path: &Path, out: Option<&PathBuf>) -> Result<ExitCode> {
    let text = crate::data::text_file::read_text(path, "the cases file")?;
    let mut sink: Box<dyn Write> = match out {
        Some(out) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(out)
                .with_context(|| format!("cannot create {}", out.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let (mut scored, mut errors, mut mismatches, mut sum) = (0usize, 0usize, 0usize, 0.0f64);
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let result = score_case(reward, line);
        let record = match result {
            Ok((case, score)) => {
                scored += 1;
                sum += score.total;
                let mut record = serde_json::json!({
                    "line": number, "total": score.total, "components": components_json(&score),
                });
                if let Some(id) = case.id {
                    record["id"] = id;
                }
                if let Some(expected) = case.expected_total {
                    let matches = (expected - score.total).abs() <= 1e-9;
                    record["expected_total"] = serde_json::json!(expected);
                    record["matches_expected"] = serde_json::json!(matches);
                    if !matches {
                        mismatches += 1;
                        eprintln!(
                            "{}:{number}: total {} differs from expected_total {expected}",
                            path.display(),
                            score.total
                        );
                    }
                }
                record
            }
            Err(error) => {
                errors += 1;
                eprintln!("{}:{number}: {error:#}", path.display());
                serde_json::json!({"line": number, "error": format!("{error:#}")})
            }
        };
        writeln!(sink, "{record}")?;
    }
    sink.flush()?;
    let mean = if scored > 0 { sum / scored as f64 } else { 0.0 };
    eprintln!(
        "{scored} cases scored by {} (mean total {mean:.4}), {errors} errors, {mismatches} differ from expected_total",
        reward.name()
    );
    Ok(if errors == 0 && mismatches == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn score_case(reward: &RewardPlugin, line: &str) -> Result<(Case, RewardScore)> {
    let case: Case = serde_json::from_str(line).context("not a valid case")?;
    let sample = build_sample(
        &case.question,
        &case.golden_answers,
        case.response.clone(),
        &case.finish,
        case.num_searches,
        case.metadata.as_ref().map(|m| m.to_string()),
    )?;
    let score = reward.score(&sample)?;
    Ok((case, score))
}

/// A reward sample; `num_searches` defaults to the number of `</search>` in the response.
fn build_sample(
    question: &str,
    golden_answers: &[String],
    response: String,
    finish: &str,
    num_searches: Option<u32>,
    metadata: Option<String>,
) -> Result<RewardSample> {
    let finish: Finish = finish.parse().map_err(anyhow::Error::msg)?;
    Ok(RewardSample {
        question: question.to_string(),
        golden_answers: golden_answers.to_vec(),
        num_searches: num_searches.unwrap_or(response.matches("</search>").count() as u32),
        response,
        finish,
        metadata,
    })
}

/// The components of a score as a JSON object, in the plugin's order.
fn components_json(score: &RewardScore) -> serde_json::Map<String, serde_json::Value> {
    score
        .components
        .iter()
        .map(|(name, value)| (name.clone(), serde_json::json!(value)))
        .collect()
}
