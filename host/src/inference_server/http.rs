//! JSON over HTTP to an inference server, with retries: a call that cannot connect, times out,
//! or gets a 408, 429 or 5xx answer is tried again with a growing pause until its retry window
//! is spent; any other answer is final. Every error names the server's URL and the call.

use anyhow::{Result, anyhow};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

/// How long calls may take and be retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// One request, from connecting to the last byte of the answer.
    pub request_timeout: Duration,
    /// How long a failing call is retried before the error is returned.
    pub retry_for: Duration,
    /// The first pause between tries; it doubles up to [`MAX_PAUSE`].
    pub first_pause: Duration,
}

/// The longest pause between two tries.
pub const MAX_PAUSE: Duration = Duration::from_secs(5);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            request_timeout: Duration::from_secs(600),
            retry_for: Duration::from_secs(60),
            first_pause: Duration::from_millis(200),
        }
    }
}

/// An HTTP client bound to one server.
#[derive(Debug, Clone)]
pub struct JsonClient {
    /// The server's base URL, without a trailing slash.
    base: String,
    agent: ureq::Agent,
    retry: RetryPolicy,
}

/// Why one try failed.
enum Failure {
    /// Worth another try (no connection, timeout, 408/429/5xx).
    Transient(String),
    /// The server answered and will answer the same again.
    Final(String),
}

/// Characters of an error answer's body quoted in messages.
const QUOTED_BODY: usize = 400;

impl JsonClient {
    /// A client of the server at `base_url` keeping up to `connections` idle connections to it
    /// (one per request in flight).
    pub fn new(base_url: &str, retry: RetryPolicy, connections: usize) -> Result<JsonClient> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!(
                "the inference server URL `{base_url}` must start with http:// or https://"
            );
        }
        let agent = ureq::AgentBuilder::new()
            .timeout(retry.request_timeout)
            .max_idle_connections_per_host(connections.max(1))
            .build();
        Ok(JsonClient { base, agent, retry })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` to `path` and reads the JSON answer, retrying as the policy says.
    pub fn post<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R> {
        let text = serde_json::to_string(body)?;
        self.call("POST", path, Some(&text))
    }

    /// GETs `path` and reads the JSON answer, retrying as the policy says.
    pub fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R> {
        self.call("GET", path, None)
    }

    fn call<R: DeserializeOwned>(&self, method: &str, path: &str, body: Option<&str>) -> Result<R> {
        let url = self.url(path);
        let started = Instant::now();
        let mut pause = self.retry.first_pause;
        let mut tries = 0;
        loop {
            tries += 1;
            let failure = match self.try_once(method, &url, body) {
                Ok(text) => {
                    // An empty answer (a bare 200) reads as JSON null.
                    let json = if text.trim().is_empty() {
                        "null"
                    } else {
                        &text
                    };
                    return serde_json::from_str(json).map_err(|e| {
                        anyhow!(
                            "{method} {url}: the answer is not what the call expects ({e}): {}",
                            quote(&text)
                        )
                    });
                }
                Err(failure) => failure,
            };
            match failure {
                Failure::Final(message) => return Err(anyhow!("{method} {url}: {message}")),
                Failure::Transient(message) => {
                    let spent = started.elapsed();
                    if spent + pause > self.retry.retry_for {
                        return Err(anyhow!(
                            "{method} {url} failed {tries} time(s) over {:.1} s (retried for up \
                             to {:.0} s): {message}",
                            spent.as_secs_f64(),
                            self.retry.retry_for.as_secs_f64()
                        ));
                    }
                    tracing::warn!("{method} {url}: {message}; trying again in {pause:?}");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    fn try_once(&self, method: &str, url: &str, body: Option<&str>) -> Result<String, Failure> {
        let request = self
            .agent
            .request(method, url)
            .set("Content-Type", "application/json");
        let answer = match body {
            Some(body) => request.send_string(body),
            None => request.call(),
        };
        match answer {
            Ok(response) => response
                .into_string()
                .map_err(|e| Failure::Transient(format!("reading the answer failed: {e}"))),
            Err(ureq::Error::Status(code, response)) => {
                let text = response.into_string().unwrap_or_default();
                let message = format!("HTTP {code}: {}", quote(&text));
                if code == 408 || code == 429 || code >= 500 {
                    Err(Failure::Transient(message))
                } else {
                    Err(Failure::Final(message))
                }
            }
            Err(ureq::Error::Transport(transport)) => {
                Err(Failure::Transient(transport_message(&transport)))
            }
        }
    }
}

/// What went wrong below HTTP, without the URL (the caller's message names it).
fn transport_message(transport: &ureq::Transport) -> String {
    let mut text = transport.kind().to_string();
    if let Some(message) = transport.message() {
        text.push_str(": ");
        text.push_str(message);
    }
    if let Some(source) = std::error::Error::source(transport) {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    text
}

/// The start of a body, for an error message.
fn quote(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    match text.char_indices().nth(QUOTED_BODY) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_a_scheme_is_refused() {
        let error = JsonClient::new("localhost:8000", RetryPolicy::default(), 1).unwrap_err();
        assert!(error.to_string().contains("http://"), "{error}");
        let client = JsonClient::new(" http://h:1/ ", RetryPolicy::default(), 1).unwrap();
        assert_eq!(client.url("/generate"), "http://h:1/generate");
    }

    #[test]
    fn an_unreachable_server_is_retried_for_the_window_then_named() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let retry = RetryPolicy {
            request_timeout: Duration::from_secs(2),
            retry_for: Duration::from_millis(800),
            first_pause: Duration::from_millis(100),
        };
        let client = JsonClient::new(&format!("http://127.0.0.1:{port}"), retry, 1).unwrap();
        let started = Instant::now();
        let error = client
            .post::<_, serde_json::Value>("/generate", &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        let spent = started.elapsed();
        assert!(
            error.contains(&format!("POST http://127.0.0.1:{port}/generate failed")),
            "{error}"
        );
        // 100 + 200 + 400 ms of pauses fit the window; the next (800 ms) would not.
        assert!(error.contains("failed 4 time(s)"), "{error}");
        // The URL once, then the cause.
        assert_eq!(error.matches("127.0.0.1").count(), 1, "{error}");
        assert!(error.contains("Connection refused"), "{error}");
        assert!(spent >= Duration::from_millis(650), "{spent:?}");
        assert!(spent < Duration::from_secs(5), "{spent:?}");
    }

    #[test]
    fn long_bodies_are_cut_in_messages() {
        assert_eq!(quote("  "), "(empty body)");
        let long = "x".repeat(1000);
        assert_eq!(quote(&long).chars().count(), QUOTED_BODY + 1);
    }
}
