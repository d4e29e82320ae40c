//! `cargo xtask`: comb's developer commands.
//!
//! - `cargo xtask run [-- COMB SERVE FLAGS]`: build the plugins and serve them
//!   with comb on 127.0.0.1:8080.
//! - `cargo xtask test [-- ARGS]`: build the plugins, warm the tests'
//!   compile cache with the bundled ones, install Debian's
//!   Chromium (the page test) and docker-registry (the registry tests) if
//!   missing, run every test (with
//!   cargo-nextest when installed, else `cargo test`; ARGS go to it), then
//!   the guest SDK's doc tests (its examples, the README's) and the
//!   Kubernetes manifests' checks (tests/deploy/) unless ARGS filter the
//!   run.
//! - `cargo xtask plugins`: build the plugins into `target/plugins`.
//! - `cargo xtask new NAME [--lang rust|python|js]`: start a plugin (it
//!   builds, serves `GET /NAME` and traces) under `plugins/`.
//! - `cargo xtask bench`: release builds, then comb against native axum under
//!   wrk (tests/bench/throughput.py), the scale curve and a mixed workload
//!   (tests/bench/scale.py), neighbours' latency while guests
//!   loop (tests/bench/neighbours.py) and during a storm of failures
//!   reported to Rollbar (tests/bench/storm.py), the Rust, Python and
//!   JavaScript plugins side by side (tests/bench/languages.py), a guest
//!   span through comb's API next to one through `wasi:otel`
//!   (tests/bench/spans.py), what comparing plugins costs: log
//!   records, a guest profile, a canary (tests/bench/comparing.py), and
//!   how cost grows with 10, 100 and 1 000 plugins loaded
//!   (tests/bench/many.py).

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use xtask::cargo;

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<ExitCode> {
    let (task, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(t, r)| (t.as_str(), r));
    let rest: Vec<&str> = rest
        .iter()
        .map(String::as_str)
        .skip_while(|a| *a == "--")
        .collect();
    match task {
        "plugins" => {
            let built = xtask::build_plugins()?;
            eprintln!("xtask: plugins in {}", built.bundled_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        "run" => {
            let built = xtask::build_plugins()?;
            let mut command = cargo();
            command
                .current_dir(xtask::workspace_root())
                .args(["run", "--package", "comb", "--", "serve", "--plugins"])
                .arg(&built.bundled_dir)
                .args(rest);
            status(command)
        }
        "test" => {
            let built = xtask::build_plugins()?;
            warm_test_compile_cache(&built)?;
            // The page test drives a real headless browser.
            ensure_debian_package("chromium", "chromium")?;
            // The registry tests run the CNCF distribution registry.
            ensure_debian_package("docker-registry", "docker-registry")?;
            let mut command = cargo();
            command
                .current_dir(xtask::workspace_root())
                .env(xtask::PLUGINS_BUILT_ENV, "1");
            // nextest runs each test in its own process and ends with one
            // summary line; plain `cargo test` where it is not installed.
            let filtered = !rest.is_empty();
            if has_nextest() {
                command.args(["nextest", "run", "--no-fail-fast"]);
            } else {
                command.args(["test", "--no-fail-fast"]);
            }
            command.args(rest);
            let tests = status(command)?;
            if filtered {
                return Ok(tests);
            }
            // Doc tests, which nextest does not run: the guest SDK's
            // examples, the README's and the plugin guide's among them. The
            // same packages as above, so nothing is rebuilt for other
            // features.
            let mut doc = cargo();
            doc.current_dir(xtask::workspace_root())
                .args(["test", "--doc"]);
            let docs = status(doc)?;
            let deploy = check_kubernetes_manifests()?;
            Ok([tests, docs, deploy]
                .into_iter()
                .find(|code| *code != ExitCode::SUCCESS)
                .unwrap_or(ExitCode::SUCCESS))
        }
        "bench" => {
            // Release builds of comb and the native baseline, the plugins,
            // and wrk (Debian's) when it is missing; then the harness.
            let root = xtask::workspace_root();
            let mut build = cargo();
            build.current_dir(&root).args([
                "build",
                "--release",
                "-p",
                "comb",
                "-p",
                "native-home",
            ]);
            if status(build)? != ExitCode::SUCCESS {
                bail!("building release binaries failed");
            }
            xtask::build_plugins()?;
            ensure_debian_package("wrk", "wrk")?;
            let mut harness = Command::new("python3");
            harness.current_dir(&root).arg("tests/bench/throughput.py");
            if status(harness)? != ExitCode::SUCCESS {
                return Ok(ExitCode::FAILURE);
            }
            // How cost grows with connections and over the ten routes;
            // neighbours' latency while guests loop on every core, then
            // while a storm of panics is reported to a slow Rollbar; then
            // what a plugin costs in each language, a guest span each way,
            // and what comparing plugins costs.
            for script in [
                "tests/bench/scale.py",
                "tests/bench/neighbours.py",
                "tests/bench/storm.py",
                "tests/bench/languages.py",
                "tests/bench/spans.py",
                "tests/bench/comparing.py",
                "tests/bench/many.py",
            ] {
                let mut bench = Command::new("python3");
                bench.current_dir(&root).arg(script);
                if status(bench)? != ExitCode::SUCCESS {
                    return Ok(ExitCode::FAILURE);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        "new" => {
            let (name, lang) = match rest.as_slice() {
                [name] => (*name, xtask::Lang::Rust),
                [name, "--lang", lang] | ["--lang", lang, name] => (*name, lang.parse()?),
                _ => bail!("usage: cargo xtask new NAME [--lang rust|python|js]"),
            };
            let dir = xtask::new_plugin(&xtask::workspace_root(), name, lang)?;
            eprintln!(
                "xtask: {} written; `cargo xtask run` builds and serves it on GET /{name}",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        "help" | "--help" | "-h" => {
            eprintln!("usage: cargo xtask <run|test|plugins|bench|new> [-- ARGS]");
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown task {other:?}; try run, test, plugins, bench or new"),
    }
}

/// Compiles the bundled plugins into the tests' shared compile cache, one
/// at a time, before any test starts: otherwise the first tests to start
/// all compile the same ten plugins at once (a debug comb takes ~13 s for
/// them on two cores). On a machine where the cache is warm this is a few
/// cache reads.
fn warm_test_compile_cache(built: &xtask::BuiltPlugins) -> Result<()> {
    let root = xtask::workspace_root();
    // What the test run builds (`--tests`: the same targets and features),
    // so the test run then finds it built.
    let mut build = cargo();
    build
        .current_dir(&root)
        .args(["build", "--quiet", "--tests"]);
    ensure_success(&mut build)?;
    let mut warm = Command::new(root.join("target/debug/comb"));
    warm.args(["plugins", "--cache-dir"])
        .arg(&built.test_compile_cache)
        .arg("--plugins")
        .arg(&built.bundled_dir)
        .stdout(std::process::Stdio::null());
    ensure_success(&mut warm)?;
    // The test-only plugins too (a Python one takes a debug comb ~30 s);
    // some are broken on purpose, so this check fails by design.
    let _ = Command::new(root.join("target/debug/comb"))
        .args(["plugins", "--cache-dir"])
        .arg(&built.test_compile_cache)
        .arg("--plugins")
        .arg(&built.test_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    Ok(())
}

fn ensure_success(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// Installs Debian's `package` when `program` is not on the machine.
fn ensure_debian_package(program: &str, package: &str) -> Result<()> {
    if Command::new(program).arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("xtask: installing {package} (apt-get)");
    let install = ["install", "-y", "-qq", "--no-install-recommends", package];
    for args in [&["update", "-qq"][..], &install[..]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!(
                "apt-get {} failed; install {package} by hand",
                args.join(" ")
            );
        }
    }
    Ok(())
}

/// The pinned schema validator for deploy/kubernetes/, from PyPI into a
/// virtual environment of the project's own (never the system's).
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Checks deploy/kubernetes/ against the Kubernetes schemas, comb.toml and
/// the comb just built (tests/deploy/check_manifests.py).
fn check_kubernetes_manifests() -> Result<ExitCode> {
    let root = xtask::workspace_root();
    let venv = root.join("target/tools/kubernetes-validate");
    let python = venv.join("bin/python");
    let marker = venv.join(KUBERNETES_VALIDATE);
    if !marker.exists() {
        eprintln!(
            "xtask: installing {KUBERNETES_VALIDATE} into {}",
            venv.display()
        );
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("running python3 -m venv")?;
        let installed = created.success()
            && Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", KUBERNETES_VALIDATE])
                .status()
                .context("running pip")?
                .success();
        if !installed {
            bail!("installing {KUBERNETES_VALIDATE} failed");
        }
        std::fs::write(&marker, "")?;
    }
    let mut check = Command::new(&python);
    check
        .current_dir(&root)
        .arg("tests/deploy/check_manifests.py")
        .arg(root.join("target/debug/comb"));
    status(check)
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|output| output.status.success())
}

fn status(mut command: Command) -> Result<ExitCode> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
