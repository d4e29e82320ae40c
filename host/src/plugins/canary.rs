//! Two versions side by side: a plugin file whose sidecar says it is a
//! canary of a loaded plugin serves a share of that plugin's requests, on
//! the plugin's routes, instead of clashing with it.
//!
//! ```toml
//! [canary]
//! of = "home_activities"     # the plugin (its plugin.name)
//! weight = 10                # percent of its requests
//! header = "x-canary"        # `x-canary: always` picks the canary, `never` the plugin
//! abort_error_rate_increase = 5   # percentage points: abort by itself past this
//! ```
//!
//! Both versions serve, each with its own `plugin.version` on its spans,
//! metrics and comb's page. Promote (the canary's file replaces the
//! plugin's) and abort (the canary's file is set aside, as
//! `NAME.wasm.aborted`) are one admin call each; the folder's own reload
//! then swaps the route table whole, as for any change, so no request
//! fails on the way.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use anyhow::{Context as _, Result, bail};
use http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};

use super::Plugin;

/// Calls each version must have answered before the automatic abort
/// compares their error rates: below it, one failure is too much noise.
pub const MIN_CALLS_TO_ABORT: u64 = 20;

/// The sidecar's `[canary]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CanaryRule {
    /// The plugin (its `plugin.name`) this file is a canary of.
    pub of: String,
    /// Percent of that plugin's requests it serves, 0 to 100.
    #[serde(default)]
    pub weight: u8,
    /// A request header that picks the version: `always` the canary,
    /// `never` the plugin; any other value (or none) leaves it to `weight`.
    pub header: Option<String>,
    /// Abort by itself when the canary's error rate (5xx) exceeds the
    /// plugin's by more than this many percentage points, once each has
    /// answered [`MIN_CALLS_TO_ABORT`] calls.
    pub abort_error_rate_increase: Option<f64>,
}

impl CanaryRule {
    /// Checks the values a TOML type cannot.
    pub(crate) fn check(&self) -> Result<()> {
        if self.weight > 100 {
            bail!(
                "[canary] weight is a percentage: {} is over 100",
                self.weight
            );
        }
        if let Some(header) = &self.header {
            HeaderName::try_from(header.as_str())
                .with_context(|| format!("[canary] header {header:?} is not a header name"))?;
        }
        if let Some(margin) = self.abort_error_rate_increase
            && !(0.0..=100.0).contains(&margin)
        {
            bail!("[canary] abort_error_rate_increase is in percentage points, 0 to 100");
        }
        Ok(())
    }
}

/// A canary attached to the plugin it is a canary of.
pub struct Canary {
    /// The canary's version.
    pub plugin: Arc<Plugin>,
    rule: CanaryRule,
    header: Option<HeaderName>,
    /// Calls answered since it was attached: `[the plugin's, the canary's]`.
    calls: [AtomicU64; 2],
    errors: [AtomicU64; 2],
    aborted: AtomicBool,
}

/// What `/_comb/api/canaries` says of one canary.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryReport {
    /// The plugin's name.
    pub plugin: String,
    /// The version serving the rest of its requests.
    pub version: String,
    /// The canary's version.
    pub canary_version: String,
    /// The canary's file.
    pub canary_file: String,
    /// Its share, percent.
    pub weight: u8,
    /// The header that picks a version, if any.
    pub header: Option<String>,
    /// The automatic abort's margin, percentage points.
    pub abort_error_rate_increase: Option<f64>,
    /// Calls since it was attached: the plugin's, the canary's.
    pub calls: [u64; 2],
    /// Of those, answered 5xx.
    pub errors: [u64; 2],
}

impl Canary {
    /// `plugin`, a canary by `rule`.
    pub(crate) fn new(plugin: Arc<Plugin>, rule: CanaryRule) -> Self {
        let header = rule
            .header
            .as_deref()
            .and_then(|name| HeaderName::try_from(name).ok());
        Canary {
            plugin,
            rule,
            header,
            calls: Default::default(),
            errors: Default::default(),
            aborted: AtomicBool::new(false),
        }
    }

    /// Whether a request with `headers` goes to the canary.
    pub(crate) fn picks(&self, headers: &HeaderMap) -> bool {
        if let Some(value) = self.header.as_ref().and_then(|name| headers.get(name)) {
            if value == "always" {
                return true;
            }
            if value == "never" {
                return false;
            }
        }
        self.rule.weight > 0 && rand::random_range(0..100u8) < self.rule.weight
    }

    /// Counts one answered call, the canary's or the plugin's; true when
    /// this call is the one that makes the canary's error rate cross its
    /// abort margin (the caller aborts it, once).
    pub fn record(&self, canary: bool, failed: bool) -> bool {
        let side = usize::from(canary);
        self.calls[side].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors[side].fetch_add(1, Ordering::Relaxed);
        }
        let Some(margin) = self.rule.abort_error_rate_increase else {
            return false;
        };
        let calls = self.calls.each_ref().map(|c| c.load(Ordering::Relaxed));
        if calls.iter().any(|&n| n < MIN_CALLS_TO_ABORT) {
            return false;
        }
        let rate =
            |side: usize| self.errors[side].load(Ordering::Relaxed) as f64 / calls[side] as f64;
        (rate(1) - rate(0)) * 100.0 > margin && !self.aborted.swap(true, Ordering::Relaxed)
    }

    /// Marks it aborted: its version is withdrawn, never attached again
    /// (its file is being set aside).
    pub(crate) fn mark_aborted(&self) {
        self.aborted.store(true, Ordering::Relaxed);
        self.plugin.withdrawn.store(true, Ordering::Relaxed);
    }

    /// What the canary API shows of it, beside `primary`.
    pub fn report(&self, primary: &Plugin) -> CanaryReport {
        let load = |counts: &[AtomicU64; 2]| counts.each_ref().map(|c| c.load(Ordering::Relaxed));
        CanaryReport {
            plugin: primary.name.clone(),
            version: primary.version.clone(),
            canary_version: self.plugin.version.clone(),
            canary_file: self.plugin.file.display().to_string(),
            weight: self.rule.weight,
            header: self.rule.header.clone(),
            abort_error_rate_increase: self.rule.abort_error_rate_increase,
            calls: load(&self.calls),
            errors: load(&self.errors),
        }
    }
}

/// Where an aborted canary's file is set aside: beside it, no longer a
/// `.wasm` (the folder ignores it), to be renamed back by hand.
fn aborted_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".aborted");
    file.with_file_name(name)
}

/// Sets an aborted canary's file aside (see [`aborted_path`]); its
/// sidecar stays, inert without it.
pub(crate) fn set_aside(canary: &Plugin) -> Result<PathBuf> {
    folder_file(canary)?;
    let aside = aborted_path(&canary.file);
    std::fs::rename(&canary.file, &aside)
        .with_context(|| format!("setting {} aside", canary.file.display()))?;
    Ok(aside)
}

/// Replaces the plugin's file with the canary's (through a hidden file
/// beside it and an atomic rename, so the folder never holds half a
/// file), then sets the canary's file aside as `NAME.wasm.promoted`. The
/// plugin's sidecar stays the plugin's.
pub(crate) fn promote(primary: &Plugin, canary: &Plugin) -> Result<()> {
    folder_file(primary)?;
    folder_file(canary)?;
    let name = primary
        .file
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let staging = primary.file.with_file_name(format!(".{name}.promoting"));
    std::fs::copy(&canary.file, &staging)
        .with_context(|| format!("copying {}", canary.file.display()))?;
    std::fs::rename(&staging, &primary.file)
        .with_context(|| format!("replacing {}", primary.file.display()))?;
    let mut promoted = canary.file.file_name().unwrap_or_default().to_os_string();
    promoted.push(".promoted");
    std::fs::rename(&canary.file, canary.file.with_file_name(promoted))
        .with_context(|| format!("setting {} aside", canary.file.display()))?;
    Ok(())
}

/// Only a folder's files can be renamed; a registry's plugin is the
/// registry's to change.
fn folder_file(plugin: &Plugin) -> Result<()> {
    if plugin.artifact.is_some() {
        bail!(
            "{} comes from a registry: push the version you want to its reference instead",
            plugin.name
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_is_checked() {
        let rule = |weight, header: Option<&str>, margin| CanaryRule {
            of: "p".into(),
            weight,
            header: header.map(str::to_owned),
            abort_error_rate_increase: margin,
        };
        assert!(rule(10, Some("x-canary"), Some(5.0)).check().is_ok());
        assert!(rule(101, None, None).check().is_err());
        assert!(rule(10, Some("not a header"), None).check().is_err());
        assert!(rule(10, None, Some(-1.0)).check().is_err());
    }

    #[test]
    fn an_aborted_file_is_set_beside_it() {
        assert_eq!(
            aborted_path(Path::new("/p/home_v2.wasm")),
            Path::new("/p/home_v2.wasm.aborted")
        );
    }
}
