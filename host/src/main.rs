//! The `comb` binary: parse flags and environment, set up logging and
//! telemetry, serve until Ctrl-C or SIGTERM, flush spans, exit.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use comb::{
    config::{
        CheckConfig, Cli, Command, Exporter, LoadError, PluginsConfig, PushConfig, ServeConfig,
        Signal,
    },
    dashboard::{Recorder, store::Capacity},
    runtime::GuestSpans,
    telemetry::{Destination, Telemetry},
};
use tracing_subscriber::{EnvFilter, prelude::*};

/// jemalloc, with its default settings: a request allocates and frees
/// hundreds of small objects across Tokio's workers, the guest pool and the
/// span threads; glibc's malloc and free took ~12 % of its CPU.
/// Measured against glibc in one interleaved run (tests/bench/throughput.py):
/// traced 1.25-1.37x req/s, tracing off 1.03-1.20x; RSS with every bundled
/// plugin +15-20 %. mimalloc was
/// faster still but kept ~260 MiB more after plugin loads; jemalloc's
/// background threads doubled RSS. See docs/performance.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// comb's log level when `RUST_LOG` is not set: comb at info; its
/// libraries (the OTel SDK, wasmtime) only when something goes wrong, such
/// as a failed export or a full span queue.
const DEFAULT_LOG_FILTER: &str = "warn,comb=info";

/// The same when traces are exported: the per-request access log
/// (`comb::access`) is off, the traces carry it.
const EXPORTING_LOG_FILTER: &str = "warn,comb=info,comb::access=off";

fn main() -> ExitCode {
    let (cli, config_file) = match Cli::load(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        Err(LoadError::Usage { error, settings }) => {
            let _ = error.print();
            if let Some(file) = settings {
                eprintln!(
                    "note: settings were read from {}; the value may come from there",
                    file.display()
                );
            }
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
        Err(LoadError::Settings(error)) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    comb::install_crypto_provider();
    let exporting = matches!(&cli.command, Command::Serve(config)
        if !config.telemetry.sdk_disabled && config.telemetry.otlp_target(Signal::Traces).is_some());
    let default_filter = if exporting {
        EXPORTING_LOG_FILTER
    } else {
        DEFAULT_LOG_FILTER
    };
    tracing_subscriber::registry()
        .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    if let Some(file) = config_file {
        tracing::info!(
            "settings from {} (flags and environment override them)",
            file.display()
        );
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")
        .and_then(|runtime| {
            let result = runtime.block_on(async {
                match cli.command {
                    Command::Serve(config) => serve(*config).await,
                    Command::Plugins(config) => check_plugins(config).await,
                    Command::Push(config) => push(config).await,
                }
            });
            // Dropping the runtime would wait for its blocking threads: a
            // plugin still compiling (seconds for a 20 MB Python component,
            // minutes in a debug build) would hold the exit that
            // `--shutdown-timeout-ms` bounds. Requests are drained and
            // telemetry flushed by now; what is left is abandoned.
            runtime.shutdown_background();
            result
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ServeConfig) -> Result<()> {
    // Check what can be checked before binding the socket, so a typo fails
    // at once instead of after the port is taken.
    check_folder(&config.plugins)?;
    // comb's page records spans only when there is a page to show them on,
    // and says so when OpenTelemetry is off.
    let recorder = match (config.no_admin, config.telemetry.sdk_disabled) {
        (true, _) => None,
        (false, true) => Some(Recorder::off()),
        (false, false) => Some(Recorder::start(Capacity {
            recent: config.recent_traces,
            kept: config.kept_traces,
        })),
    };
    let telemetry = Telemetry::init(&config.telemetry, recorder.as_ref())
        .context("setting up OpenTelemetry")?;
    match telemetry.destination() {
        Destination::Disabled => tracing::info!("traces: off (OTEL_SDK_DISABLED=true)"),
        Destination::LogOnly => match config.telemetry.exporter(Signal::Traces) {
            Exporter::None => tracing::info!(
                "traces: OTEL_TRACES_EXPORTER=none, exporting nothing; each request's trace id is logged instead"
            ),
            Exporter::Otlp => tracing::info!(
                "traces: no OTEL_EXPORTER_OTLP_ENDPOINT set, exporting nothing; each request's trace id is logged instead"
            ),
        },
        Destination::Otlp(target) => tracing::info!(
            "traces: OTLP {} to {} ({} header(s))",
            match target.protocol {
                comb::config::OtlpProtocol::HttpProtobuf => "http/protobuf",
                comb::config::OtlpProtocol::Grpc => "grpc",
            },
            target.url,
            target.headers.len()
        ),
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let admin = match recorder {
        None => None,
        Some(recorder) => Some((
            tokio::net::TcpListener::bind(config.admin_listen)
                .await
                .with_context(|| format!("binding the admin listener {}", config.admin_listen))?,
            recorder,
        )),
    };
    if config.telemetry.metrics_exporter == Exporter::None {
        tracing::info!("metrics: OTEL_METRICS_EXPORTER=none, exporting none");
    }
    if let Some(target) = telemetry.metrics_destination() {
        tracing::info!(
            "metrics: OTLP to {} every {} ms",
            target.url,
            config.telemetry.metric_export_interval_ms
        );
    }
    if config.telemetry.logs_exporter == Exporter::None {
        tracing::info!("logs: OTEL_LOGS_EXPORTER=none, exporting none");
    }
    if let Some(target) = telemetry.logs_destination() {
        tracing::info!(
            "logs: plugins' log lines as OTLP log records to {}",
            target.url
        );
    }
    // Spans guests finish themselves (wasi:otel) join comb's pipeline.
    let guest_spans = telemetry
        .span_intake()
        .map(|intake| GuestSpans::new(move |span| intake.end(span)));
    let served = comb::run(config, listener, admin, guest_spans, shutdown_signal()).await;
    // Flush spans even when serving failed: they may say why. A collector
    // that is down loses these spans, which is worth a warning but does not
    // make comb's own run a failure.
    if let Err(error) = telemetry.shutdown().await {
        tracing::warn!("{error:#}");
    }
    served
}

fn check_folder(config: &PluginsConfig) -> Result<()> {
    if !config.plugins.is_dir() {
        bail!(
            "plugins folder {} does not exist or is not a folder",
            config.plugins.display()
        );
    }
    Ok(())
}

/// `comb plugins`: load every file as `serve` would, print a table, fail
/// when any file fails.
async fn check_plugins(config: CheckConfig) -> Result<()> {
    check_folder(&config.plugins)?;
    let runtime = std::sync::Arc::new(comb::runtime::Runtime::new(
        &config.plugins.engine(&config.limits),
    )?);
    let mut plugins = comb::plugins::Plugins::new(
        runtime,
        config.plugins.plugins.clone(),
        config.limits.limits(),
        config.plugins.max_routes_per_plugin,
    );
    comb::plugins::watch::reload_until_settled(&mut plugins).await?;
    let reports = plugins.reports().load_full();
    println!(
        "{:<28} {:<8} {:<26} {:<10} {:<13} ROUTES / REASON",
        "FILE", "STATE", "NAME", "VERSION", "DIGEST"
    );
    for report in reports.iter() {
        let (name, version, digest, routes) = match &report.plugin {
            Some(p) => (
                p.name.as_str(),
                p.version.as_str(),
                &p.digest[..12],
                p.routes.join(", "),
            ),
            None => ("-", "-", "-", String::new()),
        };
        let detail = report.reason.clone().unwrap_or(routes);
        println!(
            "{:<28} {:<8} {name:<26} {version:<10} {digest:<13} {detail}",
            report.file, report.state
        );
    }
    let failed = (reports.iter())
        .filter(|r| r.state == comb::plugins::LoadState::Failed)
        .count();
    if failed > 0 {
        bail!(
            "{failed} of {} plugin file(s) failed to load",
            reports.len()
        );
    }
    Ok(())
}

/// `comb push`: publish one component, print the pinned reference.
async fn push(config: PushConfig) -> Result<()> {
    let reference: comb::registry::PluginRef =
        config.reference.parse().map_err(anyhow::Error::msg)?;
    let reference = reference.reference;
    let credentials = match config.username {
        Some(username) => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            Some((username, comb::secret::Secret::from(password)))
        }
        None => None,
    };
    let options = comb::registry::RegistryOptions {
        insecure: match config.insecure {
            true => vec![reference.resolve_registry().to_owned()],
            false => Vec::new(),
        },
        credentials,
    };
    let digest = comb::registry::push(&config.file, &reference, &options).await?;
    tracing::info!(digest = %digest, "pushed {}", reference.whole());
    println!("{}@{digest}", reference.whole());
    Ok(())
}

/// Resolves on the first Ctrl-C or SIGTERM; a second one exits at once,
/// for when draining takes longer than the user wants to wait.
async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutting down: draining requests and flushing spans (again to quit now)");
    tokio::spawn(async {
        wait_for_signal().await;
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
