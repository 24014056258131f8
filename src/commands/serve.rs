//! `rebake serve`: the service, and the jobs it runs (a scan is a propose run; a merged
//! proposal is deployed at its merge commit).

use super::*;

/// The service's jobs: a scan is a propose run; a merged proposal is deployed at its merge
/// commit and the result commented on it.
pub struct ServiceJobs {
    pub ctx: Context,
    /// Where the policies of the default branch go after each scan, for the jobs' schedules
    /// (None: jobs are not scheduled).
    pub job_policies: Option<tokio::sync::watch::Sender<Vec<crate::policy::Policy>>>,
}

impl crate::server::Jobs for ServiceJobs {
    async fn scan(&self, scope: crate::server::ScanScope) -> Result<crate::server::ScanSummary> {
        use crate::propose::Action;
        let req = ProposeRequest {
            images: scope.names(),
            sources: None,
            no_push: false,
            format: OutputFormat::Human,
        };
        // One forge connection for the whole job (a GitHub App mints one token).
        let config = self.ctx.load_config()?;
        let entries = load_sources(None, &config)?;
        let state_dir = self.ctx.state_dir(&config);
        let c = connect_forge(&self.ctx, &config, &state_dir).await?;
        let results = propose_on(&self.ctx, &c, &config, &state_dir, &entries, &req).await?;
        // Polling fallback for a missed merge webhook: deploy what the default branch's locks
        // record now (targets already running it are left alone).
        let deploy = DeployRequest {
            images: scope.names(),
            commit: None,
            rollback: false,
            format: OutputFormat::Human,
        };
        for r in deploy_on(&c, &config, &state_dir, &deploy, None).await? {
            if !r.ok() {
                tracing::warn!(
                    "scheduled deploy of {} did not succeed: {:?}",
                    r.image,
                    r.refused
                );
            }
        }
        // Policies may have changed on the default branch: their schedules with them.
        if let Some(tx) = &self.job_policies {
            match export_default_branch(&c, false)
                .await
                .and_then(|scratch| crate::repo::policies(scratch.path(), &[]))
            {
                Ok(policies) => {
                    tx.send_if_modified(|current| {
                        let changed = *current != policies;
                        *current = policies;
                        changed
                    });
                }
                Err(e) => tracing::warn!("keeping the jobs' schedules: {e:#}"),
            }
        }
        let schedules = match scan_schedules_on(&c, &config).await {
            Ok(schedules) => Some(schedules),
            Err(e) => {
                tracing::warn!("keeping the scan schedules: {e:#}");
                None
            }
        };
        let running = match running_fixes(&config, &entries, &state_dir).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("cannot scan the running containers: {e:#}");
                None
            }
        };
        // The dashboard issue (GitHub, Gitea) shows the fleet after this run.
        let every_image = StatusRequest {
            images: Vec::new(),
            sources: None,
            format: OutputFormat::Human,
        };
        match super::dashboard_on(&self.ctx, &c, &config, &state_dir, &every_image).await {
            Ok(outcome) => tracing::info!("{}", outcome.describe()),
            Err(e) => tracing::warn!("cannot update the dashboard issue: {e:#}"),
        }
        let changed = |a: &Action| matches!(a, Action::Opened | Action::Updated | Action::Merged);
        Ok(crate::server::ScanSummary {
            running,
            schedules,
            findings: results
                .iter()
                .filter(|r| !matches!(r.action, Action::Current))
                .count() as u64,
            builds: results.iter().filter(|r| changed(&r.action)).count() as u64,
            // A review group's images share one proposal.
            proposals: results
                .iter()
                .filter(|r| changed(&r.action))
                .map(|r| crate::repo::proposal_branch(&r.image, r.group.as_deref()))
                .collect::<std::collections::BTreeSet<_>>()
                .len() as u64,
        })
    }

    async fn deploy(&self, merged: crate::server::MergedProposal) -> Result<()> {
        use crate::forge::Forge;
        let (images, group) = crate::repo::merged_selection(&merged.head_branch);
        let req = DeployRequest {
            images,
            commit: Some(merged.merge_commit.clone()),
            rollback: false,
            format: OutputFormat::Human,
        };
        let config = self.ctx.load_config()?;
        let state_dir = self.ctx.state_dir(&config);
        let c = connect_forge(&self.ctx, &config, &state_dir).await?;
        let results = deploy_on(&c, &config, &state_dir, &req, group).await?;
        for r in &results {
            // The deployment record on the merged proposal (plain git: the deployments log).
            if merged.number > 0 {
                if let Err(e) = c
                    .forge
                    .comment(merged.number, &crate::forge_text::deploy_comment(r))
                    .await
                {
                    tracing::warn!("cannot comment on proposal {}: {e}", merged.number);
                }
            }
        }
        if results.iter().all(|r| r.ok()) {
            Ok(())
        } else {
            anyhow::bail!("deploy of {} did not succeed", merged.head_branch)
        }
    }
}

/// What each container the engine runs lacks: its security updates in the verified archive and
/// the age of the oldest (from the first verified InRelease that carried it).
async fn running_fixes(
    config: &Config,
    entries: &[SourceEntry],
    state_dir: &Path,
) -> Result<Vec<crate::server::RunningFixes>> {
    let inventories = super::scan::running_inventories(&config.engine.host).await?;
    let fetcher = Fetcher::new(state_dir, Progress::auto(false))?;
    let report = plan::scan(&fetcher, entries, None, &inventories).await?;
    let mut first_seen = crate::cooldown::FirstSeen::load(state_dir)?;
    let now = chrono::Utc::now();
    let out = report
        .images
        .iter()
        .filter(|i| i.note.is_none())
        .map(|i| crate::server::RunningFixes {
            container: i.image.split(" [").next().unwrap_or(&i.image).to_string(),
            missing: i.sources.iter().filter(|s| s.security).count() as u64,
            oldest_age_seconds: crate::cooldown::fix_first_seen(
                i,
                &report.archive,
                &mut first_seen,
            )
            .map(|seen| (now - seen).num_seconds().max(0))
            .unwrap_or(0),
        })
        .collect();
    first_seen.save()?;
    Ok(out)
}

/// [`scan_schedules`] as the policies on the GitOps repository's default branch say (the
/// workspace as the last propose run fetched it).
pub async fn scan_schedules_at_default_branch(
    ctx: &Context,
) -> Result<Vec<crate::server::ScanSchedule>> {
    let config = ctx.load_config()?;
    let state_dir = ctx.state_dir(&config);
    let c = connect_forge(ctx, &config, &state_dir).await?;
    scan_schedules_on(&c, &config).await
}

/// [`scan_schedules_at_default_branch`] through an open forge connection.
async fn scan_schedules_on(
    c: &Connection,
    config: &Config,
) -> Result<Vec<crate::server::ScanSchedule>> {
    let scratch = export_default_branch(c, false).await?;
    scan_schedules(config, scratch.path())
}

/// What the service scans when: rebake.yaml's `schedule.scan` every image, and each policy's
/// own `schedule` its image (at start from `repo`'s policies; after each scan from the default
/// branch's).
pub fn scan_schedules(config: &Config, repo: &Path) -> Result<Vec<crate::server::ScanSchedule>> {
    use crate::server::{ScanSchedule, ScanScope};
    let mut schedules = vec![ScanSchedule {
        cron: config.schedule.scan.clone(),
        scope: ScanScope::All,
    }];
    for policy in crate::repo::policies(repo, &[])? {
        if let Some(cron) = policy.schedule {
            schedules.push(ScanSchedule {
                cron,
                scope: ScanScope::images([policy.name]),
            });
        }
    }
    Ok(schedules)
}

/// `rebake serve --listen ADDR`: webhooks, metrics, and scans on the configured schedule,
/// until SIGINT/SIGTERM.
pub fn serve(ctx: &Context, listen: &str) -> Result<u8> {
    let config = ctx.load_config()?;
    let state_dir = ctx.state_dir(&config);
    match crate::server::raise_open_files_limit() {
        Ok((old, new)) if new > old => {
            tracing::info!("open files limit raised from {old} to {new} (the hard limit)")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
    // Jobs follow the policies of --repo at start, then the default branch's after each scan.
    let (job_policies, job_policies_rx) =
        tokio::sync::watch::channel(crate::repo::policies(&ctx.repo, &[])?);
    let job_settings = super::job::job_settings(&config, &state_dir);
    runtime()?.block_on(async {
        let (stop_jobs, jobs_stopped) = tokio::sync::watch::channel(false);
        let jobs = tokio::spawn(crate::jobs::schedule::run_schedules(
            job_settings,
            job_policies_rx,
            crate::server::SystemClock,
            jobs_stopped,
        ));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        eprintln!(
            "rebake serve: listening on {} (POST /webhook/github, /webhook/gitea; GET /healthz, /metrics)",
            listener.local_addr()?
        );
        let shutdown = async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            // Running jobs finish; no new one starts.
            stop_jobs.send_replace(true);
        };
        crate::server::serve(
            listener,
            crate::server::ServeConfig {
                secret_env: config.webhook.secret_env.clone(),
                state_dir,
                forge: config.forge.as_ref().and_then(|f| match f.kind {
                    crate::config::ForgeKind::Github => Some(crate::server::WebhookForge::Github),
                    crate::config::ForgeKind::Gitea => Some(crate::server::WebhookForge::Gitea),
                    crate::config::ForgeKind::Git => None,
                }),
                schedules: scan_schedules(&config, &ctx.repo)?,
                deploys_from: config.forge.as_ref().and_then(|f| {
                    f.repository
                        .as_ref()
                        .map(|slug| crate::server::DeploysFrom {
                            repository: format!("{}/{}", slug.owner, slug.name),
                            branch: f.default_branch.clone(),
                        })
                }),
                limits: crate::server::ConnectionLimits::default(),
            },
            std::sync::Arc::new(ServiceJobs {
                ctx: ctx.clone(),
                job_policies: Some(job_policies),
            }),
            shutdown,
        )
        .await?;
        let _ = jobs.await;
        anyhow::Ok(())
    })?;
    Ok(0)
}
