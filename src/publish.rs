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

/// Time for one request to the registry's HTTP API.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(15);

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
    let mut stream = docker.push_image(&repo, Some(options), None);
    let mut digest: Option<String> = None;
    while let Some(item) = stream.next().await {
        let info = item
            .map_err(|e| anyhow!("pushing {repo}:{tag} failed: {e}"))
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
    let response = client()?
        .head(&url)
        .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "registry {} is unreachable: {}",
                registry.url,
                error_chain(&e)
            )
        })?;
    match response.status().as_u16() {
        200 => Ok(true),
        404 => Ok(false),
        401 | 403 => bail!(
            "registry {} refused HEAD {url} ({}): rebake reads registries without credentials",
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

/// `http://` for an insecure registry, else `https://`, and the host.
fn base_url(registry: &RegistryConfig) -> String {
    let scheme = if registry.insecure { "http" } else { "https" };
    format!("{scheme}://{}", registry.host)
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(REGISTRY_TIMEOUT)
        .build()
        .context("cannot make an HTTP client")
}

/// `GET /v2/`: any HTTP answer (401 included) means the registry is there.
async fn ping(registry: &RegistryConfig) -> Result<()> {
    let url = format!("{}/v2/", base_url(registry));
    client()?
        .get(&url)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| anyhow!("the registry is unreachable at {url}: {}", error_chain(&e)))
}

/// An error and its causes, `: `-separated (reqwest's own message leaves out the cause, like
/// "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
}
