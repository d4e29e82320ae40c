//! JavaScript plugins: each `plugins/js/NAME/app.js` (and
//! `tests/plugins/js/NAME/app.js`) is bundled with comb's SDK
//! (`plugins/js/comb`) and `@opentelemetry/api` by esbuild, then made a
//! component of comb's `plugin` world by componentize-js, into
//! `NAME_js.wasm` (`plugins/js/build.mjs`). The tools are the pinned
//! packages of `plugins/js/package-lock.json`, installed with `npm ci` into
//! `target/tools/js`, never globally.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, ensure};

use crate::sources::{Language, run};

/// Builds every JavaScript plugin in `sources` whose inputs changed into
/// `out`; returns the file names of all of them.
pub(crate) fn build(root: &Path, sources: &Path, out: &Path) -> Result<Vec<String>> {
    let sdk = root.join("plugins/js");
    let wit = root.join("wit");
    let (library, script) = (sdk.join("comb"), sdk.join("build.mjs"));
    let js = Language {
        entry: "app.js",
        suffix: "_js",
        inputs: vec![&library, &script, &wit],
        tools: root.join("target/tools/js"),
    };
    let install = |tools: &Path| install(&sdk, tools).map(|()| tools.to_owned());
    js.build(sources, out, install, |tools, dir, staged| {
        run(Command::new("node")
            .arg(tools.join("build.mjs"))
            .arg(dir.join("app.js"))
            .arg(&wit)
            .arg(staged)
            .arg(&library))
    })
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
