//! The bridge between the SDK's metric reader thread and comb's Tokio
//! runtime. (Spans and log records need none: comb's pipeline starts
//! their exports as tasks on the runtime.)

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
    time::Duration,
};

use opentelemetry_sdk::{
    error::{OTelSdkError, OTelSdkResult},
    metrics::{Temporality, data::ResourceMetrics, exporter::PushMetricExporter},
};

/// An async OTLP exporter, polled with comb's Tokio runtime entered.
///
/// The SDK's periodic metric reader calls its exporter from a thread of
/// its own, where reqwest and tonic find no reactor and panic (every
/// export silently lost). Entering the runtime for each poll lets their
/// sockets and timers register with it, while the runtime's workers drive
/// them.
#[derive(Debug)]
pub(super) struct OnRuntime<E> {
    exporter: E,
    runtime: tokio::runtime::Handle,
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
            closing: closing.clone(),
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
