//! `review.automerge` and `updates.min_age` end to end, as a team runs them: the `rebake`
//! binary, real git remotes, the real Debian mirror and engine, and the plain-git forge or the
//! stateful fakes of GitHub and Gitea (every request checked against the forge's schema). A
//! security update is made by setting openssl in main's lock back to trixie's first version.

use crate::support::engine::runtime;
use crate::support::fake_forge::FakeForge;
use crate::support::fake_gitea::FakeGitea;
use crate::support::fake_github::FakeGitHub;
use crate::support::gitops::{
    action, apply_by_hand, branch_head, git, rebake, shared_state, text, ticker_gitops, use_forge,
    GitOps,
};
use std::path::Path;
use std::process::Output;

/// The ticker policy deploying to `container`, with `review_extra` under its `review:` and
/// `updates` (a whole `updates:` section) appended.
fn ticker(container: &str, review_extra: &str, updates: &str) -> GitOps {
    let ops = ticker_gitops(container);
    let path = ops.clone.join("policies/ticker.yaml");
    let policy = std::fs::read_to_string(&path).unwrap().replace(
        "review:\n  labels: [rebake]\n",
        &format!("review:\n  labels: [rebake]\n{review_extra}"),
    );
    assert!(policy.contains(review_extra));
    std::fs::write(&path, format!("{policy}{updates}")).unwrap();
    git(
        &ops.clone,
        &["commit", "-q", "-am", "ticker: review settings"],
    );
    git(&ops.clone, &["push", "-q", "origin", "main"]);
    ops
}

/// A person changes main's lock of ticker: each package of source `source` gets `version`.
fn set_back(ops: &GitOps, source: &str, version: &str) {
    git(&ops.clone, &["pull", "-q", "--ff-only", "origin", "main"]);
    let lock_path = ops.clone.join("images/ticker/rebake.lock");
    let mut lock =
        rebake::lock::Lock::parse(&std::fs::read_to_string(&lock_path).unwrap(), &lock_path)
            .unwrap();
    let mut changed = 0;
    for p in lock.packages.iter_mut().filter(|p| p.source == source) {
        p.version = version.into();
        p.source_version = version.into();
        changed += 1;
    }
    assert!(changed > 0, "the base has {source}");
    std::fs::write(&lock_path, lock.to_yaml().unwrap()).unwrap();
    git(
        &ops.clone,
        &["commit", "-q", "-am", &format!("{source} behind")],
    );
    git(&ops.clone, &["push", "-q", "origin", "main"]);
}

/// The first build's proposal, applied to main by a person; its branch deleted.
fn first_build_applied(ops: &GitOps, state: &Path, env: &[(&str, &str)]) {
    let first = rebake(ops, state, &["propose", "--no-push"], env);
    assert_eq!(action(&first, "ticker"), "opened", "{}", text(&first));
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains(
            "not automerged: ticker's review.automerge does not take a first_build proposal"
        ),
        "{}",
        text(&first)
    );
    apply_by_hand(ops, "rebake/ticker", "images");
    git(
        &ops.clone,
        &["push", "-q", "origin", "--delete", "rebake/ticker"],
    );
}

/// The first build's pull request (not automerged: its kind is first_build), merged by a person
/// with `merge`.
fn first_build_applied_on_forge(
    ops: &GitOps,
    state: &Path,
    env: &[(&str, &str)],
    merge: impl FnOnce() -> String,
) {
    let first = rebake(ops, state, &["propose", "--no-push"], env);
    assert_eq!(action(&first, "ticker"), "opened", "{}", text(&first));
    assert!(
        stderr(&first).contains("does not take a first_build proposal"),
        "{}",
        text(&first)
    );
    merge();
}

fn remove_container(name: &str) {
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", name])
        .output();
}

/// `rebake deploy` deploys the merged lock's image to `container`, which then runs it.
fn deploys(ops: &GitOps, state: &Path, env: &[(&str, &str)], container: &str) {
    git(&ops.clone, &["pull", "-q", "--ff-only", "origin", "main"]);
    let lock_path = ops.clone.join("images/ticker/rebake.lock");
    let lock = rebake::lock::Lock::parse(&std::fs::read_to_string(&lock_path).unwrap(), &lock_path)
        .unwrap();
    let image = lock.image.expect("image").id;
    let deployed = rebake(ops, state, &["deploy"], env);
    assert_eq!(
        deployed.status.code(),
        Some(0),
        "{}\nmain:\n{}",
        text(&deployed),
        git(
            &ops.bare,
            &["log", "--graph", "--format=%h %an %s", "-8", "main"]
        )
    );
    let running = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.Image}}", container])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), image);
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The deployment log's automerge records.
fn automerge_records(state: &Path, branch_head: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("deployments.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "automerge" && v["head"] == branch_head)
        .collect()
}

#[test]
fn plain_git_security_proposal_is_fast_forwarded_then_deployed() {
    let container = "rebake-automerge-plain";
    remove_container(container);
    let ops = ticker(
        container,
        "  automerge: {kinds: [security]}\n",
        "updates:\n  point_release: false\n",
    );
    let (state, _guard) = shared_state();
    first_build_applied(&ops, state, &[]);
    set_back(&ops, "openssl", "3.5.1-1");

    let merged = rebake(&ops, state, &["propose", "--no-push"], &[]);
    assert_eq!(action(&merged, "ticker"), "merged", "{}", text(&merged));
    assert!(stderr(&merged).contains("merged by rebake (review.automerge)"));
    let head = branch_head(&ops.bare, "rebake/ticker").expect("proposal branch");
    let main = branch_head(&ops.bare, "main").unwrap();
    assert_eq!(main, head, "main fast-forwarded to the proposal head");
    let title = git(&ops.bare, &["log", "-1", "--format=%s", &head]);
    assert!(
        title.starts_with("ticker: security update (openssl 3.5.1-1 → "),
        "{title}"
    );
    let records = automerge_records(state, &head);
    assert_eq!(records.len(), 1, "one automerge record for {head}");
    assert_eq!(records[0]["kinds"], serde_json::json!(["security"]));
    // The comment on a plain-git proposal is its log entry.
    let log = std::fs::read_dir(state.join("plain-git"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(log.contains("merged this proposal by itself"), "{log}");

    // The next run finds the image current; the deploy gate deploys the tested image.
    let after = rebake(&ops, state, &["propose", "--no-push"], &[]);
    assert_eq!(action(&after, "ticker"), "current", "{}", text(&after));
    deploys(&ops, state, &[], container);

    // `rebake verify`: the target runs the lock's image, and this commit builds it again.
    let verified = rebake(&ops, state, &["verify", "ticker", "--rebuild"], &[]);
    let out = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    assert!(
        out.contains(&format!("docker:{container} runs the lock's image")),
        "{out}"
    );
    assert!(out.contains("rebuild:   same image id sha256:"), "{out}");
    assert!(out.contains("signature: not checked"), "{out}");
    // A lock that says another image: the target's check fails, with its own exit status.
    let lock_path = ops.clone.join("images/ticker/rebake.lock");
    let lock_text = std::fs::read_to_string(&lock_path).unwrap();
    let mut other = rebake::lock::Lock::parse(&lock_text, &lock_path).unwrap();
    other.image.as_mut().unwrap().id = format!("sha256:{}", "0".repeat(64));
    std::fs::write(&lock_path, other.to_yaml().unwrap()).unwrap();
    let tampered = rebake(&ops, state, &["verify", "ticker"], &[]);
    assert_eq!(tampered.status.code(), Some(4), "{}", text(&tampered));
    assert!(
        String::from_utf8_lossy(&tampered.stdout).contains("FAILED"),
        "{}",
        text(&tampered)
    );
    std::fs::write(&lock_path, lock_text).unwrap();
    remove_container(container);

    // The fix's way to the running container, timed from its first verified sighting.
    let timeline = rebake::timeline::read(state).unwrap();
    let entry = &timeline[&format!("{head}/ticker")];
    let (proposed, merged, deployed) = (
        entry.proposed.expect("proposed"),
        entry.merged.expect("merged"),
        entry.deployed.expect("deployed"),
    );
    assert!(
        entry.fix_first_seen <= proposed && merged <= deployed,
        "{entry:?}"
    );
    assert!(deployed >= proposed, "{entry:?}");
    let exposition = rebake::timeline::exposition(&timeline);
    assert!(
        exposition
            .contains("rebake_fix_latency_seconds_count{image=\"ticker\",stage=\"deployed\"}"),
        "{exposition}"
    );

    // The fleet view: locked, current, no proposal open, the target runs the lock's image.
    let status = rebake(&ops, state, &["status", "--format", "json"], &[]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["image"], "ticker", "{rows:#}");
    assert_eq!(row["pending"]["sources"], 0, "{rows:#}");
    assert_eq!(row["proposal"], serde_json::Value::Null, "{rows:#}");
    assert_eq!(
        row["targets"][0]["target"],
        format!("docker:{container}"),
        "{rows:#}"
    );
    assert_eq!(row["targets"][0]["image_ref"], row["locked"], "{rows:#}");
    assert_eq!(row["targets"][0]["current"], true, "{rows:#}");
    assert_eq!(row["last_error"], serde_json::Value::Null, "{rows:#}");
    let table = rebake(&ops, state, &["status"], &[]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("IMAGE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ticker") && l.contains("current")),
        "{table}"
    );
}

const GITHUB_TOKEN: &str = "ghp_testTOKEN0123456789";

#[test]
fn github_security_proposal_waits_for_checks_a_clean_branch_and_reviews() {
    let container = "rebake-automerge-github";
    remove_container(container);
    let ops = ticker(
        container,
        "  automerge:\n    kinds: [security]\n    required_checks: true\n",
        "updates:\n  point_release: false\n",
    );
    let fake = runtime().block_on(FakeGitHub::start(&ops.bare, "acme", "images", GITHUB_TOKEN));
    use_forge(
        &ops,
        "github",
        &fake.url(),
        "acme/images",
        "REBAKE_TEST_GITHUB_TOKEN",
    );
    let env = [("REBAKE_TEST_GITHUB_TOKEN", GITHUB_TOKEN)];
    let (state, _guard) = shared_state();

    first_build_applied_on_forge(&ops, state, &env, || fake.merge(1));
    set_back(&ops, "openssl", "3.5.1-1");

    // Branch protection requires ci/build, which has not run: GitHub refuses the merge.
    fake.require_status_checks(&["ci/build"]);
    let opened = rebake(&ops, state, &["propose", "--no-push"], &env);
    assert_eq!(action(&opened, "ticker"), "opened", "{}", text(&opened));
    assert!(
        stderr(&opened).contains("not automerged: GitHub did not merge it: Required status check \"ci/build\" is expected."),
        "{}",
        text(&opened)
    );
    let rebake_head = branch_head(&ops.bare, "rebake/ticker").unwrap();

    // A person pushes to the branch: never merged by rebake, even with every check green.
    git(&ops.clone, &["fetch", "-q", "origin"]);
    git(
        &ops.clone,
        &["checkout", "-q", "-B", "fix", "origin/rebake/ticker"],
    );
    std::fs::write(ops.clone.join("NOTES.md"), "why this update\n").unwrap();
    git(&ops.clone, &["add", "NOTES.md"]);
    git(&ops.clone, &["commit", "-q", "-m", "notes"]);
    git(&ops.clone, &["push", "-q", "origin", "fix:rebake/ticker"]);
    let human_head = branch_head(&ops.bare, "rebake/ticker").unwrap();
    fake.set_status(&human_head, "ci/build", "success");
    let pushed_to = rebake(&ops, state, &["propose", "--no-push"], &env);
    assert_ne!(
        action(&pushed_to, "ticker"),
        "merged",
        "{}",
        text(&pushed_to)
    );
    assert!(
        stderr(&pushed_to).contains("someone else committed to rebake/ticker"),
        "{}",
        text(&pushed_to)
    );
    assert!(!fake.pr(2).merged);

    // Back to rebake's commit; ci/build passes; a reviewer asks for changes: not merged.
    git(
        &ops.clone,
        &[
            "push",
            "-q",
            "-f",
            "origin",
            &format!("{rebake_head}:refs/heads/rebake/ticker"),
        ],
    );
    git(&ops.clone, &["checkout", "-q", "main"]);
    fake.set_status(&rebake_head, "ci/build", "success");
    fake.add_review(2, "alice", "CHANGES_REQUESTED");
    let requested = rebake(&ops, state, &["propose", "--no-push"], &env);
    assert!(
        stderr(&requested).contains("not automerged: changes requested by alice"),
        "{}",
        text(&requested)
    );
    assert!(!fake.pr(2).merged);

    // The reviewer approves: rebake merges at the head it checked, says so, and it deploys.
    fake.add_review(2, "alice", "APPROVED");
    let merged = rebake(&ops, state, &["propose", "--no-push"], &env);
    assert_eq!(action(&merged, "ticker"), "merged", "{}", text(&merged));
    let pr = fake.pr(2);
    assert!(pr.merged);
    assert_eq!(pr.merged_head_sha.as_deref(), Some(rebake_head.as_str()));
    assert!(
        fake.comments(2)
            .iter()
            .any(|c| c.contains("merged this proposal by itself")),
        "{:?}",
        fake.comments(2)
    );
    assert_eq!(automerge_records(state, &rebake_head).len(), 1);
    deploys(&ops, state, &env, container);
    remove_container(container);
    fake.assert_no_violations();
}

const GITEA_TOKEN: &str = "gta_automerge0123456789";

#[test]
fn gitea_security_proposal_is_merged_when_its_checks_succeed() {
    let container = "rebake-automerge-gitea";
    remove_container(container);
    let ops = ticker(
        container,
        "  automerge: {kinds: [security], required_checks: true}\n",
        "updates:\n  point_release: false\n",
    );
    let fake = runtime().block_on(FakeGitea::start(&ops.bare, "ops", "images", GITEA_TOKEN));
    use_forge(
        &ops,
        "gitea",
        &fake.url(),
        "ops/images",
        "REBAKE_TEST_GITEA_TOKEN",
    );
    let env = [("REBAKE_TEST_GITEA_TOKEN", GITEA_TOKEN)];
    let (state, _guard) = shared_state();

    first_build_applied_on_forge(&ops, state, &env, || fake.merge(1));
    set_back(&ops, "openssl", "3.5.1-1");

    // CI starts ci/build when a pull request opens (as a Gitea Actions workflow on
    // pull_request would): it is still running when rebake asks, so Gitea schedules the merge.
    fake.ci_on_pull_request("ci/build");
    let opened = rebake(&ops, state, &["propose", "--no-push"], &env);
    assert_eq!(action(&opened, "ticker"), "opened", "{}", text(&opened));
    assert!(
        stderr(&opened).contains("automerge scheduled"),
        "{}",
        text(&opened)
    );
    assert_eq!(fake.scheduled_merges(), [2]);
    assert!(!fake.pr(2).merged);
    assert!(
        fake.comments(2)
            .iter()
            .any(|c| c.contains("asked the forge to merge this proposal once its checks pass")),
        "{:?}",
        fake.comments(2)
    );

    // Asked again while CI still runs: no second comment.
    let again = rebake(&ops, state, &["propose", "--no-push"], &env);
    assert!(
        stderr(&again).contains("automerge scheduled"),
        "{}",
        text(&again)
    );
    assert_eq!(fake.comments(2).len(), 1, "{:?}", fake.comments(2));

    // A reviewer asks for changes: rebake cancels the merge Gitea had scheduled.
    fake.add_review(2, "alice", "REQUEST_CHANGES", false);
    let requested = rebake(&ops, state, &["propose", "--no-push"], &env);
    assert!(
        stderr(&requested)
            .contains("changes requested by alice (the scheduled merge was cancelled)"),
        "{}",
        text(&requested)
    );
    assert!(fake.scheduled_merges().is_empty());
    // The review is dismissed: scheduled again.
    fake.add_review(2, "alice", "REQUEST_CHANGES", true);
    let rescheduled = rebake(&ops, state, &["propose", "--no-push"], &env);
    assert!(
        stderr(&rescheduled).contains("automerge scheduled"),
        "{}",
        text(&rescheduled)
    );
    assert_eq!(fake.scheduled_merges(), [2]);

    // ci/build passes: Gitea merges the head rebake checked; the deploy follows.
    let head = branch_head(&ops.bare, "rebake/ticker").unwrap();
    fake.set_status(&head, "ci/build", "success");
    assert!(fake.pr(2).merged);
    deploys(&ops, state, &env, container);
    remove_container(container);
    fake.assert_no_violations();
}

/// A point release under `updates.min_age: 3d` is held (not built, not proposed; the scan JSON
/// says until when), and once its versions have been in the verified archive three days it is
/// proposed — the body says when it became eligible — and merged, as the policy allows.
#[test]
fn point_release_waits_out_min_age_then_is_proposed() {
    let ops = ticker(
        "rebake-cooldown",
        "  automerge: {kinds: [point_release]}\n",
        "updates:\n  min_age: 3d\n",
    );
    let (state, _guard) = shared_state();
    first_build_applied(&ops, state, &[]);
    // base-files has no security suite upload: moving it on is a point release. rebake counts a
    // version's age from the Date of the first verified InRelease it saw carrying it — for a
    // point release, the release's own InRelease, weeks old by now. Here rebake saw the current
    // base-files for the first time today, as on the day of a point release.
    git(&ops.clone, &["pull", "-q", "--ff-only", "origin", "main"]);
    let lock_path = ops.clone.join("images/ticker/rebake.lock");
    let lock = rebake::lock::Lock::parse(&std::fs::read_to_string(&lock_path).unwrap(), &lock_path)
        .unwrap();
    let current = lock
        .packages
        .iter()
        .find(|p| p.name == "base-files")
        .expect("base-files")
        .version
        .clone();
    let store_path = state.join("first-seen.json");
    let mut store: serde_json::Map<String, serde_json::Value> = std::fs::read(&store_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    store.insert(
        format!("trixie/amd64/base-files/{current}"),
        serde_json::json!(chrono::Utc::now().to_rfc3339()),
    );
    std::fs::write(&store_path, serde_json::to_vec(&store).unwrap()).unwrap();
    set_back(&ops, "base-files", "13.7");

    let held = rebake(&ops, state, &["propose", "--no-push"], &[]);
    assert_eq!(action(&held, "ticker"), "held", "{}", text(&held));
    assert!(
        stderr(&held).contains("held by updates.min_age (3days): base-files "),
        "{}",
        text(&held)
    );
    assert_eq!(
        branch_head(&ops.bare, "rebake/ticker"),
        None,
        "nothing pushed"
    );

    let scan = rebake(&ops, state, &["scan", "--format", "json"], &[]);
    assert_eq!(scan.status.code(), Some(0), "{}", text(&scan));
    let report: serde_json::Value = serde_json::from_slice(&scan.stdout).unwrap();
    crate::scan::assert_matches_schema(&report);
    let cooldown = &report["images"][0]["cooldown"];
    assert_eq!(cooldown["held"], true, "{report:#}");
    assert_eq!(cooldown["setting"], "min_age");
    assert_eq!(cooldown["package"], "base-files");
    assert_eq!(cooldown["min_age"], 3 * 86400);
    let date =
        |k: &str| chrono::DateTime::parse_from_rfc3339(cooldown[k].as_str().unwrap()).unwrap();
    assert_eq!(
        date("eligible_at") - date("first_seen"),
        chrono::Duration::days(3)
    );

    // Four days pass: the sighting of the new base-files is moved back as time would.
    let mut store: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&store_path).unwrap()).unwrap();
    let four_days_ago = (chrono::Utc::now() - chrono::Duration::days(4)).to_rfc3339();
    let mut moved = 0;
    for (k, v) in store.iter_mut() {
        if k.contains("/base-files/") {
            *v = serde_json::json!(four_days_ago);
            moved += 1;
        }
    }
    assert!(moved > 0, "{store:?}");
    std::fs::write(&store_path, serde_json::to_vec(&store).unwrap()).unwrap();

    let proposed = rebake(&ops, state, &["propose", "--no-push"], &[]);
    assert_eq!(action(&proposed, "ticker"), "merged", "{}", text(&proposed));
    let main = branch_head(&ops.bare, "main").unwrap();
    let message = git(&ops.bare, &["log", "-1", "--format=%B", &main]);
    assert!(
        message.starts_with("ticker: update (base-files 13.7 → "),
        "{message}"
    );
    assert!(
        message.contains("Cooldown: `updates.min_age` 3days — eligible since"),
        "{message}"
    );
}
