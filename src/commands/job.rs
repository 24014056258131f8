//! `rebake job run IMAGE JOB`: runs one of a policy's jobs now (the policies of `--repo`), as
//! `rebake serve` runs them on their schedule.

use super::*;

#[derive(Debug, Clone)]
pub struct JobRunRequest {
    pub image: String,
    pub job: String,
    pub format: OutputFormat,
}

/// The settings a job run takes from rebake.yaml.
pub fn job_settings(config: &Config, state_dir: &Path) -> crate::jobs::JobSettings {
    crate::jobs::JobSettings {
        state_dir: state_dir.to_path_buf(),
        engine_host: config.engine.host.clone(),
        backups: config.backups.clone(),
    }
}

/// `rebake job run IMAGE JOB`: exit 0 when the job succeeded, 1 when it failed.
pub fn job_run(ctx: &Context, req: JobRunRequest) -> Result<u8> {
    let config = ctx.load_config()?;
    let state_dir = ctx.state_dir(&config);
    let policy = crate::repo::policies(&ctx.repo, std::slice::from_ref(&req.image))?
        .into_iter()
        .find(|p| p.name == req.image)
        .ok_or_else(|| anyhow!("no policy for image {}", req.image))?;
    let settings = job_settings(&config, &state_dir);
    let record = runtime()?.block_on(crate::jobs::run_job(&settings, &policy, &req.job))?;
    match req.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&record)?),
        OutputFormat::Human => print!("{}", describe(&record)),
    }
    Ok(if record.ok() { 0 } else { 1 })
}

/// A run as the command prints it.
pub fn describe(r: &crate::jobs::JobRecord) -> String {
    let mut out = format!(
        "{}/{}: {} in {:.1}s",
        r.image,
        r.job,
        if r.ok() { "ok" } else { "failed" },
        r.duration_ms as f64 / 1000.0
    );
    if r.waited_ms > 0 {
        out.push_str(&format!(
            " (after waiting {:.1}s for {})",
            r.waited_ms as f64 / 1000.0,
            r.target
        ));
    }
    out.push('\n');
    if let Some(reason) = &r.reason {
        out.push_str(&format!("  reason: {reason}\n"));
    }
    if let Some(dump) = &r.backup {
        out.push_str(&format!(
            "  dump: {} ({} bytes, SHA256 {})\n",
            dump.path.display(),
            dump.bytes,
            dump.sha256
        ));
    }
    for pruned in &r.pruned {
        out.push_str(&format!("  removed: {}\n", pruned.display()));
    }
    if let Some(dump) = &r.restored {
        out.push_str(&format!(
            "  restored: {} (SHA256 {} checked)\n",
            dump.path.display(),
            dump.sha256
        ));
    }
    out.push_str(&format!("  log: {}\n", r.log.display()));
    out
}
