//! `host index …`: build, extend and inspect passage indexes.

use crate::data::corpus::OnBadRecord;
use crate::folder_lock::FolderLock;
use crate::retrieval::embedder::{DEFAULT_BATCH_SIZE, Embedder, SettingsOverrides};
use crate::retrieval::index::{self, Index, IndexMeta, IndexState};
use crate::retrieval::ingest::{DEFAULT_COMMIT_EVERY, IngestOptions, IngestReport, ingest};
use crate::retrieval::search::load_index_embedder;
use anyhow::{Result, bail};
use candle_core::Device;
use clap::{Args, Subcommand};
use comfy_table::Table;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Embed a corpus and build an index (passages, vectors, ANN forest) in a new folder.
    /// A killed build is resumed by running the same command again.
    Build {
        /// Corpus JSONL: FlashRAG {"id","contents"} or {"id","title","text"} lines.
        #[arg(long)]
        corpus: PathBuf,
        /// Embedder folder (BERT family: MiniLM, E5, BGE; config.json, tokenizer.json,
        /// model.safetensors).
        #[arg(long)]
        embedder: PathBuf,
        /// Index folder to create.
        #[arg(long)]
        out: PathBuf,
        /// Trees in the ANN forest [default: arroy's choice for the size].
        #[arg(long)]
        trees: Option<usize>,
        /// Seed of the forest.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        settings: SettingsOverrides,
        #[command(flatten)]
        ingest: IngestArgs,
    },
    /// Add the passages of a corpus whose ids are not in the index yet, then update the forest.
    Add {
        /// The index folder.
        #[arg(long)]
        index: PathBuf,
        /// Corpus JSONL.
        #[arg(long)]
        corpus: PathBuf,
        /// Embedder folder, when it moved since the build (must be the same model).
        #[arg(long)]
        embedder: Option<PathBuf>,
        #[command(flatten)]
        ingest: IngestArgs,
    },
    /// Print an index's metadata: embedder, settings, counts, state, size.
    Info {
        /// The index folder.
        #[arg(long)]
        index: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Options shared by build and add.
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// What to do with a bad corpus line: stop (naming file and line) or skip and count.
    #[arg(long, value_enum, default_value_t = OnBadRecord::Stop)]
    pub on_bad_record: OnBadRecord,
    /// Texts embedded per forward pass.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Passages per committed transaction (a kill loses at most this many).
    #[arg(long, default_value_t = DEFAULT_COMMIT_EVERY)]
    pub commit_every: usize,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

impl IngestArgs {
    fn options(&self) -> IngestOptions {
        IngestOptions {
            on_bad_record: self.on_bad_record,
            commit_every: self.commit_every.max(1),
            progress: !self.quiet,
        }
    }
}

/// Runs an `index` subcommand.
pub fn run(command: IndexCommand) -> Result<ExitCode> {
    match command {
        IndexCommand::Build {
            corpus,
            embedder,
            out,
            trees,
            seed,
            settings,
            ingest: args,
        } => {
            let embedder = Embedder::load(&embedder, &settings, &Device::Cpu)?
                .with_batch_size(args.batch_size);
            let embedder_path = absolute(embedder.folder());
            // One writer per index folder, held until the build ends.
            let _lock = FolderLock::acquire(&out, "host index build")?;
            let index = if index::exists(&out) {
                let index = Index::open(&out)?;
                let meta = index.meta()?;
                match meta.state {
                    IndexState::Building => {
                        index.check_embedder(embedder.identity())?;
                        eprintln!(
                            "resuming the interrupted build in {} ({} passages already indexed)",
                            out.display(),
                            meta.passages
                        );
                        index
                    }
                    IndexState::Complete => bail!(
                        "{} already holds an index of {} passages; add passages with `host index add --index {} --corpus FILE`, or remove the folder to rebuild",
                        out.display(),
                        meta.passages,
                        out.display()
                    ),
                    IndexState::Adding => bail!(
                        "{} has an interrupted `host index add`; run that again to finish it",
                        out.display()
                    ),
                }
            } else {
                Index::create(
                    &out,
                    embedder.identity().clone(),
                    embedder_path,
                    trees,
                    seed,
                )?
            };
            let report = ingest(
                &index,
                &embedder,
                &corpus,
                IndexState::Building,
                &args.options(),
            )?;
            print_report(&report, &out);
        }
        IndexCommand::Add {
            index: dir,
            corpus,
            embedder,
            ingest: args,
        } => {
            let index = Index::open(&dir)?;
            let _lock = FolderLock::acquire(&dir, "host index add")?;
            let meta = index.meta()?;
            if meta.state == IndexState::Building {
                bail!(
                    "{} is an interrupted build; finish it with `host index build` first",
                    dir.display()
                );
            }
            let embedder =
                load_index_embedder(&meta, embedder.as_deref())?.with_batch_size(args.batch_size);
            let report = ingest(
                &index,
                &embedder,
                &corpus,
                IndexState::Adding,
                &args.options(),
            )?;
            print_report(&report, &dir);
        }
        IndexCommand::Info { index, json } => {
            let opened = Index::open(&index)?;
            let meta = opened.meta()?;
            if json {
                let mut value = serde_json::to_value(&meta)?;
                value["disk_bytes"] = serde_json::json!(opened.disk_bytes());
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print_info(&meta, opened.disk_bytes());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn print_report(report: &IngestReport, dir: &Path) {
    let rate = report.added as f64 / report.embed_time.as_secs_f64().max(1e-9);
    println!(
        "{}: added {} passages ({} already present, {} bad lines skipped) in {:.1} s ({:.0} passages/s embedding); {} passages, {} trees",
        dir.display(),
        report.added,
        report.already_present,
        report.skipped,
        report.total_time.as_secs_f64(),
        rate,
        report.meta.passages,
        report.meta.built_trees
    );
    for bad in &report.skipped_examples {
        eprintln!("skipped {bad}");
    }
    if report.skipped > report.skipped_examples.len() as u64 {
        eprintln!(
            "… and {} more bad lines",
            report.skipped - report.skipped_examples.len() as u64
        );
    }
}

fn print_info(meta: &IndexMeta, disk_bytes: u64) {
    let settings = &meta.embedder.settings;
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    let rows: Vec<(&str, String)> = vec![
        ("state", format!("{:?}", meta.state).to_lowercase()),
        ("passages", meta.passages.to_string()),
        ("embedder", meta.embedder.name.clone()),
        ("embedder path", meta.embedder_path.display().to_string()),
        ("fingerprint", meta.embedder.fingerprint.clone()),
        ("dims", meta.embedder.dims.to_string()),
        ("pooling", format!("{:?}", settings.pooling).to_lowercase()),
        ("query prefix", format!("{:?}", settings.query_prefix)),
        ("passage prefix", format!("{:?}", settings.passage_prefix)),
        ("max length", settings.max_length.to_string()),
        (
            "trees",
            format!(
                "{} built ({} requested)",
                meta.built_trees,
                meta.trees.map_or("auto".to_string(), |t| t.to_string())
            ),
        ),
        (
            "disk",
            format!("{:.1} MiB", disk_bytes as f64 / (1 << 20) as f64),
        ),
        ("format", meta.format.to_string()),
    ];
    for (key, value) in rows {
        table.add_row(vec![key.to_string(), value]);
    }
    println!("{table}");
    for source in meta.sources.iter().chain(meta.pending.iter()) {
        println!(
            "source {}: {} added, {} already present, {} skipped",
            source.corpus, source.added, source.already_present, source.skipped
        );
    }
}
