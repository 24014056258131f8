//! The main job, `rebake run --once`, on the embedded default, as a newcomer runs it: a fresh
//! private (0700) home, no state directory configured, no git identity. The first run proposes
//! (nothing merged, nothing deployed); the merge and re-run commands it prints are pasted into a
//! shell; the second run deploys exactly the tested image, which then serves its page; an
//! untested or unknown image is refused.

use crate::support::gitops::{git, text};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// The environment of a newcomer's shell: only a fresh HOME, nothing of rebake's or git's own.
fn newcomer_env(cmd: &mut Command, home: &Path) {
    cmd.env("HOME", home)
        .env_remove("REBAKE_STATE_DIR")
        .env_remove("XDG_STATE_HOME")
        .env_remove("RUST_LOG")
        .env_remove("GIT_CONFIG_GLOBAL")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
}

fn rebake(cwd: &Path, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rebake"));
    cmd.args(args).current_dir(cwd);
    newcomer_env(&mut cmd, home);
    cmd.output().expect("run rebake")
}

/// Runs a line rebake printed, pasted into `sh` as it is.
fn paste(cwd: &Path, home: &Path, line: &str) -> Output {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", line]).current_dir(cwd);
    newcomer_env(&mut cmd, home);
    cmd.output().expect("run sh")
}

/// The lines after `heading` up to the next empty line, without their indent.
fn hint_lines(stdout: &str, heading: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with(heading))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

/// The embedded default's containers and the database's volumes, so each run starts afresh.
fn remove_containers() {
    let _ = Command::new("docker")
        .args(["rm", "-f", "rebake-nginx", "rebake-postgres"])
        .output();
    let _ = Command::new("docker")
        .args([
            "volume",
            "rm",
            "rebake-postgres-data",
            "rebake-postgres-backups",
        ])
        .output();
}

#[test]
fn newcomer_main_job_proposes_then_deploys_the_merged_tested_image() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cwd = dir.path().join("somewhere");
    std::fs::create_dir(&cwd).unwrap();
    let state = home.join(".local/state/rebake");
    remove_containers();

    let first = rebake(&cwd, &home, &["run", "--once"]);
    let out = text(&first);
    assert_eq!(first.status.code(), Some(0), "{out}");
    assert!(out.contains("using the embedded default"), "{out}");
    for image in ["debian", "nginx", "postgres"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(image) && l.contains("opened")),
            "{image} not proposed:\n{out}"
        );
    }
    assert!(out.contains("nothing merged to deploy"), "{out}");
    assert!(
        state.join("default/origin.git").is_dir(),
        "the default state directory is under HOME:\n{out}"
    );

    // The newcomer pastes what the first run printed: merge the proposal, run again. nginx and
    // postgres build on debian: the three are one image tree, proposed together.
    let work = state.join("default/work");
    let stdout = String::from_utf8_lossy(&first.stdout);
    let hints = hint_lines(
        &stdout,
        "To merge the tree-debian proposal (nginx and the images of its tree)",
    );
    assert_eq!(hints.len(), 2, "two commands to paste:\n{stdout}");
    let merged = paste(&cwd, &home, &hints[0]);
    assert!(merged.status.success(), "{}: {}", hints[0], text(&merged));
    assert_eq!(
        git(&work, &["rev-parse", "origin/main"]),
        git(&work, &["rev-parse", "origin/rebake/group/tree-debian"]),
        "main is the tested proposal after the merge"
    );
    let lock = |image: &str| {
        rebake::lock::Lock::read(&work.join(format!("images/{image}/rebake.lock"))).unwrap()
    };
    let debian = lock("debian").image.unwrap().id;
    for child in ["nginx", "postgres"] {
        let parent = lock(child).parent.expect("a child's lock names its parent");
        assert_eq!((parent.name.as_str(), &parent.image), ("debian", &debian));
    }

    let second = paste(&cwd, &home, &hints[1]);
    let out = text(&second);
    assert_eq!(second.status.code(), Some(0), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("nginx") && l.contains("docker:rebake-nginx"))
        .unwrap_or_else(|| panic!("no nginx deploy row:\n{out}"));
    assert!(row.contains("deployed"), "{row}");
    let postgres = out
        .lines()
        .find(|l| l.starts_with("postgres") && l.contains("docker:rebake-postgres"))
        .unwrap_or_else(|| panic!("no postgres deploy row:\n{out}"));
    assert!(postgres.contains("deployed"), "{postgres}");
    let tested = lock("nginx").image.unwrap().id;
    assert!(
        row.contains(&tested),
        "deployed what the lock says was tested: {row}"
    );
    let page = Command::new("curl")
        .args(["-sf", "--max-time", "10", "http://127.0.0.1:8080/"])
        .output()
        .expect("curl");
    assert!(
        String::from_utf8_lossy(&page.stdout).contains("Served by rebake"),
        "{}",
        String::from_utf8_lossy(&page.stdout)
    );
    let record = std::fs::read_to_string(state.join("deployments.log")).unwrap();
    assert!(record.contains("\"deployed\""), "{record}");

    // Again: the same digest already runs.
    let deploy = || rebake(&cwd, &home, &["deploy", "--repo", work.to_str().unwrap()]);
    let out = text(&deploy());
    assert!(out.contains("unchanged"), "{out}");

    // Someone edits nginx's lock on main by hand; then `rebake deploy`.
    let lock_path = work.join("images/nginx/rebake.lock");
    let tamper_and_deploy = |edit: &dyn Fn(String) -> String, message: &str| {
        let lock = std::fs::read_to_string(&lock_path).unwrap();
        std::fs::write(&lock_path, edit(lock)).unwrap();
        git(&work, &["commit", "-q", "-am", message]);
        git(&work, &["push", "-q", "origin", "main"]);
        deploy()
    };

    // A lock that does not record passing tests is refused, and nothing is touched.
    let refused = tamper_and_deploy(
        &|lock| lock.replace("passed: true", "passed: false"),
        "tamper: untested",
    );
    let out = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{out}");
    assert!(
        out.contains("refused: the lock does not record passing tests"),
        "{out}"
    );
    let running = Command::new("docker")
        .args(["inspect", "-f", "{{.Image}}", "rebake-nginx"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), tested);

    // So is an image the engine (and no registry) has.
    let refused = tamper_and_deploy(
        &|lock| {
            lock.replace("passed: false", "passed: true")
                .replace(&tested, &format!("sha256:{}", "0".repeat(64)))
        },
        "tamper: unknown image",
    );
    let out = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{out}");
    assert!(
        out.contains("refused: the engine does not have image sha256:000"),
        "{out}"
    );
    remove_containers();
}
