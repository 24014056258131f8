//! `rebake scan --format sarif`: the scan report as SARIF 2.1.0 (OASIS), for GitHub code
//! scanning and other SARIF consumers.
//!
//! One result per image, source package and CVE (a pending update without a named CVE is one
//! result per image and source package, rule `rebake/security-update` or `rebake/update`). Each
//! result points at the first binary of the source package in the image's lock
//! (`images/<image>/rebake.lock`, the line of its `- name:` entry) and carries a
//! `partialFingerprints` entry made of the image, source package and rule only — not the
//! versions — so a scanning service keeps one alert per fix across rescans and closes it when
//! the fix lands, instead of re-opening it for every new candidate version.

use crate::plan::{ImageScan, ScanReport, SourceUpdate};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The fingerprint key (versioned: a change of the recipe is a new key, not a silent change).
pub const FINGERPRINT_KEY: &str = "rebakeFinding/v1";

const SECURITY_UPDATE_RULE: &str = "rebake/security-update";
const UPDATE_RULE: &str = "rebake/update";

/// Where an image's findings are shown: a file of the repository and, per binary package, the
/// line of its entry.
pub struct Artifact {
    /// Relative to the repository root, like `images/nginx/rebake.lock`.
    pub uri: String,
    /// Binary package name → 1-based line.
    pub lines: BTreeMap<String, usize>,
}

impl Artifact {
    /// The lock at `uri` with `text`: the line of each `- name: <package>` entry.
    pub fn from_lock(uri: &str, text: &str) -> Artifact {
        let lines = text
            .lines()
            .enumerate()
            .filter_map(|(i, l)| {
                let name = l.strip_prefix("- name: ")?.trim();
                Some((name.to_string(), i + 1))
            })
            .collect();
        Artifact {
            uri: uri.to_string(),
            lines,
        }
    }
}

/// SARIF `level` for a CVE of this urgency (Debian's tracker scale).
fn level(urgency: Option<&str>) -> &'static str {
    match urgency {
        Some("high") | Some("critical") | Some("emergency") => "error",
        Some("low") | Some("unimportant") => "note",
        _ => "warning",
    }
}

fn fingerprint(image: &str, source: &str, rule: &str) -> String {
    hex::encode(Sha256::digest(format!("{image}\0{source}\0{rule}")))
}

/// The SARIF log of `report`; `artifact` says where each image's findings are (None: the
/// image is named in the message only, as for `--dpkg-status` or `--running` scans).
pub fn to_sarif(report: &ScanReport, artifact: impl Fn(&ImageScan) -> Option<Artifact>) -> Value {
    let mut rules: BTreeMap<String, Value> = BTreeMap::new();
    let mut results = Vec::new();
    for image in &report.images {
        let place = artifact(image);
        for update in &image.sources {
            for (rule, text, lvl) in findings(image, update) {
                rules
                    .entry(rule.clone())
                    .or_insert_with(|| rule_json(&rule));
                let mut result = json!({
                    "ruleId": rule,
                    "level": lvl,
                    "message": { "text": text },
                    "partialFingerprints": {
                        FINGERPRINT_KEY: fingerprint(&image.image, &update.source, &rule)
                    },
                    "properties": {
                        "image": image.image,
                        "source": update.source,
                        "installed": update.installed,
                        "candidate": update.candidate,
                        "suite": update.suite,
                        "binaries": update.binaries,
                    }
                });
                if let Some(a) = &place {
                    let line = update
                        .binaries
                        .iter()
                        .find_map(|b| a.lines.get(b))
                        .copied()
                        .unwrap_or(1);
                    result["locations"] = json!([{
                        "physicalLocation": {
                            "artifactLocation": { "uri": a.uri },
                            "region": { "startLine": line }
                        }
                    }]);
                }
                results.push(result);
            }
        }
    }
    json!({
        "$schema": "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "rebake",
                    "version": env!("CARGO_PKG_VERSION"),
                    "informationUri": "https://www.debian.org/security/",
                    "rules": rules.into_values().collect::<Vec<_>>(),
                }
            },
            "results": results,
        }]
    })
}

/// (rule, message, level) for each result one pending update gives.
fn findings(image: &ImageScan, u: &SourceUpdate) -> Vec<(String, String, &'static str)> {
    let what = format!(
        "{} {} in image {} ({}): {} {} is in {}",
        u.source,
        u.installed,
        image.image,
        u.binaries.join(", "),
        u.source,
        u.candidate,
        u.suite
    );
    if u.cves.is_empty() {
        let (rule, lvl) = if u.security {
            (SECURITY_UPDATE_RULE, "warning")
        } else {
            (UPDATE_RULE, "note")
        };
        let kind = if u.security {
            "a security fix"
        } else {
            "an update"
        };
        return vec![(rule.to_string(), format!("{what}, {kind}."), lvl)];
    }
    u.cves
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                format!("{what}, which fixes {}.", c.id),
                level(c.urgency.as_deref()),
            )
        })
        .collect()
}

fn rule_json(rule: &str) -> Value {
    if rule == SECURITY_UPDATE_RULE {
        return json!({
            "id": rule,
            "shortDescription": { "text": "A Debian security update is pending" },
            "help": { "text": "Rebuild the image from the verified archive (rebake propose)." },
            "properties": { "tags": ["security"] }
        });
    }
    if rule == UPDATE_RULE {
        return json!({
            "id": rule,
            "shortDescription": { "text": "A Debian point-release update is pending" },
            "help": { "text": "Rebuild the image from the verified archive (rebake propose)." },
            "properties": { "tags": ["maintenance"] }
        });
    }
    json!({
        "id": rule,
        "shortDescription": { "text": format!("{rule} is fixed in the verified Debian archive") },
        "helpUri": crate::security::tracker_page(rule),
        "help": { "text": "Rebuild the image from the verified archive (rebake propose)." },
        "properties": { "tags": ["security"] }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finding in a repository's image points at its package's entry in the lock.
    #[test]
    fn findings_point_at_the_package_in_the_lock() {
        let lock = "lock_version: 1\nname: web\npackages:\n- name: base-files\n  version: 1\n- name: libssl3t64\n  version: 3.5.1-1\n";
        let artifact = Artifact::from_lock("images/web/rebake.lock", lock);
        assert_eq!(artifact.lines["libssl3t64"], 6);
        let report = ScanReport {
            schema: crate::plan::SCAN_SCHEMA,
            archive: Vec::new(),
            images: vec![ImageScan {
                image: "web".into(),
                suite: "trixie".into(),
                architecture: "amd64".into(),
                installed_packages: 2,
                note: None,
                findings: Vec::new(),
                sources: vec![SourceUpdate {
                    source: "openssl".into(),
                    installed: "3.5.1-1".into(),
                    candidate: "3.5.4-1~deb13u1".into(),
                    suite: "trixie-security".into(),
                    kind: crate::plan::ChangeKind::Security,
                    security: true,
                    binaries: vec!["libssl3t64".into()],
                    cves: Vec::new(),
                    advisories: Vec::new(),
                }],
                cooldown: None,
            }],
        };
        let log = to_sarif(&report, |_| {
            Some(Artifact::from_lock("images/web/rebake.lock", lock))
        });
        let result = &log["runs"][0]["results"][0];
        assert_eq!(result["ruleId"], "rebake/security-update");
        let place = &result["locations"][0]["physicalLocation"];
        assert_eq!(place["artifactLocation"]["uri"], "images/web/rebake.lock");
        assert_eq!(place["region"]["startLine"], 6);
    }
}
