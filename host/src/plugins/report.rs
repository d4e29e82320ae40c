//! What the admin list shows about each plugin source: a file in the
//! plugins folder or a registry reference.

use serde::Serialize;

use super::{Source, SourceState};
use crate::spans;

/// One source (a folder file or a registry reference) as the plugin list
/// shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// The file name in the plugins folder, or the registry reference.
    pub file: String,
    /// Where it comes from.
    pub source: SourceKind,
    /// Whether its latest version serves.
    pub state: LoadState,
    /// Why the latest version of the file failed to load.
    pub reason: Option<String>,
    /// The plugin serving from this file, if any.
    pub plugin: Option<PluginReport>,
}

/// Where a plugin comes from, as the plugin list says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A file in the plugins folder.
    Folder,
    /// A registry reference.
    Registry,
}

/// Whether a source's latest version serves, as the plugin list says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadState {
    /// The latest version serves.
    Serving,
    /// The latest version failed (`reason` says why); the previous one, if
    /// any, serves on.
    Failed,
}

impl std::fmt::Display for LoadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            LoadState::Serving => "serving",
            LoadState::Failed => "failed",
        })
    }
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
pub(super) fn report(source: &Source, entry: &SourceState) -> SourceReport {
    let (file, source) = match source {
        Source::File(file) => (
            file.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            SourceKind::Folder,
        ),
        Source::Reference(reference) => (reference.clone(), SourceKind::Registry),
    };
    SourceReport {
        file,
        source,
        state: match entry.failure {
            Some(_) => LoadState::Failed,
            None => LoadState::Serving,
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
