//! `rebake scan`: installed packages with a newer version in the verified archive.

use super::*;

/// Exit status of `scan --fail-on-updates` when updates were found.
pub const EXIT_UPDATES_FOUND: u8 = 3;

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

/// One inventory per requested image, from its lock (an image without a lock yet is noted,
/// not an error).
pub fn inventories_from_repo(repo: &Path, images: &[String]) -> Result<Vec<Inventory>> {
    let policies = crate::repo::policies(repo, images)?;
    let mut out = Vec::new();
    for p in &policies {
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
                    "not built yet (no {}); run `{}`",
                    path.display(),
                    crate::output::build_hint(&p.name)
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
    let state_dir = ctx.state_dir(&config);
    let report = runtime()?.block_on(async {
        let fetcher = Fetcher::new(&state_dir, Progress::auto(false))?;
        let tracker = tracker_from(
            &config,
            req.security_tracker.as_deref(),
            &req.advisories,
            &state_dir,
        )
        .await?;
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
