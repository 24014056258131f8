//! `rebake scan`: installed packages with a newer version in the verified archive.

use super::*;

/// Exit status of `scan --fail-on-updates` when updates were found.
pub const EXIT_UPDATES_FOUND: u8 = 3;

#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub images: Vec<String>,
    pub sources: Option<PathBuf>,
    pub dpkg_status: Option<PathBuf>,
    /// Scan the containers the engine runs instead of the repository's locks.
    pub running: bool,
    pub suite: Option<String>,
    pub arch: String,
    pub security_tracker: Option<String>,
    pub advisories: Vec<String>,
    pub fail_on_updates: bool,
    pub format: ScanFormat,
}

/// How `rebake scan` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanFormat {
    Human,
    /// `docs/scan-report.schema.json`.
    Json,
    /// SARIF 2.1.0 ([`crate::sarif`]).
    Sarif,
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

/// The containers the engine runs, any image, each as an inventory: its dpkg status
/// (`/var/lib/dpkg/status`, and distroless-style `/var/lib/dpkg/status.d/*`) and Debian release
/// (`/etc/os-release`), read through the engine's archive API — nothing runs in the container.
/// The name says the container, its image and the policy it belongs to (its `dev.rebake.image`
/// or `dev.rebake.policy` label), if any.
pub async fn running_inventories(engine_host: &str) -> Result<Vec<Inventory>> {
    use bollard::query_parameters::ListContainersOptions;
    let docker = crate::engine::connect(engine_host).await?;
    let mut containers = docker
        .list_containers(Some(ListContainersOptions {
            all: false,
            ..Default::default()
        }))
        .await
        .context("cannot list the engine's containers")?;
    let name_of = |c: &bollard::models::ContainerSummary| {
        c.names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| c.id.clone().unwrap_or_default())
    };
    containers.sort_by_key(|c| name_of(c));
    let mut out = Vec::new();
    for c in &containers {
        let id = c.id.clone().unwrap_or_default();
        let labels = c.labels.clone().unwrap_or_default();
        let policy = labels
            .get(crate::deploy::IMAGE_LABEL)
            .or_else(|| labels.get("dev.rebake.policy"));
        let name = format!(
            "{} [image {}, {}]",
            name_of(c),
            c.image.as_deref().unwrap_or("?"),
            match policy {
                Some(p) => format!("policy {p}"),
                None => "no policy".to_string(),
            }
        );
        const STATUS: &str = "/var/lib/dpkg/status";
        const OS_RELEASE: &str = "/etc/os-release";
        let files = crate::build::read_container_files(
            &docker,
            &id,
            &[STATUS.to_string(), OS_RELEASE.to_string()],
        )
        .await?;
        let mut text = files
            .get(STATUS)
            .map(|b| String::from_utf8_lossy(b).to_string())
            .unwrap_or_default();
        for (_, part) in
            crate::build::read_container_dir(&docker, &id, "/var/lib/dpkg/status.d").await?
        {
            text.push_str("\n\n");
            text.push_str(&String::from_utf8_lossy(&part));
        }
        let release = files.get(OS_RELEASE).and_then(|b| {
            String::from_utf8_lossy(b).lines().find_map(|l| {
                l.strip_prefix("VERSION_CODENAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        });
        let packages = status::parse(&text)
            .map_err(|e| anyhow!("container {name}: {STATUS}:{}: {}", e.line, e.message))?;
        // The architecture most of its packages are built for (`all` aside).
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for p in packages.iter().filter(|p| p.arch != "all") {
            *counts.entry(p.arch.as_str()).or_default() += 1;
        }
        let arch = counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(a, _)| a.to_string())
            .unwrap_or_else(|| "amd64".to_string());
        let note = if packages.is_empty() {
            Some("no dpkg status: not a Debian-based container".to_string())
        } else if release.as_deref().is_none_or(str::is_empty) {
            Some(format!(
                "{OS_RELEASE} names no VERSION_CODENAME: the Debian release is unknown"
            ))
        } else {
            None
        };
        out.push(Inventory {
            name,
            release: release.unwrap_or_default(),
            arch,
            packages,
            include_non_security: true,
            note,
        });
    }
    Ok(out)
}

/// `rebake scan`.
pub fn scan(ctx: &Context, req: ScanRequest) -> Result<u8> {
    let config = ctx.load_config()?;
    let entries = load_sources(req.sources.as_deref(), &config)?;
    let from_policies = req.dpkg_status.is_none() && !req.running;
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
        None if req.running => runtime()?.block_on(running_inventories(&config.engine.host))?,
        None => inventories_from_repo(&ctx.repo, &req.images)?,
    };
    let state_dir = ctx.state_dir(&config);
    let mut report = runtime()?.block_on(async {
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
    if from_policies {
        // Each policy's cooldown (updates.min_age), from when the new versions were first seen.
        let policies = crate::repo::policies(&ctx.repo, &req.images)?;
        let mut first_seen = crate::cooldown::FirstSeen::load(&state_dir)?;
        for image in &mut report.images {
            if let Some(p) = policies.iter().find(|p| p.name == image.image) {
                image.cooldown =
                    crate::cooldown::cooldown(p, image, &report.archive, &mut first_seen);
            }
        }
        first_seen.save()?;
    }
    match req.format {
        ScanFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        ScanFormat::Human => print!("{}", plan::render_table(&report)),
        ScanFormat::Sarif => {
            // Findings point into the image's lock when the scan read the repository's locks.
            let sarif = crate::sarif::to_sarif(&report, |image| {
                if !from_policies {
                    return None;
                }
                let path = lock::path_for(&ctx.repo, &image.image);
                let text = std::fs::read_to_string(path).ok()?;
                Some(crate::sarif::Artifact::from_lock(
                    &format!("images/{}/rebake.lock", image.image),
                    &text,
                ))
            });
            println!("{}", serde_json::to_string_pretty(&sarif)?);
        }
    }
    if req.fail_on_updates && report.finding_count() > 0 {
        return Ok(EXIT_UPDATES_FOUND);
    }
    Ok(0)
}
