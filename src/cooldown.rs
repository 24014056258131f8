//! The cooldown, `updates.min_age`: an update waits until each of its new versions has been in
//! the verified archive that long. "In the archive since" is the `Date` of the first verified
//! InRelease rebake saw carrying the version (Debian publishes no upload time in the index), so
//! the first run that sees an old version starts its clock: a cooldown errs on the long side.
//!
//! Kept in `<state>/first-seen.json`: `<release>/<arch>/<package>/<version>` → that Date
//! (RFC 3339, UTC).

use crate::debian::index::SuiteMeta;
pub use crate::plan::Cooldown;
use crate::plan::ImageScan;
use crate::policy::Policy;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The store's file name in the state directory.
pub const FIRST_SEEN_FILE: &str = "first-seen.json";

/// When each candidate version was first seen in a verified index.
pub struct FirstSeen {
    path: PathBuf,
    seen: BTreeMap<String, String>,
    changed: bool,
}

impl FirstSeen {
    /// Reads `<state_dir>/first-seen.json` (empty when missing).
    pub fn load(state_dir: &Path) -> Result<FirstSeen> {
        let path = state_dir.join(FIRST_SEEN_FILE);
        let seen = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a JSON object of version → date; fix or remove it (the cooldown \
                     then starts again from today)",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(FirstSeen {
            path,
            seen,
            changed: false,
        })
    }

    /// When `package` `version` was first seen; `now_carried` (the Date of the verified
    /// InRelease carrying it now) is recorded when it was never seen before.
    pub fn see(&mut self, key: &SeenKey<'_>, now_carried: DateTime<Utc>) -> DateTime<Utc> {
        let k = format!(
            "{}/{}/{}/{}",
            key.release, key.arch, key.package, key.version
        );
        if let Some(date) = self
            .seen
            .get(&k)
            .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        {
            return date.with_timezone(&Utc);
        }
        self.seen.insert(k, now_carried.to_rfc3339());
        self.changed = true;
        now_carried
    }

    /// Writes the store when something was recorded.
    pub fn save(&self) -> Result<()> {
        if !self.changed {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::state::write_atomic(&self.path, &serde_json::to_vec_pretty(&self.seen)?)
    }
}

/// One candidate version.
pub struct SeenKey<'a> {
    pub release: &'a str,
    pub arch: &'a str,
    pub package: &'a str,
    pub version: &'a str,
}

/// The cooldown of `scan` (one image's pending update under `policy`), recording first
/// sightings in `store`. None when the policy sets none for this kind of update. An update with
/// a security fix takes `security_min_age`, whatever else it brings (the build installs apt's
/// candidates, so the whole update goes or waits together); any other, `min_age`.
pub fn cooldown(
    policy: &Policy,
    scan: &ImageScan,
    suites: &[SuiteMeta],
    store: &mut FirstSeen,
) -> Option<Cooldown> {
    let security = scan.findings.iter().any(|f| f.security);
    let (min_age, setting) = if security {
        (policy.updates.security_min_age?, "security_min_age")
    } else {
        (policy.updates.min_age?, "min_age")
    };
    let mut decisive: Option<Cooldown> = None;
    for f in &scan.findings {
        let Some(first_seen) = sighting(scan, f, suites, store) else {
            continue;
        };
        let eligible_at = first_seen + min_age;
        if decisive
            .as_ref()
            .is_none_or(|d| eligible_at > d.eligible_at)
        {
            decisive = Some(Cooldown {
                min_age,
                setting,
                package: f.package.clone(),
                version: f.candidate.clone(),
                first_seen,
                eligible_at,
                held: eligible_at > Utc::now(),
            });
        }
    }
    decisive
}

/// The first sighting of the earliest security fix `scan` carries (a candidate version of a
/// security update), recording sightings in `store`: when the fix latency clock starts.
pub fn fix_first_seen(
    scan: &ImageScan,
    suites: &[SuiteMeta],
    store: &mut FirstSeen,
) -> Option<DateTime<Utc>> {
    scan.findings
        .iter()
        .filter(|f| f.security)
        .filter_map(|f| sighting(scan, f, suites, store))
        .min()
}

/// When finding `f`'s candidate was first seen (recorded now, at the Date of the verified
/// InRelease of its suite, when never seen before).
fn sighting(
    scan: &ImageScan,
    f: &crate::plan::Finding,
    suites: &[SuiteMeta],
    store: &mut FirstSeen,
) -> Option<DateTime<Utc>> {
    let carried = suites
        .iter()
        .find(|s| s.suite == f.suite)
        .and_then(|s| crate::debian::release::parse_date(&s.date).ok())?;
    Some(store.see(
        &SeenKey {
            release: &scan.suite,
            arch: &f.arch,
            package: &f.package,
            version: &f.candidate,
        },
        carried,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sighting_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = SeenKey {
            release: "trixie",
            arch: "amd64",
            package: "base-files",
            version: "13.8+deb13u2",
        };
        let day1: DateTime<Utc> = "2026-11-01T10:00:00Z".parse().unwrap();
        let day5: DateTime<Utc> = "2026-11-05T10:00:00Z".parse().unwrap();
        let mut store = FirstSeen::load(dir.path()).unwrap();
        assert_eq!(store.see(&key, day1), day1);
        store.save().unwrap();
        let mut again = FirstSeen::load(dir.path()).unwrap();
        assert_eq!(
            again.see(&key, day5),
            day1,
            "a later InRelease does not move it"
        );
    }
}
