//! The plugin lifecycle: find the `.wasm` files in the plugins folder,
//! compile and link each, read and check its manifest, and build the route
//! table that the server reads.
//!
//! The table is immutable and shared through an [`ArcSwap`]: loading
//! builds a whole new table and swaps it in, so the request path never
//! takes a lock and a request finishes on the version it started with.

pub mod routes;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context as _, Result, bail};
use arc_swap::ArcSwap;
use opentelemetry::{Context, global::BoxedTracer};
use sha2::{Digest, Sha256};

use crate::{
    runtime::{CallTimings, InvokeError, Manifest, PreparedPlugin, Request, Response, Runtime},
    spans::{self, PluginIdentity},
};
pub use routes::{Lookup, Route, RouteOwner, RoutePattern, RouteTable};

/// The route table the server reads, swapped whole on reload.
pub type SharedRoutes = Arc<ArcSwap<RouteTable<Arc<Plugin>>>>;

/// The HTTP methods a manifest may route.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

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
    /// The routes it serves: method and pattern.
    pub routes: Vec<(String, RoutePattern)>,
    pre: PreparedPlugin,
    /// The tracer its spans are started with, scoped to name and version.
    tracer: Arc<BoxedTracer>,
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
    pub fn identity(&self) -> PluginIdentity<'_> {
        PluginIdentity {
            name: &self.name,
            version: &self.version,
            digest: &self.digest,
        }
    }

    /// Whether this is the first call since the plugin was loaded.
    pub fn take_coldstart(&self) -> bool {
        !self.warm.swap(true, Ordering::Relaxed)
    }

    /// Runs one request in a fresh instance, guest spans under `invocation`.
    pub async fn invoke(
        &self,
        runtime: &Runtime,
        request: Request,
        invocation: Context,
    ) -> (Result<Response, InvokeError>, CallTimings) {
        runtime
            .invoke(
                &self.pre,
                request,
                self.tracer.clone(),
                invocation,
                &self.name,
            )
            .await
    }
}

/// The outcome of loading a folder.
pub struct Loaded {
    /// The routes of every plugin that loaded.
    pub table: RouteTable<Arc<Plugin>>,
    /// The files that did not load, each with its reason.
    pub failures: Vec<(PathBuf, anyhow::Error)>,
}

/// Loads every `*.wasm` file in `dir` (in file-name order, so which plugin
/// wins a route clash is deterministic: the first one loaded keeps it).
///
/// A file that fails is reported in [`Loaded::failures`] and skipped; only
/// an unreadable folder is an error.
pub async fn load_dir(runtime: &Arc<Runtime>, dir: &Path) -> Result<Loaded> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading plugins folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| is_plugin_file(path))
        .collect();
    files.sort();
    let mut loaded = Loaded {
        table: RouteTable::default(),
        failures: Vec::new(),
    };
    for file in files {
        let result = match load_file(runtime, &file).await {
            Ok(plugin) => add_to_table(&mut loaded.table, plugin),
            Err(error) => Err(error),
        };
        match result {
            Ok(plugin) => tracing::info!(
                plugin = %plugin.name,
                version = %plugin.version,
                file = %file.display(),
                digest = %&plugin.digest[..12],
                routes = %plugin.routes.iter().map(|(m, p)| format!("{m} {p}")).collect::<Vec<_>>().join(", "),
                "plugin loaded"
            ),
            Err(error) => {
                // One line per rejection: wasmtime's messages can span several.
                let reason = format!("{error:#}").replace('\n', " ");
                tracing::error!(file = %file.display(), "plugin rejected: {reason}");
                loaded.failures.push((file, error));
            }
        }
    }
    Ok(loaded)
}

/// `*.wasm`, not hidden: editors' and copy tools' temporary files are
/// dotfiles or have other extensions.
fn is_plugin_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    path.is_file() && !name.starts_with('.') && path.extension().is_some_and(|ext| ext == "wasm")
}

fn add_to_table(table: &mut RouteTable<Arc<Plugin>>, plugin: Plugin) -> Result<Arc<Plugin>> {
    let plugin = Arc::new(plugin);
    let routes = plugin
        .routes
        .iter()
        .map(|(method, pattern)| Route {
            method: method.clone(),
            pattern: pattern.clone(),
            target: plugin.clone(),
        })
        .collect();
    table.add(routes)?;
    Ok(plugin)
}

/// Reads, compiles, links and describes one plugin file.
pub async fn load_file(runtime: &Arc<Runtime>, file: &Path) -> Result<Plugin> {
    let wasm = tokio::fs::read(file).await.context("reading the file")?;
    check_header(&wasm)?;
    let digest = hex::encode(Sha256::digest(&wasm));
    // Compiling is CPU-bound and can take a while: keep it off the async
    // workers that serve requests.
    let compiler = runtime.clone();
    let pre = tokio::task::spawn_blocking(move || compiler.prepare(&wasm))
        .await
        .context("the compile task panicked")?
        .context("not a loadable comb plugin component")?;
    // The manifest call gets a throwaway tracer: its spans, if any, belong
    // to no request.
    let manifest = runtime
        .describe(&pre, Arc::new(spans::plugin_tracer("comb.manifest", "")))
        .await
        .context("calling the plugin's manifest")?;
    let routes = check_manifest(&manifest)?;
    Ok(Plugin {
        tracer: Arc::new(spans::plugin_tracer(&manifest.name, &manifest.version)),
        name: manifest.name,
        version: manifest.version,
        description: manifest.description,
        digest,
        file: file.to_owned(),
        routes,
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

fn check_manifest(manifest: &Manifest) -> Result<Vec<(String, RoutePattern)>> {
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
    if manifest.routes.is_empty() {
        bail!("manifest of {:?} declares no routes", manifest.name);
    }
    manifest
        .routes
        .iter()
        .map(|route| {
            if !METHODS.contains(&route.method.as_str()) {
                bail!(
                    "route method {:?} is not one of {}",
                    route.method,
                    METHODS.join(", ")
                );
            }
            Ok((route.method.clone(), route.pattern.parse()?))
        })
        .collect()
}
