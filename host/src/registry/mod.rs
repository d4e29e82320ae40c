//! Plugins from an OCI registry: a second plugin *source* beside the folder.
//!
//! `comb push FILE REF` publishes a component as a standard Wasm OCI
//! artifact (the CNCF layout that `wkg`, `wash` and `spin registry` use: a
//! config of media type [`WASM_CONFIG_MEDIA_TYPE`] and one layer of
//! [`WASM_LAYER_MEDIA_TYPE`]). `comb serve --plugin-ref REF` pulls each
//! reference, checks it, and hands the bytes to the plugin lifecycle, which
//! loads them exactly as it loads a dropped file (compile cache, manifest,
//! sidecar, `plugin.load` span, atomic swap).
//!
//! A tag that moves is polled: one `HEAD` of its manifest per interval, and
//! a pull only when the digest changed, so every replica rolls forward
//! within one interval of a push. A reference pinned by digest never moves
//! and is not polled once pulled. A failure (registry down, missing tag,
//! wrong media type, a blob whose bytes do not match its digest) leaves
//! the serving version serving; it is logged and reported once per change.
//!
//! Layers are kept in the cache folder by digest, so a pull whose layer is
//! already there reads no blob, and every read is checked against the
//! digest again. A reference pinned by digest whose layer is kept is
//! served from the cache without asking the registry: a restart does not
//! depend on it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use oci_client::{
    Client, Reference,
    client::{ClientConfig, ClientProtocol, Config, ImageLayer},
    manifest::{OciDescriptor, OciImageManifest},
    secrets::RegistryAuth,
};
use tokio::sync::mpsc;

use self::distribution::{Distribution, sha256_digest};
use crate::plugins::{Candidate, Component, SidecarFile, Source, Update};
use crate::secret::Secret;

mod distribution;

/// The config media type of a Wasm OCI artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";

/// The media type of the one layer of a Wasm OCI artifact: the component.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";

/// The largest component comb pulls. A registry is not the plugin author,
/// but comb keeps the whole layer in memory to check and compile it.
pub const MAX_LAYER_BYTES: u64 = 256 << 20;

/// How often a tag is checked for a new digest when no interval is given.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// Time one check or pull of a reference may take in all.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);

/// A plugin reference as configured: `REGISTRY/REPOSITORY:TAG` or
/// `...@sha256:DIGEST`, with an optional sidecar file after `=`
/// (`registry.example/cruddur/home:0.1.0=home.toml`). No reference contains
/// `=`, so the split is unambiguous.
#[derive(Debug, Clone)]
pub struct PluginRef {
    /// The reference.
    pub reference: Reference,
    /// The sidecar that configures this plugin, as a folder's `NAME.toml`
    /// would.
    pub sidecar: Option<PathBuf>,
}

impl FromStr for PluginRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (reference, sidecar) = match text.split_once('=') {
            Some((reference, sidecar)) => (reference, Some(PathBuf::from(sidecar))),
            None => (text, None),
        };
        let reference = Reference::try_from(reference)
            .map_err(|error| format!("not an OCI reference ({error}): {reference}"))?;
        Ok(PluginRef { reference, sidecar })
    }
}

impl PluginRef {
    /// The reference as written, which names it in logs and reports.
    pub fn name(&self) -> String {
        self.reference.whole()
    }

    /// A name for a component that has no manifest (a `wasi:http/proxy`):
    /// the repository's last segment, as a file's stem would be.
    pub(crate) fn stem(&self) -> String {
        let repository = self.reference.repository();
        repository
            .rsplit('/')
            .next()
            .unwrap_or(repository)
            .to_owned()
    }
}

/// How comb talks to registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`HOST[:PORT]`) reached over plain HTTP; every other one
    /// over HTTPS.
    pub insecure: Vec<String>,
    /// Credentials (user, password) that replace the docker config's, for
    /// every registry.
    pub credentials: Option<(String, Secret)>,
}

impl RegistryOptions {
    /// A client for these registries.
    fn client(&self) -> Client {
        Client::new(ClientConfig {
            protocol: match self.insecure.is_empty() {
                true => ClientProtocol::Https,
                false => ClientProtocol::HttpsExcept(self.insecure.clone()),
            },
            // A plugin is one component, never a multi-platform index.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(30)),
            user_agent: concat!("comb/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        })
    }

    /// The credentials for `registry`: the ones given, else the docker
    /// config's (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`,
    /// credential helpers included, as every registry client reads them),
    /// else none.
    fn auth(&self, registry: &str) -> RegistryAuth {
        if let Some((username, password)) = &self.credentials {
            return RegistryAuth::Basic(username.clone(), password.expose().to_owned());
        }
        match docker_credential::get_credential(registry) {
            Ok(docker_credential::DockerCredential::UsernamePassword(username, password)) => {
                RegistryAuth::Basic(username, password)
            }
            Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
                RegistryAuth::Bearer(token)
            }
            Err(_) => RegistryAuth::Anonymous,
        }
    }
}

/// Publishes the component in `file` under `reference` as a Wasm OCI
/// artifact and returns the manifest's digest.
pub async fn push(file: &Path, reference: &Reference, options: &RegistryOptions) -> Result<String> {
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    crate::plugins::check_header(&wasm).with_context(|| format!("{}", file.display()))?;
    let layer_digest = sha256_digest(&wasm);
    let config = serde_json::json!({
        "created": crate::spans::rfc3339(std::time::SystemTime::now()),
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
    });
    let config = Config::new(
        serde_json::to_vec(&config)?,
        WASM_CONFIG_MEDIA_TYPE.to_owned(),
        None,
    );
    let title = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    let layer = ImageLayer::new(
        wasm,
        WASM_LAYER_MEDIA_TYPE.to_owned(),
        title.map(|title| BTreeMap::from([("org.opencontainers.image.title".to_owned(), title)])),
    );
    let layers = [layer];
    let manifest = OciImageManifest::build(&layers, &config, None);
    let client = options.client();
    let auth = options.auth(reference.resolve_registry());
    client
        .push(reference, &layers, config, &auth, Some(manifest))
        .await
        .with_context(|| format!("pushing to {}", reference.whole()))?;
    client
        .fetch_manifest_digest(reference, &auth)
        .await
        .with_context(|| format!("reading back the digest of {}", reference.whole()))
}

/// The references comb serves and how it reaches them.
pub struct RegistrySource {
    /// The references, in the order given.
    pub refs: Vec<PluginRef>,
    /// How to reach their registries.
    pub options: RegistryOptions,
    /// How often a tag is checked for a new digest.
    pub poll_interval: Duration,
    /// Where layers are kept by digest; `None`: nowhere.
    pub blobs: Option<PathBuf>,
}

/// What the poller remembers of one reference.
#[derive(Default)]
struct Seen {
    /// The manifest digest last pulled (served or rejected by the loader):
    /// not pulled again until the tag moves.
    digest: Option<String>,
    /// The last failure, logged and reported once until it changes.
    failure: Option<String>,
}

impl RegistrySource {
    /// Checks every reference now and then every poll interval, in the
    /// background. Each round's findings arrive as one message; the first
    /// round's always does (possibly empty), so the caller can tell when
    /// the first pull of every reference is over.
    pub(crate) fn watch(self) -> crate::plugins::watch::Rounds {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let client = match Distribution::new(self.options.insecure.clone()) {
                Ok(client) => client,
                Err(error) => {
                    tracing::error!("no plugin is pulled: {error:#}");
                    let _ = tx.send(Vec::new()).await;
                    return;
                }
            };
            let mut seen: Vec<Seen> = self.refs.iter().map(|_| Seen::default()).collect();
            let mut first = true;
            loop {
                let checks = self
                    .refs
                    .iter()
                    .zip(seen.iter_mut())
                    .map(|(plugin_ref, seen)| self.check(&client, plugin_ref, seen));
                let updates: Vec<Update> = futures_util::future::join_all(checks)
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                if (first || !updates.is_empty()) && tx.send(updates).await.is_err() {
                    return;
                }
                first = false;
                tokio::time::sleep(self.poll_interval).await;
            }
        });
        rx
    }

    /// One reference's check: its digest, and a pull when it moved.
    async fn check(
        &self,
        client: &Distribution,
        plugin_ref: &PluginRef,
        seen: &mut Seen,
    ) -> Option<Update> {
        let pinned = plugin_ref.reference.digest().is_some();
        if pinned && seen.digest.is_some() {
            return None;
        }
        let name = plugin_ref.name();
        // A pin whose layer is kept needs no registry: a restart serves it
        // while the registry is down.
        if let Some(digest) = plugin_ref.reference.digest()
            && let Some(layer) = self.kept_layer_of(digest)
            && let Some(wasm) = self.cached(&layer).await
        {
            match self.pulled(plugin_ref, digest, &layer, wasm) {
                Ok(pulled) => {
                    tracing::info!(reference = %name, "plugin pinned by digest, kept in the cache");
                    seen.digest = Some(digest.to_owned());
                    return Some(Update::Pulled(Box::new(pulled)));
                }
                Err(error) => tracing::warn!(reference = %name, "{error:#}"),
            }
        }
        let auth = self.options.auth(plugin_ref.reference.resolve_registry());
        let checked = tokio::time::timeout(PULL_TIMEOUT, async {
            let digest = client
                .manifest_digest(&plugin_ref.reference, &auth)
                .await
                .context("reading the manifest's digest")?;
            if seen.digest.as_ref() == Some(&digest) {
                return Ok(None);
            }
            let pulled = self.pull(client, plugin_ref, &auth, &digest).await?;
            Ok(Some((digest, pulled)))
        })
        .await
        .unwrap_or_else(|_| bail!("no answer from the registry within {PULL_TIMEOUT:?}"));
        match checked {
            // Reachable again, and nothing moved: what serves is current.
            Ok(None) => seen.failure.take().map(|_| {
                tracing::info!(reference = %name, "registry reachable again; the tag has not moved");
                Update::Current { reference: name }
            }),
            Ok(Some((digest, pulled))) => {
                tracing::info!(reference = %name, artifact = %pulled.key, "plugin pulled");
                seen.digest = Some(digest);
                seen.failure = None;
                Some(Update::Pulled(Box::new(pulled)))
            }
            Err(error) => {
                let reason = crate::plugins::one_line(&error);
                if seen.failure.as_ref() == Some(&reason) {
                    return None;
                }
                tracing::error!(reference = %name, "plugin not pulled: {reason}");
                seen.failure = Some(reason.clone());
                Some(Update::Failed {
                    reference: name,
                    reason,
                })
            }
        }
    }

    /// Pulls the manifest `digest` of `plugin_ref` and its one layer,
    /// checking media types, size and digests.
    async fn pull(
        &self,
        client: &Distribution,
        plugin_ref: &PluginRef,
        auth: &RegistryAuth,
        digest: &str,
    ) -> Result<Candidate> {
        let pinned = plugin_ref.reference.clone_with_digest(digest.to_owned());
        let (manifest, _) = client
            .manifest(&pinned, auth)
            .await
            .context("pulling the manifest")?;
        let layer = wasm_layer(&manifest)?;
        let wasm = match self.cached(&layer.digest).await {
            Some(wasm) => wasm,
            None => {
                // No more than the manifest said (a registry may send
                // more), checked against the digest.
                let size = usize::try_from(layer.size).unwrap_or(0);
                let wasm = client
                    .blob(&pinned, auth, &layer.digest, size)
                    .await
                    .context("pulling the component")?;
                self.keep(&layer.digest, wasm).await
            }
        };
        self.keep_layer_of(digest, &layer.digest);
        self.pulled(plugin_ref, digest, &layer.digest, wasm)
    }

    /// What the lifecycle gets for the manifest `digest` of `plugin_ref`,
    /// whose layer `layer` is `wasm`.
    fn pulled(
        &self,
        plugin_ref: &PluginRef,
        digest: &str,
        layer: &str,
        wasm: Vec<u8>,
    ) -> Result<Candidate> {
        let sidecar = match &plugin_ref.sidecar {
            Some(path) => Some(SidecarFile {
                path: path.clone(),
                text: std::fs::read_to_string(path)
                    .with_context(|| format!("reading the sidecar {}", path.display()))?,
            }),
            None => None,
        };
        let artifact = match plugin_ref.reference.digest() {
            Some(_) => plugin_ref.name(),
            None => format!("{}@{digest}", plugin_ref.name()),
        };
        Ok(Candidate {
            source: Source::Reference(plugin_ref.name()),
            // The manifest digest names this version.
            key: artifact.clone(),
            stamp: None,
            file: self
                .blob_path(layer)
                .unwrap_or_else(|| PathBuf::from(plugin_ref.name())),
            stem: plugin_ref.stem(),
            artifact: Some(artifact),
            wasm: Component::Bytes(wasm),
            sidecar,
        })
    }

    /// Where the layer `digest` is kept.
    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        self.cache_path(digest, "wasm")
    }

    /// `sha256-HEX.EXTENSION` in the cache folder, for a sha256 digest.
    fn cache_path(&self, digest: &str, extension: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        // A digest from the registry names a file: only hex digits pass.
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(
            self.blobs
                .as_ref()?
                .join(format!("sha256-{hex}.{extension}")),
        )
    }

    /// The layer digest of the manifest `digest`, as kept at its last pull:
    /// a manifest digest names its content for ever, so this never goes
    /// stale.
    fn kept_layer_of(&self, digest: &str) -> Option<String> {
        let layer = std::fs::read_to_string(self.cache_path(digest, "layer")?).ok()?;
        self.cache_path(&layer, "wasm").map(|_| layer)
    }

    fn keep_layer_of(&self, digest: &str, layer: &str) {
        if let Some(path) = self.cache_path(digest, "layer") {
            write_aside(&path, layer.as_bytes());
        }
    }

    /// The layer `digest` from the cache, if it is there and intact. Read
    /// and hashed (up to [`MAX_LAYER_BYTES`]) off the async workers.
    async fn cached(&self, digest: &str) -> Option<Vec<u8>> {
        let (path, digest) = (self.blob_path(digest)?, digest.to_owned());
        tokio::task::spawn_blocking(move || {
            let wasm = std::fs::read(&path).ok()?;
            let intact = sha256_digest(&wasm) == digest;
            if intact {
                // In use: the last to be pruned (see `prune`).
                let _ = std::fs::File::open(&path)
                    .and_then(|file| file.set_modified(std::time::SystemTime::now()));
            }
            intact.then_some(wasm)
        })
        .await
        .ok()
        .flatten()
    }

    /// Keeps a layer by digest (written aside, then renamed: a reader never
    /// sees half), off the async workers, and hands it back. Losing it only
    /// costs a pull.
    async fn keep(&self, digest: &str, wasm: Vec<u8>) -> Vec<u8> {
        let Some(path) = self.blob_path(digest) else {
            return wasm;
        };
        let written = tokio::task::spawn_blocking(move || {
            write_aside(&path, &wasm);
            if let Some(dir) = path.parent() {
                prune(dir, &path, MAX_KEPT_BYTES);
            }
            wasm
        });
        written.await.expect("writing a layer does not panic")
    }
}

/// What the kept layers may take on disk. Past it the files used least
/// recently go first: a registry that moves its tags, often or on purpose,
/// cannot fill the cache folder (whose `emptyDir` the deploy manifests cap).
pub(crate) const MAX_KEPT_BYTES: u64 = 256 << 20;

/// Removes kept files from `dir`, least recently written or read first,
/// until what is left takes at most `max` bytes; never `keep` (the layer
/// just kept), nor a file another pull is still writing. Every file counts
/// at least one 4 KiB block (a manifest's layer index is a few bytes).
fn prune(dir: &Path, keep: &Path, max: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let metadata = entry.metadata().ok()?;
            let path = entry.path();
            let writing = (path.extension().and_then(|e| e.to_str()))
                .is_some_and(|extension| extension.starts_with("partial"));
            (metadata.is_file() && !writing && path != keep)
                .then(|| Some((metadata.modified().ok()?, metadata.len().max(4096), path)))
                .flatten()
        })
        .collect();
    let kept = std::fs::metadata(keep).map_or(0, |m| m.len());
    let mut total = kept + files.iter().map(|(_, size, _)| size).sum::<u64>();
    files.sort();
    for (_, size, path) in files {
        if total <= max {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= size;
        }
    }
}

/// Writes `bytes` to `path` through a file beside it and a rename, so a
/// reader never sees half; a failure is logged (it only costs a pull).
fn write_aside(path: &Path, bytes: &[u8]) {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        // Unique: two references may share a layer and pull it at once.
        let partial = path.with_extension(format!("partial-{}", uuid::Uuid::new_v4()));
        std::fs::write(&partial, bytes)?;
        std::fs::rename(&partial, path)
    };
    if let Err(error) = write() {
        tracing::warn!(path = %path.display(), "keeping a pulled component: {error}");
    }
}

/// The one `application/wasm` layer of a Wasm artifact, within the size.
fn wasm_layer(manifest: &OciImageManifest) -> Result<&OciDescriptor> {
    let [layer] = manifest.layers.as_slice() else {
        bail!(
            "not a Wasm OCI artifact: {} layers (media types {}), comb serves one {WASM_LAYER_MEDIA_TYPE} layer",
            manifest.layers.len(),
            media_types(manifest)
        );
    };
    if layer.media_type != WASM_LAYER_MEDIA_TYPE {
        bail!(
            "not a Wasm OCI artifact: its layer is {}, comb serves {WASM_LAYER_MEDIA_TYPE}",
            layer.media_type
        );
    }
    if u64::try_from(layer.size).map_or(true, |size| size > MAX_LAYER_BYTES) {
        bail!(
            "the component is {} bytes, more than the {MAX_LAYER_BYTES} comb pulls",
            layer.size
        );
    }
    Ok(layer)
}

fn media_types(manifest: &OciImageManifest) -> String {
    let types: Vec<&str> = manifest
        .layers
        .iter()
        .map(|layer| layer.media_type.as_str())
        .collect();
    format!("[{}]", types.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_may_name_its_sidecar_after_an_equals_sign() {
        let plain: PluginRef = "127.0.0.1:5000/cruddur/home_activities:0.1.0"
            .parse()
            .unwrap();
        assert_eq!(plain.reference.registry(), "127.0.0.1:5000");
        assert_eq!(plain.reference.repository(), "cruddur/home_activities");
        assert_eq!(plain.reference.tag(), Some("0.1.0"));
        assert_eq!(plain.stem(), "home_activities");
        assert!(plain.sidecar.is_none());
        let with_sidecar: PluginRef = "registry.example/team/notes:prod=/etc/comb/notes.toml"
            .parse()
            .unwrap();
        assert_eq!(
            with_sidecar.sidecar,
            Some(PathBuf::from("/etc/comb/notes.toml"))
        );
        assert_eq!(with_sidecar.name(), "registry.example/team/notes:prod");
        let error = "Not A Reference!".parse::<PluginRef>().unwrap_err();
        assert!(error.contains("not an OCI reference"), "{error}");
    }

    #[test]
    fn only_one_wasm_layer_within_the_size_is_served() {
        let layer = |media_type: &str, size: i64| OciDescriptor {
            media_type: media_type.to_owned(),
            size,
            ..OciDescriptor::default()
        };
        let manifest = |layers| OciImageManifest {
            layers,
            ..OciImageManifest::default()
        };
        assert!(wasm_layer(&manifest(vec![layer(WASM_LAYER_MEDIA_TYPE, 10)])).is_ok());
        let image = wasm_layer(&manifest(vec![layer(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            10,
        )]))
        .unwrap_err()
        .to_string();
        assert!(
            image.contains("its layer is application/vnd.oci.image.layer.v1.tar+gzip"),
            "{image}"
        );
        let two = wasm_layer(&manifest(vec![
            layer(WASM_LAYER_MEDIA_TYPE, 10),
            layer(WASM_LAYER_MEDIA_TYPE, 10),
        ]))
        .unwrap_err()
        .to_string();
        assert!(two.contains("2 layers"), "{two}");
        let huge = wasm_layer(&manifest(vec![layer(WASM_LAYER_MEDIA_TYPE, 1 << 40)]))
            .unwrap_err()
            .to_string();
        assert!(huge.contains("more than"), "{huge}");
    }

    #[test]
    fn a_digest_names_a_cache_file_only_when_it_is_hex() {
        let source = RegistrySource {
            refs: Vec::new(),
            options: RegistryOptions::default(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            blobs: Some(PathBuf::from("/cache/registry")),
        };
        let hex = "ab".repeat(32);
        assert_eq!(
            source.blob_path(&format!("sha256:{hex}")),
            Some(PathBuf::from(format!("/cache/registry/sha256-{hex}.wasm")))
        );
        assert_eq!(source.blob_path("sha256:../../etc/passwd"), None);
        assert_eq!(source.blob_path(&format!("sha512:{hex}")), None);
    }

    #[test]
    fn kept_layers_past_their_bytes_go_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str, bytes: usize, age_s: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0; bytes]).unwrap();
            let when = std::time::SystemTime::now() - Duration::from_secs(age_s);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
            path
        };
        let oldest = at("sha256-a.wasm", 40_000, 300);
        let index = at("sha256-m.layer", 71, 200);
        let recent = at("sha256-b.wasm", 40_000, 100);
        let writing = at("sha256-c.partial-1", 40_000, 400);
        let just_kept = at("sha256-d.wasm", 40_000, 0);
        // 40 000 × 3 and a 4 KiB block for the index: 124 096 bytes, over
        // the cap of 82 000 until the oldest layer and the index are gone.
        prune(dir.path(), &just_kept, 82_000);
        assert!(!oldest.exists() && !index.exists(), "least recent first");
        assert!(recent.exists() && just_kept.exists() && writing.exists());
    }
}
