//! Attestations of a pushed image, and its signature, stored as cosign stores them.
//!
//! Each attestation is an in-toto Statement v1 about the image (`subject`: its repository and
//! manifest SHA256) with one predicate: SLSA provenance v1 (how it was built, from what
//! verified inputs), SPDX 2.3 and CycloneDX 1.6 SBOMs (from the lock), the test results (the
//! in-toto test-result predicate: a separate attestation, since SLSA provenance has no field for
//! tests) and, when the change fixes CVEs, an OpenVEX v0.2.0 document of `fixed` statements.
//! Signed in DSSE envelopes, they are one OCI manifest at tag `sha256-<hex>.att` of the image's
//! repository; the image signature (cosign's simple-signing payload) one at `sha256-<hex>.sig`.
//! Registries without the OCI referrers API (Debian's `docker-registry`) hold both.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::config::RegistryConfig;
use crate::lock::Lock;
use crate::publish::{OCI_CONFIG, OCI_MANIFEST};
use crate::signing::{Signer, Verifier};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
pub const SPDX: &str = "https://spdx.dev/Document";
pub const CYCLONEDX: &str = "https://cyclonedx.org/bom";
pub const OPENVEX: &str = "https://openvex.dev/ns/v0.2.0";
pub const TEST_RESULT: &str = "https://in-toto.io/attestation/test-result/v0.1";
/// The SLSA buildType of rebake's builds: what `externalParameters` and
/// `internalParameters` mean is rebake's build, described in its README.
pub const BUILD_TYPE: &str = "urn:rebake:build-type:debian-image:v1";

pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// What the build knew besides the lock: the inputs in the GitOps repository and the times.
#[derive(Debug, Clone)]
pub struct BuildFacts {
    /// The GitOps commit the build was made from (None: not a git checkout).
    pub commit: Option<String>,
    /// `org.opencontainers.image.source`, when the forge is known.
    pub source: Option<String>,
    /// (path in the repository, SHA256) of the policy and of the template.
    pub policy: (String, String),
    pub template: (String, String),
    pub dockerfile_sha256: String,
    pub source_date_epoch: i64,
    pub no_cache: bool,
    pub started: chrono::DateTime<chrono::Utc>,
    pub finished: chrono::DateTime<chrono::Utc>,
}

/// `<repo>` and the hex of `<repo>@sha256:<hex>`.
pub fn split_digest(repo_at_digest: &str) -> Result<(&str, &str)> {
    repo_at_digest
        .split_once("@sha256:")
        .filter(|(_, hex)| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| anyhow!("{repo_at_digest:?} is not <repository>@sha256:<64 hex digits>"))
}

/// An in-toto Statement v1 about the image `repo@sha256:hex`.
pub fn statement(repo: &str, hex: &str, predicate_type: &str, predicate: Value) -> Value {
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": repo, "digest": {"sha256": hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The verified InRelease files, the base rootfs and every package of the lock, as SLSA
/// resource descriptors.
fn resolved_dependencies(lock: &Lock) -> Vec<Value> {
    let mut out = Vec::new();
    for a in &lock.archive {
        out.push(json!({
            "uri": format!("{}/dists/{}/InRelease", a.uri.trim_end_matches('/'), a.suite),
            "digest": {"sha256": a.inrelease_sha256},
            "annotations": {"date": a.date, "suite": a.suite},
        }));
    }
    if let Some(base) = &lock.base {
        out.push(json!({
            "name": format!("base rootfs {}/{} (mmdebstrap --variant=minbase)", lock.suite, lock.architecture),
            "digest": {"sha256": base.rootfs_sha256},
            "annotations": {"imageId": base.id},
        }));
    }
    // A `from:` image: the parent image it was built on, and the parent lock it was tested with.
    if let Some(parent) = &lock.parent {
        let digest = parent.image.trim_start_matches("sha256:");
        out.push(json!({
            "name": format!("parent image {}", parent.name),
            "uri": parent.digest.clone().unwrap_or_else(|| parent.image.clone()),
            "digest": {"sha256": digest},
            "annotations": {"lockSha256": parent.lock_sha256},
        }));
    }
    for p in &lock.packages {
        out.push(json!({
            "uri": crate::sbom::purl(lock, &p.name, &p.version, &p.arch),
            "annotations": {"source": p.source, "sourceVersion": p.source_version},
        }));
    }
    out
}

/// The SLSA v1 provenance predicate of the image `lock` records.
pub fn provenance(lock: &Lock, facts: &BuildFacts) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    let image_id = lock
        .image
        .as_ref()
        .map(|i| i.id.clone())
        .unwrap_or_default();
    let invocation = crate::state::sha256_hex(
        format!(
            "{image_id} {}",
            facts.started.timestamp_nanos_opt().unwrap_or(0)
        )
        .as_bytes(),
    );
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "source": {"uri": facts.source, "commit": facts.commit},
                "image": lock.name,
                "policy": {"path": facts.policy.0, "sha256": facts.policy.1},
                "template": {"path": facts.template.0, "sha256": facts.template.1},
            },
            "internalParameters": {
                "suite": lock.suite,
                "architecture": lock.architecture,
                "sourceDateEpoch": facts.source_date_epoch,
                "dockerfileSha256": facts.dockerfile_sha256,
                "noCache": facts.no_cache,
                "imageId": image_id,
            },
            "resolvedDependencies": resolved_dependencies(lock),
        },
        "runDetails": {
            "builder": {
                "id": format!("urn:rebake:builder:v{version}"),
                "version": {"rebake": version},
            },
            "metadata": {
                "invocationId": invocation,
                "startedOn": time(&facts.started),
                "finishedOn": time(&facts.finished),
            },
        },
    })
}

/// The in-toto test-result predicate of the lock's tests (a skipped check is a warning).
pub fn test_result(lock: &Lock, facts: &BuildFacts) -> Value {
    let results = lock
        .tests
        .as_ref()
        .map(|t| t.results.as_slice())
        .unwrap_or_default();
    let named = |r: &str| -> Vec<String> {
        results
            .iter()
            .filter(|t| t.result == r)
            .map(|t| t.name.clone())
            .collect()
    };
    let passed = lock.tests.as_ref().is_some_and(|t| t.passed);
    json!({
        "result": if passed { "PASSED" } else { "FAILED" },
        "configuration": [{
            "name": facts.policy.0,
            "digest": {"sha256": facts.policy.1},
        }],
        "passedTests": named("pass"),
        "warnedTests": named("skip"),
        "failedTests": named("fail"),
    })
}

/// The image's package URL: `pkg:oci/<name>@sha256%3A<hex>?repository_url=<repo>`.
pub fn image_purl(lock: &Lock, repo: &str, hex: &str) -> String {
    format!(
        "pkg:oci/{}@sha256%3A{hex}?repository_url={}&arch={}",
        lock.name, repo, lock.architecture
    )
}

/// OpenVEX v0.2.0: one `fixed` statement per CVE the change from the replaced lock fixes, for
/// the image with the new binary packages of the sources that fix it as subcomponents. None
/// when it fixes none (a VEX document needs a statement).
pub fn vex(lock: &Lock, repo: &str, hex: &str, changes: &[crate::plan::Change]) -> Option<Value> {
    let mut by_cve: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for c in changes {
        let (Some(old), Some(new)) = (&c.old, &c.new) else {
            continue;
        };
        for cve in &c.cves {
            let (parts, notes) = by_cve.entry(cve.id.clone()).or_default();
            for b in &c.binaries {
                if let Some(v) = &b.new {
                    let purl = crate::sbom::purl(lock, &b.name, v, &b.arch);
                    if !parts.contains(&purl) {
                        parts.push(purl);
                    }
                }
            }
            let mut note = format!("fixed by Debian source package {} {old} → {new}", c.source);
            if !c.advisories.is_empty() {
                note.push_str(&format!(" ({})", c.advisories.join(", ")));
            }
            notes.push(note);
        }
    }
    if by_cve.is_empty() {
        return None;
    }
    let image = image_purl(lock, repo, hex);
    let timestamp = crate::sbom::timestamp(lock);
    let statements: Vec<Value> = by_cve
        .into_iter()
        .map(|(cve, (parts, notes))| {
            json!({
                "vulnerability": {"name": cve},
                "products": [{
                    "@id": image,
                    "identifiers": {"purl": image},
                    "hashes": {"sha-256": hex},
                    "subcomponents": parts.iter().map(|p| json!({"@id": p, "identifiers": {"purl": p}})).collect::<Vec<_>>(),
                }],
                "status": "fixed",
                "status_notes": notes.join("; "),
            })
        })
        .collect();
    let body = json!({"image": image, "statements": statements});
    let id = crate::state::sha256_hex(body.to_string().as_bytes());
    Some(json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": format!("urn:rebake:vex:{id}"),
        "author": "rebake",
        "role": "image builder",
        "timestamp": timestamp,
        "version": 1,
        "tooling": format!("rebake {}", env!("CARGO_PKG_VERSION")),
        "statements": statements,
    }))
}

/// Every attestation rebake makes for the image `repo@sha256:hex` of `lock`, as
/// (predicate type, statement).
pub fn statements(
    lock: &Lock,
    repo: &str,
    hex: &str,
    facts: &BuildFacts,
    changes: &[crate::plan::Change],
) -> Vec<(String, Value)> {
    let mut out = vec![
        (PROVENANCE, provenance(lock, facts)),
        (SPDX, crate::sbom::spdx(lock)),
        (CYCLONEDX, crate::sbom::cyclonedx(lock)),
        (TEST_RESULT, test_result(lock, facts)),
    ];
    if let Some(v) = vex(lock, repo, hex, changes) {
        out.push((OPENVEX, v));
    }
    out.into_iter()
        .map(|(t, p)| (t.to_string(), statement(repo, hex, t, p)))
        .collect()
}

/// What was attached to an image: each attestation's predicate type and the SHA256 digest of
/// its signed envelope, and the signature manifest's digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attached {
    pub signature: String,
    pub attestations: Vec<(String, String)>,
}

/// An OCI manifest of `layers` (media type, bytes, annotations) with the empty config cosign
/// writes, uploaded to `tag`.
async fn put_artifact(
    api: &crate::publish::RegistryApi<'_>,
    path: &str,
    tag: &str,
    layers: &[(&str, Vec<u8>, Value)],
) -> Result<(String, Vec<String>)> {
    let mut descriptors = Vec::new();
    let mut digests = Vec::new();
    for (media_type, bytes, annotations) in layers {
        let digest = crate::publish::put_blob(api, path, bytes).await?;
        descriptors.push(json!({
            "mediaType": media_type,
            "size": bytes.len(),
            "digest": digest,
            "annotations": annotations,
        }));
        digests.push(digest);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": digests.iter().map(|_| json!({"created": "0001-01-01T00:00:00Z"})).collect::<Vec<_>>(),
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": digests},
    }))?;
    let config_digest = crate::publish::put_blob(api, path, &config).await?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": config.len(), "digest": config_digest},
        "layers": descriptors,
    }))?;
    let digest = crate::publish::put_manifest(api, path, tag, OCI_MANIFEST, &manifest).await?;
    Ok((digest, digests))
}

/// Signs the pushed image `repo_at_digest` and attaches `statements` (signed) to it, in
/// cosign's tag scheme.
pub async fn attach(
    registry: &RegistryConfig,
    signer: &Signer,
    repo_at_digest: &str,
    statements: &[(String, Value)],
) -> Result<Attached> {
    let (repo, hex) = split_digest(repo_at_digest)?;
    let path = crate::publish::repository_path(registry, repo)?;
    let api = crate::publish::RegistryApi::new(registry)?;
    let api = &api;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = crate::signing::simple_signing_payload(repo, &format!("sha256:{hex}"));
    let signature = b64.encode(signer.sign(&payload));
    let (signature, _) = put_artifact(
        api,
        path,
        &format!("sha256-{hex}.sig"),
        &[(
            SIMPLE_SIGNING_MEDIA_TYPE,
            payload,
            json!({SIGNATURE_ANNOTATION: signature}),
        )],
    )
    .await?;
    let layers: Vec<(&str, Vec<u8>, Value)> = statements
        .iter()
        .map(|(t, s)| {
            (
                DSSE_MEDIA_TYPE,
                crate::signing::dsse_envelope(signer, s),
                json!({SIGNATURE_ANNOTATION: "", "predicateType": t}),
            )
        })
        .collect();
    let (_, digests) = put_artifact(api, path, &format!("sha256-{hex}.att"), &layers).await?;
    Ok(Attached {
        signature,
        attestations: statements
            .iter()
            .map(|(t, _)| t.clone())
            .zip(digests)
            .collect(),
    })
}

/// The layers of the manifest at `tag`, as (media type, digest, annotations); None: no manifest.
async fn layers_at(
    api: &crate::publish::RegistryApi<'_>,
    path: &str,
    tag: &str,
) -> Result<Option<Vec<(String, String, Value)>>> {
    let Some(bytes) = crate::publish::get_manifest(api, path, tag).await? else {
        return Ok(None);
    };
    manifest_layers(&bytes)
        .map(Some)
        .map_err(|e| anyhow!("the manifest at {path}:{tag}: {e}"))
}

/// The layers of an OCI manifest (as a registry serves it), as (media type, digest,
/// annotations).
pub fn manifest_layers(bytes: &[u8]) -> Result<Vec<(String, String, Value)>> {
    let manifest: Value = serde_json::from_slice(bytes).map_err(|e| anyhow!("not JSON: {e}"))?;
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| anyhow!("no layers"))?;
    Ok(layers
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap_or_default().to_string(),
                l["digest"].as_str().unwrap_or_default().to_string(),
                l["annotations"].clone(),
            )
        })
        .collect())
}

/// What is attached to `repo_at_digest` and verifies with `verifier` (a proposal whose image
/// was signed by an earlier run lists it again); None when it has no valid signature.
pub async fn attached(
    registry: &RegistryConfig,
    verifier: &Verifier,
    repo_at_digest: &str,
) -> Result<Option<Attached>> {
    if check_signature(registry, verifier, repo_at_digest)
        .await?
        .is_err()
    {
        return Ok(None);
    }
    let (repo, hex) = split_digest(repo_at_digest)?;
    let path = crate::publish::repository_path(registry, repo)?;
    let api = crate::publish::RegistryApi::new(registry)?;
    let Some(sig) = crate::publish::get_manifest(&api, path, &format!("sha256-{hex}.sig")).await?
    else {
        return Ok(None);
    };
    let found = fetch_attestations(registry, verifier, repo_at_digest).await?;
    let mut attestations: Vec<(String, String)> = found
        .verified
        .into_iter()
        .map(|(kind, (_, digest))| (kind, digest))
        .collect();
    // The order rebake attaches them in.
    let rank = |k: &str| {
        [PROVENANCE, SPDX, CYCLONEDX, TEST_RESULT, OPENVEX]
            .iter()
            .position(|t| *t == k)
            .unwrap_or(usize::MAX)
    };
    attestations.sort_by_key(|(k, _)| rank(k));
    Ok(Some(Attached {
        signature: format!("sha256:{}", crate::state::sha256_hex(&sig)),
        attestations,
    }))
}

/// Whether a signature at `sha256-<hex>.sig` verifies with `verifier` and names this
/// repository and digest: Ok(Err(why)) when not; Err when the registry could not be asked.
pub async fn check_signature(
    registry: &RegistryConfig,
    verifier: &Verifier,
    repo_at_digest: &str,
) -> Result<std::result::Result<(), String>> {
    let (repo, hex) = split_digest(repo_at_digest)?;
    let path = crate::publish::repository_path(registry, repo)?;
    let tag = format!("sha256-{hex}.sig");
    let api = &crate::publish::RegistryApi::new(registry)?;
    let Some(layers) = layers_at(api, path, &tag).await? else {
        return Ok(Err(format!(
            "no signature (the registry has no {repo}:{tag})"
        )));
    };
    let mut why = format!("{repo}:{tag} holds no simple-signing layer");
    for (media_type, digest, annotations) in layers {
        if media_type != SIMPLE_SIGNING_MEDIA_TYPE {
            continue;
        }
        let payload = crate::publish::get_blob(api, path, &digest).await?;
        let sig = annotations[SIGNATURE_ANNOTATION].as_str().unwrap_or("");
        match crate::signing::check_simple_signing(
            verifier,
            &payload,
            sig,
            repo,
            &format!("sha256:{hex}"),
        ) {
            Ok(()) => return Ok(Ok(())),
            Err(e) => why = format!("{e:#}"),
        }
    }
    Ok(Err(why))
}

/// The attestations at `sha256-<hex>.att`: the verified statements about this digest by
/// predicate type, and what failed (a tampered envelope, another subject).
#[derive(Debug, Default)]
pub struct Attestations {
    pub verified: BTreeMap<String, (Value, String)>,
    pub failed: Vec<String>,
}

pub async fn fetch_attestations(
    registry: &RegistryConfig,
    verifier: &Verifier,
    repo_at_digest: &str,
) -> Result<Attestations> {
    let (repo, hex) = split_digest(repo_at_digest)?;
    let path = crate::publish::repository_path(registry, repo)?;
    let tag = format!("sha256-{hex}.att");
    let mut out = Attestations::default();
    let api = &crate::publish::RegistryApi::new(registry)?;
    let Some(layers) = layers_at(api, path, &tag).await? else {
        return Ok(out);
    };
    for (media_type, digest, annotations) in layers {
        if media_type != DSSE_MEDIA_TYPE {
            continue;
        }
        let kind = annotations["predicateType"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        let envelope = crate::publish::get_blob(api, path, &digest).await?;
        let statement = match crate::signing::dsse_open(verifier, &envelope) {
            Ok(s) => s,
            Err(e) => {
                out.failed
                    .push(format!("attestation {kind} ({digest}): {e:#}"));
                continue;
            }
        };
        let subject_ok = statement["_type"] == STATEMENT_TYPE
            && statement["subject"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["digest"]["sha256"] == hex));
        if !subject_ok || statement["predicateType"] != kind.as_str() {
            out.failed.push(format!(
                "attestation {kind} ({digest}): its statement is not about {repo_at_digest} \
                 with that predicate type"
            ));
            continue;
        }
        out.verified.insert(kind, (statement, digest));
    }
    Ok(out)
}

/// Whether a verified provenance statement describes the image `lock` records: its subject is
/// the lock's digest, and its resolved dependencies are the lock's InRelease files, base rootfs
/// and packages. The error names the first difference.
pub fn provenance_matches(statement: &Value, lock: &Lock) -> std::result::Result<(), String> {
    let digest = lock
        .image
        .as_ref()
        .and_then(|i| i.digest.clone())
        .ok_or("the lock records no digest")?;
    let (_, hex) = split_digest(&digest).map_err(|e| e.to_string())?;
    let subject_ok = statement["subject"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s["digest"]["sha256"] == hex));
    if !subject_ok {
        return Err(format!("its subject is not the lock's digest {digest}"));
    }
    let deps = &statement["predicate"]["buildDefinition"]["resolvedDependencies"];
    let expected = resolved_dependencies(lock);
    if deps.as_array() != Some(&expected) {
        let got: Vec<&Value> = deps
            .as_array()
            .map(|d| d.iter().collect())
            .unwrap_or_default();
        let missing = expected.iter().find(|e| !got.contains(e)).map(|e| {
            e["uri"]
                .as_str()
                .or(e["name"].as_str())
                .unwrap_or("?")
                .to_string()
        });
        return Err(match missing {
            Some(m) => format!("its resolved dependencies lack the lock's {m}"),
            None => "its resolved dependencies are not the lock's InRelease files, base and \
                     packages"
                .to_string(),
        });
    }
    Ok(())
}

/// Whether the verified SBOM attestations are exactly the SBOMs of `lock` (`rebake sbom`
/// output is deterministic, so the attached documents can be compared byte for byte in JSON).
/// Err names the first that is missing or differs.
pub fn sboms_match(found: &Attestations, lock: &Lock) -> std::result::Result<(), String> {
    for (kind, expected) in [
        (SPDX, crate::sbom::spdx(lock)),
        (CYCLONEDX, crate::sbom::cyclonedx(lock)),
    ] {
        match found.verified.get(kind) {
            None => return Err(format!("no signed {kind} SBOM is attached")),
            Some((statement, _)) if statement["predicate"] != expected => {
                return Err(format!("the {kind} SBOM is not the lock's (rebake sbom)"))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The GitOps commit a provenance statement names.
pub fn provenance_commit(statement: &Value) -> Option<String> {
    statement["predicate"]["buildDefinition"]["externalParameters"]["source"]["commit"]
        .as_str()
        .map(str::to_string)
}
