//! Plugin failures: every error names the plugin, the function and the cause.

use std::fmt;

/// A failed plugin call (or load). The host keeps running; the plugin's instance is replaced.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}` failed in `{function}`: {cause}{}", stderr_note(.stderr))]
pub struct PluginError {
    /// The plugin's name from its `plugin.toml`.
    pub plugin: String,
    /// The called function, as `interface.function` (for example `reward.score`).
    pub function: String,
    pub cause: Failure,
    /// What the guest wrote to stdout/stderr during the call (its tail), if anything.
    pub stderr: String,
}

fn stderr_note(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(
            "\n  plugin output:\n    {}",
            stderr.trim_end().replace('\n', "\n    ")
        )
    }
}

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The wall-clock deadline (`timeout-ms`) passed; `blocked` when the guest was waiting in
    /// a host call (a sleep, a poll, an HTTP response) when it did.
    Deadline { timeout_ms: u64, blocked: bool },
    /// The fuel budget (`fuel`) ran out.
    Fuel { fuel: u64 },
    /// The guest tried to grow its memory past `memory-mb`.
    Memory {
        limit_bytes: u64,
        requested_bytes: u64,
    },
    /// The guest overflowed its call stack (for example unbounded recursion).
    StackOverflow,
    /// The guest panicked (the message is the guest's own).
    Panic(String),
    /// Any other trap.
    Trap(String),
    /// The call returned something the contract forbids (NaN reward, oversized output, …).
    InvalidOutput(String),
    /// The plugin reported an error itself (the `error` side of a `result`).
    Guest(String),
    /// The plugin could not be instantiated.
    Instantiate(String),
    /// The plugin's `init` refused its settings (the message is the plugin's own).
    Settings(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Deadline {
                timeout_ms,
                blocked: false,
            } => write!(
                f,
                "deadline of {timeout_ms} ms exceeded (raise [limits] timeout-ms in plugin.toml if the work is legitimate)"
            ),
            Failure::Deadline {
                timeout_ms,
                blocked: true,
            } => write!(
                f,
                "deadline of {timeout_ms} ms exceeded while the guest was blocked in a host call (a sleep, a poll, a wait for an HTTP response); the wait was ended at the deadline"
            ),
            Failure::Fuel { fuel } => write!(f, "fuel budget of {fuel} exhausted"),
            Failure::Memory {
                limit_bytes,
                requested_bytes,
            } => write!(
                f,
                "memory limit of {} MiB exceeded (it asked for {} MiB; raise [limits] memory-mb in plugin.toml if needed)",
                limit_bytes >> 20,
                requested_bytes.div_ceil(1 << 20)
            ),
            Failure::StackOverflow => f.write_str("stack overflow (unbounded recursion?)"),
            Failure::Panic(message) => write!(f, "guest panicked: {message}"),
            Failure::Trap(message) => write!(f, "trap: {message}"),
            Failure::InvalidOutput(message) => write!(f, "invalid output: {message}"),
            Failure::Guest(message) => write!(f, "plugin returned an error: {message}"),
            Failure::Instantiate(message) => write!(f, "could not start an instance: {message}"),
            Failure::Settings(message) => write!(
                f,
                "the plugin refused its settings: {message} (its [config] in plugin.toml, or the run's overrides)"
            ),
        }
    }
}

/// A plugin's `init` answered with an error: carried through wasmtime's error type from
/// the instantiation closure to the pool, which reports it as [`Failure::Settings`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SettingsRefused(pub String);

/// The outcome of `init` as an instantiation result.
pub(crate) fn settled(init: Result<(), String>) -> wasmtime::Result<()> {
    init.map_err(|message| wasmtime::Error::new(SettingsRefused(message)))
}
