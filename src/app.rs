//! Command entry points: each takes a plain request, does the work through the stage modules
//! and prints its result. `main.rs` only parses arguments and maps the exit code.

use crate::config::Config;
use crate::debian::archive::Fetcher;
use crate::debian::sources::{self, SourceEntry};
use crate::debian::status;
use crate::lock::{self, Lock};
use crate::output::Progress;
use crate::plan::{self, Inventory};
use crate::security::{read_location, Tracker};
use anyhow::{anyhow, bail, Context as _, Result};
use std::path::{Path, PathBuf};

/// Exit status of `scan --fail-on-updates` when updates were found.
pub const EXIT_UPDATES_FOUND: u8 = 3;

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
            None => Some(self.repo.join("rebake.yaml")).filter(|p| p.exists()),
        };
        match path {
            Some(p) => crate::config::load(&p).map_err(|diags| {
                anyhow!(
                    "{}",
                    diags
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            }),
            None => Ok(Config::default()),
        }
    }

    pub fn state_dir(&self, config: &Config) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| config.state_dir.clone())
    }
}

/// `rebake check`: prints every problem found; exit 1 when there is any.
pub fn check(ctx: &Context) -> Result<u8> {
    let report = crate::check::check_repo(&ctx.repo, ctx.config.as_deref());
    for d in &report.diagnostics {
        eprintln!("{d}");
    }
    if report.is_ok() {
        println!("{}", report.summary());
        Ok(0)
    } else {
        eprintln!("{} error(s)", report.diagnostics.len());
        Ok(1)
    }
}

#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub images: Vec<String>,
    pub sources: Option<PathBuf>,
    pub dpkg_status: Option<PathBuf>,
    pub suite: Option<String>,
    pub arch: String,
    pub security_tracker: Option<String>,
    pub advisories: Vec<String>,
    pub fail_on_updates: bool,
    pub format: OutputFormat,
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

/// One inventory per requested image, from its lock (an image without a lock yet is noted,
/// not an error).
pub fn inventories_from_repo(repo: &Path, images: &[String]) -> Result<Vec<Inventory>> {
    let policies = crate::policy::load_policies(repo).map_err(|diags| {
        anyhow!(
            "{}",
            diags
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    for name in images {
        if !policies.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "no policy for image {name:?} in {} (known: {})",
                repo.join("policies").display(),
                known.join(", ")
            );
        }
    }
    let mut out = Vec::new();
    for p in policies
        .iter()
        .filter(|p| images.is_empty() || images.contains(&p.name))
    {
        let path = lock::path_for(repo, &p.name);
        let include_non_security = p.updates.point_release;
        if !path.exists() {
            out.push(Inventory {
                name: p.name.clone(),
                release: p.suite.clone(),
                arch: p.architecture.clone(),
                packages: Vec::new(),
                include_non_security,
                note: Some(format!(
                    "not built yet (no {}); run `rebake build {}`",
                    path.display(),
                    p.name
                )),
            });
            continue;
        }
        let lock = Lock::read(&path)?;
        out.push(Inventory {
            name: p.name.clone(),
            release: lock.suite,
            arch: lock.architecture,
            packages: lock.packages,
            include_non_security,
            note: None,
        });
    }
    Ok(out)
}

/// Loads the tracker JSON and advisory lists, when any are configured.
pub async fn load_tracker(json: Option<&str>, lists: &[String]) -> Result<Option<Tracker>> {
    if json.is_none() && lists.is_empty() {
        return Ok(None);
    }
    let mut tracker = match json {
        Some(loc) => Tracker::from_json(&read_location(loc).await?)
            .with_context(|| format!("security tracker {loc}"))?,
        None => Tracker::default(),
    };
    for loc in lists {
        let bytes = read_location(loc).await?;
        tracker
            .add_advisory_list(&String::from_utf8_lossy(&bytes))
            .with_context(|| format!("advisory list {loc}"))?;
    }
    Ok(Some(tracker))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `rebake scan`.
pub fn scan(ctx: &Context, req: ScanRequest) -> Result<u8> {
    let config = ctx.load_config()?;
    let entries = load_sources(req.sources.as_deref(), &config)?;
    let inventories = match &req.dpkg_status {
        Some(path) => {
            let release = req.suite.clone().ok_or_else(|| {
                anyhow!("--dpkg-status needs --suite (the Debian release, e.g. trixie)")
            })?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let packages = status::parse(&text)
                .map_err(|e| anyhow!("{}:{}: {}", path.display(), e.line, e.message))?;
            vec![Inventory {
                name: path.display().to_string(),
                release,
                arch: req.arch.clone(),
                packages,
                include_non_security: true,
                note: None,
            }]
        }
        None => inventories_from_repo(&ctx.repo, &req.images)?,
    };
    let tracker_json = req.security_tracker.clone().or_else(|| {
        config
            .security_tracker
            .as_ref()
            .and_then(|t| t.json.clone())
    });
    let mut lists = req.advisories.clone();
    if let Some(t) = &config.security_tracker {
        lists.extend(t.dsa_list.iter().cloned());
        lists.extend(t.dla_list.iter().cloned());
    }
    let state_dir = ctx.state_dir(&config);
    let report = runtime()?.block_on(async {
        let fetcher = Fetcher::new(&state_dir, Progress::auto(false))?;
        let tracker = load_tracker(tracker_json.as_deref(), &lists).await?;
        plan::scan(&fetcher, &entries, tracker.as_ref(), &inventories).await
    })?;
    match req.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Human => print!("{}", plan::render_table(&report)),
    }
    if req.fail_on_updates && report.finding_count() > 0 {
        return Ok(EXIT_UPDATES_FOUND);
    }
    Ok(0)
}
