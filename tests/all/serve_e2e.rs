//! The whole loop through `rebake serve`, as a team runs it: `rebake propose` opens a pull
//! request on the (fake, schema-checked) GitHub with a tested image pushed to a real registry;
//! a person merges it; GitHub's signed merge webhook — delivered twice — reaches the running
//! service, which deploys exactly the tested digest once and comments on the pull request.

use crate::server::github_fixture;
use crate::support::engine::{docker, runtime};
use crate::support::fake_github::FakeGitHub;
use crate::support::gitops::{action, propose, shared_state, text, ticker_gitops};
use crate::support::registry::{free_port, TestRegistry};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "ghp_serveE2Etoken0123456789";
const SECRET: &str = "e2e webhook secret";

/// The `rebake serve` process; killed on drop if the test did not stop it.
struct Serve {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Serve {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn post(&self, delivery: &str, body: &[u8]) -> (u16, String) {
        let response = reqwest::Client::new()
            .post(format!("{}/webhook/github", self.url))
            .header("content-type", "application/json")
            .header("x-github-event", "pull_request")
            .header("x-github-delivery", delivery)
            .header(
                "x-hub-signature-256",
                format!("sha256={}", rebake::server::sign(SECRET.as_bytes(), body)),
            )
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// SIGTERM, then the exit status (graceful shutdown).
    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes the test's container (and a kept previous one) when the test ends.
struct Containers(String);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in [self.0.clone(), format!("{}.rebake-previous", self.0)] {
            let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        }
    }
}

/// GitHub's `pull_request` fixture (closed) turned into the merge of `number` from `head` into
/// main of acme/images at `merge_sha`.
fn merged_payload(number: u64, head: &str, merge_sha: &str, repository: &str) -> Vec<u8> {
    let mut payload = github_fixture("pull_request.closed.3.json");
    payload["number"] = json!(number);
    payload["pull_request"]["number"] = json!(number);
    payload["pull_request"]["merged"] = json!(true);
    payload["pull_request"]["merge_commit_sha"] = json!(merge_sha);
    payload["pull_request"]["head"]["ref"] = json!(head);
    payload["pull_request"]["base"]["ref"] = json!("main");
    payload["repository"]["full_name"] = json!(repository);
    serde_json::to_vec(&payload).unwrap()
}

#[test]
fn merged_pull_request_webhook_deploys_the_tested_digest_once() {
    let (state, _guard) = shared_state();
    let container = format!("rebake-e2e-serve-{}", std::process::id());
    let _cleanup = Containers(container.clone());
    let ops = ticker_gitops(&container);
    let registry = TestRegistry::start();
    let fake = runtime().block_on(FakeGitHub::start(&ops.bare, "acme", "images", TOKEN));
    std::fs::write(
        ops.clone.join("rebake.yaml"),
        format!(
            "forge:\n  kind: github\n  url: {}\n  repository: acme/images\n  token_env: REBAKE_TEST_GITHUB_TOKEN\n\
             registry:\n  url: {}\n  insecure: true\n\
             webhook:\n  secret_env: REBAKE_TEST_E2E_SECRET\n\
             # Scheduled scans would race the webhook in this test: once a year.\n\
             schedule:\n  scan: \"0 0 1 1 *\"\n",
            fake.url(),
            registry.host()
        ),
    )
    .unwrap();
    let env = [
        ("REBAKE_TEST_GITHUB_TOKEN", TOKEN),
        ("REBAKE_TEST_E2E_SECRET", SECRET),
    ];

    // rebake proposes the tested image; a person merges the pull request on GitHub.
    let proposed = propose(&ops, state, &env);
    assert_eq!(action(&proposed, "ticker"), "opened", "{}", text(&proposed));
    let pr = fake.prs().into_iter().next().expect("one pull request");
    let merge_sha = fake.merge(pr.number);
    let lock_text = crate::support::gitops::git(
        &ops.bare,
        &["show", &format!("{merge_sha}:images/ticker/rebake.lock")],
    );
    let lock = rebake::lock::Lock::parse(&lock_text, std::path::Path::new("rebake.lock")).unwrap();
    let tested = lock.image.expect("the lock records the image");
    let digest_ref = tested
        .digest
        .clone()
        .expect("pushed: the lock has a digest");
    assert!(
        digest_ref.starts_with(&format!("{}/ticker@sha256:", registry.host())),
        "{digest_ref}"
    );

    // The service runs.
    let port = free_port();
    let log = ops.dir.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_rebake"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--repo"])
        .arg(&ops.clone)
        .env("REBAKE_STATE_DIR", state)
        .env("RUST_LOG", "info")
        .envs(env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start rebake serve");
    let mut serve = Serve {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/healthz", serve.url))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "serve did not answer /healthz:\n{}",
                serve.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    runtime().block_on(async {
        // A merge in another repository (an organisation-wide hook) deploys nothing.
        let other = merged_payload(pr.number, "rebake/ticker", &merge_sha, "acme/other");
        let (status, body) = serve.post("e2e-other", &other).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("deploys from main of acme/images"), "{body}");

        // The merge webhook, then GitHub's redelivery of it, then the same merge under a new
        // delivery id: one deploy.
        let merged = merged_payload(pr.number, "rebake/ticker", &merge_sha, "acme/images");
        let (status, body) = serve.post("e2e-merge", &merged).await;
        assert_eq!(status, 202, "{body}\n{}", serve.log());
        assert!(body.contains("deploy queued"), "{body}");
        let (status, body) = serve.post("e2e-merge", &merged).await;
        assert_eq!(status, 200, "{body}");
        let deadline = Instant::now() + Duration::from_secs(120);
        while serve.metric("rebake_deploys_total").await != Some(1.0) {
            assert!(
                Instant::now() < deadline,
                "no deploy within 120 s:\n{}",
                serve.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (status, body) = serve.post("e2e-merge-again", &merged).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("already deployed"), "{body}");
    });

    // The container runs exactly the tested digest.
    let info = runtime()
        .block_on(docker().inspect_container(&container, None))
        .unwrap_or_else(|e| panic!("{container} not deployed: {e}\n{}", serve.log()));
    assert_eq!(
        info.config.as_ref().and_then(|c| c.image.as_deref()),
        Some(digest_ref.as_str())
    );
    assert_eq!(info.image.as_deref(), Some(tested.id.as_str()));
    assert_eq!(info.state.and_then(|s| s.running), Some(true));

    // Recorded once: one comment on the pull request and one line in the deployments log.
    let comments = fake.comments(pr.number);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].contains(&digest_ref), "{}", comments[0]);
    assert!(comments[0].contains("deployed"), "{}", comments[0]);
    let records: Vec<serde_json::Value> = std::fs::read_to_string(state.join("deployments.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["commit"] == merge_sha.as_str())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["targets"][0]["result"], "deployed");

    let status = serve.stop();
    assert!(status.success(), "serve exited {status}:\n{}", serve.log());
    fake.assert_no_violations();
}
