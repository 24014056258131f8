//! Debian changelogs (`debian/changelog`, shipped as `/usr/share/doc/<pkg>/changelog.Debian.gz`,
//! deb-changelog(5)): each entry's version, the distribution it was uploaded to, its urgency,
//! and the CVE ids its text names. Parsed as `dpkg-parsechangelog` parses them (tested against
//! it on real changelogs); the package's own record of what each upload fixed, covered by the
//! archive's signature chain (InRelease → Packages SHA256 → .deb).

use super::version;
use std::cmp::Ordering;

/// One upload: `package (version) distribution(s); urgency=…`, its text, its trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub package: String,
    pub version: String,
    /// Usually one, like `trixie-security`.
    pub distributions: Vec<String>,
    /// `low`, `medium`, `high`, `emergency`, `critical` (lowercase, as dpkg reports it).
    pub urgency: Option<String>,
    /// The CVE ids the entry's text names, in order, each once.
    pub cves: Vec<String>,
}

impl Entry {
    /// Whether the entry went to a security suite of `release` (`<release>-security`; also the
    /// older `<release>/updates`).
    pub fn is_security_upload(&self, release: &str) -> bool {
        self.distributions
            .iter()
            .any(|d| *d == format!("{release}-security") || *d == format!("{release}/updates"))
    }
}

/// The header line's parts, when `line` is one: `name (version) dist [dist…]; metadata`
/// (dpkg's `Dpkg::Changelog::Entry::Debian` header pattern).
fn header(line: &str) -> Option<Entry> {
    let first = line.chars().next()?;
    if !(first.is_ascii_alphanumeric() || first == '_') {
        return None;
    }
    let (package, rest) = line.split_once(" (")?;
    let valid_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c);
    if !package.chars().skip(1).all(valid_name) {
        return None;
    }
    let (version, rest) = rest.split_once(')')?;
    if version.is_empty() || version.contains(['(', ' ', '\t']) {
        return None;
    }
    let (dists, metadata) = rest.split_once(';')?;
    let distributions: Vec<String> = dists.split_whitespace().map(str::to_string).collect();
    let valid_dist = |d: &String| {
        d.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    };
    if distributions.is_empty() || !distributions.iter().all(valid_dist) || !dists.starts_with(' ')
    {
        return None;
    }
    let urgency = metadata.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("urgency")
            .then(|| v.split_whitespace().next().unwrap_or("").to_lowercase())
    });
    Some(Entry {
        package: package.to_string(),
        version: version.to_string(),
        distributions,
        urgency,
        cves: Vec::new(),
    })
}

/// The CVE ids in `text`: `CVE-<year>-<4 or more digits>`, in order.
pub fn cve_ids(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(pos) = text[from..].find("CVE-") {
        let start = from + pos;
        let digits = |at: usize| {
            bytes[at.min(bytes.len())..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        };
        let year = digits(start + 4);
        let after_year = start + 4 + year;
        if year == 4 && bytes.get(after_year) == Some(&b'-') {
            let number = digits(after_year + 1);
            let end = after_year + 1 + number;
            // Not the start of a longer word like CVE-2024-12345abc.
            let bounded = bytes.get(end).is_none_or(|b| !b.is_ascii_alphanumeric());
            let preceded = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
            if number >= 4 && bounded && preceded {
                out.push(text[start..end].to_string());
            }
        }
        from = start + 4;
    }
    out
}

/// Every entry of a changelog, newest first, as `dpkg-parsechangelog --all` lists them. Text
/// before the first entry and a trailing old-format section (`Old Changelog:`, `Local
/// variables:`) are not entries.
pub fn parse(text: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut body = String::new();
    let finish = |entry: Option<&mut Entry>, body: &mut String| {
        if let Some(e) = entry {
            for id in cve_ids(body) {
                if !e.cves.contains(&id) {
                    e.cves.push(id);
                }
            }
        }
        body.clear();
    };
    for line in text.lines() {
        if let Some(e) = header(line) {
            finish(entries.last_mut(), &mut body);
            entries.push(e);
            continue;
        }
        if line.starts_with("Old Changelog:")
            || line.starts_with("Local variables:")
            || line.starts_with("Old changelog:")
        {
            break;
        }
        body.push_str(line);
        body.push('\n');
    }
    finish(entries.last_mut(), &mut body);
    entries
}

/// The entries in `(after, up_to]`, newest first: what an update from `after` to `up_to`
/// brings. `after` None: every entry up to `up_to`.
pub fn between<'a>(entries: &'a [Entry], after: Option<&str>, up_to: &str) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| version::compare(&e.version, up_to) != Ordering::Greater)
        .filter(|e| after.is_none_or(|a| version::compare(&e.version, a) == Ordering::Greater))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "openssl (3.5.9-1~deb13u1) trixie; urgency=medium

  * Import 3.5.9

 -- Sebastian Andrzej Siewior <sebastian@breakpoint.cc>  Sat, 01 Nov 2025 10:00:00 +0100

openssl (3.5.7-1~deb13u3) trixie-security; urgency=high

  * CVE-2025-0001 (\"a\"), CVE-2025-0002.
  * Mentions CVE-2025-0001 again and XCVE-2025-9999 and CVE-2025-12.

 -- Someone <someone@example.org>  Fri, 10 Oct 2025 10:00:00 +0200

openssl (3.5.1-1) unstable; urgency=Medium, binary-only=yes

  * CVE-2024-12797

 -- Someone <someone@example.org>  Fri, 10 Jul 2025 10:00:00 +0200

Old Changelog:
openssl (0.9) unstable; urgency=low
";

    #[test]
    fn entries_with_distribution_urgency_and_cves() {
        let e = parse(TEXT);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].version, "3.5.9-1~deb13u1");
        assert_eq!(e[0].distributions, ["trixie"]);
        assert!(e[0].cves.is_empty());
        assert_eq!(e[1].urgency.as_deref(), Some("high"));
        assert_eq!(e[1].cves, ["CVE-2025-0001", "CVE-2025-0002"]);
        assert!(e[1].is_security_upload("trixie"));
        assert!(!e[0].is_security_upload("trixie"));
        assert_eq!(e[2].urgency.as_deref(), Some("medium"));
        assert_eq!(e[2].cves, ["CVE-2024-12797"]);
    }

    #[test]
    fn the_range_is_after_old_up_to_new() {
        let e = parse(TEXT);
        let got: Vec<&str> = between(&e, Some("3.5.1-1"), "3.5.9-1~deb13u1")
            .iter()
            .map(|e| e.version.as_str())
            .collect();
        assert_eq!(got, ["3.5.9-1~deb13u1", "3.5.7-1~deb13u3"]);
        assert_eq!(
            between(&e, Some("3.5.7-1~deb13u3"), "3.5.7-1~deb13u3").len(),
            0
        );
        assert_eq!(between(&e, None, "3.5.7-1~deb13u3").len(), 2);
    }

    #[test]
    fn cve_ids_need_the_whole_pattern() {
        assert_eq!(
            cve_ids("CVE-2024-1234, (CVE-2024-123456) CVE-24-1234 CVE-2024-123 CVE-2024-1234x"),
            ["CVE-2024-1234", "CVE-2024-123456"]
        );
        assert!(cve_ids("CVE-").is_empty());
        assert!(cve_ids("ends with CVE-2024").is_empty());
    }
}
