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
    let results = runtime()?.block_on(crate::pipeline::build_all(
        &crate::pipeline::BuildPlan {
            repo: ctx.repo.clone(),
            state_dir,
            engine_host: config.engine.host.clone(),
            registry: if req.no_push {
                None
            } else {
                config.registry.clone()
            },
            force: req.force,
            no_cache: req.no_cache,
            source_url: config.forge.as_ref().map(|f| match &f.repository {
                Some(r) => format!("{}/{r}", f.url.trim_end_matches('/')),
                None => f.url.clone(),
            }),
        },
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
