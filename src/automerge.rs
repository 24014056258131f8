//! `review.automerge`: rebake merges its own proposal when the team's policy says this kind of
//! proposal may go without a person, and only when nothing says otherwise — every test passed
//! and `rebake/test` is success on the head, the head is the commit rebake pushed (no one else
//! committed to the branch), no reviewer's latest review asks for changes, and with
//! `required_checks` every other check on the head passed. A group proposal merges only when
//! every image in it qualifies. The merge goes through the forge's own mechanism (GitHub's merge
//! API at the checked head, Gitea's merge with "merge when checks succeed", a leased
//! fast-forward on plain git), is commented on the proposal and recorded in the deployment log;
//! the deploy that follows is the same as after a person's merge, through the same gate.

use crate::forge::{Forge, MergeOutcome, MergeRequest, OtherChecks, Proposal, StatusState};
use crate::forge_text::Kind;
use crate::policy::{AutomergeKind, Policy};
use anyhow::Result;
use std::path::Path;

/// The automerge kind of a proposal whose title says `kind`.
pub fn kind_of(kind: Kind) -> AutomergeKind {
    match kind {
        Kind::SecurityUpdate => AutomergeKind::Security,
        Kind::Update => AutomergeKind::PointRelease,
        Kind::BinaryRebuild => AutomergeKind::BinaryRebuild,
        Kind::FirstBuild => AutomergeKind::FirstBuild,
        Kind::Rebuild => AutomergeKind::Rebuild,
    }
}

/// One image of the proposal and the kind of its change.
pub struct Member<'a> {
    pub policy: &'a Policy,
    pub kind: AutomergeKind,
}

/// What rebake checks and does for one proposal.
pub struct Ask<'a> {
    pub proposal: &'a Proposal,
    /// The head rebake pushed (or found current) in this run.
    pub head: &'a str,
    /// Every image's tests passed.
    pub passed: bool,
    /// The head is rebake's own commit, directly on the default branch's history.
    pub own_commit: bool,
    pub members: &'a [Member<'a>],
    pub request: MergeRequest,
    pub state_dir: &'a Path,
}

/// What came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No image of the proposal asks for automerge: nothing was checked.
    Off,
    Merged {
        commit: Option<String>,
    },
    /// The forge merges it once its checks pass.
    Scheduled,
    /// Left for a person (or the next run), and why.
    NotMerged(String),
}

impl Outcome {
    /// The row detail a propose run shows.
    pub fn detail(&self) -> Option<String> {
        match self {
            Outcome::Off => None,
            Outcome::Merged { commit } => Some(format!(
                "merged by rebake (review.automerge){}",
                commit
                    .as_deref()
                    .map(|c| format!(" as {}", &c[..c.len().min(12)]))
                    .unwrap_or_default()
            )),
            Outcome::Scheduled => {
                Some("automerge scheduled: the forge merges it once its checks pass".into())
            }
            Outcome::NotMerged(why) => Some(format!("not automerged: {why}")),
        }
    }
}

/// Whether every member's policy lets its kind through; the reason when not. None when no
/// member asks for automerge at all.
fn kinds_allowed(members: &[Member<'_>]) -> Option<Result<(), String>> {
    if !members.iter().any(|m| m.policy.review.automerge.enabled()) {
        return None;
    }
    for m in members {
        if !m.policy.review.automerge.kinds.contains(&m.kind) {
            return Some(Err(format!(
                "{}'s review.automerge does not take a {} proposal (kinds: {})",
                m.policy.name,
                m.kind.word(),
                if m.policy.review.automerge.kinds.is_empty() {
                    "none".to_string()
                } else {
                    m.policy
                        .review
                        .automerge
                        .kinds
                        .iter()
                        .map(|k| k.word())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
    }
    Some(Ok(()))
}

/// Checks the proposal and merges it when everything allows it. When it may not be merged now,
/// a merge the forge scheduled earlier (Gitea's "merge when checks succeed") is cancelled, so a
/// request for changes or a person's commit stops it there too.
pub async fn automerge<F: Forge>(forge: &F, ask: Ask<'_>) -> Result<Outcome> {
    let proposal = ask.proposal;
    let outcome = decide_and_merge(forge, ask).await?;
    if let Outcome::NotMerged(why) = &outcome {
        if forge.merges_when_checks_succeed() && forge.cancel_scheduled_merge(proposal).await? {
            let note = format!("rebake cancelled the merge it had asked for: {why}.");
            if let Err(e) = forge.comment_on(proposal, &note).await {
                tracing::warn!("cannot comment on the proposal: {e}");
            }
            return Ok(Outcome::NotMerged(format!(
                "{why} (the scheduled merge was cancelled)"
            )));
        }
    }
    Ok(outcome)
}

async fn decide_and_merge<F: Forge>(forge: &F, ask: Ask<'_>) -> Result<Outcome> {
    let Some(allowed) = kinds_allowed(ask.members) else {
        return Ok(Outcome::Off);
    };
    let not = |why: String| Ok(Outcome::NotMerged(why));
    if let Err(why) = allowed {
        return not(why);
    }
    if !ask.passed {
        return not("a test failed".into());
    }
    if ask.proposal.head_sha != ask.head {
        return not(format!(
            "the proposal's head is {}, not {}, the commit rebake made",
            ask.proposal.head_sha, ask.head
        ));
    }
    if !ask.own_commit {
        return not(format!(
            "someone else committed to {} (a branch a person pushed to is merged by a person)",
            ask.proposal.head_branch
        ));
    }
    match forge.status(ask.head, crate::forge::STATUS_CONTEXT).await? {
        Some(StatusState::Success) => {}
        other => {
            return not(format!(
                "{} on the head is {}",
                crate::forge::STATUS_CONTEXT,
                other
                    .map(|s| format!("{s:?}").to_lowercase())
                    .unwrap_or_else(|| "missing".into())
            ))
        }
    }
    let requested = forge.changes_requested(ask.proposal.number).await?;
    if !requested.is_empty() {
        return not(format!("changes requested by {}", requested.join(", ")));
    }
    let required_checks = ask
        .members
        .iter()
        .any(|m| m.policy.review.automerge.required_checks);
    let mut request = ask.request.clone();
    request.when_checks_succeed = false;
    if required_checks {
        match OtherChecks::of(&forge.statuses(ask.head).await?) {
            OtherChecks::Passed => {}
            OtherChecks::Failed(c) => return not(format!("checks failed: {}", c.join(", "))),
            OtherChecks::Pending(c) if forge.merges_when_checks_succeed() => {
                tracing::info!(
                    "checks still running ({}): asking the forge to merge when they pass",
                    c.join(", ")
                );
                request.when_checks_succeed = true;
            }
            OtherChecks::Pending(c) => return not(format!("waiting for checks: {}", c.join(", "))),
        }
    }
    let outcome = match forge.merge(ask.proposal, &request).await? {
        MergeOutcome::Merged { commit } => Outcome::Merged { commit },
        MergeOutcome::Scheduled => Outcome::Scheduled,
        MergeOutcome::NotMerged(why) => return not(why),
    };
    if outcome == Outcome::Scheduled && already_scheduled(ask.state_dir, ask.head) {
        // Asked on an earlier run; the forge still waits for the checks.
        return Ok(outcome);
    }
    let kinds: Vec<&str> = ask.members.iter().map(|m| m.kind.word()).collect();
    let images: Vec<&str> = ask.members.iter().map(|m| m.policy.name.as_str()).collect();
    let what = match &outcome {
        Outcome::Scheduled => "asked the forge to merge this proposal once its checks pass",
        _ => "merged this proposal",
    };
    let comment = format!(
        "rebake {what} by itself: `review.automerge` of {} takes {} proposals; every test passed \
         (`{}` is success on {}), no one else committed to the branch, no review asks for \
         changes{}. The deploy that follows goes through the same gate as a person's merge: \
         only the tested digest, only this lock.",
        images.join(", "),
        kinds.join(", "),
        crate::forge::STATUS_CONTEXT,
        &ask.head[..ask.head.len().min(12)],
        if required_checks {
            ", and every other check passed (or the forge waits for them)"
        } else {
            ""
        }
    );
    if let Err(e) = forge.comment_on(ask.proposal, &comment).await {
        tracing::warn!("cannot comment on the automerged proposal: {e}");
    }
    crate::rollout::append_to_log(
        ask.state_dir,
        &serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339(),
            "event": if outcome == Outcome::Scheduled { "automerge-scheduled" } else { "automerge" },
            "images": images,
            "kinds": kinds,
            "proposal": ask.proposal.url,
            "branch": ask.proposal.head_branch,
            "head": ask.head,
            "merge_commit": match &outcome { Outcome::Merged { commit } => commit.clone(), _ => None },
        }),
    )?;
    Ok(outcome)
}

/// Whether the deployment log records a merge already scheduled for `head`.
fn already_scheduled(state_dir: &Path, head: &str) -> bool {
    std::fs::read_to_string(state_dir.join(crate::rollout::DEPLOYMENT_LOG))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| v["event"] == "automerge-scheduled" && v["head"] == head)
}
