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
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything `build_all` needs besides the policies.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub repo: PathBuf,
    pub state_dir: PathBuf,
    pub engine_host: String,
    /// Builds at once per engine.
    pub jobs: usize,
    /// More engines to build on besides `engine_host` (each reached by address).
    pub builders: Vec<String>,
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
}

/// One engine images are built on, with the Debian bases it holds (made once per release).
struct Engine {
    host: String,
    docker: Docker,
    bases: tokio::sync::Mutex<BTreeMap<Key, BaseImage>>,
    /// Builds running on it now.
    running: std::sync::atomic::AtomicUsize,
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

/// The verified indices, the engines and the bases of one run, shared by every image it
/// builds.
pub struct Builder {
    pub plan: BuildPlan,
    /// The main engine first, then `plan.builders`.
    engines: Vec<Engine>,
    releases: BTreeMap<Key, Release>,
    progress: Progress,
    /// Names the CVEs and advisories of what changes, when a tracker is configured.
    tracker: Option<std::sync::Arc<crate::security::Tracker>>,
    /// Which engine built each image of this run (its changelogs are read there).
    built_on: std::sync::Mutex<BTreeMap<String, usize>>,
    /// Builds at once over all engines.
    slots: tokio::sync::Semaphore,
    /// The key pushed images are signed with, loaded once (a bad key fails before any build).
    signer: Option<crate::signing::Signer>,
    /// What was attached to each image built in this run.
    attached: std::sync::Mutex<BTreeMap<String, crate::attest::Attached>>,
}

impl Builder {
    /// Fetches (verified) the releases the policies need and connects to the engines.
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
            releases.insert(key, Release { index, suites });
        }
        let signer = match (&plan.signing, &plan.registry) {
            (Some(signing), Some(_)) => crate::signing::Signer::from_config(signing)?,
            _ => None,
        };
        let mut engines = Vec::new();
        for host in std::iter::once(&plan.engine_host).chain(&plan.builders) {
            engines.push(Engine {
                host: host.clone(),
                docker: engine::connect(host).await?,
                bases: tokio::sync::Mutex::new(BTreeMap::new()),
                running: std::sync::atomic::AtomicUsize::new(0),
            });
        }
        let slots = tokio::sync::Semaphore::new(plan.jobs.max(1) * engines.len());
        Ok(Builder {
            plan,
            engines,
            releases,
            progress,
            tracker: None,
            built_on: std::sync::Mutex::new(BTreeMap::new()),
            slots,
            signer,
            attached: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// The main engine.
    pub fn docker(&self) -> &Docker {
        &self.engines[0].docker
    }

    /// The engine that built `image` in this run (else the main one).
    fn docker_of(&self, image: &str) -> &Docker {
        let built_on = self.built_on.lock().unwrap_or_else(|e| e.into_inner());
        let i = built_on.get(image).copied().unwrap_or(0);
        &self.engines[i].docker
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
            self.docker_of(&policy.name),
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
        let ours = self
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&lock.name)
            .cloned();
        if ours.is_some() {
            return ours;
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

    /// Builds one image in `self.plan.repo` unless it is current (or `force`), on the engine
    /// with the fewest builds running ([`Builder::build_many`] keeps to the build slots).
    async fn build(&self, policy: &Policy) -> Result<Built> {
        let rel = self
            .releases
            .get(&(policy.suite.clone(), policy.architecture.clone()))
            .ok_or_else(|| {
                anyhow!(
                    "no index fetched for {}/{}",
                    policy.suite,
                    policy.architecture
                )
            })?;
        use std::sync::atomic::Ordering;
        let (i, engine) = self
            .engines
            .iter()
            .enumerate()
            .min_by_key(|(i, e)| (e.running.load(Ordering::SeqCst), *i))
            .expect("at least the main engine");
        engine.running.fetch_add(1, Ordering::SeqCst);
        if self.engines.len() > 1 {
            let _ = self
                .progress
                .stage(&policy.name, &format!("on engine {}", engine.host));
        }
        let attest = self.signer.as_ref().map(|s| (s, self.tracker.as_deref()));
        let result = build_one(&self.plan, engine, rel, policy, &self.progress, attest).await;
        engine.running.fetch_sub(1, Ordering::SeqCst);
        self.built_on
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(policy.name.clone(), i);
        let (built, attached) = result?;
        if let Some(a) = attached {
            self.attached
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(policy.name.clone(), a);
        }
        Ok(built)
    }

    /// Builds `policies` (parents before children, as loaded): up to `jobs` per engine at once,
    /// a child only after its parent (a child of a failed parent fails without building).
    /// Results in the order of `policies`, each with its time.
    pub async fn build_many(&self, policies: &[&Policy]) -> Vec<(Result<Built>, TimedRun)> {
        let run_started = Instant::now();
        let in_run: BTreeSet<&str> = policies.iter().map(|p| p.name.as_str()).collect();
        // A policy's depth among the ones built now: its parent's plus one.
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        for p in policies {
            let d = match p.from.as_deref() {
                Some(parent) if in_run.contains(parent) => depth.get(parent).map_or(0, |d| d + 1),
                _ => 0,
            };
            depth.insert(p.name.as_str(), d);
        }
        let mut results: Vec<Option<(Result<Built>, TimedRun)>> =
            policies.iter().map(|_| None).collect();
        let mut failed: BTreeSet<String> = BTreeSet::new();
        for level in 0..=depth.values().copied().max().unwrap_or(0) {
            let wave: Vec<usize> = (0..policies.len())
                .filter(|i| depth[policies[*i].name.as_str()] == level)
                .collect();
            let runs = wave.iter().map(|&i| {
                let p = policies[i];
                let parent_failed = p.from.as_ref().filter(|f| failed.contains(*f)).cloned();
                async move {
                    let slot = self.slots.acquire().await;
                    let started = run_started.elapsed();
                    let result = match (parent_failed, slot) {
                        (Some(parent), _) => Err(anyhow!(
                            "image {}: not built: its parent {parent} failed",
                            p.name
                        )),
                        (None, Err(e)) => Err(anyhow!("no build slot: {e}")),
                        (None, Ok(_slot)) => self.build(p).await,
                    };
                    let finished = run_started.elapsed();
                    (i, result, TimedRun { started, finished })
                }
            });
            for (i, result, timed) in futures_util::future::join_all(runs).await {
                if result.is_err() {
                    failed.insert(policies[i].name.clone());
                }
                results[i] = Some((result, timed));
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every wave ran"))
            .collect()
    }
}

/// When a build ran, from the start of the run.
#[derive(Debug, Clone, Copy)]
pub struct TimedRun {
    pub started: std::time::Duration,
    pub finished: std::time::Duration,
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
    /// When its build started, from the start of the run (builds overlap with `engine.jobs`).
    pub started_ms: u64,
    /// The engine it was built on.
    pub engine: Option<String>,
    pub error: Option<String>,
}

pub async fn build_all(
    plan: &BuildPlan,
    entries: &[SourceEntry],
    policies: &[Policy],
    progress: Progress,
) -> Result<Vec<BuildResult>> {
    let builder = Builder::new(plan.clone(), entries, policies, progress.clone()).await?;
    let selected: Vec<&Policy> = policies.iter().collect();
    let outcomes = builder.build_many(&selected).await;
    Ok(policies
        .iter()
        .zip(outcomes)
        .map(|(p, (outcome, timed))| {
            let duration_ms = (timed.finished - timed.started).as_millis() as u64;
            let mut r = match outcome {
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
                        started_ms: 0,
                        engine: None,
                        error: None,
                    }
                }
                Err(e) => BuildResult {
                    image: p.name.clone(),
                    result: "failed".into(),
                    image_id: None,
                    digest: None,
                    duration_ms,
                    started_ms: 0,
                    engine: None,
                    error: Some(format!("{e:#}")),
                },
            };
            r.started_ms = timed.started.as_millis() as u64;
            r.engine = builder
                .built_on
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&p.name)
                .map(|i| builder.engines[*i].host.clone());
            r
        })
        .collect())
}

/// What building one image came to.
pub enum Built {
    /// The lock was already current: nothing was built.
    Current(Lock),
    /// Built, tested (and pushed): the new lock, already written with its Dockerfile.
    New(Lock),
}

/// The parent of a `from:` policy: its lock in the repository (tested, with an image) and the
/// engine holding that image (pulled by digest when it was built elsewhere).
async fn parent_image(
    plan: &BuildPlan,
    docker: &Docker,
    name: &str,
    parent: &str,
) -> Result<(lock::Parent, Lock)> {
    let path = lock::path_for(&plan.repo, parent);
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "image {name} builds on {parent}, which has no lock yet: build it first (rebake build {parent})"
        )
    })?;
    let parent_lock = Lock::read(&path)?;
    let (Some(image), Some(tests)) = (&parent_lock.image, &parent_lock.tests) else {
        bail!("image {name} builds on {parent}, whose lock records no tested image");
    };
    if !tests.passed {
        bail!("image {name} builds on {parent}, whose tests did not pass");
    }
    let auth = match &plan.registry {
        Some(reg) => publish::RegistryAuth::from_config(reg)?,
        None => None,
    };
    if docker.inspect_image(&image.id).await.is_err() {
        let Some(digest) = &image.digest else {
            bail!(
                "image {name} builds on {parent}'s image {}, which this engine lacks and no registry holds",
                image.id
            );
        };
        crate::deploy::ensure_image(docker, digest, auth.as_ref())
            .await
            .map_err(|e| anyhow!("image {name}: the parent image: {e}"))?;
    }
    Ok((
        lock::Parent {
            name: parent.to_string(),
            image: image.id.clone(),
            digest: image.digest.clone(),
            lock_sha256: crate::state::sha256_hex(&text),
        },
        parent_lock.clone(),
    ))
}

/// The OCI annotations of a pushed image's manifest: why it was built, and for a `from:` image
/// the image it builds on (OCI's `base.name`/`base.digest`).
fn manifest_annotations(reason: &str, parent: Option<&lock::Parent>) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("dev.rebake.reason".to_string(), reason.to_string());
    if let Some(p) = parent {
        let reference = p.digest.as_deref().unwrap_or(&p.image);
        a.insert(
            "org.opencontainers.image.base.name".to_string(),
            reference.to_string(),
        );
        if let Some((_, digest)) = p.digest.as_deref().and_then(|d| d.rsplit_once('@')) {
            a.insert(
                "org.opencontainers.image.base.digest".to_string(),
                digest.to_string(),
            );
        }
    }
    a
}

/// Why an image is (re)built, for its lock, its label and its proposal.
fn build_reason(
    old: Option<&Lock>,
    parent: Option<&lock::Parent>,
    index: &ReleaseIndex,
    policy: &Policy,
) -> String {
    let Some(old) = old else {
        return "first build".into();
    };
    if let Some(p) = parent {
        let before = old.parent.as_ref().map(|o| o.image.as_str());
        if before != Some(p.image.as_str()) {
            return format!("parent {} changed", p.name);
        }
    }
    if !scan_inventory(index, None, &Inventory::of_lock(policy, old))
        .findings
        .is_empty()
    {
        return "package updates in the archive".into();
    }
    "the template or the policy changed, or a rebuild was forced".into()
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
    // A child is current only on its parent's current image.
    let from = match &policy.from {
        Some(parent) => match Lock::read(&lock::path_for(repo, parent)) {
            Ok(l) if l.image.is_some() && old.parent.is_some() => {
                l.image.map(|i| i.id).unwrap_or_default()
            }
            _ => return false,
        },
        None => render::base_reference(base),
    };
    let rendered = render::render_dockerfile(repo, policy, &from, pinned);
    let on_disk = std::fs::read_to_string(render::dockerfile_path(repo, &policy.name));
    matches!((rendered, on_disk), (Ok(a), Ok(b)) if a == b)
}

async fn build_one(
    plan: &BuildPlan,
    engine: &Engine,
    rel: &Release,
    policy: &Policy,
    progress: &Progress,
    attest: Option<(&crate::signing::Signer, Option<&crate::security::Tracker>)>,
) -> Result<(Built, Option<crate::attest::Attached>)> {
    let started = chrono::Utc::now();
    let docker = &engine.docker;
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
    // A `from:` policy builds on its parent's locked image (built first in this run when it
    // changed) instead of the Debian base.
    let parent = match &policy.from {
        Some(parent) => Some(parent_image(plan, docker, name, parent).await?),
        None => None,
    };
    let base = match &parent {
        Some((_, parent_lock)) => BaseImage {
            id: parent_lock
                .image
                .as_ref()
                .map(|i| i.id.clone())
                .unwrap_or_default(),
            rootfs_sha256: parent_lock
                .base
                .as_ref()
                .map(|b| b.rootfs_sha256.clone())
                .unwrap_or_default(),
            suite: policy.suite.clone(),
            arch: policy.architecture.clone(),
        },
        None => {
            // One base per release and engine; an engine's other builds wait for it.
            let mut bases = engine.bases.lock().await;
            let key = (policy.suite.clone(), policy.architecture.clone());
            if let Some(b) = bases.get(&key) {
                b.clone()
            } else {
                // One mmdebstrap at a time: engines share the state directory's rootfs cache.
                static ROOTFS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
                let _rootfs = ROOTFS.lock().await;
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
                bases.insert(key, b.clone());
                b
            }
        }
    };
    // The Debian base under the image (a child's is its parent's), and what FROM names.
    let (lock_base, from) = match &parent {
        Some((p, parent_lock)) => (
            parent_lock
                .base
                .clone()
                .ok_or_else(|| anyhow!("image {name}: the lock of {} has no base", p.name))?,
            p.image.clone(),
        ),
        None => {
            let b = Base {
                rootfs_sha256: base.rootfs_sha256.clone(),
                id: base.id.clone(),
            };
            let from = render::base_reference(&b);
            (b, from)
        }
    };
    let dockerfile = render::render_dockerfile(&plan.repo, policy, &from, &pinned)
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
    let reason = build_reason(
        old.as_ref(),
        parent.as_ref().map(|(p, _)| p),
        &rel.index,
        policy,
    );
    // The reason stays out of the image (it goes on the pushed manifest): a rebuild of the same
    // commit (rebake verify --rebuild) must give the same id whatever made the first build.
    // The parent by image id, not digest: the digest's manifest carries the parent's own
    // reason, and the child's id must not change with why its parent was last built.
    if let Some((p, _)) = &parent {
        labels.insert(
            "dev.rebake.parent".to_string(),
            format!("{} {}", p.name, p.image),
        );
    }
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
            let pushed = publish::push(docker, &image_id, reg, name, &tag)
                .await
                .with_context(|| format!("image {name}: publish stage"))?;
            let annotations = manifest_annotations(&reason, parent.as_ref().map(|(p, _)| p));
            Some(
                publish::annotate(reg, &pushed, &tag, &annotations)
                    .await
                    .with_context(|| format!("image {name}: publish stage (annotations)"))?,
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
        parent: parent.map(|(p, _)| p),
        reason: Some(reason),
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
