//! `host demos`: training trajectories for a supervised warm start (`host sft`).

use super::config_flags::ConfigFlags;
use super::train::{Environment, prepare_environment};
use crate::data::qa::load_qa;
use crate::demos::collect::{from_run, from_transcripts};
use crate::demos::{DemoBuilder, DemoTemplate};
use crate::durable::write_atomic;
use crate::grpo::TrainConfig;
use crate::grpo::assets::world_warm_start_questions;
use crate::model::ModelTokenizer;
use crate::model::loader::read_config;
use crate::rollout::Trajectory;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `host demos`.
#[derive(Debug, Args)]
#[command(after_help = "\
Three sources, one output form (the JSONL of a run's trajectories/, which `host sft` trains on):

  QA pairs, no teacher (default): each question is searched with a query derived from it, the \
search plugin's results are shown through the parser's own format-results (loss mask 0), a \
second search for an entity of those results follows when they lack the answer, and the answer \
is written in the dialect's format. Only grounded questions are kept (a golden answer appears in \
the results shown); the summary says why the others were dropped. The wording is a template: \
`research` or `searchr1` (shipped), or your own TOML file (copy host/src/demos/templates/).
  --from-run DIR --min-reward R: the rollouts of a `host train` run (never its validation \
rollouts) or a `host eval` folder that earned at least R (rejection-sampling fine-tuning).
  --transcripts FILE: a teacher's outputs, {\"question\", \"golden_answers\", \"response\"} per \
line, re-tokenised with the template's observation spans masked.

The model (its tokenizer and context), index and plugins come from CONFIG (a `host train` \
config) and the flags, as for `host train`; without them, the embedded default's. Examples:

  host demos --plugins ./plugins --out runs/demos/world.jsonl --set rollout.max_response_tokens=400
  host demos examples/research.toml --data train.jsonl --out demos.jsonl --limit 2000
  host demos --from-run runs/research --min-reward 0.8 --out rft.jsonl
  host demos examples/searchr1.toml --transcripts teacher.jsonl --template searchr1 --out t.jsonl")]
pub struct DemosArgs {
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Output JSONL file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// QA file (FlashRAG JSONL) [default: the config's data.train, else the embedded world's
    /// warm-start questions].
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from_run", "transcripts"])]
    pub data: Option<PathBuf>,
    /// Collect the rewarded rollouts of a `host train` or `host eval` folder instead.
    #[arg(
        long,
        value_name = "DIR",
        requires = "min_reward",
        conflicts_with = "transcripts"
    )]
    pub from_run: Option<PathBuf>,
    /// The reward a rollout needs to be kept (with --from-run).
    #[arg(long, value_name = "R", requires = "from_run")]
    pub min_reward: Option<f64>,
    /// Re-tokenise a teacher's transcripts instead.
    #[arg(long, value_name = "FILE")]
    pub transcripts: Option<PathBuf>,
    /// Wording: research, searchr1 or a TOML file [default: searchr1 when the active
    /// parser's `dialect` setting is searchr1, else research].
    #[arg(long, value_name = "NAME|FILE", conflicts_with = "from_run")]
    pub template: Option<String>,
    /// Use only the first N questions.
    #[arg(long, conflicts_with_all = ["from_run", "transcripts"])]
    pub limit: Option<usize>,
    /// Entities of the first results tried as a second query when they lack the answer.
    #[arg(long, default_value_t = 4)]
    pub max_entities: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `host demos`.
pub fn run(args: DemosArgs) -> Result<ExitCode> {
    if let Some(folder) = &args.from_run {
        let min_reward = args.min_reward.context("--from-run needs --min-reward")?;
        let collected = from_run(folder, min_reward)?;
        if !folder.join("trajectories").is_dir() {
            eprintln!(
                "warning: {} is an evaluation: its questions are test questions, and a model \
                 trained on them can no longer be evaluated on them",
                folder.display()
            );
        }
        eprintln!(
            "{} rollouts read from {}: {} kept (reward ≥ {min_reward}), {} below it, {} failed \
             or empty, {} duplicates",
            collected.read,
            folder.display(),
            collected.kept.len(),
            collected.below_reward,
            collected.failed,
            collected.duplicates
        );
        if collected.kept.is_empty() {
            bail!("no rollout of {} earned {min_reward}", folder.display());
        }
        write_trajectories(&args.out, &collected.kept)?;
        return Ok(ExitCode::SUCCESS);
    }

    let config = demos_config(&args)?;
    let questions = match (&args.transcripts, &config.data.train) {
        (Some(_), _) => None,
        (None, Some(path)) => Some(load_qa(path, config.data.on_bad_record)?),
        (None, None) => Some(world_warm_start_questions()?),
    };
    let template = DemoTemplate::load(&template_name(&args, &config))?;
    let cache_root = args.config.cache_root();
    let Environment {
        model_dir, plugins, ..
    } = prepare_environment(&config, cache_root)?;
    let model_config = read_config(&model_dir)?;
    let tokenizer = ModelTokenizer::load(&model_dir, model_config.extra.get("eos_token_id"))?;
    let context = model_config.max_position_embeddings;

    if let Some(path) = &args.transcripts {
        let trajectories = from_transcripts(path, &plugins, &tokenizer, context, &template)?;
        let mean = mean_reward(&trajectories);
        eprintln!(
            "{} transcripts re-tokenised from {} (mean reward {mean:.3})",
            trajectories.len(),
            path.display()
        );
        write_trajectories(&args.out, &trajectories)?;
        return Ok(ExitCode::SUCCESS);
    }

    let mut questions = questions.context("no questions")?;
    if let Some(limit) = args.limit {
        questions.examples.truncate(limit);
    }
    if questions.examples.is_empty() {
        bail!("{} holds no questions", questions.origin);
    }
    let builder = DemoBuilder {
        plugins: &plugins,
        tokenizer: &tokenizer,
        context,
        template: &template,
        top_k: config.retrieval.top_k,
        max_obs_tokens: config.rollout.max_obs_tokens,
        max_response_tokens: config.rollout.max_response_tokens,
        max_entities: args.max_entities,
    };
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(questions.examples.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} demonstrations {pos}/{len} [{elapsed_precise}] {wide_bar} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    };
    let set = builder.build(&questions.examples, || bar.inc(1))?;
    bar.finish_and_clear();
    let total = questions.examples.len();
    let searches = set.kept.iter().map(|t| t.queries.len()).sum::<usize>() as f64
        / set.kept.len().max(1) as f64;
    eprintln!(
        "{} of {total} questions of {} kept as demonstrations (mean reward {:.3}, {searches:.2} \
         searches each, template `{}`); {} dropped",
        set.kept.len(),
        questions.origin,
        mean_reward(&set.kept),
        template_name(&args, &config),
        set.dropped_count()
    );
    for (reason, ids) in &set.dropped {
        let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
        eprintln!(
            "  {:>5}  {} (e.g. {})",
            ids.len(),
            reason.describe(),
            shown.join(", ")
        );
    }
    if set.kept.is_empty() {
        bail!("no question gave a grounded demonstration; see the reasons above");
    }
    write_trajectories(&args.out, &set.kept)?;
    Ok(ExitCode::SUCCESS)
}

/// The training config the flags describe (as `host train` reads it).
fn demos_config(args: &DemosArgs) -> Result<TrainConfig> {
    let mut config = args.config.base()?;
    if let Some(data) = &args.data {
        config.data.train = Some(data.clone());
    }
    args.config.finish(&mut config)?;
    config.validate()?;
    Ok(config)
}

/// `--template`, else the shipped template of the run's dialect.
fn template_name(args: &DemosArgs, config: &TrainConfig) -> String {
    args.template
        .clone()
        .unwrap_or_else(|| DemoTemplate::default_name(config).to_string())
}

fn mean_reward(trajectories: &[Trajectory]) -> f64 {
    trajectories.iter().filter_map(|t| t.reward).sum::<f64>() / trajectories.len().max(1) as f64
}

/// Writes the trajectories as JSONL (atomically) and says where.
fn write_trajectories(out: &Path, trajectories: &[Trajectory]) -> Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut text = String::new();
    for t in trajectories {
        text.push_str(&serde_json::to_string(t)?);
        text.push('\n');
    }
    write_atomic(out, text.as_bytes())?;
    let tokens: usize = trajectories.iter().map(Trajectory::generated_tokens).sum();
    eprintln!(
        "wrote {} trajectories ({tokens} trained tokens) to {}",
        trajectories.len(),
        out.display()
    );
    Ok(())
}
