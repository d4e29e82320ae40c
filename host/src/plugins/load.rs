//! Loading one plugin file: compile and link it (through the cache), read
//! its sidecar and manifest (under a deadline, on the guest pool), check
//! its routes, all inside a `plugin.load` span.

use std::{
    path::Path,
    sync::{Arc, atomic::AtomicBool},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use opentelemetry::{
    Context, KeyValue,
    trace::{Status, TraceContextExt, Tracer},
};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    Plugin, RouteMethod, RoutePattern, SidecarFile,
    sidecar::{self, Sidecar},
};
use crate::{
    limits::Limits,
    logs::PluginLogger,
    metrics::Metrics,
    runtime::{GuestMeter, GuestSignals, Manifest, PreparedPlugin, Runtime, reuse::IdleInstances},
    spans::{self, PluginIdentity, attributes},
};

/// What loading a file takes, cloned into each load so that loads run
/// side by side while the table is published as each one ends.
#[derive(Clone)]
pub(super) struct Loader {
    pub(super) runtime: Arc<Runtime>,
    /// The limits a plugin gets unless its sidecar says otherwise.
    pub(super) limits: Limits,
    /// Routes one plugin may declare.
    pub(super) max_routes: usize,
    pub(super) metrics: Metrics,
    /// Whether loads are traced; see [`super::Plugins::trace_loads`].
    pub(super) trace_loads: bool,
}

impl Loader {
    /// Loads one file inside a `plugin.load` span, logging a rejection.
    /// `stem` names a component without a manifest; `artifact` is set for
    /// a component pulled from a registry.
    pub(super) async fn load(
        self,
        file: &Path,
        stem: &str,
        artifact: Option<String>,
        wasm: Vec<u8>,
        sidecar: Option<SidecarFile>,
        compiling: OwnedSemaphorePermit,
    ) -> Result<Arc<Plugin>> {
        let tracer = spans::host_tracer();
        let parent = match self.trace_loads {
            true => Context::new(),
            false => spans::unsampled_parent(),
        };
        let mut loading = vec![KeyValue::new(
            attributes::PLUGIN_FILE,
            file.display().to_string(),
        )];
        if let Some(artifact) = &artifact {
            loading.push(KeyValue::new(attributes::PLUGIN_ARTIFACT, artifact.clone()));
        }
        let span = tracer
            .span_builder("plugin.load")
            .with_attributes(loading)
            .start_with_context(&tracer, &parent);
        let cx = Context::new().with_span(span);
        let result = load_file(
            &self.runtime,
            (file, stem, artifact),
            (wasm, compiling),
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

/// An error on one line: wasmtime's messages can span several.
pub(crate) fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Compiles, links and describes one plugin file, inside the `plugin.load`
/// span in `load`.
async fn load_file(
    runtime: &Arc<Runtime>,
    (file, stem, artifact): (&Path, &str, Option<String>),
    (wasm, compiling): (Vec<u8>, OwnedSemaphorePermit),
    sidecar: Option<SidecarFile>,
    (defaults, max_routes): (&Limits, usize),
    load: &Context,
) -> Result<Plugin> {
    check_header(&wasm)?;
    let sidecar = match &sidecar {
        Some(file) => sidecar::parse(&file.text, &file.path)?,
        None => Sidecar::default(),
    };
    let limits = defaults.with(&sidecar.limits)?;
    let sandbox = sidecar.sandbox.resolve()?;
    if let Some(rule) = &sidecar.canary {
        rule.check()?;
    }
    // Hashing (up to 256 MiB from a registry) and compiling are CPU-bound
    // and can take a while: keep them off the async workers that serve
    // requests.
    let compiler = runtime.clone();
    let started = Instant::now();
    let (digest, prepared) = tokio::task::spawn_blocking(move || {
        (hex::encode(Sha256::digest(&wasm)), compiler.prepare(&wasm))
    })
    .await
    .context("the compile task panicked")?;
    // The bytes are gone: the next candidate may read its own.
    drop(compiling);
    let (pre, compiled) = prepared.context(
        "not a component targeting comb:plugin@0.1.0 (the `plugin` world of wit/plugin.wit) \
             or wasi:http (wasi:http/proxy@0.2, wasi:http/service@0.3)",
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
        // A standard proxy has no manifest: it is named after its file
        // (or repository).
        PreparedPlugin::Proxy(pre) if limits.max_instance_reuse_count > 1 && !pre.reusable() => {
            bail!(
                "limits.max_instance_reuse_count is for comb plugins and WASI 0.3 services; a \
                 wasi:http 0.2 proxy component gets a fresh instance per request"
            )
        }
        PreparedPlugin::Proxy(pre) => {
            let manifest = crate::runtime::proxy::manifest(stem, &pre);
            (PreparedPlugin::Proxy(pre), manifest)
        }
    };
    let routes = check_manifest(&manifest, &sidecar, max_routes)?;
    let identity = PluginIdentity::new(&manifest.name, &manifest.version, &digest);
    Ok(Plugin {
        tracer: Arc::new(spans::plugin_tracer(&manifest.name, &manifest.version)),
        signals: GuestSignals {
            meter: Some(Arc::new(GuestMeter::new(&identity.name, &identity.version))),
            logger: PluginLogger::new(&identity.name, &identity.version).map(Arc::new),
        },
        identity,
        name: manifest.name,
        version: manifest.version,
        description: shown_description(manifest.description),
        digest,
        file: file.to_owned(),
        artifact,
        routes,
        loaded_at: SystemTime::now(),
        compiled,
        slots: Arc::new(Semaphore::new(limits.max_concurrency)),
        idle: IdleInstances::new(limits.max_concurrency),
        profile: Default::default(),
        canary_rule: sidecar.canary.clone(),
        canary: Default::default(),
        withdrawn: Default::default(),
        limits,
        sandbox,
        pre,
        called: AtomicBool::new(false),
    })
}

/// Says plainly what a file is when it is not a component, before
/// wasmtime's parser says it in its own terms.
pub(crate) fn check_header(wasm: &[u8]) -> Result<()> {
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

/// The longest plugin name or version accepted.
const MAX_NAME_BYTES: usize = 64;

/// The longest description kept; the rest is cut off.
const MAX_DESCRIPTION_BYTES: usize = 256;

/// `text` cut short for an error message, at a character boundary.
fn cut(text: &str) -> String {
    text[..text.floor_char_boundary(MAX_NAME_BYTES)].to_owned()
}

/// A manifest's description as the plugin list and comb's page show it: the
/// first line, at most [`MAX_DESCRIPTION_BYTES`] (a plugin author's text,
/// held as long as the plugin is loaded and sent with every plugin list).
fn shown_description(description: Option<String>) -> Option<String> {
    let description = description?;
    let line = description.lines().next().unwrap_or_default().trim();
    let line = &line[..line.floor_char_boundary(MAX_DESCRIPTION_BYTES)];
    (!line.is_empty()).then(|| line.to_owned())
}

/// The plugin's routes: the sidecar's when it has some, else the
/// manifest's; each method known and each pattern valid.
fn check_manifest(
    manifest: &Manifest,
    sidecar: &Sidecar,
    max_routes: usize,
) -> Result<Vec<(RouteMethod, RoutePattern)>> {
    // Name and version go on every span and metric of the plugin's calls.
    let name_ok = !manifest.name.is_empty()
        && manifest.name.len() <= MAX_NAME_BYTES
        && manifest
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !name_ok {
        bail!(
            "manifest name {:?} must be non-empty lower case, digits, '_' or '-', \
             at most {MAX_NAME_BYTES} bytes",
            cut(&manifest.name)
        );
    }
    let version_ok = !manifest.version.is_empty()
        && manifest.version.len() <= MAX_NAME_BYTES
        && manifest.version.bytes().all(|b| b.is_ascii_graphic());
    if !version_ok {
        bail!(
            "manifest version {:?} of {:?} must be 1 to {MAX_NAME_BYTES} bytes of printable ASCII",
            cut(&manifest.version),
            manifest.name
        );
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
        .map(|(method, pattern)| Ok((method.parse()?, pattern.parse()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Route;

    #[test]
    fn the_header_says_what_a_file_is_before_wasmtime_does() {
        let error = check_header(b"nope").unwrap_err().to_string();
        assert!(error.contains("not a WebAssembly file"), "{error}");
        let error = check_header(b"\0asm\x01\0\0\0").unwrap_err().to_string();
        assert!(error.contains("a core WebAssembly module"), "{error}");
        // A component's layer and version: left to wasmtime.
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    fn manifest(name: &str, routes: &[(&str, &str)]) -> Manifest {
        Manifest {
            name: name.to_owned(),
            version: "1.0.0".to_owned(),
            description: None,
            routes: routes
                .iter()
                .map(|(method, pattern)| Route {
                    method: (*method).to_owned(),
                    pattern: (*pattern).to_owned(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_manifest_is_checked_name_methods_patterns_and_count() {
        let none = Sidecar::default();
        let routes = check_manifest(&manifest("home", &[("GET", "/a/:b")]), &none, 10).unwrap();
        assert_eq!(routes[0].0.to_string(), "GET");
        assert_eq!(&**routes[0].1.shared(), "/a/:b");
        for (bad, expected) in [
            (
                manifest("Home", &[("GET", "/")]),
                "must be non-empty lower case",
            ),
            (manifest("home", &[]), "declares no routes"),
            (
                manifest("home", &[("FETCH", "/")]),
                "route method \"FETCH\"",
            ),
            (manifest("home", &[("GET", "x")]), "must start with '/'"),
            (
                manifest("home", &[("GET", "/a"), ("GET", "/b"), ("GET", "/c")]),
                "declares 3 routes, more than the 2",
            ),
        ] {
            let error = format!("{:#}", check_manifest(&bad, &none, 2).unwrap_err());
            assert!(error.contains(expected), "{expected}: {error}");
        }
        // Name, version and patterns go on every span: each is bounded.
        let mut long_version = manifest("home", &[("GET", "/")]);
        long_version.version = "1".repeat(MAX_NAME_BYTES + 1);
        let mut spaced_version = manifest("home", &[("GET", "/")]);
        spaced_version.version = "1.0 beta".to_owned();
        for (bad, expected) in [
            (
                manifest(&"a".repeat(MAX_NAME_BYTES + 1), &[("GET", "/")]),
                "at most 64 bytes",
            ),
            (long_version, "1 to 64 bytes of printable ASCII"),
            (spaced_version, "1 to 64 bytes of printable ASCII"),
            (
                manifest("home", &[("GET", &format!("/{}", "a".repeat(300)))]),
                "(301 bytes) must be at most 256 bytes",
            ),
        ] {
            let error = format!("{:#}", check_manifest(&bad, &none, 2).unwrap_err());
            assert!(error.contains(expected), "{expected}: {error}");
        }
        assert!(
            check_manifest(
                &manifest(&"a".repeat(MAX_NAME_BYTES), &[("GET", "/")]),
                &none,
                2
            )
            .is_ok()
        );
        // A sidecar's routes replace the manifest's.
        let sidecar = sidecar::parse(
            "routes = [{ method = \"POST\", pattern = \"/x\" }]\n",
            Path::new("home.toml"),
        )
        .unwrap();
        let routes = check_manifest(&manifest("home", &[("GET", "/a")]), &sidecar, 10).unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(
            (routes[0].0.to_string().as_str(), &**routes[0].1.shared()),
            ("POST", "/x")
        );
    }

    #[test]
    fn a_description_is_kept_to_its_first_line_and_bounded() {
        assert_eq!(shown_description(None), None);
        assert_eq!(shown_description(Some(" \n".into())), None);
        assert_eq!(
            shown_description(Some("Cruddur's feed\n<script>".into())).as_deref(),
            Some("Cruddur's feed")
        );
        let long = shown_description(Some("é".repeat(1000))).unwrap();
        assert_eq!(long.len(), MAX_DESCRIPTION_BYTES);
        assert!(long.chars().all(|c| c == 'é'));
    }
}
