//! `rebake propose` end to end, as a user runs it in a clone of their GitOps repository: real
//! git remotes, the real Debian mirror and engine for the build, and the plain-git forge or the
//! stateful fakes of GitHub and Gitea (every request checked against the forge's schema).

use crate::support::engine::runtime;
use crate::support::fake_forge::FakeForge;
use crate::support::fake_gitea::{FakeGitea, FakePr};
use crate::support::fake_github::FakeGitHub;
use crate::support::gitops::{
    action, apply_by_hand, branch_head, git, gitops, pair_gitops, propose, shared_state, text,
    ticker_gitops, GitOps, TICKER_TEMPLATE,
};

#[test]
fn plain_git_proposal_lifecycle() {
    let ops = gitops();
    let (state, _guard) = shared_state();

    // First run: the image has no lock yet, so it is built and proposed on rebake/debian.
    let first = propose(&ops, state, &[]);
    assert_eq!(
        action(&first, "debian"),
        "opened",
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let head = branch_head(&ops.bare, "rebake/debian").expect("branch pushed");
    let message = git(&ops.bare, &["log", "-1", "--format=%B", &head]);
    assert!(message.starts_with("debian: first build ("), "{message}");
    for part in [
        "### Packages",
        "| base-files |",
        "### Tests",
        "| current | pass |",
        "### Reproduce locally",
    ] {
        assert!(message.contains(part), "{part} missing from:\n{message}");
    }
    let files = git(&ops.bare, &["ls-tree", "-r", "--name-only", &head]);
    assert!(
        files.contains("images/debian/Dockerfile") && files.contains("images/debian/rebake.lock")
    );

    // Nothing changed: the branch does not move and nothing is written.
    let statuses = std::fs::read(state.join("plain-git/statuses.json")).unwrap();
    let second = propose(&ops, state, &[]);
    assert_eq!(action(&second, "debian"), "unchanged");
    assert_eq!(
        branch_head(&ops.bare, "rebake/debian").as_deref(),
        Some(head.as_str())
    );
    assert_eq!(
        std::fs::read(state.join("plain-git/statuses.json")).unwrap(),
        statuses
    );

    // Newer inputs (here: the policy asks for one more package) update the open proposal:
    // a new commit on the branch, on top of the new main, with the body rewritten.
    let policy = ops.clone.join("policies/debian.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text.replace("  - ca-certificates\n", "  - ca-certificates\n  - less\n"),
    )
    .unwrap();
    git(&ops.clone, &["commit", "-q", "-am", "debian: add less"]);
    git(&ops.clone, &["push", "-q", "origin", "main"]);
    let updated = propose(&ops, state, &[]);
    assert_eq!(
        action(&updated, "debian"),
        "updated",
        "{}",
        String::from_utf8_lossy(&updated.stderr)
    );
    let new_head = branch_head(&ops.bare, "rebake/debian").unwrap();
    assert_ne!(new_head, head);
    let message = git(&ops.bare, &["log", "-1", "--format=%B", &new_head]);
    assert!(message.contains("| less |"), "{message}");
    let main = git(&ops.bare, &["rev-parse", "refs/heads/main"]);
    assert_eq!(
        git(&ops.bare, &["rev-parse", &format!("{new_head}^")]),
        main
    );

    // Someone applies the same image to main by hand: the proposal is no longer needed.
    apply_by_hand(&ops, "rebake/debian", "images");
    let third = propose(&ops, state, &[]);
    assert_eq!(action(&third, "debian"), "closed");
    assert_eq!(
        branch_head(&ops.bare, "rebake/debian"),
        None,
        "branch deleted"
    );
    let fourth = propose(&ops, state, &[]);
    assert_eq!(action(&fourth, "debian"), "current");
}

const GITHUB_TOKEN: &str = "ghp_testTOKEN0123456789";

/// The fake GitHub serving `ops`'s origin as acme/images, and a rebake.yaml that uses it with
/// the token in `REBAKE_TEST_GITHUB_TOKEN`.
fn github_for(ops: &GitOps) -> FakeGitHub {
    let fake = runtime().block_on(FakeGitHub::start(&ops.bare, "acme", "images", GITHUB_TOKEN));
    crate::support::gitops::use_forge(
        ops,
        "github",
        &fake.url(),
        "acme/images",
        "REBAKE_TEST_GITHUB_TOKEN",
    );
    fake
}

#[test]
fn github_proposal_survives_a_crash_and_never_duplicates() {
    let ops = gitops();
    let (state, _guard) = shared_state();
    let fake = github_for(&ops);
    let env = [("REBAKE_TEST_GITHUB_TOKEN", GITHUB_TOKEN)];

    // The branch is pushed, then opening the PR fails for good (a crash at that point).
    // (rebake makes 4 attempts with backoff; all 4 fail.)
    fake.fail_times("POST", "/repos/acme/images/pulls", 500, &[], 4);
    let crashed = propose(&ops, state, &env);
    assert_eq!(action(&crashed, "debian"), "failed");
    assert_eq!(crashed.status.code(), Some(1));
    assert!(branch_head(&ops.bare, "rebake/debian").is_some());
    assert!(fake.prs().is_empty());

    // The rerun converges to exactly one PR, with a passing status on its head.
    let rerun = propose(&ops, state, &env);
    assert_eq!(
        action(&rerun, "debian"),
        "opened",
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let prs = fake.prs();
    assert_eq!(prs.len(), 1);
    let pr = &prs[0];
    assert!(
        pr.title.starts_with("debian: first build ("),
        "{}",
        pr.title
    );
    let head = branch_head(&ops.bare, "rebake/debian").unwrap();
    let statuses = fake.statuses(&head);
    assert!(
        statuses
            .iter()
            .any(|s| s.context == "rebake/test" && s.state == "success"),
        "{statuses:?}"
    );

    // Nothing changed: no writes to the forge at all.
    let writes = fake.writes();
    let again = propose(&ops, state, &env);
    assert_eq!(action(&again, "debian"), "unchanged");
    assert_eq!(fake.writes(), writes);
    assert_eq!(fake.prs().len(), 1);

    // A rejected token is a clear error naming the forge and the permission, never the token.
    let denied = propose(
        &ops,
        state,
        &[("REBAKE_TEST_GITHUB_TOKEN", "ghp_WRONGtoken999")],
    );
    let err = String::from_utf8_lossy(&denied.stderr).to_string()
        + &String::from_utf8_lossy(&denied.stdout);
    assert_eq!(denied.status.code(), Some(1), "{err}");
    assert!(err.contains("GitHub rejected the token"), "{err}");
    assert!(err.contains("Pull requests: write"), "{err}");
    assert!(!err.contains("ghp_WRONGtoken999"), "{err}");

    // The same repository through a GitHub App installation instead of a token (rebake.yaml
    // `forge.app`): the App's installation token is minted and used; nothing else changes.
    let openssl = crate::support::require_tool("openssl", "openssl");
    let key = std::process::Command::new(openssl)
        .args(["genrsa", "2048"])
        .output()
        .expect("openssl genrsa");
    let key_file = ops.clone.join("app-key.pem");
    std::fs::write(&key_file, &key.stdout).unwrap();
    fake.enable_app(4242, 77);
    std::fs::write(
        ops.clone.join("rebake.yaml"),
        format!(
            "forge:\n  kind: github\n  url: {}\n  repository: acme/images\n  app:\n    id: 4242\n    installation_id: 77\n    private_key_file: app-key.pem\n",
            fake.url()
        ),
    )
    .unwrap();
    let writes = fake.writes();
    let as_app = propose(&ops, state, &[]);
    assert_eq!(
        action(&as_app, "debian"),
        "unchanged",
        "{}",
        String::from_utf8_lossy(&as_app.stderr)
    );
    assert_eq!(fake.writes(), writes);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.contains("/app/installations/77/access_tokens")),
        "the installation token was requested"
    );
    fake.assert_no_violations();
}

/// The Gitea twin of the two tests above, on the small `ticker` image: opened, unchanged,
/// updated through a rate limit and server errors, a rejected token, closed when the image is
/// current again, and a crash between the push and the PR creation repaired by the rerun.
#[test]
fn gitea_proposal_lifecycle_end_to_end() {
    let ops = ticker_gitops("rebake-test-gitea-ticker");
    let (state, _guard) = shared_state();
    const TOKEN: &str = "gitea_testTOKEN0123456789";
    let fake = runtime().block_on(FakeGitea::start(&ops.bare, "acme", "images", TOKEN));
    crate::support::gitops::use_forge(
        &ops,
        "gitea",
        &fake.url(),
        "acme/images",
        "REBAKE_TEST_GITEA_TOKEN",
    );
    let env = [("REBAKE_TEST_GITEA_TOKEN", TOKEN)];
    let run = || propose(&ops, state, &env);
    let main = || git(&ops.bare, &["rev-parse", "refs/heads/main"]);
    let passed_on = |sha: &str| {
        let statuses = fake.statuses(sha);
        assert!(
            statuses
                .iter()
                .any(|s| s.context == "rebake/test" && s.state == "success"),
            "no passing rebake/test status on {sha}: {statuses:?}"
        );
    };

    // 1. First run: built, pushed on rebake/ticker off main, one PR with the policy's labels
    //    and a passing status on its head.
    let first = run();
    assert_eq!(action(&first, "ticker"), "opened", "{}", text(&first));
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let head = branch_head(&ops.bare, "rebake/ticker").expect("branch pushed");
    assert_eq!(git(&ops.bare, &["rev-parse", &format!("{head}^")]), main());
    let pr = only_open_pr(&fake);
    assert_eq!(
        (pr.head.as_str(), pr.base.as_str()),
        ("rebake/ticker", "main")
    );
    assert!(
        pr.title.starts_with("ticker: first build ("),
        "{}",
        pr.title
    );
    for part in [
        "### Packages",
        "| has the Debian version | pass |",
        "### Reproduce locally",
    ] {
        assert!(pr.body.contains(part), "{part} missing from:\n{}", pr.body);
    }
    assert_proposal_is_head(&ops, &pr, &head);
    assert_eq!(fake.pr_label_names(pr.number), ["rebake"]);
    passed_on(&head);

    // 2. Nothing changed: no write to Gitea, the branch does not move.
    let writes = fake.writes();
    let second = run();
    assert_eq!(action(&second, "ticker"), "unchanged", "{}", text(&second));
    assert_eq!(fake.writes(), writes);
    assert_eq!(branch_head(&ops.bare, "rebake/ticker"), Some(head.clone()));

    // 3 + 4. main changes (the template gains a label): the open PR is updated (new commit on
    //    top of the new main, body rewritten, same number) although Gitea first answers the
    //    body's rewrite with a rate limit and the new head's status with two server errors.
    change_template(&ops, "updated");
    fake.fail_next(
        "PATCH",
        &format!("/repos/acme/images/pulls/{}", pr.number),
        429,
        &[("Retry-After", "1")],
    );
    fake.fail_times("POST", "/repos/acme/images/statuses/", 500, &[], 2);
    let updated = run();
    assert_eq!(action(&updated, "ticker"), "updated", "{}", text(&updated));
    assert_eq!(updated.status.code(), Some(0), "{}", text(&updated));
    let new_head = branch_head(&ops.bare, "rebake/ticker").unwrap();
    assert_ne!(new_head, head);
    assert_eq!(
        git(&ops.bare, &["rev-parse", &format!("{new_head}^")]),
        main()
    );
    let after = only_open_pr(&fake);
    assert_eq!(after.number, pr.number);
    assert_ne!(after.body, pr.body, "body rewritten");
    assert_proposal_is_head(&ops, &after, &new_head);
    assert_eq!(fake.pr_label_names(after.number), ["rebake"]);
    passed_on(&new_head);
    let tries = |method: &str, path: &str| {
        fake.requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    };
    assert_eq!(
        tries("PATCH", &format!("/repos/acme/images/pulls/{}", pr.number)),
        2,
        "the rate-limited rewrite was retried once"
    );
    assert_eq!(
        tries("POST", &format!("/repos/acme/images/statuses/{new_head}")),
        3,
        "the status was retried past two server errors"
    );

    // 6. A rejected token is a clear error naming Gitea and the scopes, never the token; nothing
    //    is written.
    let writes = fake.writes();
    let wrong = "gitea_WRONGtoken999";
    let denied = propose(&ops, state, &[("REBAKE_TEST_GITEA_TOKEN", wrong)]);
    let out = text(&denied);
    assert_eq!(denied.status.code(), Some(1), "{out}");
    assert_eq!(action(&denied, "ticker"), "failed", "{out}");
    assert!(out.contains("Gitea rejected the token"), "{out}");
    assert!(
        out.contains("write:repository") && out.contains("write:issue"),
        "{out}"
    );
    assert!(!out.contains(wrong) && !out.contains(TOKEN), "{out}");
    assert_eq!(fake.writes(), writes);

    // 7. Someone applies the proposed image to main by hand: the PR is closed with a comment
    //    saying why, and its branch deleted.
    apply_by_hand(&ops, "rebake/ticker", "images");
    let closed = run();
    assert_eq!(action(&closed, "ticker"), "closed", "{}", text(&closed));
    let pr1 = fake.pr(pr.number);
    assert_eq!((pr1.state.as_str(), pr1.merged), ("closed", false));
    let comments = fake.comments(pr.number);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].contains("current on main"), "{comments:?}");
    assert_eq!(
        branch_head(&ops.bare, "rebake/ticker"),
        None,
        "branch deleted"
    );
    let writes = fake.writes();
    let current = run();
    assert_eq!(action(&current, "ticker"), "current", "{}", text(&current));
    assert_eq!(fake.writes(), writes);

    // 5. A new change; the branch is pushed, then opening the PR fails for good (every one of
    //    rebake's 4 attempts): a crash between the push and the PR creation.
    change_template(&ops, "changed again");
    fake.fail_times("POST", "/repos/acme/images/pulls", 500, &[], 4);
    let crashed = run();
    assert_eq!(action(&crashed, "ticker"), "failed", "{}", text(&crashed));
    assert_eq!(crashed.status.code(), Some(1), "{}", text(&crashed));
    let pushed = branch_head(&ops.bare, "rebake/ticker").expect("branch pushed before the crash");
    assert!(open_prs(&fake).is_empty());
    // The rerun reuses the branch and opens exactly one PR, even though Gitea creates it and
    // then answers 500 (the retry finds the PR the failed attempt opened).
    fake.fail_next_after_processing("POST", "/repos/acme/images/pulls", 500);
    let rerun = run();
    assert_eq!(action(&rerun, "ticker"), "opened", "{}", text(&rerun));
    assert_eq!(
        branch_head(&ops.bare, "rebake/ticker"),
        Some(pushed.clone())
    );
    let reopened = only_open_pr(&fake);
    assert_ne!(reopened.number, pr.number);
    assert_eq!(fake.prs().len(), 2, "the closed one and the new one");
    assert_proposal_is_head(&ops, &reopened, &pushed);
    assert_eq!(fake.pr_label_names(reopened.number), ["rebake"]);
    passed_on(&pushed);

    fake.assert_no_violations();
}

/// The files the commit `sha` changes.
fn files_changed(ops: &GitOps, sha: &str) -> Vec<String> {
    git(
        &ops.bare,
        &["show", "--name-only", "--format=", "--no-renames", sha],
    )
    .lines()
    .map(String::from)
    .collect()
}

const PAIR_FILES: [&str; 4] = [
    "images/ticker/Dockerfile",
    "images/ticker/rebake.lock",
    "images/ticker2/Dockerfile",
    "images/ticker2/rebake.lock",
];

/// Two images of one review group on the plain-git forge: one branch `rebake/group/pair`, one
/// commit per run with the images that need a change, a row per image; reused when nothing
/// changed, updated when one image changes (the other taken from the branch, not rebuilt) or
/// becomes current, closed when both are current on main again.
#[test]
fn plain_git_group_proposal_lifecycle() {
    let ops = pair_gitops("rebake-test-pair", &[]);
    let (state, _guard) = shared_state();
    let main = || git(&ops.bare, &["rev-parse", "refs/heads/main"]);
    const BRANCH: &str = "rebake/group/pair";

    // 1. First run: both images built and proposed together.
    let first = propose(&ops, state, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(action(&first, "ticker"), "opened", "{}", text(&first));
    assert_eq!(action(&first, "ticker2"), "opened", "{}", text(&first));
    let head = branch_head(&ops.bare, BRANCH).expect("group branch pushed");
    for alone in ["rebake/ticker", "rebake/ticker2"] {
        assert_eq!(branch_head(&ops.bare, alone), None, "{alone}");
    }
    assert_eq!(git(&ops.bare, &["rev-parse", &format!("{head}^")]), main());
    assert_eq!(files_changed(&ops, &head), PAIR_FILES);
    let message = git(&ops.bare, &["log", "-1", "--format=%B", &head]);
    assert!(
        message.starts_with("pair images: first build — ticker (")
            && message.contains("), ticker2 ("),
        "{message}"
    );
    for part in [
        "\n- ticker: first build (",
        "\n- ticker2: first build (",
        "\n## ticker\n",
        "\n## ticker2\n",
        "| has the Debian version | pass |",
        "git fetch origin rebake/group/pair && git checkout FETCH_HEAD",
    ] {
        assert!(message.contains(part), "{part:?} missing from:\n{message}");
    }
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ticker")).count(),
        2,
        "one row per image:\n{stdout}"
    );

    // 2. Nothing changed: no build, no push, no writes.
    let statuses = std::fs::read(state.join("plain-git/statuses.json")).unwrap();
    let second = propose(&ops, state, &[]);
    assert_eq!(action(&second, "ticker"), "unchanged", "{}", text(&second));
    assert_eq!(action(&second, "ticker2"), "unchanged", "{}", text(&second));
    assert_eq!(branch_head(&ops.bare, BRANCH), Some(head.clone()));
    assert_eq!(
        std::fs::read(state.join("plain-git/statuses.json")).unwrap(),
        statuses
    );

    // 3. ticker's template changes on main: a new commit on top of the new main, with ticker
    //    rebuilt and ticker2 taken from the branch as it was (not rebuilt).
    change_template(&ops, "updated");
    let updated = propose(&ops, state, &[]);
    assert_eq!(updated.status.code(), Some(0), "{}", text(&updated));
    assert_eq!(action(&updated, "ticker"), "updated", "{}", text(&updated));
    assert_eq!(action(&updated, "ticker2"), "updated", "{}", text(&updated));
    let new_head = branch_head(&ops.bare, BRANCH).unwrap();
    assert_ne!(new_head, head);
    assert_eq!(
        git(&ops.bare, &["rev-parse", &format!("{new_head}^")]),
        main()
    );
    assert_eq!(files_changed(&ops, &new_head), PAIR_FILES);
    let blob =
        |commit: &str, path: &str| git(&ops.bare, &["rev-parse", &format!("{commit}:{path}")]);
    for path in ["images/ticker2/Dockerfile", "images/ticker2/rebake.lock"] {
        assert_eq!(blob(&head, path), blob(&new_head, path), "{path} reused");
    }
    assert_ne!(
        blob(&head, "images/ticker/Dockerfile"),
        blob(&new_head, "images/ticker/Dockerfile")
    );

    // 4. Someone applies only ticker to main by hand: ticker is current and leaves the
    //    proposal, which is committed again with ticker2 alone, as the branch held it.
    apply_by_hand(&ops, BRANCH, "images/ticker");
    let one_left = propose(&ops, state, &[]);
    assert_eq!(one_left.status.code(), Some(0), "{}", text(&one_left));
    assert_eq!(
        action(&one_left, "ticker"),
        "current",
        "{}",
        text(&one_left)
    );
    assert_eq!(
        action(&one_left, "ticker2"),
        "updated",
        "{}",
        text(&one_left)
    );
    let last_head = branch_head(&ops.bare, BRANCH).unwrap();
    assert_ne!(last_head, new_head);
    assert_eq!(
        git(&ops.bare, &["rev-parse", &format!("{last_head}^")]),
        main()
    );
    assert_eq!(files_changed(&ops, &last_head), &PAIR_FILES[2..]);
    for path in ["images/ticker2/Dockerfile", "images/ticker2/rebake.lock"] {
        assert_eq!(
            blob(&head, path),
            blob(&last_head, path),
            "{path} not rebuilt"
        );
    }
    let message = git(&ops.bare, &["log", "-1", "--format=%B", &last_head]);
    assert!(
        message.starts_with("pair images: first build — ticker2 (")
            && message.contains("\nAlready current, not in this proposal: ticker.\n")
            && !message.contains("\n## ticker\n"),
        "{message}"
    );

    // 5. Someone applies the rest to main by hand: the group proposal is closed, its branch
    //    deleted; then both images are current.
    apply_by_hand(&ops, BRANCH, "images");
    let closed = propose(&ops, state, &[]);
    assert_eq!(action(&closed, "ticker"), "closed", "{}", text(&closed));
    assert_eq!(action(&closed, "ticker2"), "closed", "{}", text(&closed));
    assert_eq!(branch_head(&ops.bare, BRANCH), None, "branch deleted");
    let current = propose(&ops, state, &[]);
    assert_eq!(action(&current, "ticker"), "current", "{}", text(&current));
    assert_eq!(action(&current, "ticker2"), "current", "{}", text(&current));
}

/// The same group on the GitHub fake: one pull request from `rebake/group/pair` carrying both
/// images, with the union of their labels and a passing status on its head.
#[test]
fn github_group_proposal_is_one_pull_request() {
    let ops = pair_gitops("rebake-test-pair-gh", &[]);
    let (state, _guard) = shared_state();
    let fake = github_for(&ops);
    let env = [("REBAKE_TEST_GITHUB_TOKEN", GITHUB_TOKEN)];
    let first = propose(&ops, state, &env);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(action(&first, "ticker"), "opened", "{}", text(&first));
    assert_eq!(action(&first, "ticker2"), "opened", "{}", text(&first));
    let prs = fake.prs();
    assert_eq!(prs.len(), 1, "{prs:?}");
    let pr = &prs[0];
    assert_eq!(
        (pr.head.as_str(), pr.base.as_str()),
        ("rebake/group/pair", "main")
    );
    assert!(
        pr.title.starts_with("pair images: first build — ticker ("),
        "{}",
        pr.title
    );
    let body = pr.body.clone().unwrap_or_default();
    for part in [
        "\n## ticker\n",
        "\n## ticker2\n",
        "| has the Debian version | pass |",
    ] {
        assert!(body.contains(part), "{part:?} missing from:\n{body}");
    }
    assert_eq!(pr.labels, ["rebake", "security"]);
    let head = branch_head(&ops.bare, "rebake/group/pair").unwrap();
    assert!(
        fake.statuses(&head)
            .iter()
            .any(|s| s.context == "rebake/test" && s.state == "success"),
        "{:?}",
        fake.statuses(&head)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    let url = format!("/pull/{}", pr.number);
    assert_eq!(
        stdout.lines().filter(|l| l.contains(&url)).count(),
        2,
        "both rows show the one PR:\n{stdout}"
    );

    // Nothing changed: no writes.
    let writes = fake.writes();
    let again = propose(&ops, state, &env);
    assert_eq!(action(&again, "ticker"), "unchanged", "{}", text(&again));
    assert_eq!(action(&again, "ticker2"), "unchanged", "{}", text(&again));
    assert_eq!(fake.writes(), writes);
    fake.assert_no_violations();
}

fn open_prs(fake: &FakeGitea) -> Vec<FakePr> {
    fake.prs()
        .into_iter()
        .filter(|p| p.state == "open")
        .collect()
}

fn only_open_pr(fake: &FakeGitea) -> FakePr {
    let open = open_prs(fake);
    assert_eq!(open.len(), 1, "exactly one open PR: {open:?}");
    open.into_iter().next().unwrap()
}

/// `pr` is the proposal on rebake/ticker whose head is `head`: its title and body are those
/// of that commit.
fn assert_proposal_is_head(ops: &GitOps, pr: &FakePr, head: &str) {
    assert_eq!(pr.head, "rebake/ticker");
    assert_eq!(
        branch_head(&ops.bare, "rebake/ticker").as_deref(),
        Some(head)
    );
    let message = git(&ops.bare, &["log", "-1", "--format=%B", head]);
    assert_eq!(message, format!("{}\n\n{}", pr.title, pr.body).trim_end());
}

/// A human changes the ticker template on main (one more LABEL) and pushes.
fn change_template(ops: &GitOps, description: &str) {
    std::fs::write(
        ops.clone.join("templates/ticker.Dockerfile.hbs"),
        format!("{TICKER_TEMPLATE}LABEL org.opencontainers.image.description=\"{description}\"\n"),
    )
    .unwrap();
    git(
        &ops.clone,
        &["commit", "-q", "-am", "ticker: describe the image"],
    );
    git(&ops.clone, &["push", "-q", "origin", "main"]);
}

/// A reviewer follows the proposal's "Reproduce locally" steps in their own clone: the build of
/// the proposal commit gives the proposal's image id (same base, same Dockerfile, same labels —
/// the revision label is the commit the image's inputs last changed in, not the checkout's).
#[test]
fn rebuilding_the_proposal_commit_gives_the_proposed_image_id() {
    let ops = ticker_gitops("rebake-reproduce-ticker");
    let (state, _guard) = shared_state();
    let proposed = crate::support::gitops::rebake(&ops, state, &["propose", "--no-push"], &[]);
    assert_eq!(action(&proposed, "ticker"), "opened", "{}", text(&proposed));
    let head = branch_head(&ops.bare, "rebake/ticker").expect("branch pushed");
    let body = git(&ops.bare, &["log", "-1", "--format=%B", &head]);
    let steps = "git fetch origin rebake/ticker && git checkout FETCH_HEAD\n\
                 rebake build ticker --no-push --force\n";
    assert!(body.contains(steps), "{body}");
    let proposed_lock = git(
        &ops.bare,
        &["show", &format!("{head}:images/ticker/rebake.lock")],
    );
    let proposed_lock =
        rebake::lock::Lock::parse(&proposed_lock, std::path::Path::new("rebake.lock")).unwrap();
    let proposed_id = proposed_lock.image.expect("image").id;

    git(&ops.clone, &["fetch", "-q", "origin", "rebake/ticker"]);
    git(&ops.clone, &["checkout", "-q", "FETCH_HEAD"]);
    let rebuilt = crate::support::gitops::rebake(
        &ops,
        state,
        &[
            "build",
            "ticker",
            "--no-push",
            "--force",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(rebuilt.status.code(), Some(0), "{}", text(&rebuilt));
    let rows: serde_json::Value = serde_json::from_slice(&rebuilt.stdout).unwrap();
    assert_eq!(rows[0]["result"], "built", "{rows}");
    assert_eq!(
        rows[0]["image_id"].as_str(),
        Some(proposed_id.as_str()),
        "the rebuild of the proposal commit differs from the proposed image"
    );
}

/// With no Security Tracker configured, an image whose openssl is behind gets a proposal that
/// calls it a security update and names the CVEs fixed in between, read from openssl's own
/// changelog in the rebuilt image — also under `point_release: false`.
#[test]
fn the_proposal_names_the_cves_from_the_packages_own_changelog() {
    let ops = ticker_gitops("rebake-changelog-ticker");
    let (state, _guard) = shared_state();
    let first = crate::support::gitops::rebake(&ops, state, &["propose", "--no-push"], &[]);
    assert_eq!(action(&first, "ticker"), "opened", "{}", text(&first));
    apply_by_hand(&ops, "rebake/ticker", "images");
    // That proposal is done with: its branch goes.
    git(
        &ops.clone,
        &["push", "-q", "origin", "--delete", "rebake/ticker"],
    );

    // main's lock says openssl is still at trixie's first version; the policy takes no point
    // releases.
    let lock_path = ops.clone.join("images/ticker/rebake.lock");
    let mut lock =
        rebake::lock::Lock::parse(&std::fs::read_to_string(&lock_path).unwrap(), &lock_path)
            .unwrap();
    let mut behind = 0;
    for p in lock.packages.iter_mut().filter(|p| p.source == "openssl") {
        p.version = "3.5.1-1".into();
        p.source_version = "3.5.1-1".into();
        behind += 1;
    }
    assert!(behind > 0, "the base has openssl's libraries");
    std::fs::write(&lock_path, lock.to_yaml().unwrap()).unwrap();
    let policy_path = ops.clone.join("policies/ticker.yaml");
    let policy = std::fs::read_to_string(&policy_path).unwrap();
    std::fs::write(
        &policy_path,
        format!("{policy}updates:\n  point_release: false\n"),
    )
    .unwrap();
    git(
        &ops.clone,
        &["commit", "-q", "-am", "openssl behind; no point releases"],
    );
    git(&ops.clone, &["push", "-q", "origin", "main"]);

    let second = crate::support::gitops::rebake(&ops, state, &["propose", "--no-push"], &[]);
    assert_eq!(action(&second, "ticker"), "opened", "{}", text(&second));
    let head = branch_head(&ops.bare, "rebake/ticker").unwrap();
    let body = git(&ops.bare, &["log", "-1", "--format=%B", &head]);
    let title = body.lines().next().unwrap();
    assert!(
        title.starts_with("ticker: security update (openssl 3.5.1-1 → "),
        "{title}"
    );
    let openssl_row = body
        .lines()
        .find(|l| l.starts_with("| openssl |"))
        .unwrap_or_else(|| panic!("{body}"));
    assert!(openssl_row.contains("| security |"), "{openssl_row}");
    assert!(
        openssl_row.contains("libssl3t64 3.5.1-1 → "),
        "{openssl_row}"
    );
    let from_changelog: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| l.contains("| openssl |") && l.ends_with("| changelog |"))
        .filter_map(|l| l.split(['[', ']']).nth(1))
        .collect();
    assert!(
        from_changelog.len() >= 10,
        "openssl's trixie-security uploads since 3.5.1-1 name many CVEs: {body}"
    );
    assert!(body.contains("### Changelog"), "{body}");
    assert!(body.contains("| trixie-security |"), "{body}");
    eprintln!(
        "openssl 3.5.1-1 → new: {} CVE ids from the changelog (title: {title})",
        from_changelog.len()
    );
}
