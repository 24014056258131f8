//! The build stage against the real engine and the live Debian mirror: a reproducible base
//! (same archive state → same rootfs SHA256 and same image id), a Dockerfile built on it, the
//! image's inventory checked against `dpkg-query` inside it, and the errors a user sees.

use crate::support::engine::release_suites;
use crate::support::engine::{docker, runtime, shared_base, shared_base_with_dir};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    DownloadFromContainerOptions, LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use rebake::build::{build_base, build_image, inventory};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

const RELEASE: &str = "trixie";

fn policy(name: &str) -> rebake::policy::Policy {
    let yaml = "template: debian.Dockerfile.hbs\nsuite: trixie\narchitecture: amd64\npackages:\n  - hello\n";
    rebake::policy::parse_policy(name, Path::new(&format!("policies/{name}.yaml")), yaml)
        .unwrap_or_else(|d| panic!("test policy is invalid: {d:?}"))
}

/// Runs `argv` in a fresh container of `image`; returns (exit code, stdout).
async fn run_in(docker: &Docker, image: &str, argv: &[&str]) -> (i64, String) {
    let c = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            ContainerCreateBody {
                image: Some(image.to_string()),
                cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
        )
        .await
        .expect("create container");
    docker
        .start_container(
            &c.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .expect("start container");
    let mut code = 0;
    let mut wait = docker.wait_container(&c.id, None::<WaitContainerOptions>);
    while let Some(r) = wait.next().await {
        match r {
            Ok(w) => code = w.status_code,
            Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => code = c,
            Err(e) => panic!("wait: {e}"),
        }
    }
    let mut out = String::new();
    let mut logs = docker.logs(
        &c.id,
        Some(LogsOptions {
            stdout: true,
            stderr: false,
            ..Default::default()
        }),
    );
    while let Some(l) = logs.next().await {
        out.push_str(&l.expect("logs").to_string());
    }
    docker
        .remove_container(
            &c.id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .expect("remove container");
    (code, out)
}

/// The files of `path` in `image` (a tar from the engine), name → content.
async fn files_in(docker: &Docker, image: &str, path: &str) -> BTreeMap<String, Vec<u8>> {
    let c = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            ContainerCreateBody {
                image: Some(image.to_string()),
                ..Default::default()
            },
        )
        .await
        .expect("create container");
    let mut bytes = Vec::new();
    let mut failed = None;
    let mut s = docker.download_from_container(
        &c.id,
        Some(DownloadFromContainerOptions {
            path: path.to_string(),
        }),
    );
    while let Some(chunk) = s.next().await {
        match chunk {
            Ok(b) => bytes.extend_from_slice(&b),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    docker
        .remove_container(&c.id, None::<RemoveContainerOptions>)
        .await
        .expect("remove container");
    if let Some(e) = failed {
        panic!("download {path}: {e}");
    }
    let mut out = BTreeMap::new();
    for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(name, data);
    }
    out
}

#[test]
fn base_is_reproducible_clean_and_cached() {
    let (first, dir, epoch) = shared_base_with_dir(RELEASE);
    // It was built under a directory apt's sandbox user cannot enter (keys went inline).
    let parent = dir.parent().unwrap();
    let mode = std::fs::metadata(parent).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", parent.display());
    let docker = docker();
    assert!(
        first.id.starts_with("sha256:") && first.rootfs_sha256.len() == 64,
        "{first:?}"
    );

    // Same work dir: the cache answers, nothing is rebuilt.
    let suites = release_suites(RELEASE);
    let t = Instant::now();
    let cached = runtime()
        .block_on(build_base(&docker, &suites, RELEASE, "amd64", epoch, &dir))
        .expect("cached base");
    let cached_secs = t.elapsed().as_secs_f64();
    eprintln!("base rebuild with cache: {cached_secs:.2}s");
    assert_eq!(cached, first);
    assert!(cached_secs < 10.0, "the cached base took {cached_secs:.1}s");

    // A fresh work dir: mmdebstrap runs again from the same archive state.
    let fresh = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let second = runtime()
        .block_on(build_base(
            &docker,
            &suites,
            RELEASE,
            "amd64",
            epoch,
            fresh.path(),
        ))
        .expect("second base build");
    eprintln!("base build (fresh): {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(
        second.rootfs_sha256, first.rootfs_sha256,
        "same archive state, different rootfs"
    );
    assert_eq!(second.id, first.id, "same rootfs, different image id");

    // What is inside: no apt lists, empty machine-id, signed sources.
    runtime().block_on(async {
        let lists = files_in(&docker, &first.id, "/var/lib/apt/lists").await;
        let indices: Vec<_> = lists.keys().filter(|k| k.ends_with("_Packages")).collect();
        assert!(
            indices.is_empty(),
            "apt lists left in the base: {indices:?}"
        );
        // minbase has no systemd, so no machine-id unless something wrote one; none may carry
        // an id (it would be the same in every container). Same for the host's hostname.
        let etc = files_in(&docker, &first.id, "/etc").await;
        let id = etc.get("etc/machine-id");
        assert!(
            id.is_none_or(|v| v.is_empty()),
            "machine-id is not empty: {id:?}"
        );
        let host = etc.get("etc/hostname");
        assert!(host.is_none_or(|v| v.is_empty()), "hostname: {host:?}");
        let sources = files_in(&docker, &first.id, "/etc/apt/sources.list.d").await;
        let text: String = sources
            .values()
            .map(|v| String::from_utf8_lossy(v).to_string())
            .collect();
        assert!(text.contains("Signed-By: /"), "{text}");
        assert!(text.contains("Suites: trixie-security"), "{text}");
        assert!(
            !text.contains("trusted=yes") && !text.contains("Trusted:"),
            "{text}"
        );
        let logs = files_in(&docker, &first.id, "/var/log").await;
        let nonempty: Vec<_> = logs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| k)
            .collect();
        assert!(nonempty.is_empty(), "log files with content: {nonempty:?}");
        let inspect = docker.inspect_image(&first.tag()).await.expect("tag");
        assert_eq!(inspect.id.as_deref(), Some(first.id.as_str()));
        let inspect = docker
            .inspect_image(&first.rootfs_tag())
            .await
            .expect("rootfs tag");
        assert_eq!(inspect.id.as_deref(), Some(first.id.as_str()));
        let created = chrono::DateTime::from_timestamp(epoch, 0).unwrap();
        let got = inspect.created.expect("created");
        assert!(
            got.starts_with(&created.format("%Y-%m-%dT%H:%M:%S").to_string()),
            "{got}"
        );
    });
}

#[test]
fn builds_on_the_base_by_id_and_inventory_matches_dpkg() {
    let base = shared_base(RELEASE);
    let docker = docker();
    let repo = tempfile::tempdir().unwrap();
    let ctx = repo.path().join("images/hello-test/context");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("greeting.txt"), "hi from the context\n").unwrap();
    // A fresh ENV each run: the RUN below really runs (no build cache), so it is timed.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dockerfile = format!(
        "FROM {}\nENV REBAKE_TEST_NONCE={nonce}\nRUN apt-get update && apt-get install -y --no-install-recommends hello && rm -rf /var/lib/apt/lists/*\nCOPY greeting.txt /etc/greeting.txt\nCMD [\"hello\"]\n",
        base.id
    );
    let labels: BTreeMap<String, String> = [
        (
            "org.opencontainers.image.source",
            "https://example.test/images",
        ),
        ("org.opencontainers.image.revision", "0123abc"),
        ("org.rebake.policy", "hello-test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let log = repo.path().join("build.log");
    let t = Instant::now();
    let id = runtime()
        .block_on(build_image(
            &docker,
            repo.path(),
            &policy("hello-test"),
            &dockerfile,
            labels,
            &log,
        ))
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "image build (FROM sha256:<id>): {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert!(id.starts_with("sha256:"), "{id}");
    let log_text = std::fs::read_to_string(&log).unwrap();
    // The build-time labels come as one LABEL step after the Dockerfile's own steps.
    let total = log_text.lines().filter(|l| l.starts_with("Step ")).count();
    assert!(
        log_text.contains(&format!("Step 1/{total} : FROM {}", base.id))
            && log_text.contains(&format!("Step 3/{total} : RUN apt-get update"))
            && log_text.contains(&format!("Step {total}/{total} : LABEL")),
        "{log_text}"
    );
    assert!(log_text.contains("Setting up hello"), "{log_text}");

    runtime().block_on(async {
        let inspect = docker
            .inspect_image("rebake/hello-test:candidate")
            .await
            .unwrap();
        assert_eq!(inspect.id.as_deref(), Some(id.as_str()));
        let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
        assert_eq!(
            labels
                .get("org.opencontainers.image.revision")
                .map(String::as_str),
            Some("0123abc")
        );

        let packages = inventory(&docker, &id).await.expect("inventory");
        assert!(packages.iter().any(|p| p.name == "hello"), "{packages:?}");
        let (code, out) = run_in(
            &docker,
            &id,
            &["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"],
        )
        .await;
        assert_eq!(code, 0, "{out}");
        let mut dpkg: Vec<String> = out.lines().map(str::to_string).collect();
        dpkg.sort();
        let mut ours: Vec<String> = packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        ours.sort();
        assert_eq!(ours, dpkg);
        let (code, out) = run_in(&docker, &id, &["cat", "/etc/greeting.txt"]).await;
        assert_eq!((code, out.as_str()), (0, "hi from the context\n"));
        let (code, out) = run_in(&docker, &id, &["hello"]).await;
        assert_eq!((code, out.trim()), (0, "Hello, world!"));
        // No containers left behind by inventory (it removes its container).
    });
}

#[test]
fn failing_run_names_the_image_the_step_and_the_output() {
    let base = shared_base(RELEASE);
    let docker = docker();
    let repo = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM {}\nENV X=1\nRUN echo preparing && echo the-marker-line >&2 && exit 7\n",
        base.id
    );
    let log = repo.path().join("logs/build.log");
    let err = runtime()
        .block_on(build_image(
            &docker,
            repo.path(),
            &policy("broken"),
            &dockerfile,
            BTreeMap::new(),
            &log,
        ))
        .expect_err("the RUN fails");
    let msg = format!("{err:#}");
    eprintln!("build failure as the user sees it:\n{msg}");
    assert!(msg.contains("image broken"), "{msg}");
    assert!(msg.contains("Step 3/3 : RUN echo preparing"), "{msg}");
    assert!(msg.contains("the-marker-line"), "{msg}");
    assert!(msg.contains("7"), "{msg}");
    assert!(msg.contains(&log.display().to_string()), "{msg}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the-marker-line") && text.contains("Step 1/3"),
        "{text}"
    );
}

#[test]
fn unreachable_engine_is_a_clear_error() {
    let err = runtime()
        .block_on(rebake::engine::connect("unix:///nonexistent.sock"))
        .expect_err("no engine there");
    let msg = format!("{err:#}");
    assert!(msg.contains("/nonexistent.sock"), "{msg}");
    assert!(
        msg.contains("unreachable") || msg.contains("cannot connect"),
        "{msg}"
    );
}

/// The keys mmdebstrap's apt reads inline are Debian's keyring, armored as gpg reads it back.
#[test]
fn inline_keyring_armor_is_what_gpg_dearmors() {
    crate::support::require_tool("gpg", "gnupg");
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let packets = std::fs::read(keyring)
        .unwrap_or_else(|e| panic!("{keyring}: {e} (apt-get install debian-archive-keyring)"));
    let armored = rebake::debian::verify::armor(&packets);
    let home = tempfile::tempdir().unwrap();
    let mut gpg = std::process::Command::new("gpg")
        .env("GNUPGHOME", home.path())
        .args(["--batch", "--dearmor"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    gpg.stdin
        .take()
        .unwrap()
        .write_all(armored.as_bytes())
        .unwrap();
    let out = gpg.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, packets, "gpg --dearmor gives other bytes");
}

/// `git` in `dir`, with a fixed identity and dates (the commit id is then the same anywhere).
fn git(dir: &Path, args: &[&str]) {
    crate::support::require_tool("git", "git");
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "rebake test")
        .env("GIT_AUTHOR_EMAIL", "test@example.org")
        .env("GIT_COMMITTER_NAME", "rebake test")
        .env("GIT_COMMITTER_EMAIL", "test@example.org")
        .env("GIT_AUTHOR_DATE", "2025-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2025-01-01T00:00:00Z")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bit-for-bit reproducible images: two `rebake build --no-cache` runs of the same commit, each
/// with its own state directory (so its own base from mmdebstrap) and no layer reused, give the
/// same image id; pushed by the engine to two registries, the same digest. The image is the
/// small `hello` one (the example images: scripts/reproducible-build.sh).
#[test]
fn two_no_cache_builds_of_a_commit_give_the_same_image_id_and_digest() {
    use crate::support::registry::TestRegistry;
    crate::support::require_tool("mmdebstrap", "mmdebstrap");
    let docker = docker();
    let name = "hello-repro";
    let policy = "template: debian.Dockerfile.hbs\nsuite: trixie\narchitecture: amd64\n\
                  packages:\n  - hello\nvars:\n  cmd: hello\ntests:\n  - name: greets\n    \
                  command: [hello]\n    expect_stdout: Hello, world!\n";
    let first_repo = tempfile::tempdir().unwrap();
    let origin = first_repo.path();
    std::fs::create_dir_all(origin.join("policies")).unwrap();
    std::fs::create_dir_all(origin.join("templates")).unwrap();
    std::fs::write(origin.join(format!("policies/{name}.yaml")), policy).unwrap();
    let template = "templates/debian.Dockerfile.hbs";
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join(template), origin.join(template)).unwrap();
    git(origin, &["init", "-q", "-b", "main"]);
    git(origin, &["add", "."]);
    git(origin, &["commit", "-q", "-m", "images"]);

    let mut built = Vec::new();
    for n in 0..2 {
        let registry = TestRegistry::start();
        let state = tempfile::tempdir().unwrap();
        let repo = state.path().join("repo");
        git(
            state.path(),
            &["clone", "-q", origin.to_str().unwrap(), "repo"],
        );
        let config = state.path().join("rebake.yaml");
        std::fs::write(
            &config,
            format!("registry:\n  url: {}\n  insecure: true\n", registry.host()),
        )
        .unwrap();
        let t = Instant::now();
        let out = crate::scan::rebake(
            state.path(),
            &[
                "build",
                name,
                "--force",
                "--no-cache",
                "--config",
                config.to_str().unwrap(),
            ]
            .map(String::from),
        );
        assert!(
            out.status.success(),
            "build {n} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "reproducible build {n} (base from scratch, no layer cache, push): {:.1}s",
            t.elapsed().as_secs_f64()
        );
        let lock = rebake::lock::Lock::read(&repo.join(format!("images/{name}/rebake.lock")))
            .expect("the lock");
        let image = lock.image.expect("the lock records the image");
        let digest = image.digest.expect("the lock records the pushed digest");
        let log = std::fs::read_to_string(state.path().join(format!("state/logs/{name}.log")))
            .unwrap_or_default();
        assert!(log.contains("rebake: reproducible image"), "{log}");
        built.push((image.id, digest.split_once('@').unwrap().1.to_string()));
    }
    assert_eq!(
        built[0].0, built[1].0,
        "two --no-cache builds of one commit gave two image ids"
    );
    assert_eq!(built[0].1, built[1].1, "same image, two registry digests");

    // The config holds the archive's time, not the build's; the image still works.
    let epoch = crate::support::engine::archive_epoch(&release_suites(RELEASE), RELEASE);
    let created = chrono::DateTime::from_timestamp(epoch, 0).unwrap();
    runtime().block_on(async {
        let inspect = docker.inspect_image(&built[0].0).await.expect("the image");
        let got = inspect.created.unwrap_or_default();
        assert!(
            got.starts_with(&created.format("%Y-%m-%dT%H:%M:%S").to_string()),
            "created {got}, archive {created}"
        );
        let (code, out) = run_in(&docker, &built[0].0, &["hello"]).await;
        assert_eq!((code, out.trim()), (0, "Hello, world!"));
    });
}
