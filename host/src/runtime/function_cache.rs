//! Compiled functions kept on disk, so a new component compiles only the
//! functions no earlier one had.
//!
//! wasmtime's module cache is keyed by a component's whole bytes: change one
//! line of a Python or JavaScript plugin and all of it compiles again,
//! interpreter included (14–16 s for componentize-py's CPython in a debug
//! comb, most of a second in a release one), although the interpreter's
//! functions are the same in every plugin of that language. Cranelift's
//! incremental cache keys each function by its own contents instead; this
//! is its store, a file per function under the cache folder.
//!
//! Bounded: past [`MAX_BYTES`] nothing more is written in this process, and
//! a folder found over that size before this process's first write is
//! emptied first. (Measured then, not at start: most starts read compiled
//! components from wasmtime's cache and never write here, and walking the
//! folder's files cost every start ~0.15 s.) Entries are
//! written whole (a temporary file, then a rename), so comb processes
//! sharing the folder never read half of one; Cranelift checks each entry it
//! reads against its key and compiles afresh when one does not fit.

use std::{
    borrow::Cow,
    fs,
    path::{Path, PathBuf},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use wasmtime::CacheStore;

/// The most bytes the store holds: CPython's functions take ~64 MB,
/// SpiderMonkey's ~45 MB. With wasmtime's cache and the registry's layers,
/// the cache folder stays within the deploy manifests' 1 GiB `emptyDir`.
pub(crate) const MAX_BYTES: u64 = 256 << 20;

/// Cranelift's compiled functions in a folder, a file per function.
#[derive(Debug)]
pub(crate) struct FunctionCache {
    dir: PathBuf,
    /// Bytes in the folder: found before the first write, plus what this
    /// process wrote.
    bytes: OnceLock<AtomicU64>,
    /// Names this process's temporary files apart.
    writes: AtomicU64,
}

impl FunctionCache {
    /// The store in `dir` (made when missing).
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(FunctionCache {
            dir: dir.to_owned(),
            bytes: OnceLock::new(),
            writes: AtomicU64::new(0),
        })
    }

    /// The bytes the folder holds, measured at the first call; a folder
    /// over [`MAX_BYTES`] is emptied then.
    fn bytes(&self) -> &AtomicU64 {
        self.bytes.get_or_init(|| {
            let found = size_of_tree(&self.dir);
            if found <= MAX_BYTES {
                return AtomicU64::new(found);
            }
            tracing::info!(
                "the compiled-function cache {} holds {found} bytes, more than {MAX_BYTES}: emptied",
                self.dir.display()
            );
            let _ = fs::remove_dir_all(&self.dir);
            let _ = fs::create_dir_all(&self.dir);
            AtomicU64::new(0)
        })
    }

    /// Where the entry for `key` lives: two hex digits of folder, so no
    /// folder holds more than a few hundred files.
    fn path(&self, key: &[u8]) -> PathBuf {
        let hex: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
        let (shard, rest) = hex.split_at(hex.len().min(2));
        self.dir.join(shard).join(rest)
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        fs::read(self.path(key)).ok().map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let size = value.len() as u64;
        let bytes = self.bytes();
        if bytes.fetch_add(size, Ordering::Relaxed) + size > MAX_BYTES {
            bytes.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        let path = self.path(key);
        let folder = path.parent().unwrap_or(&self.dir);
        let temporary = folder.join(format!(
            ".{}-{}.tmp",
            std::process::id(),
            self.writes.fetch_add(1, Ordering::Relaxed)
        ));
        let written = fs::create_dir_all(folder)
            .and_then(|()| fs::write(&temporary, &value))
            .and_then(|()| fs::rename(&temporary, &path));
        if written.is_err() {
            let _ = fs::remove_file(&temporary);
            bytes.fetch_sub(size, Ordering::Relaxed);
        }
        written.is_ok()
    }
}

/// The bytes of the files in `dir` and its subfolders (one level deep, as
/// the store lays them out).
fn size_of_tree(dir: &Path) -> u64 {
    let files = |dir: &Path| {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.metadata().ok())
            .collect::<Vec<_>>()
    };
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|shard| {
            files(&shard.path())
                .iter()
                .map(fs::Metadata::len)
                .sum::<u64>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_back_by_key_and_a_full_store_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FunctionCache::open(dir.path()).unwrap();
        assert!(cache.get(b"key").is_none());
        assert!(cache.insert(b"key", b"compiled".to_vec()));
        assert_eq!(cache.get(b"key").as_deref(), Some(&b"compiled"[..]));
        // Reopened, it finds what it holds.
        let reopened = FunctionCache::open(dir.path()).unwrap();
        assert_eq!(reopened.bytes().load(Ordering::Relaxed), 8);
        assert_eq!(reopened.get(b"key").as_deref(), Some(&b"compiled"[..]));
        reopened.bytes().store(MAX_BYTES - 4, Ordering::Relaxed);
        assert!(!reopened.insert(b"other", b"too big".to_vec()));
        assert!(reopened.get(b"other").is_none());
    }

    #[test]
    fn a_store_over_its_size_is_emptied_before_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("ab");
        fs::create_dir_all(&shard).unwrap();
        let big = fs::File::create(shard.join("cd")).unwrap();
        big.set_len(MAX_BYTES + 1).unwrap();
        let cache = FunctionCache::open(dir.path()).unwrap();
        // Opened, it is left alone; about to be written, it is emptied.
        assert!(shard.join("cd").exists());
        assert!(cache.insert(b"key", b"compiled".to_vec()));
        assert!(!shard.join("cd").exists());
        assert_eq!(cache.bytes().load(Ordering::Relaxed), 8);
    }
}
