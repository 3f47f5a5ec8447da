//! What a plugin instance can see: its config, an empty WASI world (no files, no sockets, no
//! environment, no arguments, a frozen wall clock, deterministic randomness), captured output,
//! a memory cap and, only with a grant, outgoing HTTP to listed authorities.

use super::retriever::Retriever;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// How much of a plugin's stdout/stderr is kept per call (the tail).
pub const CAPTURE_BYTES: usize = 16 * 1024;

/// The data of one plugin instance's store.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: NetworkPolicy,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) output: CapturedOutput,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) retriever: Option<Arc<dyn Retriever>>,
    /// The deadline of the call in progress, which bounds the guest's waits in host calls.
    pub(crate) deadline: super::bounded_wait::CallDeadline,
}

impl HostState {
    /// A fresh sandbox for one instance.
    pub fn new(
        config: Arc<BTreeMap<String, String>>,
        memory_bytes: u64,
        network: Arc<Vec<String>>,
        retriever: Option<Arc<dyn Retriever>>,
    ) -> HostState {
        let output = CapturedOutput::default();
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .wall_clock(FrozenClock)
            .secure_random(wasmtime_wasi::Deterministic::new(SEED.to_vec()))
            .insecure_random(wasmtime_wasi::Deterministic::new(SEED.to_vec()))
            .insecure_random_seed(0x5eed)
            .build();
        HostState {
            wasi,
            http: WasiHttpCtx::new(),
            http_hooks: NetworkPolicy { allowed: network },
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_bytes),
            output,
            config,
            retriever,
            deadline: Default::default(),
        }
    }
}

/// Fixed bytes behind the guest's random numbers, so that plugins behave the same on every run.
const SEED: [u8; 32] = *b"research-host deterministic seed";

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// A wall clock stuck at the Unix epoch: plugins must not depend on the date.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// Outgoing HTTP is allowed only to the authorities the plugin's manifest grants.
struct NetworkPolicy {
    allowed: Arc<Vec<String>>,
}

impl NetworkPolicy {
    /// Whether `authority` (`host[:port]`) is granted; a missing port is the scheme's default
    /// (`default_port`: 443 for https, 80 for http).
    fn allows(&self, authority: &str, default_port: &str) -> bool {
        let (host, port) = authority
            .rsplit_once(':')
            .unwrap_or((authority, default_port));
        self.allowed.iter().any(|entry| {
            let (allowed_host, allowed_port) = entry.rsplit_once(':').unwrap_or((entry, ""));
            (allowed_host == "*" || allowed_host.eq_ignore_ascii_case(host))
                && (allowed_port == "*" || allowed_port == port)
        })
    }
}

impl wasmtime_wasi_http::WasiHttpHooks for NetworkPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let default_port = if request.uri().scheme_str() == Some("https") {
            "443"
        } else {
            "80"
        };
        if !self.allows(&authority, default_port) {
            tracing::warn!(
                "plugin HTTP request to `{authority}` denied: not in its network capability"
            );
            return Box::new(async move {
                Err(
                    wasmtime_wasi_http::p2::bindings::http::types::ErrorCode::HttpRequestDenied
                        .into(),
                )
            });
        }
        let default = wasmtime_wasi_http::default_hooks();
        default.send_request(request, options, fut)
    }
}

/// Memory cap of one instance; remembers a refused growth so the error can say so.
pub struct MemoryLimiter {
    limit: usize,
    pub(crate) refused: Option<usize>,
}

impl MemoryLimiter {
    fn new(limit_bytes: u64) -> MemoryLimiter {
        MemoryLimiter {
            limit: usize::try_from(limit_bytes).unwrap_or(usize::MAX),
            refused: None,
        }
    }
}

/// The error a refused memory growth traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory growth to {requested} bytes refused (limit {limit} bytes)")]
pub struct MemoryLimitExceeded {
    pub requested: usize,
    pub limit: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(desired);
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                requested: desired,
                limit: self.limit,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The guest's stdout and stderr, interleaved; keeps the last [`CAPTURE_BYTES`] and never
/// makes a guest write fail.
#[derive(Clone, Default)]
pub struct CapturedOutput {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl CapturedOutput {
    /// Takes what was written since the last call, as text.
    pub fn take(&self) -> String {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&buffer).into_owned();
        buffer.clear();
        text
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buffer.extend_from_slice(bytes);
        if buffer.len() > 2 * CAPTURE_BYTES {
            let excess = buffer.len() - CAPTURE_BYTES;
            buffer.drain(..excess);
        }
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_match_host_and_port_with_scheme_default_ports() {
        let policy = NetworkPolicy {
            allowed: Arc::new(vec![
                "api.openai.com:443".into(),
                "127.0.0.1:8000".into(),
                "*:9000".into(),
            ]),
        };
        assert!(
            policy.allows("api.openai.com", "443"),
            "https without a port"
        );
        assert!(
            !policy.allows("api.openai.com", "80"),
            "http is another port"
        );
        assert!(policy.allows("API.OpenAI.com:443", "443"));
        assert!(policy.allows("127.0.0.1:8000", "80"));
        assert!(!policy.allows("127.0.0.1:8001", "80"));
        assert!(policy.allows("example.org:9000", "80"));
        assert!(!policy.allows("example.org", "80"));
    }
}
