//! Starts and stops the real `comb` binary for a test.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock, mpsc},
    time::{Duration, Instant},
};

use xtask::BuiltPlugins;

/// How long comb may take to compile its plugins and start listening; a
/// cold debug build of wasmtime compiles slowly on a loaded 2-core box
/// (a 20 MB Python component: 33 s alone, over a minute beside other tests).
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a condition may take to come true: generous for a loaded
/// two-core box running a debug build. (How fast things really are is
/// measured by the benchmarks, never asserted.)
pub const PATIENCE: Duration = Duration::from_secs(30);

/// What a check in [`poll`] returns: `true`, or `Some(value)`, when done.
pub trait Done {
    /// What the wait returns.
    type Value;
    /// The value, when done.
    fn done(self) -> Option<Self::Value>;
}

impl Done for bool {
    type Value = ();
    fn done(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Done for Option<T> {
    type Value = T;
    fn done(self) -> Option<T> {
        self
    }
}

/// The `comb` binary under test: this build's, or the one named by
/// `COMB_TEST_BINARY` (to run today's tests against an older build and see
/// which fail there).
pub fn comb_binary() -> PathBuf {
    std::env::var_os("COMB_TEST_BINARY")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_comb")), PathBuf::from)
}

/// A loopback listener that accepts connections and never answers (a
/// stalled collector or service); its address.
pub async fn silent_listener() -> std::net::SocketAddr {
    SilentListener::start().await.leave()
}

/// A [`silent_listener`] that comes to an end: dropped, it closes its port
/// and hangs up on every connection, as a stalled collector restarted.
pub struct SilentListener {
    /// Where it listens.
    pub address: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SilentListener {
    /// Listens on a free loopback port.
    pub async fn start() -> SilentListener {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        SilentListener {
            address,
            task: Some(task),
        }
    }

    /// Keeps it listening for the rest of the test; its address.
    fn leave(mut self) -> std::net::SocketAddr {
        self.task.take();
        self.address
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Runs `check` every 50 ms until it is done and returns its value; after
/// [`PATIENCE`], fails the test with `what` and what `context` tells.
pub async fn poll<F, Fut>(
    what: &str,
    context: impl Fn() -> String,
    mut check: F,
) -> <Fut::Output as Done>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Done,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await.done() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; {}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`poll`], failing with comb's log.
pub async fn eventually<F, Fut>(what: &str, comb: &Comb, check: F) -> <Fut::Output as Done>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Done,
{
    poll(what, || format!("comb's log:\n{}", comb.log()), check).await
}

/// The plugins built for wasm32-wasip2: by `cargo xtask test` before the
/// tests run, else once per test process (cargo makes it a no-op when
/// another process built them already).
pub fn plugins() -> &'static BuiltPlugins {
    static BUILT: OnceLock<BuiltPlugins> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os(xtask::PLUGINS_BUILT_ENV).is_some() {
            xtask::built_plugins()
        } else {
            xtask::build_plugins().expect("building the plugins for wasm32-wasip2")
        }
    })
}

/// The ten bundled Cruddur plugins.
pub const CRUDDUR: &[&str] = &[
    "home_activities",
    "notifications_activities",
    "user_activities",
    "search_activities",
    "show_activity",
    "create_activity",
    "create_reply",
    "message_groups",
    "messages",
    "create_message",
];

/// A running comb, stopped (SIGTERM, then kill) when dropped. Its log is
/// printed when the test fails.
pub struct Comb {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin listener, `http://127.0.0.1:PORT`.
    pub admin_url: String,
    /// The health listener, when [`Options::health`] asked for one.
    pub health_url: Option<String>,
    log: Arc<Mutex<String>>,
    /// The plugins folder (deleted with the handle).
    pub dir: tempfile::TempDir,
}

/// What to start comb with.
#[derive(Default)]
pub struct Options<'a> {
    /// Plugin names to copy into the plugins folder.
    pub plugins: &'a [&'a str],
    /// Extra files to put in the folder: name and contents.
    pub files: &'a [(&'a str, &'a [u8])],
    /// Environment variables (comb starts with no `OTEL_*` of the caller's).
    pub env: &'a [(&'a str, &'a str)],
    /// Serve this folder instead of a fresh one (a restart, say).
    pub dir: Option<tempfile::TempDir>,
    /// The compile cache folder; the run's shared one when not given.
    pub cache_dir: Option<&'a std::path::Path>,
    /// Serve the orchestrator's probes on a listener of their own.
    pub health: bool,
    /// Return once comb listens, before the first load of its folder ends.
    pub before_load: bool,
    /// More flags for `comb serve`.
    pub args: &'a [&'a str],
    /// Soft and hard limits on open files comb starts with (`prlimit`).
    pub open_files: Option<(u64, u64)>,
}

impl Comb {
    /// Starts comb serving `plugins` on a free loopback port and waits
    /// until it logs that it is listening and has loaded the folder.
    pub fn start(options: Options<'_>) -> Comb {
        let built = plugins();
        let dir = options
            .dir
            .unwrap_or_else(|| tempfile::tempdir().expect("creating a plugins folder"));
        let cache_dir = options.cache_dir.map_or_else(
            || built.test_compile_cache.clone(),
            std::path::Path::to_owned,
        );
        for name in options.plugins {
            std::fs::copy(built.wasm(name), dir.path().join(format!("{name}.wasm")))
                .expect("copying a plugin");
        }
        for (name, contents) in options.files {
            std::fs::write(dir.path().join(name), contents).expect("writing a file");
        }
        let mut command = match options.open_files {
            // prlimit sets the limits and execs comb: the same process.
            Some((soft, hard)) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={soft}:{hard}"))
                    .arg(comb_binary());
                command
            }
            None => Command::new(comb_binary()),
        };
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--plugins",
            ])
            .arg(dir.path())
            .arg("--cache-dir")
            .arg(&cache_dir)
            .args(
                options
                    .health
                    .then_some(["--health-listen", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .args(options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("OTEL_") || key.starts_with("COMB_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        command.envs(options.env.iter().copied());
        let mut child = command.spawn().expect("starting comb");
        let log = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                {
                    // Logged before it is reported: a caller that was told
                    // finds the line in the log.
                    let mut log = sink.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                if line.contains("first load of the plugins done") {
                    let _ = address_tx.send(("loaded", String::new()));
                } else if let Some(url) = line.split("health listening on ").nth(1) {
                    let url = url.split_whitespace().next().unwrap_or_default();
                    let _ = address_tx.send(("health", url.to_owned()));
                } else if let Some(url) = line.split("admin listening on ").nth(1) {
                    let url = url.split_whitespace().next().unwrap_or_default();
                    let _ = address_tx.send(("admin", url.to_owned()));
                } else if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = address_tx.send(("main", url.trim().to_owned()));
                }
            }
        });
        // comb listens at once and loads plugins in the background: wait
        // for both.
        let (mut url, mut admin_url, mut loaded) =
            (String::new(), String::new(), options.before_load);
        let mut health_url = None;
        while url.is_empty()
            || admin_url.is_empty()
            || !loaded
            || (options.health && health_url.is_none())
        {
            match address_rx.recv_timeout(START_TIMEOUT) {
                Ok(("loaded", _)) => loaded = true,
                Ok(("health", address)) => health_url = Some(address),
                Ok(("admin", address)) => admin_url = address,
                Ok((_, address)) => url = address,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "comb did not start listening; its log:\n{}",
                        log.lock().unwrap()
                    );
                }
            }
        }
        Comb {
            child,
            url,
            admin_url,
            health_url,
            log,
            dir,
        }
    }

    /// Sends SIGTERM and returns at once.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Everything comb logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The URL of `path` on this comb.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Sends SIGTERM and waits (bounded) for comb to drain, flush its spans
    /// and exit. Returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        self.terminate();
        self.wait_exit()
    }

    /// Waits (up to 10 s) for comb to exit; whether it exited successfully.
    pub fn wait_exit(&mut self) -> bool {
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                if !status.success() {
                    eprintln!("comb exited with {status}");
                }
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        false
    }

    /// comb's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// comb's resident memory, in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// The path of a plugin file inside the served folder.
    pub fn plugin_path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

impl Drop for Comb {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- comb's log ----\n{}", self.log());
        }
    }
}

/// A plain HTTP client for talking to comb.
pub fn client() -> reqwest::Client {
    // reqwest has no crypto provider of its own: ring's, as comb's.
    comb::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building an HTTP client")
}

/// The trace id comb named in a response's `traceresponse` header.
pub fn trace_id(response: &reqwest::Response) -> String {
    let header = response.headers()["traceresponse"]
        .to_str()
        .expect("an ASCII traceresponse");
    header
        .split('-')
        .nth(1)
        .expect("00-trace-span-flags")
        .to_owned()
}

/// GETs `url` with [`client`].
pub async fn get_response(url: impl reqwest::IntoUrl) -> reqwest::Response {
    client().get(url).send().await.expect("GET")
}

/// GETs `url` and returns status and body parsed as JSON.
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    json_of(get_response(url).await).await
}

/// POSTs `body` (sent as is, typed JSON) and returns status and JSON body.
pub async fn post_json(url: &str, body: &str) -> (u16, serde_json::Value) {
    let request = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    json_of(request.send().await.expect("POST")).await
}

async fn json_of(response: reqwest::Response) -> (u16, serde_json::Value) {
    let url = response.url().to_string();
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("reading the body");
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!("{url} answered {status} with a body that is not JSON ({e}): {body:?}")
    });
    (status, json)
}
