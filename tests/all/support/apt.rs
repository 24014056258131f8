//! The real apt, sandboxed in a temp dir: reads one deb822 `.sources` file and a given dpkg
//! status, and nothing of the host's apt configuration, keys, lists or preferences. Used to
//! compare rebake's candidate choice with apt's.
//!
//! Isolation: `APT_CONFIG` points to a generated `apt.conf` that moves every `Dir::` apt reads
//! or writes into the sandbox (config parts, sources, preferences, trusted keys, lists, cache,
//! status, logs); downloads run as root (no `_apt` sandbox user, which could not read the temp
//! dir); proxies are bypassed for 127.0.0.1; `LC_ALL=C` for parseable output.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::require_tool;

/// Outcome of one apt command.
#[derive(Clone, Debug)]
pub struct AptRun {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl AptRun {
    /// stdout and stderr together, for messages.
    pub fn output(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// `W:` and `E:` lines apt printed.
    pub fn problems(&self) -> Vec<String> {
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .filter(|l| l.starts_with("W:") || l.starts_with("E:") || l.starts_with("Err:"))
            .map(str::to_string)
            .collect()
    }
}

/// A sandboxed apt; see the module documentation.
pub struct AptSandbox {
    dir: tempfile::TempDir,
}

impl AptSandbox {
    /// A sandbox for `sources_path` (a deb822 `.sources` file, copied in) and the dpkg status
    /// `status_text`, after a successful `apt-get update` (panics, with apt's output, if the
    /// update fails or apt prints any warning or error).
    pub fn new(sources_path: impl AsRef<Path>, status_text: &str) -> Self {
        let sandbox = Self::prepare(sources_path, status_text);
        sandbox.update_ok();
        sandbox
    }

    /// Like [`new`](Self::new) without running `apt-get update` (for tests that expect it to
    /// fail).
    pub fn prepare(sources_path: impl AsRef<Path>, status_text: &str) -> Self {
        let sources_path = sources_path.as_ref();
        require_tool("apt-get", "apt");
        require_tool("apt-cache", "apt");
        require_tool("gpgv", "gpgv");
        let dir = tempfile::Builder::new()
            .prefix("rebake-apt")
            .tempdir()
            .expect("create apt sandbox dir");
        let d = dir.path();
        for sub in [
            "apt.conf.d",
            "sources.list.d",
            "preferences.d",
            "trusted.gpg.d",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
        ] {
            fs::create_dir_all(d.join(sub)).expect("create apt sandbox dirs");
        }
        let sources = fs::read_to_string(sources_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", sources_path.display()));
        fs::write(d.join("sources.list.d/rebake-test.sources"), sources).expect("write sources");
        fs::write(d.join("status"), status_text).expect("write status");
        let p = |sub: &str| d.join(sub).display().to_string();
        let conf = format!(
            r#"Dir::Etc::main "{main}";
Dir::Etc::parts "{parts}";
Dir::Etc::sourcelist "/dev/null";
Dir::Etc::sourceparts "{sourceparts}";
Dir::Etc::preferences "{preferences}";
Dir::Etc::preferencesparts "{preferencesparts}";
Dir::Etc::trusted "{trusted}";
Dir::Etc::trustedparts "{trustedparts}";
Dir::State "{state}";
Dir::State::lists "{lists}";
Dir::State::status "{status}";
Dir::Cache "{cache}";
Dir::Log "{log}";
APT::Architecture "amd64";
APT::Architectures {{ "amd64"; }};
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::Retries "0";
Acquire::http::Proxy::127.0.0.1 "DIRECT";
Debug::NoLocking "1";
"#,
            main = p("apt.conf.none"),
            parts = p("apt.conf.d"),
            sourceparts = p("sources.list.d"),
            preferences = p("preferences"),
            preferencesparts = p("preferences.d"),
            trusted = p("trusted.gpg"),
            trustedparts = p("trusted.gpg.d"),
            state = p("state"),
            lists = p("state/lists"),
            status = p("status"),
            cache = p("cache"),
            log = p("log"),
        );
        fs::write(d.join("apt.conf"), conf).expect("write apt.conf");
        AptSandbox { dir }
    }

    /// The sandbox directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The generated `apt.conf` (`APT_CONFIG`).
    pub fn apt_conf(&self) -> PathBuf {
        self.dir.path().join("apt.conf")
    }

    /// Replaces the dpkg status apt reads.
    pub fn set_status(&self, status_text: &str) {
        fs::write(self.dir.path().join("status"), status_text).expect("write status");
    }

    /// Runs `apt-get update`.
    pub fn update(&self) -> AptRun {
        self.run("apt-get", &["-q", "update"])
    }

    /// Runs `apt-get update`; panics with apt's output on failure or on any `W:`/`E:`/`Err:`.
    pub fn update_ok(&self) -> AptRun {
        let run = self.update();
        assert!(
            run.success && run.problems().is_empty(),
            "apt-get update against the test archive failed or warned:\n{}",
            run.output()
        );
        run
    }

    /// Output of `apt-cache policy <pkg>` (panics if apt-cache fails).
    pub fn policy(&self, pkg: &str) -> String {
        let run = self.run("apt-cache", &["policy", pkg]);
        assert!(
            run.success,
            "apt-cache policy {pkg} failed:\n{}",
            run.output()
        );
        run.stdout
    }

    /// apt's candidate version of `pkg` (native architecture), from `apt-cache policy`;
    /// `None` if apt knows no candidate (or no such package).
    pub fn candidate(&self, pkg: &str) -> Option<String> {
        policy_field(&self.policy(pkg), "Candidate")
    }

    /// apt's candidates for several packages with one `apt-cache policy` run; a package apt
    /// does not know maps to `None`.
    pub fn candidates(&self, pkgs: &[&str]) -> BTreeMap<String, Option<String>> {
        let mut result: BTreeMap<String, Option<String>> =
            pkgs.iter().map(|p| (p.to_string(), None)).collect();
        if pkgs.is_empty() {
            return result;
        }
        let mut args = vec!["policy"];
        args.extend_from_slice(pkgs);
        let run = self.run("apt-cache", &args);
        assert!(run.success, "apt-cache policy failed:\n{}", run.output());
        let mut current: Option<String> = None;
        for line in run.stdout.lines() {
            if !line.starts_with(' ') && line.ends_with(':') {
                current = Some(line.trim_end_matches(':').to_string());
            } else if let (Some(pkg), Some(value)) = (&current, policy_field(line, "Candidate")) {
                result.insert(pkg.clone(), Some(value));
            }
        }
        result
    }

    /// The installed version apt sees in the status, from `apt-cache policy`.
    pub fn installed(&self, pkg: &str) -> Option<String> {
        policy_field(&self.policy(pkg), "Installed")
    }

    /// Runs `program` (`apt-get`, `apt-cache`, `apt`, ...) with `args` in the sandbox.
    pub fn run(&self, program: &str, args: &[&str]) -> AptRun {
        let out = Command::new(program)
            .args(args)
            .env("APT_CONFIG", self.apt_conf())
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program} (apt-get install apt): {e}"));
        AptRun {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Value of `  <field>: <value>` in `apt-cache policy` output, `(none)` as `None`.
pub fn policy_field(policy: &str, field: &str) -> Option<String> {
    let prefix = format!("{field}:");
    policy
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::trim)
        .filter(|v| *v != "(none)" && !v.is_empty())
        .map(str::to_string)
}
