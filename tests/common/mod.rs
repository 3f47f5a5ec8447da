//! Helpers shared by the end-to-end tests: paths, one plugin host per test binary, and the
//! plugin folders the tests build on the fly.
#![allow(dead_code)]

pub mod gguf;

use research_host::plugins::{
    DiscoveredPlugin, HostOptions, LoadedPlugin, ParserPlugin, PluginHost, PromptPlugin,
    RewardPlugin, SearchPlugin, discover, guest_build::build_plugin_crate,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The shipped plugins folder, its plugins built (once per test binary).
pub fn plugins_dir() -> PathBuf {
    shipped();
    shipped_root()
}

fn shipped_root() -> PathBuf {
    repo_root().join("plugins")
}

/// Where tests cache compiled components (inside target/, so `cargo clean` clears it).
pub fn test_cache_dir() -> PathBuf {
    repo_root()
        .join("target")
        .join("test-cache")
        .join("components")
}

/// One plugin host per test binary.
pub fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| {
        PluginHost::new(&HostOptions {
            cache_dir: Some(test_cache_dir()),
            fuel: false,
        })
        .expect("plugin host starts")
    })
}

/// The shipped plugins, built once per test binary through the explicit build step (`host
/// plugins build`'s library call: loading never builds). Cargo finds them fresh after the
/// first binary, so later ones pay a no-op cargo run.
fn shipped() -> &'static Vec<DiscoveredPlugin> {
    static SHIPPED: OnceLock<Vec<DiscoveredPlugin>> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let plugins = discover(&shipped_root()).expect("shipped plugins are discoverable");
        for plugin in &plugins {
            research_host::plugins::built::build(plugin, None).unwrap_or_else(|e| panic!("{e:#}"));
        }
        plugins
    })
}

/// Loads a shipped plugin by name, with config overrides.
pub fn load_shipped(name: &str, config: &[(&str, &str)]) -> LoadedPlugin {
    let plugin = shipped()
        .iter()
        .find(|p| p.manifest.name == name)
        .unwrap_or_else(|| panic!("no shipped plugin named {name}"));
    let overrides: BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    host()
        .load(plugin, &overrides)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .1
}

pub fn reward(name: &str, config: &[(&str, &str)]) -> RewardPlugin {
    match load_shipped(name, config) {
        LoadedPlugin::Reward(p) => p,
        _ => panic!("{name} is not a reward plugin"),
    }
}

pub fn prompt(name: &str, config: &[(&str, &str)]) -> PromptPlugin {
    match load_shipped(name, config) {
        LoadedPlugin::Prompt(p) => p,
        _ => panic!("{name} is not a prompt plugin"),
    }
}

pub fn parser(name: &str, config: &[(&str, &str)]) -> ParserPlugin {
    match load_shipped(name, config) {
        LoadedPlugin::Parser(p) => p,
        _ => panic!("{name} is not a parser plugin"),
    }
}

pub fn search(name: &str, config: &[(&str, &str)]) -> SearchPlugin {
    match load_shipped(name, config) {
        LoadedPlugin::Search(p) => p,
        _ => panic!("{name} is not a search plugin"),
    }
}

/// The hostile fixture component, built once (sharing the shipped plugins' target folder).
pub fn hostile_wasm() -> &'static PathBuf {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let manifest = repo_root().join("tests/fixtures/hostile/Cargo.toml");
        let target = plugins_dir().join("target");
        build_plugin_crate(&manifest, Some(&target)).unwrap_or_else(|e| panic!("{e:#}"))
    })
}

/// The component of a hostile fixture of `kind` (parser, search, prompt or judge; see
/// tests/fixtures/hostile-kinds), built once per kind (sharing the shipped plugins' target).
pub fn hostile_kind_wasm(kind: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(kind.to_string())
        .or_insert_with(|| {
            let manifest = repo_root()
                .join("tests/fixtures/hostile-kinds")
                .join(kind)
                .join("Cargo.toml");
            let target = plugins_dir().join("target");
            build_plugin_crate(&manifest, Some(&target)).unwrap_or_else(|e| panic!("{e:#}"))
        })
        .clone()
}

/// Writes a reward plugin folder `dir/name` whose manifest points at a prebuilt component.
pub fn write_prebuilt_plugin(dir: &Path, name: &str, wasm: &Path, extra_toml: &str) -> PathBuf {
    write_prebuilt_plugin_of_kind(dir, name, "reward", wasm, extra_toml)
}

/// Writes a plugin folder `dir/name` of `kind` whose manifest points at a prebuilt component.
pub fn write_prebuilt_plugin_of_kind(
    dir: &Path,
    name: &str,
    kind: &str,
    wasm: &Path,
    extra_toml: &str,
) -> PathBuf {
    let plugin_dir = dir.join(name);
    std::fs::create_dir_all(&plugin_dir).expect("create plugin folder");
    let manifest = format!(
        "name = \"{name}\"\nkind = \"{kind}\"\nversion = \"0.0.1\"\nwasm = \"{}\"\n{extra_toml}\n",
        wasm.display()
    );
    std::fs::write(plugin_dir.join("plugin.toml"), manifest).expect("write plugin.toml");
    plugin_dir
}

/// One case of a reward conformance file.
#[derive(Debug, serde::Deserialize)]
pub struct RewardCase {
    pub id: String,
    pub question: String,
    pub golden_answers: Vec<String>,
    pub response: String,
    pub finish: String,
    pub expected_total: f64,
}

/// Reads `tests/data/<name>.cases.jsonl`.
pub fn reward_cases(name: &str) -> Vec<RewardCase> {
    let path = repo_root()
        .join("tests/data")
        .join(format!("{name}.cases.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// Largest absolute element-wise difference of two f32 tensors of the same shape.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensors of the same shape")
}

/// The Wikipedia passages of the benchmark data folder (docs/data.md), when present:
/// `$RESEARCH_HOST_DATA`, else the folder a development machine keeps beside the checkout.
pub fn wiki_corpus() -> Option<PathBuf> {
    let folder = std::env::var_os("RESEARCH_HOST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"));
    let path = folder.join("wiki-vital-passages.jsonl");
    path.is_file().then_some(path)
}

/// Words for the synthetic corpus used when the benchmark data folder is absent.
const SYNTHETIC_WORDS: [&str; 48] = [
    "river",
    "mountain",
    "city",
    "capital",
    "king",
    "queen",
    "war",
    "music",
    "painter",
    "novel",
    "science",
    "physics",
    "chemistry",
    "planet",
    "ocean",
    "island",
    "empire",
    "language",
    "poet",
    "bridge",
    "church",
    "desert",
    "forest",
    "festival",
    "railway",
    "harbour",
    "university",
    "museum",
    "treaty",
    "battle",
    "dynasty",
    "composer",
    "theatre",
    "medicine",
    "engine",
    "electricity",
    "football",
    "olympic",
    "climate",
    "volcano",
    "glacier",
    "republic",
    "senate",
    "philosopher",
    "mathematics",
    "astronomy",
    "cathedral",
    "village",
];

/// A corpus of `n` passages in FlashRAG form written to `dir/name`: the first `n` lines of the
/// benchmark data folder's Wikipedia passages, or deterministic synthetic passages when it is
/// absent. It says
/// which on stderr (shown with a failing test, or with `--nocapture`).
pub fn write_test_corpus(dir: &Path, name: &str, n: usize) -> PathBuf {
    use std::io::{BufRead, Write};
    let path = dir.join(name);
    let mut out = std::fs::File::create(&path).expect("corpus file");
    let wiki = wiki_corpus();
    match &wiki {
        Some(wiki) => eprintln!(
            "test corpus {name}: the first {n} passages of {} (Wikipedia)",
            wiki.display()
        ),
        None => eprintln!(
            "test corpus {name}: {n} synthetic passages (no benchmark data folder, docs/data.md)"
        ),
    }
    if let Some(wiki) = wiki {
        let reader = std::io::BufReader::new(std::fs::File::open(wiki).expect("wiki corpus"));
        for line in reader.lines().take(n) {
            writeln!(out, "{}", line.expect("corpus line")).expect("write");
        }
    } else {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % m as u64) as usize
        };
        for i in 0..n {
            let title = format!(
                "{} {} {i}",
                SYNTHETIC_WORDS[next(48)],
                SYNTHETIC_WORDS[next(48)]
            );
            let words: Vec<&str> = (0..20 + next(30))
                .map(|_| SYNTHETIC_WORDS[next(48)])
                .collect();
            let record = serde_json::json!({
                "id": i.to_string(),
                "contents": format!("\"{title}\"\nThe {title} is a {}.", words.join(" ")),
            });
            writeln!(out, "{record}").expect("write");
        }
    }
    path
}

/// Lines `range` of a corpus file, written to `dir/name`.
pub fn corpus_slice(
    source: &Path,
    range: std::ops::Range<usize>,
    dir: &Path,
    name: &str,
) -> PathBuf {
    let text = std::fs::read_to_string(source).expect("corpus");
    let lines: Vec<&str> = text.lines().skip(range.start).take(range.len()).collect();
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write slice");
    path
}

/// A tiny random BERT embedder (seed `seed`), created once per test binary and seed.
pub fn tiny_embedder(seed: u64) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let root = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let out = root.path().join(format!("tiny-bert-{seed}"));
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !out.join("config.json").is_file() {
        research_host::retrieval::tiny::init_tiny_bert(
            research_host::retrieval::tiny::TINY_BERT,
            seed,
            None,
            &out,
        )
        .expect("tiny embedder");
    }
    out
}

/// The shipped http-search component, built once.
pub fn http_search_wasm() -> &'static PathBuf {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| shipped_wasm("http-search"))
}

/// The component file of a shipped plugin (built on first use).
pub fn shipped_wasm(name: &str) -> PathBuf {
    let plugin = shipped()
        .iter()
        .find(|p| p.manifest.name == name)
        .unwrap_or_else(|| panic!("no shipped plugin named {name}"));
    let (info, _) = host()
        .load(plugin, &BTreeMap::new())
        .unwrap_or_else(|e| panic!("{e:#}"));
    info.component
}

/// Loads http-search from a temp folder with the given capabilities and config.
pub fn load_http_search(extra_toml: &str) -> Result<SearchPlugin, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    write_prebuilt_plugin_of_kind(
        dir.path(),
        "http-search-test",
        "search",
        http_search_wasm(),
        extra_toml,
    );
    let plugins = discover(dir.path()).expect("discover");
    match host().load(&plugins[0], &BTreeMap::new()) {
        Ok((_, LoadedPlugin::Search(plugin))) => Ok(plugin),
        Ok(_) => Err("not a search plugin".into()),
        Err(error) => Err(format!("{error:#}")),
    }
}

/// A `host` command run from the repository root with the tests' cache folder.
pub fn host_command(args: &[&str]) -> std::process::Command {
    shipped();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_host"));
    command
        .args(args)
        .current_dir(repo_root())
        .env("RESEARCH_HOST_CACHE", test_cache_dir().parent().unwrap());
    command
}

/// Runs `host ARGS`, asserts it succeeded and returns its stdout and stderr.
pub fn succeed(args: &[&str]) -> String {
    let output = host_command(args).output().expect("host runs");
    let all = output_text(&output);
    assert!(output.status.success(), "host {args:?} failed:\n{all}");
    all
}

/// Runs `host ARGS`, asserts it failed and returns its stdout and stderr.
pub fn fail(args: &[&str]) -> String {
    let output = host_command(args).output().expect("host runs");
    let all = output_text(&output);
    assert!(
        !output.status.success(),
        "host {args:?} should fail:\n{all}"
    );
    all
}

/// stdout and stderr of a finished command, together.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A tiny Llama that, whatever the question, answers greedily ` <answer> {answer} </answer>`
/// and stops (see [`chain_model`]). Lets end-to-end tests get real answers out of real
/// rollouts.
pub fn answering_model(dir: &Path, answer: &str) -> PathBuf {
    chain_model(
        dir,
        &[(
            "<|im_start|>assistant\n",
            &format!("<answer> {answer} </answer>"),
            true,
        )],
    )
}

/// A tiny Llama scripted to always search: after the chat template's generation prompt it
/// writes `<search>{query}</search>` (the ReSearch parser's stop), and after the search
/// results (` <result>…</result>`) it answers `<answer>{answer}</answer>` and stops. The
/// query's and the answer's tokens must all differ (see [`chain_model`]).
pub fn searching_model(dir: &Path, query: &str, answer: &str) -> PathBuf {
    chain_model(
        dir,
        &[
            (
                "<|im_start|>assistant\n",
                &format!("<search>{query}</search>"),
                false,
            ),
            ("</result>", &format!("<answer>{answer}</answer>"), true),
        ],
    )
}

/// A tiny Llama whose greedy continuation of the last token of each `after` text is the
/// tokens of its `text` (then EOS where asked): every layer's output projections are zero, so
/// the residual stream is the current token's embedding and the next token depends on the
/// current one only; the embeddings and the head chain the tokens. No token may lead two links.
pub fn chain_model(dir: &Path, chains: &[(&str, &str, bool)]) -> PathBuf {
    use candle_core::{DType, Device, Tensor};
    use research_host::model::tiny::{TINY, init_tiny};
    use research_host::model::{Architecture, load_model};
    init_tiny(Architecture::Llama, TINY, 9, None, dir).expect("tiny llama");
    let model = load_model(dir, DType::F32, &Device::Cpu).expect("loads");
    let tokenizer = &model.tokenizer;
    let mut links: Vec<(u32, u32)> = Vec::new();
    for (after, text, eos) in chains {
        let start = *tokenizer
            .encode(after)
            .expect("encode")
            .last()
            .expect("a token");
        let mut chain = vec![start];
        chain.extend(tokenizer.encode(text).expect("encode"));
        if *eos {
            chain.push(tokenizer.eos_ids()[0]);
        }
        links.extend(chain.windows(2).map(|pair| (pair[0], pair[1])));
    }
    let mut seen = std::collections::HashSet::new();
    assert!(
        links.iter().all(|(from, _)| seen.insert(*from)),
        "a token leads two links: {links:?}"
    );
    assert!(
        links.len() <= TINY.hidden,
        "too many links for a {}-wide model",
        TINY.hidden
    );
    drop(model);

    let weights = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).expect("weights");
    let vocab = tensors["model.embed_tokens.weight"].dims()[0];
    let hidden = TINY.hidden;
    let mut embed = vec![0f32; vocab * hidden];
    let mut head = vec![0f32; vocab * hidden];
    for (i, (from, to)) in links.iter().enumerate() {
        embed[*from as usize * hidden + i] = 1.0;
        head[*to as usize * hidden + i] = 10.0;
    }
    tensors.insert(
        "model.embed_tokens.weight".into(),
        Tensor::from_vec(embed, (vocab, hidden), &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "lm_head.weight".into(),
        Tensor::from_vec(head, (vocab, hidden), &Device::Cpu).unwrap(),
    );
    for name in tensors.keys().cloned().collect::<Vec<_>>() {
        if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
            let zeros = tensors[&name].zeros_like().unwrap();
            tensors.insert(name, zeros);
        }
    }
    candle_core::safetensors::save(&tensors, &weights).expect("save weights");
    dir.to_path_buf()
}

/// The lines of a run folder's metrics.jsonl.
pub fn run_metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("metrics line is JSON"))
        .collect()
}

/// A run's metrics without the wall-clock parts, which differ between runs.
pub fn comparable_metrics(run: &Path) -> Vec<serde_json::Value> {
    run_metrics(run)
        .into_iter()
        .map(|mut m| {
            let object = m.as_object_mut().expect("a metrics line is an object");
            object.remove("time");
            object.remove("tokens_per_s");
            m
        })
        .collect()
}
