//! Security context from the Debian Security Tracker: which CVEs an update fixes, their
//! urgency and the tracker's status for the release, and the DSA/DLA that announced the fix.
//! Optional: without it a scan still tells security updates (by suite) from others.

use crate::debian::version::compare;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The tracker's view of one CVE in one release (`releases.<codename>` in its JSON).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ReleaseStatus {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub fixed_version: Option<String>,
    #[serde(default)]
    pub urgency: Option<String>,
    #[serde(default)]
    pub nodsa: Option<String>,
    #[serde(default)]
    pub nodsa_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
struct Issue {
    #[serde(default)]
    releases: HashMap<String, ReleaseStatus>,
}

/// One announced advisory (DSA or DLA) from the tracker's `data/DSA/list` format.
#[derive(Debug, Clone)]
pub struct Advisory {
    pub id: String,
    pub source: String,
    pub cves: Vec<String>,
    /// Release codename → fixed source version.
    pub fixed: BTreeMap<String, String>,
}

/// A CVE an update fixes, as a reviewer sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct CveFix {
    pub id: String,
    /// Tracker urgency: low, medium, high, unimportant, "not yet assigned".
    pub urgency: Option<String>,
    /// The tracker's status for the release: resolved, open, undetermined.
    pub status: String,
    /// Why Debian handled it outside a DSA: no-dsa, postponed, ignored, unimportant.
    pub note: Option<String>,
    /// Where rebake learnt of it: `tracker`, `changelog` (the package's own changelog), or both.
    pub learnt_from: Vec<String>,
    /// The version whose changelog entry names it, when a changelog does.
    pub fixed_in: Option<String>,
}

/// What the tracker says an update from `installed` to `candidate` (source versions) fixes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Fixes {
    pub cves: Vec<CveFix>,
    pub advisories: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Tracker {
    by_source: HashMap<String, BTreeMap<String, Issue>>,
    advisories: HashMap<String, Vec<Advisory>>,
}

/// The note shown next to a CVE: Debian's own words, never "won't fix".
fn note_for(r: &ReleaseStatus) -> Option<String> {
    match r.nodsa_reason.as_deref() {
        Some("postponed") => return Some("postponed".into()),
        Some("ignored") => return Some("ignored".into()),
        _ => {}
    }
    if r.nodsa.is_some() {
        return Some("no-dsa".into());
    }
    if r.urgency.as_deref() == Some("unimportant") {
        return Some("unimportant".into());
    }
    None
}

impl Tracker {
    /// Parses the tracker's JSON (`/tracker/data/json`).
    pub fn from_json(bytes: &[u8]) -> Result<Tracker> {
        let by_source: HashMap<String, BTreeMap<String, Issue>> =
            serde_json::from_slice(bytes).context("security tracker JSON is malformed")?;
        Ok(Tracker {
            by_source,
            advisories: HashMap::new(),
        })
    }

    /// Adds advisories from a `DSA/list` or `DLA/list` text.
    pub fn add_advisory_list(&mut self, text: &str) -> Result<()> {
        for a in parse_advisory_list(text)? {
            self.advisories.entry(a.source.clone()).or_default().push(a);
        }
        Ok(())
    }

    /// What moving `source` from `installed` to `candidate` fixes in `release`.
    pub fn fixes(&self, source: &str, release: &str, installed: &str, candidate: &str) -> Fixes {
        let in_range = |v: &str| {
            compare(installed, v) == Ordering::Less && compare(v, candidate) != Ordering::Greater
        };
        let mut out = Fixes::default();
        if let Some(issues) = self.by_source.get(source) {
            for (id, issue) in issues {
                let Some(r) = issue.releases.get(release) else {
                    continue;
                };
                let Some(fixed) = r.fixed_version.as_deref() else {
                    continue;
                };
                if fixed != "0" && in_range(fixed) {
                    out.cves.push(CveFix {
                        id: id.clone(),
                        urgency: r.urgency.clone(),
                        status: r.status.clone(),
                        note: note_for(r),
                        learnt_from: vec!["tracker".into()],
                        fixed_in: None,
                    });
                }
            }
        }
        for a in self.advisories.get(source).into_iter().flatten() {
            if a.fixed.get(release).is_some_and(|v| in_range(v)) {
                out.advisories.push(a.id.clone());
                for c in &a.cves {
                    if !out.cves.iter().any(|f| &f.id == c) {
                        out.cves.push(CveFix {
                            id: c.clone(),
                            urgency: None,
                            status: "resolved".into(),
                            note: None,
                            learnt_from: vec!["tracker".into()],
                            fixed_in: None,
                        });
                    }
                }
            }
        }
        out.cves.sort();
        out.advisories.sort();
        out.advisories.dedup();
        out
    }
}

/// Parses the tracker's advisory list format:
/// ```text
/// [15 Nov 2025] DSA-6050-1 openssl - security update
///     {CVE-2025-9230 CVE-2025-9231}
///     [trixie] - openssl 3.5.4-1~deb13u1
/// ```
pub fn parse_advisory_list(text: &str) -> Result<Vec<Advisory>> {
    let mut out: Vec<Advisory> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('[') {
            let rest = line.split_once(']').map(|(_, r)| r.trim()).unwrap_or("");
            let mut w = rest.split_whitespace();
            let (Some(id), Some(source)) = (w.next(), w.next()) else {
                bail!(
                    "advisory list line {}: expected '[date] ID source - ...'",
                    n + 1
                );
            };
            out.push(Advisory {
                id: id.to_string(),
                source: source.to_string(),
                cves: Vec::new(),
                fixed: BTreeMap::new(),
            });
        } else if let Some(cur) = out.last_mut() {
            let t = line.trim();
            if let Some(list) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                cur.cves.extend(list.split_whitespace().map(str::to_string));
            } else if let Some(r) = t.strip_prefix('[') {
                // "[trixie] - openssl 3.5.4-1~deb13u1"
                let Some((rel, rest)) = r.split_once(']') else {
                    continue;
                };
                let words: Vec<&str> = rest.split_whitespace().collect();
                if let [_, _, v, ..] = words[..] {
                    if !v.starts_with('<') {
                        cur.fixed.insert(rel.to_string(), v.to_string());
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The largest Security Tracker JSON accepted (Debian's is about 80 MB uncompressed).
pub const TRACKER_JSON_LIMIT: u64 = 256 * crate::download::MIB;
/// The largest `DSA/list` or `DLA/list` accepted (each is a few MB).
pub const ADVISORY_LIST_LIMIT: u64 = 32 * crate::download::MIB;

/// Reads a path or downloads an http(s) URL: at most `limit` bytes (`what` names whose limit,
/// for the error), within the download timeouts ([`crate::download::Timeouts::from_env`]).
pub async fn read_location(location: &str, limit: u64, what: &str) -> Result<Vec<u8>> {
    use crate::download::{self, Timeouts};
    if location.starts_with("http://") || location.starts_with("https://") {
        let timeouts = Timeouts::from_env()?;
        let client = timeouts.client().context("cannot create HTTP client")?;
        download::get(&client, location, limit, what, &timeouts).await
    } else {
        download::read_file(std::path::Path::new(location), limit, what)
            .with_context(|| format!("cannot read {location}"))
    }
}

/// Where Debian publishes the Security Tracker's data: rebake's default tracker.
/// The Security Tracker page of a CVE, DSA or DLA.
pub fn tracker_page(id: &str) -> String {
    format!("https://security-tracker.debian.org/tracker/{id}")
}

pub const DEFAULT_TRACKER_URL: &str = "https://security-tracker.debian.org/tracker/data/json";

/// The tracker's JSON from `url`, through a cache in `cache_dir`: a conditional GET (its
/// `ETag`/`Last-Modified`) answered 304 reads the cached copy. Bounded like every download
/// ([`crate::download::Timeouts`], [`TRACKER_JSON_LIMIT`]). When the download fails and a cached copy exists,
/// that copy is used and the failure returned beside it.
pub async fn fetch_tracker_json(
    url: &str,
    cache_dir: &Path,
) -> Result<(Vec<u8>, Option<anyhow::Error>)> {
    let body_path = cache_dir.join("tracker.json");
    let meta_path = cache_dir.join("tracker.validators");
    let cached = std::fs::read(&body_path).ok();
    let validators = std::fs::read_to_string(&meta_path).unwrap_or_default();
    let header = |name: &str| {
        validators
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
    };
    let fetched: Result<Option<(Vec<u8>, String)>> = async {
        use crate::download::{self, Timeouts};
        let t = Timeouts::from_env()?;
        let client = t.client().context("cannot create HTTP client")?;
        let mut req = client.get(url);
        if cached.is_some() {
            if let Some(etag) = header("ETag") {
                req = req.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = header("Last-Modified") {
                req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
            }
        }
        let started = tokio::time::Instant::now();
        let resp = download::send(req, url, &t, started + t.overall, t.overall).await?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED && cached.is_some() {
            return Ok(None);
        }
        if !resp.status().is_success() {
            bail!("cannot fetch {url}: HTTP {}", resp.status());
        }
        let mut meta = String::new();
        for name in ["ETag", "Last-Modified"] {
            if let Some(v) = resp.headers().get(name).and_then(|v| v.to_str().ok()) {
                meta.push_str(&format!("{name}: {v}\n"));
            }
        }
        let size = resp
            .content_length()
            .unwrap_or(TRACKER_JSON_LIMIT)
            .min(TRACKER_JSON_LIMIT);
        let overall = t.sized(size);
        let what = "the limit for the Security Tracker JSON";
        let body = download::read_body(
            resp,
            url,
            TRACKER_JSON_LIMIT,
            what,
            &t,
            started + overall,
            overall,
        )
        .await?;
        Ok(Some((body, meta)))
    }
    .await;
    match (fetched, cached) {
        (Ok(Some((body, meta))), _) => {
            crate::state::write_atomic(&body_path, &body)?;
            crate::state::write_atomic(&meta_path, meta.as_bytes())?;
            Ok((body, None))
        }
        (Ok(None), Some(cached)) => Ok((cached, None)),
        (Ok(None), None) => unreachable!("304 is only accepted with a cached copy"),
        (Err(e), Some(cached)) => Ok((cached, Some(e))),
        (Err(e), None) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"openssl":{
      "CVE-2025-1":{"releases":{"trixie":{"status":"resolved","fixed_version":"3.5.4-1~deb13u1","urgency":"high"}}},
      "CVE-2025-2":{"releases":{"trixie":{"status":"resolved","fixed_version":"3.5.1-1","urgency":"low"}}},
      "CVE-2025-3":{"releases":{"trixie":{"status":"open","urgency":"low","nodsa":"Minor","nodsa_reason":"postponed"}}},
      "CVE-2025-4":{"releases":{"trixie":{"status":"resolved","fixed_version":"3.5.2-1","urgency":"unimportant"}}}}}"#;

    #[test]
    fn cves_in_the_update_range() {
        let mut t = Tracker::from_json(JSON.as_bytes()).unwrap();
        t.add_advisory_list("[15 Nov 2025] DSA-6050-1 openssl - security update\n\t{CVE-2025-1 CVE-2025-9}\n\t[trixie] - openssl 3.5.4-1~deb13u1\n\t[bookworm] - openssl <end-of-life>\n").unwrap();
        let f = t.fixes("openssl", "trixie", "3.5.1-1", "3.5.4-1~deb13u1");
        let ids: Vec<_> = f.cves.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["CVE-2025-1", "CVE-2025-4", "CVE-2025-9"]);
        assert_eq!(f.cves[1].note.as_deref(), Some("unimportant"));
        assert_eq!(f.advisories, ["DSA-6050-1"]);
        assert!(t.fixes("openssl", "bookworm", "1", "9").cves.is_empty());
    }
}
