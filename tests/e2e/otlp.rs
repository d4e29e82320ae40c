//! A real OTLP receiver for the tests: http/protobuf on `/v1/traces`,
//! `/v1/metrics` and `/v1/logs`, gRPC `TraceService`, `MetricsService` and
//! `LogsService`, all decoding with the `opentelemetry-proto` types.

use std::sync::{Arc, Mutex};

use axum::{Router, body::Bytes, http::HeaderMap, routing::post};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            ExportLogsServiceRequest, ExportLogsServiceResponse,
            logs_service_server::{LogsService, LogsServiceServer},
        },
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    logs::v1::LogRecord,
    metrics::v1::Metric,
    trace::v1::span::SpanKind,
};
use prost::Message;

use crate::harness::poll;

/// One export request as it arrived.
#[derive(Clone, Debug)]
pub struct Export {
    /// `http` or `grpc`.
    pub transport: &'static str,
    /// Request headers (HTTP) or metadata (gRPC), names in lower case.
    pub headers: Vec<(String, String)>,
    /// The decoded request.
    pub request: ExportTraceServiceRequest,
}

/// A span as received, flattened with its resource and scope.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub kind: SpanKind,
    pub attributes: Vec<KeyValue>,
    /// `0` unset, `1` ok, `2` error.
    pub status_code: i32,
    pub status_message: String,
    pub events: Vec<(String, Vec<KeyValue>)>,
    /// Each link's trace and span id, hex.
    pub links: Vec<(String, String)>,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub resource: Vec<KeyValue>,
    pub scope: String,
    pub scope_version: String,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        find(&self.attributes, key)
    }

    pub fn string(&self, key: &str) -> &str {
        match self.attribute(key) {
            Some(Value::StringValue(s)) => s,
            other => panic!(
                "span {:?}: attribute {key} is not a string: {other:?}",
                self.name
            ),
        }
    }

    pub fn int(&self, key: &str) -> i64 {
        match self.attribute(key) {
            Some(Value::IntValue(i)) => *i,
            other => panic!(
                "span {:?}: attribute {key} is not an int: {other:?}",
                self.name
            ),
        }
    }

    pub fn bool(&self, key: &str) -> bool {
        match self.attribute(key) {
            Some(Value::BoolValue(b)) => *b,
            other => panic!(
                "span {:?}: attribute {key} is not a bool: {other:?}",
                self.name
            ),
        }
    }

    pub fn double(&self, key: &str) -> f64 {
        match self.attribute(key) {
            Some(Value::DoubleValue(d)) => *d,
            other => panic!(
                "span {:?}: attribute {key} is not a double: {other:?}",
                self.name
            ),
        }
    }

    pub fn resource_string(&self, key: &str) -> Option<&str> {
        match find(&self.resource, key) {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    /// The attributes of the first event named `name`.
    pub fn event(&self, name: &str) -> Option<&[KeyValue]> {
        self.events
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.as_slice())
    }
}

pub fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|AnyValue { value }| value.as_ref())
}

/// A running receiver; its servers stop with the test's runtime.
pub struct Receiver {
    /// Base URL of the http/protobuf endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub http_url: String,
    /// URL of the gRPC endpoint.
    pub grpc_url: String,
    exports: Arc<Mutex<Vec<Export>>>,
    metric_exports: MetricExports,
    log_exports: LogExports,
}

/// Metric export requests as they arrived, with their transport.
type MetricExports = Arc<Mutex<Vec<(&'static str, ExportMetricsServiceRequest)>>>;

/// Log export requests as they arrived, with their transport.
type LogExports = Arc<Mutex<Vec<(&'static str, ExportLogsServiceRequest)>>>;

/// One log record as received, with what it was sent under.
#[derive(Clone, Debug)]
pub struct ReceivedLog {
    /// `http` or `grpc`.
    pub transport: &'static str,
    /// Its resource's attributes.
    pub resource: Vec<KeyValue>,
    /// Its instrumentation scope's name and version.
    pub scope: (String, String),
    /// The record.
    pub record: LogRecord,
}

impl ReceivedLog {
    /// The record's string attribute `key`.
    pub fn string(&self, key: &str) -> Option<&str> {
        match find(&self.record.attributes, key) {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    /// The body, when it is a string.
    pub fn body(&self) -> &str {
        match self.record.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(Value::StringValue(s)) => s,
            other => panic!("a string body, not {other:?}"),
        }
    }

    /// Trace and span ids, hex.
    pub fn ids(&self) -> (String, String) {
        (hex(&self.record.trace_id), hex(&self.record.span_id))
    }
}

#[derive(Clone)]
struct GrpcLogs(LogExports);

#[tonic::async_trait]
impl LogsService for GrpcLogs {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(("grpc", request.into_inner()));
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

#[derive(Clone)]
struct Grpc(Arc<Mutex<Vec<Export>>>);

#[derive(Clone)]
struct GrpcMetrics(MetricExports);

#[tonic::async_trait]
impl MetricsService for GrpcMetrics {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(("grpc", request.into_inner()));
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        self.0.lock().unwrap().push(Export {
            transport: "grpc",
            headers,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Starts both endpoints on free loopback ports.
    pub async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0")
            .await
            .expect("binding the OTLP receiver")
    }

    /// Starts the HTTP endpoint on `address` (the gRPC one on a free port).
    pub async fn start_on(address: &str) -> std::io::Result<Receiver> {
        let exports = Arc::new(Mutex::new(Vec::new()));
        let metric_exports = MetricExports::default();
        let log_exports = LogExports::default();

        let http_listener = tokio::net::TcpListener::bind(address).await?;
        let http_url = format!("http://{}", http_listener.local_addr()?);
        let app = http_app(exports.clone(), metric_exports.clone(), log_exports.clone());
        tokio::spawn(async move { axum::serve(http_listener, app).await });

        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc_url = format!("http://{}", grpc_listener.local_addr()?);
        let gzip = tonic::codec::CompressionEncoding::Gzip;
        let service = TraceServiceServer::new(Grpc(exports.clone())).accept_compressed(gzip);
        let metrics_service =
            MetricsServiceServer::new(GrpcMetrics(metric_exports.clone())).accept_compressed(gzip);
        let logs_service =
            LogsServiceServer::new(GrpcLogs(log_exports.clone())).accept_compressed(gzip);
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .add_service(metrics_service)
                .add_service(logs_service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener))
                .await
        });

        Ok(Receiver {
            http_url,
            grpc_url,
            exports,
            metric_exports,
            log_exports,
        })
    }

    /// Starts both endpoints behind TLS with `identity`, as `https://localhost:PORT`:
    /// the way Honeycomb is reached.
    pub async fn start_tls(identity: &TlsIdentity) -> Receiver {
        let exports = Arc::new(Mutex::new(Vec::new()));
        let metric_exports = MetricExports::default();
        let log_exports = LogExports::default();

        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_url = format!(
            "https://localhost:{}",
            http_listener.local_addr().unwrap().port()
        );
        comb::install_crypto_provider();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![identity.cert_der.clone()],
                identity.key_der.clone_key(),
            )
            .expect("a valid test certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let app = http_app(exports.clone(), metric_exports.clone(), log_exports.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = http_listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });

        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_url = format!(
            "https://localhost:{}",
            grpc_listener.local_addr().unwrap().port()
        );
        let service = TraceServiceServer::new(Grpc(exports.clone()));
        let tls = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&identity.cert_pem, &identity.key_pem),
        );
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .tls_config(tls)
                .expect("gRPC TLS config")
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener))
                .await
        });

        Receiver {
            http_url,
            grpc_url,
            exports,
            metric_exports,
            log_exports,
        }
    }

    /// The newest received state of metric `name` (comb's metrics are
    /// cumulative, so the newest export holds the totals) and the transport
    /// it came over.
    pub fn metric(&self, name: &str) -> Option<(&'static str, Metric)> {
        let exports = self.metric_exports.lock().unwrap();
        exports.iter().rev().find_map(|(transport, request)| {
            request
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .find(|m| m.name == name)
                .map(|m| (*transport, m.clone()))
        })
    }

    /// Waits (up to 30 s) until metric `name` is exported and `ready`
    /// holds for it; returns it.
    pub async fn wait_for_metric(&self, name: &str, ready: impl Fn(&Metric) -> bool) -> Metric {
        let what = format!("metric {name} is exported and ready");
        let last = || format!("last seen: {:#?}", self.metric(name));
        poll(&what, last, || async {
            self.metric(name).filter(|(_, m)| ready(m)).map(|(_, m)| m)
        })
        .await
    }

    /// Every log record received so far.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        let exports = self.log_exports.lock().unwrap();
        let mut logs = Vec::new();
        for (transport, request) in exports.iter() {
            for resource_logs in &request.resource_logs {
                let resource = resource_logs
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for scope_logs in &resource_logs.scope_logs {
                    let scope = scope_logs
                        .scope
                        .as_ref()
                        .map(|s| (s.name.clone(), s.version.clone()))
                        .unwrap_or_default();
                    for record in &scope_logs.log_records {
                        logs.push(ReceivedLog {
                            transport,
                            resource: resource.clone(),
                            scope: scope.clone(),
                            record: record.clone(),
                        });
                    }
                }
            }
        }
        logs
    }

    /// Waits (up to 30 s) until the log records received satisfy `ready`;
    /// returns them.
    pub async fn wait_for_logs(
        &self,
        what: &str,
        ready: impl Fn(&[ReceivedLog]) -> bool,
    ) -> Vec<ReceivedLog> {
        let last = || format!("received: {:#?}", self.logs());
        poll(what, last, || async {
            let logs = self.logs();
            ready(&logs).then_some(logs)
        })
        .await
    }

    /// Every metrics export received so far, with its transport.
    pub fn metric_exports(&self) -> Vec<(&'static str, ExportMetricsServiceRequest)> {
        self.metric_exports.lock().unwrap().clone()
    }

    /// Every export received so far.
    pub fn exports(&self) -> Vec<Export> {
        self.exports.lock().unwrap().clone()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let mut spans = Vec::new();
        for export in self.exports() {
            for resource_spans in export.request.resource_spans {
                let resource = resource_spans
                    .resource
                    .map(|r| r.attributes)
                    .unwrap_or_default();
                for scope_spans in resource_spans.scope_spans {
                    let (scope, scope_version) = scope_spans
                        .scope
                        .map(|s| (s.name, s.version))
                        .unwrap_or_default();
                    for span in scope_spans.spans {
                        spans.push(ReceivedSpan {
                            kind: span.kind(),
                            name: span.name,
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            attributes: span.attributes,
                            status_code: span.status.as_ref().map_or(0, |s| s.code),
                            status_message: span.status.map(|s| s.message).unwrap_or_default(),
                            events: span
                                .events
                                .into_iter()
                                .map(|e| (e.name, e.attributes))
                                .collect(),
                            links: (span.links.iter())
                                .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                                .collect(),
                            start_time_unix_nano: span.start_time_unix_nano,
                            end_time_unix_nano: span.end_time_unix_nano,
                            resource: resource.clone(),
                            scope: scope.clone(),
                            scope_version: scope_version.clone(),
                        });
                    }
                }
            }
        }
        spans
    }

    /// Waits (up to 30 s) until the spans of trace `trace_id` number at
    /// least `count`, and returns them.
    pub async fn trace(&self, trace_id: &str, count: usize) -> Vec<ReceivedSpan> {
        let what = format!("{count} spans of trace {trace_id} arrive");
        let received = || format!("all spans received: {:#?}", self.spans());
        poll(&what, received, || async {
            let spans: Vec<ReceivedSpan> = (self.spans().into_iter())
                .filter(|s| s.trace_id == trace_id)
                .collect();
            (spans.len() >= count).then_some(spans)
        })
        .await
    }
}

/// The body, gunzipped when the exporter compressed it.
fn decompressed(headers: &HeaderMap, body: Bytes) -> Vec<u8> {
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
            .expect("a gzip body");
        plain
    } else {
        body.to_vec()
    }
}

/// The receiver's `/v1/traces`, `/v1/metrics` and `/v1/logs` endpoints.
fn http_app(
    exports: Arc<Mutex<Vec<Export>>>,
    metric_exports: MetricExports,
    log_exports: LogExports,
) -> Router {
    let logs = post(move |headers: HeaderMap, body: Bytes| async move {
        let body = decompressed(&headers, body);
        let request = ExportLogsServiceRequest::decode(body.as_slice())
            .expect("an OTLP protobuf logs request");
        log_exports.lock().unwrap().push(("http", request));
        (
            [("content-type", "application/x-protobuf")],
            ExportLogsServiceResponse {
                partial_success: None,
            }
            .encode_to_vec(),
        )
    });
    let metrics = post(move |headers: HeaderMap, body: Bytes| async move {
        let body = decompressed(&headers, body);
        let request = ExportMetricsServiceRequest::decode(body.as_slice())
            .expect("an OTLP protobuf metrics request");
        metric_exports.lock().unwrap().push(("http", request));
        (
            [("content-type", "application/x-protobuf")],
            ExportMetricsServiceResponse {
                partial_success: None,
            }
            .encode_to_vec(),
        )
    });
    Router::new()
        .route("/v1/logs", logs)
        .route("/v1/metrics", metrics)
        .route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| async move {
                let body = decompressed(&headers, body);
                let request = ExportTraceServiceRequest::decode(body.as_slice())
                    .expect("an OTLP protobuf export request");
                let headers = headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                exports.lock().unwrap().push(Export {
                    transport: "http",
                    headers,
                    request,
                });
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse {
                        partial_success: None,
                    }
                    .encode_to_vec(),
                )
            }),
        )
}

/// A self-signed certificate for `localhost`, and a PEM file of it that
/// comb is told to trust (`SSL_CERT_FILE`), standing in for a public CA.
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: rustls::pki_types::CertificateDer<'static>,
    key_der: rustls::pki_types::PrivateKeyDer<'static>,
    pub ca_file: tempfile::NamedTempFile,
}

impl TlsIdentity {
    pub fn self_signed() -> TlsIdentity {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .expect("generating a certificate");
        let ca_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca_file.path(), cert.pem()).unwrap();
        TlsIdentity {
            cert_pem: cert.pem(),
            key_pem: signing_key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into()),
            ca_file,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one span named `name` among `spans`.
pub fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let matching: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one span named {name:?} in {spans:#?}"
    );
    matching[0]
}
