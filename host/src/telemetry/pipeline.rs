//! comb's export pipeline, one per signal (spans, log records): the
//! request path hands each ended item off once, to one thread that shows
//! it to comb's page (spans), queues it fairly between plugins
//! ([`FairQueue`]) and starts its exports on comb's Tokio runtime, several
//! at once.
//!
//! Why not the SDK's batch processors: their queue cannot give a flooding
//! plugin's room back when another plugin's items arrive, so comb's share
//! per plugin had to be a fixed half, which dropped a lone busy plugin's
//! spans with half the queue empty; they export one batch at a time, so a
//! healthy collector's round trip capped what reached it; and comb's page
//! needed a copy of every span and a queue and thread of its own.

use std::{
    future::Future,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};

use super::export_queue::{Admitted, FairQueue, Item, Taken, in_chunks};

/// How long the pipeline's thread gathers items before taking them: a
/// hand-off is a push onto a vector, not a wake-up per item.
const POLL: Duration = Duration::from_millis(25);

/// Exports in flight at once, at most (their items are also bounded: half
/// the queue). Two keep a local collector's round trip from capping what
/// reaches it; more only add contention on two cores.
const MAX_EXPORTS: usize = 4;

/// Where a signal's items go: one request's worth at a time.
pub(super) trait Exporter<T>: Send + Sync + 'static {
    /// Sends one request's items; the error says where and why.
    fn send(&self, items: Vec<T>) -> impl Future<Output = OTelSdkResult> + Send;
}

/// Sees every item the pipeline takes, before it is queued for export:
/// comb's page, for spans.
pub(super) type Observer<T> = Box<dyn FnMut(&[(T, usize)]) + Send>;

/// A pipeline's bounds and timing.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// What it carries, for its log lines: "span", "log record".
    pub(super) item: &'static str,
    /// Items queued or in flight, at most (and waiting for the thread).
    pub(super) max_items: usize,
    /// Their estimated bytes, at most.
    pub(super) max_bytes: usize,
    /// Items per export, at most (cut further at about 1 MiB a request).
    pub(super) batch: usize,
    /// How long an item waits for a full batch before it goes anyway.
    pub(super) delay: Duration,
    /// How long one export may take before it is abandoned.
    pub(super) timeout: Duration,
}

/// The request path's handle: pushes items, asks for a flush or the end.
#[derive(Debug)]
pub(super) struct Pipeline<T> {
    shared: Arc<Shared<T>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared<T> {
    intake: Mutex<Intake<T>>,
    wake: Condvar,
    settings: Settings,
    /// Items dropped before the thread took them (it fell behind).
    dropped: Arc<AtomicU64>,
}

/// What waits for the thread.
#[derive(Debug)]
struct Intake<T> {
    items: Vec<(T, usize)>,
    bytes: usize,
    /// The thread waits for the next item with no timeout: the next push
    /// wakes it (once per idle spell, not per item).
    idle: bool,
    /// Exports that ended.
    receipts: Vec<Ended>,
    asks: Vec<Ask>,
}

/// An export that ended: what it took, to hand back to the queue, and
/// whether the collector took it.
#[derive(Debug)]
struct Ended {
    taken: Taken,
    sent: bool,
}

/// A flush or shutdown waiting for the queue to empty.
#[derive(Debug)]
struct Ask {
    shutdown: bool,
    deadline: Instant,
    /// Answered with the number of exports that failed meanwhile.
    done: mpsc::Sender<usize>,
}

impl<T: Item> Pipeline<T> {
    /// Starts the thread. `observe` sees every item; `exporter`, when
    /// given, sends them. Items dropped before the thread took them are
    /// counted in `dropped`. Must run on the Tokio runtime exports run on.
    pub(super) fn start<E: Exporter<T>>(
        settings: Settings,
        observe: Option<Observer<T>>,
        exporter: Option<E>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        let shared = Arc::new(Shared {
            intake: Mutex::new(Intake {
                items: Vec::new(),
                bytes: 0,
                idle: false,
                receipts: Vec::new(),
                asks: Vec::new(),
            }),
            wake: Condvar::new(),
            settings,
            dropped,
        });
        let thread = Worker {
            queue: FairQueue::new(
                shared.settings.item,
                shared.settings.max_items,
                shared.settings.max_bytes,
            ),
            shared: shared.clone(),
            observe,
            exporter: exporter.map(Arc::new),
            runtime: tokio::runtime::Handle::current(),
            exports: 0,
            oldest: None,
            asks: Vec::new(),
            failed: 0,
        };
        let name = format!("comb-{}s", shared.settings.item.replace(' ', "-"));
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || thread.run())
            .expect("spawning an export pipeline thread");
        Pipeline {
            shared,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Hands `item`, about `bytes` large, to the thread; drops it (counted)
    /// when the thread has fallen a whole queue behind.
    pub(super) fn push(&self, item: T, bytes: usize) {
        let settings = &self.shared.settings;
        let mut intake = self.shared.lock();
        if intake.items.len() >= settings.max_items || intake.bytes + bytes > settings.max_bytes {
            drop(intake);
            if self.shared.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                let item = settings.item;
                tracing::warn!("comb's {item} pipeline cannot keep up; dropping {item}s");
            }
            return;
        }
        intake.items.push((item, bytes));
        intake.bytes += bytes;
        // A quarter of the queue waiting: take it now rather than at the
        // next poll.
        let wake = std::mem::replace(&mut intake.idle, false)
            || intake.items.len() == settings.max_items / 4;
        drop(intake);
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

impl<T> Pipeline<T> {
    /// Exports everything queued, waiting at most `timeout`.
    pub(super) fn flush(&self, timeout: Duration) -> OTelSdkResult {
        if self.thread().is_none() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.ask(false, timeout)
    }

    /// Exports everything queued, waiting at most `timeout`, and ends the
    /// thread. Later calls find it ended.
    pub(super) fn shutdown(&self, timeout: Duration) -> OTelSdkResult {
        let Some(thread) = self.thread().take() else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let result = self.ask(true, timeout);
        // Answered, the thread returns at once; past its deadline it
        // returns by itself, and is not waited for.
        if result.is_ok() {
            let _ = thread.join();
        }
        result
    }

    fn thread(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.thread.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ask(&self, shutdown: bool, timeout: Duration) -> OTelSdkResult {
        let (done, answer) = mpsc::channel();
        self.shared.lock().asks.push(Ask {
            shutdown,
            deadline: Instant::now() + timeout,
            done,
        });
        self.shared.wake.notify_one();
        let item = self.shared.settings.item;
        match answer.recv_timeout(timeout) {
            Ok(0) => Ok(()),
            // Sent, but not delivered: what the collector lost is lost.
            Ok(failed) => Err(OTelSdkError::InternalFailure(format!(
                "{failed} {item} export(s) failed while flushing"
            ))),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(OTelSdkError::Timeout(timeout)),
            // The thread dropped the ask: past its deadline, or ended.
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(OTelSdkError::InternalFailure(
                format!("{item}s still waiting for export were abandoned"),
            )),
        }
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Intake<T>> {
        // Nothing in the lock can panic halfway.
        self.intake.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pipeline's thread and what only it touches.
struct Worker<T, E> {
    shared: Arc<Shared<T>>,
    queue: FairQueue<T>,
    observe: Option<Observer<T>>,
    exporter: Option<Arc<E>>,
    runtime: tokio::runtime::Handle,
    /// Exports started and not yet ended.
    exports: usize,
    /// When the oldest queued item arrived, roughly: when the queue last
    /// went from nothing queued to something.
    oldest: Option<Instant>,
    asks: Vec<Ask>,
    /// Exports that failed while an ask waited.
    failed: usize,
}

impl<T: Item, E: Exporter<T>> Worker<T, E> {
    fn run(mut self) {
        loop {
            let (items, receipts) = self.gather();
            for ended in receipts {
                self.queue.release(ended.taken);
                self.exports -= 1;
                if !ended.sent && !self.asks.is_empty() {
                    self.failed += 1;
                }
            }
            if !items.is_empty() {
                if let Some(observe) = &mut self.observe {
                    observe(&items);
                }
                if self.exporter.is_some() {
                    self.queue_all(items);
                }
            }
            self.send();
            if self.answer() {
                return;
            }
        }
    }

    /// Waits for work, then takes what waits: items, ended exports' receipts
    /// and asks.
    fn gather(&mut self) -> (Vec<(T, usize)>, Vec<Ended>) {
        let shared = self.shared.clone();
        let mut intake = shared.lock();
        let quiet = |intake: &Intake<T>| {
            intake.items.is_empty() && intake.receipts.is_empty() && intake.asks.is_empty()
        };
        if quiet(&intake) && self.queue.queued() == 0 && self.asks.is_empty() {
            intake.idle = true;
            intake = (shared.wake)
                .wait_while(intake, |intake| intake.idle && quiet(intake))
                .unwrap_or_else(PoisonError::into_inner);
            intake.idle = false;
        }
        // Let items gather for a poll, unless something needs the thread
        // now: many items, an ended export, an ask.
        let wake_at = shared.settings.max_items / 4;
        intake = (shared.wake)
            .wait_timeout_while(intake, POLL, |intake| {
                intake.items.len() < wake_at && intake.receipts.is_empty() && intake.asks.is_empty()
            })
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        self.asks.append(&mut intake.asks);
        intake.bytes = 0;
        (
            std::mem::take(&mut intake.items),
            std::mem::take(&mut intake.receipts),
        )
    }

    fn queue_all(&mut self, items: Vec<(T, usize)>) {
        let item = self.queue.item();
        for (entry, bytes) in items {
            if self.queue.queued() == 0 {
                self.oldest = Some(Instant::now());
            }
            match self.queue.admit(entry, bytes) {
                Admitted::Queued | Admitted::Dropped { first_of: None } => {}
                Admitted::Dropped {
                    first_of: Some(owner),
                } => match owner.as_str() {
                    "" => tracing::warn!(
                        "{item}s of no plugin (such as 404s) fill the {item} export queue; \
                         dropping them until the collector catches up"
                    ),
                    plugin => tracing::warn!(
                        plugin,
                        "the plugin's {item}s fill the {item} export queue; dropping them \
                         until the collector catches up"
                    ),
                },
            }
        }
    }

    /// Starts exports while a batch is due and room to send it: a full
    /// batch, an item older than the delay, or a flush asked for.
    fn send(&mut self) {
        let Some(exporter) = &self.exporter else {
            return;
        };
        let settings = &self.shared.settings;
        let flushing = !self.asks.is_empty();
        while self.exports < MAX_EXPORTS
            && self.queue.queued() > 0
            && (flushing
                || self.queue.queued() >= settings.batch
                || self.oldest.is_some_and(|at| at.elapsed() >= settings.delay))
        {
            let Some(batch) = self.queue.take_batch(settings.batch) else {
                break;
            };
            if self.queue.queued() == 0 {
                self.oldest = None;
            }
            self.exports += 1;
            let (items, owners) = batch.into_parts();
            let mut receipt = Receipt {
                shared: self.shared.clone(),
                owners,
                sent: false,
            };
            let exporter = exporter.clone();
            let (item, timeout) = (settings.item, settings.timeout);
            self.runtime.spawn(async move {
                let sent =
                    tokio::time::timeout(timeout, in_chunks(items, |chunk| exporter.send(chunk)))
                        .await;
                match sent {
                    Ok(Ok(())) => receipt.sent = true,
                    Ok(Err(error)) => tracing::warn!("{item} export failed: {error}"),
                    Err(_) => tracing::warn!("{item} export abandoned after {timeout:?}"),
                }
                drop(receipt);
            });
        }
    }

    /// Answers the asks the queue's state now satisfies; true when the
    /// thread is to end.
    fn answer(&mut self) -> bool {
        let now = Instant::now();
        if self.queue.is_empty() || self.exporter.is_none() {
            let shutdown = self.asks.iter().any(|ask| ask.shutdown);
            let failed = std::mem::take(&mut self.failed);
            for ask in self.asks.drain(..) {
                let _ = ask.done.send(failed);
            }
            return shutdown;
        }
        // Past its deadline an ask is dropped (its caller has stopped
        // waiting); a shutdown then ends the thread with exports running.
        let late = self
            .asks
            .iter()
            .any(|ask| ask.shutdown && ask.deadline <= now);
        self.asks.retain(|ask| ask.deadline > now);
        late
    }
}

impl<T, E> Drop for Worker<T, E> {
    fn drop(&mut self) {
        let dropped = self.queue.dropped();
        if dropped == 0 {
            return;
        }
        // The field names the SDK's own warnings use, for scripts.
        match self.queue.item() {
            "span" => tracing::warn!(
                dropped_span_count = dropped,
                "spans dropped because the export queue was full"
            ),
            item => tracing::warn!(
                dropped_log_record_count = dropped,
                "{item}s dropped because the export queue was full"
            ),
        }
    }
}

/// What an export took from the queue, handed back when the export is
/// over: sent, failed, or dropped with the runtime.
struct Receipt<T> {
    shared: Arc<Shared<T>>,
    owners: Taken,
    /// Whether the collector took it.
    sent: bool,
}

impl<T> Drop for Receipt<T> {
    fn drop(&mut self) {
        let owners = std::mem::take(&mut self.owners);
        self.shared.lock().receipts.push(Ended {
            taken: owners,
            sent: self.sent,
        });
        self.shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    impl Item for u32 {
        fn owner(&self) -> &str {
            if self.is_multiple_of(2) {
                "even"
            } else {
                "odd"
            }
        }
    }

    /// Records each request; waits for `gate` (when set) before answering.
    #[derive(Default)]
    struct Recording {
        requests: Mutex<Vec<Vec<u32>>>,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
        gate: Option<Arc<tokio::sync::Semaphore>>,
        /// Refuse every request, as a collector that is down.
        refuse: bool,
    }

    impl Exporter<u32> for Arc<Recording> {
        async fn send(&self, items: Vec<u32>) -> OTelSdkResult {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                let _ = gate.acquire().await.map(|permit| permit.forget());
            }
            self.requests.lock().unwrap().push(items);
            self.running.fetch_sub(1, Ordering::SeqCst);
            match self.refuse {
                true => Err(OTelSdkError::InternalFailure("refused".into())),
                false => Ok(()),
            }
        }
    }

    fn settings(batch: usize, delay: Duration) -> Settings {
        Settings {
            item: "span",
            max_items: 1000,
            max_bytes: usize::MAX,
            batch,
            delay,
            timeout: Duration::from_secs(60),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_item_is_seen_and_exported_once_in_batches_and_a_flush_waits_for_them() {
        let exporter = Arc::new(Recording::default());
        let seen = Arc::new(AtomicUsize::new(0));
        let counted = seen.clone();
        let observe: Observer<u32> = Box::new(move |items| {
            counted.fetch_add(items.len(), Ordering::SeqCst);
        });
        // A delay longer than the test: only full batches and the flush send.
        let pipeline = Arc::new(Pipeline::start(
            settings(10, Duration::from_secs(3600)),
            Some(observe),
            Some(exporter.clone()),
            Arc::default(),
        ));
        for i in 0..95 {
            pipeline.push(i, 1);
        }
        let flushing = pipeline.clone();
        tokio::task::spawn_blocking(move || flushing.flush(Duration::from_secs(30)))
            .await
            .unwrap()
            .unwrap();
        let requests = exporter.requests.lock().unwrap().clone();
        let mut exported: Vec<u32> = requests.iter().flatten().copied().collect();
        exported.sort();
        assert_eq!(exported, (0..95).collect::<Vec<_>>(), "each item once");
        assert!(requests.iter().all(|r| r.len() <= 10), "{requests:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 95);
        let ended = tokio::task::spawn_blocking(move || {
            pipeline.shutdown(Duration::from_secs(30)).unwrap();
            // Once ended, asking again answers at once.
            let again = Duration::from_secs(3600);
            (pipeline.flush(again), pipeline.shutdown(again))
        })
        .await
        .unwrap();
        assert!(matches!(
            ended,
            (
                Err(OTelSdkError::AlreadyShutdown),
                Err(OTelSdkError::AlreadyShutdown)
            )
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exports_go_out_several_at_once_and_a_stalled_one_cannot_hold_shutdown() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let exporter = Arc::new(Recording {
            gate: Some(gate.clone()),
            ..Default::default()
        });
        let pipeline = Arc::new(Pipeline::start(
            settings(10, Duration::ZERO),
            None,
            Some(exporter.clone()),
            Arc::default(),
        ));
        for i in 0..100 {
            pipeline.push(i, 1);
        }
        // Every export waits at the gate: as many start as may.
        for _ in 0..200 {
            if exporter.running.load(Ordering::SeqCst) == MAX_EXPORTS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(exporter.most_at_once.load(Ordering::SeqCst), MAX_EXPORTS);
        // Still stalled, shutdown gives up at its deadline.
        let stopping = pipeline.clone();
        let stopped =
            tokio::task::spawn_blocking(move || stopping.shutdown(Duration::from_millis(300)))
                .await
                .unwrap();
        assert!(stopped.is_err(), "{stopped:?}");
        gate.add_permits(1000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_whose_exports_failed_says_so() {
        let exporter = Arc::new(Recording {
            refuse: true,
            ..Default::default()
        });
        let pipeline = Arc::new(Pipeline::start(
            settings(10, Duration::from_secs(3600)),
            None,
            Some(exporter.clone()),
            Arc::default(),
        ));
        for i in 0..25 {
            pipeline.push(i, 1);
        }
        let flushed =
            tokio::task::spawn_blocking(move || pipeline.shutdown(Duration::from_secs(30)))
                .await
                .unwrap();
        let error = flushed.unwrap_err().to_string();
        assert!(error.contains("span export(s) failed"), "{error}");
        assert_eq!(
            exporter.requests.lock().unwrap().len(),
            3,
            "each tried once"
        );
    }
}
