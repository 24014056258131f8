//! The deploy gate (`rebake::rollout::deploy_commit`) on a plain-git GitOps repository and the
//! machine's dockerd: what reaches a target is only the lock a proposal tested. The proposal's
//! `rebake/test` status is set through the plain-git forge as `rebake propose` sets it; the
//! locks name tiny images (`support::tiny_image`), so nothing is built.

use std::path::PathBuf;

use rebake::config::RegistryConfig;
use rebake::forge::plain::PlainGit;
use rebake::forge::{Forge, StatusState, STATUS_CONTEXT};
use rebake::git::Auth;
use rebake::lock::{ImageRef, Lock, TestSummary};
use rebake::rollout::{deploy_commit, DeployRun, ImageRollout};

use super::{image_a, image_b, Cleanup};
use crate::support::engine::{docker, runtime, DOCKER_HOST};
use crate::support::gitops::{git, gitops_with, rebake, text, GitOps, TICKER_TEMPLATE};

const IMAGE: &str = "gate";
const BRANCH: &str = "rebake/gate";

/// A GitOps repository whose image `gate` deploys to one container, the plain-git forge
/// rebake's deploy uses on it, and a state directory.
pub(super) struct Gate {
    pub ops: GitOps,
    pub state: tempfile::TempDir,
    pub forge: PlainGit,
    pub container: String,
    _cleanup: Cleanup,
}

fn policy(container: &str) -> String {
    format!(
        "template: gate.Dockerfile.hbs\nsuite: trixie\ndeploy:\n  - docker:\n      name: {container}\n      health:\n        command: [\"true\"]\n        timeout_seconds: 30\n"
    )
}

/// A lock of `gate` naming the image `id` (and `digest`), with passing tests.
pub(super) fn lock_text(id: &str, digest: Option<&str>) -> String {
    Lock {
        lock_version: 1,
        name: IMAGE.into(),
        suite: "trixie".into(),
        architecture: "amd64".into(),
        archive: Vec::new(),
        base: None,
        parent: None,
        reason: None,
        packages: Vec::new(),
        image: Some(ImageRef {
            id: id.into(),
            digest: digest.map(Into::into),
        }),
        tests: Some(TestSummary {
            passed: true,
            results: Vec::new(),
        }),
    }
    .to_yaml()
    .unwrap()
}

impl Gate {
    pub(super) fn new(test: &str) -> Gate {
        Gate::with_policy_tail(test, "")
    }

    /// A gate whose policy ends with `tail` (`{container}` in it: the container's name).
    pub(super) fn with_policy_tail(test: &str, tail: &str) -> Gate {
        let container = format!("rebake-gate-{test}-{}", std::process::id());
        let text = policy(&container) + &tail.replace("{container}", &container);
        let ops = gitops_with(&[
            ("policies/gate.yaml".into(), text),
            (
                "templates/gate.Dockerfile.hbs".into(),
                TICKER_TEMPLATE.into(),
            ),
        ]);
        let state = tempfile::tempdir().unwrap();
        let forge = PlainGit::new(
            &state.path().join("workspace"),
            ops.bare.to_str().unwrap(),
            Auth::None,
            state.path(),
        );
        let cleanup = Cleanup {
            docker: docker(),
            containers: vec![container.clone()],
            volumes: Vec::new(),
        };
        Gate {
            ops,
            state,
            forge,
            container,
            _cleanup: cleanup,
        }
    }

    /// rebake proposes `lock` on `rebake/gate` (on top of main) and its tests pass: the head's
    /// `rebake/test` status is success. Returns the proposal head.
    pub(super) fn propose(&self, lock: &str) -> String {
        let c = &self.ops.clone;
        git(c, &["fetch", "-q", "origin"]);
        git(c, &["checkout", "-q", "-B", BRANCH, "origin/main"]);
        let path = c.join("images/gate/rebake.lock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, lock).unwrap();
        git(c, &["add", "images"]);
        git(c, &["commit", "-q", "-m", "gate: security update"]);
        git(c, &["push", "-q", "-f", "origin", BRANCH]);
        let head = git(c, &["rev-parse", "HEAD"]);
        runtime()
            .block_on(self.forge.set_status(
                &head,
                StatusState::Success,
                STATUS_CONTEXT,
                "tests passed",
            ))
            .unwrap();
        head
    }

    /// A person merges the proposal into main with a merge commit; `edit` changes the lock in
    /// the merge commit first (`git merge --no-ff --no-commit`, edit, commit). Returns the merge.
    pub(super) fn merge(&self, edit: Option<&dyn Fn(String) -> String>) -> String {
        let c = &self.ops.clone;
        git(c, &["fetch", "-q", "origin"]);
        git(c, &["checkout", "-q", "-B", "main", "origin/main"]);
        git(
            c,
            &[
                "merge",
                "-q",
                "--no-ff",
                "--no-commit",
                &format!("origin/{BRANCH}"),
            ],
        );
        if let Some(edit) = edit {
            let path = c.join("images/gate/rebake.lock");
            let lock = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, edit(lock)).unwrap();
            git(c, &["add", "images"]);
        }
        git(c, &["commit", "-q", "-m", "Merge rebake/gate"]);
        git(c, &["push", "-q", "origin", "main"]);
        git(c, &["rev-parse", "HEAD"])
    }

    pub(super) fn run(&self, commit: Option<&str>, registry: Option<RegistryConfig>) -> DeployRun {
        DeployRun {
            remote_url: self.ops.bare.to_str().unwrap().to_string(),
            auth: Auth::None,
            workspace_dir: self.workspace(),
            state_dir: self.state.path().to_path_buf(),
            engine_host: DOCKER_HOST.to_string(),
            registry,
            commit: commit.map(Into::into),
            group: None,
            rollback: false,
            verify: None,
            backups: Default::default(),
        }
    }

    /// `rebake deploy gate --rollback-to <commit>`.
    pub(super) fn rollback_run(&self, commit: &str) -> DeployRun {
        DeployRun {
            rollback: true,
            ..self.run(Some(commit), None)
        }
    }

    /// The lines of `<state>/deployments.log`.
    pub(super) fn log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.path().join("deployments.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn workspace(&self) -> PathBuf {
        self.state.path().join("workspace")
    }

    /// Deploys `gate` as `run` says; its one rollout.
    pub(super) fn deploy(&self, run: &DeployRun) -> ImageRollout {
        let mut out = runtime()
            .block_on(deploy_commit(run, &self.forge, &[IMAGE.to_string()]))
            .unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        out.remove(0)
    }

    /// The image the container runs, if it exists.
    pub(super) fn running(&self) -> Option<String> {
        runtime()
            .block_on(docker().inspect_container(&self.container, None))
            .ok()
            .and_then(|c| c.image)
    }
}

fn short(sha: &str) -> &str {
    &sha[..12]
}

fn deployed(r: &ImageRollout) -> bool {
    r.ok() && r.targets.iter().any(|t| t.result.word() == "deployed")
}

#[test]
fn a_lock_edited_in_the_merge_commit_is_refused() {
    let gate = Gate::new("merge-edit");
    let tested = runtime().block_on(image_a(&docker()));
    let untested = runtime().block_on(image_b(&docker()));

    // The proposal tested image a; the merge commit swaps in image b, "passed: true".
    let head = gate.propose(&lock_text(&tested, None));
    let merge = gate.merge(Some(&|lock: String| lock.replace(&tested, &untested)));
    let r = gate.deploy(&gate.run(None, None));
    let why = r
        .refused
        .clone()
        .unwrap_or_else(|| panic!("not refused: {r:?}"));
    assert!(
        why.contains(short(&merge)) && why.contains(short(&head)),
        "names the deploy commit and the tested head: {why}"
    );
    assert!(why.contains("differs"), "{why}");
    assert!(r.targets.is_empty(), "{r:?}");
    assert_eq!(gate.running(), None, "nothing was deployed");

    // The same through --commit, and with the rebake binary (the report's repro).
    let r = gate.deploy(&gate.run(Some(&merge), None));
    assert!(r.refused.is_some(), "{r:?}");
    let out = rebake(&gate.ops, gate.state.path(), &["deploy", "gate"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("refused: the lock at the deploy commit"),
        "{}",
        text(&out)
    );
    assert_eq!(gate.running(), None);

    // A merge that leaves the tested lock as it is deploys it.
    gate.propose(&lock_text(&tested, None));
    gate.merge(None);
    let r = gate.deploy(&gate.run(None, None));
    assert!(deployed(&r), "{r:?}");
    assert_eq!(gate.running().as_deref(), Some(tested.as_str()));
}

#[test]
fn a_digest_outside_the_configured_registry_is_refused() {
    let gate = Gate::new("registry");
    let tested = runtime().block_on(image_a(&docker()));
    let digest = format!("registry.invalid:5000/gate@sha256:{}", "1".repeat(64));
    gate.propose(&lock_text(&tested, Some(&digest)));
    gate.merge(None);

    // No registry configured: a digest cannot be checked anywhere.
    let r = gate.deploy(&gate.run(None, None));
    let why = r
        .refused
        .clone()
        .unwrap_or_else(|| panic!("not refused: {r:?}"));
    assert!(why.contains("configures no registry"), "{why}");

    // A registry configured, the digest on another host.
    let registry = RegistryConfig {
        url: "127.0.0.1:9/ops".into(),
        host: "127.0.0.1:9".into(),
        namespace: Some("ops".into()),
        insecure: true,
        username: None,
        password_env: None,
    };
    let r = gate.deploy(&gate.run(None, Some(registry)));
    let why = r
        .refused
        .clone()
        .unwrap_or_else(|| panic!("not refused: {r:?}"));
    assert!(why.contains("not in the configured registry"), "{why}");
    assert_eq!(gate.running(), None, "nothing was deployed");
}

#[test]
fn an_older_commit_is_refused_unless_rolled_back_explicitly() {
    let gate = Gate::new("older");
    let old = runtime().block_on(image_a(&docker()));
    let new = runtime().block_on(image_b(&docker()));

    gate.propose(&lock_text(&old, None));
    let first = gate.merge(None);
    assert!(deployed(&gate.deploy(&gate.run(None, None))));
    gate.propose(&lock_text(&new, None));
    let second = gate.merge(None);
    assert!(deployed(&gate.deploy(&gate.run(None, None))));
    assert_eq!(gate.running().as_deref(), Some(new.as_str()));

    // `--commit` of the first merge (a replayed webhook deploys the same way): refused.
    let r = gate.deploy(&gate.run(Some(&first), None));
    let why = r
        .refused
        .clone()
        .unwrap_or_else(|| panic!("not refused: {r:?}"));
    assert!(
        why.contains("older than") && why.contains(short(&first)) && why.contains(short(&second)),
        "{why}"
    );
    assert!(why.contains("--rollback-to"), "says how to go back: {why}");
    assert_eq!(gate.running().as_deref(), Some(new.as_str()), "untouched");

    // A later commit that leaves the lock alone, then the merge again: the lock that runs is
    // the same, so nothing goes back and nothing is refused.
    let c = &gate.ops.clone;
    std::fs::write(c.join("NOTES"), "notes\n").unwrap();
    git(c, &["add", "NOTES"]);
    git(c, &["commit", "-q", "-m", "notes"]);
    git(c, &["push", "-q", "origin", "main"]);
    let r = gate.deploy(&gate.run(None, None));
    assert!(r.ok() && r.refused.is_none(), "{r:?}");
    let r = gate.deploy(&gate.run(Some(&second), None));
    assert!(r.ok() && r.refused.is_none(), "{r:?}");
    assert_eq!(r.targets[0].result.word(), "unchanged", "{r:?}");

    // Asked for explicitly: the rollback runs and is recorded as one.
    let r = gate.deploy(&gate.rollback_run(&first));
    assert!(deployed(&r), "{r:?}");
    assert!(r.rollback, "{r:?}");
    assert_eq!(gate.running().as_deref(), Some(old.as_str()));
    let log = gate.log();
    let last = log.last().unwrap();
    assert_eq!(last["rollback"], serde_json::json!(true), "{last}");
    assert_eq!(last["commit"], serde_json::json!(first), "{last}");
    assert!(
        log[..log.len() - 1]
            .iter()
            .all(|l| l["rollback"] == serde_json::json!(false)),
        "{log:?}"
    );

    // The same with the rebake binary on this state directory (its plain-git statuses).
    let cli = |args: &[&str]| rebake(&gate.ops, gate.state.path(), args, &[]);
    let out = cli(&["deploy", "gate"]);
    assert_eq!(out.status.code(), Some(0), "forward again: {}", text(&out));
    assert_eq!(gate.running().as_deref(), Some(new.as_str()));
    let out = cli(&["deploy", "gate", "--commit", &first]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("older than"), "{}", text(&out));
    assert_eq!(gate.running().as_deref(), Some(new.as_str()));
    let out = cli(&["deploy", "--rollback-to", &first]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "names the images: {}",
        text(&out)
    );
    let out = cli(&["deploy", "gate", "--rollback-to", &first]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("rollback"), "{}", text(&out));
    assert_eq!(gate.running().as_deref(), Some(old.as_str()));
    assert_eq!(
        gate.log().last().unwrap()["rollback"],
        serde_json::json!(true)
    );
}

/// A backup job with `pre_deploy: true` runs in the old container before it is replaced, through
/// rebake.yaml's backup store (stored with its SHA256), instead of the target's own pre_deploy
/// command; a failed backup stops the deploy and the old container keeps running. Without the
/// store configured, the target's pre_deploy command runs as before.
#[test]
fn a_pre_deploy_backup_goes_to_the_backup_store_and_a_failed_one_stops_the_deploy() {
    let gate = Gate::with_policy_tail(
        "pre-deploy-backup",
        "      pre_deploy: [sh, -c, 'test ! -e /tmp/fail']\njobs:\n  - name: predump\n    command: [sh, -c, 'test ! -e /tmp/fail && echo \"dump of $HOSTNAME\"']\n    backup: {store: local}\n    pre_deploy: true\n",
    );
    let a = runtime().block_on(image_a(&docker()));
    let b = runtime().block_on(image_b(&docker()));
    let store = gate.state.path().join("backups");
    let with_store = || DeployRun {
        backups: [(
            "local".to_string(),
            rebake::config::BackupStore {
                location: rebake::config::BackupLocation::Dir(store.clone()),
                keep_last: None,
                keep_for: None,
            },
        )]
        .into_iter()
        .collect(),
        ..gate.run(None, None)
    };
    let exec = |argv: &[&str]| {
        let out = std::process::Command::new("docker")
            .arg("exec")
            .arg(&gate.container)
            .args(argv)
            .output()
            .expect("docker CLI not found (apt-get install docker.io)");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let dumps = || rebake::jobs::store::list_dumps(&store.join("gate/predump")).unwrap();

    // First deploy: nothing runs yet, nothing to back up.
    gate.propose(&lock_text(&a, None));
    gate.merge(None);
    assert!(deployed(&gate.deploy(&with_store())));
    assert!(dumps().is_empty());

    // a → b: the backup runs in the old container (a) and is stored; the old hook does not run.
    let old_hostname = exec(&["cat", "/etc/hostname"]).1;
    gate.propose(&lock_text(&b, None));
    gate.merge(None);
    let r = gate.deploy(&with_store());
    assert!(deployed(&r), "{r:?}");
    assert_eq!(gate.running().as_deref(), Some(b.as_str()));
    let stored = dumps();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        std::fs::read_to_string(&stored[0]).unwrap(),
        format!("dump of {}", old_hostname)
    );
    rebake::jobs::store::verify(&stored[0]).unwrap();
    let record = rebake::jobs::read_summary(gate.state.path(), "gate", "predump")
        .unwrap()
        .unwrap();
    assert_eq!((record.runs, record.failures), (1, 0));

    // b → a with a failing backup: not deployed, b keeps running.
    assert_eq!(exec(&["sh", "-c", "echo > /tmp/fail"]).0, Some(0));
    gate.propose(&lock_text(&a, None));
    gate.merge(None);
    let r = gate.deploy(&with_store());
    assert!(!r.ok(), "{r:?}");
    let reason = match &r.targets[0].result {
        rebake::deploy::DeployResult::Failed { reason } => reason.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        reason.starts_with("the pre-deploy backup predump failed: ")
            && reason.contains("exited with 1; the old container keeps running (log: "),
        "{reason}"
    );
    assert_eq!(gate.running().as_deref(), Some(b.as_str()));
    assert_eq!(dumps().len(), 1, "a failed backup leaves no dump");
    let partial: Vec<_> = std::fs::read_dir(store.join("gate/predump"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
    let record = rebake::jobs::read_summary(gate.state.path(), "gate", "predump")
        .unwrap()
        .unwrap();
    assert_eq!((record.runs, record.failures), (2, 1));

    // Without the store in rebake.yaml: the target's own pre_deploy command, as before (it
    // fails the same way here, under its own name).
    let r = gate.deploy(&gate.run(None, None));
    let reason = match &r.targets[0].result {
        rebake::deploy::DeployResult::Failed { reason } => reason.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        reason.starts_with("pre_deploy [\"sh\", \"-c\", \"test ! -e /tmp/fail\"] exited with 1"),
        "{reason}"
    );
    assert_eq!(dumps().len(), 1);
    assert_eq!(exec(&["sh", "-c", "rm /tmp/fail"]).0, Some(0));
    let r = gate.deploy(&with_store());
    assert!(deployed(&r), "{r:?}");
    assert_eq!(gate.running().as_deref(), Some(a.as_str()));
    assert_eq!(dumps().len(), 2);
}

/// A deploy waits for a running job of its target: the job, started by `rebake job run` in
/// another process, runs to its end in the old container, and only then is the container
/// replaced.
#[test]
fn a_deploy_waits_for_a_running_job_of_its_target() {
    let gate = Gate::with_policy_tail(
        "waits-for-job",
        "jobs:\n  - name: slow\n    command: [sh, -c, 'sleep 3; echo finished']\n",
    );
    let a = runtime().block_on(image_a(&docker()));
    let b = runtime().block_on(image_b(&docker()));
    gate.propose(&lock_text(&a, None));
    gate.merge(None);
    assert!(deployed(&gate.deploy(&gate.run(None, None))));

    let job = std::process::Command::new(env!("CARGO_BIN_EXE_rebake"))
        .args(["job", "run", "gate", "slow", "--repo"])
        .arg(&gate.ops.clone)
        .env("REBAKE_STATE_DIR", gate.state.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start rebake job run");
    // The job holds the target's lock once it runs.
    let lock_file = rebake::jobs::target_lock::lock_path(
        gate.state.path(),
        &format!("docker:{}", gate.container),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&lock_file)
        .unwrap_or_default()
        .starts_with("job gate/slow")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    gate.propose(&lock_text(&b, None));
    gate.merge(None);
    let started = std::time::Instant::now();
    let r = gate.deploy(&gate.run(None, None));
    assert!(deployed(&r), "{r:?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "the deploy did not wait for the job: {:?}",
        started.elapsed()
    );
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out);
    let record = rebake::jobs::read_summary(gate.state.path(), "gate", "slow")
        .unwrap()
        .unwrap()
        .last
        .unwrap();
    assert!(record.ok(), "{record:?}");
    assert_eq!(record.image_id.as_deref(), Some(a.as_str()));
    assert_eq!(
        std::fs::read_to_string(&record.log).unwrap(),
        "finished\n",
        "the job ran to its end in the old container"
    );
    assert_eq!(gate.running().as_deref(), Some(b.as_str()));
}
