//! comb's developer tasks as a library, shared by the `cargo xtask` binary
//! and the end-to-end tests (which build the plugins once per test run).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};

mod js;
mod python;
mod scaffold;
mod sources;

pub use scaffold::{Lang, new_plugin};

/// The target plugins are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The cargo profile plugins are built with (see the workspace Cargo.toml).
pub const PLUGIN_PROFILE: &str = "plugin";

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("host/xtask sits two levels below the root")
        .to_owned()
}

/// The cargo that runs us (so a pinned toolchain stays pinned).
/// The cargo that runs xtask, without the package variables `cargo run`
/// set for xtask itself: a build script that watches one (ring's watches
/// `CARGO_MANIFEST_DIR`) would otherwise see it change between a plain
/// `cargo build` and the same build from xtask, and rebuild its crate and
/// everything above it (25 s of CI on two cores).
pub fn cargo() -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_xtask = name.starts_with("CARGO_PKG_")
            || matches!(
                &*name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            );
        if set_for_xtask {
            cargo.env_remove(&*name);
        }
    }
    cargo
}

/// Installs the `wasm32-wasip2` target with rustup when it is missing.
pub fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (comb builds plugins with rustup's wasm32-wasip2 target)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|t| t.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    eprintln!("xtask: installing the {WASM_TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()?;
    ensure!(status.success(), "rustup target add {WASM_TARGET} failed");
    Ok(())
}

/// The plugins a build produced.
#[derive(Debug, Clone)]
pub struct BuiltPlugins {
    /// The folder holding the bundled plugins (`plugins/*`), ready to serve.
    pub bundled_dir: PathBuf,
    /// The folder holding the test-only plugins (`tests/plugins/*`).
    pub test_dir: PathBuf,
    /// The compile cache every comb a test starts shares (unless the test
    /// asks for its own): comb keys it by the component's bytes and the
    /// engine's settings, so sharing is safe, and a debug comb compiles
    /// each plugin once per machine instead of once per test.
    pub test_compile_cache: PathBuf,
}

impl BuiltPlugins {
    /// The path of plugin `name`'s `.wasm` file, bundled or test-only.
    pub fn wasm(&self, name: &str) -> PathBuf {
        let file = format!("{}.wasm", name.replace('-', "_"));
        let bundled = self.bundled_dir.join(&file);
        if bundled.exists() {
            bundled
        } else {
            self.test_dir.join(file)
        }
    }
}

/// Set by `cargo xtask test` for the tests it runs: the plugins are built,
/// at [`built_plugins`], so a test process need not run cargo again.
pub const PLUGINS_BUILT_ENV: &str = "COMB_TEST_PLUGINS_BUILT";

/// Where [`build_plugins`] puts the plugins, without building them.
pub fn built_plugins() -> BuiltPlugins {
    let root = workspace_root();
    BuiltPlugins {
        bundled_dir: root.join("target/plugins"),
        test_dir: root.join("target/test-plugins"),
        test_compile_cache: root.join("target/test-compile-cache"),
    }
}

/// Builds every plugin crate (`plugins/*` and `tests/plugins/*` with a
/// `cdylib` target) for `wasm32-wasip2` with the `plugin` profile, and
/// copies the `.wasm` files into `target/plugins` and `target/test-plugins`;
/// then the Python and JavaScript plugins (`plugins/{python,js}/*`,
/// `tests/plugins/{python,js}/*`) likewise.
///
/// Plugins get their own target dir (`target/wasm`): a build started from
/// inside another cargo command (a test, a build script) must not wait on
/// that command's lock on the main target dir.
pub fn build_plugins() -> Result<BuiltPlugins> {
    ensure_wasm_target()?;
    let root = workspace_root();
    let bundled = plugin_crates(&root.join("plugins"))?;
    let test = plugin_crates(&root.join("tests/plugins"))?;
    let target_dir = root.join("target/wasm");
    let mut build = cargo();
    build
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--target",
            WASM_TARGET,
            "--profile",
            PLUGIN_PROFILE,
            "--target-dir",
        ])
        .arg(&target_dir);
    for (name, _) in bundled.iter().chain(&test) {
        build.args(["--package", name]);
    }
    let status = build
        .status()
        .context("running cargo build for the plugins")?;
    ensure!(status.success(), "building the plugins failed");
    let out = target_dir.join(WASM_TARGET).join(PLUGIN_PROFILE);
    let built = built_plugins();
    copy_wasm(&out, &bundled, &built.bundled_dir)?;
    copy_wasm(&out, &test, &built.test_dir)?;
    build_other_languages(&root.join("plugins"), &built.bundled_dir)?;
    build_other_languages(&root.join("tests/plugins"), &built.test_dir)?;
    Ok(built)
}

/// Builds the Python and JavaScript plugins under `plugins`
/// (`python/NAME/app.py`, `js/NAME/app.js`) into `out`, with the SDKs
/// and tools of this repository; returns their file names.
pub fn build_other_languages(plugins: &Path, out: &Path) -> Result<Vec<String>> {
    let root = workspace_root();
    // Side by side: each language's tools install (pip, npm) and build
    // (componentize-py, componentize-js) mostly on one core.
    let (python, js) = std::thread::scope(|scope| {
        let python = scope.spawn(|| python::build(&root, &plugins.join("python"), out));
        let js = js::build(&root, &plugins.join("js"), out);
        (python.join(), js)
    });
    let mut built = python.map_err(|_| anyhow::anyhow!("the Python build panicked"))??;
    built.extend(js?);
    Ok(built)
}

/// The package names of the plugin crates directly under `dir`: those whose
/// manifest declares a `cdylib` (the SDK is a plain library).
fn plugin_crates(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let folder = entry?.path();
        let manifest = folder.join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        if !text.contains("cdylib") {
            continue;
        }
        let name = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("name = \"")?.strip_suffix('"'))
            .with_context(|| format!("no package name in {}", manifest.display()))?;
        names.push((name.to_owned(), folder));
    }
    names.sort();
    Ok(names)
}

/// Copies the built `.wasm` files in (with each crate's `sidecar.toml`),
/// replacing through a temporary file and a rename so a running comb never
/// sees a half-written plugin.
fn copy_wasm(from: &Path, crates: &[(String, PathBuf)], to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for (name, folder) in crates {
        let file = format!("{}.wasm", name.replace('-', "_"));
        let source = from.join(&file);
        if !source.exists() {
            bail!("cargo built {name} but {} is missing", source.display());
        }
        sources::replace(&to.join(&file), &std::fs::read(&source)?)?;
        sources::copy_sidecar(folder, &to.join(&file))?;
    }
    Ok(())
}
