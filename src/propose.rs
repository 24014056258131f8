//! The propose stage: one proposal per image with updates, on a branch `rebake/<image>` off
//! the default branch — or one per review group (`review.group: <name>`), carrying every image
//! of the group that needs a change, on `rebake/group/<name>` — reconciled (never duplicated)
//! on every run.
//!
//! Each run compares what should be with what is: the branch's lock is current against the
//! verified index, or the image is rebuilt and committed; the proposal exists with the right
//! title and body, or it is opened or rewritten; the `rebake/test` status is set. Nothing
//! changed means no writes at all, and a crash at any point is repaired by the next run.

use crate::forge::{Forge, NewProposal, Proposal, StatusState};
use crate::forge_text::{
    commit_message, describe, fit_body, group_body, group_title, Described, Headline,
};
use crate::git::PushOutcome;
use crate::lock::Lock;
use crate::pipeline::{Builder, Built};
use crate::policy::{DeployTarget, Policy, Review};
use crate::security::Tracker;
use git2::Oid;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use crate::forge::STATUS_CONTEXT;

/// What happened to one image's proposal in this run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The image is current on the default branch; nothing proposed.
    Current,
    Opened,
    /// Title/body rewritten and/or a new commit on the branch.
    Updated,
    /// Everything already as it should be: no writes.
    Unchanged,
    /// The image became current again: the proposal was closed with a comment.
    Closed,
    /// Left alone (the branch was changed by someone else, or the per-run cap was reached).
    Skipped,
    /// Waiting out `updates.min_age`: not proposed yet (the detail says until when).
    Held,
    /// Opened or updated, then merged by rebake (`review.automerge`).
    Merged,
    Failed,
}

/// Brings the forge's proposal for `branch` in line with `title`/`body`/`head`, and the
/// head's status with `passed`. Returns what it did and the proposal. `may_open` is false when
/// the per-run cap on new proposals is reached.
pub async fn reconcile<F: Forge>(
    forge: &F,
    new: &NewProposal,
    head: &str,
    passed: bool,
    may_open: bool,
) -> anyhow::Result<(Action, Option<Proposal>)> {
    let mut action = Action::Unchanged;
    let proposal = match forge.find_open(&new.head_branch).await? {
        None if !may_open => return Ok((Action::Skipped, None)),
        None => {
            action = Action::Opened;
            forge.create(new).await?
        }
        Some(p) => {
            if p.title != new.title || p.body != new.body {
                forge.update(p.number, &new.title, &new.body).await?;
                action = Action::Updated;
            }
            p
        }
    };
    let want = if passed {
        StatusState::Success
    } else {
        StatusState::Failure
    };
    if forge.status(head, STATUS_CONTEXT).await? != Some(want) {
        let description = if passed {
            "rebake: image built and tests passed"
        } else {
            "rebake: tests failed"
        };
        forge
            .set_status(head, want, STATUS_CONTEXT, description)
            .await?;
        if action == Action::Unchanged {
            action = Action::Updated;
        }
    }
    Ok((action, Some(proposal)))
}

/// Everything one propose run needs.
pub struct ProposeRun {
    /// The GitOps repository's remote (where branches are pushed).
    pub remote_url: String,
    pub auth: crate::git::Auth,
    pub identity: crate::git::Identity,
    /// Where the bare clone is kept between runs.
    pub workspace_dir: std::path::PathBuf,
    /// Build settings; `repo` is replaced by a scratch export of the default branch.
    pub plan: crate::pipeline::BuildPlan,
    pub tracker: Option<std::sync::Arc<Tracker>>,
}

/// What one image's proposal came to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProposeResult {
    pub image: String,
    /// The image's `review.group`: its proposal is the group's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub action: Action,
    pub url: Option<String>,
    pub title: Option<String>,
    pub detail: Option<String>,
}

/// Blocking git work on the run's workspace.
async fn with_workspace<T: Send + 'static>(
    run: &ProposeRun,
    f: impl FnOnce(&crate::git::Workspace) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    crate::git::with_workspace(&run.remote_url, &run.workspace_dir, &run.auth, f).await
}

/// The images one proposal carries: an image alone, or the images of a review group.
struct Unit<'a> {
    group: Option<&'a str>,
    branch: String,
    members: Vec<&'a Policy>,
}

/// The run's proposals, in the order of their first image.
fn units(policies: &[Policy]) -> Vec<Unit<'_>> {
    let mut out: Vec<Unit> = Vec::new();
    for p in policies {
        let group = p.review.group.as_deref();
        match out.iter_mut().find(|u| group.is_some() && u.group == group) {
            Some(unit) => unit.members.push(p),
            None => out.push(Unit {
                group,
                branch: crate::repo::proposal_branch(&p.name, group),
                members: vec![p],
            }),
        }
    }
    out
}

/// One row per image, all with the same outcome.
fn rows_for(
    members: &[&Policy],
    action: Action,
    proposal: Option<&Proposal>,
    title: Option<String>,
    detail: Option<String>,
) -> Vec<ProposeResult> {
    members
        .iter()
        .map(|m| ProposeResult {
            image: m.name.clone(),
            group: m.review.group.clone(),
            action: action.clone(),
            url: proposal.map(|p| p.url.clone()),
            title: title.clone(),
            detail: detail.clone(),
        })
        .collect()
}

/// `rebake propose`: scan → build → one reconciled proposal per image, or per review group.
pub async fn propose_all<F: Forge>(
    run: &ProposeRun,
    forge: &F,
    entries: &[crate::debian::sources::SourceEntry],
    images: &[String],
    progress: crate::output::Progress,
) -> anyhow::Result<Vec<ProposeResult>> {
    use anyhow::Context;
    let (default_branch, base) = with_workspace(run, |ws| {
        ws.fetch()?;
        let b = ws.default_branch()?;
        let head = ws
            .remote_head(&b)?
            .ok_or_else(|| anyhow::anyhow!("the remote has no branch {b}"))?;
        Ok((b, head))
    })
    .await
    .context("reading the GitOps repository")?;
    let scratch = tempfile::tempdir()?;
    let scratch_path = scratch.path().to_path_buf();
    let export_to = scratch_path.clone();
    with_workspace(run, move |ws| {
        crate::repo::export_tree(ws.repo(), base, &export_to)
    })
    .await?;
    let policies = crate::repo::policies_with_their_groups(&scratch_path, images)?;
    let mut plan = run.plan.clone();
    plan.repo = scratch_path.clone();
    // Built from the default branch's head, as exported.
    plan.git = Some((run.workspace_dir.clone(), base));
    let mut builder = Builder::new(plan, entries, &policies, progress.clone()).await?;
    builder.set_tracker(run.tracker.clone());
    let mut results = Vec::new();
    let mut opened = 0u32;
    let mut first_seen = crate::cooldown::FirstSeen::load(&run.plan.state_dir)?;
    for unit in units(&policies) {
        let outcome = propose_unit(
            run,
            forge,
            &mut builder,
            &unit,
            &scratch_path,
            &default_branch,
            base,
            opened,
            &mut first_seen,
        )
        .await;
        let rows = match outcome {
            Ok(rows) => rows,
            Err(e) => rows_for(
                &unit.members,
                Action::Failed,
                None,
                None,
                Some(format!("{e:#}")),
            ),
        };
        // A group's proposal counts once against the cap.
        if rows.iter().any(|r| r.action == Action::Opened) {
            opened += 1;
        }
        results.extend(rows);
    }
    first_seen.save()?;
    results.sort_by(|a, b| a.image.cmp(&b.image));
    Ok(results)
}

/// `policy`'s pending update as the plan stage sees it from the default branch's lock `old`
/// (none for a first build), with its cooldown and the first sighting of the earliest security
/// fix it carries.
fn pending_update(
    builder: &Builder,
    policy: &Policy,
    old: Option<&Lock>,
    first_seen: &mut crate::cooldown::FirstSeen,
) -> (
    Option<crate::cooldown::Cooldown>,
    Option<chrono::DateTime<chrono::Utc>>,
) {
    let (Some(old), Ok(index)) = (old, builder.index(policy)) else {
        return (None, None);
    };
    let scan =
        crate::plan::scan_inventory(index, None, &crate::plan::Inventory::of_lock(policy, old));
    (
        crate::cooldown::cooldown(policy, &scan, &index.suites, first_seen),
        crate::cooldown::fix_first_seen(&scan, &index.suites, first_seen),
    )
}

/// Whether `head` is rebake's own commit (author and committer `identity`) whose parent is on
/// the default branch's history at `base`: no one else committed to the proposal branch.
async fn is_own_commit(run: &ProposeRun, head: Oid, base: Oid) -> anyhow::Result<bool> {
    let email = run.identity.email.clone();
    with_workspace(run, move |ws| {
        let c = ws.repo().find_commit(head)?;
        let ours = c.author().email().ok() == Some(email.as_str())
            && c.committer().email().ok() == Some(email.as_str());
        let on_default = match c.parent_id(0) {
            Ok(parent) => parent == base || ws.is_ancestor(parent, base)?,
            Err(_) => false,
        };
        Ok(ours && on_default && c.parent_count() == 1)
    })
    .await
}

/// Closes the open proposal on `branch`, if there is one, with `note`, and deletes the branch
/// (on every forge; plain git's close already did), leased on the head the proposal was read
/// at: a newer commit someone pushed is never deleted. Returns the proposal and, when its
/// branch was left alone, why.
async fn close_open<F: Forge>(
    run: &ProposeRun,
    forge: &F,
    branch: &str,
    note: &str,
) -> anyhow::Result<Option<(Proposal, Option<String>)>> {
    let Some(p) = forge.find_open(branch).await? else {
        return Ok(None);
    };
    forge.close_with_comment(&p, note).await?;
    let mut detail = None;
    if let Ok(head) = Oid::from_str(&p.head_sha) {
        let b = branch.to_string();
        let outcome = with_workspace(run, move |ws| match ws.remote_head(&b)? {
            Some(_) => ws.delete_remote_branch(&b, head).map(Some),
            None => Ok(None),
        })
        .await?;
        if let Some(PushOutcome::LeaseBroken { .. }) = outcome {
            detail = Some(format!(
                "branch {branch} moved since the proposal was read; not deleting it"
            ));
        }
    }
    Ok(Some((p, detail)))
}

/// Whether the branch at `head` already holds what a build of `policy` would make now. When
/// it does, the branch's Dockerfile and lock are left in `scratch`; otherwise `scratch` is
/// restored.
async fn branch_holds_current(
    run: &ProposeRun,
    builder: &Builder,
    scratch: &Path,
    policy: &Policy,
    head: Oid,
) -> anyhow::Result<bool> {
    let files = crate::repo::image_files(&policy.name);
    let originals: Vec<Option<Vec<u8>>> = files
        .iter()
        .map(|f| std::fs::read(scratch.join(f)).ok())
        .collect();
    let paths = files.clone();
    let contents = with_workspace(run, move |ws| {
        paths
            .iter()
            .map(|p| ws.read_file(head, p))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await?;
    if contents.iter().all(Option::is_some) {
        for (f, c) in files.iter().zip(&contents) {
            crate::state::write_atomic(&scratch.join(f), c.as_deref().unwrap_or_default())?;
        }
        if builder.is_current(scratch, policy) {
            return Ok(true);
        }
    }
    for (f, o) in files.iter().zip(originals) {
        match o {
            Some(bytes) => crate::state::write_atomic(&scratch.join(f), &bytes)?,
            None => {
                let _ = std::fs::remove_file(scratch.join(f));
            }
        }
    }
    Ok(false)
}

/// The files of a proposal's commit, as they are in `scratch`: each image's Dockerfile and
/// lock, and the manifests (compose, stack, Kubernetes) moved to its new digest.
fn commit_files(
    scratch: &Path,
    images: &[(&Policy, &Lock)],
) -> anyhow::Result<Vec<(PathBuf, Option<Vec<u8>>)>> {
    let mut changed: Vec<PathBuf> = Vec::new();
    for (policy, lock) in images {
        changed.extend(crate::repo::image_files(&policy.name));
        if let Some(digest) = lock.image.as_ref().and_then(|i| i.digest.clone()) {
            for t in &policy.deploy {
                if let DeployTarget::Manifests(paths) = t {
                    changed.extend(crate::manifests::rewrite_manifests(
                        scratch,
                        paths,
                        &policy.name,
                        &digest,
                    )?);
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    changed.retain(|f| seen.insert(f.clone()));
    changed
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(scratch.join(&f))?;
            Ok((f, Some(bytes)))
        })
        .collect()
}

/// Commits `files` on top of `base` and pushes the commit to `branch` with a lease on
/// `expected`, the head rebake read. `Err(why)` when someone else changed the branch since.
async fn push_proposal(
    run: &ProposeRun,
    base: Oid,
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
    message: String,
    branch: &str,
    expected: Option<Oid>,
) -> anyhow::Result<Result<Oid, String>> {
    let (author, b) = (run.identity.clone(), branch.to_string());
    let outcome = with_workspace(run, move |ws| {
        let c = ws.commit_on(base, &files, &message, &author, &author, None)?;
        Ok((c, ws.push_with_lease(&b, c, expected)?))
    })
    .await?;
    Ok(match outcome {
        (c, PushOutcome::Pushed) => Ok(c),
        (_, PushOutcome::LeaseBroken { remote }) => Err(format!(
            "branch {branch} was changed by someone else (now at {}); not overwriting it",
            remote
                .map(|r| r.to_string())
                .unwrap_or_else(|| "deleted".into())
        )),
    })
}

/// The members' review list (labels, reviewers or assignees): the first member's as written,
/// then what the others add.
fn review_union(members: &[&Policy], list: impl Fn(&Review) -> &Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, m) in members.iter().enumerate() {
        for item in list(&m.review) {
            if i == 0 || !out.contains(item) {
                out.push(item.clone());
            }
        }
    }
    out
}

/// One proposal: an image alone on `rebake/<image>`, or the images of a review group together
/// on `rebake/group/<name>`. Images that are current on the default branch are left out; when
/// all are, an open proposal is closed. Each other image is reused from the branch when the
/// branch holds it as a build would make it now, else built; when nothing was built the branch
/// is left as it is, else one commit with every image goes on top of the default branch.
/// A group's branch is also committed again when it carries another set of images.
#[allow(clippy::too_many_arguments)]
async fn propose_unit<F: Forge>(
    run: &ProposeRun,
    forge: &F,
    builder: &mut Builder,
    unit: &Unit<'_>,
    scratch: &Path,
    default_branch: &str,
    base: Oid,
    opened: u32,
    first_seen: &mut crate::cooldown::FirstSeen,
) -> anyhow::Result<Vec<ProposeResult>> {
    let branch = unit.branch.as_str();
    // Members come parents first: a child whose parent is rebuilt is rebuilt on it.
    let mut rebuilt: BTreeSet<&str> = BTreeSet::new();
    let (mut current, mut pending): (Vec<&Policy>, Vec<&Policy>) = (Vec::new(), Vec::new());
    for p in unit.members.iter().copied() {
        let parent_rebuilt = p.from.as_deref().is_some_and(|f| rebuilt.contains(f));
        if parent_rebuilt || !builder.is_current(scratch, p) {
            rebuilt.insert(&p.name);
            pending.push(p);
        } else {
            current.push(p);
        }
    }
    // Updates still in their cooldown wait (an open proposal is left as it is).
    let now = chrono::Utc::now();
    let mut held_rows = Vec::new();
    let mut cooldowns = Vec::new();
    let mut fixes_seen = Vec::new();
    let mut waiting = Vec::new();
    for p in pending {
        let old = Lock::read(&crate::lock::path_for(scratch, &p.name)).ok();
        let (cooldown, fix_seen) = pending_update(builder, p, old.as_ref(), first_seen);
        match cooldown {
            Some(c) if !c.is_over(now) => held_rows.extend(rows_for(
                &[p],
                Action::Held,
                None,
                None,
                Some(c.held_note()),
            )),
            c => {
                cooldowns.push(c);
                fixes_seen.push(fix_seen);
                waiting.push(p);
            }
        }
    }
    let pending = waiting;
    if pending.is_empty() && !held_rows.is_empty() {
        let mut rows = rows_for(&current, Action::Current, None, None, None);
        rows.extend(held_rows);
        return Ok(rows);
    }
    if pending.is_empty() {
        // Current on the default branch: an open proposal is no longer needed.
        let names: Vec<&str> = current.iter().map(|p| p.name.as_str()).collect();
        let note = match unit.group {
            None => format!(
                "rebake: {} is current on {default_branch} again (no newer Debian packages than its lock); closing this proposal.",
                names.join(", ")
            ),
            Some(g) => format!(
                "rebake: the images of group {g} ({}) are current on {default_branch} again (no newer Debian packages than their locks); closing this proposal.",
                names.join(", ")
            ),
        };
        return Ok(match close_open(run, forge, branch, &note).await? {
            Some((p, detail)) => rows_for(
                &current,
                Action::Closed,
                Some(&p),
                Some(p.title.clone()),
                detail,
            ),
            None => rows_for(&current, Action::Current, None, None, None),
        });
    }
    let mut rows = rows_for(&current, Action::Current, None, None, None);
    rows.extend(held_rows);
    let cap = unit
        .members
        .iter()
        .map(|p| p.review.max_open)
        .min()
        .unwrap_or(crate::policy::DEFAULT_MAX_OPEN);
    let cap_note =
        || format!("not opened: {opened} proposals opened in this run (review.max_open)");
    // The default branch's locks, before the branch's files may replace them in scratch.
    let default_locks: Vec<Option<Lock>> = pending
        .iter()
        .map(|p| Lock::read(&crate::lock::path_for(scratch, &p.name)).ok())
        .collect();
    // A branch whose head the default branch already contains (a merged proposal whose branch
    // was kept) is never reused: its files are what main had, not a new proposal.
    let (branch_head, merged_already) = {
        let b = branch.to_string();
        with_workspace(run, move |ws| {
            let head = ws.remote_head(&b)?;
            let merged = match head {
                Some(h) => ws.is_ancestor(h, base)?,
                None => false,
            };
            Ok((head, merged))
        })
        .await?
    };
    if branch_head.is_none() && opened >= cap {
        rows.extend(rows_for(
            &pending,
            Action::Skipped,
            None,
            None,
            Some(cap_note()),
        ));
        return Ok(rows);
    }
    // Reuse what the branch already holds as a build would make it; build the rest. A failed
    // build holds the whole proposal back: nothing is pushed.
    let mut locks = Vec::new();
    let mut built = false;
    for (i, p) in pending.iter().enumerate() {
        let reused = match branch_head {
            Some(head) if !merged_already => {
                branch_holds_current(run, builder, scratch, p, head).await?
            }
            _ => false,
        };
        if reused {
            locks.push(Lock::read(&crate::lock::path_for(scratch, &p.name))?);
            continue;
        }
        built = true;
        match builder.build(p).await {
            Ok(Built::New(lock) | Built::Current(lock)) => locks.push(lock),
            Err(e) => {
                rows.extend(rows_for(
                    &pending[i..=i],
                    Action::Failed,
                    None,
                    None,
                    Some(format!("{e:#}")),
                ));
                let others: Vec<&Policy> = pending
                    .iter()
                    .copied()
                    .filter(|o| o.name != p.name)
                    .collect();
                let why = format!(
                    "not proposed: image {} of group {} failed (see its row); nothing was pushed",
                    p.name,
                    unit.group.unwrap_or_default()
                );
                rows.extend(rows_for(&others, Action::Failed, None, None, Some(why)));
                return Ok(rows);
            }
        }
    }
    let _stage = builder.progress().stage(
        unit.group.unwrap_or(pending[0].name.as_str()),
        &format!("propose on {branch}"),
    );
    let passed = locks
        .iter()
        .all(|l| l.tests.as_ref().is_some_and(|t| t.passed));
    let mut described = Vec::new();
    for (((p, old), lock), cooldown) in pending
        .iter()
        .zip(&default_locks)
        .zip(&locks)
        .zip(&cooldowns)
    {
        let changes = builder.changes(p, old.as_ref(), lock).await?;
        let mut d = describe(&p.name, branch, old.as_ref(), lock, &changes);
        if let Some(c) = cooldown {
            d.body.push_str(&format!("\n{}\n", c.body_line()));
        }
        described.push(d);
    }
    let (title, body) = match unit.group {
        None => (described[0].title.clone(), described[0].body.clone()),
        Some(g) => {
            let heads: Vec<(&str, &Headline)> = pending
                .iter()
                .zip(&described)
                .map(|(p, d)| (p.name.as_str(), &d.headline))
                .collect();
            let parts: Vec<(&str, &Described)> = pending
                .iter()
                .map(|p| p.name.as_str())
                .zip(&described)
                .collect();
            let current: Vec<&str> = current.iter().map(|p| p.name.as_str()).collect();
            (group_title(g, &heads), group_body(g, &parts, &current))
        }
    };
    // Nothing built: the branch already holds every image as a build would make it now. A
    // group's branch must also carry exactly these images (its head's message is this
    // proposal's: an image current again is dropped, a rewritten body moves the head);
    // otherwise the same files are committed again, without a build.
    let mut reuse = if built { None } else { branch_head };
    if let (Some(head), Some(_)) = (reuse, unit.group) {
        let have = with_workspace(run, move |ws| ws.commit_message(head)).await?;
        if have.trim_end() != commit_message(&title, &body).trim_end() {
            reuse = None;
        }
    }
    let head = match reuse {
        Some(head) => head,
        None => {
            let images: Vec<(&Policy, &Lock)> = pending.iter().copied().zip(&locks).collect();
            let files = commit_files(scratch, &images)?;
            let message = commit_message(&title, &body);
            match push_proposal(run, base, files, message, branch, branch_head).await? {
                Ok(commit) => commit,
                Err(why) => {
                    rows.extend(rows_for(&pending, Action::Skipped, None, None, Some(why)));
                    return Ok(rows);
                }
            }
        }
    };
    let new = NewProposal {
        title: title.clone(),
        body: fit_body(&body, &head.to_string()),
        head_branch: branch.to_string(),
        base_branch: default_branch.to_string(),
        labels: review_union(&unit.members, |r| &r.labels),
        reviewers: review_union(&unit.members, |r| &r.reviewers),
        assignees: review_union(&unit.members, |r| &r.assignees),
    };
    let (mut action, p) = reconcile(forge, &new, &head.to_string(), passed, opened < cap).await?;
    if reuse.is_none() && action != Action::Opened {
        // A new commit was pushed: on plain git a new branch *is* the new proposal.
        action = if branch_head.is_none() {
            Action::Opened
        } else {
            Action::Updated
        };
    }
    let mut detail = (action == Action::Skipped).then(cap_note);
    if p.is_some() && action != Action::Skipped {
        // The fix latency clock: this head carries each image's security fixes from now on.
        for (policy, seen) in pending.iter().zip(&fixes_seen) {
            if let Some(seen) = seen {
                crate::timeline::proposed(
                    &run.plan.state_dir,
                    &head.to_string(),
                    &policy.name,
                    *seen,
                    chrono::Utc::now(),
                )?;
            }
        }
    }
    if let Some(proposal) = p.as_ref().filter(|_| action != Action::Skipped) {
        let members: Vec<crate::automerge::Member> = pending
            .iter()
            .zip(&described)
            .map(|(policy, d)| crate::automerge::Member {
                policy,
                kind: crate::automerge::kind_of(d.headline.kind),
            })
            .collect();
        let head_hex = head.to_string();
        let own_commit = is_own_commit(run, head, base).await?;
        let outcome = crate::automerge::automerge(
            forge,
            crate::automerge::Ask {
                proposal,
                head: &head_hex,
                passed,
                own_commit,
                members: &members,
                request: crate::forge::MergeRequest {
                    title: title.clone(),
                    when_checks_succeed: false,
                    committer: run.identity.clone(),
                },
                state_dir: &run.plan.state_dir,
            },
        )
        .await?;
        if matches!(outcome, crate::automerge::Outcome::Merged { .. }) {
            action = Action::Merged;
        }
        detail = outcome.detail().or(detail);
    }
    rows.extend(rows_for(&pending, action, p.as_ref(), Some(title), detail));
    Ok(rows)
}
