//! `rebake build` across images: verified index → render → base → build → test → publish →
//! lock. Each image either ends with a new Dockerfile and lock written together, or leaves the
//! previous ones untouched.

use crate::build::{self, BaseImage};
use crate::config::RegistryConfig;
use crate::debian::archive::{fetch_release, Fetcher};
use crate::debian::index::ReleaseIndex;
use crate::debian::release::parse_date;
use crate::debian::sources::{suites_for_release, SourceEntry, SuiteSource};
use crate::lock::{self, ArchiveState, Base, ImageRef, Lock, LOCK_VERSION};
use crate::output::Progress;
use crate::plan::{scan_inventory, Inventory};
use crate::policy::Policy;
use crate::state::write_atomic;
use crate::{engine, publish, render, test};
use anyhow::{anyhow, bail, Context, Result};
use bollard::Docker;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything `build_all` needs besides the policies.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub repo: PathBuf,
    pub state_dir: PathBuf,
    pub engine_host: String,
    /// None: no push; the engine's image id is the identity.
    pub registry: Option<RegistryConfig>,
    pub force: bool,
    /// Build without the engine's layer cache.
    pub no_cache: bool,
    /// `org.opencontainers.image.source`, when the forge is known.
    pub source_url: Option<String>,
    /// The git repository (its directory) and the commit the build is made from: the image's
    /// `org.opencontainers.image.revision` is the commit its inputs last changed in there.
    pub git: Option<(PathBuf, git2::Oid)>,
    /// Sign each pushed image and attach its attestations (None: unsigned; also with no push).
    pub signing: Option<crate::config::SigningConfig>,
}

impl BuildPlan {
    /// `org.opencontainers.image.revision` for `image`: read through git2 from the commit the
    /// build is made from, so that a build of a proposal commit labels its image as the
    /// proposal's build did.
    fn revision(&self, image: &str) -> Option<String> {
        let (dir, commit) = self.git.as_ref()?;
        let repo = git2::Repository::open(dir).ok()?;
        crate::repo::inputs_revision(&repo, *commit, image)
            .ok()
            .map(|id| id.to_string())
    }
}

type Key = (String, String);

struct Release {
    index: ReleaseIndex,
    suites: Vec<SuiteSource>,
    base: Option<BaseImage>,
}

/// The release's main suite `Date` as a unix time: the base's SOURCE_DATE_EPOCH.
fn archive_epoch(index: &ReleaseIndex) -> Result<i64> {
    let main = index
        .suites
        .iter()
        .find(|s| s.suite == index.release)
        .or(index.suites.first())
        .ok_or_else(|| anyhow!("release {} has no suites", index.release))?;
    Ok(parse_date(&main.date)?.timestamp())
}

/// The verified indices, the engine and the bases of one run, shared by every image it builds.
pub struct Builder {
    pub plan: BuildPlan,
    docker: Docker,
    releases: BTreeMap<Key, Release>,
    progress: Progress,
    /// Names the CVEs and advisories of what changes, when a tracker is configured.
    tracker: Option<std::sync::Arc<crate::security::Tracker>>,
    /// The key pushed images are signed with, loaded once (a bad key fails before any build).
    signer: Option<crate::signing::Signer>,
    /// What was attached to each image built in this run.
    attached: BTreeMap<String, crate::attest::Attached>,
}

impl Builder {
    /// Fetches (verified) the releases the policies need and connects to the engine.
    pub async fn new(
        plan: BuildPlan,
        entries: &[SourceEntry],
        policies: &[Policy],
        progress: Progress,
    ) -> Result<Builder> {
        let fetcher = Fetcher::new(&plan.state_dir, progress.clone())?;
        let mut releases: BTreeMap<Key, Release> = BTreeMap::new();
        for p in policies {
            let key = (p.suite.clone(), p.architecture.clone());
            if releases.contains_key(&key) {
                continue;
            }
            let suites = suites_for_release(entries, &p.suite)?;
            let index = fetch_release(&fetcher, &p.suite, &p.architecture, &suites).await?;
            releases.insert(
                key,
                Release {
                    index,
                    suites,
                    base: None,
                },
            );
        }
        let signer = match (&plan.signing, &plan.registry) {
            (Some(signing), Some(_)) => crate::signing::Signer::from_config(signing)?,
            _ => None,
        };
        let docker = engine::connect(&plan.engine_host).await?;
        Ok(Builder {
            plan,
            docker,
            releases,
            progress,
            tracker: None,
            signer,
            attached: BTreeMap::new(),
        })
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn set_tracker(&mut self, tracker: Option<std::sync::Arc<crate::security::Tracker>>) {
        self.tracker = tracker;
    }

    /// What changes from `old` (the default branch's lock; None: a first build) to `new`, and
    /// what that fixes: the plan stage's answer against the policy's verified index, with the
    /// changelogs of the changed source packages read from the new image (when the engine has
    /// it; a changelog that cannot be read is reported as missing, not as no fix).
    pub async fn changes(
        &self,
        policy: &Policy,
        old: Option<&Lock>,
        new: &Lock,
    ) -> Result<Vec<crate::plan::Change>> {
        let index = self.index(policy)?;
        changes(
            &self.docker,
            index,
            self.tracker.as_deref(),
            policy,
            old,
            new,
        )
        .await
    }

    /// The signature and attestations attached to the image `lock` records: those of this
    /// run, else (an image built by an earlier run) what the registry holds signed by this
    /// run's key. None when signing is not configured or the image is not signed.
    pub async fn attached(&self, lock: &Lock) -> Option<crate::attest::Attached> {
        if let Some(a) = self.attached.get(&lock.name) {
            return Some(a.clone());
        }
        let (Some(signer), Some(registry)) = (&self.signer, &self.plan.registry) else {
            return None;
        };
        let digest = lock.image.as_ref()?.digest.as_ref()?;
        match crate::attest::attached(registry, &signer.verifier(), digest).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(
                    "{}: cannot read the attestations of {digest}: {e:#}",
                    lock.name
                );
                None
            }
        }
    }

    /// Where the stages of each image are shown.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The verified index of a policy's release.
    pub fn index(&self, policy: &Policy) -> Result<&ReleaseIndex> {
        self.releases
            .get(&(policy.suite.clone(), policy.architecture.clone()))
            .map(|r| &r.index)
            .ok_or_else(|| {
                anyhow!(
                    "no index fetched for {}/{}",
                    policy.suite,
                    policy.architecture
                )
            })
    }

    /// Whether the lock and Dockerfile in `repo` are what a build would make now.
    pub fn is_current(&self, repo: &Path, policy: &Policy) -> bool {
        let Ok(index) = self.index(policy) else {
            return false;
        };
        let Ok(old) = Lock::read(&lock::path_for(repo, &policy.name)) else {
            return false;
        };
        let Ok(pinned) = render::pinned_from_index(policy, index) else {
            return false;
        };
        is_current(repo, policy, index, &old, &pinned)
    }

    /// Builds one image in `self.plan.repo` unless it is current (or `force`).
    pub async fn build(&mut self, policy: &Policy) -> Result<Built> {
        let rel = self
            .releases
            .get_mut(&(policy.suite.clone(), policy.architecture.clone()))
            .ok_or_else(|| {
                anyhow!(
                    "no index fetched for {}/{}",
                    policy.suite,
                    policy.architecture
                )
            })?;
        let attest = self.signer.as_ref().map(|s| (s, self.tracker.as_deref()));
        let (built, attached) = build_one(
            &self.plan,
            &self.docker,
            rel,
            policy,
            &self.progress,
            attest,
        )
        .await?;
        if let Some(a) = attached {
            self.attached.insert(policy.name.clone(), a);
        }
        Ok(built)
    }
}

/// What changes from `old` to `new` and what that fixes ([`Builder::changes`]).
async fn changes(
    docker: &Docker,
    index: &ReleaseIndex,
    tracker: Option<&crate::security::Tracker>,
    policy: &Policy,
    old: Option<&Lock>,
    new: &Lock,
) -> Result<Vec<crate::plan::Change>> {
    let none = BTreeMap::new();
    let first = crate::plan::changes(old, new, index, tracker, &none);
    let wanted: Vec<(String, Vec<String>)> = first
        .iter()
        .filter(|c| c.old.is_some() && c.new.is_some())
        .map(|c| {
            let binaries = c.binaries.iter().map(|b| b.name.clone()).collect();
            (c.source.clone(), binaries)
        })
        .collect();
    let Some(image) = new.image.as_ref().filter(|_| !wanted.is_empty()) else {
        return Ok(first);
    };
    let changelogs =
        match build::read_changelogs(docker, &image.id, &new.architecture, &wanted).await {
            Ok(c) => c,
            Err(e) => {
                // Not the same as an image without changelogs: say nothing about them.
                tracing::warn!(
                    "{}: cannot read changelogs from {}: {e:#}",
                    policy.name,
                    image.id
                );
                return Ok(first);
            }
        };
    Ok(crate::plan::changes(old, new, index, tracker, &changelogs))
}

/// What `rebake build` did for one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildResult {
    pub image: String,
    /// `built`, `current` (nothing to do), or `failed`.
    pub result: String,
    pub image_id: Option<String>,
    pub digest: Option<String>,
    pub duration_ms: u64,
    pub error: Option<String>,
}

pub async fn build_all(
    plan: &BuildPlan,
    entries: &[SourceEntry],
    policies: &[Policy],
    progress: Progress,
) -> Result<Vec<BuildResult>> {
    let mut builder = Builder::new(plan.clone(), entries, policies, progress.clone()).await?;
    let mut results = Vec::new();
    for p in policies {
        let started = Instant::now();
        let outcome = builder.build(p).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        results.push(match outcome {
            Ok(built) => {
                let (result, lock) = match built {
                    Built::Current(lock) => ("current", lock),
                    Built::New(lock) => ("built", lock),
                };
                BuildResult {
                    image: p.name.clone(),
                    result: result.into(),
                    image_id: lock.image.as_ref().map(|i| i.id.clone()),
                    digest: lock.image.and_then(|i| i.digest),
                    duration_ms,
                    error: None,
                }
            }
            Err(e) => BuildResult {
                image: p.name.clone(),
                result: "failed".into(),
                image_id: None,
                digest: None,
                duration_ms,
                error: Some(format!("{e:#}")),
            },
        });
    }
    Ok(results)
}

/// What building one image came to.
pub enum Built {
    /// The lock was already current: nothing was built.
    Current(Lock),
    /// Built, tested (and pushed): the new lock, already written with its Dockerfile.
    New(Lock),
}

/// Whether the lock already describes what a build would make now: tests passed, the policy's
/// packages are at the versions apt would pick, nothing installed has a candidate the policy
/// cares about, and the committed Dockerfile is what the template renders.
fn is_current(
    repo: &Path,
    policy: &Policy,
    index: &ReleaseIndex,
    old: &Lock,
    pinned: &[crate::policy::PinnedPackage],
) -> bool {
    let (Some(tests), Some(base)) = (&old.tests, &old.base) else {
        return false;
    };
    if !tests.passed || old.suite != policy.suite || old.architecture != policy.architecture {
        return false;
    }
    match render::pinned_from_lock(policy, old) {
        Ok(locked) if locked == pinned => {}
        _ => return false,
    }
    if !scan_inventory(index, None, &Inventory::of_lock(policy, old))
        .findings
        .is_empty()
    {
        return false;
    }
    let rendered = render::render_dockerfile(repo, policy, &render::base_reference(base), pinned);
    let on_disk = std::fs::read_to_string(render::dockerfile_path(repo, &policy.name));
    matches!((rendered, on_disk), (Ok(a), Ok(b)) if a == b)
}

async fn build_one(
    plan: &BuildPlan,
    docker: &Docker,
    rel: &mut Release,
    policy: &Policy,
    progress: &Progress,
    attest: Option<(&crate::signing::Signer, Option<&crate::security::Tracker>)>,
) -> Result<(Built, Option<crate::attest::Attached>)> {
    let started = chrono::Utc::now();
    let name = &policy.name;
    let lock_path = lock::path_for(&plan.repo, name);
    let old = if lock_path.exists() {
        Some(Lock::read(&lock_path)?)
    } else {
        None
    };
    let pinned = render::pinned_from_index(policy, &rel.index)
        .with_context(|| format!("image {name}: resolving package versions"))?;
    if !plan.force {
        if let Some(old) = &old {
            if is_current(&plan.repo, policy, &rel.index, old, &pinned) {
                return Ok((Built::Current(old.clone()), None));
            }
        }
    }
    let epoch = archive_epoch(&rel.index)?;
    let base = match &rel.base {
        Some(b) => b.clone(),
        None => {
            let _stage = progress.stage(
                name,
                &format!(
                    "base {}/{} from verified packages (mmdebstrap)",
                    policy.suite, policy.architecture
                ),
            );
            let b = build::build_base(
                docker,
                &rel.suites,
                &policy.suite,
                &policy.architecture,
                epoch,
                &plan.state_dir.join("bases"),
            )
            .await
            .with_context(|| format!("image {name}: base stage"))?;
            rel.base = Some(b.clone());
            b
        }
    };
    let lock_base = Base {
        rootfs_sha256: base.rootfs_sha256.clone(),
        id: base.id.clone(),
    };
    let dockerfile = render::render_dockerfile(
        &plan.repo,
        policy,
        &render::base_reference(&lock_base),
        &pinned,
    )
    .with_context(|| format!("image {name}: render stage"))?;
    let created = chrono::DateTime::from_timestamp(epoch, 0)
        .map(|d| d.to_rfc3339())
        .unwrap_or_default();
    let archive: Vec<ArchiveState> = rel
        .index
        .suites
        .iter()
        .map(|s| ArchiveState {
            uri: s.uri.clone(),
            suite: s.suite.clone(),
            date: s.date.clone(),
            inrelease_sha256: s.inrelease_sha256.clone(),
        })
        .collect();
    let mut labels = BTreeMap::new();
    labels.insert("org.opencontainers.image.created".to_string(), created);
    if let Some(src) = &plan.source_url {
        labels.insert("org.opencontainers.image.source".to_string(), src.clone());
    }
    if let Some(rev) = plan.revision(name) {
        labels.insert("org.opencontainers.image.revision".to_string(), rev);
    }
    labels.insert("dev.rebake.policy".to_string(), name.clone());
    // What the image was made from: the rendered Dockerfile and the verified archive state.
    let inputs = format!(
        "{dockerfile}\n{}",
        archive
            .iter()
            .map(|a| format!("{} {} {}", a.uri, a.suite, a.inrelease_sha256))
            .collect::<Vec<_>>()
            .join("\n")
    );
    labels.insert(
        "dev.rebake.inputs".to_string(),
        crate::state::sha256_hex(inputs.as_bytes()),
    );
    let log_path = plan.state_dir.join("logs").join(format!("{name}.log"));
    let stage = progress.stage(name, "build");
    let image_id = build::build_image_with(
        docker,
        &plan.repo,
        policy,
        &dockerfile,
        labels,
        &log_path,
        plan.no_cache,
        Some(&build::Reproducible {
            epoch,
            base_id: base.id.clone(),
            work_dir: plan.state_dir.join("work").join(name),
        }),
    )
    .await
    .with_context(|| format!("image {name}: build stage (log: {})", log_path.display()))?;
    let installed = build::inventory(docker, &image_id)
        .await
        .with_context(|| format!("image {name}: inventory"))?;
    drop(stage);
    let stage = progress.stage(name, "test");
    let outcomes = test::run_tests(docker, &image_id, policy, &installed, Some(&rel.index))
        .await
        .with_context(|| format!("image {name}: test stage"))?;
    if let Some(msg) = test::failure_message(name, &outcomes) {
        bail!("{msg} (nothing pushed; the previous lock is unchanged)");
    }
    drop(stage);
    let digest = match &plan.registry {
        Some(reg) => {
            let _stage = progress.stage(name, &format!("push to {}", reg.url));
            let tag = format!(
                "{}-{}",
                policy.suite,
                &image_id.trim_start_matches("sha256:")[..12]
            );
            Some(
                publish::push(docker, &image_id, reg, name, &tag)
                    .await
                    .with_context(|| format!("image {name}: publish stage"))?,
            )
        }
        None => None,
    };
    let lock = Lock {
        lock_version: LOCK_VERSION,
        name: name.clone(),
        suite: policy.suite.clone(),
        architecture: policy.architecture.clone(),
        archive,
        base: Some(lock_base),
        packages: installed,
        image: Some(ImageRef {
            id: image_id,
            digest,
        }),
        tests: Some(test::summary(&outcomes)),
    };
    let attached = match (attest, &plan.registry, &lock.image) {
        (
            Some((signer, tracker)),
            Some(reg),
            Some(ImageRef {
                digest: Some(d), ..
            }),
        ) => {
            let _stage = progress.stage(name, "sign and attest");
            let facts = build_facts(plan, policy, &dockerfile, epoch, started)?;
            let changes = changes(docker, &rel.index, tracker, policy, old.as_ref(), &lock).await?;
            let (repo, hex) = crate::attest::split_digest(d)?;
            let statements = crate::attest::statements(&lock, repo, hex, &facts, &changes);
            Some(
                crate::attest::attach(reg, signer, d, &statements)
                    .await
                    .with_context(|| format!("image {name}: signing {d}"))?,
            )
        }
        _ => None,
    };
    // Dockerfile and lock together, only now that everything passed.
    write_atomic(
        &render::dockerfile_path(&plan.repo, name),
        dockerfile.as_bytes(),
    )?;
    write_atomic(&lock_path, lock.to_yaml()?.as_bytes())?;
    Ok((Built::New(lock), attached))
}

/// The provenance's view of a build: the GitOps commit and the policy and template files it
/// read (path in the repository and SHA256), the rendered Dockerfile's SHA256, the times.
fn build_facts(
    plan: &BuildPlan,
    policy: &Policy,
    dockerfile: &str,
    epoch: i64,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<crate::attest::BuildFacts> {
    let file = |path: PathBuf| -> Result<(String, String)> {
        let bytes = std::fs::read(plan.repo.join(&path))
            .with_context(|| format!("reading {} for the provenance", path.display()))?;
        Ok((
            path.to_string_lossy().into_owned(),
            crate::state::sha256_hex(&bytes),
        ))
    };
    Ok(crate::attest::BuildFacts {
        commit: plan.git.as_ref().map(|(_, c)| c.to_string()),
        source: plan.source_url.clone(),
        policy: file(Path::new(crate::policy::POLICIES_DIR).join(format!("{}.yaml", policy.name)))?,
        template: file(Path::new(crate::policy::TEMPLATES_DIR).join(&policy.template))?,
        dockerfile_sha256: crate::state::sha256_hex(dockerfile.as_bytes()),
        source_date_epoch: epoch,
        no_cache: plan.no_cache,
        started,
        finished: chrono::Utc::now(),
    })
}
