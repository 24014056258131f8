//! `rebake deploy`: roll out, for each image, exactly the digest its lock records at a commit of
//! the default branch — and refuse, deploying nothing for that image, a digest whose lock does
//! not record passing tests, a digest outside the configured registry or that the registry (or,
//! for an image id, the engine) does not have, a lock that is not byte-identical to the lock at
//! its proposal head (a merge commit that edits the lock), or whose proposal's `rebake/test`
//! status is not success; with `deploy.verify: required`, a digest whose cosign signature or
//! attestations do not verify, or whose signed provenance does not describe the lock or names a
//! commit the deploy commit does not contain. Every deployment is recorded.

use crate::config::RegistryConfig;
use crate::deploy::{self, DeployOutcome, DeployResult};
use crate::forge::{Forge, StatusState};
use crate::git::{Auth, Workspace};
use crate::lock::{self, Lock};
use crate::policy::{DeployTarget, Policy};
use anyhow::{anyhow, bail, Context, Result};
use git2::Oid;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Everything one deploy run needs.
pub struct DeployRun {
    pub remote_url: String,
    pub auth: Auth,
    pub workspace_dir: PathBuf,
    pub state_dir: PathBuf,
    pub engine_host: String,
    pub registry: Option<RegistryConfig>,
    /// Deploy the locks at this commit of the default branch (default: its head).
    pub commit: Option<String>,
    /// Only the images of this review group (a merged group proposal), as the policies at the
    /// commit say.
    pub group: Option<String>,
    /// `commit` may be older than the commit last deployed for an image (`rebake deploy IMAGE
    /// --rollback-to SHA`): a deliberate rollback, recorded as one. Without it such a commit is
    /// refused.
    pub rollback: bool,
    /// `deploy.verify: required`: the key an image's signature and attestations must verify
    /// with. None: not checked.
    pub verify: Option<crate::signing::Verifier>,
    /// rebake.yaml's backup stores: a backup job with `pre_deploy: true` whose store is here
    /// runs before its target is deployed, instead of the target's `pre_deploy` command.
    pub backups: std::collections::BTreeMap<String, crate::config::BackupStore>,
}

/// `<state>/deployed-commits.json`: for each repository (its remote URL without credentials)
/// and image, the commit of the default branch whose lock was last deployed (every target
/// deployed or unchanged).
pub const DEPLOYED_COMMITS_FILE: &str = "deployed-commits.json";

/// Repository → image → commit.
type DeployedCommits =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

fn read_deployed(state_dir: &Path) -> Result<DeployedCommits> {
    let path = state_dir.join(DEPLOYED_COMMITS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a JSON object of repository → image → commit; fix or remove it (the \
                 check that refuses older commits starts afresh without it)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn record_deployed(state_dir: &Path, repository: &str, image: &str, commit: &str) -> Result<()> {
    let mut deployed = read_deployed(state_dir)?;
    deployed
        .entry(repository.to_string())
        .or_default()
        .insert(image.to_string(), commit.to_string());
    crate::state::write_atomic(
        &state_dir.join(DEPLOYED_COMMITS_FILE),
        &serde_json::to_vec_pretty(&deployed)?,
    )
}

/// How a deploy commit stands to the commit last deployed for an image.
enum Order {
    /// Nothing deployed yet, the same commit, or a commit containing it.
    Newer,
    /// An older commit whose lock for the image is the one last deployed: nothing goes back.
    OlderSameLock,
    /// An older commit (or one not containing the last deployed): going back. The reason.
    Back(String),
}

fn order(ws: &Workspace, commit: Oid, last: Option<&str>, image: &str) -> Result<Order> {
    let Some(last) = last else {
        return Ok(Order::Newer);
    };
    let last_oid = Oid::from_str(last)
        .ok()
        .filter(|o| ws.repo().find_commit(*o).is_ok());
    let Some(last_oid) = last_oid else {
        return Ok(Order::Back(format!(
            "the commit last deployed for {image}, {last}, is not in the repository any more \
             (history rewritten?), so {} cannot be shown to be newer",
            short(commit)
        )));
    };
    if ws.is_ancestor(last_oid, commit)? {
        return Ok(Order::Newer);
    }
    let path = lock::path_for(Path::new(""), image);
    if ws.is_ancestor(commit, last_oid)? {
        if ws.read_file(commit, &path)? == ws.read_file(last_oid, &path)? {
            return Ok(Order::OlderSameLock);
        }
        return Ok(Order::Back(format!(
            "commit {} is older than {}, the commit last deployed for {image}",
            short(commit),
            short(last_oid)
        )));
    }
    Ok(Order::Back(format!(
        "commit {} does not contain {}, the commit last deployed for {image}",
        short(commit),
        short(last_oid)
    )))
}

/// What happened to one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRollout {
    pub image: String,
    pub commit: String,
    /// `repo@sha256:…` or the image id.
    pub image_ref: Option<String>,
    /// Why nothing was deployed for this image.
    pub refused: Option<String>,
    /// Nothing to deploy yet (no lock at this commit): not a failure.
    pub note: Option<String>,
    pub targets: Vec<DeployOutcome>,
    /// A deliberate rollback to an older commit (`--rollback-to`).
    pub rollback: bool,
}

impl ImageRollout {
    pub fn ok(&self) -> bool {
        self.refused.is_none()
            && self
                .targets
                .iter()
                .all(|t| matches!(t.result, DeployResult::Deployed | DeployResult::Unchanged))
    }
}

/// Blocking git work on the run's workspace.
async fn with_workspace<T: Send + 'static>(
    run: &DeployRun,
    f: impl FnOnce(&Workspace) -> Result<T> + Send + 'static,
) -> Result<T> {
    crate::git::with_workspace(&run.remote_url, &run.workspace_dir, &run.auth, f).await
}

/// The proposal head that brought `image`'s current lock into `commit`: walking the first-parent
/// history, the first commit whose lock differs from its parent's; for a merge, the merged
/// branch's head (its second parent).
/// Also the time of the default branch's commit that brought it (the merge, or the
/// fast-forwarded head itself).
fn proposal_head(ws: &Workspace, commit: Oid, image: &str) -> Result<Option<(Oid, i64)>> {
    let path = lock::path_for(Path::new(""), image);
    let repo = ws.repo();
    let mut current = repo.find_commit(commit)?;
    let lock_at = |c: &git2::Commit| ws.read_file(c.id(), &path);
    let ours = lock_at(&current)?;
    loop {
        let at = current.time().seconds();
        let Ok(parent) = current.parent(0) else {
            return Ok(Some((current.id(), at)));
        };
        if lock_at(&parent)? != ours {
            return Ok(Some(match current.parent_id(1) {
                Ok(merged) => (merged, at),
                Err(_) => (current.id(), at),
            }));
        }
        current = parent;
    }
}

/// The deployment log, `<state>/deployments.log`: one JSON object per line.
pub const DEPLOYMENT_LOG: &str = "deployments.log";

/// Appends `entry` to the deployment log.
pub fn append_to_log(state_dir: &Path, entry: &serde_json::Value) -> Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(state_dir)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join(DEPLOYMENT_LOG))?;
    writeln!(f, "{entry}")?;
    Ok(())
}

/// Appends one JSON line per image to the deployment log: the record kept whatever the forge.
fn record(state_dir: &Path, repository: &str, r: &ImageRollout) -> Result<()> {
    let line = serde_json::json!({
        "time": chrono::Utc::now().to_rfc3339(),
        "repository": repository,
        "image": r.image,
        "commit": r.commit,
        "image_ref": r.image_ref,
        "rollback": r.rollback,
        "refused": r.refused,
        "targets": r.targets.iter().map(|t| serde_json::json!({
            "target": t.target, "from": t.from, "to": t.to, "result": t.result.word(),
            "reason": match &t.result {
                DeployResult::RolledBack { reason } | DeployResult::Failed { reason } => Some(reason.clone()),
                _ => None,
            },
            "duration_ms": t.duration.as_millis() as u64,
        })).collect::<Vec<_>>(),
    });
    append_to_log(state_dir, &line)
}

/// Where a lock at a deploy commit came from: the proposal head that brought it, and whether
/// the lock at that head is byte-identical to the one at the deploy commit.
struct Provenance {
    /// The commit of the default branch being deployed.
    commit: Oid,
    /// The proposal head that brought the lock ([`proposal_head`]).
    head: Option<Oid>,
    /// When the commit that brought it onto the default branch was made.
    brought_at: Option<i64>,
    /// The lock at `head` has exactly the bytes of the lock at `commit`.
    same_lock: bool,
}

/// [`proposal_head`] of `image` at `commit`, and whether its lock is the one at `commit`.
fn provenance(ws: &Workspace, commit: Oid, image: &str) -> Result<Provenance> {
    let found = proposal_head(ws, commit, image)?;
    let head = found.map(|(h, _)| h);
    let path = lock::path_for(Path::new(""), image);
    let same_lock = match head {
        Some(h) => ws.read_file(h, &path)? == ws.read_file(commit, &path)?,
        None => false,
    };
    Ok(Provenance {
        commit,
        head,
        brought_at: found.map(|(_, at)| at),
        same_lock,
    })
}

fn short(oid: Oid) -> String {
    oid.to_string()[..12].to_string()
}

/// The registry host of `repo@sha256:…` (its first path component), if it names one.
fn digest_host(digest: &str) -> Option<&str> {
    let repo = digest.split('@').next()?;
    let (first, _) = repo.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// Checks an image's lock may be deployed; the reason when not.
async fn refusal<F: Forge>(
    docker: &bollard::Docker,
    forge: &F,
    registry: Option<&RegistryConfig>,
    lock: &Lock,
    provenance: &Provenance,
) -> Result<Option<String>> {
    let Some(img) = &lock.image else {
        return Ok(Some("the lock records no built image".into()));
    };
    if !lock.tests.as_ref().is_some_and(|t| t.passed) {
        return Ok(Some("the lock does not record passing tests".into()));
    }
    match (&img.digest, registry) {
        (Some(d), Some(reg)) => {
            if digest_host(d) != Some(reg.host.as_str()) {
                return Ok(Some(format!(
                    "the lock's digest {d} is not in the configured registry {} \
                     (rebake deploys only digests of rebake.yaml's registry)",
                    reg.url
                )));
            }
            if !crate::publish::registry_has(reg, d).await? {
                return Ok(Some(format!("the registry {} does not have {d}", reg.url)));
            }
        }
        (Some(d), None) => {
            return Ok(Some(format!(
                "the lock records the digest {d}, but rebake.yaml configures no registry to check \
                 it in (rebake deploys only digests of rebake.yaml's registry)"
            )));
        }
        (None, _) => {
            if docker.inspect_image(&img.id).await.is_err() {
                return Ok(Some(format!(
                    "the engine does not have image {} (and the lock records no registry digest)",
                    img.id
                )));
            }
        }
    }
    let Some(head) = provenance.head else {
        return Ok(Some("cannot find the commit that brought this lock".into()));
    };
    if !provenance.same_lock {
        return Ok(Some(format!(
            "the lock at the deploy commit {} differs from the lock at the tested proposal head {} \
             (the merge changed it): rebake deploys only the lock its proposal tested",
            short(provenance.commit),
            short(head)
        )));
    }
    match forge
        .status(&head.to_string(), crate::forge::STATUS_CONTEXT)
        .await
    {
        Ok(Some(StatusState::Success)) => Ok(None),
        Ok(other) => Ok(Some(format!(
            "the proposal head {} has {} status {}",
            short(head),
            crate::forge::STATUS_CONTEXT,
            match other {
                None => "none".to_string(),
                Some(s) => format!("{s:?}").to_lowercase(),
            }
        ))),
        Err(e) => Ok(Some(format!("cannot read the proposal's status: {e}"))),
    }
}

/// `deploy.verify: required`: the lock's digest is signed with `verifier`, and a verified SLSA
/// provenance describes it (subject, InRelease files, base, packages) and names a GitOps commit
/// the deploy commit contains. The refusal names the check that failed.
async fn chain_refusal(
    run: &DeployRun,
    verifier: &crate::signing::Verifier,
    lock: &Lock,
    commit: Oid,
) -> Result<Option<String>> {
    use crate::attest;
    let (Some(digest), Some(registry)) = (
        lock.image.as_ref().and_then(|i| i.digest.as_ref()),
        run.registry.as_ref(),
    ) else {
        return Ok(Some(
            "deploy.verify is required, and the lock records no registry digest to verify".into(),
        ));
    };
    if let Err(why) = attest::check_signature(registry, verifier, digest).await? {
        return Ok(Some(format!("signature check failed: {why}")));
    }
    let found = attest::fetch_attestations(registry, verifier, digest).await?;
    if let Some(failed) = found.failed.first() {
        return Ok(Some(format!("attestation check failed: {failed}")));
    }
    let Some((statement, _)) = found.verified.get(attest::PROVENANCE) else {
        return Ok(Some(format!(
            "provenance check failed: no signed SLSA provenance is attached to {digest}"
        )));
    };
    if let Err(why) = attest::provenance_matches(statement, lock) {
        return Ok(Some(format!(
            "provenance check failed: it does not match the lock at {}: {why}",
            short(commit)
        )));
    }
    let Some(built_from) = attest::provenance_commit(statement) else {
        return Ok(Some(
            "provenance check failed: it names no GitOps commit".to_string(),
        ));
    };
    let from = built_from.clone();
    let contained = with_workspace(run, move |ws| {
        let Ok(oid) = Oid::from_str(&from) else {
            return Ok(false);
        };
        Ok(ws.repo().find_commit(oid).is_ok() && (oid == commit || ws.is_ancestor(oid, commit)?))
    })
    .await?;
    if !contained {
        return Ok(Some(format!(
            "provenance check failed: it was built from commit {built_from}, which the deploy \
             commit {} does not contain",
            short(commit)
        )));
    }
    Ok(None)
}

/// The backup job of `policy` that runs before deploys of `target` through rebake.yaml's
/// backup store (`pre_deploy: true`, and the store configured).
fn pre_deploy_backup<'a>(
    run: &DeployRun,
    policy: &'a Policy,
    target: &crate::policy::DockerTarget,
) -> Option<&'a crate::policy::Job> {
    policy.jobs.iter().find(|j| {
        j.pre_deploy
            && j.target == target.name
            && j.store().is_some_and(|s| run.backups.contains_key(s))
    })
}

/// Runs the pre-deploy backup `job` against the running old container when the deploy will
/// replace it (it runs another image); the failed deploy's outcome when the backup failed (the
/// old container then keeps running), None to go on. The caller holds the target's lock.
async fn backup_before_deploy(
    run: &DeployRun,
    docker: &bollard::Docker,
    policy: &Policy,
    job: &crate::policy::Job,
    target: &crate::policy::DockerTarget,
    image_ref: &str,
    waited: std::time::Duration,
) -> Result<Option<DeployOutcome>> {
    let started = std::time::Instant::now();
    let old = match docker
        .inspect_container(
            &target.name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(old) => old,
        Err(e) if crate::engine::is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", target.name)),
    };
    let running = old.state.as_ref().and_then(|s| s.running).unwrap_or(false);
    let new_id = docker
        .inspect_image(image_ref)
        .await
        .ok()
        .and_then(|i| i.id);
    if !running || (new_id.is_some() && old.image == new_id) {
        return Ok(None);
    }
    let settings = crate::jobs::JobSettings {
        state_dir: run.state_dir.clone(),
        engine_host: run.engine_host.clone(),
        backups: run.backups.clone(),
    };
    let record = crate::jobs::run_job_holding_lock(&settings, policy, &job.name, waited).await?;
    if record.ok() {
        return Ok(None);
    }
    let from = old
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(deploy::IMAGE_LABEL).cloned())
        .or(old.image.clone());
    Ok(Some(DeployOutcome {
        target: DeployTarget::Docker(target.clone())
            .label()
            .unwrap_or_default(),
        image: crate::image_ref::image_repository(image_ref),
        from,
        to: image_ref.to_string(),
        result: DeployResult::Failed {
            reason: format!(
                "the pre-deploy backup {} failed: {}; the old container keeps running (log: {})",
                job.name,
                record.reason.unwrap_or_default(),
                record.log.display()
            ),
        },
        duration: started.elapsed(),
    }))
}

/// Deploys every image (or the named ones, or those of `run.group`) whose lock at the commit
/// names a digest that differs from what runs on its targets.
/// A `from:` image is deployed only beside the parent it was tested with: its lock names the
/// SHA256 of the parent's lock it was built on, which must be the parent's lock at this commit.
fn untested_parent(tree: &Path, lock: &Lock) -> Option<String> {
    let parent = lock.parent.as_ref()?;
    let path = lock::path_for(tree, &parent.name);
    let now = std::fs::read(&path)
        .map(|bytes| crate::state::sha256_hex(&bytes))
        .unwrap_or_else(|_| "(no lock)".into());
    (now != parent.lock_sha256).then(|| {
        format!(
            "built and tested on {}'s lock {}, but {}'s lock at this commit is {}: the image was \
             not tested with this parent (rebake propose rebuilds the tree)",
            parent.name,
            &parent.lock_sha256[..parent.lock_sha256.len().min(12)],
            parent.name,
            &now[..now.len().min(12)]
        )
    })
}

pub async fn deploy_commit<F: Forge>(
    run: &DeployRun,
    forge: &F,
    images: &[String],
) -> Result<Vec<ImageRollout>> {
    if run.rollback && run.commit.is_none() {
        bail!("a rollback names the commit to go back to (--rollback-to SHA)");
    }
    let wanted = run.commit.clone();
    let commit = with_workspace(run, move |ws| {
        ws.fetch()?;
        let branch = ws.default_branch()?;
        let head = ws
            .remote_head(&branch)?
            .ok_or_else(|| anyhow!("the remote has no branch {branch}"))?;
        let commit = match wanted {
            None => head,
            Some(c) => {
                let oid = ws
                    .repo()
                    .revparse_single(&c)
                    .with_context(|| format!("no commit {c}"))?
                    .peel_to_commit()?
                    .id();
                if !ws.is_ancestor(oid, head)? {
                    bail!("commit {c} is not on the default branch {branch}; rebake deploys only what was merged");
                }
                oid
            }
        };
        Ok(commit)
    })
    .await?;
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().to_path_buf();
    with_workspace(run, move |ws| {
        crate::repo::export_tree(ws.repo(), commit, &dir)
    })
    .await?;
    let policies: Vec<Policy> = crate::repo::policies(scratch.path(), images)?
        .into_iter()
        .filter(|p| run.group.is_none() || p.review.group == run.group)
        .collect();
    let docker = crate::engine::connect(&run.engine_host).await?;
    let repository = crate::git::redact_url(&run.remote_url);
    let deployed = read_deployed(&run.state_dir)?
        .remove(&repository)
        .unwrap_or_default();
    let mut out = Vec::new();
    for p in &policies {
        let targets: Vec<&DeployTarget> = p
            .deploy
            .iter()
            .filter(|t| !matches!(t, DeployTarget::Manifests(_)))
            .collect();
        if targets.is_empty() {
            continue;
        }
        let lock_path = lock::path_for(scratch.path(), &p.name);
        let mut r = ImageRollout {
            image: p.name.clone(),
            commit: commit.to_string(),
            image_ref: None,
            refused: None,
            note: None,
            targets: Vec::new(),
            rollback: false,
        };
        let lock = match Lock::read(&lock_path) {
            Ok(l) => l,
            Err(_) if !lock_path.exists() => {
                r.note = Some("no lock at this commit yet (nothing merged to deploy)".into());
                out.push(r);
                continue;
            }
            Err(e) => {
                r.refused = Some(format!("{e:#}"));
                record(&run.state_dir, &repository, &r)?;
                out.push(r);
                continue;
            }
        };
        r.image_ref = lock
            .image
            .as_ref()
            .map(|i| i.digest.clone().unwrap_or_else(|| i.id.clone()));
        let name = p.name.clone();
        let last = deployed.get(&p.name).cloned();
        let (provenance, order) = with_workspace(run, move |ws| {
            Ok((
                provenance(ws, commit, &name)?,
                order(ws, commit, last.as_deref(), &name)?,
            ))
        })
        .await?;
        let mut record_commit = true;
        match order {
            Order::Newer => {}
            Order::OlderSameLock => record_commit = false,
            Order::Back(_) if run.rollback => r.rollback = true,
            Order::Back(why) => {
                r.refused = Some(format!(
                    "{why}: rebake does not deploy an older commit unless asked to \
                     (rebake deploy {} --rollback-to {})",
                    p.name, commit
                ));
            }
        }
        if r.refused.is_none() {
            r.refused = untested_parent(scratch.path(), &lock);
        }
        if r.refused.is_none() {
            r.refused = refusal(&docker, forge, run.registry.as_ref(), &lock, &provenance).await?;
        }
        if let (None, Some(verifier)) = (&r.refused, &run.verify) {
            r.refused = chain_refusal(run, verifier, &lock, commit).await?;
        }
        if r.refused.is_none() {
            let image_ref = r.image_ref.clone().unwrap_or_default();
            // The login only goes to the registry it belongs to.
            let auth = match &run.registry {
                Some(reg) if image_ref.starts_with(&format!("{}/", reg.host)) => {
                    crate::publish::RegistryAuth::from_config(reg)?
                }
                _ => None,
            };
            for t in targets {
                let outcome = match t {
                    DeployTarget::Docker(d) => {
                        let docker = match &d.host {
                            Some(h) => crate::engine::connect(h).await?,
                            None => docker.clone(),
                        };
                        // A job of this target (a backup, say) finishes first, and none starts
                        // until the deploy is done.
                        let label = t.label().unwrap_or_default();
                        let target_lock = crate::jobs::target_lock::TargetLock::acquire(
                            &run.state_dir,
                            &label,
                            &format!("deploy {}", p.name),
                            |who| {
                                eprintln!(
                                    "rebake: deploy of {} to {label} waits: held by {who}",
                                    p.name
                                )
                            },
                        )
                        .await?;
                        match pre_deploy_backup(run, p, d) {
                            None => {
                                deploy::deploy_docker_with(&docker, d, &image_ref, auth.as_ref())
                                    .await?
                            }
                            Some(job) => {
                                let backup = backup_before_deploy(
                                    run,
                                    &docker,
                                    p,
                                    job,
                                    d,
                                    &image_ref,
                                    target_lock.waited,
                                )
                                .await?;
                                match backup {
                                    Some(failed) => failed,
                                    // The backup replaces the target's own pre_deploy command.
                                    None => {
                                        let mut without_hook = d.clone();
                                        without_hook.pre_deploy = None;
                                        deploy::deploy_docker_with(
                                            &docker,
                                            &without_hook,
                                            &image_ref,
                                            auth.as_ref(),
                                        )
                                        .await?
                                    }
                                }
                            }
                        }
                    }
                    DeployTarget::Swarm(s) => {
                        let docker = match &s.host {
                            Some(h) => crate::engine::connect(h).await?,
                            None => docker.clone(),
                        };
                        let settings = deploy::SwarmSettings {
                            registry_auth: auth.clone(),
                            ..Default::default()
                        };
                        deploy::deploy_swarm_with(&docker, s, &image_ref, &settings).await?
                    }
                    DeployTarget::Manifests(_) => continue,
                };
                r.targets.push(outcome);
            }
        }
        record(&run.state_dir, &repository, &r)?;
        if r.ok() && record_commit {
            record_deployed(&run.state_dir, &repository, &r.image, &r.commit)?;
            if let (Some(head), Some(at)) = (provenance.head, provenance.brought_at) {
                let merged = chrono::DateTime::from_timestamp(at, 0).unwrap_or_default();
                crate::timeline::deployed(
                    &run.state_dir,
                    &head.to_string(),
                    &r.image,
                    merged,
                    chrono::Utc::now(),
                )?;
            }
        }
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::digest_host;

    #[test]
    fn the_registry_of_a_digest_is_its_first_component_when_it_names_a_host() {
        let d = format!("@sha256:{}", "a".repeat(64));
        assert_eq!(
            digest_host(&format!("127.0.0.1:5000/ops/web{d}")),
            Some("127.0.0.1:5000")
        );
        assert_eq!(
            digest_host(&format!("registry.invalid/web{d}")),
            Some("registry.invalid")
        );
        assert_eq!(digest_host(&format!("localhost/web{d}")), Some("localhost"));
        // Docker Hub short names name no registry.
        assert_eq!(digest_host(&format!("ops/web{d}")), None);
        assert_eq!(digest_host(&format!("web{d}")), None);
    }
}
