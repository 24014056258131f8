//! The jobs stage: a policy's `jobs:` run against what is deployed — a command in the deployed
//! container (`docker exec`) or in a one-off container of the deployed image with the target's
//! volumes, networks and env; a backup whose dump goes to a store of rebake.yaml's `backups:`
//! with its SHA256; a restore check that restores the latest dump into a throw-away container of
//! the deployed image and runs a check there.
//!
//! Every run holds its target's lock ([`target_lock`]) so it never overlaps a deploy of the same
//! target, and leaves `<state>/jobs/<image>/<job>/<timestamp>.log` (its output),
//! `<timestamp>.json` (a [`JobRecord`]) and `summary.json` (runs and failures so far, read by
//! `/metrics` and `rebake status`).

pub mod schedule;
pub mod store;
pub mod target_lock;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use bollard::models::{ContainerCreateBody, ExecConfig, HealthStatusEnum, NetworkConnectRequest};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, DownloadFromContainerOptions,
    InspectContainerOptions, RemoveContainerOptions, UploadToContainerOptions,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::config::BackupStore;
use crate::policy::{DeployTarget, DockerTarget, HealthProbe, Job, JobContainer, JobKind, Policy};
use store::{DumpWriter, StoredDump};
use target_lock::TargetLock;

/// Sub-directory of the state directory with the jobs' logs and records.
pub const JOBS_DIR: &str = "jobs";
/// Per job: the runs and failures so far and the last run's record.
pub const SUMMARY_FILE: &str = "summary.json";
/// Label on the containers a job makes (one-off and throw-away), valued with their name.
pub const JOB_LABEL: &str = "dev.rebake.job";
/// Runs whose log and record are kept per job (the summary counts them all).
const KEEP_RUNS: usize = 100;
/// How long the throw-away container of a restore check must keep running to count as ready
/// when neither the target nor the image has a health check.
const SETTLE: Duration = Duration::from_secs(2);
/// How long a restore check's container has to become healthy without a health timeout.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What a job run needs from rebake.yaml and the command line.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub state_dir: PathBuf,
    /// The engine of targets that name none.
    pub engine_host: String,
    pub backups: BTreeMap<String, BackupStore>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobResult {
    Ok,
    Failed,
}

/// One run of a job: `<state>/jobs/<image>/<job>/<timestamp>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub image: String,
    pub job: String,
    /// `command`, `backup` or `restore_check`.
    pub kind: String,
    /// The deploy target's label (`docker:<name>`).
    pub target: String,
    /// When it started (RFC 3339, UTC), after waiting for the target's lock.
    pub started: String,
    pub duration_ms: u64,
    /// How long it waited for a deploy (or another job) of the same target.
    pub waited_ms: u64,
    pub result: JobResult,
    /// The command's exit code (the check's, for a restore check), when it ran to the end.
    pub exit_code: Option<i64>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Its output (stderr only, for a backup whose dump is its stdout).
    pub log: PathBuf,
    /// The image the job ran against.
    pub image_id: Option<String>,
    /// The dump a backup stored.
    pub backup: Option<StoredDump>,
    /// Dumps the store's keep_last/keep_for removed after this one was stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<PathBuf>,
    /// The dump a restore check restored (its SHA256 checked first).
    pub restored: Option<StoredDump>,
}

impl JobRecord {
    pub fn ok(&self) -> bool {
        self.result == JobResult::Ok
    }
}

/// `<state>/jobs/<image>/<job>/summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    pub runs: u64,
    pub failures: u64,
    pub last: Option<JobRecord>,
}

/// The directory of `image`'s `job` runs.
pub fn job_dir(state_dir: &Path, image: &str, job: &str) -> PathBuf {
    state_dir.join(JOBS_DIR).join(image).join(job)
}

/// A job's summary; None before its first run.
pub fn read_summary(state_dir: &Path, image: &str, job: &str) -> Result<Option<JobSummary>> {
    let path = job_dir(state_dir, image, job).join(SUMMARY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not a job summary", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Every job summary in the state directory, by image and job name.
pub fn all_summaries(state_dir: &Path) -> BTreeMap<(String, String), JobSummary> {
    let mut out = BTreeMap::new();
    let dirs = |p: PathBuf| {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    for image in dirs(state_dir.join(JOBS_DIR)) {
        for job in dirs(state_dir.join(JOBS_DIR).join(&image)) {
            match read_summary(state_dir, &image, &job) {
                Ok(Some(summary)) => {
                    out.insert((image.clone(), job), summary);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("{e:#}"),
            }
        }
    }
    out
}

/// The jobs' metrics in the Prometheus text format, from the summaries in `state_dir`: runs and
/// failures by image and job, and the last run's time, result and duration.
pub fn exposition(state_dir: &Path) -> String {
    let summaries = all_summaries(state_dir);
    let escape = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut out = String::new();
    type Value = fn(&JobSummary) -> Option<String>;
    let families: [(&str, &str, &str, Value); 5] = [
        (
            "rebake_job_runs_total",
            "counter",
            "Job runs, by image and job",
            |s| Some(s.runs.to_string()),
        ),
        (
            "rebake_job_failures_total",
            "counter",
            "Job runs that failed, by image and job",
            |s| Some(s.failures.to_string()),
        ),
        (
            "rebake_job_last_run_timestamp_seconds",
            "gauge",
            "Unix time the last run of each job started",
            |s| {
                let last = s.last.as_ref()?;
                let t = chrono::DateTime::parse_from_rfc3339(&last.started).ok()?;
                Some(t.timestamp().to_string())
            },
        ),
        (
            "rebake_job_last_run_success",
            "gauge",
            "1 when the last run of each job succeeded, else 0",
            |s| Some(if s.last.as_ref()?.ok() { "1" } else { "0" }.to_string()),
        ),
        (
            "rebake_job_last_run_duration_seconds",
            "gauge",
            "How long the last run of each job took",
            |s| Some(format!("{}", s.last.as_ref()?.duration_ms as f64 / 1000.0)),
        ),
    ];
    for (name, kind, help, value) in families {
        out.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} {kind}\n"));
        for ((image, job), summary) in &summaries {
            if let Some(v) = value(summary) {
                out.push_str(&format!(
                    "{name}{{image=\"{}\",job=\"{}\"}} {v}\n",
                    escape(image),
                    escape(job)
                ));
            }
        }
    }
    out
}

/// The docker target a job of `policy` runs against.
fn docker_target<'a>(policy: &'a Policy, job: &Job) -> Result<&'a DockerTarget> {
    policy
        .deploy
        .iter()
        .find_map(|t| match t {
            DeployTarget::Docker(d) if d.name == job.target => Some(d),
            _ => None,
        })
        .ok_or_else(|| {
            anyhow!(
                "{}: no docker target named {}",
                policy.file.display(),
                job.target
            )
        })
}

/// The job `name` of `policy`, or an error listing its jobs.
pub fn find_job<'a>(policy: &'a Policy, name: &str) -> Result<&'a Job> {
    policy.jobs.iter().find(|j| j.name == name).ok_or_else(|| {
        let names: Vec<&str> = policy.jobs.iter().map(|j| j.name.as_str()).collect();
        if names.is_empty() {
            anyhow!(
                "{} has no jobs: add a jobs: list (README: Jobs and backups)",
                policy.file.display()
            )
        } else {
            anyhow!(
                "{} has no job named {name:?}; its jobs: {}",
                policy.file.display(),
                names.join(", ")
            )
        }
    })
}

/// The store a backup job writes to, from rebake.yaml.
fn backup_store<'a>(
    settings: &'a JobSettings,
    policy: &Policy,
    job: &Job,
) -> Result<(&'a str, &'a BackupStore)> {
    let name = job.store().unwrap_or_default();
    settings
        .backups
        .get_key_value(name)
        .map(|(k, v)| (k.as_str(), v))
        .ok_or_else(|| {
            anyhow!(
                "{}: job {}'s backup store '{name}' is not in rebake.yaml's backups: (it has: {}); \
                 add it, like 'backups: {{{name}: {{dir: /srv/rebake-backups, keep_last: 7}}}}'",
                policy.file.display(),
                job.name,
                if settings.backups.is_empty() {
                    "none".to_string()
                } else {
                    settings.backups.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            )
        })
}

/// What a run's streams go to.
enum StdoutTo<'a> {
    Log,
    Dump(&'a mut DumpWriter),
    Capture(&'a mut Vec<u8>),
}

struct Streams<'a> {
    stdout: StdoutTo<'a>,
    log: &'a mut std::fs::File,
}

impl Streams<'_> {
    fn take(&mut self, item: LogOutput) -> Result<()> {
        match item {
            LogOutput::StdOut { message } => match &mut self.stdout {
                StdoutTo::Log => self.log.write_all(&message)?,
                StdoutTo::Dump(dump) => dump.write(&message)?,
                StdoutTo::Capture(buffer) => {
                    buffer.extend_from_slice(&message);
                    self.log.write_all(&message)?;
                }
            },
            LogOutput::StdErr { message } | LogOutput::Console { message } => {
                self.log.write_all(&message)?
            }
            LogOutput::StdIn { .. } => {}
        }
        Ok(())
    }
}

/// What the body of a run found.
#[derive(Default)]
struct Outcome {
    exit_code: Option<i64>,
    failure: Option<String>,
    image_id: Option<String>,
    backup: Option<StoredDump>,
    pruned: Vec<PathBuf>,
    restored: Option<StoredDump>,
}

impl Outcome {
    fn failed(mut self, reason: impl Into<String>) -> Self {
        self.failure = Some(reason.into());
        self
    }
}

/// The kind word of a job.
pub fn kind_word(job: &Job) -> &'static str {
    match job.kind {
        JobKind::Command { .. } => "command",
        JobKind::Backup { .. } => "backup",
        JobKind::RestoreCheck(_) => "restore_check",
    }
}

/// Runs the job `job_name` of `policy` now: waits for the target's lock, runs it within its
/// timeout, and records it. A failed run is a record with [`JobResult::Failed`]; `Err` when the
/// job cannot even start (an unknown job or store) or its record cannot be written.
pub async fn run_job(settings: &JobSettings, policy: &Policy, job_name: &str) -> Result<JobRecord> {
    let job = find_job(policy, job_name)?;
    let target = docker_target(policy, job)?;
    // A store missing from rebake.yaml is said at once, not after waiting for the lock.
    store_of(settings, policy, job)?;
    let label = DeployTarget::Docker(target.clone())
        .label()
        .unwrap_or_default();
    let holder = format!("job {}/{}", policy.name, job.name);
    let lock = TargetLock::acquire(&settings.state_dir, &label, &holder, |who| {
        eprintln!(
            "rebake: job {}/{} waits for {label}: held by {who}",
            policy.name, job.name
        );
    })
    .await?;
    let record = run_job_holding_lock(settings, policy, job_name, lock.waited).await;
    drop(lock);
    record
}

/// The store a backup job writes to, or a restore check reads from.
fn store_of<'a>(
    settings: &'a JobSettings,
    policy: &Policy,
    job: &Job,
) -> Result<Option<(&'a str, &'a BackupStore)>> {
    Ok(match &job.kind {
        JobKind::Backup { .. } => Some(backup_store(settings, policy, job)?),
        JobKind::RestoreCheck(check) => {
            let backup = find_job(policy, &check.backup)?;
            Some(backup_store(settings, policy, backup)?)
        }
        JobKind::Command { .. } => None,
    })
}

/// [`run_job`] for a caller that holds the job's target lock already (a deploy running its
/// pre-deploy backup); `waited`: how long it waited for it.
pub async fn run_job_holding_lock(
    settings: &JobSettings,
    policy: &Policy,
    job_name: &str,
    waited: Duration,
) -> Result<JobRecord> {
    let job = find_job(policy, job_name)?;
    let target = docker_target(policy, job)?;
    let store = store_of(settings, policy, job)?;
    let label = DeployTarget::Docker(target.clone())
        .label()
        .unwrap_or_default();
    let dir = job_dir(&settings.state_dir, &policy.name, &job.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let started_at = chrono::Utc::now();
    let timestamp = started_at.format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let log_path = dir.join(format!("{timestamp}.log"));
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let started = Instant::now();
    let timeout = Duration::from_secs(job.timeout_seconds);
    let host = target
        .host
        .clone()
        .unwrap_or_else(|| settings.engine_host.clone());
    let outcome = match crate::engine::connect(&host).await {
        Err(e) => Outcome::default().failed(format!("{e:#}")),
        Ok(docker) => {
            let body = run_body(&docker, policy, job, target, store, &timestamp, &mut log);
            let outcome = match tokio::time::timeout(timeout, body).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(e)) => Outcome::default().failed(format!("{e:#}")),
                Err(_) => Outcome::default().failed(format!(
                    "did not finish within {}s (timeout_seconds)",
                    job.timeout_seconds
                )),
            };
            cleanup(&docker, target, job).await;
            if let (Some(_), JobKind::Backup { .. }, Some((name, store))) =
                (&outcome.failure, &job.kind, store)
            {
                // A failed or timed-out run leaves its partial dump: remove it.
                if let Ok(dir) =
                    store::dump_dir(&docker, name, store, &policy.name, &job.name).await
                {
                    let partial = format!(".{timestamp}{}.partial", store::DUMP_SUFFIX);
                    let _ = std::fs::remove_file(dir.join(partial));
                }
            }
            outcome
        }
    };
    if let Some(reason) = &outcome.failure {
        let _ = writeln!(log, "\nrebake: job failed: {reason}");
    }
    let record = JobRecord {
        image: policy.name.clone(),
        job: job.name.clone(),
        kind: kind_word(job).to_string(),
        target: label,
        started: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        duration_ms: started.elapsed().as_millis() as u64,
        waited_ms: waited.as_millis() as u64,
        result: if outcome.failure.is_none() {
            JobResult::Ok
        } else {
            JobResult::Failed
        },
        exit_code: outcome.exit_code,
        reason: outcome.failure,
        log: log_path,
        image_id: outcome.image_id,
        backup: outcome.backup,
        pruned: outcome.pruned,
        restored: outcome.restored,
    };
    record_run(&dir, &timestamp, record)
}

/// Writes the run's record and the job's summary, and drops the oldest runs' files.
fn record_run(dir: &Path, timestamp: &str, record: JobRecord) -> Result<JobRecord> {
    crate::state::write_atomic(
        &dir.join(format!("{timestamp}.json")),
        &serde_json::to_vec_pretty(&record)?,
    )?;
    let summary_path = dir.join(SUMMARY_FILE);
    let mut summary: JobSummary = std::fs::read(&summary_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    summary.runs += 1;
    if !record.ok() {
        summary.failures += 1;
    }
    summary.last = Some(record.clone());
    crate::state::write_atomic(&summary_path, &serde_json::to_vec_pretty(&summary)?)?;
    let mut runs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with(SUMMARY_FILE))
        .collect();
    runs.sort();
    let excess = runs.len().saturating_sub(KEEP_RUNS);
    for old in &runs[..excess] {
        let _ = std::fs::remove_file(old);
        let _ = std::fs::remove_file(old.with_extension("log"));
    }
    Ok(record)
}

/// The run itself, without the timeout.
async fn run_body(
    docker: &Docker,
    policy: &Policy,
    job: &Job,
    target: &DockerTarget,
    store: Option<(&str, &BackupStore)>,
    timestamp: &str,
    log: &mut std::fs::File,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let deployed = match docker
        .inspect_container(&target.name, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => info,
        Err(e) if crate::engine::is_not_found(&e) => {
            return Ok(outcome.failed(format!(
                "no container {} is deployed yet (rebake deploy {} first)",
                target.name, policy.name
            )))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", target.name)),
    };
    let running = deployed
        .state
        .as_ref()
        .and_then(|s| s.running)
        .unwrap_or(false);
    let image_id = deployed.image.clone().unwrap_or_default();
    outcome.image_id = Some(image_id.clone());
    let user = deployed
        .config
        .as_ref()
        .and_then(|c| c.user.clone())
        .filter(|u| !u.is_empty());
    let one_off = format!("{}.rebake-job-{}", target.name, job.name);
    match &job.kind {
        JobKind::Command { argv, container } => {
            let mut streams = Streams {
                stdout: StdoutTo::Log,
                log,
            };
            let code = match container {
                JobContainer::Deployed => {
                    if !running {
                        return Ok(outcome.failed(not_running(target)));
                    }
                    exec_streaming(docker, &target.name, argv, user, None, &mut streams).await?
                }
                JobContainer::New => {
                    run_one_off(docker, target, &image_id, &one_off, argv, &mut streams).await?
                }
            };
            outcome.exit_code = Some(code);
            if code != 0 {
                return Ok(outcome.failed(format!("{argv:?} exited with {code}")));
            }
        }
        JobKind::Backup {
            argv,
            container,
            path,
            ..
        } => {
            let (store_name, store) = store.context("a backup job without its store")?;
            let dir = store::dump_dir(docker, store_name, store, &policy.name, &job.name).await?;
            let mut dump = DumpWriter::create(&dir, timestamp)?;
            let mut streams = Streams {
                stdout: if path.is_some() {
                    StdoutTo::Log
                } else {
                    StdoutTo::Dump(&mut dump)
                },
                log,
            };
            let container_name = match container {
                JobContainer::Deployed => {
                    if !running {
                        return Ok(outcome.failed(not_running(target)));
                    }
                    target.name.clone()
                }
                JobContainer::New => one_off.clone(),
            };
            let code = match container {
                JobContainer::Deployed => {
                    exec_streaming(docker, &target.name, argv, user, None, &mut streams).await?
                }
                JobContainer::New => {
                    run_one_off(docker, target, &image_id, &one_off, argv, &mut streams).await?
                }
            };
            outcome.exit_code = Some(code);
            if code != 0 {
                return Ok(outcome.failed(format!("{argv:?} exited with {code}")));
            }
            if let Some(path) = path {
                copy_out(docker, &container_name, path, &mut dump)
                    .await
                    .with_context(|| format!("cannot copy the dump {path} out of the container"))?;
            }
            let stored = dump.finish()?;
            if stored.bytes == 0 {
                return Ok(outcome.failed(format!(
                    "{argv:?} exited with 0 but wrote an empty dump{}; it is kept as {}",
                    path.as_deref()
                        .map(|p| format!(" to {p}"))
                        .unwrap_or_else(|| " to stdout".to_string()),
                    stored.path.display()
                )));
            }
            writeln!(
                log,
                "\nrebake: stored {} ({} bytes, SHA256 {})",
                stored.path.display(),
                stored.bytes,
                stored.sha256
            )?;
            outcome.pruned = store::prune(&dir, store, std::time::SystemTime::now())?;
            for p in &outcome.pruned {
                writeln!(log, "rebake: removed {} (keep_last/keep_for)", p.display())?;
            }
            outcome.backup = Some(stored);
        }
        JobKind::RestoreCheck(check) => {
            let (store_name, store) = store.context("a restore check without its store")?;
            let dir =
                store::dump_dir(docker, store_name, store, &policy.name, &check.backup).await?;
            let Some(latest) = store::list_dumps(&dir)?.pop() else {
                return Ok(outcome.failed(format!(
                    "there is no dump of {} in {} yet (rebake job run {} {} makes one)",
                    check.backup,
                    dir.display(),
                    policy.name,
                    check.backup
                )));
            };
            let dump = match store::verify(&latest) {
                Ok(dump) => dump,
                Err(e) => return Ok(outcome.failed(format!("{e:#}"))),
            };
            writeln!(
                log,
                "rebake: restoring {} (SHA256 {} checked)",
                dump.path.display(),
                dump.sha256
            )?;
            outcome.restored = Some(dump.clone());
            let name = format!("{}.rebake-restore-{}", target.name, job.name);
            let result = restore_check(docker, target, &image_id, &name, check, &dump, log).await?;
            outcome.exit_code = result.0;
            if let Some(reason) = result.1 {
                return Ok(outcome.failed(reason));
            }
        }
    }
    Ok(outcome)
}

fn not_running(target: &DockerTarget) -> String {
    format!(
        "the deployed container {} is not running (docker exec needs it running; \
         'container: new' runs the job in a one-off container of its image instead)",
        target.name
    )
}

/// Removes what a run may leave behind: its one-off and restore containers (with their
/// anonymous volumes; the target's own volumes are named or host paths and stay).
async fn cleanup(docker: &Docker, target: &DockerTarget, job: &Job) {
    for name in [
        format!("{}.rebake-job-{}", target.name, job.name),
        format!("{}.rebake-restore-{}", target.name, job.name),
    ] {
        remove_throwaway(docker, &name).await;
    }
}

async fn remove_throwaway(docker: &Docker, name: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => {}
        Err(e) if crate::engine::is_not_found(&e) => {}
        Err(e) => tracing::warn!("cannot remove the job container {name}: {e}"),
    }
}

/// Runs `argv` in a running container (as `user`), its stdout and stderr to `streams`; the exit
/// code.
async fn exec_streaming(
    docker: &Docker,
    container: &str,
    argv: &[String],
    user: Option<String>,
    env: Option<Vec<String>>,
    streams: &mut Streams<'_>,
) -> Result<i64> {
    let config = ExecConfig {
        cmd: Some(argv.to_vec()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        user,
        env,
        ..Default::default()
    };
    let created = docker
        .create_exec(container, config)
        .await
        .with_context(|| format!("cannot run {argv:?} in {container}"))?;
    if let StartExecResults::Attached { output, .. } = docker.start_exec(&created.id, None).await? {
        drain(output, streams).await?;
    }
    // The stream ends when the process does; the exit code can lag a moment behind.
    for _ in 0..100 {
        let inspect = docker.inspect_exec(&created.id).await?;
        if inspect.running != Some(true) {
            if let Some(code) = inspect.exit_code {
                return Ok(code);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the engine reports no exit code for {argv:?}")
}

async fn drain(
    mut output: impl Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
    streams: &mut Streams<'_>,
) -> Result<()> {
    while let Some(item) = output.next().await {
        streams.take(item?)?;
    }
    Ok(())
}

/// Runs `argv` in a new container `name` of `image_id` with the target's volumes, networks and
/// env (not its ports or restart policy), streaming its output; the exit code. The container is
/// left for [`cleanup`] (a dump written to a path is copied out of it first).
async fn run_one_off(
    docker: &Docker,
    target: &DockerTarget,
    image_id: &str,
    name: &str,
    argv: &[String],
    streams: &mut Streams<'_>,
) -> Result<i64> {
    remove_throwaway(docker, name).await;
    let mut body = crate::deploy::container_body(target, image_id);
    body.cmd = Some(argv.to_vec());
    body.exposed_ports = None;
    if let Some(host) = body.host_config.as_mut() {
        host.port_bindings = None;
        host.restart_policy = None;
    }
    body.labels
        .get_or_insert_with(Default::default)
        .insert(JOB_LABEL.to_string(), name.to_string());
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            }),
            body,
        )
        .await
        .with_context(|| format!("cannot create the job container {name}"))?;
    for network in target.networks.iter().skip(1) {
        docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: created.id.clone(),
                    endpoint_config: None,
                },
            )
            .await
            .with_context(|| format!("cannot connect {name} to the network {network}"))?;
    }
    let attached = docker
        .attach_container(
            &created.id,
            Some(AttachContainerOptions {
                stream: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        )
        .await
        .with_context(|| format!("cannot attach to {name}"))?;
    docker
        .start_container(&created.id, None)
        .await
        .with_context(|| format!("cannot start {name}"))?;
    drain(attached.output, streams).await?;
    for _ in 0..200 {
        let info = docker
            .inspect_container(&created.id, None::<InspectContainerOptions>)
            .await?;
        let state = info.state.unwrap_or_default();
        if state.running != Some(true) {
            return Ok(state.exit_code.unwrap_or(-1));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{name} still runs after its output ended")
}

/// Copies the file `path` out of `container` into `dump`.
async fn copy_out(
    docker: &Docker,
    container: &str,
    path: &str,
    dump: &mut DumpWriter,
) -> Result<()> {
    // The engine sends a tar; it goes to a temporary file first (a dump may not fit in memory).
    let mut tar_file = tempfile::tempfile()?;
    let mut stream = docker.download_from_container(
        container,
        Some(DownloadFromContainerOptions {
            path: path.to_string(),
        }),
    );
    while let Some(chunk) = stream.next().await {
        tar_file.write_all(&chunk?)?;
    }
    std::io::Seek::rewind(&mut tar_file)?;
    let mut archive = tar::Archive::new(tar_file);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = std::io::Read::read(&mut entry, &mut buffer)?;
                if n == 0 {
                    return Ok(());
                }
                dump.write(&buffer[..n])?;
            }
        }
    }
    bail!("{path} is not a regular file")
}

/// The restore check in a throw-away container `name` of `image_id` (the target's env; no
/// ports, volumes or networks of its own, so nothing of the deployment is touched): start it,
/// wait until it is ready (the target's health command, else the image's HEALTHCHECK, else
/// [`SETTLE`]), put the dump at `$REBAKE_BACKUP_FILE`, run `restore`, then `check`. The check's
/// exit code, and why it failed.
async fn restore_check(
    docker: &Docker,
    target: &DockerTarget,
    image_id: &str,
    name: &str,
    check: &crate::policy::RestoreCheck,
    dump: &StoredDump,
    log: &mut std::fs::File,
) -> Result<(Option<i64>, Option<String>)> {
    remove_throwaway(docker, name).await;
    let file_name = dump
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup.dump".into());
    let inside = format!("/tmp/rebake-restore/{file_name}");
    let mut env: Vec<String> = target.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("REBAKE_BACKUP_FILE={inside}"));
    let body = ContainerCreateBody {
        image: Some(image_id.to_string()),
        env: Some(env.clone()),
        labels: Some(
            [(JOB_LABEL.to_string(), name.to_string())]
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            }),
            body,
        )
        .await
        .with_context(|| format!("cannot create the restore container {name}"))?;
    let id = created.id;
    upload_dump(docker, &id, &dump.path, &file_name).await?;
    docker
        .start_container(&id, None)
        .await
        .with_context(|| format!("cannot start {name}"))?;
    if let Err(reason) = wait_ready(docker, &id, target).await {
        return Ok((None, Some(format!("the throw-away container {reason}"))));
    }
    let mut streams = Streams {
        stdout: StdoutTo::Log,
        log,
    };
    writeln!(streams.log, "rebake: restore {:?}", check.restore)?;
    let code = exec_streaming(
        docker,
        &id,
        &check.restore,
        None,
        Some(env.clone()),
        &mut streams,
    )
    .await?;
    if code != 0 {
        return Ok((
            None,
            Some(format!(
                "the restore {:?} exited with {code}",
                check.restore
            )),
        ));
    }
    let mut stdout = Vec::new();
    let mut streams = Streams {
        stdout: StdoutTo::Capture(&mut stdout),
        log,
    };
    writeln!(streams.log, "rebake: check {:?}", check.check)?;
    let code = exec_streaming(docker, &id, &check.check, None, Some(env), &mut streams).await?;
    if code != 0 {
        return Ok((
            Some(code),
            Some(format!(
                "the check {:?} exited with {code} after the restore",
                check.check
            )),
        ));
    }
    let got = String::from_utf8_lossy(&stdout).trim_end().to_string();
    if let Some(expected) = &check.expect_stdout {
        if got != expected.trim_end() {
            return Ok((
                Some(code),
                Some(format!(
                    "the check {:?} printed {got:?}, expected {expected:?}",
                    check.check
                )),
            ));
        }
    }
    Ok((Some(code), None))
}

/// Puts the dump into the (created) container as `/tmp/rebake-restore/<file_name>`, readable by
/// any user.
async fn upload_dump(docker: &Docker, id: &str, dump: &Path, file_name: &str) -> Result<()> {
    // Streamed from a temporary tar file, so a large dump is never held in memory.
    let tar_path = tempfile::NamedTempFile::new()?;
    {
        let mut builder = tar::Builder::new(std::fs::File::create(tar_path.path())?);
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        builder.append_data(&mut dir, "rebake-restore/", std::io::empty())?;
        let mut file = std::fs::File::open(dump)?;
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(file.metadata()?.len());
        builder.append_data(
            &mut header,
            format!("rebake-restore/{file_name}"),
            &mut file,
        )?;
        builder.into_inner()?.sync_all()?;
    }
    let file = tokio::fs::File::open(tar_path.path()).await?;
    let stream = tokio_util_stream(file);
    docker
        .upload_to_container(
            id,
            Some(UploadToContainerOptions {
                path: "/tmp".to_string(),
                ..Default::default()
            }),
            bollard::body_try_stream(stream),
        )
        .await
        .context("cannot copy the dump into the throw-away container")?;
    Ok(())
}

/// A file as a stream of chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 256 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(bytes::Bytes::from(buffer)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

/// Waits until the throw-away container is ready; why not.
async fn wait_ready(docker: &Docker, id: &str, target: &DockerTarget) -> Result<(), String> {
    let timeout = target
        .health
        .as_ref()
        .map_or(READY_TIMEOUT, |h| Duration::from_secs(h.timeout_seconds));
    let deadline = Instant::now() + timeout;
    let started = Instant::now();
    let mut last = String::from("not checked yet");
    loop {
        let info = docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| format!("cannot be inspected: {e}"))?;
        let state = info.state.unwrap_or_default();
        if state.running != Some(true) {
            return Err(format!(
                "stopped (exit code {})",
                state.exit_code.unwrap_or(-1)
            ));
        }
        match target.health.as_ref().map(|h| &h.probe) {
            Some(HealthProbe::Command(argv)) => {
                let mut sink = Vec::new();
                let mut devnull = tempfile::tempfile().map_err(|e| e.to_string())?;
                let mut streams = Streams {
                    stdout: StdoutTo::Capture(&mut sink),
                    log: &mut devnull,
                };
                match exec_streaming(docker, id, argv, None, None, &mut streams).await {
                    Ok(0) => return Ok(()),
                    Ok(code) => last = format!("{argv:?} exited with {code}"),
                    Err(e) => last = format!("{argv:?} could not run: {e:#}"),
                }
            }
            _ => match state.health.and_then(|h| h.status) {
                Some(HealthStatusEnum::HEALTHY) => return Ok(()),
                Some(HealthStatusEnum::UNHEALTHY) => {
                    return Err("is unhealthy (the image's HEALTHCHECK)".into())
                }
                Some(HealthStatusEnum::STARTING) => last = "health: starting".into(),
                _ if started.elapsed() >= SETTLE => return Ok(()),
                _ => {}
            },
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "was not ready within {}s (last: {last})",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dir: &Path, timestamp: &str, ok: bool) -> JobRecord {
        JobRecord {
            image: "db".into(),
            job: "dump".into(),
            kind: "backup".into(),
            target: "docker:db".into(),
            started: "2026-11-29T02:30:00.000Z".into(),
            duration_ms: 10,
            waited_ms: 0,
            result: if ok { JobResult::Ok } else { JobResult::Failed },
            exit_code: Some(if ok { 0 } else { 1 }),
            reason: (!ok).then(|| "exited with 1".to_string()),
            log: dir.join(format!("{timestamp}.log")),
            image_id: None,
            backup: None,
            pruned: Vec::new(),
            restored: None,
        }
    }

    /// The summary counts every run; the files of the last [`KEEP_RUNS`] runs stay.
    #[test]
    fn runs_are_counted_and_the_oldest_files_dropped() {
        let state = tempfile::tempdir().unwrap();
        let dir = job_dir(state.path(), "db", "dump");
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..KEEP_RUNS + 2 {
            let timestamp = format!("20261129T{:06}.000Z", i);
            std::fs::write(dir.join(format!("{timestamp}.log")), "output").unwrap();
            record_run(&dir, &timestamp, record(&dir, &timestamp, i % 3 != 0)).unwrap();
        }
        let summary = read_summary(state.path(), "db", "dump").unwrap().unwrap();
        assert_eq!(summary.runs, KEEP_RUNS as u64 + 2);
        assert_eq!(summary.failures, 34);
        assert!(summary.last.unwrap().ok());
        let count = |ext: &str| {
            std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.ends_with(ext) && name != SUMMARY_FILE
                })
                .count()
        };
        assert_eq!((count(".json"), count(".log")), (KEEP_RUNS, KEEP_RUNS));
        assert!(!dir.join("20261129T000000.000Z.json").exists());
        assert!(!dir.join("20261129T000001.000Z.log").exists());
        assert!(dir.join("20261129T000002.000Z.log").exists());
        assert_eq!(
            all_summaries(state.path()).keys().collect::<Vec<_>>(),
            [&("db".to_string(), "dump".to_string())]
        );
    }
}
