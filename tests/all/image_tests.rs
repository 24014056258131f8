//! The test stage (`rebake::test`) against the machine's Docker engine, with tiny busybox
//! images: what a user reads in each test's outcome, and that no test container outlives its
//! test — after a pass, a failure, a timeout, or a cancelled run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use rebake::debian::index::{ReleaseIndex, SuiteIndex, SuiteMeta};
use rebake::debian::packages::BinaryPackage;
use rebake::debian::status::InstalledPackage;
use rebake::policy::{FileCheck, HttpCheck, ImageTest, Policy, Review, TestCheck, Updates};
use rebake::test::{run_tests, summary, TestOutcome, CURRENT_TEST, TEST_LABEL, TEST_NAME_LABEL};

use crate::support::tiny_image::{tiny_httpd_image, tiny_image, INDEX_TEXT};

pub(crate) async fn engine() -> Docker {
    rebake::engine::connect("unix:///var/run/docker.sock")
        .await
        .unwrap_or_else(|e| {
            panic!("{e:#}\n(these tests need a running dockerd: apt-get install docker.io)")
        })
}

/// A unique test name (tests run in parallel; containers are looked up by this label).
fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn policy(tests: Vec<ImageTest>) -> Policy {
    Policy {
        name: "tiny".to_string(),
        file: PathBuf::from("policies/tiny.yaml"),
        template: "tiny.Dockerfile.hbs".to_string(),
        suite: "trixie".to_string(),
        architecture: "amd64".to_string(),
        packages: Vec::new(),
        vars: Default::default(),
        updates: Updates::default(),
        tests,
        deploy: Vec::new(),
        review: Review::default(),
        user: None,
        schedule: None,
        jobs: Vec::new(),
        from: None,
    }
}

fn test(name: &str, timeout_seconds: u64, check: TestCheck) -> ImageTest {
    ImageTest {
        name: name.to_string(),
        timeout_seconds,
        check,
    }
}

fn command(argv: &[&str], expect_stdout: Option<&str>) -> TestCheck {
    TestCheck::Command {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        expect_stdout: expect_stdout.map(str::to_string),
    }
}

/// Containers (running or not) that carry the test label with one of these test names.
async fn leftover_containers(docker: &Docker, names: &[&str]) -> Vec<String> {
    let mut left = Vec::new();
    for name in names {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![
                format!("{TEST_LABEL}=1"),
                format!("{TEST_NAME_LABEL}={name}"),
            ],
        );
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .expect("list containers");
        left.extend(list.into_iter().filter_map(|c| c.id));
    }
    left
}

async fn run(docker: &Docker, image: &str, tests: Vec<ImageTest>) -> Vec<TestOutcome> {
    let names: Vec<String> = tests.iter().map(|t| t.name.clone()).collect();
    let outcomes = run_tests(docker, image, &policy(tests), &[], None)
        .await
        .expect("run_tests");
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        leftover_containers(docker, &names).await,
        Vec::<String>::new(),
        "test containers left behind"
    );
    outcomes
}

fn find<'a>(outcomes: &'a [TestOutcome], name: &str) -> &'a TestOutcome {
    outcomes
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no outcome named {name} in {outcomes:#?}"))
}

fn reason(o: &TestOutcome) -> &str {
    o.reason.as_deref().unwrap_or("")
}

#[tokio::test]
async fn command_tests_pass_on_exit_zero_and_fail_with_status_and_output() {
    let docker = engine().await;
    let image = tiny_image(&docker, "cmd", &["/bin/sh"], None).await;
    let (ok, three, mismatch, matched) = (
        unique("ok"),
        unique("exit3"),
        unique("mismatch"),
        unique("matched"),
    );
    let outcomes = run(
        &docker,
        &image,
        vec![
            test(&ok, 30, command(&["true"], None)),
            test(
                &three,
                30,
                command(
                    &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
                    None,
                ),
            ),
            test(&mismatch, 30, command(&["echo", "hello"], Some("bye"))),
            test(&matched, 30, command(&["echo", "  hello  "], Some("hello"))),
        ],
    )
    .await;

    let o = find(&outcomes, &ok);
    assert!(o.passed && !o.skipped, "{o:#?}");
    assert_eq!(o.reason, None);

    let o = find(&outcomes, &three);
    assert!(!o.passed, "{o:#?}");
    assert!(reason(o).contains("exit"), "{o:#?}");
    assert!(reason(o).contains("status 3"), "{o:#?}");
    assert!(o.output_tail.contains("to-stdout"), "{o:#?}");
    assert!(o.output_tail.contains("to-stderr"), "{o:#?}");

    let o = find(&outcomes, &mismatch);
    assert!(!o.passed, "{o:#?}");
    assert!(reason(o).contains("\"hello\""), "{o:#?}");
    assert!(reason(o).contains("\"bye\""), "{o:#?}");

    let o = find(&outcomes, &matched);
    assert!(o.passed, "trimmed stdout should match: {o:#?}");

    // The built-in check is always there; without an index it is skipped, saying why.
    let current = outcomes.last().unwrap();
    assert_eq!(current.name, CURRENT_TEST);
    assert!(current.passed && current.skipped);
    assert!(reason(current).contains("no verified archive index"));

    let s = summary(&outcomes);
    assert!(!s.passed);
    let results: Vec<(&str, &str)> = s
        .results
        .iter()
        .map(|r| (r.name.as_str(), r.result.as_str()))
        .collect();
    assert_eq!(
        results,
        vec![
            (ok.as_str(), "pass"),
            (three.as_str(), "fail"),
            (mismatch.as_str(), "fail"),
            (matched.as_str(), "pass"),
            (CURRENT_TEST, "skip"),
        ]
    );
}

#[tokio::test]
async fn a_command_that_does_not_exist_fails_the_test_not_the_run() {
    let docker = engine().await;
    let image = tiny_image(&docker, "cmd", &["/bin/sh"], None).await;
    let name = unique("missing-binary");
    let outcomes = run(
        &docker,
        &image,
        vec![test(&name, 30, command(&["/no/such/binary"], None))],
    )
    .await;
    let o = find(&outcomes, &name);
    assert!(!o.passed, "{o:#?}");
    assert!(reason(o).contains("/no/such/binary"), "{o:#?}");
}

#[tokio::test]
async fn http_test_polls_the_images_own_command_and_checks_status_and_body() {
    let docker = engine().await;
    let image = tiny_httpd_image(&docker).await;
    let (good, wrong_text, wrong_status) =
        (unique("http-ok"), unique("http-text"), unique("http-404"));
    let http = |path: &str, status: u16, contains: Option<&str>| {
        TestCheck::Http(HttpCheck {
            port: 80,
            path: path.to_string(),
            status,
            contains: contains.map(str::to_string),
        })
    };
    let started = Instant::now();
    let outcomes = run(
        &docker,
        &image,
        vec![
            test(&good, 30, http("/index.html", 200, Some(INDEX_TEXT))),
            test(&wrong_text, 30, http("/", 200, Some("not on the page"))),
            test(&wrong_status, 30, http("/missing.html", 200, None)),
        ],
    )
    .await;

    let o = find(&outcomes, &good);
    assert!(o.passed, "{o:#?}");

    let o = find(&outcomes, &wrong_text);
    assert!(!o.passed, "{o:#?}");
    assert!(reason(o).contains("does not contain"), "{o:#?}");
    assert!(reason(o).contains("not on the page"), "{o:#?}");

    let o = find(&outcomes, &wrong_status);
    assert!(!o.passed, "{o:#?}");
    assert!(reason(o).contains("404"), "{o:#?}");
    // busybox httpd -vv logs each request: the tail shows what the server saw.
    assert!(o.output_tail.contains("missing.html"), "{o:#?}");

    // A wrong answer fails after a short settling time, not after the 30 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn http_test_of_a_container_that_exits_fails_at_once() {
    let docker = engine().await;
    let image = tiny_image(&docker, "exits", &["sh", "-c", "echo bye; exit 1"], None).await;
    let name = unique("http-exits");
    let started = Instant::now();
    let outcomes = run(
        &docker,
        &image,
        vec![test(
            &name,
            30,
            TestCheck::Http(HttpCheck {
                port: 80,
                path: "/".to_string(),
                status: 200,
                contains: None,
            }),
        )],
    )
    .await;
    let o = find(&outcomes, &name);
    assert!(!o.passed, "{o:#?}");
    assert!(
        reason(o).contains("the container exited with status 1"),
        "{o:#?}"
    );
    assert_eq!(o.output_tail, "bye");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_test_past_its_timeout_fails_and_leaves_no_container() {
    let docker = engine().await;
    let image = tiny_image(&docker, "cmd", &["/bin/sh"], None).await;
    let name = unique("sleeper");
    let started = Instant::now();
    let outcomes = run(
        &docker,
        &image,
        vec![test(
            &name,
            2,
            command(&["sh", "-c", "echo going to sleep; sleep 60"], None),
        )],
    )
    .await;
    let o = find(&outcomes, &name);
    assert!(!o.passed, "{o:#?}");
    assert!(reason(o).contains("timed out after 2s"), "{o:#?}");
    assert!(o.output_tail.contains("going to sleep"), "{o:#?}");
    assert!(o.duration >= Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(30));
    // `run` checked that no container with this test's label is left.
}

#[tokio::test]
async fn a_cancelled_run_still_removes_its_container() {
    let docker = engine().await;
    let image = tiny_image(&docker, "cmd", &["/bin/sh"], None).await;
    let name = unique("cancelled");
    let p = policy(vec![test(&name, 120, command(&["sleep", "60"], None))]);
    let cancelled = tokio::time::timeout(
        Duration::from_secs(2),
        run_tests(&docker, &image, &p, &[], None),
    )
    .await;
    assert!(cancelled.is_err(), "the run should have been cancelled");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = leftover_containers(&docker, &[&name]).await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "container left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn file_test_checks_existence_mode_and_owner() {
    let docker = engine().await;
    let image = tiny_image(&docker, "cmd", &["/bin/sh"], None).await;
    let file = |path: &str, mode: Option<u32>, owner: Option<&str>| {
        TestCheck::File(FileCheck {
            path: path.to_string(),
            mode,
            owner: owner.map(str::to_string),
        })
    };
    let names: Vec<String> = [
        "page",
        "page-mode",
        "secret",
        "secret-ids",
        "secret-owner",
        "missing",
        "dir",
    ]
    .iter()
    .map(|n| unique(n))
    .collect();
    let outcomes = run(
        &docker,
        &image,
        vec![
            test(
                &names[0],
                30,
                file("/www/index.html", Some(0o644), Some("root:root")),
            ),
            test(&names[1], 30, file("/www/index.html", Some(0o600), None)),
            test(
                &names[2],
                30,
                file("/data/secret", Some(0o600), Some("app")),
            ),
            test(&names[3], 30, file("/data/secret", None, Some("1000:1000"))),
            test(&names[4], 30, file("/data/secret", None, Some("root"))),
            test(&names[5], 30, file("/etc/nothing-here", None, None)),
            test(&names[6], 30, file("/tmp", Some(0o1777), Some("root"))),
        ],
    )
    .await;
    assert!(find(&outcomes, &names[0]).passed, "{outcomes:#?}");
    let o = find(&outcomes, &names[1]);
    assert!(!o.passed);
    assert!(reason(o).contains("mode is 0644, expected 0600"), "{o:#?}");
    assert!(find(&outcomes, &names[2]).passed, "{outcomes:#?}");
    assert!(find(&outcomes, &names[3]).passed, "{outcomes:#?}");
    let o = find(&outcomes, &names[4]);
    assert!(!o.passed);
    assert!(
        reason(o).contains("owner is app(1000):app(1000), expected root"),
        "{o:#?}"
    );
    let o = find(&outcomes, &names[5]);
    assert!(!o.passed);
    assert!(
        reason(o).contains("/etc/nothing-here does not exist"),
        "{o:#?}"
    );
    assert!(find(&outcomes, &names[6]).passed, "{outcomes:#?}");
}

#[tokio::test]
async fn user_test_fails_for_root_unless_allowed() {
    let docker = engine().await;
    let root_image = tiny_image(&docker, "cmd", &["/bin/sh"], None).await;
    let uid0_image = tiny_image(&docker, "uid0", &["/bin/sh"], Some("0:0")).await;
    let app_image = tiny_image(&docker, "app", &["/bin/sh"], Some("app")).await;
    let numeric_image = tiny_image(&docker, "numeric", &["/bin/sh"], Some("1000:1000")).await;
    let ghost_image = tiny_image(&docker, "ghost", &["/bin/sh"], Some("ghost")).await;

    let check = |image: String, allow_root: bool| async move {
        let name = unique("user");
        let docker = engine().await;
        let outcomes = run(
            &docker,
            &image,
            vec![test(&name, 30, TestCheck::User { allow_root })],
        )
        .await;
        find(&outcomes, &name).clone()
    };

    let o = check(root_image.clone(), false).await;
    assert!(!o.passed);
    assert!(reason(&o).contains("root (no USER set)"), "{o:#?}");
    assert!(reason(&o).contains("allow_root"), "{o:#?}");
    assert!(check(root_image, true).await.passed);
    let o = check(uid0_image, false).await;
    assert!(!o.passed);
    assert!(reason(&o).contains("0:0"), "{o:#?}");
    assert!(check(app_image, false).await.passed);
    assert!(check(numeric_image, false).await.passed);
    let o = check(ghost_image, false).await;
    assert!(!o.passed);
    assert!(reason(&o).contains("not in its /etc/passwd"), "{o:#?}");
}

#[tokio::test]
async fn an_image_the_engine_does_not_have_is_an_error_naming_it() {
    let docker = engine().await;
    let err = run_tests(
        &docker,
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        &policy(vec![]),
        &[],
        None,
    )
    .await
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("image tiny"), "{text}");
    assert!(text.contains("test stage"), "{text}");
}

fn index_with(packages: &[(&str, &str)]) -> ReleaseIndex {
    let meta = SuiteMeta {
        uri: "http://deb.debian.org/debian-security".to_string(),
        suite: "trixie-security".to_string(),
        label: Some("Debian-Security".to_string()),
        date: "Sat, 01 Nov 2025 00:00:00 UTC".to_string(),
        inrelease_sha256: "0".repeat(64),
        security: true,
        pin: 500,
    };
    let packages = packages
        .iter()
        .map(|(name, version)| BinaryPackage {
            name: name.to_string(),
            version: version.to_string(),
            arch: "amd64".to_string(),
            source: name.to_string(),
            source_version: version.to_string(),
        })
        .collect();
    ReleaseIndex::new("trixie", "amd64", vec![SuiteIndex { meta, packages }])
}

fn installed(name: &str, version: &str) -> InstalledPackage {
    InstalledPackage {
        name: name.to_string(),
        version: version.to_string(),
        arch: "amd64".to_string(),
        source: name.to_string(),
        source_version: version.to_string(),
    }
}

#[test]
fn current_check_fails_when_a_newer_candidate_exists() {
    let index = index_with(&[("openssl", "3.5.4-1~deb13u1"), ("tzdata", "2025b-1")]);
    let pkgs = [
        installed("openssl", "3.5.1-1"),
        installed("tzdata", "2025b-1"),
    ];
    let o = rebake::test::current_check(&pkgs, Some(&index));
    assert!(!o.passed, "{o:#?}");
    let r = reason(&o);
    assert!(r.contains("1 installed package(s)"), "{r}");
    assert!(
        r.contains("openssl 3.5.1-1 -> 3.5.4-1~deb13u1 (trixie-security)"),
        "{r}"
    );
    assert!(!r.contains("tzdata"), "{r}");

    let current = [installed("openssl", "3.5.4-1~deb13u1")];
    let o = rebake::test::current_check(&current, Some(&index));
    assert!(o.passed && !o.skipped, "{o:#?}");
}
