//! The long-running service behind `rebake serve`: signed forge webhooks, a cron scheduler for
//! scans, `/healthz`, Prometheus `/metrics`, and one worker that runs jobs one at a time.
//!
//! How a scan or a deploy is done is not decided here: the caller passes a [`Jobs`]
//! implementation, so this module depends on no stage after it and is tested with a fake.
//!
//! What survives a restart lives under `<state_dir>/server/`:
//! - `deliveries.json`: the last [`MAX_DELIVERIES`] webhook delivery ids seen, so that a delivery
//!   repeated across a restart is still ignored;
//! - `jobs.json`: deploys accepted but not yet finished (re-queued at start), and the keys
//!   (repository and merge commit, [`MergedProposal::key`]) of the last [`MAX_DONE`] deploys that
//!   succeeded: the same merge commit never deploys twice, whatever the delivery id or the path
//!   it came in on.
//!
//! Only the configured forge's webhook path acts ([`ServeConfig::forge`]); the other answers 404
//! and does nothing, so a body signed for one forge cannot be replayed through the other.
//!
//! Job rules: one worker runs every job, so at most one job (scan or deploy) runs at a time. A
//! scheduler tick whose images a queued or running scan already covers is skipped; otherwise
//! its images join the queued scan (one scan is queued at most). A merged proposal that is already
//! queued, running or done is not queued again. On shutdown the running job finishes; queued
//! deploys stay in `jobs.json` and run after the next start.
//!
//! Here: the public types, [`Service`] and its routes, the scheduler. `webhook.rs` checks and
//! reads the forges' webhooks, `queue.rs` holds the job queue, its state files and the worker,
//! `metrics.rs` the counters behind `/metrics`.

mod connections;
mod metrics;
mod queue;
mod webhook;

pub use connections::{raise_open_files_limit, serve_bounded, ConnectionLimits};
pub use metrics::Metrics;
pub use webhook::{merged_proposal_from_payload, sign, verify_signature};

use crate::config::{CronSchedule, ForgeKind};
use anyhow::{Context, Result};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use queue::{read_state, run_worker, BoundedSet, Deliveries, DeliveriesFile, Job, JobsFile, Queue};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// How many webhook delivery ids are remembered (oldest forgotten first).
pub const MAX_DELIVERIES: usize = 4096;
/// How many finished deploys are remembered to refuse running them again.
pub const MAX_DONE: usize = 1024;
/// Only pull requests from branches with this prefix (the ones `rebake propose` opens) deploy.
pub use crate::repo::BRANCH_PREFIX as PROPOSAL_BRANCH_PREFIX;
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
    /// Identity of the deploy: `owner/name@merge-commit` (the repository in lowercase, as the
    /// forges compare it). The same merge commit of a repository deploys once, whatever forge
    /// path, delivery id or pull request number a replayed body carries.
    pub fn key(&self) -> String {
        format!(
            "{}@{}",
            self.repository.to_ascii_lowercase(),
            self.merge_commit.to_ascii_lowercase()
        )
    }
}

/// A done key as [`MergedProposal::key`] makes it; older versions wrote
/// `forge:owner/name#number@commit`, read as `owner/name@commit`.
fn done_key(saved: String) -> String {
    match saved.split_once(':') {
        Some((forge, rest)) if ["github", "gitea"].contains(&forge) => {
            match (rest.split_once('#'), rest.rsplit_once('@')) {
                (Some((repository, _)), Some((_, commit))) => format!(
                    "{}@{}",
                    repository.to_ascii_lowercase(),
                    commit.to_ascii_lowercase()
                ),
                _ => saved,
            }
        }
        _ => saved,
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
    /// What the containers the engine runs lack (None: not scanned this time).
    #[serde(skip)]
    pub running: Option<Vec<RunningFixes>>,
}

/// The security fixes one running container's image lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunningFixes {
    pub container: String,
    /// Source packages with a security update in the verified archive.
    pub missing: u64,
    /// Seconds since the first verified InRelease carried the oldest of them (0: none).
    pub oldest_age_seconds: i64,
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
    /// The forge whose webhook path acts (rebake.yaml's `forge.kind`). A delivery to the other
    /// forge's path is answered 404 and does nothing; `None` (plain git, or no forge): no
    /// webhook acts.
    pub forge: Option<WebhookForge>,
    /// When to scan what; empty runs no scheduler (scans only when the caller asks).
    pub schedules: Vec<ScanSchedule>,
    /// The repository and branch deploys come from; a merged pull request of any other (an
    /// organisation-wide webhook, a merge into a side branch) deploys nothing. `None` accepts
    /// any.
    pub deploys_from: Option<DeploysFrom>,
    /// Timeouts and the cap on connections.
    pub limits: ConnectionLimits,
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

/// Locks a mutex; a panic elsewhere while holding it leaves plain data that is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The service

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
    forge: Option<WebhookForge>,
    /// What the scheduler follows; a scan may bring new ones (policies changed on the default
    /// branch).
    schedules: watch::Sender<Vec<ScanSchedule>>,
    deploys_from: Option<DeploysFrom>,
    limits: ConnectionLimits,
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
            forge: config.forge,
            schedules: watch::channel(config.schedules.clone()).0,
            deploys_from: config.deploys_from.clone(),
            limits: config.limits,
            metrics: Metrics::new().with_timeline(&config.state_dir),
            deliveries: Mutex::new(Deliveries {
                path: deliveries_path,
                seen: BoundedSet::new(MAX_DELIVERIES, deliveries.deliveries),
            }),
            queue: Mutex::new(Queue {
                path: jobs_path,
                scan_queued: None,
                scan_running: None,
                pending,
                done: BoundedSet::new(MAX_DONE, saved.done.into_iter().map(done_key).collect()),
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

    /// `/healthz`, `/metrics`, `/webhook/github`, `/webhook/gitea`; a request not answered
    /// within [`ConnectionLimits::request_timeout`] (its body included) gets 408.
    pub fn router(&self) -> Router {
        let timeout = self.inner.limits.request_timeout;
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/metrics", get(metrics::handler))
            .route("/webhook/github", post(webhook::github_webhook))
            .route("/webhook/gitea", post(webhook::gitea_webhook))
            .with_state(self.clone())
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    request_timeout(timeout, request, next)
                },
            ))
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

/// Answers 408 when `next` takes longer than `timeout` (a body sent too slowly, mostly).
async fn request_timeout(
    timeout: std::time::Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let what = format!("{} {}", request.method(), request.uri().path());
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            warn!(
                "{what}: no answer within the request timeout ({} s): answered 408",
                timeout.as_secs_f64()
            );
            (
                axum::http::StatusCode::REQUEST_TIMEOUT,
                format!("request not complete within {} s\n", timeout.as_secs_f64()),
            )
                .into_response()
        }
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
    let served = serve_bounded(listener, service.router(), config.limits, shutdown)
        .await
        .context("serving HTTP");
    info!("shutting down: waiting for the running job to finish");
    service.shutdown().await;
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_keys_are_repository_and_merge_commit() {
        let sha = "c4295bd74fb0f4fda03689c3df3f2803b658fd85";
        let merged = |forge, number| MergedProposal {
            forge,
            repository: "Ops/Images".into(),
            number,
            head_branch: "rebake/web".into(),
            merge_commit: sha.into(),
            base_branch: "main".into(),
        };
        let key = merged(WebhookForge::Github, 1).key();
        assert_eq!(key, format!("ops/images@{sha}"));
        assert_eq!(merged(WebhookForge::Gitea, 2).key(), key);
        assert_eq!(done_key(format!("github:Ops/Images#1@{sha}")), key);
        assert_eq!(done_key(key.clone()), key);
    }
}
