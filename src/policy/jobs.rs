//! A policy's jobs (`jobs:`): commands run against the deployed image on a cron schedule or by
//! `rebake job run IMAGE JOB` — maintenance, a backup whose dump rebake stores outside the
//! container, or a restore check that restores the latest backup into a throw-away container.

use serde::{Deserialize, Serialize};

use super::image_tests::argv;
use super::{is_valid_docker_name, DeployTarget};
use crate::config::{CronSchedule, Diagnostics, FieldPath, ScalarString};

/// Default `timeout_seconds` of a job.
pub const DEFAULT_JOB_TIMEOUT_SECONDS: u64 = 3600;
/// A job may run a day at most (a dump of a large database takes long; a day is a typo).
const MAX_JOB_TIMEOUT_SECONDS: u64 = 86_400;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    pub name: Option<String>,
    pub schedule: Option<String>,
    pub command: Option<Vec<ScalarString>>,
    /// `deployed` (exec in the running container, the default) or `new`.
    pub container: Option<String>,
    pub target: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub backup: Option<RawBackup>,
    pub restore_check: Option<RawRestoreCheck>,
    pub pre_deploy: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackup {
    pub store: Option<String>,
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestoreCheck {
    pub backup: Option<String>,
    pub restore: Option<Vec<ScalarString>>,
    pub check: Option<Vec<ScalarString>>,
    pub expect_stdout: Option<ScalarString>,
}

/// One validated job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub name: String,
    /// When `rebake serve` runs it (UTC); None: only `rebake job run`.
    pub schedule: Option<CronSchedule>,
    /// The docker deploy target (container name) whose container and image the job uses.
    pub target: String,
    pub timeout_seconds: u64,
    pub kind: JobKind,
    /// A backup that also runs before each deploy of its target, against the old container,
    /// when rebake.yaml has its store; a failure stops the deploy. Without the store the
    /// target's own `pre_deploy` command runs, as before.
    pub pre_deploy: bool,
}

/// Where a job's command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobContainer {
    /// `docker exec` in the deployed container, as its user.
    Deployed,
    /// A one-off container of the deployed image with the target's volumes, networks and env,
    /// removed afterwards.
    New,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// A command; succeeds on exit code 0. Its output is kept in the job's log.
    Command {
        argv: Vec<String>,
        container: JobContainer,
    },
    /// A command that writes a dump to stdout (or to `path` in the container), stored in a
    /// backup store of rebake.yaml with its SHA256.
    Backup {
        argv: Vec<String>,
        container: JobContainer,
        /// A name under rebake.yaml's `backups:`.
        store: String,
        /// Where the command writes the dump inside the container; None: its stdout.
        path: Option<String>,
    },
    /// Restores the latest dump of the backup job `backup` into a throw-away container of the
    /// deployed image, then runs `check` there.
    RestoreCheck(RestoreCheck),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreCheck {
    /// The backup job of the same policy whose latest dump is restored.
    pub backup: String,
    /// Run in the throw-away container once it is healthy; the dump is at
    /// `$REBAKE_BACKUP_FILE`.
    pub restore: Vec<String>,
    /// Run after the restore; passes on exit code 0 and, when given, when its stdout with
    /// trailing whitespace trimmed equals `expect_stdout`.
    pub check: Vec<String>,
    pub expect_stdout: Option<String>,
}

impl Job {
    /// The backup store the job writes to, when it is a backup.
    pub fn store(&self) -> Option<&str> {
        match &self.kind {
            JobKind::Backup { store, .. } => Some(store),
            _ => None,
        }
    }
}

/// A job name: a path component of the state and backup directories and a metrics label.
pub fn is_valid_job_name(name: &str) -> bool {
    is_valid_docker_name(name) && name.len() <= 64 && !name.starts_with('.')
}

pub(super) fn validate_jobs(
    d: &mut Diagnostics,
    field: &FieldPath,
    raw: Vec<RawJob>,
    deploy: &[DeployTarget],
) -> Vec<Job> {
    let containers: Vec<&str> = deploy
        .iter()
        .filter_map(|t| match t {
            DeployTarget::Docker(docker) => Some(docker.name.as_str()),
            _ => None,
        })
        .collect();
    let mut jobs: Vec<Job> = Vec::new();
    // Restore checks name backup jobs that may come later in the list: checked at the end.
    let mut restore_refs = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let field = field.index(i);
        let errors_before = d.list.len();
        let name = match raw.name {
            Some(name) if is_valid_job_name(&name) => {
                if jobs.iter().any(|j| j.name == name) {
                    d.error(
                        &field.key("name"),
                        format!("another job is also named '{name}'"),
                        "give each job its own name; logs, backups and metrics use it",
                    );
                }
                name
            }
            Some(name) => {
                d.error(
                    &field.key("name"),
                    format!("'{name}' is not a usable job name"),
                    "use letters, digits, '_', '.' and '-', starting with a letter or digit, \
                     at most 64 characters, like nightly-dump",
                );
                String::new()
            }
            None => {
                d.error(
                    &field.key("name"),
                    "is missing",
                    "add 'name:', like nightly-dump",
                );
                String::new()
            }
        };
        let schedule = raw.schedule.and_then(|expression| {
            CronSchedule::parse(&expression)
                .map_err(|problem| {
                    d.error(
                        &field.key("schedule"),
                        format!("'{expression}' is not a cron expression: {problem}"),
                        "write five fields (minute hour day-of-month month day-of-week, UTC), \
                         like '30 2 * * *' for 02:30 every night, or @daily",
                    )
                })
                .ok()
        });
        let target = match raw.target {
            Some(target) if containers.contains(&target.as_str()) => target,
            Some(target) => {
                d.error(
                    &field.key("target"),
                    format!("'{target}' is not a docker deploy target of this policy"),
                    format!(
                        "name the container of one of deploy's docker: entries ({})",
                        if containers.is_empty() {
                            "there are none".to_string()
                        } else {
                            containers.join(", ")
                        }
                    ),
                );
                String::new()
            }
            None => match containers.as_slice() {
                [only] => only.to_string(),
                [] => {
                    d.error(
                        &field,
                        "needs a docker deploy target, and the policy has none",
                        "jobs run against the deployed container: add a deploy: entry with \
                         docker: {name: ...}",
                    );
                    String::new()
                }
                several => {
                    d.error(
                        &field.key("target"),
                        "is missing, and the policy deploys to several containers",
                        format!("add 'target:', one of {}", several.join(", ")),
                    );
                    String::new()
                }
            },
        };
        let timeout_seconds = match raw.timeout_seconds {
            None => DEFAULT_JOB_TIMEOUT_SECONDS,
            Some(s) if (1..=MAX_JOB_TIMEOUT_SECONDS).contains(&s) => s,
            Some(s) => {
                d.error(
                    &field.key("timeout_seconds"),
                    format!("{s} is out of range"),
                    format!("give a number of seconds from 1 to {MAX_JOB_TIMEOUT_SECONDS}"),
                );
                DEFAULT_JOB_TIMEOUT_SECONDS
            }
        };
        let container = match raw.container.as_deref() {
            None | Some("deployed") => JobContainer::Deployed,
            Some("new") => JobContainer::New,
            Some(other) => {
                d.error(
                    &field.key("container"),
                    format!("'{other}' is not where a job runs"),
                    "write 'deployed' (docker exec in the running container) or 'new' (a \
                     one-off container of the deployed image with its volumes, networks and env)",
                );
                JobContainer::Deployed
            }
        };
        let kind = match (raw.command, raw.restore_check) {
            (Some(_), Some(_)) => {
                d.error(
                    &field,
                    "has both command: and restore_check:",
                    "a job is either a command (with backup: for a dump) or a restore check; \
                     make two jobs",
                );
                None
            }
            (None, None) => {
                d.error(
                    &field,
                    "has neither command: nor restore_check:",
                    "add 'command: [...]', the program and its arguments, like \
                     [pg_dumpall, --clean]",
                );
                None
            }
            (Some(command), None) => {
                let argv = argv(d, &field.key("command"), command, "[pg_dumpall, --clean]");
                match raw.backup {
                    None => argv.map(|argv| JobKind::Command { argv, container }),
                    Some(backup) => {
                        let field = field.key("backup");
                        let store = match backup.store {
                            Some(store) if is_valid_job_name(&store) => Some(store),
                            Some(store) => {
                                d.error(
                                    &field.key("store"),
                                    format!("'{store}' is not a backup store name"),
                                    "name a store under backups: in rebake.yaml, like local",
                                );
                                None
                            }
                            None => {
                                d.error(
                                    &field.key("store"),
                                    "is missing",
                                    "add 'store:', the name of a store under backups: in \
                                     rebake.yaml",
                                );
                                None
                            }
                        };
                        let path = backup.path.filter(|path| {
                            let ok = path.starts_with('/')
                                && !path.ends_with('/')
                                && !path.contains('\0')
                                && !path.split('/').any(|c| c == "..");
                            if !ok {
                                d.error(
                                    &field.key("path"),
                                    format!("'{path}' is not an absolute file path"),
                                    "write the file the command writes inside the container, \
                                     like /var/backups/postgresql/dump.sql, or leave path out \
                                     to store the command's stdout",
                                );
                            }
                            ok
                        });
                        match (argv, store) {
                            (Some(argv), Some(store)) => Some(JobKind::Backup {
                                argv,
                                container,
                                store,
                                path,
                            }),
                            _ => None,
                        }
                    }
                }
            }
            (None, Some(check)) => {
                let field = field.key("restore_check");
                if raw.backup.is_some() {
                    d.error(
                        &field,
                        "cannot be a backup too",
                        "move backup: to the job whose dump this check restores",
                    );
                }
                let backup = match check.backup {
                    Some(name) => {
                        restore_refs.push((field.key("backup"), name.clone()));
                        Some(name)
                    }
                    None => {
                        d.error(
                            &field.key("backup"),
                            "is missing",
                            "add 'backup:', the name of this policy's backup job whose latest \
                             dump is restored",
                        );
                        None
                    }
                };
                let command =
                    |d: &mut Diagnostics, key: &str, raw: Option<Vec<ScalarString>>| match raw {
                        Some(raw) => argv(d, &field.key(key), raw, "[psql, -f, /dump.sql]"),
                        None => {
                            d.error(
                                &field.key(key),
                                "is missing",
                                format!(
                                    "add '{key}: [...]', run in the throw-away container{}",
                                    if key == "restore" {
                                        " with the dump at $REBAKE_BACKUP_FILE"
                                    } else {
                                        " after the restore; exit code 0 passes"
                                    }
                                ),
                            );
                            None
                        }
                    };
                let restore = command(d, "restore", check.restore);
                let check_argv = command(d, "check", check.check);
                match (backup, restore, check_argv) {
                    (Some(backup), Some(restore), Some(check_argv)) => {
                        Some(JobKind::RestoreCheck(RestoreCheck {
                            backup,
                            restore,
                            check: check_argv,
                            expect_stdout: check.expect_stdout.map(|s| s.0),
                        }))
                    }
                    _ => None,
                }
            }
        };
        let pre_deploy = raw.pre_deploy.unwrap_or(false);
        if pre_deploy && !matches!(kind, Some(JobKind::Backup { .. }) | None) {
            d.error(
                &field.key("pre_deploy"),
                "only a backup runs before a deploy",
                "add backup: {store: ...} to this job, or remove pre_deploy",
            );
        }
        if let (Some(kind), true) = (kind, d.list.len() == errors_before) {
            if pre_deploy && jobs.iter().any(|j| j.pre_deploy && j.target == target) {
                d.error(
                    &field.key("pre_deploy"),
                    format!("another backup already runs before deploys of {target}"),
                    "keep pre_deploy: true on one backup job per target",
                );
            }
            jobs.push(Job {
                name,
                schedule,
                target,
                timeout_seconds,
                kind,
                pre_deploy,
            });
        }
    }
    for (field, name) in restore_refs {
        let backup = jobs.iter().find(|j| j.name == name);
        if backup.is_none_or(|j| j.store().is_none()) {
            let backups: Vec<&str> = jobs
                .iter()
                .filter(|j| j.store().is_some())
                .map(|j| j.name.as_str())
                .collect();
            d.error(
                &field,
                format!("'{name}' is not a backup job of this policy"),
                if backups.is_empty() {
                    "add a job with command: and backup: {store: ...}, and name it here".into()
                } else {
                    format!("name one of: {}", backups.join(", "))
                },
            );
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::super::parse_policy;
    use super::*;
    use std::path::Path;

    const DEPLOY: &str = "template: pg.hbs\nsuite: trixie\ndeploy:\n  - docker:\n      name: db\n";

    fn parse(jobs: &str) -> Result<Vec<Job>, Vec<String>> {
        parse_policy(
            "pg",
            Path::new("policies/pg.yaml"),
            &format!("{DEPLOY}jobs:\n{jobs}"),
        )
        .map(|p| p.jobs)
        .map_err(|errors| errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn a_backup_and_its_restore_check() {
        let jobs = parse(
            "  - name: dump
    schedule: \"30 2 * * *\"
    command: [pg_dumpall, --clean]
    timeout_seconds: 600
    backup: {store: local}
    pre_deploy: true
  - name: vacuum
    command: [vacuumdb, --all]
    container: new
  - name: restore-check
    schedule: \"@daily\"
    restore_check:
      backup: dump
      restore: [sh, -c, 'psql -f \"$REBAKE_BACKUP_FILE\" postgres']
      check: [psql, -tAc, select 1]
      expect_stdout: 1
",
        )
        .unwrap();
        assert_eq!(jobs.len(), 3);
        assert_eq!(
            jobs[0].target, "db",
            "the only docker target is the default"
        );
        assert_eq!(jobs[0].timeout_seconds, 600);
        assert_eq!(
            jobs[0].schedule.as_ref().map(|s| s.to_string()).as_deref(),
            Some("30 2 * * *")
        );
        assert_eq!(
            jobs[0].kind,
            JobKind::Backup {
                argv: vec!["pg_dumpall".into(), "--clean".into()],
                container: JobContainer::Deployed,
                store: "local".into(),
                path: None,
            }
        );
        assert_eq!(jobs[0].store(), Some("local"));
        assert!(jobs[0].pre_deploy);
        assert!(!jobs[1].pre_deploy);
        assert_eq!(jobs[1].timeout_seconds, DEFAULT_JOB_TIMEOUT_SECONDS);
        assert_eq!(jobs[1].schedule, None);
        assert_eq!(
            jobs[1].kind,
            JobKind::Command {
                argv: vec!["vacuumdb".into(), "--all".into()],
                container: JobContainer::New,
            }
        );
        let JobKind::RestoreCheck(check) = &jobs[2].kind else {
            panic!("{:?}", jobs[2].kind)
        };
        assert_eq!(check.backup, "dump");
        assert_eq!(check.expect_stdout.as_deref(), Some("1"));
        assert_eq!(check.check, ["psql", "-tAc", "select 1"]);
    }

    #[test]
    fn a_backup_to_a_path() {
        let jobs = parse(
            "  - name: dump\n    command: [sh, -c, pg_dumpall > /var/backups/d.sql]\n    backup: {store: local, path: /var/backups/d.sql}\n",
        )
        .unwrap();
        let JobKind::Backup { path, .. } = &jobs[0].kind else {
            panic!()
        };
        assert_eq!(path.as_deref(), Some("/var/backups/d.sql"));
    }

    /// Each problem names the file, its line and the field.
    #[test]
    fn problems_name_file_line_and_field() {
        let cases: [(&str, &str, &str); 16] = [
            ("  - name: a\n    command: [x]\n    pre_deploy: true\n", "policies/pg.yaml:9:", "field 'jobs[0].pre_deploy': only a backup runs before a deploy"),
            ("  - name: a\n    command: [x]\n    backup: {store: s}\n    pre_deploy: true\n  - name: b\n    command: [x]\n    backup: {store: s}\n    pre_deploy: true\n", "policies/pg.yaml:14:", "another backup already runs before deploys of db"),
            ("  - command: [x]\n", "policies/pg.yaml:7:", "field 'jobs[0].name': is missing"),
            ("  - name: Bad/Name\n    command: [x]\n", "policies/pg.yaml:7:", "'Bad/Name' is not a usable job name"),
            ("  - name: a\n    command: [x]\n  - name: a\n    command: [y]\n", "policies/pg.yaml:9:", "another job is also named 'a'"),
            ("  - name: a\n    schedule: nightly\n    command: [x]\n", "policies/pg.yaml:8:", "field 'jobs[0].schedule': 'nightly' is not a cron expression"),
            ("  - name: a\n    command: [x]\n    target: web\n", "policies/pg.yaml:9:", "'web' is not a docker deploy target of this policy"),
            ("  - name: a\n    command: [x]\n    timeout_seconds: 0\n", "policies/pg.yaml:9:", "field 'jobs[0].timeout_seconds': 0 is out of range"),
            ("  - name: a\n    command: [x]\n    container: sidecar\n", "policies/pg.yaml:9:", "'sidecar' is not where a job runs"),
            ("  - name: a\n", "policies/pg.yaml:7:", "has neither command: nor restore_check:"),
            ("  - name: a\n    command: []\n", "policies/pg.yaml:8:", "field 'jobs[0].command': is an empty command"),
            ("  - name: a\n    command: [x]\n    backup: {path: /d.sql}\n", "policies/pg.yaml:9:", "field 'jobs[0].backup.store': is missing"),
            ("  - name: a\n    command: [x]\n    backup:\n      store: local\n      path: dump.sql\n", "policies/pg.yaml:11:", "'dump.sql' is not an absolute file path"),
            ("  - name: a\n    restore_check:\n      backup: nosuch\n      restore: [x]\n      check: [y]\n", "policies/pg.yaml:9:", "field 'jobs[0].restore_check.backup': 'nosuch' is not a backup job of this policy"),
            ("  - name: a\n    restore_check:\n      backup: a\n      check: [y]\n", "policies/pg.yaml:8:", "field 'jobs[0].restore_check.restore': is missing"),
            ("  - name: a\n    command: [x]\n    bakup: {store: local}\n", "policies/pg.yaml:9:", "jobs[0].bakup"),
        ];
        for (jobs, at, message) in cases {
            let errors = parse(jobs).unwrap_err();
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with(at) && e.contains(message)),
                "{jobs}: wanted {at} … {message}, got {errors:#?}"
            );
        }
    }

    #[test]
    fn a_job_needs_a_docker_target_and_picks_one_of_several_by_name() {
        let none = parse_policy(
            "pg",
            Path::new("policies/pg.yaml"),
            "template: pg.hbs\nsuite: trixie\njobs:\n  - name: a\n    command: [x]\n",
        )
        .unwrap_err();
        assert!(
            none[0].to_string().contains("needs a docker deploy target"),
            "{none:?}"
        );
        let two = "template: pg.hbs\nsuite: trixie\ndeploy:\n  - docker: {name: a}\n  - docker: {name: b}\njobs:\n  - name: j\n    command: [x]\n";
        let errors = parse_policy("pg", Path::new("policies/pg.yaml"), two).unwrap_err();
        assert!(
            errors[0].to_string().contains("add 'target:', one of a, b"),
            "{errors:?}"
        );
        let chosen = parse_policy(
            "pg",
            Path::new("policies/pg.yaml"),
            &format!("{two}    target: b\n"),
        )
        .unwrap();
        assert_eq!(chosen.jobs[0].target, "b");
    }
}
