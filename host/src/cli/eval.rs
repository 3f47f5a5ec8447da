//! `host eval`: greedy rollouts of QA datasets with the training engine; EM, F1, acc,
//! precision, recall, searches, lengths and finish reasons per dataset.

use super::train::{Environment, fold_plugin_flags, prepare_environment};
use crate::data::corpus::OnBadRecord;
use crate::data::qa::{QaSet, load_qa};
use crate::durable::write_atomic;
use crate::eval::judge::{JudgeBackend, ModelJudge, PluginJudge};
use crate::eval::{DatasetReport, EvalOptions, evaluate};
use crate::grpo::TrainConfig;
use crate::grpo::assets::world_questions;
use crate::inference_server::Backend;
use crate::model::loader::{load_tokenizer, read_config};
use crate::model::{LoadedModel, ModelConfig, ModelTokenizer, SamplingParams, load_model};
use crate::plugins::{PluginKind, PluginSet};
use crate::rollout::{Episodes, Generation, RolloutModel, RolloutSettings};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `host eval`.
#[derive(Debug, Args)]
#[command(after_help = "\
Writes OUT/<dataset>.jsonl (every rollout with its scores), OUT/report.json and prints a table. \
Run the same command again to continue an evaluation that was stopped or killed. Examples:

  host eval --plugins ./plugins --limit 8                     # embedded tiny model and world
  host eval --model runs/research/checkpoints/step-000100/model --index assets/wiki-minilm \\
            --data musique-dev.jsonl hotpotqa-dev.jsonl --limit 200 --out runs/eval-100
  host eval --model ./smollm2 --backend llama-cpp --url http://127.0.0.1:8080 ...  # sampled by llama.cpp

With --backend, the server must serve the weights of --model (whose tokenizer and context the \
host uses): the host sends token ids and reads back the sampled ids.")]
pub struct EvalArgs {
    /// Policy model folder [default: the embedded tiny model].
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Passage index [default: the embedded world's].
    #[arg(long, value_name = "DIR")]
    pub index: Option<PathBuf>,
    /// FlashRAG QA JSONL files [default: the embedded world's held-out questions].
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub data: Vec<PathBuf>,
    #[command(flatten)]
    pub plugins: super::PluginArgs,
    /// Evaluate only the first N questions of each file.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Sampling temperature; 0 is greedy (the papers' evaluation).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Seed of sampled evaluation (unused when greedy).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Response tokens per rollout, observations included.
    #[arg(long, default_value_t = 512)]
    pub max_response_tokens: usize,
    /// Search turns per rollout.
    #[arg(long, default_value_t = 8)]
    pub max_turns: u32,
    /// Tokens of one observation.
    #[arg(long, default_value_t = 512)]
    pub max_obs_tokens: usize,
    /// Passages per search.
    #[arg(long, default_value_t = 5)]
    pub top_k: u32,
    /// Questions rolled out together.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Where rollouts are sampled: in this process, or by an inference server at --url.
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    pub backend: Backend,
    /// The inference server's base URL, e.g. http://127.0.0.1:8080 (with --backend sglang,
    /// vllm or llama-cpp).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Requests in flight to the server at most.
    #[arg(long, default_value_t = 64)]
    pub engine_concurrency: usize,
    /// Seconds a failing server call (no connection, timeout, 408/429/5xx) is retried before
    /// the evaluation stops with its error (rerun the command to continue it).
    #[arg(long, default_value_t = 60.0)]
    pub engine_retry_s: f64,
    /// Output folder [default: runs/eval-<unix time>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// LLM-as-judge: a model folder whose verdict (JSON `{"rationale", "judgement"}`) on each
    /// answer against each golden answer is reported as `judge` accuracy; its raw outputs are
    /// kept in the records.
    #[arg(long, value_name = "DIR", conflicts_with = "judge_plugin")]
    pub judge_model: Option<PathBuf>,
    /// LLM-as-judge through a judge plugin of the --plugins folder (e.g. `openai-judge` for an
    /// OpenAI-compatible endpoint; set its `url` with --config and grant its network).
    #[arg(long, value_name = "NAME")]
    pub judge_plugin: Option<String>,
    /// Tokens per judge verdict at most.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub judge_max_tokens: u32,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `host eval`.
pub fn run(args: EvalArgs) -> Result<ExitCode> {
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        bail!("--temperature must be ≥ 0");
    }
    if args.batch == 0 || args.max_response_tokens == 0 {
        bail!("--batch and --max-response-tokens must be at least 1");
    }
    let mut config = TrainConfig::default();
    config.model.path = args.model.clone();
    config.retrieval.index = args.index.clone();
    config.retrieval.top_k = args.top_k;
    config.plugins.dir = args.plugins.plugins.clone();
    config.rollout.backend = args.backend;
    config.rollout.url = args.url.clone();
    config.rollout.engine_concurrency = args.engine_concurrency;
    config.rollout.engine_retry_s = args.engine_retry_s;
    config.rollout.validate_backend()?;
    fold_plugin_flags(&mut config, &args.plugins.use_plugin, &args.plugins.config)?;

    // Datasets first: a bad line is reported before anything is built.
    let mut sets: Vec<(String, QaSet)> = Vec::new();
    if args.data.is_empty() {
        sets.push(("world-validation".into(), world_questions()?.1));
    }
    for path in &args.data {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "data".into());
        let mut name = stem.clone();
        let mut n = 2;
        while sets.iter().any(|(existing, _)| *existing == name) {
            name = format!("{stem}-{n}");
            n += 1;
        }
        sets.push((name, load_qa(path, OnBadRecord::Stop)?));
    }

    // The judge next: a bad folder is reported before the output folder is claimed.
    let judge: Option<Box<dyn JudgeBackend>> = match (&args.judge_model, &args.judge_plugin) {
        (Some(dir), _) => Some(Box::new(ModelJudge {
            model: load_model(dir, DType::F32, &Device::Cpu)
                .with_context(|| format!("cannot load the judge model {}", dir.display()))?,
            max_new_tokens: args.judge_max_tokens as usize,
            batch: args.batch,
        })),
        (None, Some(name)) => {
            let mut selection = args.plugins.selection()?;
            selection.parse_use(&format!("judge={name}"))?;
            let mut set = PluginSet::load(
                &args.plugins.plugins,
                &selection,
                &[PluginKind::Judge],
                args.plugins.cache_dir(),
                None,
            )
            .with_context(|| format!("cannot load the judge plugin {name}"))?;
            let plugin = set.judge.take().context("no judge plugin loaded")?;
            // One prompt per call: the plugin's deadline then bounds one request, not a batch.
            Some(Box::new(PluginJudge {
                plugin,
                max_tokens: args.judge_max_tokens,
                batch: 1,
            }))
        }
        (None, None) => None,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::grpo::trainer::timestamped_run_dir("eval"));
    // One writer per output folder, held until this function returns.
    let _lock = crate::folder_lock::FolderLock::acquire(&out, "host eval")?;
    let mut settings_json = serde_json::json!({
        "model": args.model, "index": args.index, "data": args.data,
        "plugins": redact_secrets(serde_json::to_value(&config.plugins)?),
        "temperature": args.temperature, "seed": args.seed,
        "max_response_tokens": args.max_response_tokens, "max_turns": args.max_turns,
        "max_obs_tokens": args.max_obs_tokens, "top_k": args.top_k,
    });
    if args.backend != Backend::Local {
        // Records sampled by another backend are not continued by this one.
        settings_json["backend"] = serde_json::json!(args.backend.name());
    }
    if let Some(judge) = &args.judge_model {
        settings_json["judge"] =
            serde_json::json!({ "model": judge, "max_tokens": args.judge_max_tokens });
    }
    if let Some(name) = &args.judge_plugin {
        settings_json["judge"] =
            serde_json::json!({ "plugin": name, "max_tokens": args.judge_max_tokens });
    }
    let settings_path = out.join("settings.json");
    if settings_path.is_file() {
        let saved: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&settings_path)
                .with_context(|| format!("cannot read {}", settings_path.display()))?,
        )
        .with_context(|| format!("invalid {}", settings_path.display()))?;
        if saved != settings_json {
            bail!(
                "{} holds an evaluation with other settings ({}); continue it with the same flags or choose another --out",
                out.display(),
                settings_path.display()
            );
        }
        eprintln!("continuing the evaluation in {}", out.display());
    } else {
        write_atomic(
            &settings_path,
            serde_json::to_string_pretty(&settings_json)?.as_bytes(),
        )?;
    }

    let cache_root = args
        .plugins
        .cache_dir
        .clone()
        .or_else(crate::plugins::engine::default_cache_dir);
    let Environment {
        model_dir,
        plugins,
        passages,
    } = prepare_environment(&config, cache_root)?;
    let generation = config.rollout.generation()?;
    // A server samples from its own copy of the weights: the host needs only the model's
    // config and tokenizer then.
    let held = match &generation {
        Generation::Local => HeldModel::Whole(load_model(&model_dir, DType::F32, &Device::Cpu)?),
        Generation::Server(_) => {
            let model_config = read_config(&model_dir)?;
            let tokenizer = load_tokenizer(&model_dir, &model_config)?;
            HeldModel::Shape(model_config, tokenizer)
        }
    };
    let model = held.view();
    let stop_sequences = plugins
        .parser
        .as_ref()
        .context("no parser plugin loaded")?
        .stop_sequences()?;
    let sampler = match &generation {
        Generation::Local => String::new(),
        Generation::Server(server) => {
            format!(" (sampled by {} at {})", server.backend(), server.url())
        }
    };
    eprintln!(
        "research-host eval: model {}{sampler}, index of {passages} passages, plugins {}",
        model_dir.display(),
        plugins
            .loaded
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let episodes = Episodes {
        model,
        generation: &generation,
        plugins: &plugins,
        stop_sequences: &stop_sequences,
    };
    let settings = RolloutSettings {
        group_size: 1,
        sampling: SamplingParams {
            temperature: args.temperature,
            greedy: args.temperature == 0.0,
            ..SamplingParams::default()
        },
        max_response_tokens: args.max_response_tokens,
        max_turns: args.max_turns,
        max_obs_tokens: args.max_obs_tokens,
        top_k: args.top_k,
    };
    let options = EvalOptions {
        judge: judge.as_deref(),
        limit: args.limit,
        batch: args.batch,
        seed: args.seed,
        progress: !args.quiet,
    };
    let mut reports: Vec<DatasetReport> = Vec::new();
    for (name, set) in &sets {
        let path = out.join(format!("{name}.jsonl"));
        reports.push(evaluate(&episodes, set, name, &settings, &options, &path)?);
    }
    write_atomic(
        &out.join("report.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "datasets": reports }))?.as_bytes(),
    )?;
    println!("{}", table(&reports));
    eprintln!(
        "rollouts in {}/<dataset>.jsonl, metrics in {}",
        out.display(),
        out.join("report.json").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The policy model as `host eval` holds it: whole for the local backend; its config and
/// tokenizer only when a server samples.
enum HeldModel {
    Whole(LoadedModel),
    Shape(ModelConfig, ModelTokenizer),
}

impl HeldModel {
    fn view(&self) -> RolloutModel<'_> {
        match self {
            HeldModel::Whole(model) => RolloutModel::from(model),
            HeldModel::Shape(config, tokenizer) => RolloutModel {
                config,
                tokenizer,
                policy: None,
            },
        }
    }
}

/// Plugin settings whose key names a secret (`…key`, `…token…`, `…password…`, `…secret…`) are
/// written as `<redacted>`: settings.json must not hold credentials, and changing a key must
/// not make a folder refuse to continue.
fn redact_secrets(mut value: serde_json::Value) -> serde_json::Value {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    let k = key.to_ascii_lowercase();
                    let secret = k.ends_with("key")
                        || ["token", "password", "secret"]
                            .iter()
                            .any(|s| k.contains(s));
                    if secret && v.is_string() {
                        *v = serde_json::Value::String("<redacted>".into());
                    } else {
                        walk(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

fn table(reports: &[DatasetReport]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    let judged = reports.iter().any(|r| r.judge_acc.is_some());
    let mut header = vec![
        "dataset",
        "questions",
        "EM",
        "F1",
        "acc",
        "precision",
        "recall",
        "reward",
        "searches",
        "response tokens",
        "finish",
    ];
    if judged {
        header.push("judge");
    }
    table.set_header(header);
    for r in reports {
        let finish: Vec<String> = r.finish.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let mut row = vec![
            r.dataset.clone(),
            r.questions.to_string(),
            format!("{:.3}", r.em),
            format!("{:.3}", r.f1),
            format!("{:.3}", r.acc),
            format!("{:.3}", r.precision),
            format!("{:.3}", r.recall),
            format!("{:.3}", r.reward),
            format!("{:.2}", r.searches),
            format!("{:.0}", r.response_tokens),
            finish.join(", "),
        ];
        if judged {
            row.push(match r.judge_acc {
                Some(acc) if r.judge_unparsed > 0 => {
                    format!("{acc:.3} ({} unparsed)", r.judge_unparsed)
                }
                Some(acc) => format!("{acc:.3}"),
                None => "-".into(),
            });
        }
        table.add_row(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_saved_settings() {
        let plugins = serde_json::json!({
            "dir": "plugins",
            "config": {"openai-judge": {"api-key": "sk-123", "url": "http://x", "model": "m"},
                       "other": {"auth_token": "t", "top-k": "3"}}
        });
        let redacted = redact_secrets(plugins);
        assert_eq!(redacted["config"]["openai-judge"]["api-key"], "<redacted>");
        assert_eq!(redacted["config"]["openai-judge"]["url"], "http://x");
        assert_eq!(redacted["config"]["other"]["auth_token"], "<redacted>");
        assert_eq!(redacted["config"]["other"]["top-k"], "3");
        assert_eq!(redacted["dir"], "plugins");
    }
}
