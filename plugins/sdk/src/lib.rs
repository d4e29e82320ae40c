//! Write comb plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2` that
//! exports comb's `plugin` world (see `wit/plugin.wit`). This crate wraps
//! the generated bindings so a plugin reads like the service it ports:
//!
//! ```no_run
//! use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, log, trace::Span};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn manifest() -> Manifest {
//!         Manifest::new("hello", "0.1.0").route("GET", "/hello/@:name")
//!     }
//!
//!     fn handle(request: Request) -> Result<Response, HandlerError> {
//!         let span = Span::start("hello-work"); // a child of the invocation span
//!         let name = request.param("name").unwrap_or("world");
//!         span.set("app.name_length", name.len());
//!         log::info("greeting", [("app.name", name.into())]);
//!         Ok(Response::json(200, &serde_json::json!({ "hello": name })))
//!     }
//! }
//!
//! comb_sdk::export!(Hello);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` and copy the
//! `.wasm` into comb's plugins folder.

pub mod client;
pub mod http;
pub mod log;
#[cfg(feature = "otel")]
pub mod otel;
pub mod trace;

/// The raw bindings generated from `wit/plugin.wit`.
///
/// Plugins rarely need them directly; the crate root re-exports the types.
#[allow(missing_docs, unreachable_pub, unsafe_code, reason = "generated code")]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_plugin",
        default_bindings_module: "comb_sdk::bindings",
    });
}

pub use bindings::comb::plugin::types::{HandlerError, Manifest, Request, Response, Route};

// The README's and the plugin guide's examples compile and run as doc
// tests, so they cannot drift from the SDK.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/plugins.md")]
struct PluginGuideExamples;

/// A comb plugin: its manifest and its request handler.
///
/// Implement it on a unit struct and pass that struct to [`export!`].
pub trait Plugin {
    /// Who the plugin is and which routes it serves. Called once per load.
    fn manifest() -> Manifest;

    /// Serves one request, in a fresh instance, inside comb's invocation span.
    fn handle(request: Request) -> Result<Response, HandlerError>;
}

impl Manifest {
    /// A manifest with a name and a version and no routes yet.
    pub fn new(name: &str, version: &str) -> Self {
        Manifest {
            name: name.to_owned(),
            version: version.to_owned(),
            description: None,
            routes: Vec::new(),
        }
    }

    /// Adds a route: an upper-case method and a pattern such as
    /// `/api/activities/@:handle`.
    pub fn route(mut self, method: &str, pattern: &str) -> Self {
        self.routes.push(Route {
            method: method.to_owned(),
            pattern: pattern.to_owned(),
        });
        self
    }

    /// Sets the one-line description shown in comb's plugin list.
    pub fn description(mut self, description: &str) -> Self {
        self.description = Some(description.to_owned());
        self
    }
}

/// Exports a [`Plugin`] implementation as the component's `manifest` and
/// `handler`.
#[macro_export]
macro_rules! export {
    ($plugin:ident) => {
        impl $crate::bindings::exports::comb::plugin::manifest::Guest for $plugin {
            fn describe() -> $crate::Manifest {
                <$plugin as $crate::Plugin>::manifest()
            }
        }

        impl $crate::bindings::exports::comb::plugin::handler::Guest for $plugin {
            fn handle(
                request: $crate::Request,
            ) -> ::core::result::Result<$crate::Response, $crate::HandlerError> {
                <$plugin as $crate::Plugin>::handle(request)
            }
        }

        // The generated export glue is `unsafe` by nature (raw ABI entry points).
        #[allow(unsafe_code)]
        const _: () = {
    $crate::bindings::export_plugin!($plugin with_types_in $crate::bindings);
        };
    };
}
