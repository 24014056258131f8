//! The build stage: a reproducible Debian base image made from verified packages
//! ([`build_base`]), the image a policy's Dockerfile describes ([`build_image`]), and what is
//! installed in it ([`inventory`]). Everything goes through the Docker Engine API (bollard).
//!
//! The base is built like debuerreotype builds Debian's official images: mmdebstrap with
//! `SOURCE_DATE_EPOCH` from the archive's InRelease `Date`, then the tarball is re-written
//! (sorted, mtimes clamped, numeric owners, logs/caches/apt lists/machine-id emptied). Its
//! SHA256 is the base's identity. It is loaded into the engine as a `docker save` archive whose
//! image config rebake writes itself (`created` = the epoch), so the same rootfs always gets the
//! same image id — `docker import` would stamp the import time instead.

use crate::debian::sources::{SignedBy, SuiteSource};
use crate::debian::status::{self, InstalledPackage};
use crate::debian::verify::{armor, dearmor, deb822_inline_key};
use crate::policy::Policy;
use anyhow::{anyhow, bail, Context, Result};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    BuildImageOptions, DownloadFromContainerOptions, ImportImageOptions, RemoveContainerOptions,
    TagImageOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Repository the bases are tagged in: `rebake-base:<release>-<arch>` and
/// `rebake-base:<release>-<arch>-<first 12 of the rootfs SHA256>`.
pub const BASE_REPO: &str = "rebake-base";
/// `PATH` of the base image (Debian's default for root).
pub const BASE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Bumped whenever the rootfs re-writing changes, so cached bases are rebuilt.
const REWRITE_VERSION: &str = "rebake-rootfs-v1";
/// Where the image's apt sources go (the one file in `sources.list.d`).
const IMAGE_SOURCES: &str = "etc/apt/sources.list.d/debian.sources";

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

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
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
fn sources_text(suites: &[SuiteSource], signed_by: impl Fn(usize) -> String) -> String {
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
    let host_sources = sources_text(suites, |n| inline_keys[n].clone());

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
    run_mmdebstrap(release, arch, epoch, &sources_file, &raw_tar, work_dir).await?;

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

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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

/// One rootfs entry, held in memory while the tarball is re-written.
struct Item {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    dev: (u32, u32),
    data: Vec<u8>,
}

fn file_item(path: &str, data: Vec<u8>, mode: u32, mtime: u64) -> Item {
    Item {
        path: path.to_string(),
        kind: tar::EntryType::Regular,
        mode,
        uid: 0,
        gid: 0,
        mtime,
        link: None,
        dev: (0, 0),
        data,
    }
}

fn clean_path(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/').to_string()
}

/// What happens to a path in the final rootfs.
enum Fate {
    Keep,
    Drop,
    Empty,
}

fn fate(path: &str, kind: tar::EntryType) -> Fate {
    let file = !kind.is_dir();
    let under = |dir: &str| path.strip_prefix(dir).filter(|r| r.starts_with('/'));
    if under("dev").is_some() {
        // The engine provides /dev; device nodes in a layer need privileges to unpack.
        return Fate::Drop;
    }
    if let Some(rest) = under("var/lib/apt/lists") {
        let rest = &rest[1..];
        return if rest == "lock" || rest == "partial" || rest == "auxfiles" {
            Fate::Keep
        } else {
            Fate::Drop
        };
    }
    if file {
        if let Some(rest) = under("var/cache/apt") {
            if rest.ends_with(".bin") || rest.starts_with("/archives/") && rest.ends_with(".deb") {
                return Fate::Drop;
            }
        }
        if path == "var/cache/ldconfig/aux-cache" {
            return Fate::Drop;
        }
        // debuerreotype: backup copies dpkg and debconf leave behind.
        if (path.starts_with("var/cache/debconf/") || path.starts_with("var/lib/dpkg/"))
            && path.ends_with("-old")
        {
            return Fate::Drop;
        }
        if under("var/log").is_some() && kind == tar::EntryType::Regular {
            return Fate::Empty;
        }
        if matches!(path, "etc/machine-id" | "etc/hostname" | "etc/resolv.conf") {
            // Host-specific (mmdebstrap copies the host's); the engine mounts its own.
            return Fate::Empty;
        }
    }
    if path.starts_with("etc/apt/sources.list.d/") && file {
        // Replaced by rebake's own sources file.
        return Fate::Drop;
    }
    Fate::Keep
}

/// Re-writes `raw` (mmdebstrap's tarball) into `out` the way debuerreotype does; returns the
/// SHA256 of `out`.
fn normalize_rootfs(
    raw: &Path,
    out: &Path,
    epoch: i64,
    suites: &[SuiteSource],
    per_source: &[Vec<usize>],
    rings: &[(Option<PathBuf>, Vec<u8>, String, String)],
) -> Result<String> {
    let epoch = epoch as u64;
    let file =
        std::fs::File::open(raw).with_context(|| format!("cannot open {}", raw.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    for entry in archive
        .entries()
        .context("mmdebstrap's tarball is unreadable")?
    {
        let mut entry = entry.context("mmdebstrap's tarball is unreadable")?;
        let path = clean_path(&String::from_utf8_lossy(&entry.path_bytes()));
        if path.is_empty() || path == "." {
            continue;
        }
        let h = entry.header().clone();
        let kind = h.entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).to_string());
        let mut data = Vec::new();
        let fate = fate(&path, kind);
        if matches!(fate, Fate::Drop) {
            continue;
        }
        if (kind == tar::EntryType::Regular || kind == tar::EntryType::Continuous)
            && matches!(fate, Fate::Keep)
        {
            entry.read_to_end(&mut data)?;
        }
        let link = match (kind, link) {
            (tar::EntryType::Link, Some(l)) => Some(clean_path(&l)),
            (_, l) => l,
        };
        items.insert(
            path.clone(),
            Item {
                path,
                kind: if kind == tar::EntryType::Continuous {
                    tar::EntryType::Regular
                } else {
                    kind
                },
                mode: h.mode().unwrap_or(0o644) & 0o7777,
                uid: h.uid().unwrap_or(0),
                gid: h.gid().unwrap_or(0),
                mtime: h.mtime().unwrap_or(0).min(epoch),
                link,
                dev: (
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                ),
                data,
            },
        );
    }

    // Keyrings: keep a path the image has itself (e.g. from debian-archive-keyring), else
    // ship a copy under /etc/apt/keyrings.
    let mut image_paths = Vec::new();
    for (original, bytes, copy, _) in rings {
        let kept = original
            .as_ref()
            .map(|o| clean_path(&o.display().to_string()))
            .filter(|o| items.contains_key(o));
        match kept {
            Some(o) => image_paths.push(format!("/{o}")),
            None => {
                items.insert(copy.clone(), file_item(copy, bytes.clone(), 0o644, epoch));
                image_paths.push(format!("/{copy}"));
            }
        }
    }
    for dir in ["etc/apt/keyrings", "etc/apt/sources.list.d"] {
        items.entry(dir.to_string()).or_insert_with(|| Item {
            kind: tar::EntryType::Directory,
            mode: 0o755,
            ..file_item(dir, Vec::new(), 0o755, epoch)
        });
    }
    let text = sources_text(suites, |n| {
        let paths: Vec<&str> = per_source[n]
            .iter()
            .map(|&k| image_paths[k].as_str())
            .collect();
        paths.join(" ")
    });
    items.insert(
        IMAGE_SOURCES.to_string(),
        file_item(IMAGE_SOURCES, text.into_bytes(), 0o644, epoch),
    );

    // Hard links: sorting may put a link before the file it links to; the first path (in
    // order) of each group becomes the file, the others link to it.
    let links: Vec<(String, String)> = items
        .values()
        .filter(|i| i.kind == tar::EntryType::Link)
        .filter_map(|i| i.link.clone().map(|t| (i.path.clone(), t)))
        .collect();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, target) in links {
        if !items.contains_key(&target) {
            bail!("rootfs: hard link {path} points at {target}, which is not in the tarball");
        }
        groups.entry(target).or_default().push(path);
    }
    for (target, mut members) in groups {
        members.push(target.clone());
        members.sort();
        let first = members[0].clone();
        if first != target {
            let mut t = items.remove(&target).expect("present");
            let mut f = items.remove(&first).expect("present");
            std::mem::swap(&mut t.path, &mut f.path);
            f.link = Some(first.clone());
            items.insert(t.path.clone(), t);
            items.insert(f.path.clone(), f);
        }
        for m in &members[1..] {
            if let Some(i) = items.get_mut(m) {
                i.kind = tar::EntryType::Link;
                i.link = Some(first.clone());
                i.data.clear();
            }
        }
    }

    let out_file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut hashing = HashWriter {
        inner: std::io::BufWriter::new(out_file),
        hash: Sha256::new(),
    };
    {
        let mut builder = tar::Builder::new(&mut hashing);
        builder.mode(tar::HeaderMode::Deterministic);
        for item in items.values() {
            append_item(&mut builder, item)?;
        }
        builder.finish()?;
    }
    hashing.inner.flush()?;
    Ok(hex::encode(hashing.hash.finalize()))
}

fn append_item<W: Write>(builder: &mut tar::Builder<W>, item: &Item) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(item.kind);
    h.set_mode(item.mode);
    h.set_uid(item.uid);
    h.set_gid(item.gid);
    h.set_mtime(item.mtime);
    let path = if item.kind.is_dir() {
        format!("{}/", item.path)
    } else {
        item.path.clone()
    };
    match item.kind {
        tar::EntryType::Symlink | tar::EntryType::Link => {
            h.set_size(0);
            let target = item.link.clone().unwrap_or_default();
            builder.append_link(&mut h, &path, &target)?;
        }
        tar::EntryType::Char | tar::EntryType::Block => {
            h.set_size(0);
            h.set_device_major(item.dev.0)?;
            h.set_device_minor(item.dev.1)?;
            builder.append_data(&mut h, &path, std::io::empty())?;
        }
        tar::EntryType::Regular => {
            h.set_size(item.data.len() as u64);
            builder.append_data(&mut h, &path, &item.data[..])?;
        }
        _ => {
            h.set_size(0);
            builder.append_data(&mut h, &path, std::io::empty())?;
        }
    }
    Ok(())
}

struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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

/// The image config bytes for a base; its SHA256 is the image id.
fn base_config(base: &BaseImage, epoch: i64, labels: BTreeMap<String, String>) -> Result<Vec<u8>> {
    let created = chrono::DateTime::from_timestamp(epoch, 0)
        .ok_or_else(|| anyhow!("epoch {epoch} is out of range"))?
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
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
    let config_sha = sha256_hex(&config);
    let id = format!("sha256:{config_sha}");
    let manifest = serde_json::to_vec(&[ManifestEntry {
        config: format!("{config_sha}.json"),
        repo_tags: vec![base.tag(), base.rootfs_tag()],
        layers: vec![format!("{}/layer.tar", base.rootfs_sha256)],
    }])?;
    let archive_path = work_dir.join("image.tar");
    {
        let (archive_path, layer, sha) = (
            archive_path.clone(),
            layer.to_path_buf(),
            base.rootfs_sha256.clone(),
        );
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
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(0);
            b.append_data(&mut h, format!("{sha}/"), std::io::empty())?;
            let mut lf = std::fs::File::open(&layer)?;
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(lf.metadata()?.len());
            h.set_mtime(0);
            b.append_data(&mut h, format!("{sha}/layer.tar"), &mut lf)?;
            b.into_inner()?.flush()?;
            Ok(())
        })
        .await
        .context("image archive task failed")??;
    }
    let bytes = tokio::fs::read(&archive_path).await?;
    let _ = std::fs::remove_file(&archive_path);
    let mut stream = docker.import_image(
        ImportImageOptions {
            quiet: true,
            ..Default::default()
        },
        bollard::body_full(bytes.into()),
        None,
    );
    while let Some(item) = stream.next().await {
        item.with_context(|| format!("loading base image {} into the engine failed", base.tag()))?;
    }
    let inspect = docker.inspect_image(&id).await.with_context(|| {
        format!(
            "the engine did not keep base image {id} after loading it (tag {})",
            base.tag()
        )
    })?;
    if inspect.id.as_deref() != Some(id.as_str()) {
        bail!(
            "the engine gave base image {} the id {:?}, expected {id}",
            base.tag(),
            inspect.id
        );
    }
    // `load` does not move a tag that already names another image on every engine version.
    tag(docker, &id, &base.tag()).await?;
    tag(docker, &id, &base.rootfs_tag()).await?;
    Ok(id)
}

/// Adds `dir` to the context tar under `prefix`, sorted, with fixed owner and mtime.
fn add_context_dir<W: Write>(b: &mut tar::Builder<W>, dir: &Path, prefix: &str) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if rel == "Dockerfile" {
            bail!(
                "{}: the context may not contain a file named Dockerfile (rebake generates it)",
                e.path().display()
            );
        }
        let meta = std::fs::symlink_metadata(e.path())?;
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(e.path())?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, &rel, &target)?;
        } else if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, format!("{rel}/"), std::io::empty())?;
            add_context_dir(b, &e.path(), &rel)?;
        } else {
            use std::os::unix::fs::PermissionsExt;
            let data = std::fs::read(e.path())
                .with_context(|| format!("cannot read {}", e.path().display()))?;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            });
            h.set_size(data.len() as u64);
            b.append_data(&mut h, &rel, &data[..])?;
        }
    }
    Ok(())
}

/// The build context: the Dockerfile plus `images/<name>/context/` when present.
pub fn context_tar(repo: &Path, image: &str, dockerfile: &str) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(dockerfile.len() as u64);
    b.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())?;
    let dir = repo.join("images").join(image).join("context");
    if dir.is_dir() {
        add_context_dir(&mut b, &dir, "")?;
    }
    Ok(b.into_inner()?)
}

/// The tag a freshly built image gets: `rebake/<name>:candidate`.
pub fn candidate_tag(image: &str) -> String {
    format!("rebake/{image}:candidate")
}

/// Builds `dockerfile` for `policy` with the classic builder; the whole build output goes to
/// `log_path`. Returns the image id (`sha256:…`).
pub async fn build_image(
    docker: &Docker,
    repo: &Path,
    policy: &Policy,
    dockerfile: &str,
    labels: BTreeMap<String, String>,
    log_path: &Path,
) -> Result<String> {
    build_image_with(docker, repo, policy, dockerfile, labels, log_path, false).await
}

/// [`build_image`], optionally without the engine's layer cache (`rebake build --no-cache`).
pub async fn build_image_with(
    docker: &Docker,
    repo: &Path,
    policy: &Policy,
    dockerfile: &str,
    labels: BTreeMap<String, String>,
    log_path: &Path,
    no_cache: bool,
) -> Result<String> {
    let name = &policy.name;
    if !crate::policy::is_valid_image_name(name) {
        bail!("image {name:?}: not a valid image name");
    }
    // The classic builder turns each build-time label into its own LABEL step (a container
    // commit each); one LABEL line appended to the context's Dockerfile costs one step. The
    // committed Dockerfile stays exactly as rendered.
    let mut built_from = dockerfile.to_string();
    if !labels.is_empty() {
        if !built_from.ends_with('\n') {
            built_from.push('\n');
        }
        built_from.push_str("LABEL");
        for (k, v) in &labels {
            let quoted = v.replace('\\', "\\\\").replace('"', "\\\"");
            built_from.push_str(&format!(" {k}=\"{quoted}\""));
        }
        built_from.push('\n');
    }
    let context = context_tar(repo, name, &built_from)
        .with_context(|| format!("image {name}: cannot assemble the build context"))?;
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let mut log = std::fs::File::create(log_path)
        .with_context(|| format!("cannot create build log {}", log_path.display()))?;
    let tag = candidate_tag(name);
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".to_string(),
        t: Some(tag.clone()),
        rm: true,
        forcerm: true,
        nocache: no_cache,
        labels: None,
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut output = String::new();
    let mut id: Option<String> = None;
    let mut failure: Option<String> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                for text in [&info.stream, &info.status].into_iter().flatten() {
                    output.push_str(text);
                    log.write_all(text.as_bytes())?;
                }
                if let Some(aux) = info.aux.as_ref() {
                    if let Some(i) = aux.id.as_ref() {
                        id = Some(i.clone());
                    }
                }
                if let Some(e) = info.error_detail.and_then(|e| e.message) {
                    failure = Some(e);
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                failure = Some(error);
                break;
            }
            Err(e) => {
                let _ = writeln!(log, "\nengine error: {e}");
                return Err(anyhow!(
                    "image {name}: build failed: the container engine reported: {e} (log: {})",
                    log_path.display()
                ));
            }
        }
    }
    if let Some(error) = failure {
        let _ = writeln!(log, "\nERROR: {error}");
        let step = output
            .lines()
            .rfind(|l| l.starts_with("Step "))
            .unwrap_or("(before the first step)")
            .trim()
            .to_string();
        bail!(
            "image {name}: build failed at {step}: {}\nlast lines of output:\n{}\n(full log: {})",
            error.trim(),
            indent(&last_lines(&strip_ansi(&output), 15)),
            log_path.display()
        );
    }
    log.flush()?;
    let id = match id {
        Some(id) => id,
        None => docker
            .inspect_image(&tag)
            .await
            .with_context(|| format!("image {name}: built, but the engine has no {tag}"))?
            .id
            .ok_or_else(|| anyhow!("image {name}: the engine reports no id for {tag}"))?,
    };
    Ok(id)
}

/// Removes the colour codes the classic builder wraps around a step's stderr.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The packages installed in `image_id`, read from its `/var/lib/dpkg/status` (a container is
/// created for it, never started, and always removed).
pub async fn inventory(docker: &Docker, image_id: &str) -> Result<Vec<InstalledPackage>> {
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            ContainerCreateBody {
                image: Some(image_id.to_string()),
                cmd: Some(vec!["true".to_string()]),
                network_disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("inventory of {image_id}: cannot create a container"))?;
    let result = read_status(docker, &created.id, image_id).await;
    let removed = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await;
    let packages = result?;
    removed.with_context(|| format!("cannot remove container {}", created.id))?;
    Ok(packages)
}

async fn read_status(
    docker: &Docker,
    container: &str,
    image_id: &str,
) -> Result<Vec<InstalledPackage>> {
    const STATUS: &str = "/var/lib/dpkg/status";
    let mut stream = docker.download_from_container(
        container,
        Some(DownloadFromContainerOptions {
            path: STATUS.to_string(),
        }),
    );
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(
            &chunk.with_context(|| format!("inventory of {image_id}: cannot read {STATUS}"))?,
        );
    }
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut text = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path()?.file_name().is_some_and(|n| n == "status") {
            let mut s = String::new();
            entry
                .read_to_string(&mut s)
                .with_context(|| format!("inventory of {image_id}: {STATUS} is not UTF-8"))?;
            text = Some(s);
            break;
        }
    }
    let text = text.ok_or_else(|| anyhow!("inventory of {image_id}: the image has no {STATUS}"))?;
    status::parse(&text).map_err(|e| anyhow!("inventory of {image_id}: {STATUS}:{e}"))
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

    fn raw_tar(dir: &Path, reversed: bool) -> PathBuf {
        let mut entries: Vec<(&str, tar::EntryType, &[u8], Option<&str>)> = vec![
            ("./", tar::EntryType::Directory, b"", None),
            ("./usr/", tar::EntryType::Directory, b"", None),
            ("./usr/bin/", tar::EntryType::Directory, b"", None),
            ("./usr/bin/zz", tar::EntryType::Regular, b"binary", None),
            (
                "./usr/bin/aa",
                tar::EntryType::Link,
                b"",
                Some("./usr/bin/zz"),
            ),
            (
                "./var/log/apt/history.log",
                tar::EntryType::Regular,
                b"log",
                None,
            ),
            (
                "./var/lib/apt/lists/lock",
                tar::EntryType::Regular,
                b"",
                None,
            ),
            (
                "./var/lib/apt/lists/deb_dists_trixie_main_binary-amd64_Packages",
                tar::EntryType::Regular,
                b"Package: x",
                None,
            ),
            (
                "./var/cache/apt/pkgcache.bin",
                tar::EntryType::Regular,
                b"x",
                None,
            ),
            ("./etc/machine-id", tar::EntryType::Regular, b"0123", None),
            ("./dev/null", tar::EntryType::Char, b"", None),
        ];
        if reversed {
            // Same content in another order (the hard link's target still first).
            entries[5..].reverse();
        }
        let path = dir.join(format!("raw-{reversed}.tar"));
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o644);
            h.set_mtime(if reversed {
                4_000_000_000
            } else {
                3_999_999_999
            });
            h.set_size(data.len() as u64);
            match link {
                Some(l) => b.append_link(&mut h, name, l).unwrap(),
                None => b.append_data(&mut h, name, data).unwrap(),
            }
        }
        b.finish().unwrap();
        path
    }

    #[test]
    fn rootfs_is_sorted_clamped_and_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let suites = vec![SuiteSource {
            uri: "http://mirror.example/debian".into(),
            suite: "trixie".into(),
            components: vec!["main".into()],
            signed_by: SignedBy::Files(vec!["/k.gpg".into()]),
            origin: "t".into(),
        }];
        let rings = vec![(
            Some(PathBuf::from("/k.gpg")),
            b"key".to_vec(),
            "etc/apt/keyrings/rebake-0011223344556677.gpg".to_string(),
            "00".repeat(32),
        )];
        let run = |reversed: bool| {
            let out = dir.path().join(format!("out-{reversed}.tar"));
            let raw = raw_tar(dir.path(), reversed);
            let sha =
                normalize_rootfs(&raw, &out, 1_700_000_000, &suites, &[vec![0]], &rings).unwrap();
            (sha, std::fs::read(&out).unwrap())
        };
        let (sha1, bytes1) = run(false);
        let (sha2, bytes2) = run(true);
        assert_eq!(sha1, sha2, "same content, same rootfs");
        assert_eq!(sha1, sha256_hex(&bytes1));
        assert_eq!(bytes1, bytes2);

        let mut names = Vec::new();
        for e in tar::Archive::new(&bytes1[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            assert!(e.header().mtime().unwrap() <= 1_700_000_000, "{name}");
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            match name.as_str() {
                "usr/bin/aa" => assert_eq!(data, b"binary", "the first path holds the data"),
                "usr/bin/zz" => assert_eq!(
                    e.link_name().unwrap().unwrap().display().to_string(),
                    "usr/bin/aa"
                ),
                "var/log/apt/history.log" | "etc/machine-id" => assert!(data.is_empty(), "{name}"),
                IMAGE_SOURCES => {
                    let text = String::from_utf8(data).unwrap();
                    assert!(
                        text.contains("Signed-By: /etc/apt/keyrings/rebake-0011223344556677.gpg"),
                        "{text}"
                    );
                }
                _ => {}
            }
            names.push(name);
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&"var/lib/apt/lists/lock".to_string()));
        assert!(!names
            .iter()
            .any(|n| n.ends_with("_Packages") || n.ends_with(".bin")));
        assert!(!names.iter().any(|n| n.starts_with("dev/")), "{names:?}");
    }

    #[test]
    fn colour_codes_are_stripped() {
        assert_eq!(
            strip_ansi("\x1b[91mthe-line\n\x1b[0mnext"),
            "the-line\nnext"
        );
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
