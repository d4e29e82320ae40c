//! The optional sidecar `NAME.toml` next to `NAME.wasm`: per-plugin
//! settings that the deployer, not the plugin author, decides.
//!
//! ```toml
//! # Serve the plugin on other routes than its manifest declares.
//! routes = [
//!     { method = "GET", pattern = "/v2/activities/home" },
//! ]
//!
//! [limits]            # see crate::limits
//! deadline_ms = 500
//!
//! [sandbox]           # see crate::runtime::sandbox
//! env = ["AWS_REGION"]
//!
//! [canary]            # see super::canary
//! of = "home_activities"
//! weight = 10
//! ```
//!
//! Unknown keys are errors, so a typo is reported (with its line and
//! column) rather than silently ignored.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Deserialize;

use super::canary::CanaryRule;
use crate::{limits::LimitsOverride, runtime::sandbox::SandboxGrants};

/// The sidecar's settings.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Sidecar {
    /// Routes that replace the manifest's, when present.
    pub routes: Option<Vec<SidecarRoute>>,
    /// Limits that replace comb's defaults for this plugin.
    #[serde(default)]
    pub limits: LimitsOverride,
    /// What this plugin may reach beyond its memory.
    #[serde(default)]
    pub sandbox: SandboxGrants,
    /// This file is a canary of another plugin, serving its routes.
    pub canary: Option<CanaryRule>,
}

/// One route in a sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SidecarRoute {
    /// The upper-case HTTP method.
    pub method: String,
    /// The path pattern, as in the WIT `route` record.
    pub pattern: String,
}

/// The sidecar path for a plugin file: `NAME.toml` beside `NAME.wasm`.
pub(crate) fn path_for(wasm: &Path) -> PathBuf {
    wasm.with_extension("toml")
}

/// Parses a sidecar's text; the error names the line and column.
pub(crate) fn parse(text: &str, path: &Path) -> Result<Sidecar> {
    toml::from_str(text).with_context(|| format!("invalid sidecar {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_override() {
        let sidecar = parse(
            r#"routes = [{ method = "GET", pattern = "/x" }]"#,
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!(
            sidecar.routes,
            Some(vec![SidecarRoute {
                method: "GET".into(),
                pattern: "/x".into()
            }])
        );
        assert_eq!(parse("", Path::new("a.toml")).unwrap(), Sidecar::default());
    }

    #[test]
    fn errors_name_line_and_column() {
        let error = parse(
            "routes = [\n  { method = \"GET\", patern = \"/x\" },\n]",
            Path::new("a.toml"),
        )
        .unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("line 2, column"), "{text}");
        assert!(text.contains("patern"), "{text}");
    }
}
