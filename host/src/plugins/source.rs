//! What a source of plugins hands the lifecycle: the folder and a registry
//! both produce [`Candidate`]s (and a registry its [`Update`]s), which
//! [`super::Plugins`] loads alike. Sources depend on this vocabulary; the
//! lifecycle depends on no source.

use std::path::PathBuf;

use super::folder::Stamp;

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    /// A `.wasm` file in the plugins folder.
    File(PathBuf),
    /// A registry reference, as configured.
    Reference(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(file) => write!(f, "{}", file.display()),
            Source::Reference(reference) => f.write_str(reference),
        }
    }
}

/// A sidecar as read: its path (for messages) and text.
#[derive(Clone)]
pub(crate) struct SidecarFile {
    /// Where it was read.
    pub path: PathBuf,
    /// Its TOML.
    pub text: String,
}

/// One version of a source to load.
pub(crate) struct Candidate {
    /// Which source.
    pub source: Source,
    /// What tells this version apart (the bytes' hash, or the manifest
    /// digest).
    pub key: String,
    /// A folder file's metadata when it was read.
    pub stamp: Option<Stamp>,
    /// The file it is read from (a registry's: the cached layer), which
    /// names it in reports and its `plugin.load` span.
    pub file: PathBuf,
    /// Its name for a component without a manifest.
    pub stem: String,
    /// `REF@sha256:...` for a registry's.
    pub artifact: Option<String>,
    /// The component.
    pub wasm: Component,
    /// Its sidecar, if it has one.
    pub sidecar: Option<SidecarFile>,
}

/// A candidate's component bytes: in memory (pulled from a registry), or
/// in its folder file, read again only when its load starts. A first load
/// of many files then holds a few files' bytes at once, not all of them.
pub(crate) enum Component {
    /// The bytes, as pulled.
    Bytes(Vec<u8>),
    /// `size` bytes in [`Candidate::file`], whose hash (with the sidecar's
    /// text) is [`Candidate::key`].
    InFile {
        /// Its size when it was hashed, to load small files first.
        size: u64,
    },
}

impl Component {
    /// How many bytes it is.
    pub(crate) fn size(&self) -> u64 {
        match self {
            Component::Bytes(bytes) => bytes.len() as u64,
            Component::InFile { size } => *size,
        }
    }
}

/// What one round of a registry's checks found for one reference.
pub(crate) enum Update {
    /// A new version to load (boxed: it holds the component).
    Pulled(Box<Candidate>),
    /// The reference was checked after a failure and has not moved: the
    /// version serving is the current one.
    Current {
        /// The reference as configured.
        reference: String,
    },
    /// The reference could not be checked or pulled; the version serving,
    /// if any, keeps serving.
    Failed {
        /// The reference as configured.
        reference: String,
        /// Why, on one line.
        reason: String,
    },
}
