//! What a plugin may touch outside its own memory: by default nothing but
//! the clocks, randomness and stdout and stderr, which go to its log. A sidecar's
//! `[sandbox]` table grants more, per plugin:
//!
//! ```toml
//! [sandbox]
//! dirs = [{ host = "/srv/cruddur", guest = "/data" }]  # read-only
//! env = ["AWS_REGION"]                # host variables, by name
//! config = { FRONTEND_URL = "http://localhost:3000" }  # as variables too
//! connect = ["127.0.0.1:4567"]         # TCP destinations, `host:port`, port may be `*`
//! http = ["api.example.com", "127.0.0.1:4567"]  # outgoing HTTP (wasi:http), `host` or `host:port`
//! ```
//!
//! A denied access fails inside the guest with WASI's ordinary error; a
//! denied connection is also recorded on the invocation span.

use std::{future::Future, net::SocketAddr, path::PathBuf, pin::Pin, sync::Arc};

use opentelemetry::{Context, KeyValue, trace::TraceContextExt};
use serde::Deserialize;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, sockets::SocketAddrUse};

use super::guest_log::{GuestLog, Stdio};

/// What wasmtime-wasi's socket check returns.
type SocketCheck = Pin<Box<dyn Future<Output = bool> + Send + Sync>>;

/// A sidecar's `[sandbox]` table.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SandboxGrants {
    /// Host directories mounted read-only in the guest.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Names of host environment variables passed to the guest.
    #[serde(default)]
    pub env: Vec<String>,
    /// Fixed values passed to the guest as environment variables.
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
    /// TCP destinations the guest may connect to, `ip:port` or `ip:*`.
    #[serde(default)]
    pub connect: Vec<String>,
    /// Hosts the guest may send HTTP requests to through wasi:http,
    /// `host` (any port) or `host:port`.
    #[serde(default)]
    pub http: Vec<String>,
}

/// One read-only directory grant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
}

/// Parses one `[sandbox] http` grant: `host`, `host:port`, `[v6]` or
/// `[v6]:port`; host names compare case-insensitively.
fn http_grant(grant: &str) -> Result<(String, Option<u16>), SandboxError> {
    let bad = || SandboxError::HttpGrant(grant.to_owned());
    let (host, port) = match grant.strip_prefix('[') {
        Some(bracketed) => {
            let (host, rest) = bracketed.split_once(']').ok_or_else(bad)?;
            match rest {
                "" => (host, None),
                _ => (host, Some(rest.strip_prefix(':').ok_or_else(bad)?)),
            }
        }
        None => match grant.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            Some(_) => return Err(bad()),
            None => (grant, None),
        },
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = port
        .map(|port| port.parse::<u16>().map_err(|_| bad()))
        .transpose()?;
    Ok((host.to_ascii_lowercase(), port))
}

/// Hosts a plugin may send HTTP requests to; cheap to clone.
#[derive(Debug, Default, Clone)]
pub(crate) struct HttpGrants(Arc<Vec<(String, Option<u16>)>>);

impl HttpGrants {
    /// Whether the guest may send HTTP requests to `host:port`.
    pub(crate) fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_matches(['[', ']']);
        self.0.iter().any(|(granted, granted_port)| {
            granted.eq_ignore_ascii_case(host) && granted_port.is_none_or(|p| p == port)
        })
    }
}

/// A sidecar's `[sandbox]` grant that cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SandboxError {
    /// A directory to mount that is not one on the host.
    #[error("sandbox.dirs: {} is not a directory", .0.display())]
    NotADirectory(std::path::PathBuf),
    /// A TCP destination that is not `ip:port` or `ip:*`.
    #[error("sandbox.connect: {0:?} is not ip:port or ip:*")]
    ConnectGrant(String),
    /// An HTTP destination that is not a host with an optional port.
    #[error("sandbox.http: {0:?} is not host, host:port or [ipv6]:port")]
    HttpGrant(String),
}

/// A plugin's sandbox, resolved once at load: environment values read,
/// destinations parsed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sandbox {
    dirs: Vec<DirGrant>,
    env: Vec<(String, String)>,
    connect: Arc<Vec<(std::net::IpAddr, Option<u16>)>>,
    http: Arc<Vec<(String, Option<u16>)>>,
}

impl SandboxGrants {
    /// Resolves the grants: reads the named host variables (a missing one
    /// is simply not passed) and checks directories and destinations.
    pub(crate) fn resolve(&self) -> Result<Sandbox, SandboxError> {
        if let Some(dir) = self.dirs.iter().find(|dir| !dir.host.is_dir()) {
            return Err(SandboxError::NotADirectory(dir.host.clone()));
        }
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|value| (name.clone(), value)))
            .collect();
        env.extend(self.config.iter().map(|(k, v)| (k.clone(), v.clone())));
        let connect = self
            .connect
            .iter()
            .map(|grant| {
                let bad = || SandboxError::ConnectGrant(grant.clone());
                let (host, port) = grant.rsplit_once(':').ok_or_else(bad)?;
                let ip = host.trim_matches(['[', ']']).parse().map_err(|_| bad())?;
                let port = match port {
                    "*" => None,
                    port => Some(port.parse().map_err(|_| bad())?),
                };
                Ok((ip, port))
            })
            .collect::<Result<_, SandboxError>>()?;
        let http = self
            .http
            .iter()
            .map(|grant| http_grant(grant))
            .collect::<Result<_, SandboxError>>()?;
        Ok(Sandbox {
            dirs: self.dirs.clone(),
            env,
            connect: Arc::new(connect),
            http: Arc::new(http),
        })
    }
}

impl Sandbox {
    /// The HTTP destinations granted, shared with each call's hooks.
    pub(crate) fn http_grants(&self) -> HttpGrants {
        HttpGrants(self.http.clone())
    }

    /// The WASI context for one call: stdout and stderr go to `log`;
    /// `invocation` is where denied connections are recorded.
    pub(crate) fn wasi(&self, log: &GuestLog, invocation: Context) -> WasiCtx {
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(log.stream(Stdio::Stdout))
            .stderr(log.stream(Stdio::Stderr));
        for (name, value) in &self.env {
            builder.env(name, value);
        }
        for dir in &self.dirs {
            // Checked at load; a directory removed since is skipped, and the
            // guest gets WASI's not-found error.
            if let Err(error) = builder.preopened_dir(&dir.host, &dir.guest, FsPerms::ReadOnly) {
                tracing::warn!("sandbox: cannot mount {}: {error}", dir.host.display());
            }
        }
        let allowed = self.connect.clone();
        // TCP stays on so every attempt reaches the address check below,
        // which denies all but the granted destinations and records each
        // denial; UDP and name lookups have no grants and stay off.
        builder
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .allow_tcp(true)
            .socket_addr_check(
                move |address: SocketAddr, usage: SocketAddrUse| -> SocketCheck {
                    let granted = match usage {
                        SocketAddrUse::TcpConnect => allowed.iter().any(|(ip, port)| {
                            *ip == address.ip() && port.is_none_or(|p| p == address.port())
                        }),
                        // The implicit bind to an ephemeral port that precedes
                        // a connect; only for plugins that may connect at all.
                        SocketAddrUse::TcpBind => {
                            !allowed.is_empty()
                                && address.ip().is_unspecified()
                                && address.port() == 0
                        }
                        _ => false,
                    };
                    if !granted {
                        invocation.span().add_event(
                            "sandbox.denied",
                            vec![
                                KeyValue::new("sandbox.resource", "socket"),
                                KeyValue::new("sandbox.use", format!("{usage:?}")),
                                KeyValue::new("network.peer.address", address.to_string()),
                            ],
                        );
                    }
                    Box::pin(async move { granted })
                },
            );
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_grants_parse_hosts_ports_and_ipv6() {
        assert_eq!(
            http_grant("API.example.com"),
            Ok(("api.example.com".into(), None))
        );
        assert_eq!(
            http_grant("127.0.0.1:4567"),
            Ok(("127.0.0.1".into(), Some(4567)))
        );
        assert_eq!(http_grant("[::1]"), Ok(("::1".into(), None)));
        assert_eq!(http_grant("[::1]:8080"), Ok(("::1".into(), Some(8080))));
        for bad in ["::1", "host:port", "[::1", "[::1]8080", ":80", "host:99999"] {
            assert!(http_grant(bad).is_err(), "{bad} accepted");
        }
        let grants = HttpGrants(Arc::new(vec![
            http_grant("api.example.com").unwrap(),
            http_grant("[::1]:8080").unwrap(),
        ]));
        assert!(grants.allows("API.example.com", 443));
        assert!(grants.allows("[::1]", 8080));
        assert!(!grants.allows("::1", 8081));
        assert!(!grants.allows("example.com", 443));
    }
}
