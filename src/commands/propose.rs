//! `rebake propose`: scan, build and one proposal per image (or review group) with updates.

use super::*;

#[derive(Debug, Clone)]
pub struct ProposeRequest {
    pub images: Vec<String>,
    pub sources: Option<PathBuf>,
    pub no_push: bool,
    pub format: OutputFormat,
}

/// The propose run itself, for `propose`, `run --once` and the service.
pub async fn propose_async(
    ctx: &Context,
    req: &ProposeRequest,
) -> Result<Vec<crate::propose::ProposeResult>> {
    let config = ctx.load_config()?;
    let entries = load_sources(req.sources.as_deref(), &config)?;
    let state_dir = ctx.state_dir(&config);
    let c = connect_forge(ctx, &config, &state_dir).await?;
    propose_on(ctx, &c, &config, &state_dir, &entries, req).await
}

/// The propose run through an open forge connection (the service reuses it to deploy and to
/// read the schedules).
pub(super) async fn propose_on(
    ctx: &Context,
    c: &Connection,
    config: &Config,
    state_dir: &Path,
    entries: &[crate::debian::sources::SourceEntry],
    req: &ProposeRequest,
) -> Result<Vec<crate::propose::ProposeResult>> {
    let tracker = tracker_from(config, None, &[], state_dir)
        .await?
        .map(std::sync::Arc::new);
    let run = crate::propose::ProposeRun {
        remote_url: c.remote_url.clone(),
        auth: c.auth.clone(),
        identity: crate::git::Identity::new(&config.git.author_name, &config.git.author_email),
        workspace_dir: c.workspace_dir.clone(),
        plan: build_plan(&ctx.repo, config, state_dir, req.no_push),
        tracker,
    };
    crate::propose::propose_all(&run, &c.forge, entries, &req.images, Progress::auto(false)).await
}

/// `rebake propose`: scan → build → one proposal per image with updates.
pub fn propose(ctx: &Context, req: ProposeRequest) -> Result<u8> {
    let results = runtime()?.block_on(propose_async(ctx, &req))?;
    match req.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        OutputFormat::Human => {
            let mut rows = vec![vec![
                "IMAGE".to_string(),
                "ACTION".into(),
                "PROPOSAL".into(),
            ]];
            for r in &results {
                rows.push(vec![
                    r.image.clone(),
                    serde_json::to_value(&r.action)?
                        .as_str()
                        .unwrap_or("?")
                        .to_string(),
                    r.url
                        .clone()
                        .or_else(|| r.title.clone())
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            print!("{}", crate::output::table(&rows));
            for r in results.iter().filter(|r| r.detail.is_some()) {
                eprintln!("{}: {}", r.image, r.detail.as_deref().unwrap_or_default());
            }
        }
    }
    Ok(
        if results
            .iter()
            .any(|r| r.action == crate::propose::Action::Failed)
        {
            1
        } else {
            0
        },
    )
}
