//! `rebake scan` as a user runs it: against a real signed archive served on 127.0.0.1,
//! checking what it prints, its exit code, and what it refuses.

use crate::support::{dpkg_status, AptSandbox, Fault, Pkg, StatusEntry, TestArchive, TestServer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A served archive with a typical trixie image's packages, an inventory and a state dir.
struct Scenario {
    archive: TestArchive,
    server: TestServer,
    sources: PathBuf,
    status: PathBuf,
    state: tempfile::TempDir,
}

const SEC: &str = "debian-security";

fn typical_archive() -> TestArchive {
    let mut a = TestArchive::new();
    for p in [
        Pkg::new("base-files", "13.8+deb13u1", "amd64"),
        Pkg::new("libssl3t64", "3.5.1-1", "amd64").source("openssl"),
        Pkg::new("openssl", "3.5.1-1", "amd64"),
        Pkg::new("tzdata", "2025a-1", "all"),
        Pkg::new("zlib1g", "1:1.3.dfsg+really1.3.1-1+b1", "amd64")
            .source("zlib (1:1.3.dfsg+really1.3.1-1)"),
        Pkg::new("old-tool", "1.0-1", "amd64"),
    ] {
        a.add("debian", "trixie", p);
    }
    // A security fix for openssl (two binaries), a point-release change for tzdata.
    a.add(
        "debian",
        "trixie-updates",
        Pkg::new("tzdata", "2025b-0+deb13u1", "all"),
    );
    for p in [
        Pkg::new("libssl3t64", "3.5.4-1~deb13u1", "amd64").source("openssl"),
        Pkg::new("openssl", "3.5.4-1~deb13u1", "amd64"),
        // An older security version listed too: the highest wins.
        Pkg::new("openssl", "3.5.1-1+deb13u1", "amd64"),
        Pkg::new("old-tool", "1.0-1+deb13u1", "amd64"),
    ] {
        a.add(SEC, "trixie-security", p);
    }
    a.publish();
    a
}

fn typical_status() -> String {
    dpkg_status(&[
        StatusEntry::new("base-files", "13.8+deb13u1", "amd64"),
        StatusEntry::new("libssl3t64", "3.5.1-1", "amd64").source("openssl"),
        StatusEntry::new("openssl", "3.5.1-1", "amd64"),
        StatusEntry::new("tzdata", "2025a-1", "all"),
        StatusEntry::new("zlib1g", "1:1.3.dfsg+really1.3.1-1+b1", "amd64")
            .source("zlib (1:1.3.dfsg+really1.3.1-1)"),
        // Removed, configuration left behind: not installed, so not a finding.
        StatusEntry::new("old-tool", "1.0-1", "amd64").config_files(),
    ])
}

impl Scenario {
    fn new(archive: TestArchive, status: &str) -> Scenario {
        let server = TestServer::start(archive.dir());
        let sources = archive.write_sources(&server.url());
        let state = tempfile::tempdir().unwrap();
        let status_path = state.path().join("status");
        std::fs::write(&status_path, status).unwrap();
        Scenario {
            archive,
            server,
            sources,
            status: status_path,
            state,
        }
    }

    fn typical() -> Scenario {
        Scenario::new(typical_archive(), &typical_status())
    }

    fn scan(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "scan".to_string(),
            "--sources".into(),
            self.sources.display().to_string(),
            "--dpkg-status".into(),
            self.status.display().to_string(),
            "--suite".into(),
            "trixie".into(),
            "--arch".into(),
            "amd64".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        rebake(self.state.path(), &args)
    }

    /// Like [`scan`](Self::scan) with `env` set, but killed after `limit` (a test failure):
    /// the output and how long it took.
    fn scan_within(&self, extra: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
        let mut args: Vec<String> = vec![
            "scan".into(),
            "--sources".into(),
            self.sources.display().to_string(),
            "--dpkg-status".into(),
            self.status.display().to_string(),
            "--suite".into(),
            "trixie".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let repo = self.state.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rebake"))
            .args(&args)
            .arg("--repo")
            .arg(&repo)
            .env("REBAKE_STATE_DIR", self.state.path().join("state"))
            .env("REBAKE_SECURITY_TRACKER", "off")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run rebake");
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "rebake scan still running after {limit:?} (killed); stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        eprintln!(
            "rebake scan ended in {:.2} s: {}",
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        out
    }

    fn scan_json(&self, extra: &[&str]) -> Value {
        let mut args = vec!["--format", "json"];
        args.extend_from_slice(extra);
        let out = self.scan(&args);
        assert_success(&out);
        let report: Value =
            serde_json::from_slice(&out.stdout).expect("scan --format json prints JSON");
        assert_matches_schema(&report);
        report
    }
}

/// Runs the real binary in a scratch repository with its own state directory (and Debian's
/// public Security Tracker off: the tests serve their own).
pub fn rebake(state: &Path, args: &[String]) -> Output {
    rebake_with(state, args, &[("REBAKE_SECURITY_TRACKER", "off")])
}

/// [`rebake`] with `env` set.
fn rebake_with(state: &Path, args: &[String], env: &[(&str, &str)]) -> Output {
    let repo = state.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rebake"));
    cmd.args(args)
        .arg("--repo")
        .arg(&repo)
        .env("REBAKE_STATE_DIR", state.join("state"))
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run rebake")
}

/// The JSON report is what docs/scan-report.schema.json documents.
pub fn assert_matches_schema(report: &Value) {
    let schema: Value = serde_json::from_str(include_str!("../../docs/scan-report.schema.json"))
        .expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "report does not match its schema: {errors:#?}"
    );
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "rebake failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The scan could not run: exit 1 and one line naming the cause.
fn assert_refused(out: &Output, expect: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "expected failure, got: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line of cause: {err}"
    );
    for e in expect {
        assert!(err.contains(e), "error should mention {e:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn finding<'a>(report: &'a Value, package: &str) -> Option<&'a Value> {
    report["images"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["package"] == package)
}

#[test]
fn finds_security_and_point_release_updates() {
    let s = Scenario::typical();
    let r = s.scan_json(&[]);
    assert_eq!(r["schema"], "rebake.scan/v1");
    let findings = r["images"][0]["findings"].as_array().unwrap();
    let mut names: Vec<&str> = findings
        .iter()
        .map(|f| f["package"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["libssl3t64", "openssl", "tzdata"], "{r:#}");

    let ssl = finding(&r, "libssl3t64").unwrap();
    assert_eq!(ssl["source"], "openssl");
    assert_eq!(ssl["installed"], "3.5.1-1");
    assert_eq!(ssl["candidate"], "3.5.4-1~deb13u1");
    assert_eq!(ssl["suite"], "trixie-security");
    assert_eq!(ssl["security"], true);
    assert!(
        ssl["cves"].as_array().unwrap().is_empty(),
        "no tracker, no CVEs"
    );

    let tz = finding(&r, "tzdata").unwrap();
    assert_eq!(tz["candidate"], "2025b-0+deb13u1");
    assert_eq!(tz["suite"], "trixie-updates");
    assert_eq!(tz["security"], false);

    // Grouped by source package: one row for openssl with both binaries.
    let sources = r["images"][0]["sources"].as_array().unwrap();
    let openssl = sources.iter().find(|g| g["source"] == "openssl").unwrap();
    assert_eq!(
        openssl["binaries"],
        serde_json::json!(["libssl3t64", "openssl"])
    );
    // Every verified suite is named with its InRelease hash and date.
    let archive = r["archive"].as_array().unwrap();
    assert_eq!(archive.len(), 3);
    assert!(archive
        .iter()
        .all(|a| a["inrelease_sha256"].as_str().unwrap().len() == 64));
}

#[test]
fn human_table_and_fail_on_updates() {
    let s = Scenario::typical();
    let out = s.scan(&[]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2 source package(s) with updates, 1 security"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("openssl"))
        .unwrap();
    for w in [
        "3.5.1-1",
        "3.5.4-1~deb13u1",
        "trixie-security",
        "security",
        "libssl3t64, openssl",
    ] {
        assert!(row.contains(w), "{row}");
    }
    assert_eq!(s.scan(&["--fail-on-updates"]).status.code(), Some(3));

    // Without updates, --fail-on-updates passes.
    std::fs::write(
        &s.status,
        dpkg_status(&[StatusEntry::new("base-files", "13.8+deb13u1", "amd64")]),
    )
    .unwrap();
    let out = s.scan(&["--fail-on-updates"]);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date (1 packages checked)"));
}

#[test]
fn security_tracker_names_cves_and_advisories() {
    let s = Scenario::typical();
    let tracker = s.state.path().join("tracker.json");
    std::fs::write(
        &tracker,
        r#"{"openssl": {
            "CVE-2025-9230": {"releases": {"trixie": {"status": "resolved", "fixed_version": "3.5.4-1~deb13u1", "urgency": "medium"}}},
            "CVE-2025-9231": {"releases": {"trixie": {"status": "resolved", "fixed_version": "3.5.4-1~deb13u1", "urgency": "not yet assigned", "nodsa": "Minor issue", "nodsa_reason": "postponed"}}},
            "CVE-2024-1": {"releases": {"trixie": {"status": "resolved", "fixed_version": "3.0.0-1", "urgency": "low"}}},
            "CVE-2025-7777": {"releases": {"trixie": {"status": "open", "urgency": "low"}}}
        }}"#,
    )
    .unwrap();
    let dsa = s.state.path().join("DSA-list");
    std::fs::write(
        &dsa,
        "[30 Sep 2025] DSA-6015-1 openssl - security update\n\t{CVE-2025-9230 CVE-2025-9231}\n\t[trixie] - openssl 3.5.4-1~deb13u1\n",
    )
    .unwrap();
    let r = s.scan_json(&[
        "--security-tracker",
        tracker.to_str().unwrap(),
        "--advisories",
        dsa.to_str().unwrap(),
    ]);
    let ssl = finding(&r, "openssl").unwrap();
    assert_eq!(
        ssl["cves"],
        serde_json::json!(["CVE-2025-9230", "CVE-2025-9231"])
    );
    assert_eq!(ssl["advisories"], serde_json::json!(["DSA-6015-1"]));
    let group = &r["images"][0]["sources"][0];
    assert_eq!(group["cves"][0]["urgency"], "medium");
    assert_eq!(group["cves"][1]["note"], "postponed");
    let out = s.scan(&["--security-tracker", tracker.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CVE-2025-9230 (medium)"), "{text}");
    assert!(text.contains("CVE-2025-9231 (postponed)"), "{text}");
}

/// rebake's candidate is apt's: same archive, same status, apt's own answer.
#[test]
fn candidates_agree_with_apt() {
    let mut a = typical_archive();
    // Backports: NotAutomatic; only upgrades what came from it, when it allows upgrades.
    a.add(
        "debian",
        "trixie-backports",
        Pkg::new("curl", "8.14.1-2~bpo13+1", "amd64"),
    );
    a.add(
        "debian",
        "trixie-backports",
        Pkg::new("curl", "8.15.0-1~bpo13+1", "amd64"),
    );
    a.add(
        "debian",
        "trixie-backports",
        Pkg::new("base-files", "14", "amd64"),
    );
    a.add(
        "debian",
        "trixie-backports",
        Pkg::new("git", "1:2.50.0-1~bpo13+1", "amd64"),
    );
    a.add(
        "debian",
        "trixie-backports",
        Pkg::new("git", "1:2.51.0-1~bpo13+1", "amd64"),
    );
    a.set_release("debian", "trixie-backports", "NotAutomatic", "yes");
    a.set_release("debian", "trixie-backports", "ButAutomaticUpgrades", "yes");
    a.add(
        "debian",
        "trixie-updates",
        Pkg::new("vim-tiny", "2:9.1.0-1", "amd64"),
    );
    a.add(
        "debian",
        "trixie-backports",
        Pkg::new("vim-tiny", "2:9.2.0-1~bpo13+1", "amd64"),
    );
    a.add("debian", "trixie", Pkg::new("curl", "8.14.1-2", "amd64"));
    a.add("debian", "trixie", Pkg::new("git", "1:2.47.2-0.1", "amd64"));
    a.add(
        "debian",
        "trixie",
        Pkg::new("vim-tiny", "2:9.1.0-0", "amd64"),
    );
    // Arch all in the index, installed as amd64 earlier (and the reverse).
    a.add(
        SEC,
        "trixie-security",
        Pkg::new("python3-x", "2.0-1", "all"),
    );
    a.add("debian", "trixie", Pkg::new("python3-x", "1.0-1", "amd64"));
    // A version only in the archive below the installed one: no downgrade.
    a.add(
        "debian",
        "trixie",
        Pkg::new("newer-local", "1.0-1", "amd64"),
    );
    a.publish();
    let status = dpkg_status(&[
        StatusEntry::new("base-files", "13.8+deb13u1", "amd64"),
        StatusEntry::new("libssl3t64", "3.5.1-1", "amd64").source("openssl"),
        StatusEntry::new("openssl", "3.5.1-1", "amd64"),
        StatusEntry::new("tzdata", "2025a-1", "all"),
        StatusEntry::new("curl", "8.14.1-2", "amd64"),
        StatusEntry::new("git", "1:2.50.0-1~bpo13+1", "amd64"),
        StatusEntry::new("vim-tiny", "2:9.1.0-0", "amd64"),
        StatusEntry::new("python3-x", "1.0-1", "amd64"),
        StatusEntry::new("newer-local", "2.0-1", "amd64"),
        StatusEntry::new("old-tool", "1.0-1", "amd64").config_files(),
    ]);
    let s = Scenario::new(a, &status);
    // The sources with the backports suite added, for rebake and apt alike.
    let text = std::fs::read_to_string(&s.sources).unwrap().replace(
        "Suites: trixie trixie-updates",
        "Suites: trixie trixie-updates trixie-backports",
    );
    assert!(text.contains("trixie-backports"), "{text}");
    std::fs::write(&s.sources, &text).unwrap();

    let r = s.scan_json(&[]);
    let apt = AptSandbox::new(&s.sources, &status);
    let names = [
        "base-files",
        "libssl3t64",
        "openssl",
        "tzdata",
        "curl",
        "git",
        "vim-tiny",
        "python3-x",
        "newer-local",
    ];
    let theirs = apt.candidates(&names);
    let installed: std::collections::HashMap<&str, String> = rebake::debian::status::parse(&status)
        .unwrap()
        .into_iter()
        .map(|p| {
            (
                names.iter().find(|n| **n == p.name).copied().unwrap_or("?"),
                p.version,
            )
        })
        .collect();
    for n in names {
        let ours = finding(&r, n)
            .map(|f| f["candidate"].as_str().unwrap().to_string())
            .unwrap_or_else(|| installed[n].clone());
        assert_eq!(
            Some(ours.clone()),
            theirs[n],
            "candidate of {n}: rebake says {ours}, apt says {:?}",
            theirs[n]
        );
    }
    // And the interesting ones are what we think they are.
    assert_eq!(
        finding(&r, "git").unwrap()["candidate"],
        "1:2.51.0-1~bpo13+1"
    );
    assert!(
        finding(&r, "curl").is_none(),
        "backports must not upgrade main's curl"
    );
    assert!(finding(&r, "base-files").is_none());
    assert_eq!(finding(&r, "python3-x").unwrap()["candidate"], "2.0-1");
    assert!(finding(&r, "newer-local").is_none());
}

#[test]
fn unchanged_archive_downloads_no_index_again() {
    let s = Scenario::typical();
    s.scan_json(&[]);
    assert!(
        s.server.count("binary-amd64/") >= 3,
        "first scan fetches the indices"
    );
    s.server.clear_log();
    let second = s.scan_json(&[]);
    let reqs = s.server.requests();
    assert_eq!(reqs.len(), 3, "one request per suite: {reqs:#?}");
    assert!(
        reqs.iter()
            .all(|r| r.path.ends_with("/InRelease") && r.status == 304),
        "{reqs:#?}"
    );
    assert_eq!(second["images"][0]["findings"].as_array().unwrap().len(), 3);

    // A change in one suite: only that suite's index is fetched again.
    let mut s = s;
    s.archive.add(
        SEC,
        "trixie-security",
        Pkg::new("base-files", "13.8+deb13u2", "amd64"),
    );
    s.archive.publish();
    s.server.clear_log();
    let third = s.scan_json(&[]);
    assert_eq!(
        s.server.count("binary-amd64/"),
        1,
        "{:#?}",
        s.server.requests()
    );
    assert!(finding(&third, "base-files").is_some());
}

#[test]
fn inrelease_altered_after_signing_is_refused() {
    let s = Scenario::typical();
    s.archive.tamper_inrelease(SEC, "trixie-security");
    let err = assert_refused(
        &s.scan(&[]),
        &["bad OpenPGP signature", "trixie-security/InRelease"],
    );
    assert!(!err.contains("Packages"), "{err}");
}

#[test]
fn inrelease_signed_by_a_key_not_in_the_keyring_is_refused() {
    let s = Scenario::typical();
    s.archive.sign_with_other_key("debian", "trixie-updates");
    assert_refused(
        &s.scan(&[]),
        &[
            "trixie-updates/InRelease",
            "not in the keyring",
            &s.archive.keyring().display().to_string(),
        ],
    );
}

#[test]
fn armored_keyring_and_one_good_signature_of_two_are_accepted() {
    let s = Scenario::typical();
    let text = std::fs::read_to_string(&s.sources).unwrap().replace(
        &s.archive.keyring().display().to_string(),
        &s.archive.keyring_asc().display().to_string(),
    );
    std::fs::write(&s.sources, text).unwrap();
    s.archive.sign_with_both_keys("debian", "trixie");
    assert_eq!(
        s.scan_json(&[])["images"][0]["findings"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn packages_not_matching_inrelease_is_refused() {
    let s = Scenario::typical();
    s.archive.corrupt_packages("debian", "trixie");
    assert_refused(
        &s.scan(&[]),
        &["does not match the verified Release", "binary-amd64"],
    );
}

#[test]
fn expired_valid_until_is_refused() {
    let mut s = Scenario::typical();
    s.archive.expire(SEC, "trixie-security");
    s.archive.publish();
    assert_refused(&s.scan(&[]), &["expired", "Valid-Until", "trixie-security"]);
}

#[test]
fn date_older_than_last_seen_is_refused() {
    let mut s = Scenario::typical();
    s.scan_json(&[]);
    s.archive
        .backdate("debian", "trixie", chrono::Duration::days(2));
    s.archive.publish();
    assert_refused(
        &s.scan(&[]),
        &["older than one already seen", "replay or rollback"],
    );
    // A fresh state directory has seen nothing yet, so the same archive is accepted.
    let fresh = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec![
        "scan".into(),
        "--sources".into(),
        s.sources.display().to_string(),
    ];
    args.extend(
        [
            "--dpkg-status",
            s.status.to_str().unwrap(),
            "--suite",
            "trixie",
        ]
        .iter()
        .map(|x| x.to_string()),
    );
    assert_success(&rebake(fresh.path(), &args));
}

#[test]
fn malformed_status_names_file_and_line() {
    let s = Scenario::new(
        typical_archive(),
        "Package: aa\nStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\n\nPackage: bb\nStatus: install ok\nVersion: 1\nArchitecture: amd64\n",
    );
    let err = assert_refused(&s.scan(&[]), &["status:7", "three words"]);
    assert!(err.contains(&s.status.display().to_string()), "{err}");
    assert_eq!(
        s.server.requests().len(),
        0,
        "nothing fetched for bad input"
    );
}

#[test]
fn malformed_packages_names_url_and_line() {
    let mut a = typical_archive();
    // A stanza without Version: signed and hashed correctly, but not a valid index.
    a.add(
        "debian",
        "trixie",
        Pkg::new("broken", "1.0", "amd64").field("Version", ""),
    );
    a.publish();
    let s = Scenario::new(a, &typical_status());
    assert_refused(
        &s.scan(&[]),
        &["dists/trixie/main/binary-amd64/Packages", "line"],
    );
}

#[test]
fn unreachable_mirror_is_a_one_line_error() {
    let s = Scenario::typical();
    let text = std::fs::read_to_string(&s.sources)
        .unwrap()
        .replace(&s.server.url(), "http://127.0.0.1:9");
    std::fs::write(&s.sources, text).unwrap();
    assert_refused(&s.scan(&[]), &["cannot fetch http://127.0.0.1:9/"]);
}

// ---------------------------------------------------------------------------------------------
// Broken mirrors: every download is bounded in size and time (short timeouts from the
// environment, see src/download.rs).

/// Short timeouts, so that a stalled download ends in a second.
const SHORT_TIMEOUTS: [(&str, &str); 2] = [
    ("REBAKE_HTTP_READ_TIMEOUT", "1"),
    ("REBAKE_HTTP_CONNECT_TIMEOUT", "2"),
];

#[test]
fn endless_inrelease_is_refused_at_its_limit() {
    let s = Scenario::typical();
    s.server.fault("dists/trixie/InRelease", Fault::Endless);
    let out = s.scan_within(&[], &SHORT_TIMEOUTS, Duration::from_secs(60));
    assert_refused(
        &out,
        &[
            &format!("{}/debian/dists/trixie/InRelease", s.server.url()),
            "more than 16777216 bytes",
            "the limit for an InRelease file",
        ],
    );
}

#[test]
fn mirror_stalling_mid_body_is_refused_by_the_read_timeout() {
    let s = Scenario::typical();
    s.server
        .fault("dists/trixie-updates/InRelease", Fault::StallAfter(200));
    let started = Instant::now();
    let out = s.scan_within(&[], &SHORT_TIMEOUTS, Duration::from_secs(30));
    assert_refused(
        &out,
        &[
            &format!("{}/debian/dists/trixie-updates/InRelease", s.server.url()),
            "read timeout: nothing received for 1 s",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn trickling_mirror_is_refused_by_the_overall_timeout() {
    let s = Scenario::typical();
    s.server
        .fault("dists/trixie-updates/InRelease", Fault::Trickle);
    let mut env = SHORT_TIMEOUTS.to_vec();
    env.push(("REBAKE_HTTP_TIMEOUT", "2"));
    let started = Instant::now();
    let out = s.scan_within(&[], &env, Duration::from_secs(30));
    assert_refused(
        &out,
        &[
            &format!("{}/debian/dists/trixie-updates/InRelease", s.server.url()),
            "overall timeout: not complete within 2 s",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn packages_longer_than_inrelease_says_is_refused_without_reading_on() {
    let s = Scenario::typical();
    // The real index, then zeros without end.
    s.server
        .fault("dists/trixie/main/binary-amd64/", Fault::Endless);
    let out = s.scan_within(&[], &SHORT_TIMEOUTS, Duration::from_secs(30));
    let err = assert_refused(
        &out,
        &[
            "dists/trixie/main/binary-amd64/",
            "the size the verified Release states for main/binary-amd64/Packages",
            "does not match the verified Release",
        ],
    );
    assert!(err.contains(&s.server.url()), "{err}");
}

#[test]
fn endless_advisory_list_and_stalled_tracker_are_refused() {
    let s = Scenario::typical();
    s.server.fault("/security/DSA/list", Fault::Endless);
    let list = format!("{}/security/DSA/list", s.server.url());
    let out = s.scan_within(
        &["--advisories", &list],
        &SHORT_TIMEOUTS,
        Duration::from_secs(60),
    );
    assert_refused(
        &out,
        &[
            &list,
            "more than 33554432 bytes",
            "the limit for an advisory list",
        ],
    );

    s.server
        .fault("/security/tracker.json", Fault::StallAfter(10));
    let json = format!("{}/security/tracker.json", s.server.url());
    let started = Instant::now();
    let out = s.scan_within(
        &["--security-tracker", &json],
        &SHORT_TIMEOUTS,
        Duration::from_secs(30),
    );
    assert_refused(&out, &[&json, "read timeout: nothing received for 1 s"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// The real Debian mirrors named by this host's apt sources, when they answer.
#[test]
fn live_host_mirror_scan() {
    let entries = match rebake::debian::sources::read_host() {
        Ok(e) => e,
        Err(e) => panic!(
            "this test reads the host's apt sources (/etc/apt/sources.list.d/*.sources): {e:#}"
        ),
    };
    let release = entries
        .iter()
        .flat_map(|e| &e.suites)
        .map(|s| rebake::debian::sources::family(s).to_string())
        .next()
        .unwrap();
    let first = rebake::debian::sources::suites_for_release(&entries, &release).unwrap();
    let probe = format!("{}InRelease", first[0].dists_url());
    let reachable = std::process::Command::new("curl")
        .args(["-sfI", "-o", "/dev/null", "--max-time", "10", &probe])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    // The base stage needs the same mirror, so a machine that cannot reach it cannot run
    // rebake's main job either: fail and say so rather than pass without scanning.
    assert!(
        reachable,
        "{probe} did not answer: this test scans the real mirror named by the host's apt \
         sources (/etc/apt/sources.list.d/*.sources); check the network or those sources"
    );
    let state = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "scan",
        "--dpkg-status",
        "/var/lib/dpkg/status",
        "--suite",
        &release,
        "--format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = rebake(state.path(), &args);
    assert_success(&out);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["images"][0]["installed_packages"].as_u64().unwrap() > 50);
    assert!(
        r["archive"].as_array().unwrap().len() >= 2,
        "{}",
        r["archive"]
    );
}

/// Copies the project's example policies and templates into a scratch GitOps repository.
/// Writes `images/<image>/rebake.lock` in `repo` recording the packages of a dpkg `status`
/// (trixie/amd64, nothing built); returns its path.
fn write_lock(repo: &Path, image: &str, status: &str) -> PathBuf {
    let lock = rebake::lock::Lock {
        lock_version: 1,
        name: image.into(),
        suite: "trixie".into(),
        architecture: "amd64".into(),
        archive: vec![],
        base: None,
        parent: None,
        reason: None,
        packages: rebake::debian::status::parse(status).unwrap(),
        image: None,
        tests: None,
    };
    let lock_path = repo.join("images").join(image).join("rebake.lock");
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    std::fs::write(&lock_path, lock.to_yaml().unwrap()).unwrap();
    lock_path
}

pub fn example_repo(repo: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["policies", "templates"] {
        std::fs::create_dir_all(repo.join(dir)).unwrap();
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), repo.join(dir).join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn scans_the_repository_images_from_their_locks() {
    let s = Scenario::typical();
    let repo = s.state.path().join("repo");
    example_repo(&repo);
    let lock_path = write_lock(&repo, "nginx", &typical_status());
    let sources = s.sources.display().to_string();
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["scan".into(), "--sources".into(), sources.clone()];
        args.extend(extra.iter().map(|x| x.to_string()));
        rebake(s.state.path(), &args)
    };

    let out = run(&["--format", "json"]);
    assert_success(&out);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_matches_schema(&r);
    let images = r["images"].as_array().unwrap();
    let names: Vec<&str> = images
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["debian", "nginx", "postgres"]);
    assert!(images[0]["note"]
        .as_str()
        .unwrap()
        .contains("rebake build debian"));
    let nginx: Vec<&str> = images[1]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["package"].as_str().unwrap())
        .collect();
    assert_eq!(nginx, ["libssl3t64", "openssl", "tzdata"]);

    // One image by name; an unknown name says which exist.
    let out = run(&["nginx"]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("nginx (trixie/amd64): 2 source package(s)"),
        "{text}"
    );
    assert!(!text.contains("postgres"), "{text}");
    assert_refused(
        &run(&["nosuch"]),
        &["no policy for image \"nosuch\"", "debian, nginx, postgres"],
    );

    // A damaged lock is named with its line, and the scan refuses to guess.
    std::fs::write(&lock_path, "lock_version: 1\nname: nginx\nsuite: [\n").unwrap();
    assert_refused(&run(&[]), &["images/nginx/rebake.lock:", "malformed lock"]);
}

/// A security fix later folded into a point release: openssl 3.5.1-1 installed, trixie-security
/// still carries 3.5.7-1~deb13u3, the point release brings 3.5.9-1~deb13u1. The update carries
/// a security fix, so it is a security update — also under `point_release: false`, which only
/// hides the plain point-release change (tzdata). The version proposed is apt's candidate.
#[test]
fn a_security_fix_folded_into_a_point_release_is_a_security_update() {
    let mut a = TestArchive::new();
    for p in [
        Pkg::new("libssl3t64", "3.5.1-1", "amd64").source("openssl"),
        Pkg::new("tzdata", "2025a-1", "all"),
    ] {
        a.add("debian", "trixie", p);
    }
    for p in [
        Pkg::new("libssl3t64", "3.5.9-1~deb13u1", "amd64").source("openssl"),
        Pkg::new("tzdata", "2025b-0+deb13u1", "all"),
    ] {
        a.add("debian", "trixie-updates", p);
    }
    a.add(
        SEC,
        "trixie-security",
        Pkg::new("libssl3t64", "3.5.7-1~deb13u3", "amd64").source("openssl"),
    );
    a.publish();
    let status = dpkg_status(&[
        StatusEntry::new("libssl3t64", "3.5.1-1", "amd64").source("openssl"),
        StatusEntry::new("tzdata", "2025a-1", "all"),
    ]);
    let s = Scenario::new(a, &status);
    let repo = s.state.path().join("repo");
    std::fs::create_dir_all(repo.join("policies")).unwrap();
    std::fs::create_dir_all(repo.join("templates")).unwrap();
    std::fs::write(repo.join("templates/web.hbs"), "FROM {{base_image}}\n").unwrap();
    std::fs::write(
        repo.join("policies/web.yaml"),
        "template: web.hbs\nsuite: trixie\nupdates:\n  point_release: false\n",
    )
    .unwrap();
    write_lock(&repo, "web", &status);
    let args: Vec<String> = [
        "scan",
        "--sources",
        &s.sources.display().to_string(),
        "--format",
        "json",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let out = rebake(s.state.path(), &args);
    assert_success(&out);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_matches_schema(&r);
    let image = &r["images"][0];
    let findings = image["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "only the security update: {image:#}");
    let f = &findings[0];
    assert_eq!(f["package"], "libssl3t64");
    assert_eq!(f["security"], true, "{f:#}");
    assert_eq!(f["candidate"], "3.5.9-1~deb13u1", "{f:#}");
    assert_eq!(image["sources"][0]["kind"], "security");

    // apt with its default priorities installs the same version.
    let apt = AptSandbox::new(&s.sources, &status);
    assert_eq!(
        apt.candidate("libssl3t64").as_deref(),
        Some("3.5.9-1~deb13u1")
    );
    // unattended-upgrades' `origin=Debian,label=Debian-Security` takes the security suite's
    // own version instead (as apt pinned to that origin alone), and no tzdata change at all.
    std::fs::write(
        apt.dir().join("preferences.d/security-only"),
        "Package: *\nPin: release o=Debian,l=Debian-Security\nPin-Priority: 990\n\n\
         Package: *\nPin: release o=Debian\nPin-Priority: -1\n",
    )
    .unwrap();
    assert_eq!(
        apt.candidate("libssl3t64").as_deref(),
        Some("3.5.7-1~deb13u3")
    );
    assert_eq!(apt.candidate("tzdata").as_deref(), Some("2025a-1"));
}

/// With no tracker configured, Debian's public tracker is read by default (here served on
/// 127.0.0.1 through `REBAKE_SECURITY_TRACKER`), cached with its validators: the next scan asks
/// conditionally and reads the cache on 304. Unreachable, it is a warning, not a failure; a
/// response larger than rebake reads is refused by its announced size.
#[test]
fn the_default_tracker_is_read_cached_and_optional() {
    let s = Scenario::typical();
    let tracker_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        tracker_dir.path().join("json"),
        r#"{"openssl":{"CVE-2025-9230":{"releases":{"trixie":{"status":"resolved","fixed_version":"3.5.4-1~deb13u1","urgency":"high"}}}}}"#,
    )
    .unwrap();
    let tracker = TestServer::start(tracker_dir.path());
    let url = format!("{}/json", tracker.url());
    let args: Vec<String> = [
        "scan",
        "--sources",
        &s.sources.display().to_string(),
        "--dpkg-status",
        &s.status.display().to_string(),
        "--suite",
        "trixie",
        "--format",
        "json",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let cves = |out: &Output| -> Vec<String> {
        assert_success(out);
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_matches_schema(&r);
        r["images"][0]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|src| src["cves"].as_array().unwrap().clone())
            .map(|c| {
                assert_eq!(c["learnt_from"], serde_json::json!(["tracker"]));
                c["id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let env = [("REBAKE_SECURITY_TRACKER", url.as_str())];
    assert_eq!(
        cves(&rebake_with(s.state.path(), &args, &env)),
        ["CVE-2025-9230"]
    );
    assert_eq!(
        cves(&rebake_with(s.state.path(), &args, &env)),
        ["CVE-2025-9230"]
    );
    assert_eq!(
        tracker.count_status("/json", 304),
        1,
        "{:?}",
        tracker.requests()
    );

    // Unreachable: a warning, and the scan goes on (the cached copy is used when there is one).
    let fresh = tempfile::tempdir().unwrap();
    let out = rebake_with(
        fresh.path(),
        &args,
        &[("REBAKE_SECURITY_TRACKER", "http://127.0.0.1:9/json")],
    );
    assert!(cves(&out).is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: the Debian Security Tracker is not reachable")
            && err.contains("127.0.0.1:9"),
        "{err}"
    );
    let out = rebake_with(
        s.state.path(),
        &args,
        &[("REBAKE_SECURITY_TRACKER", "http://127.0.0.1:9/json")],
    );
    assert_eq!(cves(&out), ["CVE-2025-9230"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("using the tracker data cached earlier"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Oversize: refused by the announced length, before reading it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let big = format!("http://{}/json", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300000000\r\n\r\n{",
        );
    });
    let fresh = tempfile::tempdir().unwrap();
    let out = rebake_with(
        fresh.path(),
        &args,
        &[("REBAKE_SECURITY_TRACKER", big.as_str())],
    );
    assert!(cves(&out).is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("more than 268435456 bytes (the limit for the Security Tracker JSON)"),
        "{err}"
    );
    server.join().unwrap();
}

/// `rebake scan --running`: every container the engine runs, whatever its image, read through
/// the engine's API (nothing executed in it): a container with a dpkg status, one with
/// distroless-style `status.d/` files, and one with no Debian inside. What it finds for each is
/// what apt finds upgradable from the same status and archive.
#[test]
fn running_containers_are_scanned_and_agree_with_apt() {
    use crate::support::engine::{docker, runtime};
    let s = Scenario::typical();
    let docker_api = docker();
    let image = runtime().block_on(crate::support::tiny_image::tiny_image(
        &docker_api,
        "scan-running",
        &["sleep", "600"],
        None,
    ));
    let cli = |args: &[&str]| {
        let out = Command::new("docker")
            .args(args)
            .output()
            .expect("docker CLI");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let names = [
        "rebake-scan-running-dpkg",
        "rebake-scan-running-distroless",
        "rebake-scan-running-other",
    ];
    for n in names {
        let _ = Command::new("docker").args(["rm", "-f", n]).output();
        cli(&["run", "-d", "--name", n, &image]);
    }
    let status = typical_status();
    let files = tempfile::tempdir().unwrap();
    let tree = |dir: &str| {
        let root = files.path().join(dir);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nVERSION_CODENAME=trixie\nID=debian\n",
        )
        .unwrap();
        root
    };
    let plain = tree("dpkg");
    std::fs::create_dir_all(plain.join("var/lib/dpkg")).unwrap();
    std::fs::write(plain.join("var/lib/dpkg/status"), &status).unwrap();
    cli(&[
        "cp",
        &format!("{}/.", plain.display()),
        &format!("{}:/", names[0]),
    ]);
    let distroless = tree("distroless");
    std::fs::create_dir_all(distroless.join("var/lib/dpkg/status.d")).unwrap();
    for (i, stanza) in status
        .split("\n\n")
        .filter(|t| !t.trim().is_empty())
        .enumerate()
    {
        std::fs::write(
            distroless.join(format!("var/lib/dpkg/status.d/pkg{i}")),
            format!("{stanza}\n"),
        )
        .unwrap();
    }
    cli(&[
        "cp",
        &format!("{}/.", distroless.display()),
        &format!("{}:/", names[1]),
    ]);

    let args: Vec<String> = [
        "scan",
        "--running",
        "--sources",
        &s.sources.display().to_string(),
        "--format",
        "json",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let out = rebake(s.state.path(), &args);
    for n in names {
        let _ = Command::new("docker").args(["rm", "-f", n]).output();
    }
    assert_success(&out);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_matches_schema(&r);
    let scanned = |container: &str| -> Value {
        r["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| {
                i["image"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{container} [image "))
            })
            .unwrap_or_else(|| panic!("{container} not scanned: {r:#}"))
            .clone()
    };
    let apt = AptSandbox::new(&s.sources, &status);
    let installed = rebake::debian::status::parse(&status).unwrap();
    let mut upgradable: Vec<String> = installed
        .iter()
        .filter(|p| apt.installed(&p.name).is_some())
        .filter(|p| apt.candidate(&p.name).is_some_and(|c| c != p.version))
        .map(|p| p.name.clone())
        .collect();
    upgradable.sort();
    assert!(!upgradable.is_empty());
    for container in &names[..2] {
        let img = scanned(container);
        assert!(
            img["image"].as_str().unwrap().ends_with(", no policy]"),
            "{img}"
        );
        assert_eq!(img["suite"], "trixie");
        let mut found: Vec<String> = img["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["package"].as_str().unwrap().to_string())
            .collect();
        found.sort();
        assert_eq!(
            found, upgradable,
            "{container}: rebake vs apt list --upgradable"
        );
    }
    let other = scanned(names[2]);
    assert!(
        other["note"]
            .as_str()
            .unwrap()
            .contains("not a Debian-based container"),
        "{other}"
    );
}

/// `rebake scan --format sarif` is valid SARIF 2.1.0 (OASIS's schema): one result per image,
/// source package and CVE, the CVE's urgency as the level, and fingerprints that do not move
/// when only the versions do — a rescan after the installed version changed keeps them.
#[test]
fn sarif_report_is_valid_and_its_fingerprints_ignore_versions() {
    let s = Scenario::typical();
    let tracker = s.state.path().join("tracker.json");
    std::fs::write(
        &tracker,
        r#"{"openssl": {
            "CVE-2025-9230": {"releases": {"trixie": {"status": "resolved", "fixed_version": "3.5.4-1~deb13u1", "urgency": "high"}}},
            "CVE-2025-9231": {"releases": {"trixie": {"status": "resolved", "fixed_version": "3.5.4-1~deb13u1", "urgency": "low"}}}
        }}"#,
    )
    .unwrap();
    let sarif = |s: &Scenario| -> Value {
        let out = s.scan(&[
            "--format",
            "sarif",
            "--security-tracker",
            tracker.to_str().unwrap(),
        ]);
        assert_success(&out);
        serde_json::from_slice(&out.stdout).expect("SARIF is JSON")
    };
    let log = sarif(&s);
    let schema: Value =
        serde_json::from_str(include_str!("../data/sarif/sarif-schema-2.1.0.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the SARIF schema compiles");
    assert!(
        !validator.is_valid(&serde_json::json!({"version": "2.1.0", "runs": [{"results": []}]})),
        "the schema refuses a run without its tool"
    );
    let errors: Vec<String> = validator
        .iter_errors(&log)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "not valid SARIF 2.1.0: {errors:#?}\n{log:#}"
    );

    let results = log["runs"][0]["results"].as_array().unwrap();
    let by_rule = |rule: &str| -> &Value {
        results
            .iter()
            .find(|r| r["ruleId"] == rule)
            .unwrap_or_else(|| panic!("no result for {rule}: {log:#}"))
    };
    assert_eq!(by_rule("CVE-2025-9230")["level"], "error");
    assert_eq!(by_rule("CVE-2025-9231")["level"], "note");
    assert_eq!(by_rule("rebake/update")["properties"]["source"], "tzdata");
    assert_eq!(results.len(), 3, "{log:#}");
    let rules: Vec<&str> = log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["CVE-2025-9230", "CVE-2025-9231", "rebake/update"]);
    let fingerprints = |log: &Value| -> Vec<String> {
        log["runs"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["partialFingerprints"]["rebakeFinding/v1"].to_string())
            .collect()
    };
    let before = fingerprints(&log);
    assert_eq!(
        before
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3,
        "one fingerprint per finding: {before:?}"
    );

    // The image now has another (still vulnerable) openssl: the same findings, same prints.
    std::fs::write(&s.status, typical_status().replace("3.5.1-1", "3.5.0-2")).unwrap();
    let again = sarif(&s);
    assert_eq!(
        again["runs"][0]["results"][0]["properties"]["installed"],
        "3.5.0-2"
    );
    assert_eq!(fingerprints(&again), before);
}
