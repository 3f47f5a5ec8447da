//! Waits inside host calls that end by the call's deadline. Epoch interruption stops Wasm code,
//! but a guest that waits in a host call (`std::thread::sleep`, a poll on the clock, an HTTP
//! response that never comes) sits where no epoch check runs. Every such wait goes through
//! `wasi:io/poll` (`poll` over a list of pollables, or `pollable.block`); here both run with a
//! timeout of what is left of the call's deadline. A wait that runs out traps the guest, marks
//! the call as having blocked past its deadline, and the instance pool fails the call and
//! discards the instance.

use super::sandbox::HostState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::sync::io::poll;
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;

/// The deadline of the call in progress and whether a wait ran into it.
#[derive(Debug, Clone, Default)]
pub struct CallDeadline {
    /// When the call must have ended (none outside a call: waits are not bounded).
    pub at: Option<Instant>,
    /// Set when a wait ran into the deadline.
    pub blocked: Arc<AtomicBool>,
}

impl CallDeadline {
    /// Starts a call that must end by `at`.
    pub fn arm(&mut self, at: Instant) {
        self.at = Some(at);
        self.blocked.store(false, Ordering::Relaxed);
    }

    /// Whether a wait ran into the deadline since [`CallDeadline::arm`] (and clears it).
    pub fn take_blocked(&self) -> bool {
        self.blocked.swap(false, Ordering::Relaxed)
    }
}

/// Replaces `wasi:io/poll` of `linker` (already holding WASI) with the bounded one.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = poll::add_to_linker::<HostState, BoundedPoll>(linker, |state| {
        let deadline = state.deadline.clone();
        BoundedPollView {
            table: state.ctx().table,
            deadline,
        }
    });
    linker.allow_shadowing(false);
    result
}

/// [`HasData`] of the bounded poll.
struct BoundedPoll;

impl HasData for BoundedPoll {
    type Data<'a> = BoundedPollView<'a>;
}

/// What the bounded poll's host functions see.
struct BoundedPollView<'a> {
    table: &'a mut ResourceTable,
    deadline: CallDeadline,
}

impl BoundedPollView<'_> {
    /// Runs `wait` until it ends or the call's deadline passes; past the deadline the guest
    /// traps (the error) and the call is marked as blocked.
    fn bounded<T>(
        deadline: &CallDeadline,
        wait: impl Future<Output = wasmtime::Result<T>>,
    ) -> wasmtime::Result<T> {
        let Some(at) = deadline.at else {
            return in_tokio(wait);
        };
        let left = at.saturating_duration_since(Instant::now());
        // The timer is made inside the runtime: it needs its reactor.
        let limit = left.max(Duration::from_millis(1));
        match in_tokio(async move { tokio::time::timeout(limit, wait).await }) {
            Ok(result) => result,
            Err(_) => {
                deadline.blocked.store(true, Ordering::Relaxed);
                Err(wasmtime::Error::msg(
                    "the call's deadline passed while the guest was waiting in a host call",
                ))
            }
        }
    }
}

impl poll::Host for BoundedPollView<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        let table = &mut *self.table;
        Self::bounded(&self.deadline, async_poll::Host::poll(table, pollables))
    }
}

impl poll::HostPollable for BoundedPollView<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        // `ready` never waits: it polls the pollable once.
        in_tokio(async_poll::HostPollable::ready(&mut *self.table, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        let table = &mut *self.table;
        Self::bounded(
            &self.deadline,
            async_poll::HostPollable::block(table, pollable),
        )
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(&mut *self.table, pollable)
    }
}
