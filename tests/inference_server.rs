//! Rollouts sampled by an inference server: a loopback stand-in that answers SGLang's,
//! vLLM's and llama.cpp's documented request shapes (read here field by field, not through the
//! client's types) by sampling from a model folder with the host's engine. `host eval` through
//! each gives the local backend's greedy tokens; `host train` has the server load every new
//! policy and resumes correctly after a failed load; failing and unreachable servers are
//! retried, then named. The stand-in is not SGLang or vLLM: those servers were not run here.

use crate::common;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use candle_core::{DType, Device};
use common::{comparable_metrics as comparable, host_command, output_text, run_metrics as metrics};
use research_host::model::{Engine, LoadedModel, SamplingParams, StopRules, load_model};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the stand-in does besides answering.
#[derive(Default)]
struct Behaviour {
    /// Generation calls answered 503 before the next one is served.
    failing_generations: AtomicUsize,
    /// Weight loads that succeed before every later one fails.
    loads_before_failure: Mutex<Option<usize>>,
    /// How SGLang answers a failed load: 400, or 200 with `success: false`.
    failed_load_status: Mutex<Option<StatusCode>>,
}

struct StandIn {
    /// The loaded model and its folder (vLLM's `root`).
    model: Mutex<(PathBuf, Option<LoadedModel>)>,
    /// Every call: (path, body).
    calls: Mutex<Vec<(String, Value)>>,
    behaviour: Behaviour,
    loads: AtomicUsize,
}

type Shared = Arc<StandIn>;

/// A running stand-in; its runtime stops when dropped.
struct Server {
    url: String,
    state: Shared,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    /// Serves `folder` (which may not exist yet: it is loaded on the first weight load).
    fn start(folder: &Path) -> Server {
        let state = Arc::new(StandIn {
            model: Mutex::new((folder.to_path_buf(), load(folder))),
            calls: Mutex::new(Vec::new()),
            behaviour: Behaviour::default(),
            loads: AtomicUsize::new(0),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = axum::Router::new()
            .route("/generate", post(sglang_generate))
            .route("/update_weights_from_disk", post(sglang_update))
            .route("/get_model_info", get(model_info))
            .route("/v1/completions", post(vllm_completions))
            .route("/v1/models", get(vllm_models))
            .route("/collective_rpc", post(vllm_rpc))
            .route("/reset_prefix_cache", post(vllm_reset))
            .route("/completion", post(llama_completion))
            .route("/health", get(model_info))
            .with_state(state.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server {
            url,
            state,
            _runtime: runtime,
        }
    }

    fn calls(&self, path: &str) -> Vec<Value> {
        self.state
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body.clone())
            .collect()
    }

    fn paths(&self) -> Vec<String> {
        let calls = self.state.calls.lock().unwrap();
        calls.iter().map(|(p, _)| p.clone()).collect()
    }
}

fn load(folder: &Path) -> Option<LoadedModel> {
    folder
        .join("config.json")
        .is_file()
        .then(|| load_model(folder, DType::F32, &Device::Cpu).expect("the stand-in loads"))
}

fn record(state: &StandIn, path: &str, body: &Value) {
    state
        .calls
        .lock()
        .unwrap()
        .push((path.to_string(), body.clone()));
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

/// The sampled ids and their log-probs: up to `max_new` tokens of `prompt`, ended by an EOS or
/// (when `stop` is given) by the token that completes a stop sequence.
fn sample(
    state: &StandIn,
    prompt: &[u32],
    max_new: usize,
    stop: &[String],
    temperature: f32,
    seed: u64,
) -> Result<(Vec<u32>, Vec<f32>), Box<Response>> {
    if state
        .behaviour
        .failing_generations
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "injected failure",
        )));
    }
    let guard = state.model.lock().unwrap();
    let Some(model) = guard.1.as_ref() else {
        return Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no model loaded",
        )));
    };
    let rules = StopRules {
        stop_sequences: stop.to_vec(),
        eos_ids: model.tokenizer.eos_ids().to_vec(),
        max_new_tokens: max_new,
    };
    let params = SamplingParams {
        temperature,
        greedy: temperature == 0.0,
        ..SamplingParams::default()
    };
    let mut engine = Engine::new(&model.policy, &model.tokenizer, params, rules);
    engine.add_prompt(prompt, 1, seed).unwrap();
    engine.run().unwrap();
    let s = &engine.sequences()[0];
    Ok((s.response().to_vec(), s.logprobs.clone()))
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("token ids")
        .iter()
        .map(|v| v.as_u64().expect("a token id") as u32)
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// SGLang `/generate`: honours the stop sequences; ids in `output_ids`, log-probs as
/// `[logprob, id, null]` triples.
async fn sglang_generate(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    record(&state, "/generate", &body);
    let p = &body["sampling_params"];
    assert_eq!(body["return_logprob"], true);
    assert_eq!(p["repetition_penalty"], 1.0);
    if p["sampling_seed"]
        .as_u64()
        .is_some_and(|seed| seed > i32::MAX as u64)
    {
        return error(StatusCode::BAD_REQUEST, "sampling_seed out of range");
    }
    let sampled = sample(
        &state,
        &ids(&body["input_ids"]),
        p["max_new_tokens"].as_u64().unwrap() as usize,
        &strings(&p["stop"]),
        p["temperature"].as_f64().unwrap() as f32,
        p["sampling_seed"].as_u64().unwrap_or(0),
    );
    match sampled {
        Ok((ids, logprobs)) => Json(json!({
            "text": "",
            "output_ids": ids,
            "meta_info": {
                "output_token_logprobs": ids.iter().zip(&logprobs)
                    .map(|(id, lp)| json!([lp, id, null])).collect::<Vec<_>>(),
                "finish_reason": {"type": "stop"},
            }
        }))
        .into_response(),
        Err(response) => *response,
    }
}

/// A weight load: the folder is read unless the behaviour says this load fails.
fn load_weights(state: &StandIn, folder: &Path) -> Result<(), String> {
    let done = state.loads.load(Ordering::SeqCst);
    if let Some(limit) = *state.behaviour.loads_before_failure.lock().unwrap()
        && done >= limit
    {
        return Err(format!("injected failure of load {}", done + 1));
    }
    let model = load(folder).ok_or_else(|| format!("no model in {}", folder.display()))?;
    state.model.lock().unwrap().1 = Some(model);
    state.loads.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

async fn sglang_update(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    record(&state, "/update_weights_from_disk", &body);
    let folder = PathBuf::from(body["model_path"].as_str().unwrap());
    match load_weights(&state, &folder) {
        Ok(()) => Json(json!({"success": true, "message": "Succeeded to update model weights."}))
            .into_response(),
        Err(message) => (
            state
                .behaviour
                .failed_load_status
                .lock()
                .unwrap()
                .unwrap_or(StatusCode::BAD_REQUEST),
            Json(json!({"success": false, "message": message})),
        )
            .into_response(),
    }
}

async fn model_info(State(state): State<Shared>) -> Response {
    let folder = state.model.lock().unwrap().0.clone();
    Json(json!({"model_path": folder, "status": "ok"})).into_response()
}

/// vLLM `/v1/completions`: answers at most 5 tokens per request (the host must ask again to
/// finish a turn); ids in `token_ids` and as `token_id:<id>` strings.
async fn vllm_completions(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    record(&state, "/v1/completions", &body);
    assert_eq!(body["model"], "stand-in");
    assert_eq!(body["return_tokens_as_token_ids"], true);
    assert_eq!(body["repetition_penalty"], 1.0);
    if body["seed"]
        .as_u64()
        .is_some_and(|seed| seed > i64::MAX as u64)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "seed must fit a signed 64-bit integer",
        );
    }
    let sampled = sample(
        &state,
        &ids(&body["prompt"]),
        (body["max_tokens"].as_u64().unwrap() as usize).min(5),
        &strings(&body["stop"]),
        body["temperature"].as_f64().unwrap() as f32,
        body["seed"].as_u64().unwrap_or(0),
    );
    match sampled {
        Ok((ids, logprobs)) => Json(json!({
            "choices": [{
                "index": 0,
                "text": "",
                "token_ids": ids,
                "logprobs": {
                    "tokens": ids.iter().map(|id| format!("token_id:{id}")).collect::<Vec<_>>(),
                    "token_logprobs": logprobs,
                },
                "finish_reason": "length",
            }]
        }))
        .into_response(),
        Err(response) => *response,
    }
}

async fn vllm_models(State(state): State<Shared>) -> Response {
    let folder = state.model.lock().unwrap().0.clone();
    Json(json!({"object": "list", "data": [{"id": "stand-in", "root": folder}]})).into_response()
}

async fn vllm_rpc(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    record(&state, "/collective_rpc", &body);
    assert_eq!(body["method"], "reload_weights");
    let folder = state.model.lock().unwrap().0.clone();
    match load_weights(&state, &folder) {
        Ok(()) => Json(json!({"results": [null]})).into_response(),
        Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
    }
}

async fn vllm_reset(State(state): State<Shared>) -> Response {
    record(&state, "/reset_prefix_cache", &Value::Null);
    StatusCode::OK.into_response()
}

/// llama.cpp `/completion`: ignores the stop sequences (the host must cut the turn itself);
/// ids in `tokens`, log-probs in `completion_probabilities`.
async fn llama_completion(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    record(&state, "/completion", &body);
    assert_eq!(body["return_tokens"], true);
    assert_eq!(body["min_p"], 0.0);
    assert_eq!(body["repeat_penalty"], 1.0);
    if body["seed"]
        .as_u64()
        .is_none_or(|seed| seed >= u64::from(u32::MAX))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "seed must be a 32-bit value, not -1",
        );
    }
    let sampled = sample(
        &state,
        &ids(&body["prompt"]),
        body["n_predict"].as_u64().unwrap() as usize,
        &[],
        body["temperature"].as_f64().unwrap() as f32,
        body["seed"].as_u64().unwrap_or(0),
    );
    match sampled {
        Ok((ids, logprobs)) => Json(json!({
            "content": "",
            "tokens": ids,
            "completion_probabilities": ids.iter().zip(&logprobs)
                .map(|(id, lp)| json!({"id": id, "logprob": lp})).collect::<Vec<_>>(),
            "stop_type": "limit",
        }))
        .into_response(),
        Err(response) => *response,
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The records of an evaluation, by example: (response ids, finish, queries).
fn eval_records(out: &Path) -> Vec<(Vec<u64>, String, Value)> {
    let mut rows: Vec<Value> = std::fs::read_to_string(out.join("world-validation.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.sort_by_key(|r| r["example"].as_u64().unwrap());
    rows.iter()
        .map(|r| {
            (
                r["response_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect(),
                r["finish"].as_str().unwrap().to_string(),
                r["queries"].clone(),
            )
        })
        .collect()
}

const EVAL: [&str; 8] = [
    "eval",
    "--plugins=plugins",
    "--limit=6",
    "--batch=3",
    "--max-response-tokens=48",
    "--max-obs-tokens=20",
    "--top-k=2",
    "--quiet",
];

fn eval(model: &Path, out: &Path, extra: &[&str]) -> String {
    let args = [&EVAL[..], &["--model", s(model), "--out", s(out)], extra].concat();
    let output = host_command(&args).output().unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "host {args:?}:\n{text}");
    text
}

#[test]
fn eval_through_each_server_kind_gives_the_local_greedy_tokens() {
    let dir = tempfile::tempdir().unwrap();
    // A model that searches, reads the results and answers (two turns, an observation
    // appended between them), and a random one (long turns, stop sequences by chance).
    let searching = common::searching_model(&dir.path().join("searching"), "moon", "bright");
    let random = dir.path().join("random");
    research_host::model::tiny::init_tiny(
        research_host::model::Architecture::Qwen2,
        research_host::model::tiny::TINY,
        5,
        None,
        &random,
    )
    .unwrap();
    for model in [&searching, &random] {
        let local = dir.path().join("local");
        let _ = std::fs::remove_dir_all(&local);
        eval(model, &local, &[]);
        let expected = eval_records(&local);
        assert_eq!(expected.len(), 6);
        if model == &searching {
            for (ids, finish, queries) in &expected {
                assert_eq!(queries, &json!(["moon"]), "{ids:?} {finish}");
                assert_eq!(finish, "eos");
            }
        }
        let server = Server::start(model);
        for (backend, path) in [
            ("sglang", "/generate"),
            ("vllm", "/v1/completions"),
            ("llama-cpp", "/completion"),
        ] {
            let out = dir.path().join(backend);
            let _ = std::fs::remove_dir_all(&out);
            let text = eval(model, &out, &["--backend", backend, "--url", &server.url]);
            assert!(text.contains(&format!("sampled by {backend} at")), "{text}");
            assert_eq!(
                eval_records(&out),
                expected,
                "{backend} on {}",
                model.display()
            );
            let calls = server.calls(path);
            assert!(!calls.is_empty(), "{backend}");
            // Greedy: temperature 0 in every request.
            assert!(calls.iter().all(|c| {
                let t = if backend == "sglang" {
                    &c["sampling_params"]["temperature"]
                } else {
                    &c["temperature"]
                };
                t.as_f64() == Some(0.0)
            }));
        }
        // vLLM answered 5 tokens at a time, so its turns took several requests.
        assert!(server.calls("/v1/completions").len() > server.calls("/generate").len());

        // A server holds the weights: the host needs only the config and the tokenizer.
        let shape = dir.path().join("shape-only");
        let _ = std::fs::remove_dir_all(&shape);
        std::fs::create_dir(&shape).unwrap();
        for entry in std::fs::read_dir(model).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "safetensors") {
                std::fs::copy(&path, shape.join(path.file_name().unwrap())).unwrap();
            }
        }
        let out = dir.path().join("shape-out");
        let _ = std::fs::remove_dir_all(&out);
        eval(&shape, &out, &["--backend", "sglang", "--url", &server.url]);
        assert_eq!(eval_records(&out), expected);
        let args = [&EVAL[..], &["--model", s(&shape), "--out", s(&out)]].concat();
        let output = host_command(&args).output().unwrap();
        assert!(!output.status.success(), "{}", output_text(&output));
    }
}

#[test]
fn failing_and_unreachable_servers_are_retried_then_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::answering_model(&dir.path().join("m"), "blue");
    let server = Server::start(&model);
    // Three 503 answers, then service: the evaluation retries and finishes.
    server
        .state
        .behaviour
        .failing_generations
        .store(3, Ordering::SeqCst);
    let out = dir.path().join("retried");
    eval(&model, &out, &["--backend", "sglang", "--url", &server.url]);
    assert_eq!(eval_records(&out).len(), 6);
    assert_eq!(
        server
            .state
            .behaviour
            .failing_generations
            .load(Ordering::SeqCst),
        0
    );

    // Nothing listens: retried for the window, then an error naming the URL and the call.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let down = dir.path().join("down");
    let args = [
        &EVAL[..],
        &["--model", s(&model), "--out", s(&down)],
        &["--backend", "vllm", "--url", &url, "--engine-retry-s", "1"],
    ]
    .concat();
    let output = host_command(&args).output().unwrap();
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(&format!("the vllm server at {url} is not answering")),
        "{text}"
    );
    assert!(
        text.contains(&format!("GET {url}/v1/models failed")),
        "{text}"
    );

    // A server that keeps failing mid-evaluation: the error names the call; the records
    // written so far stay, and the same command continues once the server is back.
    let out = dir.path().join("broken");
    server
        .state
        .behaviour
        .failing_generations
        .store(usize::MAX, Ordering::SeqCst);
    let args = [
        &EVAL[..],
        &["--model", s(&model), "--out", s(&out)],
        &[
            "--backend",
            "sglang",
            "--url",
            &server.url,
            "--engine-retry-s",
            "1",
        ],
    ]
    .concat();
    let output = host_command(&args).output().unwrap();
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(&format!("POST {}/generate failed", server.url)) && text.contains("503"),
        "{text}"
    );
    server
        .state
        .behaviour
        .failing_generations
        .store(0, Ordering::SeqCst);
    eval(&model, &out, &["--backend", "sglang", "--url", &server.url]);
    assert_eq!(eval_records(&out).len(), 6);

    // Settings that cannot work are refused before anything runs.
    for (extra, wanted) in [
        (vec!["--backend", "sglang"], "needs rollout.url"),
        (
            vec!["--url", "http://127.0.0.1:1"],
            "rollout.backend is local",
        ),
        (
            vec!["--backend", "llama-cpp", "--url", "localhost:8080"],
            "must start with http://",
        ),
    ] {
        let args = [&EVAL[..], &["--model", s(&model)], &extra[..]].concat();
        let output = host_command(&args).output().unwrap();
        let text = output_text(&output);
        assert!(
            !output.status.success() && text.contains(wanted),
            "{extra:?}: {text}"
        );
    }
}

/// Small GRPO settings (as the train tests use) on a server backend.
fn train_args(out: &Path, backend: &str, url: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--steps",
        "2",
        "--out",
        s(out),
        "--quiet",
        "--plugins=plugins",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    for set in [
        "sft.embedded_warm_start=false",
        "rollout.max_response_tokens=32",
        "rollout.batch_prompts=2",
        "rollout.group_size=3",
        "validation.limit=2",
        "validation.every=2",
        "checkpoint.every=1",
        &format!("rollout.backend=\"{backend}\""),
        &format!("rollout.url=\"{url}\""),
        "rollout.engine_retry_s=1",
    ] {
        args.push("--set".into());
        args.push(set.to_string());
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn strings_of(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn run(args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    host_command(&args).output().unwrap()
}

#[test]
fn training_on_sglang_loads_every_policy_and_resumes_after_a_failed_load() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let server = Server::start(&full.join("engine-weights"));
    let output = run(&train_args(&full, "sglang", &server.url, &[]));
    assert!(output.status.success(), "{}", output_text(&output));
    // Loads: before the step-0 validation, before step 2's rollouts, before the last
    // validation; every one from the run's engine-weights folder.
    let loads = server.calls("/update_weights_from_disk");
    assert_eq!(loads.len(), 3, "{loads:?}");
    let folder = std::path::absolute(full.join("engine-weights")).unwrap();
    for load in &loads {
        assert_eq!(load["model_path"], json!(folder));
    }
    // The last load is the trained policy: the same weights as the final checkpoint.
    let weights = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert_eq!(
        weights(&folder),
        weights(&full.join("checkpoints/step-000002/model"))
    );
    let steps: Vec<Value> = metrics(&full)
        .into_iter()
        .filter(|m| m.get("reward_mean").is_some())
        .collect();
    assert_eq!(steps.len(), 2);
    for step in &steps {
        assert_eq!(step["sampler_lag"], 0, "{step}");
    }
    // Sampled requests: temperature 1, a seed per request, every group's prompts.
    let generations = server.calls("/generate");
    let sampled: Vec<&Value> = generations
        .iter()
        .filter(|g| g["sampling_params"]["temperature"] == 1.0)
        .collect();
    assert!(sampled.len() >= 12, "{}", sampled.len());
    assert!(
        sampled
            .iter()
            .all(|g| g["sampling_params"]["sampling_seed"].is_u64())
    );

    // The second load fails (before step 2's rollouts, after step 1's checkpoint): the run
    // stops naming the server and the call; `--resume` on a server that came back at another
    // address ends exactly as the uninterrupted run.
    let part = dir.path().join("part");
    let server = Server::start(&part.join("engine-weights"));
    *server.state.behaviour.loads_before_failure.lock().unwrap() = Some(1);
    let output = run(&train_args(&part, "sglang", &server.url, &[]));
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "the sglang server at {} did not load the policy of step 1",
            server.url
        )) && text.contains("/update_weights_from_disk: HTTP 400")
            && text.contains("injected failure of load 2"),
        "{text}"
    );
    let moved = Server::start(&part.join("engine-weights"));
    let url = format!("rollout.url=\"{}\"", moved.url);
    let output = run(&strings_of(&[
        "train",
        "--resume",
        s(&part),
        "--quiet",
        "--set",
        &url,
    ]));
    assert!(output.status.success(), "{}", output_text(&output));
    assert_eq!(comparable(&part), comparable(&full));
    // Other settings still cannot change on a resume.
    let output = run(&strings_of(&[
        "train",
        "--resume",
        s(&part),
        "--set",
        "rollout.sync_every=3",
    ]));
    assert!(!output.status.success());

    // The load before the last validation fails (step 2 updated in memory, its metrics line
    // and checkpoint not written), answered 200 with `success: false`: the resume redoes
    // step 2 from step 1's checkpoint and ends as the uninterrupted run.
    let late = dir.path().join("late");
    let server = Server::start(&late.join("engine-weights"));
    *server.state.behaviour.loads_before_failure.lock().unwrap() = Some(2);
    *server.state.behaviour.failed_load_status.lock().unwrap() = Some(StatusCode::OK);
    let output = run(&train_args(&late, "sglang", &server.url, &[]));
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("did not load the policy of step 2") && text.contains("SGLang did not load"),
        "{text}"
    );
    assert!(!late.join("checkpoints/step-000002").exists());
    *server.state.behaviour.loads_before_failure.lock().unwrap() = None;
    let output = run(&strings_of(&["train", "--resume", s(&late), "--quiet"]));
    assert!(output.status.success(), "{}", output_text(&output));
    assert_eq!(comparable(&late), comparable(&full));

    // Loads every 2 steps: step 2 samples from the policy of step 0.
    let lagged = dir.path().join("lagged");
    let server = Server::start(&lagged.join("engine-weights"));
    let output = run(&train_args(
        &lagged,
        "sglang",
        &server.url,
        &["--set", "rollout.sync_every=2"],
    ));
    assert!(output.status.success(), "{}", output_text(&output));
    let lags: Vec<Value> = metrics(&lagged)
        .into_iter()
        .filter_map(|m| m.get("sampler_lag").cloned())
        .collect();
    assert_eq!(lags, vec![json!(0), json!(1)]);
}

#[test]
fn training_on_vllm_reloads_its_own_folder_and_llama_cpp_cannot_train() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let shared = dir.path().join("shared-weights");
    // vLLM serves another folder than the one the host writes: refused, naming both.
    let server = Server::start(&dir.path().join("elsewhere"));
    let output = run(&train_args(
        &run_dir,
        "vllm",
        &server.url,
        &[
            "--set",
            &format!("rollout.engine_weights=\"{}\"", s(&shared)),
        ],
    ));
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("reloads only the folder it was started on") && text.contains("elsewhere"),
        "{text}"
    );

    // Started on the shared folder: every load is a reload of it and a prefix-cache reset.
    let run_dir = dir.path().join("run2");
    let server = Server::start(&shared);
    let output = run(&train_args(
        &run_dir,
        "vllm",
        &server.url,
        &[
            "--set",
            &format!("rollout.engine_weights=\"{}\"", s(&shared)),
        ],
    ));
    assert!(output.status.success(), "{}", output_text(&output));
    let paths: Vec<String> = server
        .paths()
        .into_iter()
        .filter(|p| p != "/v1/completions")
        .collect();
    assert_eq!(
        paths,
        [
            "/collective_rpc",
            "/reset_prefix_cache",
            "/collective_rpc",
            "/reset_prefix_cache",
            "/collective_rpc",
            "/reset_prefix_cache"
        ]
    );
    assert!(!server.calls("/v1/completions").is_empty());

    // A reload that keeps failing (HTTP 500, retried for the window) stops the run naming
    // the call.
    *server.state.behaviour.loads_before_failure.lock().unwrap() = Some(0);
    let output = run(&train_args(
        &dir.path().join("run4"),
        "vllm",
        &server.url,
        &[
            "--set",
            &format!("rollout.engine_weights=\"{}\"", s(&shared)),
        ],
    ));
    let text = output_text(&output);
    assert!(
        !output.status.success()
            && text.contains(&format!("POST {}/collective_rpc failed", server.url))
            && text.contains("HTTP 500"),
        "{text}"
    );

    // The host replaces the engine-weights folder: it may not be the run's checkpoints (or
    // the model's folder).
    let run5 = dir.path().join("run5");
    let output = run(&train_args(
        &run5,
        "sglang",
        &server.url,
        &[
            "--set",
            &format!(
                "rollout.engine_weights=\"{}\"",
                s(&run5.join("checkpoints"))
            ),
        ],
    ));
    let text = output_text(&output);
    assert!(
        !output.status.success() && text.contains("overlaps the model folder"),
        "{text}"
    );

    // llama.cpp cannot load weights: training on it is refused before anything runs.
    let output = run(&train_args(
        &dir.path().join("run3"),
        "llama-cpp",
        "http://127.0.0.1:1",
        &[],
    ));
    let text = output_text(&output);
    assert!(
        !output.status.success() && text.contains("llama.cpp's server cannot load new weights"),
        "{text}"
    );
}
