//! comb's configuration: command-line flags, each with the environment
//! variable it may come from and a key it may have in `comb.toml`, parsed
//! once at start and passed down. A flag beats its variable, which beats
//! the file, which beats comb's default.
//!
//! ```toml
//! # comb.toml: every key is a flag of `comb serve`, without the dashes.
//! plugins = "plugins"              # paths are relative to this file
//! listen = "0.0.0.0:8080"
//! deadline-ms = 2000
//! cors-allowed-origins = ["http://localhost:3000"]
//! otlp-endpoint = "https://api.honeycomb.io"
//! ```
//!
//! The OpenTelemetry settings use the standard `OTEL_*` variable names, so
//! the variables that configure any OTel SDK (Honeycomb's
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_SERVICE_NAME`, ...) configure comb the same way.

use std::{
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::{
    connections::{self, ConnectionLimits},
    limits::{self, HttpTimeouts, Limits, TelemetryLimits},
};

/// Where comb listens when `--listen` is not given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Where the admin listener listens when `--admin-listen` is not given.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";

/// `service.name` when neither `OTEL_SERVICE_NAME` nor
/// `OTEL_RESOURCE_ATTRIBUTES` names the service.
pub const DEFAULT_SERVICE_NAME: &str = "comb";

/// The OTLP export timeout when `OTEL_EXPORTER_OTLP_TIMEOUT` is not set
/// (the OTel spec's default, 10 s).
pub const DEFAULT_OTLP_TIMEOUT: Duration = Duration::from_secs(10);

/// comb serves HTTP routes from WebAssembly component plugins and traces
/// every call with OpenTelemetry.
#[derive(Debug, Parser)]
#[command(name = "comb", version, about, long_about = None)]
pub struct Cli {
    /// A settings file whose keys are the flags' long names (`listen =
    /// "0.0.0.0:8080"`); flags and environment variables override it.
    /// Default: `comb.toml` in the working directory, when there is one.
    #[arg(long, env = "COMB_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The settings file read when neither `--config` nor `COMB_CONFIG` names
/// one, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "comb.toml";

impl Cli {
    /// Parses `args` (the program name first) over the settings file, and
    /// says which file that was. Bad flags print clap's usage and exit;
    /// a bad file is an error naming it.
    pub fn load(args: Vec<OsString>) -> anyhow::Result<(Cli, Option<PathBuf>)> {
        let file = config_file(&args);
        let mut command = Cli::command();
        if let Some(file) = &file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let table: toml::Table =
                toml::from_str(&text).with_context(|| format!("invalid {}", file.display()))?;
            let base = file.parent().unwrap_or(Path::new(""));
            command = with_file_defaults(command, &table, base)
                .with_context(|| format!("in {}", file.display()))?;
        }
        let matches = match command.try_get_matches_from(args) {
            Ok(matches) => matches,
            // clap names the flag but cannot know its value came from the
            // file: say so, then exit as clap would.
            Err(error)
                if file.is_some()
                    && matches!(
                        error.kind(),
                        clap::error::ErrorKind::ValueValidation
                            | clap::error::ErrorKind::InvalidValue
                    ) =>
            {
                let _ = error.print();
                eprintln!(
                    "note: settings were read from {}; the value may come from there",
                    file.as_deref().unwrap_or(Path::new("")).display()
                );
                std::process::exit(error.exit_code());
            }
            Err(error) => error.exit(),
        };
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
        Ok((cli, file))
    }
}

/// The settings file: `--config`, else `COMB_CONFIG`, else `comb.toml` if
/// present. Read before clap parses, because the file supplies defaults.
fn config_file(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    if let Some(path) = std::env::var_os("COMB_CONFIG") {
        return Some(PathBuf::from(path));
    }
    Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|path| path.is_file())
}

/// Makes each key of `table` the default of the flag with that long name,
/// in every subcommand that has it, so flags and environment variables
/// still win. Paths (`DIR`, `FILE` values) are relative to `base`.
fn with_file_defaults(
    mut command: clap::Command,
    table: &toml::Table,
    base: &Path,
) -> anyhow::Result<clap::Command> {
    for (key, value) in table {
        let values: Vec<String> = match value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<_, _>>(),
            value => scalar(value).map(|value| vec![value]),
        }
        .with_context(|| format!("`{key}`"))?;
        let mut known = false;
        let subcommands: Vec<String> = command
            .get_subcommands()
            .map(|sub| sub.get_name().to_owned())
            .collect();
        for name in subcommands {
            command = command.mut_subcommand(name, |sub| {
                let Some(arg) = sub.get_arguments().find(|arg| arg.get_long() == Some(key)) else {
                    return sub;
                };
                known = true;
                let is_path = arg
                    .get_value_names()
                    .is_some_and(|names| names.iter().any(|n| *n == "DIR" || *n == "FILE"));
                let values: Vec<String> = match is_path {
                    true => values
                        .iter()
                        .map(|v| base.join(v).to_string_lossy().into_owned())
                        .collect(),
                    false => values.clone(),
                };
                let id = arg.get_id().clone();
                // A required flag the file supplies is required no more.
                sub.mut_arg(id, |arg| arg.default_values(values).required(false))
            });
        }
        if !known {
            bail!("`{key}` is not a setting: keys are the long names of `comb serve`'s flags");
        }
    }
    Ok(command)
}

/// A TOML string, number or boolean as flag text.
fn scalar(value: &toml::Value) -> anyhow::Result<String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!("expected a string, number, boolean or list, found {other}"),
    })
}

/// comb's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve every plugin in a folder over HTTP.
    ///
    /// Each `*.wasm` file in the folder is a component targeting comb's
    /// `plugin` world (wit/plugin.wit). comb reads each plugin's manifest,
    /// routes requests to it, runs every request in a fresh instance and
    /// wraps it in an OpenTelemetry span. Traces go to the OTLP endpoint in
    /// OTEL_EXPORTER_OTLP_ENDPOINT; without one, comb exports nothing and
    /// logs one line per request instead.
    Serve(Box<ServeConfig>),
    /// Check every plugin in a folder without serving, and print a table.
    ///
    /// Loads each `*.wasm` exactly as `comb serve` would (compile, link,
    /// manifest, sidecar, route clashes) and exits non-zero when any file
    /// fails: useful in a plugin's CI.
    Plugins(CheckConfig),
}

/// What `comb plugins` needs: the folder and the limits (a sidecar may be
/// invalid against them).
#[derive(Debug, Clone, Args)]
pub struct CheckConfig {
    /// The plugins folder and the compile cache.
    #[command(flatten)]
    pub plugins: PluginsConfig,
    /// Per-plugin limits.
    #[command(flatten)]
    pub limits: LimitsConfig,
}

/// Where the plugins are and how their compiled code is cached.
#[derive(Debug, Clone, Args)]
pub struct PluginsConfig {
    /// The folder of plugin `.wasm` files (and optional `NAME.toml` sidecars).
    #[arg(long, env = "COMB_PLUGINS", value_name = "DIR")]
    pub plugins: PathBuf,

    /// Where compiled plugins are cached, keyed by content and engine.
    /// Default: $XDG_CACHE_HOME/comb, else ~/.cache/comb.
    #[arg(long, env = "COMB_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every plugin at every start; cache nothing.
    #[arg(long, env = "COMB_NO_CACHE")]
    pub no_cache: bool,

    /// Routes one plugin may declare; a manifest (or sidecar) with more is
    /// rejected.
    #[arg(long, env = "COMB_MAX_ROUTES_PER_PLUGIN", default_value_t = crate::plugins::DEFAULT_MAX_ROUTES, value_name = "N")]
    pub max_routes_per_plugin: usize,
}

impl PluginsConfig {
    /// The engine settings for these plugins under `limits`.
    pub fn engine(&self, limits: &LimitsConfig) -> crate::runtime::EngineConfig {
        crate::runtime::EngineConfig {
            cache_dir: self.cache_dir(),
            max_memory_bytes: limits.memory_bytes,
            fuel: limits.fuel.is_some(),
            pooling: !limits.no_pooling,
        }
    }

    /// The cache folder to use, or `None` when caching is off (or no home
    /// folder is known).
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir.clone().or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache"))
                })?;
            Some(base.join("comb"))
        })
    }
}

/// Everything `comb serve` needs, parsed from flags and environment.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// The plugins folder and the compile cache.
    #[command(flatten)]
    pub plugins: PluginsConfig,

    /// The address to serve HTTP on. Port 0 picks a free port; the address
    /// actually bound is logged as `listening on http://...`.
    #[arg(long, env = "COMB_LISTEN", default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// The address of the admin listener (comb's page at `/_comb/`, the
    /// plugin list at `/_comb/plugins`): loopback by default, because it
    /// shows what is deployed and recent requests.
    #[arg(long, env = "COMB_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN, value_name = "ADDR")]
    pub admin_listen: SocketAddr,

    /// Serve no admin listener at all.
    #[arg(long, env = "COMB_NO_ADMIN")]
    pub no_admin: bool,

    /// Recent traces comb's page keeps in memory.
    #[arg(
        long,
        env = "COMB_RECENT_TRACES",
        default_value_t = 200,
        value_name = "N"
    )]
    pub recent_traces: usize,

    /// Slow and failed traces comb's page keeps on top of the recent ones.
    #[arg(
        long,
        env = "COMB_KEPT_TRACES",
        default_value_t = 100,
        value_name = "N"
    )]
    pub kept_traces: usize,

    /// Per-plugin limits.
    #[command(flatten)]
    pub limits: LimitsConfig,

    /// Connections each listener keeps open at once; past it, new ones
    /// wait in the kernel's backlog until one closes.
    #[arg(long, env = "COMB_MAX_CONNECTIONS", default_value_t = connections::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,

    /// Time a request's head (request line and headers) may take to arrive,
    /// in ms; past it the connection is closed.
    #[arg(long, env = "COMB_HEADER_READ_TIMEOUT_MS", default_value_t = connections::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64, value_name = "MS")]
    pub header_read_timeout_ms: u64,

    /// Time a connection may send and receive nothing, in ms; past it the
    /// connection is closed (a request in flight still gets its answer).
    #[arg(long, env = "COMB_IDLE_TIMEOUT_MS", default_value_t = connections::DEFAULT_IDLE_TIMEOUT.as_millis() as u64, value_name = "MS")]
    pub idle_timeout_ms: u64,

    /// Time in-flight requests get to finish at shutdown, in ms; then comb
    /// exits anyway.
    #[arg(long, env = "COMB_SHUTDOWN_TIMEOUT_MS", default_value_t = connections::DEFAULT_DRAIN_TIMEOUT.as_millis() as u64, value_name = "MS")]
    pub shutdown_timeout_ms: u64,

    /// Origins allowed to call comb from a browser (CORS), comma-separated,
    /// e.g. Cruddur's frontend `http://localhost:3000`. Preflights are
    /// answered for methods OPTIONS, GET, HEAD, POST and request headers
    /// content-type and if-modified-since; location, link and traceresponse
    /// are exposed. Empty: no CORS headers, browsers refuse cross-origin calls.
    #[arg(
        long,
        env = "COMB_CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub cors_allowed_origins: Vec<http::HeaderValue>,

    /// OpenTelemetry settings.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

/// Limits for every plugin's calls; a sidecar's `[limits]` may change them
/// per plugin.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits (per plugin; a sidecar [limits] table overrides)")]
pub struct LimitsConfig {
    /// Wall-clock deadline of one call, in milliseconds; past it: 504.
    #[arg(long = "deadline-ms", env = "COMB_DEADLINE_MS", default_value_t = limits::DEFAULT_DEADLINE.as_millis() as u64, value_name = "MS")]
    pub deadline_ms: u64,

    /// Linear memory of one instance, in bytes; past it the call traps (500).
    /// Also sizes the pooling allocator's slots: sidecars may only lower it.
    #[arg(long = "memory-limit", env = "COMB_MEMORY_LIMIT", default_value_t = limits::DEFAULT_MEMORY_BYTES, value_name = "BYTES")]
    pub memory_bytes: usize,

    /// Meter calls with fuel, this many units per call; exhausted: 500.
    /// Off by default: metering slows every call.
    #[arg(long = "fuel", env = "COMB_FUEL", value_name = "UNITS")]
    pub fuel: Option<u64>,

    /// Calls one plugin may run at once; more get 503 with Retry-After.
    #[arg(long = "max-concurrency", env = "COMB_MAX_CONCURRENCY", default_value_t = limits::DEFAULT_MAX_CONCURRENCY, value_name = "N")]
    pub max_concurrency: usize,

    /// The largest request body, in bytes; larger ones get 413.
    #[arg(long = "max-request-body", env = "COMB_MAX_REQUEST_BODY", default_value_t = limits::DEFAULT_MAX_REQUEST_BODY, value_name = "BYTES")]
    pub max_request_body: usize,

    /// The largest response body a plugin may return, in bytes; larger: 500.
    #[arg(long = "max-response-body", env = "COMB_MAX_RESPONSE_BODY", default_value_t = limits::DEFAULT_MAX_RESPONSE_BODY, value_name = "BYTES")]
    pub max_response_body: usize,

    /// Time a plugin's outgoing HTTP call may take to connect, in ms.
    #[arg(long = "http-connect-timeout-ms", env = "COMB_HTTP_CONNECT_TIMEOUT_MS", default_value_t = limits::DEFAULT_HTTP_CONNECT_TIMEOUT.as_millis() as u64, value_name = "MS")]
    pub http_connect_timeout_ms: u64,

    /// Time an outgoing HTTP call waits for the response's first byte, and
    /// then between body chunks, in ms.
    #[arg(long = "http-first-byte-timeout-ms", env = "COMB_HTTP_FIRST_BYTE_TIMEOUT_MS", default_value_t = limits::DEFAULT_HTTP_FIRST_BYTE_TIMEOUT.as_millis() as u64, value_name = "MS")]
    pub http_first_byte_timeout_ms: u64,

    /// Time an outgoing HTTP call may take in all, body included, in ms.
    #[arg(long = "http-timeout-ms", env = "COMB_HTTP_TIMEOUT_MS", default_value_t = limits::DEFAULT_HTTP_TIMEOUT.as_millis() as u64, value_name = "MS")]
    pub http_timeout_ms: u64,

    /// Allocate instances on demand instead of from the pooling allocator.
    #[arg(long = "no-pooling", env = "COMB_NO_POOLING")]
    pub no_pooling: bool,

    /// The longest attribute value (string, or string in a list) a plugin
    /// may put on a span or event, in bytes; longer ones are cut.
    #[arg(long = "otel-attribute-value-length-limit", env = "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", default_value_t = limits::DEFAULT_ATTRIBUTE_VALUE_LENGTH, value_name = "BYTES")]
    pub attribute_value_length: usize,

    /// The same for spans only; wins over the general limit when set.
    #[arg(
        long = "otel-span-attribute-value-length-limit",
        env = "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        value_name = "BYTES"
    )]
    pub span_attribute_value_length: Option<usize>,

    /// Spans one call may open; further ones are not recorded and are
    /// counted in `plugin.telemetry.dropped`.
    #[arg(long = "max-spans-per-call", env = "COMB_MAX_SPANS_PER_CALL", default_value_t = limits::DEFAULT_SPANS_PER_CALL, value_name = "N")]
    pub max_spans_per_call: usize,

    /// Bytes of span names, attribute keys and values, events and status
    /// messages one call may add; past them the rest is dropped and counted.
    #[arg(long = "max-telemetry-bytes-per-call", env = "COMB_MAX_TELEMETRY_BYTES_PER_CALL", default_value_t = limits::DEFAULT_TELEMETRY_BYTES_PER_CALL, value_name = "BYTES")]
    pub max_telemetry_bytes_per_call: usize,
}

impl LimitsConfig {
    /// The default limits every plugin starts from.
    pub fn limits(&self) -> Limits {
        Limits {
            deadline: Duration::from_millis(self.deadline_ms),
            memory_bytes: self.memory_bytes,
            fuel: self.fuel,
            max_concurrency: self.max_concurrency.max(1),
            max_request_body: self.max_request_body,
            max_response_body: self.max_response_body,
            http: HttpTimeouts {
                connect: Duration::from_millis(self.http_connect_timeout_ms),
                first_byte: Duration::from_millis(self.http_first_byte_timeout_ms),
                total: Duration::from_millis(self.http_timeout_ms),
            },
            telemetry: TelemetryLimits {
                attribute_value_length: self
                    .span_attribute_value_length
                    .unwrap_or(self.attribute_value_length),
                span_attribute_count: limits::DEFAULT_SPAN_ATTRIBUTE_COUNT,
                spans_per_call: self.max_spans_per_call,
                bytes_per_call: self.max_telemetry_bytes_per_call,
            },
        }
    }
}

impl ServeConfig {
    /// How each listener treats its connections.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections.max(1),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            drain_timeout: Duration::from_millis(self.shutdown_timeout_ms),
        }
    }

    /// The default limits every plugin starts from, with the SDK's
    /// attribute count limit that guest spans share.
    pub fn limits(&self) -> Limits {
        let mut limits = self.limits.limits();
        limits.telemetry.span_attribute_count = self.telemetry.span_attribute_count_limit;
        limits
    }
}

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
        value_name = "PAIRS"
    )]
    pub headers: Option<String>,

    /// Headers for trace exports only; added to (and override) the above.
    #[arg(
        long = "otlp-traces-headers",
        env = "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        value_name = "PAIRS"
    )]
    pub traces_headers: Option<String>,

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
        value_name = "PAIRS"
    )]
    pub metrics_headers: Option<String>,

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

    /// Events one span keeps (the SDK's default is 128). Higher here, so
    /// all of a call's log lines (up to 256) fit on its spans.
    #[arg(
        long = "otel-span-event-count-limit",
        env = "OTEL_SPAN_EVENT_COUNT_LIMIT",
        default_value_t = 512,
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
    /// Headers (or gRPC metadata) sent with every export.
    pub headers: Vec<(String, String)>,
    /// How long one export may take.
    pub timeout: Duration,
    /// Whether exports are gzipped.
    pub gzip: bool,
    /// CA certificates (PEM) to trust instead of the system's roots.
    pub certificate: Option<PathBuf>,
}

impl TelemetryConfig {
    /// Where `signal` goes, or `None` when no endpoint is configured: then
    /// comb makes no export attempts at all (the OTel default of
    /// localhost:4318 would only produce connection errors on a laptop
    /// without a collector).
    pub fn otlp_target(&self, signal: Signal) -> Option<OtlpTarget> {
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
        let mut pairs = parse_pairs(self.headers.as_deref().unwrap_or_default());
        for (name, value) in parse_pairs(headers.as_deref().unwrap_or_default()) {
            pairs.retain(|(existing, _)| !existing.eq_ignore_ascii_case(&name));
            pairs.push((name, value));
        }
        let timeout = timeout_ms
            .or(self.timeout_ms)
            .map_or(DEFAULT_OTLP_TIMEOUT, Duration::from_millis);
        Some(OtlpTarget {
            url,
            protocol,
            headers: pairs,
            timeout,
            gzip: compression.or(self.compression) == Some(OtlpCompression::Gzip),
            certificate: certificate.clone().or_else(|| self.certificate.clone()),
        })
    }

    /// The resource attributes from `OTEL_RESOURCE_ATTRIBUTES`, plus
    /// `service.name` (from `OTEL_SERVICE_NAME`, which wins, else the
    /// attributes, else [`DEFAULT_SERVICE_NAME`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `command` reading no environment: the tests must not see the
    /// developer's exported `OTEL_*` (the README has them export some).
    fn hermetic(command: clap::Command) -> clap::Command {
        command
            .mut_args(|arg| arg.env(None))
            .mut_subcommands(hermetic)
    }

    /// `comb serve ARGS` over a settings file in /srv/comb.
    fn serve_over(file: &str, args: &[&str]) -> anyhow::Result<ServeConfig> {
        let table: toml::Table = toml::from_str(file)?;
        let command = with_file_defaults(hermetic(Cli::command()), &table, Path::new("/srv/comb"))?;
        let mut argv = vec!["comb", "serve"];
        argv.extend_from_slice(args);
        let matches = command.try_get_matches_from(argv)?;
        match Cli::from_arg_matches(&matches)?.command {
            Command::Serve(config) => Ok(*config),
            Command::Plugins(_) => unreachable!(),
        }
    }

    #[test]
    fn a_settings_file_supplies_defaults_flags_override() {
        let file = "plugins = \"wasm\"\nlisten = \"0.0.0.0:9000\"\ndeadline-ms = 250\n\
                    no-admin = true\notel-propagators = [\"tracecontext\", \"xray\"]\n";
        let config = serve_over(file, &[]).unwrap();
        assert_eq!(config.plugins.plugins, Path::new("/srv/comb/wasm"));
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.limits.deadline_ms, 250);
        assert!(config.no_admin);
        assert_eq!(
            config.telemetry.propagators,
            [Propagator::TraceContext, Propagator::Xray]
        );
        let config = serve_over(file, &["--deadline-ms", "900", "--plugins", "here"]).unwrap();
        assert_eq!(config.limits.deadline_ms, 900);
        assert_eq!(config.plugins.plugins, Path::new("here"));
        // Settings the file leaves out keep comb's defaults.
        assert_eq!(config.limits.memory_bytes, limits::DEFAULT_MEMORY_BYTES);
    }

    #[test]
    fn a_settings_file_with_an_unknown_key_or_a_table_is_refused() {
        let error = serve_over("deadline = 1\n", &["--plugins", "."]).unwrap_err();
        assert!(
            error.to_string().contains("`deadline` is not a setting"),
            "{error}"
        );
        let error = serve_over("[limits]\ndeadline-ms = 1\n", &["--plugins", "."]).unwrap_err();
        assert!(format!("{error:#}").contains("`limits`"), "{error:#}");
        assert!(serve_over("deadline-ms = \"soon\"\n", &["--plugins", "."]).is_err());
    }

    fn telemetry(args: &[&str]) -> TelemetryConfig {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            telemetry: TelemetryConfig,
        }
        let mut argv = vec!["comb"];
        argv.extend_from_slice(args);
        let matches = hermetic(Wrapper::command())
            .try_get_matches_from(argv)
            .unwrap();
        Wrapper::from_arg_matches(&matches).unwrap().telemetry
    }

    #[test]
    fn compression_is_per_signal_over_the_general_setting() {
        let config = telemetry(&[
            "--otlp-endpoint=http://collector:4318",
            "--otlp-compression=gzip",
            "--otlp-metrics-compression=none",
        ]);
        assert!(config.otlp_target(Signal::Traces).unwrap().gzip);
        assert!(!config.otlp_target(Signal::Metrics).unwrap().gzip);
        let plain = telemetry(&["--otlp-endpoint=http://collector:4318"]);
        assert!(!plain.otlp_target(Signal::Traces).unwrap().gzip);
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert_eq!(telemetry(&[]).otlp_target(Signal::Traces), None);
    }

    #[test]
    fn honeycomb_settings_become_the_traces_url_and_header() {
        let target = telemetry(&[
            "--otlp-endpoint=https://api.honeycomb.io",
            "--otlp-headers=x-honeycomb-team=KEY",
        ])
        .otlp_target(Signal::Traces)
        .unwrap();
        assert_eq!(target.url, "https://api.honeycomb.io/v1/traces");
        assert_eq!(target.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(
            target.headers,
            vec![("x-honeycomb-team".into(), "KEY".into())]
        );
        assert_eq!(target.timeout, DEFAULT_OTLP_TIMEOUT);
    }

    #[test]
    fn per_signal_settings_win() {
        let target = telemetry(&[
            "--otlp-endpoint=http://collector:4318/",
            "--otlp-traces-endpoint=http://other:9999/custom",
            "--otlp-headers=a=1,b=2",
            "--otlp-traces-headers=B=3",
            "--otlp-protocol=grpc",
            "--otlp-traces-protocol=http/protobuf",
            "--otlp-timeout=500",
            "--otlp-traces-timeout=250",
        ])
        .otlp_target(Signal::Traces)
        .unwrap();
        assert_eq!(target.url, "http://other:9999/custom");
        assert_eq!(target.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(
            target.headers,
            vec![("a".into(), "1".into()), ("B".into(), "3".into())]
        );
        assert_eq!(target.timeout, Duration::from_millis(250));
    }

    #[test]
    fn metrics_have_their_own_path_and_settings() {
        let config = telemetry(&[
            "--otlp-endpoint=http://collector:4318",
            "--otlp-traces-headers=t=1",
            "--otlp-metrics-headers=m=2",
            "--otlp-metrics-timeout=750",
        ]);
        let metrics = config.otlp_target(Signal::Metrics).unwrap();
        assert_eq!(metrics.url, "http://collector:4318/v1/metrics");
        assert_eq!(metrics.headers, vec![("m".into(), "2".into())]);
        assert_eq!(metrics.timeout, Duration::from_millis(750));
        let only_traces = telemetry(&["--otlp-traces-endpoint=http://collector:4318/v1/traces"]);
        assert_eq!(only_traces.otlp_target(Signal::Metrics), None);
    }

    #[test]
    fn propagators_come_from_otel_propagators() {
        use Propagator::*;
        assert_eq!(telemetry(&[]).propagators, vec![TraceContext, Baggage]);
        assert_eq!(
            telemetry(&["--otel-propagators=xray,tracecontext"]).propagators,
            vec![Xray, TraceContext]
        );
        assert!(
            hermetic(TelemetryConfig::augment_args(clap::Command::new("comb")))
                .try_get_matches_from(["comb", "--otel-propagators=b3"])
                .is_err()
        );
    }

    #[test]
    fn grpc_endpoint_gets_no_path() {
        let target = telemetry(&[
            "--otlp-endpoint=http://127.0.0.1:4317",
            "--otlp-protocol=grpc",
        ])
        .otlp_target(Signal::Traces)
        .unwrap();
        assert_eq!(target.url, "http://127.0.0.1:4317");
    }

    #[test]
    fn service_name_precedence() {
        let name = |t: TelemetryConfig| {
            t.resource_attributes()
                .into_iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v)
        };
        assert_eq!(name(telemetry(&[])), Some("comb".into()));
        assert_eq!(
            name(telemetry(&[
                "--otel-resource-attributes=service.name=from-attrs,deployment.environment=dev%20box"
            ])),
            Some("from-attrs".into())
        );
        assert_eq!(
            name(telemetry(&[
                "--otel-resource-attributes=service.name=from-attrs",
                "--otel-service-name=backend-flask"
            ])),
            Some("backend-flask".into())
        );
        let attrs = telemetry(&["--otel-resource-attributes=deployment.environment=dev%20box"])
            .resource_attributes();
        assert!(attrs.contains(&("deployment.environment".into(), "dev box".into())));
    }
}
