//! What the admin list shows about each plugin source: a file in the
//! plugins folder or a registry reference.

use serde::Serialize;

use super::{FileEntry, Source};
use crate::spans;

/// One plugin file as the plugin list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The file name in the plugins folder, or the registry reference.
    pub file: String,
    /// `folder` or `registry`.
    pub source: &'static str,
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
    /// `REF@sha256:...`: the registry manifest it was pulled as.
    pub artifact: Option<String>,
    /// `METHOD pattern` for each route.
    pub routes: Vec<String>,
    /// When it was loaded, RFC 3339.
    pub loaded_at: String,
    /// Whether its compiled code came from the cache.
    pub cache_hit: Option<bool>,
    /// How long compiling (or reading it from the cache) took, in ms.
    pub compile_ms: f64,
}

/// The report of `source` from what the lifecycle knows about it.
pub(super) fn report(source: &Source, entry: &FileEntry) -> FileReport {
    let (file, source) = match source {
        Source::File(file) => (
            file.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            "folder",
        ),
        Source::Reference(reference) => (reference.clone(), "registry"),
    };
    FileReport {
        file,
        source,
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
            artifact: plugin.artifact.clone(),
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
