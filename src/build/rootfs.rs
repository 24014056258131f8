//! The base's rootfs re-written the way debuerreotype re-writes Debian's official images:
//! sorted, mtimes clamped to the epoch, numeric owners, logs, caches, apt lists and host
//! files emptied or dropped, rebake's own apt sources and keyrings added; hashed as written.

use super::base::sources_text;
use crate::debian::sources::SuiteSource;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Bumped whenever the rootfs re-writing changes, so cached bases are rebuilt.
pub(super) const REWRITE_VERSION: &str = "rebake-rootfs-v1";
/// Where the image's apt sources go (the one file in `sources.list.d`).
const IMAGE_SOURCES: &str = "etc/apt/sources.list.d/debian.sources";

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
pub(super) fn normalize_rootfs(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::sha256_hex;
    use crate::debian::sources::SignedBy;

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
            credentials: None,
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
}
