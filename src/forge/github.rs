//! GitHub (and GitHub Enterprise) through octocrab.
//!
//! Every call goes through octocrab's raw `_get`/`_post`/`_patch`, which hand back the HTTP
//! answer itself: the status and headers (`Retry-After`, `X-RateLimit-*`) are what
//! [`classify`] and [`with_retries`] need, and which octocrab's typed API would fold into an
//! error. Bodies are read into small local types, so only the fields rebake uses must parse.
//! octocrab does the rest: base URI (a GHE `https://host/api/v3` keeps its path), the
//! `Authorization` header, and — for a GitHub App — minting and refreshing the installation
//! token from a JWT signed with the app's key.

use super::http::{classify, with_retries, RetryPolicy};
use super::{
    Forge, ForgeError, ForgeResult, MergeOutcome, MergeRequest, NewProposal, Proposal,
    ProposalState, StatusState, Verdict,
};
use anyhow::{bail, Context};
use octocrab::Octocrab;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt;

const FORGE: &str = "GitHub";

/// What a token needs, named in [`ForgeError::Unauthorized`].
pub const PERMISSION: &str = "a token with `repo` scope (classic) or fine-grained Pull requests: \
write, Contents: write, Commit statuses: write, Issues: write (the dashboard); a GitHub App needs the same permissions";

/// GitHub's limit on a commit status description.
const MAX_STATUS_DESCRIPTION: usize = 140;

/// How rebake authenticates.
#[derive(Clone)]
pub enum GitHubAuth {
    /// A personal access token (classic or fine-grained) or any other bearer token.
    Token(String),
    /// A GitHub App: the app's id and private key (PEM) sign a JWT that octocrab trades for an
    /// installation token (refreshed when it expires).
    App {
        app_id: u64,
        private_key_pem: String,
        installation_id: u64,
    },
}

impl fmt::Debug for GitHubAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitHubAuth::Token(_) => f.write_str("Token(<redacted>)"),
            GitHubAuth::App {
                app_id,
                installation_id,
                ..
            } => f
                .debug_struct("App")
                .field("app_id", app_id)
                .field("private_key_pem", &"<redacted>")
                .field("installation_id", installation_id)
                .finish(),
        }
    }
}

/// One repository `owner/repo` on GitHub or GitHub Enterprise.
pub struct GitHub {
    crab: Octocrab,
    api_base: String,
    owner: String,
    repo: String,
    retry: RetryPolicy,
    /// Kept only to scrub it from messages that might echo it.
    secret: Option<String>,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("api_base", &self.api_base)
            .field("owner", &self.owner)
            .field("repo", &self.repo)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct PullJson {
    number: u64,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: Option<String>,
    head: RefJson,
    base: RefJson,
    state: String,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    merged_at: Option<String>,
    #[serde(default)]
    merge_commit_sha: Option<String>,
    #[serde(default)]
    labels: Vec<LabelJson>,
}

#[derive(Deserialize)]
struct RefJson {
    #[serde(rename = "ref")]
    name: String,
    sha: String,
}

#[derive(Deserialize)]
struct LabelJson {
    name: String,
}

#[derive(Deserialize)]
struct CombinedStatusJson {
    #[serde(default)]
    statuses: Vec<StatusJson>,
}

#[derive(Deserialize)]
struct StatusJson {
    state: String,
    context: String,
}

#[derive(Deserialize)]
struct ReviewJson {
    #[serde(default)]
    user: Option<UserJson>,
    state: String,
}

#[derive(Deserialize)]
struct UserJson {
    login: String,
}

#[derive(Deserialize)]
struct IssueJson {
    number: u64,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: Option<String>,
    state: String,
    /// Present when the "issue" is a pull request (the issues API lists both).
    #[serde(default)]
    pull_request: Option<Value>,
}

impl From<IssueJson> for super::Issue {
    fn from(i: IssueJson) -> super::Issue {
        super::Issue {
            number: i.number,
            url: i.html_url.unwrap_or_default(),
            title: i.title,
            body: i.body.unwrap_or_default(),
            open: i.state == "open",
        }
    }
}

#[derive(Deserialize)]
struct MergedJson {
    #[serde(default)]
    sha: Option<String>,
}

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
    Patch,
    Put,
}

impl GitHub {
    /// A client for `owner/repo` at `api_base` (`https://api.github.com`, a GitHub Enterprise
    /// `https://host/api/v3`, or a test server). Must be called inside a Tokio runtime
    /// (octocrab spawns its request worker there).
    pub fn new(
        api_base: &str,
        owner: &str,
        repo: &str,
        auth: GitHubAuth,
        retry: RetryPolicy,
    ) -> anyhow::Result<GitHub> {
        if tokio::runtime::Handle::try_current().is_err() {
            bail!("the GitHub client must be created inside a Tokio runtime");
        }
        for (what, v) in [("owner", owner), ("repository", repo)] {
            if v.is_empty() || v.contains('/') || v.chars().any(char::is_whitespace) {
                bail!("GitHub {what} name {v:?} is invalid: expected `owner` and `name` of owner/name");
            }
        }
        let api_base = api_base.trim_end_matches('/').to_string();
        // octocrab sets no timeouts of its own: a stalled API would hold the job for ever.
        let builder = Octocrab::builder()
            .set_connect_timeout(Some(retry.connect_timeout))
            .set_read_timeout(Some(retry.read_timeout))
            .set_write_timeout(Some(retry.read_timeout))
            .base_uri(api_base.as_str())
            .with_context(|| format!("invalid GitHub API URL {api_base:?}"))?;
        let (crab, secret) = match auth {
            GitHubAuth::Token(token) => {
                let crab = builder
                    .personal_token(token.clone())
                    .build()
                    .context("building the GitHub client")?;
                (crab, Some(token))
            }
            GitHubAuth::App {
                app_id,
                private_key_pem,
                installation_id,
            } => {
                let key = octocrab::EncodingKey::from_rsa_pem(private_key_pem.as_bytes())
                    .context("the GitHub App private key is not an RSA key in PEM format")?;
                let app = builder
                    .app(octocrab::models::AppId(app_id), key)
                    .build()
                    .context("building the GitHub App client")?;
                let crab = app
                    .installation(octocrab::models::InstallationId(installation_id))
                    .context("building the GitHub App installation client")?;
                (crab, None)
            }
        };
        Ok(GitHub {
            crab,
            api_base,
            owner: owner.to_string(),
            repo: repo.to_string(),
            retry,
            secret,
        })
    }

    /// The token git uses to push over https: the personal token, or a fresh installation
    /// token for a GitHub App (valid for at least 30 more seconds).
    pub async fn git_token(&self) -> anyhow::Result<String> {
        use octocrab::secrecy::ExposeSecret;
        if let Some(t) = &self.secret {
            return Ok(t.clone());
        }
        let token =
            self.crab.installation_token().await.map_err(|e| {
                anyhow::anyhow!("GitHub App: cannot get an installation token: {e}")
            })?;
        Ok(token.expose_secret().to_string())
    }

    /// `owner/repo`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    fn repo_path(&self, rest: &str) -> String {
        format!(
            "/repos/{}/{}{rest}",
            encode(&self.owner, false),
            encode(&self.repo, false)
        )
    }

    fn scrub(&self, s: String) -> String {
        match &self.secret {
            Some(t) if !t.is_empty() && s.contains(t.as_str()) => s.replace(t.as_str(), "<token>"),
            _ => s,
        }
    }

    /// One request, no retries: the parsed JSON body (Null when empty) or a classified error.
    async fn once(&self, method: Method, path: &str, body: Option<&Value>) -> ForgeResult<Value> {
        let sent = match method {
            Method::Get => self.crab._get(path).await,
            Method::Post => self.crab._post(path, body).await,
            Method::Patch => self.crab._patch(path, body).await,
            Method::Put => self.crab._put(path, body).await,
        };
        let resp = match sent {
            Ok(r) => r,
            Err(octocrab::Error::GitHub { source, .. }) => {
                // octocrab answers this way when minting an App installation token fails.
                let headers = source.headers.clone().unwrap_or_default();
                return Err(classify(
                    FORGE,
                    source.status_code.as_u16(),
                    &headers,
                    &self.scrub(source.message.clone()),
                    PERMISSION,
                ));
            }
            // An answer octocrab could not read (e.g. the installation token), or a JWT it could
            // not sign: retrying would not help.
            Err(
                e @ (octocrab::Error::Serde { .. }
                | octocrab::Error::Json { .. }
                | octocrab::Error::JWT { .. }),
            ) => {
                return Err(ForgeError::Invalid {
                    forge: FORGE.into(),
                    status: 0,
                    message: self.scrub(format!("{path}: {e}")),
                })
            }
            Err(e) => {
                return Err(ForgeError::Network {
                    forge: FORGE.into(),
                    message: self.scrub(format!("{path}: {}", crate::download::chain(&e))),
                })
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = self
            .crab
            .body_to_string(resp)
            .await
            .map_err(|e| ForgeError::Network {
                forge: FORGE.into(),
                message: self.scrub(format!(
                    "{path}: reading the answer: {}",
                    crate::download::chain(&e)
                )),
            })?;
        if !(200..300).contains(&status) {
            return Err(classify(
                FORGE,
                status,
                &headers,
                &self.scrub(text),
                PERMISSION,
            ));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ForgeError::Invalid {
            forge: FORGE.into(),
            status,
            message: format!("{path}: the answer is not JSON: {e}"),
        })
    }

    /// A request with retries (5xx, network, rate limits); 404 names `what`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> ForgeResult<Value> {
        let result = with_retries(&self.retry, || self.once(method, path, body.as_ref())).await;
        result.map_err(|e| match e {
            ForgeError::NotFound { forge, .. } => ForgeError::NotFound {
                forge,
                what: format!("{what} in {}", self.full_name()),
            },
            e => e,
        })
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self, v: Value, what: &str) -> ForgeResult<T> {
        serde_json::from_value(v).map_err(|e| ForgeError::Invalid {
            forge: FORGE.into(),
            status: 200,
            message: format!("unexpected answer for {what}: {e}"),
        })
    }

    fn proposal(pr: PullJson) -> Proposal {
        let merged = pr.merged == Some(true) || pr.merged_at.is_some();
        let state = if merged {
            ProposalState::Merged
        } else if pr.state == "open" {
            ProposalState::Open
        } else {
            ProposalState::Closed
        };
        Proposal {
            number: pr.number,
            url: pr.html_url.unwrap_or_default(),
            title: pr.title,
            body: pr.body.unwrap_or_default(),
            head_branch: pr.head.name,
            head_sha: pr.head.sha,
            base_branch: pr.base.name,
            state,
            // An open PR's merge_commit_sha is GitHub's test merge: only a merged one counts.
            merge_commit: if merged { pr.merge_commit_sha } else { None },
            labels: pr.labels.into_iter().map(|l| l.name).collect(),
        }
    }
}

impl Forge for GitHub {
    fn name(&self) -> &str {
        FORGE
    }

    async fn find_open(&self, branch: &str) -> ForgeResult<Option<Proposal>> {
        let path = self.repo_path(&format!(
            "/pulls?state=open&head={}&per_page=100",
            encode(&format!("{}:{branch}", self.owner), true)
        ));
        let v = self
            .call(Method::Get, &path, None, "open pull requests")
            .await?;
        let prs: Vec<PullJson> = self.parse(v, "the list of pull requests")?;
        Ok(prs
            .into_iter()
            .filter(|p| p.head.name == branch && p.state == "open")
            .min_by_key(|p| p.number)
            .map(GitHub::proposal))
    }

    async fn create(&self, new: &NewProposal) -> ForgeResult<Proposal> {
        let body = json!({
            "title": new.title,
            "body": new.body,
            "head": new.head_branch,
            "base": new.base_branch,
        });
        let created = self
            .call(
                Method::Post,
                &self.repo_path("/pulls"),
                Some(body),
                "the base branch",
            )
            .await;
        let v = match created {
            Ok(v) => v,
            // A retried POST whose first attempt did create it, or a crash before we learned
            // the number: the existing one is the answer, never a second PR.
            Err(ForgeError::Invalid {
                status: 422,
                message,
                ..
            }) if message.contains("already exists") => {
                return match self.find_open(&new.head_branch).await? {
                    Some(p) => {
                        self.decorate(p.number, new).await?;
                        self.get(p.number).await
                    }
                    None => Err(ForgeError::Invalid {
                        forge: FORGE.into(),
                        status: 422,
                        message,
                    }),
                };
            }
            Err(e) => return Err(e),
        };
        let pr: PullJson = self.parse(v, "the new pull request")?;
        let number = pr.number;
        self.decorate(number, new).await?;
        if new.labels.is_empty() {
            Ok(GitHub::proposal(pr))
        } else {
            self.get(number).await
        }
    }

    async fn update(&self, number: u64, title: &str, body: &str) -> ForgeResult<()> {
        let path = self.repo_path(&format!("/pulls/{number}"));
        let what = format!("pull request #{number}");
        self.call(
            Method::Patch,
            &path,
            Some(json!({ "title": title, "body": body })),
            &what,
        )
        .await?;
        Ok(())
    }

    async fn comment(&self, number: u64, body: &str) -> ForgeResult<()> {
        let path = self.repo_path(&format!("/issues/{number}/comments"));
        let what = format!("pull request #{number}");
        self.call(Method::Post, &path, Some(json!({ "body": body })), &what)
            .await?;
        Ok(())
    }

    async fn close(&self, number: u64) -> ForgeResult<()> {
        let path = self.repo_path(&format!("/pulls/{number}"));
        let what = format!("pull request #{number}");
        self.call(
            Method::Patch,
            &path,
            Some(json!({ "state": "closed" })),
            &what,
        )
        .await?;
        Ok(())
    }

    async fn get(&self, number: u64) -> ForgeResult<Proposal> {
        let path = self.repo_path(&format!("/pulls/{number}"));
        let what = format!("pull request #{number}");
        let v = self.call(Method::Get, &path, None, &what).await?;
        Ok(GitHub::proposal(self.parse(v, &what)?))
    }

    async fn set_status(
        &self,
        sha: &str,
        state: StatusState,
        context: &str,
        description: &str,
    ) -> ForgeResult<()> {
        let path = self.repo_path(&format!("/statuses/{}", encode(sha, false)));
        let description: String = description.chars().take(MAX_STATUS_DESCRIPTION).collect();
        let body = json!({
            "state": state_name(state),
            "context": context,
            "description": description,
        });
        let what = format!("commit {sha}");
        self.call(Method::Post, &path, Some(body), &what).await?;
        Ok(())
    }

    async fn statuses(&self, sha: &str) -> ForgeResult<Vec<(String, StatusState)>> {
        let path = self.repo_path(&format!(
            "/commits/{}/status?per_page=100",
            encode(sha, false)
        ));
        let what = format!("commit {sha}");
        let v = self.call(Method::Get, &path, None, &what).await?;
        let combined: CombinedStatusJson = self.parse(v, "the combined status")?;
        // GitHub lists the latest status per context.
        Ok(combined
            .statuses
            .into_iter()
            .filter_map(|s| Some((s.context, parse_state(&s.state)?)))
            .collect())
    }

    async fn changes_requested(&self, number: u64) -> ForgeResult<Vec<String>> {
        let path = self.repo_path(&format!("/pulls/{number}/reviews?per_page=100"));
        let what = format!("pull request #{number}");
        let v = self.call(Method::Get, &path, None, &what).await?;
        let reviews: Vec<ReviewJson> = self.parse(v, "the reviews")?;
        // Oldest first; a comment does not lift a request for changes, a dismissal does.
        let verdicts: Vec<(String, Verdict)> = reviews
            .into_iter()
            .filter_map(|r| {
                let verdict = match r.state.as_str() {
                    "APPROVED" => Verdict::Approved,
                    "CHANGES_REQUESTED" => Verdict::ChangesRequested,
                    "DISMISSED" => Verdict::Dismissed,
                    _ => Verdict::Neutral,
                };
                Some((r.user?.login, verdict))
            })
            .collect();
        Ok(super::changes_requested_by(&verdicts))
    }

    async fn merge(
        &self,
        proposal: &Proposal,
        request: &MergeRequest,
    ) -> ForgeResult<MergeOutcome> {
        let number = proposal.number;
        let path = self.repo_path(&format!("/pulls/{number}/merge"));
        // `sha`: GitHub refuses (409) when the head moved since rebake checked it.
        let body = json!({
            "sha": proposal.head_sha,
            "merge_method": "merge",
            "commit_title": request.title,
        });
        let what = format!("pull request #{number}");
        match self.call(Method::Put, &path, Some(body), &what).await {
            Ok(v) => {
                let merged: MergedJson = self.parse(v, "the merge")?;
                Ok(MergeOutcome::Merged { commit: merged.sha })
            }
            Err(e) => super::refused_merge(FORGE, e),
        }
    }

    fn has_issues(&self) -> bool {
        true
    }

    async fn issues_labelled(&self, label: &str) -> ForgeResult<Vec<super::Issue>> {
        let path = self.repo_path(&format!(
            "/issues?labels={}&state=all&sort=created&direction=asc&per_page=100",
            encode(label, true)
        ));
        let v = self.call(Method::Get, &path, None, "issues").await?;
        let issues: Vec<IssueJson> = self.parse(v, "the list of issues")?;
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
        // GitHub creates a label the repository lacks the first time an issue gets it.
        let body = json!({ "title": title, "body": body, "labels": labels });
        let path = self.repo_path("/issues");
        let v = self
            .call(Method::Post, &path, Some(body), "the repository")
            .await?;
        let issue: IssueJson = self.parse(v, "the new issue")?;
        Ok(issue.into())
    }

    async fn edit_issue(
        &self,
        number: u64,
        title: &str,
        body: &str,
        open: bool,
    ) -> ForgeResult<()> {
        let path = self.repo_path(&format!("/issues/{number}"));
        let state = if open { "open" } else { "closed" };
        let body = json!({ "title": title, "body": body, "state": state });
        let what = format!("issue #{number}");
        self.call(Method::Patch, &path, Some(body), &what).await?;
        Ok(())
    }
}

impl GitHub {
    /// Labels, reviewers (`org/team` asks a team) and assignees of a new pull request.
    async fn decorate(&self, number: u64, new: &NewProposal) -> ForgeResult<()> {
        let what = format!("pull request #{number}");
        if !new.labels.is_empty() {
            let path = self.repo_path(&format!("/issues/{number}/labels"));
            let body = json!({ "labels": new.labels });
            self.call(Method::Post, &path, Some(body), &what).await?;
        }
        if !new.reviewers.is_empty() {
            let (teams, users): (Vec<&String>, Vec<&String>) =
                new.reviewers.iter().partition(|r| r.contains('/'));
            let teams: Vec<&str> = teams.iter().filter_map(|t| t.rsplit('/').next()).collect();
            let mut body = json!({ "reviewers": users });
            if !teams.is_empty() {
                body["team_reviewers"] = json!(teams);
            }
            let path = self.repo_path(&format!("/pulls/{number}/requested_reviewers"));
            self.call(Method::Post, &path, Some(body), &what).await?;
        }
        if !new.assignees.is_empty() {
            let path = self.repo_path(&format!("/issues/{number}/assignees"));
            let body = json!({ "assignees": new.assignees });
            self.call(Method::Post, &path, Some(body), &what).await?;
        }
        Ok(())
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

fn parse_state(s: &str) -> Option<StatusState> {
    Some(match s {
        "pending" => StatusState::Pending,
        "success" => StatusState::Success,
        "failure" => StatusState::Failure,
        "error" => StatusState::Error,
        _ => return None,
    })
}

/// Percent-encodes a path segment or (with `query`) a query value; `:` stays, `/` stays in
/// query values.
fn encode(s: &str, query: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                out.push(b as char)
            }
            b'/' if query => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_branches_and_keeps_separators() {
        assert_eq!(encode("me:rebake/nginx", true), "me:rebake/nginx");
        assert_eq!(encode("a b+c", true), "a%20b%2Bc");
        assert_eq!(encode("a/b", false), "a%2Fb");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let t = format!("{:?}", GitHubAuth::Token("ghp_secret".into()));
        assert!(!t.contains("ghp_secret"), "{t}");
        let a = format!(
            "{:?}",
            GitHubAuth::App {
                app_id: 1,
                private_key_pem: "-----BEGIN KEY".into(),
                installation_id: 2
            }
        );
        assert!(!a.contains("BEGIN"), "{a}");
    }
}
