//! The publish stage: push a tested image to the configured registry and name it by digest.
//!
//! The image is tagged into the registry's repository (`<host>[/<namespace>]/<image>:<tag>`)
//! and pushed through the engine (bollard's `push_image`); the digest the registry stored is
//! read from the push's progress stream (`<tag>: digest: sha256:… size: …`), falling back to
//! the image's `RepoDigests`. The result, `<host>[/<namespace>]/<image>@sha256:…`, is the
//! identity the lock records and the deploy stage rolls out.
//!
//! [`registry_has`] asks the registry itself (Docker Registry HTTP API v2) whether a manifest
//! exists, for the deploy stage's "the digest exists in the registry" rule.
//!
//! A registry that needs a login gets [`RegistryAuth`]: the engine receives it with the push
//! and pull (X-Registry-Auth), and rebake's own requests answer the registry's challenge —
//! `Basic`, or `Bearer` through the token service it names (the Docker token protocol).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use bollard::Docker;
use futures_util::StreamExt;

use crate::config::RegistryConfig;

/// Manifest media types `registry_has` accepts (single-platform and index, Docker and OCI).
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json";

/// Time for one request to the registry's HTTP API (and its token service), answer included.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(15);
/// Time to connect to the registry or its token service.
const REGISTRY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer of a token service accepted (a token is a few KB).
pub const TOKEN_ANSWER_LIMIT: u64 = crate::download::MIB;

fn registry_timeouts() -> crate::download::Timeouts {
    crate::download::Timeouts {
        connect: REGISTRY_CONNECT_TIMEOUT,
        read: REGISTRY_TIMEOUT,
        overall: REGISTRY_TIMEOUT,
        per_mib: Duration::ZERO,
    }
}

/// A registry login: user name from rebake.yaml, secret from the environment variable it names.
/// `Debug` never shows the secret.
#[derive(Clone)]
pub struct RegistryAuth {
    /// `host[:port]` of the registry.
    pub server: String,
    pub username: String,
    secret: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("secret", &"***")
            .finish()
    }
}

impl RegistryAuth {
    /// The login rebake.yaml configures for `registry`, if any; an error when the environment
    /// variable holding the secret is not set.
    pub fn from_config(registry: &RegistryConfig) -> Result<Option<RegistryAuth>> {
        let (Some(username), Some(var)) = (&registry.username, &registry.password_env) else {
            return Ok(None);
        };
        let secret = std::env::var(var).map_err(|_| {
            anyhow!(
                "registry {}: environment variable {var} (registry.password_env) is not set",
                registry.url
            )
        })?;
        Ok(Some(RegistryAuth {
            server: registry.host.clone(),
            username: username.clone(),
            secret,
        }))
    }

    /// The form the engine takes (sent as X-Registry-Auth).
    pub fn engine_credentials(&self) -> bollard::auth::DockerCredentials {
        bollard::auth::DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(self.secret.clone()),
            serveraddress: Some(self.server.clone()),
            ..Default::default()
        }
    }
}

/// Tags `image_id` as `<registry repository>/<image_name>:<tag>`, pushes it, and returns
/// `<registry repository>/<image_name>@sha256:<digest>`.
pub async fn push(
    docker: &Docker,
    image_id: &str,
    registry: &RegistryConfig,
    image_name: &str,
    tag: &str,
) -> Result<String> {
    let repo = registry.repository_for(image_name);
    let stage = || format!("image {image_name}: publish to registry {}", registry.url);
    let auth = RegistryAuth::from_config(registry).with_context(stage)?;

    // A registry that does not answer at all gets a clear error at once, rather than the
    // engine's retries.
    ping(registry).await.with_context(stage)?;

    docker
        .tag_image(
            image_id,
            Some(TagImageOptions {
                repo: Some(repo.clone()),
                tag: Some(tag.to_string()),
            }),
        )
        .await
        .with_context(|| format!("tagging {image_id} as {repo}:{tag}"))
        .with_context(stage)?;

    let options = PushImageOptions {
        tag: Some(tag.to_string()),
        platform: None,
    };
    let credentials = auth.as_ref().map(RegistryAuth::engine_credentials);
    let mut stream = docker.push_image(&repo, Some(options), credentials);
    let mut digest: Option<String> = None;
    while let Some(item) = stream.next().await {
        let info = item
            .map_err(|e| {
                let text = e.to_string();
                let refused = ["no basic auth credentials", "unauthorized", "denied"]
                    .iter()
                    .any(|m| text.contains(m));
                let hint = match (&auth, refused) {
                    (None, true) => "; the registry needs a login: set registry.username and \
                                     registry.password_env in rebake.yaml"
                        .to_string(),
                    (Some(a), true) => format!(
                        "; the registry refused the login {:?}: check it and the secret in \
                         registry.password_env (it needs push access)",
                        a.username
                    ),
                    _ => String::new(),
                };
                anyhow!("pushing {repo}:{tag} failed: {text}{hint}")
            })
            .with_context(stage)?;
        if let Some(status) = &info.status {
            tracing::debug!(%repo, %status, "push");
            if let Some(d) = digest_in_status(status) {
                digest = Some(d);
            }
        }
    }

    let digest = match digest {
        Some(d) => d,
        None => repo_digest(docker, image_id, &repo)
            .await?
            .ok_or_else(|| anyhow!("the push of {repo}:{tag} finished without reporting a digest"))
            .with_context(stage)?,
    };
    Ok(format!("{repo}@{digest}"))
}

/// Re-stores the manifest the engine pushed (`repo_at_digest`, tagged `tag`) as an OCI image
/// manifest carrying `annotations` (why it was built, what it builds on), and returns the new
/// `<repo>@sha256:…`. The engine's push writes Docker's manifest, which has no annotations; the
/// config and layers stay the same blobs, so the image id does not change, and the same image
/// with the same annotations always gets the same digest.
pub async fn annotate(
    registry: &RegistryConfig,
    repo_at_digest: &str,
    tag: &str,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<String> {
    let (repo, digest) = repo_at_digest
        .split_once('@')
        .ok_or_else(|| anyhow!("{repo_at_digest:?} is not <repository>@<digest>"))?;
    let api = RegistryApi::new(registry)?;
    let path = repository_path(registry, repo)?;
    let pushed = get_manifest(&api, path, digest)
        .await?
        .ok_or_else(|| anyhow!("registry {} has no {repo_at_digest}", registry.url))?;
    let manifest = oci_manifest_with(&pushed, annotations)
        .with_context(|| format!("the manifest of {repo_at_digest}"))?;
    let new = put_manifest(&api, path, tag, OCI_MANIFEST, &manifest).await?;
    Ok(format!("{repo}@{new}"))
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// `manifest` (Docker's schema 2 or OCI) as an OCI image manifest with `annotations`: Docker's
/// media types become their OCI equivalents (the blobs are the same bytes), keys in a fixed
/// order.
fn oci_manifest_with(
    manifest: &[u8],
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let m: serde_json::Value = serde_json::from_slice(manifest).context("not JSON")?;
    let oci_type = |t: &str| -> Result<&'static str> {
        Ok(match t {
            "application/vnd.docker.container.image.v1+json" | OCI_CONFIG => OCI_CONFIG,
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.oci.image.layer.v1.tar+gzip" => {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            }
            "application/vnd.oci.image.layer.v1.tar" => "application/vnd.oci.image.layer.v1.tar",
            other => bail!("a descriptor of media type {other:?}, which has no OCI equivalent"),
        })
    };
    let descriptor = |d: &serde_json::Value| -> Result<serde_json::Value> {
        let (Some(t), Some(digest), Some(size)) = (
            d["mediaType"].as_str(),
            d["digest"].as_str(),
            d["size"].as_u64(),
        ) else {
            bail!("a descriptor without mediaType, digest or size");
        };
        Ok(serde_json::json!({"mediaType": oci_type(t)?, "digest": digest, "size": size}))
    };
    let layers = m["layers"]
        .as_array()
        .ok_or_else(|| anyhow!("no layers"))?
        .iter()
        .map(descriptor)
        .collect::<Result<Vec<_>>>()?;
    let out = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(&m["config"])?,
        "layers": layers,
        "annotations": annotations,
    });
    Ok(serde_json::to_vec(&out)?)
}

/// Whether the registry holds the manifest `repo_at_digest`
/// (`<host>[/<namespace>]/<image>@sha256:…`, as [`push`] returns it): `HEAD
/// /v2/<repository>/manifests/<digest>`. 200 is yes, 404 is no, anything else is an error.
pub async fn registry_has(registry: &RegistryConfig, repo_at_digest: &str) -> Result<bool> {
    let (repo, digest) = repo_at_digest
        .split_once('@')
        .ok_or_else(|| anyhow!("{repo_at_digest:?} is not <repository>@sha256:<digest>"))?;
    if !is_sha256_digest(digest) {
        bail!("{repo_at_digest:?}: {digest:?} is not sha256:<64 hex digits>");
    }
    let path = repo
        .strip_prefix(&registry.host)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| {
            anyhow!(
                "{repo_at_digest:?} is not in registry {} (expected {}/…)",
                registry.url,
                registry.host
            )
        })?;
    let url = format!("{}/v2/{path}/manifests/{digest}", base_url(registry));
    let client = client()?;
    let auth = RegistryAuth::from_config(registry)?;
    let head = |authorization: Option<String>| {
        let mut request = client
            .head(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT);
        if let Some(authorization) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        request.send()
    };
    let unreachable = |e: reqwest::Error| {
        anyhow!(
            "registry {} is unreachable: {}",
            registry.url,
            crate::download::chain(&e)
        )
    };
    let mut response = head(None).await.map_err(unreachable)?;
    if let (401, Some(auth)) = (response.status().as_u16(), &auth) {
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let authorization = authorization(&client, registry, auth, &challenge, path).await?;
        response = head(Some(authorization)).await.map_err(unreachable)?;
    }
    match (response.status().as_u16(), &auth) {
        (200, _) => Ok(true),
        (404, _) => Ok(false),
        (401 | 403, Some(auth)) => bail!(
            "registry {} refused the login {:?} for HEAD {url} ({}): check registry.username and \
             the secret in registry.password_env; it needs pull access",
            registry.url,
            auth.username,
            response.status()
        ),
        (401 | 403, None) => bail!(
            "registry {} requires a login for HEAD {url} ({}): set registry.username and \
             registry.password_env in rebake.yaml",
            registry.url,
            response.status()
        ),
        _ => bail!(
            "registry {} answered HEAD {url} with {}",
            registry.url,
            response.status()
        ),
    }
}

/// The repository path of `repo` (`<host>[/<namespace>]/<image>`) inside `registry`.
pub fn repository_path<'a>(registry: &RegistryConfig, repo: &'a str) -> Result<&'a str> {
    repo.strip_prefix(&registry.host)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| {
            anyhow!(
                "{repo:?} is not in registry {} (expected {}/…)",
                registry.url,
                registry.host
            )
        })
}

/// rebake's own requests to one registry's HTTP API: one client (connection pool, TLS set-up)
/// for a run of requests, and the login rebake.yaml configures.
pub struct RegistryApi<'a> {
    pub registry: &'a RegistryConfig,
    client: reqwest::Client,
    auth: Option<RegistryAuth>,
}

impl<'a> RegistryApi<'a> {
    pub fn new(registry: &'a RegistryConfig) -> Result<RegistryApi<'a>> {
        Ok(RegistryApi {
            registry,
            client: client()?,
            auth: RegistryAuth::from_config(registry)?,
        })
    }
}

/// One request to the registry's HTTP API, made again with a login when the registry answers
/// 401 and rebake.yaml configures one. `make` builds the request (with the Authorization value).
async fn send(
    api: &RegistryApi<'_>,
    path: &str,
    what: &str,
    make: impl Fn(&reqwest::Client, Option<&str>) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response> {
    let registry = api.registry;
    let client = &api.client;
    let unreachable = |e: reqwest::Error| {
        anyhow!(
            "registry {} is unreachable ({what}): {}",
            registry.url,
            crate::download::chain(&e)
        )
    };
    let response = make(client, None).send().await.map_err(unreachable)?;
    let (401, Some(auth)) = (response.status().as_u16(), &api.auth) else {
        return Ok(response);
    };
    let challenge = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let authorization = authorization(client, registry, auth, &challenge, path).await?;
    make(client, Some(&authorization))
        .send()
        .await
        .map_err(unreachable)
}

/// A registry answer that is not what `what` expected, as an error.
async fn refused(
    registry: &RegistryConfig,
    what: &str,
    response: reqwest::Response,
) -> anyhow::Error {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    let hint = match status.as_u16() {
        401 | 403 => "; check registry.username and registry.password_env (it needs push access)",
        _ => "",
    };
    anyhow!(
        "registry {} answered {what} with {status}: {}{hint}",
        registry.url,
        body.trim()
    )
}

/// The largest manifest or attestation blob rebake reads back from a registry.
pub const ARTIFACT_LIMIT: usize = 64 * crate::download::MIB as usize;

async fn read_limited(mut response: reqwest::Response, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading {what}"))?
    {
        if out.len() + chunk.len() > ARTIFACT_LIMIT {
            bail!("{what} is larger than {ARTIFACT_LIMIT} bytes");
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Uploads `bytes` as a blob of `path` (monolithic upload) unless the registry has it;
/// returns its digest.
pub async fn put_blob(api: &RegistryApi<'_>, path: &str, bytes: &[u8]) -> Result<String> {
    let registry = api.registry;
    let digest = format!("sha256:{}", crate::state::sha256_hex(bytes));
    let base = base_url(registry);
    let blob_url = format!("{base}/v2/{path}/blobs/{digest}");
    let what = format!("HEAD {blob_url}");
    let head = send(api, path, &what, |c, a| with_auth(c.head(&blob_url), a)).await?;
    if head.status().is_success() {
        return Ok(digest);
    }
    let start_url = format!("{base}/v2/{path}/blobs/uploads/");
    let what = format!("POST {start_url}");
    let started = send(api, path, &what, |c, a| with_auth(c.post(&start_url), a)).await?;
    if started.status().as_u16() != 202 {
        return Err(refused(registry, &what, started).await);
    }
    let location = started
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            anyhow!(
                "registry {} answered {what} without a Location",
                registry.url
            )
        })?
        .to_string();
    let mut upload = reqwest::Url::parse(&start_url)?.join(&location)?;
    upload.query_pairs_mut().append_pair("digest", &digest);
    let what = format!("PUT of blob {digest} to {path}");
    let body = bytes::Bytes::copy_from_slice(bytes);
    let put = send(api, path, &what, |c, a| {
        with_auth(c.put(upload.clone()), a)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body.clone())
    })
    .await?;
    if put.status().as_u16() != 201 {
        return Err(refused(registry, &what, put).await);
    }
    Ok(digest)
}

/// Stores a manifest of `media_type` at `reference` (a tag) of `path`; returns its digest.
pub async fn put_manifest(
    api: &RegistryApi<'_>,
    path: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<String> {
    let registry = api.registry;
    let url = format!("{}/v2/{path}/manifests/{reference}", base_url(registry));
    let what = format!("PUT {url}");
    let body = bytes::Bytes::copy_from_slice(bytes);
    let put = send(api, path, &what, |c, a| {
        with_auth(c.put(&url), a)
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(body.clone())
    })
    .await?;
    if put.status().as_u16() != 201 {
        return Err(refused(registry, &what, put).await);
    }
    Ok(format!("sha256:{}", crate::state::sha256_hex(bytes)))
}

/// The manifest at `reference` of `path`, or None when the registry has none there.
pub async fn get_manifest(
    api: &RegistryApi<'_>,
    path: &str,
    reference: &str,
) -> Result<Option<Vec<u8>>> {
    let registry = api.registry;
    let url = format!("{}/v2/{path}/manifests/{reference}", base_url(registry));
    let what = format!("GET {url}");
    let got = send(api, path, &what, |c, a| {
        with_auth(c.get(&url), a).header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
    })
    .await?;
    match got.status().as_u16() {
        200 => Ok(Some(read_limited(got, &what).await?)),
        404 => Ok(None),
        _ => Err(refused(registry, &what, got).await),
    }
}

/// The blob `digest` of `path`, checked against its digest.
pub async fn get_blob(api: &RegistryApi<'_>, path: &str, digest: &str) -> Result<Vec<u8>> {
    let registry = api.registry;
    if !is_sha256_digest(digest) {
        bail!("{digest:?} is not sha256:<64 hex digits>");
    }
    let url = format!("{}/v2/{path}/blobs/{digest}", base_url(registry));
    let what = format!("GET {url}");
    let got = send(api, path, &what, |c, a| with_auth(c.get(&url), a)).await?;
    if got.status().as_u16() != 200 {
        return Err(refused(registry, &what, got).await);
    }
    let bytes = read_limited(got, &what).await?;
    if format!("sha256:{}", crate::state::sha256_hex(&bytes)) != digest {
        bail!(
            "registry {}: the blob {digest} of {path} does not have that digest",
            registry.url
        );
    }
    Ok(bytes)
}

fn with_auth(
    request: reqwest::RequestBuilder,
    authorization: Option<&str>,
) -> reqwest::RequestBuilder {
    match authorization {
        Some(a) => request.header(reqwest::header::AUTHORIZATION, a),
        None => request,
    }
}

/// The `Authorization` value answering the registry's `WWW-Authenticate` challenge: Basic
/// directly, or a Bearer token from the token service the challenge names (asked with the
/// login, for pull access to `repository`).
async fn authorization(
    client: &reqwest::Client,
    registry: &RegistryConfig,
    auth: &RegistryAuth,
    challenge: &str,
    repository: &str,
) -> Result<String> {
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", auth.username, auth.secret))
    );
    let (scheme, params) = challenge
        .trim()
        .split_once(' ')
        .unwrap_or((challenge.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        bail!(
            "registry {} asks for {:?} authentication; rebake answers Basic and Bearer",
            registry.url,
            scheme
        );
    }
    let params = challenge_params(params);
    let realm = params.get("realm").ok_or_else(|| {
        anyhow!(
            "registry {} asks for a Bearer token but names no token service (realm)",
            registry.url
        )
    })?;
    let scope = params
        .get("scope")
        .cloned()
        .unwrap_or_else(|| format!("repository:{repository}:pull"));
    let mut query = vec![("scope", scope)];
    if let Some(service) = params.get("service") {
        query.push(("service", service.clone()));
    }
    let timeouts = registry_timeouts();
    let deadline = tokio::time::Instant::now() + timeouts.overall;
    let response = client
        .get(realm)
        .header(reqwest::header::AUTHORIZATION, basic)
        .query(&query)
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "the token service {realm} is unreachable: {}",
                crate::download::chain(&e)
            )
        })?;
    if !response.status().is_success() {
        bail!(
            "the token service {realm} of registry {} refused the login {:?} ({})",
            registry.url,
            auth.username,
            response.status()
        );
    }
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
    }
    let bytes = crate::download::read_body(
        response,
        realm,
        TOKEN_ANSWER_LIMIT,
        "the limit for a token service's answer",
        &timeouts,
        deadline,
        timeouts.overall,
    )
    .await
    .with_context(|| format!("reading the answer of the token service {realm}"))?;
    let body: TokenResponse = serde_json::from_slice(&bytes)
        .with_context(|| format!("the token service {realm} answered no token"))?;
    let token = body
        .token
        .or(body.access_token)
        .ok_or_else(|| anyhow!("the token service {realm} answered no token"))?;
    Ok(format!("Bearer {token}"))
}

/// `realm="https://auth.example/token",service="registry",scope="repository:a/b:pull,push"` →
/// its key/value pairs (values quoted or not; commas inside quotes kept).
fn challenge_params(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.trim().to_string());
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// `http://` for an insecure registry, else `https://`, and the host.
fn base_url(registry: &RegistryConfig) -> String {
    let scheme = if registry.insecure { "http" } else { "https" };
    format!("{scheme}://{}", registry.host)
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(REGISTRY_CONNECT_TIMEOUT)
        .read_timeout(REGISTRY_TIMEOUT)
        .timeout(REGISTRY_TIMEOUT)
        .build()
        .context("cannot make an HTTP client")
}

/// `GET /v2/`: any HTTP answer (401 included) means the registry is there.
async fn ping(registry: &RegistryConfig) -> Result<()> {
    let url = format!("{}/v2/", base_url(registry));
    client()?.get(&url).send().await.map(|_| ()).map_err(|e| {
        anyhow!(
            "the registry is unreachable at {url}: {}",
            crate::download::chain(&e)
        )
    })
}

/// The digest in a push status line like `v1: digest: sha256:… size: 528`.
fn digest_in_status(status: &str) -> Option<String> {
    let (_, rest) = status.split_once("digest: ")?;
    let digest = rest.split_whitespace().next()?;
    is_sha256_digest(digest).then(|| digest.to_string())
}

fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The image's digest in `repo`, from the engine's `RepoDigests`.
async fn repo_digest(docker: &Docker, image_id: &str, repo: &str) -> Result<Option<String>> {
    let inspect = docker
        .inspect_image(image_id)
        .await
        .with_context(|| format!("inspecting {image_id} after the push"))?;
    Ok(inspect
        .repo_digests
        .unwrap_or_default()
        .into_iter()
        .find_map(|d| {
            let (r, digest) = d.split_once('@')?;
            (r == repo && is_sha256_digest(digest)).then(|| digest.to_string())
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as Docker 20.10's push writes it becomes an OCI manifest over the same blobs,
    /// with the annotations; a media type OCI has no name for is refused, not passed on.
    #[test]
    fn dockers_manifest_becomes_an_annotated_oci_manifest_over_the_same_blobs() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1469,"digest":"sha256:aa"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":29,"digest":"sha256:bb"}]}"#;
        let annotations: std::collections::BTreeMap<String, String> =
            [("dev.rebake.reason".to_string(), "first build".to_string())].into();
        let oci: serde_json::Value =
            serde_json::from_slice(&oci_manifest_with(docker, &annotations).unwrap()).unwrap();
        assert_eq!(
            oci,
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": "sha256:aa", "size": 1469},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": "sha256:bb", "size": 29}],
                "annotations": {"dev.rebake.reason": "first build"},
            })
        );
        let foreign = String::from_utf8_lossy(docker)
            .replace("rootfs.diff.tar.gzip", "rootfs.foreign.diff.tar.gzip");
        let err = oci_manifest_with(foreign.as_bytes(), &annotations).unwrap_err();
        assert!(format!("{err:#}").contains("foreign"), "{err:#}");
    }

    #[test]
    fn digest_from_push_status() {
        let d = "sha256:".to_string() + &"ab".repeat(32);
        assert_eq!(
            digest_in_status(&format!("v1: digest: {d} size: 528")),
            Some(d.clone())
        );
        assert_eq!(digest_in_status("Pushed"), None);
        assert_eq!(digest_in_status("x: digest: sha256:short size: 1"), None);
    }

    #[test]
    fn bearer_challenge_parameters() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:team/web:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:team/web:pull,push");
        let p = challenge_params("realm=https://a/t, service=reg");
        assert_eq!(p["realm"], "https://a/t");
        assert_eq!(p["service"], "reg");
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let auth = RegistryAuth {
            server: "r.example:5000".into(),
            username: "bot".into(),
            secret: "s3cr3t-value".into(),
        };
        let text = format!("{auth:?}");
        assert!(
            text.contains("bot") && !text.contains("s3cr3t-value"),
            "{text}"
        );
    }
}
