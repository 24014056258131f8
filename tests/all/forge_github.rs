//! The GitHub forge against the stateful fake GitHub (`support::fake_github`): real bare git
//! repository for branches, every request body and every answer checked against GitHub's
//! official OpenAPI description.

use crate::support::fake_forge::FakeForge;
use crate::support::fake_github::{init_bare_repo, FakeGitHub};
use crate::support::openapi::OpenApi;
use rebake::forge::github::{GitHub, GitHubAuth};
use rebake::forge::http::RetryPolicy;
use rebake::forge::{Forge, ForgeError, NewProposal, ProposalState, StatusState};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const OWNER: &str = "acme";
const REPO: &str = "images";
const TOKEN: &str = "ghp_fakeTOKEN0123456789abcdef";

struct Env {
    _dir: TempDir,
    fake: FakeGitHub,
    shas: BTreeMap<String, String>,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let git = dir.path().join("images.git");
    let shas = init_bare_repo(&git, "main", &["rebake/nginx", "rebake/postgres"]);
    let fake = FakeGitHub::start(&git, OWNER, REPO, TOKEN).await;
    Env {
        _dir: dir,
        fake,
        shas,
    }
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_wait: Duration::from_secs(10),
        ..RetryPolicy::default()
    }
}

fn client(env: &Env, token: &str) -> GitHub {
    GitHub::new(
        &env.fake.url(),
        OWNER,
        REPO,
        GitHubAuth::Token(token.into()),
        retry(),
    )
    .expect("client")
}

fn nginx() -> NewProposal {
    NewProposal {
        title: "nginx: security update (openssl 3.5.1-1 → 3.5.4-1, 2 CVEs)".into(),
        body: "| source | old | new |\n| --- | --- | --- |\n| openssl | 3.5.1-1 | 3.5.4-1 |\n"
            .into(),
        head_branch: "rebake/nginx".into(),
        base_branch: "main".into(),
        labels: vec!["security".into(), "rebake".into()],
        reviewers: vec!["alice".into(), "acme/ops".into()],
        assignees: vec!["bob".into()],
    }
}

fn count(env: &Env, method: &str, path: &str) -> usize {
    env.fake
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

#[tokio::test]
async fn open_find_update_status_comment_close() {
    let env = env().await;
    let gh = client(&env, TOKEN);
    assert_eq!(gh.name(), "GitHub");
    assert_eq!(gh.find_open("rebake/nginx").await.unwrap(), None);

    let p = gh.create(&nginx()).await.unwrap();
    assert_eq!(p.number, 1);
    assert_eq!(p.state, ProposalState::Open);
    assert_eq!(p.head_branch, "rebake/nginx");
    assert_eq!(p.head_sha, env.shas["rebake/nginx"]);
    assert_eq!(p.base_branch, "main");
    assert_eq!(p.labels, vec!["security", "rebake"]);
    assert_eq!(p.merge_commit, None);
    assert!(p.url.ends_with("/acme/images/pull/1"), "{}", p.url);

    let prs = env.fake.prs();
    assert_eq!(prs.len(), 1);
    assert_eq!(prs[0].title, nginx().title);
    assert_eq!(prs[0].labels, vec!["security", "rebake"]);
    assert_eq!(prs[0].reviewers, vec!["alice"]);
    assert_eq!(prs[0].team_reviewers, vec!["ops"]);
    assert_eq!(prs[0].assignees, vec!["bob"]);
    // pulls, labels, reviewers, assignees
    assert_eq!(env.fake.writes(), 4);

    let found = gh.find_open("rebake/nginx").await.unwrap().expect("found");
    assert_eq!(found, p);
    assert_eq!(gh.find_open("rebake/postgres").await.unwrap(), None);

    gh.update(1, "nginx: security update (3 CVEs)", "new body")
        .await
        .unwrap();
    let pr = env.fake.pr(1);
    assert_eq!(pr.title, "nginx: security update (3 CVEs)");
    assert_eq!(pr.body.as_deref(), Some("new body"));
    let got = gh.get(1).await.unwrap();
    assert_eq!(got.title, "nginx: security update (3 CVEs)");
    assert_eq!(got.body, "new body");

    let sha = &env.shas["rebake/nginx"];
    assert_eq!(gh.status(sha, "rebake/test").await.unwrap(), None);
    gh.set_status(sha, StatusState::Pending, "rebake/test", "testing")
        .await
        .unwrap();
    gh.set_status(
        sha,
        StatusState::Success,
        "rebake/test",
        &"3 tests passed ".repeat(20),
    )
    .await
    .unwrap();
    assert_eq!(
        gh.status(sha, "rebake/test").await.unwrap(),
        Some(StatusState::Success)
    );
    assert_eq!(gh.status(sha, "other/ci").await.unwrap(), None);
    let statuses = env.fake.statuses(sha);
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[1].context, "rebake/test");
    assert_eq!(statuses[1].state, "success");
    assert!(statuses[1].description.as_ref().unwrap().chars().count() <= 140);

    gh.comment(1, "The image is current again; closing.")
        .await
        .unwrap();
    gh.close(1).await.unwrap();
    assert_eq!(
        env.fake.comments(1),
        vec!["The image is current again; closing."]
    );
    assert_eq!(env.fake.pr(1).state, "closed");
    assert_eq!(gh.get(1).await.unwrap().state, ProposalState::Closed);
    assert_eq!(gh.find_open("rebake/nginx").await.unwrap(), None);

    env.fake.assert_no_violations();
}

#[tokio::test]
async fn rate_limit_is_waited_out() {
    let env = env().await;
    let gh = client(&env, TOKEN);
    env.fake.fail_next(
        "POST",
        "/repos/acme/images/pulls",
        429,
        &[("retry-after", "1")],
    );
    let start = Instant::now();
    let p = gh.create(&nginx()).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured ({:?})",
        start.elapsed()
    );
    assert_eq!(p.number, 1);
    assert_eq!(env.fake.prs().len(), 1);
    assert_eq!(count(&env, "POST", "/repos/acme/images/pulls"), 2);
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn rate_limit_reset_header_is_waited_out() {
    let env = env().await;
    let gh = client(&env, TOKEN);
    let reset = (std::time::SystemTime::now() + Duration::from_secs(2))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    env.fake.fail_next(
        "GET",
        "/repos/acme/images/pulls",
        403,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset),
        ],
    );
    assert_eq!(gh.find_open("rebake/nginx").await.unwrap(), None);
    assert_eq!(count(&env, "GET", "/repos/acme/images/pulls"), 2);
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn server_errors_are_retried() {
    let env = env().await;
    let gh = client(&env, TOKEN);
    env.fake
        .fail_times("POST", "/repos/acme/images/pulls", 500, &[], 2);
    let p = gh.create(&nginx()).await.unwrap();
    assert_eq!(p.number, 1);
    assert_eq!(env.fake.prs().len(), 1);
    assert_eq!(count(&env, "POST", "/repos/acme/images/pulls"), 3);
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn server_error_forever_gives_up_with_attempts() {
    let env = env().await;
    let gh = client(&env, TOKEN);
    env.fake
        .fail_times("GET", "/repos/acme/images/pulls", 502, &[], usize::MAX);
    let err = gh.find_open("rebake/nginx").await.unwrap_err();
    match &err {
        ForgeError::Server {
            forge,
            status,
            attempts,
            ..
        } => {
            assert_eq!(forge, "GitHub");
            assert_eq!(*status, 502);
            assert_eq!(*attempts, 4);
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert_eq!(count(&env, "GET", "/repos/acme/images/pulls"), 4);
    assert!(err.to_string().contains("after 4 attempts"), "{err}");
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn rejected_token_names_forge_and_permission_never_the_token() {
    let env = env().await;
    let wrong = "ghp_WRONGtoken_do_not_print_987";
    let gh = client(&env, wrong);
    let err = gh.create(&nginx()).await.unwrap_err();
    assert!(
        matches!(err, ForgeError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("GitHub"), "{msg}");
    assert!(msg.contains("Pull requests: write"), "{msg}");
    assert!(msg.contains("`repo` scope"), "{msg}");
    assert!(!msg.contains(wrong), "{msg}");
    assert!(!format!("{err:?}").contains(wrong));
    assert!(!format!("{gh:?}").contains(wrong));
    // Not retried, nothing created.
    assert_eq!(env.fake.requests().len(), 1);
    assert!(env.fake.prs().is_empty());
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn merged_pull_request_has_its_merge_commit() {
    let env = env().await;
    let gh = client(&env, TOKEN);
    let p = gh.create(&nginx()).await.unwrap();
    let sha = env.fake.merge(p.number);
    // A real merge commit on main in the bare repository.
    assert_eq!(env.fake.branch_sha("main").as_deref(), Some(sha.as_str()));
    let got = gh.get(p.number).await.unwrap();
    assert_eq!(got.state, ProposalState::Merged);
    assert_eq!(got.merge_commit.as_deref(), Some(sha.as_str()));
    assert_eq!(got.head_sha, env.shas["rebake/nginx"]);
    assert_eq!(gh.find_open("rebake/nginx").await.unwrap(), None);
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn create_never_duplicates_an_open_pull_request() {
    let env = env().await;
    let gh = client(&env, TOKEN);
    let first = gh.create(&nginx()).await.unwrap();
    // A rerun that skipped find_open (e.g. the first answer was lost) gets the same PR back.
    let again = gh.create(&nginx()).await.unwrap();
    assert_eq!(again.number, first.number);
    assert_eq!(env.fake.prs().len(), 1);
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn missing_pull_request_is_not_found() {
    let env = env().await;
    let gh = client(&env, TOKEN);
    let err = gh.get(99).await.unwrap_err();
    assert!(matches!(err, ForgeError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("#99"), "{err}");
    assert!(err.to_string().contains("acme/images"), "{err}");
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn github_enterprise_base_path() {
    let env = env().await;
    let gh = GitHub::new(
        &format!("{}/api/v3/", env.fake.url()),
        OWNER,
        REPO,
        GitHubAuth::Token(TOKEN.into()),
        retry(),
    )
    .unwrap();
    let p = gh.create(&nginx()).await.unwrap();
    assert_eq!(gh.find_open("rebake/nginx").await.unwrap(), Some(p));
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn github_app_installation_token() {
    let openssl = crate::support::require_tool("openssl", "openssl");
    let env = env().await;
    let out = std::process::Command::new(openssl)
        .args(["genrsa", "2048"])
        .output()
        .expect("run openssl genrsa");
    assert!(out.status.success(), "openssl genrsa failed");
    let pem = String::from_utf8(out.stdout).unwrap();
    env.fake.enable_app(4242, 77);

    let app = |app_id| {
        GitHub::new(
            &env.fake.url(),
            OWNER,
            REPO,
            GitHubAuth::App {
                app_id,
                private_key_pem: pem.clone(),
                installation_id: 77,
            },
            retry(),
        )
        .unwrap()
    };
    let gh = app(4242);
    let p = gh.create(&nginx()).await.unwrap();
    assert_eq!(env.fake.prs().len(), 1);
    assert_eq!(gh.get(p.number).await.unwrap().number, p.number);
    // One installation token, then reused.
    assert_eq!(
        count(&env, "POST", "/app/installations/77/access_tokens"),
        1
    );

    let err = app(1).find_open("rebake/nginx").await.unwrap_err();
    assert!(matches!(err, ForgeError::Unauthorized { .. }), "{err:?}");
    assert!(!err.to_string().contains("BEGIN"), "{err}");
    env.fake.assert_no_violations();
}

#[test]
fn contract_checker_catches_bad_bodies_and_handles_nullable() {
    let gh = OpenApi::github();
    let pulls = "/repos/{owner}/{repo}/pulls";
    gh.validate_request(
        "POST",
        pulls,
        &json!({"title": "t", "head": "h", "base": "main"}),
    )
    .unwrap();
    assert!(gh
        .validate_request(
            "POST",
            pulls,
            &json!({"title": 5, "head": "h", "base": "main"})
        )
        .is_err());
    assert!(gh
        .validate_request(
            "POST",
            "/repos/{owner}/{repo}/statuses/{sha}",
            &json!({"state": "ok"})
        )
        .is_err());
    // nullable: true accepts null, and still checks the type otherwise.
    let status = "/repos/{owner}/{repo}/statuses/{sha}";
    gh.validate_request(
        "POST",
        status,
        &json!({"state": "success", "description": null}),
    )
    .unwrap();
    assert!(gh
        .validate_request(
            "POST",
            status,
            &json!({"state": "success", "description": 3})
        )
        .is_err());
    // A skeleton is a valid pull request (nullable $refs such as milestone are null).
    let pr = gh.skeleton(&gh.named_schema("pull-request"));
    gh.validate_response("GET", "/repos/{owner}/{repo}/pulls/{pull_number}", 200, &pr)
        .unwrap();
    assert!(gh
        .validate_response(
            "GET",
            "/repos/{owner}/{repo}/pulls/{pull_number}",
            200,
            &json!({})
        )
        .is_err());
    let op = gh
        .find_operation("GET", "/repos/a/b/commits/abc/status")
        .unwrap();
    assert_eq!(op.template, "/repos/{owner}/{repo}/commits/{ref}/status");
    assert_eq!(op.params["ref"], "abc");

    // The same checker reads Gitea's Swagger 2 (body parameters, #/definitions refs).
    let gitea = OpenApi::gitea();
    let op = gitea
        .find_operation("POST", "/api/v1/repos/a/b/pulls")
        .unwrap();
    assert_eq!(op.template, "/repos/{owner}/{repo}/pulls");
    gitea
        .validate_request(
            "POST",
            &op.template,
            &json!({"title": "t", "head": "h", "base": "main"}),
        )
        .unwrap();
    assert!(gitea
        .validate_request("POST", &op.template, &json!({"title": ["t"]}))
        .is_err());
    let pr = gitea.skeleton(&gitea.named_schema("PullRequest"));
    gitea
        .validate_response("GET", "/repos/{owner}/{repo}/pulls/{index}", 200, &pr)
        .unwrap();
}

#[tokio::test]
async fn fake_records_requests_that_break_the_schema() {
    let env = env().await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/repos/acme/images/pulls", env.fake.url()))
        .header("authorization", format!("token {TOKEN}"))
        .header("content-type", "application/json")
        .body(json!({"title": 42, "head": "rebake/nginx", "base": "main"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let violations = env.fake.take_violations();
    assert_eq!(violations.len(), 1, "{violations:#?}");
    assert!(violations[0].contains("/title"), "{violations:#?}");

    // No token: GitHub's 401 body, and nothing recorded against the schema.
    let resp = http
        .get(format!("{}/repos/acme/images/pulls", env.fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["message"], "Requires authentication");
    env.fake.assert_no_violations();
}

/// A GitHub API that stops in the middle of an answer: the read timeout ends each attempt
/// (octocrab sets none of its own).
#[tokio::test]
async fn stalled_api_is_given_up_after_the_read_timeout() {
    use crate::support::{Fault, TestServer};
    let empty = tempfile::tempdir().unwrap();
    let api = TestServer::start(empty.path());
    api.fault("/repos/", Fault::StallAfter(10));
    let gh = GitHub::new(
        &api.url(),
        OWNER,
        REPO,
        GitHubAuth::Token(TOKEN.into()),
        RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            read_timeout: Duration::from_secs(1),
            ..RetryPolicy::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), gh.get(7))
        .await
        .expect("the stalled request ends within 20 s")
        .unwrap_err();
    eprintln!("given up after {:?}: {err}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(api.count("/repos/acme/images/pulls/7"), 2, "two attempts");
}

/// Automerge's calls: reviews (the latest verdict per reviewer counts; a comment does not lift
/// a request for changes), every status on the head, and the merge at the checked head —
/// refused while branch protection's required check is missing or when the head moved.
#[tokio::test]
async fn automerge_reads_reviews_and_statuses_and_merges_at_the_checked_head() {
    use rebake::forge::{MergeOutcome, MergeRequest};
    let env = env().await;
    let gh = client(&env, TOKEN);
    let p = gh.create(&nginx()).await.unwrap();
    let sha = p.head_sha.clone();

    assert!(gh.changes_requested(1).await.unwrap().is_empty());
    env.fake.add_review(1, "alice", "CHANGES_REQUESTED");
    env.fake.add_review(1, "alice", "COMMENTED");
    env.fake.add_review(1, "bob", "APPROVED");
    assert_eq!(gh.changes_requested(1).await.unwrap(), ["alice"]);
    env.fake.add_review(1, "alice", "APPROVED");
    assert!(gh.changes_requested(1).await.unwrap().is_empty());

    gh.set_status(&sha, StatusState::Success, "rebake/test", "passed")
        .await
        .unwrap();
    env.fake.set_status(&sha, "ci/build", "pending");
    let mut statuses = gh.statuses(&sha).await.unwrap();
    statuses.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        statuses,
        [
            ("ci/build".to_string(), StatusState::Pending),
            ("rebake/test".to_string(), StatusState::Success)
        ]
    );

    let request = MergeRequest {
        title: "nginx: security update".into(),
        when_checks_succeed: false,
        committer: rebake::git::Identity::new("rebake", "rebake@example.invalid"),
    };
    env.fake.require_status_checks(&["ci/build"]);
    match gh.merge(&p, &request).await.unwrap() {
        MergeOutcome::NotMerged(why) => {
            assert!(why.contains("Required status check \"ci/build\""), "{why}")
        }
        other => panic!("merged before the required check passed: {other:?}"),
    }
    let moved = rebake::forge::Proposal {
        head_sha: env.shas["main"].clone(),
        ..p.clone()
    };
    env.fake.set_status(&sha, "ci/build", "success");
    match gh.merge(&moved, &request).await.unwrap() {
        MergeOutcome::NotMerged(why) => assert!(why.contains("Head branch was modified"), "{why}"),
        other => panic!("merged another head than the one checked: {other:?}"),
    }
    let MergeOutcome::Merged { commit } = gh.merge(&p, &request).await.unwrap() else {
        panic!("not merged")
    };
    let pr = env.fake.pr(1);
    assert!(pr.merged);
    assert_eq!(commit, pr.merge_commit_sha);
    let put = env
        .fake
        .requests()
        .into_iter()
        .rfind(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(put.body.unwrap()["sha"], json!(sha));
    env.fake.assert_no_violations();
}
