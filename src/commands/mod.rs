//! Command entry points: each takes a plain request, does the work through the stage modules
//! and prints its result. `main.rs` only parses arguments and maps the exit code.

use crate::config::Config;
use crate::debian::archive::Fetcher;
use crate::debian::sources::{self, SourceEntry};
use crate::debian::status;
use crate::lock::{self, Lock};
use crate::output::Progress;
use crate::pipeline::BuildPlan;
use crate::plan::{self, Inventory};
use crate::security::{read_location, Tracker, ADVISORY_LIST_LIMIT, TRACKER_JSON_LIMIT};
use anyhow::{anyhow, bail, Context as _, Result};
use std::path::{Path, PathBuf};

pub mod build;
pub mod check;
pub mod connect;
pub mod deploy;
pub mod fleet;
pub mod job;
pub mod propose;
pub mod render;
pub mod run;
pub mod sbom;
pub mod scan;
pub mod serve;
pub mod verify;

pub use build::{build, BuildRequest};
pub use check::check;
pub use connect::{connect_forge, Connection};
use deploy::deploy_on;
pub use deploy::{deploy, deploy_async, DeployRequest};
pub use fleet::{dashboard, dashboard_on, status, StatusRequest};
pub use job::{job_run, JobRunRequest};
use propose::propose_on;
pub use propose::{propose, propose_async, ProposeRequest};
pub use render::{render, RenderRequest};
pub use run::{embedded_default_repo, run_once, RunRequest, EMBEDDED_DEFAULT};
pub use sbom::{sbom, SbomFormat, SbomRequest};
pub use scan::{inventories_from_repo, scan, ScanFormat, ScanRequest, EXIT_UPDATES_FOUND};
pub use serve::{scan_schedules, scan_schedules_at_default_branch, serve, ServiceJobs};
pub use verify::{verify, VerifyRequest};

/// A scratch copy of the default branch's tree as the workspace last fetched it (`fetch`: fetch
/// first).
pub(crate) async fn export_default_branch(
    c: &Connection,
    fetch: bool,
) -> Result<tempfile::TempDir> {
    let scratch = tempfile::tempdir()?;
    let to = scratch.path().to_path_buf();
    crate::git::with_workspace(&c.remote_url, &c.workspace_dir, &c.auth, move |ws| {
        if fetch {
            ws.fetch()?;
        }
        let branch = ws.default_branch()?;
        let head = ws
            .remote_head(&branch)?
            .ok_or_else(|| anyhow!("the remote has no branch {branch}"))?;
        crate::repo::export_tree(ws.repo(), head, &to)
    })
    .await?;
    Ok(scratch)
}

/// What every command knows: where the repository, config and state are.
#[derive(Debug, Clone)]
pub struct Context {
    pub repo: PathBuf,
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Human,
    Json,
}

impl Context {
    /// The config: `--config FILE`, else `<repo>/rebake.yaml` when present, else defaults.
    pub fn load_config(&self) -> Result<Config> {
        let path = match &self.config {
            Some(p) => Some(p.clone()),
            None => {
                Some(self.repo.join("rebake.yaml")).filter(|p| std::fs::symlink_metadata(p).is_ok())
            }
        };
        match path {
            Some(p) => crate::config::load(&p).map_err(crate::repo::diagnostics_error),
            None => Ok(Config::default()),
        }
    }

    pub fn state_dir(&self, config: &Config) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| config.state_dir.clone())
    }
}

/// The archive sources: `--sources`, else rebake.yaml's, else the host's apt sources.
pub fn load_sources(explicit: Option<&Path>, config: &Config) -> Result<Vec<SourceEntry>> {
    let mut entries = match explicit.or(config.sources.as_deref()) {
        Some(p) => sources::read_file(p)?,
        None => sources::read_host()?,
    };
    // rebake.yaml's keyring replaces the default for sources that name none.
    if let Some(k) = &config.keyring {
        let default = sources::SignedBy::Files(vec![sources::DEFAULT_KEYRING.into()]);
        for e in entries.iter_mut().filter(|e| e.signed_by == default) {
            e.signed_by = sources::SignedBy::Files(vec![k.clone()]);
        }
    }
    Ok(entries)
}

/// The Security Tracker for this run: the JSON the command line names (`json`), else
/// rebake.yaml's `security_tracker.json`, else Debian's public one
/// ([`crate::security::DEFAULT_TRACKER_URL`], or `REBAKE_SECURITY_TRACKER`), cached in the
/// state directory; `off` turns it off. The default tracker being unreachable is a warning (the
/// CVEs then come from the packages' changelogs); one that was asked for is an error. Advisory
/// lists: the command line's and rebake.yaml's.
pub async fn tracker_from(
    config: &Config,
    json: Option<&str>,
    extra_lists: &[String],
    state_dir: &Path,
) -> Result<Option<Tracker>> {
    let configured = config.security_tracker.as_ref();
    let asked = json
        .map(str::to_string)
        .or_else(|| configured.and_then(|t| t.json.clone()));
    let (location, is_default) = match asked {
        Some(j) if j == "off" => (None, false),
        Some(j) => (Some(j), false),
        None if configured.is_some_and(|t| t.json_off) => (None, false),
        None => match std::env::var("REBAKE_SECURITY_TRACKER") {
            Ok(v) if v == "off" => (None, true),
            Ok(v) if !v.is_empty() => (Some(v), true),
            _ => (Some(crate::security::DEFAULT_TRACKER_URL.to_string()), true),
        },
    };
    let mut lists = extra_lists.to_vec();
    if let Some(t) = configured {
        lists.extend(t.dsa_list.iter().cloned());
        lists.extend(t.dla_list.iter().cloned());
    }
    let json = match location {
        None => None,
        Some(loc) => {
            let got = if loc.starts_with("http://") || loc.starts_with("https://") {
                crate::security::fetch_tracker_json(&loc, &state_dir.join("tracker")).await
            } else {
                read_location(
                    &loc,
                    TRACKER_JSON_LIMIT,
                    "the limit for the Security Tracker JSON",
                )
                .await
                .map(|b| (b, None))
            };
            match got {
                Ok((bytes, stale)) => {
                    if let Some(e) = stale {
                        warn_once(&format!("{e:#}; using the tracker data cached earlier"));
                    }
                    Some((loc, bytes))
                }
                Err(e) if is_default => {
                    warn_once(&format!(
                        "the Debian Security Tracker is not reachable ({e:#}); CVEs are named \
                         from the packages' own changelogs only"
                    ));
                    None
                }
                Err(e) => return Err(e),
            }
        }
    };
    if json.is_none() && lists.is_empty() {
        return Ok(None);
    }
    let mut tracker = match json {
        Some((loc, bytes)) => {
            Tracker::from_json(&bytes).with_context(|| format!("security tracker {loc}"))?
        }
        None => Tracker::default(),
    };
    for loc in &lists {
        let bytes =
            read_location(loc, ADVISORY_LIST_LIMIT, "the limit for an advisory list").await?;
        tracker
            .add_advisory_list(&String::from_utf8_lossy(&bytes))
            .with_context(|| format!("advisory list {loc}"))?;
    }
    Ok(Some(tracker))
}

/// A warning on stderr, once per process (the service scans again and again).
fn warn_once(message: &str) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!("rebake: warning: {message}");
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The one build plan of every command that builds (`build`, `propose`, `run`, the service):
/// the same labels and settings whichever builds, so their images agree.
pub fn build_plan(repo: &Path, config: &Config, state_dir: &Path, no_push: bool) -> BuildPlan {
    BuildPlan {
        repo: repo.to_path_buf(),
        state_dir: state_dir.to_path_buf(),
        engine_host: config.engine.host.clone(),
        jobs: config.engine.jobs,
        // Images reach other engines through the registry: without a push, one engine.
        builders: if no_push {
            Vec::new()
        } else {
            config.engine.builders.clone()
        },
        registry: if no_push {
            None
        } else {
            config.registry.clone()
        },
        force: false,
        no_cache: false,
        source_url: config.forge.as_ref().map(|f| match &f.repository {
            Some(r) => format!("{}/{r}", f.url.trim_end_matches('/')),
            None => f.url.clone(),
        }),
        git: None,
        signing: if no_push {
            None
        } else {
            config.signing.clone()
        },
    }
}
