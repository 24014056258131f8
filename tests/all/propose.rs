//! `rebake propose` end to end, as a user runs it in a clone of their GitOps repository: real
//! git remotes, the real Debian mirror and engine for the build, and the plain-git forge or the
//! stateful fake GitHub (every request checked against GitHub's schema).

use crate::support::engine::runtime;
use crate::support::fake_github::FakeGitHub;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// One state directory for these tests, so the base image is built once; runs are serialized
/// because they share it.
fn shared_state() -> (&'static Path, std::sync::MutexGuard<'static, ()>) {
    static STATE: OnceLock<tempfile::TempDir> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    (
        STATE.get_or_init(|| tempfile::tempdir().unwrap()).path(),
        guard,
    )
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Human")
        .env("GIT_AUTHOR_EMAIL", "human@example.invalid")
        .env("GIT_COMMITTER_NAME", "Human")
        .env("GIT_COMMITTER_EMAIL", "human@example.invalid")
        .output()
        .expect("git CLI (apt-get install git) is used to set up these tests");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare "origin" holding the example `debian` policy and template on `main`, and a clone of
/// it where rebake runs.
struct GitOps {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    clone: PathBuf,
}

fn gitops() -> GitOps {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("origin.git");
    let clone = dir.path().join("work");
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["policies/debian.yaml", "templates/debian.Dockerfile.hbs"] {
        let to = clone.join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(f), to).unwrap();
    }
    git(&clone, &["checkout", "-q", "-b", "main"]);
    git(&clone, &["add", "."]);
    git(&clone, &["commit", "-q", "-m", "example debian image"]);
    git(&clone, &["push", "-q", "origin", "main"]);
    GitOps {
        _dir: dir,
        bare,
        clone,
    }
}

fn propose(ops: &GitOps, state: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rebake"));
    cmd.args(["propose", "--repo"])
        .arg(&ops.clone)
        .env("REBAKE_STATE_DIR", state)
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run rebake")
}

/// The ACTION column of the image's row.
fn action(out: &Output, image: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with(image))
        .unwrap_or_else(|| {
            panic!(
                "no row for {image}:\n{text}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    row.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn branch_head(bare: &Path, branch: &str) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(bare)
        .args([
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}"),
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn plain_git_proposal_lifecycle() {
    let ops = gitops();
    let (state, _guard) = shared_state();

    // First run: the image has no lock yet, so it is built and proposed on rebake/debian.
    let first = propose(&ops, state, &[]);
    assert_eq!(
        action(&first, "debian"),
        "opened",
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let head = branch_head(&ops.bare, "rebake/debian").expect("branch pushed");
    let message = git(&ops.bare, &["log", "-1", "--format=%B", &head]);
    assert!(message.starts_with("debian: first build ("), "{message}");
    for part in [
        "### Packages",
        "| base-files |",
        "### Tests",
        "| current | pass |",
        "### Reproduce locally",
    ] {
        assert!(message.contains(part), "{part} missing from:\n{message}");
    }
    let files = git(&ops.bare, &["ls-tree", "-r", "--name-only", &head]);
    assert!(
        files.contains("images/debian/Dockerfile") && files.contains("images/debian/rebake.lock")
    );

    // Nothing changed: the branch does not move and nothing is written.
    let statuses = std::fs::read(state.join("plain-git/statuses.json")).unwrap();
    let second = propose(&ops, state, &[]);
    assert_eq!(action(&second, "debian"), "unchanged");
    assert_eq!(
        branch_head(&ops.bare, "rebake/debian").as_deref(),
        Some(head.as_str())
    );
    assert_eq!(
        std::fs::read(state.join("plain-git/statuses.json")).unwrap(),
        statuses
    );

    // Newer inputs (here: the policy asks for one more package) update the open proposal:
    // a new commit on the branch, on top of the new main, with the body rewritten.
    let policy = ops.clone.join("policies/debian.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text.replace("  - ca-certificates\n", "  - ca-certificates\n  - less\n"),
    )
    .unwrap();
    git(&ops.clone, &["commit", "-q", "-am", "debian: add less"]);
    git(&ops.clone, &["push", "-q", "origin", "main"]);
    let updated = propose(&ops, state, &[]);
    assert_eq!(
        action(&updated, "debian"),
        "updated",
        "{}",
        String::from_utf8_lossy(&updated.stderr)
    );
    let new_head = branch_head(&ops.bare, "rebake/debian").unwrap();
    assert_ne!(new_head, head);
    let message = git(&ops.bare, &["log", "-1", "--format=%B", &new_head]);
    assert!(message.contains("| less |"), "{message}");
    let main = git(&ops.bare, &["rev-parse", "refs/heads/main"]);
    assert_eq!(
        git(&ops.bare, &["rev-parse", &format!("{new_head}^")]),
        main
    );

    // Someone applies the same image to main by hand: the proposal is no longer needed.
    git(&ops.clone, &["fetch", "-q", "origin"]);
    git(
        &ops.clone,
        &["checkout", "-q", "origin/rebake/debian", "--", "images"],
    );
    git(
        &ops.clone,
        &["commit", "-q", "-m", "apply the rebuilt image by hand"],
    );
    git(&ops.clone, &["push", "-q", "origin", "main"]);
    let third = propose(&ops, state, &[]);
    assert_eq!(action(&third, "debian"), "closed");
    assert_eq!(
        branch_head(&ops.bare, "rebake/debian"),
        None,
        "branch deleted"
    );
    let fourth = propose(&ops, state, &[]);
    assert_eq!(action(&fourth, "debian"), "current");
}

#[test]
fn github_proposal_survives_a_crash_and_never_duplicates() {
    let ops = gitops();
    let (state, _guard) = shared_state();
    const TOKEN: &str = "ghp_testTOKEN0123456789";
    let fake = runtime().block_on(FakeGitHub::start(&ops.bare, "acme", "images", TOKEN));
    std::fs::write(
        ops.clone.join("rebake.yaml"),
        format!(
            "forge:\n  kind: github\n  url: {}\n  repository: acme/images\n  token_env: REBAKE_TEST_GITHUB_TOKEN\n",
            fake.url()
        ),
    )
    .unwrap();
    let env = [("REBAKE_TEST_GITHUB_TOKEN", TOKEN)];

    // The branch is pushed, then opening the PR fails for good (a crash at that point).
    // (rebake makes 4 attempts with backoff; all 4 fail.)
    fake.fail_times("POST", "/repos/acme/images/pulls", 500, &[], 4);
    let crashed = propose(&ops, state, &env);
    assert_eq!(action(&crashed, "debian"), "failed");
    assert_eq!(crashed.status.code(), Some(1));
    assert!(branch_head(&ops.bare, "rebake/debian").is_some());
    assert!(fake.prs().is_empty());

    // The rerun converges to exactly one PR, with a passing status on its head.
    let rerun = propose(&ops, state, &env);
    assert_eq!(
        action(&rerun, "debian"),
        "opened",
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let prs = fake.prs();
    assert_eq!(prs.len(), 1);
    let pr = &prs[0];
    assert!(
        pr.title.starts_with("debian: first build ("),
        "{}",
        pr.title
    );
    let head = branch_head(&ops.bare, "rebake/debian").unwrap();
    let statuses = fake.statuses(&head);
    assert!(
        statuses
            .iter()
            .any(|s| s.context == "rebake/test" && s.state == "success"),
        "{statuses:?}"
    );

    // Nothing changed: no writes to the forge at all.
    let writes = fake.writes();
    let again = propose(&ops, state, &env);
    assert_eq!(action(&again, "debian"), "unchanged");
    assert_eq!(fake.writes(), writes);
    assert_eq!(fake.prs().len(), 1);

    // A rejected token is a clear error naming the forge and the permission, never the token.
    let denied = propose(
        &ops,
        state,
        &[("REBAKE_TEST_GITHUB_TOKEN", "ghp_WRONGtoken999")],
    );
    let err = String::from_utf8_lossy(&denied.stderr).to_string()
        + &String::from_utf8_lossy(&denied.stdout);
    assert_eq!(denied.status.code(), Some(1), "{err}");
    assert!(err.contains("GitHub rejected the token"), "{err}");
    assert!(err.contains("Pull requests: write"), "{err}");
    assert!(!err.contains("ghp_WRONGtoken999"), "{err}");

    // The same repository through a GitHub App installation instead of a token (rebake.yaml
    // `forge.app`): the App's installation token is minted and used; nothing else changes.
    let openssl = crate::support::require_tool("openssl", "openssl");
    let key = std::process::Command::new(openssl)
        .args(["genrsa", "2048"])
        .output()
        .expect("openssl genrsa");
    let key_file = ops.clone.join("app-key.pem");
    std::fs::write(&key_file, &key.stdout).unwrap();
    fake.enable_app(4242, 77);
    std::fs::write(
        ops.clone.join("rebake.yaml"),
        format!(
            "forge:\n  kind: github\n  url: {}\n  repository: acme/images\n  app:\n    id: 4242\n    installation_id: 77\n    private_key_file: app-key.pem\n",
            fake.url()
        ),
    )
    .unwrap();
    let writes = fake.writes();
    let as_app = propose(&ops, state, &[]);
    assert_eq!(
        action(&as_app, "debian"),
        "unchanged",
        "{}",
        String::from_utf8_lossy(&as_app.stderr)
    );
    assert_eq!(fake.writes(), writes);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.contains("/app/installations/77/access_tokens")),
        "the installation token was requested"
    );
    fake.assert_no_violations();
}
