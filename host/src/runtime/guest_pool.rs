//! Where guest code runs: a call starts on the request's own Tokio worker
//! (no hand-off: most calls take well under a millisecond), and one still
//! running after [`LONG_CALL`] moves to a thread of its own, whose priority
//! it lowers (nice 19), so short calls and the listener are served first
//! while long ones still run out their deadline.
//!
//! Why: a guest holds its worker for an epoch tick between yields, so with
//! every worker in a loop, accepting and answering other routes waited
//! behind them (`python3 tests/bench/neighbours.py`, four looping calls on
//! two cores: a neighbour's p50 from 0.14 to 251 ms, p99 425 ms). A pool of
//! a worker per core for all calls still queued a neighbour's call behind
//! the loops (p50 10 ms, a tick); a thread for every call costs a hand-off
//! per request (+65 µs sequentially). Moved when long and demoted, loops
//! leave the neighbour's p50 as idle and its p99 at 0.9–1.2× of idle.
//! A wasmtime call is a `Send` future, so it can move threads between
//! polls.
//!
//! An unprivileged process cannot raise a thread's priority again, so a
//! demoted thread that cannot be restored ends after its call instead of
//! serving the next one at low priority.

use std::{
    cell::Cell,
    collections::VecDeque,
    future::Future,
    panic::AssertUnwindSafe,
    sync::{Arc, Condvar, Mutex},
    task::Poll,
    time::Duration,
};

/// How long a call runs at normal priority before its thread is demoted.
pub(crate) const LONG_CALL: Duration = Duration::from_millis(2);

/// How long an idle thread waits for work before it ends.
const IDLE_THREAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The nice value of a demoted thread: the lowest priority.
const DEMOTED_NICE: i32 = 19;

type Job = Box<dyn FnOnce() + Send>;

/// A call that panicked on its thread (a bug in comb or wasmtime, not in
/// the guest: guest faults are traps).
#[derive(Debug, thiserror::Error)]
#[error("the call ended abnormally: {0}")]
pub(crate) struct CallPanicked(String);

/// The pool: a queue of calls and the threads that take them.
pub(super) struct GuestPool {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    max_threads: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    stopping: bool,
}

thread_local! {
    /// Each guest thread's own runtime, built once and reused by the calls
    /// the thread runs: their timers (a guest's sleep) and the tasks they
    /// spawn (outgoing HTTP) run on it.
    static CALL_RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a guest thread's Tokio runtime");

    /// Whether this thread's priority was lowered during its current call.
    static DEMOTED: Cell<bool> = const { Cell::new(false) };

    /// Whether this thread is one of the pool's (only those are demoted).
    static ON_POOL: Cell<bool> = const { Cell::new(false) };

    /// Set by the epoch callback when the call being polled has run long.
    static RUNNING_LONG: Cell<bool> = const { Cell::new(false) };
}

impl GuestPool {
    /// A pool of at most `max_threads` threads, started on demand.
    pub(super) fn new(max_threads: usize) -> Self {
        GuestPool {
            shared: Arc::new(Shared {
                state: Mutex::default(),
                work: Condvar::new(),
                max_threads,
            }),
        }
    }

    /// Runs `call` to completion: here while it is short, then on a thread
    /// of the pool. Once moved, dropping the returned future does not stop
    /// the call: it runs to its deadline.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        call: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, CallPanicked> {
        let mut call = Box::pin(call);
        let inline = std::future::poll_fn(|cx| {
            RUNNING_LONG.with(|long| long.set(false));
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx)));
            match polled {
                Ok(Poll::Ready(output)) => Poll::Ready(Some(Ok(output))),
                Err(panic) => Poll::Ready(Some(Err(panicked(panic)))),
                Ok(Poll::Pending) if RUNNING_LONG.with(Cell::get) => Poll::Ready(None),
                Ok(Poll::Pending) => Poll::Pending,
            }
        })
        .await;
        match inline {
            Some(output) => output,
            None => self.run_on_thread(call).await,
        }
    }

    async fn run_on_thread<T: Send + 'static>(
        &self,
        call: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, CallPanicked> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                CALL_RUNTIME.with(|runtime| runtime.block_on(call))
            }));
            let _ = done.send(outcome.map_err(panicked));
        }));
        result
            .await
            .unwrap_or_else(|_| Err(CallPanicked("its thread ended".to_owned())))
    }

    fn submit(&self, job: Job) {
        let mut state = self.shared.lock();
        state.queue.push_back(job);
        if state.idle > 0 {
            self.shared.work.notify_one();
        } else if state.threads < self.shared.max_threads {
            state.threads += 1;
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("comb-guest".into())
                .spawn(move || shared.work_loop());
            if let Err(error) = spawned {
                // The queued call waits for a running thread instead.
                state.threads -= 1;
                tracing::warn!("starting a guest thread: {error}");
            }
        }
        // Else every thread is busy: a thread takes the call when it is
        // done with its own (the instance slots bound how many wait).
    }
}

impl Drop for GuestPool {
    fn drop(&mut self) {
        // Idle threads end; calls still running are abandoned with their
        // threads (comb is shutting down).
        self.shared.lock().stopping = true;
        self.shared.work.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes calls off the queue until idle too long, stopped, or demoted
    /// for good.
    fn work_loop(&self) {
        ON_POOL.with(|on_pool| on_pool.set(true));
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if let Some(job) = state.queue.pop_front() {
                        break Some(job);
                    }
                    if state.stopping {
                        break None;
                    }
                    state.idle += 1;
                    let (next, timeout) = self
                        .work
                        .wait_timeout(state, IDLE_THREAD_TIMEOUT)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    state = next;
                    state.idle -= 1;
                    if timeout.timed_out() && state.queue.is_empty() {
                        break None;
                    }
                }
            };
            let Some(job) = job else { break };
            job();
            if DEMOTED.with(|demoted| demoted.replace(false)) && !set_nice(0) {
                break;
            }
        }
        self.lock().threads -= 1;
    }
}

/// Called from the epoch callback of a call that has run for
/// [`LONG_CALL`]: on a request's worker, the call moves to a pool thread
/// at its next yield; on a pool thread, the thread's priority is lowered
/// for the rest of the call.
pub(super) fn running_long() {
    RUNNING_LONG.with(|long| long.set(true));
    if ON_POOL.with(Cell::get) && !DEMOTED.with(|demoted| demoted.replace(true)) {
        set_nice(DEMOTED_NICE);
    }
}

fn panicked(panic: Box<dyn std::any::Any + Send>) -> CallPanicked {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    CallPanicked(message)
}

/// Sets the calling thread's nice value; whether it could.
fn set_nice(nice: i32) -> bool {
    rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice).is_ok()
}
