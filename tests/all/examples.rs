//! The repository's own example images (plain Debian, and nginx and PostgreSQL built on it: an
//! image tree) built end to end by `rebake build` against the real Debian mirrors the host's
//! apt sources name and the running engine: they pass their tests, their locks say exactly what
//! is inside and what they build on, a second run rebuilds nothing, and `rebake render --check`
//! agrees with the committed Dockerfiles.

use crate::scan::{example_repo, rebake};
use rebake::lock::Lock;
use std::path::Path;
use std::process::{Command, Output};

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect(
        "docker CLI not found (apt-get install docker.io) — used here only to inspect images",
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(o)
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// `dpkg-query -W` inside the image, as `name version` lines.
fn dpkg_query(image: &str) -> Vec<String> {
    let out = ok(&docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "dpkg-query",
        image,
        "-W",
        "-f",
        "${db:Status-Status} ${Package} ${Version}\\n",
    ]));
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("installed "))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn example_images_build_pass_their_tests_and_stay_current() {
    let state = tempfile::tempdir().unwrap();
    let repo = state.path().join("repo");
    example_repo(&repo);

    let out = rebake(state.path(), &args(&["build", "--no-push"]));
    let table = ok(&out);
    for img in ["debian", "nginx", "postgres"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(img))
            .unwrap_or_else(|| panic!("no row for {img}:\n{table}"));
        assert!(row.contains("built"), "{row}");
    }

    for img in ["debian", "nginx", "postgres"] {
        let lock = Lock::read(&repo.join(format!("images/{img}/rebake.lock"))).unwrap();
        let tests = lock.tests.as_ref().expect("lock records the tests");
        assert!(tests.passed);
        assert!(tests.results.iter().any(|t| t.name == "current"));
        let base = lock.base.as_ref().expect("lock records the base");
        assert_eq!(base.rootfs_sha256.len(), 64);
        let id = lock
            .image
            .as_ref()
            .expect("lock records the image")
            .id
            .clone();
        // The lock is exactly what dpkg says is installed.
        let mut ours: Vec<String> = lock
            .packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        ours.sort();
        assert_eq!(ours, dpkg_query(&id), "lock of {img} vs dpkg-query -W");
        // The Dockerfile is generated, pinned, and built on the recorded base.
        let dockerfile =
            std::fs::read_to_string(repo.join(format!("images/{img}/Dockerfile"))).unwrap();
        assert!(
            dockerfile.to_lowercase().contains("do not edit"),
            "{dockerfile}"
        );
        // nginx and postgres build on debian's locked image (an image tree), debian on the base.
        let from = match &lock.parent {
            Some(parent) => {
                let debian = Lock::read(&repo.join("images/debian/rebake.lock")).unwrap();
                assert_eq!(parent.name, "debian", "{img}");
                assert_eq!(parent.image, debian.image.as_ref().unwrap().id, "{img}");
                assert_eq!(base.rootfs_sha256, debian.base.unwrap().rootfs_sha256);
                parent.image.clone()
            }
            None => {
                assert_eq!(img, "debian", "{img} builds on debian");
                base.id.clone()
            }
        };
        assert!(dockerfile.contains(&format!("FROM {from}")), "{dockerfile}");
        // apt inside the image agrees there is nothing to upgrade.
        let upgradable = ok(&docker(&[
            "run",
            "--rm",
            "--user",
            "0",
            "--entrypoint",
            "sh",
            &id,
            "-c",
            "apt-get update -qq >/dev/null && apt list --upgradable 2>/dev/null",
        ]));
        let pending: Vec<&str> = upgradable
            .lines()
            .filter(|l| !l.starts_with("Listing") && !l.trim().is_empty())
            .collect();
        assert!(pending.is_empty(), "{img}: apt would upgrade {pending:?}");
    }

    // Nothing changed: nothing is rebuilt.
    let again = ok(&rebake(state.path(), &args(&["build", "--no-push"])));
    for img in ["debian", "nginx", "postgres"] {
        let row = again.lines().find(|l| l.starts_with(img)).unwrap();
        assert!(row.contains("current"), "{again}");
    }

    // A failing test fails the build: nothing is pushed and the good lock stays as it was.
    let lock_path = repo.join("images/debian/rebake.lock");
    let good_lock = std::fs::read(&lock_path).unwrap();
    let policy = repo.join("policies/debian.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text.replace("expect_stdout: trixie", "expect_stdout: bookworm"),
    )
    .unwrap();
    let failed = rebake(
        state.path(),
        &args(&["build", "debian", "--no-push", "--force"]),
    );
    assert_eq!(failed.status.code(), Some(1));
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("image debian: test stage"), "{err}");
    assert!(err.contains("is Debian trixie"), "{err}");
    assert!(err.contains("previous lock is unchanged"), "{err}");
    assert_eq!(std::fs::read(&lock_path).unwrap(), good_lock);
    std::fs::write(&policy, text).unwrap();

    // The committed Dockerfiles are what the templates render; an edit is caught.
    ok(&rebake(state.path(), &args(&["render", "--check"])));
    let path = repo.join("images/nginx/Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("apt-get", "apt-get -q")).unwrap();
    let check = rebake(state.path(), &args(&["render", "--check"]));
    assert_eq!(check.status.code(), Some(1));
    assert!(stdout(&check).contains("nginx"), "{}", stdout(&check));
    assert!(Path::new(&path).exists());
}
