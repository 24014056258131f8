//! rebake as an ordinary user (not root) in the `docker` group, with a private (0700) home and
//! the default state directory: the base is built by mmdebstrap in a user namespace
//! (`--mode=unshare`, which needs `uidmap` and subordinate ids), then the example Debian image
//! on it. Run as root, the test runs rebake as the user `rebake-ci` (`.ci/run` creates it);
//! run as an ordinary user, it runs rebake as that user.

use crate::scan::example_repo;
use crate::support::gitops::text;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

/// The user `.ci/run` makes for this test.
const CI_USER: &str = "rebake-ci";

fn is_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

#[test]
fn an_ordinary_user_builds_the_base_and_an_image() {
    crate::support::require_tool("mmdebstrap", "mmdebstrap");
    crate::support::require_tool("newuidmap", "uidmap");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The binary where the user can run it (a root-owned build tree may be private).
    let exe = dir.path().join("rebake");
    std::fs::copy(env!("CARGO_BIN_EXE_rebake"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    let repo = home.join("images");
    example_repo(&repo);
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();

    let mut cmd = if is_root() {
        let id = Command::new("id")
            .args(["-u", CI_USER])
            .output()
            .expect("id");
        assert!(
            id.status.success(),
            "this test runs rebake as the ordinary user {CI_USER}, which does not exist; create \
             it as .ci/run does: useradd --create-home --groups docker {CI_USER} && \
             usermod --add-subuids 200000-265535 --add-subgids 200000-265535 {CI_USER}"
        );
        let uid: u32 = String::from_utf8_lossy(&id.stdout).trim().parse().unwrap();
        std::os::unix::fs::chown(&home, Some(uid), None).unwrap();
        let chown = Command::new("chown")
            .args(["-R", CI_USER])
            .arg(&home)
            .status()
            .unwrap();
        assert!(chown.success());
        // runuser sets HOME to the user's own; `env` puts the private one back.
        let mut c = Command::new("runuser");
        c.args(["-u", CI_USER, "--", "env"])
            .arg(format!("HOME={}", home.display()))
            .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd
        .args(["build", "debian", "--no-push", "--repo"])
        .arg(&repo)
        .current_dir(dir.path())
        .env("HOME", &home)
        .env_remove("REBAKE_STATE_DIR")
        .env_remove("XDG_STATE_HOME")
        .env_remove("RUST_LOG")
        .output()
        .expect("run rebake");
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("debian") && l.contains("built")),
        "{shown}"
    );
    // Off a terminal, the stages are logged one line each on stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for stage in ["debian: base trixie/amd64", "debian: build", "debian: test"] {
        assert!(stderr.contains(stage), "no stage line {stage:?}:\n{stderr}");
    }
    let lock = rebake::lock::Lock::read(&repo.join("images/debian/rebake.lock")).unwrap();
    assert!(lock.tests.is_some_and(|t| t.passed));
    let state = home.join(".local/state/rebake");
    assert!(
        state.join("bases/bases.json").is_file(),
        "the base was built in the default state directory"
    );
    if is_root() {
        assert_ne!(
            state.metadata().unwrap().uid(),
            0,
            "made by the user, not root"
        );
    }
}
