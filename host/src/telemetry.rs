//! OpenTelemetry setup: the tracer provider, its OTLP exporter, the
//! propagator and the resource. Nothing else in comb touches the SDK; the
//! rest of the code uses the OTel API through [`crate::spans`].

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use opentelemetry::{KeyValue, global, propagation::TextMapCompositePropagator};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter},
};

use crate::config::{OtlpProtocol, OtlpTarget, TelemetryConfig};

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
    provider: Option<SdkTracerProvider>,
    destination: Destination,
}

impl Telemetry {
    /// Installs the global tracer provider and propagator from `config`.
    ///
    /// Must run inside the Tokio runtime: both OTLP transports (async
    /// reqwest, tonic) run their exports on it, see [`OnTokio`].
    pub fn init(config: &TelemetryConfig) -> Result<Telemetry> {
        global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        if config.sdk_disabled {
            return Ok(Telemetry {
                provider: None,
                destination: Destination::Disabled,
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
        let builder = SdkTracerProvider::builder().with_resource(resource);
        let target = config.otlp_target();
        let builder = match &target {
            Some(target) => {
                let exporter = span_exporter(target)?;
                builder.with_span_processor(
                    BatchSpanProcessor::builder(OnTokio::new(exporter)).build(),
                )
            }
            None => builder,
        };
        let provider = builder.build();
        global::set_tracer_provider(provider.clone());
        Ok(Telemetry {
            provider: Some(provider),
            destination: target.map_or(Destination::LogOnly, Destination::Otlp),
        })
    }

    /// Where spans go.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// Flushes pending spans and shuts the exporter down.
    ///
    /// The SDK's shutdown blocks its thread until the batch processor has
    /// exported what it holds, which takes a Tokio worker (see [`OnTokio`]);
    /// so it runs on a blocking thread, never on a runtime worker.
    pub async fn shutdown(self) -> Result<()> {
        let Some(provider) = self.provider else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .context("telemetry shutdown task panicked")?
            .context("flushing spans at shutdown")
    }
}

/// An async exporter run on comb's Tokio runtime for the SDK's batch span
/// processor, which queues ended spans for its own thread and calls the
/// exporter from there.
///
/// Why not the SDK's Tokio-task processor: it sends every ended span to
/// its task through a channel, a task wake per span on the request path
/// (measured: tracing cost ~25 % of throughput). The thread processor only
/// pushes onto a bounded queue and wakes its thread once per batch. Its
/// thread has no Tokio reactor, where reqwest and tonic panic, hence the
/// hop back onto the runtime for each export.
#[derive(Debug)]
struct OnTokio<E> {
    exporter: Arc<E>,
    runtime: tokio::runtime::Handle,
}

impl<E> OnTokio<E> {
    /// Wraps `exporter`; must be called on the runtime.
    fn new(exporter: E) -> Self {
        OnTokio {
            exporter: Arc::new(exporter),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl<E: SpanExporter + 'static> SpanExporter for OnTokio<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let exporter = self.exporter.clone();
        self.runtime
            .spawn(async move { exporter.export(batch).await })
            .await
            .unwrap_or_else(|error| Err(OTelSdkError::InternalFailure(error.to_string())))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporter.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // The processor sets the resource once, before the first export
        // could have cloned the exporter.
        if let Some(exporter) = Arc::get_mut(&mut self.exporter) {
            exporter.set_resource(resource);
        }
    }
}

fn span_exporter(target: &OtlpTarget) -> Result<opentelemetry_otlp::SpanExporter> {
    let exporter = match target.protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(&target.url)
            .with_timeout(target.timeout)
            .with_headers(target.headers.iter().cloned().collect::<HashMap<_, _>>())
            .build(),
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (name, value) in &target.headers {
                let name =
                    tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .with_context(|| {
                            format!("OTLP header name {name:?} is not valid gRPC metadata")
                        })?;
                let value = value.parse().with_context(|| {
                    format!("OTLP header {name:?} has a value that is not valid gRPC metadata")
                })?;
                metadata.insert(name, value);
            }
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&target.url)
                .with_timeout(target.timeout)
                .with_metadata(metadata);
            // TLS with the system's roots for https endpoints (Honeycomb's
            // api.honeycomb.io:443) and schemeless ones (which the OTLP
            // exporter treats as https); plain h2c for http://.
            let builder = if !target.url.starts_with("http://") {
                builder
                    .with_tls_config(tonic::transport::ClientTlsConfig::new().with_enabled_roots())
            } else {
                builder
            };
            builder.build()
        }
    };
    exporter.with_context(|| format!("building the OTLP exporter for {}", target.url))
}
