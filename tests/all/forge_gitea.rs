//! The Gitea forge client against the stateful fake Gitea (real bare git repository, every
//! request and answer checked against Gitea's swagger): the same scenarios as for GitHub.

use crate::support::fake_forge::FakeForge;
use crate::support::fake_gitea::{init_bare_repo, FakeGitea};
use rebake::forge::gitea::Gitea;
use rebake::forge::http::RetryPolicy;
use rebake::forge::{Forge, ForgeError, NewProposal, ProposalState, StatusState};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const OWNER: &str = "ops";
const REPO: &str = "images";
const TOKEN: &str = "gta_0123456789abcdef-secret";

struct Env {
    _dir: tempfile::TempDir,
    git: PathBuf,
    heads: BTreeMap<String, String>,
    fake: FakeGitea,
    gitea: Gitea,
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_wait: Duration::from_secs(5),
        ..RetryPolicy::default()
    }
}

async fn setup(branches: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let git = dir.path().join("images.git");
    let heads = init_bare_repo(&git, "main", branches);
    let fake = FakeGitea::start(&git, OWNER, REPO, TOKEN).await;
    let gitea = Gitea::new(&fake.url(), OWNER, REPO, TOKEN.to_string(), fast_retries()).unwrap();
    Env {
        _dir: dir,
        git,
        heads,
        fake,
        gitea,
    }
}

fn proposal(branch: &str, labels: &[&str]) -> NewProposal {
    NewProposal {
        title: format!("{branch}: security update (openssl 3.5.1-1 → 3.5.4-1, 2 CVEs)"),
        body: "| package | old | new |\n|---|---|---|\n| openssl | 3.5.1-1 | 3.5.4-1 |\n".into(),
        head_branch: branch.to_string(),
        base_branch: "main".into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        reviewers: vec!["alice".into()],
        assignees: vec!["bob".into(), "carol".into()],
    }
}

#[tokio::test]
async fn opens_with_label_ids_reviewers_and_assignees() {
    let env = setup(&["rebake/nginx"]).await;
    let security = env.fake.add_label("security", "#ee0701");

    let p = env
        .gitea
        .create(&proposal("rebake/nginx", &["security", "rebake"]))
        .await
        .unwrap();

    assert_eq!(p.number, 1);
    assert_eq!(p.state, ProposalState::Open);
    assert_eq!(p.head_branch, "rebake/nginx");
    assert_eq!(p.base_branch, "main");
    assert_eq!(p.head_sha, env.heads["rebake/nginx"]);
    assert!(p.url.ends_with("/ops/images/pulls/1"), "{}", p.url);
    assert!(p.title.starts_with("rebake/nginx: security update"));
    let mut labels = p.labels.clone();
    labels.sort();
    assert_eq!(labels, ["rebake", "security"]);

    // The missing label was created once, with the default colour; labels went by id.
    let created: Vec<_> = env
        .fake
        .labels()
        .into_iter()
        .filter(|l| l.name == "rebake")
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].color, "ededed");
    let fake_pr = env.fake.pr(1);
    let mut ids = fake_pr.labels.clone();
    ids.sort();
    let mut want = vec![security, created[0].id];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(fake_pr.reviewers, ["alice"]);
    assert_eq!(fake_pr.assignees, ["bob", "carol"]);

    let posts: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        posts,
        ["/repos/ops/images/labels", "/repos/ops/images/pulls"]
    );
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn asks_for_reviewers_separately_on_servers_that_ignore_them_on_create() {
    let env = setup(&["rebake/nginx"]).await;
    env.fake.ignore_reviewers_on_create(true);
    let p = env
        .gitea
        .create(&proposal("rebake/nginx", &[]))
        .await
        .unwrap();
    assert_eq!(env.fake.pr(p.number).reviewers, ["alice"]);
    assert!(env
        .fake
        .requests()
        .iter()
        .any(|r| r.method == "POST" && r.path == "/repos/ops/images/pulls/1/requested_reviewers"));
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn find_open_pages_and_matches_the_head_branch() {
    let env = setup(&["rebake/a", "rebake/b", "rebake/c", "rebake/d"]).await;
    // Three per page at most: the oldest proposal is on the second page (newest first).
    env.fake.set_max_page_size(3);
    for b in ["rebake/a", "rebake/b", "rebake/c", "rebake/d"] {
        env.gitea.create(&proposal(b, &[])).await.unwrap();
    }
    let found = env
        .gitea
        .find_open("rebake/a")
        .await
        .unwrap()
        .expect("found");
    assert_eq!(found.number, 1);
    assert_eq!(found.head_sha, env.heads["rebake/a"]);
    assert!(env
        .fake
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.query.contains("page=2")));

    assert!(env.gitea.find_open("rebake/zzz").await.unwrap().is_none());
    env.gitea.close(4).await.unwrap();
    assert!(env.gitea.find_open("rebake/d").await.unwrap().is_none());
    assert_eq!(
        env.gitea
            .find_open("rebake/c")
            .await
            .unwrap()
            .map(|p| p.number),
        Some(3)
    );
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn update_rewrites_title_and_body() {
    let env = setup(&["rebake/nginx"]).await;
    let p = env
        .gitea
        .create(&proposal("rebake/nginx", &[]))
        .await
        .unwrap();
    env.gitea
        .update(p.number, "nginx: security update (3 CVEs)", "new body")
        .await
        .unwrap();
    let got = env.gitea.get(p.number).await.unwrap();
    assert_eq!(got.title, "nginx: security update (3 CVEs)");
    assert_eq!(got.body, "new body");
    assert_eq!(got.state, ProposalState::Open);
    assert_eq!(
        env.fake.pr(p.number).title,
        "nginx: security update (3 CVEs)"
    );
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn commit_status_round_trip() {
    let env = setup(&["rebake/nginx"]).await;
    let sha = env.heads["rebake/nginx"].clone();
    assert_eq!(env.gitea.status(&sha, "rebake/test").await.unwrap(), None);

    env.gitea
        .set_status(&sha, StatusState::Pending, "rebake/test", "testing")
        .await
        .unwrap();
    env.gitea
        .set_status(&sha, StatusState::Failure, "other/ci", "nope")
        .await
        .unwrap();
    env.gitea
        .set_status(&sha, StatusState::Success, "rebake/test", "3 tests passed")
        .await
        .unwrap();

    assert_eq!(
        env.gitea.status(&sha, "rebake/test").await.unwrap(),
        Some(StatusState::Success)
    );
    assert_eq!(
        env.gitea.status(&sha, "other/ci").await.unwrap(),
        Some(StatusState::Failure)
    );
    assert_eq!(env.gitea.status(&sha, "missing").await.unwrap(), None);
    let stored = env.fake.statuses(&sha);
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[2].state, "success");
    assert_eq!(stored[2].description, "3 tests passed");

    // A commit the repository does not have.
    let err = env
        .gitea
        .set_status(&"0".repeat(40), StatusState::Success, "rebake/test", "x")
        .await
        .unwrap_err();
    assert!(matches!(err, ForgeError::NotFound { .. }), "{err}");
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn comment_then_close() {
    let env = setup(&["rebake/nginx"]).await;
    let p = env
        .gitea
        .create(&proposal("rebake/nginx", &[]))
        .await
        .unwrap();
    env.gitea
        .comment(p.number, "nginx is current again; closing.")
        .await
        .unwrap();
    env.gitea.close(p.number).await.unwrap();

    assert_eq!(
        env.fake.comments(p.number),
        ["nginx is current again; closing."]
    );
    assert_eq!(env.fake.pr(p.number).state, "closed");
    let got = env.gitea.get(p.number).await.unwrap();
    assert_eq!(got.state, ProposalState::Closed);
    assert_eq!(got.merge_commit, None);
    assert!(env.gitea.find_open("rebake/nginx").await.unwrap().is_none());
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn waits_out_429_then_succeeds() {
    let env = setup(&["rebake/nginx"]).await;
    env.gitea
        .create(&proposal("rebake/nginx", &[]))
        .await
        .unwrap();
    env.fake.fail_next(
        "GET",
        "/repos/ops/images/pulls",
        429,
        &[("Retry-After", "1")],
    );
    let before = env.fake.requests().len();
    let t = Instant::now();
    let found = env.gitea.find_open("rebake/nginx").await.unwrap();
    assert_eq!(found.map(|p| p.number), Some(1));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "did not wait for Retry-After"
    );
    assert_eq!(env.fake.requests().len() - before, 2);
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn retries_500_twice_then_succeeds() {
    let env = setup(&["rebake/nginx"]).await;
    let p = env
        .gitea
        .create(&proposal("rebake/nginx", &[]))
        .await
        .unwrap();
    let path = format!("/repos/ops/images/issues/{}/comments", p.number);
    env.fake.fail_times("POST", &path, 500, &[], 2);
    env.gitea.comment(p.number, "hello").await.unwrap();
    assert_eq!(env.fake.comments(p.number), ["hello"]);
    let posts = env
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .count();
    assert_eq!(posts, 3);

    // A server that keeps failing: an error after every attempt, naming the status.
    env.fake
        .fail_times("GET", "/repos/ops/images/pulls/", 503, &[], usize::MAX);
    match env.gitea.get(p.number).await.unwrap_err() {
        ForgeError::Server {
            status, attempts, ..
        } => assert_eq!((status, attempts), (503, 4)),
        e => panic!("expected a server error, got {e}"),
    }
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn create_retried_after_a_server_error_opens_one_pull_request() {
    let env = setup(&["rebake/nginx"]).await;
    env.fake
        .fail_next("POST", "/repos/ops/images/pulls", 502, &[]);
    let p = env
        .gitea
        .create(&proposal("rebake/nginx", &[]))
        .await
        .unwrap();
    assert_eq!(p.number, 1);
    assert_eq!(env.fake.prs().len(), 1);
    // The retry looked for an open one before posting again.
    let log: Vec<String> = env
        .fake
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        log,
        [
            "POST /repos/ops/images/pulls",
            "GET /repos/ops/images/pulls",
            "POST /repos/ops/images/pulls"
        ]
    );
    // Gitea opened it but the answer was lost (5xx from a proxy): the retry finds it.
    env.gitea.close(1).await.unwrap();
    env.fake
        .fail_next_after_processing("POST", "/repos/ops/images/pulls", 504);
    let again = env
        .gitea
        .create(&proposal("rebake/nginx", &[]))
        .await
        .unwrap();
    assert_eq!(again.number, 2);
    assert_eq!(env.fake.prs().len(), 2);
    // And creating again while one is open does not duplicate it: Gitea says 409.
    let err = env
        .gitea
        .create(&proposal("rebake/nginx", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, ForgeError::Conflict { .. }), "{err}");
    assert_eq!(env.fake.prs().len(), 2);
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn rejected_token_names_gitea_and_scopes_never_the_token() {
    let env = setup(&["rebake/nginx"]).await;
    let wrong = "gta_wrong-token-0000";
    let gitea = Gitea::new(
        &env.fake.url(),
        OWNER,
        REPO,
        wrong.to_string(),
        fast_retries(),
    )
    .unwrap();
    let err = gitea.find_open("rebake/nginx").await.unwrap_err();
    assert!(
        matches!(err, ForgeError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("Gitea"), "{msg}");
    assert!(
        msg.contains("write:repository") && msg.contains("write:issue"),
        "{msg}"
    );
    assert!(
        !msg.contains(wrong) && !format!("{err:?}").contains(wrong),
        "{msg}"
    );
    assert!(!format!("{gitea:?}").contains(wrong));
    // Not retried: a rejected token does not get better.
    assert_eq!(env.fake.requests().len(), 1);
    assert_eq!(env.fake.prs().len(), 0);
    env.fake.assert_no_violations();
}

#[tokio::test]
async fn merged_pull_request_reports_its_merge_commit() {
    let env = setup(&["rebake/nginx"]).await;
    let p = env
        .gitea
        .create(&proposal("rebake/nginx", &["security"]))
        .await
        .unwrap();
    let merge = env.fake.merge(p.number);

    let got = env.gitea.get(p.number).await.unwrap();
    assert_eq!(got.state, ProposalState::Merged);
    assert_eq!(got.merge_commit.as_deref(), Some(merge.as_str()));
    assert!(env.gitea.find_open("rebake/nginx").await.unwrap().is_none());

    // A real merge commit on main: parents are the old main and the proposal's head.
    let repo = git2::Repository::open_bare(&env.git).unwrap();
    let main = repo
        .find_reference("refs/heads/main")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    assert_eq!(main.id().to_string(), merge);
    let parents: Vec<String> = main.parent_ids().map(|o| o.to_string()).collect();
    assert_eq!(
        parents,
        [env.heads["main"].clone(), env.heads["rebake/nginx"].clone()]
    );
    assert!(main
        .tree()
        .unwrap()
        .get_path(std::path::Path::new("images/nginx/Dockerfile"))
        .is_ok());
    env.fake.assert_no_violations();
}

/// The fake's contract checks are live: a client that strays from Gitea's swagger is caught.
#[tokio::test]
async fn the_fake_records_contract_violations() {
    let env = setup(&["rebake/nginx"]).await;
    let http = reqwest::Client::new();
    let api = format!("{}/api/v1/repos/ops/images", env.fake.url());
    // Label names instead of ids, a number for a string.
    let resp = http
        .post(format!("{api}/pulls"))
        .header("Authorization", format!("token {TOKEN}"))
        .header("Content-Type", "application/json")
        .body(
            serde_json::json!({ "head": 1, "base": "main", "title": "t", "labels": ["security"] })
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert!(!resp.status().is_success());
    // GitHub's paging parameter, and the deprecated token in the query string.
    http.get(format!("{api}/pulls?per_page=5&access_token={TOKEN}"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    // Outside /api/v1.
    http.get(format!("{}/repos/ops/images/pulls", env.fake.url()))
        .send()
        .await
        .unwrap();
    let v = env.fake.take_violations().join("\n");
    assert!(v.contains("/labels/0") || v.contains("labels"), "{v}");
    assert!(v.contains("/head"), "{v}");
    assert!(v.contains("per_page"), "{v}");
    assert!(v.contains("token in the query string"), "{v}");
    assert!(v.contains("/api/v1"), "{v}");
    assert!(env.fake.violations().is_empty());
}

#[tokio::test]
async fn status_of_an_unknown_commit_is_not_found() {
    let env = setup(&[]).await;
    let err = env
        .gitea
        .status(&"1".repeat(40), "rebake/test")
        .await
        .unwrap_err();
    assert!(matches!(err, ForgeError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("Gitea"), "{err}");
    env.fake.assert_no_violations();
}

/// Automerge's calls on Gitea: a dismissed request for changes no longer counts; a merge with
/// `merge_when_checks_succeed` while a check is pending is scheduled, and Gitea merges once the
/// check passes; a merge at a head that moved is refused.
#[tokio::test]
async fn automerge_reads_reviews_and_merges_when_checks_succeed() {
    use rebake::forge::{MergeOutcome, MergeRequest};
    let env = setup(&["rebake/nginx"]).await;
    let p = env
        .gitea
        .create(&proposal("rebake/nginx", &[]))
        .await
        .unwrap();
    let sha = p.head_sha.clone();

    env.fake.add_review(1, "alice", "REQUEST_CHANGES", false);
    env.fake.add_review(1, "bob", "COMMENT", false);
    assert_eq!(env.gitea.changes_requested(1).await.unwrap(), ["alice"]);
    env.fake.add_review(1, "alice", "REQUEST_CHANGES", true);
    assert!(env.gitea.changes_requested(1).await.unwrap().is_empty());

    env.gitea
        .set_status(&sha, StatusState::Success, "rebake/test", "passed")
        .await
        .unwrap();
    env.fake.set_status(&sha, "ci/build", "pending");
    let request = MergeRequest {
        title: "nginx: security update".into(),
        when_checks_succeed: true,
        committer: rebake::git::Identity::new("rebake", "rebake@example.invalid"),
    };
    let moved = rebake::forge::Proposal {
        head_sha: env.heads["main"].clone(),
        ..p.clone()
    };
    match env.gitea.merge(&moved, &request).await.unwrap() {
        MergeOutcome::NotMerged(why) => assert!(why.contains("head out of date"), "{why}"),
        other => panic!("merged another head than the one checked: {other:?}"),
    }
    assert_eq!(
        env.gitea.merge(&p, &request).await.unwrap(),
        MergeOutcome::Scheduled
    );
    assert!(!env.fake.pr(1).merged);
    assert_eq!(env.fake.scheduled_merges(), [1]);
    let merge = env
        .fake
        .requests()
        .into_iter()
        .rfind(|r| r.path.ends_with("/merge"))
        .unwrap();
    let body = merge.body.unwrap();
    assert_eq!(body["merge_when_checks_succeed"], true);
    assert_eq!(body["head_commit_id"], sha.as_str());

    env.fake.set_status(&sha, "ci/build", "success");
    let pr = env.fake.pr(1);
    assert!(pr.merged, "Gitea merges once the checks pass");
    assert_eq!(env.gitea.get(1).await.unwrap().state, ProposalState::Merged);
    env.fake.assert_no_violations();
}
