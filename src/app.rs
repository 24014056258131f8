//! Command entry points: each takes a plain request, does the work through the stage modules
//! and prints its result. `main.rs` only parses arguments and maps the exit code.

use crate::config::Config;
use crate::debian::archive::Fetcher;
use crate::debian::sources::{self, SourceEntry};
use crate::debian::status;
use crate::lock::{self, Lock};
use crate::output::Progress;
use crate::plan::{self, Inventory};
use crate::security::{read_location, Tracker};
use anyhow::{anyhow, bail, Context as _, Result};
use std::path::{Path, PathBuf};

/// Exit status of `scan --fail-on-updates` when updates were found.
pub const EXIT_UPDATES_FOUND: u8 = 3;

/// What every command knows: where the repository, config and state are.
#[derive(Debug, Clone)]
pub struct Context {
    pub repo: PathBuf,
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Human,
    Json,
}

/// Every diagnostic of a config or policy file, one per line, as one error.
fn diagnostics_error(diags: Vec<crate::config::Diagnostic>) -> anyhow::Error {
    anyhow!(
        "{}",
        diags
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    )
}

impl Context {
    /// The config: `--config FILE`, else `<repo>/rebake.yaml` when present, else defaults.
    pub fn load_config(&self) -> Result<Config> {
        let path = match &self.config {
            Some(p) => Some(p.clone()),
            None => Some(self.repo.join("rebake.yaml")).filter(|p| p.exists()),
        };
        match path {
            Some(p) => crate::config::load(&p).map_err(diagnostics_error),
            None => Ok(Config::default()),
        }
    }

    pub fn state_dir(&self, config: &Config) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| config.state_dir.clone())
    }
}

/// `rebake check`: prints every problem found; exit 1 when there is any.
pub fn check(ctx: &Context) -> Result<u8> {
    let report = crate::check::check_repo(&ctx.repo, ctx.config.as_deref());
    for d in &report.diagnostics {
        eprintln!("{d}");
    }
    if report.is_ok() {
        println!("{}", report.summary());
        Ok(0)
    } else {
        eprintln!("{} error(s)", report.diagnostics.len());
        Ok(1)
    }
}

#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub images: Vec<String>,
    pub sources: Option<PathBuf>,
    pub dpkg_status: Option<PathBuf>,
    pub suite: Option<String>,
    pub arch: String,
    pub security_tracker: Option<String>,
    pub advisories: Vec<String>,
    pub fail_on_updates: bool,
    pub format: OutputFormat,
}

/// The archive sources: `--sources`, else rebake.yaml's, else the host's apt sources.
pub fn load_sources(explicit: Option<&Path>, config: &Config) -> Result<Vec<SourceEntry>> {
    let mut entries = match explicit.or(config.sources.as_deref()) {
        Some(p) => sources::read_file(p)?,
        None => sources::read_host()?,
    };
    // rebake.yaml's keyring replaces the default for sources that name none.
    if let Some(k) = &config.keyring {
        let default = sources::SignedBy::Files(vec![sources::DEFAULT_KEYRING.into()]);
        for e in entries.iter_mut().filter(|e| e.signed_by == default) {
            e.signed_by = sources::SignedBy::Files(vec![k.clone()]);
        }
    }
    Ok(entries)
}

/// One inventory per requested image, from its lock (an image without a lock yet is noted,
/// not an error).
pub fn inventories_from_repo(repo: &Path, images: &[String]) -> Result<Vec<Inventory>> {
    let policies = load_repo_policies(repo, images)?;
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

/// Loads the tracker JSON and advisory lists, when any are configured.
pub async fn load_tracker(json: Option<&str>, lists: &[String]) -> Result<Option<Tracker>> {
    if json.is_none() && lists.is_empty() {
        return Ok(None);
    }
    let mut tracker = match json {
        Some(loc) => Tracker::from_json(&read_location(loc).await?)
            .with_context(|| format!("security tracker {loc}"))?,
        None => Tracker::default(),
    };
    for loc in lists {
        let bytes = read_location(loc).await?;
        tracker
            .add_advisory_list(&String::from_utf8_lossy(&bytes))
            .with_context(|| format!("advisory list {loc}"))?;
    }
    Ok(Some(tracker))
}

/// The tracker the command line names (`json`, extra advisory lists) or else rebake.yaml's;
/// rebake.yaml's advisory lists always count.
pub async fn tracker_from(
    config: &Config,
    json: Option<&str>,
    extra_lists: &[String],
) -> Result<Option<Tracker>> {
    let configured = config.security_tracker.as_ref();
    let json = json
        .map(str::to_string)
        .or_else(|| configured.and_then(|t| t.json.clone()));
    let mut lists = extra_lists.to_vec();
    if let Some(t) = configured {
        lists.extend(t.dsa_list.iter().cloned());
        lists.extend(t.dla_list.iter().cloned());
    }
    load_tracker(json.as_deref(), &lists).await
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `rebake scan`.
pub fn scan(ctx: &Context, req: ScanRequest) -> Result<u8> {
    let config = ctx.load_config()?;
    let entries = load_sources(req.sources.as_deref(), &config)?;
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
        None => inventories_from_repo(&ctx.repo, &req.images)?,
    };
    let state_dir = ctx.state_dir(&config);
    let report = runtime()?.block_on(async {
        let fetcher = Fetcher::new(&state_dir, Progress::auto(false))?;
        let tracker =
            tracker_from(&config, req.security_tracker.as_deref(), &req.advisories).await?;
        plan::scan(&fetcher, &entries, tracker.as_ref(), &inventories).await
    })?;
    match req.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Human => print!("{}", plan::render_table(&report)),
    }
    if req.fail_on_updates && report.finding_count() > 0 {
        return Ok(EXIT_UPDATES_FOUND);
    }
    Ok(0)
}

#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub images: Vec<String>,
    pub sources: Option<PathBuf>,
    pub no_push: bool,
    pub force: bool,
    pub no_cache: bool,
    pub format: OutputFormat,
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

/// `rebake build`: render → base → build → test → publish → lock, per image. A failure at
/// any stage leaves that image's Dockerfile and lock as they were.
pub fn build(ctx: &Context, req: BuildRequest) -> Result<u8> {
    let config = ctx.load_config()?;
    let entries = load_sources(req.sources.as_deref(), &config)?;
    let policies = load_repo_policies(&ctx.repo, &req.images)?;
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

/// The repository's policies, or the named ones (an unknown name lists the known ones).
pub fn load_repo_policies(repo: &Path, images: &[String]) -> Result<Vec<crate::policy::Policy>> {
    let policies = crate::policy::load_policies(repo).map_err(diagnostics_error)?;
    for name in images {
        if !policies.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "no policy for image {name:?} in {} (known: {})",
                repo.join("policies").display(),
                known.join(", ")
            );
        }
    }
    Ok(policies
        .into_iter()
        .filter(|p| images.is_empty() || images.contains(&p.name))
        .collect())
}

#[derive(Debug, Clone)]
pub struct RenderRequest {
    pub images: Vec<String>,
    pub check: bool,
}

/// `rebake render [--check]`: re-renders Dockerfiles from the locks (no network).
pub fn render(ctx: &Context, req: RenderRequest) -> Result<u8> {
    let outcomes = crate::render::render_repo(&ctx.repo, &req.images, req.check)?;
    let mut differs = false;
    for o in &outcomes {
        if let Some(why) = &o.skipped {
            println!("{}: skipped ({why})", o.image);
        } else if o.changed && req.check {
            differs = true;
            println!(
                "{}: {} differs from what the template renders",
                o.image,
                o.path.display()
            );
            print!("{}", o.diff);
        } else if o.changed {
            println!("{}: wrote {}", o.image, o.path.display());
        } else {
            println!("{}: up to date", o.image);
        }
    }
    Ok(if differs { 1 } else { 0 })
}

/// The GitOps repository's remote, its credentials, the local bare clone, and the forge.
pub struct Connection {
    pub remote_url: String,
    pub auth: crate::git::Auth,
    pub workspace_dir: PathBuf,
    pub forge: crate::forge::AnyForge,
}

/// Chooses the forge from rebake.yaml (none: plain git on the repository's `origin`). Must run
/// inside the async runtime (the GitHub client needs it).
pub async fn connect_forge(ctx: &Context, config: &Config, state_dir: &Path) -> Result<Connection> {
    use crate::config::ForgeKind;
    use crate::forge::{gitea, github, plain::PlainGit, AnyForge};
    let retry = crate::forge::http::RetryPolicy::default();
    use crate::git::{Auth, Transport};
    let remote_url = match &config.forge {
        Some(f) if f.kind == ForgeKind::Git => f.url.clone(),
        _ => origin_url(&ctx.repo)?,
    };
    // The credentials follow the remote's transport, whatever the forge.
    let transport = Transport::of(&remote_url);
    let mut auth = match transport {
        Transport::Ssh => ssh_auth(&config.git, &remote_url)?,
        Transport::Http => match &config.forge {
            // A GitHub App's push token comes from the API below.
            Some(f) if f.github_app.is_some() => Auth::None,
            Some(f) if f.kind != ForgeKind::Git || f.token_env.is_some() => {
                Auth::Token(token_from_env(f.token_env.as_deref(), &f.url)?)
            }
            _ => Auth::None,
        },
        Transport::Local | Transport::Other => Auth::None,
    };
    let key: String = crate::git::redact_url(&remote_url)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let workspace_dir = state_dir.join("workspaces").join(key);
    let forge = match &config.forge {
        Some(f) if f.kind != ForgeKind::Git => {
            let slug = f
                .repository
                .as_ref()
                .ok_or_else(|| anyhow!("forge: `repository: owner/name` is required"))?;
            if f.kind == ForgeKind::Github {
                let gh_auth = match &f.github_app {
                    Some(app) => github::GitHubAuth::App {
                        app_id: app.app_id,
                        installation_id: app.installation_id,
                        private_key_pem: std::fs::read_to_string(&app.private_key_file)
                            .with_context(|| {
                                format!(
                                    "cannot read the GitHub App private key {}",
                                    app.private_key_file.display()
                                )
                            })?,
                    },
                    None => {
                        github::GitHubAuth::Token(token_from_env(f.token_env.as_deref(), &f.url)?)
                    }
                };
                AnyForge::GitHub(github::GitHub::new(
                    &f.url,
                    &slug.owner,
                    &slug.name,
                    gh_auth,
                    retry,
                )?)
            } else {
                let token = token_from_env(f.token_env.as_deref(), &f.url)?;
                AnyForge::Gitea(gitea::Gitea::new(
                    &f.url,
                    &slug.owner,
                    &slug.name,
                    token,
                    retry,
                )?)
            }
        }
        _ => AnyForge::Plain(PlainGit::new(
            &workspace_dir,
            &remote_url,
            auth.clone(),
            state_dir,
        )),
    };
    if let (AnyForge::GitHub(g), Some(f)) = (&forge, &config.forge) {
        if f.github_app.is_some() && transport == Transport::Http {
            // Pushing as the App: git takes the installation token like a personal one.
            auth = Auth::Token(g.git_token().await?);
        }
    }
    Ok(Connection {
        remote_url,
        auth,
        workspace_dir,
        forge,
    })
}

#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub images: Vec<String>,
    pub commit: Option<String>,
    pub format: OutputFormat,
}

/// `rebake deploy [--commit SHA]`.
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
async fn deploy_on(
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

#[derive(Debug, Clone)]
pub struct ProposeRequest {
    pub images: Vec<String>,
    pub sources: Option<PathBuf>,
    pub no_push: bool,
    pub format: OutputFormat,
}

/// The repository's `origin` URL: where proposal branches are pushed.
fn origin_url(repo: &Path) -> Result<String> {
    let r = git2::Repository::open(repo).with_context(|| {
        format!(
            "{} is not a git repository (rebake propose works in a clone of the GitOps repository)",
            repo.display()
        )
    })?;
    let remote = r.find_remote("origin").with_context(|| {
        format!(
            "{} has no `origin` remote: rebake pushes proposal branches there",
            repo.display()
        )
    })?;
    remote
        .url()
        .map(str::to_string)
        .map_err(|_| anyhow!("the origin remote of {} has no UTF-8 URL", repo.display()))
}

/// Credentials for an ssh remote: rebake.yaml's `git.ssh_key` (with its passphrase from the
/// environment), else the running ssh-agent.
fn ssh_auth(git: &crate::config::GitConfig, remote: &str) -> Result<crate::git::Auth> {
    let remote = crate::git::redact_url(remote);
    let Some(key) = &git.ssh_key else {
        if std::env::var_os("SSH_AUTH_SOCK").is_none_or(|s| s.is_empty()) {
            bail!(
                "{remote} is reached over ssh and there is no key to log in with: set `git.ssh_key` \
                 in rebake.yaml to a private key file, or run rebake with an ssh-agent \
                 (SSH_AUTH_SOCK is not set)"
            );
        }
        return Ok(crate::git::Auth::SshAgent);
    };
    if let Err(e) = std::fs::File::open(key) {
        bail!(
            "cannot read the ssh key {} (git.ssh_key in rebake.yaml) for {remote}: {e}",
            key.display()
        );
    }
    let passphrase = match &git.ssh_key_passphrase_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            anyhow!(
                "environment variable {var} (git.ssh_key_passphrase_env) is not set; it holds \
                 the passphrase of the ssh key {}",
                key.display()
            )
        })?),
        None => None,
    };
    Ok(crate::git::Auth::SshKey {
        private: key.clone(),
        passphrase,
    })
}

fn token_from_env(var: Option<&str>, forge: &str) -> Result<String> {
    let var = var.ok_or_else(|| anyhow!("forge {forge}: set `token_env` in rebake.yaml (the environment variable holding the token)"))?;
    std::env::var(var).map_err(|_| {
        anyhow!("forge {forge}: environment variable {var} (forge.token_env) is not set")
    })
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
async fn propose_on(
    ctx: &Context,
    c: &Connection,
    config: &Config,
    state_dir: &Path,
    entries: &[crate::debian::sources::SourceEntry],
    req: &ProposeRequest,
) -> Result<Vec<crate::propose::ProposeResult>> {
    let tracker = tracker_from(config, None, &[]).await?;
    let run = crate::propose::ProposeRun {
        remote_url: c.remote_url.clone(),
        auth: c.auth.clone(),
        identity: crate::git::Identity::new(&config.git.author_name, &config.git.author_email),
        workspace_dir: c.workspace_dir.clone(),
        plan: crate::pipeline::BuildPlan {
            repo: ctx.repo.clone(),
            state_dir: state_dir.to_path_buf(),
            engine_host: config.engine.host.clone(),
            registry: if req.no_push {
                None
            } else {
                config.registry.clone()
            },
            force: false,
            no_cache: false,
            source_url: config.forge.as_ref().map(|f| f.url.clone()),
        },
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

/// The project's example policies and templates, built into the binary: the GitOps repository
/// `rebake run --once` works on when it is given none.
pub const EMBEDDED_DEFAULT: &[(&str, &str)] = &[
    (
        "policies/debian.yaml",
        include_str!("../policies/debian.yaml"),
    ),
    (
        "policies/nginx.yaml",
        include_str!("../policies/nginx.yaml"),
    ),
    (
        "policies/postgres.yaml",
        include_str!("../policies/postgres.yaml"),
    ),
    (
        "templates/debian.Dockerfile.hbs",
        include_str!("../templates/debian.Dockerfile.hbs"),
    ),
    (
        "templates/nginx.Dockerfile.hbs",
        include_str!("../templates/nginx.Dockerfile.hbs"),
    ),
    (
        "templates/postgres.Dockerfile.hbs",
        include_str!("../templates/postgres.Dockerfile.hbs"),
    ),
];

/// Creates (once) a scratch GitOps repository under the state directory holding the embedded
/// default: a bare `origin.git` (the plain-git forge's remote) and a clone `work` of it.
/// Returns the clone; an existing one is left as it is (it may hold merges).
pub fn embedded_default_repo(state_dir: &Path) -> Result<PathBuf> {
    let root = state_dir.join("default");
    let origin = root.join("origin.git");
    let work = root.join("work");
    if work.join(".git").exists() {
        return Ok(work);
    }
    std::fs::create_dir_all(&root)?;
    let bare = git2::Repository::init_opts(
        &origin,
        git2::RepositoryInitOptions::new()
            .bare(true)
            .initial_head("main"),
    )
    .with_context(|| format!("cannot create {}", origin.display()))?;
    drop(bare);
    let repo = git2::Repository::init_opts(
        &work,
        git2::RepositoryInitOptions::new().initial_head("main"),
    )?;
    for (path, text) in EMBEDDED_DEFAULT {
        let p = work.join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(&work))?;
        std::fs::write(&p, text)?;
    }
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now("rebake", "rebake@localhost")?;
    repo.commit(
        Some("HEAD"),
        &sig,
        &sig,
        "rebake's embedded default: example policies and templates",
        &tree,
        &[],
    )?;
    let mut remote = repo.remote("origin", &origin.display().to_string())?;
    remote.push(&["refs/heads/main:refs/heads/main"], None)?;
    Ok(work)
}

#[derive(Debug, Clone)]
pub struct RunRequest {
    pub sources: Option<PathBuf>,
    pub no_push: bool,
}

/// `rebake run --once`, the main job: scan → propose → deploy what has been merged. Without a
/// `rebake.yaml` in the repository it runs on the embedded default.
pub fn run_once(ctx: &Context, req: RunRequest) -> Result<u8> {
    let mut ctx = ctx.clone();
    let embedded = ctx.config.is_none() && !ctx.repo.join("rebake.yaml").exists();
    if embedded {
        let config = ctx.load_config()?;
        let state_dir = ctx.state_dir(&config);
        ctx.repo = embedded_default_repo(&state_dir)?;
        println!(
            "No rebake.yaml here: using the embedded default (example policies debian, nginx, postgres) in {}",
            ctx.repo.display()
        );
    }
    println!("\n== propose: scan, build, test, and one proposal per image with updates");
    let proposed = propose(
        &ctx,
        ProposeRequest {
            images: Vec::new(),
            sources: req.sources.clone(),
            no_push: req.no_push,
            format: OutputFormat::Human,
        },
    )?;
    println!("\n== deploy: what the default branch's locks record, where the policies say");
    let deployed = deploy(
        &ctx,
        DeployRequest {
            images: Vec::new(),
            commit: None,
            format: OutputFormat::Human,
        },
    )?;
    let config = ctx.load_config()?;
    let state_dir = ctx.state_dir(&config);
    println!("\nWhere to look:");
    println!("  build logs:      {}", state_dir.join("logs").display());
    println!(
        "  deployments:     {}",
        state_dir.join("deployments.log").display()
    );
    if embedded {
        println!(
            "  proposals:       branches rebake/<image> of {}",
            state_dir.join("default/origin.git").display()
        );
        println!("\nTo merge the nginx proposal as a reviewer would, then deploy it (paste both):");
        println!("  {}", merge_hint(&ctx.repo, "rebake/nginx"));
        println!("  {}", run_once_hint(&ctx));
    }
    Ok(proposed.max(deployed))
}

/// The git commands that merge `branch` into the embedded default's `main` and push it, as a
/// reviewer merging on a forge would (a fast-forward when `main` has not moved since).
fn merge_hint(work: &Path, branch: &str) -> String {
    let work = std::path::absolute(work).unwrap_or_else(|_| work.to_path_buf());
    let w = crate::output::shell_quote(&work.display().to_string());
    format!(
        "git -C {w} fetch -q origin && git -C {w} merge -q --no-edit origin/{branch} && \
         git -C {w} push -q origin main"
    )
}

/// `rebake run --once` as this run was started (the same state directory).
fn run_once_hint(ctx: &Context) -> String {
    let mut hint = format!("{} run --once", crate::output::self_command());
    if let Some(dir) = &ctx.state_dir {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        hint.push_str(&format!(
            " --state-dir {}",
            crate::output::shell_quote(&dir.display().to_string())
        ));
    }
    hint
}

/// The service's jobs: a scan is a propose run; a merged proposal is deployed at its merge
/// commit and the result commented on it.
pub struct ServiceJobs {
    pub ctx: Context,
}

impl crate::server::Jobs for ServiceJobs {
    async fn scan(&self, scope: crate::server::ScanScope) -> Result<crate::server::ScanSummary> {
        use crate::propose::Action;
        let req = ProposeRequest {
            images: scope.names(),
            sources: None,
            no_push: false,
            format: OutputFormat::Human,
        };
        // One forge connection for the whole job (a GitHub App mints one token).
        let config = self.ctx.load_config()?;
        let entries = load_sources(None, &config)?;
        let state_dir = self.ctx.state_dir(&config);
        let c = connect_forge(&self.ctx, &config, &state_dir).await?;
        let results = propose_on(&self.ctx, &c, &config, &state_dir, &entries, &req).await?;
        // Polling fallback for a missed merge webhook: deploy what the default branch's locks
        // record now (targets already running it are left alone).
        let deploy = DeployRequest {
            images: scope.names(),
            commit: None,
            format: OutputFormat::Human,
        };
        for r in deploy_on(&c, &config, &state_dir, &deploy, None).await? {
            if !r.ok() {
                tracing::warn!(
                    "scheduled deploy of {} did not succeed: {:?}",
                    r.image,
                    r.refused
                );
            }
        }
        // Policies may have changed on the default branch: their schedules with them.
        let schedules = match scan_schedules_on(&c, &config).await {
            Ok(schedules) => Some(schedules),
            Err(e) => {
                tracing::warn!("keeping the scan schedules: {e:#}");
                None
            }
        };
        let changed = |a: &Action| matches!(a, Action::Opened | Action::Updated);
        Ok(crate::server::ScanSummary {
            schedules,
            findings: results
                .iter()
                .filter(|r| !matches!(r.action, Action::Current))
                .count() as u64,
            builds: results.iter().filter(|r| changed(&r.action)).count() as u64,
            // A review group's images share one proposal.
            proposals: results
                .iter()
                .filter(|r| changed(&r.action))
                .map(|r| crate::propose::proposal_branch(&r.image, r.group.as_deref()))
                .collect::<std::collections::BTreeSet<_>>()
                .len() as u64,
        })
    }

    async fn deploy(&self, merged: crate::server::MergedProposal) -> Result<()> {
        use crate::forge::Forge;
        let (images, group) = merged_selection(&merged.head_branch);
        let req = DeployRequest {
            images,
            commit: Some(merged.merge_commit.clone()),
            format: OutputFormat::Human,
        };
        let config = self.ctx.load_config()?;
        let state_dir = self.ctx.state_dir(&config);
        let c = connect_forge(&self.ctx, &config, &state_dir).await?;
        let results = deploy_on(&c, &config, &state_dir, &req, group).await?;
        for r in &results {
            // The deployment record on the merged proposal (plain git: the deployments log).
            if merged.number > 0 {
                if let Err(e) = c
                    .forge
                    .comment(merged.number, &crate::rollout::comment(r))
                    .await
                {
                    tracing::warn!("cannot comment on proposal {}: {e}", merged.number);
                }
            }
        }
        if results.iter().all(|r| r.ok()) {
            Ok(())
        } else {
            anyhow::bail!("deploy of {} did not succeed", merged.head_branch)
        }
    }
}

/// What a merged proposal deploys, by its head branch: `rebake/group/<name>` every image of the
/// group, as the policies at the merge commit say (targets already running an image's locked
/// digest are left alone); `rebake/<image>` that image. Returns (images, group).
fn merged_selection(head_branch: &str) -> (Vec<String>, Option<String>) {
    match head_branch.strip_prefix(crate::propose::GROUP_BRANCH_PREFIX) {
        Some(group) => (Vec::new(), Some(group.to_string())),
        None => (
            vec![head_branch
                .strip_prefix("rebake/")
                .unwrap_or(head_branch)
                .to_string()],
            None,
        ),
    }
}

/// [`scan_schedules`] as the policies on the GitOps repository's default branch say (the
/// workspace as the last propose run fetched it).
pub async fn scan_schedules_at_default_branch(
    ctx: &Context,
) -> Result<Vec<crate::server::ScanSchedule>> {
    let config = ctx.load_config()?;
    let state_dir = ctx.state_dir(&config);
    let c = connect_forge(ctx, &config, &state_dir).await?;
    scan_schedules_on(&c, &config).await
}

/// [`scan_schedules_at_default_branch`] through an open forge connection.
async fn scan_schedules_on(
    c: &Connection,
    config: &Config,
) -> Result<Vec<crate::server::ScanSchedule>> {
    let scratch = tempfile::tempdir()?;
    let to = scratch.path().to_path_buf();
    crate::git::with_workspace(&c.remote_url, &c.workspace_dir, &c.auth, move |ws| {
        let branch = ws.default_branch()?;
        let head = ws
            .remote_head(&branch)?
            .ok_or_else(|| anyhow!("the remote has no branch {branch}"))?;
        crate::propose::export_tree(ws.repo(), head, &to)
    })
    .await?;
    scan_schedules(config, scratch.path())
}

/// What the service scans when: rebake.yaml's `schedule.scan` every image, and each policy's
/// own `schedule` its image (at start from `repo`'s policies; after each scan from the default
/// branch's).
pub fn scan_schedules(config: &Config, repo: &Path) -> Result<Vec<crate::server::ScanSchedule>> {
    use crate::server::{ScanSchedule, ScanScope};
    let mut schedules = vec![ScanSchedule {
        cron: config.schedule.scan.clone(),
        scope: ScanScope::All,
    }];
    for policy in load_repo_policies(repo, &[])? {
        if let Some(cron) = policy.schedule {
            schedules.push(ScanSchedule {
                cron,
                scope: ScanScope::images([policy.name]),
            });
        }
    }
    Ok(schedules)
}

/// `rebake serve --listen ADDR`: webhooks, metrics, and scans on the configured schedule,
/// until SIGINT/SIGTERM.
pub fn serve(ctx: &Context, listen: &str) -> Result<u8> {
    let config = ctx.load_config()?;
    let state_dir = ctx.state_dir(&config);
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        eprintln!(
            "rebake serve: listening on {} (POST /webhook/github, /webhook/gitea; GET /healthz, /metrics)",
            listener.local_addr()?
        );
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        crate::server::serve(
            listener,
            crate::server::ServeConfig {
                secret_env: config.webhook.secret_env.clone(),
                state_dir,
                schedules: scan_schedules(&config, &ctx.repo)?,
                deploys_from: config.forge.as_ref().and_then(|f| {
                    f.repository
                        .as_ref()
                        .map(|slug| crate::server::DeploysFrom {
                            repository: format!("{}/{}", slug.owner, slug.name),
                            branch: f.default_branch.clone(),
                        })
                }),
            },
            std::sync::Arc::new(ServiceJobs { ctx: ctx.clone() }),
            shutdown,
        )
        .await
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ForgeConfig, ForgeKind};
    use crate::git::Auth;

    /// The auth `connect_forge` picks for a plain-git forge at `url` with `git` settings.
    fn auth_for(url: &str, git: crate::config::GitConfig) -> Result<Auth> {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            repo: dir.path().to_path_buf(),
            config: None,
            state_dir: Some(dir.path().join("state")),
        };
        let config = Config {
            forge: Some(ForgeConfig {
                kind: ForgeKind::Git,
                github_app: None,
                url: url.to_string(),
                repository: None,
                token_env: None,
                default_branch: "main".into(),
            }),
            git,
            ..Config::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(connect_forge(&ctx, &config, &dir.path().join("state")))
            .map(|c| c.auth)
    }

    #[test]
    fn plain_git_forge_auth_follows_the_remote_transport() {
        let keys = tempfile::tempdir().unwrap();
        let key = keys.path().join("id_ed25519");
        std::fs::write(&key, "not checked here").unwrap();
        let with_key = crate::config::GitConfig {
            ssh_key: Some(key.clone()),
            ..Config::default().git
        };
        let ssh = auth_for("ssh://git@127.0.0.1:2222/ops/images.git", with_key.clone()).unwrap();
        assert_eq!(
            ssh,
            Auth::SshKey {
                private: key.clone(),
                passphrase: None
            }
        );
        let scp = auth_for("git@example.org:ops/images.git", with_key.clone()).unwrap();
        assert!(matches!(scp, Auth::SshKey { .. }), "{scp:?}");
        // The key is for ssh only: an https or local remote gets no ssh credentials.
        let https = auth_for("https://example.org/ops/images.git", with_key.clone()).unwrap();
        assert_eq!(https, Auth::None);
        let local = auth_for("/srv/git/images.git", with_key.clone()).unwrap();
        assert_eq!(local, Auth::None);

        let missing = crate::config::GitConfig {
            ssh_key: Some(keys.path().join("absent")),
            ..Config::default().git
        };
        let err = auth_for("git@example.org:ops/images.git", missing)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("git.ssh_key") && err.contains("absent"),
            "{err}"
        );

        let unset_passphrase = crate::config::GitConfig {
            ssh_key_passphrase_env: Some("REBAKE_TEST_NEVER_SET_PASSPHRASE".into()),
            ..with_key
        };
        let err = auth_for("git@example.org:ops/images.git", unset_passphrase)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("REBAKE_TEST_NEVER_SET_PASSPHRASE")
                && err.contains("git.ssh_key_passphrase_env"),
            "{err}"
        );
    }

    #[test]
    fn a_merged_group_proposal_deploys_its_group() {
        assert_eq!(
            merged_selection("rebake/nginx"),
            (vec!["nginx".to_string()], None)
        );
        assert_eq!(
            merged_selection("rebake/group/web"),
            (Vec::new(), Some("web".to_string()))
        );
    }
}
