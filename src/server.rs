//! The long-running service behind `rebake serve`: signed forge webhooks, a cron scheduler for
//! scans, `/healthz`, Prometheus `/metrics`, and one worker that runs jobs one at a time.
//!
//! How a scan or a deploy is done is not decided here: the caller passes a [`Jobs`]
//! implementation, so this module depends on no stage after it and is tested with a fake.
//!
//! What survives a restart lives under `<state_dir>/server/`:
//! - `deliveries.json`: the last [`MAX_DELIVERIES`] webhook delivery ids seen, so that a delivery
//!   repeated across a restart is still ignored;
//! - `jobs.json`: deploys accepted but not yet finished (re-queued at start), and the keys of the
//!   last [`MAX_DONE`] deploys that succeeded (the same merged proposal never deploys twice).
//!
//! Job rules: one worker runs every job, so at most one job (scan or deploy) runs at a time. A
//! scheduler tick whose images a queued or running scan already covers is skipped; otherwise
//! its images join the queued scan (one scan is queued at most). A merged proposal that is already
//! queued, running or done is not queued again. On shutdown the running job finishes; queued
//! deploys stay in `jobs.json` and run after the next start.

use crate::config::{CronSchedule, ForgeKind};
use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// How many webhook delivery ids are remembered (oldest forgotten first).
pub const MAX_DELIVERIES: usize = 4096;
/// How many finished deploys are remembered to refuse running them again.
pub const MAX_DONE: usize = 1024;
/// Only pull requests from branches with this prefix (the ones `rebake propose` opens) deploy.
pub const PROPOSAL_BRANCH_PREFIX: &str = "rebake/";
/// Sub-directory of the state directory holding the service's files.
pub const SERVER_DIR: &str = "server";
pub const DELIVERIES_FILE: &str = "deliveries.json";
pub const JOBS_FILE: &str = "jobs.json";

// ---------------------------------------------------------------------------------------------
// What the caller provides

/// The forge a webhook came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookForge {
    Github,
    Gitea,
}

impl WebhookForge {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookForge::Github => "github",
            WebhookForge::Gitea => "gitea",
        }
    }
}

impl fmt::Display for WebhookForge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<WebhookForge> for ForgeKind {
    fn from(forge: WebhookForge) -> Self {
        match forge {
            WebhookForge::Github => ForgeKind::Github,
            WebhookForge::Gitea => ForgeKind::Gitea,
        }
    }
}

/// A rebake proposal that a person merged, as the forge's webhook reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedProposal {
    pub forge: WebhookForge,
    /// `owner/name`.
    pub repository: String,
    pub number: u64,
    /// Always starts with [`PROPOSAL_BRANCH_PREFIX`].
    pub head_branch: String,
    /// The commit the merge produced on the base branch (lowercase hex).
    pub merge_commit: String,
    pub base_branch: String,
}

impl MergedProposal {
    /// Identity of the deploy: the same proposal merged at the same commit deploys once.
    pub fn key(&self) -> String {
        format!(
            "{}:{}#{}@{}",
            self.forge, self.repository, self.number, self.merge_commit
        )
    }
}

/// What one scan did; the worker adds it to the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanSummary {
    /// Packages with a newer version in the archive.
    pub findings: u64,
    /// Images built.
    pub builds: u64,
    /// Proposals opened or updated.
    pub proposals: u64,
    /// The scan schedules as the scanned default branch now says (None: keep the current ones).
    #[serde(skip)]
    pub schedules: Option<Vec<ScanSchedule>>,
}

/// The work the service triggers. Implementations decide how a scan and a deploy are done.
pub trait Jobs: Send + Sync + 'static {
    /// Scans (and proposes) `scope`'s images.
    fn scan(&self, scope: ScanScope) -> impl Future<Output = Result<ScanSummary>> + Send;
    fn deploy(&self, merged: MergedProposal) -> impl Future<Output = Result<()>> + Send;
}

/// What [`serve`] needs from the configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Name of the environment variable holding the webhook HMAC secret
    /// (`webhook.secret_env` in rebake.yaml, default `REBAKE_WEBHOOK_SECRET`).
    pub secret_env: String,
    /// The state directory; the service keeps its files in `<state_dir>/server/`.
    pub state_dir: PathBuf,
    /// When to scan what; empty runs no scheduler (scans only when the caller asks).
    pub schedules: Vec<ScanSchedule>,
    /// The repository and branch deploys come from; a merged pull request of any other (an
    /// organisation-wide webhook, a merge into a side branch) deploys nothing. `None` accepts
    /// any.
    pub deploys_from: Option<DeploysFrom>,
}

/// Which images a scan covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanScope {
    All,
    /// These images (policy names).
    Images(std::collections::BTreeSet<String>),
}

impl ScanScope {
    pub fn images<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> ScanScope {
        ScanScope::Images(names.into_iter().map(Into::into).collect())
    }

    /// Whether a scan of `self` also scans everything `other` names.
    pub fn covers(&self, other: &ScanScope) -> bool {
        match (self, other) {
            (ScanScope::All, _) => true,
            (ScanScope::Images(_), ScanScope::All) => false,
            (ScanScope::Images(mine), ScanScope::Images(theirs)) => theirs.is_subset(mine),
        }
    }

    /// One scan covering both.
    pub fn merge(self, other: ScanScope) -> ScanScope {
        match (self, other) {
            (ScanScope::Images(mut a), ScanScope::Images(b)) => {
                a.extend(b);
                ScanScope::Images(a)
            }
            _ => ScanScope::All,
        }
    }

    /// The image names, or empty for all (how the propose stage takes them).
    pub fn names(&self) -> Vec<String> {
        match self {
            ScanScope::All => Vec::new(),
            ScanScope::Images(names) => names.iter().cloned().collect(),
        }
    }
}

impl fmt::Display for ScanScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanScope::All => f.write_str("every image"),
            ScanScope::Images(names) => {
                f.write_str(&names.iter().cloned().collect::<Vec<_>>().join(", "))
            }
        }
    }
}

/// A cron expression and what it scans: rebake.yaml's `schedule.scan` scans every image; a
/// policy's `schedule` adds scan times for its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSchedule {
    pub cron: CronSchedule,
    pub scope: ScanScope,
}

/// Where merged proposals are deployed from.
#[derive(Debug, Clone)]
pub struct DeploysFrom {
    /// `owner/name`, compared without regard to case like the forges do.
    pub repository: String,
    pub branch: String,
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// Counters for `/metrics`. Cheap to clone; every clone counts into the same numbers.
///
/// The worker counts scans, findings, builds and proposals from each [`ScanSummary`], deploys,
/// and failures of stages `scan` and `deploy`; the webhook handlers count webhooks. Stages run
/// by a [`Jobs`] implementation may count their own failures with [`Metrics::inc_failure`]
/// (e.g. `build`, `test`, `publish`, `propose`).
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<MetricsInner>,
}

#[derive(Default)]
struct MetricsInner {
    scans: AtomicU64,
    findings: AtomicU64,
    builds: AtomicU64,
    proposals: AtomicU64,
    deploys: AtomicU64,
    last_successful_scan: AtomicI64,
    failures: Mutex<BTreeMap<String, u64>>,
    webhooks: Mutex<BTreeMap<(String, String), u64>>,
}

/// Locks a mutex; a panic elsewhere while holding it leaves plain data that is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Metrics::default();
        {
            let mut failures = lock(&metrics.inner.failures);
            for stage in ["scan", "deploy"] {
                failures.insert(stage.to_string(), 0);
            }
        }
        metrics
    }

    pub fn inc_scans(&self) {
        self.inner.scans.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_findings(&self, n: u64) {
        self.inner.findings.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_builds(&self, n: u64) {
        self.inner.builds.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_proposals(&self, n: u64) {
        self.inner.proposals.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc_deploys(&self) {
        self.inner.deploys.fetch_add(1, Ordering::Relaxed);
    }
    pub fn inc_failure(&self, stage: &str) {
        *lock(&self.inner.failures)
            .entry(stage.to_string())
            .or_insert(0) += 1;
    }
    pub fn inc_webhook(&self, forge: &str, result: &str) {
        *lock(&self.inner.webhooks)
            .entry((forge.to_string(), result.to_string()))
            .or_insert(0) += 1;
    }
    pub fn set_last_successful_scan(&self, time: DateTime<Utc>) {
        self.inner
            .last_successful_scan
            .store(time.timestamp(), Ordering::Relaxed);
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let i = &self.inner;
        let simple = [
            ("rebake_scans_total", "Scans that completed.", &i.scans),
            (
                "rebake_findings_total",
                "Packages found with a newer version in the archive.",
                &i.findings,
            ),
            ("rebake_builds_total", "Images built.", &i.builds),
            (
                "rebake_proposals_total",
                "Proposals opened or updated.",
                &i.proposals,
            ),
            (
                "rebake_deploys_total",
                "Deploys that succeeded.",
                &i.deploys,
            ),
        ];
        for (name, help, value) in simple {
            header_lines(&mut out, name, help, "counter");
            out.push_str(&format!("{name} {}\n", value.load(Ordering::Relaxed)));
        }
        header_lines(
            &mut out,
            "rebake_failures_total",
            "Failed jobs, by stage.",
            "counter",
        );
        for (stage, n) in lock(&i.failures).iter() {
            out.push_str(&format!(
                "rebake_failures_total{{stage=\"{}\"}} {n}\n",
                escape_label(stage)
            ));
        }
        header_lines(
            &mut out,
            "rebake_webhooks_total",
            "Webhook deliveries received, by forge and result.",
            "counter",
        );
        for ((forge, result), n) in lock(&i.webhooks).iter() {
            out.push_str(&format!(
                "rebake_webhooks_total{{forge=\"{}\",result=\"{}\"}} {n}\n",
                escape_label(forge),
                escape_label(result)
            ));
        }
        header_lines(
            &mut out,
            "rebake_last_successful_scan_timestamp_seconds",
            "Unix time of the end of the last successful scan (0: none since start).",
            "gauge",
        );
        out.push_str(&format!(
            "rebake_last_successful_scan_timestamp_seconds {}\n",
            i.last_successful_scan.load(Ordering::Relaxed)
        ));
        out
    }
}

fn header_lines(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

// ---------------------------------------------------------------------------------------------
// Persistent state

/// Writes `bytes` to `path` through a temporary file and a rename, so a crash never leaves a
/// half-written file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .context("state file path has no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

fn read_state<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not valid service state; move it away to start afresh \
                 (a delivery or deploy recorded in it may then run again)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A bounded set of strings that remembers insertion order (oldest forgotten first).
#[derive(Default)]
struct BoundedSet {
    order: VecDeque<String>,
    members: HashSet<String>,
    capacity: usize,
}

impl BoundedSet {
    fn new(capacity: usize, items: Vec<String>) -> Self {
        let mut set = BoundedSet {
            capacity,
            ..BoundedSet::default()
        };
        for item in items {
            set.insert(item);
        }
        set
    }

    /// False when `item` was already present.
    fn insert(&mut self, item: String) -> bool {
        if self.members.contains(&item) {
            return false;
        }
        self.members.insert(item.clone());
        self.order.push_back(item);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.members.remove(&old);
            }
        }
        true
    }

    fn remove(&mut self, item: &str) {
        if self.members.remove(item) {
            self.order.retain(|x| x != item);
        }
    }

    fn contains(&self, item: &str) -> bool {
        self.members.contains(item)
    }

    fn to_vec(&self) -> Vec<String> {
        self.order.iter().cloned().collect()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct DeliveriesFile {
    /// `forge:delivery-id`, oldest first.
    deliveries: Vec<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct JobsFile {
    /// Deploys accepted and not finished, in the order they were accepted.
    pending: Vec<MergedProposal>,
    /// Keys ([`MergedProposal::key`]) of deploys that succeeded, oldest first.
    done: Vec<String>,
}

struct Deliveries {
    path: PathBuf,
    seen: BoundedSet,
}

impl Deliveries {
    fn persist(&self) -> Result<()> {
        let file = DeliveriesFile {
            deliveries: self.seen.to_vec(),
        };
        write_atomically(&self.path, &serde_json::to_vec_pretty(&file)?)
    }
}

struct Queue {
    path: PathBuf,
    /// The scan waiting for the worker, if any.
    scan_queued: Option<ScanScope>,
    /// The scan the worker is running, if any.
    scan_running: Option<ScanScope>,
    /// Accepted deploys not yet finished, by key, with their acceptance order.
    pending: Vec<MergedProposal>,
    done: BoundedSet,
}

impl Queue {
    fn persist(&self) -> Result<()> {
        let file = JobsFile {
            pending: self.pending.clone(),
            done: self.done.to_vec(),
        };
        write_atomically(&self.path, &serde_json::to_vec_pretty(&file)?)
    }
}

// ---------------------------------------------------------------------------------------------
// The service

enum Job {
    Scan,
    Deploy(MergedProposal),
}

/// What happened to a request to queue a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The job will run.
    Queued,
    /// The same job is queued or running: nothing more is queued.
    AlreadyPending,
    /// The same deploy already succeeded.
    AlreadyDone,
}

/// The running service core: the worker, the job queue, webhook state and metrics. Cheap to
/// clone. Start with [`Service::start`] (inside a tokio runtime), route HTTP to
/// [`Service::router`], stop with [`Service::shutdown`]. [`serve`] does all of that.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    secret_env: String,
    /// What the scheduler follows; a scan may bring new ones (policies changed on the default
    /// branch).
    schedules: watch::Sender<Vec<ScanSchedule>>,
    deploys_from: Option<DeploysFrom>,
    metrics: Metrics,
    deliveries: Mutex<Deliveries>,
    queue: Mutex<Queue>,
    tx: mpsc::UnboundedSender<Job>,
    /// Jobs queued or running.
    outstanding: watch::Sender<usize>,
    stop: watch::Sender<bool>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Service {
    /// Loads the state under `<state_dir>/server/`, re-queues unfinished deploys and starts the
    /// worker. Must be called inside a tokio runtime.
    pub fn start<J: Jobs>(config: &ServeConfig, jobs: Arc<J>) -> Result<Service> {
        let dir = config.state_dir.join(SERVER_DIR);
        let deliveries_path = dir.join(DELIVERIES_FILE);
        let jobs_path = dir.join(JOBS_FILE);
        let deliveries: DeliveriesFile = read_state(&deliveries_path)?;
        let saved: JobsFile = read_state(&jobs_path)?;

        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        let pending = saved.pending;
        let (outstanding, _) = watch::channel(pending.len());
        for merged in &pending {
            info!(
                "resuming deploy of {} accepted before the restart",
                merged.key()
            );
            // The receiver is alive: it is dropped only by the worker, started below.
            let _ = tx.send(Job::Deploy(merged.clone()));
        }
        let inner = Arc::new(Inner {
            secret_env: config.secret_env.clone(),
            schedules: watch::channel(config.schedules.clone()).0,
            deploys_from: config.deploys_from.clone(),
            metrics: Metrics::new(),
            deliveries: Mutex::new(Deliveries {
                path: deliveries_path,
                seen: BoundedSet::new(MAX_DELIVERIES, deliveries.deliveries),
            }),
            queue: Mutex::new(Queue {
                path: jobs_path,
                scan_queued: None,
                scan_running: None,
                pending,
                done: BoundedSet::new(MAX_DONE, saved.done),
            }),
            tx,
            outstanding,
            stop,
            worker: Mutex::new(None),
        });
        let worker = tokio::spawn(run_worker(inner.clone(), jobs, rx));
        *lock(&inner.worker) = Some(worker);
        Ok(Service { inner })
    }

    /// `/healthz`, `/metrics`, `/webhook/github`, `/webhook/gitea`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/metrics", get(metrics_handler))
            .route("/webhook/github", post(github_webhook))
            .route("/webhook/gitea", post(gitea_webhook))
            .with_state(self.clone())
    }

    pub fn metrics(&self) -> Metrics {
        self.inner.metrics.clone()
    }

    /// Queues a scan of `scope` unless a queued or running scan covers it; a scan already
    /// queued takes in `scope`'s images instead of a second one being queued.
    pub fn enqueue_scan(&self, scope: ScanScope) -> Enqueued {
        let mut queue = lock(&self.inner.queue);
        let covered = |s: &Option<ScanScope>| s.as_ref().is_some_and(|s| s.covers(&scope));
        if covered(&queue.scan_queued) || covered(&queue.scan_running) {
            info!("a queued or running scan already covers {scope}: skipping this one");
            return Enqueued::AlreadyPending;
        }
        if let Some(queued) = queue.scan_queued.take() {
            info!("adding {scope} to the queued scan");
            queue.scan_queued = Some(queued.merge(scope));
            return Enqueued::AlreadyPending;
        }
        queue.scan_queued = Some(scope);
        self.inner.outstanding.send_modify(|n| *n += 1);
        if self.inner.tx.send(Job::Scan).is_err() {
            // The worker has stopped (shutdown): nothing will run.
            queue.scan_queued = None;
            self.inner.outstanding.send_modify(|n| *n -= 1);
        }
        Enqueued::Queued
    }

    /// Queues the deploy of a merged proposal unless the same one is queued, running or done.
    /// The proposal is written to `jobs.json` before this returns, so it survives a restart.
    pub fn enqueue_deploy(&self, merged: MergedProposal) -> Result<Enqueued> {
        let key = merged.key();
        let mut queue = lock(&self.inner.queue);
        if queue.done.contains(&key) {
            return Ok(Enqueued::AlreadyDone);
        }
        if queue.pending.iter().any(|p| p.key() == key) {
            return Ok(Enqueued::AlreadyPending);
        }
        queue.pending.push(merged.clone());
        if let Err(e) = queue.persist() {
            queue.pending.pop();
            return Err(e.context(format!("recording the deploy of {key}")));
        }
        self.inner.outstanding.send_modify(|n| *n += 1);
        if self.inner.tx.send(Job::Deploy(merged)).is_err() {
            // Shutting down: it stays in jobs.json and runs after the next start.
            self.inner.outstanding.send_modify(|n| *n -= 1);
        }
        Ok(Enqueued::Queued)
    }

    /// Waits until no job is queued or running.
    pub async fn wait_idle(&self) {
        wait_for_zero(self.inner.outstanding.subscribe()).await;
    }

    /// Stops the worker after the job it is running (if any) finishes. Queued deploys stay in
    /// `jobs.json`; a queued scan is dropped. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let worker = lock(&self.inner.worker).take();
        if let Some(worker) = worker {
            if let Err(e) = worker.await {
                error!("the job worker ended abnormally: {e}");
            }
        }
    }

    fn stop_signal(&self) -> watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    /// Replaces the scan schedules; the scheduler follows the new ones from its next step.
    pub fn set_schedules(&self, schedules: Vec<ScanSchedule>) {
        replace_schedules(&self.inner.schedules, schedules);
    }

    /// The scan schedules the scheduler follows now.
    pub fn schedules(&self) -> Vec<ScanSchedule> {
        self.inner.schedules.borrow().clone()
    }
}

/// Sets `schedules` (and tells the scheduler) when they differ from the current ones.
fn replace_schedules(sender: &watch::Sender<Vec<ScanSchedule>>, schedules: Vec<ScanSchedule>) {
    sender.send_if_modified(|current| {
        if *current == schedules {
            return false;
        }
        for s in &schedules {
            info!("scheduler: now scans {} at '{}' (UTC)", s.scope, s.cron);
        }
        *current = schedules;
        true
    });
}

async fn wait_for_zero(mut rx: watch::Receiver<usize>) {
    let _ = rx.wait_for(|n| *n == 0).await.map(|_| ());
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}

async fn run_worker<J: Jobs>(
    inner: Arc<Inner>,
    jobs: Arc<J>,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    let stop = inner.stop.subscribe();
    let mut stop = std::pin::pin!(stopped(stop));
    loop {
        let job = tokio::select! {
            biased;
            _ = &mut stop => break,
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        // Each job runs in its own task so that a panic in it fails that job, not the worker.
        match job {
            Job::Scan => {
                let scope = {
                    let mut queue = lock(&inner.queue);
                    let scope = queue.scan_queued.take().unwrap_or(ScanScope::All);
                    queue.scan_running = Some(scope.clone());
                    scope
                };
                info!("scanning {scope}");
                let j = jobs.clone();
                let result = tokio::spawn(async move { j.scan(scope).await }).await;
                let metrics = &inner.metrics;
                match flatten(result) {
                    Ok(summary) => {
                        if let Some(schedules) = summary.schedules {
                            replace_schedules(&inner.schedules, schedules);
                        }
                        metrics.inc_scans();
                        metrics.add_findings(summary.findings);
                        metrics.add_builds(summary.builds);
                        metrics.add_proposals(summary.proposals);
                        metrics.set_last_successful_scan(Utc::now());
                        info!(
                            findings = summary.findings,
                            builds = summary.builds,
                            proposals = summary.proposals,
                            "scan finished"
                        );
                    }
                    Err(e) => {
                        metrics.inc_failure("scan");
                        error!("scan failed: {e:#}");
                    }
                }
                lock(&inner.queue).scan_running = None;
            }
            Job::Deploy(merged) => {
                let key = merged.key();
                info!("deploying {key}");
                let j = jobs.clone();
                let result = tokio::spawn(async move { j.deploy(merged).await }).await;
                let ok = match flatten(result) {
                    Ok(()) => {
                        inner.metrics.inc_deploys();
                        info!("deployed {key}");
                        true
                    }
                    Err(e) => {
                        inner.metrics.inc_failure("deploy");
                        error!("deploy of {key} failed: {e:#}");
                        false
                    }
                };
                let mut queue = lock(&inner.queue);
                queue.pending.retain(|p| p.key() != key);
                if ok {
                    queue.done.insert(key.clone());
                }
                if let Err(e) = queue.persist() {
                    error!("recording the end of the deploy of {key}: {e:#}");
                }
            }
        }
        inner.outstanding.send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn flatten<T>(result: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    match result {
        Ok(inner) => inner,
        Err(e) => Err(anyhow::anyhow!("the job panicked or was cancelled: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

async fn metrics_handler(State(service): State<Service>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        service.inner.metrics.render(),
    )
        .into_response()
}

async fn github_webhook(
    State(service): State<Service>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    service.webhook(WebhookForge::Github, &headers, &body)
}

async fn gitea_webhook(
    State(service): State<Service>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    service.webhook(WebhookForge::Gitea, &headers, &body)
}

/// The answer to one webhook delivery; `result` is the `result` label of
/// `rebake_webhooks_total`.
struct Outcome {
    status: StatusCode,
    result: &'static str,
    message: String,
}

fn outcome(status: StatusCode, result: &'static str, message: impl Into<String>) -> Outcome {
    Outcome {
        status,
        result,
        message: message.into(),
    }
}

/// HMAC-SHA256 of `body` with `secret`, compared in constant time with the hex `signature`.
pub fn verify_signature(secret: &[u8], body: &[u8], signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// The lowercase hex HMAC-SHA256 of `body` with `secret` (how GitHub and Gitea sign).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl Service {
    fn webhook(&self, forge: WebhookForge, headers: &HeaderMap, body: &[u8]) -> Response {
        let outcome = self.webhook_outcome(forge, headers, body);
        self.inner
            .metrics
            .inc_webhook(forge.as_str(), outcome.result);
        (outcome.status, outcome.message).into_response()
    }

    fn webhook_outcome(&self, forge: WebhookForge, headers: &HeaderMap, body: &[u8]) -> Outcome {
        let secret_env = &self.inner.secret_env;
        let secret = match std::env::var(secret_env) {
            Ok(secret) if !secret.is_empty() => secret,
            _ => {
                warn!(
                    "{forge} webhook refused: the environment variable {secret_env} holding the \
                     webhook secret is not set; set it to the secret configured on the forge"
                );
                return outcome(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_secret",
                    "webhook secret is not configured on this server",
                );
            }
        };
        let (signature_header, delivery_header, event_header) = match forge {
            WebhookForge::Github => ("x-hub-signature-256", "x-github-delivery", "x-github-event"),
            WebhookForge::Gitea => ("x-gitea-signature", "x-gitea-delivery", "x-gitea-event"),
        };
        let Some(signature) = header_str(headers, signature_header) else {
            warn!("{forge} webhook refused: no {signature_header} header");
            return outcome(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("missing {signature_header}"),
            );
        };
        let signature_hex = match forge {
            WebhookForge::Github => signature.strip_prefix("sha256="),
            WebhookForge::Gitea => Some(signature),
        };
        if !signature_hex.is_some_and(|hex| verify_signature(secret.as_bytes(), body, hex)) {
            warn!("{forge} webhook refused: the {signature_header} signature does not match");
            return outcome(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("invalid {signature_header}"),
            );
        }
        let event = header_str(headers, event_header).unwrap_or("");
        let delivery = header_str(headers, delivery_header).map(|id| format!("{forge}:{id}"));
        match &delivery {
            Some(id) => {
                if !lock(&self.inner.deliveries).seen.insert(id.clone()) {
                    info!("{forge} delivery {id} seen before: ignored");
                    return outcome(StatusCode::OK, "duplicate", "duplicate delivery ignored");
                }
            }
            None => warn!("{forge} webhook without {delivery_header}: cannot detect a repeat"),
        }

        let result = self.handle_event(forge, event, body);

        if let Some(id) = &delivery {
            let mut deliveries = lock(&self.inner.deliveries);
            if result.status.is_server_error() {
                // Let the forge's retry through.
                deliveries.seen.remove(id);
            }
            if let Err(e) = deliveries.persist() {
                error!("recording webhook delivery {id}: {e:#}");
            }
        }
        result
    }

    fn handle_event(&self, forge: WebhookForge, event: &str, body: &[u8]) -> Outcome {
        match event {
            "ping" => outcome(StatusCode::OK, "ping", "pong"),
            "pull_request" => self.handle_pull_request(forge, body),
            "" => outcome(StatusCode::ACCEPTED, "ignored", "no event header: ignored"),
            other => outcome(
                StatusCode::ACCEPTED,
                "ignored",
                format!("event {other} ignored"),
            ),
        }
    }

    fn handle_pull_request(&self, forge: WebhookForge, body: &[u8]) -> Outcome {
        let event: PullRequestEvent = match serde_json::from_slice(body) {
            Ok(event) => event,
            Err(e) => {
                warn!("{forge} pull_request payload does not parse: {e}");
                return outcome(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("pull_request payload does not parse: {e}"),
                );
            }
        };
        match proposal_from_event(forge, event) {
            Err(message) => {
                warn!("{forge} pull_request refused: {message}");
                outcome(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            Ok(PullRequestDecision::Ignore(result, message)) => {
                info!("{forge} pull_request: {message}");
                // Actions other than "closed" are ignored like other events (202); a closed
                // pull request that deploys nothing is understood and answered 200.
                let status = if result == "ignored" {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::OK
                };
                outcome(status, result, message)
            }
            Ok(PullRequestDecision::Deploy(merged)) => {
                if let Some(from) = &self.inner.deploys_from {
                    if !merged.repository.eq_ignore_ascii_case(&from.repository)
                        || merged.base_branch != from.branch
                    {
                        let message = format!(
                            "{} merged into {} of {}: this service deploys from {} of {}",
                            merged.key(),
                            merged.base_branch,
                            merged.repository,
                            from.branch,
                            from.repository
                        );
                        info!("{forge} pull_request: {message}");
                        return outcome(StatusCode::OK, "other_repository", message);
                    }
                }
                let key = merged.key();
                match self.enqueue_deploy(merged) {
                    Ok(Enqueued::Queued) => {
                        info!("merged proposal {key}: deploy queued");
                        outcome(
                            StatusCode::ACCEPTED,
                            "deploy_queued",
                            format!("deploy queued for {key}"),
                        )
                    }
                    Ok(Enqueued::AlreadyPending) => outcome(
                        StatusCode::OK,
                        "duplicate",
                        format!("deploy of {key} already queued"),
                    ),
                    Ok(Enqueued::AlreadyDone) => outcome(
                        StatusCode::OK,
                        "duplicate",
                        format!("{key} already deployed"),
                    ),
                    Err(e) => {
                        error!("{e:#}");
                        outcome(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "error",
                            "could not record the deploy; retry the delivery",
                        )
                    }
                }
            }
        }
    }
}

// The fields read from a pull_request payload; GitHub and Gitea share these names.
#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: Option<u64>,
    pull_request: PullRequestPayload,
    repository: RepositoryPayload,
}

#[derive(Deserialize)]
struct PullRequestPayload {
    number: Option<u64>,
    merged: Option<bool>,
    merge_commit_sha: Option<String>,
    head: BranchPayload,
    base: BranchPayload,
}

#[derive(Deserialize)]
struct BranchPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    label: Option<String>,
}

#[derive(Deserialize)]
struct RepositoryPayload {
    full_name: String,
}

enum PullRequestDecision {
    Deploy(MergedProposal),
    Ignore(&'static str, String),
}

fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_branch_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"~^:?*[\\".contains(&b))
}

fn proposal_from_event(
    forge: WebhookForge,
    event: PullRequestEvent,
) -> std::result::Result<PullRequestDecision, String> {
    let pr = event.pull_request;
    let Some(number) = event.number.or(pr.number) else {
        return Err("pull_request payload has no number".to_string());
    };
    let name = format!("{}#{number}", event.repository.full_name);
    if event.action != "closed" {
        return Ok(PullRequestDecision::Ignore(
            "ignored",
            format!("{name} {}: nothing to do", event.action),
        ));
    }
    if pr.merged != Some(true) {
        return Ok(PullRequestDecision::Ignore(
            "not_merged",
            format!("{name} closed without merge: nothing to deploy"),
        ));
    }
    // Gitea reports head.ref "refs/pull/N/head" once the head branch is deleted; head.label
    // still holds the branch name then.
    let head_branch = match (forge, pr.head.label) {
        (WebhookForge::Gitea, Some(label)) if pr.head.git_ref.starts_with("refs/pull/") => label,
        _ => pr.head.git_ref,
    };
    if !head_branch.starts_with(PROPOSAL_BRANCH_PREFIX) {
        return Ok(PullRequestDecision::Ignore(
            "not_rebake",
            format!("{name} merged from {head_branch}, not a rebake proposal: nothing to deploy"),
        ));
    }
    if !is_branch_name(&head_branch) || !is_branch_name(&pr.base.git_ref) {
        return Err(format!("{name}: invalid branch name in the payload"));
    }
    let repository = event.repository.full_name;
    let valid_repo = repository.split('/').count() == 2
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if !valid_repo {
        return Err(format!("{name}: repository.full_name is not owner/name"));
    }
    let merge_commit = match pr.merge_commit_sha {
        Some(sha) if is_commit_id(&sha) => sha.to_ascii_lowercase(),
        _ => {
            return Err(format!(
                "{name} is merged but pull_request.merge_commit_sha is missing or not a commit id"
            ))
        }
    };
    Ok(PullRequestDecision::Deploy(MergedProposal {
        forge,
        repository,
        number,
        head_branch,
        merge_commit,
        base_branch: pr.base.git_ref,
    }))
}

// ---------------------------------------------------------------------------------------------
// Scheduler

/// Where the scheduler gets the time and how it waits; tests inject a fake one.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    fn sleep_until(&self, deadline: DateTime<Utc>) -> impl Future<Output = ()> + Send;
}

/// The system clock (UTC).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        // In steps of at most a minute, re-reading the wall clock, so that a suspended machine
        // or a clock change does not push the run far off.
        loop {
            let left = deadline - Utc::now();
            let Ok(left) = left.to_std() else { return };
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(std::time::Duration::from_secs(60))).await;
        }
    }
}

/// The first time strictly after `now` (in the next minute or later) at which `schedule`
/// fires, in UTC; None if it never fires within five years.
pub fn next_run(schedule: &CronSchedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .next_after(&now.naive_utc())
        .map(|next| next.and_utc())
}

/// One scheduler step: waits on `clock` until the next time one of `schedules` fires, then
/// queues a scan of what the schedules firing then cover (skipped when a queued or running scan
/// covers it). None if no schedule ever fires.
pub async fn run_scheduler_once<C: Clock>(
    service: &Service,
    schedules: &[ScanSchedule],
    clock: &C,
) -> Option<Enqueued> {
    let now = clock.now();
    let runs: Vec<(DateTime<Utc>, &ScanScope)> = schedules
        .iter()
        .filter_map(|s| Some((next_run(&s.cron, now)?, &s.scope)))
        .collect();
    let next = runs.iter().map(|(t, _)| *t).min()?;
    let scope = runs
        .into_iter()
        .filter(|(t, _)| *t == next)
        .map(|(_, scope)| scope.clone())
        .reduce(ScanScope::merge)?;
    clock.sleep_until(next).await;
    Some(service.enqueue_scan(scope))
}

/// Runs [`run_scheduler_once`] on the service's current schedules until the service shuts
/// down; when the schedules change, the wait is recomputed.
pub async fn run_scheduler<C: Clock>(service: Service, clock: C) {
    let stop = stopped(service.stop_signal());
    let mut stop = std::pin::pin!(stop);
    let mut changes = service.inner.schedules.subscribe();
    for s in service.schedules() {
        info!("scheduler: scans {} at '{}' (UTC)", s.scope, s.cron);
    }
    loop {
        let schedules = changes.borrow_and_update().clone();
        tokio::select! {
            biased;
            _ = &mut stop => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            step = run_scheduler_once(&service, &schedules, &clock) => {
                if step.is_none() {
                    warn!("scheduler: no schedule ever fires: waiting for new schedules");
                    tokio::select! {
                        _ = &mut stop => break,
                        changed = changes.changed() => if changed.is_err() { break },
                    }
                }
            }
        }
    }
}

/// Serves webhooks, `/healthz` and `/metrics` on `listener` and runs scheduled scans until
/// `shutdown` completes; then stops accepting, lets the running job finish and returns.
pub async fn serve<J: Jobs>(
    listener: tokio::net::TcpListener,
    config: ServeConfig,
    jobs: Arc<J>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let service = Service::start(&config, jobs)?;
    if let Ok(addr) = listener.local_addr() {
        info!("listening on http://{addr}");
    }
    let scheduler = (!config.schedules.is_empty())
        .then(|| tokio::spawn(run_scheduler(service.clone(), SystemClock)));
    let served = axum::serve(listener, service.router())
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP");
    info!("shutting down: waiting for the running job to finish");
    service.shutdown().await;
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    served
}
