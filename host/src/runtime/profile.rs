//! A guest profile on demand: wasmtime's guest profiler sampling one
//! plugin's calls for a bounded window, written in the Firefox Profiler's
//! format. Off unless asked: a call of a plugin nobody profiles checks one
//! empty slot per epoch tick, and nothing else.
//!
//! Samples are taken at the epoch ticks that already bound every call's
//! deadline (1 ms apart), while guest code runs: the stack of the plugin's
//! own modules, never host frames or addresses. Every call in the window
//! samples into one profile (one thread in the Firefox Profiler: calls
//! that overlap interleave there), so it shows where the plugin's time
//! goes over many calls rather than the shape of one.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use wasmtime::{AsContext, GuestProfiler};

use super::{EPOCH_TICK, PreparedPlugin};

/// The longest window a profile may cover.
pub const MAX_WINDOW: Duration = Duration::from_secs(60);

/// The most samples one profile keeps: a minute of one busy core at the
/// epoch's 1 kHz, or more calls' worth of a lighter plugin. Each costs a
/// few bytes once its stack is known, so a profile stays within a few MiB.
pub(crate) const MAX_SAMPLES: usize = 120_000;

/// One plugin's profile while it is taken.
pub struct GuestProfile {
    profiler: Mutex<GuestProfiler>,
    until: Instant,
    /// Calls that may still join, when the profile is for N calls.
    calls_left: Option<AtomicU64>,
    calls: AtomicU64,
    samples: AtomicUsize,
}

impl std::fmt::Debug for GuestProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestProfile")
            .field("calls", &self.calls())
            .field("samples", &self.samples())
            .finish_non_exhaustive()
    }
}

impl GuestProfile {
    /// Starts profiling the calls of `pre` (named `name`) for `window`, or
    /// for its first `calls` calls if they come sooner. Reads the
    /// component's symbols: seconds for the largest (an interpreter), so
    /// call it off the async workers.
    pub(crate) fn start(
        pre: &PreparedPlugin,
        name: &str,
        window: Duration,
        calls: Option<u64>,
    ) -> Result<Self> {
        let profiler = GuestProfiler::new_component(
            pre.engine(),
            name,
            EPOCH_TICK,
            pre.component().clone(),
            [],
        )
        .map_err(|error| {
            anyhow::Error::from(error).context(format!("starting a guest profile of {name}"))
        })?;
        Ok(GuestProfile {
            profiler: Mutex::new(profiler),
            until: Instant::now() + window.min(MAX_WINDOW),
            calls_left: calls.map(AtomicU64::new),
            calls: AtomicU64::new(0),
            samples: AtomicUsize::new(0),
        })
    }

    /// Whether a call starting now joins the profile (and counts it).
    pub(crate) fn admit_call(&self) -> bool {
        if self.is_over() {
            return false;
        }
        if let Some(left) = &self.calls_left
            && left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
        {
            return false;
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Whether the window has closed, or every call it was for has come.
    pub fn is_over(&self) -> bool {
        Instant::now() >= self.until
            || self
                .calls_left
                .as_ref()
                .is_some_and(|left| left.load(Ordering::Relaxed) == 0)
    }

    /// One sample of the guest's stack in `store`, the guest having run
    /// about one epoch tick since the last.
    pub(crate) fn sample(&self, store: impl AsContext) {
        if self.samples.fetch_add(1, Ordering::Relaxed) >= MAX_SAMPLES {
            self.samples.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        // A panic while sampling leaves a profile still worth writing.
        let mut profiler = self.profiler.lock().unwrap_or_else(|e| e.into_inner());
        profiler.sample(store, EPOCH_TICK);
    }

    /// Calls that joined.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Samples taken.
    pub fn samples(&self) -> usize {
        self.samples.load(Ordering::Relaxed)
    }

    /// The profile as JSON in the Firefox Profiler's processed format.
    pub fn finish(self) -> Result<Vec<u8>> {
        let profiler = self
            .profiler
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        let mut json = Vec::new();
        profiler
            .finish(&mut json)
            .map_err(|error| anyhow::Error::from(error).context("writing the guest profile"))?;
        Ok(json)
    }
}
