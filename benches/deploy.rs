//! `cargo bench --bench deploy`: from a merge webhook received to the new container healthy,
//! how much time rebake adds beyond the container's own stop, start and health check.
//!
//! A GitOps repository with the small `ticker` image (Debian base, a command health check),
//! the plain-git forge and a real registry: rebake proposes image A, it is merged; the
//! template changes, rebake proposes image B, it is merged. `rebake serve` (this build) then
//! receives signed GitHub merge webhooks alternating between the two merge commits; each round
//! is timed from the POST to the deployment record (written after the health check passed).
//! The baseline does the container's part alone through the engine API: stop and remove the
//! old container, create and start the other image, run the same health command until it
//! passes. Overhead = median(webhook → healthy) − median(baseline).
//! Needs the Debian mirrors of the host's apt sources, a running engine and docker-registry.

#[allow(dead_code)]
#[path = "../tests/all/support/gitops.rs"]
mod gitops;
#[allow(dead_code)]
#[path = "../tests/all/support/registry.rs"]
mod registry;

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "bench webhook secret";
const ROUNDS: usize = 9;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Merges `rebake/ticker` into main as a reviewer would; the merge commit.
fn merge(ops: &gitops::GitOps) -> String {
    gitops::git(&ops.clone, &["pull", "-q", "origin", "main"]);
    gitops::git(&ops.clone, &["fetch", "-q", "origin"]);
    gitops::git(
        &ops.clone,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "merge the proposal",
            "origin/rebake/ticker",
        ],
    );
    gitops::git(&ops.clone, &["push", "-q", "origin", "main"]);
    gitops::git(&ops.clone, &["rev-parse", "HEAD"])
}

fn image_at(ops: &gitops::GitOps, commit: &str) -> String {
    let text = gitops::git(
        &ops.bare,
        &["show", &format!("{commit}:images/ticker/rebake.lock")],
    );
    let lock = rebake::lock::Lock::parse(&text, Path::new("rebake.lock")).unwrap();
    let image = lock.image.unwrap();
    image.digest.unwrap_or(image.id)
}

fn payload(number: u64, merge_sha: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "action": "closed",
        "number": number,
        "pull_request": {
            "number": number, "merged": true, "merge_commit_sha": merge_sha,
            "head": {"ref": "rebake/ticker"}, "base": {"ref": "main"}
        },
        "repository": {"full_name": "local/gitops"}
    }))
    .unwrap()
}

fn records(state: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("deployments.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// POSTs the merge webhook and waits for its deployment record; the elapsed time and the
/// record.
async fn deliver(
    url: &str,
    state: &Path,
    number: u64,
    merge_sha: &str,
) -> (Duration, serde_json::Value) {
    let before = records(state).len();
    let body = payload(number, merge_sha);
    let client = reqwest::Client::new();
    let t = Instant::now();
    let response = client
        .post(format!("{url}/webhook/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", format!("bench-{number}"))
        .header(
            "x-hub-signature-256",
            format!("sha256={}", rebake::server::sign(SECRET.as_bytes(), &body)),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        202,
        "{:?}",
        response.text().await
    );
    loop {
        let all = records(state);
        if all.len() > before {
            let elapsed = t.elapsed();
            let record = all[before].clone();
            assert_eq!(record["targets"][0]["result"], "deployed", "{record}");
            return (elapsed, record);
        }
        assert!(t.elapsed() < Duration::from_secs(120), "no deploy record");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The container's own part of a deploy, through the engine API.
async fn baseline_round(docker: &bollard::Docker, name: &str, image: &str) -> Duration {
    let t = Instant::now();
    let _ = docker
        .stop_container(name, Some(StopContainerOptionsBuilder::new().build()))
        .await;
    let _ = docker
        .remove_container(
            name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
    let config = bollard::models::ContainerCreateBody {
        image: Some(image.to_string()),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(name).build()),
            config,
        )
        .await
        .unwrap();
    docker.start_container(name, None).await.unwrap();
    loop {
        let exec = docker
            .create_exec(
                name,
                bollard::exec::CreateExecOptions {
                    cmd: Some(vec!["test", "-e", "/etc/debian_version"]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let _ = docker.start_exec(&exec.id, None).await.unwrap();
        let code = loop {
            let info = docker.inspect_exec(&exec.id).await.unwrap();
            if info.running != Some(true) {
                break info.exit_code;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if code == Some(0) {
            return t.elapsed();
        }
    }
}

fn main() {
    let container = format!("rebake-bench-deploy-{}", std::process::id());
    let baseline = format!("{container}-baseline");
    let ops = gitops::ticker_gitops(&container);
    let state = ops.dir.path().join("state");
    let registry = registry::TestRegistry::start();
    std::fs::write(
        ops.clone.join("rebake.yaml"),
        format!(
            "registry:\n  url: {}\n  insecure: true\nwebhook:\n  secret_env: REBAKE_BENCH_SECRET\nschedule:\n  scan: \"0 0 1 1 *\"\n",
            registry.host()
        ),
    )
    .unwrap();

    // Image A, proposed and merged; then image B (a changed template), proposed and merged.
    let first = gitops::propose(&ops, &state, &[]);
    assert_eq!(
        gitops::action(&first, "ticker"),
        "opened",
        "{}",
        gitops::text(&first)
    );
    let merge_a = merge(&ops);
    let template = ops.clone.join("templates/ticker.Dockerfile.hbs");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(&template, format!("{text}LABEL bench.variant=\"b\"\n")).unwrap();
    gitops::git(&ops.clone, &["commit", "-q", "-am", "ticker: variant b"]);
    gitops::git(&ops.clone, &["push", "-q", "origin", "main"]);
    let second = gitops::propose(&ops, &state, &[]);
    assert!(
        ["opened", "updated"].contains(&gitops::action(&second, "ticker").as_str()),
        "{}",
        gitops::text(&second)
    );
    let merge_b = merge(&ops);
    let (image_a, image_b) = (image_at(&ops, &merge_a), image_at(&ops, &merge_b));
    assert_ne!(image_a, image_b);

    let port = registry::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_rebake"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--repo"])
        .arg(&ops.clone)
        .env("REBAKE_STATE_DIR", &state)
        .env("REBAKE_BENCH_SECRET", SECRET)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rebake serve");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (webhook, own, base) = rt.block_on(async {
        while reqwest::get(format!("{url}/healthz")).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The first deploy creates the container; the rounds replace it.
        deliver(&url, &state, 1, &merge_a).await;
        let mut webhook = Vec::new();
        let mut own = Vec::new();
        for round in 0..ROUNDS {
            let commit = if round % 2 == 0 { &merge_b } else { &merge_a };
            let (elapsed, record) = deliver(&url, &state, 2 + round as u64, commit).await;
            webhook.push(elapsed);
            own.push(Duration::from_millis(
                record["targets"][0]["duration_ms"].as_u64().unwrap(),
            ));
        }
        let docker = rebake::engine::connect("unix:///var/run/docker.sock")
            .await
            .unwrap();
        let mut base = Vec::new();
        baseline_round(&docker, &baseline, &image_a).await;
        for round in 0..ROUNDS {
            let image = if round % 2 == 0 { &image_b } else { &image_a };
            base.push(baseline_round(&docker, &baseline, image).await);
        }
        (webhook, own, base)
    });
    let _ = serve.kill();
    let _ = serve.wait();
    for name in [&container, &baseline] {
        let _ = Command::new("docker").args(["rm", "-f", name]).output();
    }

    let (w, o, b) = (median(webhook.clone()), median(own), median(base.clone()));
    println!("merge webhook → new container healthy, {ROUNDS} rounds (rebake serve, plain git, registry):");
    println!(
        "  webhook → healthy:       median {} (min {}, max {})",
        ms(w),
        ms(*webhook.iter().min().unwrap()),
        ms(*webhook.iter().max().unwrap())
    );
    println!(
        "  of which the docker target (stop, create, start, health): median {}",
        ms(o)
    );
    println!(
        "  container alone (engine API: stop, remove, create, start, health): median {} (min {}, max {})",
        ms(b),
        ms(*base.iter().min().unwrap()),
        ms(*base.iter().max().unwrap())
    );
    println!(
        "  rebake adds: {} (floor: under 1000 ms)",
        ms(w.saturating_sub(b))
    );
}
