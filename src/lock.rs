//! `images/<name>/rebake.lock`: what is inside an image today. Written by the build stage,
//! read by scan (what is installed) and deploy (which digest passed its tests). Deterministic
//! YAML: fields in a fixed order, packages sorted by name, no timestamps but the archive's.

use crate::debian::status::InstalledPackage;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const LOCK_VERSION: u32 = 1;
pub const LOCK_FILE: &str = "rebake.lock";

/// One verified suite the image was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveState {
    pub uri: String,
    pub suite: String,
    /// `Date` of the verified InRelease.
    pub date: String,
    pub inrelease_sha256: String,
}

/// The image a `from:` policy was built on: its parent's locked image, as the parent's lock
/// recorded it when this image was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parent {
    /// The parent policy's image name.
    pub name: String,
    /// The reference the Dockerfile's `FROM` used: the parent's image id.
    pub image: String,
    /// The parent's pushed digest (`registry/repo@sha256:…`), when it was pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// SHA256 of the parent's lock file: which build of the parent this one was tested with.
    pub lock_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// SHA256 of the reproducible rootfs tarball: the base's identity.
    pub rootfs_sha256: String,
    /// The engine's image id of the imported rootfs.
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// The engine's image id (`sha256:…`).
    pub id: String,
    /// `registry/repo@sha256:…` once pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestResult {
    pub name: String,
    /// `pass`, `fail`, or `skip` (a check that could not run, e.g. `current` without an index).
    pub result: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSummary {
    pub passed: bool,
    pub results: Vec<TestResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub lock_version: u32,
    /// The image's name (its policy file's stem).
    pub name: String,
    pub suite: String,
    pub architecture: String,
    pub archive: Vec<ArchiveState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Base>,
    /// For a `from:` policy: the parent image it was built on (`base` is then the Debian base
    /// under the parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
    /// Why this build was made: `first build`, `packages changed`, `parent <name> changed`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every installed package, sorted by name (then architecture).
    pub packages: Vec<InstalledPackage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestSummary>,
}

pub fn path_for(repo: &Path, image: &str) -> PathBuf {
    repo.join("images").join(image).join(LOCK_FILE)
}

impl Lock {
    pub fn parse(text: &str, origin: &Path) -> Result<Lock> {
        if let Some((line, problem)) = crate::config::input::yaml_limits_problem(text) {
            let at = if line > 0 {
                format!(":{line}")
            } else {
                String::new()
            };
            bail!(
                "{}{at}: refused: {problem} (regenerate it with `rebake build`)",
                origin.display()
            );
        }
        let lock: Lock = serde_yaml_ng::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}", l.line()))
                .unwrap_or_default();
            anyhow::anyhow!(
                "{}{at}: malformed lock: {e} (regenerate it with `rebake build`)",
                origin.display()
            )
        })?;
        if lock.lock_version != LOCK_VERSION {
            bail!(
                "{}: lock_version {} is not supported (this rebake writes {LOCK_VERSION})",
                origin.display(),
                lock.lock_version
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &lock.packages {
            if !seen.insert((&p.name, &p.arch)) {
                bail!(
                    "{}: malformed lock: package {}:{} is listed more than once (regenerate it \
                     with `rebake build`)",
                    origin.display(),
                    p.name,
                    p.arch
                );
            }
        }
        Ok(lock)
    }

    pub fn read(path: &Path) -> Result<Lock> {
        let text = crate::config::input::read_input(None, path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Lock::parse(&text, path)
    }

    /// The lock's bytes: a banner, then YAML in field order with sorted packages. An archive
    /// URI never keeps credentials (the lock is committed and shown in pull requests).
    pub fn to_yaml(&self) -> Result<String> {
        let mut l = self.clone();
        l.packages.sort();
        for archive in &mut l.archive {
            archive.uri = crate::redact::split_credentials(&archive.uri).0;
        }
        let body = serde_yaml_ng::to_string(&l)?;
        // The banner is a YAML comment: a name with a line break (YAML also breaks lines at
        // U+0085, U+2028, U+2029) would end it and put the rest of the name into the lock's
        // YAML. Names that are not plain ASCII are written escaped.
        let name = if self.name.bytes().all(|b| b.is_ascii_graphic()) {
            self.name.clone()
        } else {
            format!("{:?}", self.name)
        };
        Ok(format!(
            "# generated by rebake: what is inside image {name}; do not edit\n{body}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_fields() {
        let lock = Lock {
            lock_version: 1,
            name: "web".into(),
            suite: "trixie".into(),
            architecture: "amd64".into(),
            archive: vec![],
            base: None,
            parent: None,
            reason: None,
            packages: vec![InstalledPackage {
                name: "a".into(),
                version: "1".into(),
                arch: "all".into(),
                source: "a".into(),
                source_version: "1".into(),
            }],
            image: None,
            tests: None,
        };
        let y = lock.to_yaml().unwrap();
        assert_eq!(Lock::parse(&y, Path::new("x")).unwrap(), lock);
        let bad = y.replace("suite:", "suit:");
        let e = Lock::parse(&bad, Path::new("images/web/rebake.lock")).unwrap_err();
        assert!(e.to_string().contains("images/web/rebake.lock:"), "{e}");
    }

    fn lock_text(packages: &[(&str, &str)]) -> String {
        let mut text = "lock_version: 1\nname: web\nsuite: trixie\narchitecture: amd64\n\
                        archive: []\npackages:\n"
            .to_string();
        for (name, arch) in packages {
            text.push_str(&format!(
                "- name: {name}\n  version: '1'\n  arch: {arch}\n  source: {name}\n  \
                 source_version: '1'\n"
            ));
        }
        text
    }

    #[test]
    fn refuses_a_package_listed_twice() {
        let origin = Path::new("images/web/rebake.lock");
        Lock::parse(&lock_text(&[("a", "amd64"), ("a", "i386")]), origin).unwrap();
        let e = Lock::parse(
            &lock_text(&[("a", "amd64"), ("b", "all"), ("a", "amd64")]),
            origin,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("images/web/rebake.lock") && e.contains("a:amd64"),
            "{e}"
        );
    }

    #[test]
    fn refuses_deep_or_large_yaml_before_parsing() {
        let origin = Path::new("images/web/rebake.lock");
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let started = std::time::Instant::now();
        let e = Lock::parse(&deep, origin).unwrap_err().to_string();
        assert!(
            e.contains("images/web/rebake.lock") && e.contains("limit of 64"),
            "{e}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let big = format!("{}# {}\n", lock_text(&[]), "x".repeat(1 << 20));
        let e = Lock::parse(&big, origin).unwrap_err().to_string();
        assert!(
            e.contains("images/web/rebake.lock") && e.contains("limit of 1048576"),
            "{e}"
        );
    }

    #[test]
    fn a_lock_never_stores_mirror_credentials() {
        let text = "Types: deb\nURIs: http://mirror:S3CRET@127.0.0.1:9/debian\nSuites: trixie\n\
                    Components: main\n";
        let entries = crate::debian::sources::parse(text, "c.sources").unwrap();
        let suites = crate::debian::sources::suites_for_release(&entries, "trixie").unwrap();
        let mut lock = Lock::parse(&lock_text(&[]), Path::new("x")).unwrap();
        lock.archive = suites
            .iter()
            .map(|s| ArchiveState {
                uri: s.uri.clone(),
                suite: s.suite.clone(),
                date: "d".into(),
                inrelease_sha256: "0".repeat(64),
            })
            .collect();
        // And a URI that still holds them (a lock built elsewhere).
        lock.archive.push(ArchiveState {
            uri: "https://u:S3CRET@127.0.0.1:9/other".into(),
            ..lock.archive[0].clone()
        });
        let yaml = lock.to_yaml().unwrap();
        assert!(!yaml.contains("S3CRET"), "{yaml}");
        assert!(yaml.contains("uri: http://127.0.0.1:9/debian"), "{yaml}");
        assert!(yaml.contains("uri: https://127.0.0.1:9/other"), "{yaml}");
    }

    /// Found by the `lock` fuzz target (fuzz/corpus/lock/regress-line-break-in-name): a name
    /// with a line break ended the banner comment, so the written lock did not read back.
    #[test]
    fn a_line_break_in_the_name_stays_inside_the_banner() {
        for name in [
            "web\nlock_version: 2",
            "web\r- x",
            "web\u{2028}x: 1",
            "web\u{85}y",
        ] {
            let lock = Lock {
                lock_version: 1,
                name: name.into(),
                suite: "trixie".into(),
                architecture: "amd64".into(),
                archive: vec![],
                base: None,
                parent: None,
                reason: None,
                packages: vec![],
                image: None,
                tests: None,
            };
            let y = lock.to_yaml().unwrap();
            assert_eq!(Lock::parse(&y, Path::new("x")).unwrap(), lock, "{name:?}");
        }
    }
}
