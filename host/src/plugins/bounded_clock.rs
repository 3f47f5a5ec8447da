//! The monotonic clock a plugin sees, with waits that end by the call's deadline. Epoch
//! interruption stops Wasm code, but a guest that sleeps (`std::thread::sleep`) or polls a
//! clock waits inside a host call, where no epoch check runs: without this, a plugin could
//! hold a call for as long as it asked to sleep. Here every clock subscription is cut at the
//! deadline of the call in progress; a wait that was cut and ran out marks the call as having
//! blocked past its deadline, and the instance pool then fails it and discards the instance.

use super::sandbox::HostState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

/// The deadline of the call in progress and whether a wait ran into it.
#[derive(Debug, Clone, Default)]
pub struct CallDeadline {
    /// When the call must have ended (none outside a call: waits are not cut).
    pub at: Option<Instant>,
    /// Set when a wait cut at the deadline ran out.
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

/// Replaces the WASI monotonic clock of `linker` (already holding WASI) with the bounded one.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = monotonic_clock::add_to_linker::<HostState, BoundedClocks>(linker, |state| {
        let deadline = state.deadline.clone();
        BoundedClockView {
            inner: state.clocks(),
            deadline,
        }
    });
    linker.allow_shadowing(false);
    result
}

/// [`HasData`] of the bounded clock.
struct BoundedClocks;

impl HasData for BoundedClocks {
    type Data<'a> = BoundedClockView<'a>;
}

/// What the bounded clock's host functions see.
struct BoundedClockView<'a> {
    inner: WasiClocksCtxView<'a>,
    deadline: CallDeadline,
}

impl BoundedClockView<'_> {
    /// A pollable ready after `wait`, or at the call's deadline when that comes first.
    fn subscribe(&mut self, wait: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        let now = Instant::now();
        let requested = now.checked_add(wait);
        let (until, cut) = match (requested, self.deadline.at) {
            (Some(requested), Some(at)) if at < requested => (Some(at), true),
            (None, Some(at)) => (Some(at), true),
            (requested, _) => (requested, false),
        };
        let sleep = CutSleep {
            until: until.map(tokio::time::Instant::from_std),
            cut,
            yielded: false,
            blocked: Arc::clone(&self.deadline.blocked),
        };
        let resource = self.inner.table.push(sleep)?;
        subscribe(self.inner.table, resource)
    }
}

impl monotonic_clock::Host for BoundedClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        monotonic_clock::Host::now(&mut self.inner)
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        monotonic_clock::Host::resolution(&mut self.inner)
    }

    fn subscribe_instant(
        &mut self,
        when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let now = monotonic_clock::Host::now(&mut self.inner)?;
        self.subscribe(Duration::from_nanos(when.saturating_sub(now)))
    }

    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.subscribe(Duration::from_nanos(duration))
    }
}

/// A wait on the clock, ready at `until` (never when it is none); `cut` when `until` is the
/// call's deadline rather than what the guest asked for.
struct CutSleep {
    until: Option<tokio::time::Instant>,
    cut: bool,
    /// A wait already over yields to the runtime once (as WASI's own clock does), so that a
    /// guest polling in a busy loop with a zero timeout cannot starve its other pollables.
    yielded: bool,
    blocked: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Pollable for CutSleep {
    async fn ready(&mut self) {
        match self.until {
            Some(until) if until <= tokio::time::Instant::now() => {
                if !self.yielded {
                    self.yielded = true;
                    tokio::task::yield_now().await;
                }
            }
            Some(until) => tokio::time::sleep_until(until).await,
            None => std::future::pending().await,
        }
        if self.cut {
            self.blocked.store(true, Ordering::Relaxed);
        }
    }
}
