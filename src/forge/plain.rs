//! The plain-git forge: the default when rebake.yaml names no forge.
//!
//! There is no server holding pull requests, so a proposal **is** the branch `rebake/<image>` on
//! the repository's `origin`:
//!
//! - its title and body are the head commit's message (title on the first line, body after a
//!   blank line — see [`PlainGit::message`] and [`PlainGit::split_message`]);
//! - it is open while origin has the branch and the default branch does not contain its head;
//! - it is merged once the default branch contains the head commit (merge, fast-forward, or a
//!   human merging and then deleting the branch);
//! - closing it deletes the branch, leased on the head rebake last saw.
//!
//! What a forge would keep for us is kept under `<state_dir>/plain-git/`:
//!
//! - `<remote>.log`: one JSON line per proposal event (`create` with labels, reviewers and
//!   assignees; `comment`; `close`; `close-refused`) — the deployment/comment log;
//! - `<remote>.heads.json`: the last head seen of each proposal branch, so that a branch deleted
//!   after a merge is still reported as merged by [`PlainGit::get_branch`];
//! - `statuses.json`: commit statuses, keyed by commit and context.
//!
//! `<remote>` is origin's URL (without any secret) reduced to a file name.
//!
//! ## Numbers
//!
//! Every plain-git proposal has number 0, so the [`Forge`] methods that take a number cannot
//! tell proposals apart. The propose stage uses the inherent, branch-based methods instead:
//! [`PlainGit::get_branch`], [`PlainGit::update_branch`], [`PlainGit::comment_on_branch`] and
//! [`PlainGit::close_branch`]. The trait methods behave as follows:
//!
//! - [`Forge::update`] checks the branch of the last proposal this `PlainGit` returned
//!   (from `find_open`, `create` or `get_branch`);
//! - [`Forge::comment`] logs the comment with branch `"unknown"`;
//! - [`Forge::close`] and [`Forge::get`] are [`ForgeError::Invalid`].
//!
//! All git work is blocking (libgit2) and runs on tokio's blocking pool, one operation at a time
//! per `PlainGit`, each opening the [`Workspace`] afresh (it is not `Sync`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::Oid;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Forge, ForgeError, ForgeResult, MergeOutcome, MergeRequest, NewProposal, Proposal,
    ProposalState, StatusState,
};
use crate::git::{redact_url, Auth, PushOutcome, Workspace};

/// The name in messages.
const NAME: &str = "git";

/// How many first-parent commits of the default branch are searched for a merge commit.
const MERGE_SEARCH_LIMIT: usize = 20_000;

/// The plain-git forge: proposals are branches of `origin`.
pub struct PlainGit {
    inner: Arc<Inner>,
    /// The branch of the last proposal returned, for [`Forge::update`].
    last_branch: Mutex<Option<String>>,
}

impl std::fmt::Debug for PlainGit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainGit")
            .field("workspace", &self.inner.workspace_dir)
            .field("origin", &self.inner.display_url)
            .field("auth", &self.inner.auth)
            .field("state", &self.inner.state_dir)
            .finish()
    }
}

struct Inner {
    workspace_dir: PathBuf,
    remote_url: String,
    display_url: String,
    auth: Auth,
    /// `<state_dir>/plain-git`.
    state_dir: PathBuf,
    /// `<remote>.log`.
    log_path: PathBuf,
    /// `<remote>.heads.json`.
    heads_path: PathBuf,
    /// `statuses.json`.
    statuses_path: PathBuf,
    /// One git operation (and one state-file update) at a time.
    lock: Mutex<()>,
}

/// One stored commit status.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredStatus {
    state: String,
    description: String,
    updated: String,
}

/// `sha` → context → status.
type Statuses = BTreeMap<String, BTreeMap<String, StoredStatus>>;

impl PlainGit {
    /// A plain-git forge on the workspace at `workspace_dir` (rebake's bare clone, already
    /// opened or cloned by the caller), whose `origin` is `remote_url`, authenticating with
    /// `auth`, keeping its records under `<state_dir>/plain-git/`.
    pub fn new(workspace_dir: &Path, remote_url: &str, auth: Auth, state_dir: &Path) -> PlainGit {
        let display_url = redact_url(remote_url);
        let state_dir = state_dir.join("plain-git");
        let stem = sanitize(&display_url);
        PlainGit {
            inner: Arc::new(Inner {
                workspace_dir: workspace_dir.to_path_buf(),
                remote_url: remote_url.to_owned(),
                log_path: state_dir.join(format!("{stem}.log")),
                heads_path: state_dir.join(format!("{stem}.heads.json")),
                statuses_path: state_dir.join("statuses.json"),
                state_dir,
                display_url,
                auth,
                lock: Mutex::new(()),
            }),
            last_branch: Mutex::new(None),
        }
    }

    /// The proposal log (one JSON object per line).
    pub fn log_path(&self) -> &Path {
        &self.inner.log_path
    }

    /// The file holding commit statuses.
    pub fn statuses_path(&self) -> &Path {
        &self.inner.statuses_path
    }

    /// The commit message that carries a proposal: `title`, a blank line, `body` (just the
    /// title when the body is empty). `title` must be a single line.
    pub fn message(title: &str, body: &str) -> String {
        if body.is_empty() {
            title.to_owned()
        } else {
            format!("{title}\n\n{body}")
        }
    }

    /// A commit message as (title, body): the first line, and what follows the blank line
    /// after it (everything after the first line when there is no blank line).
    pub fn split_message(message: &str) -> (String, String) {
        let (title, rest) = message.split_once('\n').unwrap_or((message, ""));
        let body = rest
            .strip_prefix("\r\n")
            .or_else(|| rest.strip_prefix('\n'))
            .unwrap_or(rest);
        (title.trim_end().to_owned(), body.to_owned())
    }

    /// The proposal on `branch` in any state, as of a fresh fetch: open, merged (the default
    /// branch contains its head; `merge_commit` is the first commit of the default branch's
    /// first-parent history that does), or closed (the branch is gone and its last known head
    /// is not on the default branch). A deleted branch is found through the last head this
    /// forge saw of it; `None` when origin has no such branch and it never saw one.
    pub async fn get_branch(&self, branch: &str) -> ForgeResult<Option<Proposal>> {
        let branch = branch.to_owned();
        let found = self
            .blocking(move |inner| {
                let ws = inner.open()?;
                inner.fetch(&ws)?;
                inner.lookup(&ws, &branch)
            })
            .await?;
        if let Some(p) = &found {
            self.remember(&p.head_branch);
        }
        Ok(found)
    }

    /// [`Forge::update`] for `branch`: the title and body live in the head commit's message,
    /// so nothing can be rewritten here. Succeeds when the head message already says `title`
    /// and `body` (trailing whitespace aside); otherwise [`ForgeError::Conflict`] — the caller
    /// must push a new head commit with that message.
    pub async fn update_branch(&self, branch: &str, title: &str, body: &str) -> ForgeResult<()> {
        let (branch, title, body) = (branch.to_owned(), title.to_owned(), body.to_owned());
        self.blocking(move |inner| {
            let ws = inner.open()?;
            inner.fetch(&ws)?;
            let Some(head) = inner.head(&ws, &branch)? else {
                return Err(inner.not_found(&branch));
            };
            let message = ws.commit_message(head).map_err(|e| inner.git_error(e))?;
            let (have_title, have_body) = PlainGit::split_message(&message);
            if same_text(&have_title, &title) && same_text(&have_body, &body) {
                Ok(())
            } else {
                Err(inner.conflict(format!(
                    "the title and body of a plain-git proposal are the message of the head \
                     commit of {branch} ({head}), which says something else: push a new head \
                     commit whose message is the new title and body"
                )))
            }
        })
        .await
    }

    /// Records a comment on the proposal `branch` in the proposal log (there is nowhere else
    /// to put it).
    pub async fn comment_on_branch(&self, branch: &str, body: &str) -> ForgeResult<()> {
        let entry = json!({
            "time": now(),
            "branch": branch,
            "kind": "comment",
            "body": body,
        });
        self.blocking(move |inner| inner.log(&entry)).await
    }

    /// Closes the proposal `branch` by deleting the branch on origin, if and only if origin
    /// still has it at `expected_head` (a hex commit id). Returns what happened:
    /// [`PushOutcome::Pushed`] when the branch is gone (already-gone counts), or
    /// [`PushOutcome::LeaseBroken`] when someone moved it, in which case it is left alone.
    /// Both are recorded in the proposal log.
    pub async fn close_branch(
        &self,
        branch: &str,
        expected_head: &str,
    ) -> ForgeResult<PushOutcome> {
        let expected = parse_oid(expected_head)?;
        let branch = branch.to_owned();
        self.blocking(move |inner| {
            let ws = inner.open()?;
            let outcome = ws
                .delete_remote_branch(&branch, expected)
                .map_err(|e| inner.git_error(e))?;
            let entry = match outcome {
                PushOutcome::Pushed => json!({
                    "time": now(),
                    "branch": branch,
                    "kind": "close",
                    "head_sha": expected.to_string(),
                }),
                PushOutcome::LeaseBroken { remote } => json!({
                    "time": now(),
                    "branch": branch,
                    "kind": "close-refused",
                    "head_sha": expected.to_string(),
                    "remote_head": remote.map(|o| o.to_string()),
                }),
            };
            inner.log(&entry)?;
            Ok(outcome)
        })
        .await
    }

    fn remember(&self, branch: &str) {
        *self.last_branch.lock().unwrap_or_else(|e| e.into_inner()) = Some(branch.to_owned());
    }

    fn last_branch(&self) -> Option<String> {
        self.last_branch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `f` on the blocking pool, one at a time.
    async fn blocking<T, F>(&self, f: F) -> ForgeResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> ForgeResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _guard = inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            f(&inner)
        })
        .await
        .map_err(|e| ForgeError::Network {
            forge: NAME.to_owned(),
            message: format!("the git task failed: {e}"),
        })?
    }

    fn invalid(&self, message: &str) -> ForgeError {
        ForgeError::Invalid {
            forge: NAME.to_owned(),
            status: 0,
            message: message.to_owned(),
        }
    }

    fn check_number(&self, number: u64) -> ForgeResult<()> {
        if number == 0 {
            Ok(())
        } else {
            Err(ForgeError::NotFound {
                forge: NAME.to_owned(),
                what: format!("proposal #{number} (plain-git proposals are all number 0)"),
            })
        }
    }
}

impl Inner {
    fn open(&self) -> ForgeResult<Workspace> {
        Workspace::open_or_clone(&self.remote_url, &self.workspace_dir, &self.auth)
            .map_err(|e| self.git_error(e))
    }

    fn fetch(&self, ws: &Workspace) -> ForgeResult<()> {
        ws.fetch().map_err(|e| self.git_error(e))
    }

    /// origin's `branch` as of the last fetch.
    fn head(&self, ws: &Workspace, branch: &str) -> ForgeResult<Option<Oid>> {
        ws.remote_head(branch).map_err(|e| self.git_error(e))
    }

    /// The default branch and its head, as of the last fetch.
    fn default_head(&self, ws: &Workspace) -> ForgeResult<(String, Oid)> {
        let default = ws.default_branch().map_err(|e| self.git_error(e))?;
        let head = self
            .head(ws, &default)?
            .ok_or_else(|| ForgeError::NotFound {
                forge: NAME.to_owned(),
                what: format!("branch {default} on {}", self.display_url),
            })?;
        Ok((default, head))
    }

    /// The proposal on `branch`, in whatever state (see [`PlainGit::get_branch`]).
    fn lookup(&self, ws: &Workspace, branch: &str) -> ForgeResult<Option<Proposal>> {
        let (default, default_head) = self.default_head(ws)?;
        let (head, exists) = match self.head(ws, branch)? {
            Some(head) => {
                self.remember_head(branch, head)?;
                (head, true)
            }
            None => match self.known_head(branch)? {
                Some(head) if ws.repo().find_commit(head).is_ok() => (head, false),
                _ => return Ok(None),
            },
        };
        let merged = ws
            .is_ancestor(head, default_head)
            .map_err(|e| self.git_error(e))?;
        let (state, merge_commit) = if merged {
            let merge = self.merge_commit(ws, head, default_head)?;
            (ProposalState::Merged, Some(merge.to_string()))
        } else if exists {
            (ProposalState::Open, None)
        } else {
            (ProposalState::Closed, None)
        };
        let message = ws.commit_message(head).map_err(|e| self.git_error(e))?;
        let (title, body) = PlainGit::split_message(&message);
        Ok(Some(Proposal {
            number: 0,
            url: format!("{}#{branch}", self.display_url),
            title,
            body,
            head_branch: branch.to_owned(),
            head_sha: head.to_string(),
            base_branch: default,
            state,
            merge_commit,
            labels: Vec::new(),
        }))
    }

    /// The oldest commit of `default_head`'s first-parent history that contains `head` (the
    /// merge commit, or `head` itself after a fast-forward). The commits that contain it are
    /// a prefix of that history, so a binary search finds the boundary.
    fn merge_commit(&self, ws: &Workspace, head: Oid, default_head: Oid) -> ForgeResult<Oid> {
        let chain = ws.log_first_parent(default_head, MERGE_SEARCH_LIMIT);
        // chain[..lo] contain head; chain[hi..] do not.
        let (mut lo, mut hi) = (0, chain.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if ws
                .is_ancestor(head, chain[mid])
                .map_err(|e| self.git_error(e))?
            {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo.checked_sub(1).map(|i| chain[i]).unwrap_or(default_head))
    }

    fn git_error(&self, e: anyhow::Error) -> ForgeError {
        let message = format!("{e:#}").replace(&self.remote_url, &self.display_url);
        if message.contains("authentication to") || message.contains("asks for credentials") {
            return ForgeError::Unauthorized {
                forge: NAME.to_owned(),
                status: 401,
                permission: format!("read and push access to {} ({message})", self.display_url),
            };
        }
        ForgeError::Network {
            forge: NAME.to_owned(),
            message,
        }
    }

    fn conflict(&self, message: String) -> ForgeError {
        ForgeError::Conflict {
            forge: NAME.to_owned(),
            message,
        }
    }

    fn not_found(&self, branch: &str) -> ForgeError {
        ForgeError::NotFound {
            forge: NAME.to_owned(),
            what: format!("branch {branch} on {}", self.display_url),
        }
    }

    fn state_error(&self, what: &str, e: impl std::fmt::Display) -> ForgeError {
        ForgeError::Network {
            forge: NAME.to_owned(),
            message: format!("{what}: {e}"),
        }
    }

    /// Appends one JSON line to the proposal log.
    fn log(&self, entry: &serde_json::Value) -> ForgeResult<()> {
        let path = &self.log_path;
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.state_dir)?;
            let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
            line.push(b'\n');
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            file.write_all(&line)
        };
        write().map_err(|e| self.state_error(&format!("cannot append to {}", path.display()), e))
    }

    fn known_heads(&self) -> ForgeResult<BTreeMap<String, String>> {
        read_json(&self.heads_path).map_err(|e| self.state_error("cannot read known heads", e))
    }

    fn known_head(&self, branch: &str) -> ForgeResult<Option<Oid>> {
        Ok(self
            .known_heads()?
            .get(branch)
            .and_then(|hex| Oid::from_str(hex).ok()))
    }

    fn remember_head(&self, branch: &str, head: Oid) -> ForgeResult<()> {
        let mut heads = self.known_heads()?;
        let hex = head.to_string();
        if heads.get(branch) == Some(&hex) {
            return Ok(());
        }
        heads.insert(branch.to_owned(), hex);
        write_json(&self.heads_path, &heads)
            .map_err(|e| self.state_error("cannot record the branch head", e))
    }

    fn statuses(&self) -> ForgeResult<Statuses> {
        read_json(&self.statuses_path).map_err(|e| {
            self.state_error(&format!("cannot read {}", self.statuses_path.display()), e)
        })
    }
}

impl Forge for PlainGit {
    async fn comment_on(&self, proposal: &Proposal, body: &str) -> ForgeResult<()> {
        self.comment_on_branch(&proposal.head_branch, body).await
    }

    async fn statuses(&self, sha: &str) -> ForgeResult<Vec<(String, StatusState)>> {
        let sha = parse_oid(sha)?.to_string();
        self.blocking(move |inner| {
            let statuses = inner.statuses()?;
            Ok(statuses
                .get(&sha)
                .into_iter()
                .flatten()
                .filter_map(|(c, s)| Some((c.clone(), parse_state(&s.state)?)))
                .collect())
        })
        .await
    }

    /// Plain git has no reviews.
    async fn changes_requested(&self, number: u64) -> ForgeResult<Vec<String>> {
        self.check_number(number)?;
        Ok(Vec::new())
    }

    /// A fast-forward of the default branch to the proposal head when it is on top of it, else
    /// a merge commit; pushed with a lease on the default branch's head (a push someone made
    /// meanwhile is never overwritten) and only while the proposal branch is still at the head
    /// rebake checked. Logged as `merge`.
    async fn merge(
        &self,
        proposal: &Proposal,
        request: &MergeRequest,
    ) -> ForgeResult<MergeOutcome> {
        let head = parse_oid(&proposal.head_sha)?;
        let branch = proposal.head_branch.clone();
        let request = request.clone();
        self.blocking(move |inner| {
            let ws = inner.open()?;
            inner.fetch(&ws)?;
            match inner.head(&ws, &branch)? {
                Some(h) if h == head => {}
                other => {
                    return Ok(MergeOutcome::NotMerged(format!(
                        "branch {branch} is at {} now, not at {head}, which rebake checked",
                        other
                            .map(|o| o.to_string())
                            .unwrap_or_else(|| "nothing".into())
                    )))
                }
            }
            let (default, base) = inner.default_head(&ws)?;
            let on_top = ws.is_ancestor(base, head).map_err(|e| inner.git_error(e))?;
            let new = if on_top {
                head
            } else {
                let message = format!(
                    "{}\n\nMerge branch '{branch}' (rebake automerge)",
                    request.title
                );
                match ws
                    .merge_commit(base, head, &message, &request.committer)
                    .map_err(|e| inner.git_error(e))?
                {
                    Some(c) => c,
                    None => {
                        return Ok(MergeOutcome::NotMerged(format!(
                            "{branch} conflicts with {default}"
                        )))
                    }
                }
            };
            match ws
                .push_with_lease(&default, new, Some(base))
                .map_err(|e| inner.git_error(e))?
            {
                PushOutcome::Pushed => {
                    inner.log(&json!({
                        "time": now(),
                        "branch": branch,
                        "kind": "merge",
                        "head_sha": head.to_string(),
                        "merge_commit": new.to_string(),
                        "fast_forward": on_top,
                    }))?;
                    Ok(MergeOutcome::Merged {
                        commit: Some(new.to_string()),
                    })
                }
                PushOutcome::LeaseBroken { .. } => Ok(MergeOutcome::NotMerged(format!(
                    "{default} moved while rebake merged; the next run tries again"
                ))),
            }
        })
        .await
    }

    /// A plain-git proposal is its branch: log the note, delete the branch (leased on the
    /// head the proposal was read at, so a human's newer commit is never deleted).
    async fn close_with_comment(&self, proposal: &Proposal, comment: &str) -> ForgeResult<()> {
        self.comment_on_branch(&proposal.head_branch, comment)
            .await?;
        match self
            .close_branch(&proposal.head_branch, &proposal.head_sha)
            .await?
        {
            PushOutcome::Pushed => Ok(()),
            PushOutcome::LeaseBroken { .. } => Err(ForgeError::Conflict {
                forge: "git".into(),
                message: format!(
                    "branch {} moved since it was read; not deleting it",
                    proposal.head_branch
                ),
            }),
        }
    }

    fn name(&self) -> &str {
        NAME
    }

    /// Fetches; the proposal when origin has `branch` and the default branch does not contain
    /// its head (a merged branch is not open).
    async fn find_open(&self, branch: &str) -> ForgeResult<Option<Proposal>> {
        let found = self.get_branch(branch).await?;
        Ok(found.filter(|p| p.state == ProposalState::Open))
    }

    /// The caller has already pushed `new.head_branch` with a head commit whose message is the
    /// title and body; this checks that and returns the proposal. Labels, reviewers and
    /// assignees are only recorded in the proposal log (the returned proposal has no labels,
    /// like every plain-git proposal).
    async fn create(&self, new: &NewProposal) -> ForgeResult<Proposal> {
        let new = new.clone();
        let proposal = self
            .blocking(move |inner| {
                let ws = inner.open()?;
                inner.fetch(&ws)?;
                if inner.head(&ws, &new.head_branch)?.is_none() {
                    return Err(ForgeError::NotFound {
                        forge: NAME.to_owned(),
                        what: format!(
                            "branch {} on {} (on plain git, push the branch before proposing it)",
                            new.head_branch, inner.display_url
                        ),
                    });
                }
                let Some(proposal) = inner.lookup(&ws, &new.head_branch)? else {
                    return Err(inner.not_found(&new.head_branch));
                };
                if proposal.state != ProposalState::Open {
                    return Err(inner.conflict(format!(
                        "the head of {} ({}) is already on {}: there is nothing to propose",
                        new.head_branch, proposal.head_sha, proposal.base_branch
                    )));
                }
                if !same_text(&proposal.title, &new.title) {
                    return Err(inner.conflict(format!(
                        "the head commit of {} ({}) is titled {:?}, not {:?}: its message must \
                         be the proposal's title and body",
                        new.head_branch, proposal.head_sha, proposal.title, new.title
                    )));
                }
                inner.log(&json!({
                    "time": now(),
                    "branch": new.head_branch,
                    "kind": "create",
                    "title": new.title,
                    "head_sha": proposal.head_sha,
                    "base_branch": proposal.base_branch,
                    "labels": new.labels,
                    "reviewers": new.reviewers,
                    "assignees": new.assignees,
                }))?;
                Ok(proposal)
            })
            .await?;
        self.remember(&proposal.head_branch);
        Ok(proposal)
    }

    /// Checks the branch of the last proposal this forge returned: see
    /// [`PlainGit::update_branch`]. Invalid when it has returned none yet.
    async fn update(&self, number: u64, title: &str, body: &str) -> ForgeResult<()> {
        self.check_number(number)?;
        let Some(branch) = self.last_branch() else {
            return Err(self.invalid(
                "plain-git proposals have no number: look the proposal up by branch first, or \
                 use PlainGit::update_branch",
            ));
        };
        self.update_branch(&branch, title, body).await
    }

    /// Logs the comment with branch "unknown": plain-git proposals are all number 0. Use
    /// [`PlainGit::comment_on_branch`].
    async fn comment(&self, number: u64, body: &str) -> ForgeResult<()> {
        self.check_number(number)?;
        self.comment_on_branch("unknown", body).await
    }

    /// Invalid: closing deletes a branch, which needs the branch and its expected head; use
    /// [`PlainGit::close_branch`].
    async fn close(&self, number: u64) -> ForgeResult<()> {
        self.check_number(number)?;
        Err(self.invalid(
            "a plain-git proposal is closed by deleting its branch: use \
             PlainGit::close_branch(branch, expected_head)",
        ))
    }

    /// Invalid: plain-git proposals have no number; use [`PlainGit::get_branch`].
    async fn get(&self, number: u64) -> ForgeResult<Proposal> {
        self.check_number(number)?;
        Err(self.invalid("plain-git proposals have no number: use PlainGit::get_branch(branch)"))
    }

    /// Stored in `<state_dir>/plain-git/statuses.json` (no forge holds them).
    async fn set_status(
        &self,
        sha: &str,
        state: StatusState,
        context: &str,
        description: &str,
    ) -> ForgeResult<()> {
        let sha = parse_oid(sha)?.to_string();
        let (context, description) = (context.to_owned(), description.to_owned());
        self.blocking(move |inner| {
            let mut statuses = inner.statuses()?;
            statuses.entry(sha).or_default().insert(
                context,
                StoredStatus {
                    state: state_name(state).to_owned(),
                    description,
                    updated: now(),
                },
            );
            write_json(&inner.statuses_path, &statuses).map_err(|e| {
                inner.state_error(
                    &format!("cannot write {}", inner.statuses_path.display()),
                    e,
                )
            })
        })
        .await
    }

    async fn status(&self, sha: &str, context: &str) -> ForgeResult<Option<StatusState>> {
        let sha = parse_oid(sha)?.to_string();
        let context = context.to_owned();
        self.blocking(move |inner| {
            let statuses = inner.statuses()?;
            Ok(statuses
                .get(&sha)
                .and_then(|by_context| by_context.get(&context))
                .and_then(|s| parse_state(&s.state)))
        })
        .await
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse_oid(hex: &str) -> ForgeResult<Oid> {
    let valid = !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    valid
        .then(|| Oid::from_str(hex).ok())
        .flatten()
        .filter(|oid| !oid.is_zero())
        .ok_or_else(|| ForgeError::Invalid {
            forge: NAME.to_owned(),
            status: 0,
            message: format!("{hex:?} is not a commit id"),
        })
}

fn state_name(state: StatusState) -> &'static str {
    match state {
        StatusState::Pending => "pending",
        StatusState::Success => "success",
        StatusState::Failure => "failure",
        StatusState::Error => "error",
    }
}

fn parse_state(name: &str) -> Option<StatusState> {
    Some(match name {
        "pending" => StatusState::Pending,
        "success" => StatusState::Success,
        "failure" => StatusState::Failure,
        "error" => StatusState::Error,
        _ => return None,
    })
}

/// Whether two texts say the same, ignoring trailing whitespace on each line and trailing
/// blank lines (what `git commit` strips from a message).
fn same_text(a: &str, b: &str) -> bool {
    fn normalize(s: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = s.lines().map(str::trim_end).collect();
        while lines.last() == Some(&"") {
            lines.pop();
        }
        lines
    }
    normalize(a) == normalize(b)
}

/// A file name for `url` (already without secrets): every character but ASCII letters, digits,
/// `.`, `-` and `_` becomes `_`; a long name is cut and ends with a hash of the whole URL.
fn sanitize(url: &str) -> String {
    let name: String = url
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_start_matches('.').to_owned();
    if name.len() <= 100 && !name.is_empty() {
        return name;
    }
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(url.as_bytes()));
    format!("{}-{}", &name[..name.len().min(80)], &hash[..12])
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> std::io::Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e),
    }
}

/// Writes `value` to `path` atomically (a temporary file renamed over it).
fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, value).map_err(std::io::Error::other)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
