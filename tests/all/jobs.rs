//! A policy's jobs against the machine's dockerd, through the `rebake` binary as a user runs
//! them: a job waits while a deploy holds its target; commands in the deployed container and in
//! a one-off container of its image; backups stored with their SHA256 and pruned; restore checks
//! that refuse a changed dump. And the PostgreSQL example end to end: built from Debian
//! packages, deployed, its nightly dump run by `rebake serve` on its schedule, its restore check
//! finding the data in a fresh container.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bollard::query_parameters::{RemoveContainerOptions, RemoveVolumeOptions};
use bollard::Docker;
use rebake::deploy::{deploy_docker, DeployResult, PREVIOUS_SUFFIX};
use rebake::jobs::target_lock::TargetLock;
use rebake::jobs::{JobRecord, JobSummary};
use rebake::policy::{DeployTarget, DockerTarget};

use crate::scan::{example_repo, rebake};
use crate::support::engine::{docker, runtime};
use crate::support::registry::free_port;
use crate::support::tiny_image::{self, TinySpec};

/// Removes a test's containers (the target, its set-aside previous one, the jobs' one-off and
/// restore containers) and volumes, however the test ends.
struct Cleanup {
    docker: Docker,
    container: String,
    jobs: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let mut names = vec![
            self.container.clone(),
            format!("{}{PREVIOUS_SUFFIX}", self.container),
        ];
        for job in &self.jobs {
            names.push(format!("{}.rebake-job-{job}", self.container));
            names.push(format!("{}.rebake-restore-{job}", self.container));
        }
        let volumes = std::mem::take(&mut self.volumes);
        runtime().block_on(async move {
            for name in names {
                let options = RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                };
                let _ = docker.remove_container(&name, Some(options)).await;
            }
            for volume in volumes {
                let _ = docker
                    .remove_volume(&volume, None::<RemoveVolumeOptions>)
                    .await;
            }
        });
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(o: &Output) -> String {
    let (stdout, stderr) = text(o);
    assert!(
        o.status.success(),
        "failed ({:?}):\nstdout: {stdout}\nstderr: {stderr}",
        o.status.code()
    );
    stdout
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// `rebake ARGS` on `<state>/repo` with `<state>/state`, not waited for.
fn spawn_rebake(state: &Path, a: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rebake"))
        .args(a)
        .arg("--repo")
        .arg(state.join("repo"))
        .env("REBAKE_STATE_DIR", state.join("state"))
        .env("REBAKE_SECURITY_TRACKER", "off")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rebake")
}

fn summary(state: &Path, image: &str, job: &str) -> JobSummary {
    rebake::jobs::read_summary(&state.join("state"), image, job)
        .unwrap()
        .unwrap_or_else(|| panic!("no summary of {image}/{job}"))
}

fn last(state: &Path, image: &str, job: &str) -> JobRecord {
    summary(state, image, job).last.expect("a last run")
}

fn the_docker_target(policy: &rebake::policy::Policy) -> DockerTarget {
    match &policy.deploy[0] {
        DeployTarget::Docker(d) => d.clone(),
        other => panic!("a docker target expected, got {other:?}"),
    }
}

/// A small server image: `sh` waits for TERM; `/srv` is where its volume goes.
async fn server_image(docker: &Docker) -> String {
    tiny_image::load(
        docker,
        &TinySpec {
            name: "jobs-server",
            cmd: &[
                "/bin/sh",
                "-c",
                "trap 'exit 0' TERM; while true; do sleep 1; done",
            ],
            user: None,
            exposed_ports: &[],
        },
    )
    .await
}

#[test]
fn jobs_wait_for_a_deploy_run_in_and_beside_the_container_and_store_verified_backups() {
    let docker = docker();
    let state = tempfile::tempdir().unwrap();
    let repo = state.path().join("repo");
    let name = format!("rebake-jobs-{}", std::process::id());
    let volume = format!("{name}-data");
    let backups = state.path().join("backups");
    let backup_volume = format!("{name}-backups");
    let _cleanup = Cleanup {
        docker: docker.clone(),
        container: name.clone(),
        jobs: [
            "stamp",
            "fails",
            "beside",
            "dump",
            "slow",
            "check",
            "to-volume",
        ]
        .map(String::from)
        .to_vec(),
        volumes: vec![volume.clone(), backup_volume.clone()],
    };
    std::fs::create_dir_all(repo.join("policies")).unwrap();
    std::fs::create_dir_all(repo.join("templates")).unwrap();
    std::fs::write(repo.join("templates/app.hbs"), "FROM {{base_image}}\n").unwrap();
    std::fs::write(
        repo.join("rebake.yaml"),
        format!(
            "backups:\n  local:\n    dir: {}\n    keep_last: 2\n  shared:\n    volume: {backup_volume}\n",
            backups.display()
        ),
    )
    .unwrap();
    std::fs::write(
        repo.join("policies/app.yaml"),
        format!(
            r#"template: app.hbs
suite: trixie
deploy:
  - docker:
      name: {name}
      volumes: ["{volume}:/srv"]
      env: {{GREETING: hello}}
jobs:
  - name: stamp
    command: [sh, -c, 'echo "stamp $GREETING" | tee -a /srv/stamps']
  - name: fails
    command: [sh, -c, 'echo broken >&2; exit 3']
  - name: beside
    container: new
    command: [sh, -c, 'echo "beside $GREETING" >> /srv/stamps; cat /srv/stamps']
  - name: dump
    container: new
    command: [sh, -c, 'cat /srv/stamps > /tmp/dump.txt']
    backup: {{store: local, path: /tmp/dump.txt}}
  - name: to-volume
    command: [cat, /srv/stamps]
    backup: {{store: shared}}
  - name: empty
    command: ["true"]
    backup: {{store: local}}
  - name: slow
    container: new
    timeout_seconds: 1
    command: [sh, -c, 'echo started; sleep 30']
  - name: check
    restore_check:
      backup: dump
      restore: [sh, -c, 'cat "$REBAKE_BACKUP_FILE" > /tmp/restored']
      check: [sh, -c, 'grep -c hello /tmp/restored']
      expect_stdout: "2"
"#
        ),
    )
    .unwrap();
    let policy = rebake::policy::load_policy(&repo.join("policies/app.yaml")).unwrap();
    let target = the_docker_target(&policy);

    // Before a deploy there is nothing to run against.
    let out = rebake(state.path(), &args(&["job", "run", "app", "stamp"]));
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out).0.contains(&format!(
            "no container {name} is deployed yet (rebake deploy app first)"
        )),
        "{:?}",
        text(&out)
    );

    let image = runtime().block_on(server_image(&docker));
    let deployed = runtime()
        .block_on(deploy_docker(&docker, &target, &image))
        .unwrap();
    assert_eq!(deployed.result, DeployResult::Deployed, "{deployed:?}");

    // A deploy of the target holds its lock (rollout takes it around every docker deploy):
    // the job waits, says for what, and runs once the deploy is done.
    let label = DeployTarget::Docker(target.clone()).label().unwrap();
    let lock = runtime()
        .block_on(TargetLock::acquire(
            &state.path().join("state"),
            &label,
            "deploy app",
            |_| panic!("nothing else holds the lock"),
        ))
        .unwrap();
    let mut job = spawn_rebake(state.path(), &["job", "run", "app", "stamp"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        job.try_wait().unwrap().is_none(),
        "the job ran while the deploy held the target"
    );
    let released = chrono::Utc::now();
    drop(lock);
    let out = job.wait_with_output().unwrap();
    let stdout = ok(&out);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains(&format!(
            "rebake: job app/stamp waits for {label}: held by deploy app (pid {}",
            std::process::id()
        )),
        "{stderr}"
    );
    assert!(stdout.starts_with("app/stamp: ok in "), "{stdout}");
    assert!(
        stdout.contains("(after waiting ") && stdout.contains(&label),
        "{stdout}"
    );
    let record = last(state.path(), "app", "stamp");
    assert!(record.waited_ms >= 1000, "{record:?}");
    let started: chrono::DateTime<chrono::Utc> = record.started.parse().unwrap();
    // (The record's time is in whole milliseconds.)
    assert!(
        started >= released - chrono::Duration::milliseconds(1),
        "the job started before the deploy's lock was released at {released}: {record:?}"
    );
    // Its output is kept per run; it ran in the deployed container, with its env and volume.
    let log = std::fs::read_to_string(&record.log).unwrap();
    assert_eq!(log, "stamp hello\n");
    assert!(record
        .log
        .starts_with(state.path().join("state/jobs/app/stamp")));
    // Beside the log, the run's record.
    let saved: JobRecord =
        serde_json::from_slice(&std::fs::read(record.log.with_extension("json")).unwrap()).unwrap();
    assert_eq!(saved, record);
    assert_eq!(record.image_id.as_deref(), Some(image.as_str()));

    // A failing job: exit 1, the reason, its stderr in the log, a failure counted.
    let out = rebake(state.path(), &args(&["job", "run", "app", "fails"]));
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out)
            .0
            .contains("reason: [\"sh\", \"-c\", \"echo broken >&2; exit 3\"] exited with 3"),
        "{:?}",
        text(&out)
    );
    let failed = summary(state.path(), "app", "fails");
    assert_eq!((failed.runs, failed.failures), (1, 1));
    let record = failed.last.unwrap();
    assert_eq!(record.exit_code, Some(3));
    assert!(std::fs::read_to_string(&record.log)
        .unwrap()
        .starts_with("broken\n"));
    // --format json prints the run's record (the exit status is the same).
    let out = rebake(
        state.path(),
        &args(&["job", "run", "app", "fails", "--format", "json"]),
    );
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let printed: JobRecord = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(printed, last(state.path(), "app", "fails"));
    assert_eq!(printed.exit_code, Some(3));
    let failed = summary(state.path(), "app", "fails");
    assert_eq!((failed.runs, failed.failures), (2, 2));

    // In a one-off container of the deployed image: same volume and env, no leftover container.
    let out = ok(&rebake(
        state.path(),
        &args(&["job", "run", "app", "beside"]),
    ));
    assert!(out.starts_with("app/beside: ok"), "{out}");
    let log = std::fs::read_to_string(last(state.path(), "app", "beside").log).unwrap();
    assert_eq!(log, "stamp hello\nbeside hello\n");
    let leftover =
        runtime().block_on(docker.inspect_container(&format!("{name}.rebake-job-beside"), None));
    assert!(leftover.is_err(), "the one-off container is still there");

    // A backup that exits 0 without a byte of dump fails (the empty file is kept to look at).
    let out = rebake(state.path(), &args(&["job", "run", "app", "empty"]));
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out)
            .0
            .contains("[\"true\"] exited with 0 but wrote an empty dump to stdout; it is kept as "),
        "{:?}",
        text(&out)
    );

    // A job over its timeout fails, and its one-off container goes.
    let t = Instant::now();
    let out = rebake(state.path(), &args(&["job", "run", "app", "slow"]));
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out)
            .0
            .contains("reason: did not finish within 1s (timeout_seconds)"),
        "{:?}",
        text(&out)
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let log = std::fs::read_to_string(last(state.path(), "app", "slow").log).unwrap();
    assert!(log.starts_with("started\n"), "{log}");
    let leftover =
        runtime().block_on(docker.inspect_container(&format!("{name}.rebake-job-slow"), None));
    assert!(leftover.is_err(), "the timed-out container is still there");

    // A backup written to a path in a one-off container: stored with its SHA256; keep_last: 2
    // leaves the newest two of three.
    let mut dumps = Vec::new();
    for _ in 0..3 {
        let out = ok(&rebake(state.path(), &args(&["job", "run", "app", "dump"])));
        assert!(out.contains("  dump: "), "{out}");
        dumps.push(last(state.path(), "app", "dump").backup.unwrap());
    }
    let dir = backups.join("app/dump");
    let first = &dumps[0];
    assert!(first.path.starts_with(&dir), "{first:?}");
    assert!(!first.path.exists(), "keep_last: 2 kept the oldest dump");
    let newest = &dumps[2];
    let bytes = std::fs::read(&newest.path).unwrap();
    assert_eq!(bytes, b"stamp hello\nbeside hello\n");
    assert_eq!(newest.sha256, crate::support::sha256_hex(&bytes));
    let sums = std::fs::read_to_string(format!("{}.sha256", newest.path.display())).unwrap();
    let file_name = newest.path.file_name().unwrap().to_string_lossy();
    assert_eq!(sums, format!("{}  {file_name}\n", newest.sha256));
    // sha256sum agrees, as a person checking the store would run it.
    let check = Command::new(crate::support::require_tool("sha256sum", "coreutils"))
        .arg("-c")
        .arg(format!("{file_name}.sha256"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{:?}", text(&check));
    assert_eq!(
        rebake::jobs::store::list_dumps(&dir).unwrap(),
        [dumps[1].path.clone(), dumps[2].path.clone()]
    );

    // A store that is a named volume (created on first use): the dump is in the volume.
    let out = ok(&rebake(
        state.path(),
        &args(&["job", "run", "app", "to-volume"]),
    ));
    let stored = last(state.path(), "app", "to-volume").backup.unwrap();
    let mountpoint = runtime()
        .block_on(docker.inspect_volume(&backup_volume))
        .expect("the store's volume was created")
        .mountpoint;
    assert!(
        stored
            .path
            .starts_with(Path::new(&mountpoint).join("app/to-volume")),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&stored.path).unwrap(),
        "stamp hello\nbeside hello\n"
    );

    // The restore check restores the newest dump into a throw-away container and checks it.
    let out = ok(&rebake(
        state.path(),
        &args(&["job", "run", "app", "check"]),
    ));
    assert!(
        out.contains(&format!(
            "restored: {} (SHA256 {} checked)",
            newest.path.display(),
            newest.sha256
        )),
        "{out}"
    );
    // A dump changed after it was written is not restored.
    std::fs::write(&newest.path, b"stamp\n").unwrap();
    let out = rebake(state.path(), &args(&["job", "run", "app", "check"]));
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out)
            .0
            .contains("the dump changed after it was written; it is not restored"),
        "{:?}",
        text(&out)
    );
    // Unknown names say what there is.
    let out = rebake(state.path(), &args(&["job", "run", "app", "nosuch"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains(
            "has no job named \"nosuch\"; its jobs: stamp, fails, beside, dump, to-volume, empty, slow, check"
        ),
        "{:?}",
        text(&out)
    );
}

/// A dump of the PostgreSQL example, made by `rebake serve` on the nightly-dump job's schedule
/// (moved to every minute), restored by its restore check into a fresh container, which finds
/// the rows written before the dump.
#[test]
fn postgres_example_nightly_dump_and_restore_check() {
    let docker = docker();
    let state = tempfile::tempdir().unwrap();
    let repo = state.path().join("repo");
    example_repo(&repo);
    let name = format!("rebake-pgjobs-{}", std::process::id());
    let port = free_port();
    let backups = state.path().join("backups");
    let _cleanup = Cleanup {
        docker: docker.clone(),
        container: name.clone(),
        jobs: vec!["nightly-dump".into(), "restore-check".into()],
        volumes: vec![format!("{name}-data"), format!("{name}-backups")],
    };
    let policy_path = repo.join("policies/postgres.yaml");
    let text_before = std::fs::read_to_string(&policy_path).unwrap();
    let nightly = "schedule: \"30 2 * * *\"";
    assert!(
        text_before.contains(nightly),
        "the example's dump schedule moved"
    );
    let policy_text = text_before
        .replace("name: rebake-postgres\n", &format!("name: {name}\n"))
        .replace("- rebake-postgres-data:", &format!("- {name}-data:"))
        .replace("- rebake-postgres-backups:", &format!("- {name}-backups:"))
        .replace("127.0.0.1:5432:5432", &format!("127.0.0.1:{port}:5432"))
        .replace(nightly, "schedule: \"* * * * *\"");
    std::fs::write(&policy_path, policy_text).unwrap();
    std::fs::write(
        repo.join("rebake.yaml"),
        format!(
            "backups:\n  local:\n    dir: {}\n    keep_last: 7\n    keep_for: 30d\n",
            backups.display()
        ),
    )
    .unwrap();

    let t = Instant::now();
    ok(&rebake(
        state.path(),
        &args(&["build", "debian", "postgres", "--no-push"]),
    ));
    eprintln!(
        "postgres example built in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let lock = rebake::lock::Lock::read(&repo.join("images/postgres/rebake.lock")).unwrap();
    let image = lock.image.unwrap().id;
    let policy = rebake::policy::load_policy(&policy_path).unwrap();
    let target = the_docker_target(&policy);
    let deployed = runtime()
        .block_on(deploy_docker(&docker, &target, &image))
        .unwrap();
    assert_eq!(deployed.result, DeployResult::Deployed, "{deployed:?}");

    // Data to keep: a database with a table of three rows.
    let psql = |db: &str, sql: &str| {
        let out = Command::new("docker")
            .args([
                "exec", &name, "psql", "-X", "-q", "-tA", "-d", db, "-c", sql,
            ])
            .output()
            .expect("docker CLI not found (apt-get install docker.io)");
        ok(&out)
    };
    psql("postgres", "CREATE DATABASE shop");
    psql(
        "shop",
        "CREATE TABLE items (name text); INSERT INTO items VALUES ('apple'), ('pear'), ('plum')",
    );

    // rebake serve runs the dump on its schedule.
    let serve_port = free_port();
    let mut serve = spawn_rebake(
        state.path(),
        &["serve", "--listen", &format!("127.0.0.1:{serve_port}")],
    );
    let dump_dir = backups.join("postgres/nightly-dump");
    let deadline = Instant::now() + Duration::from_secs(150);
    let summary_of_dump = loop {
        if let Ok(Some(s)) =
            rebake::jobs::read_summary(&state.path().join("state"), "postgres", "nightly-dump")
        {
            break s;
        }
        if Instant::now() > deadline || serve.try_wait().unwrap().is_some() {
            let _ = serve.kill();
            let out = serve.wait_with_output().unwrap();
            panic!("no scheduled dump within 150 s: {:?}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let metrics = runtime().block_on(async {
        reqwest::get(format!("http://127.0.0.1:{serve_port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    unsafe {
        libc::kill(serve.id() as i32, libc::SIGTERM);
    }
    let serve_out = serve.wait_with_output().unwrap();
    let dump_record = summary_of_dump.last.clone().unwrap();
    assert!(
        dump_record.ok(),
        "{dump_record:?}\nserve: {:?}\nlog: {}",
        text(&serve_out),
        std::fs::read_to_string(&dump_record.log).unwrap_or_default()
    );
    assert!(
        metrics.contains("rebake_job_runs_total{image=\"postgres\",job=\"nightly-dump\"} 1")
            && metrics
                .contains("rebake_job_failures_total{image=\"postgres\",job=\"nightly-dump\"} 0")
            && metrics
                .contains("rebake_job_last_run_success{image=\"postgres\",job=\"nightly-dump\"} 1"),
        "{metrics}"
    );
    let dump = dump_record.backup.unwrap();
    assert!(dump.path.starts_with(&dump_dir), "{dump:?}");
    let sql = std::fs::read_to_string(&dump.path).unwrap();
    assert!(sql.contains("CREATE DATABASE shop"), "{sql}");
    assert!(sql.contains("apple"), "{sql}");
    assert_eq!(dump.sha256, crate::support::sha256_hex(sql.as_bytes()));
    eprintln!(
        "pg_dumpall of the example ({} bytes): {:.2}s",
        dump.bytes,
        dump_record.duration_ms as f64 / 1000.0
    );

    // The restore check: a fresh container of the deployed image gets the dump, and the
    // example's check finds the database, its table and the three rows.
    let out = ok(&rebake(
        state.path(),
        &args(&["job", "run", "postgres", "restore-check"]),
    ));
    assert!(out.starts_with("postgres/restore-check: ok"), "{out}");
    let check = last(state.path(), "postgres", "restore-check");
    assert_eq!(check.restored.as_ref().map(|d| &d.path), Some(&dump.path));
    let log = std::fs::read_to_string(&check.log).unwrap();
    assert!(log.contains("shop.public.items rows 3"), "{log}");
    eprintln!(
        "restore check (fresh container, restore, check): {:.2}s",
        check.duration_ms as f64 / 1000.0
    );
    // The throw-away container is gone, and the deployed one was not touched.
    assert!(runtime()
        .block_on(docker.inspect_container(&format!("{name}.rebake-restore-restore-check"), None))
        .is_err());
    assert_eq!(psql("shop", "SELECT count(*) FROM items").trim(), "3");

    // The restore check takes the newest dump: after the table is dropped and another database
    // made, the next dump restores without the table and with the new database.
    psql("shop", "DROP TABLE items");
    psql("postgres", "CREATE DATABASE gone");
    let out = ok(&rebake(
        state.path(),
        &args(&["job", "run", "postgres", "nightly-dump"]),
    ));
    assert!(out.contains("  dump: "), "{out}");
    let dumps = rebake::jobs::store::list_dumps(&dump_dir).unwrap();
    assert_eq!(dumps.len(), 2, "keep_last: 7 keeps both");
    let out = ok(&rebake(
        state.path(),
        &args(&["job", "run", "postgres", "restore-check"]),
    ));
    let log = std::fs::read_to_string(last(state.path(), "postgres", "restore-check").log).unwrap();
    assert!(!log.contains("shop.public.items"), "{out}\n{log}");
    assert_eq!(
        last(state.path(), "postgres", "restore-check")
            .restored
            .map(|d| d.path),
        dumps.last().cloned()
    );
}
