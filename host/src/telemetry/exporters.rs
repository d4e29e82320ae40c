//! The OTLP crate's exporters (metrics and logs over either transport,
//! spans over gRPC), built for a resolved [`OtlpTarget`].
//!
//! The crate reads `OTEL_EXPORTER_OTLP_[SIGNAL_]HEADERS` itself and puts
//! those headers over the ones it is given, so a flag's or a settings
//! file's headers would lose to the environment: the reverse of comb's
//! precedence (flag, then variable, then file). Every export here therefore
//! goes out with the environment's header names removed and the target's
//! resolved headers set, whatever the crate added.

use anyhow::{Context as _, Result};
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{
    Compression, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};

use crate::config::{self, OtlpProtocol, OtlpTarget};

/// The metric exporter for `target`, over either transport.
pub(super) fn metric_exporter(target: &OtlpTarget) -> Result<opentelemetry_otlp::MetricExporter> {
    let builder = opentelemetry_otlp::MetricExporter::builder();
    let exporter = match target.protocol {
        OtlpProtocol::HttpProtobuf => http(builder.with_http(), target)?.build(),
        OtlpProtocol::Grpc => grpc(builder.with_tonic(), target)?.build(),
    };
    exporter.with_context(|| format!("building the OTLP metric exporter for {}", target.url))
}

/// The log record exporter for `target`, over either transport.
pub(super) fn log_exporter(target: &OtlpTarget) -> Result<opentelemetry_otlp::LogExporter> {
    let builder = opentelemetry_otlp::LogExporter::builder();
    let exporter = match target.protocol {
        OtlpProtocol::HttpProtobuf => http(builder.with_http(), target)?.build(),
        OtlpProtocol::Grpc => grpc(builder.with_tonic(), target)?.build(),
    };
    exporter.with_context(|| format!("building the OTLP log exporter for {}", target.url))
}

/// An http/protobuf exporter builder set up for `target` (metrics, logs; spans
/// go through comb's own `HttpSpanExporter`).
fn http<B: WithExportConfig + WithHttpConfig>(builder: B, target: &OtlpTarget) -> Result<B> {
    let client = ResolvedHeaders {
        client: http_client(target)?,
        headers: header_map(target)?,
        from_environment: environment_header_names(),
    };
    let mut builder = builder
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(&target.url)
        .with_timeout(target.timeout)
        .with_http_client(client);
    if target.gzip {
        builder = builder.with_compression(Compression::Gzip);
    }
    Ok(builder)
}

/// The HTTP client for `target`: its timeout, and with a certificate file
/// trusting exactly that CA (as OTel SDKs do), else the system's roots.
pub(super) fn http_client(target: &OtlpTarget) -> Result<reqwest::Client> {
    crate::tls::install_crypto_provider();
    let mut client = reqwest::Client::builder().timeout(target.timeout);
    if let Some(path) = &target.certificate {
        let certificates = reqwest::Certificate::from_pem_bundle(&read_pem(path)?)
            .with_context(|| format!("reading the certificates in {}", path.display()))?;
        client = client.tls_certs_only(certificates);
    }
    client.build().context("building the OTLP HTTP client")
}

/// `target`'s headers as a header map, values marked sensitive (they may
/// be API keys: HTTP libraries leave such values out of their logs).
pub(super) fn header_map(target: &OtlpTarget) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (name, value) in &target.headers {
        let name = HeaderName::try_from(name.as_str())
            .with_context(|| format!("OTLP header name {name:?} is not a valid header"))?;
        let mut value = HeaderValue::try_from(value.expose())
            .with_context(|| format!("OTLP header {name:?} has an invalid value"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

/// The header names the OTLP crate reads from the environment itself.
fn environment_header_names() -> Vec<HeaderName> {
    config::header_names_in_environment()
        .iter()
        .filter_map(|name| HeaderName::try_from(name.as_str()).ok())
        .collect()
}

/// The crate's HTTP client, with the environment's headers replaced by
/// the resolved ones on every request (see the module's docs).
#[derive(Debug)]
struct ResolvedHeaders {
    client: reqwest::Client,
    headers: HeaderMap,
    from_environment: Vec<HeaderName>,
}

#[async_trait::async_trait]
impl HttpClient for ResolvedHeaders {
    async fn send_bytes(&self, mut request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let headers = request.headers_mut();
        for name in &self.from_environment {
            headers.remove(name);
        }
        for (name, value) in &self.headers {
            headers.insert(name, value.clone());
        }
        self.client.send_bytes(request).await
    }
}

/// A PEM file's bytes, with the file named in the error.
fn read_pem(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// A gRPC exporter builder (either signal) set up for `target`: headers
/// become metadata (set by an interceptor, after the crate's own from the
/// environment); TLS with the system's roots for https endpoints
/// (Honeycomb's api.honeycomb.io:443) and schemeless ones (which the OTLP
/// exporter treats as https); plain h2c for http://.
pub(super) fn grpc<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    target: &OtlpTarget,
) -> Result<B> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (name, value) in &target.headers {
        let name =
            tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                .with_context(|| format!("OTLP header name {name:?} is not valid gRPC metadata"))?;
        let mut value: tonic::metadata::AsciiMetadataValue =
            value.expose().parse().with_context(|| {
                format!("OTLP header {name:?} has a value that is not valid gRPC metadata")
            })?;
        value.set_sensitive(true);
        metadata.insert(name, value);
    }
    let from_environment = environment_header_names();
    let resolved = move |mut request: tonic::Request<()>| {
        let sent = request.metadata_mut();
        for name in &from_environment {
            sent.remove(name.as_str());
        }
        for (name, value) in metadata.iter().filter_map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(name, value) => Some((name, value)),
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        }) {
            sent.insert(name.clone(), value.clone());
        }
        Ok(request)
    };
    let mut builder = builder
        .with_endpoint(&target.url)
        .with_timeout(target.timeout)
        .with_interceptor(resolved);
    if target.gzip {
        builder = builder.with_compression(Compression::Gzip);
    }
    let tls = tonic::transport::ClientTlsConfig::new();
    Ok(
        match (&target.certificate, target.url.starts_with("http://")) {
            (_, true) => builder,
            (Some(path), false) => builder.with_tls_config(
                tls.ca_certificate(tonic::transport::Certificate::from_pem(read_pem(path)?)),
            ),
            (None, false) => builder.with_tls_config(tls.with_enabled_roots()),
        },
    )
}
