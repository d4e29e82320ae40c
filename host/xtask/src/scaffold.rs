//! `cargo xtask new NAME --lang rust|python|js`: a plugin that builds,
//! serves `GET /NAME` and traces, to start from.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail, ensure};

/// A plugin language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// `plugins/NAME`, a crate on comb-sdk.
    Rust,
    /// `plugins/python/NAME/app.py`.
    Python,
    /// `plugins/js/NAME/app.js`.
    Js,
}

impl std::str::FromStr for Lang {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Lang> {
        Ok(match text {
            "rust" => Lang::Rust,
            "python" | "py" => Lang::Python,
            "js" | "javascript" => Lang::Js,
            other => bail!("unknown language {other:?}: rust, python or js"),
        })
    }
}

/// Writes a new plugin `name` in `lang` under `root` (the repository, or
/// any folder laid out like it) and returns its folder.
pub fn new_plugin(root: &Path, name: &str, lang: Lang) -> Result<PathBuf> {
    ensure!(
        !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "a plugin name is lower case letters, digits and `_`, starting with a letter: {name:?}"
    );
    let (dir, files) = match lang {
        Lang::Rust => (
            root.join("plugins").join(name),
            vec![("Cargo.toml", RUST_MANIFEST), ("src/lib.rs", RUST_PLUGIN)],
        ),
        Lang::Python => (
            root.join("plugins/python").join(name),
            vec![("app.py", PYTHON_PLUGIN), ("sidecar.toml", REUSE_SIDECAR)],
        ),
        Lang::Js => (
            root.join("plugins/js").join(name),
            vec![("app.js", JS_PLUGIN), ("sidecar.toml", REUSE_SIDECAR)],
        ),
    };
    ensure!(!dir.exists(), "{} exists already", dir.display());
    for (file, template) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap_or(&dir))?;
        std::fs::write(&path, template.replace("NAME", name))?;
    }
    Ok(dir)
}

/// How a Python or JavaScript plugin is served: an interpreter's fresh
/// instance costs milliseconds, so it reuses instances (docs/limits.md).
const REUSE_SIDECAR: &str = r#"# How comb serves this plugin; `cargo xtask plugins` copies it beside the
# built .wasm. An interpreter's fresh instance costs milliseconds, its
# handler a fraction of that: each instance serves up to 1000 calls. Module
# globals then persist between this plugin's calls; spans, logs and limits
# stay per call. Remove it for a fresh instance per call.
[limits]
max_instance_reuse_count = 1000
"#;

const RUST_MANIFEST: &str = r#"[package]
name = "NAME"
edition.workspace = true
rust-version.workspace = true
license.workspace = true
version.workspace = true
publish.workspace = true

[lib]
crate-type = ["cdylib"]

[dependencies]
comb-sdk = { path = "../sdk" }
serde_json.workspace = true

[lints]
workspace = true
"#;

const RUST_PLUGIN: &str = r#"//! NAME: a comb plugin. `cargo xtask run` builds and serves it.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, log, trace::Span};

struct Handler;

impl Plugin for Handler {
    fn manifest() -> Manifest {
        Manifest::new("NAME", env!("CARGO_PKG_VERSION")).route("GET", "/NAME")
    }

    fn handle(request: Request) -> Result<Response, HandlerError> {
        let span = Span::start("NAME-work"); // a child of the invocation span
        let who = request.query_param("who").unwrap_or_else(|| "world".to_owned());
        span.set("app.who", who.as_str());
        log::info("greeting", [("app.who", who.as_str().into())]);
        Ok(Response::json(200, &serde_json::json!({ "hello": who })))
    }
}

comb_sdk::export!(Handler);
"#;

const PYTHON_PLUGIN: &str = r#""""NAME: a comb plugin. `cargo xtask run` builds and serves it."""

import logging

from opentelemetry import trace

from comb import Plugin, Request

tracer = trace.get_tracer("NAME")
log = logging.getLogger("NAME")

plugin = Plugin("NAME", "0.1.0")


@plugin.route("GET", "/NAME")
def hello(request: Request):
    with tracer.start_as_current_span("NAME-work") as span:
        who = request.query.get("who", "world")
        span.set_attribute("app.who", who)
        log.info("greeting %s", who)
        return {"hello": who}


Manifest, Handler = plugin.exports()
"#;

const JS_PLUGIN: &str = r#"// NAME: a comb plugin. `cargo xtask run` builds and serves it.

import { trace } from '@opentelemetry/api';
import { Plugin } from 'comb';

const tracer = trace.getTracer('NAME');
const plugin = new Plugin('NAME', '0.1.0');

plugin.route('GET', '/NAME', (request) =>
  tracer.startActiveSpan('NAME-work', (span) => {
    const who = request.query.get('who') ?? 'world';
    span.setAttribute('app.who', who);
    console.log(`greeting ${who}`);
    span.end();
    return { hello: who };
  }),
);

export const { manifest, handler } = plugin.exports();
"#;
