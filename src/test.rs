//! The test stage: a policy's tests, each in a fresh container from the new image.
//!
//! In the spirit of the official-images test suite: one small check per test, the exit code
//! decides, optional expected output, readiness polled with retries, and guaranteed cleanup —
//! every container this stage creates carries the label [`TEST_LABEL`]`=1` and is removed
//! (`force`) on every path: pass, fail, timeout, engine error, and when the future running the
//! test is dropped.
//!
//! Checks:
//! - `command`: runs `argv` as the container's command (the image's entrypoint stays); exit 0
//!   passes, and when `expect_stdout` is set, stdout with surrounding whitespace trimmed must
//!   equal it exactly.
//! - `http`: starts the image's own command with the port published on a free port of
//!   127.0.0.1, polls `http://127.0.0.1:<port><path>` until it answers as expected (status and
//!   body text) or the test times out.
//! - `file`: the path exists in the image, with the given permission bits and owner; read from
//!   the engine's archive of the path (no tool needs to be in the image), names resolved
//!   through the image's `/etc/passwd` and `/etc/group`.
//! - `user`: the image's configured user is not root (name `root` or uid 0, resolved through
//!   the image's `/etc/passwd`) unless the policy allows it.
//! - `current` (built in, always added): no installed package has a newer candidate in the
//!   verified index; skipped, with the reason, when there is no index.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    DownloadFromContainerOptions, LogsOptions, RemoveContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use crate::debian::index::ReleaseIndex;
use crate::debian::status::InstalledPackage;
use crate::lock::{TestResult, TestSummary};
use crate::policy::{FileCheck, HttpCheck, ImageTest, Policy, TestCheck};

/// Label put on every container the test stage creates (value `1`).
pub const TEST_LABEL: &str = "rebake.test";
/// Label naming the test a container runs.
pub const TEST_NAME_LABEL: &str = "rebake.test.name";
/// Name of the built-in check that the image is current against the verified index.
pub const CURRENT_TEST: &str = "current";
/// How many lines of the container's output an outcome keeps.
pub const OUTPUT_TAIL_LINES: usize = 20;

/// How often an `http` test retries.
const HTTP_POLL: Duration = Duration::from_millis(250);
/// Time for one HTTP request.
const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Once the server answers, but not as expected, how long it still gets to get it right
/// (a server that is still warming up) before the test fails without waiting out its timeout.
const HTTP_SETTLE: Duration = Duration::from_secs(3);

/// The result of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    pub name: String,
    /// Passed, or skipped (see `skipped`).
    pub passed: bool,
    /// The test did not run (the `current` check without a verified index); `passed` is true.
    pub skipped: bool,
    pub duration: Duration,
    /// The last lines of the container's stdout and stderr, interleaved as written.
    pub output_tail: String,
    /// Why it failed, or why it was skipped.
    pub reason: Option<String>,
}

impl TestOutcome {
    fn pass(name: &str, duration: Duration, output_tail: String) -> Self {
        TestOutcome {
            name: name.to_string(),
            passed: true,
            skipped: false,
            duration,
            output_tail,
            reason: None,
        }
    }

    fn fail(name: &str, duration: Duration, output_tail: String, reason: String) -> Self {
        TestOutcome {
            name: name.to_string(),
            passed: false,
            skipped: false,
            duration,
            output_tail,
            reason: Some(reason),
        }
    }

    /// `pass`, `fail` or `skip`, as the lock writes it.
    pub fn result_word(&self) -> &'static str {
        match (self.passed, self.skipped) {
            (true, true) => "skip",
            (true, false) => "pass",
            (false, _) => "fail",
        }
    }
}

/// Runs every test of `policy` against `image_id`, one after the other, then the built-in
/// `current` check. A failing test is an outcome, not an error; the error is for an image the
/// engine does not have (or an engine that does not answer).
pub async fn run_tests(
    docker: &Docker,
    image_id: &str,
    policy: &Policy,
    installed: &[InstalledPackage],
    index: Option<&ReleaseIndex>,
) -> Result<Vec<TestOutcome>> {
    docker.inspect_image(image_id).await.with_context(|| {
        format!(
            "image {}: test stage: the engine has no image {image_id}",
            policy.name
        )
    })?;
    // Each test has its own container, so they run side by side; results keep policy order.
    let runs = policy.tests.iter().map(|test| async move {
        tracing::info!(image = %policy.name, test = %test.name, "running test");
        let outcome = run_test(docker, image_id, test).await;
        tracing::info!(
            image = %policy.name,
            test = %test.name,
            result = outcome.result_word(),
            reason = outcome.reason.as_deref().unwrap_or(""),
            "test finished"
        );
        outcome
    });
    let mut outcomes = futures_util::future::join_all(runs).await;
    outcomes.push(current_check(installed, index));
    Ok(outcomes)
}

/// The lock's test summary: passed when every outcome passed (or was skipped).
pub fn summary(outcomes: &[TestOutcome]) -> TestSummary {
    TestSummary {
        passed: outcomes.iter().all(|o| o.passed),
        results: outcomes
            .iter()
            .map(|o| TestResult {
                name: o.name.clone(),
                result: o.result_word().to_string(),
                duration_ms: u64::try_from(o.duration.as_millis()).unwrap_or(u64::MAX),
            })
            .collect(),
    }
}

/// Runs one test in its own container, within its timeout.
pub async fn run_test(docker: &Docker, image_id: &str, test: &ImageTest) -> TestOutcome {
    let started = Instant::now();
    let timeout = Duration::from_secs(test.timeout_seconds);
    let mut run = TestRun {
        docker,
        image_id,
        test,
        container: None,
        last_problem: None,
    };
    let body = tokio::time::timeout(timeout, run.check());
    let result = body.await;
    // Whatever happened, collect the output and remove the container.
    let output_tail = match &run.container {
        Some(guard) => tail(&container_output(docker, &guard.id).await.combined),
        None => String::new(),
    };
    if let Some(guard) = run.container.take() {
        guard.remove().await;
    }
    let duration = started.elapsed();
    match result {
        Ok(Ok(())) => TestOutcome::pass(&test.name, duration, output_tail),
        Ok(Err(reason)) => TestOutcome::fail(&test.name, duration, output_tail, reason),
        Err(_) => {
            let mut reason = format!("timed out after {}s", test.timeout_seconds);
            if let Some(last) = &run.last_problem {
                reason.push_str(&format!(" (last: {last})"));
            }
            TestOutcome::fail(&test.name, duration, output_tail, reason)
        }
    }
}

/// One test's run; owns the container it creates (at most one).
struct TestRun<'a> {
    docker: &'a Docker,
    image_id: &'a str,
    test: &'a ImageTest,
    container: Option<ContainerGuard>,
    /// What a check that retries saw last, for the message when it times out.
    last_problem: Option<String>,
}

/// Why a check failed, as the user reads it.
type CheckResult = std::result::Result<(), String>;

impl TestRun<'_> {
    async fn check(&mut self) -> CheckResult {
        match &self.test.check {
            TestCheck::Command {
                argv,
                expect_stdout,
            } => self.command(argv, expect_stdout.as_deref()).await,
            TestCheck::Http(http) => self.http(http).await,
            TestCheck::File(file) => self.file(file).await,
            TestCheck::User { allow_root } => self.user(*allow_root).await,
        }
    }

    /// Creates the test's container; `cmd` None keeps the image's own command.
    async fn create(
        &mut self,
        cmd: Option<Vec<String>>,
        publish: Option<u16>,
    ) -> std::result::Result<String, String> {
        let mut labels = HashMap::new();
        labels.insert(TEST_LABEL.to_string(), "1".to_string());
        labels.insert(TEST_NAME_LABEL.to_string(), self.test.name.clone());
        let mut host_config = HostConfig::default();
        let mut exposed_ports = None;
        if let Some(port) = publish {
            let key = format!("{port}/tcp");
            let mut bindings = HashMap::new();
            bindings.insert(
                key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_string()),
                    // Empty: the engine picks a free port.
                    host_port: Some(String::new()),
                }]),
            );
            host_config.port_bindings = Some(bindings);
            exposed_ports = Some(vec![key]);
        }
        let body = ContainerCreateBody {
            image: Some(self.image_id.to_string()),
            cmd,
            labels: Some(labels),
            exposed_ports,
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None, body)
            .await
            .map_err(|e| format!("cannot create a container from the image: {e}"))?;
        self.container = Some(ContainerGuard::new(self.docker.clone(), created.id.clone()));
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> CheckResult {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| format!("cannot start the container: {e}"))
    }

    async fn command(&mut self, argv: &[String], expect_stdout: Option<&str>) -> CheckResult {
        let id = self.create(Some(argv.to_vec()), None).await?;
        self.start(&id).await?;
        let code = wait_exit(self.docker, &id).await?;
        if code != 0 {
            return Err(format!("{} exited with status {code}", shell_words(argv)));
        }
        if let Some(expected) = expect_stdout {
            let output = container_output(self.docker, &id).await;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let actual = stdout.trim();
            if actual != expected.trim() {
                return Err(format!(
                    "stdout was {actual:?}, expected {:?}",
                    expected.trim()
                ));
            }
        }
        Ok(())
    }

    async fn http(&mut self, http: &HttpCheck) -> CheckResult {
        let id = self.create(None, Some(http.port)).await?;
        self.start(&id).await?;
        let host_port = match published_port(self.docker, &id, http.port).await {
            Ok(port) => port,
            Err(problem) => {
                return Err(match container_state(self.docker, &id).await {
                    Some((false, code)) => format!(
                        "the container exited with status {} before answering on port {}",
                        code.unwrap_or(-1),
                        http.port
                    ),
                    _ => problem,
                })
            }
        };
        let url = format!("http://127.0.0.1:{host_port}{}", http.path);
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(HTTP_REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        let mut first_answer: Option<Instant> = None;
        loop {
            match client.get(&url).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap_or_default();
                    let status_ok = status == http.status;
                    let body_ok = http.contains.as_deref().is_none_or(|t| body.contains(t));
                    if status_ok && body_ok {
                        return Ok(());
                    }
                    let problem = if !status_ok {
                        format!(
                            "GET {} answered {status}, expected {}",
                            http.path, http.status
                        )
                    } else {
                        format!(
                            "GET {} answered {status} but the body does not contain {:?} \
                             (body starts {:?})",
                            http.path,
                            http.contains.as_deref().unwrap_or_default(),
                            body.chars().take(200).collect::<String>()
                        )
                    };
                    let since = *first_answer.get_or_insert_with(Instant::now);
                    if since.elapsed() >= HTTP_SETTLE {
                        return Err(problem);
                    }
                    self.last_problem = Some(problem);
                }
                Err(e) => {
                    let running = container_state(self.docker, &id).await;
                    if let Some((false, code)) = running {
                        return Err(format!(
                            "the container exited with status {} before answering on port {} \
                             (last attempt: {e})",
                            code.unwrap_or(-1),
                            http.port
                        ));
                    }
                    self.last_problem = Some(format!("no answer on port {}: {e}", http.port));
                }
            }
            tracing::debug!(%url, problem = ?self.last_problem, "http test: retrying");
            tokio::time::sleep(HTTP_POLL).await;
        }
    }

    async fn file(&mut self, file: &FileCheck) -> CheckResult {
        // Never started: the engine reads the image's filesystem through the container.
        let id = self
            .create(Some(vec!["rebake-file-check".to_string()]), None)
            .await?;
        let header = first_tar_header(self.docker, &id, &file.path)
            .await?
            .ok_or_else(|| format!("{} does not exist in the image", file.path))?;
        let mode = header
            .mode()
            .map_err(|e| format!("cannot read the mode of {}: {e}", file.path))?
            & 0o7777;
        let uid = header.uid().unwrap_or(u64::MAX);
        let gid = header.gid().unwrap_or(u64::MAX);
        let mut problems = Vec::new();
        if let Some(expected) = file.mode {
            if mode != expected {
                problems.push(format!("mode is {mode:04o}, expected {expected:04o}"));
            }
        }
        if let Some(owner) = &file.owner {
            let passwd = read_image_file(self.docker, &id, "/etc/passwd").await;
            let group = read_image_file(self.docker, &id, "/etc/group").await;
            let user_name = passwd
                .as_deref()
                .and_then(|p| name_for_id(p, uid))
                .unwrap_or_default();
            let group_name = group
                .as_deref()
                .and_then(|g| name_for_id(g, gid))
                .unwrap_or_default();
            let (want_user, want_group) = match owner.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (owner.as_str(), None),
            };
            let matches = |want: &str, name: &str, id: u64| want == name || want == id.to_string();
            let user_ok = matches(want_user, &user_name, uid);
            let group_ok = want_group.is_none_or(|g| matches(g, &group_name, gid));
            if !user_ok || !group_ok {
                let show = |name: &str, id: u64| {
                    if name.is_empty() {
                        id.to_string()
                    } else {
                        format!("{name}({id})")
                    }
                };
                problems.push(format!(
                    "owner is {}:{}, expected {owner}",
                    show(&user_name, uid),
                    show(&group_name, gid)
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{}: {}", file.path, problems.join("; ")))
        }
    }

    async fn user(&mut self, allow_root: bool) -> CheckResult {
        let inspect = self
            .docker
            .inspect_image(self.image_id)
            .await
            .map_err(|e| format!("cannot inspect the image: {e}"))?;
        let configured = inspect
            .config
            .and_then(|c| c.user)
            .unwrap_or_default()
            .trim()
            .to_string();
        let user = configured
            .split_once(':')
            .map_or(configured.as_str(), |(u, _)| u);
        let is_root = if user.is_empty() || user == "root" || user == "0" {
            true
        } else if user.chars().all(|c| c.is_ascii_digit()) {
            false
        } else {
            // A name: its uid is in the image's /etc/passwd.
            let id = self
                .create(Some(vec!["rebake-user-check".to_string()]), None)
                .await?;
            let passwd = read_image_file(self.docker, &id, "/etc/passwd")
                .await
                .ok_or_else(|| format!("the image runs as user {user:?} but has no /etc/passwd"))?;
            match uid_for_name(&passwd, user) {
                Some(uid) => uid == 0,
                None => {
                    return Err(format!(
                        "the image runs as user {user:?}, which is not in its /etc/passwd"
                    ))
                }
            }
        };
        let shown = if configured.is_empty() {
            "root (no USER set)".to_string()
        } else {
            configured.clone()
        };
        if is_root && !allow_root {
            Err(format!(
                "the image runs as {shown}; set a non-root USER, or allow_root: true in the \
                 policy's user test"
            ))
        } else {
            Ok(())
        }
    }
}

/// The built-in check: nothing installed has a newer candidate in the verified index.
pub fn current_check(installed: &[InstalledPackage], index: Option<&ReleaseIndex>) -> TestOutcome {
    let started = Instant::now();
    let Some(index) = index else {
        return TestOutcome {
            name: CURRENT_TEST.to_string(),
            passed: true,
            skipped: true,
            duration: started.elapsed(),
            output_tail: String::new(),
            reason: Some("skipped: no verified archive index to compare with".to_string()),
        };
    };
    let stale: Vec<String> = crate::plan::stale_packages(index, installed)
        .iter()
        .map(|s| {
            format!(
                "{} {} -> {} ({})",
                s.package,
                s.installed,
                s.candidate,
                s.suites.join(", ")
            )
        })
        .collect();
    if stale.is_empty() {
        TestOutcome::pass(CURRENT_TEST, started.elapsed(), String::new())
    } else {
        let listing = stale.join("\n");
        TestOutcome::fail(
            CURRENT_TEST,
            started.elapsed(),
            tail(listing.as_bytes()),
            format!(
                "{} installed package(s) have a newer version in the verified archive: {}",
                stale.len(),
                stale.join(", ")
            ),
        )
    }
}

/// Removes its container (force, with its anonymous volumes) when asked, or, as a last resort,
/// in the background when dropped without being asked (the test's future was cancelled).
struct ContainerGuard {
    docker: Docker,
    id: String,
    removed: bool,
}

impl ContainerGuard {
    fn new(docker: Docker, id: String) -> Self {
        ContainerGuard {
            docker,
            id,
            removed: false,
        }
    }

    async fn remove(mut self) {
        self.removed = true;
        remove_container(&self.docker, &self.id).await;
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let docker = self.docker.clone();
        let id = std::mem::take(&mut self.id);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move { remove_container(&docker, &id).await });
            }
            Err(_) => tracing::warn!(container = %id, "test container left behind: no runtime"),
        }
    }
}

async fn remove_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    if let Err(e) = docker.remove_container(id, Some(options)).await {
        tracing::warn!(container = %id, error = %e, "cannot remove test container");
    }
}

/// Waits for the container to stop; its exit code. bollard reports a non-zero exit as an
/// error carrying the code.
async fn wait_exit(docker: &Docker, id: &str) -> std::result::Result<i64, String> {
    let mut stream = docker.wait_container(id, None);
    match stream.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(format!("waiting for the container failed: {e}")),
        None => match container_state(docker, id).await {
            Some((false, Some(code))) => Ok(code),
            _ => Err("the engine ended the wait without an exit status".to_string()),
        },
    }
}

/// (running, exit code) of a container, when the engine knows it.
async fn container_state(docker: &Docker, id: &str) -> Option<(bool, Option<i64>)> {
    let inspect = docker.inspect_container(id, None).await.ok()?;
    let state = inspect.state?;
    Some((state.running.unwrap_or(false), state.exit_code))
}

/// The host port the engine published `port/tcp` on.
async fn published_port(docker: &Docker, id: &str, port: u16) -> std::result::Result<u16, String> {
    let inspect = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| format!("cannot inspect the container: {e}"))?;
    let key = format!("{port}/tcp");
    inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|mut ports| ports.remove(&key))
        .flatten()
        .and_then(|bindings| {
            bindings
                .into_iter()
                .find_map(|b| b.host_port.and_then(|p| p.parse::<u16>().ok()))
        })
        .ok_or_else(|| format!("the engine published no host port for port {port}"))
}

#[derive(Default)]
struct Output {
    stdout: Vec<u8>,
    /// stdout and stderr interleaved.
    combined: Vec<u8>,
}

/// What the container wrote so far.
async fn container_output(docker: &Docker, id: &str) -> Output {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        follow: false,
        ..Default::default()
    };
    let mut output = Output::default();
    let mut stream = docker.logs(id, Some(options));
    while let Some(item) = stream.next().await {
        match item {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                output.stdout.extend_from_slice(&message);
                output.combined.extend_from_slice(&message);
            }
            Ok(LogOutput::StdErr { message }) => output.combined.extend_from_slice(&message),
            Ok(LogOutput::StdIn { .. }) => {}
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "cannot read container logs");
                break;
            }
        }
    }
    output
}

/// The last [`OUTPUT_TAIL_LINES`] lines of `output`.
fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(OUTPUT_TAIL_LINES);
    lines[start..].join("\n")
}

/// The tar header of `path` itself in the engine's archive of it (which for a directory would
/// go on with its whole content: only the first header is read). None when it does not exist.
async fn first_tar_header(
    docker: &Docker,
    id: &str,
    path: &str,
) -> std::result::Result<Option<tar::Header>, String> {
    let options = DownloadFromContainerOptions {
        path: path.to_string(),
    };
    let mut stream = docker.download_from_container(id, Some(options));
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Skip PAX/GNU extension headers until the entry itself.
        while buf.len() >= 512 {
            let mut header = tar::Header::new_old();
            header.as_mut_bytes().copy_from_slice(&buf[..512]);
            let kind = header.entry_type();
            if kind.is_pax_global_extensions()
                || kind.is_pax_local_extensions()
                || kind.is_gnu_longname()
                || kind.is_gnu_longlink()
            {
                let size = header.entry_size().unwrap_or(0) as usize;
                let skip = 512 + size.div_ceil(512) * 512;
                if buf.len() < skip {
                    break;
                }
                buf.drain(..skip);
                continue;
            }
            return Ok(Some(header));
        }
        match stream.next().await {
            Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
            Some(Err(e)) if crate::engine::is_not_found(&e) => return Ok(None),
            Some(Err(e)) => return Err(format!("cannot read {path} from the image: {e}")),
            None => return Ok(None),
        }
    }
}

/// A small regular file of the image (`/etc/passwd`), when it exists.
async fn read_image_file(docker: &Docker, id: &str, path: &str) -> Option<String> {
    let options = DownloadFromContainerOptions {
        path: path.to_string(),
    };
    let mut stream = docker.download_from_container(id, Some(options));
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.ok()?);
    }
    let mut archive = tar::Archive::new(buf.as_slice());
    let mut entries = archive.entries().ok()?;
    let mut entry = entries.next()?.ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut entry, &mut text).ok()?;
    Some(text)
}

/// The name of the numeric id `id` in a passwd- or group-format file.
fn name_for_id(file: &str, id: u64) -> Option<String> {
    file.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let line_id: u64 = fields.next()?.parse().ok()?;
        (line_id == id).then(|| name.to_string())
    })
}

/// The uid of `name` in a passwd-format file.
fn uid_for_name(passwd: &str, name: &str) -> Option<u64> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        fields.next()?.parse().ok()
    })
}

/// argv as one would type it, for messages.
fn shell_words(argv: &[String]) -> String {
    let mut out = String::new();
    for (i, word) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let plain = !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c));
        if plain {
            out.push_str(word);
        } else {
            let _ = write!(out, "'{}'", word.replace('\'', r"'\''"));
        }
    }
    out
}

/// Errors of this stage name the image; used by the orchestration.
pub fn failure_message(image: &str, outcomes: &[TestOutcome]) -> Option<String> {
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| format!("{}: {}", o.name, o.reason.as_deref().unwrap_or("failed")))
        .collect();
    if failed.is_empty() {
        None
    } else {
        Some(format!(
            "image {image}: test stage: {} test(s) failed: {}",
            failed.len(),
            failed.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let t = tail(text.as_bytes());
        assert_eq!(t.lines().count(), OUTPUT_TAIL_LINES);
        assert!(t.starts_with("line 11"));
        assert!(t.ends_with("line 30"));
    }

    #[test]
    fn passwd_lookups() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/www:/bin/false\n";
        assert_eq!(name_for_id(passwd, 33).as_deref(), Some("www"));
        assert_eq!(name_for_id(passwd, 7), None);
        assert_eq!(uid_for_name(passwd, "root"), Some(0));
        assert_eq!(uid_for_name(passwd, "nobody"), None);
    }

    #[test]
    fn shell_words_quotes_what_needs_it() {
        let argv = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(shell_words(&argv), "sh -c 'exit 3'");
    }

    #[test]
    fn current_without_index_is_skipped() {
        let o = current_check(&[], None);
        assert!(o.passed && o.skipped);
        assert_eq!(o.result_word(), "skip");
        assert!(o.reason.unwrap().contains("no verified archive index"));
    }
}
