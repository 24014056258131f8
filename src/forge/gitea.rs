//! Gitea and Forgejo (REST API v1) on reqwest, with its own types: octocrab's models do not
//! parse Gitea's JSON. Differences from GitHub that matter here: the API lives under `/api/v1`,
//! the token goes in `Authorization: token <PAT>`, labels are set by id (names are resolved with
//! `GET /repos/{owner}/{repo}/labels`, missing ones created), lists page with `page`/`limit`, and
//! `PATCH /pulls/{index}` answers 201.
//!
//! Every call goes through [`with_retries`] and every non-success answer through [`classify`].
//! The token is only ever written into the `Authorization` header: not into URLs, errors or logs.

use super::http::{classify, with_retries, RetryPolicy};
use super::{
    Forge, ForgeError, ForgeResult, MergeOutcome, MergeRequest, NewProposal, Proposal,
    ProposalState, StatusState, Verdict,
};
use anyhow::{bail, Context};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const NAME: &str = "Gitea";
/// What a rejected token needs, for [`ForgeError::Unauthorized`].
pub const PERMISSION: &str = "a Gitea access token with scopes write:repository and write:issue";
/// Page size asked for (Gitea's default `MAX_RESPONSE_ITEMS` is 50; a server may cap lower).
const PAGE_LIMIT: u32 = 50;
/// Stop paging after this many pages whatever the server says (a loop guard).
const MAX_PAGES: u32 = 200;
/// Colour of labels rebake creates because the repository lacks them.
pub const DEFAULT_LABEL_COLOR: &str = "#ededed";

/// A Gitea/Forgejo repository, seen through its REST API v1.
pub struct Gitea {
    client: reqwest::Client,
    /// `<base>/api/v1`, no trailing slash.
    api: Url,
    owner: String,
    repo: String,
    token: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Gitea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gitea")
            .field("api", &self.api.as_str())
            .field("owner", &self.owner)
            .field("repo", &self.repo)
            .field("token", &"<redacted>")
            .field("retry", &self.retry)
            .finish()
    }
}

impl Gitea {
    /// `base_url` is the server's web address (`https://gitea.example`); the API is at
    /// `<base_url>/api/v1` (a `base_url` that already ends in `/api/v1` is accepted too).
    pub fn new(
        base_url: &str,
        owner: &str,
        repo: &str,
        token: String,
        retry: RetryPolicy,
    ) -> anyhow::Result<Gitea> {
        let mut api = Url::parse(base_url.trim())
            .with_context(|| format!("Gitea base URL {base_url:?} is not a URL"))?;
        if !matches!(api.scheme(), "http" | "https") {
            bail!("Gitea base URL {base_url:?}: use http:// or https://");
        }
        if api.cannot_be_a_base() {
            bail!("Gitea base URL {base_url:?} cannot hold a path");
        }
        api.set_query(None);
        api.set_fragment(None);
        let already_api = api.path().trim_end_matches('/').ends_with("/api/v1");
        if !already_api {
            api.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("Gitea base URL {base_url:?} cannot hold a path"))?
                .pop_if_empty()
                .extend(["api", "v1"]);
        } else {
            api.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("Gitea base URL {base_url:?} cannot hold a path"))?
                .pop_if_empty();
        }
        if owner.is_empty() || repo.is_empty() {
            bail!("Gitea repository owner and name must not be empty (got {owner:?}/{repo:?})");
        }
        if token.trim().is_empty() {
            bail!("the Gitea token is empty: set it to {PERMISSION}");
        }
        // Validate the header value now, without echoing the token.
        if HeaderValue::from_str(&format!("token {}", token.trim())).is_err() {
            bail!("the Gitea token contains characters not allowed in an HTTP header");
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("rebake/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(retry.connect_timeout)
            .read_timeout(retry.read_timeout)
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client for Gitea")?;
        Ok(Gitea {
            client,
            api,
            owner: owner.to_string(),
            repo: repo.to_string(),
            token: token.trim().to_string(),
            retry,
        })
    }

    /// `<api>/repos/{owner}/{repo}/<rest...>`, each segment percent-encoded.
    fn repo_url(&self, rest: &[&str]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.extend(["repos", self.owner.as_str(), self.repo.as_str()]);
            segs.extend(rest);
        }
        url
    }

    /// One request, retried by policy. Returns the answer's headers and body on 2xx.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> ForgeResult<(HeaderMap, String)> {
        with_retries(&self.retry, || {
            self.call_once(method.clone(), url.clone(), body)
        })
        .await
    }

    async fn call_once(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> ForgeResult<(HeaderMap, String)> {
        let mut auth = HeaderValue::from_str(&format!("token {}", self.token)).map_err(|_| {
            ForgeError::Invalid {
                forge: NAME.into(),
                status: 0,
                message: "the token is not a valid HTTP header value".into(),
            }
        })?;
        auth.set_sensitive(true);
        tracing::debug!("Gitea {method} {}", url.path());
        let mut req = self
            .client
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.map_err(|e| network(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| network(&e))?;
        if (200..300).contains(&status) {
            return Ok((headers, text));
        }
        let text = text.replace(&self.token, "<redacted>");
        let err = classify(NAME, status, &headers, &text, PERMISSION);
        Err(match err {
            ForgeError::NotFound { forge, what } => ForgeError::NotFound {
                forge,
                what: format!("{method} {}: {what}", url.path()),
            },
            e => e,
        })
    }

    async fn call_json<T: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> ForgeResult<(HeaderMap, T)> {
        let what = format!("{method} {}", url.path());
        let (headers, text) = self.call(method, url, body).await?;
        Ok((headers, parse(&what, &text)?))
    }

    /// Every item of a paged list (`page`/`limit`), following `X-Total-Count` when the server
    /// sends it and stopping at the first empty page otherwise. `stop` ends early on a match.
    async fn paged<T: for<'de> Deserialize<'de>>(
        &self,
        rest: &[&str],
        query: &[(&str, &str)],
        mut stop: impl FnMut(&T) -> bool,
    ) -> ForgeResult<Vec<T>> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut url = self.repo_url(rest);
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in query {
                    q.append_pair(k, v);
                }
                q.append_pair("page", &page.to_string());
                q.append_pair("limit", &PAGE_LIMIT.to_string());
            }
            let (headers, items): (_, Vec<T>) = self.call_json(Method::GET, url, None).await?;
            if items.is_empty() {
                break;
            }
            let found = items.iter().any(&mut stop);
            all.extend(items);
            if found {
                break;
            }
            let total = headers
                .get("x-total-count")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            if total.is_some_and(|t| all.len() >= t) {
                break;
            }
        }
        Ok(all)
    }

    /// Label ids for `names`, creating the labels the repository lacks.
    async fn label_ids(&self, names: &[String]) -> ForgeResult<Vec<i64>> {
        let wanted: BTreeSet<&str> = names
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut existing: Vec<GLabel> = self.paged(&["labels"], &[], |_| false).await?;
        let mut ids = Vec::new();
        for name in wanted {
            if let Some(id) = find_label(&existing, name) {
                ids.push(id);
                continue;
            }
            let body = json!({ "name": name, "color": DEFAULT_LABEL_COLOR });
            match self
                .call_json::<GLabel>(Method::POST, self.repo_url(&["labels"]), Some(&body))
                .await
            {
                Ok((_, label)) => {
                    tracing::info!("created Gitea label {name:?}");
                    ids.push(label.id);
                    existing.push(label);
                }
                // Someone else created it meanwhile: look again.
                Err(ForgeError::Conflict { .. }) | Err(ForgeError::Invalid { .. }) => {
                    existing = self.paged(&["labels"], &[], |_| false).await?;
                    match find_label(&existing, name) {
                        Some(id) => ids.push(id),
                        None => {
                            return Err(ForgeError::Invalid {
                                forge: NAME.into(),
                                status: 422,
                                message: format!("could not create label {name:?}"),
                            })
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ids)
    }

    fn is_own_head(&self, pull: &GPull, branch: &str) -> bool {
        let Some(head) = &pull.head else { return false };
        let head_ref = head.ref_.as_deref().unwrap_or_default();
        if head_ref.strip_prefix("refs/heads/").unwrap_or(head_ref) != branch {
            return false;
        }
        let head_repo_id = head.repo.as_ref().and_then(|r| r.id).or(head.repo_id);
        let base_repo_id = pull
            .base
            .as_ref()
            .and_then(|b| b.repo.as_ref().and_then(|r| r.id).or(b.repo_id));
        if let (Some(h), Some(b)) = (head_repo_id, base_repo_id) {
            if h > 0 && b > 0 {
                return h == b;
            }
        }
        match head.repo.as_ref().and_then(|r| r.full_name.as_deref()) {
            Some(full) => full.eq_ignore_ascii_case(&format!("{}/{}", self.owner, self.repo)),
            None => true,
        }
    }

    async fn create_once(&self, new: &NewProposal, labels: &[i64]) -> ForgeResult<GPull> {
        let mut body = json!({
            "head": new.head_branch,
            "base": new.base_branch,
            "title": new.title,
            "body": new.body,
        });
        if !labels.is_empty() {
            body["labels"] = json!(labels);
        }
        if !new.assignees.is_empty() {
            body["assignees"] = json!(new.assignees);
        }
        if !new.reviewers.is_empty() {
            // Gitea >= 1.23 takes reviewers here; older servers ignore the field (see create).
            body["reviewers"] = json!(new.reviewers);
        }
        // One attempt only: `create` owns the retries (see there).
        let url = self.repo_url(&["pulls"]);
        let (_, text) = self.call_once(Method::POST, url, Some(&body)).await?;
        parse("POST pulls", &text)
    }
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> ForgeResult<T> {
    serde_json::from_str(text).map_err(|e| ForgeError::Invalid {
        forge: NAME.into(),
        status: 200,
        message: format!("unexpected answer to {what}: {e}"),
    })
}

fn network(e: &reqwest::Error) -> ForgeError {
    // reqwest's message names the URL (which carries no secret) and the cause.
    ForgeError::Network {
        forge: NAME.into(),
        message: e.to_string(),
    }
}

fn find_label(labels: &[GLabel], name: &str) -> Option<i64> {
    labels
        .iter()
        .find(|l| l.name == name)
        .or_else(|| labels.iter().find(|l| l.name.eq_ignore_ascii_case(name)))
        .map(|l| l.id)
}

fn parse_state(s: &str) -> Option<StatusState> {
    match s {
        "pending" => Some(StatusState::Pending),
        "success" => Some(StatusState::Success),
        "failure" => Some(StatusState::Failure),
        "error" => Some(StatusState::Error),
        // Gitea also knows "warning": not a pass.
        "warning" => Some(StatusState::Failure),
        _ => None,
    }
}

fn state_name(s: StatusState) -> &'static str {
    match s {
        StatusState::Pending => "pending",
        StatusState::Success => "success",
        StatusState::Failure => "failure",
        StatusState::Error => "error",
    }
}

impl From<GPull> for Proposal {
    fn from(p: GPull) -> Proposal {
        let merged = p.merged.unwrap_or(false);
        let state = if merged {
            ProposalState::Merged
        } else if p.state.as_deref() == Some("closed") {
            ProposalState::Closed
        } else {
            ProposalState::Open
        };
        let head = p.head.unwrap_or_default();
        let base = p.base.unwrap_or_default();
        let head_ref = head.ref_.unwrap_or_default();
        Proposal {
            number: p.number,
            url: p.html_url.unwrap_or_default(),
            title: p.title.unwrap_or_default(),
            body: p.body.unwrap_or_default(),
            head_branch: head_ref
                .strip_prefix("refs/heads/")
                .unwrap_or(&head_ref)
                .to_string(),
            head_sha: head.sha.unwrap_or_default(),
            base_branch: base.ref_.unwrap_or_default(),
            state,
            merge_commit: if merged {
                p.merge_commit_sha.filter(|s| !s.is_empty())
            } else {
                None
            },
            labels: p
                .labels
                .unwrap_or_default()
                .into_iter()
                .map(|l| l.name)
                .collect(),
        }
    }
}

impl Forge for Gitea {
    /// Gitea's "merge when checks succeed" (`merge_when_checks_succeed`).
    fn merges_when_checks_succeed(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        NAME
    }

    async fn find_open(&self, branch: &str) -> ForgeResult<Option<Proposal>> {
        let pulls: Vec<GPull> = self
            .paged(&["pulls"], &[("state", "open")], |p: &GPull| {
                self.is_own_head(p, branch)
            })
            .await?;
        Ok(pulls
            .into_iter()
            .find(|p| self.is_own_head(p, branch) && p.state.as_deref() != Some("closed"))
            .map(Proposal::from))
    }

    async fn create(&self, new: &NewProposal) -> ForgeResult<Proposal> {
        let labels = self.label_ids(&new.labels).await?;
        let labels = labels.as_slice();
        // Not through `call`'s retries: a 5xx after Gitea created the pull request would open
        // a duplicate. Each retry first looks for the one a failed attempt may have opened.
        let mut attempt = 0u32;
        let pull = with_retries(&self.retry, || {
            attempt += 1;
            let again = attempt > 1;
            async move {
                if again {
                    if let Some(open) = self.find_open(&new.head_branch).await? {
                        return Ok(Err(open));
                    }
                }
                self.create_once(new, labels).await.map(Ok)
            }
        })
        .await?;
        let pull = match pull {
            Ok(pull) => pull,
            Err(existing) => return Ok(existing),
        };
        // Servers older than Gitea 1.23 (and Forgejo) ignore `reviewers` on create: ask for
        // whoever is missing through the review-request endpoint.
        let requested: BTreeSet<String> = pull
            .requested_reviewers
            .iter()
            .flatten()
            .filter_map(|u| u.login.clone())
            .map(|l| l.to_lowercase())
            .collect();
        let missing: Vec<&String> = new
            .reviewers
            .iter()
            .filter(|r| !requested.contains(&r.to_lowercase()))
            .collect();
        if !missing.is_empty() {
            let index = pull.number.to_string();
            let url = self.repo_url(&["pulls", &index, "requested_reviewers"]);
            self.call(Method::POST, url, Some(&json!({ "reviewers": missing })))
                .await?;
        }
        Ok(pull.into())
    }

    async fn update(&self, number: u64, title: &str, body: &str) -> ForgeResult<()> {
        let url = self.repo_url(&["pulls", &number.to_string()]);
        self.call(
            Method::PATCH,
            url,
            Some(&json!({ "title": title, "body": body })),
        )
        .await?;
        Ok(())
    }

    async fn comment(&self, number: u64, body: &str) -> ForgeResult<()> {
        let url = self.repo_url(&["issues", &number.to_string(), "comments"]);
        self.call(Method::POST, url, Some(&json!({ "body": body })))
            .await?;
        Ok(())
    }

    async fn close(&self, number: u64) -> ForgeResult<()> {
        let url = self.repo_url(&["pulls", &number.to_string()]);
        self.call(Method::PATCH, url, Some(&json!({ "state": "closed" })))
            .await?;
        Ok(())
    }

    async fn get(&self, number: u64) -> ForgeResult<Proposal> {
        let url = self.repo_url(&["pulls", &number.to_string()]);
        let (_, pull): (_, GPull) = self.call_json(Method::GET, url, None).await?;
        Ok(pull.into())
    }

    async fn set_status(
        &self,
        sha: &str,
        state: StatusState,
        context: &str,
        description: &str,
    ) -> ForgeResult<()> {
        // Gitea stores at most 255 characters of description.
        let description: String = description.chars().take(255).collect();
        let url = self.repo_url(&["statuses", sha]);
        let body = json!({
            "state": state_name(state),
            "context": context,
            "description": description,
        });
        self.call(Method::POST, url, Some(&body)).await?;
        Ok(())
    }

    async fn statuses(&self, sha: &str) -> ForgeResult<Vec<(String, StatusState)>> {
        let mut latest: std::collections::BTreeMap<String, (i64, StatusState)> = Default::default();
        for page in 1..=MAX_PAGES {
            let mut url = self.repo_url(&["commits", sha, "status"]);
            url.query_pairs_mut()
                .append_pair("page", &page.to_string())
                .append_pair("limit", &PAGE_LIMIT.to_string());
            let (_, combined): (_, GCombined) = self.call_json(Method::GET, url, None).await?;
            let statuses = combined.statuses.unwrap_or_default();
            if statuses.is_empty() {
                break;
            }
            for s in &statuses {
                let (Some(context), Some(state)) =
                    (&s.context, s.status.as_deref().and_then(parse_state))
                else {
                    continue;
                };
                let id = s.id.unwrap_or(0);
                if latest.get(context).is_none_or(|(seen, _)| id >= *seen) {
                    latest.insert(context.clone(), (id, state));
                }
            }
            let seen = (page * PAGE_LIMIT) as u64;
            if combined.total_count.is_some_and(|t| seen >= t) {
                break;
            }
        }
        Ok(latest.into_iter().map(|(c, (_, s))| (c, s)).collect())
    }

    async fn changes_requested(&self, number: u64) -> ForgeResult<Vec<String>> {
        let index = number.to_string();
        let reviews: Vec<GReview> = self
            .paged(&["pulls", &index, "reviews"], &[], |_| false)
            .await?;
        // Oldest first; a dismissed review no longer counts.
        let verdicts: Vec<(String, Verdict)> = reviews
            .into_iter()
            .filter_map(|r| {
                let verdict = match (r.dismissed, r.state.as_deref()) {
                    (Some(true), _) => Verdict::Dismissed,
                    (_, Some("APPROVED")) => Verdict::Approved,
                    (_, Some("REQUEST_CHANGES")) => Verdict::ChangesRequested,
                    _ => Verdict::Neutral,
                };
                Some((r.user?.login?, verdict))
            })
            .collect();
        Ok(super::changes_requested_by(&verdicts))
    }

    async fn cancel_scheduled_merge(&self, proposal: &Proposal) -> ForgeResult<bool> {
        let url = self.repo_url(&["pulls", &proposal.number.to_string(), "merge"]);
        match self.call(Method::DELETE, url, None).await {
            Ok(_) => Ok(true),
            // Nothing scheduled.
            Err(ForgeError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn merge(
        &self,
        proposal: &Proposal,
        request: &MergeRequest,
    ) -> ForgeResult<MergeOutcome> {
        let number = proposal.number;
        let url = self.repo_url(&["pulls", &number.to_string(), "merge"]);
        // head_commit_id: Gitea refuses when the head moved since rebake checked it.
        let body = json!({
            "Do": "merge",
            "MergeTitleField": request.title,
            "head_commit_id": proposal.head_sha,
            "merge_when_checks_succeed": request.when_checks_succeed,
        });
        match self.call(Method::POST, url, Some(&body)).await {
            Ok(_) => {}
            Err(e) => return super::refused_merge(NAME, e),
        }
        // Merged now, or (merge_when_checks_succeed with checks still running) scheduled:
        // the pull request says which.
        let after = self.get(number).await?;
        Ok(match after.state {
            ProposalState::Merged => MergeOutcome::Merged {
                commit: after.merge_commit,
            },
            _ if request.when_checks_succeed => MergeOutcome::Scheduled,
            _ => MergeOutcome::NotMerged("Gitea accepted the merge but did not merge".into()),
        })
    }

    fn has_issues(&self) -> bool {
        true
    }

    async fn issues_labelled(&self, label: &str) -> ForgeResult<Vec<super::Issue>> {
        let query = [("state", "all"), ("type", "issues"), ("labels", label)];
        let mut issues: Vec<GIssue> = self.paged(&["issues"], &query, |_| false).await?;
        // Gitea lists newest first.
        issues.sort_by_key(|i| i.number);
        Ok(issues
            .into_iter()
            .filter(|i| i.pull_request.is_none())
            .map(super::Issue::from)
            .collect())
    }

    async fn create_issue(
        &self,
        title: &str,
        body: &str,
        labels: &[String],
    ) -> ForgeResult<super::Issue> {
        let labels = self.label_ids(labels).await?;
        let body = json!({ "title": title, "body": body, "labels": labels });
        let (_, issue): (_, GIssue) = self
            .call_json(Method::POST, self.repo_url(&["issues"]), Some(&body))
            .await?;
        Ok(issue.into())
    }

    async fn edit_issue(
        &self,
        number: u64,
        title: &str,
        body: &str,
        open: bool,
    ) -> ForgeResult<()> {
        let url = self.repo_url(&["issues", &number.to_string()]);
        let state = if open { "open" } else { "closed" };
        let body = json!({ "title": title, "body": body, "state": state });
        self.call(Method::PATCH, url, Some(&body)).await?;
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct GIssue {
    number: u64,
    html_url: Option<String>,
    title: Option<String>,
    body: Option<String>,
    state: Option<String>,
    /// Set when the issue is a pull request.
    pull_request: Option<Value>,
}

impl From<GIssue> for super::Issue {
    fn from(i: GIssue) -> super::Issue {
        super::Issue {
            number: i.number,
            url: i.html_url.unwrap_or_default(),
            title: i.title.unwrap_or_default(),
            body: i.body.unwrap_or_default(),
            open: i.state.as_deref() != Some("closed"),
        }
    }
}

// Gitea's JSON, only the fields rebake reads. Go's nil pointers arrive as null, so everything
// optional is an Option.

#[derive(Debug, Deserialize)]
struct GPull {
    number: u64,
    html_url: Option<String>,
    title: Option<String>,
    body: Option<String>,
    state: Option<String>,
    merged: Option<bool>,
    merge_commit_sha: Option<String>,
    head: Option<GBranch>,
    base: Option<GBranch>,
    labels: Option<Vec<GLabel>>,
    requested_reviewers: Option<Vec<GUser>>,
}

#[derive(Debug, Default, Deserialize)]
struct GBranch {
    #[serde(rename = "ref")]
    ref_: Option<String>,
    sha: Option<String>,
    repo_id: Option<i64>,
    repo: Option<GRepo>,
}

#[derive(Debug, Deserialize)]
struct GRepo {
    id: Option<i64>,
    full_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GLabel {
    id: i64,
    name: String,
}

#[derive(Debug, Deserialize)]
struct GUser {
    login: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GCombined {
    statuses: Option<Vec<GStatus>>,
    total_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct GReview {
    user: Option<GUser>,
    state: Option<String>,
    dismissed: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct GStatus {
    id: Option<i64>,
    context: Option<String>,
    status: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_url_and_debug_hide_the_token() {
        let g = Gitea::new(
            "https://gitea.example/",
            "me",
            "images",
            "s3cr3t".into(),
            RetryPolicy::default(),
        )
        .unwrap();
        assert_eq!(g.api.as_str(), "https://gitea.example/api/v1");
        assert_eq!(
            g.repo_url(&["pulls", "7"]).as_str(),
            "https://gitea.example/api/v1/repos/me/images/pulls/7"
        );
        assert!(!format!("{g:?}").contains("s3cr3t"));
        let g = Gitea::new(
            "https://h/sub/api/v1",
            "o",
            "r",
            "t".into(),
            RetryPolicy::default(),
        )
        .unwrap();
        assert_eq!(g.api.as_str(), "https://h/sub/api/v1");
        assert!(Gitea::new("https://h", "o", "r", " ".into(), RetryPolicy::default()).is_err());
    }

    #[test]
    fn parses_gitea_nulls() {
        let p: GPull = serde_json::from_value(json!({
            "number": 3, "html_url": null, "title": "t", "body": "", "state": "closed",
            "merged": true, "merge_commit_sha": "abc", "merged_at": null, "milestone": null,
            "head": {"label": "rebake/x", "ref": "rebake/x", "sha": "h", "repo_id": 1, "repo": null},
            "base": {"ref": "main", "sha": "b", "repo_id": 1},
            "labels": [{"id": 1, "name": "security"}], "requested_reviewers": null
        }))
        .unwrap();
        let p = Proposal::from(p);
        assert_eq!(p.state, ProposalState::Merged);
        assert_eq!(p.merge_commit.as_deref(), Some("abc"));
        assert_eq!(p.labels, vec!["security"]);
        assert_eq!(p.head_branch, "rebake/x");
    }
}
