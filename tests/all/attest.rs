//! Signatures and attestations in cosign's format (`rebake::attest`) on a real registry
//! (Debian's `docker-registry`): what rebake attaches is read back over plain HTTP and verified
//! by an independent implementation (PyPI's `securesystemslib`, DSSE and ECDSA, in
//! `attest/cosign_check.py`), the OpenVEX document is validated against OpenVEX's JSON schema,
//! and `rebake verify` reports each check with its exit status.

use std::path::{Path, PathBuf};
use std::process::Command;

use rebake::attest::{self, BuildFacts};
use rebake::config::SigningConfig;
use rebake::lock::{ArchiveState, Base, ImageRef, Lock, TestResult, TestSummary};
use rebake::plan::{BinaryChange, Change, ChangeKind};
use rebake::security::CveFix;
use rebake::signing::{Signer, Verifier};

use crate::support::engine::{docker, runtime};
use crate::support::gitops::text;
use crate::support::registry::TestRegistry;
use crate::support::tiny_image::tiny_image;

const SSLIB: &str = "PyPI's securesystemslib and in-toto-attestation: pip install \
                     'securesystemslib[crypto]' in-toto-attestation into the validators venv and \
                     put it on PATH (.ci/run does both)";

/// A fresh P-256 key pair made by the openssl CLI, as cosign's `import-key-pair` takes it:
/// (private PKCS#8 PEM, public PEM).
pub fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl CLI makes the test keys (apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        key.to_str().unwrap(),
    ]);
    run(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (key, public)
}

pub fn signer(key: &Path) -> Signer {
    Signer::from_config(&SigningConfig {
        key_file: Some(key.to_path_buf()),
        key_env: None,
        public_key: None,
    })
    .unwrap()
    .unwrap()
}

pub fn verifier(public: &Path) -> Verifier {
    Verifier::from_config(&SigningConfig {
        key_file: None,
        key_env: None,
        public_key: Some(public.to_path_buf()),
    })
    .unwrap()
}

fn package(name: &str, version: &str, source: &str) -> rebake::debian::status::InstalledPackage {
    rebake::debian::status::InstalledPackage {
        name: name.into(),
        version: version.into(),
        arch: "amd64".into(),
        source: source.into(),
        source_version: version.into(),
    }
}

/// A lock of image `name` with passing tests, a verified archive, a base and a few packages,
/// naming the pushed `digest`.
pub fn lock_for(name: &str, id: &str, digest: &str) -> Lock {
    Lock {
        lock_version: 1,
        name: name.into(),
        suite: "trixie".into(),
        architecture: "amd64".into(),
        archive: vec![ArchiveState {
            uri: "http://mirror.invalid/debian".into(),
            suite: "trixie".into(),
            date: "Sat, 08 Nov 2025 09:51:37 UTC".into(),
            inrelease_sha256: "a".repeat(64),
        }],
        base: Some(Base {
            rootfs_sha256: "b".repeat(64),
            id: format!("sha256:{}", "c".repeat(64)),
        }),
        parent: None,
        reason: None,
        packages: vec![
            package("libssl3t64", "3.5.4-1~deb13u1", "openssl"),
            package("openssl", "3.5.4-1~deb13u1", "openssl"),
            package("zlib1g", "1:1.3.dfsg+really1.3.1-1+b1", "zlib"),
        ],
        image: Some(ImageRef {
            id: id.into(),
            digest: Some(digest.into()),
        }),
        tests: Some(TestSummary {
            passed: true,
            results: vec![
                TestResult {
                    name: "prints its version".into(),
                    result: "pass".into(),
                    duration_ms: 120,
                },
                TestResult {
                    name: "current".into(),
                    result: "skip".into(),
                    duration_ms: 0,
                },
            ],
        }),
    }
}

fn cve(id: &str) -> CveFix {
    CveFix {
        id: id.into(),
        urgency: Some("high".into()),
        status: "resolved".into(),
        note: None,
        learnt_from: vec!["tracker".into()],
        fixed_in: None,
    }
}

/// The security update of openssl the new lock brings (two CVEs, one DSA).
pub fn openssl_fix() -> Change {
    let binary = |name: &str| BinaryChange {
        name: name.into(),
        arch: "amd64".into(),
        old: Some("3.5.1-1".into()),
        new: Some("3.5.4-1~deb13u1".into()),
    };
    Change {
        source: "openssl".into(),
        old: Some("3.5.1-1".into()),
        new: Some("3.5.4-1~deb13u1".into()),
        suite: Some("trixie-security".into()),
        kind: ChangeKind::Security,
        security: true,
        binaries: vec![binary("libssl3t64"), binary("openssl")],
        cves: vec![cve("CVE-2025-9230"), cve("CVE-2025-9231")],
        advisories: vec!["DSA-6015-1".into()],
        changelog: None,
        changelog_missing: false,
    }
}

pub fn facts(commit: &str) -> BuildFacts {
    let now = chrono::Utc::now();
    BuildFacts {
        commit: Some(commit.into()),
        source: Some("https://git.invalid/ops/images".into()),
        policy: ("policies/signed.yaml".into(), "1".repeat(64)),
        template: ("templates/signed.Dockerfile.hbs".into(), "2".repeat(64)),
        dockerfile_sha256: "3".repeat(64),
        source_date_epoch: 1_762_595_497,
        no_cache: false,
        started: now - chrono::Duration::seconds(40),
        finished: now,
    }
}

/// Runs the independent checker; its stdout, and the statements it verified.
fn independent_check(
    registry: &TestRegistry,
    path: &str,
    hex: &str,
    public: &Path,
    out: &Path,
) -> (String, Vec<serde_json::Value>) {
    let has = Command::new("python3")
        .args([
            "-c",
            "import securesystemslib.dsse, cryptography, in_toto_attestation.v1.statement",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(has, "this test needs {SSLIB}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/attest/cosign_check.py");
    let run = Command::new("python3")
        .arg(script)
        .arg(format!("http://{}", registry.host()))
        .args([path, hex])
        .arg(public)
        .arg(out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let mut statements: Vec<(u32, serde_json::Value)> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let n = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            (
                n,
                serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap(),
            )
        })
        .collect();
    statements.sort_by_key(|(n, _)| *n);
    (
        String::from_utf8_lossy(&run.stdout).into_owned(),
        statements.into_iter().map(|(_, s)| s).collect(),
    )
}

/// Pushes a tiny image as `name` to `registry`: (image id, `repo@sha256:…`).
pub fn push_tiny(registry: &TestRegistry, name: &str) -> (String, String) {
    let docker = docker();
    runtime().block_on(async {
        let id = tiny_image(&docker, name, &["/bin/sh"], None).await;
        let pushed = rebake::publish::push(&docker, &id, &registry.config(), name, "v1")
            .await
            .unwrap();
        (id, pushed)
    })
}

#[test]
fn a_signed_image_and_its_attestations_verify_with_an_independent_implementation() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "cosign");
    let registry = TestRegistry::start();
    let (id, pushed) = push_tiny(&registry, "signed");
    let (repo, hex) = attest::split_digest(&pushed).unwrap();
    let lock = lock_for("signed", &id, &pushed);
    let statements = attest::statements(&lock, repo, hex, &facts("0123abcd"), &[openssl_fix()]);
    let signer = signer(&key);

    let started = std::time::Instant::now();
    let attached = runtime()
        .block_on(attest::attach(
            &registry.config(),
            &signer,
            &pushed,
            &statements,
        ))
        .unwrap();
    eprintln!(
        "signing and attaching 1 signature and {} attestations: {:?}",
        statements.len(),
        started.elapsed()
    );
    let kinds: Vec<&str> = attached
        .attestations
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            attest::PROVENANCE,
            attest::SPDX,
            attest::CYCLONEDX,
            attest::TEST_RESULT,
            attest::OPENVEX
        ]
    );

    let (stdout, verified) =
        independent_check(&registry, "signed", hex, &public, &dir.path().join("out"));
    assert!(
        stdout.contains(&format!("signature: verified for {repo}")),
        "{stdout}"
    );
    for kind in &kinds {
        assert!(
            stdout.contains(&format!("attestation: verified {kind}")),
            "{stdout}"
        );
    }
    assert_eq!(verified.len(), 5);
    // The same check with another public key fails (the checker can say no).
    let (_, stranger) = keypair(dir.path(), "stranger");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/attest/cosign_check.py");
    let refused = Command::new("python3")
        .arg(script)
        .arg(format!("http://{}", registry.host()))
        .args(["signed", hex])
        .arg(&stranger)
        .arg(dir.path().join("out-stranger"))
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{}", text(&refused));

    // The provenance: the GitOps inputs, the verified archive, the base, every package.
    let provenance = &verified[0];
    assert_eq!(provenance["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(provenance["subject"][0]["name"], repo);
    let build = &provenance["predicate"]["buildDefinition"];
    assert_eq!(build["externalParameters"]["source"]["commit"], "0123abcd");
    assert_eq!(
        build["externalParameters"]["template"]["path"],
        "templates/signed.Dockerfile.hbs"
    );
    let deps = build["resolvedDependencies"].as_array().unwrap();
    assert_eq!(
        deps[0]["uri"],
        "http://mirror.invalid/debian/dists/trixie/InRelease"
    );
    assert_eq!(deps[0]["digest"]["sha256"], "a".repeat(64));
    assert_eq!(
        deps[0]["annotations"]["date"],
        "Sat, 08 Nov 2025 09:51:37 UTC"
    );
    assert_eq!(deps[1]["digest"]["sha256"], "b".repeat(64));
    assert!(deps.iter().any(|d| d["uri"]
        == "pkg:deb/debian/zlib1g@1%3A1.3.dfsg%2Breally1.3.1-1%2Bb1?arch=amd64&distro=debian-13"));
    let run = &provenance["predicate"]["runDetails"];
    assert_eq!(
        run["builder"]["version"]["rebake"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        run["metadata"]["startedOn"].as_str().unwrap()
            < run["metadata"]["finishedOn"].as_str().unwrap()
    );

    // The test results, a separate in-toto test-result attestation.
    assert_eq!(verified[3]["predicate"]["result"], "PASSED");
    assert_eq!(
        verified[3]["predicate"]["passedTests"],
        serde_json::json!(["prints its version"])
    );

    // OpenVEX: valid against OpenVEX's own schema; a `fixed` statement per CVE.
    let vex = &verified[4]["predicate"];
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/openvex/openvex_json_schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the OpenVEX schema compiles");
    let errors: Vec<String> = validator.iter_errors(vex).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}\n{vex:#}");
    // The schema holds: a document without statements is refused (so the check can fail).
    let mut empty = vex.clone();
    empty["statements"] = serde_json::json!([]);
    assert!(!validator.is_valid(&empty));
    let statements = vex["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 2);
    assert_eq!(statements[0]["vulnerability"]["name"], "CVE-2025-9230");
    assert_eq!(statements[0]["status"], "fixed");
    let product = &statements[0]["products"][0];
    assert_eq!(
        product["@id"],
        format!("pkg:oci/signed@sha256%3A{hex}?repository_url={repo}&arch=amd64")
    );
    assert_eq!(
        product["subcomponents"][0]["@id"],
        "pkg:deb/debian/libssl3t64@3.5.4-1~deb13u1?arch=amd64&distro=debian-13"
    );
    assert!(statements[0]["status_notes"]
        .as_str()
        .unwrap()
        .contains("DSA-6015-1"));

    // rebake's own reading agrees, and refuses another key.
    let config = registry.config();
    let ours = verifier(&public);
    let found = runtime()
        .block_on(attest::fetch_attestations(&config, &ours, &pushed))
        .unwrap();
    assert!(found.failed.is_empty(), "{:?}", found.failed);
    assert_eq!(found.verified.len(), 5);
    let (_, other) = keypair(dir.path(), "other");
    let why = runtime()
        .block_on(attest::check_signature(&config, &verifier(&other), &pushed))
        .unwrap()
        .unwrap_err();
    assert!(why.contains("does not verify"), "{why}");
}

/// A repository with the example policies, `debian`'s lock naming `pushed`, and a rebake.yaml
/// with the registry and `signing` (`extra` lines appended).
fn verify_repo(dir: &Path, registry: &TestRegistry, lock: &Lock, extra: &str) -> PathBuf {
    let repo = dir.join("repo");
    crate::scan::example_repo(&repo);
    let path = rebake::lock::path_for(&repo, "debian");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, lock.to_yaml().unwrap()).unwrap();
    std::fs::write(
        repo.join("rebake.yaml"),
        format!(
            "registry:\n  url: {}\n  insecure: true\n{extra}",
            registry.host()
        ),
    )
    .unwrap();
    repo
}

fn rebake_verify(repo: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rebake"))
        .args(["verify", "debian", "--repo"])
        .arg(repo)
        .env("REBAKE_STATE_DIR", repo.join("state"))
        .output()
        .unwrap()
}

#[test]
fn rebake_verify_checks_the_signature_and_the_provenance_against_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "cosign");
    let registry = TestRegistry::start();
    let (id, pushed) = push_tiny(&registry, "debian");
    let (repo_ref, hex) = attest::split_digest(&pushed).unwrap();
    let lock = lock_for("debian", &id, &pushed);
    let statements = attest::statements(&lock, repo_ref, hex, &facts("0123abcd"), &[]);
    // No CVE fixed: no VEX document (OpenVEX needs a statement).
    assert!(!statements.iter().any(|(k, _)| k == attest::OPENVEX));
    runtime()
        .block_on(attest::attach(
            &registry.config(),
            &signer(&key),
            &pushed,
            &statements,
        ))
        .unwrap();

    // signing.public_key: every check passes.
    let repo = verify_repo(
        dir.path(),
        &registry,
        &lock,
        &format!("signing:\n  public_key: {}\n", public.display()),
    );
    let out = rebake_verify(&repo);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains(&format!("signature: {pushed} is signed")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("attested:  {}", attest::PROVENANCE)),
        "{shown}"
    );
    assert!(
        shown.contains("provenance: describes the lock") && shown.contains("0123abcd"),
        "{shown}"
    );
    assert!(
        shown.contains("sbom:      the SPDX and CycloneDX attestations are the lock's"),
        "{shown}"
    );

    // signing.key_file alone: the public half of the key is used.
    std::fs::write(
        repo.join("rebake.yaml"),
        format!(
            "registry:\n  url: {}\n  insecure: true\nsigning:\n  key_file: {}\n",
            registry.host(),
            key.display()
        ),
    )
    .unwrap();
    let out = rebake_verify(&repo);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(
        !shown.contains("BEGIN") && !shown.contains("PRIVATE"),
        "{shown}"
    );

    // Another key: exit 7, the failed checks named.
    let (_, other) = keypair(dir.path(), "other");
    std::fs::write(
        repo.join("rebake.yaml"),
        format!(
            "registry:\n  url: {}\n  insecure: true\nsigning:\n  public_key: {}\n",
            registry.host(),
            other.display()
        ),
    )
    .unwrap();
    let out = rebake_verify(&repo);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(7), "{shown}");
    assert!(shown.contains("signature: FAILED"), "{shown}");
    assert!(shown.contains("attested:  FAILED"), "{shown}");

    // A lock the provenance does not describe (another package version): exit 7.
    let mut changed = lock.clone();
    changed.packages[2].version = "1:1.3.dfsg+really1.3.1-1+b2".into();
    std::fs::write(
        rebake::lock::path_for(&repo, "debian"),
        changed.to_yaml().unwrap(),
    )
    .unwrap();
    std::fs::write(
        repo.join("rebake.yaml"),
        format!(
            "registry:\n  url: {}\n  insecure: true\nsigning:\n  public_key: {}\n",
            registry.host(),
            public.display()
        ),
    )
    .unwrap();
    let out = rebake_verify(&repo);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(7), "{shown}");
    assert!(
        shown.contains("provenance: FAILED") && shown.contains("zlib1g"),
        "{shown}"
    );
    assert!(
        shown.contains("sbom:      FAILED: the https://spdx.dev/Document SBOM is not the lock's"),
        "{shown}"
    );

    // No signing configured: said, not failed.
    std::fs::write(
        repo.join("rebake.yaml"),
        format!("registry:\n  url: {}\n  insecure: true\n", registry.host()),
    )
    .unwrap();
    let out = rebake_verify(&repo);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("signature: not checked"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_bad_signing_key_is_an_error_naming_the_field_and_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keypair(dir.path(), "cosign");
    let pem = std::fs::read_to_string(&key).unwrap();
    // A damaged key (one base64 character changed).
    let body_line = pem.lines().nth(1).unwrap().to_string();
    let mut damaged_line = body_line.clone().into_bytes();
    damaged_line[20] = if damaged_line[20] == b'A' { b'B' } else { b'A' };
    let damaged = pem.replace(&body_line, std::str::from_utf8(&damaged_line).unwrap());
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, &damaged).unwrap();
    let err = Signer::from_config(&SigningConfig {
        key_file: Some(bad.clone()),
        key_env: None,
        public_key: None,
    })
    .unwrap_err();
    let shown = format!("{err:#}");
    assert!(
        shown.contains("signing.key_file") && shown.contains("bad.key"),
        "{shown}"
    );
    assert!(!shown.contains(&body_line[..16]), "{shown}");

    // signing.key_env: the PEM from the environment; unset, the variable is named.
    std::env::set_var("REBAKE_TEST_SIGNING_KEY", &pem);
    let from_env = SigningConfig {
        key_file: None,
        key_env: Some("REBAKE_TEST_SIGNING_KEY".into()),
        public_key: None,
    };
    let s = Signer::from_config(&from_env).unwrap().unwrap();
    assert_eq!(s.verifier().to_pem(), signer(&key).verifier().to_pem());
    let unset = SigningConfig {
        key_env: Some("REBAKE_TEST_SIGNING_KEY_UNSET".into()),
        ..from_env
    };
    let err = Signer::from_config(&unset).unwrap_err().to_string();
    assert!(
        err.contains("REBAKE_TEST_SIGNING_KEY_UNSET") && err.contains("signing.key_env"),
        "{err}"
    );

    // A key written into rebake.yaml itself is refused, naming the field, not echoing it.
    let yaml = format!(
        "signing:\n  key_file: |\n{}",
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    let problems = rebake::config::parse(Path::new("/srv/ops/rebake.yaml"), &yaml).unwrap_err();
    let shown = format!("{problems:?}");
    assert!(
        shown.contains("key_file") && shown.contains("looks like a key itself"),
        "{shown}"
    );
    assert!(!shown.contains(&body_line[..16]), "{shown}");

    // deploy.verify: required needs a key to verify with; other values are refused.
    let problems = rebake::config::parse(
        Path::new("/srv/ops/rebake.yaml"),
        "deploy:\n  verify: required\n",
    )
    .unwrap_err();
    assert!(
        format!("{problems:?}").contains("no key to check signatures"),
        "{problems:?}"
    );
    let problems = rebake::config::parse(
        Path::new("/srv/ops/rebake.yaml"),
        "deploy:\n  verify: yes-please\n",
    )
    .unwrap_err();
    assert!(
        format!("{problems:?}").contains("not a verification mode"),
        "{problems:?}"
    );
    let ok = rebake::config::parse(
        Path::new("/srv/ops/rebake.yaml"),
        "signing:\n  public_key: cosign.pub\ndeploy:\n  verify: required\n",
    )
    .unwrap();
    assert!(ok.deploy.verify_required);
    assert_eq!(
        ok.signing.unwrap().public_key.as_deref(),
        Some(Path::new("/srv/ops/cosign.pub"))
    );
}
