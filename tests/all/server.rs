//! The service core (`rebake::server`) on 127.0.0.1 with a fake `Jobs` that records calls:
//! signed GitHub and Gitea webhooks (real GitHub fixture payloads, a Gitea payload built from
//! the documented fields), repeated deliveries, restarts, health, metrics and the scheduler.

use anyhow::Result;
use chrono::{DateTime, NaiveDate, Utc};
use rebake::config::CronSchedule;
use rebake::server::{
    next_run, run_scheduler_once, serve, sign, Clock, ConnectionLimits, Enqueued, Jobs,
    MergedProposal, RunningFixes, ScanSchedule, ScanScope, ScanSummary, ServeConfig, Service,
    WebhookForge,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

const SECRET_ENV: &str = "REBAKE_TEST_SERVER_WEBHOOK_SECRET";
const UNSET_SECRET_ENV: &str = "REBAKE_TEST_SERVER_WEBHOOK_SECRET_NEVER_SET";
const SECRET: &str = "It's a Secret to Everybody";
const MERGE_SHA: &str = "c4295bd74fb0f4fda03689c3df3f2803b658fd85";

fn set_secret() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var(SECRET_ENV, SECRET));
}

// ---------------------------------------------------------------------------------------------
// A fake Jobs that records every call

#[derive(Default)]
struct FakeJobs {
    scans: AtomicUsize,
    scopes: Mutex<Vec<ScanScope>>,
    /// Schedules the next scan reports (as if the policies changed on the default branch).
    brings_schedules: Mutex<Option<Vec<ScanSchedule>>>,
    deploys: Mutex<Vec<MergedProposal>>,
    /// When set, every job waits for a permit before finishing.
    gate: Option<Semaphore>,
}

impl FakeJobs {
    fn gated() -> Self {
        FakeJobs {
            gate: Some(Semaphore::new(0)),
            ..FakeJobs::default()
        }
    }
    fn release(&self, n: usize) {
        self.gate.as_ref().expect("a gated fake").add_permits(n);
    }
    fn deploys(&self) -> Vec<MergedProposal> {
        self.deploys.lock().unwrap().clone()
    }
    async fn pass_gate(&self) {
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
    }
}

impl Jobs for FakeJobs {
    async fn scan(&self, scope: ScanScope) -> Result<ScanSummary> {
        self.scans.fetch_add(1, Ordering::SeqCst);
        self.scopes.lock().unwrap().push(scope);
        self.pass_gate().await;
        Ok(ScanSummary {
            findings: 3,
            builds: 2,
            proposals: 1,
            schedules: self.brings_schedules.lock().unwrap().take(),
            running: Some(vec![RunningFixes {
                container: "web".into(),
                missing: 2,
                oldest_age_seconds: 7200,
            }]),
        })
    }

    async fn deploy(&self, merged: MergedProposal) -> Result<()> {
        self.deploys.lock().unwrap().push(merged);
        self.pass_gate().await;
        Ok(())
    }
}

/// Polls until `jobs` has recorded `n` deploys (or fails after 10 s).
async fn wait_deploys(jobs: &FakeJobs, n: usize) {
    for _ in 0..200 {
        if jobs.deploys().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "expected {n} deploy calls within 10 s, got {:?}",
        jobs.deploys()
    );
}

// ---------------------------------------------------------------------------------------------
// The server under test

struct Running {
    url: String,
    client: reqwest::Client,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

/// The service for a GitHub repository.
async fn start(state_dir: &Path, secret_env: &str, jobs: Arc<FakeJobs>) -> Running {
    start_for(Some(WebhookForge::Github), state_dir, secret_env, jobs).await
}

/// The service for a repository on `forge` (None: plain git).
async fn start_for(
    forge: Option<WebhookForge>,
    state_dir: &Path,
    secret_env: &str,
    jobs: Arc<FakeJobs>,
) -> Running {
    start_full(
        forge,
        state_dir,
        secret_env,
        jobs,
        ConnectionLimits::default(),
    )
    .await
}

/// The service for a GitHub repository, with these connection limits.
async fn start_with(
    state_dir: &Path,
    secret_env: &str,
    jobs: Arc<FakeJobs>,
    limits: ConnectionLimits,
) -> Running {
    start_full(
        Some(WebhookForge::Github),
        state_dir,
        secret_env,
        jobs,
        limits,
    )
    .await
}

async fn start_full(
    forge: Option<WebhookForge>,
    state_dir: &Path,
    secret_env: &str,
    jobs: Arc<FakeJobs>,
    limits: ConnectionLimits,
) -> Running {
    set_secret();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let config = ServeConfig {
        secret_env: secret_env.to_string(),
        state_dir: state_dir.to_path_buf(),
        forge,
        schedules: Vec::new(),
        deploys_from: None,
        limits,
    };
    let task = tokio::spawn(serve(listener, config, jobs, async move {
        let _ = stopped.await;
    }));
    Running {
        url,
        client: reqwest::Client::new(),
        stop,
        task,
    }
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
            .expect("serve succeeds");
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, content_type, response.text().await.unwrap())
    }

    async fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// A GitHub delivery signed with `secret`.
    async fn github(
        &self,
        event: &str,
        delivery: &str,
        body: &[u8],
        secret: &str,
    ) -> (u16, String) {
        let headers = [
            ("x-github-event", event.to_string()),
            ("x-github-delivery", delivery.to_string()),
            (
                "x-hub-signature-256",
                format!("sha256={}", sign(secret.as_bytes(), body)),
            ),
        ];
        self.post("/webhook/github", &headers, body).await
    }

    /// A Gitea delivery signed with `secret`.
    async fn gitea(&self, event: &str, delivery: &str, body: &[u8], secret: &str) -> (u16, String) {
        let headers = [
            ("x-gitea-event", event.to_string()),
            ("x-gitea-event-type", event.to_string()),
            ("x-gitea-delivery", delivery.to_string()),
            ("x-gitea-signature", sign(secret.as_bytes(), body)),
        ];
        self.post("/webhook/gitea", &headers, body).await
    }

    async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, _, text) = self.get("/metrics").await;
        parse_metrics(&text).into_iter().find_map(
            |(name, value)| {
                if name == sample {
                    Some(value)
                } else {
                    None
                }
            },
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/webhooks/github")
        .join(name)
}

pub(crate) fn github_fixture(name: &str) -> Value {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "GitHub webhook fixture {} is missing ({e}): tests/data/README.md \
             says where it comes from",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn github_fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "GitHub webhook fixture {} is missing ({e}): tests/data/README.md \
             says where it comes from",
            path.display()
        )
    })
}

/// The fixture `pull_request.closed.3.json` (closed without merge) turned into the merge of a
/// rebake proposal.
fn github_merged(head_ref: &str) -> Vec<u8> {
    let mut payload = github_fixture("pull_request.closed.3.json");
    assert_eq!(payload["action"], "closed");
    assert_eq!(payload["pull_request"]["merge_commit_sha"], MERGE_SHA);
    payload["pull_request"]["merged"] = json!(true);
    payload["pull_request"]["head"]["ref"] = json!(head_ref);
    serde_json::to_vec_pretty(&payload).unwrap()
}

fn gitea_user() -> Value {
    json!({
        "id": 1, "login": "ops", "login_name": "", "source_id": 0, "full_name": "Ops",
        "email": "ops@example.org", "avatar_url": "http://gitea.local/avatars/1",
        "html_url": "http://gitea.local/ops", "language": "en-US", "is_admin": false,
        "last_login": "2025-03-01T10:00:00Z", "created": "2025-01-01T10:00:00Z",
        "restricted": false, "active": true, "prohibit_login": false, "location": "",
        "website": "", "description": "", "visibility": "public", "followers_count": 0,
        "following_count": 0, "starred_repos_count": 0, "username": "ops"
    })
}

/// A Gitea `pull_request` payload for a merge, as Gitea v1.23 builds it
/// (tests/data/webhooks/gitea/FIELDS.txt, section 2): action "closed",
/// pull_request.merged true, merge_commit_sha set; 2-space indented like Gitea's MarshalIndent.
fn gitea_merged(number: u64, head_ref: &str, head_label: &str, merge_sha: &str) -> Vec<u8> {
    let repository = json!({
        "id": 7, "owner": gitea_user(), "name": "images", "full_name": "ops/images",
        "private": false, "fork": false, "html_url": "http://gitea.local/ops/images",
        "url": "http://gitea.local/api/v1/repos/ops/images",
        "ssh_url": "git@gitea.local:ops/images.git",
        "clone_url": "http://gitea.local/ops/images.git", "default_branch": "main",
        "archived": false, "created_at": "2025-01-01T10:00:00Z",
        "updated_at": "2025-03-01T10:00:00Z"
    });
    let payload = json!({
        "action": "closed",
        "number": number,
        "pull_request": {
            "id": 41, "url": format!("http://gitea.local/ops/images/pulls/{number}"),
            "number": number, "user": gitea_user(), "title": "nginx: Debian security update",
            "body": "", "labels": [], "milestone": null, "assignee": null, "assignees": null,
            "requested_reviewers": null, "requested_reviewers_teams": [], "state": "closed",
            "draft": false, "is_locked": false, "comments": 0, "review_comments": 0,
            "html_url": format!("http://gitea.local/ops/images/pulls/{number}"),
            "diff_url": format!("http://gitea.local/ops/images/pulls/{number}.diff"),
            "patch_url": format!("http://gitea.local/ops/images/pulls/{number}.patch"),
            "mergeable": false, "merged": true, "merged_at": "2025-03-01T12:00:00Z",
            "merge_commit_sha": merge_sha, "merged_by": gitea_user(),
            "allow_maintainer_edit": false,
            "base": {"label": "main", "ref": "main",
                     "sha": merge_sha, "repo_id": 7, "repo": repository.clone()},
            "head": {"label": head_label, "ref": head_ref,
                     "sha": "1111111111111111111111111111111111111111", "repo_id": 7,
                     "repo": repository.clone()},
            "merge_base": "2222222222222222222222222222222222222222",
            "due_date": null, "created_at": "2025-03-01T11:00:00Z",
            "updated_at": "2025-03-01T12:00:00Z", "closed_at": "2025-03-01T12:00:00Z",
            "pin_order": 0
        },
        "requested_reviewer": null,
        "repository": repository,
        "sender": gitea_user(),
        "commit_id": "",
        "review": null
    });
    serde_json::to_vec_pretty(&payload).unwrap()
}

/// Parses Prometheus text exposition into (sample with labels, value); panics on a bad line.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            assert!(
                matches!(words.first(), Some(&"HELP") | Some(&"TYPE")) && words.len() >= 3,
                "bad comment line in /metrics: {line}"
            );
            if words[0] == "TYPE" {
                assert!(
                    ["counter", "gauge", "histogram"].contains(&words[2]),
                    "bad type in /metrics: {line}"
                );
            }
            continue;
        }
        let (sample, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line in /metrics: {line}"));
        let name_end = sample.find('{').unwrap_or(sample.len());
        let name = &sample[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in /metrics: {line}"
        );
        if name_end < sample.len() {
            assert!(sample.ends_with('}'), "bad labels in /metrics: {line}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in /metrics: {line}"));
        samples.push((sample.to_string(), value));
    }
    samples
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn healthz_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::default());
    let server = start(dir.path(), SECRET_ENV, jobs).await;

    let (status, _, body) = server.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));

    let (status, content_type, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let samples = parse_metrics(&text);
    for counter in [
        "rebake_scans_total",
        "rebake_findings_total",
        "rebake_builds_total",
        "rebake_proposals_total",
        "rebake_deploys_total",
        "rebake_last_successful_scan_timestamp_seconds",
    ] {
        assert!(
            samples.iter().any(|(s, v)| s == counter && *v == 0.0),
            "{counter} missing or not 0 in:\n{text}"
        );
    }
    for (name, kind) in [
        ("rebake_scans_total", "counter"),
        ("rebake_failures_total", "counter"),
        ("rebake_webhooks_total", "counter"),
        ("rebake_last_successful_scan_timestamp_seconds", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "no TYPE line for {name} in:\n{text}"
        );
    }
    assert!(
        text.contains("rebake_failures_total{stage=\"deploy\"} 0\n"),
        "{text}"
    );

    // A refused webhook is counted by forge and result.
    let (status, _) = server
        .github(
            "ping",
            "m-1",
            &github_fixture_bytes("ping.event.0.json"),
            "wrong",
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        server
            .metric("rebake_webhooks_total{forge=\"github\",result=\"unauthorized\"}")
            .await,
        Some(1.0)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn github_merged_proposal_deploys_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::default());
    let server = start(dir.path(), SECRET_ENV, jobs.clone()).await;
    let body = github_merged("rebake/nginx");

    let (status, text) = server.github("pull_request", "gh-1", &body, SECRET).await;
    assert_eq!(status, 202, "{text}");
    wait_deploys(&jobs, 1).await;

    // The same delivery again: ignored.
    let (status, text) = server.github("pull_request", "gh-1", &body, SECRET).await;
    assert_eq!((status, text.as_str()), (200, "duplicate delivery ignored"));
    // The same merge under another delivery id (a manual redelivery): deployed already.
    let (status, text) = server.github("pull_request", "gh-2", &body, SECRET).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("already deployed"), "{text}");

    assert_eq!(server.metric("rebake_deploys_total").await, Some(1.0));
    assert_eq!(
        server
            .metric("rebake_webhooks_total{forge=\"github\",result=\"duplicate\"}")
            .await,
        Some(2.0)
    );
    server.shutdown().await;

    assert_eq!(
        jobs.deploys(),
        vec![MergedProposal {
            forge: WebhookForge::Github,
            repository: "Codertocat/Hello-World".to_string(),
            number: 2,
            head_branch: "rebake/nginx".to_string(),
            merge_commit: MERGE_SHA.to_string(),
            base_branch: "master".to_string(),
        }]
    );
}

/// A signed body replayed to the other forge's path, or with another pull request number (or
/// a delivery id never seen), deploys nothing: only the configured forge's path acts, and a
/// merge commit of a repository deploys once.
#[tokio::test]
async fn a_replayed_merge_deploys_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::default());
    let server = start(dir.path(), SECRET_ENV, jobs.clone()).await;
    let body = github_merged("rebake/nginx");
    let (status, text) = server.github("pull_request", "gh-1", &body, SECRET).await;
    assert_eq!(status, 202, "{text}");
    wait_deploys(&jobs, 1).await;

    // The same signed body, sent to the Gitea path with Gitea's headers: not this forge.
    let (status, text) = server.gitea("pull_request", "gh-1", &body, SECRET).await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("github only"), "{text}");
    let (status, text) = server
        .gitea("pull_request", "replay-1", &body, SECRET)
        .await;
    assert_eq!(status, 404, "{text}");
    // The same merge commit under another number and a new delivery id: deployed already.
    let mut other: Value = serde_json::from_slice(&body).unwrap();
    other["number"] = json!(99);
    other["pull_request"]["number"] = json!(99);
    let other = serde_json::to_vec(&other).unwrap();
    let (status, text) = server.github("pull_request", "gh-9", &other, SECRET).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("already deployed"), "{text}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server
            .metric("rebake_webhooks_total{forge=\"gitea\",result=\"wrong_forge\"}")
            .await,
        Some(2.0)
    );
    server.shutdown().await;
    assert_eq!(jobs.deploys().len(), 1, "{:?}", jobs.deploys());

    // A plain-git service takes no webhook at all.
    let dir = tempfile::tempdir().unwrap();
    let server = start_for(None, dir.path(), SECRET_ENV, jobs.clone()).await;
    let (status, text) = server.github("pull_request", "p-1", &body, SECRET).await;
    assert_eq!(status, 404, "{text}");
    server.shutdown().await;
    assert_eq!(jobs.deploys().len(), 1, "{:?}", jobs.deploys());
}

/// Done deploys recorded by an older version (`forge:owner/name#number@commit`) still count.
#[tokio::test]
async fn done_deploys_of_the_older_format_are_still_done() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("server")).unwrap();
    std::fs::write(
        dir.path().join("server/jobs.json"),
        serde_json::to_vec(&json!({
            "pending": [],
            "done": [format!("github:Codertocat/Hello-World#2@{MERGE_SHA}")],
        }))
        .unwrap(),
    )
    .unwrap();
    let jobs = Arc::new(FakeJobs::default());
    let server = start(dir.path(), SECRET_ENV, jobs.clone()).await;
    let body = github_merged("rebake/nginx");
    let (status, text) = server.github("pull_request", "o-1", &body, SECRET).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("already deployed"), "{text}");
    server.shutdown().await;
    assert!(jobs.deploys().is_empty(), "{:?}", jobs.deploys());
}

#[tokio::test]
async fn github_bad_or_missing_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::default());
    let server = start(dir.path(), SECRET_ENV, jobs.clone()).await;
    let body = github_merged("rebake/nginx");

    // Signed with another secret.
    let (status, _) = server
        .github("pull_request", "bad-1", &body, "not the secret")
        .await;
    assert_eq!(status, 401);
    // Correct HMAC but without the "sha256=" prefix.
    let unprefixed = [
        ("x-github-event", "pull_request".to_string()),
        ("x-github-delivery", "bad-1".to_string()),
        ("x-hub-signature-256", sign(SECRET.as_bytes(), &body)),
    ];
    let (status, _) = server.post("/webhook/github", &unprefixed, &body).await;
    assert_eq!(status, 401);
    // Signature of another body.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b"\n");
    let other = [
        ("x-github-event", "pull_request".to_string()),
        ("x-github-delivery", "bad-1".to_string()),
        (
            "x-hub-signature-256",
            format!("sha256={}", sign(SECRET.as_bytes(), &body)),
        ),
    ];
    let (status, _) = server.post("/webhook/github", &other, &tampered).await;
    assert_eq!(status, 401);
    // No signature at all.
    let unsigned = [
        ("x-github-event", "pull_request".to_string()),
        ("x-github-delivery", "bad-1".to_string()),
    ];
    let (status, _) = server.post("/webhook/github", &unsigned, &body).await;
    assert_eq!(status, 401);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(jobs.deploys().is_empty(), "{:?}", jobs.deploys());

    // Refused deliveries are not remembered: the genuine one with that id still works.
    let (status, text) = server.github("pull_request", "bad-1", &body, SECRET).await;
    assert_eq!(status, 202, "{text}");
    wait_deploys(&jobs, 1).await;
    server.shutdown().await;
    assert_eq!(jobs.deploys().len(), 1);
}

#[tokio::test]
async fn missing_secret_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::default());
    let server = start(dir.path(), UNSET_SECRET_ENV, jobs.clone()).await;
    let body = github_merged("rebake/nginx");
    let (status, _) = server.github("pull_request", "s-1", &body, SECRET).await;
    assert_eq!(status, 503);
    server.shutdown().await;
    let server = start_for(
        Some(WebhookForge::Gitea),
        dir.path(),
        UNSET_SECRET_ENV,
        jobs.clone(),
    )
    .await;
    let (status, _) = server
        .gitea(
            "pull_request",
            "s-2",
            &gitea_merged(3, "rebake/x", "rebake/x", MERGE_SHA),
            SECRET,
        )
        .await;
    assert_eq!(status, 503);
    server.shutdown().await;
    assert!(jobs.deploys().is_empty());
}

#[tokio::test]
async fn github_events_that_deploy_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::default());
    let server = start(dir.path(), SECRET_ENV, jobs.clone()).await;

    // The unmodified fixture: closed without merge.
    let closed = github_fixture_bytes("pull_request.closed.3.json");
    let (status, text) = server.github("pull_request", "n-1", &closed, SECRET).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("without merge"), "{text}");
    // Merged, but not from a rebake branch.
    let (status, text) = server
        .github("pull_request", "n-2", &github_merged("changes"), SECRET)
        .await;
    assert_eq!(status, 200, "{text}");
    // Opened.
    let opened = github_fixture_bytes("pull_request.opened.0.json");
    let (status, _) = server.github("pull_request", "n-3", &opened, SECRET).await;
    assert_eq!(status, 202);
    // ping and another event.
    let ping = github_fixture_bytes("ping.event.0.json");
    let (status, _) = server.github("ping", "n-4", &ping, SECRET).await;
    assert_eq!(status, 200);
    let push = github_fixture_bytes("push.event.0.json");
    let (status, text) = server.github("push", "n-5", &push, SECRET).await;
    assert_eq!((status, text.as_str()), (202, "event push ignored"));

    tokio::time::sleep(Duration::from_millis(300)).await;
    server.shutdown().await;
    assert!(jobs.deploys().is_empty(), "{:?}", jobs.deploys());
}

#[tokio::test]
async fn gitea_merged_proposal_deploys_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::default());
    let server = start_for(
        Some(WebhookForge::Gitea),
        dir.path(),
        SECRET_ENV,
        jobs.clone(),
    )
    .await;
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let body = gitea_merged(12, "rebake/nginx", "rebake/nginx", sha);

    // GitHub's header on the Gitea endpoint is not Gitea's signature.
    let github_style = [
        ("x-gitea-event", "pull_request".to_string()),
        ("x-gitea-delivery", "gt-1".to_string()),
        (
            "x-gitea-signature",
            format!("sha256={}", sign(SECRET.as_bytes(), &body)),
        ),
    ];
    let (status, _) = server.post("/webhook/gitea", &github_style, &body).await;
    assert_eq!(status, 401);
    let (status, _) = server.gitea("pull_request", "gt-1", &body, "wrong").await;
    assert_eq!(status, 401);

    let (status, text) = server.gitea("pull_request", "gt-1", &body, SECRET).await;
    assert_eq!(status, 202, "{text}");
    wait_deploys(&jobs, 1).await;
    let (status, text) = server.gitea("pull_request", "gt-1", &body, SECRET).await;
    assert_eq!((status, text.as_str()), (200, "duplicate delivery ignored"));
    server.shutdown().await;
    assert_eq!(
        jobs.deploys(),
        vec![MergedProposal {
            forge: WebhookForge::Gitea,
            repository: "ops/images".to_string(),
            number: 12,
            head_branch: "rebake/nginx".to_string(),
            merge_commit: sha.to_string(),
            base_branch: "main".to_string(),
        }]
    );
    assert!(dir.path().join("server/deliveries.json").is_file());

    // A new process on the same state directory: the delivery is still known.
    let server = start_for(
        Some(WebhookForge::Gitea),
        dir.path(),
        SECRET_ENV,
        jobs.clone(),
    )
    .await;
    let (status, text) = server.gitea("pull_request", "gt-1", &body, SECRET).await;
    assert_eq!((status, text.as_str()), (200, "duplicate delivery ignored"));
    // So is the deploy, under a new delivery id.
    let (status, text) = server.gitea("pull_request", "gt-2", &body, SECRET).await;
    assert_eq!(status, 200, "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.shutdown().await;
    assert_eq!(jobs.deploys().len(), 1);
}

/// A Gitea merge of pull request `number` with this head queues one deploy of `expected`.
async fn gitea_merge_deploys(number: u64, head_ref: &str, head_label: &str, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::default());
    let server = start_for(
        Some(WebhookForge::Gitea),
        dir.path(),
        SECRET_ENV,
        jobs.clone(),
    )
    .await;
    let body = gitea_merged(number, head_ref, head_label, MERGE_SHA);
    let (status, text) = server.gitea("pull_request", "gl-1", &body, SECRET).await;
    assert_eq!(status, 202, "{text}");
    wait_deploys(&jobs, 1).await;
    server.shutdown().await;
    assert_eq!(jobs.deploys().len(), 1);
    assert_eq!(jobs.deploys()[0].head_branch, expected);
}

#[tokio::test]
async fn gitea_merge_after_head_branch_deletion_uses_the_label() {
    // FIELDS.txt: once the head branch is gone, head.ref is "refs/pull/N/head" and head.label
    // still names the branch.
    gitea_merge_deploys(5, "refs/pull/5/head", "rebake/postgres", "rebake/postgres").await;
}

#[tokio::test]
async fn a_merged_group_proposal_queues_one_deploy() {
    // `rebake/group/<name>` (a review group's proposal) is a rebake branch like `rebake/<image>`.
    gitea_merge_deploys(
        6,
        "rebake/group/web",
        "rebake/group/web",
        "rebake/group/web",
    )
    .await;
}

#[tokio::test]
async fn queued_deploy_survives_shutdown_and_runs_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::gated());
    let server = start_for(
        Some(WebhookForge::Gitea),
        dir.path(),
        SECRET_ENV,
        jobs.clone(),
    )
    .await;
    let first = gitea_merged(1, "rebake/a", "rebake/a", MERGE_SHA);
    let second = gitea_merged(
        2,
        "rebake/b",
        "rebake/b",
        "d4295bd74fb0f4fda03689c3df3f2803b658fd85",
    );
    assert_eq!(
        server.gitea("pull_request", "q-1", &first, SECRET).await.0,
        202
    );
    wait_deploys(&jobs, 1).await; // running, held by the gate
    assert_eq!(
        server.gitea("pull_request", "q-2", &second, SECRET).await.0,
        202
    );

    // Shut down while the first deploy runs: it finishes, the second stays queued.
    let _ = server.stop.send(());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !server.task.is_finished(),
        "shutdown waits for the running job"
    );
    jobs.release(1);
    tokio::time::timeout(Duration::from_secs(20), server.task)
        .await
        .expect("serve returns after the running job")
        .unwrap()
        .unwrap();
    assert_eq!(jobs.deploys().len(), 1);

    let jobs2 = Arc::new(FakeJobs::default());
    let server = start_for(
        Some(WebhookForge::Gitea),
        dir.path(),
        SECRET_ENV,
        jobs2.clone(),
    )
    .await;
    wait_deploys(&jobs2, 1).await;
    server.shutdown().await;
    let resumed = jobs2.deploys();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].number, 2);
}

// ---------------------------------------------------------------------------------------------
// Scheduler

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(h, min, s)
        .unwrap()
        .and_utc()
}

/// A clock whose sleep returns at once, having moved the time to the deadline.
struct FakeClock {
    now: Mutex<DateTime<Utc>>,
    sleeps: Mutex<Vec<DateTime<Utc>>>,
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap()
    }
    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        self.sleeps.lock().unwrap().push(deadline);
        *self.now.lock().unwrap() = deadline;
    }
}

#[test]
fn next_run_follows_the_cron_expression() {
    let every_minute = CronSchedule::parse("* * * * *").unwrap();
    assert_eq!(
        next_run(&every_minute, utc(2025, 3, 1, 12, 0, 30)),
        Some(utc(2025, 3, 1, 12, 1, 0))
    );
    assert_eq!(
        next_run(&every_minute, utc(2025, 3, 1, 12, 1, 0)),
        Some(utc(2025, 3, 1, 12, 2, 0))
    );
    // 2025-03-01 is a Saturday: the next weekday 04:30 is Monday.
    let weekdays = CronSchedule::parse("30 4 * * 1-5").unwrap();
    assert_eq!(
        next_run(&weekdays, utc(2025, 3, 1, 12, 0, 0)),
        Some(utc(2025, 3, 3, 4, 30, 0))
    );
    let never = CronSchedule::parse("0 0 31 2 *").unwrap();
    assert_eq!(next_run(&never, utc(2025, 3, 1, 12, 0, 0)), None);
}

/// A service with a gated fake and no scheduler of its own (the tests step it), and a fake
/// clock at 2025-03-01 12:02:10.
fn scheduler_fixture() -> (tempfile::TempDir, Arc<FakeJobs>, Service, FakeClock) {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::gated());
    let config = ServeConfig {
        secret_env: SECRET_ENV.to_string(),
        state_dir: dir.path().to_path_buf(),
        forge: Some(WebhookForge::Github),
        schedules: Vec::new(),
        deploys_from: None,
        limits: Default::default(),
    };
    let service = Service::start(&config, jobs.clone()).unwrap();
    let clock = FakeClock {
        now: Mutex::new(utc(2025, 3, 1, 12, 2, 10)),
        sleeps: Mutex::new(Vec::new()),
    };
    (dir, jobs, service, clock)
}

#[tokio::test]
async fn scheduler_tick_runs_one_scan_and_skips_while_running() {
    let (_dir, jobs, service, clock) = scheduler_fixture();
    let schedule = [ScanSchedule {
        cron: CronSchedule::parse("*/5 * * * *").unwrap(),
        scope: ScanScope::All,
    }];

    // The tick waits until 12:05, then queues one scan.
    let step = run_scheduler_once(&service, &schedule, &clock).await;
    assert_eq!(step, Some(Enqueued::Queued));
    assert_eq!(
        *clock.sleeps.lock().unwrap(),
        vec![utc(2025, 3, 1, 12, 5, 0)]
    );
    // The scan is still running at the 12:10 tick: skipped.
    for _ in 0..100 {
        if jobs.scans.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(jobs.scans.load(Ordering::SeqCst), 1);
    let step = run_scheduler_once(&service, &schedule, &clock).await;
    assert_eq!(step, Some(Enqueued::AlreadyPending));
    jobs.release(1);
    tokio::time::timeout(Duration::from_secs(10), service.wait_idle())
        .await
        .expect("the scan finishes");
    assert_eq!(jobs.scans.load(Ordering::SeqCst), 1);

    // The metrics took the scan's summary.
    let text = service.metrics().render();
    let samples = parse_metrics(&text);
    let value = |name: &str| {
        samples
            .iter()
            .find(|(s, _)| s == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
    };
    assert_eq!(value("rebake_scans_total"), 1.0);
    assert_eq!(value("rebake_findings_total"), 3.0);
    assert_eq!(value("rebake_builds_total"), 2.0);
    assert_eq!(value("rebake_proposals_total"), 1.0);
    assert!(value("rebake_last_successful_scan_timestamp_seconds") > 1.7e9);
    // What the running containers lack, as the scan of them found.
    assert_eq!(
        value("rebake_running_security_updates{container=\"web\"}"),
        2.0
    );
    assert_eq!(
        value("rebake_running_security_update_age_seconds{container=\"web\"}"),
        7200.0
    );

    // The next tick (12:15) runs the next scan.
    jobs.release(1);
    let step = run_scheduler_once(&service, &schedule, &clock).await;
    assert_eq!(step, Some(Enqueued::Queued));
    tokio::time::timeout(Duration::from_secs(10), service.wait_idle())
        .await
        .expect("the scan finishes");
    assert_eq!(jobs.scans.load(Ordering::SeqCst), 2);
    assert_eq!(clock.now(), utc(2025, 3, 1, 12, 15, 0));
    service.shutdown().await;
}

/// rebake.yaml's schedule scans every image; a policy's own schedule scans its image in between;
/// when both fire in the same minute one scan covers all. A tick whose images a running scan
/// covers is skipped; one that is not covered joins the queued scan.
#[tokio::test]
async fn policy_schedules_scan_their_image_between_full_scans() {
    let (_dir, jobs, service, clock) = scheduler_fixture();
    let schedules = [
        ScanSchedule {
            cron: CronSchedule::parse("0 * * * *").unwrap(),
            scope: ScanScope::All,
        },
        ScanSchedule {
            cron: CronSchedule::parse("*/20 * * * *").unwrap(),
            scope: ScanScope::images(["web"]),
        },
        ScanSchedule {
            cron: CronSchedule::parse("*/30 * * * *").unwrap(),
            scope: ScanScope::images(["db"]),
        },
        ScanSchedule {
            cron: CronSchedule::parse("45 * * * *").unwrap(),
            scope: ScanScope::images(["cache"]),
        },
    ];
    let scopes = || jobs.scopes.lock().unwrap().clone();
    let wait_scans = |n: usize| {
        let jobs = jobs.clone();
        async move {
            for _ in 0..200 {
                if jobs.scans.load(Ordering::SeqCst) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("scan {n} did not start");
        }
    };

    // 12:20: only web's schedule fires; that scan runs (held by the gate).
    assert_eq!(
        run_scheduler_once(&service, &schedules, &clock).await,
        Some(Enqueued::Queued)
    );
    assert_eq!(clock.now(), utc(2025, 3, 1, 12, 20, 0));
    wait_scans(1).await;
    assert_eq!(scopes(), [ScanScope::images(["web"])]);
    // 12:30: db is not covered by the running web scan: queued.
    assert_eq!(
        run_scheduler_once(&service, &schedules, &clock).await,
        Some(Enqueued::Queued)
    );
    // 12:40: web again, while its 12:20 scan still runs: skipped.
    assert_eq!(
        run_scheduler_once(&service, &schedules, &clock).await,
        Some(Enqueued::AlreadyPending)
    );
    // 12:45: cache joins the queued db scan rather than queueing a third.
    assert_eq!(
        run_scheduler_once(&service, &schedules, &clock).await,
        Some(Enqueued::AlreadyPending)
    );
    assert_eq!(clock.now(), utc(2025, 3, 1, 12, 45, 0));
    jobs.release(1);
    wait_scans(2).await;
    assert_eq!(
        scopes(),
        [
            ScanScope::images(["web"]),
            ScanScope::images(["cache", "db"])
        ]
    );
    jobs.release(1);
    tokio::time::timeout(Duration::from_secs(10), service.wait_idle())
        .await
        .expect("the scans finish");
    // 13:00: all three fire: one scan of every image.
    jobs.release(1);
    assert_eq!(
        run_scheduler_once(&service, &schedules, &clock).await,
        Some(Enqueued::Queued)
    );
    assert_eq!(clock.now(), utc(2025, 3, 1, 13, 0, 0));
    tokio::time::timeout(Duration::from_secs(10), service.wait_idle())
        .await
        .expect("the scan finishes");
    assert_eq!(scopes().last(), Some(&ScanScope::All));
    assert_eq!(jobs.scans.load(Ordering::SeqCst), 3);
    service.shutdown().await;
}

/// A scan that finds other schedules on the default branch (a policy gained or changed its
/// `schedule`) moves the scheduler to them; one that reports none keeps them.
#[tokio::test]
async fn a_scan_brings_the_default_branchs_schedules() {
    let (_dir, jobs, service, clock) = scheduler_fixture();
    let hourly = ScanSchedule {
        cron: CronSchedule::parse("0 * * * *").unwrap(),
        scope: ScanScope::All,
    };
    service.set_schedules(vec![hourly.clone()]);
    let web = ScanSchedule {
        cron: CronSchedule::parse("*/10 * * * *").unwrap(),
        scope: ScanScope::images(["web"]),
    };
    *jobs.brings_schedules.lock().unwrap() = Some(vec![hourly.clone(), web.clone()]);
    jobs.release(2);
    assert_eq!(
        run_scheduler_once(&service, &service.schedules(), &clock).await,
        Some(Enqueued::Queued)
    );
    assert_eq!(clock.now(), utc(2025, 3, 1, 13, 0, 0));
    tokio::time::timeout(Duration::from_secs(10), service.wait_idle())
        .await
        .expect("the scan finishes");
    assert_eq!(service.schedules(), [hourly.clone(), web]);
    // The next step follows web's schedule: 13:10.
    assert_eq!(
        run_scheduler_once(&service, &service.schedules(), &clock).await,
        Some(Enqueued::Queued)
    );
    assert_eq!(clock.now(), utc(2025, 3, 1, 13, 10, 0));
    tokio::time::timeout(Duration::from_secs(10), service.wait_idle())
        .await
        .expect("the scan finishes");
    assert_eq!(
        service.schedules().len(),
        2,
        "a scan reporting none keeps them"
    );
    service.shutdown().await;
}

#[tokio::test]
async fn github_form_encoded_delivery_deploys_and_a_refused_one_is_not_marked_done() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::default());
    let server = start(dir.path(), SECRET_ENV, jobs.clone()).await;
    let form_post = |delivery: &str, body: Vec<u8>| {
        let request = server
            .client
            .post(format!("{}/webhook/github", server.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-github-event", "pull_request")
            .header("x-github-delivery", delivery)
            .header(
                "x-hub-signature-256",
                format!("sha256={}", sign(SECRET.as_bytes(), &body)),
            )
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let form = |json: &[u8]| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(json).unwrap())
            .finish()
            .into_bytes()
    };

    // GitHub's default content type: the JSON, URL-encoded, in the field `payload`.
    let (status, text) = form_post("f-1", form(&github_merged("rebake/nginx"))).await;
    assert_eq!(status, 202, "{text}");
    wait_deploys(&jobs, 1).await;

    // A refused delivery is not done: the same delivery id, sent again right, is handled.
    let (status, text) = form_post("f-2", b"other=1".to_vec()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("application/json"), "{text}");
    let mut other: Value = serde_json::from_slice(&github_merged("rebake/postgres")).unwrap();
    other["number"] = json!(3);
    other["pull_request"]["number"] = json!(3);
    other["pull_request"]["merge_commit_sha"] = json!("0".repeat(40));
    let other = serde_json::to_vec(&other).unwrap();
    let (status, text) = server.github("pull_request", "f-2", &other, SECRET).await;
    assert_eq!(status, 202, "{text}");
    wait_deploys(&jobs, 2).await;
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Bounded connections: timeouts, the cap, and a webhook answered under load

/// Reads from `stream` until the server closes it (at most `limit`): what it sent, and when.
/// The time is counted from `started`.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    started: std::time::Instant,
    limit: Duration,
) -> (String, Duration) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => panic!(
                "connection still open after {limit:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_in_time() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::default());
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        max_connections: 512,
    };
    let server = start_with(dir.path(), SECRET_ENV, jobs.clone(), limits).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let connect = || tokio::net::TcpStream::connect(addr.clone());

    // Sends nothing at all.
    let mut idle = connect().await.unwrap();
    // Half a request head.
    let mut half_head = connect().await.unwrap();
    half_head
        .write_all(b"POST /webhook/github HTTP/1.1\r\nHost: rebake\r\nX-GitHub-")
        .await
        .unwrap();
    // A whole head, half the body it announces.
    let mut half_body = connect().await.unwrap();
    half_body
        .write_all(
            b"POST /webhook/github HTTP/1.1\r\nHost: rebake\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"action\":",
        )
        .await
        .unwrap();
    // One answered request, then idle on the kept-alive connection (its header-read timeout
    // starts again after the answer).
    let mut kept_alive = connect().await.unwrap();
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: rebake\r\n\r\n")
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let bound = Duration::from_secs(8);
    let (text, idle_after) = read_until_closed(&mut idle, started, bound).await;
    assert_eq!(
        text, "",
        "nothing is answered to a connection that sent nothing"
    );
    let (_, half_head_after) = read_until_closed(&mut half_head, started, bound).await;
    let (text, half_body_after) = read_until_closed(&mut half_body, started, bound).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let (text, kept_alive_after) = read_until_closed(&mut kept_alive, started, bound).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    eprintln!(
        "closed after: idle {idle_after:?}, half head {half_head_after:?}, half body \
         {half_body_after:?} (408), kept alive {kept_alive_after:?}"
    );
    for after in [
        idle_after,
        half_head_after,
        half_body_after,
        kept_alive_after,
    ] {
        assert!(after < Duration::from_secs(5), "{after:?}");
    }
    assert!(jobs.deploys().is_empty());
    server.shutdown().await;
}

/// Connections to `port` on 127.0.0.1 the server side holds open (ESTABLISHED with that local
/// port), from /proc/net/tcp.
fn server_side_connections(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "01"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_is_answered_beside_1000_idle_and_slow_connections() {
    use tokio::io::AsyncWriteExt;
    // 1,000 client sockets and up to 512 server sockets in this one process.
    let (old, new) = rebake::server::raise_open_files_limit().unwrap();
    eprintln!("open files limit: {old} -> {new}");
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(FakeJobs::default());
    // The defaults: 10 s to send a head, 30 s per request, 512 connections.
    let server = start(dir.path(), SECRET_ENV, jobs.clone()).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();

    let opened = std::time::Instant::now();
    let mut held = Vec::new();
    for n in 0..1000 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if n % 2 == 1 {
            // Slow: a request head that never ends. (The server may have closed it already.)
            let _ = stream
                .write_all(b"POST /webhook/github HTTP/1.1\r\nHost: rebake\r\nX-Slow: ")
                .await;
        }
        held.push(stream);
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = server_side_connections(port);
    eprintln!(
        "1000 idle/slow connections opened in {:?}; the server holds {open}",
        opened.elapsed()
    );
    assert!(open <= 512, "the server holds {open} connections (cap 512)");

    let body = github_merged("rebake/nginx");
    let mut took = Vec::new();
    for delivery in ["gh-load-1", "gh-load-2", "gh-load-3"] {
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        let response = client
            .post(format!("{}/webhook/github", server.url))
            .header("content-type", "application/json")
            .header("x-github-event", "pull_request")
            .header("x-github-delivery", delivery)
            .header(
                "x-hub-signature-256",
                format!("sha256={}", sign(SECRET.as_bytes(), &body)),
            )
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let _ = response.text().await;
        took.push(started.elapsed());
        assert!(status == 202 || status == 200, "{delivery}: {status}");
    }
    eprintln!("signed webhook answered in {took:?} beside 1000 idle/slow connections");
    for t in &took {
        assert!(
            *t < Duration::from_secs(1),
            "webhook took {t:?} (bound 1 s)"
        );
    }
    wait_deploys(&jobs, 1).await;
    drop(held);
    server.shutdown().await;
}
