//! `rebake check`: validates a repository the way the bot reads it — `rebake.yaml`, every
//! policy, every template — and returns every problem found, not just the first.

use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde::Serialize;

use crate::config::{self, Diagnostic};
use crate::policy::{load_policies_partially, PinnedPackage, Policy, TemplateData, TEMPLATES_DIR};
use crate::render::template_registry_partially;

/// The config file looked for in a repository when none is given.
pub const CONFIG_FILE: &str = "rebake.yaml";

/// Stand-ins for the values the render stage supplies, used to render each template once.
const SAMPLE_BASE_IMAGE: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";
const SAMPLE_VERSION: &str = "0.0-0";

/// What `rebake check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// The config file that was checked; None when there was none (defaults apply).
    pub config_file: Option<PathBuf>,
    /// Names of the policies that are valid.
    pub policies: Vec<String>,
    /// File names of the templates that compile.
    pub templates: Vec<String>,
    /// Every problem, in the order config, templates, policies, rendering.
    pub diagnostics: Vec<Diagnostic>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// One line for a successful check, like
    /// `rebake.yaml, 3 policies (debian, nginx, postgres), 3 templates: ok`.
    pub fn summary(&self) -> String {
        let config = match &self.config_file {
            Some(file) => file.display().to_string(),
            None => "no config (defaults)".to_string(),
        };
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let status = if self.is_ok() {
            "ok".to_string()
        } else {
            count(self.diagnostics.len(), "problem", "problems")
        };
        format!(
            "{config}, {} ({}), {}: {status}",
            count(self.policies.len(), "policy", "policies"),
            self.policies.join(", "),
            count(self.templates.len(), "template", "templates"),
        )
    }
}

/// Checks a repository: the config (`config_path`, or `rebake.yaml` in the repository when
/// present), every policy, every template's syntax, and that each policy's template renders
/// with the policy's values and builds only from the rebake-built base image.
///
/// Files in diagnostics are relative to `repo_dir`, except an explicit `config_path`, which is
/// shown as given.
pub fn check_repo(repo_dir: &Path, config_path: Option<&Path>) -> CheckReport {
    let mut report = CheckReport::default();
    // rebake.yaml's backup store names, when it parsed.
    let mut stores: Option<Vec<String>> = None;

    let (config_file, shown_as) = match config_path {
        Some(path) => (Some(path.to_path_buf()), path.to_path_buf()),
        None => {
            let path = repo_dir.join(CONFIG_FILE);
            let present = std::fs::symlink_metadata(&path).is_ok();
            (present.then_some(path), PathBuf::from(CONFIG_FILE))
        }
    };
    if let Some(file) = &config_file {
        report.config_file = Some(shown_as.clone());
        let inside = config_path.is_none().then_some(repo_dir);
        match config::input::read_input(inside, file) {
            Ok(source) => {
                let base_dir = file.parent().unwrap_or(Path::new("."));
                match config::parse_with_base_dir(&shown_as, &source, base_dir) {
                    Ok(config) => stores = Some(config.backups.keys().cloned().collect()),
                    Err(mut errors) => report.diagnostics.append(&mut errors),
                }
            }
            Err(e) => report.diagnostics.push(Diagnostic::file_level(
                &shown_as,
                format!("cannot read the config file: {e}"),
                "check the path, or leave the option out to use rebake.yaml in the repository",
            )),
        }
    }

    let (registry, mut template_errors) = template_registry_partially(repo_dir);
    report.templates = registry.get_templates().keys().cloned().collect();
    report.templates.sort();
    report.diagnostics.append(&mut template_errors);

    let (policies, mut policy_errors) = load_policies_partially(repo_dir);
    report.diagnostics.append(&mut policy_errors);
    for policy in &policies {
        // A missing or broken template was reported above.
        if registry.has_template(&policy.template) {
            report
                .diagnostics
                .extend(check_rendering(repo_dir, &registry, policy));
        }
    }
    if let Some(stores) = stores.filter(|s| !s.is_empty()) {
        for policy in &policies {
            report
                .diagnostics
                .extend(check_backup_stores(repo_dir, policy, &stores));
        }
    }
    report.policies = policies.into_iter().map(|p| p.name).collect();
    report
}

/// Each backup job's store is one of rebake.yaml's `backups:` (checked when rebake.yaml
/// configures any: without a `backups:` section, a `pre_deploy: true` backup leaves the
/// target's own pre_deploy command in place, and backup jobs say what is missing when run).
fn check_backup_stores(repo_dir: &Path, policy: &Policy, stores: &[String]) -> Vec<Diagnostic> {
    let source = std::fs::read_to_string(repo_dir.join(&policy.file)).unwrap_or_default();
    let mut d = config::Diagnostics::new(&policy.file, &source);
    for (i, job) in policy.jobs.iter().enumerate() {
        if let Some(store) = job.store().filter(|s| !stores.iter().any(|k| k == s)) {
            d.error(
                &config::FieldPath::root()
                    .key("jobs")
                    .index(i)
                    .key("backup")
                    .key("store"),
                format!("'{store}' is not a store of rebake.yaml's backups:"),
                format!("name one of: {}", stores.join(", ")),
            );
        }
    }
    d.list
}

/// Renders the policy's template with stand-in versions: catches values the template uses but
/// the policy lacks (strict mode), and stages that do not build from the verified base.
fn check_rendering(repo_dir: &Path, registry: &Handlebars, policy: &Policy) -> Vec<Diagnostic> {
    let template_file = Path::new(TEMPLATES_DIR).join(&policy.template);
    let packages = policy
        .packages
        .iter()
        .map(|name| PinnedPackage {
            name: name.clone(),
            version: SAMPLE_VERSION.to_string(),
        })
        .collect();
    let data = TemplateData::new(policy, SAMPLE_BASE_IMAGE, packages);
    let rendered = match registry.render(&policy.template, &data) {
        Ok(rendered) => rendered,
        Err(e) => {
            return vec![Diagnostic {
                file: e
                    .template_name
                    .as_ref()
                    .map(|name| Path::new(TEMPLATES_DIR).join(name))
                    .unwrap_or(template_file),
                line: e.line_no.unwrap_or(0),
                column: e.column_no,
                field: String::new(),
                message: format!(
                    "rendering for policy '{}' ({}) fails: {}",
                    policy.name,
                    policy.file.display(),
                    e.reason()
                ),
                help: format!(
                    "a template may use base_image, policy_name, template_name, suite, \
                     architecture, user, packages (name, version) and vars.<name>; add the \
                     missing value under 'vars:' in {}, or guard it with {{{{#if vars.<name>}}}}",
                    policy.file.display()
                ),
            }];
        }
    };
    let template_source =
        std::fs::read_to_string(repo_dir.join(&template_file)).unwrap_or_default();
    foreign_base_images(&rendered)
        .into_iter()
        .map(|image| {
            let line = from_line(&template_source, &image);
            Diagnostic {
                file: template_file.clone(),
                line,
                column: None,
                field: String::new(),
                message: format!(
                    "'FROM {image}' (rendered for policy '{}') starts from an image rebake did \
                     not build from verified Debian packages",
                    policy.name
                ),
                help: "start every stage FROM {{base_image}}, or FROM an earlier stage's name"
                    .to_string(),
            }
        })
        .collect()
}

/// The 1-based line of the template's `FROM` line naming `image`; 0 when none does. The text
/// is the user's: any line may start with non-ASCII characters.
fn from_line(template_source: &str, image: &str) -> usize {
    template_source
        .lines()
        .position(|l| {
            let l = l.trim_start();
            l.get(..5)
                .is_some_and(|word| word.eq_ignore_ascii_case("FROM "))
                && l.contains(image)
        })
        .map_or(0, |i| i + 1)
}

/// Images named in `FROM` lines that are neither the base image nor an earlier stage.
fn foreign_base_images(dockerfile: &str) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    let mut foreign = Vec::new();
    for line in dockerfile.lines() {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let mut words = words.skip_while(|w| w.starts_with("--"));
        let Some(image) = words.next() else { continue };
        if image != SAMPLE_BASE_IMAGE && !stages.iter().any(|s| s.eq_ignore_ascii_case(image)) {
            foreign.push(image.to_string());
        }
        if words.next().is_some_and(|w| w.eq_ignore_ascii_case("AS")) {
            if let Some(stage) = words.next() {
                stages.push(stage.to_string());
            }
        }
    }
    foreign
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_foreign_base_images() {
        let dockerfile = format!(
            "FROM {SAMPLE_BASE_IMAGE} AS build\nRUN make\nFROM build\nFROM --platform=linux/amd64 golang:1.22\n"
        );
        assert_eq!(foreign_base_images(&dockerfile), ["golang:1.22"]);
    }

    #[test]
    fn from_line_takes_lines_starting_with_non_ascii_text() {
        let template = "ééé comment\nü\nFROM golang:1.22\n";
        assert_eq!(from_line(template, "golang:1.22"), 3);
        assert_eq!(from_line("ééé golang:1.22\n", "golang:1.22"), 0);
    }
}
