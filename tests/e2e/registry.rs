//! Plugins from a real OCI registry (Debian's `docker-registry`, the CNCF
//! distribution registry) on a loopback port: pushed with `comb push` or
//! by hand following the distribution spec, pulled and served, rolled
//! forward when the tag moves, rejected when broken.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::{
    harness::{Comb, Options, PATIENCE, client, eventually, get_json, get_response, plugins, poll},
    lifecycle::{hammer, is_v2, report},
};

/// A distribution registry on a free loopback port, its storage in a
/// temporary folder; killed when dropped.
struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:PORT`: the registry part of a reference.
    host: String,
    storage: tempfile::TempDir,
}

impl Registry {
    async fn start() -> Registry {
        Registry::start_with(false).await
    }

    /// A registry that asks for [`USER`] and [`PASSWORD`] (HTTP basic,
    /// htpasswd) for every request.
    async fn start_with_auth() -> Registry {
        Registry::start_with(true).await
    }

    async fn start_with(auth: bool) -> Registry {
        let storage = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {host}\n{}",
                storage.path().join("data").display(),
                match auth {
                    true => format!(
                        "auth:\n  htpasswd:\n    realm: comb-tests\n    path: {}\n",
                        storage.path().join("htpasswd").display()
                    ),
                    false => String::new(),
                }
            ),
        )
        .unwrap();
        std::fs::write(
            storage.path().join("htpasswd"),
            format!("{USER}:{HTPASSWD}\n"),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry (cargo xtask test installs it)");
        let registry = Registry {
            child: Some(child),
            host,
            storage,
        };
        let v2 = format!("http://{}/v2/", registry.host);
        poll("the registry answers", String::new, || async {
            let answer = client().get(&v2).send().await;
            answer.is_ok_and(|r| r.status() == if auth { 401 } else { 200 })
        })
        .await;
        registry
    }

    /// `HOST/REPOSITORY:TAG` on this registry.
    fn reference(&self, repository_and_tag: &str) -> String {
        format!("{}/{repository_and_tag}", self.host)
    }

    /// Where the registry keeps the blob `digest`.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Uploads one blob (monolithic: POST, then PUT with the digest).
    async fn upload(&self, repository: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let client = client();
        let started = client
            .post(format!(
                "http://{}/v2/{repository}/blobs/uploads/",
                self.host
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202);
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let location = match location.starts_with('/') {
            true => format!("http://{}{location}", self.host),
            false => location,
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = client
            .put(format!("{location}{separator}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
        digest
    }

    /// Pushes a one-layer artifact by hand, as another client following
    /// the OCI distribution spec would (no comb code): the layer must be
    /// uploaded already. Returns the manifest's digest.
    async fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        layer: (&str, &str, usize),
    ) -> String {
        let config = br#"{"architecture":"wasm","os":"wasip2"}"#;
        let config_digest = self.upload(repository, config).await;
        let (media_type, digest, size) = layer;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.wasm.config.v0+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{"mediaType": media_type, "digest": digest, "size": size}],
        });
        let body = serde_json::to_vec(&manifest).unwrap();
        let put = client()
            .put(format!(
                "http://{}/v2/{repository}/manifests/{tag}",
                self.host
            ))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
        sha256_digest(&body)
    }

    /// A raw push of a plugin built in this run, under `media_type`.
    async fn raw_push(
        &self,
        plugin: &str,
        repository: &str,
        tag: &str,
        media_type: &str,
    ) -> String {
        let wasm = std::fs::read(plugins().wasm(plugin)).unwrap();
        let digest = self.upload(repository, &wasm).await;
        self.put_manifest(repository, tag, (media_type, &digest, wasm.len()))
            .await
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The test registry's user and password (not a secret: a fixture).
const USER: &str = "comb";
const PASSWORD: &str = "not-a-secret";
/// `PASSWORD`, bcrypt (cost 4, so each request checks it fast).
const HTPASSWD: &str = "$2b$04$soCNSd9/A4N2aos2niSYnO5KPhbzuEzv9Vu3hzEKCCzR2.ta6AIeO";
/// `USER:PASSWORD` in base64, as `docker login` writes it.
const DOCKER_AUTH: &str = "Y29tYjpub3QtYS1zZWNyZXQ=";

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `comb push PLUGIN REFERENCE --insecure`; the pinned reference it prints.
fn comb_push(plugin: &str, reference: &str) -> String {
    comb_push_as(plugin, reference, None).expect("comb push")
}

/// The same, as `--username USER --password-stdin` when given; the pinned
/// reference, or what comb said when it failed.
fn comb_push_as(
    plugin: &str,
    reference: &str,
    user: Option<(&str, &str)>,
) -> Result<String, String> {
    let mut command = Command::new(crate::harness::comb_binary());
    command
        .arg("push")
        .arg(plugins().wasm(plugin))
        .args([reference, "--insecure"])
        .env_remove("COMB_CONFIG")
        // No docker config of the machine's.
        .env("DOCKER_CONFIG", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((name, _)) = user {
        command.args(["--username", name, "--password-stdin"]);
    }
    let mut child = command.spawn().unwrap();
    let password = user.map_or(String::new(), |(_, password)| format!("{password}\n"));
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), password.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    match output.status.success() {
        true => Ok(String::from_utf8(output.stdout).unwrap().trim().to_owned()),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

/// `comb serve` flags for references on the registry at `registry`, polled every 200 ms.
fn serve_refs<'a>(registry: &'a str, refs: &'a [String]) -> Vec<&'a str> {
    let mut args = vec![
        "--insecure-registry",
        registry,
        "--registry-poll-interval-ms",
        "200",
    ];
    for reference in refs {
        args.extend(["--plugin-ref", reference.as_str()]);
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_plugins_are_pulled_served_and_listed_and_a_missing_one_says_why() {
    let registry = Registry::start().await;
    // Pushed by comb under a tag; pushed by hand (another client) and
    // pinned by digest; and a tag nobody pushed.
    let home = registry.reference("cruddur/home_activities:0.1.0");
    let pushed = comb_push("home_activities", &home);
    let manifest = registry
        .raw_push("faulty", "tests/faulty", "raw", "application/wasm")
        .await;
    assert!(pushed.starts_with(&format!("{home}@sha256:")), "{pushed}");
    let pinned = registry.reference(&format!("tests/faulty@{manifest}"));
    let missing = registry.reference("cruddur/nothing:here");
    let refs = [home.clone(), pinned.clone(), missing.clone()];
    let comb = Comb::start(Options {
        args: &serve_refs(&registry.host, &refs),
        health: true,
        ..Default::default()
    });
    // Started means the first pull of every reference is over: ready.
    let readyz = format!("{}/readyz", comb.health_url.as_ref().unwrap());
    assert_eq!(get_response(&readyz).await.status(), 200);

    let (status, body) = get_json(&comb.at("/api/activities/home")).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().map(Vec::len), Some(3), "{body}");
    assert_eq!(get_json(&comb.at("/faulty/ok")).await.0, 200);

    // What comb pushed is the standard artifact, as any client reads it.
    let manifest_url = format!(
        "http://{}/v2/cruddur/home_activities/manifests/0.1.0",
        registry.host
    );
    let artifact: Value = client()
        .get(&manifest_url)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        artifact["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(
        artifact["layers"].as_array().map(Vec::len),
        Some(1),
        "{artifact}"
    );
    assert_eq!(artifact["layers"][0]["mediaType"], "application/wasm");
    let layer = get_response(format!(
        "http://{}/v2/cruddur/home_activities/blobs/{}",
        registry.host,
        artifact["layers"][0]["digest"].as_str().unwrap()
    ))
    .await
    .bytes()
    .await
    .unwrap();
    assert_eq!(
        layer,
        std::fs::read(plugins().wasm("home_activities")).unwrap()
    );

    let listed = report(&comb, &home).await.expect("the tag is listed");
    assert_eq!(listed["source"], "registry");
    assert_eq!(listed["state"], "serving");
    assert_eq!(listed["plugin"]["name"], "home_activities");
    assert_eq!(listed["plugin"]["artifact"], pushed.as_str());
    let wasm = std::fs::read(plugins().wasm("home_activities")).unwrap();
    assert_eq!(
        listed["plugin"]["digest"],
        hex::encode(Sha256::digest(&wasm)),
        "the layer is the file, byte for byte"
    );
    let listed = report(&comb, &pinned).await.expect("the pin is listed");
    assert_eq!(listed["plugin"]["name"], "faulty");
    assert_eq!(listed["plugin"]["artifact"], pinned.as_str());
    let listed = report(&comb, &missing)
        .await
        .expect("the missing tag is listed");
    assert_eq!(listed["state"], "failed");
    let reason = listed["reason"].as_str().unwrap();
    assert!(
        reason.contains("reading the manifest's digest") && reason.contains("manifest unknown"),
        "{reason}"
    );

    // A restart while the registry is down still serves the pin: its layer
    // is kept in the cache.
    let host = registry.host.clone();
    drop(comb);
    drop(registry);
    let pins = [pinned.clone()];
    let comb = Comb::start(Options {
        args: &serve_refs(&host, &pins),
        ..Default::default()
    });
    assert_eq!(get_json(&comb.at("/faulty/ok")).await.0, 200);
    assert_eq!(report(&comb, &pinned).await.unwrap()["state"], "serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_rolls_forward_under_load_and_a_broken_one_keeps_the_old_version() {
    let mut registry = Registry::start().await;
    let live = registry.reference("cruddur/home_activities:live");
    comb_push("home_activities", &live);
    // A cache of its own: a layer already kept there is not pulled again,
    // and this test needs a pull to meet a corrupt blob.
    let cache = tempfile::tempdir().unwrap();
    let comb = Comb::start(Options {
        args: &serve_refs(&registry.host, std::slice::from_ref(&live)),
        cache_dir: Some(cache.path()),
        ..Default::default()
    });
    let url = comb.at("/api/activities/home");

    // Two clients over loopback while the tag moves: every answer is 200,
    // from one version or the other.
    let stop = Arc::new(AtomicBool::new(false));
    let hammers: Vec<_> = (0..2).map(|_| hammer(&url, &stop)).collect();
    let pushed = comb_push("home_activities_v2", &live);
    eventually("the new version serves", &comb, || async {
        is_v2(&get_json(&url).await.1)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (mut old, mut new) = (0, 0);
    for hammer in hammers {
        let (o, n) = hammer.await.expect("no client saw a failure");
        (old, new) = (old + o, new + n);
    }
    assert!(old > 0 && new > 0, "{old} old answers, {new} new");
    let listed = report(&comb, &live).await.unwrap();
    assert_eq!(listed["plugin"]["artifact"], pushed.as_str());

    // Each broken push leaves v2 serving and says why.
    let failure = |expected: &'static str| {
        let (comb, live) = (&comb, &live);
        async move {
            eventually(
                &format!("the plugin list says {expected:?}"),
                comb,
                || async {
                    let listed = report(comb, live).await?;
                    let reason = listed["reason"].as_str()?;
                    reason.contains(expected).then(|| listed.clone())
                },
            )
            .await
        }
    };
    // A container image's layer, not a component.
    registry
        .raw_push(
            "home_activities",
            "cruddur/home_activities",
            "live",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
        .await;
    let listed = failure("not a Wasm OCI artifact").await;
    assert_eq!(listed["state"], "failed");
    assert_eq!(
        listed["plugin"]["artifact"],
        pushed.as_str(),
        "v2 still serves"
    );
    assert!(is_v2(&get_json(&url).await.1));

    // A blob whose bytes no longer match its digest (corrupted in the
    // registry's storage after the upload, which checks digests).
    let wasm = std::fs::read(plugins().wasm("faulty")).unwrap();
    let digest = registry.upload("cruddur/home_activities", &wasm).await;
    let mut corrupt = wasm.clone();
    corrupt[100] ^= 0xff;
    std::fs::write(registry.blob_file(&digest), &corrupt).unwrap();
    registry
        .put_manifest(
            "cruddur/home_activities",
            "live",
            ("application/wasm", &digest, wasm.len()),
        )
        .await;
    failure("as its manifest says").await;
    assert!(is_v2(&get_json(&url).await.1));

    // The registry gone.
    registry.stop();
    failure("reading the manifest's digest").await;
    assert!(is_v2(&get_json(&url).await.1));
    assert_eq!(get_json(&url).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_converge_on_a_pushed_tag() {
    let registry = Registry::start().await;
    let live = registry.reference("cruddur/home_activities:prod");
    comb_push("home_activities", &live);
    let args = serve_refs(&registry.host, std::slice::from_ref(&live));
    let replicas: Vec<Comb> = (0..3)
        .map(|_| {
            Comb::start(Options {
                args: &args,
                ..Default::default()
            })
        })
        .collect();
    let urls: Vec<String> = replicas
        .iter()
        .map(|comb| comb.at("/api/activities/home"))
        .collect();
    for url in &urls {
        assert!(!is_v2(&get_json(url).await.1));
    }
    comb_push("home_activities_v2", &live);
    let pushed = Instant::now();
    // A round-robin client until every replica answered with the new
    // version; every answer on the way is a 200.
    let mut converged = [None; 3];
    while converged.iter().any(Option::is_none) {
        assert!(
            pushed.elapsed() < PATIENCE,
            "not all replicas serve the new version: {converged:?}; their logs:\n{}",
            replicas
                .iter()
                .map(Comb::log)
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        for (i, url) in urls.iter().enumerate() {
            let (status, body) = get_json(url).await;
            assert_eq!(status, 200, "{body}");
            if is_v2(&body) && converged[i].is_none() {
                converged[i] = Some(pushed.elapsed());
            }
        }
    }
    eprintln!("replicas serving the pushed tag after {converged:?} (poll interval 200 ms)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_flags_for_a_push_and_the_docker_config_for_a_pull() {
    let registry = Registry::start_with_auth().await;
    let home = registry.reference("cruddur/home_activities:0.1.0");
    let refused = comb_push_as("home_activities", &home, None).unwrap_err();
    assert!(
        refused.contains("pushing to") && refused.contains("401"),
        "{refused}"
    );
    let wrong = comb_push_as("home_activities", &home, Some((USER, "wrong"))).unwrap_err();
    assert!(wrong.contains("401"), "{wrong}");
    comb_push_as("home_activities", &home, Some((USER, PASSWORD))).unwrap();

    // comb serve reads the docker config, as a kubelet-mounted
    // dockerconfigjson Secret provides it.
    let docker = tempfile::tempdir().unwrap();
    std::fs::write(
        docker.path().join("config.json"),
        json!({"auths": {registry.host.as_str(): {"auth": DOCKER_AUTH}}}).to_string(),
    )
    .unwrap();
    let refs = [home.clone()];
    let comb = Comb::start(Options {
        args: &serve_refs(&registry.host, &refs),
        env: &[("DOCKER_CONFIG", docker.path().to_str().unwrap())],
        ..Default::default()
    });
    assert_eq!(get_json(&comb.at("/api/activities/home")).await.0, 200);
    assert_eq!(report(&comb, &home).await.unwrap()["state"], "serving");
}
