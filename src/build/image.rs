//! A policy's image: its build context (the rendered Dockerfile and `images/<name>/context/`),
//! the classic builder's run and its failure report, and the inventory of what it installs.

use super::last_lines;
use super::reproducible::{normalize_image, Reproducible};
use crate::debian::status::{self, InstalledPackage};
use crate::policy::Policy;
use anyhow::{anyhow, bail, Context, Result};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    BuildImageOptions, DownloadFromContainerOptions, RemoveContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

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
            bail!(
                "{}: the image context may not contain symbolic links (rebake sends only \
                 regular files and directories of the repository); copy the file instead",
                e.path().display()
            );
        } else if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, format!("{rel}/"), std::io::empty())?;
            add_context_dir(b, &e.path(), &rel)?;
        } else if !meta.is_file() {
            bail!(
                "{}: the image context may contain only regular files and directories (this \
                 is a device, pipe or socket)",
                e.path().display()
            );
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
    if let Ok(meta) = std::fs::symlink_metadata(&dir) {
        if !meta.is_dir() {
            bail!(
                "{}: must be a directory of the repository (a symbolic link or file is refused)",
                dir.display()
            );
        }
        let (inside, repo_root) = (dir.canonicalize()?, repo.canonicalize()?);
        if !inside.starts_with(&repo_root) {
            bail!(
                "{}: resolves to {}, outside the repository",
                dir.display(),
                inside.display()
            );
        }
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
    build_image_with(
        docker, repo, policy, dockerfile, labels, log_path, false, None,
    )
    .await
}

/// [`build_image`], optionally without the engine's layer cache (`rebake build --no-cache`),
/// and optionally made reproducible: `SOURCE_DATE_EPOCH` is a build argument of every step,
/// and the engine's image is re-written (layers and config) and loaded again, so the same
/// inputs give the same image id (see `reproducible`).
#[allow(clippy::too_many_arguments)]
pub async fn build_image_with(
    docker: &Docker,
    repo: &Path,
    policy: &Policy,
    dockerfile: &str,
    labels: BTreeMap<String, String>,
    log_path: &Path,
    no_cache: bool,
    reproducible: Option<&Reproducible>,
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
    // Shared, not copied, by each attempt.
    let context = bytes::Bytes::from(
        context_tar(repo, name, &built_from)
            .with_context(|| format!("image {name}: cannot assemble the build context"))?,
    );
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
        // Tools that honour it (dpkg, shadow's useradd, Python's byte compiler, …) write the
        // archive's time instead of the clock's; a template declares `ARG SOURCE_DATE_EPOCH`.
        buildargs: reproducible.map(|r| {
            [("SOURCE_DATE_EPOCH".to_string(), r.epoch.to_string())]
                .into_iter()
                .collect()
        }),
        ..Default::default()
    };
    let mut attempt = 1;
    let id = loop {
        let (output, outcome) = run_build(docker, &options, &context, &mut log)
            .await
            .map_err(|e| {
                anyhow!(
                    "image {name}: build failed: the container engine reported: {e} (log: {})",
                    log_path.display()
                )
            })?;
        let error = match outcome {
            Ok(id) => break id,
            Err(error) => error,
        };
        let _ = writeln!(log, "\nERROR: {error}");
        let output = strip_ansi(&output);
        if attempt < BUILD_ATTEMPTS {
            if let Some(cause) = transient_network_error(&output) {
                attempt += 1;
                eprintln!(
                    "image {name}: the build could not reach the network ({cause}); \
                     building again in {} s (attempt {attempt} of {BUILD_ATTEMPTS})",
                    RETRY_AFTER.as_secs()
                );
                let _ = writeln!(
                    log,
                    "\nrebake: network error ({cause}); building again (attempt {attempt} of \
                     {BUILD_ATTEMPTS})\n"
                );
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        }
        let step = output
            .lines()
            .rfind(|l| l.starts_with("Step "))
            .unwrap_or("(before the first step)")
            .trim()
            .to_string();
        bail!(
            "image {name}: build failed at {step}: {}\nlast lines of output:\n{}\n(full log: {})",
            error.trim(),
            indent(&last_lines(&output, 15)),
            log_path.display()
        );
    };
    log.flush()?;
    let built = match id {
        Some(id) => id,
        None => docker
            .inspect_image(&tag)
            .await
            .with_context(|| format!("image {name}: built, but the engine has no {tag}"))?
            .id
            .ok_or_else(|| anyhow!("image {name}: the engine reports no id for {tag}"))?,
    };
    let Some(r) = reproducible else {
        return Ok(built);
    };
    let started = std::time::Instant::now();
    let id = normalize_image(docker, &built, &tag, r)
        .await
        .with_context(|| format!("image {name}: making {built} reproducible"))?;
    // The engine's own image stays (untagged) as the layer cache of the next build.
    writeln!(
        log,
        "rebake: reproducible image {id} (layers and config re-written from the engine's {built} in {:.1}s)",
        started.elapsed().as_secs_f64()
    )?;
    Ok(id)
}

/// A build that failed because a step could not reach the network (a resolver or mirror
/// that was briefly away) is run once more after a pause; any other failure is final.
const BUILD_ATTEMPTS: u32 = 2;
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(15);

/// One run of the classic builder: its whole output (also written to `log`), and the image id
/// it reported (`None`: ask the engine by tag) or the error that ended the build. `Err` is the
/// engine itself failing (not a failed step).
async fn run_build(
    docker: &Docker,
    options: &BuildImageOptions,
    context: &bytes::Bytes,
    log: &mut std::fs::File,
) -> Result<(String, std::result::Result<Option<String>, String>)> {
    let mut stream = docker.build_image(
        options.clone(),
        None,
        Some(bollard::body_full(context.clone())),
    );
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
                if let Some(i) = info.aux.as_ref().and_then(|aux| aux.id.as_ref()) {
                    id = Some(i.clone());
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
                return Err(e.into());
            }
        }
    }
    Ok((output, failure.map_or(Ok(id), Err)))
}

/// The line of a failed build's output that says a step could not reach the network, as apt,
/// curl and wget word it (name resolution, refused or timed-out connections).
fn transient_network_error(output: &str) -> Option<&str> {
    const MARKS: [&str; 6] = [
        "Temporary failure resolving",
        "Could not resolve",
        "Could not connect to",
        "Connection timed out",
        "Temporary failure in name resolution",
        "Network is unreachable",
    ];
    output
        .lines()
        .rev()
        .take(40)
        .find(|l| MARKS.iter().any(|m| l.contains(m)))
        .map(str::trim)
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
    const STATUS: &str = "/var/lib/dpkg/status";
    let files = read_files(docker, image_id, &[STATUS.to_string()])
        .await
        .with_context(|| format!("inventory of {image_id}"))?;
    let bytes = files
        .get(STATUS)
        .ok_or_else(|| anyhow!("inventory of {image_id}: the image has no {STATUS}"))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| anyhow!("inventory of {image_id}: {STATUS} is not UTF-8"))?;
    status::parse(&text).map_err(|e| anyhow!("inventory of {image_id}: {STATUS}:{e}"))
}

/// Regular files of an image, read through a container that is created (never started) and
/// removed again: path → bytes, for the paths that exist as regular files (a symlink or a
/// directory is left out).
pub async fn read_files(
    docker: &Docker,
    image_id: &str,
    paths: &[String],
) -> Result<BTreeMap<String, Vec<u8>>> {
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
        .with_context(|| format!("cannot create a container of {image_id}"))?;
    let result = read_container_files(docker, &created.id, paths).await;
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
    let out = result?;
    removed.with_context(|| format!("cannot remove container {}", created.id))?;
    Ok(out)
}

/// Regular files of a container (running or not), read through the engine's archive API — no
/// process runs in it: path → bytes, for the paths that exist as regular files.
pub async fn read_container_files(
    docker: &Docker,
    container: &str,
    paths: &[String],
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for path in paths {
        if let Some(bytes) = read_regular_file(docker, container, path).await? {
            out.insert(path.clone(), bytes);
        }
    }
    Ok(out)
}

/// The regular files directly in directory `dir` of a container (name → bytes); empty when
/// it does not exist.
pub async fn read_container_dir(
    docker: &Docker,
    container: &str,
    dir: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let Some(bytes) = download_archive(docker, container, dir).await? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(&bytes[..]);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_path_buf();
        // `status.d/<file>`: one level below the directory itself.
        if !entry.header().entry_type().is_file() || path.components().count() != 2 {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        out.insert(name, data);
    }
    Ok(out)
}

/// The engine's tar archive of `path` in a container; None when it does not exist.
async fn download_archive(docker: &Docker, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
    let mut stream = docker.download_from_container(
        container,
        Some(DownloadFromContainerOptions {
            path: path.to_string(),
        }),
    );
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => bytes.extend_from_slice(&c),
            Err(e) if crate::engine::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(anyhow!("cannot read {path}: {e}")),
        }
    }
    Ok(Some(bytes))
}

async fn read_regular_file(
    docker: &Docker,
    container: &str,
    path: &str,
) -> Result<Option<Vec<u8>>> {
    let Some(bytes) = download_archive(docker, container, path).await? else {
        return Ok(None);
    };
    // The archive of one path: its first entry is the path itself.
    let mut archive = tar::Archive::new(&bytes[..]);
    let Some(entry) = archive.entries()?.next() else {
        return Ok(None);
    };
    let mut entry = entry?;
    if !entry.header().entry_type().is_file() {
        return Ok(None);
    }
    let mut data = Vec::new();
    entry
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {path}"))?;
    Ok(Some(data))
}

/// The Debian changelog of each source package (`(source, its binaries)`) in the image, from
/// `/usr/share/doc/<binary>/changelog.Debian.gz` of the first binary that has one (the source's
/// namesake first), with a binNMU's `changelog.Debian.<arch>.gz` entries before it.
pub async fn read_changelogs(
    docker: &Docker,
    image_id: &str,
    arch: &str,
    sources: &[(String, Vec<String>)],
) -> Result<BTreeMap<String, crate::plan::Changelog>> {
    use crate::plan::Changelog;
    let candidates = |source: &str, binaries: &[String]| -> Vec<String> {
        let mut names: Vec<&str> = vec![source];
        names.extend(binaries.iter().map(String::as_str).filter(|b| *b != source));
        names.into_iter().map(str::to_string).collect()
    };
    let mut paths = Vec::new();
    for (source, binaries) in sources {
        for b in candidates(source, binaries) {
            paths.push(format!("/usr/share/doc/{b}/changelog.Debian.gz"));
            paths.push(format!("/usr/share/doc/{b}/changelog.Debian.{arch}.gz"));
        }
    }
    let files = read_files(docker, image_id, &paths).await?;
    let gunzip = |bytes: &Vec<u8>| -> Option<String> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .ok()?;
        Some(text)
    };
    let mut out = BTreeMap::new();
    for (source, binaries) in sources {
        let found = candidates(source, binaries).into_iter().find_map(|b| {
            let main = files.get(&format!("/usr/share/doc/{b}/changelog.Debian.gz"))?;
            let mut entries = files
                .get(&format!("/usr/share/doc/{b}/changelog.Debian.{arch}.gz"))
                .and_then(gunzip)
                .map(|t| crate::debian::changelog::parse(&t))
                .unwrap_or_default();
            entries.extend(crate::debian::changelog::parse(&gunzip(main)?));
            Some(entries)
        });
        out.insert(
            source.clone(),
            match found {
                Some(entries) if !entries.is_empty() => Changelog::Entries(entries),
                _ => Changelog::Missing,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// apt's words when a build step lost the resolver (taken from a failed CI build), and a
    /// failure that is no network error and is not built again.
    #[test]
    fn network_errors_are_told_from_other_build_failures() {
        let apt = "Get:1 http://mirror.example/debian trixie/main amd64 hello amd64 2.10-5\n\
                   Ign:1 http://mirror.example/debian trixie/main amd64 hello amd64 2.10-5\n\
                   Err:1 http://mirror.example/debian trixie/main amd64 hello amd64 2.10-5\n  \
                   Temporary failure resolving 'mirror.example'\n\
                   E: Failed to fetch http://mirror.example/debian/pool/main/h/hello/\
                   hello_2.10-5_amd64.deb  Temporary failure resolving 'mirror.example'\n\
                   E: Unable to fetch some archives, maybe run apt-get update or try with \
                   --fix-missing?\n";
        assert_eq!(
            transient_network_error(apt),
            Some(
                "E: Failed to fetch http://mirror.example/debian/pool/main/h/hello/\
                 hello_2.10-5_amd64.deb  Temporary failure resolving 'mirror.example'"
            )
        );
        let curl = "curl: (28) Connection timed out after 10001 milliseconds\n";
        assert!(transient_network_error(curl).is_some());
        let version = "E: Version '2.10-9' for 'hello' was not found\n";
        assert_eq!(transient_network_error(version), None);
    }

    #[test]
    fn colour_codes_are_stripped() {
        assert_eq!(
            strip_ansi("\x1b[91mthe-line\n\x1b[0mnext"),
            "the-line\nnext"
        );
    }

    #[test]
    fn context_links_and_non_regular_files_are_refused_by_name() {
        let repo = tempfile::tempdir().unwrap();
        let context = repo.path().join("images/web/context");
        std::fs::create_dir_all(context.join("sub")).unwrap();
        std::fs::write(context.join("sub/ok.txt"), "ok").unwrap();
        assert!(context_tar(repo.path(), "web", "FROM x\n").is_ok());

        std::os::unix::fs::symlink("/etc/passwd", context.join("sub/passwd")).unwrap();
        let e = context_tar(repo.path(), "web", "FROM x\n").unwrap_err();
        assert!(e.to_string().contains("context/sub/passwd"), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::remove_file(context.join("sub/passwd")).unwrap();

        let fifo = context.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let e = context_tar(repo.path(), "web", "FROM x\n").unwrap_err();
        assert!(e.to_string().contains("context/pipe"), "{e}");
        std::fs::remove_file(&fifo).unwrap();

        let outside = tempfile::tempdir().unwrap();
        std::fs::remove_dir_all(&context).unwrap();
        std::os::unix::fs::symlink(outside.path(), &context).unwrap();
        let e = context_tar(repo.path(), "web", "FROM x\n").unwrap_err();
        assert!(e.to_string().contains("images/web/context"), "{e}");
    }
}
