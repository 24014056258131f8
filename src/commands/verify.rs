//! `rebake verify IMAGE [--rebuild]`: checks an image against its lock in this checkout — what
//! its deploy targets run, that the registry holds its digest, and with `--rebuild` that a
//! build of this commit gives the lock's image id again (images are reproducible); with a
//! signing key configured, its signature and attestations (the provenance describing the lock).

use super::*;

#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub image: String,
    pub sources: Option<PathBuf>,
    pub rebuild: bool,
}

/// Exit status when a deploy target runs another image than the lock's (or none).
pub const EXIT_NOT_RUNNING_THE_LOCK: u8 = 4;
/// Exit status when the configured registry does not have the lock's digest.
pub const EXIT_NOT_IN_REGISTRY: u8 = 5;
/// Exit status when the rebuild gives another image id.
pub const EXIT_REBUILD_DIFFERS: u8 = 6;
/// Exit status when the signature or an attestation is missing, does not verify, or the
/// provenance does not describe the lock.
pub const EXIT_SIGNATURE: u8 = 7;

/// `rebake verify`: one line per check; the exit status names the first check that failed.
pub fn verify(ctx: &Context, req: VerifyRequest) -> Result<u8> {
    runtime()?.block_on(verify_async(ctx, &req))
}

async fn verify_async(ctx: &Context, req: &VerifyRequest) -> Result<u8> {
    let config = ctx.load_config()?;
    let state_dir = ctx.state_dir(&config);
    let policy = crate::repo::policies(&ctx.repo, std::slice::from_ref(&req.image))?
        .into_iter()
        .find(|p| p.name == req.image)
        .ok_or_else(|| anyhow!("no policy for image {}", req.image))?;
    let lock_path = lock::path_for(&ctx.repo, &policy.name);
    let lock = Lock::read(&lock_path)?;
    let image = lock
        .image
        .as_ref()
        .ok_or_else(|| anyhow!("{} records no image yet", lock_path.display()))?;
    let locked = image.digest.clone().unwrap_or_else(|| image.id.clone());
    println!("lock:      {} {locked}", lock_path.display());
    let mut status = 0u8;
    let mut fail = |code: u8| {
        if status == 0 {
            status = code;
        }
    };

    let docker = crate::engine::connect(&config.engine.host).await?;
    for target in &policy.deploy {
        let crate::policy::DeployTarget::Docker(d) = target else {
            continue;
        };
        let engine = match &d.host {
            Some(h) => crate::engine::connect(h).await?,
            None => docker.clone(),
        };
        let label = target.label().unwrap_or_default();
        let runs = engine
            .inspect_container(&d.name, None)
            .await
            .ok()
            .and_then(|c| c.config)
            .and_then(|c| c.labels)
            .and_then(|l| l.get(crate::deploy::IMAGE_LABEL).cloned());
        match runs {
            Some(r) if r == locked => println!("running:   {label} runs the lock's image"),
            Some(r) => {
                println!("running:   FAILED: {label} runs {r}, not the lock's {locked}");
                fail(EXIT_NOT_RUNNING_THE_LOCK);
            }
            None => {
                println!("running:   FAILED: {label} runs no image deployed by rebake");
                fail(EXIT_NOT_RUNNING_THE_LOCK);
            }
        }
    }

    match (&image.digest, &config.registry) {
        (Some(digest), Some(registry)) => {
            if crate::publish::registry_has(registry, digest).await? {
                println!("registry:  {} has {digest}", registry.url);
            } else {
                println!("registry:  FAILED: {} does not have {digest}", registry.url);
                fail(EXIT_NOT_IN_REGISTRY);
            }
        }
        (Some(digest), None) => {
            println!("registry:  not checked: rebake.yaml names no registry for {digest}")
        }
        (None, _) => println!("registry:  not checked: the lock records no digest (not pushed)"),
    }
    match (&config.signing, &image.digest, &config.registry) {
        (None, _, _) => println!(
            "signature: not checked: rebake.yaml configures no key (signing.public_key or \
             signing.key_file)"
        ),
        (Some(_), None, _) | (Some(_), _, None) => {
            println!("signature: not checked: no registry digest to check")
        }
        (Some(signing), Some(digest), Some(registry)) => {
            use crate::attest;
            let verifier = crate::signing::Verifier::from_config(signing)?;
            match attest::check_signature(registry, &verifier, digest).await? {
                Ok(()) => println!("signature: {digest} is signed with the configured key"),
                Err(why) => {
                    println!("signature: FAILED: {why}");
                    fail(EXIT_SIGNATURE);
                }
            }
            let found = attest::fetch_attestations(registry, &verifier, digest).await?;
            for (kind, (_, envelope)) in &found.verified {
                println!("attested:  {kind} ({envelope})");
            }
            for failed in &found.failed {
                println!("attested:  FAILED: {failed}");
                fail(EXIT_SIGNATURE);
            }
            match attest::sboms_match(&found, &lock) {
                Ok(()) => println!("sbom:      the SPDX and CycloneDX attestations are the lock's"),
                Err(why) => {
                    println!("sbom:      FAILED: {why}");
                    fail(EXIT_SIGNATURE);
                }
            }
            match found.verified.get(attest::PROVENANCE) {
                None => {
                    println!("provenance: FAILED: no signed SLSA provenance for {digest}");
                    fail(EXIT_SIGNATURE);
                }
                Some((statement, _)) => match attest::provenance_matches(statement, &lock) {
                    Ok(()) => println!(
                        "provenance: describes the lock (subject, InRelease files, base, \
                         packages), built from commit {}",
                        attest::provenance_commit(statement).unwrap_or_else(|| "?".into())
                    ),
                    Err(why) => {
                        println!("provenance: FAILED: {why}");
                        fail(EXIT_SIGNATURE);
                    }
                },
            }
        }
    }

    if req.rebuild {
        let rebuilt = rebuild(ctx, &config, &state_dir, req, &policy).await?;
        if rebuilt.image.as_ref().map(|i| &i.id) == Some(&image.id) {
            println!("rebuild:   same image id {}", image.id);
        } else {
            let differ = lock
                .packages
                .iter()
                .filter(|p| !rebuilt.packages.contains(p))
                .count();
            println!(
                "rebuild:   FAILED: this commit builds {}, not the lock's {}{}",
                rebuilt
                    .image
                    .as_ref()
                    .map(|i| i.id.as_str())
                    .unwrap_or("nothing"),
                image.id,
                if differ > 0 {
                    format!(
                        " ({differ} packages differ: the archive moved since the lock was made)"
                    )
                } else {
                    String::new()
                }
            );
            fail(EXIT_REBUILD_DIFFERS);
        }
    }
    Ok(status)
}

/// Builds `policy` from this checkout's committed tree in a scratch copy (nothing pushed,
/// nothing here changed) and returns the lock that build wrote.
async fn rebuild(
    ctx: &Context,
    config: &Config,
    state_dir: &Path,
    req: &VerifyRequest,
    policy: &crate::policy::Policy,
) -> Result<Lock> {
    let repo = git2::Repository::discover(&ctx.repo)
        .context("--rebuild builds the checkout's commit: run it in a git checkout")?;
    let head = repo.head()?.peel_to_commit()?.id();
    let scratch = tempfile::tempdir()?;
    crate::repo::export_tree(&repo, head, scratch.path())?;
    let entries = load_sources(req.sources.as_deref(), config)?;
    let mut plan = build_plan(scratch.path(), config, state_dir, true);
    plan.force = true;
    plan.git = Some((repo.path().to_path_buf(), head));
    let results = crate::pipeline::build_all(
        &plan,
        &entries,
        std::slice::from_ref(policy),
        Progress::auto(false),
    )
    .await?;
    if let Some(e) = results.iter().find_map(|r| r.error.clone()) {
        bail!("the rebuild failed: {e}");
    }
    Lock::read(&lock::path_for(scratch.path(), &policy.name))
}
