//! `host train`: GRPO training with the plugins of a folder.

use super::config_flags::ConfigFlags;
use crate::data::qa::{QaSet, load_qa};
use crate::folder_lock::FolderLock;
use crate::grpo::assets::{
    EmbeddedAssets, embedded_assets, world_passages_text, world_questions,
    world_warm_start_questions,
};
use crate::grpo::run_dir::ensure_fresh;
use crate::grpo::{ReportOptions, RunDir, RunInputs, TrainConfig, Trainer};
use crate::model::{DeviceKind, ModelTokenizer};
use crate::plugins::{ASSISTANT_MARKER, PluginKind, PluginSet, Retriever, Selection};
use crate::retrieval::search::{SearchMode, SearchOptions, Searcher};
use crate::sft::copying::pretrain_copying;
use crate::sft::embedded::warm_start_embedded;
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// `host train`.
#[derive(Debug, Args)]
#[command(after_help = "\
Without CONFIG the embedded default runs: a fictional world (examples/world/: 528 passages; 750 \
warm-start, 398 training and 100 validation questions), a small random Qwen2-shaped policy and a \
random embedder built on the fly into the cache folder. The policy is first pretrained to copy \
(synthetic runs of the world's words, repeated) and warm-started on demonstrations of the \
warm-start questions (once each; cached; `--set sft.embedded_warm_start=false` skips both), \
then trained with GRPO on the training questions; a few minutes on 2 CPU cores. \
Examples:

  host train --plugins ./plugins
  host train examples/research.toml --steps 50 --out runs/research
  host train examples/searchr1.toml --set grpo.kl_coef=0 --set rollout.group_size=8
  host train --resume runs/research")]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Training questions (FlashRAG QA JSONL).
    #[arg(long, value_name = "FILE")]
    pub train: Option<PathBuf>,
    /// Held-out questions for validation (FlashRAG QA JSONL).
    #[arg(long, value_name = "FILE")]
    pub validation: Option<PathBuf>,
    /// Training steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Run seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run folder [default: runs/train-<unix time>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Samples per question (G).
    #[arg(long)]
    pub group_size: Option<usize>,
    /// Questions per step.
    #[arg(long)]
    pub batch_prompts: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Where the model runs (a `cuda` build is needed for cuda).
    #[arg(long, value_enum)]
    pub device: Option<DeviceKind>,
    /// Continue the run in RUN_DIR from its newest checkpoint (its saved config is used;
    /// only --steps, --quiet and the inference server's address and waits, `--set
    /// rollout.url=…`, may change).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// No progress bar: one log line per step.
    #[arg(long)]
    pub quiet: bool,
}

/// The embedded default's system prompt: the tiny policy cannot read the paper's 170-word
/// instruction, and a short one leaves its attention on the question it must copy from.
pub const EMBEDDED_SYSTEM_PROMPT: &str = "Answer the question. Search with <search> query \
</search>; answer with <answer> \\boxed{answer} </answer>.";

/// The embedded default's settings: copy pretraining and a warm start on demonstrations of the
/// world's warm-start questions, then 100 GRPO steps on its other training questions, within
/// minutes on 2 cores.
pub fn embedded_default_config() -> TrainConfig {
    let mut config = TrainConfig::default();
    config.plugins.config.insert(
        "research-prompt".into(),
        [(
            "system".to_string(),
            toml::Value::String(EMBEDDED_SYSTEM_PROMPT.into()),
        )]
        .into(),
    );
    config.rollout.group_size = 8;
    config.rollout.batch_prompts = 8;
    config.rollout.max_response_tokens = 256;
    config.rollout.max_obs_tokens = 160;
    config.rollout.max_turns = 2;
    config.retrieval.top_k = 2;
    config.grpo.kl_coef = 0.0;
    config.grpo.entropy_coef = 0.0;
    config.grpo.skip_zero_contribution = true;
    config.grpo.micro_batch_sequences = 16;
    config.optim.lr = 3e-4;
    config.optim.weight_decay = 0.0;
    config.run.steps = 100;
    config.checkpoint.every = 50;
    config.validation.every = 25;
    config.validation.limit = 0;
    config.sft.epochs = 8;
    config.sft.lr = 3e-3;
    config.sft.schedule = crate::grpo::optim::ScheduleKind::Constant;
    config.sft.batch_sequences = 16;
    config.sft.micro_batch_sequences = 16;
    config
}

/// Runs `host train`.
pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let cache_root = args.config.cache_root();
    // One writer per run folder, held until this function returns.
    let (mut config, run_dir, resume, _lock) = match &args.resume {
        Some(run_dir) => {
            let config = resumed_config(&args, run_dir)?;
            let lock = FolderLock::acquire(run_dir, "host train --resume")?;
            (config, run_dir.clone(), true, lock)
        }
        None => {
            let config = fresh_config(&args)?;
            let out = config
                .run
                .out
                .clone()
                .unwrap_or_else(|| crate::grpo::trainer::timestamped_run_dir("train"));
            let lock = FolderLock::acquire(&out, "host train")?;
            ensure_fresh(&out)?;
            (config, out, false, lock)
        }
    };
    config.validate()?;

    // Questions first: a bad dataset line is reported before anything is built.
    let (train, validation) = questions(&config)?;
    let Environment {
        model_dir,
        plugins,
        passages,
    } = prepare_environment(&config, cache_root)?;
    // The embedded policy is pretrained to copy and warm-started first (once each; cached
    // beside it), and the run then
    // records the warm-started folder as its model, so `--resume` needs nothing else.
    let (model_dir, plugins, warm) =
        if config.model.path.is_none() && config.sft.embedded_warm_start {
            let cache = model_dir
                .parent()
                .context("the embedded policy has no parent folder")?
                .to_path_buf();
            let (copying, plugins) = pretrain_copying(
                &config,
                &cache,
                &model_dir,
                &world_passages_text()?,
                plugins,
                args.quiet,
            )?;
            let (warm, plugins) = warm_start_embedded(
                &config,
                &cache,
                &copying.model,
                plugins,
                &world_warm_start_questions()?.examples,
                &validation,
                args.quiet,
            )?;
            config.model.path = Some(warm.model.clone());
            (warm.model.clone(), plugins, Some(warm))
        } else {
            (model_dir, plugins, None)
        };

    eprintln!("research-host train");
    let what = |path: &Option<PathBuf>, embedded: &str| match path {
        Some(p) => p.display().to_string(),
        None => embedded.to_string(),
    };
    match &warm {
        Some(warm) => eprintln!(
            "  model       embedded tiny Qwen2, pretrained to copy, warm-started on {} demonstrations ({})",
            warm.demonstrations,
            model_dir.display()
        ),
        None => eprintln!(
            "  model       {} ({})",
            what(&config.model.path, "embedded tiny Qwen2 (random weights)"),
            model_dir.display()
        ),
    }
    eprintln!(
        "  index       {} ({passages} passages)",
        what(&config.retrieval.index, "embedded fictional world")
    );
    eprintln!(
        "  train       {} ({} questions{})",
        train.origin,
        train.examples.len(),
        if train.skipped > 0 {
            format!(", {} bad lines skipped", train.skipped)
        } else {
            String::new()
        }
    );
    eprintln!("  validation  {} questions", validation.len());
    if let Some(url) = &config.rollout.url {
        eprintln!(
            "  sampler     {} server at {url}, loading each policy every {} step(s)",
            config.rollout.backend, config.rollout.sync_every
        );
    }
    for info in &plugins.loaded {
        eprintln!("  {:<11} {}", info.kind.to_string(), info.name);
    }
    eprintln!("  run folder  {}", run_dir.display());
    let text = config.to_toml()?;
    eprintln!("--- config ---\n{}--------------", text);

    let run = RunDir::create(&run_dir)?;
    if !resume {
        crate::durable::write_atomic(&run.config(), text.as_bytes())?;
    }
    let inputs = RunInputs {
        model_dir,
        plugins,
        train,
        validation,
    };
    let mut trainer = Trainer::start(config, inputs, run, resume)?;
    if resume {
        eprintln!("resuming after step {}", trainer.step());
    }
    let validations = trainer.run(ReportOptions { quiet: args.quiet })?;
    let mut closing = format!("done: {} steps", trainer.step());
    if let Some((first, last)) = validations {
        closing.push_str(&format!(
            "; validation reward {:.3} → {:.3}, EM {:.3} → {:.3}, F1 {:.3} → {:.3}, searches \
             {:.2} → {:.2} ({} questions)",
            first.val_reward,
            last.val_reward,
            first.val_em,
            last.val_em,
            first.val_f1,
            last.val_f1,
            first.val_searches,
            last.val_searches,
            last.val_questions
        ));
    }
    if let Some(before) = warm.as_ref().and_then(|w| w.before) {
        closing.push_str(&format!(
            " (before the warm start: reward {:.3}, EM {:.3})",
            before.val_reward, before.val_em
        ));
    }
    eprintln!(
        "{closing}; metrics in {}, checkpoints in {}",
        run_dir.join("metrics.jsonl").display(),
        run_dir.join("checkpoints").display()
    );
    if let Some(change) = crate::report::held_out::run_change(&run_dir)? {
        eprintln!("{}", change.summary());
    }
    match &warm {
        Some(warm) => eprintln!(
            "report: host report {} --before {}",
            run_dir.display(),
            warm.run.display()
        ),
        None => eprintln!("report: host report {}", run_dir.display()),
    }
    Ok(ExitCode::SUCCESS)
}

/// What a run or an evaluation talks to.
pub struct Environment {
    /// The policy folder (the config's, or the embedded tiny model).
    pub model_dir: PathBuf,
    /// The active plugins, with the search plugin's retriever on the index.
    pub plugins: PluginSet,
    /// Passages in the index.
    pub passages: u64,
}

/// Builds the embedded assets when the config leaves the model or the index unset, opens the
/// index and loads the plugins (with the index as the search plugins' retriever).
pub fn prepare_environment(
    config: &TrainConfig,
    cache_root: Option<PathBuf>,
) -> Result<Environment> {
    let needs_assets = config.model.path.is_none() || config.retrieval.index.is_none();
    let assets: Option<EmbeddedAssets> = if needs_assets {
        let root = cache_root
            .clone()
            .context("no cache folder: set RESEARCH_HOST_CACHE or pass --cache-dir")?
            .join("embedded");
        eprintln!("preparing the embedded tiny model and index (built once, then cached)…");
        Some(embedded_assets(&root, config.run.seed)?)
    } else {
        None
    };
    let model_dir = match (&config.model.path, &assets) {
        (Some(path), _) => path.clone(),
        (None, Some(a)) => a.policy.clone(),
        (None, None) => unreachable!("assets are built when the model is unset"),
    };
    let index_dir = match (&config.retrieval.index, &assets) {
        (Some(path), _) => path.clone(),
        (None, Some(a)) => a.index.clone(),
        (None, None) => unreachable!("assets are built when the index is unset"),
    };
    let options = SearchOptions {
        mode: SearchMode::from_str(&config.retrieval.mode, true).map_err(|_| {
            anyhow::anyhow!(
                "retrieval.mode must be auto, exact, scan or ann, not `{}`",
                config.retrieval.mode
            )
        })?,
        search_k: config.retrieval.search_k.and_then(NonZeroUsize::new),
        ..SearchOptions::default()
    };
    let searcher = Searcher::open(&index_dir, &options)
        .with_context(|| format!("cannot open the index {}", index_dir.display()))?;
    let passages = searcher.index().meta()?.passages;
    let retriever: Arc<dyn Retriever> = Arc::new(searcher);
    let mut selection = selection(config)?;
    if let Some(marker) = ModelTokenizer::load(&model_dir, None)?.assistant_marker()? {
        selection.host.insert(ASSISTANT_MARKER.into(), marker);
    }
    let plugins = PluginSet::load(
        &config.plugins.dir,
        &selection,
        &PluginKind::ROLLOUT,
        cache_root.map(|c| c.join("components")),
        Some(retriever),
    )?;
    Ok(Environment {
        model_dir,
        plugins,
        passages,
    })
}

/// The config of a new run: file or embedded default, then flags and --set.
fn fresh_config(args: &TrainArgs) -> Result<TrainConfig> {
    let mut config = args.config.base()?;
    macro_rules! flag {
        ($field:expr, $value:expr) => {
            if let Some(v) = $value.clone() {
                $field = v;
            }
        };
    }
    flag!(config.data.train, args.train.clone().map(Some));
    flag!(config.data.validation, args.validation.clone().map(Some));
    flag!(config.run.steps, args.steps);
    flag!(config.run.seed, args.seed);
    flag!(config.run.out, args.out.clone().map(Some));
    flag!(config.rollout.group_size, args.group_size);
    flag!(config.rollout.batch_prompts, args.batch_prompts);
    flag!(config.optim.lr, args.lr);
    flag!(config.model.device, args.device);
    args.config.finish(&mut config)?;
    make_paths_absolute(&mut config)?;
    Ok(config)
}

/// Makes the config's paths absolute, so that a saved config works from any folder.
pub fn make_paths_absolute(config: &mut TrainConfig) -> Result<()> {
    let absolute = |p: &mut PathBuf| -> Result<()> {
        *p = crate::grpo::config::lexically_normal(&std::path::absolute(&*p)?);
        Ok(())
    };
    absolute(&mut config.plugins.dir)?;
    for p in [
        config.model.path.as_mut(),
        config.retrieval.index.as_mut(),
        config.data.train.as_mut(),
        config.data.validation.as_mut(),
        config.run.out.as_mut(),
    ]
    .into_iter()
    .flatten()
    .chain(config.sft.data.iter_mut())
    {
        absolute(p)?;
    }
    Ok(())
}

/// Writes `--use KIND=NAME` and `--config PLUGIN.KEY=VALUE` into the config's [plugins].
pub fn fold_plugin_flags(
    config: &mut TrainConfig,
    use_plugin: &[String],
    plugin_config: &[String],
) -> Result<()> {
    for text in use_plugin {
        let (kind, name) = text.split_once('=').with_context(|| {
            format!("`--use {text}`: expected KIND=NAME, e.g. reward=searchr1-reward")
        })?;
        let kind: PluginKind = kind.trim().parse().map_err(anyhow::Error::msg)?;
        config
            .plugins
            .active
            .insert(kind.to_string(), name.trim().to_string());
    }
    let mut overrides = Selection::default();
    for text in plugin_config {
        overrides.parse_config(text)?;
    }
    for (plugin, settings) in overrides.config {
        for (key, value) in settings {
            config
                .plugins
                .config
                .entry(plugin.clone())
                .or_default()
                .insert(key, toml::Value::String(value));
        }
    }
    Ok(())
}

/// The saved config of a run being resumed; only --steps and the server's settings
/// ([`RESUMABLE_KEYS`]) may change it.
fn resumed_config(args: &TrainArgs, run_dir: &Path) -> Result<TrainConfig> {
    let path = run_dir.join("config.toml");
    if !path.is_file() {
        bail!(
            "{} is not a run folder (it has no config.toml)",
            run_dir.display()
        );
    }
    if run_dir.join(super::sft::DATA_FINGERPRINT).is_file() {
        bail!(
            "{} is a `host sft` run; continue it with `host sft --resume`, or train from its \
             checkpoint with `host train --model {}/checkpoints/step-N/model`",
            run_dir.display(),
            run_dir.display()
        );
    }
    // Where the inference server is and how it is waited for do not change what a run
    // computes: a resume may name a server that came back elsewhere.
    let (serving, other_sets): (Vec<&String>, Vec<&String>) =
        args.config.set.iter().partition(|s| {
            let key = s.split_once('=').map_or(s.as_str(), |(k, _)| k).trim();
            RESUMABLE_KEYS.contains(&key)
        });
    let only_sets = ConfigFlags {
        set: Vec::new(),
        ..args.config.clone()
    };
    let changed = only_sets.any()
        || !other_sets.is_empty()
        || args.train.is_some()
        || args.validation.is_some()
        || args.seed.is_some()
        || args.out.is_some()
        || args.group_size.is_some()
        || args.batch_prompts.is_some()
        || args.lr.is_some()
        || args.device.is_some();
    if changed {
        bail!(
            "--resume continues a run with its saved config ({}); only --steps, --quiet and \
             --set of {} may be given",
            path.display(),
            RESUMABLE_KEYS.join(", ")
        );
    }
    let mut config = TrainConfig::load(&path)?;
    if let Some(steps) = args.steps {
        config.run.steps = steps;
    }
    for assignment in serving {
        config.set(assignment)?;
    }
    Ok(config)
}

/// Settings a resumed run may change: where the inference server is and how long its calls
/// are waited for.
const RESUMABLE_KEYS: [&str; 4] = [
    "rollout.url",
    "rollout.engine_concurrency",
    "rollout.engine_retry_s",
    "rollout.engine_timeout_s",
];

/// The active plugins: the config's [plugins] tables (which hold --use and --config).
fn selection(config: &TrainConfig) -> Result<Selection> {
    let mut selection = Selection::default();
    for (kind, name) in &config.plugins.active {
        selection.parse_use(&format!("{kind}={name}"))?;
    }
    for (plugin, settings) in &config.plugins.config {
        for (key, value) in settings {
            if key.starts_with(crate::plugins::HOST_KEY_PREFIX) {
                bail!(
                    "[plugins.config.{plugin}] `{key}`: keys starting with `{}` are set by the \
                     host (from the model and the run), not by users",
                    crate::plugins::HOST_KEY_PREFIX
                );
            }
            let value = match value {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            selection
                .config
                .entry(plugin.clone())
                .or_default()
                .insert(key.clone(), value);
        }
    }
    Ok(selection)
}

/// Training and validation questions.
pub fn questions(config: &TrainConfig) -> Result<(QaSet, Vec<crate::data::qa::QaExample>)> {
    let d = &config.data;
    let (mut train, embedded_validation) = match &d.train {
        Some(path) => (load_qa(path, d.on_bad_record)?, None),
        None => {
            let (train, validation) = world_questions()?;
            (train, Some(validation.examples))
        }
    };
    if let Some(limit) = d.limit {
        train.examples.truncate(limit);
    }
    let validation = match (&d.validation, embedded_validation) {
        (Some(path), _) => load_qa(path, d.on_bad_record)?.examples,
        (None, Some(embedded)) => embedded,
        (None, None) => {
            let held = d
                .validation_size
                .min(train.examples.len().saturating_sub(1));
            train.examples.split_off(train.examples.len() - held)
        }
    };
    if train.examples.is_empty() {
        bail!("{} leaves no training questions", train.origin);
    }
    Ok((train, validation))
}
