//! The wasmtime side of comb: one engine and one linker for all plugins, a
//! fresh store and instance per call.
//!
//! Following wasmtime's own `serve`: compile a component once, link it once
//! into an [`InstancePre`](wasmtime::component::InstancePre) (here the
//! generated [`PluginPre`]), then per request create a `Store`, instantiate
//! from the pre-linked component and call the export. A fresh instance per
//! request is comb's isolation promise: nothing leaks between requests.

pub mod bindings;
pub mod span_api;
mod state;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry::{Context, global::BoxedTracer};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, Store, Trap, WasmBacktrace,
    component::{Component, Linker},
};

pub use bindings::{HandlerError, Manifest, PluginPre, Request, Response, Route};
use state::InvocationState;

/// How much of a guest's stderr comb keeps per call (64 KiB): enough for a
/// panic message and its context, small enough that a chatty guest costs
/// nothing. Excess output is dropped.
pub const STDERR_CAPTURE_LIMIT: usize = 64 * 1024;

/// A plugin compiled and linked against comb's imports, ready to
/// instantiate.
pub type PreparedPlugin = PluginPre<InvocationState>;

/// The engine and linker shared by every plugin.
pub struct Runtime {
    engine: Engine,
    linker: Linker<InvocationState>,
    /// The compile cache, when on: its hit counters tell a load whether it
    /// compiled or read compiled code back.
    cache: Option<Cache>,
}

/// How a plugin's code was compiled.
#[derive(Debug, Clone, Copy)]
pub struct Compiled {
    /// How long compiling (or reading from the cache) took.
    pub duration: Duration,
    /// Whether the compiled code came from the cache; `None` without one.
    pub cache_hit: Option<bool>,
}

/// Why a call into a plugin did not produce a response.
#[derive(Debug)]
pub enum InvokeError {
    /// The plugin returned `handler-error`.
    Guest(HandlerError),
    /// The plugin trapped: a panic, `unreachable`, an out-of-bounds access...
    Trap {
        /// A low-cardinality name for the trap, e.g. `wasm.trap.unreachable`
        /// or `wasm.panic`, used as `error.type`.
        error_type: String,
        /// What happened, with the guest's panic message when there was one.
        message: String,
        /// The wasm backtrace, when wasmtime captured one.
        backtrace: Option<String>,
    },
    /// Instantiation failed (the host ran out of a resource, say).
    Instantiate(String),
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvokeError::Guest(HandlerError::BadRequest(message)) => {
                write!(f, "bad request: {message}")
            }
            InvokeError::Guest(HandlerError::Internal(message)) => {
                write!(f, "plugin error: {message}")
            }
            InvokeError::Trap {
                error_type,
                message,
                ..
            } => write!(f, "{error_type}: {message}"),
            InvokeError::Instantiate(message) => write!(f, "instantiation failed: {message}"),
        }
    }
}

/// How long the phases of one call took.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTimings {
    /// Creating the store and instantiating the component.
    pub instantiate: Duration,
    /// The guest's `handle` call itself.
    pub call: Duration,
}

impl Runtime {
    /// Creates the engine and links comb's host interfaces (WASI, tracing).
    ///
    /// With `cache_dir`, compiled code is cached there, keyed by the
    /// component's bytes and the engine's settings and version, so a restart
    /// skips compiling; wasmtime checks each entry and recompiles a corrupt
    /// or stale one.
    pub fn new(cache_dir: Option<&Path>) -> anyhow::Result<Self> {
        // wasmtime's defaults fit otherwise: async support is always on in
        // 48, and wasm backtraces (on by default) make traps name functions.
        let mut config = Config::new();
        let cache = match cache_dir {
            Some(dir) => {
                let mut cache_config = CacheConfig::new();
                cache_config.with_directory(dir);
                Some(Cache::new(cache_config)?)
            }
            None => None,
        };
        config.cache(cache.clone());
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        state::add_to_linker(&mut linker)?;
        Ok(Runtime {
            engine,
            linker,
            cache,
        })
    }

    /// Compiles a component and links it against comb's imports.
    ///
    /// Fails with a readable reason when the bytes are not a component, or
    /// the component imports something comb does not provide or lacks an
    /// export of the `plugin` world.
    ///
    /// Call it from one thread at a time: the cache hit is read from the
    /// cache's counters around the compile.
    pub fn prepare(&self, wasm: &[u8]) -> anyhow::Result<(PreparedPlugin, Compiled)> {
        let hits_before = self.cache.as_ref().map(Cache::cache_hits);
        let started = Instant::now();
        let component = Component::from_binary(&self.engine, wasm)?;
        let compiled = Compiled {
            duration: started.elapsed(),
            cache_hit: hits_before
                .zip(self.cache.as_ref())
                .map(|(before, cache)| cache.cache_hits() > before),
        };
        let pre = self.linker.instantiate_pre(&component)?;
        let pre = PluginPre::new(pre).map_err(|error| {
            // Say what the component does export: typically the same
            // interfaces at another version of the WIT package.
            let exports: Vec<String> = component
                .component_type()
                .exports(&self.engine)
                .map(|(name, _)| name.to_owned())
                .collect();
            let exports = if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            };
            anyhow::Error::from(error).context(format!("the component exports {exports}"))
        })?;
        Ok((pre, compiled))
    }

    /// Calls the plugin's `manifest.describe` in a throwaway instance.
    pub async fn describe(
        &self,
        pre: &PreparedPlugin,
        tracer: Arc<BoxedTracer>,
    ) -> anyhow::Result<Manifest> {
        let mut store = self.store(InvocationState::new(tracer, Context::new(), ""));
        let plugin = pre.instantiate_async(&mut store).await?;
        Ok(plugin
            .comb_plugin_manifest()
            .call_describe(&mut store)
            .await?)
    }

    /// Runs one request in a fresh instance. Guest spans become children of
    /// the span in `invocation`.
    pub async fn invoke(
        &self,
        pre: &PreparedPlugin,
        request: Request,
        tracer: Arc<BoxedTracer>,
        invocation: Context,
        plugin_name: &str,
    ) -> (Result<Response, InvokeError>, CallTimings) {
        let mut timings = CallTimings::default();
        let started = Instant::now();
        let mut store = self.store(InvocationState::new(tracer, invocation, plugin_name));
        let plugin = match pre.instantiate_async(&mut store).await {
            Ok(plugin) => plugin,
            Err(error) => return (Err(InvokeError::Instantiate(format!("{error:#}"))), timings),
        };
        timings.instantiate = started.elapsed();
        let called = Instant::now();
        let result = plugin
            .comb_plugin_handler()
            .call_handle(&mut store, &request)
            .await;
        timings.call = called.elapsed();
        let outcome = match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(InvokeError::Guest(error)),
            Err(error) => Err(trap(error, &store.data().stderr())),
        };
        (outcome, timings)
    }

    fn store(&self, state: InvocationState) -> Store<InvocationState> {
        Store::new(&self.engine, state)
    }
}

/// Turns a failed call into an [`InvokeError::Trap`], preferring the
/// guest's own panic message (Rust writes it to stderr before aborting).
fn trap(error: wasmtime::Error, stderr: &str) -> InvokeError {
    let backtrace = error
        .downcast_ref::<WasmBacktrace>()
        .map(|bt| bt.to_string());
    let panic = stderr
        .lines()
        .position(|line| line.contains("panicked at"))
        .map(|start| {
            stderr
                .lines()
                .skip(start)
                .take(8)
                .collect::<Vec<_>>()
                .join("\n")
        });
    let (error_type, message) = match (panic, error.downcast_ref::<Trap>()) {
        (Some(panic), _) => ("wasm.panic".to_owned(), panic),
        (None, Some(trap)) => (trap_type(*trap), trap.to_string()),
        (None, None) => ("wasm.host_error".to_owned(), format!("{error:#}")),
    };
    InvokeError::Trap {
        error_type,
        message,
        backtrace,
    }
}

/// `wasm.trap.<kind>` in snake case, e.g. `wasm.trap.unreachable_code_reached`:
/// a fixed set of names, so safe as a low-cardinality attribute.
fn trap_type(trap: Trap) -> String {
    let name = format!("{trap:?}");
    let mut snake = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    format!("wasm.trap.{snake}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_types_are_snake_case() {
        assert_eq!(
            trap_type(Trap::UnreachableCodeReached),
            "wasm.trap.unreachable_code_reached"
        );
        assert_eq!(trap_type(Trap::StackOverflow), "wasm.trap.stack_overflow");
    }

    #[test]
    fn panic_message_wins_over_the_trap() {
        let error = wasmtime::Error::from(Trap::UnreachableCodeReached);
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:20:32:\nboom\nnote: run with RUST_BACKTRACE=1\n";
        match trap(error, stderr) {
            InvokeError::Trap {
                error_type,
                message,
                ..
            } => {
                assert_eq!(error_type, "wasm.panic");
                assert!(
                    message.starts_with("thread '<unnamed>' panicked at src/lib.rs:20:32:\nboom")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
