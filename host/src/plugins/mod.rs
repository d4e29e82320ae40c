//! The plugin lifecycle: find the `.wasm` files in the plugins folder (and
//! take the components pulled from a registry, see [`crate::registry`]),
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

pub mod canary;
mod folder;
pub(crate) mod invocation;
mod load;
mod report;
pub(crate) mod routes;
pub(crate) mod sidecar;
pub(crate) mod source;
pub mod watch;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::Result;
use arc_swap::{ArcSwap, ArcSwapOption};
use futures_util::StreamExt as _;
use opentelemetry::{Context, global::BoxedTracer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    limits::Limits,
    metrics::Metrics,
    runtime::{
        Answer, CallStats, Compiled, Guest, GuestProfile, GuestSignals, InvokeError,
        PreparedPlugin, RoutedRequest, Runtime, reuse::IdleInstances, sandbox::Sandbox,
    },
    spans::PluginIdentity,
};
use canary::{Canary, CanaryRule};
pub use folder::SETTLE_TIME;
use folder::{Stamp, plugin_files, read_settled};
use load::Loader;
pub(crate) use load::{check_header, one_line};
pub use report::{LoadState, PluginReport, SourceKind, SourceReport};
pub use routes::{Lookup, Route, RouteMethod, RouteOwner, RoutePattern, RouteTable};
pub(crate) use source::{Candidate, Component, SidecarFile, Source, Update};

/// The default cap on routes per plugin: the Cruddur services declare one
/// or two; a cap keeps a manifest from making the table huge.
pub const DEFAULT_MAX_ROUTES: usize = 1000;

/// The route table the server reads, swapped whole on reload.
pub(crate) type SharedRoutes = Arc<ArcSwap<RouteTable<Arc<Plugin>>>>;

/// The per-file reports the admin list shows, swapped whole on reload.
pub(crate) type SharedReports = Arc<ArcSwap<Vec<SourceReport>>>;

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
    /// The file it was loaded from (for a pulled plugin, the layer as kept
    /// in the cache).
    pub file: PathBuf,
    /// `REF@sha256:...` for a plugin pulled from a registry.
    pub artifact: Option<String>,
    /// The routes it serves (the sidecar's, else the manifest's).
    pub routes: Vec<(RouteMethod, RoutePattern)>,
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
    /// Its instruments for the metrics it measures itself (`wasi:otel`),
    /// and its logger.
    signals: GuestSignals,
    /// Name, version and digest as every request's telemetry carries them.
    identity: PluginIdentity,
    /// Set by the first call: that call is the cold start.
    called: AtomicBool,
    /// Its instances between calls, when its limits allow reuse.
    idle: IdleInstances,
    /// The guest profile being taken of its calls, if any.
    profile: ArcSwapOption<GuestProfile>,
    /// When its sidecar makes it a canary: of which plugin, and how.
    canary_rule: Option<CanaryRule>,
    /// The canary serving a share of its requests, if any.
    canary: ArcSwapOption<Canary>,
    /// Set when this version, a canary, was aborted: the lifecycle does
    /// not attach it again, even before its file is gone.
    withdrawn: AtomicBool,
}

/// The version that serves one request: the plugin, or its canary.
pub struct Served {
    /// The version that runs the call.
    pub plugin: Arc<Plugin>,
    /// The canary attached when the request came, which counts the call.
    pub canary: Option<Arc<Canary>>,
}

impl Served {
    /// Counts the call's outcome against its canary, if it had one, and
    /// aborts the canary when its error rate crossed its margin.
    pub fn record(&self, primary: &Arc<Plugin>, failed: bool) {
        let Some(canary) = &self.canary else {
            return;
        };
        let on_canary = Arc::ptr_eq(&self.plugin, &canary.plugin);
        if canary.record(on_canary, failed) {
            let report = canary.report(primary);
            tracing::warn!(
                plugin = %primary.name,
                canary_version = %canary.plugin.version,
                calls = ?report.calls,
                errors = ?report.errors,
                "the canary's error rate exceeds the plugin's by more than its margin: aborting it"
            );
            primary.detach_canary(canary);
            set_canary_aside(canary.plugin.clone());
        }
    }
}

/// Sets an aborted canary's file aside, off the request path.
fn set_canary_aside(canary: Arc<Plugin>) {
    tokio::task::spawn_blocking(move || match canary::set_aside(&canary) {
        Ok(aside) => tracing::info!(file = %aside.display(), "aborted canary set aside"),
        Err(error) => tracing::error!("aborting the canary of {}: {error:#}", canary.name),
    });
}

/// Why a guest profile could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// One is being taken of this plugin already.
    #[error("a profile of {0} is being taken already")]
    Busy(String),
    /// wasmtime's profiler refused the component.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl RouteOwner for Arc<Plugin> {
    fn owner_name(&self) -> &str {
        &self.name
    }
}

impl Plugin {
    /// What the invocation span says about this plugin.
    pub(crate) fn identity(&self) -> &PluginIdentity {
        &self.identity
    }

    /// A slot for one call, or `None` when `max_concurrency` calls run
    /// already: the caller answers 503 rather than queue without bound.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Starts a guest profile of this plugin's calls for `window` (at most
    /// [`crate::runtime::MAX_PROFILE_WINDOW`]), or its next `calls` calls if they come
    /// sooner; one at a time. Reads the component's symbols, which takes
    /// seconds for an interpreter's: call it on a blocking thread.
    pub fn start_profile(
        &self,
        window: Duration,
        calls: Option<u64>,
    ) -> Result<Arc<GuestProfile>, ProfileError> {
        let busy = || ProfileError::Busy(self.name.clone());
        if self.profile.load().is_some() {
            return Err(busy());
        }
        let profile = Arc::new(
            GuestProfile::start(&self.pre, &self.name, window, calls)
                .map_err(ProfileError::Failed)?,
        );
        let before = self
            .profile
            .compare_and_swap(&None::<Arc<GuestProfile>>, Some(profile.clone()));
        match before.as_ref() {
            Some(_) => Err(busy()),
            None => Ok(profile),
        }
    }

    /// Ends `profile`'s taking: no call joins it after this.
    pub fn end_profile(&self, profile: &Arc<GuestProfile>) {
        self.profile.rcu(|current| match current {
            Some(installed) if Arc::ptr_eq(installed, profile) => None,
            other => other.clone(),
        });
    }

    /// The profile a call starting now samples into, if one is taken and
    /// the call joins it. Nothing but an empty slot's load when none is.
    fn profile_for_call(&self) -> Option<Arc<GuestProfile>> {
        let installed = self.profile.load();
        installed
            .as_ref()
            .filter(|profile| profile.admit_call())
            .cloned()
    }

    /// The version that serves a request with `headers`: its canary when
    /// one is attached and picks it, else this plugin. With no canary,
    /// one empty slot read.
    pub fn serving(self: &Arc<Self>, headers: &http::HeaderMap) -> Served {
        let canary = self.canary.load_full();
        let plugin = match &canary {
            Some(canary) if canary.picks(headers) => canary.plugin.clone(),
            _ => self.clone(),
        };
        Served { plugin, canary }
    }

    /// The canary attached to this plugin, if any.
    pub fn canary(&self) -> Option<Arc<Canary>> {
        self.canary.load_full()
    }

    /// Takes `canary` off this plugin (if it is still the one attached):
    /// every request from now on goes to the plugin.
    pub fn detach_canary(&self, canary: &Arc<Canary>) {
        canary.mark_aborted();
        self.canary.rcu(|current| match current {
            Some(attached) if Arc::ptr_eq(attached, canary) => None,
            other => other.clone(),
        });
    }

    /// Aborts its canary: detached at once, its file set aside (the folder's
    /// next reload then forgets it). Fails when it has none.
    pub fn abort_canary(&self) -> Result<Arc<Canary>> {
        let Some(canary) = self.canary() else {
            anyhow::bail!("{} has no canary", self.name);
        };
        self.detach_canary(&canary);
        canary::set_aside(&canary.plugin)?;
        Ok(canary)
    }

    /// Promotes its canary: the canary's file replaces this plugin's (the
    /// folder's next reload serves it as the plugin), and the canary
    /// serves on until then. Fails when it has none.
    pub fn promote_canary(&self) -> Result<Arc<Canary>> {
        let Some(canary) = self.canary() else {
            anyhow::bail!("{} has no canary", self.name);
        };
        canary::promote(self, &canary.plugin)?;
        Ok(canary)
    }

    /// Whether this is the first call since the plugin was loaded.
    pub(crate) fn take_coldstart(&self) -> bool {
        !self.called.swap(true, Ordering::Relaxed)
    }

    /// Runs one request in a fresh instance (or, when its limits allow
    /// reuse, a warm one) on the runtime's guest pool,
    /// guest spans under `invocation`. The call holds `slot` until it ends,
    /// even when the client has gone and the request was dropped.
    pub async fn invoke(
        self: &Arc<Self>,
        runtime: &Arc<Runtime>,
        slot: OwnedSemaphorePermit,
        request: RoutedRequest,
        invocation: Context,
    ) -> (Result<Answer, InvokeError>, CallStats) {
        let (plugin, on_pool) = (self.clone(), runtime.clone());
        let call = async move {
            let _slot = slot;
            on_pool
                .invoke(
                    Guest {
                        pre: &plugin.pre,
                        tracer: plugin.tracer.clone(),
                        signals: &plugin.signals,
                        name: &plugin.identity.name,
                        limits: &plugin.limits,
                        sandbox: &plugin.sandbox,
                        idle: &plugin.idle,
                        profile: plugin.profile_for_call(),
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

/// What [`Plugins::on_loaded`] calls.
type OnLoaded = Arc<dyn Fn(&Plugin) + Send + Sync>;

/// The plugins of one folder (and of the registry references, if any) and
/// the published snapshots of them.
pub struct Plugins {
    dir: PathBuf,
    loader: Loader,
    sources: BTreeMap<Source, SourceState>,
    routes: SharedRoutes,
    reports: SharedReports,
    /// Told of each plugin that starts serving (a deploy, for Rollbar).
    on_loaded: Option<OnLoaded>,
}

/// What the lifecycle knows about one source: a folder file or a registry
/// reference.
#[derive(Default)]
pub(super) struct SourceState {
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
                trace_loads: true,
            },
            sources: BTreeMap::new(),
            routes: Arc::default(),
            reports: Arc::default(),
            on_loaded: None,
        }
    }

    /// Calls `on_loaded` with each plugin that starts serving, at the first
    /// load and on every change.
    pub fn on_loaded(mut self, on_loaded: impl Fn(&Plugin) + Send + Sync + 'static) -> Self {
        self.on_loaded = Some(Arc::new(on_loaded));
        self
    }

    /// Whether each load is a `plugin.load` trace (the default) or goes
    /// untraced (its spans are not sampled).
    pub fn trace_loads(mut self, trace_loads: bool) -> Self {
        self.loader.trace_loads = trace_loads;
        self
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
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Brings the published route table in line with the folder: loads new
    /// and changed files, drops removed ones, then swaps table and reports.
    pub async fn reload(&mut self) -> Result<ReloadOutcome> {
        let mut outcome = ReloadOutcome::default();
        let files = plugin_files(&self.dir)?;
        self.sources.retain(|source, entry| {
            let Source::File(file) = source else {
                return true;
            };
            let kept = files.contains(file);
            if !kept && entry.serving.is_some() {
                tracing::info!(file = %file.display(), "plugin removed: its routes are gone");
            }
            kept
        });
        let mut to_load = Vec::new();
        let mut read = 0;
        for file in &files {
            let source = Source::File(file.clone());
            let stamp = Stamp::of(file);
            if let Some(entry) = self.sources.get(&source)
                && stamp.is_some()
                && entry.stamp == stamp
            {
                continue;
            }
            read += 1;
            // Reading and hashing a file (20 MB for a Python plugin) is
            // blocking work: off the workers that serve requests.
            let reading = file.clone();
            let settled = tokio::task::spawn_blocking(move || read_settled(&reading))
                .await
                .unwrap_or_else(|panicked| Err(anyhow::anyhow!("reading panicked: {panicked}")));
            let folder::Settled { key, size, sidecar } = match settled {
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
                    let entry = self.sources.entry(source).or_default();
                    entry.key.clear();
                    entry.failure = Some(reason);
                    continue;
                }
            };
            if let Some(entry) = self.sources.get_mut(&source)
                && entry.key == key
            {
                entry.stamp = stamp;
                continue;
            }
            let stem = file.file_stem().unwrap_or_default().to_string_lossy();
            to_load.push(Candidate {
                stem: stem.into_owned(),
                file: file.clone(),
                source,
                key,
                stamp,
                artifact: None,
                wasm: Component::InFile { size },
                sidecar,
            });
        }
        tracing::debug!(files = files.len(), read, "plugins folder scanned");
        self.load(to_load).await;
        Ok(outcome)
    }

    /// Takes what one round of registry checks found: loads the new
    /// versions (a failed one leaves the previous serving), and records the
    /// failures for the plugin list.
    pub(crate) async fn apply(&mut self, updates: Vec<Update>) {
        let mut to_load = Vec::new();
        for update in updates {
            match update {
                Update::Pulled(candidate) => to_load.push(*candidate),
                Update::Current { reference } => {
                    let entry = self
                        .sources
                        .entry(Source::Reference(reference))
                        .or_default();
                    if entry.serving.is_some() {
                        entry.failure = None;
                    }
                }
                Update::Failed { reference, reason } => {
                    let entry = self
                        .sources
                        .entry(Source::Reference(reference))
                        .or_default();
                    entry.failure = Some(reason);
                }
            }
        }
        self.load(to_load).await;
    }

    /// Loads candidates side by side, each published as soon as it is
    /// ready: a slow manifest (it has a deadline) or a big compile does not
    /// hold the others back. Then publishes once more, for removed files
    /// and the reports, even when nothing loaded.
    async fn load(&mut self, mut to_load: Vec<Candidate>) {
        // Smallest first: compiles run one at a time, in this order, and a
        // 20 MB Python component compiled early would keep every small
        // plugin's routes out for its whole compile (seconds; ~30 s in a
        // debug build with a cold cache).
        to_load.sort_by_key(|candidate| candidate.wasm.size());
        let compiling = Arc::new(tokio::sync::Semaphore::new(LOADS_AT_ONCE));
        let mut loads: futures_util::stream::FuturesUnordered<_> = to_load
            .into_iter()
            .map(|candidate| {
                let loader = self.loader.clone();
                let compiling = compiling.clone();
                async move {
                    let Candidate {
                        source,
                        key,
                        stamp,
                        file,
                        stem,
                        artifact,
                        wasm,
                        sidecar,
                    } = candidate;
                    // Taken in this order, and held until the bytes are compiled.
                    let slot = compiling.acquire_owned().await.expect("never closed");
                    let loaded = match bytes_of(wasm, &file, &key, sidecar.as_ref()).await {
                        Ok(wasm) => {
                            loader
                                .load(&file, &stem, artifact, wasm, sidecar, slot)
                                .await
                        }
                        Err(error) => Err(error),
                    };
                    (source, key, stamp, loaded)
                }
            })
            .collect();
        while let Some((source, key, stamp, loaded)) = loads.next().await {
            let entry = self.sources.entry(source.clone()).or_default();
            entry.key = key;
            entry.stamp = stamp;
            let mut candidates = BTreeMap::new();
            match loaded {
                Ok(plugin) => {
                    candidates.insert(source, plugin);
                }
                Err(error) => entry.failure = Some(one_line(&error)),
            }
            self.publish(candidates);
        }
        self.publish(BTreeMap::new());
    }

    /// Builds the new table: plugins already serving keep their routes;
    /// candidates join unless they clash, in which case the file's previous
    /// version, if any, stays.
    fn publish(&mut self, mut candidates: BTreeMap<Source, Arc<Plugin>>) {
        let mut table = RouteTable::default();
        for (file, entry) in &self.sources {
            if let (Some(serving), false) = (&entry.serving, candidates.contains_key(file))
                && serving.canary_rule.is_none()
            {
                // These coexisted in the previous table, so they cannot clash.
                let _ = table.add(routes_of(serving));
            }
        }
        for (source, entry) in &mut self.sources {
            let Some(candidate) = candidates.remove(source) else {
                continue;
            };
            // A canary serves its plugin's routes, attached below.
            let added = match candidate.canary_rule {
                Some(_) => Ok(()),
                None => table.add(routes_of(&candidate)),
            };
            match added {
                Ok(()) => {
                    tracing::info!(
                        plugin = %candidate.name,
                        version = %candidate.version,
                        source = %source,
                        digest = %&candidate.digest[..12],
                        cache_hit = ?candidate.compiled.cache_hit,
                        routes = %candidate.routes.iter().map(|(m, p)| format!("{m} {p}")).collect::<Vec<_>>().join(", "),
                        "plugin loaded"
                    );
                    if let Some(on_loaded) = &self.on_loaded {
                        on_loaded(&candidate);
                    }
                    entry.serving = Some(candidate);
                    entry.failure = None;
                }
                Err(clash) => {
                    let reason = format!("{clash}; the plugin already serving keeps it");
                    tracing::error!(source = %source, "plugin rejected: {reason}");
                    entry.failure = Some(reason);
                    if let Some(previous) =
                        entry.serving.as_ref().filter(|p| p.canary_rule.is_none())
                    {
                        let _ = table.add(routes_of(previous));
                    }
                }
            }
        }
        self.attach_canaries(&table);
        let reports = self
            .sources
            .iter()
            .map(|(source, entry)| report::report(source, entry))
            .collect();
        self.routes.store(Arc::new(table));
        self.reports.store(Arc::new(reports));
    }
}

impl Plugins {
    /// Attaches each serving canary to the plugin it names in `table`,
    /// and takes canaries off plugins whose canary is gone. A canary
    /// already attached stays (with its counts); one whose plugin is not
    /// serving, or that serves routes its plugin does not, waits, its
    /// reason in the plugin list.
    fn attach_canaries(&mut self, table: &RouteTable<Arc<Plugin>>) {
        let mut wanted: BTreeMap<String, Arc<Plugin>> = BTreeMap::new();
        for entry in self.sources.values_mut() {
            let Some(canary) = entry.serving.clone() else {
                continue;
            };
            let Some(rule) = &canary.canary_rule else {
                continue;
            };
            if canary.withdrawn.load(Ordering::Relaxed) {
                entry.failure = Some(format!("canary of {}, aborted", rule.of));
                continue;
            }
            let waiting = match table.owner(&rule.of) {
                None => Some(format!(
                    "canary of {}, which serves no routes: waiting for it",
                    rule.of
                )),
                Some(primary) => {
                    let foreign: Vec<String> = canary
                        .routes
                        .iter()
                        .filter(|route| !primary.routes.contains(route))
                        .map(|(method, pattern)| format!("{method} {pattern}"))
                        .collect();
                    (!foreign.is_empty()).then(|| {
                        format!(
                            "canary of {} serves routes it does not: {}",
                            rule.of,
                            foreign.join(", ")
                        )
                    })
                }
            };
            match waiting {
                Some(reason) => entry.failure = Some(reason),
                None if wanted.contains_key(&rule.of) => {
                    entry.failure = Some(format!("{} has a canary already", rule.of));
                }
                None => {
                    entry.failure = None;
                    wanted.insert(rule.of.clone(), canary);
                }
            }
        }
        for primary in table.owners() {
            let attached = primary.canary.load_full();
            match (wanted.get(&primary.name), &attached) {
                (Some(canary), Some(current)) if Arc::ptr_eq(canary, &current.plugin) => {}
                (Some(canary), _) => {
                    let rule = canary.canary_rule.clone().expect("a canary has its rule");
                    tracing::info!(
                        plugin = %primary.name,
                        version = %primary.version,
                        canary_version = %canary.version,
                        weight = rule.weight,
                        header = ?rule.header,
                        "canary attached"
                    );
                    primary
                        .canary
                        .store(Some(Arc::new(Canary::new(canary.clone(), rule))));
                }
                (None, Some(_)) => {
                    tracing::info!(plugin = %primary.name, "canary gone: the plugin serves all of its requests");
                    primary.canary.store(None);
                }
                (None, None) => {}
            }
        }
    }
}

/// How many candidates may hold their component's bytes at once, from
/// reading them until they are compiled. Compiles go one at a time anyway;
/// without this bound a first load of a thousand files held all their bytes
/// while each waited for the compiler. Manifest calls (each with its
/// deadline) come after and are not bounded here, so slow ones do not
/// hold back the others' loads.
const LOADS_AT_ONCE: usize = 4;

/// A candidate's bytes: as pulled, or read from its `file` now (still
/// hashing to `key`), off the async workers: 20 MB for a Python plugin.
async fn bytes_of(
    wasm: Component,
    file: &Path,
    key: &str,
    sidecar: Option<&SidecarFile>,
) -> Result<Vec<u8>> {
    if let Component::Bytes(bytes) = wasm {
        return Ok(bytes);
    }
    let (file, key, sidecar) = (file.to_owned(), key.to_owned(), sidecar.cloned());
    tokio::task::spawn_blocking(move || folder::read_again(&file, &key, sidecar.as_ref()))
        .await
        .unwrap_or_else(|panicked| Err(anyhow::anyhow!("reading panicked: {panicked}")))
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
