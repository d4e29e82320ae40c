//! A setting that must never be printed: OTLP headers (Honeycomb's API
//! key), tokens, passwords.

use std::{fmt, str::FromStr};

/// A secret setting's text. `Debug` and `Display` print `<redacted>`, so a
/// settings dump or a log line that formats it leaks nothing; the text is
/// reached only through [`Secret::expose`], where it is used. Its flag is
/// declared with `hide_env_values` too, so `--help` does not print the
/// variable's value either.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// The secret's text, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Secret(text.to_owned())
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Secret(text.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_as_redacted() {
        let secret: Secret = "x-honeycomb-team=CANARY".parse().unwrap();
        assert_eq!(format!("{secret:?} {secret}"), "<redacted> <redacted>");
        assert_eq!(secret.expose(), "x-honeycomb-team=CANARY");
    }
}
