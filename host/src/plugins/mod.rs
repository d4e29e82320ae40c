//! The plugin lifecycle: find the `.wasm` files in the plugins folder,
//! compile and link each (off the request path, through the compile cache),
//! read and check its manifest and sidecar, and publish a new route table.
//!
//! One task owns a [`Plugins`] and is the only writer. Readers see two
//! immutable snapshots behind [`ArcSwap`]s: the route table (the request
//! path loads it without a lock; a request finishes on the version it
//! started with) and the per-file reports (the admin list).
//!
//! The rules, in the order they apply on every reload:
//! - Only `*.wasm` files that are not hidden are plugins: editors' and copy
//!   tools' temporary files are dotfiles or have other extensions.
//! - A file modified in the last [`SETTLE_TIME`] is still being written:
//!   it is left for the next round, so a slow copy is never loaded half.
//! - A file whose size, modification time and inode (and its sidecar's)
//!   did not change is not even read again; one whose bytes did not change
//!   is not reloaded.
//! - A file that fails to load is reported with the reason, and its
//!   previous version, if any, keeps serving.
//! - A route clash is won by the plugin already serving the route; at
//!   start, when none is, by the file that finished loading first (files
//!   load side by side, and each is published as soon as it is ready).

pub mod invocation;
pub mod routes;
pub mod sidecar;
pub mod watch;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use arc_swap::ArcSwap;
use futures_util::StreamExt as _;
use opentelemetry::{
    Context, KeyValue,
    global::BoxedTracer,
    trace::{Status, TraceContextExt, Tracer},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    limits::Limits,
    metrics::Metrics,
    runtime::{
        CallStats, Compiled, Guest, InvokeError, Manifest, PreparedPlugin, Request, Response,
        Runtime, sandbox::Sandbox,
    },
    spans::{self, PluginIdentity, attributes},
};
pub use routes::{Lookup, Route, RouteOwner, RoutePattern, RouteTable};
use sidecar::Sidecar;

/// How long a file must stay unmodified before it is loaded: a copy in
/// progress keeps touching it.
pub const SETTLE_TIME: Duration = Duration::from_millis(300);

/// The default cap on routes per plugin: the Cruddur services declare one
/// or two; a cap keeps a manifest from making the table huge.
pub const DEFAULT_MAX_ROUTES: usize = 1000;

/// The route table the server reads, swapped whole on reload.
pub type SharedRoutes = Arc<ArcSwap<RouteTable<Arc<Plugin>>>>;

/// The per-file reports the admin list shows, swapped whole on reload.
pub type SharedReports = Arc<ArcSwap<Vec<FileReport>>>;

/// The HTTP methods a manifest may route; `*` is any method.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "*",
];

/// A loaded plugin: its identity, its routes and its pre-linked component.
pub struct Plugin {
    /// `plugin.name`, from the manifest.
    pub name: String,
    /// `plugin.version`, from the manifest.
    pub version: String,
    /// The manifest's one-line description.
    pub description: Option<String>,
    /// sha256 of the `.wasm` file, hex: which build is serving.
    pub digest: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// The routes it serves (the sidecar's, else the manifest's).
    pub routes: Vec<(String, RoutePattern)>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// How it was compiled.
    pub compiled: Compiled,
    /// The limits its calls run under.
    pub limits: Limits,
    /// What it may reach beyond its memory.
    sandbox: Sandbox,
    /// One permit per call that may run at once.
    slots: Arc<Semaphore>,
    pre: PreparedPlugin,
    /// The tracer its spans are started with, scoped to name and version.
    tracer: Arc<BoxedTracer>,
    /// Name, version and digest as every request's telemetry carries them.
    identity: PluginIdentity,
    /// Set after the first call: that call is the cold start.
    warm: AtomicBool,
}

impl RouteOwner for Arc<Plugin> {
    fn owner_name(&self) -> &str {
        &self.name
    }
}

impl Plugin {
    /// What the invocation span says about this plugin.
    pub fn identity(&self) -> &PluginIdentity {
        &self.identity
    }

    /// A slot for one call, or `None` when `max_concurrency` calls run
    /// already: the caller answers 503 rather than queue without bound.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Whether this is the first call since the plugin was loaded.
    pub fn take_coldstart(&self) -> bool {
        !self.warm.swap(true, Ordering::Relaxed)
    }

    /// Runs one request in a fresh instance on the runtime's guest pool,
    /// guest spans under `invocation`. The call holds `slot` until it ends,
    /// even when the client has gone and the request was dropped.
    pub async fn invoke(
        self: &Arc<Self>,
        runtime: &Arc<Runtime>,
        slot: OwnedSemaphorePermit,
        request: Request,
        invocation: Context,
    ) -> (Result<Response, InvokeError>, CallStats) {
        let (plugin, on_pool) = (self.clone(), runtime.clone());
        let call = async move {
            let _slot = slot;
            on_pool
                .invoke(
                    Guest {
                        pre: &plugin.pre,
                        tracer: plugin.tracer.clone(),
                        name: &plugin.identity.name,
                        limits: &plugin.limits,
                        sandbox: &plugin.sandbox,
                    },
                    request,
                    invocation,
                )
                .await
        };
        match runtime.on_guest_pool(call).await {
            Ok(outcome) => outcome,
            Err(panicked) => (
                Err(InvokeError::Host(panicked.to_string())),
                CallStats::default(),
            ),
        }
    }
}

/// One plugin file as the plugin list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The file name in the plugins folder.
    pub file: String,
    /// `serving`, or `failed` (with the previous version, if any, serving).
    pub state: &'static str,
    /// Why the latest version of the file failed to load.
    pub reason: Option<String>,
    /// The plugin serving from this file, if any.
    pub plugin: Option<PluginReport>,
}

/// A serving plugin, as the plugin list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginReport {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// sha256 of its `.wasm`.
    pub digest: String,
    /// `METHOD pattern` for each route.
    pub routes: Vec<String>,
    /// When it was loaded, RFC 3339.
    pub loaded_at: String,
    /// Whether its compiled code came from the cache.
    pub cache_hit: Option<bool>,
    /// How long compiling (or reading it from the cache) took, in ms.
    pub compile_ms: f64,
}

/// The plugins of one folder and the published snapshots of them.
pub struct Plugins {
    dir: PathBuf,
    loader: Loader,
    files: BTreeMap<PathBuf, FileEntry>,
    routes: SharedRoutes,
    reports: SharedReports,
}

/// What loading a file takes, cloned into each load so that loads run
/// side by side while the table is published as each one ends.
#[derive(Clone)]
struct Loader {
    runtime: Arc<Runtime>,
    /// The limits a plugin gets unless its sidecar says otherwise.
    limits: Limits,
    /// Routes one plugin may declare.
    max_routes: usize,
    metrics: Metrics,
}

/// What the lifecycle knows about one file.
#[derive(Default)]
struct FileEntry {
    /// sha256 of the `.wasm` and sidecar bytes last tried.
    key: String,
    /// The `.wasm`'s and sidecar's metadata when they were last read.
    stamp: Option<Stamp>,
    /// The version serving from this file.
    serving: Option<Arc<Plugin>>,
    /// Why the last version tried failed, if it did.
    failure: Option<String>,
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadOutcome {
    /// Files still being written, left for a later round.
    pub settling: usize,
}

impl Plugins {
    /// The plugins of `dir`, none loaded yet; each may declare up to
    /// `max_routes` routes.
    pub fn new(runtime: Arc<Runtime>, dir: PathBuf, limits: Limits, max_routes: usize) -> Self {
        Plugins {
            dir,
            loader: Loader {
                runtime,
                limits,
                max_routes,
                metrics: Metrics::new(),
            },
            files: BTreeMap::new(),
            routes: Arc::default(),
            reports: Arc::default(),
        }
    }

    /// The route table, for the server.
    pub fn routes(&self) -> SharedRoutes {
        self.routes.clone()
    }

    /// The per-file reports, for the admin list.
    pub fn reports(&self) -> SharedReports {
        self.reports.clone()
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Brings the published route table in line with the folder: loads new
    /// and changed files, drops removed ones, then swaps table and reports.
    pub async fn reload(&mut self) -> Result<ReloadOutcome> {
        let mut outcome = ReloadOutcome::default();
        let files = plugin_files(&self.dir)?;
        self.files.retain(|file, entry| {
            let kept = files.contains(file);
            if !kept && entry.serving.is_some() {
                tracing::info!(file = %file.display(), "plugin removed: its routes are gone");
            }
            kept
        });
        let mut to_load = Vec::new();
        let mut read = 0;
        for file in &files {
            let stamp = Stamp::of(file);
            if let Some(entry) = self.files.get(file)
                && stamp.is_some()
                && entry.stamp == stamp
            {
                continue;
            }
            read += 1;
            let (key, wasm, sidecar) = match read_settled(file) {
                Ok(Some(read)) => read,
                Ok(None) => {
                    outcome.settling += 1;
                    continue;
                }
                // Removed since the listing: its deletion is the next event.
                Err(_) if !file.exists() => continue,
                Err(error) => {
                    let reason = one_line(&error);
                    tracing::error!(file = %file.display(), "plugin rejected: {reason}");
                    let entry = self.files.entry(file.clone()).or_default();
                    entry.key.clear();
                    entry.failure = Some(reason);
                    continue;
                }
            };
            if let Some(entry) = self.files.get_mut(file)
                && entry.key == key
            {
                entry.stamp = stamp;
                continue;
            }
            to_load.push((file, key, stamp, wasm, sidecar));
        }
        // Loaded side by side, each published as soon as it is ready: a slow
        // manifest (it has a deadline) or a big compile does not hold the
        // others back.
        let mut loads: futures_util::stream::FuturesUnordered<_> = to_load
            .into_iter()
            .map(|(file, key, stamp, wasm, sidecar)| {
                let loader = self.loader.clone();
                async move {
                    let loaded = loader.load(file, wasm, sidecar).await;
                    (file, key, stamp, loaded)
                }
            })
            .collect();
        tracing::debug!(files = files.len(), read, "plugins folder scanned");
        while let Some((file, key, stamp, loaded)) = loads.next().await {
            let entry = self.files.entry(file.clone()).or_default();
            entry.key = key;
            entry.stamp = stamp;
            let mut candidates = BTreeMap::new();
            match loaded {
                Ok(plugin) => {
                    candidates.insert(file.clone(), plugin);
                }
                Err(error) => entry.failure = Some(one_line(&error)),
            }
            self.publish(candidates);
        }
        // Removed files, and reports, even when nothing loaded.
        self.publish(BTreeMap::new());
        Ok(outcome)
    }

    /// Builds the new table: plugins already serving keep their routes;
    /// candidates join unless they clash, in which case the file's previous
    /// version, if any, stays.
    fn publish(&mut self, mut candidates: BTreeMap<PathBuf, Arc<Plugin>>) {
        let mut table = RouteTable::default();
        for (file, entry) in &self.files {
            if let (Some(serving), false) = (&entry.serving, candidates.contains_key(file)) {
                // These coexisted in the previous table, so they cannot clash.
                let _ = table.add(routes_of(serving));
            }
        }
        for (file, entry) in &mut self.files {
            let Some(candidate) = candidates.remove(file) else {
                continue;
            };
            match table.add(routes_of(&candidate)) {
                Ok(()) => {
                    tracing::info!(
                        plugin = %candidate.name,
                        version = %candidate.version,
                        file = %file.display(),
                        digest = %&candidate.digest[..12],
                        cache_hit = ?candidate.compiled.cache_hit,
                        routes = %candidate.routes.iter().map(|(m, p)| format!("{m} {p}")).collect::<Vec<_>>().join(", "),
                        "plugin loaded"
                    );
                    entry.serving = Some(candidate);
                    entry.failure = None;
                }
                Err(clash) => {
                    let reason = format!("{clash}; the plugin already serving keeps it");
                    tracing::error!(file = %file.display(), "plugin rejected: {reason}");
                    entry.failure = Some(reason);
                    if let Some(previous) = &entry.serving {
                        let _ = table.add(routes_of(previous));
                    }
                }
            }
        }
        let reports = self
            .files
            .iter()
            .map(|(file, entry)| report(file, entry))
            .collect();
        self.routes.store(Arc::new(table));
        self.reports.store(Arc::new(reports));
    }
}

impl Loader {
    /// Loads one file inside a `plugin.load` span, logging a rejection.
    async fn load(
        self,
        file: &Path,
        wasm: Vec<u8>,
        sidecar: Option<(PathBuf, String)>,
    ) -> Result<Arc<Plugin>> {
        let tracer = spans::host_tracer();
        let span = tracer
            .span_builder("plugin.load")
            .with_attributes([KeyValue::new(
                attributes::PLUGIN_FILE,
                file.display().to_string(),
            )])
            .start(&tracer);
        let cx = Context::new().with_span(span);
        let result = load_file(
            &self.runtime,
            file,
            wasm,
            sidecar,
            (&self.limits, self.max_routes),
            &cx,
        )
        .await;
        let span = cx.span();
        match &result {
            Ok(plugin) => {
                span.set_attributes([
                    KeyValue::new(attributes::PLUGIN_NAME, plugin.name.clone()),
                    KeyValue::new(attributes::PLUGIN_VERSION, plugin.version.clone()),
                    KeyValue::new(attributes::PLUGIN_DIGEST, plugin.digest.clone()),
                    KeyValue::new(
                        attributes::PLUGIN_COMPILE_MS,
                        plugin.compiled.duration.as_secs_f64() * 1000.0,
                    ),
                    KeyValue::new(attributes::PLUGIN_LOAD_OUTCOME, "loaded"),
                ]);
                if let Some(hit) = plugin.compiled.cache_hit {
                    span.set_attribute(KeyValue::new(attributes::PLUGIN_CACHE_HIT, hit));
                }
            }
            Err(error) => {
                let reason = one_line(error);
                tracing::error!(file = %file.display(), "plugin rejected: {reason}");
                span.set_attribute(KeyValue::new(attributes::PLUGIN_LOAD_OUTCOME, "rejected"));
                span.set_status(Status::error(reason));
            }
        }
        span.end();
        self.metrics.record_load(result.is_ok());
        result.map(Arc::new)
    }
}

/// The routes of a plugin as table entries.
fn routes_of(plugin: &Arc<Plugin>) -> Vec<Route<Arc<Plugin>>> {
    plugin
        .routes
        .iter()
        .map(|(method, pattern)| Route {
            method: method.clone(),
            pattern: pattern.clone(),
            target: plugin.clone(),
        })
        .collect()
}

fn report(file: &Path, entry: &FileEntry) -> FileReport {
    FileReport {
        file: file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        state: if entry.failure.is_some() {
            "failed"
        } else {
            "serving"
        },
        reason: entry.failure.clone(),
        plugin: entry.serving.as_ref().map(|plugin| PluginReport {
            name: plugin.name.clone(),
            version: plugin.version.clone(),
            digest: plugin.digest.clone(),
            routes: plugin
                .routes
                .iter()
                .map(|(m, p)| format!("{m} {p}"))
                .collect(),
            loaded_at: spans::rfc3339(plugin.loaded_at),
            cache_hit: plugin.compiled.cache_hit,
            compile_ms: plugin.compiled.duration.as_secs_f64() * 1000.0,
        }),
    }
}

/// An error on one line: wasmtime's messages can span several.
fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The plugin files in `dir`, sorted by name.
fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading plugins folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            path.is_file() && !name.starts_with('.') && name.ends_with(".wasm")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// What tells a file changed without reading it: size, modification time
/// and inode of the `.wasm` and of its sidecar (absent or not).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    wasm: (u64, SystemTime, u64),
    sidecar: Option<(u64, SystemTime, u64)>,
}

impl Stamp {
    /// The stamp of `file` now; `None` when its metadata cannot be read.
    fn of(file: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt as _;
        let stamp = |path: &Path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.len(), metadata.modified().ok()?, metadata.ino()))
        };
        Some(Stamp {
            wasm: stamp(file)?,
            sidecar: stamp(&sidecar::path_for(file)),
        })
    }
}

/// A file's key (sha256 of its bytes and its sidecar's), bytes and sidecar,
/// or `None` while it (or its sidecar) was modified too recently.
#[allow(clippy::type_complexity, reason = "a private helper's tuple")]
fn read_settled(file: &Path) -> Result<Option<(String, Vec<u8>, Option<(PathBuf, String)>)>> {
    let sidecar_path = sidecar::path_for(file);
    for path in [file, sidecar_path.as_path()] {
        let modified = std::fs::metadata(path).and_then(|m| m.modified());
        if let Ok(modified) = modified
            && modified.elapsed().is_ok_and(|age| age < SETTLE_TIME)
        {
            return Ok(None);
        }
    }
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let sidecar = std::fs::read_to_string(&sidecar_path)
        .ok()
        .map(|text| (sidecar_path, text));
    let mut hasher = Sha256::new();
    hasher.update(&wasm);
    if let Some((_, text)) = &sidecar {
        hasher.update(b"\0sidecar\0");
        hasher.update(text.as_bytes());
    }
    Ok(Some((hex::encode(hasher.finalize()), wasm, sidecar)))
}

/// Compiles, links and describes one plugin file, inside the `plugin.load`
/// span in `load`.
async fn load_file(
    runtime: &Arc<Runtime>,
    file: &Path,
    wasm: Vec<u8>,
    sidecar: Option<(PathBuf, String)>,
    (defaults, max_routes): (&Limits, usize),
    load: &Context,
) -> Result<Plugin> {
    check_header(&wasm)?;
    let sidecar = match &sidecar {
        Some((path, text)) => sidecar::parse(text, path)?,
        None => Sidecar::default(),
    };
    let limits = defaults.with(&sidecar.limits).map_err(anyhow::Error::msg)?;
    let sandbox = sidecar.sandbox.resolve().map_err(anyhow::Error::msg)?;
    let digest = hex::encode(Sha256::digest(&wasm));
    // Compiling is CPU-bound and can take a while: keep it off the async
    // workers that serve requests.
    let compiler = runtime.clone();
    let started = Instant::now();
    let (pre, compiled) = tokio::task::spawn_blocking(move || compiler.prepare(&wasm))
        .await
        .context("the compile task panicked")?
        .context(
            "not a component targeting comb:plugin@0.1.0 (the `plugin` world of wit/plugin.wit) \
             or wasi:http/proxy",
        )?;
    tracing::debug!(file = %file.display(), elapsed = ?started.elapsed(), "compiled");
    let (pre, manifest) = match pre {
        // The manifest call belongs to no request: its spans and log lines,
        // if any, go under the load span, named after the file. It is guest
        // code, so it runs on the guest pool.
        PreparedPlugin::Comb(pre) => {
            let (describer, load, name) =
                (runtime.clone(), load.clone(), file.display().to_string());
            let describe = async move {
                let tracer = Arc::new(spans::plugin_tracer("comb.manifest", ""));
                let manifest = describer.describe(&pre, tracer, &limits, load, &name).await;
                (pre, manifest)
            };
            let (pre, manifest) = runtime
                .on_guest_pool(describe)
                .await
                .context("the manifest call ended abnormally")?;
            let manifest = manifest.context("calling the plugin's manifest")?;
            (PreparedPlugin::Comb(pre), manifest)
        }
        // A standard proxy has no manifest: it is named after its file.
        PreparedPlugin::Proxy(pre) => {
            let stem = file.file_stem().unwrap_or_default().to_string_lossy();
            (
                PreparedPlugin::Proxy(pre),
                crate::runtime::proxy::manifest(&stem),
            )
        }
    };
    let routes = check_manifest(&manifest, &sidecar, max_routes)?;
    Ok(Plugin {
        tracer: Arc::new(spans::plugin_tracer(&manifest.name, &manifest.version)),
        identity: PluginIdentity::new(&manifest.name, &manifest.version, &digest),
        name: manifest.name,
        version: manifest.version,
        description: manifest.description,
        digest,
        file: file.to_owned(),
        routes,
        loaded_at: SystemTime::now(),
        compiled,
        slots: Arc::new(Semaphore::new(limits.max_concurrency)),
        limits,
        sandbox,
        pre,
        warm: AtomicBool::new(false),
    })
}

/// Says plainly what a file is when it is not a component, before
/// wasmtime's parser says it in its own terms.
fn check_header(wasm: &[u8]) -> Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE: [u8; 4] = [1, 0, 0, 0];
    if wasm.len() < 8 || &wasm[..4] != MAGIC {
        bail!("not a WebAssembly file (it does not start with the \\0asm header)");
    }
    if wasm[4..8] == CORE_MODULE {
        bail!(
            "a core WebAssembly module, not a component: build the plugin for wasm32-wasip2 \
             (or wrap the module with `wasm-tools component new`)"
        );
    }
    Ok(())
}

/// The plugin's routes: the sidecar's when it has some, else the
/// manifest's; each method known and each pattern valid.
fn check_manifest(
    manifest: &Manifest,
    sidecar: &Sidecar,
    max_routes: usize,
) -> Result<Vec<(String, RoutePattern)>> {
    let name_ok = !manifest.name.is_empty()
        && manifest
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !name_ok {
        bail!(
            "manifest name {:?} must be non-empty lower case, digits, '_' or '-'",
            manifest.name
        );
    }
    if manifest.version.is_empty() {
        bail!("manifest of {:?} has an empty version", manifest.name);
    }
    let routes: Vec<(&str, &str)> = match &sidecar.routes {
        Some(routes) => routes
            .iter()
            .map(|r| (r.method.as_str(), r.pattern.as_str()))
            .collect(),
        None => manifest
            .routes
            .iter()
            .map(|r| (r.method.as_str(), r.pattern.as_str()))
            .collect(),
    };
    if routes.is_empty() {
        bail!("plugin {:?} declares no routes", manifest.name);
    }
    if routes.len() > max_routes {
        bail!(
            "plugin {:?} declares {} routes, more than the {max_routes} one plugin may have \
             (--max-routes-per-plugin)",
            manifest.name,
            routes.len()
        );
    }
    routes
        .into_iter()
        .map(|(method, pattern)| {
            if !METHODS.contains(&method) {
                bail!(
                    "route method {method:?} is not one of {}",
                    METHODS.join(", ")
                );
            }
            Ok((method.to_owned(), pattern.parse()?))
        })
        .collect()
}
