//! `cargo bench --bench build`: what `rebake build` costs beyond `docker build` of the same
//! rendered Dockerfile, with the base already cached and no layer cache for either.
//!
//! Builds the repository's `debian` example once to cache the base, then alternates
//! `rebake build debian --no-push --force --no-cache` with `docker build --no-cache` of the
//! Dockerfile rebake rendered, three times each, and prints the medians and their ratio.
//! Needs the Debian mirrors of the host's apt sources and a running engine.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let state = work.path().join("state");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["policies/debian.yaml", "templates/debian.Dockerfile.hbs"] {
        std::fs::create_dir_all(repo.join(f).parent().unwrap()).unwrap();
        std::fs::copy(root.join(f), repo.join(f)).unwrap();
    }
    let rebake = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rebake"));
        c.args(["build", "debian", "--no-push"])
            .args(extra)
            .arg("--repo")
            .arg(&repo)
            .env("REBAKE_STATE_DIR", &state);
        c
    };
    let warm = run(&mut rebake(&[]));
    println!("first build (base from scratch + image): {warm:.1?}");
    let context = work.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    let dockerfile = repo.join("images/debian/Dockerfile");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        ours.push(run(&mut rebake(&["--force", "--no-cache"])));
        theirs.push(run(Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args([
                "build",
                "--no-cache",
                "-q",
                "-t",
                "rebake-bench/debian:docker",
                "-f",
                dockerfile.to_str().unwrap(),
                context.to_str().unwrap(),
            ])));
    }
    let (o, t) = (median(ours), median(theirs));
    println!(
        "rebake build (render+build+inventory+tests+lock): {o:.2?}; docker build: {t:.2?}; ratio {:.3} (floor: at most 1.10)",
        o.as_secs_f64() / t.as_secs_f64()
    );
    let _ = Command::new("docker")
        .args(["rmi", "rebake-bench/debian:docker"])
        .output();
}
