//! Debian version order, exactly as dpkg's `verrevcmp` defines it, and the Debian policy
//! grammar for versions and package names.
//!
//! Written by hand because the `debversion` crate orders `0.9+ds-4` vs `0.9+ds0-3` unlike
//! dpkg (an empty digit run must count as 0). `tests/all/debian_semantics.rs` proves this
//! module against `dpkg --compare-versions` on real versions from the host's Packages files.

use std::cmp::Ordering;
use std::fmt;

/// A version split into epoch, upstream version and Debian revision.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub epoch: u64,
    pub upstream: &'a str,
    pub revision: &'a str,
}

/// Why a string is not a Debian version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("version is empty")]
    Empty,
    #[error("epoch '{0}' is not a number")]
    BadEpoch(String),
    #[error("upstream version must start with a digit")]
    UpstreamStart,
    #[error("character {0:?} is not allowed in a Debian version")]
    BadChar(char),
    #[error("revision is empty after '-'")]
    EmptyRevision,
}

/// Splits and checks a version against Debian policy 5.6.12 (the grammar dpkg enforces).
pub fn parse(version: &str) -> Result<Parts<'_>, VersionError> {
    if version.is_empty() {
        return Err(VersionError::Empty);
    }
    let (epoch, rest) = match version.split_once(':') {
        Some((e, rest)) => {
            if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                return Err(VersionError::BadEpoch(e.to_string()));
            }
            let epoch = e
                .parse::<u64>()
                .map_err(|_| VersionError::BadEpoch(e.to_string()))?;
            (epoch, rest)
        }
        None => (0, version),
    };
    let (upstream, revision) = match rest.rfind('-') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    if rest.ends_with('-') {
        return Err(VersionError::EmptyRevision);
    }
    if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(VersionError::UpstreamStart);
    }
    for c in upstream.chars() {
        if !(c.is_ascii_alphanumeric() || ".+-~:".contains(c)) || c == ':' {
            return Err(VersionError::BadChar(c));
        }
    }
    for c in revision.chars() {
        if !(c.is_ascii_alphanumeric() || ".+~".contains(c)) {
            return Err(VersionError::BadChar(c));
        }
    }
    Ok(Parts {
        epoch,
        upstream,
        revision,
    })
}

/// Splits without checking: what dpkg does when comparing versions from an index. The epoch
/// is the leading digits before the first ':', everything after the last '-' is the revision.
fn split_lenient(version: &str) -> (u64, &str, &str) {
    let version = version.trim();
    let (epoch, rest) = match version.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse::<u64>().unwrap_or(u64::MAX), rest)
        }
        _ => (0, version),
    };
    match rest.rfind('-') {
        Some(i) => (epoch, &rest[..i], &rest[i + 1..]),
        None => (epoch, rest, ""),
    }
}

/// The weight dpkg gives a non-digit character: `~` sorts before everything, even the end of
/// the string; letters before other characters.
#[inline]
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

/// dpkg's `verrevcmp` on one part (upstream or revision).
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0i32;
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == 0 {
                first_diff = a[i] as i32 - b[j] as i32;
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

/// Compares two versions the way `dpkg --compare-versions` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    // The common case in a scan: the installed version is the archive's.
    if a == b {
        return Ordering::Equal;
    }
    let (ea, ua, ra) = split_lenient(a);
    let (eb, ub, rb) = split_lenient(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| verrevcmp(ra.as_bytes(), rb.as_bytes()))
}

/// A checked Debian version that orders like dpkg. Equality is dpkg's (`1.0` == `0:1.0`).
#[derive(Clone, Debug)]
pub struct Version(String);

impl Version {
    pub fn new(s: &str) -> Result<Self, VersionError> {
        parse(s)?;
        Ok(Version(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        compare(&self.0, &other.0) == Ordering::Equal
    }
}
impl Eq for Version {}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(&self.0, &other.0)
    }
}
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Debian policy 5.6.1: at least two characters, lower case letters, digits, `+ - .`,
/// starting with an alphanumeric character.
pub fn is_valid_package_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(&c))
}

/// Debian architecture names as they appear in Packages and status files.
pub fn is_valid_arch(arch: &str) -> bool {
    !arch.is_empty()
        && arch
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_dpkg_on_known_cases() {
        let lt = [
            ("1.0~rc1", "1.0"),
            ("1.0", "1.0+b1"),
            ("1:0.1", "2:0.0"),
            ("3.0.11-1~deb12u2", "3.0.15-1~deb12u1"),
            ("1.0-1", "1.0-1+deb12u1"),
            ("a", "b"),
            ("1.0~", "1.0"),
            ("1.0~~", "1.0~"),
        ];
        for (a, b) in lt {
            assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(compare(b, a), Ordering::Greater, "{b} > {a}");
        }
        // An empty digit run counts as 0: upstreams are equal, the revision decides.
        assert_eq!(compare("0.9+ds-4", "0.9+ds0-3"), Ordering::Greater);
        assert_eq!(compare("0:1.0", "1.0"), Ordering::Equal);
        assert_eq!(compare("1.00", "1.0"), Ordering::Equal);
    }

    #[test]
    fn grammar() {
        assert!(parse("1:2.3-4+deb12u1").is_ok());
        assert!(parse("2.3").is_ok());
        assert!(parse("1.2-3-4").is_ok());
        assert!(parse("").is_err());
        assert!(parse("x1.0").is_err());
        assert!(parse("1.0;rm -rf").is_err());
        assert!(parse("1.0 ").is_err());
        assert!(parse("1.0-").is_err());
        assert!(parse("a:1.0").is_err());
        assert!(is_valid_package_name("libssl3t64"));
        assert!(is_valid_package_name("g++"));
        assert!(!is_valid_package_name("A"));
        assert!(!is_valid_package_name("nginx;id"));
        assert!(!is_valid_package_name("-x"));
    }
}
