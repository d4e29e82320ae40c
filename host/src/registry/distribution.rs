//! The pull side of the OCI distribution protocol, every byte a registry
//! sends read through a cap before it is buffered.
//!
//! A registry is not trusted to be well behaved: one that answers a
//! manifest request with an endless body would otherwise grow comb's
//! memory until the machine kills it (the OCI client library reads
//! manifests, tokens and error bodies whole). Here a manifest or config is
//! at most [`MAX_MANIFEST_BYTES`] (the distribution spec's own
//! recommendation), a token answer [`MAX_TOKEN_BYTES`], an error body
//! [`MAX_ERROR_BYTES`] (cut, not refused), and a layer exactly the size its
//! descriptor states (itself capped by the caller). Time is bounded by the
//! client's connect and read timeouts and the caller's deadline per check.

use std::{collections::HashMap, sync::Mutex};

use anyhow::{Context as _, Result, bail};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use oci_client::{Reference, manifest::OciImageManifest, secrets::RegistryAuth};
use sha2::{Digest as _, Sha256};

/// The largest manifest comb reads: the distribution spec's recommendation
/// for what registries accept (4 MiB).
pub(super) const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The largest token answer comb reads (tokens are a few KiB).
pub(super) const MAX_TOKEN_BYTES: usize = 1 << 20;

/// The most of an error answer comb reads, to quote it in the failure.
pub(super) const MAX_ERROR_BYTES: usize = 4 << 10;

/// The manifest media types comb asks for: an OCI image manifest (a Wasm
/// artifact is one), or Docker's v2 schema, which has the same shape.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A registry client for pulls. Bearer tokens are kept per registry and
/// repository, so a poll is one `HEAD` while its token lasts.
pub(super) struct Distribution {
    client: reqwest::Client,
    insecure: Vec<String>,
    tokens: Mutex<HashMap<String, HeaderValue>>,
}

impl Distribution {
    /// A client speaking plain HTTP to the `insecure` registries, HTTPS to
    /// every other one.
    pub(super) fn new(insecure: Vec<String>) -> Result<Self> {
        // Registries send blob downloads elsewhere (a storage bucket); a
        // manifest, a token or `/v2/` is answered where it was asked, so no
        // other redirect is followed: a registry cannot make comb fetch an
        // address of its choosing and quote the answer back in a reason.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let from_blob = attempt
                .previous()
                .first()
                .is_some_and(|first| first.path().contains("/blobs/sha256:"));
            match from_blob && attempt.previous().len() <= 5 {
                true => attempt.follow(),
                false => attempt.stop(),
            }
        });
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(redirects)
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("comb/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the registry client")?;
        Ok(Distribution {
            client,
            insecure,
            tokens: Mutex::default(),
        })
    }

    /// The digest of `reference`'s manifest: the registry's
    /// `Docker-Content-Digest` from a `HEAD`, else the manifest's own hash.
    pub(super) async fn manifest_digest(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
    ) -> Result<String> {
        let url = self.manifest_url(reference, &manifest_name(reference));
        let response = self
            .send(reqwest::Method::HEAD, &url, reference, auth)
            .await?;
        // A HEAD's failure has no body to say why, and a registry need not
        // send the digest header: either way, the GET says or hashes.
        let digest = (response.status().is_success())
            .then(|| digest_header(response.headers()))
            .flatten();
        match digest {
            Some(digest) => Ok(digest),
            None => {
                let (_, digest) = self.manifest(reference, auth).await?;
                Ok(digest)
            }
        }
    }

    /// `reference`'s manifest and its digest, checked against the digest
    /// the reference pins, if it pins one.
    pub(super) async fn manifest(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
    ) -> Result<(OciImageManifest, String)> {
        let url = self.manifest_url(reference, &manifest_name(reference));
        let response = self
            .send(reqwest::Method::GET, &url, reference, auth)
            .await?;
        let bytes =
            read_capped(success(response).await?, MAX_MANIFEST_BYTES, "the manifest").await?;
        let digest = sha256_digest(&bytes);
        if let Some(pinned) = reference.digest()
            && pinned != digest
        {
            bail!("the manifest's bytes are {digest}, not the {pinned} asked for");
        }
        let manifest = serde_json::from_slice(&bytes)
            .context("not a Wasm OCI artifact: the manifest is not an OCI image manifest")?;
        Ok((manifest, digest))
    }

    /// The blob `digest` of `reference`'s repository, `size` bytes exactly,
    /// checked against its digest.
    pub(super) async fn blob(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
        digest: &str,
        size: usize,
    ) -> Result<Vec<u8>> {
        let url = format!("{}/blobs/{digest}", self.repository_url(reference));
        let response = self
            .send(reqwest::Method::GET, &url, reference, auth)
            .await?;
        let bytes = read_capped(success(response).await?, size, "the blob").await?;
        // Hashing up to 256 MiB is blocking work: off the async workers.
        let (actual, bytes) = tokio::task::spawn_blocking(move || (sha256_digest(&bytes), bytes))
            .await
            .context("hashing the blob")?;
        if actual != digest {
            bail!("the blob's bytes are {actual}, not {digest} as its manifest says");
        }
        Ok(bytes)
    }

    /// Sends a request, authenticating as the registry asks: a kept bearer
    /// token, else anonymously; on a 401, as its challenge says (Basic with
    /// the credentials, or a bearer token fetched from its realm), once.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        reference: &Reference,
        auth: &RegistryAuth,
    ) -> Result<reqwest::Response> {
        let key = format!(
            "{}/{}",
            reference.resolve_registry(),
            reference.repository()
        );
        let kept = self.tokens.lock().expect("tokens").get(&key).cloned();
        let authorization = match (kept, auth) {
            (Some(token), _) => Some(token),
            (None, RegistryAuth::Bearer(token)) => Some(bearer(token)?),
            (None, _) => None,
        };
        let request = |authorization: Option<&HeaderValue>| {
            let mut request = self
                .client
                .request(method.clone(), url)
                .header(header::ACCEPT, MANIFEST_ACCEPT);
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value.clone());
            }
            request.send()
        };
        let response = request(authorization.as_ref())
            .await
            .with_context(|| format!("{method} {url}"))?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = (response.headers().get(header::WWW_AUTHENTICATE))
            .and_then(|value| value.to_str().ok())
            .map(Challenge::parse);
        drop(response);
        let authorization = match challenge {
            Some(Challenge::Bearer { realm, service }) => {
                let scope = format!("repository:{}:pull", reference.repository());
                let registry = reference.resolve_registry();
                self.token(&realm, service.as_deref(), &scope, auth, registry)
                    .await?
            }
            Some(Challenge::Basic) | None => match auth {
                RegistryAuth::Basic(user, password) => basic(user, password)?,
                _ => bail!("the registry asks for credentials and none are configured (401)"),
            },
        };
        self.tokens
            .lock()
            .expect("tokens")
            .insert(key, authorization.clone());
        request(Some(&authorization))
            .await
            .with_context(|| format!("{method} {url}"))
    }

    /// A bearer token from `realm` for `scope`, as the Docker token
    /// protocol has it (Basic credentials when there are some).
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        auth: &RegistryAuth,
        registry: &str,
    ) -> Result<HeaderValue> {
        let mut query = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut request = self.client.get(realm).query(&query);
        if let RegistryAuth::Basic(user, password) = auth
            && may_send_credentials(realm, registry)
        {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .context("asking for a registry token")?;
        let bytes = read_capped(
            success(response).await?,
            MAX_TOKEN_BYTES,
            "the token answer",
        )
        .await?;
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: Answer =
            serde_json::from_slice(&bytes).context("the registry's token answer is not JSON")?;
        let token = (answer.token.or(answer.access_token))
            .context("the registry's token answer holds no token")?;
        bearer(&token)
    }

    fn scheme(&self, registry: &str) -> &'static str {
        match self.insecure.iter().any(|insecure| insecure == registry) {
            true => "http",
            false => "https",
        }
    }

    fn repository_url(&self, reference: &Reference) -> String {
        let registry = reference.resolve_registry();
        format!(
            "{}://{registry}/v2/{}",
            self.scheme(registry),
            reference.repository()
        )
    }

    fn manifest_url(&self, reference: &Reference, name: &str) -> String {
        format!("{}/manifests/{name}", self.repository_url(reference))
    }
}

/// Whether the credentials for `registry` may go to the token `realm` its
/// challenge names: over HTTPS, or to the registry's own host. A registry
/// names its realm itself; a hostile one must not get a password sent in
/// clear text to an address of its choosing.
fn may_send_credentials(realm: &str, registry: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(realm) else {
        return false;
    };
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return false,
    };
    url.scheme() == "https" || host == registry
}

/// A tag or a digest: what names the manifest in its URL.
fn manifest_name(reference: &Reference) -> String {
    match reference.digest() {
        Some(digest) => digest.to_owned(),
        None => reference.tag().unwrap_or("latest").to_owned(),
    }
}

/// A registry's `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    /// `Bearer realm="…",service="…"` or anything else (Basic).
    fn parse(text: &str) -> Challenge {
        let Some(params) = text
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, params)| params)
        else {
            return Challenge::Basic;
        };
        let mut realm = None;
        let mut service = None;
        for (key, value) in auth_params(params) {
            match key.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "service" => service = Some(value),
                _ => {}
            }
        }
        match realm {
            Some(realm) => Challenge::Bearer { realm, service },
            None => Challenge::Basic,
        }
    }
}

/// `key="value", key=value` pairs; commas inside quotes are kept.
fn auth_params(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            },
            None => after.split_once(',').unwrap_or((after, "")),
        };
        pairs.push((key, value.to_owned()));
        rest = next.trim_start().trim_start_matches(',');
    }
    pairs
}

fn bearer(token: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::try_from(format!("Bearer {token}"))
        .context("the registry token is not a valid header value")?;
    value.set_sensitive(true);
    Ok(value)
}

fn basic(user: &str, password: &str) -> Result<HeaderValue> {
    use base64::Engine as _;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::try_from(format!("Basic {credentials}"))
        .context("the registry credentials are not a valid header value")?;
    value.set_sensitive(true);
    Ok(value)
}

/// The registry's answer if it is a success, else an error quoting the
/// start of its body (read through [`MAX_ERROR_BYTES`]).
async fn success(response: reqwest::Response) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = response.url().to_string();
    let body = read_prefix(response, MAX_ERROR_BYTES).await;
    let text = match registry_errors(&body) {
        Some(errors) => errors,
        None => String::from_utf8_lossy(&body).trim().to_owned(),
    };
    // One line: it is logged and listed as the reference's reason.
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.is_empty() {
        true => bail!("{url} answered {status}"),
        false => bail!("{url} answered {status}: {text}"),
    }
}

/// The distribution spec's error body (`{"errors": [{"code", "message"}]}`)
/// as `CODE: message; ...`, when the body is one.
fn registry_errors(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Error>,
    }
    #[derive(serde::Deserialize)]
    struct Error {
        code: String,
        #[serde(default)]
        message: String,
    }
    let errors: Errors = serde_json::from_slice(body).ok()?;
    let texts: Vec<String> = (errors.errors.iter())
        .map(|error| format!("{}: {}", error.code, error.message))
        .collect();
    (!texts.is_empty()).then(|| texts.join("; "))
}

/// The whole body, refused past `cap` bytes (before they are buffered:
/// a declared length is checked first, then each chunk as it comes).
async fn read_capped(mut response: reqwest::Response, cap: usize, what: &str) -> Result<Vec<u8>> {
    let too_large = || anyhow::anyhow!("{what} is larger than the {cap} bytes comb reads");
    if response
        .content_length()
        .is_some_and(|length| length > cap as u64)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading {what}"))?
    {
        if bytes.len() + chunk.len() > cap {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// At most `cap` bytes of the body; the rest is never read.
async fn read_prefix(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    while bytes.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                bytes.extend_from_slice(&chunk[..chunk.len().min(cap - bytes.len())])
            }
            Ok(None) | Err(_) => break,
        }
    }
    bytes
}

fn digest_header(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("docker-content-digest")?.to_str().ok()?;
    value.starts_with("sha256:").then(|| value.to_owned())
}

/// `sha256:HEX` of `bytes`, as OCI writes digests.
pub(super) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_as_registries_write_them() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
            }
        );
        assert_eq!(
            Challenge::parse(r#"bearer realm=https://auth.example/token"#),
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: None,
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="comb-tests""#),
            Challenge::Basic
        );
        assert_eq!(Challenge::parse("Bearer"), Challenge::Basic);
    }

    #[test]
    fn credentials_go_to_a_realm_over_https_or_on_the_registrys_own_host() {
        assert!(may_send_credentials(
            "https://auth.example/token",
            "registry.example"
        ));
        assert!(may_send_credentials(
            "http://127.0.0.1:5000/token",
            "127.0.0.1:5000"
        ));
        assert!(!may_send_credentials(
            "http://collect.example/token",
            "127.0.0.1:5000"
        ));
        assert!(!may_send_credentials(
            "http://127.0.0.1:6000/token",
            "127.0.0.1:5000"
        ));
        assert!(!may_send_credentials("not a url", "127.0.0.1:5000"));
    }

    #[test]
    fn a_registrys_error_body_is_read_as_its_codes_and_messages() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"here"}}]}"#;
        assert_eq!(
            registry_errors(body).as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown")
        );
        assert_eq!(registry_errors(b"<html>no</html>"), None);
    }
}
