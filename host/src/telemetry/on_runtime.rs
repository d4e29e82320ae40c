//! The bridge between the SDK's export threads and comb's Tokio runtime.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
    time::Duration,
};

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::{
    error::{OTelSdkError, OTelSdkResult},
    logs::{LogBatch, LogExporter},
    metrics::{Temporality, data::ResourceMetrics, exporter::PushMetricExporter},
    trace::{SpanData, SpanExporter},
};

use super::{
    export_queue::{ExportBudget, estimated_size, in_chunks},
    log_queue,
};

/// An async OTLP exporter, polled with comb's Tokio runtime entered.
///
/// The SDK's batch span processor and periodic metric reader call their
/// exporter from threads of their own, where reqwest and tonic find no
/// reactor and panic (every span silently lost). Entering the runtime for
/// each poll lets their sockets and timers register with it, while the
/// runtime's workers drive them.
///
/// Why not the SDK's Tokio-task span processor: it sends every ended span
/// to its task through a channel, a task wake per span on the request path.
/// The thread processor pushes onto a bounded queue and wakes its thread
/// once per batch; with a healthy local sink it also stopped dropping
/// spans under load.
#[derive(Debug)]
pub(super) struct OnRuntime<E> {
    exporter: E,
    runtime: tokio::runtime::Handle,
    /// For spans and log records: what each export hands back once it is
    /// over.
    budget: Option<Arc<ExportBudget>>,
    /// Set when comb is about to drop its runtime: polling an export then
    /// would panic in the runtime's timers, so it is abandoned instead.
    closing: Arc<AtomicBool>,
}

impl<E> OnRuntime<E> {
    /// Wraps `exporter`; must be called on the runtime.
    pub(super) fn new(exporter: E, closing: &Arc<AtomicBool>) -> Self {
        OnRuntime {
            exporter,
            runtime: tokio::runtime::Handle::current(),
            budget: None,
            closing: closing.clone(),
        }
    }

    /// Releases each exported batch from `budget` when its export is over
    /// (sent, failed, or abandoned).
    pub(super) fn releasing(self, budget: Arc<ExportBudget>) -> Self {
        OnRuntime {
            budget: Some(budget),
            ..self
        }
    }

    /// Polls `future` with the runtime entered. The guard lives only
    /// inside each poll, so the future stays `Send`.
    async fn entered<F: Future<Output = OTelSdkResult>>(&self, future: F) -> OTelSdkResult {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            if self.closing.load(Ordering::Acquire) {
                return Poll::Ready(Err(OTelSdkError::InternalFailure(
                    "comb shut down before this export finished".into(),
                )));
            }
            let _entered = self.runtime.enter();
            future.as_mut().poll(cx)
        })
        .await
    }
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    /// Exports `batch` in requests of bounded size (see [`in_chunks`]),
    /// then hands its room in the export queue back.
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let _held = self.budget.as_deref().map(|budget| budget.held(&batch));
        in_chunks(batch, estimated_size, |chunk| {
            self.entered(self.exporter.export(chunk))
        })
        .await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.exporter.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for OnRuntime<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.entered(self.exporter.export(metrics)).await
    }

    fn force_flush(&self) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.exporter.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.exporter.temporality()
    }
}

impl<E: LogExporter> LogExporter for OnRuntime<E> {
    /// Exports `batch` in requests of bounded size, then hands its room in
    /// the log record queue back.
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let records: Vec<_> = batch.iter().collect();
        let _held = self.budget.as_deref().map(|budget| {
            budget.held_items(records.iter().map(|(record, scope)| {
                (log_queue::owner(scope), log_queue::estimated_size(record))
            }))
        });
        in_chunks(
            records,
            |(record, _)| log_queue::estimated_size(record),
            |chunk| async move {
                // The SDK's constructor for a batch of borrowed records,
                // which it documents as meant for its own use: a chunk of
                // the batch it handed over, re-borrowed.
                self.entered(self.exporter.export(LogBatch::new(&chunk)))
                    .await
            },
        )
        .await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter.set_resource(resource);
    }
}
