//! Image policies: `policies/<name>.yaml` in the user's repository, one image each.
//!
//! A policy says which template renders the image's Dockerfile, from which Debian suite and
//! with which packages, which updates to take, how to test the image, where to deploy it and
//! who reviews the pull requests. The image name is the file's stem.
//!
//! Everything that later reaches a Dockerfile or a shell is validated here: package names by
//! Debian policy's grammar, template variables without newlines, names of containers,
//! networks and volumes by Docker's rules.
//!
//! The `tests:` grammar lives in `image_tests`, the `deploy:` targets in `deploy_target`;
//! their types are re-exported here.

mod deploy_target;
mod image_tests;
mod jobs;

pub use deploy_target::{
    parse_port_mapping, parse_volume, DeployTarget, DockerTarget, HealthCheck, HealthProbe,
    PortMapping, PortProtocol, RawDeployTarget, RawDockerTarget, RawHealth, RawSwarmTarget,
    RestartPolicy, SwarmTarget, VolumeMount, VolumeSource,
};
pub use image_tests::{
    FileCheck, HttpCheck, ImageTest, RawFileCheck, RawHttpCheck, RawTest, RawUserCheck, TestCheck,
};
pub use jobs::{
    is_valid_job_name, Job, JobContainer, JobKind, RawBackup, RawJob, RawRestoreCheck,
    RestoreCheck, DEFAULT_JOB_TIMEOUT_SECONDS,
};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{
    is_env_var_name, merge_problems, parse_yaml, scalar_map, Diagnostic, Diagnostics, FieldPath,
    ScalarString,
};
use crate::debian::version::{is_valid_arch, is_valid_package_name};
use deploy_target::validate_deploy;
use image_tests::validate_test;

/// Directory of the policies in a repository.
pub const POLICIES_DIR: &str = "policies";
/// Directory of the Dockerfile templates in a repository.
pub const TEMPLATES_DIR: &str = "templates";
pub const DEFAULT_ARCHITECTURE: &str = "amd64";
pub const DEFAULT_TEST_TIMEOUT_SECONDS: u64 = 60;
pub const DEFAULT_HEALTH_TIMEOUT_SECONDS: u64 = 60;
pub const DEFAULT_MAX_OPEN: u32 = 10;
const MAX_TIMEOUT_SECONDS: u64 = 3600;

// ---------------------------------------------------------------------------------------------
// Raw form: the file as written
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub template: Option<String>,
    pub suite: Option<String>,
    pub architecture: Option<String>,
    pub packages: Option<Vec<String>>,
    pub vars: Option<BTreeMap<String, ScalarString>>,
    pub updates: Option<RawUpdates>,
    pub tests: Option<Vec<RawTest>>,
    pub deploy: Option<Vec<RawDeployTarget>>,
    pub review: Option<RawReview>,
    pub user: Option<ScalarString>,
    pub schedule: Option<String>,
    pub jobs: Option<Vec<RawJob>>,
    /// Another policy's image to build on instead of the Debian base.
    pub from: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpdates {
    /// Refused with an explanation: security updates are always proposed.
    pub security: Option<serde_yaml_ng::Value>,
    pub point_release: Option<bool>,
    /// Refused with an explanation: backports are not candidates (see README).
    pub backports: Option<serde_yaml_ng::Value>,
    /// A duration like `3d`: how long a version must have been in the verified archive before
    /// an update without a security fix is proposed.
    pub min_age: Option<String>,
    /// The same for an update that carries a security fix (default: none).
    pub security_min_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReview {
    pub labels: Option<Vec<String>>,
    pub reviewers: Option<Vec<String>>,
    pub assignees: Option<Vec<String>>,
    /// `false`, or `{kinds: [...], required_checks: bool}`; read by hand so that each
    /// problem names its own line.
    pub automerge: Option<serde_yaml_ng::Value>,
    pub max_open: Option<u32>,
    pub group: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Validated form
// ---------------------------------------------------------------------------------------------

/// One image's validated policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// The image name: the policy file's stem.
    pub name: String,
    /// The file it was read from (relative to the repository when loaded from one).
    pub file: PathBuf,
    /// File name of the template in `templates/`.
    pub template: String,
    /// Debian codename, like `trixie`.
    pub suite: String,
    pub architecture: String,
    /// Debian binary package names to install, in the order written.
    pub packages: Vec<String>,
    /// Extra values for the template (`{{vars.name}}`); single-line.
    pub vars: BTreeMap<String, String>,
    pub updates: Updates,
    pub tests: Vec<ImageTest>,
    pub deploy: Vec<DeployTarget>,
    pub review: Review,
    /// The user the image runs as (`USER`), like `postgres` or `1000:1000`.
    pub user: Option<String>,
    /// Extra scan times for this image in `rebake serve`, besides rebake.yaml's
    /// `schedule.scan` (which scans every image).
    pub schedule: Option<crate::config::CronSchedule>,
    /// Commands run against the deployed image on a schedule or by `rebake job run`:
    /// maintenance, backups and restore checks.
    pub jobs: Vec<Job>,
    /// `from:`: the policy whose locked image this one builds on (its template's
    /// `{{base_image}}`), instead of the Debian base. Parents come before children in every
    /// list of policies rebake loads.
    pub from: Option<String>,
}

/// Which archive updates trigger a rebuild. Security updates (an update carrying a security
/// fix) always do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Updates {
    /// `<suite>-updates` and point releases of `<suite>` without a security fix.
    pub point_release: bool,
    /// Cooldown for an update without a security fix: each new version must have been in the
    /// verified archive this long (from the InRelease `Date` rebake first saw carrying it).
    #[serde(with = "duration_seconds")]
    pub min_age: Option<std::time::Duration>,
    /// Cooldown for an update that carries a security fix (none unless set).
    #[serde(with = "duration_seconds")]
    pub security_min_age: Option<std::time::Duration>,
}

impl Default for Updates {
    fn default() -> Self {
        Updates {
            point_release: true,
            min_age: None,
            security_min_age: None,
        }
    }
}

/// Durations shown as whole seconds in JSON.
mod duration_seconds {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
}

/// The kind of proposal `review.automerge.kinds` names: what its title says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AutomergeKind {
    /// An update that carries a security fix (title: "security update").
    Security,
    /// An update without one: a point release or `-updates` (title: "update").
    PointRelease,
    /// Only binaries changed, not their source versions (binNMUs).
    BinaryRebuild,
    /// The image had no lock yet.
    FirstBuild,
    /// No installed package changed: a new base, template, policy or tests.
    Rebuild,
}

impl AutomergeKind {
    pub const ALL: [AutomergeKind; 5] = [
        AutomergeKind::Security,
        AutomergeKind::PointRelease,
        AutomergeKind::BinaryRebuild,
        AutomergeKind::FirstBuild,
        AutomergeKind::Rebuild,
    ];

    /// The word in a policy.
    pub fn word(self) -> &'static str {
        match self {
            AutomergeKind::Security => "security",
            AutomergeKind::PointRelease => "point_release",
            AutomergeKind::BinaryRebuild => "binary_rebuild",
            AutomergeKind::FirstBuild => "first_build",
            AutomergeKind::Rebuild => "rebuild",
        }
    }

    fn parse(word: &str) -> Option<AutomergeKind> {
        Self::ALL.into_iter().find(|k| k.word() == word)
    }
}

/// When rebake merges its own proposal (`review.automerge`). Empty `kinds`: never.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Automerge {
    pub kinds: Vec<AutomergeKind>,
    /// Also wait until every other check on the proposal head (the forge's commit statuses,
    /// and on GitHub its branch protection) has passed.
    pub required_checks: bool,
}

impl Automerge {
    pub fn enabled(&self) -> bool {
        !self.kinds.is_empty()
    }
}

/// How the image's pull requests are reviewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Review {
    pub labels: Vec<String>,
    /// Forge logins; `org/team` names a team on GitHub.
    pub reviewers: Vec<String>,
    pub assignees: Vec<String>,
    /// Merge without a person once the tests pass, for these kinds of proposal.
    pub automerge: Automerge,
    /// At most this many open rebake pull requests for this image.
    pub max_open: u32,
    /// Images with the same group are proposed together, in one pull request on the branch
    /// `rebake/group/<name>`.
    pub group: Option<String>,
}

impl Default for Review {
    fn default() -> Self {
        Review {
            labels: Vec::new(),
            reviewers: Vec::new(),
            assignees: Vec::new(),
            automerge: Automerge::default(),
            max_open: DEFAULT_MAX_OPEN,
            group: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Loads and validates every `policies/*.yaml` of a repository, sorted by name (a parent of
/// `from:` before its children), including the
/// checks that need the repository (templates and manifests exist, no two policies deploy to
/// the same container). Diagnostics name files relative to `repo_dir`.
pub fn load_policies(repo_dir: &Path) -> Result<Vec<Policy>, Vec<Diagnostic>> {
    let (policies, diagnostics) = load_policies_partially(repo_dir);
    if diagnostics.is_empty() {
        Ok(policies)
    } else {
        Err(diagnostics)
    }
}

/// The policies that are valid, sorted by name, and the problems with the others.
pub(crate) fn load_policies_partially(repo_dir: &Path) -> (Vec<Policy>, Vec<Diagnostic>) {
    let dir = repo_dir.join(POLICIES_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            let problem = Diagnostic::file_level(
                Path::new(POLICIES_DIR),
                format!("cannot read the policies directory: {e}"),
                "create policies/<image>.yaml, one file per image (see the examples shipped \
                 with rebake)",
            );
            return (Vec::new(), vec![problem]);
        }
    };
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let relative = Path::new(POLICIES_DIR).join(&file_name);
        if file_name.ends_with(".yaml") {
            files.push(relative);
        } else if file_name.ends_with(".yml") {
            diagnostics.push(Diagnostic::file_level(
                &relative,
                "policy files must end in .yaml; this one is ignored",
                format!(
                    "rename it to {}",
                    file_name.trim_end_matches(".yml").to_string() + ".yaml"
                ),
            ));
        }
    }
    files.sort();
    if files.is_empty() && diagnostics.is_empty() {
        diagnostics.push(Diagnostic::file_level(
            Path::new(POLICIES_DIR),
            "there are no policies",
            "add policies/<image>.yaml, one file per image",
        ));
    }
    let mut policies = Vec::new();
    for relative in files {
        match load_policy_file(&repo_dir.join(&relative), &relative, Some(repo_dir)) {
            Ok(policy) => policies.push(policy),
            Err(mut errors) => diagnostics.append(&mut errors),
        }
    }
    diagnostics.extend(check_deploy_conflicts(repo_dir, &policies));
    diagnostics.extend(check_group_branches(&policies));
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    let (policies, mut tree_problems) = parents_first(repo_dir, policies);
    diagnostics.append(&mut tree_problems);
    (policies, diagnostics)
}

/// Loads and validates one policy file. When the file sits in a `policies/` directory, the
/// directory above is taken as its repository and the template (and manifests) must exist
/// there too.
pub fn load_policy(path: &Path) -> Result<Policy, Vec<Diagnostic>> {
    let repo_dir = path
        .parent()
        .filter(|dir| dir.file_name().is_some_and(|n| n == POLICIES_DIR))
        .and_then(Path::parent)
        .map(|repo| {
            if repo.as_os_str().is_empty() {
                Path::new(".")
            } else {
                repo
            }
        });
    load_policy_file(path, path, repo_dir)
}

fn load_policy_file(
    path: &Path,
    shown_as: &Path,
    repo_dir: Option<&Path>,
) -> Result<Policy, Vec<Diagnostic>> {
    let source = crate::config::input::read_input(repo_dir, path).map_err(|e| {
        vec![Diagnostic::file_level(
            shown_as,
            format!("cannot read the policy: {e}"),
            "check that the file exists and is readable UTF-8 text (a regular file of the \
             repository, not a link)",
        )]
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let policy = parse_policy(&name, shown_as, &source)?;
    match repo_dir {
        Some(repo_dir) => {
            let errors = check_against_repo(&policy, repo_dir, &source);
            if errors.is_empty() {
                Ok(policy)
            } else {
                Err(errors)
            }
        }
        None => Ok(policy),
    }
}

/// Parses and validates policy text for the image `name`; `file` names it in diagnostics.
/// Does not look at the repository (see [`load_policies`]).
pub fn parse_policy(name: &str, file: &Path, source: &str) -> Result<Policy, Vec<Diagnostic>> {
    let (raw, problems) = parse_yaml::<RawPolicy>(file, source)?;
    merge_problems(problems, validate_policy(name, raw, file, source))
}

/// An image name as rebake uses it in registries and branch names.
pub fn is_valid_image_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// A `review.group` name: one component of the branch `rebake/group/<name>` — lower-case
/// letters, digits, '-' and '.', starting with a letter or digit, without `..` and not ending
/// in `.` or `.lock` (git's rules for a ref component).
pub fn is_valid_group_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 100
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        && !name.contains("..")
        && !name.ends_with('.')
        && !name.ends_with(".lock")
}

/// Docker's rule for container, network, volume and service names.
pub fn is_valid_docker_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A user or `user:group`, each a name (`[a-z_][a-z0-9_-]*`, optionally ending in `$`) or a
/// numeric id.
pub fn is_valid_user_spec(spec: &str) -> bool {
    let part_ok = |part: &str| {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            return part.parse::<u32>().is_ok();
        }
        let name = part.strip_suffix('$').unwrap_or(part);
        let bytes = name.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 32
            && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
    };
    match spec.split_once(':') {
        Some((user, group)) => part_ok(user) && part_ok(group),
        None => part_ok(spec),
    }
}

fn validate_policy(
    name: &str,
    raw: RawPolicy,
    file: &Path,
    source: &str,
) -> Result<Policy, Vec<Diagnostic>> {
    let mut d = Diagnostics::new(file, source);
    let root = FieldPath::root();

    if !is_valid_image_name(name) {
        d.list.push(Diagnostic::file_level(
            file,
            format!("'{name}' is not a valid image name (the file name is the image name)"),
            "rename the file to lower case letters, digits, '.', '_' and '-', starting with a \
             letter or digit, like policies/nginx.yaml",
        ));
    }

    let template = match raw.template {
        None => {
            d.error(
                &root.key("template"),
                "is missing",
                "add 'template: debian.Dockerfile.hbs', a file name in templates/",
            );
            String::new()
        }
        Some(template) => {
            let plain_file_name = !template.is_empty()
                && !template.starts_with('.')
                && !template.contains(['/', '\\'])
                && !template.contains(char::is_whitespace);
            if !plain_file_name {
                d.error(
                    &root.key("template"),
                    format!("'{template}' is not a file name"),
                    "name a file directly inside templates/, like debian.Dockerfile.hbs",
                );
            } else if !template.ends_with(".hbs") {
                d.error(
                    &root.key("template"),
                    format!("'{template}' does not end in .hbs"),
                    format!("templates are Handlebars files; did you mean '{template}.hbs'?"),
                );
            }
            template
        }
    };

    let suite = match raw.suite {
        None => {
            d.error(
                &root.key("suite"),
                "is missing",
                "add the Debian release to build from, like 'suite: trixie'",
            );
            String::new()
        }
        Some(suite) => {
            check_suite(&mut d, &root.key("suite"), &suite);
            suite
        }
    };

    let architecture = raw
        .architecture
        .unwrap_or_else(|| DEFAULT_ARCHITECTURE.to_string());
    if !is_valid_arch(&architecture) {
        d.error(
            &root.key("architecture"),
            format!("'{architecture}' is not a Debian architecture name"),
            "use Debian's name, like amd64, arm64, armhf or ppc64el",
        );
    }

    let packages = raw.packages.unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (i, package) in packages.iter().enumerate() {
        let field = root.key("packages").index(i);
        if !is_valid_package_name(package) {
            d.error(
                &field,
                format!(
                    "'{package}' is not a valid Debian package name (lower case letters, \
                     digits, + - .; at least 2 chars)"
                ),
                "write the binary package's name exactly as apt shows it, like nginx or \
                 libssl3t64; versions are chosen by rebake, not written here",
            );
        } else if !seen.insert(package.as_str()) {
            d.error(
                &field,
                format!("'{package}' is listed twice"),
                "remove the repeated entry",
            );
        }
    }

    // Characters that let a value escape its quoting in a shell command.
    const SHELL_SPECIAL: &str = "'\"`$\\;&|<>*";
    let vars = scalar_map(raw.vars.unwrap_or_default());
    for (key, value) in &vars {
        let field = root.key("vars").key(key);
        if !is_env_var_name(key) {
            d.error(
                &field,
                format!("'{key}' is not a valid variable name"),
                "use letters, digits and '_', not starting with a digit, so templates can \
                 write {{vars.name}}",
            );
        }
        if value.contains(['\n', '\r', '\0']) {
            d.error(
                &field,
                "contains a line break",
                "template variables must be one line (a line break would add Dockerfile \
                 instructions); put multi-line content in images/<name>/context/ and COPY it",
            );
        }
        // Templates put values into RUN lines: nothing that a shell would interpret.
        if let Some(c) = value.chars().find(|c| SHELL_SPECIAL.contains(*c)) {
            d.error(
                &field,
                format!("contains {c:?}, which a shell in a RUN line would interpret"),
                "use plain text (letters, digits, spaces and . , : / _ - + = @ % ^ ~ # ! ? ( ) [ ] { }); \
                 put anything else in a file under images/<name>/context/ and COPY it",
            );
        }
    }

    let updates = raw
        .updates
        .map(|u| {
            let field = root.key("updates");
            if u.security.is_some() {
                d.error(
                    &field.key("security"),
                    "updates.security is no longer a setting: an update that carries a \
                     security fix is always proposed"
                        .to_string(),
                    "remove the line",
                );
            }
            if u.backports.is_some() {
                d.error(
                    &field.key("backports"),
                    "updates.backports is not supported: rebake takes a backports version only \
                     for a package installed from backports, as apt does"
                        .to_string(),
                    "remove the line",
                );
            }
            Updates {
                point_release: u.point_release.unwrap_or(Updates::default().point_release),
                min_age: u
                    .min_age
                    .and_then(|v| parse_min_age(&mut d, &field.key("min_age"), &v)),
                security_min_age: u
                    .security_min_age
                    .and_then(|v| parse_min_age(&mut d, &field.key("security_min_age"), &v)),
            }
        })
        .unwrap_or_default();
    let mut tests = Vec::new();
    let mut test_names = BTreeSet::new();
    for (i, raw_test) in raw.tests.unwrap_or_default().into_iter().enumerate() {
        let field = root.key("tests").index(i);
        if let Some(test) = validate_test(&mut d, &field, raw_test) {
            if !test_names.insert(test.name.clone()) {
                d.error(
                    &field.key("name"),
                    format!("another test is also named '{}'", test.name),
                    "give each test its own name; reports refer to tests by name",
                );
            }
            tests.push(test);
        }
    }

    let mut deploy = Vec::new();
    for (i, raw_target) in raw.deploy.unwrap_or_default().into_iter().enumerate() {
        if let Some(target) = validate_deploy(&mut d, &root.key("deploy").index(i), raw_target) {
            deploy.push(target);
        }
    }

    let review = raw
        .review
        .map(|r| validate_review(&mut d, &root.key("review"), r))
        .unwrap_or_default();

    let user = raw.user.map(|u| u.0);
    if let Some(user) = &user {
        if !is_valid_user_spec(user) {
            d.error(
                &root.key("user"),
                format!("'{user}' is not a user name or id"),
                "write a user like postgres, www-data or 1000, optionally with a group \
                 (1000:1000)",
            );
        }
    }

    let schedule = raw.schedule.and_then(|expression| {
        crate::config::CronSchedule::parse(&expression)
            .map_err(|problem| {
                d.error(
                    &root.key("schedule"),
                    format!("'{expression}' is not a cron expression: {problem}"),
                    "write five fields (minute hour day-of-month month day-of-week), like \
                     '*/15 * * * *' for every quarter hour, or @hourly / @daily",
                )
            })
            .ok()
    });

    let jobs = jobs::validate_jobs(
        &mut d,
        &root.key("jobs"),
        raw.jobs.unwrap_or_default(),
        &deploy,
    );
    let from = raw.from.filter(|parent| {
        let ok = parent != name && is_valid_image_name(parent);
        if !ok {
            d.error(
                &root.key("from"),
                if parent == name {
                    format!("'{parent}' is this policy's own image")
                } else {
                    format!("'{parent}' is not an image name")
                },
                "write the name of another policy (its file name without .yaml), like \
                 'from: company-base'",
            );
        }
        ok
    });

    d.into_result(Policy {
        name: name.to_string(),
        file: file.to_path_buf(),
        template,
        suite,
        architecture,
        packages,
        vars,
        updates,
        tests,
        deploy,
        review,
        user,
        schedule,
        jobs,
        from,
    })
}

fn check_suite(d: &mut Diagnostics, field: &FieldPath, suite: &str) {
    const ALIASES: [&str; 5] = [
        "stable",
        "oldstable",
        "oldoldstable",
        "testing",
        "experimental",
    ];
    if let Some(base) = ["-security", "-updates", "-backports", "-proposed-updates"]
        .iter()
        .find_map(|s| suite.strip_suffix(s))
    {
        d.error(
            field,
            format!("'{suite}' is a pocket, not a release"),
            format!(
                "write 'suite: {base}'; which of -security, -updates and -backports are used is \
                 set by 'updates:'"
            ),
        );
    } else if ALIASES.contains(&suite) {
        d.error(
            field,
            format!("'{suite}' is an alias that moves to a new release when Debian releases one"),
            "write the codename, like 'suite: trixie', so an image changes release only when \
             someone decides it should",
        );
    } else if suite.is_empty()
        || !suite.as_bytes()[0].is_ascii_lowercase()
        || !suite
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        d.error(
            field,
            format!("'{suite}' is not a Debian release codename"),
            "write a codename in lower case, like trixie or bookworm",
        );
    }
}

/// The longest cooldown rebake accepts: a year (a longer one is more likely a typo).
const MAX_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(366 * 86400);

/// `updates.min_age` and `updates.security_min_age`: `3d`, `12h`, `1w`, `90m`, `0`.
fn parse_min_age(
    d: &mut Diagnostics,
    field: &FieldPath,
    text: &str,
) -> Option<std::time::Duration> {
    let help = "write a duration like 3d, 12h, 1w or 90m (0 turns the cooldown off)";
    match humantime::parse_duration(text.trim()) {
        Ok(age) if age > MAX_MIN_AGE => {
            d.error(field, format!("'{text}' is longer than a year"), help);
            None
        }
        Ok(age) if age.is_zero() => None,
        Ok(age) => Some(age),
        Err(e) => {
            d.error(field, format!("'{text}' is not a duration: {e}"), help);
            None
        }
    }
}

/// `review.automerge`: `false`, or `{kinds: [...], required_checks: bool}`.
fn parse_automerge(d: &mut Diagnostics, field: &FieldPath, v: serde_yaml_ng::Value) -> Automerge {
    use serde_yaml_ng::Value;
    let kinds_help = format!(
        "list the kinds rebake may merge by itself, like 'automerge: {{kinds: [security]}}' \
         (kinds: {})",
        AutomergeKind::ALL.map(|k| k.word()).join(", ")
    );
    let map = match v {
        Value::Bool(false) | Value::Null => return Automerge::default(),
        Value::Bool(true) => {
            d.error(
                field,
                "'automerge: true' does not say which proposals rebake may merge by itself",
                kinds_help,
            );
            return Automerge::default();
        }
        Value::Mapping(m) => m,
        _ => {
            d.error(field, "must be false or a mapping", kinds_help);
            return Automerge::default();
        }
    };
    let mut out = Automerge::default();
    let problems_before = d.list.len();
    for (key, value) in map {
        let Some(key) = key.as_str().map(str::to_string) else {
            d.error(field, "has a key that is not text", kinds_help.clone());
            continue;
        };
        match key.as_str() {
            "kinds" => {
                let Some(list) = value.as_sequence() else {
                    d.error(&field.key("kinds"), "must be a list", kinds_help.clone());
                    continue;
                };
                for (i, item) in list.iter().enumerate() {
                    match item.as_str().and_then(AutomergeKind::parse) {
                        Some(k) if !out.kinds.contains(&k) => out.kinds.push(k),
                        Some(_) => {}
                        None => d.error(
                            &field.key("kinds").index(i),
                            format!("{} is not a kind of proposal", show_yaml(item)),
                            kinds_help.clone(),
                        ),
                    }
                }
                if list.is_empty() {
                    d.error(
                        &field.key("kinds"),
                        "is empty: rebake would never merge",
                        "write 'automerge: false' to turn automerge off, or list kinds",
                    );
                }
            }
            "required_checks" => match value.as_bool() {
                Some(b) => out.required_checks = b,
                None => d.error(
                    &field.key("required_checks"),
                    format!("{} is not true or false", show_yaml(&value)),
                    "write true to also wait for the forge's other checks on the proposal",
                ),
            },
            other => d.error(
                &field.key(other),
                format!("unknown field '{other}'"),
                "review.automerge takes kinds and required_checks",
            ),
        }
    }
    if out.kinds.is_empty() && d.list.len() == problems_before {
        d.error(field, "names no kinds", kinds_help);
    }
    out.kinds.sort();
    out
}

/// A YAML value as it reads in a message.
fn show_yaml(v: &serde_yaml_ng::Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| format!("'{}'", s.trim_end()))
        .unwrap_or_else(|_| "this value".into())
}

fn validate_review(d: &mut Diagnostics, field: &FieldPath, raw: RawReview) -> Review {
    let labels = raw.labels.unwrap_or_default();
    for (i, label) in labels.iter().enumerate() {
        if label.trim().is_empty() || label.contains(['\n', '\r']) || label.chars().count() > 50 {
            d.error(
                &field.key("labels").index(i),
                "is not a usable label",
                "labels are one line of at most 50 characters, like security",
            );
        }
    }
    let login_ok = |login: &str| {
        !login.is_empty()
            && login.len() <= 39
            && login
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    let reviewers = raw.reviewers.unwrap_or_default();
    for (i, reviewer) in reviewers.iter().enumerate() {
        let valid = match reviewer.split_once('/') {
            Some((org, team)) => login_ok(org) && login_ok(team),
            None => login_ok(reviewer),
        };
        if !valid {
            d.error(
                &field.key("reviewers").index(i),
                format!("'{reviewer}' is not a user login or org/team"),
                "write a login like alice, or a team like ops/web",
            );
        }
    }
    let assignees = raw.assignees.unwrap_or_default();
    for (i, assignee) in assignees.iter().enumerate() {
        if !login_ok(assignee) {
            d.error(
                &field.key("assignees").index(i),
                format!("'{assignee}' is not a user login"),
                "write a login like alice",
            );
        }
    }
    let max_open = raw.max_open.unwrap_or(DEFAULT_MAX_OPEN);
    if max_open == 0 {
        d.error(
            &field.key("max_open"),
            "0 would never open a pull request",
            "give at least 1",
        );
    }
    if let Some(group) = &raw.group {
        if !is_valid_group_name(group) {
            d.error(
                &field.key("group"),
                format!("'{group}' is not a usable group name"),
                "use lower-case letters, digits, '-' and '.', starting with a letter or digit, \
                 like web (the group's proposals go on the branch rebake/group/<name>)",
            );
        }
    }
    Review {
        labels,
        reviewers,
        assignees,
        automerge: raw
            .automerge
            .map(|v| parse_automerge(d, &field.key("automerge"), v))
            .unwrap_or_default(),
        max_open,
        group: raw.group,
    }
}

/// Checks that need the repository: the template and the manifests exist.
fn check_against_repo(policy: &Policy, repo_dir: &Path, source: &str) -> Vec<Diagnostic> {
    let mut d = Diagnostics::new(&policy.file, source);
    let root = FieldPath::root();
    let template_path = repo_dir.join(TEMPLATES_DIR).join(&policy.template);
    if !template_path.is_file() {
        let available = list_templates(repo_dir);
        let help = if available.is_empty() {
            format!(
                "create {TEMPLATES_DIR}/{} (there are no templates yet)",
                policy.template
            )
        } else {
            format!(
                "create {TEMPLATES_DIR}/{} or use one of: {}",
                policy.template,
                available.join(", ")
            )
        };
        d.error(
            &root.key("template"),
            format!(
                "template '{}' does not exist in {TEMPLATES_DIR}/",
                policy.template
            ),
            help,
        );
    }
    for (i, target) in policy.deploy.iter().enumerate() {
        if let DeployTarget::Manifests(paths) = target {
            for (j, path) in paths.iter().enumerate() {
                if !repo_dir.join(path).is_file() {
                    d.error(
                        &root.key("deploy").index(i).key("manifests").index(j),
                        format!("'{}' does not exist in the repository", path.display()),
                        "fix the path (relative to the repository root) or add the file",
                    );
                }
            }
        }
    }
    d.list
}

/// Two images must not deploy to the same container or service.
fn check_deploy_conflicts(repo_dir: &Path, policies: &[Policy]) -> Vec<Diagnostic> {
    let mut owners: BTreeMap<(String, Option<String>, String), &str> = BTreeMap::new();
    let mut diagnostics = Vec::new();
    for policy in policies {
        for (i, target) in policy.deploy.iter().enumerate() {
            let (kind, host, name, key) = match target {
                DeployTarget::Docker(t) => ("container", &t.host, &t.name, "name"),
                DeployTarget::Swarm(t) => ("service", &t.host, &t.service, "service"),
                DeployTarget::Manifests(_) => continue,
            };
            let id = (kind.to_string(), host.clone(), name.clone());
            match owners.get(&id) {
                Some(other) if *other != policy.name => {
                    let source =
                        std::fs::read_to_string(repo_dir.join(&policy.file)).unwrap_or_default();
                    let mut d = Diagnostics::new(&policy.file, &source);
                    let section = if kind == "container" {
                        "docker"
                    } else {
                        "swarm"
                    };
                    d.error(
                        &FieldPath::root()
                            .key("deploy")
                            .index(i)
                            .key(section)
                            .key(key),
                        format!("policy '{other}' also deploys to the {kind} '{name}'"),
                        "give each image its own container or service name",
                    );
                    diagnostics.append(&mut d.list);
                }
                _ => {
                    owners.insert(id, &policy.name);
                }
            }
        }
    }
    diagnostics
}

/// `policies` (sorted by name) with every parent before its children, and the problems of
/// `from:` that no single file shows: an unknown parent, a cycle, a parent of another release
/// or architecture, a child in another review group than its tree. A policy with a problem is
/// left out, and so are its descendants.
fn parents_first(repo_dir: &Path, policies: Vec<Policy>) -> (Vec<Policy>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut problem = |p: &Policy, message: String, help: &str| {
        let source = std::fs::read_to_string(repo_dir.join(&p.file)).unwrap_or_default();
        let mut d = Diagnostics::new(&p.file, &source);
        d.error(&FieldPath::root().key("from"), message, help);
        diagnostics.append(&mut d.list);
    };
    let by_name: BTreeMap<&str, &Policy> = policies.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut bad: BTreeSet<String> = BTreeSet::new();
    for p in &policies {
        let Some(parent_name) = &p.from else { continue };
        let Some(parent) = by_name.get(parent_name.as_str()) else {
            let known: Vec<&str> = by_name.keys().copied().collect();
            problem(
                p,
                format!("there is no policy for the image '{parent_name}'"),
                &format!("name one of: {}", known.join(", ")),
            );
            bad.insert(p.name.clone());
            continue;
        };
        // A cycle: following `from:` comes back here.
        let mut seen = vec![p.name.as_str()];
        let mut at = Some(*parent);
        while let Some(q) = at {
            if seen.contains(&q.name.as_str()) {
                seen.push(q.name.as_str());
                problem(
                    p,
                    format!(
                        "the images build on each other in a cycle: {}",
                        seen.join(" → ")
                    ),
                    "one image of the cycle must build on the Debian base (remove its from:)",
                );
                bad.insert(p.name.clone());
                break;
            }
            seen.push(q.name.as_str());
            at = q.from.as_deref().and_then(|n| by_name.get(n).copied());
        }
        if (parent.suite.as_str(), parent.architecture.as_str())
            != (p.suite.as_str(), p.architecture.as_str())
        {
            problem(
                p,
                format!(
                    "'{parent_name}' is built for {}/{}, this image for {}/{}",
                    parent.suite, parent.architecture, p.suite, p.architecture
                ),
                "give the image the suite and architecture of the image it builds on",
            );
            bad.insert(p.name.clone());
        }
    }
    // A tree is proposed as one review group: a child cannot be in another group.
    for p in &policies {
        if bad.contains(&p.name) {
            continue;
        }
        let root = tree_root(&by_name, p);
        if let (Some(mine), Some(theirs)) = (&p.review.group, &root.review.group) {
            if mine != theirs {
                problem(
                    p,
                    format!(
                        "this image builds on '{}' (group '{theirs}') but is in group '{mine}'",
                        root.name
                    ),
                    "an image tree is proposed as one group: give every image of the tree the \
                     same review.group, or none",
                );
                bad.insert(p.name.clone());
            }
        }
    }
    // An image tree is proposed as one review group: the root's, else `tree-<root>`.
    let tree_group: BTreeMap<String, String> = policies
        .iter()
        .filter(|p| !bad.contains(&p.name))
        .filter(|p| p.from.is_some() || policies.iter().any(|c| c.from.as_ref() == Some(&p.name)))
        .map(|p| {
            let root = tree_root(&by_name, p);
            let group = root
                .review
                .group
                .clone()
                .unwrap_or_else(|| format!("tree-{}", root.name.replace('_', "-")));
            (p.name.clone(), group)
        })
        .collect();
    let policies: Vec<Policy> = policies
        .into_iter()
        .map(|mut p| {
            if let Some(g) = tree_group.get(&p.name) {
                p.review.group = Some(g.clone());
            }
            p
        })
        .collect();
    // Round by round, each taking the policies whose parent is placed: parents first.
    let mut ordered: Vec<Policy> = Vec::new();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut remaining = policies;
    loop {
        let before = remaining.len();
        let (ready, rest): (Vec<Policy>, Vec<Policy>) = remaining.into_iter().partition(|p| {
            !bad.contains(&p.name) && p.from.as_ref().is_none_or(|parent| placed.contains(parent))
        });
        for p in ready {
            placed.insert(p.name.clone());
            ordered.push(p);
        }
        remaining = rest;
        if remaining.len() == before {
            break;
        }
    }
    (ordered, diagnostics)
}

/// The top of `p`'s tree (itself when it builds on the Debian base).
fn tree_root<'a>(by_name: &BTreeMap<&str, &'a Policy>, p: &'a Policy) -> &'a Policy {
    let mut at = p;
    for _ in 0..by_name.len() {
        match at.from.as_deref().and_then(|n| by_name.get(n)) {
            Some(parent) => at = parent,
            None => break,
        }
    }
    at
}

/// An image named `group` cannot coexist with review groups: its branch `rebake/group` and the
/// groups' branches `rebake/group/<name>` cannot both exist in git.
fn check_group_branches(policies: &[Policy]) -> Vec<Diagnostic> {
    let Some(grouped) = policies.iter().find(|p| p.review.group.is_some()) else {
        return Vec::new();
    };
    policies
        .iter()
        .filter(|p| p.name == "group")
        .map(|p| {
            Diagnostic::file_level(
                &p.file,
                format!(
                    "the image name 'group' clashes with review groups (used by {}): its \
                     proposal branch rebake/group cannot exist beside the group branches \
                     rebake/group/<name> in git",
                    grouped.file.display()
                ),
                "rename the policy file (the image name is the file name), or remove \
                 review.group from the policies that set it",
            )
        })
        .collect()
}

/// File names of the templates in a repository, sorted.
pub fn list_templates(repo_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_dir.join(TEMPLATES_DIR))
        .into_iter()
        .flatten()
        .flatten()
        // Links and other non-directories are listed too: reading them is refused, by name.
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".hbs") && !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------

/// Everything a template can use. Rendering is strict: using anything else is an error.
///
/// ```text
/// {{base_image}}        image id of the from-scratch Debian base
/// {{policy_name}}       the image name        {{template_name}}  the template's file name
/// {{suite}} {{architecture}} {{user}} (null when the policy sets none: use {{#if user}})
/// {{#each packages}}{{name}}={{version}}{{/each}}   the policy's packages, pinned
/// {{vars.xxx}}          the policy's vars
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateData {
    pub base_image: String,
    pub policy_name: String,
    pub template_name: String,
    pub suite: String,
    pub architecture: String,
    pub packages: Vec<PinnedPackage>,
    pub vars: BTreeMap<String, String>,
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinnedPackage {
    pub name: String,
    pub version: String,
}

impl TemplateData {
    pub fn new(policy: &Policy, base_image: &str, packages: Vec<PinnedPackage>) -> Self {
        TemplateData {
            base_image: base_image.to_string(),
            policy_name: policy.name.clone(),
            template_name: policy.template.clone(),
            suite: policy.suite.clone(),
            architecture: policy.architecture.clone(),
            packages,
            vars: policy.vars.clone(),
            user: policy.user.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, Vec<Diagnostic>> {
        parse_policy("web", Path::new("policies/web.yaml"), text)
    }

    #[test]
    fn minimal_policy_gets_defaults() {
        let policy = parse("template: debian.Dockerfile.hbs\nsuite: trixie\n").unwrap();
        assert_eq!(policy.architecture, "amd64");
        assert_eq!(policy.updates, Updates::default());
        assert_eq!(policy.review.max_open, 10);
        assert!(policy.packages.is_empty());
    }

    #[test]
    fn full_policy() {
        let text = r#"
template: nginx.Dockerfile.hbs
suite: trixie
packages: [nginx, ca-certificates]
vars:
  workers: 4
  page_title: Hello
tests:
  - name: serves
    http: {port: 80, contains: Hello}
  - name: version
    command: [nginx, -v]
    timeout_seconds: 5
  - name: config
    file: {path: /etc/nginx/nginx.conf, mode: "0644", owner: root}
  - name: root
    user: {allow_root: true}
deploy:
  - docker:
      name: rebake-nginx
      ports: ["127.0.0.1:8080:80", "[::1]:8443:443/tcp", 9000:9000/udp]
      volumes: [/srv/www:/var/www/html:ro, logs:/var/log/nginx]
      env: {TZ: UTC, PORT: 80}
      restart: on-failure:3
      health:
        http: {port: 80}
  - swarm: {service: web}
  - manifests: [deploy/web.yaml]
review:
  labels: [security]
  reviewers: [alice, ops/web]
  automerge: {kinds: [security, binary_rebuild], required_checks: true}
"#;
        let policy = parse(text).unwrap();
        assert_eq!(policy.vars["workers"], "4");
        assert_eq!(policy.tests.len(), 4);
        assert_eq!(
            policy.tests[2].check,
            TestCheck::File(FileCheck {
                path: "/etc/nginx/nginx.conf".into(),
                mode: Some(0o644),
                owner: Some("root".into())
            })
        );
        let DeployTarget::Docker(docker) = &policy.deploy[0] else {
            panic!("docker target expected")
        };
        assert_eq!(docker.ports[0].to_string(), "127.0.0.1:8080:80/tcp");
        assert_eq!(docker.ports[1].to_string(), "[::1]:8443:443/tcp");
        assert_eq!(docker.ports[2].protocol, PortProtocol::Udp);
        assert!(docker.volumes[0].read_only);
        assert_eq!(docker.volumes[1].source, VolumeSource::Named("logs".into()));
        assert_eq!(docker.restart.to_string(), "on-failure:3");
        assert_eq!(docker.env["PORT"], "80");
        assert_eq!(
            policy.review.automerge.kinds,
            [AutomergeKind::Security, AutomergeKind::BinaryRebuild]
        );
        assert!(policy.review.automerge.required_checks);
    }

    #[test]
    fn a_policy_schedule_is_a_cron_expression() {
        let policy = parse("template: a.hbs\nsuite: trixie\nschedule: \"*/15 * * * *\"\n").unwrap();
        assert_eq!(
            policy.schedule.map(|s| s.to_string()).as_deref(),
            Some("*/15 * * * *")
        );
        assert_eq!(
            parse("template: a.hbs\nsuite: trixie\n").unwrap().schedule,
            None
        );
        let errors = parse("template: a.hbs\nsuite: trixie\nschedule: every hour\n").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "schedule");
        let shown = errors[0].to_string();
        assert!(
            shown.starts_with("policies/web.yaml:3:") && shown.contains("not a cron expression"),
            "{shown}"
        );
    }

    #[test]
    fn review_group_names_are_branch_components() {
        let with = |group: &str| {
            parse(&format!(
                "template: a.hbs\nsuite: trixie\nreview:\n  group: {group}\n"
            ))
        };
        assert_eq!(with("web").unwrap().review.group.as_deref(), Some("web"));
        assert_eq!(
            with("db-2.prod").unwrap().review.group.as_deref(),
            Some("db-2.prod")
        );
        assert_eq!(
            parse("template: a.hbs\nsuite: trixie\n")
                .unwrap()
                .review
                .group,
            None
        );
        for bad in [
            "Web", "a/b", "-x", ".x", "a..b", "x.lock", "x.", "a_b", "'a b'",
        ] {
            let errors = with(bad).unwrap_err();
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert_eq!(errors[0].field, "review.group", "{bad}");
            let shown = errors[0].to_string();
            assert!(
                shown.starts_with("policies/web.yaml:4:") && shown.contains("group name"),
                "{shown}"
            );
        }
    }

    #[test]
    fn reports_all_problems_with_lines() {
        let text = "\
template: web.Dockerfile
suite: trixie-security
packages:
  - nginx
  - Nginx
vars:
  1bad: x
tests:
  - name: both
    command: [true]
    http: {port: 80}
  - command: [true]
deploy:
  - docker:
      name: web
      ports: [\"80\"]
";
        let errors = parse(text).unwrap_err();
        let found: Vec<(String, usize)> =
            errors.iter().map(|e| (e.field.clone(), e.line)).collect();
        assert_eq!(
            found,
            [
                ("template".to_string(), 1),
                ("suite".to_string(), 2),
                ("packages[1]".to_string(), 5),
                ("vars.1bad".to_string(), 7),
                ("tests[0]".to_string(), 9),
                ("tests[1].name".to_string(), 12),
                ("deploy[0].docker.ports[0]".to_string(), 16),
            ]
        );
        let shown = errors[2].to_string();
        assert!(
            shown.starts_with(
                "policies/web.yaml:5:5: field 'packages[1]': 'Nginx' is not a valid Debian package name"
            ),
            "{shown}"
        );
        assert!(shown.contains("\n  help: "), "{shown}");
    }

    #[test]
    fn unknown_field_from_serde() {
        let text = "template: a.hbs\nsuite: trixie\ntests:\n  - name: x\n    htttp: {port: 80}\n";
        let errors = parse(text).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "tests[0].htttp");
        assert_eq!(errors[0].line, 5);
        assert!(errors[0].help.contains("http"), "{}", errors[0]);
    }

    #[test]
    fn unquoted_modes_and_ports() {
        let text = "template: a.hbs\nsuite: trixie\ntests:\n  - name: x\n    file: {path: /x, mode: 0644}\ndeploy:\n  - docker:\n      name: web\n      ports:\n        - 8080:80\n";
        let policy = parse(text).unwrap();
        let TestCheck::File(file) = &policy.tests[0].check else {
            panic!()
        };
        assert_eq!(file.mode, Some(0o644));
    }

    #[test]
    fn user_specs() {
        for ok in [
            "root",
            "postgres",
            "www-data",
            "1000",
            "1000:1000",
            "app:app",
            "_apt",
        ] {
            assert!(is_valid_user_spec(ok), "{ok}");
        }
        for bad in ["", "Root", "a b", "x;id", "1000:", ":1000", "99999999999"] {
            assert!(!is_valid_user_spec(bad), "{bad}");
        }
    }

    fn problems(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .iter()
            .map(|d| format!("{}:{}: {}: {}", d.line, d.field, d.message, d.help))
            .collect()
    }

    #[test]
    fn automerge_false_is_off_and_true_says_to_name_the_kinds() {
        let base = "template: t.hbs\nsuite: trixie\nreview:\n";
        let off = parse(&format!("{base}  automerge: false\n")).unwrap();
        assert!(!off.review.automerge.enabled());
        let p = problems(&format!("{base}  automerge: true\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("4:review.automerge: "), "{p:?}");
        assert!(p[0].contains("kinds: [security]"), "{p:?}");
    }

    #[test]
    fn automerge_problems_name_their_line_and_field() {
        let p = problems(
            "template: t.hbs\nsuite: trixie\nreview:\n  automerge:\n    kinds:\n      - security\n      - everything\n    required_checks: maybe\n    when: now\n",
        );
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("7:review.automerge.kinds[1]: 'everything' is not a kind"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("8:review.automerge.required_checks: "),
            "{p:?}"
        );
        assert!(
            p[2].starts_with("9:review.automerge.when: unknown field"),
            "{p:?}"
        );
    }

    #[test]
    fn min_age_is_a_duration_and_zero_is_off() {
        let base = "template: t.hbs\nsuite: trixie\nupdates:\n";
        let p = parse(&format!("{base}  min_age: 3d\n  security_min_age: 12h\n")).unwrap();
        assert_eq!(
            p.updates.min_age,
            Some(std::time::Duration::from_secs(3 * 86400))
        );
        assert_eq!(
            p.updates.security_min_age,
            Some(std::time::Duration::from_secs(12 * 3600))
        );
        let zero = parse(&format!("{base}  min_age: 0s\n")).unwrap();
        assert_eq!(zero.updates.min_age, None);
        let bad = problems(&format!(
            "{base}  point_release: true\n  min_age: three days\n"
        ));
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].starts_with("5:updates.min_age: 'three days' is not a duration"),
            "{bad:?}"
        );
        let long = problems(&format!("{base}  security_min_age: 400d\n"));
        assert!(long[0].contains("longer than a year"), "{long:?}");
    }
}
