//! Command-line interface: one module per subcommand.

pub mod config_flags;
pub mod corpus;
pub mod demos;
pub mod embedder;
pub mod eval;
pub mod generate;
pub mod index;
pub mod model;
pub mod plugins;
pub mod report;
pub mod reward;
pub mod search;
pub mod sft;
pub mod train;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Train language models to reason with a search engine (ReSearch / Search-R1 style GRPO).
/// Rewards, prompts, tag parsers and search tools are sandboxed Wasm plugins.
#[derive(Debug, Parser)]
#[command(name = "host", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, check and inspect plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Score responses with the reward plugin: one response, or a JSONL file of cases.
    Reward(reward::RewardArgs),
    /// Create and inspect policy models.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Continue a prompt with a model (greedy or sampled); --json adds ids and log-probs.
    Generate(generate::GenerateArgs),
    /// Create sentence embedders and embed texts.
    #[command(subcommand)]
    Embedder(embedder::EmbedderCommand),
    /// Prepare passage corpora (split articles into FlashRAG passages).
    #[command(subcommand)]
    Corpus(corpus::CorpusCommand),
    /// Build, extend and inspect passage indexes (LMDB + arroy).
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Search an index: a table of the best passages per query, or --json.
    Search(search::SearchArgs),
    /// Serve an index over HTTP (Search-R1 /retrieve, ReSearch /search and /batch_search).
    Serve(search::ServeArgs),
    /// Evaluate a model on QA datasets with greedy rollouts: EM, F1, acc, searches, lengths.
    Eval(eval::EvalArgs),
    /// Build warm-start trajectories: from QA pairs and the index (no teacher), from a run's
    /// rewarded rollouts, or from a teacher's transcripts.
    Demos(demos::DemosArgs),
    /// Supervised fine-tuning on trajectories (a warm start before GRPO): cross-entropy on the
    /// generated tokens only, checkpoints that `host train --model` takes.
    Sft(sft::SftArgs),
    /// Train a policy with GRPO: multi-turn rollouts with search, rewards from the plugins.
    Train(train::TrainArgs),
    /// Chart a training run (reward, components, length, searches, KL, entropy) as PNGs and
    /// one HTML page, with a before/after evaluation table.
    Report(report::ReportArgs),
}

/// Where plugins come from and which are active; shared by every subcommand that loads them.
#[derive(Debug, Clone, Args)]
pub struct PluginArgs {
    /// Folder of plugins: one sub-folder per plugin, each with a plugin.toml.
    #[arg(long, value_name = "DIR", default_value = "plugins")]
    pub plugins: PathBuf,
    /// Choose the active plugin of a kind, e.g. `--use reward=searchr1-reward` (repeatable).
    #[arg(long = "use", value_name = "KIND=NAME")]
    pub use_plugin: Vec<String>,
    /// Override a plugin setting, e.g. `--config tag-parser.dialect=searchr1` (repeatable).
    #[arg(long = "config", value_name = "PLUGIN.KEY=VALUE")]
    pub config: Vec<String>,
    /// Cache folder for compiled components [default: $RESEARCH_HOST_CACHE, else
    /// ~/.cache/research-host].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl PluginArgs {
    /// The selection the flags describe.
    pub fn selection(&self) -> anyhow::Result<crate::plugins::Selection> {
        let mut selection = crate::plugins::Selection::default();
        for text in &self.use_plugin {
            selection.parse_use(text)?;
        }
        for text in &self.config {
            selection.parse_config(text)?;
        }
        Ok(selection)
    }

    /// The component cache folder.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        self.cache_dir
            .clone()
            .or_else(crate::plugins::engine::default_cache_dir)
            .map(|dir| dir.join("components"))
    }
}

/// Runs a parsed command line; the exit code reports failed checks or cases.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plugins(command) => plugins::run(command),
        Command::Reward(args) => reward::run(args),
        Command::Model(command) => model::run(command),
        Command::Generate(args) => generate::run(args),
        Command::Embedder(command) => embedder::run(command),
        Command::Corpus(command) => corpus::run(command),
        Command::Index(command) => index::run(command),
        Command::Search(args) => search::run_search(args),
        Command::Serve(args) => search::run_serve(args),
        Command::Demos(args) => demos::run(args),
        Command::Sft(args) => sft::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Report(args) => report::run(args),
    }
}

/// Logs go to stderr: warnings by default, more with -v; `RUST_LOG` wins when set.
pub fn init_logging(verbose: u8) {
    // The HTTP client under wasi:http logs every refused connection; the plugin already
    // reports it in its own error.
    let default = match verbose {
        0 => "warn,wasmtime_wasi_http=error",
        1 => "info,wasmtime_wasi_http=error",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
