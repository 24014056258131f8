//! `rebake run --once`, the main job, on the repository or on the embedded default.

use super::*;

/// The project's example policies and templates, built into the binary: the GitOps repository
/// `rebake run --once` works on when it is given none.
pub const EMBEDDED_DEFAULT: &[(&str, &str)] = &[
    (
        "policies/debian.yaml",
        include_str!("../../policies/debian.yaml"),
    ),
    (
        "policies/nginx.yaml",
        include_str!("../../policies/nginx.yaml"),
    ),
    (
        "policies/postgres.yaml",
        include_str!("../../policies/postgres.yaml"),
    ),
    (
        "templates/debian.Dockerfile.hbs",
        include_str!("../../templates/debian.Dockerfile.hbs"),
    ),
    (
        "templates/nginx.Dockerfile.hbs",
        include_str!("../../templates/nginx.Dockerfile.hbs"),
    ),
    (
        "templates/postgres.Dockerfile.hbs",
        include_str!("../../templates/postgres.Dockerfile.hbs"),
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
    println!(
        "\n== propose: scan, build, test, and one proposal per image (or image tree) with updates"
    );
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
            rollback: false,
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
            "  proposals:       branches rebake/<image> and rebake/group/<group> of {}",
            state_dir.join("default/origin.git").display()
        );
        // nginx builds on debian: its proposal is its image tree's (review group).
        let group = crate::policy::load_policies(&ctx.repo)
            .ok()
            .and_then(|ps| ps.into_iter().find(|p| p.name == "nginx"))
            .and_then(|p| p.review.group);
        let what = match &group {
            Some(g) => format!("the {g} proposal (nginx and the images of its tree)"),
            None => "the nginx proposal".to_string(),
        };
        println!("\nTo merge {what} as a reviewer would, then deploy it (paste both):");
        let branch = crate::repo::proposal_branch("nginx", group.as_deref());
        println!("  {}", merge_hint(&ctx.repo, &branch));
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
