//! `rebake build`: render → base → build → test → publish → lock, per image.

use super::*;

#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub images: Vec<String>,
    pub sources: Option<PathBuf>,
    pub no_push: bool,
    pub force: bool,
    pub no_cache: bool,
    pub format: OutputFormat,
}

/// `rebake build`: render → base → build → test → publish → lock, per image. A failure at
/// any stage leaves that image's Dockerfile and lock as they were.
pub fn build(ctx: &Context, req: BuildRequest) -> Result<u8> {
    let config = ctx.load_config()?;
    let entries = load_sources(req.sources.as_deref(), &config)?;
    let policies = crate::repo::policies(&ctx.repo, &req.images)?;
    let state_dir = ctx.state_dir(&config);
    let mut plan = build_plan(&ctx.repo, &config, &state_dir, req.no_push);
    plan.force = req.force;
    plan.no_cache = req.no_cache;
    // The checkout's HEAD is what the images are built from.
    plan.git = git2::Repository::discover(&ctx.repo).ok().and_then(|r| {
        let head = r.head().ok()?.peel_to_commit().ok()?.id();
        Some((r.path().to_path_buf(), head))
    });
    let results = runtime()?.block_on(crate::pipeline::build_all(
        &plan,
        &entries,
        &policies,
        Progress::auto(false),
    ))?;
    match req.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        OutputFormat::Human => {
            let mut rows = vec![vec![
                "IMAGE".to_string(),
                "RESULT".into(),
                "DIGEST".into(),
                "TIME".into(),
            ]];
            for r in &results {
                rows.push(vec![
                    r.image.clone(),
                    r.result.clone(),
                    r.digest
                        .clone()
                        .or_else(|| r.image_id.clone())
                        .unwrap_or_else(|| "-".into()),
                    format!("{:.1}s", r.duration_ms as f64 / 1000.0),
                ]);
            }
            print!("{}", crate::output::table(&rows));
            for r in results.iter().filter(|r| r.error.is_some()) {
                eprintln!("{}: {}", r.image, r.error.as_deref().unwrap_or_default());
            }
        }
    }
    Ok(if results.iter().any(|r| r.result == "failed") {
        1
    } else {
        0
    })
}
