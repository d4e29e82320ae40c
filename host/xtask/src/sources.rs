//! What the builds of plugins in other languages share: finding them,
//! telling whether they changed, running their tools.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{Context, Result, ensure};

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
            for entry in entries.flatten() {
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
