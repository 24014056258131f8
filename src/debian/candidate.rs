//! apt's candidate choice under its default priorities.
//!
//! As apt's `pkgPolicy::GetCandidateVer` does: each version's priority is the highest pin of
//! the suites that carry it (500 normally; 1 for `NotAutomatic: yes`, 100 with
//! `ButAutomaticUpgrades: yes`), and the installed version has at least 100. Versions below
//! the installed one are never candidates (no downgrades below pin 1000). The candidate is the
//! version with the highest priority, the highest version among equals. So a backports version
//! only upgrades a package installed from a backports suite that allows automatic upgrades.
//!
//! On a fresh system nothing is installed: [`fresh_install_candidate`] is the same choice
//! without an installed version, the version the render stage pins.

use super::index::{Available, ReleaseIndex};
use super::status::InstalledPackage;
use super::version::compare;
use std::cmp::Ordering;

/// A newer version apt would install.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub version: &'a str,
    pub source: &'a str,
    pub source_version: &'a str,
    /// Every suite (index into `ReleaseIndex::suites`) that carries this version.
    pub suites: Vec<usize>,
}

/// Whether an index entry is the same package as the installed one. `Architecture: all`
/// counts for every architecture: apt treats it as the native one.
fn same_arch(entry_arch: &str, installed_arch: &str, native: &str) -> bool {
    let is_native = |a: &str| a == "all" || a == native;
    entry_arch == installed_arch || (is_native(entry_arch) && is_native(installed_arch))
}

/// A version's priority from the archive: the highest pin of the suites that carry it among
/// `entries` (the entries of the right architecture); 0 when none does.
fn archive_priority(index: &ReleaseIndex, entries: &[&Available], version: &str) -> i32 {
    entries
        .iter()
        .filter(|a| compare(&a.version, version) == Ordering::Equal)
        .map(|a| index.suites[a.suite].pin)
        .max()
        .unwrap_or(0)
}

/// apt's preference: a higher priority wins, then a higher version.
fn outranks(version: &str, priority: i32, other: &str, other_priority: i32) -> bool {
    priority > other_priority
        || (priority == other_priority && compare(version, other) == Ordering::Greater)
}

/// The version apt would install for `name` on a fresh system (nothing installed) with default
/// priorities: among the entries for the index's architecture or `all`, the highest priority
/// wins, then the highest version; a version of priority 0 or less is never chosen. Returns the
/// first entry (in suite order) carrying that version; None when there is no such version.
pub fn fresh_install_candidate<'a>(index: &'a ReleaseIndex, name: &str) -> Option<&'a Available> {
    let usable: Vec<&Available> = index
        .versions(name)
        .iter()
        .filter(|a| same_arch(&a.arch, &index.arch, &index.arch))
        .collect();
    let mut best: Option<(&Available, i32)> = None;
    for a in &usable {
        let p = archive_priority(index, &usable, &a.version);
        if p <= 0 {
            continue; // apt never installs a version of priority <= 0 on its own
        }
        let better = match best {
            None => true,
            Some((b, bp)) => outranks(&a.version, p, &b.version, bp),
        };
        if better {
            best = Some((a, p));
        }
    }
    best.map(|(a, _)| a)
}

/// The version apt would pick for `pkg`, when it is newer than the installed one.
pub fn candidate<'a>(index: &'a ReleaseIndex, pkg: &InstalledPackage) -> Option<Candidate<'a>> {
    // Fastest path: a native package at the newest version the index has (one probe).
    if pkg.arch == index.arch || pkg.arch == "all" {
        match index.is_newest(&pkg.name, &pkg.version) {
            Some(true) | None => return None,
            Some(false) => {}
        }
    }
    let all = index.versions(&pkg.name);
    // Fast path (most installed packages): nothing newer exists, so nothing to choose.
    if !all.iter().any(|a| {
        compare(&a.version, &pkg.version) == Ordering::Greater
            && same_arch(&a.arch, &pkg.arch, &index.arch)
    }) {
        return None;
    }
    let versions: Vec<&Available> = all
        .iter()
        .filter(|a| same_arch(&a.arch, &pkg.arch, &index.arch))
        .collect();
    let mut best: Option<(&str, i32)> = Some((pkg.version.as_str(), 100));
    let priority = |v: &str| -> i32 {
        let archive = archive_priority(index, &versions, v);
        if compare(v, &pkg.version) == Ordering::Equal {
            archive.max(100)
        } else {
            archive
        }
    };
    if let Some((v, _)) = best {
        best = Some((v, priority(v)));
    }
    for a in &versions {
        if compare(&a.version, &pkg.version) != Ordering::Greater {
            continue;
        }
        let p = priority(&a.version);
        let (bv, bp) = best.expect("installed version seeds the search");
        if outranks(&a.version, p, bv, bp) {
            best = Some((&a.version, p));
        }
    }
    let (version, _) = best?;
    if compare(version, &pkg.version) != Ordering::Greater {
        return None;
    }
    let carriers: Vec<&&Available> = versions
        .iter()
        .filter(|a| compare(&a.version, version) == Ordering::Equal)
        .collect();
    let first = carriers.first()?;
    let mut suites: Vec<usize> = carriers.iter().map(|a| a.suite).collect();
    suites.sort_unstable();
    suites.dedup();
    Some(Candidate {
        version: &first.version,
        source: &first.source,
        source_version: &first.source_version,
        suites,
    })
}
