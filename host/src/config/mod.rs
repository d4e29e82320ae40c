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

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    connections::{self, BodyPace, ConnectionLimits},
    limits::{self, HttpTimeouts, Limits, TelemetryLimits},
};

mod file;
mod otel;

pub use crate::secret::Secret;
#[cfg(test)]
use file::with_file_defaults;
pub use file::{DEFAULT_CONFIG_FILE, LoadError};
pub(crate) use otel::header_names_in_environment;
pub use otel::{
    Exporter, OtlpCompression, OtlpProtocol, OtlpTarget, Propagator, Signal, TelemetryConfig,
};

/// Where comb listens when `--listen` is not given.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Where the admin listener listens when `--admin-listen` is not given.
pub(crate) const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";

/// `service.name` when neither `OTEL_SERVICE_NAME` nor
/// `OTEL_RESOURCE_ATTRIBUTES` names the service.
pub(crate) const DEFAULT_SERVICE_NAME: &str = "comb";

/// The OTLP export timeout when `OTEL_EXPORTER_OTLP_TIMEOUT` is not set
/// (the OTel spec's default, 10 s).
pub(crate) const DEFAULT_OTLP_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses a count or a time in ms that must be at least 1: a zero would
/// not mean "none" or "no limit" but refuse everything (no connection
/// accepted, every call overloaded or past its deadline, every span
/// dropped, every outgoing call timed out).
pub(crate) fn at_least_one<T>(text: &str) -> Result<T, AtLeastOneError<T::Err>>
where
    T: std::str::FromStr + PartialEq + From<u8>,
{
    match text.parse::<T>() {
        Ok(value) if value == T::from(0) => Err(AtLeastOneError::Zero),
        Ok(value) => Ok(value),
        Err(error) => Err(AtLeastOneError::NotANumber(error)),
    }
}

/// Why a value is not a count of at least 1 (clap prints it after the flag).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AtLeastOneError<E> {
    /// Zero.
    #[error("must be at least 1")]
    Zero,
    /// Not a number of the flag's type.
    #[error(transparent)]
    NotANumber(E),
}

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
    /// Publish a plugin to an OCI registry as a Wasm artifact.
    ///
    /// The artifact is the standard one (config
    /// `application/vnd.wasm.config.v0+json`, one `application/wasm`
    /// layer) that `wkg`, `oras` and `comb serve --plugin-ref` pull.
    /// Credentials come from the docker config (`docker login`), or from
    /// `--username` with `--password-stdin`.
    Push(PushConfig),
}

/// What `comb push` needs.
#[derive(Debug, Clone, Args)]
pub struct PushConfig {
    /// The component to publish.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Where: `REGISTRY/REPOSITORY:TAG`.
    #[arg(value_name = "REFERENCE")]
    pub reference: String,

    /// Speak plain HTTP to the registry (a registry on loopback or in a
    /// private network without TLS).
    #[arg(long)]
    pub insecure: bool,

    /// The registry user; the password is read from standard input.
    #[arg(long, requires = "password_stdin", value_name = "NAME")]
    pub username: Option<String>,

    /// Read the password (or token) for `--username` from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

/// Plugins pulled from OCI registries, beside the folder's.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Plugins from a registry")]
pub struct RegistryConfig {
    /// A plugin to pull and serve: `REGISTRY/REPOSITORY:TAG` (polled, so a
    /// push of the tag rolls comb forward) or `...@sha256:DIGEST` (pinned),
    /// optionally `=SIDECAR.toml`. Repeat for several; comma-separated in
    /// the variable.
    #[arg(
        long = "plugin-ref",
        env = "COMB_PLUGIN_REFS",
        value_delimiter = ',',
        value_name = "REFERENCE"
    )]
    pub plugin_refs: Vec<crate::registry::PluginRef>,

    /// How often each tag is checked for a new digest, in ms.
    #[arg(
        long,
        env = "COMB_REGISTRY_POLL_INTERVAL_MS",
        default_value_t = crate::registry::DEFAULT_POLL_INTERVAL.as_millis() as u64,
        value_name = "MS"
    )]
    pub registry_poll_interval_ms: u64,

    /// A registry (`HOST[:PORT]`) spoken to over plain HTTP instead of
    /// HTTPS. Repeat for several; comma-separated in the variable.
    #[arg(
        long = "insecure-registry",
        env = "COMB_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub insecure_registries: Vec<String>,
}

impl RegistryConfig {
    /// The registry source for the lifecycle, or `None` without references.
    /// Pulled layers are kept under `cache_dir`, when there is one.
    pub fn source(&self, cache_dir: Option<PathBuf>) -> Option<crate::registry::RegistrySource> {
        if self.plugin_refs.is_empty() {
            return None;
        }
        Some(crate::registry::RegistrySource {
            refs: self.plugin_refs.clone(),
            options: crate::registry::RegistryOptions {
                insecure: self.insecure_registries.clone(),
                credentials: None,
            },
            poll_interval: Duration::from_millis(self.registry_poll_interval_ms.max(100)),
            blobs: cache_dir.map(|dir| dir.join("registry")),
        })
    }
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

    /// Write the compiled plugins' function names to `/tmp/perf-PID.map`,
    /// so `perf report` names guest code (as `wasmtime --profile=perfmap`).
    #[arg(long, env = "COMB_PERF_MAP")]
    pub perf_map: bool,

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
            perf_map: self.perf_map,
        }
    }

    /// The cache folder to use, or `None` when caching is off (or no home
    /// folder is known).
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        let dir = self.cache_dir.clone().or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache"))
                })?;
            Some(base.join("comb"))
        })?;
        // wasmtime's cache takes absolute paths only; a relative one is
        // relative to the working directory, as every other path flag is.
        Some(std::path::absolute(&dir).unwrap_or(dir))
    }
}

/// Failed plugin calls as Rollbar items (see [`crate::rollbar`]).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Rollbar")]
pub struct RollbarConfig {
    /// A Rollbar project access token (`post_server_item` scope). Unset,
    /// nothing is sent to Rollbar.
    #[arg(
        id = "rollbar-access-token",
        long = "rollbar-access-token",
        env = "ROLLBAR_ACCESS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub access_token: Option<Secret>,

    /// The environment items are filed under.
    #[arg(
        id = "rollbar-environment",
        long = "rollbar-environment",
        env = "ROLLBAR_ENVIRONMENT",
        default_value = "production",
        value_name = "NAME"
    )]
    pub environment: String,

    /// Rollbar's API base URL; a proxy or a test receiver may stand in.
    #[arg(
        id = "rollbar-endpoint",
        long = "rollbar-endpoint",
        env = "ROLLBAR_ENDPOINT",
        default_value = "https://api.rollbar.com/api/1/",
        value_name = "URL"
    )]
    pub endpoint: String,

    /// Items one plugin may send per minute; failures past it are counted
    /// and logged once, not sent.
    #[arg(
        id = "rollbar-items-per-minute",
        long = "rollbar-items-per-minute",
        env = "COMB_ROLLBAR_ITEMS_PER_MINUTE",
        default_value_t = 60,
        value_name = "N"
    )]
    pub items_per_minute: u32,

    /// Request headers left out of items, comma-separated, besides
    /// `authorization`, `cookie`, `set-cookie`, `proxy-authorization` and
    /// `x-rollbar-access-token`, which never go.
    #[arg(
        id = "rollbar-scrub-headers",
        long = "rollbar-scrub-headers",
        env = "COMB_ROLLBAR_SCRUB_HEADERS",
        value_delimiter = ',',
        value_name = "LIST"
    )]
    pub scrub_headers: Vec<String>,

    /// Send plugins' error-level log lines (the `log` interface at `error`)
    /// as Rollbar message items too, as pyrollbar's logging handler does.
    #[arg(
        id = "rollbar-guest-errors",
        long = "rollbar-guest-errors",
        env = "COMB_ROLLBAR_GUEST_ERRORS",
        default_value_t = false,
        value_name = "BOOL",
        action = clap::ArgAction::Set
    )]
    pub guest_errors: bool,

    /// A link to the call's trace put on each item, `{trace_id}` replaced:
    /// e.g. `https://ui.honeycomb.io/TEAM/environments/ENV/trace?trace_id={trace_id}`.
    #[arg(
        id = "rollbar-trace-url",
        long = "rollbar-trace-url",
        env = "COMB_ROLLBAR_TRACE_URL",
        value_name = "TEMPLATE"
    )]
    pub trace_url: Option<String>,
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

    /// An address for the orchestrator's probes alone (`/livez`,
    /// `/readyz`), e.g. `0.0.0.0:8082` for a kubelet; none by default.
    #[arg(long, env = "COMB_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,

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

    /// Whether each load of a plugin file is a `plugin.load` trace of its
    /// own; `false` keeps these traces (one per plugin per start and per
    /// change) out of what is exported and of comb's page.
    #[arg(long, env = "COMB_TRACE_LOADS", default_value_t = true, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub trace_loads: bool,

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

    /// Plugins from registries.
    #[command(flatten)]
    pub registry: RegistryConfig,

    /// Rollbar reporting.
    #[command(flatten)]
    pub rollbar: RollbarConfig,

    /// Connections each listener keeps open at once; past it, new ones
    /// wait in the kernel's backlog until one closes.
    #[arg(long, env = "COMB_MAX_CONNECTIONS", default_value_t = connections::DEFAULT_MAX_CONNECTIONS, value_name = "N", value_parser = at_least_one::<usize>)]
    pub max_connections: usize,

    /// Time a request's head (request line and headers) may take to arrive,
    /// in ms; past it the connection is closed.
    #[arg(long, env = "COMB_HEADER_READ_TIMEOUT_MS", default_value_t = connections::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64, value_name = "MS", value_parser = at_least_one::<u64>)]
    pub header_read_timeout_ms: u64,

    /// Time a whole request body may take to arrive once the plugin's route
    /// starts reading it, in ms; past it the request answers 408 and the
    /// connection is closed.
    #[arg(long, env = "COMB_BODY_READ_TIMEOUT_MS", default_value_t = connections::DEFAULT_BODY_DEADLINE.as_millis() as u64, value_name = "MS", value_parser = at_least_one::<u64>)]
    pub body_read_timeout_ms: u64,

    /// The slowest a request body may arrive, in bytes a second on average,
    /// checked once it has taken 5 s (as Kestrel's minimum data rate); a
    /// slower one answers 408 and the connection is closed. 0: no minimum.
    #[arg(long, env = "COMB_MIN_BODY_RATE", default_value_t = connections::DEFAULT_MIN_BODY_RATE, value_name = "BYTES")]
    pub min_body_rate: u64,

    /// Time a connection may send and receive nothing, in ms; past it the
    /// connection is closed (a request in flight still gets its answer).
    #[arg(long, env = "COMB_IDLE_TIMEOUT_MS", default_value_t = connections::DEFAULT_IDLE_TIMEOUT.as_millis() as u64, value_name = "MS", value_parser = at_least_one::<u64>)]
    pub idle_timeout_ms: u64,

    /// Time comb keeps serving after SIGTERM, in ms, with `/readyz`
    /// answering 503, before it stops accepting and drains: the time an
    /// orchestrator takes to stop routing to it (Kubernetes removes a
    /// terminating pod's endpoints with a lag). A second signal ends it.
    #[arg(
        long,
        env = "COMB_SHUTDOWN_DELAY_MS",
        default_value_t = 0,
        value_name = "MS"
    )]
    pub shutdown_delay_ms: u64,

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
    #[arg(long = "deadline-ms", env = "COMB_DEADLINE_MS", default_value_t = limits::DEFAULT_DEADLINE.as_millis() as u64, value_name = "MS", value_parser = at_least_one::<u64>)]
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
    #[arg(long = "max-concurrency", env = "COMB_MAX_CONCURRENCY", default_value_t = limits::DEFAULT_MAX_CONCURRENCY, value_name = "N", value_parser = at_least_one::<usize>)]
    pub max_concurrency: usize,

    /// The largest request body, in bytes; larger ones get 413.
    #[arg(long = "max-request-body", env = "COMB_MAX_REQUEST_BODY", default_value_t = limits::DEFAULT_MAX_REQUEST_BODY, value_name = "BYTES")]
    pub max_request_body: usize,

    /// The largest response body a plugin may return, in bytes; larger: 500.
    #[arg(long = "max-response-body", env = "COMB_MAX_RESPONSE_BODY", default_value_t = limits::DEFAULT_MAX_RESPONSE_BODY, value_name = "BYTES")]
    pub max_response_body: usize,

    /// Time a plugin's outgoing HTTP call may take to connect, in ms.
    #[arg(long = "http-connect-timeout-ms", env = "COMB_HTTP_CONNECT_TIMEOUT_MS", default_value_t = limits::DEFAULT_HTTP_CONNECT_TIMEOUT.as_millis() as u64, value_name = "MS", value_parser = at_least_one::<u64>)]
    pub http_connect_timeout_ms: u64,

    /// Time an outgoing HTTP call waits for the response's first byte, and
    /// then between body chunks, in ms.
    #[arg(long = "http-first-byte-timeout-ms", env = "COMB_HTTP_FIRST_BYTE_TIMEOUT_MS", default_value_t = limits::DEFAULT_HTTP_FIRST_BYTE_TIMEOUT.as_millis() as u64, value_name = "MS", value_parser = at_least_one::<u64>)]
    pub http_first_byte_timeout_ms: u64,

    /// Time an outgoing HTTP call may take in all, body included, in ms.
    #[arg(long = "http-timeout-ms", env = "COMB_HTTP_TIMEOUT_MS", default_value_t = limits::DEFAULT_HTTP_TIMEOUT.as_millis() as u64, value_name = "MS", value_parser = at_least_one::<u64>)]
    pub http_timeout_ms: u64,

    /// Host-side resources one call may hold at once: handles to WASI
    /// streams and pollables, wasi:http header fields, requests, responses
    /// and bodies, spans. Past it the call fails (500, `resource_limit`).
    #[arg(long = "max-host-resources", env = "COMB_MAX_HOST_RESOURCES", default_value_t = limits::DEFAULT_MAX_HOST_RESOURCES, value_name = "N", value_parser = at_least_one::<usize>)]
    pub max_host_resources: usize,

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
            max_host_resources: self.max_host_resources,
            telemetry: TelemetryLimits {
                attribute_value_length: self
                    .span_attribute_value_length
                    .unwrap_or(self.attribute_value_length),
                span_attribute_count: limits::DEFAULT_SPAN_ATTRIBUTE_COUNT,
                span_event_count: limits::DEFAULT_SPAN_EVENT_COUNT,
                spans_per_call: self.max_spans_per_call,
                bytes_per_call: self.max_telemetry_bytes_per_call,
            },
            // Per plugin, in its sidecar: reuse trades isolation between
            // the plugin's own calls for speed, the deployer's choice.
            max_instance_reuse_count: 1,
        }
    }
}

impl ServeConfig {
    /// How each listener treats its connections.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            drain_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            body: BodyPace {
                deadline: Duration::from_millis(self.body_read_timeout_ms),
                min_rate: self.min_body_rate,
                ..BodyPace::default()
            },
        }
    }

    /// The default limits every plugin starts from, with the SDK's
    /// attribute count limit that guest spans share.
    pub fn limits(&self) -> Limits {
        let mut limits = self.limits.limits();
        limits.telemetry.span_attribute_count = self.telemetry.span_attribute_count_limit;
        limits.telemetry.span_event_count = self.telemetry.span_event_count_limit as usize;
        limits
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::{CommandFactory, FromArgMatches};

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
            _ => unreachable!(),
        }
    }

    #[test]
    fn plugin_references_come_as_a_list_from_the_file_and_the_flag_adds_none() {
        let file = "plugins = \"wasm\"\nplugin-ref = [\"127.0.0.1:5000/cruddur/home:1\", \
                    \"registry.example/team/notes@sha256:{}=notes.toml\"]\n\
                    insecure-registry = [\"127.0.0.1:5000\"]\nregistry-poll-interval-ms = 500\n";
        let file = file.replace("{}", &"0".repeat(64));
        let config = serve_over(&file, &[]).unwrap();
        let refs: Vec<String> = config
            .registry
            .plugin_refs
            .iter()
            .map(|r| r.name())
            .collect();
        assert_eq!(
            refs,
            [
                "127.0.0.1:5000/cruddur/home:1".to_owned(),
                format!("registry.example/team/notes@sha256:{}", "0".repeat(64))
            ]
        );
        let source = config.registry.source(Some("/cache".into())).unwrap();
        assert_eq!(source.poll_interval, Duration::from_millis(500));
        assert_eq!(source.options.insecure, ["127.0.0.1:5000"]);
        assert_eq!(source.blobs, Some("/cache/registry".into()));
        assert!(
            serve_over("plugins = \"wasm\"", &[])
                .unwrap()
                .registry
                .source(None)
                .is_none()
        );
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
    fn the_span_queue_holds_a_loaded_second_of_spans_unless_set() {
        let default = telemetry(&[]);
        assert_eq!(
            (
                default.bsp_max_queue_size,
                default.bsp_max_export_batch_size
            ),
            (8192, 2048)
        );
        let set = telemetry(&[
            "--otel-bsp-max-queue-size=100",
            "--otel-bsp-max-export-batch-size=10",
        ]);
        assert_eq!(
            (set.bsp_max_queue_size, set.bsp_max_export_batch_size),
            (100, 10)
        );
    }

    #[test]
    fn counts_and_times_that_cannot_be_zero_are_refused_at_zero() {
        for flag in [
            "--max-connections",
            "--max-concurrency",
            "--otel-bsp-max-queue-size",
            "--otel-bsp-max-export-batch-size",
            "--otel-bsp-export-timeout",
            "--otel-blrp-export-timeout",
            "--header-read-timeout-ms",
            "--idle-timeout-ms",
            "--deadline-ms",
            "--http-connect-timeout-ms",
            "--http-first-byte-timeout-ms",
            "--http-timeout-ms",
        ] {
            let error = serve_over("", &["--plugins", ".", flag, "0"]).unwrap_err();
            assert!(
                error.to_string().contains("must be at least 1"),
                "{flag}: {error}"
            );
            assert!(
                serve_over("", &["--plugins", ".", flag, "1"]).is_ok(),
                "{flag}"
            );
        }
        // From the settings file too.
        let error = serve_over("max-concurrency = 0\n", &["--plugins", "."]).unwrap_err();
        assert!(error.to_string().contains("must be at least 1"), "{error}");
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
    fn the_rollbar_token_never_shows_in_a_settings_dump() {
        let cli = Cli::try_parse_from([
            "comb",
            "serve",
            "--plugins",
            ".",
            "--rollbar-access-token",
            "s3cret-token",
        ])
        .unwrap();
        let Command::Serve(config) = cli.command else {
            panic!("not serve")
        };
        let dump = format!("{config:?}");
        assert!(!dump.contains("s3cret-token"), "{dump}");
        assert!(dump.contains("<redacted>"), "{dump}");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        // clap's own checks (unique names, valid defaults), which otherwise
        // only a debug binary runs, at start.
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert_eq!(telemetry(&[]).otlp_target(Signal::Traces), None);
    }

    #[test]
    fn an_exporter_of_none_turns_its_signal_off_only() {
        let config = telemetry(&[
            "--otlp-endpoint",
            "http://collector:4318",
            "--otel-metrics-exporter",
            "none",
        ]);
        assert_eq!(config.otlp_target(Signal::Metrics), None);
        assert!(config.otlp_target(Signal::Traces).is_some());
        let config = telemetry(&[
            "--otlp-endpoint",
            "http://collector:4318",
            "--otel-traces-exporter",
            "none",
        ]);
        assert_eq!(config.otlp_target(Signal::Traces), None);
        assert!(config.otlp_target(Signal::Metrics).is_some());
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
    fn logs_have_their_own_path_settings_and_exporter() {
        let config = telemetry(&[
            "--otlp-endpoint=http://collector:4318",
            "--otlp-headers=a=1",
            "--otlp-logs-headers=l=2",
            "--otlp-logs-protocol=grpc",
            "--otlp-logs-endpoint=http://logs:4317",
            "--otlp-logs-compression=gzip",
        ]);
        let logs = config.otlp_target(Signal::Logs).unwrap();
        assert_eq!(logs.url, "http://logs:4317");
        assert_eq!(logs.protocol, OtlpProtocol::Grpc);
        assert_eq!(
            logs.headers,
            vec![("a".into(), "1".into()), ("l".into(), "2".into())]
        );
        assert!(logs.gzip);
        assert!(!config.otlp_target(Signal::Traces).unwrap().gzip);
        let base = telemetry(&["--otlp-endpoint=http://collector:4318"]);
        assert_eq!(
            base.otlp_target(Signal::Logs).unwrap().url,
            "http://collector:4318/v1/logs"
        );
        let off = telemetry(&[
            "--otlp-endpoint=http://collector:4318",
            "--otel-logs-exporter=none",
        ]);
        assert_eq!(off.otlp_target(Signal::Logs), None);
        assert!(off.otlp_target(Signal::Traces).is_some());
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
