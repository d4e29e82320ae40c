//! Reading the plugins folder: which files are plugins, whether one is
//! still being written, whether one changed since it was last read.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};

use super::{SidecarFile, sidecar};

/// How long a file must stay unmodified before it is loaded: a copy in
/// progress keeps touching it.
pub const SETTLE_TIME: Duration = Duration::from_millis(300);

/// The plugin files in `dir`, sorted by name.
pub(super) fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>> {
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
pub(crate) struct Stamp {
    wasm: (u64, SystemTime, u64),
    sidecar: Option<(u64, SystemTime, u64)>,
}

impl Stamp {
    /// The stamp of `file` now; `None` when its metadata cannot be read.
    pub(super) fn of(file: &Path) -> Option<Stamp> {
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
pub(super) fn read_settled(file: &Path) -> Result<Option<Settled>> {
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
        .map(|text| SidecarFile {
            path: sidecar_path,
            text,
        });
    let mut hasher = Sha256::new();
    hasher.update(&wasm);
    if let Some(sidecar) = &sidecar {
        hasher.update(b"\0sidecar\0");
        hasher.update(sidecar.text.as_bytes());
    }
    Ok(Some(Settled {
        key: hex::encode(hasher.finalize()),
        wasm,
        sidecar,
    }))
}

/// A file read once it settled.
pub(super) struct Settled {
    /// sha256 of its bytes and its sidecar's.
    pub key: String,
    pub wasm: Vec<u8>,
    pub sidecar: Option<SidecarFile>,
}
