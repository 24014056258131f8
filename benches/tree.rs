//! `cargo bench --bench tree`: one image tree (a company image on the Debian base and N
//! children on it, `REBAKE_BENCH_CHILDREN`, default 6) rebuilt after a change of the company
//! image, on one engine one build at a time, on one engine with `engine.jobs: 2`, and on two
//! engines (this machine's and a second dockerd, images passed through a local registry).
//! Each child's build does about a second of CPU work, as installing packages would. Prints
//! the wall times and the ratios to the one-engine, one-job run.

#[allow(dead_code)]
#[path = "../tests/all/support/registry.rs"]
mod registry;
#[allow(dead_code)]
#[path = "../tests/all/support/second_engine.rs"]
mod second_engine;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const COMPANY: &str =
    "FROM {{base_image}}\nARG SOURCE_DATE_EPOCH\nRUN echo {{vars.version}} > /etc/company\n";
const CHILD: &str = "FROM {{base_image}}\nARG SOURCE_DATE_EPOCH\nRUN head -c 400000000 /dev/zero | sha256sum > /etc/{{policy_name}}\n";

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn policy(template: &str, from: Option<&str>, vars: &str) -> String {
    let from = from.map(|f| format!("from: {f}\n")).unwrap_or_default();
    format!("template: {template}\nsuite: trixie\n{from}{vars}tests:\n  - name: runs\n    command: [true]\n")
}

fn main() {
    let children: usize = std::env::var("REBAKE_BENCH_CHILDREN")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6);
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let state = work.path().join("state");
    write(&repo.join("templates/company.Dockerfile.hbs"), COMPANY);
    write(&repo.join("templates/child.Dockerfile.hbs"), CHILD);
    for n in 0..children {
        write(
            &repo.join(format!("policies/app{n}.yaml")),
            &policy("child.Dockerfile.hbs", Some("company"), ""),
        );
    }
    let registry = registry::TestRegistry::start();
    let second = second_engine::SecondEngine::start();
    let build = |version: u32, engine: &str| -> Duration {
        write(
            &repo.join("policies/company.yaml"),
            &policy(
                "company.Dockerfile.hbs",
                None,
                &format!("vars:\n  version: \"{version}\"\n"),
            ),
        );
        write(
            &repo.join("rebake.yaml"),
            &format!(
                "registry:\n  url: {}\n  insecure: true\nengine:\n{engine}",
                registry.host()
            ),
        );
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_rebake"))
            .args(["build", "--repo"])
            .arg(&repo)
            .env("REBAKE_STATE_DIR", &state)
            .output()
            .expect("run rebake");
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };
    let one_job = "  jobs: 1\n";
    let two_jobs = "  jobs: 2\n";
    let two_engines = format!("  jobs: 1\n  builders:\n    - {}\n", second.host);
    // Warm: the Debian base on both engines, the first tree.
    println!("first build of the tree: {:.1?}", build(1, &two_engines));
    let mut version = 1;
    let mut runs = |engine: &str| -> Duration {
        let mut times = Vec::new();
        for _ in 0..2 {
            version += 1;
            times.push(build(version, engine));
        }
        times.sort();
        times[0]
    };
    let base = runs(one_job);
    let jobs = runs(two_jobs);
    let engines = runs(&two_engines);
    println!("tree of 1 + {children} images rebuilt after a change of the parent (best of 2):");
    println!("  one engine, jobs 1:  {base:.1?}");
    println!(
        "  one engine, jobs 2:  {jobs:.1?} (ratio {:.2})",
        jobs.as_secs_f64() / base.as_secs_f64()
    );
    println!(
        "  two engines, jobs 1: {engines:.1?} (ratio {:.2})",
        engines.as_secs_f64() / base.as_secs_f64()
    );
}
