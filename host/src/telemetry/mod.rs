//! OpenTelemetry setup: the tracer, meter and logger providers, their
//! OTLP exporters, the propagator, the resource, and comb's own span and
//! log record pipelines, which feed comb's page too. Besides this module
//! only `dashboard` (it reads ended spans, `SpanData`, for the page) and
//! `logs` (the API has no global logger provider: it holds the one
//! installed here) touch the SDK; the rest of the code uses the OTel API
//! through [`crate::spans`] and [`crate::metrics`].
//!
//! Its rooms: this file sets the providers up and shuts them down;
//! `pipeline.rs` is the export pipeline (one thread per signal, exports as
//! tasks on comb's runtime) and `export_queue.rs` its queue, bounded and
//! shared fairly between plugins; `span_queue.rs` and `log_queue.rs` put
//! spans and log records into it; `exporters.rs` builds the OTLP crate's
//! exporters (with comb's header precedence); `otlp_http.rs` is comb's own
//! OTLP/HTTP span exporter and `retry.rs` when it tries again;
//! `on_runtime.rs` runs the metric reader's exports on comb's runtime.

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
    logs::{LogExporter as _, SdkLoggerProvider},
    metrics::{PeriodicReader, SdkMeterProvider},
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::{SdkTracerProvider, SpanData},
};

pub use self::span_queue::SpanIntake;
use self::{
    exporters::{grpc, http_client, log_exporter, metric_exporter},
    log_queue::{LOG_EXPORT_BATCH, LOG_QUEUE_BYTES, LOG_QUEUE_RECORDS, LogIntake, LogSender},
    on_runtime::OnRuntime,
    otlp_http::HttpSpanExporter,
    pipeline::{Observer, Pipeline, Settings},
    span_queue::{SPAN_QUEUE_BYTES, SpanSender},
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
mod pipeline;
mod retry;
mod span_queue;

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
    /// reqwest, tonic) run their exports on it, the pipelines' as tasks,
    /// the metric reader's through `OnRuntime`.
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
        let exporter = match &target {
            None => None,
            Some(target) => Some(
                match target.protocol {
                    OtlpProtocol::HttpProtobuf => {
                        SpanSender::Http(HttpSpanExporter::new(target, http_client(target)?)?)
                    }
                    OtlpProtocol::Grpc => SpanSender::Grpc(
                        grpc(
                            opentelemetry_otlp::SpanExporter::builder().with_tonic(),
                            target,
                        )?
                        .build()
                        .with_context(|| {
                            format!("building the OTLP span exporter for {}", target.url)
                        })?,
                    ),
                }
                .with_resource(&resource),
            ),
        };
        // comb's page sees every span the pipeline takes; spans it dropped
        // before that are counted on the page.
        let (observe, dropped) = match recorder {
            Some(recorder) => {
                let page = recorder.clone();
                let observe: Observer<Arc<SpanData>> =
                    Box::new(move |spans| page.record(spans.iter().map(|(span, _)| span)));
                (Some(observe), recorder.dropped())
            }
            None => (None, Arc::default()),
        };
        let pipeline = (observe.is_some() || exporter.is_some()).then(|| {
            SpanIntake(Arc::new(Pipeline::start(
                Settings {
                    item: "span",
                    max_items: config.bsp_max_queue_size,
                    max_bytes: SPAN_QUEUE_BYTES,
                    batch: config.bsp_max_export_batch_size,
                    delay: Duration::from_millis(config.bsp_schedule_delay_ms),
                    timeout: Duration::from_millis(config.bsp_export_timeout_ms),
                },
                observe,
                exporter,
                dropped,
            )))
        });
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
                let mut exporter = log_exporter(target)?;
                exporter.set_resource(&resource);
                let pipeline = Pipeline::start(
                    Settings {
                        item: "log record",
                        max_items: LOG_QUEUE_RECORDS,
                        max_bytes: LOG_QUEUE_BYTES,
                        batch: LOG_EXPORT_BATCH,
                        delay: Duration::from_millis(config.blrp_schedule_delay_ms),
                        timeout: Duration::from_millis(config.blrp_export_timeout_ms),
                    },
                    None,
                    Some(LogSender(exporter)),
                    Arc::default(),
                );
                let provider = SdkLoggerProvider::builder()
                    .with_resource(resource)
                    .with_log_processor(LogIntake(Arc::new(pipeline)))
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
    /// Each provider's shutdown blocks its thread until its pipeline or
    /// metric reader has exported what it holds (at most 5 s each), which
    /// takes the runtime's workers; so it runs on a blocking thread, never
    /// on a worker.
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
