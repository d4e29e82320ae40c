//! OpenTelemetry setup: the tracer and meter providers, their OTLP
//! exporters, the propagator, the resource, and the in-memory recorder
//! behind comb's own page. Besides this module only `dashboard` (it records
//! ended spans, `SpanData`, for the page) and `logs` (the API has no global
//! logger provider: it holds the one installed here) touch the SDK; the rest
//! of the code uses the OTel API through [`crate::spans`] and
//! [`crate::metrics`].
//!
//! Its rooms: this file sets the providers up and shuts them down;
//! `on_runtime.rs` runs the SDK's exports on comb's Tokio runtime;
//! `export_queue.rs` bounds the span export queue (a share per plugin) and
//! sends batches in chunks; `log_queue.rs` puts plugins' log records
//! behind the same bounds; `exporters.rs` builds the exporters (the OTLP
//! crate's, with comb's header precedence); `otlp_http.rs` is comb's own
//! OTLP/HTTP span exporter and `retry.rs` when it tries again.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use opentelemetry::{
    KeyValue, global,
    propagation::{TextMapCompositePropagator, TextMapPropagator},
};
use opentelemetry_aws::trace::{XrayIdGenerator, XrayPropagator};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{BatchLogProcessor, SdkLoggerProvider},
    metrics::{PeriodicReader, SdkMeterProvider},
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter,
        SpanProcessor,
    },
};

use self::{
    export_queue::{Budgeted, EXPORT_QUEUE_BYTES, ExportBudget},
    exporters::{grpc, http_client, log_exporter, metric_exporter},
    log_queue::{BudgetedLogs, LOG_EXPORT_BATCH, LOG_QUEUE_BYTES, LOG_QUEUE_RECORDS},
    on_runtime::OnRuntime,
    otlp_http::HttpSpanExporter,
};
use crate::{
    config::{OtlpProtocol, OtlpTarget, Propagator, Signal, TelemetryConfig},
    dashboard::Recorder,
};

mod export_queue;
mod exporters;
mod log_queue;
mod on_runtime;
mod otlp_http;
mod retry;

/// Where comb's spans go, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `OTEL_SDK_DISABLED=true`: no spans at all.
    Disabled,
    /// No endpoint configured: spans are recorded (so trace ids appear in
    /// the log) but never exported.
    LogOnly,
    /// Exported over OTLP.
    Otlp(OtlpTarget),
}

/// The installed tracer provider. Keep it alive for the life of the server
/// and call [`Telemetry::shutdown`] at the end: that flushes pending spans.
pub struct Telemetry {
    /// comb's span pipeline, for spans made outside the tracer.
    intake: Option<SpanIntake>,
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    logger_provider: Option<SdkLoggerProvider>,
    destination: Destination,
    metrics_target: Option<OtlpTarget>,
    logs_target: Option<OtlpTarget>,
    /// Set once shutdown has flushed what it could: see `OnRuntime`.
    closing: Arc<AtomicBool>,
}

impl Telemetry {
    /// Installs the global tracer and meter providers and the propagator
    /// from `config`. Unless the SDK is disabled, `recorder` (comb's own
    /// page, when served) gets every ended span too, exported or not.
    ///
    /// Must run inside the Tokio runtime: both OTLP transports (async
    /// reqwest, tonic) run their exports on it, see `OnRuntime` in this module.
    pub fn init(config: &TelemetryConfig, recorder: Option<&Recorder>) -> Result<Telemetry> {
        global::set_text_map_propagator(propagator(&config.propagators));
        if config.sdk_disabled {
            return Ok(Telemetry {
                intake: None,
                tracer_provider: None,
                meter_provider: None,
                logger_provider: None,
                destination: Destination::Disabled,
                metrics_target: None,
                logs_target: None,
                closing: Arc::default(),
            });
        }
        let resource = Resource::builder_empty()
            .with_attributes(
                config
                    .resource_attributes()
                    .into_iter()
                    .map(|(key, value)| KeyValue::new(key, value)),
            )
            .build();

        let closing = Arc::new(AtomicBool::new(false));
        let mut tracing = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_max_events_per_span(config.span_event_count_limit)
            .with_max_attributes_per_span(config.span_attribute_count_limit as u32);
        if config.xray_trace_ids {
            tracing = tracing.with_id_generator(XrayIdGenerator::default());
        }
        let target = config.otlp_target(Signal::Traces);
        let mut export = None;
        if let Some(target) = &target {
            let budget = Arc::new(ExportBudget::new(
                config.bsp_max_queue_size,
                EXPORT_QUEUE_BYTES,
            ));
            let batch = |exporter| {
                BatchSpanProcessor::builder(
                    OnRuntime::new(exporter, &closing).releasing(budget.clone()),
                )
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_max_queue_size(config.bsp_max_queue_size)
                        .with_max_export_batch_size(config.bsp_max_export_batch_size)
                        .build(),
                )
                .build()
            };
            let batch = match target.protocol {
                OtlpProtocol::HttpProtobuf => batch(SpanSender::Http(HttpSpanExporter::new(
                    target,
                    http_client(target)?,
                )?)),
                OtlpProtocol::Grpc => batch(SpanSender::Grpc(
                    grpc(
                        opentelemetry_otlp::SpanExporter::builder().with_tonic(),
                        target,
                    )?
                    .build()
                    .with_context(|| {
                        format!("building the OTLP span exporter for {}", target.url)
                    })?,
                )),
            };
            export = Some(Budgeted { batch, budget });
        }
        let pipeline = match (recorder.map(Recorder::processor), export) {
            (Some(page), Some(export)) => Some(SpanIntake::new(Both(page, export), &resource)),
            (Some(page), None) => Some(SpanIntake::new(page, &resource)),
            (None, Some(export)) => Some(SpanIntake::new(export, &resource)),
            (None, None) => None,
        };
        if let Some(pipeline) = &pipeline {
            tracing = tracing.with_span_processor(pipeline.clone());
        }
        let tracer_provider = tracing.build();
        global::set_tracer_provider(tracer_provider.clone());

        // Metrics only go out over OTLP; with no endpoint the global meter
        // stays the no-op one and instruments cost nothing.
        let metrics_target = config.otlp_target(Signal::Metrics);
        let meter_provider = match &metrics_target {
            Some(target) => {
                let reader =
                    PeriodicReader::builder(OnRuntime::new(metric_exporter(target)?, &closing))
                        .with_interval(Duration::from_millis(config.metric_export_interval_ms))
                        .build();
                let provider = SdkMeterProvider::builder()
                    .with_resource(resource.clone())
                    .with_reader(reader)
                    .build();
                global::set_meter_provider(provider.clone());
                Some(provider)
            }
            None => None,
        };

        // Plugins' log lines as log records, only with a logs target: with
        // none there is no provider, and no plugin gets a logger.
        let logs_target = config.otlp_target(Signal::Logs);
        let logger_provider = match &logs_target {
            Some(target) => {
                let budget = Arc::new(ExportBudget::of(
                    "log record",
                    LOG_QUEUE_RECORDS,
                    LOG_QUEUE_BYTES,
                ));
                let batch = BatchLogProcessor::builder(
                    OnRuntime::new(log_exporter(target)?, &closing).releasing(budget.clone()),
                )
                .with_batch_config(
                    opentelemetry_sdk::logs::BatchConfigBuilder::default()
                        .with_max_queue_size(LOG_QUEUE_RECORDS)
                        .with_max_export_batch_size(LOG_EXPORT_BATCH)
                        .build(),
                )
                .build();
                let provider = SdkLoggerProvider::builder()
                    .with_resource(resource)
                    .with_log_processor(BudgetedLogs { batch, budget })
                    .build();
                crate::logs::install(provider.clone());
                Some(provider)
            }
            None => None,
        };
        Ok(Telemetry {
            intake: pipeline,
            tracer_provider: Some(tracer_provider),
            meter_provider,
            logger_provider,
            destination: target.map_or(Destination::LogOnly, Destination::Otlp),
            metrics_target,
            logs_target,
            closing,
        })
    }

    /// Where spans finished outside comb's tracer (a guest's own, through
    /// `wasi:otel`) join comb's: the page and the export queue, as the
    /// tracer's spans do. `None` when the SDK is off or nothing records.
    pub fn span_intake(&self) -> Option<SpanIntake> {
        self.intake.clone()
    }

    /// Where metrics go, when they are exported.
    pub fn metrics_destination(&self) -> Option<&OtlpTarget> {
        self.metrics_target.as_ref()
    }

    /// Where plugins' log records go, when they are exported.
    pub fn logs_destination(&self) -> Option<&OtlpTarget> {
        self.logs_target.as_ref()
    }

    /// Where spans go.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// Flushes pending spans, metrics and log records and shuts the
    /// exporters down.
    ///
    /// The SDK's shutdown blocks its thread until the batch processor and
    /// the metric reader have exported what they hold, which takes a Tokio
    /// worker (see `OnRuntime` in this module); so it runs on a blocking thread, never on
    /// a runtime worker.
    pub async fn shutdown(self) -> Result<()> {
        let (tracer_provider, meter_provider, logger_provider) = (
            self.tracer_provider,
            self.meter_provider,
            self.logger_provider,
        );
        let closing = self.closing;
        tokio::task::spawn_blocking(move || -> Result<()> {
            let traces = tracer_provider.map(|provider| provider.shutdown());
            let metrics = meter_provider.map(|provider| provider.shutdown());
            let logs = logger_provider.map(|provider| provider.shutdown());
            // Exports still running (the SDK gave up waiting: a stalled
            // collector) must not outlive the runtime they poll on.
            closing.store(true, Ordering::Release);
            traces.transpose().context("flushing spans at shutdown")?;
            metrics
                .transpose()
                .context("flushing metrics at shutdown")?;
            logs.transpose()
                .context("flushing log records at shutdown")?;
            Ok(())
        })
        .await
        .context("telemetry shutdown task panicked")?
    }
}

/// The propagator for `OTEL_PROPAGATORS`: each one named, in order (a
/// later one wins where two find a context); `none` or an empty list
/// reads nothing.
fn propagator(names: &[Propagator]) -> TextMapCompositePropagator {
    let propagators = names
        .iter()
        .filter_map(|name| -> Option<Box<dyn TextMapPropagator + Send + Sync>> {
            match name {
                Propagator::TraceContext => Some(Box::new(TraceContextPropagator::new())),
                Propagator::Baggage => Some(Box::new(BaggagePropagator::new())),
                Propagator::Xray => Some(Box::new(XrayPropagator::new())),
                Propagator::None => None,
            }
        })
        .collect();
    TextMapCompositePropagator::new(propagators)
}

/// Two span processors as one: the SDK clones every ended span once per
/// processor on its provider, so comb's page and the exporter side by
/// side cost two clones (2 % of comb's CPU under load); as one, only the
/// page's copy is made and the exporter takes the span itself.
#[derive(Debug)]
struct Both<A, B>(A, B);

impl<A: SpanProcessor, B: SpanProcessor> SpanProcessor for Both<A, B> {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
        self.1.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span.clone());
        self.1.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        let first = self.0.force_flush();
        first.and(self.1.force_flush())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let first = self.0.shutdown_with_timeout(timeout);
        first.and(self.1.shutdown_with_timeout(timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
        self.1.set_resource(resource);
    }
}

/// comb's span pipeline (the page and the export queue) as one shared
/// processor: the tracer provider holds one handle, and spans finished
/// elsewhere (a guest's own, already ended, with its own ids and times)
/// come in through another, so they meet the same bounds and shares.
#[derive(Debug, Clone)]
pub struct SpanIntake(Arc<dyn SpanProcessor>);

impl SpanIntake {
    /// `pipeline`, with its resource set now: once shared it cannot be set.
    fn new(mut pipeline: impl SpanProcessor + 'static, resource: &Resource) -> Self {
        pipeline.set_resource(resource);
        SpanIntake(Arc::new(pipeline))
    }

    /// One finished span, as the tracer hands over its own when they end.
    pub fn end(&self, span: SpanData) {
        self.0.on_end(span);
    }
}

impl SpanProcessor for SpanIntake {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    /// Set once, in [`SpanIntake::new`].
    fn set_resource(&mut self, _resource: &Resource) {}
}

/// The span exporter for either transport: over HTTP comb's own (see
/// [`otlp_http`]), over gRPC the OTLP crate's.
#[derive(Debug)]
enum SpanSender {
    Http(HttpSpanExporter),
    Grpc(opentelemetry_otlp::SpanExporter),
}

impl SpanExporter for SpanSender {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self {
            SpanSender::Http(exporter) => exporter.export(batch).await,
            SpanSender::Grpc(exporter) => exporter.export(batch).await,
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self {
            SpanSender::Http(exporter) => exporter.shutdown_with_timeout(timeout),
            SpanSender::Grpc(exporter) => exporter.shutdown_with_timeout(timeout),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match self {
            SpanSender::Http(exporter) => exporter.force_flush(),
            SpanSender::Grpc(exporter) => exporter.force_flush(),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        match self {
            SpanSender::Http(exporter) => exporter.set_resource(resource),
            SpanSender::Grpc(exporter) => exporter.set_resource(resource),
        }
    }
}
