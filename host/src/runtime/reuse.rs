//! Instances kept warm between calls, for plugins whose sidecar allows it
//! (`[limits] max_instance_reuse_count = N`, as `wasmtime serve`'s option
//! of the same name): comb plugins and WASI 0.3 services, one call at a
//! time per instance (a 0.2 proxy's instance serves one request, as
//! `wasmtime serve` has it).
//!
//! A fresh instance per call is comb's default and its isolation promise.
//! But a large guest pays for it on every request: a CPython or
//! SpiderMonkey component spends milliseconds instantiating (function
//! tables filled entry by entry, megabytes of snapshotted heap faulted in)
//! before its handler runs for a fraction of that. Reusing the instance
//! for its plugin's next calls skips all of it.
//!
//! What a plugin that opts in gives up: its own memory is no longer reset
//! between *its* calls (module globals persist, as in a Flask process).
//! What it keeps: every call gets its own spans, log, deadline, fuel and
//! telemetry budget, and its own response; a span handle kept from an
//! earlier call does nothing (see `span_api`), and spans left open end
//! with their call. An instance that trapped, hit a limit or was cut off
//! by the deadline is dropped, never reused; one that served its count is
//! dropped too. Other plugins, and other stores, are untouched.

use std::sync::Mutex;

use wasmtime::Store;

use wasmtime_wasi_http::p3;

use super::{bindings::Plugin, state::InvocationState};

/// One plugin's idle instances.
pub(crate) struct IdleInstances {
    idle: Mutex<Vec<IdleInstance>>,
    /// How many may wait: each holds a pooling slot and its memory.
    keep: usize,
}

/// An instance between two calls, with the store it lives in.
pub(super) struct IdleInstance {
    pub store: Store<InvocationState>,
    pub instance: Instance,
}

/// What an idle store holds instantiated.
pub(super) enum Instance {
    /// A comb plugin.
    Comb(Plugin),
    /// A WASI 0.3 service.
    Service(p3::bindings::Service),
}

impl IdleInstances {
    /// Room for as many idle instances as calls run in parallel on this
    /// machine's cores: more would be waiting memory, not speed.
    pub(crate) fn new(max_concurrency: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        IdleInstances {
            idle: Mutex::new(Vec::new()),
            keep: cores.max(2).min(max_concurrency),
        }
    }

    /// The most recently used idle instance, if any (its pages are the
    /// likeliest to be in cache).
    pub(super) fn take(&self) -> Option<IdleInstance> {
        self.idle().pop()
    }

    /// Keeps `instance` for a later call, unless enough are kept already.
    pub(super) fn put(&self, instance: IdleInstance) {
        let mut idle = self.idle();
        if idle.len() < self.keep {
            idle.push(instance);
            return;
        }
        drop(idle);
        // Dropped here, outside the lock: freeing a store unmaps memory.
        drop(instance);
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleInstance>> {
        // A store's drop cannot leave the list half-changed.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
