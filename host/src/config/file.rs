//! `comb.toml`: a settings file whose keys are `comb serve`'s flags, read
//! before clap parses and made the flags' defaults, so a flag and its
//! environment variable still win.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap::{CommandFactory, FromArgMatches, ValueHint};

use super::Cli;

/// The settings file read when neither `--config` nor `COMB_CONFIG` names
/// one, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "comb.toml";

impl Cli {
    /// Parses `args` (the program name first) over the settings file, and
    /// says which file that was. Bad flags (and `--help`) are a
    /// [`LoadError::Usage`] for the caller to print; a bad file is an error
    /// naming it.
    pub fn load(args: Vec<OsString>) -> Result<(Cli, Option<PathBuf>), LoadError> {
        let file = config_file(&args);
        let mut command = Cli::command();
        if let Some(file) = &file {
            let read = || -> anyhow::Result<clap::Command> {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let table: toml::Table =
                    toml::from_str(&text).with_context(|| format!("invalid {}", file.display()))?;
                let base = file.parent().unwrap_or(Path::new(""));
                with_file_defaults(Cli::command(), &table, base)
                    .with_context(|| format!("in {}", file.display()))
            };
            command = read().map_err(LoadError::Settings)?;
        }
        let usage = |error: clap::Error| {
            // clap names the flag but cannot know its value came from the
            // file: the caller says so.
            let from_file = matches!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue
            );
            LoadError::Usage {
                error,
                settings: file.clone().filter(|_| from_file),
            }
        };
        let matches = command.try_get_matches_from(args).map_err(usage)?;
        let cli = Cli::from_arg_matches(&matches).map_err(usage)?;
        Ok((cli, file))
    }
}

/// Why the command line and settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// clap's own answer: a bad flag or value, or `--help` / `--version`.
    /// Print it with [`clap::Error::print`] and exit with its code.
    #[error("{error}")]
    Usage {
        /// clap's error.
        error: clap::Error,
        /// The settings file the bad value may have come from.
        settings: Option<PathBuf>,
    },
    /// The settings file could not be read or is invalid.
    #[error("{0:#}")]
    Settings(anyhow::Error),
}

/// The settings file: `--config`, else `COMB_CONFIG`, else `comb.toml` if
/// present. Read before clap parses, because the file supplies defaults.
fn config_file(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    if let Some(path) = std::env::var_os("COMB_CONFIG") {
        return Some(PathBuf::from(path));
    }
    Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|path| path.is_file())
}

/// Makes each key of `table` the default of the flag with that long name,
/// in every subcommand that has it, so flags and environment variables
/// still win. Paths (the values of `PathBuf` flags) are relative to `base`.
pub(super) fn with_file_defaults(
    mut command: clap::Command,
    table: &toml::Table,
    base: &Path,
) -> anyhow::Result<clap::Command> {
    for (key, value) in table {
        let values: Vec<String> = match value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<_, _>>(),
            value => scalar(value).map(|value| vec![value]),
        }
        .with_context(|| format!("`{key}`"))?;
        let mut known = false;
        let subcommands: Vec<String> = command
            .get_subcommands()
            .map(|sub| sub.get_name().to_owned())
            .collect();
        for name in subcommands {
            command = command.mut_subcommand(name, |sub| {
                let Some(arg) = sub.get_arguments().find(|arg| arg.get_long() == Some(key)) else {
                    return sub;
                };
                known = true;
                // A path flag, by its type: clap hints every `PathBuf` flag
                // as a path (what shells complete as one, too).
                let is_path = matches!(
                    arg.get_value_hint(),
                    ValueHint::AnyPath | ValueHint::FilePath | ValueHint::DirPath
                );
                let values: Vec<String> = match is_path {
                    true => values
                        .iter()
                        .map(|v| base.join(v).to_string_lossy().into_owned())
                        .collect(),
                    false => values.clone(),
                };
                let id = arg.get_id().clone();
                // A required flag the file supplies is required no more.
                sub.mut_arg(id, |arg| arg.default_values(values).required(false))
            });
        }
        if !known {
            bail!("`{key}` is not a setting: keys are the long names of `comb serve`'s flags");
        }
    }
    Ok(command)
}

/// A TOML string, number or boolean as flag text.
fn scalar(value: &toml::Value) -> anyhow::Result<String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!("expected a string, number, boolean or list, found {other}"),
    })
}
