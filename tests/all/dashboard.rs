//! The fleet dashboard issue (`rebake dashboard`, also run by `serve` after each scan) on the
//! stateful fakes of GitHub and Gitea, every request and answer checked against the forge's
//! schema: opened once, found again by its label and marker, edited only when its text
//! changes, reopened after a person closed it, closed when the repository has no policies —
//! and a person's issue that merely carries the label is never taken over.

use crate::support::engine::runtime;
use crate::support::fake_gitea::FakeGitea;
use crate::support::fake_github::FakeGitHub;
use crate::support::gitops::{git, rebake, shared_state, text, ticker_gitops, use_forge, GitOps};
use rebake::dashboard::{LABEL, MARKER, TITLE};
use std::path::Path;

/// What the test reads of an issue, the same on both fakes.
#[derive(Debug)]
struct Seen {
    number: u64,
    title: String,
    body: String,
    open: bool,
    labels: Vec<String>,
}

trait IssueFake {
    fn seen(&self) -> Vec<Seen>;
    fn writes(&self) -> usize;
    /// A person's issue with the dashboard's label but no marker.
    fn persons_issue(&self) -> u64;
    fn close(&self, number: u64);
}

impl IssueFake for FakeGitHub {
    fn seen(&self) -> Vec<Seen> {
        self.issues()
            .into_iter()
            .map(|i| Seen {
                number: i.number,
                title: i.title,
                body: i.body.unwrap_or_default(),
                open: i.state == "open",
                labels: i.labels,
            })
            .collect()
    }
    fn writes(&self) -> usize {
        FakeGitHub::writes(self)
    }
    fn persons_issue(&self) -> u64 {
        self.open_issue("alice", "Ideas for the dashboard", "A wish list.", &[LABEL])
    }
    fn close(&self, number: u64) {
        self.close_issue(number)
    }
}

impl IssueFake for FakeGitea {
    fn seen(&self) -> Vec<Seen> {
        self.issues()
            .into_iter()
            .map(|i| Seen {
                number: i.number,
                labels: self.issue_label_names(i.number),
                title: i.title,
                body: i.body,
                open: i.state == "open",
            })
            .collect()
    }
    fn writes(&self) -> usize {
        FakeGitea::writes(self)
    }
    fn persons_issue(&self) -> u64 {
        let label = self.add_label(LABEL, "#ededed");
        self.open_issue("alice", "Ideas for the dashboard", "A wish list.", &[label])
    }
    fn close(&self, number: u64) {
        self.close_issue(number)
    }
}

fn dashboard(ops: &GitOps, state: &Path, env: &[(&str, &str)]) -> String {
    let out = rebake(ops, state, &["dashboard"], env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ours(fake: &impl IssueFake) -> Vec<Seen> {
    fake.seen()
        .into_iter()
        .filter(|i| i.body.starts_with(MARKER))
        .collect()
}

/// The whole life of the dashboard on one forge.
fn dashboard_life(ops: &GitOps, fake: &impl IssueFake, env: &[(&str, &str)]) {
    let (state, _guard) = shared_state();
    let persons = fake.persons_issue();

    let opened = dashboard(ops, state, env);
    assert!(opened.starts_with("dashboard: opened #"), "{opened}");
    let mine = ours(fake);
    assert_eq!(mine.len(), 1, "{:?}", fake.seen());
    let issue = &mine[0];
    assert_ne!(issue.number, persons, "a person's issue is not taken over");
    assert!(opened.contains(&format!("#{} ", issue.number)), "{opened}");
    assert_eq!(issue.title, TITLE);
    assert!(issue.open);
    assert_eq!(issue.labels, vec![LABEL.to_string()]);
    // The same table as `rebake status`: the ticker image, not built yet, no proposal.
    assert!(
        issue.body.contains(
            "| IMAGE | LOCKED | PENDING | PROPOSAL | DEPLOYED | JOB FAILURES | LAST ERROR |"
        ),
        "{}",
        issue.body
    );
    assert!(
        issue.body.contains("| ticker | not built | "),
        "{}",
        issue.body
    );
    assert!(issue.body.contains("**1 images**"), "{}", issue.body);
    let person = fake
        .seen()
        .into_iter()
        .find(|i| i.number == persons)
        .unwrap();
    assert_eq!(
        person.body, "A wish list.",
        "the person's issue is untouched"
    );

    // Nothing changed: no write at all.
    let writes = fake.writes();
    let again = dashboard(ops, state, env);
    assert_eq!(
        again,
        format!(
            "dashboard: #{} {} is up to date",
            issue.number,
            again.split(' ').nth(2).unwrap()
        )
    );
    assert_eq!(
        fake.writes(),
        writes,
        "an unchanged dashboard is not rewritten"
    );

    // A person closes it while the repository still has policies: rebake reopens it.
    fake.close(issue.number);
    let reopened = dashboard(ops, state, env);
    assert!(
        reopened.starts_with(&format!("dashboard: updated #{} ", issue.number)),
        "{reopened}"
    );
    let mine = ours(fake);
    assert_eq!(mine.len(), 1, "never a second dashboard: {:?}", fake.seen());
    assert!(mine[0].open);

    // The repository's last policy goes: the dashboard is closed, and no new one is opened.
    git(&ops.clone, &["rm", "-q", "policies/ticker.yaml"]);
    git(&ops.clone, &["commit", "-q", "-m", "no images"]);
    git(&ops.clone, &["push", "-q", "origin", "main"]);
    let closed = dashboard(ops, state, env);
    assert!(
        closed.starts_with(&format!("dashboard: closed #{} ", issue.number)),
        "{closed}"
    );
    let mine = ours(fake);
    assert_eq!(mine.len(), 1);
    assert!(!mine[0].open);
    assert!(mine[0].body.contains("has no policies"), "{}", mine[0].body);
    let none = dashboard(ops, state, env);
    assert_eq!(
        none,
        "dashboard: the repository has no policies; none opened"
    );
    assert_eq!(ours(fake).len(), 1);
}

#[test]
fn github_dashboard_issue_is_opened_once_and_edited_in_place() {
    const TOKEN: &str = "ghp_dashTOKEN0123456789";
    let ops = ticker_gitops("rebake-dashboard-github");
    let fake = runtime().block_on(FakeGitHub::start(&ops.bare, "acme", "images", TOKEN));
    use_forge(
        &ops,
        "github",
        &fake.url(),
        "acme/images",
        "REBAKE_TEST_GITHUB_TOKEN",
    );
    dashboard_life(&ops, &fake, &[("REBAKE_TEST_GITHUB_TOKEN", TOKEN)]);
}

#[test]
fn gitea_dashboard_issue_is_opened_once_and_edited_in_place() {
    const TOKEN: &str = "gitea-dash-token-0123456789";
    let ops = ticker_gitops("rebake-dashboard-gitea");
    let fake = runtime().block_on(FakeGitea::start(&ops.bare, "ops", "images", TOKEN));
    use_forge(
        &ops,
        "gitea",
        &fake.url(),
        "ops/images",
        "REBAKE_TEST_GITEA_TOKEN",
    );
    dashboard_life(&ops, &fake, &[("REBAKE_TEST_GITEA_TOKEN", TOKEN)]);
}

#[test]
fn plain_git_has_no_dashboard_issue_and_says_where_the_fleet_view_is() {
    let ops = ticker_gitops("rebake-dashboard-plain");
    let (state, _guard) = shared_state();
    let said = dashboard(&ops, state, &[]);
    assert_eq!(
        said,
        "dashboard: plain git keeps no issues; `rebake status` shows the fleet"
    );
}
