//! The base image: mmdebstrap from the verified archive (keys inline, sources as deb822), the
//! rootfs re-written reproducibly (see `rootfs`), loaded as a `docker save` archive whose image
//! config rebake writes itself, and remembered in `bases.json` by everything that decides it.

use super::rootfs::{normalize_rootfs, REWRITE_VERSION};
use super::{last_lines, sha256_hex};
use crate::debian::sources::{SignedBy, SuiteSource};
use crate::debian::verify::{armor, dearmor, deb822_inline_key};
use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::{ImportImageOptions, TagImageOptions};
use bollard::Docker;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Repository the bases are tagged in: `rebake-base:<release>-<arch>` and
/// `rebake-base:<release>-<arch>-<first 12 of the rootfs SHA256>`.
pub const BASE_REPO: &str = "rebake-base";
/// `PATH` of the base image (Debian's default for root).
pub const BASE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A base image in the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImage {
    pub suite: String,
    pub arch: String,
    /// SHA256 of the reproducible rootfs tarball (the image's only layer, its diff id).
    pub rootfs_sha256: String,
    /// The engine's image id, `sha256:…`; the same for the same rootfs.
    pub id: String,
}

impl BaseImage {
    /// `rebake-base:<release>-<arch>`.
    pub fn tag(&self) -> String {
        format!("{BASE_REPO}:{}-{}", self.suite, self.arch)
    }
    /// `rebake-base:<release>-<arch>-<first 12 of rootfs sha256>`: names exactly this rootfs.
    pub fn rootfs_tag(&self) -> String {
        format!(
            "{BASE_REPO}:{}-{}-{}",
            self.suite,
            self.arch,
            &self.rootfs_sha256[..12]
        )
    }
    /// What a Dockerfile's `FROM` should say: the image id itself (the classic builder
    /// resolves `FROM sha256:<id>` to the local image; a test proves it).
    pub fn from_ref(&self) -> String {
        self.id.clone()
    }
}

fn is_simple_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// One keyring a source is signed by, and its bytes.
struct Keyring {
    /// The path the source named, when it named a file (kept in the image if the image has it).
    original: Option<PathBuf>,
    bytes: Vec<u8>,
    sha256: String,
}

impl Keyring {
    fn ext(&self) -> &'static str {
        if self.bytes.starts_with(b"-----BEGIN") {
            "asc"
        } else {
            "gpg"
        }
    }
    /// The key packets, dearmored when the file is armored.
    fn packets(&self) -> Result<Vec<u8>> {
        if self.ext() == "asc" {
            crate::debian::verify::dearmor(&String::from_utf8_lossy(&self.bytes))
        } else {
            Ok(self.bytes.clone())
        }
    }
    fn image_copy(&self) -> String {
        format!(
            "etc/apt/keyrings/rebake-{}.{}",
            &self.sha256[..16],
            self.ext()
        )
    }
}

/// Reads (or dearmors) every keyring the sources name; per source, the indices into the list.
fn collect_keyrings(suites: &[SuiteSource]) -> Result<(Vec<Keyring>, Vec<Vec<usize>>)> {
    let mut rings: Vec<Keyring> = Vec::new();
    let mut per_source = Vec::new();
    for s in suites {
        let found: Vec<(Option<PathBuf>, Vec<u8>)> = match &s.signed_by {
            SignedBy::Files(paths) => paths
                .iter()
                .map(|p| {
                    std::fs::read(p)
                        .map(|b| (Some(p.clone()), b))
                        .with_context(|| {
                            format!(
                            "{}: cannot read keyring {} (Signed-By); install it or fix the source",
                            s.origin,
                            p.display()
                        )
                        })
                })
                .collect::<Result<_>>()?,
            SignedBy::Inline(armored) => vec![(
                None,
                dearmor(armored).with_context(|| format!("{}: inline Signed-By key", s.origin))?,
            )],
        };
        if found.is_empty() {
            bail!("{}: Signed-By names no keyring", s.origin);
        }
        let mut idx = Vec::new();
        for (original, bytes) in found {
            let sha256 = sha256_hex(&bytes);
            let n = match rings
                .iter()
                .position(|r| r.sha256 == sha256 && r.original == original)
            {
                Some(n) => n,
                None => {
                    rings.push(Keyring {
                        original,
                        bytes,
                        sha256,
                    });
                    rings.len() - 1
                }
            };
            idx.push(n);
        }
        per_source.push(idx);
    }
    Ok((rings, per_source))
}

/// deb822 sources text: one paragraph per suite, `Signed-By: <signed_by(the suite's index)>`.
pub(super) fn sources_text(suites: &[SuiteSource], signed_by: impl Fn(usize) -> String) -> String {
    let mut out = String::new();
    for (n, s) in suites.iter().enumerate() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "Types: deb\nURIs: {}\nSuites: {}\nComponents: {}\nSigned-By: {}\n",
            s.uri,
            s.suite,
            s.components.join(" "),
            signed_by(n)
        ));
    }
    out
}

/// The user part of a URL holding `c` as apt sees it (percent-encoded), to scrub from apt's
/// messages beside the plain password.
fn with_credentials_userinfo(c: &crate::redact::UrlCredentials) -> String {
    let url = crate::redact::with_credentials("http://h", c);
    url.trim_start_matches("http://")
        .trim_end_matches("@h")
        .to_string()
}

fn check_sources(suites: &[SuiteSource]) -> Result<()> {
    if suites.is_empty() {
        bail!("no archive suites to build the base from");
    }
    for s in suites {
        let bad = |v: &str| v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control());
        if bad(&s.uri) || bad(&s.suite) || s.components.iter().any(|c| bad(c)) {
            bail!(
                "{}: source {} {} has an empty field or whitespace in a URI, suite or component",
                s.origin,
                s.uri,
                s.suite
            );
        }
    }
    Ok(())
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct BaseIndex {
    /// Cache key → the base built for it.
    bases: BTreeMap<String, BaseImage>,
}

const INDEX_FILE: &str = "bases.json";

/// Builds (or finds, when `work_dir` remembers a base for the same release, architecture, epoch
/// and sources that the engine still has) the base image for `release`/`arch` from `suites`,
/// reproducibly for `epoch` (the main suite's InRelease `Date` as a unix timestamp).
pub async fn build_base(
    docker: &Docker,
    suites: &[SuiteSource],
    release: &str,
    arch: &str,
    epoch: i64,
    work_dir: &Path,
) -> Result<BaseImage> {
    if !is_simple_word(release) || !is_simple_word(arch) {
        bail!("base image: release {release:?} / architecture {arch:?} is not a plain name");
    }
    if epoch < 0 {
        bail!("base image: SOURCE_DATE_EPOCH {epoch} is negative");
    }
    check_sources(suites)?;
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("cannot create work directory {}", work_dir.display()))?;
    let (rings, per_source) = collect_keyrings(suites)?;
    // apt downloads and verifies as its sandbox user `_apt`, which cannot read a keyring file
    // under a private directory (root's home, a `mktemp -d`): the keys go inline instead.
    let mut inline_keys = Vec::new();
    for keys in &per_source {
        let mut packets = Vec::new();
        for &k in keys {
            packets.extend(rings[k].packets()?);
        }
        inline_keys.push(deb822_inline_key(&armor(&packets)));
    }
    // apt needs the mirrors' credentials: only this file, given to mmdebstrap, holds them
    // (the rootfs's sources, the lock and every message do not).
    let with_credentials: Vec<SuiteSource> = suites
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if let Some(c) = &s.credentials {
                s.uri = crate::redact::with_credentials(&s.uri, c);
            }
            s
        })
        .collect();
    let host_sources = sources_text(&with_credentials, |n| inline_keys[n].clone());
    let secrets: Vec<String> = suites
        .iter()
        .filter_map(|s| s.credentials.as_ref())
        .flat_map(|c| [with_credentials_userinfo(c), c.password.clone()])
        .collect();

    // The cache key: everything that decides the rootfs (keyrings by content).
    let key = {
        let mut h = Sha256::new();
        h.update(format!("{REWRITE_VERSION}\n{release}\n{arch}\n{epoch}\n"));
        h.update(sources_text(suites, |n| {
            let hashes: Vec<&str> = per_source[n]
                .iter()
                .map(|&k| rings[k].sha256.as_str())
                .collect();
            hashes.join(" ")
        }));
        hex::encode(h.finalize())
    };
    let index_path = work_dir.join(INDEX_FILE);
    let mut index: BaseIndex = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some(b) = index.bases.get(&key) {
        if docker.inspect_image(&b.id).await.is_ok() {
            tracing::info!(id = %b.id, "base {release}/{arch} is cached");
            let b = b.clone();
            tag(docker, &b.id, &b.tag()).await?;
            tag(docker, &b.id, &b.rootfs_tag()).await?;
            return Ok(b);
        }
    }

    let sources_file = work_dir.join("rebake.sources");
    std::fs::write(&sources_file, &host_sources)
        .with_context(|| format!("cannot write {}", sources_file.display()))?;
    let raw_tar = work_dir.join("mmdebstrap.tar");
    run_mmdebstrap(release, arch, epoch, &sources_file, &raw_tar, work_dir)
        .await
        .map_err(|e| {
            anyhow!(crate::redact::scrub(
                &format!("{e:#}"),
                secrets.iter().map(String::as_str)
            ))
        })?;

    // Re-write it reproducibly.
    let layer = work_dir.join("rootfs.tar");
    let (raw, out, s2, r2) = (
        raw_tar.clone(),
        layer.clone(),
        suites.to_vec(),
        per_source.clone(),
    );
    let ring_data: Vec<(Option<PathBuf>, Vec<u8>, String, String)> = rings
        .iter()
        .map(|r| {
            (
                r.original.clone(),
                r.bytes.clone(),
                r.image_copy(),
                r.sha256.clone(),
            )
        })
        .collect();
    let rootfs_sha256 = tokio::task::spawn_blocking(move || {
        normalize_rootfs(&raw, &out, epoch, &s2, &r2, &ring_data)
    })
    .await
    .context("rootfs task failed")??;
    let _ = std::fs::remove_file(&raw_tar);

    let mut base = BaseImage {
        suite: release.to_string(),
        arch: arch.to_string(),
        rootfs_sha256,
        id: String::new(),
    };
    let labels: BTreeMap<String, String> = [
        ("org.rebake.base.release", release.to_string()),
        ("org.rebake.base.architecture", arch.to_string()),
        ("org.rebake.base.source-date-epoch", epoch.to_string()),
        ("org.rebake.base.rootfs-sha256", base.rootfs_sha256.clone()),
        ("org.rebake.base.key", key.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    base.id = load_layer(docker, &base, &layer, epoch, labels, work_dir).await?;
    let _ = std::fs::remove_file(&layer);
    index.bases.insert(key, base.clone());
    crate::state::write_atomic(&index_path, &serde_json::to_vec_pretty(&index)?)?;
    Ok(base)
}

async fn tag(docker: &Docker, id: &str, reference: &str) -> Result<()> {
    let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
    docker
        .tag_image(
            id,
            Some(TagImageOptions {
                repo: Some(repo.to_string()),
                tag: Some(tag.to_string()),
            }),
        )
        .await
        .with_context(|| format!("cannot tag {id} as {reference}"))
}

/// Why mmdebstrap failed, from its log: apt's and mmdebstrap's own errors and warnings
/// (`E:`, `W:`, `Err:` and the lines that continue them), else the last lines.
fn mmdebstrap_reason(log: &str) -> String {
    let mut reason: Vec<&str> = Vec::new();
    let mut continuing = false;
    for line in log.lines() {
        let trimmed = line.trim_start();
        if ["E: ", "W: ", "Err:"]
            .iter()
            .any(|p| trimmed.starts_with(p))
        {
            reason.push(line);
            continuing = true;
        } else if continuing && line.starts_with(' ') && !trimmed.is_empty() {
            reason.push(line);
        } else {
            continuing = false;
        }
    }
    if reason.is_empty() {
        return last_lines(log, 15);
    }
    // An endless list of one error is still one reason: keep the first and the last lines.
    if reason.len() > 40 {
        let tail = reason.split_off(reason.len() - 10);
        reason.truncate(30);
        reason.push("  …");
        reason.extend(tail);
    }
    reason.join("\n")
}

/// mmdebstrap without root runs in a user namespace (`--mode=unshare`), which needs
/// `newuidmap`/`newgidmap` and subordinate ids for the user: say what is missing and how to fix
/// it, before a long download fails.
fn check_unshare_mode() -> Result<()> {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "$USER".to_string());
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
            || Path::new("/usr/bin").join(tool).is_file()
    };
    let read = |file: &str| std::fs::read_to_string(file).unwrap_or_default();
    match unshare_mode_problem(&user, &process_uid(), &on_path, &read) {
        Some(problem) => Err(anyhow!(problem)),
        None => Ok(()),
    }
}

fn unshare_mode_problem(
    user: &str,
    uid: &str,
    has_tool: &dyn Fn(&str) -> bool,
    read: &dyn Fn(&str) -> String,
) -> Option<String> {
    let why = "building the base as a user (not root) runs mmdebstrap in a user namespace, which";
    let fix = format!(
        "as root: apt-get install uidmap && usermod --add-subuids 100000-165535 \
         --add-subgids 100000-165535 {user}"
    );
    if let Some(tool) = ["newuidmap", "newgidmap"]
        .into_iter()
        .find(|t| !has_tool(t))
    {
        return Some(format!(
            "{why} needs {tool} (package uidmap) and subordinate ids for {user}; {fix}"
        ));
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let listed = read(file).lines().any(|l| {
            let name = l.split(':').next().unwrap_or("");
            name == user || name == uid
        });
        if !listed {
            return Some(format!(
                "{why} needs subordinate ids for {user} in {file}; {fix}"
            ));
        }
    }
    None
}

/// The process's real user id, as text (read from /proc; no libc call).
fn process_uid() -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid().to_string())
        .unwrap_or_default()
}

async fn run_mmdebstrap(
    release: &str,
    arch: &str,
    epoch: i64,
    sources: &Path,
    out: &Path,
    work_dir: &Path,
) -> Result<()> {
    let root = process_uid() == "0";
    if !root {
        check_unshare_mode()?;
    }
    let mode = if root { "root" } else { "unshare" };
    let log_path = work_dir.join("mmdebstrap.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let started = std::time::Instant::now();
    let status = tokio::process::Command::new("mmdebstrap")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("LC_ALL", "C.UTF-8")
        .arg("--variant=minbase")
        .arg(format!("--architectures={arch}"))
        .arg(format!("--mode={mode}"))
        .arg("--format=tar")
        .arg(release)
        .arg(out)
        .arg(sources)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!(
                    "mmdebstrap not found: apt-get install mmdebstrap (it builds the base rootfs)"
                )
            } else {
                anyhow!("cannot run mmdebstrap: {e}")
            }
        })?;
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        bail!(
            "base image {release}/{arch}: mmdebstrap failed ({status}):\n{}\n(full log: {})",
            mmdebstrap_reason(&text),
            log_path.display()
        );
    }
    tracing::info!(
        "mmdebstrap {release}/{arch} took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The image config rebake writes for a base (field order fixed: the id is its SHA256).
#[derive(Serialize)]
struct ImageConfig {
    architecture: String,
    config: RunConfig,
    created: String,
    history: Vec<History>,
    os: &'static str,
    rootfs: RootFs,
}

#[derive(Serialize)]
struct RunConfig {
    #[serde(rename = "Env")]
    env: Vec<String>,
    #[serde(rename = "Cmd")]
    cmd: Vec<String>,
    #[serde(rename = "Labels")]
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct History {
    created: String,
    created_by: String,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// `epoch` as the RFC 3339 time an image config's `created` holds.
pub(super) fn rfc3339(epoch: i64) -> Result<String> {
    Ok(chrono::DateTime::from_timestamp(epoch, 0)
        .ok_or_else(|| anyhow!("epoch {epoch} is out of range"))?
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The image config bytes for a base; its SHA256 is the image id.
fn base_config(base: &BaseImage, epoch: i64, labels: BTreeMap<String, String>) -> Result<Vec<u8>> {
    let created = rfc3339(epoch)?;
    let config = ImageConfig {
        architecture: base.arch.clone(),
        config: RunConfig {
            env: vec![BASE_PATH.to_string()],
            cmd: vec!["bash".to_string()],
            labels,
        },
        created: created.clone(),
        history: vec![History {
            created,
            created_by: format!(
                "rebake: mmdebstrap --variant=minbase {} ({}, rootfs sha256:{})",
                base.suite, base.arch, base.rootfs_sha256
            ),
        }],
        os: "linux",
        rootfs: RootFs {
            kind: "layers",
            diff_ids: vec![format!("sha256:{}", base.rootfs_sha256)],
        },
    };
    Ok(serde_json::to_vec(&config)?)
}

/// Writes a `docker save` archive around `layer` and loads it (POST /images/load).
async fn load_layer(
    docker: &Docker,
    base: &BaseImage,
    layer: &Path,
    epoch: i64,
    labels: BTreeMap<String, String>,
    work_dir: &Path,
) -> Result<String> {
    let config = base_config(base, epoch, labels)?;
    let what = format!("base image {}", base.tag());
    load_image(
        docker,
        config,
        &[(base.rootfs_sha256.clone(), Some(layer.to_path_buf()))],
        &[base.tag(), base.rootfs_tag()],
        work_dir,
        &what,
    )
    .await
}

/// Loads an image whose config (`config`, bytes as given: its SHA256 is the image id) and
/// layers (diff id hex, uncompressed tar file; in order) rebake wrote itself: a `docker save`
/// archive of them, sent to POST /images/load, so the engine stamps nothing of its own. Tags
/// it `tags`; returns the id. A layer without a file is one the engine has already below the
/// same parents (the engine's own store reads no file for it; one that needs every file
/// refuses the load).
pub(super) async fn load_image(
    docker: &Docker,
    config: Vec<u8>,
    layers: &[(String, Option<PathBuf>)],
    tags: &[String],
    work_dir: &Path,
    what: &str,
) -> Result<String> {
    let config_sha = sha256_hex(&config);
    let id = format!("sha256:{config_sha}");
    let manifest = serde_json::to_vec(&[ManifestEntry {
        config: format!("{config_sha}.json"),
        repo_tags: tags.to_vec(),
        layers: layers
            .iter()
            .map(|(sha, _)| format!("{sha}/layer.tar"))
            .collect(),
    }])?;
    let archive_path = work_dir.join("image.tar");
    {
        let (archive_path, layers) = (archive_path.clone(), layers.to_vec());
        tokio::task::spawn_blocking(move || -> Result<()> {
            let f = std::fs::File::create(&archive_path)
                .with_context(|| format!("cannot create {}", archive_path.display()))?;
            let mut b = tar::Builder::new(std::io::BufWriter::new(f));
            let mut put = |name: &str, data: &[u8]| -> Result<()> {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                h.set_mtime(0);
                b.append_data(&mut h, name, data)?;
                Ok(())
            };
            put(&format!("{config_sha}.json"), &config)?;
            put("manifest.json", &manifest)?;
            let mut written = std::collections::BTreeSet::new();
            for (sha, layer) in &layers {
                // Two steps that change nothing give the same (empty) layer.
                let Some(layer) = layer.as_ref().filter(|_| written.insert(sha.clone())) else {
                    continue;
                };
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(0);
                b.append_data(&mut h, format!("{sha}/"), std::io::empty())?;
                let mut lf = std::fs::File::open(layer)
                    .with_context(|| format!("cannot open {}", layer.display()))?;
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(lf.metadata()?.len());
                h.set_mtime(0);
                b.append_data(&mut h, format!("{sha}/layer.tar"), &mut lf)?;
            }
            b.into_inner()?.flush()?;
            Ok(())
        })
        .await
        .context("image archive task failed")??;
    }
    // Streamed from the file: an image's layers may be hundreds of MB.
    let file = tokio::fs::File::open(&archive_path)
        .await
        .with_context(|| format!("cannot open {}", archive_path.display()))?;
    let chunks = futures_util::stream::try_unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        let n = f.read(&mut buf).await?;
        buf.truncate(n);
        Ok::<_, std::io::Error>((n > 0).then(|| (bytes::Bytes::from(buf), f)))
    });
    let mut stream = docker.import_image_stream(
        ImportImageOptions {
            quiet: true,
            ..Default::default()
        },
        chunks,
        None,
    );
    while let Some(item) = stream.next().await {
        item.with_context(|| format!("loading {what} into the engine failed"))?;
    }
    let _ = std::fs::remove_file(&archive_path);
    let inspect = docker
        .inspect_image(&id)
        .await
        .with_context(|| format!("the engine did not keep {what} ({id}) after loading it"))?;
    if inspect.id.as_deref() != Some(id.as_str()) {
        bail!(
            "the engine gave {what} the id {:?}, expected {id}",
            inspect.id
        );
    }
    // `load` does not move a tag that already names another image on every engine version.
    for t in tags {
        tag(docker, &id, t).await?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmdebstrap_failure_shows_apts_reason() {
        // A real log (mirror host replaced): the keyring was unreadable for apt's sandbox.
        let log = "I: chroot architecture amd64 is equal to the host's architecture
I: finding correct signed-by value...
I: running apt-get update...
Get:1 http://mirror.invalid/debian trixie InRelease [140 kB]
Err:1 http://mirror.invalid/debian trixie InRelease
  The following signatures couldn't be verified because the public key is not available: NO_PUBKEY 6ED0E7B82643E131
Reading package lists...
W: GPG error: http://mirror.invalid/debian trixie InRelease: The following signatures couldn't be verified because the public key is not available: NO_PUBKEY 6ED0E7B82643E131
E: The repository 'http://mirror.invalid/debian trixie InRelease' is not signed.
E: apt-get update --error-on=any -oAPT::Status-Fd=<$fd> -oDpkg::Use-Pty=false failed
I: main() received signal PIPE: waiting for setup...
I: removing tempdir /tmp/mmdebstrap.dFvbr4qUoH...
E: mmdebstrap failed to run
";
        let reason = mmdebstrap_reason(log);
        assert!(
            reason.starts_with(
                "Err:1 http://mirror.invalid/debian trixie InRelease\n  The following"
            ),
            "{reason}"
        );
        assert!(reason.contains("NO_PUBKEY 6ED0E7B82643E131"), "{reason}");
        assert!(reason.contains("E: The repository"), "{reason}");
        assert!(!reason.contains("Reading package lists"), "{reason}");
        assert!(!reason.contains("I: "), "{reason}");
        // Without E:/W: lines, the last lines.
        assert_eq!(mmdebstrap_reason("a\nb\n"), "a\nb");
    }

    #[test]
    fn unshare_mode_names_what_a_user_lacks() {
        let subids = |f: &str| match f {
            "/etc/subuid" => "ada:100000:65536\n".to_string(),
            _ => "1000:100000:65536\n".to_string(),
        };
        let all_tools = |_: &str| true;
        assert_eq!(
            unshare_mode_problem("ada", "1000", &all_tools, &subids),
            None
        );
        let no_map = |t: &str| t != "newuidmap";
        let p = unshare_mode_problem("ada", "1000", &no_map, &subids).unwrap();
        assert!(p.contains("needs newuidmap (package uidmap)"), "{p}");
        assert!(
            p.contains("apt-get install uidmap && usermod --add-subuids"),
            "{p}"
        );
        let p = unshare_mode_problem("bob", "1001", &all_tools, &subids).unwrap();
        assert!(p.contains("subordinate ids for bob in /etc/subuid"), "{p}");
        assert!(p.ends_with("--add-subgids 100000-165535 bob"), "{p}");
    }

    #[test]
    fn base_config_is_deterministic() {
        let base = BaseImage {
            suite: "trixie".into(),
            arch: "amd64".into(),
            rootfs_sha256: "ab".repeat(32),
            id: String::new(),
        };
        let a = base_config(&base, 1_700_000_000, BTreeMap::new()).unwrap();
        let text = String::from_utf8(a.clone()).unwrap();
        assert!(
            text.contains("\"created\":\"2023-11-14T22:13:20Z\""),
            "{text}"
        );
        assert!(text.contains(&format!("\"diff_ids\":[\"sha256:{}\"]", "ab".repeat(32))));
        assert_eq!(
            a,
            base_config(&base, 1_700_000_000, BTreeMap::new()).unwrap()
        );
    }
}
