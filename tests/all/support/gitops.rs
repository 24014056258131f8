//! A user's GitOps repository for end-to-end runs of the `rebake` binary: a bare "origin" on
//! disk (what a forge fake or a git server serves) and a clone where rebake runs, with the
//! example `debian` policy or the small `ticker` image below.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// A state directory of its own for an end-to-end run, seeded with the Debian base and the
/// verified archive indices, so the base is built once for all of them (by the first caller,
/// while the others wait) and the runs go on side by side. The directory is removed when the
/// returned guard drops.
pub fn shared_state() -> (&'static Path, StateDir) {
    static SEED: Mutex<Option<tempfile::TempDir>> = Mutex::new(None);
    let mut seed = SEED.lock().unwrap_or_else(|e| e.into_inner());
    if seed.is_none() {
        *seed = Some(seed_state());
    }
    let dir = tempfile::tempdir().unwrap();
    let from = seed.as_ref().unwrap().path();
    // What rebake reads again and writes only by renaming: linking it is as good as a copy.
    for sub in ["bases", "indices", "suites"] {
        link_tree(&from.join(sub), &dir.path().join(sub));
    }
    drop(seed);
    let path: &'static Path = Box::leak(dir.path().to_path_buf().into_boxed_path());
    (path, StateDir(dir))
}

/// Removes its state directory on drop.
pub struct StateDir(#[allow(dead_code)] tempfile::TempDir);

/// A state directory where `rebake build` has built the base (and read the archive) once.
fn seed_state() -> tempfile::TempDir {
    let state = tempfile::tempdir().unwrap();
    let ops = ticker_gitops("rebake-seed-unused");
    let out = rebake(&ops, state.path(), &["build", "--no-push"], &[]);
    assert!(
        out.status.success(),
        "building the base the end-to-end runs share failed:\n{}",
        text(&out)
    );
    state
}

/// Hard-links every file under `from` into the same place under `to`, but the base's tarballs
/// (written in place when a run builds another base, and never read again once built).
fn link_tree(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    std::fs::create_dir_all(to).unwrap();
    for e in entries {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.extension().is_some_and(|x| x == "tar") {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            link_tree(&src, &dst);
        } else if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Runs the git CLI in `dir` as a human would (to set up, merge, inspect): a fixed identity,
/// no user or system config; panics with git's message on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Human",
            "-c",
            "user.email=human@example.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git CLI (apt-get install git) is used to set up these tests");
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare "origin" and a clone of it where rebake runs.
pub struct GitOps {
    pub dir: tempfile::TempDir,
    pub bare: PathBuf,
    pub clone: PathBuf,
}

/// The smallest image that runs as a service: Debian's base with no extra package, a process
/// that stops at once on SIGTERM, a command health check.
pub const TICKER_TEMPLATE: &str = r#"FROM {{base_image}}
LABEL org.opencontainers.image.title="{{policy_name}}"
CMD ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
"#;

/// The `ticker` policy deploying to the container `container`.
pub fn ticker_policy(container: &str) -> String {
    format!(
        "template: ticker.Dockerfile.hbs\nsuite: trixie\ntests:\n  - name: has the Debian version\n    file:\n      path: /etc/debian_version\ndeploy:\n  - docker:\n      name: {container}\n      health:\n        command: [test, -e, /etc/debian_version]\n        timeout_seconds: 30\nreview:\n  labels: [rebake]\n"
    )
}

/// A GitOps repository whose `main` holds the example `debian` policy and template.
pub fn gitops() -> GitOps {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<(String, String)> = ["policies/debian.yaml", "templates/debian.Dockerfile.hbs"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read_to_string(root.join(f)).unwrap(),
            )
        })
        .collect();
    gitops_with(&files)
}

/// A GitOps repository whose `main` holds the `ticker` image deploying to `container`.
pub fn ticker_gitops(container: &str) -> GitOps {
    gitops_with(&[
        ("policies/ticker.yaml".into(), ticker_policy(container)),
        (
            "templates/ticker.Dockerfile.hbs".into(),
            TICKER_TEMPLATE.into(),
        ),
    ])
}

/// A GitOps repository with two ticker images, `ticker` and `ticker2` (each with its own
/// template, deploying to `<container>-<image>`), both in the review group `pair`; ticker2 adds
/// the label `security`. `extra` files (path, content) go on `main` too.
pub fn pair_gitops(container: &str, extra: &[(String, String)]) -> GitOps {
    let grouped = |image: &str, labels: &str| {
        ticker_policy(&format!("{container}-{image}"))
            .replace(
                "template: ticker.Dockerfile.hbs",
                &format!("template: {image}.Dockerfile.hbs"),
            )
            .replace(
                "review:\n  labels: [rebake]\n",
                &format!("review:\n  labels: [{labels}]\n  group: pair\n"),
            )
    };
    let mut files = vec![
        ("policies/ticker.yaml".into(), grouped("ticker", "rebake")),
        (
            "policies/ticker2.yaml".into(),
            grouped("ticker2", "rebake, security"),
        ),
        (
            "templates/ticker.Dockerfile.hbs".into(),
            TICKER_TEMPLATE.into(),
        ),
        (
            "templates/ticker2.Dockerfile.hbs".into(),
            TICKER_TEMPLATE.into(),
        ),
    ];
    files.extend_from_slice(extra);
    gitops_with(&files)
}

/// A GitOps repository whose `main` holds `files` (path, content).
pub fn gitops_with(files: &[(String, String)]) -> GitOps {
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
    for (path, content) in files {
        let to = clone.join(path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, content).unwrap();
    }
    git(&clone, &["checkout", "-q", "-b", "main"]);
    git(&clone, &["add", "."]);
    git(&clone, &["commit", "-q", "-m", "the images"]);
    git(&clone, &["push", "-q", "origin", "main"]);
    GitOps { dir, bare, clone }
}

/// `rebake <args> --repo <clone>` with the shared state directory and `env`.
pub fn rebake(ops: &GitOps, state: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rebake"));
    cmd.args(args)
        .arg("--repo")
        .arg(&ops.clone)
        .env("REBAKE_STATE_DIR", state)
        // Debian's public Security Tracker is not part of these tests.
        .env("REBAKE_SECURITY_TRACKER", "off")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run rebake")
}

/// `rebake propose --repo <clone>`.
pub fn propose(ops: &GitOps, state: &Path, env: &[(&str, &str)]) -> Output {
    rebake(ops, state, &["propose"], env)
}

/// Exit code, stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The ACTION column of the image's row.
pub fn action(out: &Output, image: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout
        .lines()
        .find(|l| l.starts_with(image))
        .unwrap_or_else(|| panic!("no row for {image}:\n{}", text(out)));
    row.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// The commit `branch` points to in `bare`, if the branch exists.
pub fn branch_head(bare: &Path, branch: &str) -> Option<String> {
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

/// A person applies `path` (like `images`) of the proposal `branch` to main by hand and pushes.
pub fn apply_by_hand(ops: &GitOps, branch: &str, path: &str) {
    git(&ops.clone, &["fetch", "-q", "origin"]);
    git(
        &ops.clone,
        &["checkout", "-q", &format!("origin/{branch}"), "--", path],
    );
    git(
        &ops.clone,
        &[
            "commit",
            "-q",
            "-m",
            &format!("apply {path} of {branch} by hand"),
        ],
    );
    git(&ops.clone, &["push", "-q", "origin", "main"]);
}

/// Points `ops`'s rebake.yaml at a forge fake (`kind` github or gitea) serving
/// `owner_repo`, with its token in the environment variable `token_env`.
pub fn use_forge(ops: &GitOps, kind: &str, url: &str, owner_repo: &str, token_env: &str) {
    std::fs::write(
        ops.clone.join("rebake.yaml"),
        format!(
            "forge:\n  kind: {kind}\n  url: {url}\n  repository: {owner_repo}\n  token_env: {token_env}\n"
        ),
    )
    .unwrap();
}
