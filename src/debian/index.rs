//! Verified package indices in memory: one `SuiteIndex` per archive suite, merged into a
//! `ReleaseIndex` that answers "which versions of this package exist, and where" in one lookup.

use super::packages::BinaryPackage;
use anyhow::{bail, Result};
use rustc_hash::FxHashMap;
use serde::Serialize;

/// What the scan knows about one verified suite; also what the lock records as archive state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SuiteMeta {
    pub uri: String,
    pub suite: String,
    pub label: Option<String>,
    /// The verified `Date` as written in InRelease.
    pub date: String,
    pub inrelease_sha256: String,
    pub security: bool,
    /// apt's default pin for the suite (500, or 1/100 for NotAutomatic suites).
    pub pin: i32,
}

/// The packages of one suite (all its components) for one architecture.
#[derive(Debug, Clone)]
pub struct SuiteIndex {
    pub meta: SuiteMeta,
    pub packages: Vec<BinaryPackage>,
}

/// One available version of a binary package.
#[derive(Debug, Clone)]
pub struct Available {
    pub version: String,
    pub arch: String,
    pub source: String,
    pub source_version: String,
    /// Index into `ReleaseIndex::suites`.
    pub suite: usize,
}

/// All suites of one release for one architecture, merged by package name.
#[derive(Debug, Default)]
pub struct ReleaseIndex {
    pub release: String,
    pub arch: String,
    pub suites: Vec<SuiteMeta>,
    by_name: FxHashMap<String, Vec<Available>>,
    /// Hash of a package name → hash of its highest native (or `all`) version string. One
    /// probe of this small, inline table answers "is the installed version the newest?" for
    /// most packages of a scan without touching the strings of the index.
    newest: FxHashMap<u64, u64>,
}

/// The hash `ReleaseIndex::newest` uses (Fx: fast; a collision only sends a package down the
/// full comparison, except for the 2^-128 case of name and version colliding together).
pub fn fast_hash(s: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(s.as_bytes());
    h.finish()
}

impl ReleaseIndex {
    pub fn new(release: &str, arch: &str, suites: Vec<SuiteIndex>) -> ReleaseIndex {
        let mut idx = ReleaseIndex {
            release: release.to_string(),
            arch: arch.to_string(),
            ..Default::default()
        };
        for (n, s) in suites.into_iter().enumerate() {
            idx.suites.push(s.meta);
            for p in s.packages {
                idx.by_name.entry(p.name).or_default().push(Available {
                    version: p.version,
                    arch: p.arch,
                    source: p.source,
                    source_version: p.source_version,
                    suite: n,
                });
            }
        }
        for (name, versions) in &idx.by_name {
            let newest = versions
                .iter()
                .filter(|a| a.arch == idx.arch || a.arch == "all")
                .max_by(|a, b| super::version::compare(&a.version, &b.version));
            if let Some(v) = newest {
                idx.newest.insert(fast_hash(name), fast_hash(&v.version));
            }
        }
        idx
    }

    /// Whether `version` is known to be the newest native/`all` version of `name` (None: the
    /// index has no native/`all` version of it).
    pub fn is_newest(&self, name: &str, version: &str) -> Option<bool> {
        self.newest
            .get(&fast_hash(name))
            .map(|&h| h == fast_hash(version))
    }

    pub fn versions(&self, name: &str) -> &[Available] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn package_count(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }
}

/// The parsed-index cache format: one package per line, tab-separated fields. Loading it is
/// several times faster than re-parsing Packages and it is a tenth of the size.
pub fn encode_cache(packages: &[BinaryPackage]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packages.len() * 64);
    for p in packages {
        for (i, f) in [&p.name, &p.version, &p.arch, &p.source, &p.source_version]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                out.push(b'\t');
            }
            out.extend_from_slice(f.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

pub fn decode_cache(data: &[u8]) -> Result<Vec<BinaryPackage>> {
    let text = std::str::from_utf8(data)?;
    let mut out = Vec::with_capacity(text.len() / 50);
    for line in text.lines() {
        let mut f = line.split('\t');
        let (Some(name), Some(version), Some(arch), Some(source), Some(source_version), None) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            bail!("corrupt index cache line {line:?}");
        };
        out.push(BinaryPackage {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
            source: source.into(),
            source_version: source_version.into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trips() {
        let p = vec![BinaryPackage {
            name: "a".into(),
            version: "1:1.0-1".into(),
            arch: "all".into(),
            source: "a-src".into(),
            source_version: "1:1.0-1".into(),
        }];
        assert_eq!(decode_cache(&encode_cache(&p)).unwrap(), p);
        assert!(decode_cache(b"a\tb\n").is_err());
    }
}
