//! Forges behind one small interface: GitHub (octocrab), Gitea/Forgejo (REST v1 on reqwest),
//! and plain git (a branch whose head commit message is the proposal). The propose and deploy
//! stages only see [`Forge`].

use std::future::Future;
use std::time::Duration;

pub mod gitea;
pub mod github;
pub mod http;
pub mod plain;

/// The commit status context rebake sets on a proposal's head: its tests' result, which the
/// deploy stage checks before it deploys a merged proposal.
pub const STATUS_CONTEXT: &str = "rebake/test";

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProposalState {
    Open,
    Closed,
    Merged,
}

/// A pull request (or, on plain git, a proposal branch).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Proposal {
    /// PR number (plain git: 0).
    pub number: u64,
    pub url: String,
    pub title: String,
    pub body: String,
    /// The proposal's branch, e.g. `rebake/nginx`.
    pub head_branch: String,
    pub head_sha: String,
    pub base_branch: String,
    pub state: ProposalState,
    /// The merge commit on the base branch, once merged.
    pub merge_commit: Option<String>,
    pub labels: Vec<String>,
}

/// What to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProposal {
    pub title: String,
    pub body: String,
    pub head_branch: String,
    pub base_branch: String,
    pub labels: Vec<String>,
    pub reviewers: Vec<String>,
    pub assignees: Vec<String>,
}

/// An issue (not a pull request) rebake keeps up to date: the fleet dashboard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Issue {
    pub number: u64,
    pub url: String,
    pub title: String,
    pub body: String,
    pub open: bool,
}

/// A commit status (GitHub/Gitea `statuses` API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

/// Errors a caller branches on. Messages never contain a token.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("{forge} rejected the token ({status}): it needs {permission}")]
    Unauthorized {
        forge: String,
        status: u16,
        permission: String,
    },
    #[error("{forge}: not found: {what}")]
    NotFound { forge: String, what: String },
    #[error("{forge}: conflict: {message}")]
    Conflict { forge: String, message: String },
    #[error("{forge}: rate limited; retry after {retry_after:?}")]
    RateLimited {
        forge: String,
        retry_after: Duration,
    },
    #[error("{forge}: server error {status} after {attempts} attempts: {message}")]
    Server {
        forge: String,
        status: u16,
        attempts: u32,
        message: String,
    },
    #[error("{forge}: request invalid ({status}): {message}")]
    Invalid {
        forge: String,
        status: u16,
        message: String,
    },
    #[error("{forge}: network error: {message}")]
    Network { forge: String, message: String },
}

pub type ForgeResult<T> = Result<T, ForgeError>;

/// What rebake asks of a merge (`review.automerge`).
#[derive(Debug, Clone)]
pub struct MergeRequest {
    /// The merge commit's title.
    pub title: String,
    /// Let the forge merge later, once its required checks pass, where it can (Gitea's "merge
    /// when checks succeed"); elsewhere the merge waits for the next run.
    pub when_checks_succeed: bool,
    /// Who makes a merge commit where rebake makes it (plain git).
    pub committer: crate::git::Identity,
}

/// How a merge went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Merged now; the merge commit when known.
    Merged { commit: Option<String> },
    /// The forge merges it once its required checks pass.
    Scheduled,
    /// Not merged, and why (a required check, a moved head, a conflict); the next run tries
    /// again.
    NotMerged(String),
}

/// A merge request's error as the forge's refusal to merge now — 405 (not mergeable now:
/// required checks, reviews, protection, a conflict), 409 (the head moved, a conflict) or 422
/// (the head is not mergeable): the next run tries again. Any other error stays an error.
pub fn refused_merge(forge: &str, e: ForgeError) -> ForgeResult<MergeOutcome> {
    match e {
        ForgeError::Invalid {
            status: 405 | 422,
            message,
            ..
        }
        | ForgeError::Conflict { message, .. } => Ok(MergeOutcome::NotMerged(format!(
            "{forge} did not merge it: {}",
            http::api_message(&message)
        ))),
        e => Err(e),
    }
}

/// The commit statuses on a commit other than rebake's own `rebake/test`, taken together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtherChecks {
    /// None, or all succeeded.
    Passed,
    /// Some still running: their contexts.
    Pending(Vec<String>),
    /// Some failed: their contexts.
    Failed(Vec<String>),
}

impl OtherChecks {
    /// Sums up `(context, state)` pairs, leaving out rebake's own.
    pub fn of(statuses: &[(String, StatusState)]) -> OtherChecks {
        let others = statuses.iter().filter(|(c, _)| c != STATUS_CONTEXT);
        let failed: Vec<String> = others
            .clone()
            .filter(|(_, s)| matches!(s, StatusState::Failure | StatusState::Error))
            .map(|(c, _)| c.clone())
            .collect();
        if !failed.is_empty() {
            return OtherChecks::Failed(failed);
        }
        let pending: Vec<String> = others
            .filter(|(_, s)| *s == StatusState::Pending)
            .map(|(c, _)| c.clone())
            .collect();
        if pending.is_empty() {
            OtherChecks::Passed
        } else {
            OtherChecks::Pending(pending)
        }
    }
}

/// A review's verdict, as far as automerge cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    ChangesRequested,
    /// Dismissed: whatever the reviewer said before no longer counts.
    Dismissed,
    /// A comment, a pending or requested review: does not change the reviewer's verdict.
    Neutral,
}

/// The reviewers whose latest verdict (in `reviews`, oldest first) asks for changes.
pub fn changes_requested_by(reviews: &[(String, Verdict)]) -> Vec<String> {
    let mut latest: std::collections::BTreeMap<&str, Verdict> = Default::default();
    for (login, verdict) in reviews {
        if *verdict != Verdict::Neutral {
            latest.insert(login, *verdict);
        }
    }
    latest
        .into_iter()
        .filter(|(_, v)| *v == Verdict::ChangesRequested)
        .map(|(l, _)| l.to_string())
        .collect()
}

/// The operations the propose and deploy stages need. Implementations retry 5xx and timeouts
/// with backoff and wait out rate limits (Retry-After, X-RateLimit-Reset) themselves.
pub trait Forge: Send + Sync {
    /// A short name for messages: "GitHub", "Gitea", "git".
    fn name(&self) -> &str;
    /// Whether the forge can merge later by itself once checks pass ([`MergeRequest`]).
    fn merges_when_checks_succeed(&self) -> bool {
        false
    }
    /// The open proposal whose head is `branch`, if any (looked up before opening one, so a
    /// proposal is never duplicated).
    fn find_open(&self, branch: &str)
        -> impl Future<Output = ForgeResult<Option<Proposal>>> + Send;
    fn create(&self, new: &NewProposal) -> impl Future<Output = ForgeResult<Proposal>> + Send;
    /// Rewrites title and body.
    fn update(
        &self,
        number: u64,
        title: &str,
        body: &str,
    ) -> impl Future<Output = ForgeResult<()>> + Send;
    fn comment(&self, number: u64, body: &str) -> impl Future<Output = ForgeResult<()>> + Send;
    /// Comments on `proposal` (plain git: logged under its branch).
    fn comment_on(
        &self,
        proposal: &Proposal,
        body: &str,
    ) -> impl Future<Output = ForgeResult<()>> + Send {
        self.comment(proposal.number, body)
    }
    fn close(&self, number: u64) -> impl Future<Output = ForgeResult<()>> + Send;
    fn get(&self, number: u64) -> impl Future<Output = ForgeResult<Proposal>> + Send;
    /// Sets a commit status, e.g. context `rebake/test`.
    fn set_status(
        &self,
        sha: &str,
        state: StatusState,
        context: &str,
        description: &str,
    ) -> impl Future<Output = ForgeResult<()>> + Send;
    /// The state of `context` on `sha` (None: no such status).
    fn status(
        &self,
        sha: &str,
        context: &str,
    ) -> impl Future<Output = ForgeResult<Option<StatusState>>> + Send {
        async move {
            Ok(self
                .statuses(sha)
                .await?
                .into_iter()
                .find(|(c, _)| c == context)
                .map(|(_, s)| s))
        }
    }
    /// Every commit status on `sha`, the latest per context.
    fn statuses(
        &self,
        sha: &str,
    ) -> impl Future<Output = ForgeResult<Vec<(String, StatusState)>>> + Send;
    /// The reviewers whose latest review of proposal `number` asks for changes.
    fn changes_requested(
        &self,
        number: u64,
    ) -> impl Future<Output = ForgeResult<Vec<String>>> + Send;
    /// Merges `proposal` at its `head_sha` (never a newer head) into its base branch.
    fn merge(
        &self,
        proposal: &Proposal,
        request: &MergeRequest,
    ) -> impl Future<Output = ForgeResult<MergeOutcome>> + Send;
    /// Cancels a merge the forge scheduled for when checks succeed; whether there was one.
    fn cancel_scheduled_merge(
        &self,
        proposal: &Proposal,
    ) -> impl Future<Output = ForgeResult<bool>> + Send {
        let _ = proposal;
        async { Ok(false) }
    }
    /// Whether the forge keeps issues (plain git does not: `rebake status` is its fleet view).
    fn has_issues(&self) -> bool {
        false
    }
    /// Every issue (open or closed, never a pull request) carrying `label`, oldest first.
    fn issues_labelled(&self, label: &str) -> impl Future<Output = ForgeResult<Vec<Issue>>> + Send {
        let _ = label;
        async { Ok(Vec::new()) }
    }
    /// Opens an issue with `labels` (created when the repository lacks them).
    fn create_issue(
        &self,
        title: &str,
        body: &str,
        labels: &[String],
    ) -> impl Future<Output = ForgeResult<Issue>> + Send {
        let _ = (title, body, labels);
        async move { Err(self.no_issues()) }
    }
    /// Rewrites an issue's title and body, and opens or closes it.
    fn edit_issue(
        &self,
        number: u64,
        title: &str,
        body: &str,
        open: bool,
    ) -> impl Future<Output = ForgeResult<()>> + Send {
        let _ = (number, title, body, open);
        async move { Err(self.no_issues()) }
    }
    /// The error of an issue operation on a forge without issues.
    fn no_issues(&self) -> ForgeError {
        ForgeError::Invalid {
            forge: self.name().to_string(),
            status: 0,
            message: "this forge keeps no issues; `rebake status` shows the fleet".into(),
        }
    }
    /// Says why, then closes. (Plain git: logs the note and deletes the branch, leased.)
    fn close_with_comment(
        &self,
        proposal: &Proposal,
        comment: &str,
    ) -> impl Future<Output = ForgeResult<()>> + Send {
        async move {
            self.comment(proposal.number, comment).await?;
            self.close(proposal.number).await
        }
    }
}

/// The configured forge: one of the three, chosen from rebake.yaml.
pub enum AnyForge {
    GitHub(github::GitHub),
    Gitea(gitea::Gitea),
    Plain(plain::PlainGit),
}

macro_rules! each_forge {
    ($self:ident, $f:ident => $e:expr) => {
        match $self {
            AnyForge::GitHub($f) => $e,
            AnyForge::Gitea($f) => $e,
            AnyForge::Plain($f) => $e,
        }
    };
}

impl Forge for AnyForge {
    fn name(&self) -> &str {
        each_forge!(self, f => f.name())
    }
    fn merges_when_checks_succeed(&self) -> bool {
        each_forge!(self, f => f.merges_when_checks_succeed())
    }
    async fn find_open(&self, branch: &str) -> ForgeResult<Option<Proposal>> {
        each_forge!(self, f => f.find_open(branch).await)
    }
    async fn create(&self, new: &NewProposal) -> ForgeResult<Proposal> {
        each_forge!(self, f => f.create(new).await)
    }
    async fn update(&self, number: u64, title: &str, body: &str) -> ForgeResult<()> {
        each_forge!(self, f => f.update(number, title, body).await)
    }
    async fn comment(&self, number: u64, body: &str) -> ForgeResult<()> {
        each_forge!(self, f => f.comment(number, body).await)
    }
    async fn comment_on(&self, proposal: &Proposal, body: &str) -> ForgeResult<()> {
        each_forge!(self, f => f.comment_on(proposal, body).await)
    }
    async fn close(&self, number: u64) -> ForgeResult<()> {
        each_forge!(self, f => f.close(number).await)
    }
    async fn get(&self, number: u64) -> ForgeResult<Proposal> {
        each_forge!(self, f => f.get(number).await)
    }
    async fn set_status(
        &self,
        sha: &str,
        state: StatusState,
        context: &str,
        description: &str,
    ) -> ForgeResult<()> {
        each_forge!(self, f => f.set_status(sha, state, context, description).await)
    }
    async fn close_with_comment(&self, proposal: &Proposal, comment: &str) -> ForgeResult<()> {
        each_forge!(self, f => f.close_with_comment(proposal, comment).await)
    }
    async fn status(&self, sha: &str, context: &str) -> ForgeResult<Option<StatusState>> {
        each_forge!(self, f => f.status(sha, context).await)
    }
    async fn statuses(&self, sha: &str) -> ForgeResult<Vec<(String, StatusState)>> {
        each_forge!(self, f => f.statuses(sha).await)
    }
    async fn changes_requested(&self, number: u64) -> ForgeResult<Vec<String>> {
        each_forge!(self, f => f.changes_requested(number).await)
    }
    async fn merge(
        &self,
        proposal: &Proposal,
        request: &MergeRequest,
    ) -> ForgeResult<MergeOutcome> {
        each_forge!(self, f => f.merge(proposal, request).await)
    }
    async fn cancel_scheduled_merge(&self, proposal: &Proposal) -> ForgeResult<bool> {
        each_forge!(self, f => f.cancel_scheduled_merge(proposal).await)
    }
    fn has_issues(&self) -> bool {
        each_forge!(self, f => f.has_issues())
    }
    async fn issues_labelled(&self, label: &str) -> ForgeResult<Vec<Issue>> {
        each_forge!(self, f => f.issues_labelled(label).await)
    }
    async fn create_issue(&self, title: &str, body: &str, labels: &[String]) -> ForgeResult<Issue> {
        each_forge!(self, f => f.create_issue(title, body, labels).await)
    }
    async fn edit_issue(
        &self,
        number: u64,
        title: &str,
        body: &str,
        open: bool,
    ) -> ForgeResult<()> {
        each_forge!(self, f => f.edit_issue(number, title, body, open).await)
    }
}
