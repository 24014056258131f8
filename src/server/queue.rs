//! The job queue and its worker, and what of them survives a restart: the state files
//! `deliveries.json` and `jobs.json`.

use super::{lock, replace_schedules, stopped, Inner, Jobs, MergedProposal, ScanScope};
use anyhow::{Context, Result};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{error, info};

pub(super) enum Job {
    Scan,
    Deploy(MergedProposal),
}

pub(super) fn read_state<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
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
pub(super) struct BoundedSet {
    order: VecDeque<String>,
    members: HashSet<String>,
    capacity: usize,
}

impl BoundedSet {
    pub(super) fn new(capacity: usize, items: Vec<String>) -> Self {
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
    pub(super) fn insert(&mut self, item: String) -> bool {
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

    pub(super) fn remove(&mut self, item: &str) {
        if self.members.remove(item) {
            self.order.retain(|x| x != item);
        }
    }

    pub(super) fn contains(&self, item: &str) -> bool {
        self.members.contains(item)
    }

    pub(super) fn to_vec(&self) -> Vec<String> {
        self.order.iter().cloned().collect()
    }
}

#[derive(Default, Serialize, Deserialize)]
pub(super) struct DeliveriesFile {
    /// `forge:delivery-id`, oldest first.
    pub(super) deliveries: Vec<String>,
}

#[derive(Default, Serialize, Deserialize)]
pub(super) struct JobsFile {
    /// Deploys accepted and not finished, in the order they were accepted.
    pub(super) pending: Vec<MergedProposal>,
    /// Keys ([`MergedProposal::key`]) of deploys that succeeded, oldest first.
    pub(super) done: Vec<String>,
}

pub(super) struct Deliveries {
    pub(super) path: PathBuf,
    pub(super) seen: BoundedSet,
}

impl Deliveries {
    pub(super) fn persist(&self) -> Result<()> {
        let file = DeliveriesFile {
            deliveries: self.seen.to_vec(),
        };
        crate::state::write_atomic(&self.path, &serde_json::to_vec_pretty(&file)?)
    }
}

pub(super) struct Queue {
    pub(super) path: PathBuf,
    /// The scan waiting for the worker, if any.
    pub(super) scan_queued: Option<ScanScope>,
    /// The scan the worker is running, if any.
    pub(super) scan_running: Option<ScanScope>,
    /// Accepted deploys not yet finished, by key, with their acceptance order.
    pub(super) pending: Vec<MergedProposal>,
    pub(super) done: BoundedSet,
}

impl Queue {
    pub(super) fn persist(&self) -> Result<()> {
        let file = JobsFile {
            pending: self.pending.clone(),
            done: self.done.to_vec(),
        };
        crate::state::write_atomic(&self.path, &serde_json::to_vec_pretty(&file)?)
    }
}

pub(super) async fn run_worker<J: Jobs>(
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
                        if let Some(running) = &summary.running {
                            metrics.set_running(running);
                        }
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
