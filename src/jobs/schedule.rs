//! The jobs' cron schedules in `rebake serve`: each job with a `schedule` runs when it fires
//! (UTC). A job still running when it fires again is not started twice; jobs of one target wait
//! for each other and for deploys through the target lock.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{run_job, JobSettings};
use crate::config::CronSchedule;
use crate::policy::Policy;
use crate::server::{next_run, Clock};

/// A job with a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledJob {
    pub image: String,
    pub job: String,
    pub cron: CronSchedule,
}

/// The jobs of `policies` that have a schedule.
pub fn scheduled_jobs(policies: &[Policy]) -> Vec<ScheduledJob> {
    policies
        .iter()
        .flat_map(|p| {
            p.jobs.iter().filter_map(|j| {
                Some(ScheduledJob {
                    image: p.name.clone(),
                    job: j.name.clone(),
                    cron: j.schedule.clone()?,
                })
            })
        })
        .collect()
}

/// The next time any of `jobs` fires after `now`, and the jobs that fire then.
pub fn next_due(
    jobs: &[ScheduledJob],
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, Vec<&ScheduledJob>)> {
    let times: Vec<(DateTime<Utc>, &ScheduledJob)> = jobs
        .iter()
        .filter_map(|j| Some((next_run(&j.cron, now)?, j)))
        .collect();
    let next = times.iter().map(|(t, _)| *t).min()?;
    Some((
        next,
        times
            .into_iter()
            .filter(|(t, _)| *t == next)
            .map(|(_, j)| j)
            .collect(),
    ))
}

/// Runs `policies`' scheduled jobs on `clock` until `stop` turns true; then waits for the
/// running ones to finish.
pub async fn run_schedules<C: Clock>(
    settings: JobSettings,
    policies: Vec<Policy>,
    clock: C,
    mut stop: watch::Receiver<bool>,
) {
    let jobs = scheduled_jobs(&policies);
    for j in &jobs {
        tracing::info!(
            "scheduler: runs job {}/{} at '{}' (UTC)",
            j.image,
            j.job,
            j.cron
        );
    }
    let settings = Arc::new(settings);
    let policies = Arc::new(policies);
    let running: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
    let mut tasks = JoinSet::new();
    while let Some((at, due)) = next_due(&jobs, clock.now()) {
        let due: Vec<ScheduledJob> = due.into_iter().cloned().collect();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = clock.sleep_until(at) => {}
        }
        for j in due {
            let key = (j.image.clone(), j.job.clone());
            if !running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone())
            {
                tracing::warn!("job {}/{} still runs: this run is skipped", j.image, j.job);
                continue;
            }
            let (settings, policies, running) =
                (settings.clone(), policies.clone(), running.clone());
            tasks.spawn(async move {
                if let Some(policy) = policies.iter().find(|p| p.name == j.image) {
                    match run_job(&settings, policy, &j.job).await {
                        Ok(r) if r.ok() => tracing::info!("job {}/{} ok", j.image, j.job),
                        Ok(r) => tracing::warn!(
                            "job {}/{} failed: {} (log: {})",
                            j.image,
                            j.job,
                            r.reason.unwrap_or_default(),
                            r.log.display()
                        ),
                        Err(e) => tracing::warn!("job {}/{} could not run: {e:#}", j.image, j.job),
                    }
                }
                running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            });
        }
        // Forget the tasks that are done.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jobs_that_fire_next_together() {
        let job = |image: &str, job: &str, cron: &str| ScheduledJob {
            image: image.into(),
            job: job.into(),
            cron: CronSchedule::parse(cron).unwrap(),
        };
        let jobs = [
            job("db", "dump", "30 2 * * *"),
            job("db", "vacuum", "0 3 * * *"),
            job("cache", "flush", "30 2 * * *"),
        ];
        let now: DateTime<Utc> = "2026-11-29T02:00:00Z".parse().unwrap();
        let (at, due) = next_due(&jobs, now).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-29T02:30:00+00:00");
        let names: Vec<&str> = due.iter().map(|j| j.job.as_str()).collect();
        assert_eq!(names, ["dump", "flush"]);
        let (at, due) = next_due(&jobs, at).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-29T03:00:00+00:00");
        assert_eq!(due[0].job, "vacuum");
        assert!(next_due(&[], now).is_none());
    }
}
