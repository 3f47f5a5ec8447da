//! Instances of one plugin: created from its `InstancePre`, reused while healthy, replaced
//! after any failure; every call gets a fresh deadline, fuel and output budget.

use super::engine::PluginEngine;
use super::error::{Failure, PluginError, SettingsRefused};
use super::manifest::Limits;
use super::retriever::Retriever;
use super::sandbox::HostState;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wasmtime::{Store, Trap};

/// At most this many idle instances are kept per plugin.
const MAX_IDLE: usize = 8;

/// Creates the typed bindings of a new instance inside `store`.
pub(crate) type Instantiate<B> =
    Box<dyn Fn(&mut Store<HostState>) -> wasmtime::Result<B> + Send + Sync>;

/// What describes a plugin besides its component.
#[derive(Debug, Clone)]
pub struct PluginIdentity {
    pub name: String,
    pub limits: Limits,
    pub network: Arc<Vec<String>>,
    pub config: Arc<BTreeMap<String, String>>,
}

/// Which instance serves a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instance {
    /// An idle instance of the pool (started when none is idle), given back afterwards: what
    /// every call of a run uses.
    Pooled,
    /// A new instance, discarded afterwards: what `host plugins check` compares the pooled
    /// answers with, to catch a plugin that keeps state between calls.
    Fresh,
}

/// The pool of instances of one plugin, typed by its bindings `B`.
pub(crate) struct InstancePool<B> {
    identity: PluginIdentity,
    engine: Arc<PluginEngine>,
    instantiate: Instantiate<B>,
    retriever: Option<Arc<dyn Retriever>>,
    idle: Mutex<Vec<Live<B>>>,
}

struct Live<B> {
    store: Store<HostState>,
    bindings: B,
}

/// The size of what a call returned, for the `max-output-kb` limit.
pub(crate) trait OutputSize {
    fn output_size(&self) -> usize;
}

impl OutputSize for String {
    fn output_size(&self) -> usize {
        self.len()
    }
}

impl<T: OutputSize> OutputSize for Vec<T> {
    fn output_size(&self) -> usize {
        self.iter().map(OutputSize::output_size).sum()
    }
}

impl<T: OutputSize, E: OutputSize> OutputSize for Result<T, E> {
    fn output_size(&self) -> usize {
        match self {
            Ok(value) => value.output_size(),
            Err(error) => error.output_size(),
        }
    }
}

impl<B> InstancePool<B> {
    pub(crate) fn new(
        identity: PluginIdentity,
        engine: Arc<PluginEngine>,
        instantiate: Instantiate<B>,
        retriever: Option<Arc<dyn Retriever>>,
    ) -> InstancePool<B> {
        InstancePool {
            identity,
            engine,
            instantiate,
            retriever,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The plugin's name.
    pub(crate) fn name(&self) -> &str {
        &self.identity.name
    }

    /// Starts a new instance now (so that load errors show up at load time).
    pub(crate) fn warm_up(&self) -> Result<(), PluginError> {
        let live = self.start("instantiate")?;
        self.give_back(live);
        Ok(())
    }

    /// Runs `call` on a healthy pooled instance under the plugin's limits. Any trap, deadline
    /// or memory failure discards the instance; an oversized output is an error too.
    pub(crate) fn call<R: OutputSize>(
        &self,
        function: &str,
        call: impl FnOnce(&B, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.call_in(Instance::Pooled, function, call)
    }

    /// Runs `call` on the chosen kind of instance.
    pub(crate) fn call_in<R: OutputSize>(
        &self,
        instance: Instance,
        function: &str,
        call: impl FnOnce(&B, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let live = match instance {
            Instance::Pooled => {
                let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
                match idle {
                    Some(live) => live,
                    None => self.start(function)?,
                }
            }
            Instance::Fresh => self.start(function)?,
        };
        self.run(live, function, call, instance == Instance::Pooled)
    }

    /// Runs `call` on `live`; gives it back to the pool after success when `keep`.
    fn run<R: OutputSize>(
        &self,
        mut live: Live<B>,
        function: &str,
        call: impl FnOnce(&B, &mut Store<HostState>) -> wasmtime::Result<R>,
        keep: bool,
    ) -> Result<R, PluginError> {
        self.arm(&mut live.store);
        let result = call(&live.bindings, &mut live.store);
        let output = live.store.data().output.take();
        let blocked = live.store.data().deadline.take_blocked();
        match result {
            Ok(value) => {
                let size = value.output_size();
                let limit = self.identity.limits.max_output_bytes();
                if keep {
                    self.give_back(live);
                }
                if size > limit {
                    return Err(self.error(
                        function,
                        Failure::InvalidOutput(format!(
                            "the call returned {size} bytes, more than max-output-kb = {} KiB",
                            self.identity.limits.max_output_kb
                        )),
                        output,
                    ));
                }
                if !output.is_empty() {
                    tracing::debug!(plugin = %self.identity.name, "{function}: {}", output.trim_end());
                }
                Ok(value)
            }
            Err(error) => {
                // A wait that ran into the deadline traps the guest from inside the host call.
                let failure = if blocked {
                    Failure::Deadline {
                        timeout_ms: self.identity.limits.timeout_ms,
                        blocked: true,
                    }
                } else {
                    self.classify(&error, &live.store, &output)
                };
                let output = without_panic_report(&failure, output);
                Err(self.error(function, failure, output))
            }
        }
    }

    /// The guest's own `error` result as a plugin error.
    pub(crate) fn guest_result<T>(
        &self,
        function: &str,
        result: Result<T, String>,
    ) -> Result<T, PluginError> {
        result.map_err(|message| self.error(function, Failure::Guest(message), String::new()))
    }

    /// `value` when `problem` is none, else an invalid-output error describing it.
    pub(crate) fn validated<T>(
        &self,
        function: &str,
        value: T,
        problem: Option<String>,
    ) -> Result<T, PluginError> {
        match problem {
            Some(problem) => {
                Err(self.error(function, Failure::InvalidOutput(problem), String::new()))
            }
            None => Ok(value),
        }
    }

    /// Builds a plugin error for `function`.
    pub(crate) fn error(&self, function: &str, cause: Failure, output: String) -> PluginError {
        PluginError {
            plugin: self.identity.name.clone(),
            function: function.to_string(),
            cause,
            stderr: output,
        }
    }

    fn start(&self, function: &str) -> Result<Live<B>, PluginError> {
        let limits = &self.identity.limits;
        let state = HostState::new(
            Arc::clone(&self.identity.config),
            limits.memory_bytes(),
            Arc::clone(&self.identity.network),
            self.retriever.clone(),
        );
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        self.arm(&mut store);
        match (self.instantiate)(&mut store) {
            Ok(bindings) => Ok(Live { store, bindings }),
            Err(error) => {
                let output = store.data().output.take();
                if let Some(SettingsRefused(message)) = error.downcast_ref::<SettingsRefused>() {
                    let failure = Failure::Settings(message.clone());
                    return Err(self.error("init", failure, output));
                }
                let failure = match self.classify(&error, &store, &output) {
                    Failure::Trap(message) => Failure::Instantiate(message),
                    other => other,
                };
                let output = without_panic_report(&failure, output);
                Err(self.error(function, failure, output))
            }
        }
    }

    /// Fresh per-call budgets: deadline, fuel, memory-refusal marker.
    fn arm(&self, store: &mut Store<HostState>) {
        let limits = &self.identity.limits;
        store.set_epoch_deadline(PluginEngine::ticks_for(limits.timeout_ms));
        store
            .data_mut()
            .deadline
            .arm(std::time::Instant::now() + std::time::Duration::from_millis(limits.timeout_ms));
        if self.engine.fuel_enabled() {
            // Fuel is engine-wide: plugins without a budget get an unlimited one.
            let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
        store.data_mut().limiter.refused = None;
    }

    fn give_back(&self, live: Live<B>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(live);
        }
    }

    fn classify(&self, error: &wasmtime::Error, store: &Store<HostState>, output: &str) -> Failure {
        let limits = &self.identity.limits;
        if let Some(requested) = store.data().limiter.refused {
            return Failure::Memory {
                limit_bytes: limits.memory_bytes(),
                requested_bytes: requested as u64,
            };
        }
        let panic = panic_message(output);
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Failure::Deadline {
                timeout_ms: limits.timeout_ms,
                blocked: false,
            },
            Some(Trap::OutOfFuel) => Failure::Fuel {
                fuel: limits.fuel.unwrap_or(u64::MAX),
            },
            Some(Trap::StackOverflow) => Failure::StackOverflow,
            Some(trap) => match panic {
                Some(message) => Failure::Panic(message),
                None => Failure::Trap(trap.to_string()),
            },
            None => match panic {
                Some(message) => Failure::Panic(message),
                None => Failure::Trap(format!("{error:#}")),
            },
        }
    }
}

/// The guest's output without the panic report that [`Failure::Panic`] already carries.
fn without_panic_report(failure: &Failure, output: String) -> String {
    if !matches!(failure, Failure::Panic(_)) {
        return output;
    }
    match output.rfind("thread '") {
        Some(start) if output[start..].contains("panicked at ") => {
            output[..start].trim_end().to_string()
        }
        _ => output,
    }
}

/// The message of a Rust panic in the guest's captured stderr
/// (`thread '…' panicked at FILE:LINE:COL:\nMESSAGE`).
fn panic_message(output: &str) -> Option<String> {
    let start = output.rfind("panicked at ")?;
    let rest = &output[start + "panicked at ".len()..];
    let (location, message) = rest.split_once('\n').unwrap_or((rest, ""));
    let message: Vec<&str> = message
        .lines()
        .take_while(|line| !line.starts_with("note: "))
        .collect();
    let message = message.join("\n");
    let location = location.trim_end_matches(':');
    if message.trim().is_empty() {
        Some(format!("(at {location})"))
    } else {
        Some(format!("{} (at {location})", message.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn reads_rust_panic_messages() {
        let output = "log line\nthread '<unnamed>' panicked at src/lib.rs:7:9:\nboom: bad config\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(output).as_deref(),
            Some("boom: bad config (at src/lib.rs:7:9)")
        );
        assert_eq!(panic_message("nothing"), None);
    }
}
