//! The bot's own configuration, `rebake.yaml`.
//!
//! Parsing is two steps, as everywhere in rebake: serde reads the YAML into `Raw*` types that
//! mirror the file (unknown fields are rejected), then validation turns them into the public
//! types that later stages use, collecting every problem as a [`Diagnostic`] that points at the
//! file, line and field. The diagnostics themselves, shared with policy validation, are in
//! `diagnostics.rs`; cron schedules in `cron.rs`.

mod cron;
mod diagnostics;
pub mod input;

pub use cron::CronSchedule;
pub use diagnostics::{locate, Diagnostic, FieldPath, ScalarString, Segment};
pub(crate) use diagnostics::{merge_problems, parse_yaml, scalar_map, Diagnostics};

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Small validators shared with policies
// ---------------------------------------------------------------------------------------------

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether a string looks like a secret rather than the name of a variable holding one, so
/// that errors never echo it.
pub(crate) fn looks_like_secret(value: &str) -> bool {
    const PREFIXES: [&str; 6] = ["ghp_", "gho_", "ghs_", "github_pat_", "glpat-", "sha256="];
    let has = |f: fn(&u8) -> bool| value.as_bytes().iter().any(f);
    PREFIXES.iter().any(|p| value.starts_with(p))
        || (value.len() >= 20 && !is_env_var_name(value))
        || (value.len() >= 30 && has(u8::is_ascii_lowercase) && has(u8::is_ascii_digit))
}

/// A Docker engine address as bollard and the docker CLI accept it.
pub fn is_valid_engine_host(host: &str) -> bool {
    const SCHEMES: [&str; 6] = [
        "unix://", "tcp://", "http://", "https://", "ssh://", "npipe://",
    ];
    SCHEMES
        .iter()
        .any(|s| host.len() > s.len() && host.starts_with(s))
        && !host.chars().any(char::is_whitespace)
}

pub(crate) const ENGINE_HOST_HELP: &str =
    "write the engine address with its scheme, like unix:///var/run/docker.sock or tcp://10.0.0.5:2376";

/// Resolves a path written in a config file: `~/` is the home directory, a relative path is
/// relative to the directory of the file that names it.
pub fn resolve_path(base_dir: &Path, raw: &str) -> PathBuf {
    if let Some(rest) = raw.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let path = Path::new(raw);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

// ---------------------------------------------------------------------------------------------
// rebake.yaml: raw form
// ---------------------------------------------------------------------------------------------

/// `rebake.yaml` as written. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: Option<String>,
    pub sources: Option<String>,
    pub keyring: Option<String>,
    pub security_tracker: Option<RawSecurityTracker>,
    pub forge: Option<RawForge>,
    pub registry: Option<RawRegistry>,
    pub engine: Option<RawEngine>,
    pub schedule: Option<RawSchedule>,
    pub webhook: Option<RawWebhook>,
    pub git: Option<RawGit>,
    pub signing: Option<RawSigning>,
    pub deploy: Option<RawDeploy>,
    pub backups: Option<std::collections::BTreeMap<String, RawBackupStore>>,
}

/// `signing`: the key rebake signs pushed images and their attestations with.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    /// PEM ECDSA P-256 private key (PKCS#8 or SEC1), a file path.
    pub key_file: Option<String>,
    /// Name of the environment variable holding that PEM instead.
    pub key_env: Option<String>,
    /// PEM public key checked by `verify` and the deploy gate; default: the private key's.
    pub public_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeploy {
    /// `required` or `off`.
    pub verify: Option<String>,
}

/// One store under `backups:`: a host directory or a named Docker volume.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackupStore {
    pub dir: Option<String>,
    pub volume: Option<String>,
    pub keep_last: Option<u32>,
    pub keep_for: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurityTracker {
    pub json: Option<String>,
    pub dsa_list: Option<String>,
    pub dla_list: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForge {
    pub kind: Option<ForgeKind>,
    pub url: Option<String>,
    pub repository: Option<String>,
    pub token_env: Option<String>,
    pub default_branch: Option<String>,
    pub app: Option<RawGitHubApp>,
}

/// GitHub App authentication: `forge.app` in rebake.yaml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGitHubApp {
    pub id: Option<u64>,
    pub installation_id: Option<u64>,
    /// The App's private key (PEM), a file path (relative to rebake.yaml's folder).
    pub private_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    pub url: Option<String>,
    #[serde(default)]
    pub insecure: bool,
    pub username: Option<String>,
    pub password_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    pub host: Option<String>,
    pub jobs: Option<u32>,
    pub builders: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub scan: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub secret_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGit {
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    /// Private key for ssh remotes, a file path (relative to rebake.yaml's folder).
    pub ssh_key: Option<String>,
    /// Name of the environment variable holding `ssh_key`'s passphrase.
    pub ssh_key_passphrase_env: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// rebake.yaml: validated form
// ---------------------------------------------------------------------------------------------

/// Debian security tracker's JSON export of every CVE and its status per release.
pub const DEFAULT_TRACKER_JSON: &str = "https://security-tracker.debian.org/tracker/data/json";
/// Debian Security Advisories with the packages and versions they fix.
pub const DEBIAN_DSA_LIST: &str =
    "https://salsa.debian.org/security-tracker-team/security-tracker/-/raw/master/data/DSA/list";
/// Debian LTS Advisories.
pub const DEBIAN_DLA_LIST: &str =
    "https://salsa.debian.org/security-tracker-team/security-tracker/-/raw/master/data/DLA/list";
pub const DEFAULT_ENGINE_HOST: &str = "unix:///var/run/docker.sock";
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
/// Hourly, at seven past so that many bots do not hit the mirrors on the hour.
pub const DEFAULT_SCAN_SCHEDULE: &str = "7 * * * *";
pub const DEFAULT_WEBHOOK_SECRET_ENV: &str = "REBAKE_WEBHOOK_SECRET";

/// The validated bot configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The file it was read from; None when these are the defaults.
    pub file: Option<PathBuf>,
    /// Where the bot keeps caches and the last-seen archive dates.
    pub state_dir: PathBuf,
    /// A deb822 `.sources` file naming the archives; None = the host's apt configuration.
    pub sources: Option<PathBuf>,
    /// Keyring for sources that name none; None = Debian's archive keyring.
    pub keyring: Option<PathBuf>,
    /// None = no security tracker data (findings still come from the archive).
    pub security_tracker: Option<SecurityTracker>,
    /// Where pull requests go; None = no forge (plan and build only).
    pub forge: Option<ForgeConfig>,
    /// Where images are pushed; None = no registry (images stay in the engine).
    pub registry: Option<RegistryConfig>,
    pub engine: EngineConfig,
    pub schedule: ScheduleConfig,
    pub webhook: WebhookConfig,
    pub git: GitConfig,
    /// None = images are pushed unsigned, without attestations.
    pub signing: Option<SigningConfig>,
    pub deploy: DeployConfig,
    /// Where backup jobs store their dumps, by name (`backups:`).
    pub backups: std::collections::BTreeMap<String, BackupStore>,
}

/// Where the signing key comes from (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SigningConfig {
    pub key_file: Option<PathBuf>,
    pub key_env: Option<String>,
    pub public_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeployConfig {
    /// `deploy.verify: required`: deploy only digests whose signature and provenance verify.
    pub verify_required: bool,
}

/// A backup store: dumps under `<image>/<job>/` with a `.sha256` beside each, pruned after each
/// new dump to the newest `keep_last` and to those younger than `keep_for` (the newest dump is
/// always kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupStore {
    pub location: BackupLocation,
    pub keep_last: Option<u32>,
    #[serde(with = "humantime_serde_opt")]
    pub keep_for: Option<std::time::Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupLocation {
    /// A directory on the machine rebake runs on.
    Dir(PathBuf),
    /// A named volume of the engine (created when missing), used through its mount point, so
    /// rebake runs on the engine's machine.
    Volume(String),
}

/// Durations shown as humantime text (`30days`) in JSON.
mod humantime_serde_opt {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// Where Debian's security data comes from. Each is an http(s) URL or an absolute file path
/// (relative paths in the file are resolved against its directory). Without `json`, Debian's
/// public tracker is read (cached); `json: off` reads none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityTracker {
    /// The tracker's JSON export (CVE -> package -> fixed version per release); None = not used.
    pub json: Option<String>,
    /// DSA list (advisory -> packages and versions); None = DSA numbers are not looked up.
    pub dsa_list: Option<String>,
    /// DLA list, the same for Debian LTS.
    pub dla_list: Option<String>,
    /// `json: off`: no tracker JSON, not even Debian's public one.
    pub json_off: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    Github,
    Gitea,
    /// A plain git remote: branches are pushed, no pull requests are opened.
    Git,
}

/// `owner/name` of a repository on a forge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoSlug {
    pub owner: String,
    pub name: String,
}

impl fmt::Display for RepoSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgeConfig {
    pub kind: ForgeKind,
    /// GitHub only: authenticate as this GitHub App installation instead of with a token.
    pub github_app: Option<GitHubAppConfig>,
    /// GitHub: the API base (default https://api.github.com); Gitea: the server's base URL;
    /// git: the remote URL.
    pub url: String,
    /// Always set for GitHub and Gitea.
    pub repository: Option<RepoSlug>,
    /// Name of the environment variable that holds the token (never the token).
    pub token_env: Option<String>,
    pub default_branch: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitHubAppConfig {
    pub app_id: u64,
    pub installation_id: u64,
    pub private_key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryConfig {
    /// As written: `host[:port][/namespace]`.
    pub url: String,
    /// `host[:port]`.
    pub host: String,
    pub namespace: Option<String>,
    /// Plain HTTP (a registry on 127.0.0.1 in tests).
    pub insecure: bool,
    /// The registry login, when it needs one; always with `password_env`.
    pub username: Option<String>,
    /// Name of the environment variable holding the password or token (never the secret).
    pub password_env: Option<String>,
}

impl RegistryConfig {
    /// The repository reference of an image in this registry, without tag or digest.
    pub fn repository_for(&self, image: &str) -> String {
        match &self.namespace {
            Some(namespace) => format!("{}/{}/{}", self.host, namespace, image),
            None => format!("{}/{}", self.host, image),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineConfig {
    pub host: String,
    /// How many images one engine builds at once (`engine.jobs`; default: the host's cores).
    pub jobs: usize,
    /// More engines to build on (`engine.builders`), beside `host`: images are spread over
    /// them by tree order and load, and reach each other through the registry.
    pub builders: Vec<String>,
}

/// The most builds one engine runs at once that rebake accepts.
pub const MAX_ENGINE_JOBS: u32 = 64;

/// `engine.jobs` unless set: the host's cores.
pub fn default_engine_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleConfig {
    pub scan: CronSchedule,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookConfig {
    /// Name of the environment variable holding the HMAC secret.
    pub secret_env: String,
}

/// rebake.yaml `git`: who rebake's commits are by, and how it authenticates to an ssh origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitConfig {
    pub author_name: String,
    pub author_email: String,
    /// Private key for ssh remotes; None = the keys of the running ssh-agent.
    pub ssh_key: Option<PathBuf>,
    /// Name of the environment variable holding `ssh_key`'s passphrase (never the passphrase).
    pub ssh_key_passphrase_env: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            file: None,
            state_dir: default_state_dir(),
            sources: None,
            keyring: None,
            security_tracker: None,
            forge: None,
            registry: None,
            engine: EngineConfig {
                host: DEFAULT_ENGINE_HOST.to_string(),
                jobs: default_engine_jobs(),
                builders: Vec::new(),
            },
            schedule: ScheduleConfig {
                scan: CronSchedule::parse(DEFAULT_SCAN_SCHEDULE)
                    .expect("the default schedule is valid"),
            },
            webhook: WebhookConfig {
                secret_env: DEFAULT_WEBHOOK_SECRET_ENV.to_string(),
            },
            git: GitConfig {
                author_name: "rebake".to_string(),
                author_email: "rebake@localhost".to_string(),
                ssh_key: None,
                ssh_key_passphrase_env: None,
            },
            signing: None,
            deploy: DeployConfig::default(),
            backups: Default::default(),
        }
    }
}

/// `$XDG_STATE_HOME/rebake`, else `~/.local/state/rebake`, else `/var/lib/rebake`.
pub fn default_state_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME") {
        let state = PathBuf::from(state);
        if state.is_absolute() {
            return state.join("rebake");
        }
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/state/rebake"),
        _ => PathBuf::from("/var/lib/rebake"),
    }
}

/// Reads and validates a config file. A missing file is an error here; see
/// [`load_or_default`].
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let source = input::read_input(None, path).map_err(|e| {
        vec![Diagnostic::file_level(
            path,
            format!("cannot read the config file: {e}"),
            "check the path given with --config, or remove the option to use defaults",
        )]
    })?;
    parse(path, &source)
}

/// Like [`load`], but a file that does not exist means all defaults.
pub fn load_or_default(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        _ => load(path),
    }
}

/// Parses and validates config text; `file` names it in diagnostics, and relative paths in it
/// are taken relative to `file`'s directory.
pub fn parse(file: &Path, source: &str) -> Result<Config, Vec<Diagnostic>> {
    parse_with_base_dir(file, source, file.parent().unwrap_or(Path::new(".")))
}

/// Like [`parse`], with relative paths taken relative to `base_dir`.
pub fn parse_with_base_dir(
    file: &Path,
    source: &str,
    base_dir: &Path,
) -> Result<Config, Vec<Diagnostic>> {
    let (raw, problems) = parse_yaml::<RawConfig>(file, source)?;
    merge_problems(problems, validate_config(raw, file, source, base_dir))
}

/// Turns the raw config into a [`Config`], reporting every problem.
pub fn validate_config(
    raw: RawConfig,
    file: &Path,
    source: &str,
    base_dir: &Path,
) -> Result<Config, Vec<Diagnostic>> {
    let mut d = Diagnostics::new(file, source);
    let root = FieldPath::root();
    let mut config = Config {
        file: Some(file.to_path_buf()),
        ..Config::default()
    };

    let path_field = |d: &mut Diagnostics, name: &str, value: Option<String>| {
        let value = value?;
        if value.trim().is_empty() {
            d.error(
                &root.key(name),
                "is empty",
                "give a path, or remove the field to use the default",
            );
            return None;
        }
        Some(resolve_path(base_dir, &value))
    };
    if let Some(state_dir) = path_field(&mut d, "state_dir", raw.state_dir) {
        config.state_dir = state_dir;
    }
    config.sources = path_field(&mut d, "sources", raw.sources);
    config.keyring = path_field(&mut d, "keyring", raw.keyring);

    if let Some(tracker) = raw.security_tracker {
        let field = root.key("security_tracker");
        let mut resource = |name: &str, value: Option<String>| {
            value.and_then(|v| url_or_path(&mut d, &field.key(name), &v, base_dir))
        };
        let json_off = tracker.json.as_deref() == Some("off");
        config.security_tracker = Some(SecurityTracker {
            json_off,
            json: resource("json", tracker.json.filter(|j| j != "off")),
            dsa_list: resource("dsa_list", tracker.dsa_list),
            dla_list: resource("dla_list", tracker.dla_list),
        });
    }

    if let Some(forge) = raw.forge {
        config.forge = validate_forge(&mut d, &root.key("forge"), forge, base_dir);
    }
    if let Some(registry) = raw.registry {
        config.registry = validate_registry(&mut d, &root.key("registry"), registry);
    }
    let engine = raw.engine.unwrap_or_default();
    if let Some(host) = engine.host {
        if is_valid_engine_host(&host) {
            config.engine.host = host;
        } else {
            d.error(
                &root.key("engine").key("host"),
                format!("'{host}' is not a Docker engine address"),
                ENGINE_HOST_HELP,
            );
        }
    }
    if let Some(jobs) = engine.jobs {
        if (1..=MAX_ENGINE_JOBS).contains(&jobs) {
            config.engine.jobs = jobs as usize;
        } else {
            d.error(
                &root.key("engine").key("jobs"),
                format!("{jobs} builds at once is not between 1 and {MAX_ENGINE_JOBS}"),
                "write how many images one engine builds at once, like 2",
            );
        }
    }
    for (i, host) in engine.builders.unwrap_or_default().into_iter().enumerate() {
        let field = root.key("engine").key("builders").index(i);
        if !is_valid_engine_host(&host) {
            d.error(
                &field,
                format!("'{host}' is not a Docker engine address"),
                ENGINE_HOST_HELP,
            );
        } else if host == config.engine.host || config.engine.builders.contains(&host) {
            d.error(
                &field,
                format!("'{host}' is listed twice"),
                "name each engine once",
            );
        } else if config.registry.is_none() {
            d.error(
                &field,
                "building on more than one engine needs a registry: an image built on one \
                 engine reaches the others (its children, the deploy) by its digest",
                "configure registry: (url, and a login if it needs one)",
            );
        } else {
            config.engine.builders.push(host);
        }
    }
    if let Some(scan) = raw.schedule.and_then(|s| s.scan) {
        match CronSchedule::parse(&scan) {
            Ok(schedule) => config.schedule.scan = schedule,
            Err(problem) => d.error(
                &root.key("schedule").key("scan"),
                format!("'{scan}' is not a cron expression: {problem}"),
                "write five fields: minute hour day-of-month month day-of-week, \
                 like \"7 * * * *\" (hourly at :07) or \"30 4 * * 1-5\"",
            ),
        }
    }
    if let Some(secret_env) = raw.webhook.and_then(|w| w.secret_env) {
        if check_env_name(&mut d, &root.key("webhook").key("secret_env"), &secret_env) {
            config.webhook.secret_env = secret_env;
        }
    }
    if let Some(git) = raw.git {
        let field = root.key("git");
        if let Some(name) = git.author_name {
            if name.trim().is_empty() || name.contains(['\n', '<', '>']) {
                d.error(
                    &field.key("author_name"),
                    "is empty or contains a newline, '<' or '>'",
                    "write a name like \"rebake bot\"",
                );
            } else {
                config.git.author_name = name;
            }
        }
        if let Some(email) = git.author_email {
            let valid = email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && !domain.is_empty() && !domain.contains('@')
            }) && !email.contains(|c: char| c.is_whitespace() || c == '<' || c == '>');
            if valid {
                config.git.author_email = email;
            } else {
                d.error(
                    &field.key("author_email"),
                    format!("'{email}' is not an email address"),
                    "write an address like rebake@example.org",
                );
            }
        }
        config.git.ssh_key = git
            .ssh_key
            .and_then(|key| validate_ssh_key(&mut d, &field.key("ssh_key"), &key, base_dir));
        if let Some(name) = git.ssh_key_passphrase_env {
            let f = field.key("ssh_key_passphrase_env");
            if check_env_name(&mut d, &f, &name) {
                if config.git.ssh_key.is_none() {
                    d.error(
                        &f,
                        "is only used with git.ssh_key (the ssh-agent holds keys already unlocked)",
                        "add 'ssh_key: <path of the private key>', or remove this field",
                    );
                } else {
                    config.git.ssh_key_passphrase_env = Some(name);
                }
            }
        }
    }
    if let Some(signing) = raw.signing {
        config.signing = validate_signing(&mut d, &root.key("signing"), signing, base_dir);
    }
    if let Some(verify) = raw.deploy.and_then(|x| x.verify) {
        match verify.as_str() {
            "required" => config.deploy.verify_required = true,
            "off" => {}
            other => d.error(
                &root.key("deploy").key("verify"),
                format!("'{other}' is not a verification mode"),
                "write 'required' (deploy only signed images with matching provenance) or 'off'",
            ),
        }
        if config.deploy.verify_required && config.signing.is_none() {
            d.error(
                &root.key("deploy").key("verify"),
                "is required, but no key to check signatures with is configured",
                "add 'signing: {public_key: <path of the PEM public key>}' (or the key_file \
                 rebake signs with)",
            );
        }
    }
    for (name, store) in raw.backups.unwrap_or_default() {
        if let Some(store) = validate_backup_store(
            &mut d,
            &root.key("backups").key(&name),
            &name,
            store,
            base_dir,
        ) {
            config.backups.insert(name, store);
        }
    }
    d.into_result(config)
}

/// `signing`: one private key source (`key_file` or `key_env`) and/or a `public_key`; paths,
/// never keys.
fn validate_signing(
    d: &mut Diagnostics,
    field: &FieldPath,
    raw: RawSigning,
    base_dir: &Path,
) -> Option<SigningConfig> {
    let errors_before = d.list.len();
    let mut path = |name: &str, value: Option<String>| {
        let value = value?;
        if value.contains("-----BEGIN") || value.contains('\n') {
            d.error(
                &field.key(name),
                "looks like a key itself, not the path of a key file",
                "put the key in a file readable only by rebake's user and write its path here; \
                 remove the key from this file and replace it, it may have been committed",
            );
            None
        } else if value.trim().is_empty() {
            d.error(&field.key(name), "is empty", "give the path of a PEM file");
            None
        } else {
            Some(resolve_path(base_dir, &value))
        }
    };
    let key_file = path("key_file", raw.key_file);
    let public_key = path("public_key", raw.public_key);
    let key_env = raw
        .key_env
        .filter(|name| check_env_name(d, &field.key("key_env"), name));
    if key_file.is_some() && key_env.is_some() {
        d.error(
            &field.key("key_env"),
            "is given together with key_file; rebake signs with one key",
            "keep either key_file or key_env",
        );
    }
    if key_file.is_none() && key_env.is_none() && public_key.is_none() {
        d.error(
            field,
            "names no key",
            "add 'key_file: <path of the PEM private key>' to sign, or 'public_key: <path>' to \
             only verify",
        );
    }
    (d.list.len() == errors_before).then_some(SigningConfig {
        key_file,
        key_env,
        public_key,
    })
}

/// One store under `backups:`.
fn validate_backup_store(
    d: &mut Diagnostics,
    field: &FieldPath,
    name: &str,
    raw: RawBackupStore,
    base_dir: &Path,
) -> Option<BackupStore> {
    let errors_before = d.list.len();
    if !crate::policy::is_valid_job_name(name) {
        d.error(
            field,
            format!("'{name}' is not a usable store name"),
            "use letters, digits, '_', '.' and '-', starting with a letter or digit, like local",
        );
    }
    let location = match (raw.dir, raw.volume) {
        (Some(dir), None) if !dir.trim().is_empty() => {
            Some(BackupLocation::Dir(resolve_path(base_dir, &dir)))
        }
        (None, Some(volume))
            if crate::policy::is_valid_docker_name(&volume) && volume.len() >= 2 =>
        {
            Some(BackupLocation::Volume(volume))
        }
        (None, Some(volume)) => {
            d.error(
                &field.key("volume"),
                format!("'{volume}' is not a volume name"),
                "use letters, digits, '_', '.' and '-', starting with a letter or digit, like \
                 rebake-backups",
            );
            None
        }
        (Some(_), Some(_)) => {
            d.error(
                field,
                "has both dir: and volume:",
                "a store is one place: keep dir: (a host directory) or volume: (a named Docker \
                 volume)",
            );
            None
        }
        _ => {
            d.error(
                field,
                "names no place for the dumps",
                "add 'dir: /srv/backups' (a directory on this machine) or 'volume: \
                 rebake-backups' (a named Docker volume)",
            );
            None
        }
    };
    if raw.keep_last == Some(0) {
        d.error(
            &field.key("keep_last"),
            "0 would keep no dump",
            "give at least 1, or leave keep_last out to keep every dump (subject to keep_for)",
        );
    }
    let keep_for = raw
        .keep_for
        .and_then(|text| match humantime::parse_duration(text.trim()) {
            Ok(age) if !age.is_zero() => Some(age),
            Ok(_) => {
                d.error(
                    &field.key("keep_for"),
                    "0 would keep no dump",
                    "give a duration like 30d or 12w, or leave keep_for out",
                );
                None
            }
            Err(e) => {
                d.error(
                    &field.key("keep_for"),
                    format!("'{text}' is not a duration: {e}"),
                    "write a duration like 30d, 12w or 36h",
                );
                None
            }
        });
    let location = location?;
    (d.list.len() == errors_before).then_some(BackupStore {
        location,
        keep_last: raw.keep_last,
        keep_for,
    })
}

/// `git.ssh_key`: a path to a private key file, not the key itself and not its `.pub` half.
/// Whether the file exists is checked when rebake connects (`rebake check` may run where the key
/// is not installed).
fn validate_ssh_key(
    d: &mut Diagnostics,
    field: &FieldPath,
    value: &str,
    base_dir: &Path,
) -> Option<PathBuf> {
    if value.contains("PRIVATE KEY") || value.contains('\n') {
        d.error(
            field,
            "looks like a key itself, not the path of a key file",
            "put the private key in a file readable only by rebake's user and write its path \
             here; remove the key from this file and replace it, it may have been committed",
        );
    } else if value.trim().is_empty() {
        d.error(
            field,
            "is empty",
            "give the path of a private key file, like ~/.ssh/id_ed25519, or remove the field \
             to use the ssh-agent",
        );
    } else if value.ends_with(".pub") {
        d.error(
            field,
            format!("'{value}' is a public key; rebake needs the private one"),
            format!(
                "write the path without .pub, like {}",
                value.trim_end_matches(".pub")
            ),
        );
    } else {
        return Some(resolve_path(base_dir, value));
    }
    None
}

fn url_or_path(
    d: &mut Diagnostics,
    field: &FieldPath,
    value: &str,
    base_dir: &Path,
) -> Option<String> {
    if value.starts_with("http://") || value.starts_with("https://") {
        match reqwest::Url::parse(value) {
            Ok(url) if url.host_str().is_some() => Some(value.to_string()),
            Ok(_) | Err(_) => {
                d.error(
                    field,
                    format!("'{value}' is not a valid URL"),
                    "write a URL like https://security-tracker.debian.org/tracker/data/json",
                );
                None
            }
        }
    } else if value.contains("://") {
        d.error(
            field,
            format!("'{value}' uses a scheme rebake cannot fetch"),
            "use an http:// or https:// URL, or a file path",
        );
        None
    } else if value.trim().is_empty() {
        d.error(
            field,
            "is empty",
            "give a file path or an https:// URL, or remove the field",
        );
        None
    } else {
        Some(resolve_path(base_dir, value).to_string_lossy().into_owned())
    }
}

/// Checks a field that names an environment variable. Never echoes a value that might be the
/// secret itself.
fn check_env_name(d: &mut Diagnostics, field: &FieldPath, value: &str) -> bool {
    if looks_like_secret(value) {
        d.error(
            field,
            "looks like a secret itself, not the name of an environment variable",
            "put the NAME of the variable here (like GITHUB_TOKEN) and the secret in that \
             variable; remove the secret from this file and revoke it, it may have been committed",
        );
    } else if !is_env_var_name(value) {
        d.error(
            field,
            format!("'{value}' is not an environment variable name"),
            "use letters, digits and '_', not starting with a digit, like GITHUB_TOKEN",
        );
    } else {
        return true;
    }
    false
}

fn validate_forge(
    d: &mut Diagnostics,
    field: &FieldPath,
    raw: RawForge,
    base_dir: &Path,
) -> Option<ForgeConfig> {
    let errors_before = d.list.len();
    let Some(kind) = raw.kind else {
        d.error(
            &field.key("kind"),
            "is missing",
            "add 'kind: github', 'kind: gitea' or 'kind: git'",
        );
        return None;
    };
    let url = match (kind, raw.url) {
        (ForgeKind::Github, None) => Some(DEFAULT_GITHUB_API.to_string()),
        // People paste the web address; the API lives elsewhere.
        (ForgeKind::Github, Some(url)) if url.trim_end_matches('/') == "https://github.com" => {
            Some(DEFAULT_GITHUB_API.to_string())
        }
        (ForgeKind::Github | ForgeKind::Gitea, Some(url)) => {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && reqwest::Url::parse(&url).is_ok_and(|u| u.host_str().is_some());
            if !ok {
                d.error(
                    &field.key("url"),
                    format!("'{url}' is not an http(s) URL"),
                    "write the forge's base URL, like https://gitea.example.org",
                );
            }
            Some(url.trim_end_matches('/').to_string())
        }
        (ForgeKind::Gitea, None) => {
            d.error(
                &field.key("url"),
                "is missing; a Gitea forge has no default address",
                "add 'url: https://gitea.example.org'",
            );
            None
        }
        (ForgeKind::Git, Some(url)) => {
            if url.trim().is_empty() || url.chars().any(char::is_whitespace) {
                d.error(
                    &field.key("url"),
                    "is not a git remote URL",
                    "write a remote like git@example.org:ops/images.git or https://example.org/ops/images.git",
                );
            }
            Some(url)
        }
        (ForgeKind::Git, None) => {
            d.error(
                &field.key("url"),
                "is missing; a plain git forge needs the remote to push to",
                "add 'url: git@example.org:ops/images.git'",
            );
            None
        }
    };
    let repository = match raw.repository {
        Some(slug) => {
            let parts = slug.split_once('/').filter(|(owner, name)| {
                let ok = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                };
                ok(owner) && ok(name)
            });
            match parts {
                Some((owner, name)) => Some(RepoSlug {
                    owner: owner.to_string(),
                    name: name.to_string(),
                }),
                None => {
                    d.error(
                        &field.key("repository"),
                        format!("'{slug}' is not owner/name"),
                        "write the repository as owner/name, like ops/images",
                    );
                    None
                }
            }
        }
        None if kind != ForgeKind::Git => {
            d.error(
                &field.key("repository"),
                "is missing",
                "add 'repository: owner/name', the repository that holds the policies",
            );
            None
        }
        None => None,
    };
    let token_env = match (raw.token_env, kind) {
        (Some(name), _) => check_env_name(d, &field.key("token_env"), &name).then_some(name),
        (None, ForgeKind::Github) => Some("GITHUB_TOKEN".to_string()),
        (None, ForgeKind::Gitea) => Some("GITEA_TOKEN".to_string()),
        (None, ForgeKind::Git) => None,
    };
    let default_branch = raw.default_branch.unwrap_or_else(|| "main".to_string());
    if !is_valid_branch_name(&default_branch) {
        d.error(
            &field.key("default_branch"),
            format!("'{default_branch}' is not a valid branch name"),
            "write a branch name like main or master",
        );
    }
    let github_app = match raw.app {
        None => None,
        Some(_) if kind != ForgeKind::Github => {
            d.error(
                &field.key("app"),
                "is for GitHub only",
                "remove 'app', or set 'kind: github'",
            );
            None
        }
        Some(app) => {
            let f = field.key("app");
            let need = |d: &mut Diagnostics, name: &str, ok: bool, help: &str| {
                if !ok {
                    d.error(&f.key(name), "is missing", help);
                }
            };
            need(
                d,
                "id",
                app.id.is_some(),
                "add the App's numeric id ('id: 12345')",
            );
            need(
                d,
                "installation_id",
                app.installation_id.is_some(),
                "add the installation id of the App on this repository's owner",
            );
            need(
                d,
                "private_key_file",
                app.private_key_file.is_some(),
                "add the path of the App's private key (PEM) file",
            );
            match (app.id, app.installation_id, app.private_key_file) {
                (Some(app_id), Some(installation_id), Some(key)) => Some(GitHubAppConfig {
                    app_id,
                    installation_id,
                    private_key_file: resolve_path(base_dir, &key),
                }),
                _ => None,
            }
        }
    };
    if d.list.len() > errors_before {
        return None;
    }
    Some(ForgeConfig {
        kind,
        github_app,
        url: url?,
        repository,
        token_env,
        default_branch,
    })
}

/// A rough version of git's check-ref-format for a branch name.
fn is_valid_branch_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && !name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
}

fn validate_registry(
    d: &mut Diagnostics,
    field: &FieldPath,
    raw: RawRegistry,
) -> Option<RegistryConfig> {
    let Some(url) = raw.url else {
        d.error(
            &field.key("url"),
            "is missing",
            "add 'url: registry.example.org:5000' (host, optional port and namespace)",
        );
        return None;
    };
    let root = field.clone();
    let field = field.key("url");
    if url.contains("://") {
        d.error(
            &field,
            format!("'{url}' has a scheme"),
            "write host[:port][/namespace] without http:// or https://; \
             set 'insecure: true' for a plain-HTTP registry",
        );
        return None;
    }
    let (host, namespace) = match url.split_once('/') {
        Some((host, namespace)) => (host, Some(namespace.trim_end_matches('/'))),
        None => (url.as_str(), None),
    };
    let (name, port) = if host.starts_with('[') {
        // An IPv6 address: [::1]:5000
        match host.find(']') {
            Some(end) => match &host[end + 1..] {
                "" => (&host[..=end], None),
                rest => (&host[..=end], Some(rest.strip_prefix(':').unwrap_or(rest))),
            },
            None => ("", None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let name_ok = !name.is_empty()
        && (name.starts_with('[')
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if !name_ok || !port_ok {
        d.error(
            &field,
            format!("'{host}' is not host[:port]"),
            "write the registry as host[:port][/namespace], like 127.0.0.1:5000/rebake",
        );
        return None;
    }
    if let Some(namespace) = namespace {
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if !namespace.split('/').all(component_ok) {
            d.error(
                &field,
                format!("namespace '{namespace}' is not a valid repository path"),
                "use lower case letters, digits, '.', '_' and '-' in each part of the namespace",
            );
            return None;
        }
    }
    match (&raw.username, &raw.password_env) {
        (Some(_), None) => d.error(
            &root.key("password_env"),
            "is missing",
            "name the environment variable holding the registry password or token, \
             like 'password_env: REBAKE_REGISTRY_PASSWORD'",
        ),
        (None, Some(_)) => d.error(
            &root.key("username"),
            "is missing",
            "add the registry login name that goes with password_env",
        ),
        _ => {}
    }
    Some(RegistryConfig {
        url: url.clone(),
        host: host.to_string(),
        namespace: namespace.map(str::to_string),
        insecure: raw.insecure,
        username: raw.username,
        password_env: raw.password_env,
    })
}

#[cfg(test)]
mod tests {
    use super::diagnostics::edit_distance;
    use super::*;

    #[test]
    fn backup_stores_are_a_directory_or_a_volume_with_retention() {
        let text = "\
backups:
  local:
    dir: backups
    keep_last: 7
    keep_for: 30d
  shared:
    volume: rebake-backups
";
        let config = parse(Path::new("/etc/rebake/rebake.yaml"), text).unwrap();
        assert_eq!(
            config.backups["local"],
            BackupStore {
                location: BackupLocation::Dir(PathBuf::from("/etc/rebake/backups")),
                keep_last: Some(7),
                keep_for: Some(std::time::Duration::from_secs(30 * 86_400)),
            }
        );
        assert_eq!(
            config.backups["shared"].location,
            BackupLocation::Volume("rebake-backups".into())
        );
        assert_eq!(config.backups["shared"].keep_last, None);
        assert!(Config::default().backups.is_empty());
    }

    #[test]
    fn backup_store_problems_name_line_and_field() {
        let text = "\
backups:
  both:
    dir: /srv/b
    volume: b-vol
  none:
    keep_last: 3
  counts:
    dir: /srv/c
    keep_last: 0
    keep_for: a month
  badvol:
    volume: /srv/x
";
        let errors = parse(Path::new("rebake.yaml"), text).unwrap_err();
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let expect = [
            (
                "rebake.yaml:12:",
                "field 'backups.badvol.volume': '/srv/x' is not a volume name",
            ),
            (
                "rebake.yaml:2:",
                "field 'backups.both': has both dir: and volume:",
            ),
            (
                "rebake.yaml:9:",
                "field 'backups.counts.keep_last': 0 would keep no dump",
            ),
            (
                "rebake.yaml:10:",
                "field 'backups.counts.keep_for': 'a month' is not a duration",
            ),
            (
                "rebake.yaml:5:",
                "field 'backups.none': names no place for the dumps",
            ),
        ];
        assert_eq!(shown.len(), expect.len(), "{shown:#?}");
        for (at, message) in expect {
            assert!(
                shown
                    .iter()
                    .any(|e| e.starts_with(at) && e.contains(message)),
                "wanted {at} … {message} in {shown:#?}"
            );
        }
    }

    #[test]
    fn defaults_when_empty() {
        let config = parse(Path::new("/etc/rebake/rebake.yaml"), "# nothing\n").unwrap();
        assert_eq!(config.engine.host, DEFAULT_ENGINE_HOST);
        assert!(config.forge.is_none());
        assert_eq!(config.schedule.scan.as_str(), DEFAULT_SCAN_SCHEDULE);
    }

    #[test]
    fn engine_jobs_and_builders_are_checked_at_their_lines() {
        let config = parse(
            Path::new("r.yaml"),
            "registry:\n  url: 127.0.0.1:5000\nengine:\n  jobs: 3\n  builders:\n    - ssh://builder@10.0.0.6\n",
        )
        .unwrap();
        assert_eq!(config.engine.jobs, 3);
        assert_eq!(config.engine.builders, ["ssh://builder@10.0.0.6"]);
        assert_eq!(
            parse(Path::new("r.yaml"), "").unwrap().engine.jobs,
            default_engine_jobs()
        );
        let problems = |text: &str| -> Vec<(usize, String, String)> {
            parse(Path::new("r.yaml"), text)
                .unwrap_err()
                .into_iter()
                .map(|d| (d.line, d.field, d.message))
                .collect()
        };
        assert_eq!(
            problems("engine:\n  jobs: 0\n"),
            [(
                2,
                "engine.jobs".to_string(),
                "0 builds at once is not between 1 and 64".to_string()
            )]
        );
        let found = problems("engine:\n  builders:\n    - tcp://10.0.0.6:2376\n");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].0, found[0].1.as_str()), (3, "engine.builders[0]"));
        assert!(found[0].2.contains("needs a registry"), "{found:?}");
        let found = problems(
            "registry:\n  url: r.example:5000\nengine:\n  builders:\n    - tcp://a:2376\n    - nonsense\n    - tcp://a:2376\n",
        );
        let fields: Vec<&str> = found.iter().map(|f| f.1.as_str()).collect();
        assert_eq!(
            fields,
            ["engine.builders[1]", "engine.builders[2]"],
            "{found:?}"
        );
        assert!(found[1].2.contains("listed twice"), "{found:?}");
    }

    #[test]
    fn full_config() {
        let text = "\
state_dir: state
sources: debian.sources
security_tracker:
  json: https://security-tracker.debian.org/tracker/data/json
  dsa_list: data/DSA/list
forge:
  kind: gitea
  url: https://gitea.example.org/
  repository: ops/images
  token_env: GITEA_TOKEN
registry:
  url: 127.0.0.1:5000/rebake
  insecure: true
schedule:
  scan: \"*/15 * * * mon-fri\"
git:
  author_name: rebake bot
  author_email: bot@example.org
";
        let config = parse(Path::new("/srv/ops/rebake.yaml"), text).unwrap();
        assert_eq!(config.state_dir, Path::new("/srv/ops/state"));
        assert_eq!(
            config.security_tracker.unwrap().dsa_list.as_deref(),
            Some("/srv/ops/data/DSA/list")
        );
        let forge = config.forge.unwrap();
        assert_eq!(forge.url, "https://gitea.example.org");
        assert_eq!(forge.repository.unwrap().to_string(), "ops/images");
        let registry = config.registry.unwrap();
        assert_eq!(
            registry.repository_for("nginx"),
            "127.0.0.1:5000/rebake/nginx"
        );
        assert!(registry.insecure);
    }

    #[test]
    fn registry_login_needs_the_user_and_the_secret_variable() {
        let errors = parse(
            Path::new("rebake.yaml"),
            "registry:\n  url: r.example:5000\n  username: bot\n",
        )
        .unwrap_err();
        assert_eq!(errors[0].field, "registry.password_env");
        let config = parse(
            Path::new("rebake.yaml"),
            "registry:\n  url: r.example:5000\n  username: bot\n  password_env: REG_PW\n",
        )
        .unwrap();
        let registry = config.registry.unwrap();
        assert_eq!(registry.username.as_deref(), Some("bot"));
        assert_eq!(registry.password_env.as_deref(), Some("REG_PW"));
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let text = "\
forge:
  kind: github
  repository: images
  token_env: ghp_0123456789abcdefghijklmnopqrstuvwxyz
registry:
  url: https://registry.example.org
schedule:
  scan: \"* * *\"
";
        let errors = parse(Path::new("rebake.yaml"), text).unwrap_err();
        let fields: Vec<(&str, usize)> =
            errors.iter().map(|e| (e.field.as_str(), e.line)).collect();
        assert_eq!(
            fields,
            [
                ("forge.repository", 3),
                ("forge.token_env", 4),
                ("registry.url", 6),
                ("schedule.scan", 8)
            ]
        );
        // The token is never repeated back.
        assert!(errors.iter().all(|e| !e.to_string().contains("ghp_0123")));
    }

    #[test]
    fn git_ssh_settings() {
        let text =
            "git:\n  ssh_key: keys/deploy\n  ssh_key_passphrase_env: REBAKE_SSH_PASSPHRASE\n";
        let config = parse(Path::new("/srv/ops/rebake.yaml"), text).unwrap();
        assert_eq!(
            config.git.ssh_key.as_deref(),
            Some(Path::new("/srv/ops/keys/deploy"))
        );
        assert_eq!(
            config.git.ssh_key_passphrase_env.as_deref(),
            Some("REBAKE_SSH_PASSPHRASE")
        );
        assert_eq!(config.git.author_name, "rebake");
        let absolute = parse(
            Path::new("rebake.yaml"),
            "git:\n  ssh_key: /etc/rebake/id\n",
        )
        .unwrap();
        assert_eq!(
            absolute.git.ssh_key.as_deref(),
            Some(Path::new("/etc/rebake/id"))
        );
        assert_eq!(Config::default().git.ssh_key, None);
    }

    #[test]
    fn git_ssh_mistakes_name_the_field_and_line() {
        let errors = |text: &str| parse(Path::new("rebake.yaml"), text).unwrap_err();
        let public = errors("git:\n  author_name: bot\n  ssh_key: ~/.ssh/id_ed25519.pub\n");
        assert_eq!(
            (public[0].field.as_str(), public[0].line),
            ("git.ssh_key", 3)
        );
        assert!(public[0].message.contains("public key"), "{}", public[0]);
        assert!(
            public[0].help.contains("~/.ssh/id_ed25519"),
            "{}",
            public[0]
        );

        let inline = errors("git:\n  ssh_key: \"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3Blbn\"\n");
        assert_eq!(inline[0].field, "git.ssh_key");
        assert!(inline[0].message.contains("key itself"), "{}", inline[0]);
        assert!(!inline[0].to_string().contains("b3Blbn"), "{}", inline[0]);

        let empty = errors("git:\n  ssh_key: \" \"\n");
        assert!(empty[0].message.contains("empty"), "{}", empty[0]);

        let secret = errors(
            "git:\n  ssh_key: id\n  ssh_key_passphrase_env: correct-horse-battery-staple-42\n",
        );
        assert_eq!(
            (secret[0].field.as_str(), secret[0].line),
            ("git.ssh_key_passphrase_env", 3)
        );
        assert!(!secret[0].to_string().contains("horse"), "{}", secret[0]);

        let without_key = errors("git:\n  ssh_key_passphrase_env: PASS\n");
        assert_eq!(without_key[0].field, "git.ssh_key_passphrase_env");
        assert!(
            without_key[0].help.contains("ssh_key"),
            "{}",
            without_key[0]
        );
    }

    #[test]
    fn unknown_field_names_the_field_and_the_allowed_ones() {
        let text = "forge:\n  kind: github\n  repo: ops/images\n";
        let errors = parse(Path::new("rebake.yaml"), text).unwrap_err();
        let e = &errors[0];
        assert_eq!(e.field, "forge.repo");
        assert_eq!(e.line, 3);
        assert!(e.help.starts_with("did you mean 'repository'?"), "{e}");
        assert_eq!(edit_distance("staus", "status"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn deep_or_large_yaml_is_refused_before_parsing_naming_the_file_and_the_limit() {
        let deep = format!("vars: {}{}\n", "[".repeat(20_000), "]".repeat(20_000));
        let started = std::time::Instant::now();
        let errors = parse(Path::new("rebake.yaml"), &deep).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let e = errors[0].to_string();
        assert!(
            e.starts_with("rebake.yaml:1: ") && e.contains("limit of 64"),
            "{e}"
        );
        let big = format!("# {}\n", "x".repeat(1 << 20));
        let errors = parse(Path::new("rebake.yaml"), &big).unwrap_err();
        let e = errors[0].to_string();
        assert!(
            e.starts_with("rebake.yaml: ") && e.contains("limit of 1048576"),
            "{e}"
        );
        let policy = crate::policy::parse_policy("web", Path::new("policies/web.yaml"), &deep);
        let e = policy.unwrap_err()[0].to_string();
        assert!(
            e.starts_with("policies/web.yaml:1: ") && e.contains("limit of 64"),
            "{e}"
        );
    }
}
