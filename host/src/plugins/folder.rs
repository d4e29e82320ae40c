//! Reading the plugins folder: which files are plugins, whether one is
//! still being written, whether one changed since it was last read.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};
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

/// A file's key (sha256 of its bytes and its sidecar's), size and
/// sidecar, or `None` while it (or its sidecar) was modified too recently.
/// The bytes are hashed as they are read and not kept: [`read_again`]
/// reads them when the file's load starts.
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
    let reading = || format!("reading {}", file.display());
    let mut hasher = Sha256::new();
    let size = std::io::copy(
        &mut std::fs::File::open(file).with_context(reading)?,
        &mut hasher,
    )
    .with_context(reading)?;
    let sidecar = std::fs::read_to_string(&sidecar_path)
        .ok()
        .map(|text| SidecarFile {
            path: sidecar_path,
            text,
        });
    Ok(Some(Settled {
        key: key(hasher, sidecar.as_ref()),
        size,
        sidecar,
    }))
}

/// Reads `file` for its load: its bytes, as long as they (with `sidecar`)
/// still hash to `key`, the key they were read under.
pub(super) fn read_again(file: &Path, key: &str, sidecar: Option<&SidecarFile>) -> Result<Vec<u8>> {
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut hasher = Sha256::new();
    hasher.update(&wasm);
    if self::key(hasher, sidecar) != key {
        // The next look at the folder sees the change and reads it anew.
        bail!("the file changed while it was being loaded");
    }
    Ok(wasm)
}

/// The key of a file hashed into `hasher`, with its sidecar.
fn key(mut hasher: Sha256, sidecar: Option<&SidecarFile>) -> String {
    if let Some(sidecar) = sidecar {
        hasher.update(b"\0sidecar\0");
        hasher.update(sidecar.text.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// A file read once it settled.
pub(super) struct Settled {
    /// sha256 of its bytes and its sidecar's.
    pub key: String,
    /// How many bytes it held.
    pub size: u64,
    pub sidecar: Option<SidecarFile>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_without_keeping_its_bytes_and_read_again_only_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.wasm");
        std::fs::write(&file, b"\0asm one").unwrap();
        std::fs::write(dir.path().join("p.toml"), "[limits]\n").unwrap();
        let old = SystemTime::now() - 2 * SETTLE_TIME;
        for path in [file.clone(), dir.path().join("p.toml")] {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let settled = read_settled(&file).unwrap().expect("settled");
        assert_eq!(settled.size, 8);
        let sidecar = settled.sidecar.as_ref();
        assert_eq!(
            read_again(&file, &settled.key, sidecar).unwrap(),
            b"\0asm one"
        );
        // Changed between the look and the load: refused, not loaded
        // under the old key.
        std::fs::write(&file, b"\0asm two").unwrap();
        let changed = read_again(&file, &settled.key, sidecar).unwrap_err();
        assert!(changed.to_string().contains("changed"), "{changed}");
        // The sidecar is part of the key.
        std::fs::write(&file, b"\0asm one").unwrap();
        assert!(read_again(&file, &settled.key, None).is_err());
    }
}
