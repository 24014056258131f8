//! The base's rootfs re-written the way debuerreotype re-writes Debian's official images:
//! sorted, mtimes clamped to the epoch, numeric owners, logs, caches, apt lists and host
//! files emptied or dropped, rebake's own apt sources and keyrings added; hashed as written.
//!
//! The same re-writing, minus what only a base needs, makes the layers the engine builds on
//! top of it reproducible ([`normalize_layer`]): a RUN step leaves the time of the build in
//! every mtime it touches and run-dependent files (logs, caches, apt lists, `-old` copies).

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
    /// Extended attributes (`SCHILY.xattr.*` PAX records, e.g. `security.capability`), kept in
    /// image layers; every other PAX record (atime, ctime, sub-second mtime) is dropped.
    xattrs: Vec<(String, Vec<u8>)>,
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
        xattrs: Vec::new(),
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

/// Which tarball is re-written: mmdebstrap's rootfs, or a layer the engine built on the base.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Base,
    Layer,
}

fn fate(path: &str, kind: tar::EntryType, mode: Mode) -> Fate {
    let file = !kind.is_dir();
    let under = |dir: &str| path.strip_prefix(dir).filter(|r| r.starts_with('/'));
    let name = path.rsplit('/').next().unwrap_or(path);
    if mode == Mode::Layer && name.starts_with(".wh.") {
        // A whiteout deletes a path of a lower layer (the RUN's own `rm`): always kept.
        return Fate::Keep;
    }
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
    if mode == Mode::Base && path.starts_with("etc/apt/sources.list.d/") && file {
        // Replaced by rebake's own sources file.
        return Fate::Drop;
    }
    if mode == Mode::Layer && file && path.contains("/__pycache__/") && path.ends_with(".pyc") {
        // Byte code written by maintainer scripts (marshal output is not stable); Python
        // compiles it again when it needs it.
        return Fate::Drop;
    }
    Fate::Keep
}

/// Reads a tarball into sorted items: mtimes clamped to `epoch`, `fate` applied.
fn read_items(raw: &Path, epoch: u64, mode: Mode) -> Result<BTreeMap<String, Item>> {
    let what = match mode {
        Mode::Base => "mmdebstrap's tarball",
        Mode::Layer => "the image layer",
    };
    let file =
        std::fs::File::open(raw).with_context(|| format!("cannot open {}", raw.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    for entry in archive
        .entries()
        .with_context(|| format!("{what} is unreadable"))?
    {
        let mut entry = entry.with_context(|| format!("{what} is unreadable"))?;
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
        let fate = fate(&path, kind, mode);
        if matches!(fate, Fate::Drop) {
            continue;
        }
        let mut xattrs = Vec::new();
        if mode == Mode::Layer {
            if let Some(pax) = entry.pax_extensions()? {
                for ext in pax {
                    let ext = ext?;
                    if let Ok(key) = ext.key() {
                        if key.starts_with("SCHILY.xattr.") {
                            xattrs.push((key.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                }
                xattrs.sort();
            }
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
                xattrs,
            },
        );
    }
    Ok(items)
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
    let mut items = read_items(raw, epoch, Mode::Base)?;

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
    relink(&mut items, "rootfs")?;
    write_items(&items, out)
}

/// Re-writes one image layer (`raw`, as `docker save` gives it) into `out`: sorted, mtimes
/// clamped to `epoch`, numeric owners only, no atime/ctime, run-dependent files dropped or
/// emptied (as for the base: logs, apt lists and caches, ldconfig's aux-cache, `-old`
/// copies, byte code), whiteouts and extended attributes kept. Returns the SHA256 of `out`
/// (the layer's diff id).
pub(super) fn normalize_layer(raw: &Path, out: &Path, epoch: i64) -> Result<String> {
    let mut items = read_items(raw, epoch.max(0) as u64, Mode::Layer)?;
    relink(&mut items, "image layer")?;
    write_items(&items, out)
}

/// Hard links: sorting may put a link before the file it links to; the first path (in
/// order) of each group becomes the file, the others link to it.
fn relink(items: &mut BTreeMap<String, Item>, what: &str) -> Result<()> {
    let links: Vec<(String, String)> = items
        .values()
        .filter(|i| i.kind == tar::EntryType::Link)
        .filter_map(|i| i.link.clone().map(|t| (i.path.clone(), t)))
        .collect();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, target) in links {
        if !items.contains_key(&target) {
            bail!("{what}: hard link {path} points at {target}, which is not in the tarball");
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
    Ok(())
}

/// Writes the items in order to `out`; returns its SHA256.
fn write_items(items: &BTreeMap<String, Item>, out: &Path) -> Result<String> {
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
    if !item.xattrs.is_empty() {
        builder.append_pax_extensions(item.xattrs.iter().map(|(k, v)| (k.as_str(), &v[..])))?;
    }
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

    #[test]
    fn layer_keeps_whiteouts_and_xattrs_and_drops_what_the_run_left() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, reversed: bool| {
            let path = dir.path().join(name);
            let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
            let mut entries: Vec<(&str, &[u8])> = vec![
                ("usr/bin/ping", b"elf"),
                ("var/lib/apt/lists/.wh.lock", b""),
                ("var/cache/ldconfig/aux-cache", b"inodes"),
                ("var/log/dpkg.log", b"2026-11-29 19:00:00 install"),
                (
                    "usr/lib/python3/dist-packages/x/__pycache__/a.cpython-313.pyc",
                    b"pyc",
                ),
                ("var/lib/dpkg/status-old", b"old"),
                ("etc/apt/sources.list.d/extra.sources", b"Types: deb"),
            ];
            if reversed {
                entries.reverse();
            }
            for (name, data) in entries {
                if name == "usr/bin/ping" {
                    b.append_pax_extensions([
                        ("SCHILY.xattr.security.capability", &b"\x01\x00\x00\x02"[..]),
                        ("atime", if reversed { &b"1"[..] } else { &b"2"[..] }),
                    ])
                    .unwrap();
                }
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o755);
                h.set_mtime(if reversed {
                    4_000_000_000
                } else {
                    4_000_000_001
                });
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, data).unwrap();
            }
            b.finish().unwrap();
            path
        };
        let (a, b) = (write("a.tar", false), write("b.tar", true));
        let (oa, ob) = (dir.path().join("oa.tar"), dir.path().join("ob.tar"));
        let sha = normalize_layer(&a, &oa, 1_700_000_000).unwrap();
        assert_eq!(sha, normalize_layer(&b, &ob, 1_700_000_000).unwrap());
        assert_eq!(std::fs::read(&oa).unwrap(), std::fs::read(&ob).unwrap());
        let bytes = std::fs::read(&oa).unwrap();
        let mut seen = Vec::new();
        for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            assert_eq!(e.header().mtime().unwrap(), 1_700_000_000, "{name}");
            let pax: Vec<String> = e
                .pax_extensions()
                .unwrap()
                .map(|p| p.map(|x| x.unwrap().key().unwrap().to_string()).collect())
                .unwrap_or_default();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            match name.as_str() {
                "usr/bin/ping" => assert_eq!(pax, ["SCHILY.xattr.security.capability"]),
                "var/log/dpkg.log" => assert!(data.is_empty()),
                _ => assert!(pax.is_empty(), "{name}: {pax:?}"),
            }
            seen.push(name);
        }
        assert_eq!(
            seen,
            [
                "etc/apt/sources.list.d/extra.sources",
                "usr/bin/ping",
                "var/lib/apt/lists/.wh.lock",
                "var/log/dpkg.log"
            ]
        );
    }
}
