//! What the builds of plugins in other languages share: finding them,
//! telling whether they changed, installing their tools once, staging
//! each build and renaming it in.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{Context, Result, ensure};

/// One language's plugins: where they are and how they are built.
pub(crate) struct Language<'a> {
    /// The file that makes a folder a plugin (`app.py`).
    pub entry: &'static str,
    /// What the `.wasm` names end with (`_py`).
    pub suffix: &'static str,
    /// Besides a plugin's folder, what its build reads (SDK, WIT, tools).
    pub inputs: Vec<&'a Path>,
    /// Where its tools are installed; one build at a time installs them.
    pub tools: PathBuf,
}

impl Language<'_> {
    /// Builds every plugin in `sources` whose inputs changed into `out`,
    /// installing the tools first (`install`, under a lock: test processes
    /// may build at once) and building each with `build_one(tools, folder,
    /// staged_wasm)`; returns the file names of all of them.
    pub(crate) fn build<T>(
        &self,
        sources: &Path,
        out: &Path,
        install: impl FnOnce(&Path) -> Result<T>,
        build_one: impl Fn(&T, &Path, &Path) -> Result<()>,
    ) -> Result<Vec<String>> {
        let plugins = plugin_dirs(sources, self.entry);
        let names: Vec<String> = plugins
            .iter()
            .map(|dir| {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                format!("{name}{}.wasm", self.suffix)
            })
            .collect();
        for (dir, name) in plugins.iter().zip(&names) {
            copy_sidecar(dir, &out.join(name))?;
        }
        let inputs = newest(self.inputs.iter().copied().chain([sources]));
        let stale: Vec<(&PathBuf, &String)> = plugins
            .iter()
            .zip(&names)
            .filter(|(_, name)| modified(&out.join(name)).is_none_or(|built| built < inputs))
            .collect();
        if stale.is_empty() {
            return Ok(names);
        }
        std::fs::create_dir_all(&self.tools)?;
        let lock = std::fs::File::create(self.tools.join(".lock"))?;
        lock.lock()?;
        let tools = install(&self.tools)?;
        let staging = self.tools.join("staging");
        std::fs::create_dir_all(&staging)?;
        std::fs::create_dir_all(out)?;
        for (dir, name) in stale {
            eprintln!("xtask: building {name}");
            let staged = staging.join(name);
            build_one(&tools, dir, &staged)
                .with_context(|| format!("building {}", dir.display()))?;
            // Renamed in: a running comb never sees half a plugin.
            std::fs::rename(&staged, out.join(name))?;
        }
        Ok(names)
    }
}

/// The file a plugin folder's serving settings (a sidecar: limits such as
/// instance reuse) are kept in; not an input of its build.
const SIDECAR: &str = "sidecar.toml";

/// A plugin folder's `sidecar.toml` beside its built `.wasm`, as comb
/// looks for it. Written only when it differs: comb reloads a plugin whose
/// sidecar changes.
pub(crate) fn copy_sidecar(dir: &Path, wasm: &Path) -> Result<()> {
    let Ok(text) = std::fs::read(dir.join(SIDECAR)) else {
        return Ok(());
    };
    let target = wasm.with_extension("toml");
    if std::fs::read(&target).ok().as_deref() != Some(text.as_slice()) {
        replace(&target, &text)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// running comb never reads half of it. The temporary name is per process:
/// test processes build side by side.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let folder = path.parent().context("a file path has a folder")?;
    std::fs::create_dir_all(folder)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = folder.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// The folders directly under `sources` that hold `entry` (a plugin each),
/// sorted; none when `sources` does not exist.
pub(crate) fn plugin_dirs(sources: &Path, entry: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sources) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|dir| dir.join(entry).is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Runs `command`, failing unless it succeeds.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(status.success(), "{command:?} failed");
    Ok(())
}

pub(crate) fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of any file under `paths`.
pub(crate) fn newest<'a>(paths: impl IntoIterator<Item = &'a Path>) -> SystemTime {
    fn walk(path: &Path, newest: &mut SystemTime) {
        if let Some(time) = modified(path) {
            *newest = (*newest).max(time);
        }
        if let Ok(entries) = std::fs::read_dir(path) {
            // The bytecode componentize-py leaves beside the sources is
            // written by the build itself, and the sidecar is read by comb,
            // not the build: neither is an input.
            for entry in entries
                .flatten()
                .filter(|e| e.file_name() != "__pycache__" && e.file_name() != SIDECAR)
            {
                walk(&entry.path(), newest);
            }
        }
    }
    let mut time = SystemTime::UNIX_EPOCH;
    for path in paths {
        walk(path, &mut time);
    }
    time
}
