//! The main job, `rebake run --once`, on the embedded default, closing the loop a user sees:
//! first run proposes (nothing merged, nothing deployed); a person merges the nginx proposal;
//! the next run deploys exactly the tested image, which then serves its page; an untested or
//! unknown image is refused.

use crate::support::gitops::{git, text};
use std::path::Path;
use std::process::{Command, Output};

fn rebake(cwd: &Path, state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rebake"))
        .args(args)
        .current_dir(cwd)
        .env("REBAKE_STATE_DIR", state)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rebake")
}

fn remove_container(name: &str) {
    let _ = Command::new("docker").args(["rm", "-f", name]).output();
}

#[test]
fn main_job_proposes_then_deploys_the_merged_tested_image() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    remove_container("rebake-nginx");

    let first = rebake(dir.path(), &state, &["run", "--once"]);
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

    // A reviewer merges the nginx proposal.
    let work = state.join("default/work");
    git(&work, &["pull", "-q", "origin", "main"]);
    git(&work, &["fetch", "-q", "origin"]);
    git(
        &work,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "merge nginx update",
            "origin/rebake/nginx",
        ],
    );
    git(&work, &["push", "-q", "origin", "main"]);

    let second = rebake(dir.path(), &state, &["run", "--once"]);
    let out = text(&second);
    assert_eq!(second.status.code(), Some(0), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("nginx") && l.contains("docker:rebake-nginx"))
        .unwrap_or_else(|| panic!("no nginx deploy row:\n{out}"));
    assert!(row.contains("deployed"), "{row}");
    let lock = rebake::lock::Lock::read(&work.join("images/nginx/rebake.lock")).unwrap();
    let tested = lock.image.unwrap().id;
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
    let deploy = || {
        rebake(
            dir.path(),
            &state,
            &["deploy", "--repo", work.to_str().unwrap()],
        )
    };
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
    remove_container("rebake-nginx");
}
