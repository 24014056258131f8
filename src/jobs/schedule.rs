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

/// Runs the scheduled jobs of the policies `policies` holds on `clock` until `stop` turns true;
/// when the policies change (the default branch after a scan), the schedules follow. Then waits
/// for the running jobs to finish.
pub async fn run_schedules<C: Clock>(
    settings: JobSettings,
    mut policies: watch::Receiver<Vec<Policy>>,
    clock: C,
    mut stop: watch::Receiver<bool>,
) {
    let settings = Arc::new(settings);
    let running: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
    let mut tasks = JoinSet::new();
    loop {
        let current = Arc::new(policies.borrow_and_update().clone());
        let jobs = scheduled_jobs(&current);
        for j in &jobs {
            tracing::info!(
                "scheduler: runs job {}/{} at '{}' (UTC)",
                j.image,
                j.job,
                j.cron
            );
        }
        // Fire the jobs on their schedules until the policies change or the service stops.
        let changed = loop {
            let next = next_due(&jobs, clock.now());
            let due: Vec<ScheduledJob> = next
                .as_ref()
                .map(|(_, due)| due.iter().map(|j| (*j).clone()).collect())
                .unwrap_or_default();
            let wait = async {
                match next {
                    Some((at, _)) => clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // A stop, then new policies, come before a firing that is due at once.
                biased;
                _ = stop.wait_for(|s| *s) => break false,
                c = policies.changed() => break c.is_ok(),
                _ = wait => {}
            }
            for j in due {
                start(&mut tasks, &settings, &current, &running, j);
            }
            // Forget the tasks that are done.
            while tasks.try_join_next().is_some() {}
        };
        if !changed {
            break;
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Starts one run of `j`, unless the previous one still runs.
fn start(
    tasks: &mut JoinSet<()>,
    settings: &Arc<JobSettings>,
    policies: &Arc<Vec<Policy>>,
    running: &Arc<Mutex<BTreeSet<(String, String)>>>,
    j: ScheduledJob,
) {
    let key = (j.image.clone(), j.job.clone());
    if !running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.clone())
    {
        tracing::warn!("job {}/{} still runs: this run is skipped", j.image, j.job);
        return;
    }
    let (settings, policies, running) = (settings.clone(), policies.clone(), running.clone());
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

    /// Time moves only when the test lets one sleep end.
    struct FakeClock {
        now: Mutex<DateTime<Utc>>,
        permits: Arc<tokio::sync::Semaphore>,
    }

    impl Clock for FakeClock {
        fn now(&self) -> DateTime<Utc> {
            *self.now.lock().unwrap()
        }

        async fn sleep_until(&self, deadline: DateTime<Utc>) {
            self.permits.acquire().await.unwrap().forget();
            *self.now.lock().unwrap() = deadline;
        }
    }

    fn policy(jobs: &str) -> Policy {
        crate::policy::parse_policy(
            "db",
            std::path::Path::new("policies/db.yaml"),
            &format!(
                "template: t.hbs\nsuite: trixie\ndeploy:\n  - docker: {{name: db}}\njobs:\n{jobs}"
            ),
        )
        .unwrap()
    }

    /// Runs of a job so far (each fails at once: the engine address leads nowhere).
    fn runs(state: &std::path::Path, job: &str) -> u64 {
        crate::jobs::read_summary(state, "db", job)
            .unwrap()
            .map_or(0, |s| s.runs)
    }

    async fn wait_for_runs(state: &std::path::Path, job: &str, n: u64) {
        for _ in 0..200 {
            if runs(state, job) >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("{job} ran {} times, not {n}", runs(state, job));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_fire_on_their_schedule_and_follow_new_policies() {
        let state = tempfile::tempdir().unwrap();
        let settings = JobSettings {
            state_dir: state.path().to_path_buf(),
            engine_host: format!("unix://{}/no-engine.sock", state.path().display()),
            backups: Default::default(),
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(0));
        let clock = FakeClock {
            now: Mutex::new("2026-11-29T02:00:00Z".parse().unwrap()),
            permits: permits.clone(),
        };
        let (policies_tx, policies_rx) = watch::channel(vec![policy(
            "  - name: dump\n    schedule: \"30 2 * * *\"\n    command: [x]\n  - name: manual\n    command: [y]\n",
        )]);
        let (stop_tx, stop_rx) = watch::channel(false);
        let scheduler = tokio::spawn(run_schedules(settings, policies_rx, clock, stop_rx));

        // 02:30: the dump runs (and fails: no engine), the job without a schedule does not.
        permits.add_permits(1);
        wait_for_runs(state.path(), "dump", 1).await;
        let summary = crate::jobs::read_summary(state.path(), "db", "dump")
            .unwrap()
            .unwrap();
        let last = summary.last.unwrap();
        assert!(
            last.reason
                .as_deref()
                .unwrap_or_default()
                .contains("no-engine.sock"),
            "{last:?}"
        );
        assert_eq!(runs(state.path(), "manual"), 0);

        // New policies (a merge on the default branch): the new job's schedule is followed.
        policies_tx.send_replace(vec![policy(
            "  - name: dump\n    schedule: \"30 2 * * *\"\n    command: [x]\n  - name: vacuum\n    schedule: \"0 3 * * *\"\n    command: [y]\n",
        )]);
        permits.add_permits(1);
        wait_for_runs(state.path(), "vacuum", 1).await;
        assert_eq!(runs(state.path(), "dump"), 1);

        stop_tx.send_replace(true);
        tokio::time::timeout(std::time::Duration::from_secs(10), scheduler)
            .await
            .expect("the scheduler stops")
            .unwrap();
    }
}
