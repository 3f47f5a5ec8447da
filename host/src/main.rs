//! The `host` binary: a thin clap front over the `research_host` library.

use clap::Parser;
use research_host::cli::{Cli, run};

/// Model and embedder maths allocate and free large tensors at a high rate; mimalloc keeps
/// those pages mapped instead of faulting fresh ones in for every allocation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    research_host::memory::keep_freed_memory();
    research_host::threads::park_idle_candle_workers();
    let cli = Cli::parse();
    research_host::cli::init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
