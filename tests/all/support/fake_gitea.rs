//! A stateful, in-process fake of Gitea's REST API v1 (`/api/v1`), the Gitea twin of
//! [`super::fake_github`].
//!
//! One repository `owner/repo` whose branches and commits are a REAL bare git repository on
//! disk (so SHAs are real and [`FakeGitea::merge`] makes a real merge commit with git2), and
//! pull requests, labels (by id, as Gitea has them), comments and commit statuses in memory,
//! changed by the requests the client sends.
//!
//! Contract: every request body is validated against Gitea's official Swagger 2 description
//! (`tests/data/forge-api/gitea-swagger-subset.json`, Gitea v1.23.6), query parameters must be
//! ones the operation documents, and a token in the query string (Gitea's deprecated
//! `token`/`access_token`) is a violation. Every success answer the fake gives is validated too.
//! Violations are recorded ([`FakeGitea::violations`]) and fail the test when the fake drops.
//!
//! Also: the token check (`Authorization: token <t>` or `Bearer <t>`, else 401 with Gitea's
//! `{"message", "url"}` error body), failure injection ([`FakeGitea::fail_next`]), a request
//! log, Gitea's paging (`page`/`limit`, capped like `MAX_RESPONSE_ITEMS`, `X-Total-Count`).

use super::openapi::{percent_decode, OpenApi};
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use super::fake_forge::LoggedRequest;
use super::fake_forge::{apply_issue_state, check_on_drop, FakeForge, Log};

/// A pull request as the fake holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakePr {
    pub id: i64,
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    /// `open` or `closed`.
    pub state: String,
    pub merged: bool,
    pub merge_commit_sha: Option<String>,
    /// The head commit last seen (kept when the branch goes away).
    pub head_sha: String,
    /// Label ids.
    pub labels: Vec<i64>,
    pub assignees: Vec<String>,
    pub reviewers: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub closed_at: Option<String>,
    pub merged_at: Option<String>,
}

/// An issue (not a pull request); issues and pull requests share one number sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeIssue {
    pub id: i64,
    pub number: u64,
    pub title: String,
    pub body: String,
    pub state: String,
    /// Label ids.
    pub labels: Vec<i64>,
    pub author: String,
    pub created_at: String,
    pub updated_at: String,
    pub closed_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FakeLabel {
    pub id: i64,
    pub name: String,
    /// Six hex digits, no `#` (as Gitea answers).
    pub color: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FakeComment {
    pub id: i64,
    pub issue: u64,
    pub body: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FakeStatus {
    pub id: i64,
    pub sha: String,
    pub state: String,
    pub context: String,
    pub description: String,
    pub target_url: String,
    pub created_at: String,
}

/// A review as the fake holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeReview {
    pub id: i64,
    pub number: u64,
    pub login: String,
    /// `APPROVED`, `REQUEST_CHANGES`, `COMMENT`.
    pub state: String,
    pub dismissed: bool,
    pub commit_id: String,
    pub submitted_at: String,
}

struct State {
    issues: Vec<FakeIssue>,
    /// Reviews, oldest first.
    reviews: Vec<FakeReview>,
    /// Pull requests whose merge waits for their checks (`merge_when_checks_succeed`).
    scheduled: Vec<u64>,
    /// Status contexts a CI system starts (pending) on the head of each new pull request.
    ci_contexts: Vec<String>,
    next_id: i64,
    next_number: u64,
    prs: Vec<FakePr>,
    labels: Vec<FakeLabel>,
    comments: Vec<FakeComment>,
    statuses: Vec<FakeStatus>,
    log: Log,
    /// Gitea's `MAX_RESPONSE_ITEMS` (default 50).
    max_page: usize,
    /// Behave like Gitea < 1.23 / Forgejo: ignore `reviewers` in CreatePullRequestOption.
    ignore_create_reviewers: bool,
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

/// The running fake. Dropping it stops the server and fails the test on any violation.
pub struct FakeGitea {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

type Answer = (u16, Vec<(String, String)>, Value);

const REPO_ID: i64 = 1;
/// Gitea's `DEFAULT_PAGING_NUM`, used when a list request names no `limit`.
const DEFAULT_PAGING: usize = 30;

/// `PullReviewRequestOptions` from Gitea v1.23.6's swagger (`templates/swagger/v1_json.tmpl`):
/// the body of `POST /repos/{owner}/{repo}/pulls/{index}/requested_reviewers`, an endpoint the
/// shared subset does not carry.
fn pull_review_request_options() -> Value {
    json!({
        "type": "object",
        "properties": {
            "reviewers": { "type": "array", "items": { "type": "string" } },
            "team_reviewers": { "type": "array", "items": { "type": "string" } }
        }
    })
}

/// Gitea's `APIError` body (swagger documents it only as headers).
fn api_error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["message"],
        "properties": { "message": { "type": "string" }, "url": { "type": "string" } }
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn answer(status: u16, body: Value) -> Answer {
    (status, Vec::new(), body)
}

impl FakeGitea {
    /// Serves `owner/repo` on 127.0.0.1 (a free port), backed by the bare repository `git_dir`,
    /// accepting `token`.
    pub async fn start(git_dir: &Path, owner: &str, repo: &str, token: &str) -> FakeGitea {
        git2::Repository::open_bare(git_dir).unwrap_or_else(|e| {
            panic!(
                "fake Gitea: {} is not a bare git repository: {e}",
                git_dir.display()
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake Gitea");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            api: OpenApi::gitea(),
            base_url: format!("http://{addr}"),
            owner: owner.to_string(),
            repo: repo.to_string(),
            token: token.to_string(),
            git_dir: git_dir.to_path_buf(),
            state: Mutex::new(State {
                reviews: Vec::new(),
                scheduled: Vec::new(),
                ci_contexts: Vec::new(),
                next_id: 100,
                next_number: 1,
                prs: Vec::new(),
                labels: Vec::new(),
                issues: Vec::new(),
                comments: Vec::new(),
                statuses: Vec::new(),
                log: Log::default(),
                max_page: 50,
                ignore_create_reviewers: false,
            }),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake Gitea serves");
        });
        FakeGitea {
            addr,
            inner,
            server,
        }
    }

    /// The server's web address to give the client (`http://127.0.0.1:<port>`; the API is
    /// under `/api/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap()
    }

    /// Caps list pages like Gitea's `MAX_RESPONSE_ITEMS`.
    pub fn set_max_page_size(&self, n: usize) {
        self.state().max_page = n.max(1);
    }

    /// Ignore `reviewers` when creating a pull request, as Gitea before 1.23 and Forgejo do.
    pub fn ignore_reviewers_on_create(&self, yes: bool) {
        self.state().ignore_create_reviewers = yes;
    }

    /// How many requests were writes (anything but GET).
    pub fn writes(&self) -> usize {
        self.state()
            .log
            .requests
            .iter()
            .filter(|r| r.method != "GET")
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
            .unwrap_or_else(|| panic!("fake Gitea has no pull request #{number}"))
    }

    /// Names of the labels on pull request `number`.
    pub fn pr_label_names(&self, number: u64) -> Vec<String> {
        let st = self.state();
        let Some(p) = st.prs.iter().find(|p| p.number == number) else {
            return Vec::new();
        };
        p.labels
            .iter()
            .filter_map(|id| st.labels.iter().find(|l| l.id == *id))
            .map(|l| l.name.clone())
            .collect()
    }

    /// The issues (not pull requests), by number.
    pub fn issues(&self) -> Vec<FakeIssue> {
        self.state().issues.clone()
    }

    /// Names of the labels on issue `number`.
    pub fn issue_label_names(&self, number: u64) -> Vec<String> {
        let st = self.state();
        let i = st.issues.iter().find(|i| i.number == number).unwrap();
        i.labels
            .iter()
            .filter_map(|id| st.labels.iter().find(|l| l.id == *id))
            .map(|l| l.name.clone())
            .collect()
    }

    /// An issue a person opens, with the labels of these ids.
    pub fn open_issue(&self, author: &str, title: &str, body: &str, labels: &[i64]) -> u64 {
        let mut st = self.state();
        new_issue(&mut st, author, title, body, labels.to_vec()).number
    }

    /// A person closes issue `number`.
    pub fn close_issue(&self, number: u64) {
        let mut st = self.state();
        let issue = st.issues.iter_mut().find(|i| i.number == number).unwrap();
        issue.state = "closed".into();
        issue.closed_at = Some(now());
    }

    /// The repository's labels.
    pub fn labels(&self) -> Vec<FakeLabel> {
        self.state().labels.clone()
    }

    /// Adds a repository label as a person would in the web UI; returns its id.
    pub fn add_label(&self, name: &str, color: &str) -> i64 {
        let mut st = self.state();
        let id = next_id(&mut st);
        st.labels.push(FakeLabel {
            id,
            name: name.to_string(),
            color: color.trim_start_matches('#').to_string(),
            description: String::new(),
        });
        id
    }

    /// Comment bodies on issue/pull request `number`, in order.
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

    /// A person's review of pull request `number` at its current head.
    pub fn add_review(&self, number: u64, login: &str, state: &str, dismissed: bool) {
        let mut st = self.state();
        let head = st
            .prs
            .iter()
            .find(|p| p.number == number)
            .map(|p| p.head.clone())
            .unwrap_or_else(|| panic!("fake Gitea has no pull request #{number}"));
        let commit_id = self.inner.branch_sha(&head).unwrap_or_default();
        let id = next_id(&mut st);
        st.reviews.push(FakeReview {
            id,
            number,
            login: login.to_string(),
            state: state.to_string(),
            dismissed,
            commit_id,
            submitted_at: now(),
        });
    }

    /// Sets a commit status as a CI system would (and, as Gitea does, merges a pull request
    /// scheduled to merge when its checks succeed).
    pub fn set_status(&self, sha: &str, context: &str, state: &str) {
        let mut st = self.state();
        let s = FakeStatus {
            id: next_id(&mut st),
            sha: sha.to_string(),
            state: state.to_string(),
            context: context.to_string(),
            description: String::new(),
            target_url: String::new(),
            created_at: now(),
        };
        st.statuses.push(s);
        self.inner.run_scheduled_merges(&mut st);
    }

    /// From now on, each new pull request gets a pending `context` on its head, as a CI
    /// workflow triggered by the pull request would post.
    pub fn ci_on_pull_request(&self, context: &str) {
        self.state().ci_contexts.push(context.to_string());
    }

    /// Pull requests waiting to be merged when their checks succeed.
    pub fn scheduled_merges(&self) -> Vec<u64> {
        self.state().scheduled.clone()
    }

    /// Merges pull request `number` as Gitea's merge button (style "merge") does: a real merge
    /// commit on the base branch of the bare repository; the pull request becomes closed and
    /// merged. Returns the merge commit.
    pub fn merge(&self, number: u64) -> String {
        let mut st = self.state();
        self.inner
            .merge_locked(&mut st, number)
            .unwrap_or_else(|e| panic!("fake Gitea: merging #{number}: {e}"))
    }
}

impl Drop for FakeGitea {
    fn drop(&mut self) {
        self.server.abort();
        check_on_drop(
            "Gitea",
            self.inner.state.lock().ok().as_deref().map(|s| &s.log),
        );
    }
}

impl FakeForge for FakeGitea {
    const NAME: &'static str = "Gitea";

    fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        f(&mut self.state().log)
    }
}

fn new_issue(st: &mut State, author: &str, title: &str, body: &str, labels: Vec<i64>) -> FakeIssue {
    let t = now();
    let issue = FakeIssue {
        id: next_id(st),
        number: st.next_number,
        title: title.to_string(),
        body: body.to_string(),
        state: "open".into(),
        labels,
        author: author.to_string(),
        created_at: t.clone(),
        updated_at: t,
        closed_at: None,
    };
    st.next_number += 1;
    st.issues.push(issue.clone());
    issue
}

fn next_id(st: &mut State) -> i64 {
    st.next_id += 1;
    st.next_id
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
                "application/json;charset=utf-8",
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

fn parse_query(q: &str) -> Vec<(String, String)> {
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

/// A page of `items` per Gitea's `page`/`limit`, with `X-Total-Count`.
fn paginate(
    st: &State,
    q: &BTreeMap<String, String>,
    items: Vec<Value>,
) -> (Vec<(String, String)>, Value) {
    let total = items.len();
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let limit = q
        .get("limit")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(DEFAULT_PAGING)
        .min(st.max_page);
    let page_items: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    (
        vec![("x-total-count".to_string(), total.to_string())],
        Value::Array(page_items),
    )
}

impl Inner {
    fn respond(&self, method: &str, uri: &Uri, headers: &HeaderMap, raw: &[u8]) -> Answer {
        let full_path = uri.path().to_string();
        let query = uri.query().unwrap_or("").to_string();
        let mut st = self.state.lock().unwrap();
        let path = match full_path.strip_prefix("/api/v1") {
            Some(p) => p.to_string(),
            None => {
                st.log.violations.push(format!(
                    "{method} {full_path}: Gitea's API is under /api/v1"
                ));
                return answer(404, self.error("Not Found"));
            }
        };
        let body = st.log.record(method, &path, &query, raw);
        if body.is_some()
            && headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_none_or(|c| !c.starts_with("application/json"))
        {
            st.log.violations.push(format!(
                "{method} {path}: a JSON body without Content-Type: application/json"
            ));
        }
        let query_pairs = parse_query(&query);
        if query_pairs
            .iter()
            .any(|(k, _)| k == "token" || k == "access_token")
        {
            st.log.violations.push(format!(
                "{method} {path}: token in the query string (deprecated by Gitea, and it leaks into logs)"
            ));
        }

        // Injected failures come first, as a proxy or an overloaded server would answer.
        let mut after_failure = None;
        if let Some(f) = st.log.injected(method, &path) {
            let message = match f.status {
                429 => "rate limit exceeded",
                500..=599 => "internal server error",
                _ => "injected failure",
            };
            let a = (f.status, f.headers, self.error(message));
            if !f.after {
                return a;
            }
            after_failure = Some(a);
        }

        // The one endpoint outside the subset: review requests (pre-1.23 servers need it).
        let rr_prefix = format!("/repos/{}/{}/pulls/", self.owner, self.repo);
        if method == "POST"
            && path.starts_with(&rr_prefix)
            && path.ends_with("/requested_reviewers")
        {
            if let Err(e) = self.authorize(headers) {
                return answer(401, self.error(e));
            }
            return self.request_reviewers(&mut st, &path, &rr_prefix, body.as_ref());
        }

        let Some(op) = self.api.find_operation(method, &path) else {
            st.log.violations.push(format!(
                "{method} {path}: no such operation in Gitea's API description"
            ));
            return answer(404, self.error("Not Found"));
        };
        let template = op.template.clone();

        if let Err(e) = self.authorize(headers) {
            let a = answer(401, self.error(e));
            self.check_error_answer(&mut st, &a);
            return a;
        }

        if let Err(e) =
            self.api
                .validate_request(method, &template, body.as_ref().unwrap_or(&Value::Null))
        {
            st.log.violations.push(format!("{method} {path}: {e}"));
        }
        self.check_query(&mut st, method, &template, &query_pairs);

        let a = if template.starts_with("/repos/")
            && (op.params.get("owner") != Some(&self.owner)
                || op.params.get("repo") != Some(&self.repo))
        {
            answer(404, self.error("Not Found"))
        } else {
            let q: BTreeMap<String, String> = query_pairs.into_iter().collect();
            let b = body.unwrap_or(Value::Null);
            self.dispatch(&mut st, method, &template, &op.params, &q, &b)
        };

        if a.0 < 400 {
            if let Err(e) = self.api.validate_response(method, &template, a.0, &a.2) {
                st.log.violations.push(format!("fake answer: {e}"));
            }
        } else {
            self.check_error_answer(&mut st, &a);
        }
        after_failure.unwrap_or(a)
    }

    /// Query parameters must be ones the operation documents, with integer `page`/`limit`.
    fn check_query(&self, st: &mut State, method: &str, template: &str, q: &[(String, String)]) {
        let pointer = format!(
            "/paths/{}/{}/parameters",
            template.replace('~', "~0").replace('/', "~1"),
            method.to_ascii_lowercase()
        );
        let params = self.api.doc().pointer(&pointer).and_then(Value::as_array);
        for (k, v) in q {
            let doc = params.into_iter().flatten().find(|p| {
                p.get("in").and_then(Value::as_str) == Some("query")
                    && p.get("name").and_then(Value::as_str) == Some(k.as_str())
            });
            let Some(doc) = doc else {
                st.log.violations.push(format!(
                    "{method} {template}: query parameter {k:?} is not documented"
                ));
                continue;
            };
            if doc.get("type").and_then(Value::as_str) == Some("integer") {
                let min = doc
                    .get("minimum")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MIN);
                if !v.parse::<i64>().is_ok_and(|n| n >= min) {
                    st.log.violations.push(format!(
                        "{method} {template}: query parameter {k}={v:?} is not an integer >= {min}"
                    ));
                }
            }
            if let Some(allowed) = doc.get("enum").and_then(Value::as_array) {
                if !allowed.iter().any(|a| a.as_str() == Some(v.as_str())) {
                    st.log.violations.push(format!(
                        "{method} {template}: query parameter {k}={v:?} is not one of {allowed:?}"
                    ));
                }
            }
        }
    }

    fn check_error_answer(&self, st: &mut State, a: &Answer) {
        if let Err(e) = self.api.validate_schema(&api_error_schema(), &a.2) {
            st.log
                .violations
                .push(format!("fake error answer {}: {e}", a.0));
        }
    }

    fn error(&self, message: &str) -> Value {
        json!({ "message": message, "url": format!("{}/api/swagger", self.base_url) })
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let given = auth
            .strip_prefix("token ")
            .or_else(|| auth.strip_prefix("Bearer "))
            .unwrap_or("");
        if !self.token.is_empty() && given == self.token {
            Ok(())
        } else if auth.is_empty() {
            Err("token is required")
        } else {
            Err("user does not exist")
        }
    }

    fn dispatch(
        &self,
        st: &mut State,
        method: &str,
        template: &str,
        params: &HashMap<String, String>,
        q: &BTreeMap<String, String>,
        b: &Value,
    ) -> Answer {
        let index: Option<u64> = params.get("index").and_then(|n| n.parse().ok());
        let not_found = || answer(404, self.error("Not Found"));
        match (method, template) {
            ("GET", "/user") => answer(200, self.user_json("rebake-bot")),
            ("GET", "/repos/{owner}/{repo}") => answer(200, self.repo_json()),
            ("GET", "/repos/{owner}/{repo}/branches/{branch}") => {
                let branch = &params["branch"];
                match self.branch_json(branch) {
                    Some(v) => answer(200, v),
                    None => not_found(),
                }
            }
            ("GET", "/repos/{owner}/{repo}/pulls") => {
                let state = q.get("state").map(String::as_str).unwrap_or("open");
                let mut list: Vec<&FakePr> = st
                    .prs
                    .iter()
                    .filter(|p| state == "all" || p.state == state)
                    .collect();
                list.sort_by_key(|p| std::cmp::Reverse(p.number));
                let items = list.into_iter().map(|p| self.pr_json(st, p)).collect();
                let (h, v) = paginate(st, q, items);
                (200, h, v)
            }
            ("POST", "/repos/{owner}/{repo}/pulls") => self.create_pr(st, b),
            ("GET", "/repos/{owner}/{repo}/issues") => {
                // Gitea lists pull requests too unless `type=issues`; newest first.
                let state = q.get("state").map(String::as_str).unwrap_or("open");
                let kind = q.get("type").map(String::as_str).unwrap_or("");
                let wanted: Vec<&str> = q
                    .get("labels")
                    .map(|l| l.split(',').filter(|l| !l.is_empty()).collect())
                    .unwrap_or_default();
                let named = |ids: &[i64]| -> Vec<String> {
                    ids.iter()
                        .filter_map(|id| st.labels.iter().find(|l| l.id == *id))
                        .map(|l| l.name.clone())
                        .collect()
                };
                let keep = |s: &str, ids: &[i64]| {
                    (state == "all" || s == state)
                        && wanted.iter().all(|w| named(ids).iter().any(|n| n == w))
                };
                let mut items: Vec<(u64, Value)> = Vec::new();
                if kind != "pulls" {
                    for i in st.issues.iter().filter(|i| keep(&i.state, &i.labels)) {
                        items.push((i.number, self.issue_json(st, i, None)));
                    }
                }
                if kind != "issues" {
                    for p in st.prs.iter().filter(|p| keep(&p.state, &p.labels)) {
                        let as_issue = FakeIssue {
                            id: p.id,
                            number: p.number,
                            title: p.title.clone(),
                            body: p.body.clone(),
                            state: p.state.clone(),
                            labels: p.labels.clone(),
                            author: "rebake-bot".into(),
                            created_at: p.created_at.clone(),
                            updated_at: p.updated_at.clone(),
                            closed_at: p.closed_at.clone(),
                        };
                        items.push((p.number, self.issue_json(st, &as_issue, Some(p))));
                    }
                }
                items.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
                let (h, v) = paginate(st, q, items.into_iter().map(|(_, v)| v).collect());
                (200, h, v)
            }
            ("POST", "/repos/{owner}/{repo}/issues") => {
                let title = b.get("title").and_then(Value::as_str).unwrap_or("");
                if title.is_empty() {
                    return answer(422, self.error("[Title]: Required"));
                }
                let labels = match self.existing_label_ids(st, b) {
                    Ok(ids) => ids,
                    Err(refused) => return refused,
                };
                let body = b.get("body").and_then(Value::as_str).unwrap_or("");
                let issue = new_issue(st, "rebake-bot", title, body, labels);
                answer(201, self.issue_json(st, &issue, None))
            }
            ("GET", "/repos/{owner}/{repo}/issues/{index}") => {
                match st.issues.iter().find(|i| Some(i.number) == index) {
                    Some(i) => answer(200, self.issue_json(st, i, None)),
                    None => not_found(),
                }
            }
            ("PATCH", "/repos/{owner}/{repo}/issues/{index}") => {
                let Some(i) = st.issues.iter_mut().find(|i| Some(i.number) == index) else {
                    return not_found();
                };
                if let Some(t) = b.get("title").and_then(Value::as_str) {
                    i.title = t.to_string();
                }
                if let Some(body) = b.get("body").and_then(Value::as_str) {
                    i.body = body.to_string();
                }
                let wanted = b.get("state").and_then(Value::as_str);
                apply_issue_state(&mut i.state, &mut i.closed_at, wanted, now());
                i.updated_at = now();
                let i = i.clone();
                answer(201, self.issue_json(st, &i, None))
            }
            ("GET", "/repos/{owner}/{repo}/pulls/{index}") => {
                match st.prs.iter().find(|p| Some(p.number) == index) {
                    Some(p) => answer(200, self.pr_json(st, p)),
                    None => not_found(),
                }
            }
            ("PATCH", "/repos/{owner}/{repo}/pulls/{index}") => self.edit_pr(st, index, b),
            ("GET", "/repos/{owner}/{repo}/issues/{index}/comments") => {
                if !st.prs.iter().any(|p| Some(p.number) == index) {
                    return not_found();
                }
                let list = st
                    .comments
                    .iter()
                    .filter(|c| Some(c.issue) == index)
                    .map(|c| self.comment_json(c))
                    .collect();
                answer(200, Value::Array(list))
            }
            ("POST", "/repos/{owner}/{repo}/issues/{index}/comments") => {
                let Some(index) = index.filter(|i| st.prs.iter().any(|p| p.number == *i)) else {
                    return not_found();
                };
                let Some(text) = b.get("body").and_then(Value::as_str) else {
                    return answer(422, self.error("[Body]: Required"));
                };
                let c = FakeComment {
                    id: next_id(st),
                    issue: index,
                    body: text.to_string(),
                    created_at: now(),
                };
                st.comments.push(c.clone());
                answer(201, self.comment_json(&c))
            }
            ("GET", "/repos/{owner}/{repo}/labels") => {
                let items = st.labels.iter().map(|l| self.label_json(l)).collect();
                let (h, v) = paginate(st, q, items);
                (200, h, v)
            }
            ("POST", "/repos/{owner}/{repo}/labels") => {
                let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                let color = b.get("color").and_then(Value::as_str).unwrap_or("");
                let hex = color.trim_start_matches('#');
                if name.is_empty() {
                    return answer(422, self.error("[Name]: Required"));
                }
                if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return answer(422, self.error("invalid color"));
                }
                let l = FakeLabel {
                    id: next_id(st),
                    name: name.to_string(),
                    color: hex.to_ascii_lowercase(),
                    description: b
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                };
                st.labels.push(l.clone());
                answer(201, self.label_json(&l))
            }
            ("POST", "/repos/{owner}/{repo}/statuses/{sha}") => {
                let sha = &params["sha"];
                if !self.commit_exists(sha) {
                    return answer(404, self.error("commit does not exist"));
                }
                let state = b.get("state").and_then(Value::as_str).unwrap_or("");
                if !["pending", "success", "error", "failure", "warning"].contains(&state) {
                    return answer(400, self.error("invalid state"));
                }
                let text = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let s = FakeStatus {
                    id: next_id(st),
                    sha: sha.clone(),
                    state: state.to_string(),
                    context: text("context"),
                    description: text("description"),
                    target_url: text("target_url"),
                    created_at: now(),
                };
                st.statuses.push(s.clone());
                self.run_scheduled_merges(st);
                answer(201, self.status_json(&s))
            }
            ("POST", "/repos/{owner}/{repo}/pulls/{index}/merge") => {
                let Some(pr) = st.prs.iter().find(|p| Some(p.number) == index).cloned() else {
                    return not_found();
                };
                if pr.merged {
                    return answer(405, self.error("The PR is already merged"));
                }
                let head = self.branch_sha(&pr.head).unwrap_or_default();
                if let Some(h) = b.get("head_commit_id").and_then(Value::as_str) {
                    if !h.is_empty() && h != head {
                        return answer(409, self.error("head out of date"));
                    }
                }
                let when_checks = b
                    .get("merge_when_checks_succeed")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if when_checks && !self.checks_pass(st, &head) {
                    // Gitea schedules the merge (real Gitea answers 201 here; the swagger
                    // documents only 200) and merges once a status makes the checks pass.
                    if !st.scheduled.contains(&pr.number) {
                        st.scheduled.push(pr.number);
                    }
                    return answer(200, Value::Null);
                }
                match self.merge_locked(st, pr.number) {
                    Ok(_) => answer(200, Value::Null),
                    Err(e) => answer(405, self.error(&e)),
                }
            }
            ("DELETE", "/repos/{owner}/{repo}/pulls/{index}/merge") => {
                let Some(n) = index.filter(|n| st.scheduled.contains(n)) else {
                    return not_found();
                };
                st.scheduled.retain(|s| *s != n);
                answer(204, Value::Null)
            }
            ("GET", "/repos/{owner}/{repo}/pulls/{index}/reviews") => {
                if !st.prs.iter().any(|p| Some(p.number) == index) {
                    return not_found();
                }
                let items: Vec<Value> = st
                    .reviews
                    .iter()
                    .filter(|r| Some(r.number) == index)
                    .map(|r| self.review_json(r))
                    .collect();
                let (h, v) = paginate(st, q, items);
                (200, h, v)
            }
            ("GET", "/repos/{owner}/{repo}/statuses/{sha}") => {
                let sha = &params["sha"];
                let mut list: Vec<&FakeStatus> =
                    st.statuses.iter().filter(|s| &s.sha == sha).collect();
                list.reverse();
                let items = list.into_iter().map(|s| self.status_json(s)).collect();
                let (h, v) = paginate(st, q, items);
                (200, h, v)
            }
            ("GET", "/repos/{owner}/{repo}/commits/{ref}/status") => {
                let Some(sha) = self.resolve(&params["ref"]) else {
                    return not_found();
                };
                // Latest status per context.
                let mut latest: BTreeMap<&str, &FakeStatus> = BTreeMap::new();
                for s in st.statuses.iter().filter(|s| s.sha == sha) {
                    latest.insert(s.context.as_str(), s);
                }
                let worst = latest
                    .values()
                    .map(|s| s.state.as_str())
                    .max_by_key(|s| match *s {
                        "success" => 0,
                        "warning" => 1,
                        "pending" => 2,
                        "failure" => 3,
                        _ => 4,
                    });
                let items: Vec<Value> = latest.values().map(|s| self.status_json(s)).collect();
                let total = items.len();
                let (_, page) = paginate(st, q, items);
                let mut v = json!({
                    "sha": sha,
                    "total_count": total,
                    "statuses": page,
                    "repository": self.repo_json(),
                    "commit_url": self.api_url(&format!("/commits/{sha}")),
                    "url": self.api_url(&format!("/commits/{sha}/status")),
                });
                if let Some(w) = worst {
                    v["state"] = json!(w);
                }
                answer(200, v)
            }
            _ => answer(
                405,
                self.error(&format!(
                    "the fake Gitea does not implement {method} {template}"
                )),
            ),
        }
    }

    /// The label ids of a create body (`labels`), or Gitea's 422 when one does not exist.
    fn existing_label_ids(&self, st: &State, b: &Value) -> Result<Vec<i64>, Answer> {
        let labels: Vec<i64> = b
            .get("labels")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .collect();
        match labels
            .iter()
            .find(|id| !st.labels.iter().any(|l| l.id == **id))
        {
            Some(bad) => Err(answer(
                422,
                self.error(&format!("label does not exist [id: {bad}]")),
            )),
            None => Ok(labels),
        }
    }

    fn create_pr(&self, st: &mut State, b: &Value) -> Answer {
        let text = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let strings = |k: &str| -> Vec<String> {
            b.get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        };
        let (head, base, title) = (text("head"), text("base"), text("title"));
        if title.is_empty() {
            return answer(422, self.error("[Title]: Required"));
        }
        if head == base {
            return answer(
                422,
                self.error(
                    "Invalid PullRequest: There are no changes between the head and the base",
                ),
            );
        }
        let Some(head_sha) = self.branch_sha(&head) else {
            return answer(
                404,
                self.error(&format!("head branch {head:?} does not exist")),
            );
        };
        if self.branch_sha(&base).is_none() {
            return answer(
                404,
                self.error(&format!("base branch {base:?} does not exist")),
            );
        }
        if let Some(p) = st
            .prs
            .iter()
            .find(|p| p.state == "open" && p.head == head && p.base == base)
        {
            return answer(
                409,
                self.error(&format!(
                    "pull request already exists for these targets [id: {}, issue_id: {}, head_repo_id: {REPO_ID}, base_repo_id: {REPO_ID}, head_branch: {head}, base_branch: {base}]",
                    p.id, p.id
                )),
            );
        }
        let labels = match self.existing_label_ids(st, b) {
            Ok(ids) => ids,
            Err(refused) => return refused,
        };
        let mut assignees = strings("assignees");
        let single = text("assignee");
        if !single.is_empty() && !assignees.contains(&single) {
            assignees.insert(0, single);
        }
        let reviewers = if st.ignore_create_reviewers {
            Vec::new()
        } else {
            strings("reviewers")
        };
        let t = now();
        let p = FakePr {
            id: next_id(st),
            number: st.next_number,
            title,
            body: text("body"),
            head,
            base,
            state: "open".into(),
            merged: false,
            merge_commit_sha: None,
            head_sha,
            labels,
            assignees,
            reviewers,
            created_at: t.clone(),
            updated_at: t,
            closed_at: None,
            merged_at: None,
        };
        st.next_number += 1;
        st.prs.push(p.clone());
        // CI triggered by the pull request: its check starts on the head.
        for context in st.ci_contexts.clone() {
            let s = FakeStatus {
                id: next_id(st),
                sha: p.head_sha.clone(),
                state: "pending".into(),
                context,
                description: "running".into(),
                target_url: String::new(),
                created_at: now(),
            };
            st.statuses.push(s);
        }
        answer(201, self.pr_json(st, &p))
    }

    fn edit_pr(&self, st: &mut State, index: Option<u64>, b: &Value) -> Answer {
        let label_ids: Option<Vec<i64>> = b
            .get("labels")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_i64).collect());
        if let Some(bad) = label_ids
            .iter()
            .flatten()
            .find(|id| !st.labels.iter().any(|l| l.id == **id))
        {
            return answer(
                422,
                self.error(&format!("label does not exist [id: {bad}]")),
            );
        }
        let Some(p) = st.prs.iter_mut().find(|p| Some(p.number) == index) else {
            return answer(404, self.error("Not Found"));
        };
        if let Some(t) = b.get("title").and_then(Value::as_str) {
            p.title = t.to_string();
        }
        if let Some(body) = b.get("body").and_then(Value::as_str) {
            p.body = body.to_string();
        }
        if let Some(ids) = label_ids {
            p.labels = ids;
        }
        if let Some(a) = b.get("assignees").and_then(Value::as_array) {
            p.assignees = a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
        }
        match b.get("state").and_then(Value::as_str) {
            Some("closed") if p.state == "open" => {
                p.state = "closed".into();
                p.closed_at = Some(now());
            }
            Some("open") if p.state == "closed" => {
                if p.merged {
                    return answer(409, self.error("cannot reopen a merged pull request"));
                }
                p.state = "open".into();
                p.closed_at = None;
            }
            Some("open") | Some("closed") | None => {}
            Some(other) => return answer(422, self.error(&format!("invalid state {other:?}"))),
        }
        p.updated_at = now();
        let p = p.clone();
        // Gitea answers an edit with 201.
        answer(201, self.pr_json(st, &p))
    }

    fn request_reviewers(
        &self,
        st: &mut State,
        path: &str,
        prefix: &str,
        body: Option<&Value>,
    ) -> Answer {
        let body = body.cloned().unwrap_or(Value::Null);
        if let Err(e) = self
            .api
            .validate_schema(&pull_review_request_options(), &body)
        {
            st.log.violations.push(format!("POST {path}: {e}"));
        }
        let index: Option<u64> = path
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("/requested_reviewers"))
            .and_then(|n| n.parse().ok());
        let Some(p) = st.prs.iter_mut().find(|p| Some(p.number) == index) else {
            return answer(404, self.error("Not Found"));
        };
        let mut added = Vec::new();
        for r in body
            .get("reviewers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !p.reviewers.iter().any(|x| x == r) {
                p.reviewers.push(r.to_string());
            }
            added.push(r.to_string());
        }
        let number = p.number;
        let reviews: Vec<Value> = added
            .iter()
            .map(|r| {
                json!({
                    "id": r.len() as i64 + 500,
                    "user": self.user_json(r),
                    "state": "REQUEST_REVIEW",
                    "pull_request_url": self.html_url(&format!("/pulls/{number}")),
                })
            })
            .collect();
        answer(201, Value::Array(reviews))
    }

    // --- git ------------------------------------------------------------------------------

    fn git(&self) -> git2::Repository {
        git2::Repository::open_bare(&self.git_dir).expect("open the fake's bare repository")
    }

    fn branch_sha(&self, branch: &str) -> Option<String> {
        let repo = self.git();
        let r = repo.find_reference(&format!("refs/heads/{branch}")).ok()?;
        let sha = r.peel_to_commit().ok()?.id().to_string();
        Some(sha)
    }

    fn commit_exists(&self, sha: &str) -> bool {
        let repo = self.git();
        sha.len() == 40
            && git2::Oid::from_str(sha)
                .ok()
                .and_then(|oid| repo.find_commit(oid).ok())
                .is_some()
    }

    fn resolve(&self, r: &str) -> Option<String> {
        if self.commit_exists(r) {
            return Some(r.to_string());
        }
        self.branch_sha(r)
    }

    /// Every context's latest status on `sha` is success (none pending, none failed).
    fn checks_pass(&self, st: &State, sha: &str) -> bool {
        let mut latest: BTreeMap<&str, &str> = BTreeMap::new();
        for s in st.statuses.iter().filter(|s| s.sha == sha) {
            latest.insert(&s.context, &s.state);
        }
        latest.values().all(|s| *s == "success")
    }

    /// Merges the scheduled pull requests whose checks now pass.
    fn run_scheduled_merges(&self, st: &mut State) {
        for number in st.scheduled.clone() {
            let Some(pr) = st.prs.iter().find(|p| p.number == number).cloned() else {
                continue;
            };
            let head = self.branch_sha(&pr.head).unwrap_or_default();
            if self.checks_pass(st, &head) && self.merge_locked(st, number).is_ok() {
                st.scheduled.retain(|n| *n != number);
            }
        }
    }

    fn review_json(&self, r: &FakeReview) -> Value {
        json!({
            "id": r.id,
            "user": self.user_json(&r.login),
            "state": r.state,
            "body": "",
            "commit_id": r.commit_id,
            "stale": false,
            "official": true,
            "dismissed": r.dismissed,
            "comments_count": 0,
            "submitted_at": r.submitted_at,
            "html_url": format!("{}/{}/{}/pulls/{}#issuecomment-{}", self.base_url, self.owner, self.repo, r.number, r.id),
            "pull_request_url": format!("{}/{}/{}/pulls/{}", self.base_url, self.owner, self.repo, r.number),
        })
    }

    fn merge_locked(&self, st: &mut State, number: u64) -> Result<String, String> {
        let p = st
            .prs
            .iter()
            .find(|p| p.number == number)
            .cloned()
            .ok_or_else(|| format!("no pull request #{number}"))?;
        if p.state != "open" {
            return Err("pull request is not open".into());
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
            return Err("merge conflict".into());
        }
        let tree_id = index.write_tree_to(&repo).map_err(|e| e.to_string())?;
        let tree = repo.find_tree(tree_id).map_err(|e| e.to_string())?;
        let sig = git2::Signature::now("Gitea", "gitea@fake.invalid").map_err(|e| e.to_string())?;
        // Gitea's default merge message.
        let message = format!(
            "Merge pull request '{}' (#{number}) from {} into {}\n\n{}",
            p.title, p.head, p.base, p.body
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
        pr.head_sha = head.id().to_string();
        pr.merged_at = Some(t.clone());
        pr.closed_at = Some(t.clone());
        pr.updated_at = t;
        Ok(oid.to_string())
    }

    // --- JSON, valid against Gitea's definitions (nil pointers omitted, not null) ----------

    fn api_url(&self, rest: &str) -> String {
        format!(
            "{}/api/v1/repos/{}/{}{rest}",
            self.base_url, self.owner, self.repo
        )
    }

    fn html_url(&self, rest: &str) -> String {
        format!("{}/{}/{}{rest}", self.base_url, self.owner, self.repo)
    }

    fn user_json(&self, login: &str) -> Value {
        let id = login
            .bytes()
            .fold(7i64, |h, b| h.wrapping_mul(31).wrapping_add(b as i64))
            .rem_euclid(1_000_000);
        json!({
            "id": id,
            "login": login,
            "login_name": "",
            "source_id": 0,
            "full_name": "",
            "email": format!("{login}@noreply.fake.invalid"),
            "avatar_url": format!("{}/avatars/{id}", self.base_url),
            "html_url": format!("{}/{login}", self.base_url),
            "language": "",
            "is_admin": false,
            "last_login": "0001-01-01T00:00:00Z",
            "created": "2025-01-01T00:00:00Z",
            "restricted": false,
            "active": true,
            "prohibit_login": false,
            "location": "",
            "website": "",
            "description": "",
            "visibility": "public",
            "followers_count": 0,
            "following_count": 0,
            "starred_repos_count": 0,
            "username": login,
        })
    }

    fn repo_json(&self) -> Value {
        json!({
            "id": REPO_ID,
            "owner": self.user_json(&self.owner),
            "name": self.repo,
            "full_name": format!("{}/{}", self.owner, self.repo),
            "description": "",
            "empty": false,
            "private": false,
            "fork": false,
            "template": false,
            "mirror": false,
            "size": 0,
            "html_url": self.html_url(""),
            "url": self.api_url(""),
            "link": "",
            "ssh_url": format!("git@fake.invalid:{}/{}.git", self.owner, self.repo),
            "clone_url": self.html_url(".git"),
            "website": "",
            "stars_count": 0,
            "forks_count": 0,
            "watchers_count": 0,
            "open_issues_count": 0,
            "open_pr_counter": 0,
            "release_counter": 0,
            "default_branch": "main",
            "archived": false,
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:00:00Z",
            "has_issues": true,
            "has_pull_requests": true,
            "allow_merge_commits": true,
            "default_merge_style": "merge",
            "object_format_name": "sha1",
        })
    }

    fn branch_json(&self, branch: &str) -> Option<Value> {
        let repo = self.git();
        let commit = repo
            .find_reference(&format!("refs/heads/{branch}"))
            .ok()?
            .peel_to_commit()
            .ok()?;
        let who = |s: git2::Signature| {
            json!({
                "name": s.name().unwrap_or(""),
                "email": s.email().unwrap_or(""),
                "username": "",
            })
        };
        let time = chrono::DateTime::from_timestamp(commit.time().seconds(), 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Some(json!({
            "name": branch,
            "commit": {
                "id": commit.id().to_string(),
                "message": commit.message().unwrap_or(""),
                "url": self.html_url(&format!("/commit/{}", commit.id())),
                "author": who(commit.author()),
                "committer": who(commit.committer()),
                "timestamp": time,
            },
            "protected": false,
            "user_can_push": true,
            "user_can_merge": true,
            "enable_status_check": false,
            "required_approvals": 0,
            "effective_branch_protection_name": "",
        }))
    }

    fn label_json(&self, l: &FakeLabel) -> Value {
        json!({
            "id": l.id,
            "name": l.name,
            "exclusive": false,
            "is_archived": false,
            "color": l.color,
            "description": l.description,
            "url": self.api_url(&format!("/labels/{}", l.id)),
        })
    }

    fn comment_json(&self, c: &FakeComment) -> Value {
        json!({
            "id": c.id,
            "html_url": self.html_url(&format!("/pulls/{}#issuecomment-{}", c.issue, c.id)),
            "pull_request_url": self.html_url(&format!("/pulls/{}", c.issue)),
            "issue_url": "",
            "user": self.user_json("rebake-bot"),
            "original_author": "",
            "original_author_id": 0,
            "body": c.body,
            "assets": [],
            "created_at": c.created_at,
            "updated_at": c.created_at,
        })
    }

    fn status_json(&self, s: &FakeStatus) -> Value {
        json!({
            "id": s.id,
            "status": s.state,
            "target_url": s.target_url,
            "description": s.description,
            "url": self.api_url(&format!("/statuses/{}", s.sha)),
            "context": s.context,
            "creator": self.user_json("rebake-bot"),
            "created_at": s.created_at,
            "updated_at": s.created_at,
        })
    }

    /// An issue as Gitea's `Issue` definition describes it (`pull`: the pull request it is).
    fn issue_json(&self, st: &State, i: &FakeIssue, pull: Option<&FakePr>) -> Value {
        let n = i.number;
        let labels: Vec<Value> = i
            .labels
            .iter()
            .filter_map(|id| st.labels.iter().find(|l| l.id == *id))
            .map(|l| self.label_json(l))
            .collect();
        let mut v = json!({
            "id": i.id,
            "url": self.api_url(&format!("/issues/{n}")),
            "html_url": self.html_url(&format!("/issues/{n}")),
            "number": n,
            "user": self.user_json(&i.author),
            "original_author": "",
            "original_author_id": 0,
            "title": i.title,
            "body": i.body,
            "ref": "",
            "assets": [],
            "labels": labels,
            "milestone": null,
            "assignee": null,
            "assignees": null,
            "state": i.state,
            "is_locked": false,
            "comments": st.comments.iter().filter(|c| c.issue == n).count(),
            "created_at": i.created_at,
            "updated_at": i.updated_at,
            "closed_at": i.closed_at,
            "due_date": null,
            "pull_request": null,
            "repository": {
                "id": REPO_ID,
                "name": self.repo,
                "owner": self.owner,
                "full_name": format!("{}/{}", self.owner, self.repo),
            },
            "pin_order": 0,
        });
        // Swagger 2.0 has no `nullable`: as in pr_json, an absent value is left out.
        if let Some(fields) = v.as_object_mut() {
            fields.retain(|_, value| !value.is_null());
        }
        if let Some(p) = pull {
            v["html_url"] = json!(self.html_url(&format!("/pulls/{n}")));
            v["pull_request"] = json!({
                "merged": p.merged,
                "draft": false,
                "html_url": self.html_url(&format!("/pulls/{n}")),
            });
            if let Some(at) = &p.merged_at {
                v["pull_request"]["merged_at"] = json!(at);
            }
        }
        v
    }

    fn pr_json(&self, st: &State, p: &FakePr) -> Value {
        let n = p.number;
        let labels: Vec<Value> = p
            .labels
            .iter()
            .filter_map(|id| st.labels.iter().find(|l| l.id == *id))
            .map(|l| self.label_json(l))
            .collect();
        let base_sha = self.branch_sha(&p.base).unwrap_or_default();
        // As Gitea's convert.ToAPIPullRequest: the branch while it exists, else the PR ref.
        let (head_ref, head_sha) = match self.branch_sha(&p.head) {
            Some(sha) => (p.head.clone(), sha),
            None => (format!("refs/pull/{n}/head"), p.head_sha.clone()),
        };
        let mut v = json!({
            "id": p.id,
            "url": self.html_url(&format!("/pulls/{n}")),
            "number": n,
            "user": self.user_json("rebake-bot"),
            "title": p.title,
            "body": p.body,
            "labels": labels,
            "assignees": p.assignees.iter().map(|a| self.user_json(a)).collect::<Vec<_>>(),
            "requested_reviewers": p.reviewers.iter().map(|a| self.user_json(a)).collect::<Vec<_>>(),
            "requested_reviewers_teams": [],
            "state": p.state,
            "draft": false,
            "is_locked": false,
            "comments": st.comments.iter().filter(|c| c.issue == n).count(),
            "review_comments": 0,
            "html_url": self.html_url(&format!("/pulls/{n}")),
            "diff_url": self.html_url(&format!("/pulls/{n}.diff")),
            "patch_url": self.html_url(&format!("/pulls/{n}.patch")),
            "mergeable": p.state == "open",
            "merged": p.merged,
            "allow_maintainer_edit": false,
            "base": {
                "label": p.base, "ref": p.base, "sha": base_sha,
                "repo_id": REPO_ID, "repo": self.repo_json(),
            },
            "head": {
                "label": p.head, "ref": head_ref, "sha": head_sha,
                "repo_id": REPO_ID, "repo": self.repo_json(),
            },
            "merge_base": base_sha,
            "created_at": p.created_at,
            "updated_at": p.updated_at,
            "pin_order": 0,
        });
        if let Some(a) = p.assignees.first() {
            v["assignee"] = self.user_json(a);
        }
        if let Some(t) = &p.closed_at {
            v["closed_at"] = json!(t);
        }
        if p.merged {
            v["merged_at"] = json!(p.merged_at);
            v["merge_commit_sha"] = json!(p.merge_commit_sha);
            v["merged_by"] = self.user_json(&self.owner);
        }
        v
    }
}

/// A bare repository at `dir` with a first commit on `base` and, for each of `branches`, one
/// more commit on top of it adding `images/<last path part>/Dockerfile`. Returns each branch's
/// head commit (the base branch included).
pub fn init_bare_repo(dir: &Path, base: &str, branches: &[&str]) -> BTreeMap<String, String> {
    let repo = git2::Repository::init_bare(dir).expect("git init --bare");
    let sig = git2::Signature::new(
        "Test",
        "test@example.invalid",
        &git2::Time::new(1_700_000_000, 0),
    )
    .unwrap();
    let mut heads = BTreeMap::new();
    let readme = repo.blob(b"# images\n").unwrap();
    let mut tb = repo.treebuilder(None).unwrap();
    tb.insert("README.md", readme, 0o100644).unwrap();
    let tree = repo.find_tree(tb.write().unwrap()).unwrap();
    let first = repo
        .commit(
            Some(&format!("refs/heads/{base}")),
            &sig,
            &sig,
            "Initial commit",
            &tree,
            &[],
        )
        .unwrap();
    heads.insert(base.to_string(), first.to_string());
    let first = repo.find_commit(first).unwrap();
    for branch in branches {
        let name = branch.rsplit('/').next().unwrap_or(branch);
        let content = format!("FROM scratch\n# {name}\n");
        let tree_id = with_file(
            &repo,
            Some(&first.tree().unwrap()),
            &["images", name, "Dockerfile"],
            content.as_bytes(),
        );
        let tree = repo.find_tree(tree_id).unwrap();
        let oid = repo
            .commit(
                Some(&format!("refs/heads/{branch}")),
                &sig,
                &sig,
                &format!("{name}: update\n"),
                &tree,
                &[&first],
            )
            .unwrap();
        heads.insert(branch.to_string(), oid.to_string());
    }
    heads
}

/// A commit on `branch` (on top of its head) writing `path` = `content`; returns the new head.
pub fn commit_file(dir: &Path, branch: &str, path: &str, content: &str) -> String {
    let repo = git2::Repository::open_bare(dir).expect("open bare repository");
    let sig = git2::Signature::new(
        "Test",
        "test@example.invalid",
        &git2::Time::new(1_700_000_100, 0),
    )
    .unwrap();
    let parent = repo
        .find_reference(&format!("refs/heads/{branch}"))
        .and_then(|r| r.peel_to_commit())
        .expect("branch exists");
    let parts: Vec<&str> = path.split('/').collect();
    let tree_id = with_file(
        &repo,
        Some(&parent.tree().unwrap()),
        &parts,
        content.as_bytes(),
    );
    let tree = repo.find_tree(tree_id).unwrap();
    repo.commit(
        Some(&format!("refs/heads/{branch}")),
        &sig,
        &sig,
        &format!("update {path}\n"),
        &tree,
        &[&parent],
    )
    .unwrap()
    .to_string()
}

/// `tree` with the file at `parts` set to `content` (directories created as needed).
fn with_file(
    repo: &git2::Repository,
    tree: Option<&git2::Tree>,
    parts: &[&str],
    content: &[u8],
) -> git2::Oid {
    let mut tb = repo.treebuilder(tree).unwrap();
    if parts.len() == 1 {
        let blob = repo.blob(content).unwrap();
        tb.insert(parts[0], blob, 0o100644).unwrap();
    } else {
        let sub = tree
            .and_then(|t| t.get_name(parts[0]))
            .and_then(|e| repo.find_tree(e.id()).ok());
        let sub_id = with_file(repo, sub.as_ref(), &parts[1..], content);
        tb.insert(parts[0], sub_id, 0o040000).unwrap();
    }
    tb.write().unwrap()
}
