//! The (verified) `Release` text of a suite: its identity, dates, pinning flags and the
//! hashes of every index file.

use super::deb822;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// A file listed in the `SHA256:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Release {
    pub origin: Option<String>,
    pub label: Option<String>,
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub date: DateTime<Utc>,
    /// The `Date` exactly as written, for the lock.
    pub date_text: String,
    pub valid_until: Option<DateTime<Utc>>,
    pub not_automatic: bool,
    pub but_automatic_upgrades: bool,
    pub acquire_by_hash: bool,
    /// Path relative to `dists/<suite>/` → hash and size.
    pub sha256: BTreeMap<String, IndexFile>,
}

/// Parses a Release date (`Sat, 15 Nov 2025 09:23:45 UTC`, RFC 2822 with a zone name).
pub fn parse_date(s: &str) -> Result<DateTime<Utc>> {
    let s = s.trim();
    let normalized = s
        .strip_suffix(" UTC")
        .or_else(|| s.strip_suffix(" GMT"))
        .or_else(|| s.strip_suffix(" Z"))
        .map(|p| format!("{p} +0000"))
        .unwrap_or_else(|| s.to_string());
    DateTime::parse_from_rfc2822(&normalized)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| anyhow!("{s:?} is not an RFC 2822 date: {e}"))
}

fn yes(v: Option<&str>) -> bool {
    v.is_some_and(|v| v.trim().eq_ignore_ascii_case("yes"))
}

impl Release {
    pub fn parse(text: &str) -> Result<Release> {
        let paragraphs = deb822::parse(text)?;
        let p = paragraphs
            .first()
            .ok_or_else(|| anyhow!("Release file is empty"))?;
        let date_text = p
            .get("Date")
            .ok_or_else(|| anyhow!("Release file has no Date field"))?
            .to_string();
        let date = parse_date(&date_text).context("Release field Date")?;
        let valid_until = p
            .get("Valid-Until")
            .map(parse_date)
            .transpose()
            .context("Release field Valid-Until")?;
        let mut sha256 = BTreeMap::new();
        if let Some(list) = p.get("SHA256") {
            for line in list.lines().filter(|l| !l.trim().is_empty()) {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let [hash, size, path] = parts[..] else {
                    bail!("Release SHA256 line {line:?} is not '<hash> <size> <path>'");
                };
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("Release SHA256 line {line:?} has no valid SHA256");
                }
                let size = size
                    .parse()
                    .with_context(|| format!("Release SHA256 line {line:?}: bad size"))?;
                sha256.insert(
                    path.to_string(),
                    IndexFile {
                        sha256: hash.to_ascii_lowercase(),
                        size,
                    },
                );
            }
        }
        if sha256.is_empty() {
            bail!("Release file has no SHA256 list (rebake accepts only SHA256-verified indices)");
        }
        let field = |n: &str| p.get(n).map(str::to_string);
        Ok(Release {
            origin: field("Origin"),
            label: field("Label"),
            suite: field("Suite"),
            codename: field("Codename"),
            date,
            date_text,
            valid_until,
            not_automatic: yes(p.get("NotAutomatic")),
            but_automatic_upgrades: yes(p.get("ButAutomaticUpgrades")),
            acquire_by_hash: yes(p.get("Acquire-By-Hash")),
            sha256,
        })
    }

    /// Debian's security archive says so in its Label; by name as a fallback.
    pub fn is_security(&self, suite_name: &str) -> bool {
        self.label.as_deref() == Some("Debian-Security") || suite_name.ends_with("-security")
    }

    /// apt's default pin for this suite: 1 for NotAutomatic, 100 with ButAutomaticUpgrades,
    /// else 500.
    pub fn default_pin(&self) -> i32 {
        match (self.not_automatic, self.but_automatic_upgrades) {
            (true, true) => 100,
            (true, false) => 1,
            _ => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_release() {
        let text = "Origin: Debian\nLabel: Debian-Security\nSuite: stable-security\nCodename: trixie-security\nDate: Sat, 15 Nov 2025 09:23:45 UTC\nValid-Until: Sat, 22 Nov 2025 09:23:45 UTC\nAcquire-By-Hash: yes\nSHA256:\n 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef 1234 main/binary-amd64/Packages.xz\n";
        let r = Release::parse(text).unwrap();
        assert!(r.is_security("x"));
        assert!(r.acquire_by_hash);
        assert_eq!(r.sha256["main/binary-amd64/Packages.xz"].size, 1234);
        assert!(r.valid_until.unwrap() > r.date);
        assert_eq!(r.default_pin(), 500);
    }

    #[test]
    fn rejects_missing_date_and_hashes() {
        assert!(Release::parse("Suite: x\n").is_err());
        assert!(Release::parse("Date: Sat, 15 Nov 2025 09:23:45 UTC\n").is_err());
    }
}
