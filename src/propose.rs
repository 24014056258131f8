//! The propose stage: one proposal per image with updates, on a branch `rebake/<image>` off
//! the default branch — or one per review group (`review.group: <name>`), carrying every image
//! of the group that needs a change, on `rebake/group/<name>` — reconciled (never duplicated)
//! on every run.
//!
//! Each run compares what should be with what is: the branch's lock is current against the
//! verified index, or the image is rebuilt and committed; the proposal exists with the right
//! title and body, or it is opened or rewritten; the `rebake/test` status is set. Nothing
//! changed means no writes at all, and a crash at any point is repaired by the next run.

use crate::debian::index::ReleaseIndex;
use crate::forge::{Forge, NewProposal, Proposal, StatusState};
use crate::git::PushOutcome;
use crate::lock::Lock;
use crate::pipeline::{Builder, Built};
use crate::policy::{DeployTarget, Policy, Review};
use crate::security::{CveFix, Tracker};
use git2::Oid;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use crate::forge::STATUS_CONTEXT;

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

/// What kind of change a proposal brings, from the least to the most pressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// No source package changed; the image was rebuilt.
    Rebuild,
    /// There was no lock yet.
    FirstBuild,
    Update,
    SecurityUpdate,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Rebuild => "rebuild",
            Kind::FirstBuild => "first build",
            Kind::Update => "update",
            Kind::SecurityUpdate => "security update",
        }
    }
}

/// What a title says about one image: the kind of change and, except for a rebuild, what
/// changed (`openssl 3.5.1-1 → 3.5.4-1 and 2 more, 2 CVEs`, `14 source packages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headline {
    pub kind: Kind,
    pub detail: Option<String>,
}

/// The headline of an image's changes.
pub fn headline(changes: &[Change]) -> Headline {
    let Some(first) = changes.first() else {
        return Headline {
            kind: Kind::Rebuild,
            detail: None,
        };
    };
    if changes.iter().all(|c| c.old.is_none()) {
        return Headline {
            kind: Kind::FirstBuild,
            detail: Some(format!("{} source packages", changes.len())),
        };
    }
    let kind = if changes.iter().any(|c| c.security) {
        Kind::SecurityUpdate
    } else {
        Kind::Update
    };
    let cves: BTreeSet<&str> = changes
        .iter()
        .flat_map(|c| c.cves.iter().map(|f| f.id.as_str()))
        .collect();
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
        0 => {}
        1 => what.push_str(", 1 CVE"),
        n => what.push_str(&format!(", {n} CVEs")),
    }
    Headline {
        kind,
        detail: Some(what),
    }
}

/// `nginx: security update (openssl 3.5.1-1 → 3.5.4-1, 2 CVEs)`.
pub fn title(image: &str, changes: &[Change]) -> String {
    headline_title(image, &headline(changes))
}

fn headline_title(image: &str, h: &Headline) -> String {
    match &h.detail {
        Some(detail) => format!("{image}: {} ({detail})", h.kind.word()),
        None => format!("{image}: {}", h.kind.word()),
    }
}

/// The longest title a group proposal gets (GitHub takes 256 characters).
pub const MAX_GROUP_TITLE_CHARS: usize = 250;

/// The longest pull request description rebake sends (GitHub takes 65,536 characters).
pub const MAX_BODY_CHARS: usize = 60_000;

/// `body` as the forge gets it: whole when it fits [`MAX_BODY_CHARS`], else cut at a line
/// boundary with a note that the full text is the message of commit `head` (git has no limit).
pub fn fit_body(body: &str, head: &str) -> String {
    if body.chars().count() <= MAX_BODY_CHARS {
        return body.to_string();
    }
    let note = format!(
        "\n\n*… shortened to fit the forge's limit: the full description is the message of \
         commit {head}.*\n"
    );
    let budget = MAX_BODY_CHARS - note.chars().count();
    let (mut kept, mut count) = (String::new(), 0);
    for line in body.split_inclusive('\n') {
        count += line.chars().count();
        if count > budget {
            break;
        }
        kept.push_str(line);
    }
    kept.truncate(kept.trim_end().len());
    kept + &note
}

/// `web images: security update — nginx (openssl 3.5.1-1 → 3.5.4-1, 2 CVEs), postgres (…)`:
/// the most pressing kind of change among the members, then each member's headline (its kind
/// too when it differs), as many as fit in [`MAX_GROUP_TITLE_CHARS`], the rest as `+N more`.
pub fn group_title(group: &str, members: &[(&str, &Headline)]) -> String {
    let kind = members
        .iter()
        .map(|(_, h)| h.kind)
        .max()
        .unwrap_or(Kind::Rebuild);
    let part = |name: &str, h: &Headline| match (h.kind == kind, &h.detail) {
        (true, Some(d)) => format!("{name} ({d})"),
        (true, None) => name.to_string(),
        (false, Some(d)) => format!("{name} ({}, {d})", h.kind.word()),
        (false, None) => format!("{name} ({})", h.kind.word()),
    };
    let chars = |s: &str| s.chars().count();
    let more = |n: usize| {
        if n == 0 {
            String::new()
        } else {
            format!(", +{n} more")
        }
    };
    let mut t = format!("{group} images: {} — ", kind.word());
    for (i, (name, h)) in members.iter().enumerate() {
        let p = part(name, h);
        let left = members.len() - i - 1;
        if i > 0 && chars(&t) + 2 + chars(&p) + chars(&more(left)) > MAX_GROUP_TITLE_CHARS {
            t.push_str(&more(left + 1));
            break;
        }
        if i > 0 {
            t.push_str(", ");
        }
        t.push_str(&p);
    }
    if chars(&t) > MAX_GROUP_TITLE_CHARS {
        t = t
            .chars()
            .take(MAX_GROUP_TITLE_CHARS - 1)
            .collect::<String>()
            + "…";
    }
    t
}

/// The Security Tracker page of a CVE, DSA or DLA.
fn cve_link(id: &str) -> String {
    format!("[{id}](https://security-tracker.debian.org/tracker/{id})")
}

/// The proposal body: deterministic Markdown (same inputs, same bytes). `branch` is the
/// proposal's branch, for the reproduce-locally commands.
pub fn body(
    image: &str,
    branch: &str,
    old: Option<&Lock>,
    new: &Lock,
    changes: &[Change],
) -> String {
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
        "\n### Reproduce locally\n\n```sh\ngit fetch origin {branch} && git checkout FETCH_HEAD\nrebake build {image} --no-push --force\nrebake scan {image}\n```\n\n<sub>Generated by rebake. Merging deploys exactly the digest above.</sub>\n"
    ));
    b
}

/// One image's part of a proposal.
#[derive(Debug, Clone)]
pub struct Described {
    pub headline: Headline,
    pub title: String,
    pub body: String,
}

/// A proposal's title and body for the move of `image` from `old` to `new`, on `branch`.
pub fn describe(
    image: &str,
    branch: &str,
    old: Option<&Lock>,
    new: &Lock,
    index: &ReleaseIndex,
    tracker: Option<&Tracker>,
) -> Described {
    let ch = changes(old, new, index, tracker);
    let headline = headline(&ch);
    Described {
        title: headline_title(image, &headline),
        body: body(image, branch, old, new, &ch),
        headline,
    }
}

/// A group proposal's body: a header listing the images it carries (and those of the group
/// already current), then each image's own body under a `## <image>` heading.
pub fn group_body(group: &str, members: &[(&str, &Described)], current: &[&str]) -> String {
    let mut b = format!(
        "rebake rebuilt {} of group **{group}** from verified Debian packages and tested them; \
         merging deploys each image's tested digest.\n\n",
        if members.len() == 1 {
            "one image"
        } else {
            "the images"
        }
    );
    for (_, d) in members {
        b.push_str(&format!("- {}\n", d.title));
    }
    if !current.is_empty() {
        b.push_str(&format!(
            "\nAlready current, not in this proposal: {}.\n",
            current.join(", ")
        ));
    }
    for (name, d) in members {
        b.push_str(&format!("\n## {name}\n\n{}", d.body));
    }
    b
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
    let mut results = Vec::new();
    let mut opened = 0u32;
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
    results.sort_by(|a, b| a.image.cmp(&b.image));
    Ok(results)
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
                    changed.extend(crate::deploy::rewrite_manifests(
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
) -> anyhow::Result<Vec<ProposeResult>> {
    let branch = unit.branch.as_str();
    let (current, pending): (Vec<&Policy>, Vec<&Policy>) = unit
        .members
        .iter()
        .copied()
        .partition(|p| builder.is_current(scratch, p));
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
    let branch_head = {
        let b = branch.to_string();
        with_workspace(run, move |ws| ws.remote_head(&b)).await?
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
            Some(head) => branch_holds_current(run, builder, scratch, p, head).await?,
            None => false,
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
    for ((p, old), lock) in pending.iter().zip(&default_locks).zip(&locks) {
        described.push(describe(
            &p.name,
            branch,
            old.as_ref(),
            lock,
            builder.index(p)?,
            run.tracker.as_ref(),
        ));
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
    let detail = (action == Action::Skipped).then(cap_note);
    rows.extend(rows_for(&pending, action, p.as_ref(), Some(title), detail));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::{ImageRef, TestSummary};

    fn change(source: &str, old: Option<&str>, new: &str, security: bool, cves: &[&str]) -> Change {
        Change {
            source: source.into(),
            old: old.map(String::from),
            new: Some(new.into()),
            suite: Some(
                if security {
                    "trixie-security"
                } else {
                    "trixie"
                }
                .into(),
            ),
            security,
            binaries: vec![source.into()],
            cves: cves
                .iter()
                .map(|id| CveFix {
                    id: id.to_string(),
                    urgency: None,
                    status: "resolved".into(),
                    note: None,
                })
                .collect(),
            advisories: Vec::new(),
        }
    }

    fn lock(name: &str) -> Lock {
        Lock {
            lock_version: 1,
            name: name.into(),
            suite: "trixie".into(),
            architecture: "amd64".into(),
            archive: Vec::new(),
            base: None,
            packages: Vec::new(),
            image: Some(ImageRef {
                id: format!("sha256:{name}"),
                digest: None,
            }),
            tests: Some(TestSummary {
                passed: true,
                results: Vec::new(),
            }),
        }
    }

    fn security() -> Vec<Change> {
        vec![
            change(
                "openssl",
                Some("3.5.1-1"),
                "3.5.4-1",
                true,
                &["CVE-2025-1", "CVE-2025-2"],
            ),
            change("zlib", Some("1.3-1"), "1.3-2", false, &[]),
        ]
    }

    #[test]
    fn one_image_titles() {
        assert_eq!(
            title("nginx", &security()),
            "nginx: security update (openssl 3.5.1-1 → 3.5.4-1 and 1 more, 2 CVEs)"
        );
        let point = [change(
            "libpq",
            Some("17.5-1"),
            "17.6-1",
            false,
            &["CVE-2025-3"],
        )];
        assert_eq!(
            title("postgres", &point),
            "postgres: update (libpq 17.5-1 → 17.6-1, 1 CVE)"
        );
        let first = [
            change("bash", None, "5.2-1", false, &[]),
            change("dash", None, "0.5-1", false, &[]),
        ];
        assert_eq!(
            title("debian", &first),
            "debian: first build (2 source packages)"
        );
        assert_eq!(title("debian", &[]), "debian: rebuild");
    }

    #[test]
    fn group_title_names_each_image_under_the_most_pressing_kind() {
        let nginx = headline(&security());
        let postgres = headline(&[change("libpq", Some("17.5-1"), "17.6-1", false, &[])]);
        let fresh = headline(&[change("bash", None, "5.2-1", false, &[])]);
        let rebuilt = headline(&[]);
        assert_eq!(
            group_title(
                "web",
                &[
                    ("nginx", &nginx),
                    ("postgres", &postgres),
                    ("ticker", &fresh),
                    ("proxy", &rebuilt)
                ]
            ),
            "web images: security update — nginx (openssl 3.5.1-1 → 3.5.4-1 and 1 more, 2 CVEs), \
             postgres (update, libpq 17.5-1 → 17.6-1), ticker (first build, 1 source packages), \
             proxy (rebuild)"
        );
        assert_eq!(
            group_title("pair", &[("a", &fresh), ("b", &fresh)]),
            "pair images: first build — a (1 source packages), b (1 source packages)"
        );
        assert_eq!(
            group_title("pair", &[("a", &rebuilt), ("b", &rebuilt)]),
            "pair images: rebuild — a, b"
        );
    }

    #[test]
    fn a_long_group_title_summarises_the_rest() {
        let h = headline(&security());
        let names: Vec<String> = (0..20).map(|i| format!("image-{i:02}")).collect();
        let members: Vec<(&str, &Headline)> = names.iter().map(|n| (n.as_str(), &h)).collect();
        let t = group_title("many", &members);
        assert!(t.chars().count() <= MAX_GROUP_TITLE_CHARS, "{t}");
        let shown = names.iter().filter(|n| t.contains(n.as_str())).count();
        assert!(shown >= 2, "{t}");
        assert!(t.ends_with(&format!(", +{} more", 20 - shown)), "{t}");
        assert_eq!(t, group_title("many", &members), "deterministic");
        // One image whose headline alone is too long is cut, never over the limit.
        let long = Headline {
            kind: Kind::Update,
            detail: Some("x".repeat(400)),
        };
        let t = group_title("g", &[("a", &long), ("b", &long)]);
        assert_eq!(t.chars().count(), MAX_GROUP_TITLE_CHARS);
        assert!(t.ends_with('…'), "{t}");
    }

    #[test]
    fn group_body_lists_the_images_then_each_body() {
        let branch = "rebake/group/web";
        let describe_one = |name: &str, ch: &[Change]| {
            let headline = headline(ch);
            Described {
                title: headline_title(name, &headline),
                body: body(name, branch, None, &lock(name), ch),
                headline,
            }
        };
        let nginx = describe_one("nginx", &security());
        let postgres = describe_one(
            "postgres",
            &[change("libpq", Some("17.5-1"), "17.6-1", false, &[])],
        );
        let b = group_body(
            "web",
            &[("nginx", &nginx), ("postgres", &postgres)],
            &["redis"],
        );
        assert!(
            b.starts_with("rebake rebuilt the images of group **web** "),
            "{b}"
        );
        let header = format!("\n\n- {}\n- {}\n", nginx.title, postgres.title);
        assert!(b.contains(&header), "{b}");
        assert!(
            b.contains("\nAlready current, not in this proposal: redis.\n"),
            "{b}"
        );
        let at = |s: &str| {
            b.find(s)
                .unwrap_or_else(|| panic!("{s} missing from:\n{b}"))
        };
        assert!(at("\n## nginx\n\n") < at("\n## postgres\n\n"));
        assert!(b.contains(&format!("\n## nginx\n\n{}", nginx.body)), "{b}");
        assert!(b.ends_with(&postgres.body), "{b}");
        assert!(b.contains("git fetch origin rebake/group/web &&"), "{b}");
        assert!(!b.contains("origin rebake/nginx"), "{b}");
        assert_eq!(
            b,
            group_body(
                "web",
                &[("nginx", &nginx), ("postgres", &postgres)],
                &["redis"]
            ),
            "deterministic"
        );
        let alone = group_body("web", &[("nginx", &nginx)], &[]);
        assert!(
            alone.starts_with("rebake rebuilt one image of group **web**"),
            "{alone}"
        );
        assert!(!alone.contains("Already current"), "{alone}");
    }

    #[test]
    fn a_body_too_long_for_the_forge_is_cut_at_a_line_with_a_note() {
        let short = "| a | b |\n";
        assert_eq!(fit_body(short, "abc"), short);
        let line = "| libfoo | 1.0-1 → 1.0-2 | trixie-security | yes | libfoo1 libfoo-dev |\n";
        let long = line.repeat(MAX_BODY_CHARS / line.chars().count() + 10);
        let fitted = fit_body(&long, "0123abcd");
        assert!(fitted.chars().count() <= MAX_BODY_CHARS);
        assert!(
            fitted.ends_with("message of commit 0123abcd.*\n"),
            "{}",
            &fitted[fitted.len() - 200..]
        );
        let kept = fitted.split("\n\n*…").next().unwrap();
        assert!(
            kept.lines().all(|l| l == line.trim_end()),
            "cut inside a line"
        );
    }
}
