//! The whole loop through `rebake serve`, as a team runs it: `rebake propose` opens a pull
//! request on the (fake, schema-checked) GitHub with a tested image pushed to a real registry;
//! a person merges it; GitHub's signed merge webhook — delivered twice — reaches the running
//! service, which deploys exactly the tested digest once and comments on the pull request.

use crate::server::github_fixture;
use crate::support::engine::{docker, runtime};
use crate::support::fake_forge::FakeForge;
use crate::support::fake_github::FakeGitHub;
use crate::support::gitops::{
    action, git, pair_gitops, propose, shared_state, text, ticker_gitops, ticker_policy, GitOps,
};
use crate::support::registry::{free_port, TestRegistry};
use serde_json::json;
use std::path::Path;
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

    /// Waits until `n` deploys have run.
    async fn wait_deploys(&self, n: f64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.metric("rebake_deploys_total").await != Some(n) {
            assert!(
                Instant::now() < deadline,
                "no {n} deploys within 120 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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

const ENV: [(&str, &str); 2] = [
    ("REBAKE_TEST_GITHUB_TOKEN", TOKEN),
    ("REBAKE_TEST_E2E_SECRET", SECRET),
];

/// rebake.yaml for the fake GitHub, the test registry and the webhook secret of [`ENV`].
fn configure(ops: &GitOps, fake: &FakeGitHub, registry: &TestRegistry) {
    configure_with(ops, fake, registry, "");
}

/// [`configure`], with `extra` lines appended.
fn configure_with(ops: &GitOps, fake: &FakeGitHub, registry: &TestRegistry, extra: &str) {
    std::fs::write(
        ops.clone.join("rebake.yaml"),
        format!(
            "forge:\n  kind: github\n  url: {}\n  repository: acme/images\n  token_env: REBAKE_TEST_GITHUB_TOKEN\n\
             registry:\n  url: {}\n  insecure: true\n\
             webhook:\n  secret_env: REBAKE_TEST_E2E_SECRET\n\
             # Scheduled scans would race the webhook in this test: once a year.\n\
             schedule:\n  scan: \"0 0 1 1 *\"\n{extra}",
            fake.url(),
            registry.host()
        ),
    )
    .unwrap();
}

/// Starts `rebake serve` on the repository and waits until it answers /healthz.
fn start_serve(ops: &GitOps, state: &Path) -> Serve {
    let port = free_port();
    let log = ops.dir.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_rebake"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--repo"])
        .arg(&ops.clone)
        .env("REBAKE_STATE_DIR", state)
        .env("REBAKE_SECURITY_TRACKER", "off")
        .env("RUST_LOG", "info")
        .envs(ENV)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start rebake serve");
    let serve = Serve {
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
    serve
}

/// The image the lock of `image` records at `commit`, and its digest reference in `registry`.
fn tested_image(
    ops: &GitOps,
    registry: &TestRegistry,
    commit: &str,
    image: &str,
) -> (rebake::lock::ImageRef, String) {
    let lock_text = git(
        &ops.bare,
        &["show", &format!("{commit}:images/{image}/rebake.lock")],
    );
    let lock = rebake::lock::Lock::parse(&lock_text, Path::new("rebake.lock")).unwrap();
    let tested = lock.image.expect("the lock records the image");
    let digest_ref = tested
        .digest
        .clone()
        .expect("pushed: the lock has a digest");
    assert!(
        digest_ref.starts_with(&format!("{}/{image}@sha256:", registry.host())),
        "{digest_ref}"
    );
    (tested, digest_ref)
}

/// `container` runs, from exactly `digest_ref` (the engine's image `id`).
fn assert_runs(serve: &Serve, container: &str, digest_ref: &str, id: &str) {
    let info = runtime()
        .block_on(docker().inspect_container(container, None))
        .unwrap_or_else(|e| panic!("{container} not deployed: {e}\n{}", serve.log()));
    assert_eq!(
        info.config.as_ref().and_then(|c| c.image.as_deref()),
        Some(digest_ref)
    );
    assert_eq!(info.image.as_deref(), Some(id));
    assert_eq!(info.state.and_then(|s| s.running), Some(true));
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
    // Signed, and deployed only when the signature and provenance verify.
    let (key, public) = crate::attest::keypair(ops.dir.path(), "cosign");
    configure_with(
        &ops,
        &fake,
        &registry,
        &format!(
            "signing:\n  key_file: {}\ndeploy:\n  verify: required\n",
            key.display()
        ),
    );
    let built_from = git(&ops.bare, &["rev-parse", "main"]);

    // rebake proposes the tested image; a person merges the pull request on GitHub.
    let proposed = propose(&ops, state, &ENV);
    assert_eq!(action(&proposed, "ticker"), "opened", "{}", text(&proposed));
    // A second run finds the branch current: nothing rebuilt, and the body still lists the
    // attestations (read back from the registry, signed by the configured key).
    let first_body = fake.prs()[0].body.clone();
    let again = propose(&ops, state, &ENV);
    assert_eq!(action(&again, "ticker"), "unchanged", "{}", text(&again));
    let pr = fake.prs().into_iter().next().expect("one pull request");
    assert_eq!(pr.body, first_body);
    let merge_sha = fake.merge(pr.number);
    let (tested, digest_ref) = tested_image(&ops, &registry, &merge_sha, "ticker");

    // The build signed the digest and attached its attestations; the pull request lists them.
    let verifier = crate::attest::verifier(&public);
    let config = registry.config();
    assert_eq!(
        runtime()
            .block_on(rebake::attest::check_signature(
                &config,
                &verifier,
                &digest_ref
            ))
            .unwrap(),
        Ok(())
    );
    let found = runtime()
        .block_on(rebake::attest::fetch_attestations(
            &config,
            &verifier,
            &digest_ref,
        ))
        .unwrap();
    assert!(found.failed.is_empty(), "{:?}", found.failed);
    let (provenance, envelope) = &found.verified[rebake::attest::PROVENANCE];
    let params = &provenance["predicate"]["buildDefinition"]["externalParameters"];
    assert_eq!(params["source"]["commit"], built_from.as_str());
    assert_eq!(params["policy"]["path"], "policies/ticker.yaml");
    let policy_bytes = git(
        &ops.bare,
        &["show", &format!("{built_from}:policies/ticker.yaml")],
    );
    assert_eq!(
        params["policy"]["sha256"],
        rebake::state::sha256_hex(format!("{policy_bytes}\n").as_bytes())
    );
    assert_eq!(
        params["template"]["path"],
        "templates/ticker.Dockerfile.hbs"
    );
    let body = pr.body.clone().unwrap_or_default();
    assert!(body.contains("### Signature and attestations"), "{body}");
    assert!(
        body.contains(&format!("| SLSA provenance | `{envelope}` |")),
        "{body}"
    );
    for kind in [rebake::attest::SPDX, rebake::attest::CYCLONEDX] {
        let (_, d) = &found.verified[kind];
        assert!(body.contains(d.as_str()), "{kind} {d} not in\n{body}");
    }

    // The service runs.
    let mut serve = start_serve(&ops, state);

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
        serve.wait_deploys(1.0).await;
        let (status, body) = serve.post("e2e-merge-again", &merged).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("already deployed"), "{body}");
    });

    // The container runs exactly the tested digest.
    assert_runs(&serve, &container, &digest_ref, &tested.id);

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

/// A merged group proposal (`rebake/group/pair`) deploys every image of the group at its merge
/// commit, each its tested digest, and nothing else: `solo`, merged before it without a
/// webhook, is not deployed.
#[test]
fn merged_group_proposal_deploys_every_image_of_the_group() {
    let (state, _guard) = shared_state();
    let container = format!("rebake-e2e-group-{}", std::process::id());
    let _cleanup: Vec<Containers> = ["ticker", "ticker2", "solo"]
        .iter()
        .map(|image| Containers(format!("{container}-{image}")))
        .collect();
    let solo = ticker_policy(&format!("{container}-solo"));
    let ops = pair_gitops(&container, &[("policies/solo.yaml".into(), solo)]);
    let registry = TestRegistry::start();
    let fake = runtime().block_on(FakeGitHub::start(&ops.bare, "acme", "images", TOKEN));
    configure(&ops, &fake, &registry);

    // Two proposals: solo alone, ticker and ticker2 together. Both are merged.
    let proposed = propose(&ops, state, &ENV);
    for image in ["solo", "ticker", "ticker2"] {
        assert_eq!(action(&proposed, image), "opened", "{}", text(&proposed));
    }
    let prs = fake.prs();
    assert_eq!(prs.len(), 2, "{prs:?}");
    let number = |head: &str| {
        prs.iter()
            .find(|p| p.head == head)
            .unwrap_or_else(|| panic!("no PR from {head}: {prs:?}"))
            .number
    };
    fake.merge(number("rebake/solo"));
    let group_pr = number("rebake/group/pair");
    let merge_sha = fake.merge(group_pr);

    // Only the group's merge webhook arrives.
    let mut serve = start_serve(&ops, state);
    runtime().block_on(async {
        let merged = merged_payload(group_pr, "rebake/group/pair", &merge_sha, "acme/images");
        let (status, body) = serve.post("e2e-group-merge", &merged).await;
        assert_eq!(status, 202, "{body}\n{}", serve.log());
        serve.wait_deploys(1.0).await;
    });
    for image in ["ticker", "ticker2"] {
        let (tested, digest_ref) = tested_image(&ops, &registry, &merge_sha, image);
        assert_runs(
            &serve,
            &format!("{container}-{image}"),
            &digest_ref,
            &tested.id,
        );
    }
    let solo = format!("{container}-solo");
    assert!(
        runtime()
            .block_on(docker().inspect_container(&solo, None))
            .is_err(),
        "{solo} is not in the group: not deployed"
    );
    // One deployment comment per image of the group, on the group's pull request.
    let comments = fake.comments(group_pr);
    assert_eq!(comments.len(), 2, "{comments:?}");
    let status = serve.stop();
    assert!(status.success(), "serve exited {status}:\n{}", serve.log());
    fake.assert_no_violations();
}

/// The service's schedules come from the policies on the default branch of the remote — a
/// policy changed through a merged pull request reschedules its image — not from whatever the
/// local checkout holds.
#[test]
fn scan_schedules_follow_the_default_branch() {
    use rebake::server::{ScanSchedule, ScanScope};
    let ops = crate::support::gitops::ticker_gitops("rebake-e2e-schedules-unused");
    let state = ops.dir.path().join("state");
    let ctx = rebake::commands::Context {
        repo: ops.clone.clone(),
        config: None,
        state_dir: Some(state),
    };
    let schedules =
        |ctx| runtime().block_on(rebake::commands::scan_schedules_at_default_branch(ctx));
    let default_scan = rebake::config::CronSchedule::parse("7 * * * *").unwrap();
    assert_eq!(
        schedules(&ctx).unwrap(),
        [ScanSchedule {
            cron: default_scan.clone(),
            scope: ScanScope::All
        }]
    );

    // A merged change gives ticker its own schedule; an uncommitted local edit does not count.
    let policy = ops.clone.join("policies/ticker.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, format!("{text}schedule: \"*/15 * * * *\"\n")).unwrap();
    crate::support::gitops::git(&ops.clone, &["commit", "-q", "-am", "ticker: scan often"]);
    crate::support::gitops::git(&ops.clone, &["push", "-q", "origin", "main"]);
    std::fs::write(&policy, format!("{text}schedule: \"0 0 * * *\"\n")).unwrap();
    // The workspace is fetched by each propose run; here by hand.
    let config = rebake::config::Config::default();
    let c = runtime()
        .block_on(rebake::commands::connect_forge(
            &ctx,
            &config,
            &ctx.state_dir.clone().unwrap(),
        ))
        .unwrap();
    runtime()
        .block_on(rebake::git::with_workspace(
            &c.remote_url,
            &c.workspace_dir,
            &c.auth,
            |ws| ws.fetch(),
        ))
        .unwrap();
    assert_eq!(
        schedules(&ctx).unwrap(),
        [
            ScanSchedule {
                cron: default_scan,
                scope: ScanScope::All
            },
            ScanSchedule {
                cron: rebake::config::CronSchedule::parse("*/15 * * * *").unwrap(),
                scope: ScanScope::images(["ticker"]),
            }
        ]
    );
}

/// The service's scheduled scan, as the scheduler runs it: a propose run of every image (here
/// the ticker image is built and proposed on plain git), then the merged-proposal fallback
/// deploy, and the schedules as the default branch says.
#[test]
fn a_scheduled_scan_proposes_and_reports_the_schedules() {
    use rebake::server::{Jobs, ScanScope};
    let (state, _guard) = shared_state();
    let ops = ticker_gitops("rebake-e2e-scheduled-scan-unused");
    let jobs = rebake::commands::ServiceJobs {
        ctx: rebake::commands::Context {
            repo: ops.clone.clone(),
            config: None,
            state_dir: Some(state.to_path_buf()),
        },
        job_policies: None,
    };
    let summary = runtime()
        .block_on(jobs.scan(ScanScope::All))
        .expect("the scan succeeds");
    assert_eq!(summary.proposals, 1, "{summary:?}");
    assert!(
        crate::support::gitops::branch_head(&ops.bare, "rebake/ticker").is_some(),
        "proposed on rebake/ticker"
    );
    let schedules = summary
        .schedules
        .expect("schedules from the default branch");
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0].scope, ScanScope::All);

    // Scanned again: nothing new to propose.
    let again = runtime()
        .block_on(jobs.scan(ScanScope::images(["ticker"])))
        .unwrap();
    assert_eq!(again.proposals, 0, "{again:?}");
}
