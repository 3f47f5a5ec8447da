//! Retrieval benchmark, our side (host/benches/retrieval_speed.sh runs it next to
//! sentence-transformers and faiss-cpu on the same inputs):
//!
//! 1. embeds the first `--n` passages of `--corpus` with `--embedder` (passages/s) and `--q`
//!    questions of `--questions` (FlashRAG QA JSONL) as queries;
//! 2. writes texts, queries and both embedding matrices to `--work` for the peers;
//! 3. builds our index from those vectors (LMDB insert + arroy forest) and measures, for exact
//!    search, the int8 scan with exact re-rank, and ANN at several `search_k`: latency p50/p99 (one query per call), queries/s,
//!    batched queries/s, recall@k against exact, disk size;
//! 4. repeats build and query timing on growing prefixes (`--scaling`) to show how costs grow.
//!
//! Prints one JSON line on stdout (progress on stderr).
//!
//!     cargo bench --bench retrieval_speed -- --embedder DIR --corpus FILE --questions FILE \
//!         --work DIR [--n 12324] [--q 500] [--k 10] [--scaling 1000,3000,6000]

use anyhow::{Context, Result};
use research_host::data::corpus::{CorpusReader, OnBadRecord};
use research_host::retrieval::embedder::{Embedder, Embeddings, SettingsOverrides};
use research_host::retrieval::index::{Index, IndexState};
use research_host::retrieval::search::{SearchMode, SearchOptions, Searcher};
use serde_json::{Value, json};
use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The same allocator as the `host` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn number(name: &str, default: usize) -> Result<usize> {
    arg(name).map_or(Ok(default), |v| {
        v.parse().with_context(|| format!("{name} {v}"))
    })
}

/// ANN settings tried: arroy's default and larger `search_k`.
const SEARCH_K: [Option<usize>; 4] = [None, Some(2_000), Some(8_000), Some(20_000)];

fn main() -> Result<()> {
    research_host::memory::keep_freed_memory();
    research_host::threads::park_idle_candle_workers();
    let embedder_dir = PathBuf::from(arg("--embedder").context("--embedder DIR")?);
    let corpus = PathBuf::from(arg("--corpus").context("--corpus FILE")?);
    let questions = PathBuf::from(arg("--questions").context("--questions FILE")?);
    let work = PathBuf::from(arg("--work").context("--work DIR")?);
    let n = number("--n", usize::MAX)?;
    let q = number("--q", 500)?;
    let k = number("--k", 10)?;
    let scaling: Vec<usize> = arg("--scaling")
        .unwrap_or_else(|| "1000,3000,6000".into())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().context("--scaling"))
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(&work)?;

    let embedder = Embedder::load(
        &embedder_dir,
        &SettingsOverrides::default(),
        &candle_core::Device::Cpu,
    )?;
    let settings = embedder.identity().settings.clone();
    let records: Vec<_> = CorpusReader::open(&corpus, OnBadRecord::Stop)?
        .take(n)
        .map(|r| r.map(|(_, record)| record))
        .collect::<Result<_>>()?;
    let texts: Vec<String> = records.iter().map(|r| r.contents()).collect();
    let queries: Vec<String> = std::fs::read_to_string(&questions)?
        .lines()
        .take(q)
        .map(|line| {
            let value: Value = serde_json::from_str(line)?;
            value["question"]
                .as_str()
                .map(str::to_string)
                .context("no question")
        })
        .collect::<Result<_>>()?;
    let (n, q) = (texts.len(), queries.len());

    eprintln!("embedding {n} passages ...");
    let _ = embedder.embed_passages(&texts[..32.min(n)])?;
    let started = Instant::now();
    let passages = embedder.embed_passages(&texts)?;
    let encode_s = started.elapsed().as_secs_f64();
    let tokens: usize = embedder.token_counts(&texts, false)?.iter().sum();
    let started = Instant::now();
    let query_vectors = embedder.embed_queries(&queries)?;
    let query_encode_s = started.elapsed().as_secs_f64();
    let mut single_query_ms = Vec::with_capacity(q.min(100));
    for query in queries.iter().take(100) {
        let started = Instant::now();
        embedder.embed_queries(std::slice::from_ref(query))?;
        single_query_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    write_inputs(
        &work,
        &texts,
        &queries,
        &passages,
        &query_vectors,
        settings.max_length,
    )?;

    eprintln!("building the index of {n} passages ...");
    let (searchers, build) = build_index(&work.join("index"), &embedder_dir, &records, &passages)?;
    let exact = &searchers.0;
    let truth = exact.search_vectors(&query_vectors, k)?;
    let mut modes = serde_json::Map::new();
    modes.insert("exact".into(), measure(exact, &query_vectors, k, &truth)?);
    let scan = open(&work.join("index"), SearchMode::Scan, None)?;
    modes.insert("scan".into(), measure(&scan, &query_vectors, k, &truth)?);
    drop(scan);
    for search_k in SEARCH_K {
        let ann = open(&work.join("index"), SearchMode::Ann, search_k)?;
        let name = search_k.map_or("ann_default".to_string(), |s| format!("ann_search_k_{s}"));
        modes.insert(name, measure(&ann, &query_vectors, k, &truth)?);
    }

    let mut growth = Vec::new();
    for &size in scaling.iter().filter(|&&s| s < n) {
        eprintln!("scaling: {size} passages ...");
        let dir = work.join(format!("index-{size}"));
        let sub = Embeddings {
            dims: passages.dims,
            data: passages.data[..size * passages.dims].to_vec(),
        };
        let (searchers, build) = build_index(&dir, &embedder_dir, &records[..size], &sub)?;
        let truth = searchers.0.search_vectors(&query_vectors, k)?;
        let scan = open(&dir, SearchMode::Scan, None)?;
        growth.push(json!({
            "n": size,
            "build": build,
            "exact": measure(&searchers.0, &query_vectors, k, &truth)?,
            "scan": measure(&scan, &query_vectors, k, &truth)?,
            "ann_default": measure(&searchers.1, &query_vectors, k, &truth)?,
        }));
        drop((searchers, scan));
        std::fs::remove_dir_all(&dir).ok();
    }
    growth.push(
        json!({"n": n, "build": build, "exact": modes["exact"], "scan": modes["scan"],
                       "ann_default": modes["ann_default"]}),
    );

    let report = json!({
        "runtime": "research-host (candle BERT + heed/arroy)",
        "n": n, "q": q, "k": k, "dim": passages.dims,
        "passages_per_s": n as f64 / encode_s,
        "passage_tokens_mean": tokens as f64 / n as f64,
        "queries_per_s_embedding": q as f64 / query_encode_s,
        "query_embed_p50_ms": percentile(&mut single_query_ms, 0.5),
        "build": build,
        "modes": modes,
        "growth": growth,
    });
    println!("{report}");
    Ok(())
}

/// Writes the peers' inputs (see host/benches/peers_retrieval.py).
fn write_inputs(
    work: &Path,
    texts: &[String],
    queries: &[String],
    passages: &Embeddings,
    query_vectors: &Embeddings,
    max_length: usize,
) -> Result<()> {
    let strings = |path: PathBuf, items: &[String]| -> Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for item in items {
            writeln!(out, "{}", serde_json::to_string(item)?)?;
        }
        Ok(())
    };
    strings(work.join("texts.jsonl"), texts)?;
    strings(work.join("queries.jsonl"), queries)?;
    let floats = |path: PathBuf, e: &Embeddings| -> Result<()> {
        let bytes: Vec<u8> = e.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        Ok(std::fs::write(path, bytes)?)
    };
    floats(work.join("passages.f32"), passages)?;
    floats(work.join("queries.f32"), query_vectors)?;
    let meta = json!({"n": texts.len(), "q": queries.len(), "dim": passages.dims,
                      "max_length": max_length, "batch_size": research_host::retrieval::embedder::DEFAULT_BATCH_SIZE});
    std::fs::write(work.join("meta.json"), meta.to_string())?;
    Ok(())
}

/// Builds an index from precomputed vectors; returns (exact, default ANN) searchers and timings.
fn build_index(
    dir: &Path,
    embedder_dir: &Path,
    records: &[research_host::data::corpus::CorpusRecord],
    vectors: &Embeddings,
) -> Result<((Searcher, Searcher), Value)> {
    std::fs::remove_dir_all(dir).ok();
    let embedder = Embedder::load(
        embedder_dir,
        &SettingsOverrides::default(),
        &candle_core::Device::Cpu,
    )?;
    let index = Index::create(
        dir,
        embedder.identity().clone(),
        embedder_dir.to_path_buf(),
        None,
        0,
    )?;
    index.begin(IndexState::Building, Path::new("benchmark"))?;
    let started = Instant::now();
    for (chunk, start) in records.chunks(4096).zip((0..).step_by(4096)) {
        let rows = Embeddings {
            dims: vectors.dims,
            data: vectors.data[start * vectors.dims..(start + chunk.len()) * vectors.dims].to_vec(),
        };
        index.add_batch(chunk, &rows, 0, 0)?;
    }
    let insert_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let meta = index.finish(|_| {})?;
    let forest_s = started.elapsed().as_secs_f64();
    let disk = index.disk_bytes();
    drop(index);
    let build = json!({"insert_s": insert_s, "forest_s": forest_s, "build_s": insert_s + forest_s,
                       "trees": meta.built_trees, "disk_bytes": disk});
    Ok((
        (
            open(dir, SearchMode::Exact, None)?,
            open(dir, SearchMode::Ann, None)?,
        ),
        build,
    ))
}

fn open(dir: &Path, mode: SearchMode, search_k: Option<usize>) -> Result<Searcher> {
    Searcher::open(
        dir,
        &SearchOptions {
            mode,
            search_k: search_k.and_then(NonZeroUsize::new),
            ..SearchOptions::default()
        },
    )
}

/// Timed runs of the batched search (the best counts).
const BATCH_RUNS: usize = 5;

/// Latency of one query per call, batched throughput and recall@k against `truth`.
fn measure(
    searcher: &Searcher,
    queries: &Embeddings,
    k: usize,
    truth: &[Vec<(u32, f32)>],
) -> Result<Value> {
    let q = queries.len();
    let one = |i: usize| Embeddings {
        dims: queries.dims,
        data: queries.row(i).to_vec(),
    };
    searcher.search_vectors(&one(0), k)?;
    let mut latencies = Vec::with_capacity(q);
    let mut found = Vec::with_capacity(q);
    let started = Instant::now();
    for i in 0..q {
        let query = one(i);
        let t = Instant::now();
        found.push(searcher.search_vectors(&query, k)?.remove(0));
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let loop_s = started.elapsed().as_secs_f64();
    // Batched: all queries in one call, best of BATCH_RUNS (one call takes ~0.1 s, too short
    // to time once on a shared machine); the peers' script does the same.
    let mut batch_s = f64::MAX;
    for _ in 0..BATCH_RUNS {
        let started = Instant::now();
        searcher.search_vectors(queries, k)?;
        batch_s = batch_s.min(started.elapsed().as_secs_f64());
    }
    let recall = found
        .iter()
        .zip(truth)
        .map(|(got, want)| {
            let want: std::collections::HashSet<u32> = want.iter().map(|m| m.0).collect();
            got.iter().filter(|m| want.contains(&m.0)).count() as f64 / want.len().max(1) as f64
        })
        .sum::<f64>()
        / q.max(1) as f64;
    Ok(json!({
        "p50_ms": percentile(&mut latencies, 0.5),
        "p99_ms": percentile(&mut latencies, 0.99),
        "qps": q as f64 / loop_s,
        "batch_qps": q as f64 / batch_s,
        "recall_at_k": recall,
    }))
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}
