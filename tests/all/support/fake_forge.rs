//! What the fake GitHub and the fake Gitea share: the log of requests, the contract violations
//! found in requests and in the fakes' own answers, and failures injected by a test. Each fake
//! keeps a [`Log`] in its state and implements [`FakeForge`] for the methods tests call.

use serde_json::Value;

/// One request a fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    pub method: String,
    /// Path without the query and without the API prefix (`/api/v3`, `/api/v1`).
    pub path: String,
    pub query: String,
    /// The JSON body, if there was one.
    pub body: Option<Value>,
}

#[derive(Debug, Clone)]
struct Failure {
    method: String,
    prefix: String,
    status: u16,
    headers: Vec<(String, String)>,
    remaining: usize,
    /// Do the work, then answer the failure (a proxy timing out after the server acted).
    after: bool,
}

/// An injected answer for one request.
pub struct Injected {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The request is carried out first; only its answer is replaced.
    pub after: bool,
}

#[derive(Debug, Default)]
pub struct Log {
    pub requests: Vec<LoggedRequest>,
    pub violations: Vec<String>,
    failures: Vec<Failure>,
}

impl Log {
    /// The request's body parsed as JSON (a body that is not JSON is a violation), logged with
    /// the request.
    pub fn record(&mut self, method: &str, path: &str, query: &str, raw: &[u8]) -> Option<Value> {
        let body = if raw.is_empty() {
            None
        } else {
            match serde_json::from_slice(raw) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.violations
                        .push(format!("{method} {path}: request body is not JSON: {e}"));
                    None
                }
            }
        };
        self.requests.push(LoggedRequest {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            body: body.clone(),
        });
        body
    }

    fn inject(
        &mut self,
        method: &str,
        path_prefix: &str,
        status: u16,
        headers: &[(&str, &str)],
        times: usize,
        after: bool,
    ) {
        self.failures.push(Failure {
            method: method.to_ascii_uppercase(),
            prefix: path_prefix.to_string(),
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remaining: times,
            after,
        });
    }

    /// The injected failure this request gets, if any (counted as used).
    pub fn injected(&mut self, method: &str, path: &str) -> Option<Injected> {
        let f = self.failures.iter_mut().find(|f| {
            (f.method == "*" || f.method == method)
                && path.starts_with(&f.prefix)
                && f.remaining > 0
        })?;
        f.remaining -= 1;
        Some(Injected {
            status: f.status,
            headers: f.headers.clone(),
            after: f.after,
        })
    }
}

/// The test-facing side of a fake forge: failure injection, the request log, violations.
pub trait FakeForge {
    /// "GitHub", "Gitea": for messages.
    const NAME: &'static str;

    /// Runs `f` on the fake's log (under the fake's state lock).
    fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T;

    /// The next request `method` (or "*") whose path (without the API prefix) starts with
    /// `path_prefix` gets `status` with `headers` instead of its answer.
    fn fail_next(&self, method: &str, path_prefix: &str, status: u16, headers: &[(&str, &str)]) {
        self.fail_times(method, path_prefix, status, headers, 1);
    }

    /// Like [`fail_next`](Self::fail_next), `times` times (`usize::MAX`: always).
    fn fail_times(
        &self,
        method: &str,
        path_prefix: &str,
        status: u16,
        headers: &[(&str, &str)],
        times: usize,
    ) {
        self.with_log(|log| log.inject(method, path_prefix, status, headers, times, false));
    }

    /// The next request `method` whose path starts with `path_prefix` is carried out, but its
    /// answer is replaced by `status` (the server acted; the client thinks it failed).
    fn fail_next_after_processing(&self, method: &str, path_prefix: &str, status: u16) {
        self.with_log(|log| log.inject(method, path_prefix, status, &[], 1, true));
    }

    /// Every request received, in order.
    fn requests(&self) -> Vec<LoggedRequest> {
        self.with_log(|log| log.requests.clone())
    }

    /// Contract violations (requests and the fake's own answers).
    fn violations(&self) -> Vec<String> {
        self.with_log(|log| log.violations.clone())
    }

    /// Returns and forgets the violations (for tests that provoke them on purpose).
    fn take_violations(&self) -> Vec<String> {
        self.with_log(|log| std::mem::take(&mut log.violations))
    }

    /// Panics with every violation, if any (drop does the same).
    fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "{} contract violations:\n{}",
            Self::NAME,
            v.join("\n")
        );
    }
}

/// For a fake's `Drop`: fails the test that leaves violations behind (unless it already fails).
pub fn check_on_drop(name: &str, log: Option<&Log>) {
    if std::thread::panicking() {
        return;
    }
    if let Some(log) = log {
        assert!(
            log.violations.is_empty(),
            "fake {name}: contract violations:\n{}",
            log.violations.join("\n")
        );
    }
}

/// An issue's `state` as both forges change it on PATCH: `closed` stamps `closed_at`, `open`
/// (reopening) clears it; anything else, or the state it already has, changes nothing.
pub fn apply_issue_state(
    state: &mut String,
    closed_at: &mut Option<String>,
    wanted: Option<&str>,
    now: String,
) {
    match wanted {
        Some("closed") if state == "open" => {
            *state = "closed".into();
            *closed_at = Some(now);
        }
        Some("open") if state == "closed" => {
            *state = "open".into();
            *closed_at = None;
        }
        _ => {}
    }
}
