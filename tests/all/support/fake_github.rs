//! A stateful, in-process fake of GitHub's REST API, in the spirit of bors' test GitHub.
//!
//! One repository `owner/repo` whose branches and commits are a REAL bare git repository on
//! disk (pushes by the code under test are seen at once; [`FakeGitHub::merge`] makes a real
//! merge commit with git2), and pull requests, labels, comments, reviewers, assignees and
//! commit statuses in memory, changed by the requests the client sends.
//!
//! Contract: every request body is validated against GitHub's official OpenAPI description
//! (`tests/data/forge-api/github-openapi-subset.json`); a mismatch is recorded as a violation
//! (see [`FakeGitHub::violations`]) and fails the test when the fake is dropped. Every answer
//! the fake gives is validated too, and recorded the same way when it does not match.
//!
//! Also: the token check (`Authorization: Bearer <token>` or `token <token>`, else 401 with
//! GitHub's error body), GitHub App installation tokens (JWT whose `iss` is the app id), failure
//! injection ([`FakeGitHub::fail_next`]), and a request log. Paths may carry GitHub
//! Enterprise's `/api/v3` prefix.

use super::openapi::{merge, percent_decode, OpenApi};
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use super::fake_forge::LoggedRequest;
use super::fake_forge::{apply_issue_state, check_on_drop, FakeForge, Log};

/// A pull request as the fake holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakePr {
    pub id: u64,
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub head: String,
    pub base: String,
    /// `open` or `closed`.
    pub state: String,
    pub merged: bool,
    pub merge_commit_sha: Option<String>,
    /// The head commit when merged (afterwards read live from the git repository).
    pub merged_head_sha: Option<String>,
    pub labels: Vec<String>,
    pub reviewers: Vec<String>,
    pub team_reviewers: Vec<String>,
    pub assignees: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub closed_at: Option<String>,
    pub merged_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FakeComment {
    pub id: u64,
    pub issue: u64,
    pub body: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FakeStatus {
    pub id: u64,
    pub sha: String,
    pub state: String,
    pub context: String,
    pub description: Option<String>,
    pub target_url: Option<String>,
    pub created_at: String,
}

/// A review as the fake holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeReview {
    pub id: u64,
    pub number: u64,
    pub login: String,
    /// `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`, `DISMISSED`.
    pub state: String,
    pub commit_id: String,
    pub submitted_at: String,
}

/// An issue (not a pull request); issues and pull requests share one number sequence.
#[derive(Debug, Clone)]
pub struct FakeIssue {
    pub id: u64,
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub state: String,
    pub labels: Vec<String>,
    pub author: String,
    pub created_at: String,
    pub updated_at: String,
    pub closed_at: Option<String>,
}

#[derive(Default)]
struct State {
    issues: Vec<FakeIssue>,
    /// Reviews, oldest first.
    reviews: Vec<FakeReview>,
    /// Status contexts branch protection requires before a merge (GitHub answers 405).
    required_contexts: Vec<String>,
    next_id: u64,
    next_number: u64,
    prs: Vec<FakePr>,
    comments: Vec<FakeComment>,
    statuses: Vec<FakeStatus>,
    /// Repository labels (GitHub creates one the first time an issue gets it).
    labels: std::collections::BTreeSet<String>,
    log: Log,
    app: Option<(u64, u64)>,
}

struct Inner {
    api: OpenApi,
    base_url: String,
    owner: String,
    repo: String,
    token: String,
    git_dir: PathBuf,
    state: Mutex<State>,
}

/// The running fake. Dropping it stops the server and fails the test on any schema violation.
pub struct FakeGitHub {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

const DOCS: &str = "https://docs.github.com/rest";

type Answer = (u16, Vec<(String, String)>, Value);

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn error_body(message: &str, status: u16) -> Value {
    json!({ "message": message, "documentation_url": DOCS, "status": status.to_string() })
}

fn answer(status: u16, body: Value) -> Answer {
    (status, Vec::new(), body)
}

/// Label names as GitHub takes them: strings, or objects with a `name`.
fn label_names(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            l.as_str()
                .or_else(|| l.get("name").and_then(Value::as_str))
                .map(str::to_string)
        })
        .collect()
}

fn new_issue(
    st: &mut State,
    author: &str,
    title: &str,
    body: Option<String>,
    labels: Vec<String>,
) -> FakeIssue {
    st.next_id += 1;
    let number = st.next_number;
    st.next_number += 1;
    let t = now();
    let issue = FakeIssue {
        id: st.next_id,
        number,
        title: title.to_string(),
        body,
        state: "open".into(),
        labels,
        author: author.to_string(),
        created_at: t.clone(),
        updated_at: t,
        closed_at: None,
    };
    st.issues.push(issue.clone());
    issue
}

impl FakeGitHub {
    /// Serves `owner/repo` on 127.0.0.1 (a free port), backed by the bare repository `git_dir`,
    /// accepting `token`.
    pub async fn start(git_dir: &Path, owner: &str, repo: &str, token: &str) -> FakeGitHub {
        git2::Repository::open_bare(git_dir).unwrap_or_else(|e| {
            panic!(
                "fake GitHub: {} is not a bare git repository: {e}",
                git_dir.display()
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake GitHub");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            api: OpenApi::github(),
            base_url: format!("http://{addr}"),
            owner: owner.to_string(),
            repo: repo.to_string(),
            token: token.to_string(),
            git_dir: git_dir.to_path_buf(),
            state: Mutex::new(State {
                next_id: 1000,
                next_number: 1,
                ..State::default()
            }),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake GitHub serves");
        });
        FakeGitHub {
            addr,
            inner,
            server,
        }
    }

    /// The API base URL to give the client (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Accept a GitHub App: a JWT with `iss` = `app_id` may mint an installation token (the
    /// fake's token) for `installation_id`.
    pub fn enable_app(&self, app_id: u64, installation_id: u64) {
        self.state().app = Some((app_id, installation_id));
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap()
    }

    /// How many requests were writes (anything but GET; App token minting excluded).
    pub fn writes(&self) -> usize {
        self.state()
            .log
            .requests
            .iter()
            .filter(|r| r.method != "GET" && !r.path.starts_with("/app/"))
            .count()
    }

    pub fn prs(&self) -> Vec<FakePr> {
        self.state().prs.clone()
    }

    pub fn pr(&self, number: u64) -> FakePr {
        self.state()
            .prs
            .iter()
            .find(|p| p.number == number)
            .cloned()
            .unwrap_or_else(|| panic!("fake GitHub has no PR #{number}"))
    }

    /// The issues (not pull requests), by number.
    pub fn issues(&self) -> Vec<FakeIssue> {
        self.state().issues.clone()
    }

    /// An issue a person opens.
    pub fn open_issue(&self, author: &str, title: &str, body: &str, labels: &[&str]) -> u64 {
        let mut st = self.state();
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        st.labels.extend(labels.iter().cloned());
        new_issue(&mut st, author, title, Some(body.to_string()), labels).number
    }

    /// A person closes issue `number`.
    pub fn close_issue(&self, number: u64) {
        let mut st = self.state();
        let issue = st.issues.iter_mut().find(|i| i.number == number).unwrap();
        issue.state = "closed".into();
        issue.closed_at = Some(now());
    }

    /// Comment bodies on issue/PR `number`, in order.
    pub fn comments(&self, number: u64) -> Vec<String> {
        self.state()
            .comments
            .iter()
            .filter(|c| c.issue == number)
            .map(|c| c.body.clone())
            .collect()
    }

    /// Statuses set on `sha`, oldest first.
    pub fn statuses(&self, sha: &str) -> Vec<FakeStatus> {
        self.state()
            .statuses
            .iter()
            .filter(|s| s.sha == sha)
            .cloned()
            .collect()
    }

    /// The commit `branch` points at in the bare repository.
    pub fn branch_sha(&self, branch: &str) -> Option<String> {
        self.inner.branch_sha(branch)
    }

    /// A person's review of PR `number` at its current head.
    pub fn add_review(&self, number: u64, login: &str, state: &str) {
        let mut st = self.state();
        let head = st
            .prs
            .iter()
            .find(|p| p.number == number)
            .map(|p| p.head.clone())
            .unwrap_or_else(|| panic!("fake GitHub has no PR #{number}"));
        let commit_id = self.inner.branch_sha(&head).unwrap_or_default();
        st.next_id += 1;
        let id = st.next_id;
        st.reviews.push(FakeReview {
            id,
            number,
            login: login.to_string(),
            state: state.to_string(),
            commit_id,
            submitted_at: now(),
        });
    }

    /// Branch protection: a merge needs these status contexts to be success on the head.
    pub fn require_status_checks(&self, contexts: &[&str]) {
        self.state().required_contexts = contexts.iter().map(|c| c.to_string()).collect();
    }

    /// Sets a commit status as a CI system would.
    pub fn set_status(&self, sha: &str, context: &str, state: &str) {
        let mut st = self.state();
        st.next_id += 1;
        let id = st.next_id;
        st.statuses.push(FakeStatus {
            id,
            sha: sha.to_string(),
            state: state.to_string(),
            context: context.to_string(),
            description: None,
            target_url: None,
            created_at: now(),
        });
    }

    /// Merges PR `number` as GitHub's merge button does: a real merge commit on the base
    /// branch of the bare repository; the PR becomes closed and merged. Returns the merge
    /// commit.
    pub fn merge(&self, number: u64) -> String {
        let mut st = self.state();
        self.inner
            .merge_locked(&mut st, number)
            .unwrap_or_else(|e| panic!("fake GitHub: merging #{number}: {e}"))
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.server.abort();
        check_on_drop(
            "GitHub",
            self.inner.state.lock().ok().as_deref().map(|s| &s.log),
        );
    }
}

impl FakeForge for FakeGitHub {
    const NAME: &'static str = "GitHub";

    fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        f(&mut self.state().log)
    }
}

async fn handle(
    AxState(inner): AxState<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, extra, value) = inner.respond(method.as_str(), &uri, &headers, &body);
    let mut resp = if value.is_null() {
        StatusCode::from_u16(status).unwrap().into_response()
    } else {
        (
            StatusCode::from_u16(status).unwrap(),
            [(
                axum::http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )],
            value.to_string(),
        )
            .into_response()
    };
    for (k, v) in extra {
        resp.headers_mut().insert(
            HeaderName::try_from(k.as_str()).unwrap(),
            HeaderValue::try_from(v.as_str()).unwrap(),
        );
    }
    resp
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

impl Inner {
    fn respond(&self, method: &str, uri: &Uri, headers: &HeaderMap, raw: &[u8]) -> Answer {
        let path = uri.path();
        let path = path.strip_prefix("/api/v3").unwrap_or(path).to_string();
        let query = uri.query().unwrap_or("").to_string();
        let mut st = self.state.lock().unwrap();
        let body = st.log.record(method, &path, &query, raw);

        // Injected failures come first, as a proxy or an overloaded GitHub would answer.
        let mut after_failure = None;
        if let Some(f) = st.log.injected(method, &path) {
            let message = match f.status {
                429 | 403 => "API rate limit exceeded",
                500..=599 => "Server Error",
                _ => "Injected failure",
            };
            let a = (f.status, f.headers, error_body(message, f.status));
            if !f.after {
                return a;
            }
            after_failure = Some(a);
        }

        let Some(op) = self.api.find_operation(method, &path) else {
            if method == "POST" && path.starts_with("/repos/") && path.ends_with("/assignees") {
                return self.assignees(&mut st, &path, body.as_ref(), headers);
            }
            st.log.violations.push(format!(
                "{method} {path}: no such operation in GitHub's API description"
            ));
            return answer(404, error_body("Not Found", 404));
        };
        let template = op.template.clone();

        if let Err(e) = self.authorize(&st, &template, &op.params, headers) {
            let a = answer(401, error_body(e, 401));
            self.check_error_answer(&mut st, method, &template, &a);
            return a;
        }

        if let Err(e) =
            self.api
                .validate_request(method, &template, body.as_ref().unwrap_or(&Value::Null))
        {
            st.log.violations.push(format!("{method} {path}: {e}"));
        }

        let a = if template.starts_with("/repos/")
            && (op.params.get("owner") != Some(&self.owner)
                || op.params.get("repo") != Some(&self.repo))
        {
            answer(404, error_body("Not Found", 404))
        } else {
            let q = parse_query(&query);
            let b = body.unwrap_or(Value::Null);
            self.dispatch(&mut st, method, &template, &op.params, &q, &b)
        };

        if a.0 < 400 {
            if let Err(e) = self.api.validate_response(method, &template, a.0, &a.2) {
                st.log.violations.push(format!("fake answer: {e}"));
            }
        } else {
            self.check_error_answer(&mut st, method, &template, &a);
        }
        after_failure.unwrap_or(a)
    }

    /// Error answers match the documented response when there is one, else `basic-error`.
    fn check_error_answer(&self, st: &mut State, method: &str, template: &str, a: &Answer) {
        let result = match self.api.response_schema(method, template, a.0) {
            Ok(_) => self.api.validate_response(method, template, a.0, &a.2),
            Err(_) => self
                .api
                .validate_schema(&self.api.named_schema("basic-error"), &a.2),
        };
        if let Err(e) = result {
            st.log.violations.push(format!("fake error answer: {e}"));
        }
    }

    fn authorize(
        &self,
        st: &State,
        template: &str,
        params: &std::collections::HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Result<(), &'static str> {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if template == "/app/installations/{installation_id}/access_tokens" {
            let (app_id, installation) = st.app.ok_or("Bad credentials")?;
            if params.get("installation_id") != Some(&installation.to_string()) {
                return Err("Bad credentials");
            }
            let jwt = auth.strip_prefix("Bearer ").ok_or("Bad credentials")?;
            return match jwt_issuer(jwt) {
                Some(iss) if iss == app_id.to_string() => Ok(()),
                _ => Err("A JSON web token could not be decoded"),
            };
        }
        let given = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("token "))
            .unwrap_or("");
        if !self.token.is_empty() && given == self.token {
            Ok(())
        } else if auth.is_empty() {
            Err("Requires authentication")
        } else {
            Err("Bad credentials")
        }
    }

    fn dispatch(
        &self,
        st: &mut State,
        method: &str,
        template: &str,
        params: &std::collections::HashMap<String, String>,
        q: &BTreeMap<String, String>,
        b: &Value,
    ) -> Answer {
        let number = || params.get("pull_number").or(params.get("issue_number"));
        let number: Option<u64> = number().and_then(|n| n.parse().ok());
        let not_found = || answer(404, error_body("Not Found", 404));
        match (method, template) {
            ("POST", "/app/installations/{installation_id}/access_tokens") => {
                let expires = (chrono::Utc::now() + chrono::Duration::hours(1))
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let mut v = self.skeleton("installation-token");
                merge(
                    &mut v,
                    json!({
                        "token": self.token,
                        "expires_at": expires,
                        "repository_selection": "selected",
                        "permissions": {
                            "pull_requests": "write",
                            "contents": "write",
                            "statuses": "write",
                            "issues": "write",
                        },
                    }),
                );
                answer(201, v)
            }
            ("GET", "/repos/{owner}/{repo}") => answer(200, self.full_repo_json()),
            ("GET", "/repos/{owner}/{repo}/pulls") => {
                let state = q.get("state").map(String::as_str).unwrap_or("open");
                let head = q.get("head").map(|h| match h.split_once(':') {
                    Some((owner, branch)) if owner == self.owner => Some(branch.to_string()),
                    Some(_) => None,
                    None => Some(h.clone()),
                });
                let list: Vec<Value> = st
                    .prs
                    .iter()
                    .filter(|p| state == "all" || p.state == state)
                    .filter(|p| match &head {
                        None => true,
                        Some(Some(h)) => &p.head == h,
                        Some(None) => false,
                    })
                    .filter(|p| q.get("base").is_none_or(|b| &p.base == b))
                    .map(|p| self.pr_json(p, false))
                    .collect();
                answer(200, Value::Array(list))
            }
            ("POST", "/repos/{owner}/{repo}/pulls") => self.create_pr(st, b),
            ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}") => {
                match st.prs.iter().find(|p| Some(p.number) == number) {
                    Some(p) => answer(200, self.pr_json(p, true)),
                    None => not_found(),
                }
            }
            ("PATCH", "/repos/{owner}/{repo}/pulls/{pull_number}") => {
                let Some(p) = st.prs.iter_mut().find(|p| Some(p.number) == number) else {
                    return not_found();
                };
                if let Some(t) = b.get("title").and_then(Value::as_str) {
                    p.title = t.to_string();
                }
                if let Some(body) = b.get("body").and_then(Value::as_str) {
                    p.body = Some(body.to_string());
                }
                if let Some(base) = b.get("base").and_then(Value::as_str) {
                    p.base = base.to_string();
                }
                match b.get("state").and_then(Value::as_str) {
                    Some("closed") if p.state == "open" => {
                        p.state = "closed".into();
                        p.closed_at = Some(now());
                    }
                    Some("open") if p.state == "closed" && !p.merged => {
                        p.state = "open".into();
                        p.closed_at = None;
                    }
                    _ => {}
                }
                p.updated_at = now();
                let p = p.clone();
                answer(200, self.pr_json(&p, true))
            }
            ("PUT", "/repos/{owner}/{repo}/pulls/{pull_number}/merge") => {
                let Some(pr) = st.prs.iter().find(|p| Some(p.number) == number).cloned() else {
                    return not_found();
                };
                let head = self.branch_sha(&pr.head).unwrap_or_default();
                if let Some(sha) = b.get("sha").and_then(Value::as_str) {
                    if pr.state == "open" && sha != head {
                        return answer(
                            409,
                            json!({ "message": "Head branch was modified. Review and try the merge again.", "documentation_url": DOCS }),
                        );
                    }
                }
                // Branch protection: every required context's latest status is success.
                let missing = st.required_contexts.iter().find(|c| {
                    st.statuses
                        .iter()
                        .rev()
                        .find(|s| s.sha == head && &s.context == *c)
                        .is_none_or(|s| s.state != "success")
                });
                if let Some(c) = missing {
                    return answer(
                        405,
                        json!({ "message": format!("Required status check \"{c}\" is expected."), "documentation_url": DOCS }),
                    );
                }
                let n = pr.number;
                match self.merge_locked(st, n) {
                    Ok(sha) => answer(
                        200,
                        json!({ "sha": sha, "merged": true, "message": "Pull Request successfully merged" }),
                    ),
                    Err(e) => answer(405, json!({ "message": e, "documentation_url": DOCS })),
                }
            }
            ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews") => {
                if !st.prs.iter().any(|p| Some(p.number) == number) {
                    return not_found();
                }
                let reviews: Vec<Value> = st
                    .reviews
                    .iter()
                    .filter(|r| Some(r.number) == number)
                    .map(|r| self.review_json(r))
                    .collect();
                answer(200, Value::Array(reviews))
            }
            ("POST", "/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers") => {
                let Some(p) = st.prs.iter_mut().find(|p| Some(p.number) == number) else {
                    return not_found();
                };
                for (key, list) in [
                    ("reviewers", &mut p.reviewers),
                    ("team_reviewers", &mut p.team_reviewers),
                ] {
                    for r in b.get(key).and_then(Value::as_array).into_iter().flatten() {
                        if let Some(r) = r.as_str() {
                            if !list.iter().any(|x| x == r) {
                                list.push(r.to_string());
                            }
                        }
                    }
                }
                let p = p.clone();
                answer(201, self.pr_json(&p, false))
            }
            ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers") => {
                let Some(p) = st.prs.iter().find(|p| Some(p.number) == number) else {
                    return not_found();
                };
                let users: Vec<Value> = p.reviewers.iter().map(|u| self.user_json(u)).collect();
                let teams: Vec<Value> =
                    p.team_reviewers.iter().map(|t| self.team_json(t)).collect();
                answer(200, json!({ "users": users, "teams": teams }))
            }
            ("POST", "/repos/{owner}/{repo}/issues/{issue_number}/labels") => {
                let names = label_names(b.get("labels").unwrap_or(b));
                for n in &names {
                    st.labels.insert(n.clone());
                }
                let Some(p) = st.prs.iter_mut().find(|p| Some(p.number) == number) else {
                    return not_found();
                };
                for n in names {
                    if !p.labels.contains(&n) {
                        p.labels.push(n);
                    }
                }
                let labels = p.labels.clone();
                answer(200, self.labels_json(&labels))
            }
            ("GET", "/repos/{owner}/{repo}/issues/{issue_number}/labels") => {
                let Some(p) = st.prs.iter().find(|p| Some(p.number) == number) else {
                    return not_found();
                };
                let labels = p.labels.clone();
                answer(200, self.labels_json(&labels))
            }
            ("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments") => {
                let Some(n) = number.filter(|n| st.prs.iter().any(|p| p.number == *n)) else {
                    return not_found();
                };
                st.next_id += 1;
                let c = FakeComment {
                    id: st.next_id,
                    issue: n,
                    body: b
                        .get("body")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    created_at: now(),
                };
                st.comments.push(c.clone());
                answer(201, self.comment_json(&c))
            }
            ("GET", "/repos/{owner}/{repo}/issues/{issue_number}/comments") => {
                let list: Vec<Value> = st
                    .comments
                    .iter()
                    .filter(|c| Some(c.issue) == number)
                    .map(|c| self.comment_json(c))
                    .collect();
                answer(200, Value::Array(list))
            }
            ("GET", "/repos/{owner}/{repo}/labels") => {
                let names: Vec<String> = st.labels.iter().cloned().collect();
                answer(200, self.labels_json(&names))
            }
            ("POST", "/repos/{owner}/{repo}/statuses/{sha}") => {
                let sha = params.get("sha").cloned().unwrap_or_default();
                if !self.commit_exists(&sha) {
                    return answer(
                        422,
                        json!({ "message": format!("No commit found for SHA: {sha}"), "documentation_url": DOCS }),
                    );
                }
                st.next_id += 1;
                let s = FakeStatus {
                    id: st.next_id,
                    sha,
                    state: b
                        .get("state")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    context: b
                        .get("context")
                        .and_then(Value::as_str)
                        .unwrap_or("default")
                        .to_string(),
                    description: b
                        .get("description")
                        .and_then(Value::as_str)
                        .map(String::from),
                    target_url: b
                        .get("target_url")
                        .and_then(Value::as_str)
                        .map(String::from),
                    created_at: now(),
                };
                st.statuses.push(s.clone());
                answer(201, self.status_json(&s, true))
            }
            ("GET", "/repos/{owner}/{repo}/commits/{ref}/status") => {
                let r = params.get("ref").cloned().unwrap_or_default();
                let Some(sha) = self.resolve(&r) else {
                    return not_found();
                };
                // The latest status per context, newest first.
                let mut latest: Vec<&FakeStatus> = Vec::new();
                for s in st.statuses.iter().rev().filter(|s| s.sha == sha) {
                    if !latest.iter().any(|l| l.context == s.context) {
                        latest.push(s);
                    }
                }
                let state = if latest
                    .iter()
                    .any(|s| s.state == "failure" || s.state == "error")
                {
                    "failure"
                } else if latest.is_empty() || latest.iter().any(|s| s.state == "pending") {
                    "pending"
                } else {
                    "success"
                };
                let statuses: Vec<Value> =
                    latest.iter().map(|s| self.status_json(s, false)).collect();
                let mut v = self.skeleton("combined-commit-status");
                merge(
                    &mut v,
                    json!({
                        "state": state,
                        "sha": sha,
                        "total_count": statuses.len(),
                        "statuses": statuses,
                        "repository": self.minimal_repo_json(),
                        "commit_url": self.api_url(&format!("/commits/{sha}")),
                        "url": self.api_url(&format!("/commits/{sha}/status")),
                    }),
                );
                answer(200, v)
            }
            ("GET", "/repos/{owner}/{repo}/issues") => {
                // GitHub lists pull requests too (with `pull_request` set).
                let wanted: Vec<&str> = q
                    .get("labels")
                    .map(|l| l.split(',').filter(|l| !l.is_empty()).collect())
                    .unwrap_or_default();
                let state = q.get("state").map(String::as_str).unwrap_or("open");
                let mut items: Vec<(String, Value)> = st
                    .issues
                    .iter()
                    .filter(|i| state == "all" || i.state == state)
                    .filter(|i| wanted.iter().all(|w| i.labels.iter().any(|l| l == w)))
                    .map(|i| {
                        (
                            i.created_at.clone() + &format!("{:09}", i.number),
                            self.issue_json(i),
                        )
                    })
                    .chain(
                        st.prs
                            .iter()
                            .filter(|p| state == "all" || p.state == state)
                            .filter(|p| wanted.iter().all(|w| p.labels.iter().any(|l| l == w)))
                            .map(|p| {
                                (
                                    p.created_at.clone() + &format!("{:09}", p.number),
                                    self.pr_as_issue_json(p),
                                )
                            }),
                    )
                    .collect();
                items.sort_by(|a, b| a.0.cmp(&b.0));
                if q.get("direction").map(String::as_str) != Some("asc") {
                    items.reverse();
                }
                answer(
                    200,
                    Value::Array(items.into_iter().map(|(_, v)| v).collect()),
                )
            }
            ("POST", "/repos/{owner}/{repo}/issues") => {
                let Some(title) = b.get("title").and_then(Value::as_str) else {
                    return answer(
                        422,
                        json!({
                            "message": "Validation Failed",
                            "errors": [{ "resource": "Issue", "field": "title", "code": "missing_field" }],
                            "documentation_url": DOCS,
                        }),
                    );
                };
                let labels = b.get("labels").map(label_names).unwrap_or_default();
                st.labels.extend(labels.iter().cloned());
                let body = b.get("body").and_then(Value::as_str).map(str::to_string);
                let issue = new_issue(st, "rebake[bot]", title, body, labels);
                answer(201, self.issue_json(&issue))
            }
            ("GET", "/repos/{owner}/{repo}/issues/{issue_number}") => {
                match st.issues.iter().find(|i| Some(i.number) == number) {
                    Some(i) => answer(200, self.issue_json(i)),
                    None => not_found(),
                }
            }
            ("PATCH", "/repos/{owner}/{repo}/issues/{issue_number}") => {
                let Some(i) = st.issues.iter_mut().find(|i| Some(i.number) == number) else {
                    return not_found();
                };
                if let Some(t) = b.get("title").and_then(Value::as_str) {
                    i.title = t.to_string();
                }
                if let Some(body) = b.get("body").and_then(Value::as_str) {
                    i.body = Some(body.to_string());
                }
                let wanted = b.get("state").and_then(Value::as_str);
                apply_issue_state(&mut i.state, &mut i.closed_at, wanted, now());
                i.updated_at = now();
                let i = i.clone();
                answer(200, self.issue_json(&i))
            }
            _ => {
                st.log.violations.push(format!(
                    "fake GitHub does not implement {method} {template} (add it to the fake)"
                ));
                answer(501, error_body("Not Implemented in the fake", 501))
            }
        }
    }

    fn create_pr(&self, st: &mut State, b: &Value) -> Answer {
        let field = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_string);
        let invalid = |field: &str, code: &str| {
            answer(
                422,
                json!({
                    "message": "Validation Failed",
                    "errors": [{ "resource": "PullRequest", "field": field, "code": code }],
                    "documentation_url": DOCS,
                }),
            )
        };
        let Some(title) = field("title") else {
            return invalid("title", "missing_field");
        };
        let Some(head) = field("head") else {
            return invalid("head", "missing_field");
        };
        let Some(base) = field("base") else {
            return invalid("base", "missing_field");
        };
        let head = match head.split_once(':') {
            Some((o, h)) if o == self.owner => h.to_string(),
            Some(_) => return invalid("head", "invalid"),
            None => head,
        };
        if self.branch_sha(&head).is_none() {
            return invalid("head", "invalid");
        }
        if self.branch_sha(&base).is_none() {
            return invalid("base", "invalid");
        }
        if st
            .prs
            .iter()
            .any(|p| p.state == "open" && p.head == head && p.base == base)
        {
            return answer(
                422,
                json!({
                    "message": "Validation Failed",
                    "errors": [{
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": format!("A pull request already exists for {}:{head}.", self.owner),
                    }],
                    "documentation_url": DOCS,
                }),
            );
        }
        st.next_id += 1;
        let number = st.next_number;
        st.next_number += 1;
        let t = now();
        let pr = FakePr {
            id: st.next_id,
            number,
            title,
            body: field("body"),
            head,
            base,
            state: "open".into(),
            merged: false,
            merge_commit_sha: None,
            merged_head_sha: None,
            labels: vec![],
            reviewers: vec![],
            team_reviewers: vec![],
            assignees: vec![],
            created_at: t.clone(),
            updated_at: t,
            closed_at: None,
            merged_at: None,
        };
        st.prs.push(pr.clone());
        answer(201, self.pr_json(&pr, true))
    }

    /// `POST /repos/{owner}/{repo}/issues/{n}/assignees` is not in the API subset; its body is
    /// checked against GitHub's documented shape (`{"assignees": [login...]}`).
    fn assignees(
        &self,
        st: &mut State,
        path: &str,
        body: Option<&Value>,
        headers: &HeaderMap,
    ) -> Answer {
        if let Err(e) = self.authorize(st, "", &Default::default(), headers) {
            return answer(401, error_body(e, 401));
        }
        let schema = json!({
            "type": "object",
            "properties": { "assignees": { "type": "array", "items": { "type": "string" } } },
        });
        if let Err(e) = self
            .api
            .validate_schema(&schema, body.unwrap_or(&Value::Null))
        {
            st.log.violations.push(format!("POST {path}: {e}"));
        }
        let prefix = format!("/repos/{}/{}/issues/", self.owner, self.repo);
        let number: Option<u64> = path
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix("/assignees"))
            .and_then(|n| n.parse().ok());
        let Some(p) = st.prs.iter_mut().find(|p| Some(p.number) == number) else {
            return answer(404, error_body("Not Found", 404));
        };
        for a in body
            .and_then(|b| b.get("assignees"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !p.assignees.iter().any(|x| x == a) {
                p.assignees.push(a.to_string());
            }
        }
        let assignees: Vec<Value> = p.assignees.iter().map(|a| self.user_json(a)).collect();
        let (number, title) = (p.number, p.title.clone());
        answer(
            201,
            json!({ "number": number, "title": title, "assignees": assignees }),
        )
    }

    // --- git ------------------------------------------------------------------------------

    fn git(&self) -> git2::Repository {
        git2::Repository::open_bare(&self.git_dir).expect("open the fake's bare repository")
    }

    fn branch_sha(&self, branch: &str) -> Option<String> {
        let repo = self.git();
        let sha = repo
            .find_reference(&format!("refs/heads/{branch}"))
            .and_then(|r| r.peel_to_commit())
            .map(|c| c.id().to_string())
            .ok();
        sha
    }

    fn commit_exists(&self, sha: &str) -> bool {
        let repo = self.git();
        let found = git2::Oid::from_str(sha)
            .ok()
            .filter(|_| sha.len() == 40)
            .is_some_and(|oid| repo.find_commit(oid).is_ok());
        found
    }

    fn resolve(&self, r: &str) -> Option<String> {
        if self.commit_exists(r) {
            return Some(r.to_string());
        }
        self.branch_sha(r)
    }

    fn merge_locked(&self, st: &mut State, number: u64) -> Result<String, String> {
        let p = st
            .prs
            .iter()
            .find(|p| p.number == number)
            .cloned()
            .ok_or_else(|| format!("no PR #{number}"))?;
        if p.state != "open" {
            return Err("Pull Request is not mergeable".into());
        }
        let repo = self.git();
        let commit_of = |b: &str| -> Result<git2::Commit<'_>, String> {
            repo.find_reference(&format!("refs/heads/{b}"))
                .and_then(|r| r.peel_to_commit())
                .map_err(|e| format!("branch {b}: {e}"))
        };
        let base = commit_of(&p.base)?;
        let head = commit_of(&p.head)?;
        let mut index = repo
            .merge_commits(&base, &head, None)
            .map_err(|e| e.to_string())?;
        if index.has_conflicts() {
            return Err("Merge conflict".into());
        }
        let tree_id = index.write_tree_to(&repo).map_err(|e| e.to_string())?;
        let tree = repo.find_tree(tree_id).map_err(|e| e.to_string())?;
        let sig = git2::Signature::now("GitHub", "noreply@github.com").unwrap();
        let message = format!(
            "Merge pull request #{number} from {}/{}\n\n{}",
            self.owner, p.head, p.title
        );
        let oid = repo
            .commit(
                Some(&format!("refs/heads/{}", p.base)),
                &sig,
                &sig,
                &message,
                &tree,
                &[&base, &head],
            )
            .map_err(|e| e.to_string())?;
        let t = now();
        let pr = st.prs.iter_mut().find(|p| p.number == number).unwrap();
        pr.state = "closed".into();
        pr.merged = true;
        pr.merge_commit_sha = Some(oid.to_string());
        pr.merged_head_sha = Some(head.id().to_string());
        pr.merged_at = Some(t.clone());
        pr.closed_at = Some(t.clone());
        pr.updated_at = t;
        Ok(oid.to_string())
    }

    // --- JSON, valid against GitHub's schemas ----------------------------------------------

    fn skeleton(&self, name: &str) -> Value {
        self.api.skeleton(&self.api.named_schema(name))
    }

    fn api_url(&self, rest: &str) -> String {
        format!("{}/repos/{}/{}{rest}", self.base_url, self.owner, self.repo)
    }

    fn html_url(&self, rest: &str) -> String {
        format!("{}/{}/{}{rest}", self.base_url, self.owner, self.repo)
    }

    fn user_json(&self, login: &str) -> Value {
        let mut v = self.skeleton("simple-user");
        let id = login
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
            % 1_000_000;
        merge(
            &mut v,
            json!({
                "login": login,
                "id": id,
                "node_id": format!("U_{id}"),
                "type": if login.ends_with("[bot]") { "Bot" } else { "User" },
                "url": format!("{}/users/{}", self.base_url, url_segment(login)),
                "html_url": format!("{}/{}", self.base_url, url_segment(login)),
            }),
        );
        v
    }

    fn review_json(&self, r: &FakeReview) -> Value {
        let mut v = self.skeleton("pull-request-review");
        let html = format!(
            "{}/{}/{}/pull/{}#pullrequestreview-{}",
            self.base_url, self.owner, self.repo, r.number, r.id
        );
        let pr = self.api_url(&format!("/pulls/{}", r.number));
        merge(
            &mut v,
            json!({
                "id": r.id,
                "node_id": format!("PRR_{}", r.id),
                "user": self.user_json(&r.login),
                "body": "",
                "state": r.state,
                "html_url": html,
                "pull_request_url": pr,
                "_links": { "html": { "href": html }, "pull_request": { "href": pr } },
                "submitted_at": r.submitted_at,
                "commit_id": r.commit_id,
                "author_association": "COLLABORATOR",
            }),
        );
        v
    }

    fn team_json(&self, slug: &str) -> Value {
        let mut v = self.skeleton("team");
        merge(
            &mut v,
            json!({ "slug": slug, "name": slug, "url": format!("{}/teams/{slug}", self.base_url) }),
        );
        v
    }

    fn repo_fields(&self) -> Value {
        json!({
            "id": 1,
            "node_id": "R_1",
            "name": self.repo,
            "full_name": format!("{}/{}", self.owner, self.repo),
            "owner": self.user_json(&self.owner),
            "url": self.api_url(""),
            "html_url": self.html_url(""),
            "clone_url": self.html_url(".git"),
            "default_branch": "main",
        })
    }

    fn repo_json(&self) -> Value {
        let mut v = self.skeleton("repository");
        merge(&mut v, self.repo_fields());
        v
    }

    fn full_repo_json(&self) -> Value {
        let mut v = self.skeleton("full-repository");
        merge(&mut v, self.repo_fields());
        v
    }

    fn minimal_repo_json(&self) -> Value {
        let mut v = self.skeleton("minimal-repository");
        merge(&mut v, self.repo_fields());
        v
    }

    fn labels_json(&self, names: &[String]) -> Value {
        Value::Array(names.iter().map(|n| self.label_json(n)).collect())
    }

    /// Label ids are a stable hash of the name, so every answer agrees.
    fn label_json(&self, name: &str) -> Value {
        let id = name
            .bytes()
            .fold(11u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
            % 1_000_000;
        let mut v = self.skeleton("label");
        merge(
            &mut v,
            json!({
                "id": id,
                "node_id": format!("LA_{id}"),
                "name": name,
                "description": "",
                "color": "ededed",
                "url": self.api_url(&format!("/labels/{}", url_segment(name))),
            }),
        );
        v
    }

    fn comment_json(&self, c: &FakeComment) -> Value {
        let mut v = self.skeleton("issue-comment");
        merge(
            &mut v,
            json!({
                "id": c.id,
                "node_id": format!("IC_{}", c.id),
                "body": c.body,
                "user": self.user_json("rebake[bot]"),
                "url": self.api_url(&format!("/issues/comments/{}", c.id)),
                "html_url": self.html_url(&format!("/pull/{}#issuecomment-{}", c.issue, c.id)),
                "issue_url": self.api_url(&format!("/issues/{}", c.issue)),
                "created_at": c.created_at,
                "updated_at": c.created_at,
            }),
        );
        v
    }

    /// `status` (with creator) or `simple-commit-status` (inside a combined status).
    fn status_json(&self, s: &FakeStatus, full: bool) -> Value {
        let mut v = self.skeleton(if full {
            "status"
        } else {
            "simple-commit-status"
        });
        let mut fields = json!({
            "id": s.id,
            "node_id": format!("SC_{}", s.id),
            "state": s.state,
            "context": s.context,
            "description": s.description,
            "target_url": s.target_url,
            "url": self.api_url(&format!("/statuses/{}", s.sha)),
            "avatar_url": format!("{}/avatars/rebake", self.base_url),
            "created_at": s.created_at,
            "updated_at": s.created_at,
        });
        if full {
            fields["creator"] = self.user_json("rebake[bot]");
        }
        merge(&mut v, fields);
        v
    }

    /// An issue as GitHub's `issue` schema describes it.
    fn issue_json(&self, i: &FakeIssue) -> Value {
        let mut v = self.skeleton("issue");
        let n = i.number;
        merge(
            &mut v,
            json!({
                "id": i.id,
                "node_id": format!("I_{}", i.id),
                "number": n,
                "state": i.state,
                "title": i.title,
                "body": i.body,
                "user": self.user_json(&i.author),
                "labels": self.labels_json(&i.labels),
                "assignee": null,
                "assignees": [],
                "milestone": null,
                "locked": false,
                "comments": 0,
                "url": self.api_url(&format!("/issues/{n}")),
                "repository_url": self.api_url(""),
                "labels_url": self.api_url(&format!("/issues/{n}/labels{{/name}}")),
                "comments_url": self.api_url(&format!("/issues/{n}/comments")),
                "events_url": self.api_url(&format!("/issues/{n}/events")),
                "html_url": self.html_url(&format!("/issues/{n}")),
                "created_at": i.created_at,
                "updated_at": i.updated_at,
                "closed_at": i.closed_at,
                "author_association": "NONE",
            }),
        );
        v
    }

    /// A pull request as the issues API lists it.
    fn pr_as_issue_json(&self, p: &FakePr) -> Value {
        let issue = FakeIssue {
            id: p.id,
            number: p.number,
            title: p.title.clone(),
            body: p.body.clone(),
            state: p.state.clone(),
            labels: p.labels.clone(),
            author: "rebake[bot]".into(),
            created_at: p.created_at.clone(),
            updated_at: p.updated_at.clone(),
            closed_at: p.closed_at.clone(),
        };
        let mut v = self.issue_json(&issue);
        let n = p.number;
        v["html_url"] = json!(self.html_url(&format!("/pull/{n}")));
        v["pull_request"] = json!({
            "url": self.api_url(&format!("/pulls/{n}")),
            "html_url": self.html_url(&format!("/pull/{n}")),
            "diff_url": self.html_url(&format!("/pull/{n}.diff")),
            "patch_url": self.html_url(&format!("/pull/{n}.patch")),
            "merged_at": p.merged_at,
        });
        v
    }

    /// `pull-request` (full) or `pull-request-simple` (lists).
    fn pr_json(&self, p: &FakePr, full: bool) -> Value {
        let mut v = self.skeleton(if full {
            "pull-request"
        } else {
            "pull-request-simple"
        });
        let head_sha = p
            .merged_head_sha
            .clone()
            .or_else(|| self.branch_sha(&p.head))
            .unwrap_or_else(|| "0".repeat(40));
        let base_sha = self.branch_sha(&p.base).unwrap_or_else(|| "0".repeat(40));
        let side = |r: &str, sha: &str| {
            json!({
                "label": format!("{}:{r}", self.owner),
                "ref": r,
                "sha": sha,
                "user": self.user_json(&self.owner),
                "repo": self.repo_json(),
            })
        };
        let n = p.number;
        let labels = self.labels_json(&p.labels);
        let mut fields = json!({
            "id": p.id,
            "node_id": format!("PR_{}", p.id),
            "number": n,
            "state": p.state,
            "locked": false,
            "title": p.title,
            "body": p.body,
            "user": self.user_json("rebake[bot]"),
            "labels": labels,
            "assignee": p.assignees.first().map(|a| self.user_json(a)),
            "assignees": p.assignees.iter().map(|a| self.user_json(a)).collect::<Vec<_>>(),
            "requested_reviewers": p.reviewers.iter().map(|a| self.user_json(a)).collect::<Vec<_>>(),
            "requested_teams": p.team_reviewers.iter().map(|t| self.team_json(t)).collect::<Vec<_>>(),
            "head": side(&p.head, &head_sha),
            "base": side(&p.base, &base_sha),
            "url": self.api_url(&format!("/pulls/{n}")),
            "html_url": self.html_url(&format!("/pull/{n}")),
            "diff_url": self.html_url(&format!("/pull/{n}.diff")),
            "patch_url": self.html_url(&format!("/pull/{n}.patch")),
            "issue_url": self.api_url(&format!("/issues/{n}")),
            "commits_url": self.api_url(&format!("/pulls/{n}/commits")),
            "review_comments_url": self.api_url(&format!("/pulls/{n}/comments")),
            "review_comment_url": self.api_url("/pulls/comments{/number}"),
            "comments_url": self.api_url(&format!("/issues/{n}/comments")),
            "statuses_url": self.api_url(&format!("/statuses/{head_sha}")),
            "created_at": p.created_at,
            "updated_at": p.updated_at,
            "closed_at": p.closed_at,
            "merged_at": p.merged_at,
            "merge_commit_sha": p.merge_commit_sha,
            "author_association": "NONE",
            "draft": false,
        });
        if full {
            merge(
                &mut fields,
                json!({
                    "merged": p.merged,
                    "mergeable": if p.state == "open" { json!(true) } else { Value::Null },
                    "mergeable_state": if p.state == "open" { "clean" } else { "unknown" },
                    "merged_by": if p.merged { self.user_json("octocat") } else { Value::Null },
                    "comments": 0,
                    "review_comments": 0,
                    "commits": 1,
                    "maintainer_can_modify": false,
                }),
            );
        }
        merge(&mut v, fields);
        v
    }
}

/// Percent-encodes everything but unreserved characters, for URLs the fake hands out.
fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `iss` claim of a JWT (unverified: the fake trusts the signature).
fn jwt_issuer(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    match v.get("iss")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A bare repository at `dir` with a first commit on `base` and, for each of `branches`, one
/// more commit on top of it (adding `images/<last path part>/Dockerfile`). Returns each branch's
/// head commit.
pub fn init_bare_repo(dir: &Path, base: &str, branches: &[&str]) -> BTreeMap<String, String> {
    let repo = git2::Repository::init_bare(dir).expect("git init --bare");
    let sig = git2::Signature::new(
        "Test",
        "test@example.invalid",
        &git2::Time::new(1_700_000_000, 0),
    )
    .unwrap();
    let commit =
        |parent: Option<&git2::Commit>, files: &[(&str, &str)], msg: &str, refname: &str| {
            let mut tb = match parent {
                Some(p) => repo.treebuilder(Some(&p.tree().unwrap())).unwrap(),
                None => repo.treebuilder(None).unwrap(),
            };
            // Files one directory deep at most: images/<name>/Dockerfile.
            for (path, content) in files {
                let blob = repo.blob(content.as_bytes()).unwrap();
                let parts: Vec<&str> = path.split('/').collect();
                if parts.len() == 1 {
                    tb.insert(parts[0], blob, 0o100644).unwrap();
                } else {
                    let mut sub = repo.treebuilder(None).unwrap();
                    let mut leaf = repo.treebuilder(None).unwrap();
                    leaf.insert(parts[2], blob, 0o100644).unwrap();
                    let leaf_id = leaf.write().unwrap();
                    sub.insert(parts[1], leaf_id, 0o040000).unwrap();
                    if let Some(p) = parent {
                        if let Ok(existing) = p.tree().unwrap().get_path(Path::new(parts[0])) {
                            let existing = repo.find_tree(existing.id()).unwrap();
                            let mut merged = repo.treebuilder(Some(&existing)).unwrap();
                            merged.insert(parts[1], leaf_id, 0o040000).unwrap();
                            sub = merged;
                        }
                    }
                    let sub_id = sub.write().unwrap();
                    tb.insert(parts[0], sub_id, 0o040000).unwrap();
                }
            }
            let tree = repo.find_tree(tb.write().unwrap()).unwrap();
            let parents: Vec<&git2::Commit> = parent.into_iter().collect();
            repo.commit(Some(refname), &sig, &sig, msg, &tree, &parents)
                .unwrap()
        };
    let root = commit(
        None,
        &[("README.md", "images\n")],
        "initial",
        &format!("refs/heads/{base}"),
    );
    repo.set_head(&format!("refs/heads/{base}")).unwrap();
    let root = repo.find_commit(root).unwrap();
    let mut out = BTreeMap::new();
    out.insert(base.to_string(), root.id().to_string());
    for b in branches {
        let name = b.rsplit('/').next().unwrap();
        let file = format!("images/{name}/Dockerfile");
        let oid = commit(
            Some(&root),
            &[(
                file.as_str(),
                &format!("# generated by rebake\nFROM scratch # {name}\n"),
            )],
            &format!("{name}: update"),
            &format!("refs/heads/{b}"),
        );
        out.insert(b.to_string(), oid.to_string());
    }
    out
}
