//! The GitOps repository's remote, its credentials and the forge, from rebake.yaml.

use super::*;

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
}
