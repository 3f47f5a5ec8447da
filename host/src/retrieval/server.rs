//! The retrieval server (`host serve`): Search-R1's `POST /retrieve`, ReSearch's `POST /search`
//! and `POST /batch_search`, and `GET /health`, with the response shapes of the reference servers.
//!
//! Requests that arrive together are embedded together: handlers hand their queries to one
//! worker thread, which takes everything queued (up to a batch limit), embeds it in one pass,
//! searches, and answers each request. Bad input gets a 4xx with a JSON `{"error": …}` body;
//! nothing a client sends can stop the server.

use super::search::{Hit, Searcher};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Server limits.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerOptions {
    /// Largest top-k a request may ask for.
    #[arg(long, default_value_t = 100, value_name = "K")]
    pub max_top_k: usize,
    /// Most queries in one request.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_queries: usize,
    /// Most queries embedded in one pass (across concurrent requests).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_batch: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    pub max_body_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_top_k: 100,
            max_queries: 512,
            max_batch: 64,
            max_body_bytes: 4 << 20,
        }
    }
}

/// One request's share of work for the batching thread.
struct Job {
    queries: Vec<String>,
    k: usize,
    reply: oneshot::Sender<Result<Vec<Vec<Hit>>, String>>,
}

struct AppState {
    jobs: std_mpsc::Sender<Job>,
    options: ServerOptions,
    health: Value,
    counters: Arc<Counters>,
}

/// What the worker has done, for `GET /health`.
#[derive(Default)]
struct Counters {
    queries: AtomicU64,
    batches: AtomicU64,
}

/// An error answered to the client.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1}))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// Builds the router; the searcher moves to a worker thread that lives as long as the router.
pub fn router(searcher: Searcher, options: ServerOptions) -> Router {
    let meta = searcher.index().meta().ok();
    let health = json!({
        "status": "ok",
        "passages": meta.as_ref().map(|m| m.passages),
        "embedder": searcher.embedder().identity().name,
        "mode": searcher.mode_name(),
    });
    let (jobs, queue) = std_mpsc::channel::<Job>();
    let max_batch = options.max_batch.max(1);
    let counters = Arc::new(Counters::default());
    let worker_counters = counters.clone();
    std::thread::Builder::new()
        .name("retrieval-batcher".into())
        .spawn(move || run_batches(&searcher, &queue, max_batch, &worker_counters))
        .expect("cannot start the retrieval worker thread");
    let body_limit = options.max_body_bytes;
    let state = Arc::new(AppState {
        jobs,
        options,
        health,
        counters,
    });
    Router::new()
        .route("/retrieve", post(retrieve))
        .route("/search", post(search))
        .route("/batch_search", post(batch_search))
        .route("/health", get(health_check))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint: use POST /retrieve, /search, /batch_search or GET /health"
                    .into(),
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The worker: waits for a job, takes every job already queued (up to `max_batch` queries),
/// embeds all their queries in one pass, searches once with the largest k, and answers each.
fn run_batches(
    searcher: &Searcher,
    queue: &std_mpsc::Receiver<Job>,
    max_batch: usize,
    counters: &Counters,
) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        let mut total = jobs[0].queries.len();
        while total < max_batch {
            match queue.try_recv() {
                Ok(job) => {
                    total += job.queries.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let queries: Vec<&str> = jobs
            .iter()
            .flat_map(|job| job.queries.iter().map(String::as_str))
            .collect();
        let k = jobs.iter().map(|job| job.k).max().unwrap_or(0);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .queries
            .fetch_add(queries.len() as u64, Ordering::Relaxed);
        let result = searcher
            .embedder()
            .embed_queries(&queries)
            .and_then(|vectors| searcher.search_vectors(&vectors, k))
            .and_then(|matches| searcher.resolve(matches));
        tracing::debug!(
            "batch of {} queries from {} requests in {:?}",
            queries.len(),
            jobs.len(),
            started.elapsed()
        );
        match result {
            Ok(mut hits) => {
                for job in jobs.into_iter().rev() {
                    let mut mine = hits.split_off(hits.len() - job.queries.len());
                    for row in &mut mine {
                        row.truncate(job.k);
                    }
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(error) => {
                let message = format!("search failed: {error:#}");
                tracing::error!("{message}");
                for job in jobs {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Parses a JSON body, answering 400 with serde's message (line and column) when it is bad.
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("malformed request body: {e}")))
}

impl AppState {
    /// Validates and runs `queries` with top-k `k`.
    async fn run(&self, queries: Vec<String>, k: usize) -> Result<Vec<Vec<Hit>>, ApiError> {
        if k == 0 {
            return Err(bad_request("top-k must be at least 1"));
        }
        if k > self.options.max_top_k {
            return Err(bad_request(format!(
                "top-k {k} exceeds this server's limit of {} (--max-top-k)",
                self.options.max_top_k
            )));
        }
        if queries.len() > self.options.max_queries {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} queries in one request; this server takes at most {} (--max-queries)",
                    queries.len(),
                    self.options.max_queries
                ),
            ));
        }
        if let Some(i) = queries.iter().position(|q| q.trim().is_empty()) {
            return Err(bad_request(format!("query {i} is empty")));
        }
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { queries, k, reply }).map_err(|_| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the search worker stopped".into(),
            )
        })?;
        answer
            .await
            .map_err(|_| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the search worker dropped the request".into(),
                )
            })?
            .map_err(|message| ApiError(StatusCode::INTERNAL_SERVER_ERROR, message))
    }
}

fn document(hit: &Hit) -> Value {
    json!({"id": hit.id, "contents": hit.contents()})
}

#[derive(Deserialize)]
struct RetrieveRequest {
    queries: Vec<String>,
    #[serde(default = "three")]
    topk: usize,
    #[serde(default)]
    return_scores: bool,
}

fn three() -> usize {
    3
}

/// Search-R1: `{"queries", "topk", "return_scores"}` → `{"result": [[{"document", "score"}]]}`,
/// or `{"result": [[document]]}` without scores.
async fn retrieve(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let request: RetrieveRequest = parse_body(&body)?;
    let hits = state.run(request.queries, request.topk).await?;
    let result: Vec<Vec<Value>> = hits
        .iter()
        .map(|row| {
            row.iter()
                .map(|hit| {
                    if request.return_scores {
                        json!({"document": document(hit), "score": hit.score})
                    } else {
                        document(hit)
                    }
                })
                .collect()
        })
        .collect();
    Ok(axum::Json(json!({"result": result})))
}

#[derive(Deserialize)]
struct SearchRequest {
    query: String,
    #[serde(default = "ten")]
    top_n: usize,
    #[serde(default)]
    return_score: bool,
}

fn ten() -> usize {
    10
}

/// ReSearch: `{"query", "top_n", "return_score"}` → `[{"id", "contents"}]` (each with a
/// `score` when asked); 400 on an empty query.
async fn search(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let request: SearchRequest = parse_body(&body)?;
    if request.query.trim().is_empty() {
        return Err(bad_request("query is empty"));
    }
    let mut hits = state.run(vec![request.query], request.top_n).await?;
    let row = hits.pop().unwrap_or_default();
    let documents: Vec<Value> = row
        .iter()
        .map(|hit| {
            let mut value = document(hit);
            if request.return_score {
                value["score"] = json!(hit.score);
            }
            value
        })
        .collect();
    Ok(axum::Json(Value::Array(documents)))
}

#[derive(Deserialize)]
struct BatchSearchRequest {
    query: Vec<String>,
    #[serde(default = "five")]
    top_n: usize,
}

fn five() -> usize {
    5
}

/// ReSearch: `{"query": [..], "top_n"}` → `[[{"id", "contents"}]]`.
async fn batch_search(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let request: BatchSearchRequest = parse_body(&body)?;
    let hits = state.run(request.query, request.top_n).await?;
    Ok(axum::Json(json!(
        hits.iter()
            .map(|row| row.iter().map(document).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    )))
}

/// `{"status": "ok", "passages", "embedder", "mode", "queries_served", "batches_served"}`.
async fn health_check(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    let mut health = state.health.clone();
    health["queries_served"] = json!(state.counters.queries.load(Ordering::Relaxed));
    health["batches_served"] = json!(state.counters.batches.load(Ordering::Relaxed));
    axum::Json(health)
}
