//! `rebake sbom`: SPDX 2.3 and CycloneDX 1.6 documents of an image's lock, validated by
//! independent implementations (PyPI's `spdx-tools` and `cyclonedx-python-lib`, which
//! `.ci/run` installs), on a lock holding this host's real installed packages.

use crate::scan::example_repo;
use crate::support::gitops::text;
use std::path::Path;
use std::process::Command;

const VALIDATORS: &str = "the SBOM validators: pip install spdx-tools \
                          'cyclonedx-python-lib[json-validation]' (.ci/run installs them)";

fn lock_of_this_host(repo: &Path) -> rebake::lock::Lock {
    let status = std::fs::read_to_string("/var/lib/dpkg/status").expect("the host's dpkg status");
    let lock = rebake::lock::Lock {
        lock_version: 1,
        name: "debian".into(),
        suite: "trixie".into(),
        architecture: "amd64".into(),
        archive: vec![rebake::lock::ArchiveState {
            uri: "http://mirror.invalid/debian".into(),
            suite: "trixie".into(),
            date: "Sat, 08 Nov 2025 09:51:37 UTC".into(),
            inrelease_sha256: "a".repeat(64),
        }],
        base: Some(rebake::lock::Base {
            rootfs_sha256: "b".repeat(64),
            id: format!("sha256:{}", "c".repeat(64)),
        }),
        parent: None,
        reason: None,
        packages: rebake::debian::status::parse(&status).unwrap(),
        image: Some(rebake::lock::ImageRef {
            id: format!("sha256:{}", "d".repeat(64)),
            digest: None,
        }),
        tests: None,
    };
    let path = repo.join("images/debian/rebake.lock");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, lock.to_yaml().unwrap()).unwrap();
    lock
}

fn sbom(repo: &Path, format: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rebake"))
        .args(["sbom", "debian", "--format", format, "--repo"])
        .arg(repo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sboms_list_every_package_and_pass_independent_validators() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    example_repo(&repo);
    let lock = lock_of_this_host(&repo);
    let n = lock.packages.len();
    assert!(n > 50, "a real package list");

    let spdx = sbom(&repo, "spdx");
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    assert_eq!(spdx["packages"].as_array().unwrap().len(), n + 1);
    assert_eq!(spdx["creationInfo"]["created"], "2025-11-08T09:51:37Z");
    let file = dir.path().join("sbom.spdx.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&spdx).unwrap()).unwrap();
    let checked = Command::new("pyspdxtools")
        .arg("-i")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("pyspdxtools: {e}: {VALIDATORS}"));
    assert!(checked.status.success(), "SPDX invalid: {}", text(&checked));

    let cdx = sbom(&repo, "cyclonedx");
    assert_eq!(cdx["specVersion"], "1.6");
    let components = cdx["components"].as_array().unwrap();
    assert_eq!(components.len(), n);
    let bash = components.iter().find(|c| c["name"] == "bash").unwrap();
    assert!(
        bash["purl"]
            .as_str()
            .unwrap()
            .starts_with("pkg:deb/debian/bash@"),
        "{bash}"
    );
    assert!(bash["purl"]
        .as_str()
        .unwrap()
        .ends_with("?arch=amd64&distro=debian-13"));
    let file = dir.path().join("sbom.cdx.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&cdx).unwrap()).unwrap();
    let checked = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys\n\
             from cyclonedx.schema import SchemaVersion\n\
             from cyclonedx.validation.json import JsonStrictValidator\n\
             error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
             print(error or 'valid')\n\
             sys.exit(1 if error else 0)\n",
        )
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}: {VALIDATORS}"));
    assert!(
        checked.status.success(),
        "CycloneDX invalid or validator missing ({VALIDATORS}): {}",
        text(&checked)
    );

    // The same lock, the same bytes.
    assert_eq!(sbom(&repo, "cyclonedx"), cdx);
}
