//! `host search` and `host serve`: query an index from the command line or over HTTP.

use crate::retrieval::search::{SearchOptions, Searcher};
use crate::retrieval::server::{ServerOptions, router};
use anyhow::{Context, Result};
use clap::Args;
use comfy_table::{ContentArrangement, Table};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The index folder.
    #[arg(long)]
    pub index: PathBuf,
    /// Passages per query.
    #[arg(short, long, default_value_t = 5)]
    pub k: usize,
    /// Print JSON (one array of hits per query).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub search: SearchOptions,
    /// The queries.
    #[arg(required = true)]
    pub queries: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The index folder.
    #[arg(long)]
    pub index: PathBuf,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub addr: String,
    #[command(flatten)]
    pub search: SearchOptions,
    #[command(flatten)]
    pub server: ServerOptions,
}

/// Runs `host search`.
pub fn run_search(args: SearchArgs) -> Result<ExitCode> {
    let searcher = Searcher::open(&args.index, &args.search)?;
    let results = searcher.search(&args.queries, args.k)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(ExitCode::SUCCESS);
    }
    for (query, hits) in args.queries.iter().zip(&results) {
        println!("query: {query}");
        let mut table = Table::new();
        table
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(vec!["#", "score", "id", "title", "text"]);
        for (rank, hit) in hits.iter().enumerate() {
            let text: String = if hit.text.chars().count() > 160 {
                format!("{}…", hit.text.chars().take(160).collect::<String>())
            } else {
                hit.text.clone()
            };
            table.add_row(vec![
                (rank + 1).to_string(),
                format!("{:.4}", hit.score),
                hit.id.clone(),
                hit.title.clone(),
                text,
            ]);
        }
        println!("{table}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `host serve` until Ctrl-C.
pub fn run_serve(args: ServeArgs) -> Result<ExitCode> {
    let searcher = Searcher::open(&args.index, &args.search)?;
    let mode = searcher.mode_name();
    let passages = searcher.index().meta()?.passages;
    let app = router(searcher, args.server);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let address = listener.local_addr()?;
        println!(
            "listening on http://{address} ({passages} passages, {mode} search): POST /retrieve, /search, /batch_search; GET /health"
        );
        use std::io::Write;
        std::io::stdout().flush().ok();
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the server failed")
    })?;
    Ok(ExitCode::SUCCESS)
}
