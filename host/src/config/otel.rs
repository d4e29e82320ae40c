//! The OpenTelemetry settings: the standard `OTEL_*` variables (each also
//! a flag), with the OTLP exporter's per-signal precedence.

use std::{path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use super::{DEFAULT_OTLP_TIMEOUT, DEFAULT_SERVICE_NAME, Secret};
use crate::limits;

/// OpenTelemetry settings, from the standard `OTEL_*` environment variables.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "OpenTelemetry (standard OTEL_* variables)")]
pub struct TelemetryConfig {
    /// Turn OpenTelemetry off entirely: no spans are recorded or exported.
    #[arg(long = "otel-sdk-disabled", env = "OTEL_SDK_DISABLED", default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub sdk_disabled: bool,

    /// How trace context is read from requests: a comma-separated list of
    /// `tracecontext` (W3C), `baggage`, `xray` (AWS `X-Amzn-Trace-Id`) or
    /// `none`.
    #[arg(
        long = "otel-propagators",
        env = "OTEL_PROPAGATORS",
        value_delimiter = ',',
        default_value = "tracecontext,baggage",
        value_name = "LIST"
    )]
    pub propagators: Vec<Propagator>,

    /// Generate trace ids that AWS X-Ray accepts (the first 32 bits are the
    /// start time in epoch seconds), for traces sent to X-Ray through the
    /// AWS Distro for OpenTelemetry collector.
    #[arg(long = "xray-trace-ids", env = "COMB_XRAY_TRACE_IDS", default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub xray_trace_ids: bool,

    /// The service name on every span; Honeycomb makes it the dataset.
    /// Defaults to `service.name` from OTEL_RESOURCE_ATTRIBUTES, else `comb`.
    #[arg(
        long = "otel-service-name",
        env = "OTEL_SERVICE_NAME",
        value_name = "NAME"
    )]
    pub service_name: Option<String>,

    /// Extra resource attributes, `key=value,key2=value2` (percent-encoded).
    #[arg(
        long = "otel-resource-attributes",
        env = "OTEL_RESOURCE_ATTRIBUTES",
        value_name = "PAIRS"
    )]
    pub resource_attributes: Option<String>,

    /// Where spans go: `otlp` (the default) or `none`. With `none`, spans
    /// are still recorded for comb's page but never exported.
    #[arg(
        long = "otel-traces-exporter",
        env = "OTEL_TRACES_EXPORTER",
        default_value = "otlp",
        value_name = "EXPORTER"
    )]
    pub traces_exporter: Exporter,

    /// Where metrics go: `otlp` (the default) or `none`, e.g. for a
    /// backend that takes traces only and refuses every metrics export.
    #[arg(
        long = "otel-metrics-exporter",
        env = "OTEL_METRICS_EXPORTER",
        default_value = "otlp",
        value_name = "EXPORTER"
    )]
    pub metrics_exporter: Exporter,

    /// Where log records go: `otlp` (the default) or `none`. Plugins' log
    /// lines (the `log` interface, stdout and stderr, `wasi:otel` logs)
    /// are OTLP log records besides lines in comb's log and span events.
    #[arg(
        long = "otel-logs-exporter",
        env = "OTEL_LOGS_EXPORTER",
        default_value = "otlp",
        value_name = "EXPORTER"
    )]
    pub logs_exporter: Exporter,

    /// The OTLP base endpoint for all signals, e.g. `https://api.honeycomb.io`.
    /// With http/protobuf, traces go to `<endpoint>/v1/traces`. Unset (and no
    /// traces endpoint either): comb exports nothing.
    #[arg(
        long = "otlp-endpoint",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub endpoint: Option<String>,

    /// The OTLP endpoint for traces only, used as given (no path added).
    #[arg(
        long = "otlp-traces-endpoint",
        env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        value_name = "URL"
    )]
    pub traces_endpoint: Option<String>,

    /// Headers sent with every export, `name=value,name2=value2`, e.g.
    /// `x-honeycomb-team=YOUR_API_KEY`.
    #[arg(
        long = "otlp-headers",
        env = "OTEL_EXPORTER_OTLP_HEADERS",
        value_name = "PAIRS",
        hide_env_values = true
    )]
    pub headers: Option<Secret>,

    /// Headers for trace exports only; added to (and override) the above.
    #[arg(
        long = "otlp-traces-headers",
        env = "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        value_name = "PAIRS",
        hide_env_values = true
    )]
    pub traces_headers: Option<Secret>,

    /// The OTLP transport.
    #[arg(
        long = "otlp-protocol",
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        value_name = "PROTOCOL"
    )]
    pub protocol: Option<OtlpProtocol>,

    /// The OTLP transport for traces only.
    #[arg(
        long = "otlp-traces-protocol",
        env = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        value_name = "PROTOCOL"
    )]
    pub traces_protocol: Option<OtlpProtocol>,

    /// Compress exports: `gzip` or `none` (the default).
    #[arg(
        long = "otlp-compression",
        env = "OTEL_EXPORTER_OTLP_COMPRESSION",
        value_name = "ALGORITHM"
    )]
    pub compression: Option<OtlpCompression>,

    /// Compression for trace exports only.
    #[arg(
        long = "otlp-traces-compression",
        env = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        value_name = "ALGORITHM"
    )]
    pub traces_compression: Option<OtlpCompression>,

    /// Compression for metric exports only.
    #[arg(
        long = "otlp-metrics-compression",
        env = "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        value_name = "ALGORITHM"
    )]
    pub metrics_compression: Option<OtlpCompression>,

    /// A PEM file of the CA certificates that verify the collector's TLS
    /// certificate, used instead of the system's roots (a collector with a
    /// private CA).
    #[arg(
        long = "otlp-certificate",
        env = "OTEL_EXPORTER_OTLP_CERTIFICATE",
        value_name = "FILE"
    )]
    pub certificate: Option<PathBuf>,

    /// The CA certificates for trace exports only.
    #[arg(
        long = "otlp-traces-certificate",
        env = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        value_name = "FILE"
    )]
    pub traces_certificate: Option<PathBuf>,

    /// The CA certificates for metric exports only.
    #[arg(
        long = "otlp-metrics-certificate",
        env = "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
        value_name = "FILE"
    )]
    pub metrics_certificate: Option<PathBuf>,

    /// The export timeout in milliseconds (default 10000).
    #[arg(
        long = "otlp-timeout",
        env = "OTEL_EXPORTER_OTLP_TIMEOUT",
        value_name = "MS"
    )]
    pub timeout_ms: Option<u64>,

    /// The export timeout for traces only, in milliseconds.
    #[arg(
        long = "otlp-traces-timeout",
        env = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        value_name = "MS"
    )]
    pub traces_timeout_ms: Option<u64>,

    /// The OTLP endpoint for metrics only, used as given (no path added).
    #[arg(
        long = "otlp-metrics-endpoint",
        env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        value_name = "URL"
    )]
    pub metrics_endpoint: Option<String>,

    /// Headers for metric exports only; added to (and override) the general ones.
    #[arg(
        long = "otlp-metrics-headers",
        env = "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        value_name = "PAIRS",
        hide_env_values = true
    )]
    pub metrics_headers: Option<Secret>,

    /// The OTLP transport for metrics only.
    #[arg(
        long = "otlp-metrics-protocol",
        env = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        value_name = "PROTOCOL"
    )]
    pub metrics_protocol: Option<OtlpProtocol>,

    /// The export timeout for metrics only, in milliseconds.
    #[arg(
        long = "otlp-metrics-timeout",
        env = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
        value_name = "MS"
    )]
    pub metrics_timeout_ms: Option<u64>,

    /// The OTLP endpoint for logs only, used as given (no path added).
    #[arg(
        long = "otlp-logs-endpoint",
        env = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        value_name = "URL"
    )]
    pub logs_endpoint: Option<String>,

    /// Headers for log exports only; added to (and override) the general ones.
    #[arg(
        long = "otlp-logs-headers",
        env = "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
        value_name = "PAIRS",
        hide_env_values = true
    )]
    pub logs_headers: Option<Secret>,

    /// The OTLP transport for logs only.
    #[arg(
        long = "otlp-logs-protocol",
        env = "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
        value_name = "PROTOCOL"
    )]
    pub logs_protocol: Option<OtlpProtocol>,

    /// Compression for log exports only.
    #[arg(
        long = "otlp-logs-compression",
        env = "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
        value_name = "ALGORITHM"
    )]
    pub logs_compression: Option<OtlpCompression>,

    /// The CA certificates for log exports only.
    #[arg(
        long = "otlp-logs-certificate",
        env = "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
        value_name = "FILE"
    )]
    pub logs_certificate: Option<PathBuf>,

    /// The export timeout for logs only, in milliseconds.
    #[arg(
        long = "otlp-logs-timeout",
        env = "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
        value_name = "MS"
    )]
    pub logs_timeout_ms: Option<u64>,

    /// Events one span keeps (the SDK's default is 128). Higher here, so
    /// all of a call's log lines (up to 256) fit on its spans.
    #[arg(
        long = "otel-span-event-count-limit",
        env = "OTEL_SPAN_EVENT_COUNT_LIMIT",
        default_value_t = limits::DEFAULT_SPAN_EVENT_COUNT as u32,
        value_name = "N"
    )]
    pub span_event_count_limit: u32,

    /// Attributes one span keeps; the SDK drops further ones.
    #[arg(
        long = "otel-span-attribute-count-limit",
        env = "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
        default_value_t = limits::DEFAULT_SPAN_ATTRIBUTE_COUNT,
        value_name = "N"
    )]
    pub span_attribute_count_limit: usize,

    /// Ended spans waiting for export; past it, spans are dropped (counted
    /// in the log). The SDK's default is 2048; comb ends three spans per
    /// request, and at 10 000+ requests a second on two cores a queue of
    /// 2048 overflowed between two exports to a healthy local collector
    /// (~18 % of spans lost; see docs/performance.md).
    #[arg(
        long = "otel-bsp-max-queue-size",
        env = "OTEL_BSP_MAX_QUEUE_SIZE",
        default_value_t = 8192,
        value_name = "N",
        value_parser = super::at_least_one::<usize>
    )]
    pub bsp_max_queue_size: usize,

    /// Spans per export request (the SDK's default is 512); larger
    /// requests are still cut at about 1 MiB. Up to four exports go out at
    /// once, holding at most half the queue.
    #[arg(
        long = "otel-bsp-max-export-batch-size",
        env = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        default_value_t = 2048,
        value_name = "N",
        value_parser = super::at_least_one::<usize>
    )]
    pub bsp_max_export_batch_size: usize,

    /// How long an ended span waits for a full batch before it is
    /// exported anyway, in milliseconds (the SDK's default).
    #[arg(
        long = "otel-bsp-schedule-delay",
        env = "OTEL_BSP_SCHEDULE_DELAY",
        default_value_t = 5000,
        value_name = "MS"
    )]
    pub bsp_schedule_delay_ms: u64,

    /// How long one export of spans may take, retries included, before it
    /// is abandoned, in milliseconds (the SDK's default).
    #[arg(
        long = "otel-bsp-export-timeout",
        env = "OTEL_BSP_EXPORT_TIMEOUT",
        default_value_t = 30_000,
        value_name = "MS",
        value_parser = super::at_least_one::<u64>
    )]
    pub bsp_export_timeout_ms: u64,

    /// How long a plugin's log record waits for a full batch before it is
    /// exported anyway, in milliseconds (the SDK's default).
    #[arg(
        long = "otel-blrp-schedule-delay",
        env = "OTEL_BLRP_SCHEDULE_DELAY",
        default_value_t = 1000,
        value_name = "MS"
    )]
    pub blrp_schedule_delay_ms: u64,

    /// How long one export of log records may take, retries included,
    /// before it is abandoned, in milliseconds (the SDK's default).
    #[arg(
        long = "otel-blrp-export-timeout",
        env = "OTEL_BLRP_EXPORT_TIMEOUT",
        default_value_t = 30_000,
        value_name = "MS",
        value_parser = super::at_least_one::<u64>
    )]
    pub blrp_export_timeout_ms: u64,

    /// How often metrics are exported, in milliseconds.
    #[arg(
        long = "metric-export-interval",
        env = "OTEL_METRIC_EXPORT_INTERVAL",
        default_value_t = 60_000,
        value_name = "MS"
    )]
    pub metric_export_interval_ms: u64,
}

/// An OTLP signal: each has its own `OTEL_EXPORTER_OTLP_<SIGNAL>_*`
/// variables and URL path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Spans, to `/v1/traces`.
    Traces,
    /// Metrics, to `/v1/metrics`.
    Metrics,
    /// Log records, to `/v1/logs`.
    Logs,
}

/// Where a signal is exported (`OTEL_TRACES_EXPORTER`,
/// `OTEL_METRICS_EXPORTER`, `OTEL_LOGS_EXPORTER`): the spec's `otlp` and
/// `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Exporter {
    /// OTLP, to the configured endpoint.
    Otlp,
    /// Not exported.
    None,
}

/// The trace-context formats comb can read (`OTEL_PROPAGATORS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Propagator {
    /// W3C Trace Context: `traceparent`, `tracestate`.
    #[value(name = "tracecontext")]
    TraceContext,
    /// W3C Baggage.
    Baggage,
    /// AWS X-Ray: `X-Amzn-Trace-Id`.
    Xray,
    /// None at all: every request starts a new trace.
    None,
}

/// The OTLP transports comb can export with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP POST (the OTel default; what Honeycomb's docs use).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// gRPC (with TLS for `https://` endpoints).
    #[value(name = "grpc")]
    Grpc,
}

/// How exports are compressed (`OTEL_EXPORTER_OTLP_COMPRESSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpCompression {
    /// gzip: about a tenth of the bytes for spans, for a little CPU.
    Gzip,
    /// Uncompressed.
    None,
}

/// Where and how traces are exported: the `OTEL_EXPORTER_OTLP_*` settings
/// after the per-signal variables are applied over the general ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpTarget {
    /// The full URL spans are sent to.
    pub url: String,
    /// The transport.
    pub protocol: OtlpProtocol,
    /// Headers (or gRPC metadata) sent with every export; their values
    /// may be API keys.
    pub headers: Vec<(String, Secret)>,
    /// How long one export may take.
    pub timeout: Duration,
    /// Whether exports are gzipped.
    pub gzip: bool,
    /// CA certificates (PEM) to trust instead of the system's roots.
    pub certificate: Option<PathBuf>,
}

impl TelemetryConfig {
    /// The exporter chosen for `signal`.
    pub fn exporter(&self, signal: Signal) -> Exporter {
        match signal {
            Signal::Traces => self.traces_exporter,
            Signal::Metrics => self.metrics_exporter,
            Signal::Logs => self.logs_exporter,
        }
    }

    /// Whether metrics are exported: OpenTelemetry on and a metrics target
    /// configured. Otherwise the global meter stays the no-op one.
    pub fn exports_metrics(&self) -> bool {
        !self.sdk_disabled && self.otlp_target(Signal::Metrics).is_some()
    }

    /// Where `signal` goes, or `None` when its exporter is `none` or no
    /// endpoint is configured: then comb makes no export attempts at all
    /// (the OTel default of localhost:4318 would only produce connection
    /// errors on a laptop without a collector).
    pub fn otlp_target(&self, signal: Signal) -> Option<OtlpTarget> {
        if self.exporter(signal) == Exporter::None {
            return None;
        }
        let (endpoint, headers, protocol, timeout_ms, compression, certificate, path) = match signal
        {
            Signal::Traces => (
                &self.traces_endpoint,
                &self.traces_headers,
                self.traces_protocol,
                self.traces_timeout_ms,
                self.traces_compression,
                &self.traces_certificate,
                "/v1/traces",
            ),
            Signal::Metrics => (
                &self.metrics_endpoint,
                &self.metrics_headers,
                self.metrics_protocol,
                self.metrics_timeout_ms,
                self.metrics_compression,
                &self.metrics_certificate,
                "/v1/metrics",
            ),
            Signal::Logs => (
                &self.logs_endpoint,
                &self.logs_headers,
                self.logs_protocol,
                self.logs_timeout_ms,
                self.logs_compression,
                &self.logs_certificate,
                "/v1/logs",
            ),
        };
        let protocol = protocol
            .or(self.protocol)
            .unwrap_or(OtlpProtocol::HttpProtobuf);
        let url = match (endpoint, &self.endpoint) {
            (Some(url), _) if !url.is_empty() => url.clone(),
            (_, Some(base)) if !base.is_empty() => match protocol {
                // The spec: the signal path is appended to the base endpoint
                // for HTTP; gRPC has no path.
                OtlpProtocol::HttpProtobuf => format!("{}{path}", base.trim_end_matches('/')),
                OtlpProtocol::Grpc => base.clone(),
            },
            _ => return None,
        };
        let pairs = |headers: &Option<Secret>| {
            parse_pairs(headers.as_ref().map_or("", Secret::expose))
                .into_iter()
                .map(|(name, value)| (name, Secret::from(value)))
        };
        let mut merged: Vec<(String, Secret)> = pairs(&self.headers).collect();
        for (name, value) in pairs(headers) {
            merged.retain(|(existing, _)| !existing.eq_ignore_ascii_case(&name));
            merged.push((name, value));
        }
        let timeout = timeout_ms
            .or(self.timeout_ms)
            .map_or(DEFAULT_OTLP_TIMEOUT, Duration::from_millis);
        Some(OtlpTarget {
            url,
            protocol,
            headers: merged,
            timeout,
            gzip: compression.or(self.compression) == Some(OtlpCompression::Gzip),
            certificate: certificate.clone().or_else(|| self.certificate.clone()),
        })
    }

    /// The resource attributes from `OTEL_RESOURCE_ATTRIBUTES`, plus
    /// `service.name` (from `OTEL_SERVICE_NAME`, which wins, else the
    /// attributes, else `DEFAULT_SERVICE_NAME`).
    pub fn resource_attributes(&self) -> Vec<(String, String)> {
        let mut attributes = parse_pairs(self.resource_attributes.as_deref().unwrap_or_default());
        let named = attributes.iter().any(|(key, _)| key == "service.name");
        match &self.service_name {
            Some(name) if !name.is_empty() => {
                attributes.retain(|(key, _)| key != "service.name");
                attributes.push(("service.name".into(), name.clone()));
            }
            _ if !named => attributes.push(("service.name".into(), DEFAULT_SERVICE_NAME.into())),
            _ => {}
        }
        attributes
    }
}

/// The names of the headers in `OTEL_EXPORTER_OTLP_HEADERS` and its
/// per-signal variants. The OTLP crate reads these variables itself and
/// puts their headers over the ones comb resolved (a flag's, say), so its
/// exporters remove these names and set the resolved headers again.
pub(crate) fn header_names_in_environment() -> Vec<String> {
    [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
    ]
    .iter()
    .filter_map(|variable| std::env::var(variable).ok())
    .flat_map(|text| parse_pairs(&text).into_iter().map(|(name, _)| name))
    .collect()
}

/// Parses the W3C-baggage-like `key=value,key2=value2` lists of the OTel
/// environment variables; values are percent-decoded, blanks are skipped.
fn parse_pairs(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()).then(|| (key.to_owned(), percent_decode(value.trim())))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
