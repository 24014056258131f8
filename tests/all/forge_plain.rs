//! The plain-git forge against real bare repositories: a proposal is the branch
//! `rebake/<image>` whose head commit message is its title and body; "merged" means the default
//! branch contains that commit. Humans (merging, pushing, deleting) use the `git` CLI.

use std::path::PathBuf;

use rebake::forge::plain::PlainGit;
use rebake::forge::{Forge, ForgeError, NewProposal, ProposalState, StatusState};
use rebake::git::{Auth, PushOutcome, Workspace};
use tempfile::TempDir;

use crate::support::gitops::git;

const BRANCH: &str = "rebake/nginx";
const TITLE: &str = "nginx: security update (openssl 3.5.1-1 → 3.5.4-1, 2 CVEs)";
const BODY: &str =
    "## Updates\n\n| package | old | new | suite | security |\n|---|---|---|---|---|\n\
                    | openssl | 3.5.1-1 | 3.5.4-1 | trixie-security | yes |\n\n\
                    # Reproduce\n\n    rebake build nginx\n";

/// A bare origin (default branch `main`, one commit), rebake's workspace cloned from it, a
/// state directory, and a human's clone.
struct Env {
    tmp: TempDir,
    bare: PathBuf,
    human: PathBuf,
    forge: PlainGit,
}

impl Env {
    fn new() -> Env {
        let tmp = TempDir::new().unwrap();
        let bare = tmp.path().join("origin.git");
        let repo = git2::Repository::init_bare(&bare).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        drop(repo);

        let human = tmp.path().join("human");
        git(
            tmp.path(),
            &["clone", "-q", bare.to_str().unwrap(), "human"],
        );
        git(&human, &["checkout", "-q", "-b", "main"]);
        std::fs::create_dir_all(human.join("images/nginx")).unwrap();
        std::fs::write(
            human.join("images/nginx/Dockerfile"),
            "FROM debian:trixie\n",
        )
        .unwrap();
        git(&human, &["add", "."]);
        git(&human, &["commit", "-q", "-m", "initial"]);
        git(&human, &["push", "-q", "origin", "main"]);

        let workspace = tmp.path().join("state/workspace");
        let url = bare.to_str().unwrap().to_owned();
        Workspace::open_or_clone(&url, &workspace, &Auth::None).expect("clone origin");
        let forge = PlainGit::new(&workspace, &url, Auth::None, &tmp.path().join("state"));
        Env {
            tmp,
            bare,
            human,
            forge,
        }
    }

    fn url(&self) -> String {
        self.bare.to_str().unwrap().to_owned()
    }

    /// What origin's branch points at.
    fn origin_head(&self, branch: &str) -> Option<String> {
        let repo = git2::Repository::open_bare(&self.bare).unwrap();
        let head = repo
            .find_reference(&format!("refs/heads/{branch}"))
            .ok()
            .map(|r| r.target().unwrap().to_string());
        head
    }

    /// Pushes `branch` with one commit on top of origin's main whose message is `message`
    /// (kept verbatim, `#` lines included), as rebake's propose stage would; returns the commit.
    fn push_proposal(&self, branch: &str, message: &str, content: &str) -> String {
        let h = &self.human;
        git(h, &["fetch", "-q", "origin"]);
        git(h, &["checkout", "-q", "-B", branch, "origin/main"]);
        std::fs::write(h.join("images/nginx/Dockerfile"), content).unwrap();
        let msg = self.tmp.path().join("message.txt");
        std::fs::write(&msg, message).unwrap();
        git(
            h,
            &[
                "commit",
                "-q",
                "-a",
                "--cleanup=verbatim",
                "-F",
                msg.to_str().unwrap(),
            ],
        );
        git(h, &["push", "-q", "-f", "origin", branch]);
        git(h, &["rev-parse", "HEAD"])
    }

    /// A human merges `branch` into main (`--no-ff`) and pushes; returns the merge commit.
    fn merge(&self, branch: &str, ff: bool) -> String {
        let h = &self.human;
        git(h, &["fetch", "-q", "origin"]);
        git(h, &["checkout", "-q", "-B", "main", "origin/main"]);
        let remote = format!("origin/{branch}");
        let mode = if ff { "--ff-only" } else { "--no-ff" };
        git(
            h,
            &["merge", "-q", mode, "-m", "Merge rebake/nginx", &remote],
        );
        git(h, &["push", "-q", "origin", "main"]);
        git(h, &["rev-parse", "HEAD"])
    }

    /// A human pushes one more commit to `branch`; returns it.
    fn human_commit(&self, branch: &str) -> String {
        let h = &self.human;
        git(h, &["fetch", "-q", "origin"]);
        git(
            h,
            &["checkout", "-q", "-B", branch, &format!("origin/{branch}")],
        );
        std::fs::write(h.join("NOTES"), "a human was here\n").unwrap();
        git(h, &["add", "NOTES"]);
        git(h, &["commit", "-q", "-m", "human change"]);
        git(h, &["push", "-q", "origin", branch]);
        git(h, &["rev-parse", "HEAD"])
    }

    fn log_lines(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.forge.log_path()).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

fn message() -> String {
    PlainGit::message(TITLE, BODY)
}

fn new_proposal() -> NewProposal {
    NewProposal {
        title: TITLE.into(),
        body: BODY.into(),
        head_branch: BRANCH.into(),
        base_branch: "main".into(),
        labels: vec!["security".into(), "rebake".into()],
        reviewers: vec!["alice".into()],
        assignees: vec!["bob".into()],
    }
}

#[test]
fn message_round_trip() {
    assert_eq!(
        PlainGit::split_message(&message()),
        (TITLE.into(), BODY.into())
    );
    assert_eq!(PlainGit::message("t", ""), "t");
    assert_eq!(PlainGit::split_message("t\n"), ("t".into(), "".into()));
    assert_eq!(PlainGit::split_message("t"), ("t".into(), "".into()));
    assert_eq!(
        PlainGit::split_message("t\r\n\r\nbody\n"),
        ("t".into(), "body\n".into())
    );
}

#[tokio::test]
async fn open_create_update_status_then_merged() {
    let env = Env::new();
    assert_eq!(env.forge.name(), "git");
    assert_eq!(env.forge.find_open(BRANCH).await.unwrap(), None);
    assert_eq!(env.forge.get_branch(BRANCH).await.unwrap(), None);

    let head = env.push_proposal(BRANCH, &message(), "FROM debian:trixie\n# rebuilt\n");
    let open = env.forge.find_open(BRANCH).await.unwrap().expect("open");
    assert_eq!(open.number, 0);
    assert_eq!(open.url, format!("{}#{BRANCH}", env.url()));
    assert_eq!(open.title, TITLE);
    assert_eq!(open.body, BODY);
    assert_eq!(open.head_branch, BRANCH);
    assert_eq!(open.head_sha, head);
    assert_eq!(open.base_branch, "main");
    assert_eq!(open.state, ProposalState::Open);
    assert_eq!(open.merge_commit, None);
    assert!(open.labels.is_empty());

    // create: the branch is already there with the right message.
    let created = env.forge.create(&new_proposal()).await.unwrap();
    assert_eq!(created, open);
    let log = env.log_lines();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["kind"], "create");
    assert_eq!(log[0]["branch"], BRANCH);
    assert_eq!(log[0]["head_sha"], head.as_str());
    assert_eq!(log[0]["labels"], serde_json::json!(["security", "rebake"]));
    assert_eq!(log[0]["reviewers"], serde_json::json!(["alice"]));
    assert_eq!(log[0]["assignees"], serde_json::json!(["bob"]));

    // update: the message lives in the commit.
    env.forge.update_branch(BRANCH, TITLE, BODY).await.unwrap();
    env.forge.update(0, TITLE, BODY.trim_end()).await.unwrap();
    let err = env
        .forge
        .update_branch(BRANCH, "nginx: security update (3 CVEs)", BODY)
        .await
        .unwrap_err();
    assert!(matches!(err, ForgeError::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("new head commit"), "{err}");
    let err = env
        .forge
        .update(0, TITLE, "another body")
        .await
        .unwrap_err();
    assert!(matches!(err, ForgeError::Conflict { .. }), "{err:?}");
    let err = env.forge.update(7, TITLE, BODY).await.unwrap_err();
    assert!(matches!(err, ForgeError::NotFound { .. }), "{err:?}");

    // statuses
    assert_eq!(env.forge.status(&head, "rebake/test").await.unwrap(), None);
    env.forge
        .set_status(&head, StatusState::Pending, "rebake/test", "running")
        .await
        .unwrap();
    env.forge
        .set_status(&head, StatusState::Success, "rebake/test", "3 tests passed")
        .await
        .unwrap();
    env.forge
        .set_status(&head, StatusState::Failure, "other", "no")
        .await
        .unwrap();
    assert_eq!(
        env.forge.status(&head, "rebake/test").await.unwrap(),
        Some(StatusState::Success)
    );
    assert_eq!(
        env.forge.status(&head, "other").await.unwrap(),
        Some(StatusState::Failure)
    );
    assert_eq!(env.forge.status(&head, "nope").await.unwrap(), None);
    let stored = std::fs::read_to_string(env.forge.statuses_path()).unwrap();
    assert!(stored.contains("3 tests passed"), "{stored}");
    let err = env
        .forge
        .set_status("not-a-sha", StatusState::Success, "rebake/test", "")
        .await
        .unwrap_err();
    assert!(matches!(err, ForgeError::Invalid { .. }), "{err:?}");

    // comments go to the log
    env.forge
        .comment_on_branch(BRANCH, "Superseded by newer updates.")
        .await
        .unwrap();
    env.forge.comment(0, "by number").await.unwrap();
    let log = env.log_lines();
    assert_eq!(log.len(), 3);
    assert_eq!(log[1]["kind"], "comment");
    assert_eq!(log[1]["branch"], BRANCH);
    assert_eq!(log[1]["body"], "Superseded by newer updates.");
    assert!(log[1]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(log[2]["branch"], "unknown");

    // a human merges it
    let merge = env.merge(BRANCH, false);
    assert_ne!(merge, head);
    assert_eq!(env.forge.find_open(BRANCH).await.unwrap(), None);
    let merged = env.forge.get_branch(BRANCH).await.unwrap().expect("merged");
    assert_eq!(merged.state, ProposalState::Merged);
    assert_eq!(merged.merge_commit.as_deref(), Some(merge.as_str()));
    assert_eq!(merged.head_sha, head);
    assert_eq!(merged.title, TITLE);

    // later commits on main do not change which commit merged it
    let h = &env.human;
    std::fs::write(h.join("README"), "later\n").unwrap();
    git(h, &["add", "README"]);
    git(h, &["commit", "-q", "-m", "later"]);
    git(h, &["push", "-q", "origin", "main"]);
    // ... nor does deleting the merged branch
    git(h, &["push", "-q", "origin", &format!(":{BRANCH}")]);
    let merged = env.forge.get_branch(BRANCH).await.unwrap().expect("merged");
    assert_eq!(merged.state, ProposalState::Merged);
    assert_eq!(merged.merge_commit.as_deref(), Some(merge.as_str()));
    assert_eq!(env.forge.find_open(BRANCH).await.unwrap(), None);
}

#[tokio::test]
async fn fast_forward_merge_is_its_own_merge_commit() {
    let env = Env::new();
    let head = env.push_proposal(BRANCH, &message(), "FROM debian:trixie\n# ff\n");
    assert!(env.forge.find_open(BRANCH).await.unwrap().is_some());
    assert_eq!(env.merge(BRANCH, true), head);
    assert_eq!(env.forge.find_open(BRANCH).await.unwrap(), None);
    let merged = env.forge.get_branch(BRANCH).await.unwrap().unwrap();
    assert_eq!(merged.state, ProposalState::Merged);
    assert_eq!(merged.merge_commit.as_deref(), Some(head.as_str()));
}

#[tokio::test]
async fn close_branch_deletes_with_the_lease() {
    let env = Env::new();
    let head = env.push_proposal(BRANCH, &message(), "FROM debian:trixie\n# 1\n");
    let open = env.forge.find_open(BRANCH).await.unwrap().unwrap();
    assert_eq!(
        env.forge
            .close_branch(BRANCH, &open.head_sha)
            .await
            .unwrap(),
        PushOutcome::Pushed
    );
    assert_eq!(env.origin_head(BRANCH), None);
    assert_eq!(env.forge.find_open(BRANCH).await.unwrap(), None);
    let closed = env.forge.get_branch(BRANCH).await.unwrap().unwrap();
    assert_eq!(closed.state, ProposalState::Closed);
    assert_eq!(closed.head_sha, head);
    // Closing again: already gone counts as closed.
    assert_eq!(
        env.forge.close_branch(BRANCH, &head).await.unwrap(),
        PushOutcome::Pushed
    );

    // Proposed again; a human pushes to the branch before rebake closes it.
    let second = env.push_proposal(BRANCH, &message(), "FROM debian:trixie\n# 2\n");
    let open = env.forge.find_open(BRANCH).await.unwrap().unwrap();
    assert_eq!(open.head_sha, second);
    let human = env.human_commit(BRANCH);
    let outcome = env.forge.close_branch(BRANCH, &second).await.unwrap();
    assert_eq!(
        outcome,
        PushOutcome::LeaseBroken {
            remote: Some(git2::Oid::from_str(&human).unwrap())
        }
    );
    assert_eq!(env.origin_head(BRANCH).as_deref(), Some(human.as_str()));
    // The human's head now heads the proposal (its message is the human's).
    let open = env.forge.find_open(BRANCH).await.unwrap().unwrap();
    assert_eq!(open.head_sha, human);
    assert_eq!(open.title, "human change");

    let kinds: Vec<String> = env
        .log_lines()
        .iter()
        .map(|l| l["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["close", "close", "close-refused"]);
    assert_eq!(env.log_lines()[2]["remote_head"], human.as_str());
}

#[tokio::test]
async fn create_checks_the_pushed_branch() {
    let env = Env::new();
    // Not pushed yet.
    let err = env.forge.create(&new_proposal()).await.unwrap_err();
    assert!(matches!(err, ForgeError::NotFound { .. }), "{err:?}");
    // Pushed with another message.
    env.push_proposal(BRANCH, "something else\n\nbody", "FROM x\n");
    let err = env.forge.create(&new_proposal()).await.unwrap_err();
    assert!(matches!(err, ForgeError::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("something else"), "{err}");
    assert!(env.log_lines().is_empty());

    // Number-based calls that plain git cannot honour.
    let err = env.forge.close(0).await.unwrap_err();
    assert!(matches!(err, ForgeError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("close_branch"), "{err}");
    let err = env.forge.get(0).await.unwrap_err();
    assert!(matches!(err, ForgeError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("get_branch"), "{err}");
}

#[tokio::test]
async fn update_without_a_known_branch_is_invalid() {
    let env = Env::new();
    let err = env.forge.update(0, TITLE, BODY).await.unwrap_err();
    assert!(matches!(err, ForgeError::Invalid { .. }), "{err:?}");
}

#[tokio::test]
async fn git_errors_are_network_errors_without_secrets() {
    let env = Env::new();
    let workspace = env.tmp.path().join("state/workspace");
    // Nothing listens on port 9 of localhost.
    let url = "https://rebake:s3cr3t-token@127.0.0.1:9/ops/images.git";
    let forge = PlainGit::new(
        &workspace,
        url,
        Auth::Token("tok-very-secret".into()),
        &env.tmp.path().join("state"),
    );
    let err = forge.find_open(BRANCH).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, ForgeError::Network { .. }), "{err:?}");
    assert!(!text.contains("s3cr3t-token"), "{text}");
    assert!(!text.contains("tok-very-secret"), "{text}");
    assert!(text.contains("127.0.0.1:9"), "{text}");
}
