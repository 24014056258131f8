//! The fuzz corpora replayed on stable: every saved input under `fuzz/corpus/<target>/` (real
//! seeds and every crash the fuzzers found, kept as regressions) goes through the same target
//! function `cargo fuzz` runs (`rebake::fuzzing`), so `cargo test` catches a regression
//! without nightly or cargo-fuzz. `fuzz/run.sh` does the fuzzing itself.

use rebake::fuzzing::{self, TARGETS};
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn replays_every_saved_fuzz_input_on_stable() {
    let mut failures = Vec::new();
    let mut total = 0;
    for &(name, target) in TARGETS {
        let files = inputs(name);
        assert!(!files.is_empty(), "fuzz/corpus/{name}/ has no seed");
        for file in &files {
            let data = std::fs::read(file).expect("corpus file");
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
        println!(
            "fuzz corpus replay (stable): target {name}: {} inputs",
            files.len()
        );
        total += files.len();
    }
    println!(
        "fuzz corpus replay (stable): {total} inputs through {} targets",
        TARGETS.len()
    );
    assert!(
        failures.is_empty(),
        "fuzz target panicked on saved inputs:\n{}",
        failures.join("\n")
    );
}

/// The real seeds are accepted, so the fuzzers start from inputs that reach past the first
/// error.
#[test]
fn real_seeds_are_accepted() {
    let read = |target: &str, file: &str| {
        std::fs::read_to_string(corpus_dir(target).join(file)).expect("seed")
    };
    use rebake::debian::{deb822, packages, release, status};
    assert!(deb822::parse(&read("deb822", "sources")).is_ok());
    assert_eq!(
        packages::parse(read("packages", "bookworm-security-3-stanzas").as_bytes())
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        status::parse(&read("status", "not-installed-entries"))
            .unwrap()
            .len(),
        1
    );
    assert!(release::Release::parse(&read("release", "bookworm-security-release")).is_ok());
    assert!(release::Release::parse(&read("release", "inrelease-with-armor")).is_err());
    for policy in ["debian.yaml", "nginx.yaml", "postgres.yaml"] {
        let text = read("policy", policy);
        rebake::policy::parse_policy("fuzz", Path::new(policy), &text)
            .unwrap_or_else(|d| panic!("{policy}: {d:?}"));
    }
    let example = read("config", "rebake.yaml.example");
    rebake::config::parse(Path::new("/srv/ops/rebake.yaml"), &example)
        .unwrap_or_else(|d| panic!("{d:?}"));
    rebake::lock::Lock::parse(&read("lock", "web-lock"), Path::new("x")).unwrap();
    let merged = std::fs::read(corpus_dir("webhook").join("gitea-merged-deleted-head")).unwrap();
    let proposal = rebake::server::merged_proposal_from_payload(
        rebake::server::WebhookForge::Gitea,
        &merged[1..],
    )
    .unwrap()
    .expect("a merged rebake proposal");
    assert_eq!(proposal.head_branch, "rebake/nginx");
    let _ = fuzzing::reference_compare("1.0", "1.0");
    // The attestation seeds are signed with the fuzz key: they open, and the provenance whose
    // subject is the lock's digest matches a lock with no dependencies.
    let fuzz_key = rebake::signing::Verifier::from_scalar(&fuzzing::FUZZ_KEY_SCALAR).unwrap();
    let seed = |file: &str| std::fs::read(corpus_dir("attestation").join(file)).unwrap();
    let statement = rebake::signing::dsse_open(&fuzz_key, &seed("provenance-envelope")).unwrap();
    assert_eq!(
        rebake::attest::provenance_commit(&statement).as_deref(),
        Some("0123abcd")
    );
    let other = rebake::signing::dsse_open(&fuzz_key, &seed("provenance-other-subject")).unwrap();
    let lock = |statement: &serde_json::Value| {
        let mut lock =
            rebake::lock::Lock::parse(&read("lock", "web-lock"), Path::new("x")).unwrap();
        lock.archive.clear();
        lock.base = None;
        lock.packages.clear();
        lock.image = Some(rebake::lock::ImageRef {
            id: "sha256:x".into(),
            digest: Some(fuzzing::FUZZ_DIGEST.into()),
        });
        rebake::attest::provenance_matches(statement, &lock)
    };
    assert_eq!(lock(&statement), Ok(()));
    assert!(lock(&other).is_err());
    let signed = seed("simple-signing");
    let at = signed.iter().position(|&b| b == b'\n').unwrap();
    let (repo, digest) = fuzzing::FUZZ_DIGEST.split_once('@').unwrap();
    rebake::signing::check_simple_signing(
        &fuzz_key,
        &signed[at + 1..],
        std::str::from_utf8(&signed[..at]).unwrap(),
        repo,
        digest,
    )
    .unwrap();
    assert_eq!(
        rebake::attest::manifest_layers(&seed("att-manifest"))
            .unwrap()
            .len(),
        1
    );
    let openssl = rebake::debian::changelog::parse(&read("changelog", "libssl3-bookworm-head"));
    assert!(openssl.len() >= 5, "{openssl:?}");
    assert!(openssl[0].is_security_upload("bookworm"));
    assert!(openssl.iter().any(|e| !e.cves.is_empty()));
}

/// The independent reference order agrees with the known dpkg cases of version.rs.
#[test]
fn reference_order_knows_dpkg_cases() {
    use std::cmp::Ordering::*;
    for (a, b, o) in [
        ("1.0~rc1", "1.0", Less),
        ("1.0", "1.0+b1", Less),
        ("1:0.1", "2:0.0", Less),
        ("1.0~~", "1.0~", Less),
        ("0.9+ds-4", "0.9+ds0-3", Greater),
        ("0:1.0", "1.0", Equal),
        ("1.00", "1.0", Equal),
        ("a", "b", Less),
    ] {
        assert_eq!(fuzzing::reference_compare(a, b), o, "{a} vs {b}");
    }
}
