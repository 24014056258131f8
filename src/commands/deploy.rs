//! `rebake deploy`: the tested digests of the default branch's locks to their targets.

use super::*;

#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub images: Vec<String>,
    pub commit: Option<String>,
    /// `commit` is a deliberate rollback (`--rollback-to SHA`): it may be older than what was
    /// last deployed.
    pub rollback: bool,
    pub format: OutputFormat,
}

/// `rebake deploy [--commit SHA]`, `rebake deploy IMAGE... --rollback-to SHA`.
pub fn deploy(ctx: &Context, req: DeployRequest) -> Result<u8> {
    let results = runtime()?.block_on(deploy_async(ctx, &req))?;
    print_rollouts(&results, req.format)?;
    Ok(if results.iter().all(|r| r.ok()) { 0 } else { 1 })
}

/// The deploy run itself, for `deploy`, `run --once` and the service.
pub async fn deploy_async(
    ctx: &Context,
    req: &DeployRequest,
) -> Result<Vec<crate::rollout::ImageRollout>> {
    let config = ctx.load_config()?;
    let state_dir = ctx.state_dir(&config);
    let c = connect_forge(ctx, &config, &state_dir).await?;
    deploy_on(&c, &config, &state_dir, req, None).await
}

/// Deploys through an open forge connection (the service reuses it to comment); `group`: only
/// the images of that review group.
pub(super) async fn deploy_on(
    c: &Connection,
    config: &Config,
    state_dir: &Path,
    req: &DeployRequest,
    group: Option<String>,
) -> Result<Vec<crate::rollout::ImageRollout>> {
    let run = crate::rollout::DeployRun {
        remote_url: c.remote_url.clone(),
        auth: c.auth.clone(),
        workspace_dir: c.workspace_dir.clone(),
        state_dir: state_dir.to_path_buf(),
        engine_host: config.engine.host.clone(),
        registry: config.registry.clone(),
        commit: req.commit.clone(),
        group,
        rollback: req.rollback,
        verify: match (&config.signing, config.deploy.verify_required) {
            (Some(signing), true) => Some(crate::signing::Verifier::from_config(signing)?),
            _ => None,
        },
        backups: config.backups.clone(),
    };
    crate::rollout::deploy_commit(&run, &c.forge, &req.images).await
}

fn print_rollouts(results: &[crate::rollout::ImageRollout], format: OutputFormat) -> Result<()> {
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(results)?);
        return Ok(());
    }
    let mut rows = vec![vec![
        "IMAGE".to_string(),
        "TARGET".into(),
        "RESULT".into(),
        "IMAGE REF".into(),
    ]];
    for r in results {
        if let Some(note) = &r.note {
            rows.push(vec![
                r.image.clone(),
                "-".into(),
                "nothing yet".into(),
                "-".into(),
            ]);
            eprintln!("{}: {note}", r.image);
        }
        if let Some(why) = &r.refused {
            rows.push(vec![
                r.image.clone(),
                "-".into(),
                "refused".into(),
                r.image_ref.clone().unwrap_or_else(|| "-".into()),
            ]);
            eprintln!("{}: refused: {why}", r.image);
        }
        if r.rollback && r.refused.is_none() {
            eprintln!("{}: rollback to commit {}", r.image, r.commit);
        }
        for t in &r.targets {
            rows.push(vec![
                r.image.clone(),
                t.target.clone(),
                t.result.word().into(),
                t.to.clone(),
            ]);
            if let crate::deploy::DeployResult::RolledBack { reason }
            | crate::deploy::DeployResult::Failed { reason } = &t.result
            {
                eprintln!("{} on {}: {reason}", r.image, t.target);
            }
        }
    }
    print!("{}", crate::output::table(&rows));
    Ok(())
}
