//! The propose stage: one proposal per image with updates, on a branch `rebake/<image>` off
//! the default branch, reconciled (never duplicated) on every run.
//!
//! Each run compares what should be with what is: the branch's lock is current against the
//! verified index, or the image is rebuilt and committed; the proposal exists with the right
//! title and body, or it is opened or rewritten; the `rebake/test` status is set. Nothing
//! changed means no writes at all, and a crash at any point is repaired by the next run.

use crate::debian::index::ReleaseIndex;
use crate::forge::{Forge, NewProposal, Proposal, StatusState};
use crate::lock::Lock;
use crate::security::{CveFix, Tracker};
use std::collections::{BTreeMap, BTreeSet};

/// The commit status context rebake sets on a proposal's head.
pub const STATUS_CONTEXT: &str = "rebake/test";

/// One source package whose version differs between the default branch's lock and the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub source: String,
    pub old: Option<String>,
    pub new: Option<String>,
    /// The suite the new version comes from, when the index has it.
    pub suite: Option<String>,
    pub security: bool,
    pub binaries: Vec<String>,
    pub cves: Vec<CveFix>,
    pub advisories: Vec<String>,
}

/// The source-package changes from `old` (None: first build) to `new`.
pub fn changes(
    old: Option<&Lock>,
    new: &Lock,
    index: &ReleaseIndex,
    tracker: Option<&Tracker>,
) -> Vec<Change> {
    let sources = |l: &Lock| -> BTreeMap<String, (String, BTreeSet<String>)> {
        let mut m: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
        for p in &l.packages {
            let e = m
                .entry(p.source.clone())
                .or_insert_with(|| (p.source_version.clone(), BTreeSet::new()));
            e.1.insert(p.name.clone());
        }
        m
    };
    let before = old.map(sources).unwrap_or_default();
    let after = sources(new);
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let o = before.get(name);
        let n = after.get(name);
        let (ov, nv) = (o.map(|x| x.0.clone()), n.map(|x| x.0.clone()));
        if ov == nv {
            continue;
        }
        let binaries: Vec<String> = n
            .or(o)
            .map(|x| x.1.iter().cloned().collect())
            .unwrap_or_default();
        // Which suites carry the new source version (any of its binaries will do).
        let mut suite = None;
        let mut security = false;
        if let Some(nv) = &nv {
            for b in &binaries {
                for a in index.versions(b) {
                    if &a.source == name && &a.source_version == nv {
                        let meta = &index.suites[a.suite];
                        if meta.security || suite.is_none() {
                            suite = Some(meta.suite.clone());
                        }
                        security |= meta.security;
                    }
                }
            }
        }
        let fixes = match (tracker, &ov, &nv) {
            (Some(t), Some(ov), Some(nv)) => t.fixes(name, &new.suite, ov, nv),
            _ => Default::default(),
        };
        out.push(Change {
            source: name.clone(),
            old: ov,
            new: nv,
            suite,
            security,
            binaries,
            cves: fixes.cves,
            advisories: fixes.advisories,
        });
    }
    // Security first, then by name: the order a reviewer reads.
    out.sort_by(|a, b| b.security.cmp(&a.security).then(a.source.cmp(&b.source)));
    out
}

fn version_or_none(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("none")
}

/// `nginx: security update (openssl 3.5.1-1 → 3.5.4-1, 2 CVEs)`.
pub fn title(image: &str, changes: &[Change]) -> String {
    let security = changes.iter().any(|c| c.security);
    let kind = if security {
        "security update"
    } else {
        "update"
    };
    let cves: BTreeSet<&str> = changes
        .iter()
        .flat_map(|c| c.cves.iter().map(|f| f.id.as_str()))
        .collect();
    let Some(first) = changes.first() else {
        return format!("{image}: rebuild");
    };
    if changes.iter().all(|c| c.old.is_none()) {
        return format!("{image}: first build ({} source packages)", changes.len());
    }
    let mut what = format!(
        "{} {} → {}",
        first.source,
        version_or_none(&first.old),
        version_or_none(&first.new)
    );
    if changes.len() > 1 {
        what.push_str(&format!(" and {} more", changes.len() - 1));
    }
    match cves.len() {
        0 => format!("{image}: {kind} ({what})"),
        1 => format!("{image}: {kind} ({what}, 1 CVE)"),
        n => format!("{image}: {kind} ({what}, {n} CVEs)"),
    }
}

/// The Security Tracker page of a CVE, DSA or DLA.
fn cve_link(id: &str) -> String {
    format!("[{id}](https://security-tracker.debian.org/tracker/{id})")
}

/// The proposal body: deterministic Markdown (same inputs, same bytes).
pub fn body(image: &str, old: Option<&Lock>, new: &Lock, changes: &[Change]) -> String {
    let mut b = String::new();
    b.push_str(&format!(
        "rebake rebuilt **{image}** ({}/{}) from verified Debian packages and tested it.\n\n",
        new.suite, new.architecture
    ));
    b.push_str("### Packages\n\n| source | old | new | suite | kind | binaries |\n|---|---|---|---|---|---|\n");
    for c in changes {
        b.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            c.source,
            version_or_none(&c.old),
            version_or_none(&c.new),
            c.suite.as_deref().unwrap_or("-"),
            if c.security { "security" } else { "update" },
            c.binaries.join(", ")
        ));
    }
    if changes.is_empty() {
        b.push_str("| (no package changed; the image was rebuilt) | | | | | |\n");
    }
    let fixes: Vec<(&Change, &CveFix)> = changes
        .iter()
        .flat_map(|c| c.cves.iter().map(move |f| (c, f)))
        .collect();
    let advisories: BTreeSet<&str> = changes
        .iter()
        .flat_map(|c| c.advisories.iter().map(String::as_str))
        .collect();
    if !fixes.is_empty() || !advisories.is_empty() {
        b.push_str("\n### Fixes\n\n");
        if !advisories.is_empty() {
            let list: Vec<String> = advisories.iter().map(|a| cve_link(a)).collect();
            b.push_str(&format!("Advisories: {}\n\n", list.join(", ")));
        }
        if !fixes.is_empty() {
            b.push_str("| CVE | source | urgency | status |\n|---|---|---|---|\n");
            for (c, f) in fixes {
                let status = match &f.note {
                    Some(n) => format!("{} ({n})", f.status),
                    None => f.status.clone(),
                };
                b.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    cve_link(&f.id),
                    c.source,
                    f.urgency.as_deref().unwrap_or("-"),
                    status
                ));
            }
        }
    }
    b.push_str("\n### Image\n\n");
    if let Some(base) = &new.base {
        b.push_str(&format!(
            "- base rootfs SHA256: `{}` (image `{}`)\n",
            base.rootfs_sha256, base.id
        ));
    }
    if let Some(img) = &new.image {
        b.push_str(&format!("- image id: `{}`\n", img.id));
        match &img.digest {
            Some(d) => b.push_str(&format!("- digest: `{d}`\n")),
            None => b.push_str("- digest: not pushed (no registry configured)\n"),
        }
    }
    for a in &new.archive {
        b.push_str(&format!(
            "- archive: `{}` {} (InRelease `{}`, {})\n",
            a.uri,
            a.suite,
            &a.inrelease_sha256[..a.inrelease_sha256.len().min(16)],
            a.date
        ));
    }
    if let Some(old) = old.and_then(|o| o.image.as_ref()) {
        b.push_str(&format!("- replaces image `{}`\n", old.id));
    }
    b.push_str("\n### Tests\n\n");
    match &new.tests {
        Some(t) => {
            b.push_str("| test | result | time |\n|---|---|---|\n");
            for r in &t.results {
                b.push_str(&format!(
                    "| {} | {} | {:.1} s |\n",
                    r.name,
                    r.result,
                    r.duration_ms as f64 / 1000.0
                ));
            }
            b.push_str(&format!(
                "\nAll tests {}.\n",
                if t.passed { "passed" } else { "did NOT pass" }
            ));
        }
        None => b.push_str("No test results recorded.\n"),
    }
    b.push_str(&format!(
        "\n### Reproduce locally\n\n```sh\ngit fetch origin rebake/{image} && git checkout FETCH_HEAD\nrebake build {image} --no-push --force\nrebake scan {image}\n```\n\n<sub>Generated by rebake. Merging deploys exactly the digest above.</sub>\n"
    ));
    b
}

/// A proposal's title and body for the move from `old` to `new`.
pub fn describe(
    image: &str,
    old: Option<&Lock>,
    new: &Lock,
    index: &ReleaseIndex,
    tracker: Option<&Tracker>,
) -> (String, String) {
    let ch = changes(old, new, index, tracker);
    (title(image, &ch), body(image, old, new, &ch))
}

/// The commit message of a proposal's head: title, blank line, body.
pub fn commit_message(title: &str, body: &str) -> String {
    format!("{title}\n\n{body}")
}

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
    pub tracker: Option<Tracker>,
}

/// What one image's proposal came to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProposeResult {
    pub image: String,
    pub action: Action,
    pub url: Option<String>,
    pub title: Option<String>,
    pub detail: Option<String>,
}

/// Writes every file of `commit`'s tree under `dir` (executable bits kept).
pub fn export_tree(
    repo: &git2::Repository,
    commit: git2::Oid,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tree = repo.find_commit(commit)?.tree()?;
    let mut err: Option<anyhow::Error> = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return git2::TreeWalkResult::Ok;
        }
        let path = dir.join(root).join(entry.name().unwrap_or_default());
        let res = (|| -> anyhow::Result<()> {
            let blob = repo.find_blob(entry.id())?;
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::write(&path, blob.content())?;
            if entry.filemode() == 0o100755 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
            Ok(())
        })();
        match res {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(e) => {
                err = Some(e);
                git2::TreeWalkResult::Abort
            }
        }
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn image_files(name: &str) -> [std::path::PathBuf; 2] {
    [
        crate::render::dockerfile_path(std::path::Path::new(""), name),
        crate::lock::path_for(std::path::Path::new(""), name),
    ]
}

/// Blocking git work on the run's workspace.
async fn with_workspace<T: Send + 'static>(
    run: &ProposeRun,
    f: impl FnOnce(&crate::git::Workspace) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    crate::git::with_workspace(&run.remote_url, &run.workspace_dir, &run.auth, f).await
}

/// `rebake propose`: scan → build → one reconciled proposal per image.
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
    with_workspace(run, move |ws| export_tree(ws.repo(), base, &export_to)).await?;
    let policies = crate::app::load_repo_policies(&scratch_path, images)?;
    let mut plan = run.plan.clone();
    plan.repo = scratch_path.clone();
    let mut builder =
        crate::pipeline::Builder::new(plan, entries, &policies, progress.clone()).await?;
    let mut results = Vec::new();
    let mut opened = 0u32;
    for policy in &policies {
        let name = policy.name.clone();
        let outcome = propose_one(
            run,
            forge,
            &mut builder,
            policy,
            &scratch_path,
            &default_branch,
            base,
            opened,
        )
        .await;
        let r = match outcome {
            Ok(r) => r,
            Err(e) => ProposeResult {
                image: name,
                action: Action::Failed,
                url: None,
                title: None,
                detail: Some(format!("{e:#}")),
            },
        };
        if r.action == Action::Opened {
            opened += 1;
        }
        results.push(r);
    }
    Ok(results)
}

#[allow(clippy::too_many_arguments)]
async fn propose_one<F: Forge>(
    run: &ProposeRun,
    forge: &F,
    builder: &mut crate::pipeline::Builder,
    policy: &crate::policy::Policy,
    scratch: &std::path::Path,
    default_branch: &str,
    base: git2::Oid,
    opened: u32,
) -> anyhow::Result<ProposeResult> {
    let name = policy.name.clone();
    let branch = format!("rebake/{name}");
    let result = |action: Action,
                  p: Option<&Proposal>,
                  title: Option<String>,
                  detail: Option<String>| ProposeResult {
        image: name.clone(),
        action,
        url: p.map(|p| p.url.clone()),
        title,
        detail,
    };
    let default_lock = Lock::read(&crate::lock::path_for(scratch, &name)).ok();
    if builder.is_current(scratch, policy) {
        // Current on the default branch: an open proposal is no longer needed.
        if let Some(p) = forge.find_open(&branch).await? {
            let note = format!(
                "rebake: {name} is current on {default_branch} again (no newer Debian packages than its lock); closing this proposal."
            );
            forge.close_with_comment(&p, &note).await?;
            // The branch goes with the proposal, on every forge (plain git's close already
            // deleted it), leased on the head the proposal was read at: a newer commit someone
            // pushed is never deleted.
            let mut detail = None;
            if let Ok(head) = git2::Oid::from_str(&p.head_sha) {
                let b = branch.clone();
                let outcome = with_workspace(run, move |ws| match ws.remote_head(&b)? {
                    Some(_) => ws.delete_remote_branch(&b, head).map(Some),
                    None => Ok(None),
                })
                .await?;
                if let Some(crate::git::PushOutcome::LeaseBroken { .. }) = outcome {
                    detail = Some(format!(
                        "branch {branch} moved since the proposal was read; not deleting it"
                    ));
                }
            }
            return Ok(result(
                Action::Closed,
                Some(&p),
                Some(p.title.clone()),
                detail,
            ));
        }
        return Ok(result(Action::Current, None, None, None));
    }
    // The branch as it is on the remote: reuse it when it is already what a build would make.
    let files = image_files(&name);
    let branch_head = {
        let b = branch.clone();
        with_workspace(run, move |ws| ws.remote_head(&b)).await?
    };
    if branch_head.is_none() && opened >= policy.review.max_open {
        return Ok(result(
            Action::Skipped,
            None,
            None,
            Some(format!(
                "not opened: {opened} proposals opened in this run (review.max_open)"
            )),
        ));
    }
    let mut reuse = None;
    if let Some(head) = branch_head {
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
                reuse = Some(head);
            }
        }
        if reuse.is_none() {
            for (f, o) in files.iter().zip(originals) {
                match o {
                    Some(bytes) => crate::state::write_atomic(&scratch.join(f), &bytes)?,
                    None => {
                        let _ = std::fs::remove_file(scratch.join(f));
                    }
                }
            }
        }
    }
    let (head, new_lock, t, proposal_body) = match reuse {
        Some(head) => {
            let lock = Lock::read(&crate::lock::path_for(scratch, &name))?;
            let index = builder.index(policy)?;
            let (t, b) = describe(
                &name,
                default_lock.as_ref(),
                &lock,
                index,
                run.tracker.as_ref(),
            );
            (head, lock, t, b)
        }
        None => {
            let lock = match builder.build(policy).await? {
                crate::pipeline::Built::New(l) | crate::pipeline::Built::Current(l) => l,
            };
            let index = builder.index(policy)?;
            let (t, text) = describe(
                &name,
                default_lock.as_ref(),
                &lock,
                index,
                run.tracker.as_ref(),
            );
            let message = commit_message(&t, &text);
            let mut changed: Vec<std::path::PathBuf> = files.to_vec();
            // Manifests (compose, stack, Kubernetes) move to the new digest in the same commit.
            if let Some(digest) = lock.image.as_ref().and_then(|i| i.digest.clone()) {
                for t in &policy.deploy {
                    if let crate::policy::DeployTarget::Manifests(paths) = t {
                        changed.extend(crate::deploy::rewrite_manifests(
                            scratch, paths, &name, &digest,
                        )?);
                    }
                }
            }
            let mut contents = Vec::new();
            for f in &changed {
                contents.push((f.clone(), Some(std::fs::read(scratch.join(f))?)));
            }
            let (author, b) = (run.identity.clone(), branch.clone());
            let outcome = with_workspace(run, move |ws| {
                let c = ws.commit_on(base, &contents, &message, &author, &author, None)?;
                Ok((c, ws.push_with_lease(&b, c, branch_head)?))
            })
            .await?;
            match outcome {
                (c, crate::git::PushOutcome::Pushed) => (c, lock, t, text),
                (_, crate::git::PushOutcome::LeaseBroken { remote }) => {
                    return Ok(result(
                        Action::Skipped,
                        None,
                        None,
                        Some(format!(
                            "branch {branch} was changed by someone else (now at {}); not overwriting it",
                            remote.map(|r| r.to_string()).unwrap_or_else(|| "deleted".into())
                        )),
                    ));
                }
            }
        }
    };
    let new = NewProposal {
        title: t.clone(),
        body: proposal_body,
        head_branch: branch.clone(),
        base_branch: default_branch.to_string(),
        labels: policy.review.labels.clone(),
        reviewers: policy.review.reviewers.clone(),
        assignees: policy.review.assignees.clone(),
    };
    let passed = new_lock.tests.as_ref().is_some_and(|t| t.passed);
    let may_open = opened < policy.review.max_open;
    let (mut action, p) = reconcile(forge, &new, &head.to_string(), passed, may_open).await?;
    if reuse.is_none() && action != Action::Opened {
        // A new commit was pushed: on plain git a new branch *is* the new proposal.
        action = if branch_head.is_none() {
            Action::Opened
        } else {
            Action::Updated
        };
    }
    let detail = (action == Action::Skipped).then(|| {
        format!(
            "not opened: {} proposals opened in this run (review.max_open)",
            opened
        )
    });
    Ok(result(action, p.as_ref(), Some(t), detail))
}
