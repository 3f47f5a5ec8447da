//! Retrieval end to end on a small corpus with a tiny random embedder: ingest, build, search
//! (exact, scan and ANN), embedder checks, incremental add, bad corpus lines, and a build killed
//! mid-way then resumed.

use crate::common;

use common::{corpus_slice, tiny_embedder, write_test_corpus};
use research_host::data::corpus::OnBadRecord;
use research_host::retrieval::embedder::{Embedder, SettingsOverrides};
use research_host::retrieval::index::{Index, IndexState};
use research_host::retrieval::ingest::{IngestOptions, ingest};
use research_host::retrieval::search::{SearchMode, SearchOptions, Searcher};
use std::num::NonZeroUsize;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn embedder(seed: u64) -> Embedder {
    Embedder::load(
        &tiny_embedder(seed),
        &SettingsOverrides::default(),
        &candle_core::Device::Cpu,
    )
    .expect("tiny embedder loads")
}

fn quiet() -> IngestOptions {
    IngestOptions {
        progress: false,
        ..IngestOptions::default()
    }
}

/// Builds an index of `corpus` in `out` with the seed-0 tiny embedder.
fn build(corpus: &Path, out: &Path, options: &IngestOptions) -> Index {
    let embedder = embedder(0);
    let index = Index::create(out, embedder.identity().clone(), tiny_embedder(0), None, 7)
        .expect("index created");
    ingest(&index, &embedder, corpus, IndexState::Building, options).expect("ingest");
    index
}

fn exact() -> SearchOptions {
    SearchOptions {
        mode: SearchMode::Exact,
        ..SearchOptions::default()
    }
}

/// The first `n` corpus records' contents.
fn contents(corpus: &Path, n: usize) -> Vec<(String, String)> {
    std::fs::read_to_string(corpus)
        .unwrap()
        .lines()
        .take(n)
        .map(|line| {
            let record = research_host::data::corpus::parse_record(line).unwrap();
            (record.id.clone(), record.contents())
        })
        .collect()
}

#[test]
fn a_passage_searched_by_its_own_text_comes_first_exact_and_ann() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_test_corpus(dir.path(), "corpus.jsonl", 150);
    let index = build(&corpus, &dir.path().join("index"), &quiet());
    let meta = index.meta().unwrap();
    assert_eq!(meta.state, IndexState::Complete);
    assert_eq!(meta.passages, 150);
    assert!(meta.built_trees > 0);
    drop(index);

    let probes = contents(&corpus, 20);
    let queries: Vec<&str> = probes.iter().map(|(_, c)| c.as_str()).collect();
    for options in [
        exact(),
        SearchOptions {
            mode: SearchMode::Scan,
            ..SearchOptions::default()
        },
        SearchOptions {
            mode: SearchMode::Ann,
            search_k: NonZeroUsize::new(100_000),
            ..SearchOptions::default()
        },
    ] {
        let searcher = Searcher::open(&dir.path().join("index"), &options).unwrap();
        let results = searcher.search(&queries, 5).unwrap();
        for ((id, _), hits) in probes.iter().zip(&results) {
            assert_eq!(hits.len(), 5);
            assert_eq!(&hits[0].id, id, "{}", searcher.mode_name());
            assert!(hits[0].score > 0.9999, "{}", hits[0].score);
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }
}

#[test]
fn exact_scores_are_the_cosines_of_the_embedder_vectors_and_ann_agrees_at_high_search_k() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_test_corpus(dir.path(), "corpus.jsonl", 120);
    drop(build(&corpus, &dir.path().join("index"), &quiet()));
    let all = contents(&corpus, 120);
    let embedder = embedder(0);
    let passages: Vec<&str> = all.iter().map(|(_, c)| c.as_str()).collect();
    let vectors = embedder.embed_passages(&passages).unwrap();
    let query = "a river through the capital city";
    let query_vector = embedder.embed_queries(&[query]).unwrap();
    let norm: f32 = query_vector
        .row(0)
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "vectors are normalised: {norm}");
    let mut expected: Vec<(f32, &str)> = (0..vectors.len())
        .map(|i| {
            let dot: f32 = vectors
                .row(i)
                .iter()
                .zip(query_vector.row(0))
                .map(|(a, b)| a * b)
                .sum();
            (dot, all[i].0.as_str())
        })
        .collect();
    expected.sort_by(|a, b| b.0.total_cmp(&a.0));

    let searcher = Searcher::open(&dir.path().join("index"), &exact()).unwrap();
    let hits = searcher.search(&[query], 10).unwrap().remove(0);
    for (hit, (score, id)) in hits.iter().zip(&expected) {
        assert_eq!(&hit.id, id);
        assert!((hit.score - score).abs() < 1e-5, "{} vs {score}", hit.score);
    }
    drop(searcher);
    let ann = Searcher::open(
        &dir.path().join("index"),
        &SearchOptions {
            mode: SearchMode::Ann,
            search_k: NonZeroUsize::new(100_000),
            ..SearchOptions::default()
        },
    )
    .unwrap();
    assert_eq!(ann.mode_name(), "ann");
    let ann_hits = ann.search(&[query], 10).unwrap().remove(0);
    let ids = |hits: &[research_host::retrieval::search::Hit]| -> Vec<String> {
        hits.iter().map(|h| h.id.clone()).collect()
    };
    assert_eq!(
        ids(&ann_hits),
        ids(&hits),
        "ANN inspecting every node is exact"
    );
    for (a, e) in ann_hits.iter().zip(&hits) {
        assert!((a.score - e.score).abs() < 1e-4);
    }
}

#[test]
fn auto_mode_scans_small_indexes_and_uses_ann_above_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_test_corpus(dir.path(), "corpus.jsonl", 40);
    drop(build(&corpus, &dir.path().join("index"), &quiet()));
    let auto = Searcher::open(&dir.path().join("index"), &SearchOptions::default()).unwrap();
    assert_eq!(auto.mode_name(), "scan");
    drop(auto);
    let limited = SearchOptions {
        exact_limit: 10,
        ..SearchOptions::default()
    };
    assert_eq!(
        Searcher::open(&dir.path().join("index"), &limited)
            .unwrap()
            .mode_name(),
        "ann"
    );
}

#[test]
fn an_index_refuses_a_different_embedder_or_different_settings() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_test_corpus(dir.path(), "corpus.jsonl", 30);
    let index = build(&corpus, &dir.path().join("index"), &quiet());

    let other = embedder(1);
    let error = index
        .check_embedder(other.identity())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("different embedder") && error.contains("weights differ"),
        "{error}"
    );
    let error = ingest(&index, &other, &corpus, IndexState::Adding, &quiet())
        .unwrap_err()
        .to_string();
    assert!(error.contains("different embedder"), "{error}");
    drop(index);

    let options = SearchOptions {
        embedder: Some(tiny_embedder(1)),
        ..exact()
    };
    let error = Searcher::open(&dir.path().join("index"), &options)
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("weights differ"), "{error}");

    // Same weights, other settings.
    let shorter = Embedder::load(
        &tiny_embedder(0),
        &SettingsOverrides {
            max_length: Some(64),
            query_prefix: Some("query: ".into()),
            ..SettingsOverrides::default()
        },
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let index = Index::open(&dir.path().join("index")).unwrap();
    let error = index
        .check_embedder(shorter.identity())
        .unwrap_err()
        .to_string();
    assert!(error.contains("max length 128 vs 64"), "{error}");
    assert!(error.contains("query prefix"), "{error}");
    assert!(!error.contains("weights differ"), "{error}");
}

#[test]
fn incremental_add_stores_only_new_passages_and_makes_them_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_test_corpus(dir.path(), "corpus.jsonl", 90);
    let first = corpus_slice(&corpus, 0..60, dir.path(), "first.jsonl");
    let second = corpus_slice(&corpus, 40..90, dir.path(), "second.jsonl");
    let index = build(&first, &dir.path().join("index"), &quiet());
    let report = ingest(&index, &embedder(0), &second, IndexState::Adding, &quiet()).unwrap();
    assert_eq!(report.added, 30);
    assert_eq!(report.already_present, 20);
    let meta = index.meta().unwrap();
    assert_eq!(meta.passages, 90);
    assert_eq!(meta.state, IndexState::Complete);
    assert_eq!(meta.sources.len(), 2);
    assert_eq!(
        (meta.sources[1].added, meta.sources[1].already_present),
        (30, 20)
    );
    drop(index);

    let searcher = Searcher::open(&dir.path().join("index"), &exact()).unwrap();
    let all = contents(&corpus, 90);
    let queries: Vec<&str> = all[60..].iter().map(|(_, c)| c.as_str()).collect();
    for ((id, _), hits) in all[60..].iter().zip(searcher.search(&queries, 1).unwrap()) {
        assert_eq!(&hits[0].id, id);
    }
}

#[test]
fn bad_corpus_lines_stop_with_file_and_line_or_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_test_corpus(dir.path(), "good.jsonl", 6);
    let mut lines: Vec<String> = std::fs::read_to_string(&corpus)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.insert(2, "{\"id\": \"broken\", \"contents\": ".to_string());
    lines.insert(4, String::new());
    lines.insert(5, "{\"contents\": \"no id\"}".to_string());
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n")).unwrap();

    let embedder = embedder(0);
    let index = Index::create(
        &dir.path().join("stop"),
        embedder.identity().clone(),
        tiny_embedder(0),
        None,
        0,
    )
    .unwrap();
    let error = ingest(&index, &embedder, &bad, IndexState::Building, &quiet()).unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("bad.jsonl:3") && message.contains("not valid JSON"),
        "{message}"
    );
    assert_eq!(
        index.meta().unwrap().passages,
        0,
        "nothing of the failed batch is stored"
    );
    assert_eq!(index.meta().unwrap().state, IndexState::Building);

    let index = Index::create(
        &dir.path().join("skip"),
        embedder.identity().clone(),
        tiny_embedder(0),
        None,
        0,
    )
    .unwrap();
    let options = IngestOptions {
        on_bad_record: OnBadRecord::Skip,
        ..quiet()
    };
    let report = ingest(&index, &embedder, &bad, IndexState::Building, &options).unwrap();
    assert_eq!((report.added, report.skipped), (6, 2));
    let where_: Vec<u64> = report.skipped_examples.iter().map(|b| b.line).collect();
    assert_eq!(where_, vec![3, 6], "the blank line 5 is not a record");
    assert!(report.skipped_examples[1].reason.contains("missing `id`"));
    assert_eq!(index.meta().unwrap().sources[0].skipped, 2);
}

#[test]
fn a_build_killed_mid_way_is_refused_for_search_then_resumed_to_the_same_index() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_test_corpus(dir.path(), "corpus.jsonl", 1200);
    let out = dir.path().join("index");
    let args = |out: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_host"));
        command.args([
            "index",
            "build",
            "--quiet",
            "--commit-every",
            "16",
            "--seed",
            "7",
        ]);
        command.arg("--corpus").arg(&corpus);
        command.arg("--embedder").arg(tiny_embedder(0));
        command.arg("--out").arg(out);
        command
    };
    let mut child = args(&out).spawn().expect("host starts");
    let started = Instant::now();
    let mut stored = 0;
    while stored < 64 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the build made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
        if let Ok(index) = Index::open(&out) {
            stored = index.meta().map(|m| m.passages).unwrap_or(0);
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let index = Index::open(&out).expect("a killed build leaves a readable index");
    let meta = index.meta().unwrap();
    assert_eq!(meta.state, IndexState::Building, "killed before the end");
    assert!(
        meta.passages < 1200 && meta.passages.is_multiple_of(16),
        "{}",
        meta.passages
    );
    drop(index);
    let error = Searcher::open(&out, &exact())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("interrupted build") && error.contains("resume"),
        "{error}"
    );

    let resumed = args(&out).output().expect("host runs");
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming"));
    let complete = Index::open(&out).unwrap().meta().unwrap();
    assert_eq!(complete.state, IndexState::Complete);
    assert_eq!(complete.passages, 1200);
    let source = &complete.sources[0];
    assert_eq!(source.added, 1200);

    let fresh = dir.path().join("fresh");
    assert!(args(&fresh).output().unwrap().status.success());
    let probes = contents(&corpus, 1200);
    let queries: Vec<&str> = probes.iter().step_by(97).map(|(_, c)| c.as_str()).collect();
    let a = Searcher::open(&out, &exact())
        .unwrap()
        .search(&queries, 5)
        .unwrap();
    let b = Searcher::open(&fresh, &exact())
        .unwrap()
        .search(&queries, 5)
        .unwrap();
    assert_eq!(a, b, "resumed and uninterrupted builds answer alike");

    let again = args(&out).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("host index add"));
}

#[test]
fn searching_a_folder_that_is_not_an_index_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let error = Searcher::open(dir.path(), &exact())
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("not an index") && error.contains("host index build"),
        "{error}"
    );
}

#[test]
fn the_local_search_plugin_reads_the_index_through_the_retriever_interface() {
    use research_host::plugins::{HostOptions, LoadedPlugin, PluginHost, discover};
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_test_corpus(dir.path(), "corpus.jsonl", 60);
    drop(build(&corpus, &dir.path().join("index"), &quiet()));
    let searcher =
        std::sync::Arc::new(Searcher::open(&dir.path().join("index"), &exact()).unwrap());
    let mut host = PluginHost::new(&HostOptions {
        cache_dir: Some(common::test_cache_dir()),
        fuel: false,
    })
    .unwrap();
    host.set_retriever(searcher.clone());
    let plugin = discover(&common::plugins_dir())
        .unwrap()
        .into_iter()
        .find(|p| p.manifest.name == "local-search")
        .unwrap();
    let Ok((_, LoadedPlugin::Search(plugin))) = host.load(&plugin, &Default::default()) else {
        panic!("local-search loads");
    };
    let probes = contents(&corpus, 3);
    let queries: Vec<String> = probes.iter().map(|(_, c)| c.clone()).collect();
    let through_plugin = plugin.search(&queries, 4).unwrap();
    let direct = searcher.search(&queries, 4).unwrap();
    for (passages, hits) in through_plugin.iter().zip(&direct) {
        let a: Vec<(&str, &str)> = passages
            .iter()
            .map(|p| (p.id.as_str(), p.text.as_str()))
            .collect();
        let b: Vec<(&str, &str)> = hits
            .iter()
            .map(|h| (h.id.as_str(), h.text.as_str()))
            .collect();
        assert_eq!(a, b);
    }
    assert_eq!(through_plugin[0][0].id, probes[0].0);
}

#[test]
fn the_fast_bert_encoder_matches_candles_stock_bert() {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::{BertModel, Config};
    use research_host::retrieval::bert::BertEncoder;
    let dir = tiny_embedder(3);
    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let weights = [dir.join("model.safetensors")];
    let vb = || unsafe {
        VarBuilder::from_mmaped_safetensors(&weights, DType::F32, &Device::Cpu).unwrap()
    };
    let stock = BertModel::load(vb(), &config).unwrap();
    let ours = BertEncoder::load(vb(), &config).unwrap();
    // Two rows, the second padded after 5 tokens.
    let ids = Tensor::new(
        &[
            [2u32, 40, 41, 42, 43, 44, 45, 3],
            [2, 50, 51, 52, 3, 0, 0, 0],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let mask = Tensor::new(&[[1f32; 8], [1., 1., 1., 1., 1., 0., 0., 0.]], &Device::Cpu).unwrap();
    let expected = stock
        .forward(&ids, &ids.zeros_like().unwrap(), Some(&mask))
        .unwrap();
    let got = ours.forward(&ids, &mask).unwrap();
    // Padded positions carry no meaning; compare the real ones.
    let real = |t: &Tensor| {
        Tensor::cat(
            &[
                t.get(0).unwrap(),
                t.get(1).unwrap().narrow(0, 0, 5).unwrap(),
            ],
            0,
        )
        .unwrap()
    };
    let difference = common::max_abs_diff(&real(&expected), &real(&got));
    assert!(difference < 1e-4, "{difference}");
}
