//! The plan stage: which images hold a package with a newer candidate in the verified
//! archive, whether that is a security update, and which CVEs/DSAs it fixes.

use crate::debian::archive::{fetch_release, Fetcher};
use crate::debian::candidate::candidate;
use crate::debian::index::{ReleaseIndex, SuiteMeta};
use crate::debian::sources::{suites_for_release, SourceEntry};
use crate::debian::status::InstalledPackage;
use crate::lock::Lock;
use crate::security::{CveFix, Tracker};
use anyhow::Result;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The version of the JSON report; bump on incompatible change (docs/scan-report.schema.json).
pub const SCAN_SCHEMA: &str = "rebake.scan/v1";

/// What is installed in one image (from its lock) or one dpkg status file.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub name: String,
    /// Debian release codename (`trixie`).
    pub release: String,
    pub arch: String,
    pub packages: Vec<InstalledPackage>,
    /// Whether non-security (point release, -updates) changes are reported.
    pub include_non_security: bool,
    /// Why there is nothing to scan (no lock yet), shown instead of findings.
    pub note: Option<String>,
}

impl Inventory {
    /// What `lock` says is installed in `policy`'s image, with the policy's choice of updates.
    pub fn of_lock(policy: &crate::policy::Policy, lock: &crate::lock::Lock) -> Inventory {
        Inventory {
            name: policy.name.clone(),
            release: lock.suite.clone(),
            arch: lock.architecture.clone(),
            packages: lock.packages.clone(),
            include_non_security: policy.updates.point_release,
            note: None,
        }
    }
}

/// One installed binary package with a newer candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub package: String,
    pub arch: String,
    pub source: String,
    pub installed: String,
    pub candidate: String,
    pub source_installed: String,
    pub source_candidate: String,
    /// The suite the candidate comes from (a security suite when several carry it).
    pub suite: String,
    pub security: bool,
    pub cves: Vec<String>,
    pub advisories: Vec<String>,
}

/// Findings grouped by source package: the unit a reviewer reasons about.
#[derive(Debug, Clone, Serialize)]
pub struct SourceUpdate {
    pub source: String,
    pub installed: String,
    pub candidate: String,
    pub suite: String,
    /// `security`, `update`, or `binary rebuild` (same source version, newer binaries).
    pub kind: ChangeKind,
    pub security: bool,
    pub binaries: Vec<String>,
    pub cves: Vec<CveFix>,
    pub advisories: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageScan {
    pub image: String,
    pub suite: String,
    pub architecture: String,
    pub installed_packages: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub findings: Vec<Finding>,
    pub sources: Vec<SourceUpdate>,
    /// The policy's `updates.min_age` (or `security_min_age`) as it applies to this update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Cooldown>,
}

/// The cooldown that applies to one image's pending update, and when it ends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cooldown {
    /// `updates.min_age`, or `updates.security_min_age` for an update with a security fix.
    #[serde(serialize_with = "as_seconds")]
    pub min_age: std::time::Duration,
    /// Which setting it is.
    pub setting: &'static str,
    /// The youngest new version: the one that decides.
    pub package: String,
    pub version: String,
    pub first_seen: chrono::DateTime<chrono::Utc>,
    /// `first_seen + min_age`.
    pub eligible_at: chrono::DateTime<chrono::Utc>,
    /// Still waiting when it was computed.
    pub held: bool,
}

fn as_seconds<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

impl Cooldown {
    pub fn is_over(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        now >= self.eligible_at
    }

    /// `held by updates.min_age (3days): base-files 13.8+deb13u2, first seen in the verified
    /// archive 2026-11-29 10:00 UTC, becomes eligible 2026-12-02 10:00 UTC`.
    pub fn held_note(&self) -> String {
        format!(
            "held by updates.{} ({}): {} {} first seen in the verified archive {}, eligible {}",
            self.setting,
            humantime::format_duration(self.min_age),
            self.package,
            self.version,
            self.first_seen.format("%Y-%m-%d %H:%M UTC"),
            self.eligible_at.format("%Y-%m-%d %H:%M UTC"),
        )
    }

    /// One line for a proposal body: when the update became eligible.
    pub fn body_line(&self) -> String {
        format!(
            "Cooldown: `updates.{}` {} — eligible since {} ({} {}, the youngest new version, \
             first seen in the verified archive {}).",
            self.setting,
            humantime::format_duration(self.min_age),
            self.eligible_at.format("%Y-%m-%d %H:%M UTC"),
            self.package,
            self.version,
            self.first_seen.format("%Y-%m-%d %H:%M UTC"),
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    pub schema: &'static str,
    /// Every verified suite the scan read.
    pub archive: Vec<SuiteMeta>,
    pub images: Vec<ImageScan>,
}

impl ScanReport {
    pub fn finding_count(&self) -> usize {
        self.images.iter().map(|i| i.findings.len()).sum()
    }
}

/// An installed package with a newer candidate in the verified index, whatever kind of update
/// it is: what the built-in `current` test refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub package: String,
    pub installed: String,
    pub candidate: String,
    /// The suites carrying the candidate.
    pub suites: Vec<String>,
}

/// Every installed package that has a newer candidate in `index` (apt's rule, as the scan).
pub fn stale_packages(index: &ReleaseIndex, installed: &[InstalledPackage]) -> Vec<Stale> {
    installed
        .iter()
        .filter_map(|pkg| {
            let c = candidate(index, pkg)?;
            Some(Stale {
                package: pkg.name.clone(),
                installed: pkg.version.clone(),
                candidate: c.version.to_string(),
                suites: c
                    .suites
                    .iter()
                    .filter_map(|&s| index.suites.get(s).map(|m| m.suite.clone()))
                    .collect(),
            })
        })
        .collect()
}

/// Scans one inventory against a verified release index.
pub fn scan_inventory(
    index: &ReleaseIndex,
    tracker: Option<&Tracker>,
    inv: &Inventory,
) -> ImageScan {
    let mut findings = Vec::new();
    for pkg in &inv.packages {
        let Some(c) = candidate(index, pkg) else {
            continue;
        };
        let security_suite = c.suites.iter().copied().find(|&s| index.suites[s].security);
        // A security fix folded into a point release is still one.
        let security = security_suite.is_some()
            || carries_security_fix(index, &pkg.name, &pkg.arch, &pkg.version, c.version);
        if !security && !inv.include_non_security {
            continue;
        }
        let suite = &index.suites[security_suite.unwrap_or(c.suites[0])];
        findings.push(Finding {
            package: pkg.name.clone(),
            arch: pkg.arch.clone(),
            source: c.source.to_string(),
            installed: pkg.version.clone(),
            candidate: c.version.to_string(),
            source_installed: pkg.source_version.clone(),
            source_candidate: c.source_version.to_string(),
            suite: suite.suite.clone(),
            security,
            cves: Vec::new(),
            advisories: Vec::new(),
        });
    }
    // Group by source package and its version change.
    let mut groups: BTreeMap<(String, String, String), SourceUpdate> = BTreeMap::new();
    for f in &mut findings {
        let key = (
            f.source.clone(),
            f.source_installed.clone(),
            f.source_candidate.clone(),
        );
        let g = groups.entry(key).or_insert_with(|| {
            let fixes = tracker
                .map(|t| {
                    t.fixes(
                        &f.source,
                        &inv.release,
                        &f.source_installed,
                        &f.source_candidate,
                    )
                })
                .unwrap_or_default();
            SourceUpdate {
                source: f.source.clone(),
                installed: f.source_installed.clone(),
                candidate: f.source_candidate.clone(),
                suite: f.suite.clone(),
                kind: if f.security {
                    ChangeKind::Security
                } else if f.source_installed == f.source_candidate {
                    ChangeKind::BinaryRebuild
                } else {
                    ChangeKind::Update
                },
                security: f.security,
                binaries: Vec::new(),
                cves: fixes.cves,
                advisories: fixes.advisories,
            }
        });
        g.binaries.push(f.package.clone());
        f.cves = g.cves.iter().map(|c| c.id.clone()).collect();
        f.advisories = g.advisories.clone();
    }
    ImageScan {
        image: inv.name.clone(),
        suite: inv.release.clone(),
        architecture: inv.arch.clone(),
        installed_packages: inv.packages.len(),
        note: inv.note.clone(),
        findings,
        sources: groups.into_values().collect(),
        cooldown: None,
    }
}

/// Scans many inventories against one index, spread over the machine's cores.
pub fn scan_inventories(
    index: &ReleaseIndex,
    tracker: Option<&Tracker>,
    inventories: &[Inventory],
) -> Vec<ImageScan> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || inventories.len() < 64 {
        return inventories
            .iter()
            .map(|inv| scan_inventory(index, tracker, inv))
            .collect();
    }
    let chunk = inventories.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = inventories
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|inv| scan_inventory(index, tracker, inv))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("scan thread panicked"))
            .collect()
    })
}

/// Fetches (verified, cached) the release indices the inventories need, once per release and
/// architecture, and scans every inventory.
pub async fn scan(
    fetcher: &Fetcher,
    sources: &[SourceEntry],
    tracker: Option<&Tracker>,
    inventories: &[Inventory],
) -> Result<ScanReport> {
    let mut needed: Vec<(String, String)> = inventories
        .iter()
        .filter(|i| i.note.is_none())
        .map(|i| (i.release.clone(), i.arch.clone()))
        .collect();
    needed.sort();
    needed.dedup();
    let mut indices: BTreeMap<(String, String), ReleaseIndex> = BTreeMap::new();
    let mut archive = Vec::new();
    for (release, arch) in needed {
        let suites = suites_for_release(sources, &release)?;
        let idx = fetch_release(fetcher, &release, &arch, &suites).await?;
        archive.extend(idx.suites.iter().cloned());
        indices.insert((release, arch), idx);
    }
    let images = inventories
        .iter()
        .map(
            |inv| match indices.get(&(inv.release.clone(), inv.arch.clone())) {
                Some(idx) if inv.note.is_none() => scan_inventory(idx, tracker, inv),
                _ => ImageScan {
                    image: inv.name.clone(),
                    suite: inv.release.clone(),
                    architecture: inv.arch.clone(),
                    installed_packages: inv.packages.len(),
                    note: inv.note.clone(),
                    findings: Vec::new(),
                    sources: Vec::new(),
                    cooldown: None,
                },
            },
        )
        .collect();
    Ok(ScanReport {
        schema: SCAN_SCHEMA,
        archive,
        images,
    })
}

/// The human-readable report: per image, one row per source package.
pub fn render_table(report: &ScanReport) -> String {
    let mut out = String::new();
    for img in &report.images {
        let sec = img.sources.iter().filter(|s| s.security).count();
        let head = format!("{} ({}/{})", img.image, img.suite, img.architecture);
        if let Some(note) = &img.note {
            out.push_str(&format!("{head}: {note}\n\n"));
            continue;
        }
        if img.sources.is_empty() {
            out.push_str(&format!(
                "{head}: up to date ({} packages checked)\n\n",
                img.installed_packages
            ));
            continue;
        }
        out.push_str(&format!(
            "{head}: {} source package(s) with updates, {sec} security\n",
            img.sources.len()
        ));
        let mut rows = vec![vec![
            "SOURCE".to_string(),
            "INSTALLED".into(),
            "CANDIDATE".into(),
            "SUITE".into(),
            "KIND".into(),
            "FIXES".into(),
            "BINARIES".into(),
        ]];
        for s in &img.sources {
            let mut fixes: Vec<String> = s.advisories.clone();
            fixes.extend(s.cves.iter().map(|c| {
                let mut t = c.id.clone();
                let extra: Vec<&str> = c
                    .urgency
                    .as_deref()
                    .filter(|u| *u != "not yet assigned")
                    .into_iter()
                    .chain(c.note.as_deref())
                    .collect();
                if !extra.is_empty() {
                    t.push_str(&format!(" ({})", extra.join(", ")));
                }
                t
            }));
            // A binary-only rebuild (binNMU) keeps the source version: show the binary's.
            let (installed, candidate) = match img.findings.iter().find(|f| {
                s.installed == s.candidate
                    && f.source == s.source
                    && s.binaries.contains(&f.package)
            }) {
                Some(f) => (f.installed.clone(), f.candidate.clone()),
                None => (s.installed.clone(), s.candidate.clone()),
            };
            rows.push(vec![
                s.source.clone(),
                installed,
                candidate,
                s.suite.clone(),
                if s.security { "security" } else { "update" }.into(),
                if fixes.is_empty() {
                    "-".into()
                } else {
                    fixes.join(" ")
                },
                s.binaries.join(", "),
            ]);
        }
        for line in crate::output::table(&rows).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        if let Some(c) = img.cooldown.as_ref().filter(|c| c.held) {
            out.push_str(&format!("  {}\n", c.held_note()));
        }
        out.push('\n');
    }
    out
}

/// One binary package whose version (or presence) differs between two locks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinaryChange {
    pub name: String,
    pub arch: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// What kind of change a source package brings, from the most pressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// Carries a security fix (a security suite's version, or a changelog entry uploaded to
    /// `<release>-security`, lies in the range), even when folded into a point release.
    Security,
    /// A newer source version without a security fix (point release, -updates).
    Update,
    /// The same source version, new binaries (a binNMU `+b1`, or binaries the lock was behind).
    BinaryRebuild,
    /// In the new image only (a first build, or a new dependency).
    New,
    /// In the old image only.
    Removed,
}

impl ChangeKind {
    pub fn word(self) -> &'static str {
        match self {
            ChangeKind::Security => "security",
            ChangeKind::Update => "update",
            ChangeKind::BinaryRebuild => "binary rebuild",
            ChangeKind::New => "new",
            ChangeKind::Removed => "removed",
        }
    }
}

/// The changelog of a source package as read from the new image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changelog {
    /// Its entries, newest first.
    Entries(Vec<crate::debian::changelog::Entry>),
    /// The image has no changelog for it (docs excluded, or none shipped).
    Missing,
}

/// One changelog entry in an update's range, as a reviewer reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangelogEntry {
    pub version: String,
    pub distribution: String,
    pub urgency: Option<String>,
    pub cves: Vec<String>,
}

/// One source package that changed between the default branch's lock and the new one: its
/// versions, every binary that changed, what kind of change, and what it fixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub source: String,
    pub old: Option<String>,
    pub new: Option<String>,
    /// The suite the new version comes from, when the index has it.
    pub suite: Option<String>,
    pub kind: ChangeKind,
    pub security: bool,
    pub binaries: Vec<BinaryChange>,
    /// From the tracker and from the package's own changelog, merged.
    pub cves: Vec<CveFix>,
    pub advisories: Vec<String>,
    /// The changelog entries in (old, new]; None when no changelog was read (no image, or the
    /// image has none: see `changelog_missing`).
    pub changelog: Option<Vec<ChangelogEntry>>,
    pub changelog_missing: bool,
}

/// Whether some security suite of `index` carries a version v of the binary `name` (`arch` or
/// `all`) with `installed` < v ≤ `candidate`: the update carries a security fix, even when the
/// candidate itself comes from a point release.
pub fn carries_security_fix(
    index: &ReleaseIndex,
    name: &str,
    arch: &str,
    installed: &str,
    candidate: &str,
) -> bool {
    use crate::debian::version::compare;
    use std::cmp::Ordering;
    index.versions(name).iter().any(|a| {
        index.suites[a.suite].security
            && (a.arch == arch || a.arch == "all")
            && compare(installed, &a.version) == Ordering::Less
            && compare(&a.version, candidate) != Ordering::Greater
    })
}

/// The changes from `old` (None: first build) to `new`, per source package: every binary whose
/// version, or presence, changed. `changelogs` (by source) are read from the new image; with
/// them, CVE ids come from the packages themselves and an entry uploaded to
/// `<release>-security` makes the change a security one.
pub fn changes(
    old: Option<&Lock>,
    new: &Lock,
    index: &ReleaseIndex,
    tracker: Option<&Tracker>,
    changelogs: &BTreeMap<String, Changelog>,
) -> Vec<Change> {
    use crate::debian::changelog;
    type Binaries = BTreeMap<(String, String), String>;
    let sources = |l: &Lock| -> BTreeMap<String, (String, Binaries)> {
        let mut m: BTreeMap<String, (String, Binaries)> = BTreeMap::new();
        for p in &l.packages {
            let e = m
                .entry(p.source.clone())
                .or_insert_with(|| (p.source_version.clone(), BTreeMap::new()));
            e.1.insert((p.name.clone(), p.arch.clone()), p.version.clone());
        }
        m
    };
    let before = old.map(sources).unwrap_or_default();
    let after = sources(new);
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    for name in names {
        let (ov, ob) = before
            .get(name)
            .map_or((None, &empty), |x| (Some(&x.0), &x.1));
        let (nv, nb) = after
            .get(name)
            .map_or((None, &empty), |x| (Some(&x.0), &x.1));
        let keys: BTreeSet<&(String, String)> = ob.keys().chain(nb.keys()).collect();
        let binaries: Vec<BinaryChange> = keys
            .into_iter()
            .filter(|k| ob.get(*k) != nb.get(*k))
            .map(|k| BinaryChange {
                name: k.0.clone(),
                arch: k.1.clone(),
                old: ob.get(k).cloned(),
                new: nb.get(k).cloned(),
            })
            .collect();
        if ov == nv && binaries.is_empty() {
            continue;
        }
        // Which suite carries the new source version (any of its binaries will do); whether a
        // security suite carries a version in the range of any changed binary.
        let mut suite = None;
        let mut security = false;
        if let Some(nv) = nv {
            for b in nb.keys() {
                for a in index.versions(&b.0) {
                    if &a.source == name && &a.source_version == nv {
                        let meta = &index.suites[a.suite];
                        if meta.security || suite.is_none() {
                            suite = Some(meta.suite.clone());
                        }
                        security |= meta.security;
                    }
                }
            }
        }
        if ov.is_some() {
            security |= binaries.iter().any(|b| match (&b.old, &b.new) {
                (Some(o), Some(n)) => carries_security_fix(index, &b.name, &b.arch, o, n),
                _ => false,
            });
        }
        let (entries, changelog_missing) = match (changelogs.get(name), nv) {
            (Some(Changelog::Entries(all)), Some(nv)) => (
                Some(changelog::between(all, ov.map(String::as_str), nv)),
                false,
            ),
            (Some(Changelog::Missing), _) => (None, true),
            _ => (None, false),
        };
        // On a first build every entry is "in range": they say nothing about this update.
        let entries = entries.filter(|_| ov.is_some());
        if let Some(entries) = &entries {
            security |= entries.iter().any(|e| e.is_security_upload(&new.suite));
        }
        let fixes = match (tracker, ov, nv) {
            (Some(t), Some(ov), Some(nv)) => t.fixes(name, &new.suite, ov, nv),
            _ => Default::default(),
        };
        let mut cves = fixes.cves;
        for c in &mut cves {
            c.learnt_from = vec!["tracker".into()];
        }
        for e in entries.iter().flatten() {
            for id in &e.cves {
                match cves.iter_mut().find(|c| &c.id == id) {
                    Some(c) => {
                        if !c.learnt_from.iter().any(|l| l == "changelog") {
                            c.learnt_from.push("changelog".into());
                        }
                        c.fixed_in.get_or_insert_with(|| e.version.clone());
                    }
                    None => cves.push(CveFix {
                        id: id.clone(),
                        urgency: e.urgency.clone(),
                        status: "fixed".into(),
                        note: None,
                        learnt_from: vec!["changelog".into()],
                        fixed_in: Some(e.version.clone()),
                    }),
                }
            }
        }
        cves.sort_by(|a, b| a.id.cmp(&b.id));
        let kind = match (ov, nv) {
            (None, _) => ChangeKind::New,
            (_, None) => ChangeKind::Removed,
            _ if security => ChangeKind::Security,
            (Some(o), Some(n)) if o == n => ChangeKind::BinaryRebuild,
            _ => ChangeKind::Update,
        };
        out.push(Change {
            source: name.clone(),
            old: ov.cloned(),
            new: nv.cloned(),
            suite,
            kind,
            security: kind == ChangeKind::Security,
            binaries,
            cves,
            advisories: fixes.advisories,
            changelog: entries.map(|es| {
                es.iter()
                    .map(|e| ChangelogEntry {
                        version: e.version.clone(),
                        distribution: e.distributions.join(" "),
                        urgency: e.urgency.clone(),
                        cves: e.cves.clone(),
                    })
                    .collect()
            }),
            changelog_missing,
        });
    }
    // Most pressing first, then by name: the order a reviewer reads.
    out.sort_by(|a, b| a.kind.cmp(&b.kind).then(a.source.cmp(&b.source)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::status::InstalledPackage;

    fn pkg(name: &str, version: &str, source: &str, source_version: &str) -> InstalledPackage {
        InstalledPackage {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            source: source.into(),
            source_version: source_version.into(),
        }
    }

    fn lock(packages: Vec<InstalledPackage>) -> Lock {
        Lock {
            lock_version: 1,
            name: "web".into(),
            suite: "trixie".into(),
            architecture: "amd64".into(),
            archive: Vec::new(),
            base: None,
            parent: None,
            reason: None,
            packages,
            image: None,
            tests: None,
        }
    }

    #[test]
    fn a_binnmu_is_a_binary_rebuild_of_its_binaries() {
        let old = lock(vec![
            pkg("zlib1g", "1:1.3-1", "zlib", "1:1.3-1"),
            pkg("bash", "5.2-1", "bash", "5.2-1"),
        ]);
        let new = lock(vec![
            pkg("zlib1g", "1:1.3-1+b1", "zlib", "1:1.3-1"),
            pkg("bash", "5.2-1", "bash", "5.2-1"),
        ]);
        let index = ReleaseIndex::default();
        let changes = changes(Some(&old), &new, &index, None, &BTreeMap::new());
        assert_eq!(changes.len(), 1, "{changes:?}");
        let c = &changes[0];
        assert_eq!(c.kind, ChangeKind::BinaryRebuild);
        assert_eq!(
            (c.old.as_deref(), c.new.as_deref()),
            (Some("1:1.3-1"), Some("1:1.3-1"))
        );
        assert_eq!(
            c.binaries,
            [BinaryChange {
                name: "zlib1g".into(),
                arch: "amd64".into(),
                old: Some("1:1.3-1".into()),
                new: Some("1:1.3-1+b1".into()),
            }]
        );
        // Nothing installed changed: no change at all.
        assert!(super::changes(Some(&new), &new, &index, None, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_changelog_entry_uploaded_to_security_makes_it_a_security_update() {
        let old = lock(vec![pkg("libssl3t64", "3.5.1-1", "openssl", "3.5.1-1")]);
        let new = lock(vec![pkg(
            "libssl3t64",
            "3.5.9-1~deb13u1",
            "openssl",
            "3.5.9-1~deb13u1",
        )]);
        let text = "openssl (3.5.9-1~deb13u1) trixie; urgency=medium\n\n  * Import.\n\n -- A <a@b.c>  Sat, 01 Nov 2025 10:00:00 +0100\n\nopenssl (3.5.7-1~deb13u3) trixie-security; urgency=high\n\n  * CVE-2025-0001\n\n -- A <a@b.c>  Sat, 01 Oct 2025 10:00:00 +0100\n\nopenssl (3.5.1-1) unstable; urgency=medium\n\n  * CVE-2024-0001\n\n -- A <a@b.c>  Sat, 01 Jul 2025 10:00:00 +0100\n";
        let logs = BTreeMap::from([(
            "openssl".to_string(),
            Changelog::Entries(crate::debian::changelog::parse(text)),
        )]);
        let index = ReleaseIndex::default();
        let c = &changes(Some(&old), &new, &index, None, &logs)[0];
        assert_eq!(c.kind, ChangeKind::Security);
        let ids: Vec<&str> = c.cves.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(
            ids,
            ["CVE-2025-0001"],
            "only the range (3.5.1-1, 3.5.9-1~deb13u1]"
        );
        assert_eq!(c.cves[0].learnt_from, ["changelog"]);
        assert_eq!(c.cves[0].fixed_in.as_deref(), Some("3.5.7-1~deb13u3"));
        assert_eq!(c.changelog.as_ref().unwrap().len(), 2);
        // Without the changelog (none read), the index alone decides: not security here.
        let c = &changes(Some(&old), &new, &index, None, &BTreeMap::new())[0];
        assert_eq!(c.kind, ChangeKind::Update);
        let missing = BTreeMap::from([("openssl".to_string(), Changelog::Missing)]);
        assert!(changes(Some(&old), &new, &index, None, &missing)[0].changelog_missing);
    }
}
