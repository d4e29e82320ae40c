//! JavaScript plugins: each `plugins/js/NAME/app.js` (and
//! `tests/plugins/js/NAME/app.js`) is bundled with comb's SDK
//! (`plugins/js/comb`) and `@opentelemetry/api` by esbuild, then made a
//! component of comb's `plugin` world by componentize-js, into
//! `NAME_js.wasm` (`plugins/js/build.mjs`). The tools are the pinned
//! packages of `plugins/js/package-lock.json`, installed with `npm ci` into
//! `target/tools/js`, never globally.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};

use crate::sources::{modified, newest, plugin_dirs, run};

/// Builds every JavaScript plugin in `sources` whose inputs changed into
/// `out`; returns the file names of all of them.
pub(crate) fn build(root: &Path, sources: &Path, out: &Path) -> Result<Vec<String>> {
    let sdk = root.join("plugins/js");
    let plugins = plugin_dirs(sources, "app.js");
    let names: Vec<String> = plugins.iter().map(|dir| wasm_name(dir)).collect();
    let inputs = newest([
        sources,
        &sdk.join("comb"),
        &sdk.join("build.mjs"),
        &root.join("wit/plugin.wit"),
    ]);
    let stale: Vec<(&PathBuf, &String)> = plugins
        .iter()
        .zip(&names)
        .filter(|(_, name)| modified(&out.join(name)).is_none_or(|built| built < inputs))
        .collect();
    if stale.is_empty() {
        return Ok(names);
    }
    let tools = root.join("target/tools/js");
    std::fs::create_dir_all(&tools)?;
    // Test processes may build at once: one installs, the others wait.
    let lock = std::fs::File::create(tools.join(".lock"))?;
    lock.lock()?;
    install(&sdk, &tools)?;
    let staging = root.join("target/js");
    std::fs::create_dir_all(&staging)?;
    std::fs::create_dir_all(out)?;
    for (dir, name) in stale {
        eprintln!("xtask: building {name} with componentize-js");
        let built = staging.join(name);
        run(Command::new("node")
            .arg(tools.join("build.mjs"))
            .arg(dir.join("app.js"))
            .arg(root.join("wit"))
            .arg(&built)
            .arg(sdk.join("comb")))
        .with_context(|| format!("building {}", dir.display()))?;
        // Renamed in: a running comb never sees half a plugin.
        std::fs::rename(&built, out.join(name))?;
    }
    Ok(names)
}

/// `NAME_js.wasm` for `plugins/js/NAME`.
fn wasm_name(dir: &Path) -> String {
    format!(
        "{}_js.wasm",
        dir.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// `npm ci` of the pinned packages into `tools` when the lock file changed;
/// the build script beside them, where Node finds them.
fn install(sdk: &Path, tools: &Path) -> Result<()> {
    let lock = std::fs::read(sdk.join("package-lock.json"))
        .context("reading plugins/js/package-lock.json")?;
    let installed = tools.join("package-lock.json");
    if std::fs::read(&installed).ok().as_deref() != Some(&lock[..])
        || !tools.join("node_modules").is_dir()
    {
        eprintln!(
            "xtask: installing plugins/js/package-lock.json into {}",
            tools.display()
        );
        std::fs::copy(sdk.join("package.json"), tools.join("package.json"))?;
        std::fs::write(&installed, &lock)?;
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(tools))?;
    }
    std::fs::copy(sdk.join("build.mjs"), tools.join("build.mjs"))?;
    ensure!(
        tools
            .join("node_modules/@bytecodealliance/componentize-js")
            .is_dir(),
        "npm ci installed no componentize-js"
    );
    Ok(())
}
