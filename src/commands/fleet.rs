//! `rebake status`: the fleet at a glance, as the default branch, the verified archive, the
//! forge and the deployment log say — per image its lock, pending updates (security fixes and
//! CVEs, or held by a cooldown), open proposal, what each target runs and the last error.

use super::*;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct StatusRequest {
    pub images: Vec<String>,
    pub sources: Option<PathBuf>,
    pub format: OutputFormat,
}

/// One image's state.
#[derive(Debug, Clone, Serialize)]
pub struct ImageStatus {
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The default branch's lock: the image reference (digest, else id); None: not built yet.
    pub locked: Option<String>,
    pub tests_passed: Option<bool>,
    pub pending: Pending,
    pub proposal: Option<ProposalStatus>,
    pub targets: Vec<TargetStatus>,
    /// The latest refusal or failed deploy since the last success, from the deployment log.
    pub last_error: Option<LoggedError>,
    /// The policy's jobs: runs and failures so far, from the state directory.
    pub jobs: Vec<JobStatus>,
}

/// One job's runs, from its summary in the state directory.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job: String,
    pub runs: u64,
    pub failures: u64,
    /// When the last run started; None: never run.
    pub last_run: Option<String>,
    pub last_ok: Option<bool>,
    /// Why the last run failed.
    pub last_reason: Option<String>,
}

/// What the verified archive has that the lock does not.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pending {
    /// Source packages with a newer candidate (the policy's `updates` decide which count).
    pub sources: usize,
    /// Of which carry a security fix.
    pub security: usize,
    /// CVE ids those fix (when the tracker or changelog names them).
    pub cves: usize,
    /// Held by `updates.min_age` until then.
    pub held_until: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProposalStatus {
    pub url: String,
    pub title: String,
    pub head: String,
}

/// What one deploy target last got, from the deployment log.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub target: String,
    pub image_ref: String,
    pub time: String,
    /// It runs the lock's image.
    pub current: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoggedError {
    pub time: String,
    pub message: String,
}

/// `rebake status`.
pub fn status(ctx: &Context, req: StatusRequest) -> Result<u8> {
    let rows = runtime()?.block_on(status_async(ctx, &req))?;
    match req.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        OutputFormat::Human => print!("{}", render(&rows)),
    }
    Ok(0)
}

/// `rebake dashboard`: writes `rebake status`'s table into the forge's dashboard issue (opened
/// once, edited in place, closed when the repository has no policies).
pub fn dashboard(ctx: &Context, req: StatusRequest) -> Result<u8> {
    let outcome = runtime()?.block_on(async {
        let config = ctx.load_config()?;
        let state_dir = ctx.state_dir(&config);
        let c = connect_forge(ctx, &config, &state_dir).await?;
        dashboard_on(ctx, &c, &config, &state_dir, &req).await
    })?;
    match req.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
        OutputFormat::Human => println!("{}", outcome.describe()),
    }
    Ok(0)
}

/// The dashboard issue brought up to date over an open connection (`rebake serve` calls this
/// after each scheduled scan).
pub async fn dashboard_on(
    ctx: &Context,
    c: &Connection,
    config: &Config,
    state_dir: &Path,
    req: &StatusRequest,
) -> Result<crate::dashboard::Outcome> {
    use crate::forge::Forge;
    if !c.forge.has_issues() {
        return Ok(crate::dashboard::Outcome::NoIssues);
    }
    let rows = status_on(ctx, c, config, state_dir, req).await?;
    Ok(crate::dashboard::update(&c.forge, &rows).await?)
}

/// Every image's state at the default branch's head.
pub async fn status_async(ctx: &Context, req: &StatusRequest) -> Result<Vec<ImageStatus>> {
    let config = ctx.load_config()?;
    let state_dir = ctx.state_dir(&config);
    let c = connect_forge(ctx, &config, &state_dir).await?;
    status_on(ctx, &c, &config, &state_dir, req).await
}

/// [`status_async`] over an open connection.
pub async fn status_on(
    _ctx: &Context,
    c: &Connection,
    config: &Config,
    state_dir: &Path,
    req: &StatusRequest,
) -> Result<Vec<ImageStatus>> {
    use crate::forge::Forge;
    let scratch = export_default_branch(c, true).await?;
    // The last policy removed takes the directory with it (git keeps no empty directories).
    if !scratch.path().join("policies").is_dir() && req.images.is_empty() {
        return Ok(Vec::new());
    }
    let policies = crate::repo::policies(scratch.path(), &req.images)?;
    let inventories = inventories_from_repo(scratch.path(), &req.images)?;
    let entries = load_sources(req.sources.as_deref(), config)?;
    let fetcher = Fetcher::new(state_dir, Progress::auto(false))?;
    let tracker = tracker_from(config, None, &[], state_dir).await?;
    let report = plan::scan(&fetcher, &entries, tracker.as_ref(), &inventories).await?;
    let mut first_seen = crate::cooldown::FirstSeen::load(state_dir)?;
    let log = read_log(state_dir)?;
    let repository = crate::git::redact_url(&c.remote_url);
    let mut rows = Vec::new();
    for p in &policies {
        let lock = Lock::read(&lock::path_for(scratch.path(), &p.name)).ok();
        let locked = lock
            .as_ref()
            .and_then(|l| l.image.as_ref())
            .map(|i| i.digest.clone().unwrap_or_else(|| i.id.clone()));
        let mut pending = Pending::default();
        if let Some(scan) = report.images.iter().find(|i| i.image == p.name) {
            pending.sources = scan.sources.len();
            pending.security = scan.sources.iter().filter(|s| s.security).count();
            pending.cves = scan
                .sources
                .iter()
                .flat_map(|s| s.cves.iter().map(|c| c.id.as_str()))
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            pending.held_until =
                crate::cooldown::cooldown(p, scan, &report.archive, &mut first_seen)
                    .filter(|c| c.held)
                    .map(|c| c.eligible_at.to_rfc3339());
        }
        let branch = crate::repo::proposal_branch(&p.name, p.review.group.as_deref());
        let proposal = c.forge.find_open(&branch).await?.map(|pr| ProposalStatus {
            url: pr.url,
            title: pr.title,
            head: pr.head_sha,
        });
        let labels: Vec<String> = p.deploy.iter().filter_map(|t| t.label()).collect();
        let (targets, last_error) =
            from_log(&log, &repository, &p.name, &labels, locked.as_deref());
        rows.push(ImageStatus {
            image: p.name.clone(),
            group: p.review.group.clone(),
            locked,
            tests_passed: lock
                .as_ref()
                .and_then(|l| l.tests.as_ref())
                .map(|t| t.passed),
            pending,
            proposal,
            targets,
            last_error,
            jobs: job_statuses(state_dir, p),
        });
    }
    first_seen.save()?;
    Ok(rows)
}

/// Each of `policy`'s jobs as its summary says.
fn job_statuses(state_dir: &Path, policy: &crate::policy::Policy) -> Vec<JobStatus> {
    policy
        .jobs
        .iter()
        .map(|j| {
            let summary = crate::jobs::read_summary(state_dir, &policy.name, &j.name)
                .unwrap_or_else(|e| {
                    tracing::warn!("{e:#}");
                    None
                })
                .unwrap_or_default();
            let last = summary.last.as_ref();
            JobStatus {
                job: j.name.clone(),
                runs: summary.runs,
                failures: summary.failures,
                last_run: last.map(|r| r.started.clone()),
                last_ok: last.map(|r| r.ok()),
                last_reason: last.and_then(|r| r.reason.clone()),
            }
        })
        .collect()
}

/// The JOB FAILURES cell: per job its failures of its runs, and whether the last failed.
fn jobs_cell(jobs: &[JobStatus]) -> String {
    if jobs.is_empty() {
        return "-".to_string();
    }
    jobs.iter()
        .map(|j| match j.last_ok {
            None => format!("{} never run", j.job),
            Some(ok) => format!(
                "{} {} of {}{}",
                j.job,
                j.failures,
                j.runs,
                if ok { "" } else { " (last failed)" }
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The deployment log's entries, oldest first (unreadable lines skipped).
fn read_log(state_dir: &Path) -> Result<Vec<serde_json::Value>> {
    let path = state_dir.join(crate::rollout::DEPLOYMENT_LOG);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Each of `targets`' last successful deploy of `image` from `repository`, and the last error
/// after the last success.
fn from_log(
    log: &[serde_json::Value],
    repository: &str,
    image: &str,
    targets_of_policy: &[String],
    locked: Option<&str>,
) -> (Vec<TargetStatus>, Option<LoggedError>) {
    let mut targets: BTreeMap<String, TargetStatus> = BTreeMap::new();
    let mut last_error = None;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let ours = |e: &&serde_json::Value| {
        e["image"] == image && e["repository"] == repository && e.get("event").is_none()
    };
    for entry in log.iter().filter(ours) {
        let time = text(&entry["time"]);
        if let Some(why) = entry["refused"].as_str() {
            last_error = Some(LoggedError {
                time: time.clone(),
                message: format!("refused: {why}"),
            });
        }
        let of_policy = |t: &&serde_json::Value| {
            targets_of_policy
                .iter()
                .any(|l| t["target"].as_str() == Some(l.as_str()))
        };
        for t in entry["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(of_policy)
        {
            let result = t["result"].as_str().unwrap_or_default();
            if matches!(result, "deployed" | "unchanged") {
                let to = text(&t["to"]);
                targets.insert(
                    text(&t["target"]),
                    TargetStatus {
                        target: text(&t["target"]),
                        current: Some(to.as_str()) == locked,
                        image_ref: to,
                        time: time.clone(),
                    },
                );
                last_error = None;
            } else {
                last_error = Some(LoggedError {
                    time: time.clone(),
                    message: format!(
                        "{} {result}: {}",
                        text(&t["target"]),
                        t["reason"].as_str().unwrap_or("")
                    ),
                });
            }
        }
    }
    (targets.into_values().collect(), last_error)
}

/// `sha256:0123456789ab` / `repo@sha256:0123456789ab`: enough to tell images apart.
fn short(image_ref: &str) -> String {
    match image_ref.split_once("sha256:") {
        Some((head, hex)) => format!("{head}sha256:{}", &hex[..hex.len().min(12)]),
        None => image_ref.to_string(),
    }
}

/// The columns of the fleet table (terminal and dashboard issue).
pub const COLUMNS: [&str; 7] = [
    "IMAGE",
    "LOCKED",
    "PENDING",
    "PROPOSAL",
    "DEPLOYED",
    "JOB FAILURES",
    "LAST ERROR",
];

impl ImageStatus {
    /// This image's row of the fleet table, one cell per [`COLUMNS`].
    pub fn cells(&self) -> Vec<String> {
        let pending = match (&self.pending.held_until, self.pending.sources) {
            (_, 0) => "current".to_string(),
            (Some(until), n) => format!("{n} held until {until}"),
            (None, n) => format!(
                "{n} ({} security, {} CVEs)",
                self.pending.security, self.pending.cves
            ),
        };
        let deployed = if self.targets.is_empty() {
            "-".to_string()
        } else {
            self.targets
                .iter()
                .map(|t| {
                    format!(
                        "{} {}{}",
                        t.target,
                        short(&t.image_ref),
                        if t.current { "" } else { " (not the lock's)" }
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let locked = match (&self.locked, self.tests_passed) {
            (None, _) => "not built".to_string(),
            (Some(l), Some(false)) => format!("{} (tests failed)", short(l)),
            (Some(l), _) => short(l),
        };
        vec![
            self.image.clone(),
            locked,
            pending,
            self.proposal
                .as_ref()
                .map(|p| p.url.clone())
                .unwrap_or_else(|| "-".into()),
            deployed,
            jobs_cell(&self.jobs),
            self.last_error
                .as_ref()
                .map(|e| format!("{} {}", e.time, e.message))
                .unwrap_or_else(|| "-".into()),
        ]
    }
}

/// The human table.
fn render(rows: &[ImageStatus]) -> String {
    let mut table = vec![COLUMNS.iter().map(|c| c.to_string()).collect()];
    table.extend(rows.iter().map(ImageStatus::cells));
    crate::output::table(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fleet view shows each job's failures from the summaries the runs leave.
    #[test]
    fn job_failures_come_from_the_state_directory() {
        let state = tempfile::tempdir().unwrap();
        let policy = crate::policy::parse_policy(
            "db",
            Path::new("policies/db.yaml"),
            "template: t.hbs\nsuite: trixie\ndeploy:\n  - docker: {name: db}\njobs:\n  - name: dump\n    command: [x]\n  - name: vacuum\n    command: [y]\n",
        )
        .unwrap();
        let record = crate::jobs::JobRecord {
            image: "db".into(),
            job: "dump".into(),
            kind: "command".into(),
            target: "docker:db".into(),
            started: "2026-11-29T02:30:00.000Z".into(),
            duration_ms: 1200,
            waited_ms: 0,
            result: crate::jobs::JobResult::Failed,
            exit_code: Some(1),
            reason: Some("[\"x\"] exited with 1".into()),
            log: "x.log".into(),
            image_id: None,
            backup: None,
            pruned: vec![],
            restored: None,
        };
        let summary = crate::jobs::JobSummary {
            runs: 5,
            failures: 2,
            last: Some(record),
        };
        crate::state::write_atomic(
            &crate::jobs::job_dir(state.path(), "db", "dump").join(crate::jobs::SUMMARY_FILE),
            &serde_json::to_vec(&summary).unwrap(),
        )
        .unwrap();
        let jobs = job_statuses(state.path(), &policy);
        assert_eq!(jobs.len(), 2);
        assert_eq!((jobs[0].runs, jobs[0].failures), (5, 2));
        assert_eq!(jobs[0].last_ok, Some(false));
        assert_eq!(
            jobs[0].last_reason.as_deref(),
            Some("[\"x\"] exited with 1")
        );
        assert_eq!(jobs[1].last_run, None);
        assert_eq!(
            jobs_cell(&jobs),
            "dump 2 of 5 (last failed); vacuum never run"
        );
        assert_eq!(jobs_cell(&[]), "-");
    }
}
