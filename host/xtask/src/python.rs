//! Python plugins: each `plugins/python/NAME/app.py` (and
//! `tests/plugins/python/NAME/app.py`) is built with componentize-py
//! against `wit/plugin.wit` into `NAME_py.wasm`, with the SDK
//! (`plugins/python/comb`) and the pinned packages of
//! `plugins/python/requirements.txt` (OpenTelemetry's API) on its path.
//! The tools are installed into `target/tools/`, never globally.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::sources::{Language, run};

/// The componentize-py comb's plugins are built with.
pub(crate) const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// Builds every Python plugin in `sources` whose inputs changed into
/// `out`; returns the file names of all of them.
pub(crate) fn build(root: &Path, sources: &Path, out: &Path) -> Result<Vec<String>> {
    let sdk = root.join("plugins/python");
    let wit = root.join("wit");
    let python = Language {
        entry: "app.py",
        suffix: "_py",
        inputs: vec![&sdk, &wit],
        tools: root.join("target/tools/python"),
    };
    let install = |tools: &Path| {
        let componentize = install_componentize_py(tools)?;
        let packages = install_packages(tools, &componentize, &sdk.join("requirements.txt"))?;
        Ok((componentize, packages))
    };
    python.build(
        sources,
        out,
        install,
        |(componentize, packages), dir, staged| {
            run(Command::new(componentize)
                .arg("--quiet")
                .arg("-d")
                .arg(&wit)
                .args(["-w", "plugin", "componentize", "app", "-p"])
                .arg(dir)
                .arg("-p")
                .arg(&sdk)
                .arg("-p")
                .arg(packages)
                .arg("-o")
                .arg(staged))
        },
    )
}

/// componentize-py in a virtual environment of its own; its path.
fn install_componentize_py(tools: &Path) -> Result<PathBuf> {
    let venv = tools.join("componentize-py");
    let program = venv.join("bin/componentize-py");
    let marker = venv.join(COMPONENTIZE_PY);
    if !marker.exists() {
        eprintln!(
            "xtask: installing {COMPONENTIZE_PY} into {}",
            venv.display()
        );
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            COMPONENTIZE_PY,
        ]))?;
        std::fs::write(&marker, "")?;
    }
    Ok(program)
}

/// The plugins' packages, installed for the guest (pure Python) into a
/// folder named after the requirements' contents; its path.
fn install_packages(tools: &Path, componentize: &Path, requirements: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let key = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let folder = tools.join(format!("python-packages-{key:016x}"));
    if !folder.exists() {
        eprintln!(
            "xtask: installing {} into {}",
            requirements.display(),
            folder.display()
        );
        let partial = folder.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        // The tools' own pip (a virtual environment's, not the system's).
        let python = componentize.with_file_name("python");
        run(Command::new(python)
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&partial)
            .arg("-r")
            .arg(requirements))?;
        std::fs::rename(&partial, &folder)?;
    }
    Ok(folder)
}
