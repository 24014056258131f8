//! Image trees (`from:` in a policy): `rebake check` refuses unknown parents, cycles and trees
//! that cannot be built or proposed together; a tree is built parents first, each child on its
//! parent's locked image; a change in the middle of a tree rebuilds it and everything under it
//! in one run and one proposal, which says why each child was rebuilt.

use crate::support::gitops::{
    action, apply_by_hand, branch_head, git, gitops_with, rebake, shared_state, text,
};
use rebake::check::check_repo;
use rebake::lock::Lock;
use std::collections::BTreeSet;
use std::path::Path;

fn repo_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

const TEMPLATE: &str =
    "FROM {{base_image}}\nLABEL org.opencontainers.image.title=\"{{policy_name}}\"\n";

fn policy(from: Option<&str>, extra: &str) -> String {
    let from = from.map(|p| format!("from: {p}\n")).unwrap_or_default();
    format!(
        "template: t.Dockerfile.hbs\nsuite: trixie\n{from}tests:\n  - name: runs\n    command: [true]\n{extra}"
    )
}

/// (file, line, field, message) of every problem.
fn problems(files: &[(&str, &str)]) -> Vec<(String, usize, String, String)> {
    let repo = repo_with(files);
    check_repo(repo.path(), None)
        .diagnostics
        .into_iter()
        .map(|d| (d.file.display().to_string(), d.line, d.field, d.message))
        .collect()
}

#[test]
fn check_refuses_unknown_parents_cycles_and_trees_that_cannot_go_together() {
    let web = policy(Some("company"), "");
    let found = problems(&[
        ("templates/t.Dockerfile.hbs", TEMPLATE),
        ("policies/web.yaml", &web),
    ]);
    assert_eq!(
        found,
        vec![(
            "policies/web.yaml".to_string(),
            3,
            "from".to_string(),
            "there is no policy for the image 'company'".to_string()
        )]
    );

    let (a, b) = (policy(Some("b"), ""), policy(Some("a"), ""));
    let found = problems(&[
        ("templates/t.Dockerfile.hbs", TEMPLATE),
        ("policies/a.yaml", &a),
        ("policies/b.yaml", &b),
    ]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        found[0],
        (
            "policies/a.yaml".to_string(),
            3,
            "from".to_string(),
            "the images build on each other in a cycle: a → b → a".to_string()
        )
    );
    assert_eq!(
        found[1].3,
        "the images build on each other in a cycle: b → a → b"
    );

    let own = policy(Some("web"), "");
    let found = problems(&[
        ("templates/t.Dockerfile.hbs", TEMPLATE),
        ("policies/web.yaml", &own),
    ]);
    assert_eq!(found[0].2, "from");
    assert_eq!(found[0].3, "'web' is this policy's own image");

    let bookworm = policy(Some("company"), "").replace("suite: trixie", "suite: bookworm");
    let grouped = policy(Some("company"), "review:\n  group: web\n");
    let found = problems(&[
        ("templates/t.Dockerfile.hbs", TEMPLATE),
        ("policies/company.yaml", &policy(None, "")),
        ("policies/old.yaml", &bookworm),
        ("policies/web.yaml", &grouped),
    ]);
    let messages: Vec<&str> = found.iter().map(|f| f.3.as_str()).collect();
    assert_eq!(
        messages,
        vec!["'company' is built for trixie/amd64, this image for bookworm/amd64"],
        "a child may take no group of its own only when its tree has none: {found:?}"
    );
    let found = problems(&[
        ("templates/t.Dockerfile.hbs", TEMPLATE),
        (
            "policies/company.yaml",
            &policy(None, "review:\n  group: base\n"),
        ),
        ("policies/web.yaml", &grouped),
    ]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].3,
        "this image builds on 'company' (group 'base') but is in group 'web'"
    );
}

#[test]
fn policies_load_parents_first_and_a_tree_is_one_review_group() {
    let repo = repo_with(&[
        ("templates/t.Dockerfile.hbs", TEMPLATE),
        ("policies/a-app.yaml", &policy(Some("m-company"), "")),
        ("policies/m-company.yaml", &policy(Some("z-root"), "")),
        ("policies/z-root.yaml", &policy(None, "")),
        ("policies/b-alone.yaml", &policy(None, "")),
    ]);
    let policies = rebake::policy::load_policies(repo.path()).expect("a valid tree");
    let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["b-alone", "z-root", "m-company", "a-app"]);
    let groups: Vec<Option<&str>> = policies.iter().map(|p| p.review.group.as_deref()).collect();
    assert_eq!(
        groups,
        [
            None,
            Some("tree-z-root"),
            Some("tree-z-root"),
            Some("tree-z-root")
        ]
    );
}

const COMPANY: &str = "FROM {{base_image}}\nARG SOURCE_DATE_EPOCH\nRUN echo acme > /etc/company\n";
const CHILD: &str = "FROM {{base_image}}\nARG SOURCE_DATE_EPOCH\nRUN cat /etc/company > /etc/{{policy_name}}\nCMD [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep infinity & wait\"]\n";
const WEB_CONTAINER: &str = "rebake-tree-web";

fn tree_policy(template: &str, from: Option<&str>, file: &str) -> String {
    let from = from.map(|p| format!("from: {p}\n")).unwrap_or_default();
    format!(
        "template: {template}\nsuite: trixie\n{from}tests:\n  - name: has the company file\n    file:\n      path: {file}\n"
    )
}

fn lock(ops: &crate::support::gitops::GitOps, image: &str) -> (Lock, String) {
    let path = ops.clone.join(format!("images/{image}/rebake.lock"));
    let text = std::fs::read_to_string(&path).unwrap();
    (Lock::read(&path).unwrap(), text)
}

/// A person merges the proposal `branch` into main and pushes.
fn merge(ops: &crate::support::gitops::GitOps, branch: &str) {
    git(&ops.clone, &["fetch", "-q", "origin"]);
    git(&ops.clone, &["checkout", "-q", "main"]);
    git(&ops.clone, &["pull", "-q", "--no-rebase", "origin", "main"]);
    git(
        &ops.clone,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            &format!("Merge {branch}"),
            &format!("origin/{branch}"),
        ],
    );
    git(&ops.clone, &["push", "-q", "origin", "main"]);
}

fn running_image(container: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.Image}}", container])
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn label(image_id: &str, key: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "--format"])
        .arg(format!("{{{{index .Config.Labels \"{key}\"}}}}"))
        .arg(image_id)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Debian base → company → web → shop: built in order, each on its parent's image; a change
/// of the company image rebuilds the three in one run and one proposal.
#[test]
fn a_change_in_the_middle_of_a_tree_rebuilds_it_and_its_children_in_order() {
    let ops = gitops_with(&[
        ("templates/company.Dockerfile.hbs".into(), COMPANY.into()),
        ("templates/child.Dockerfile.hbs".into(), CHILD.into()),
        (
            "policies/company.yaml".into(),
            tree_policy("company.Dockerfile.hbs", None, "/etc/company"),
        ),
        (
            "policies/web.yaml".into(),
            tree_policy("child.Dockerfile.hbs", Some("company"), "/etc/web")
                + &format!("deploy:\n  - docker:\n      name: {WEB_CONTAINER}\n      health:\n        command: [test, -e, /etc/web]\n        timeout_seconds: 30\n"),
        ),
        (
            "policies/shop.yaml".into(),
            tree_policy("child.Dockerfile.hbs", Some("web"), "/etc/shop"),
        ),
    ]);
    let (state, _guard) = shared_state();

    // The first build: one proposal for the tree, parents built first.
    let first = rebake(&ops, state, &["propose", "--no-push"], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    for image in ["company", "web", "shop"] {
        assert_eq!(action(&first, image), "opened", "{}", text(&first));
    }
    let branch = "rebake/group/tree-company";
    assert!(branch_head(&ops.bare, branch).is_some(), "{}", text(&first));
    merge(&ops, branch);
    git(&ops.clone, &["push", "-q", "origin", "--delete", branch]);

    let (company, company_text) = lock(&ops, "company");
    let (web, web_text) = lock(&ops, "web");
    let (shop, _) = lock(&ops, "shop");
    assert!(company.parent.is_none());
    let web_parent = web.parent.as_ref().expect("web records its parent");
    assert_eq!(web_parent.name, "company");
    assert_eq!(web_parent.image, company.image.as_ref().unwrap().id);
    assert_eq!(
        web_parent.lock_sha256,
        rebake::state::sha256_hex(company_text.as_bytes())
    );
    assert_eq!(
        shop.parent.as_ref().unwrap().lock_sha256,
        rebake::state::sha256_hex(web_text.as_bytes())
    );
    assert_eq!(web.reason.as_deref(), Some("first build"));
    let dockerfile = std::fs::read_to_string(ops.clone.join("images/web/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("\nFROM {}\n", web_parent.image)),
        "{dockerfile}"
    );
    let web_id = &web.image.as_ref().unwrap().id;
    assert_eq!(
        label(web_id, "dev.rebake.parent"),
        format!("company {}", web_parent.image)
    );
    // The Debian base under the tree is the one the company image was built on.
    assert_eq!(web.base, company.base);

    // Merged: the tree deploys, parents first (only web has a target).
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", WEB_CONTAINER])
        .output();
    let deployed = rebake(&ops, state, &["deploy"], &[]);
    assert_eq!(deployed.status.code(), Some(0), "{}", text(&deployed));
    assert_eq!(running_image(WEB_CONTAINER), *web_id);

    // Nothing changed: nothing to propose.
    let again = rebake(&ops, state, &["propose", "--no-push"], &[]);
    for image in ["company", "web", "shop"] {
        assert_eq!(action(&again, image), "current", "{}", text(&again));
    }

    // The company image changes (its template): it and everything under it are rebuilt.
    std::fs::write(
        ops.clone.join("templates/company.Dockerfile.hbs"),
        format!("{COMPANY}RUN echo v2 > /etc/company-version\n"),
    )
    .unwrap();
    git(
        &ops.clone,
        &["commit", "-q", "-am", "company: version file"],
    );
    git(&ops.clone, &["push", "-q", "origin", "main"]);
    let changed = rebake(&ops, state, &["propose", "--no-push"], &[]);
    for image in ["company", "web", "shop"] {
        assert_eq!(action(&changed, image), "opened", "{}", text(&changed));
    }
    let head = branch_head(&ops.bare, branch).expect("one proposal for the tree");
    let message = git(&ops.bare, &["log", "-1", "--format=%B", &head]);
    assert!(
        message.contains("Rebuilt because parent `company` changed: built on its image `sha256:"),
        "{message}"
    );
    assert!(
        message.contains("Rebuilt because parent `web` changed"),
        "{message}"
    );
    let show = |image: &str| {
        let text = git(
            &ops.bare,
            &["show", &format!("{head}:images/{image}/rebake.lock")],
        );
        Lock::parse(&text, Path::new("x")).unwrap()
    };
    let (company2, web2, shop2) = (show("company"), show("web"), show("shop"));
    assert_ne!(company2.image, company.image);
    assert_eq!(
        web2.parent.as_ref().unwrap().image,
        company2.image.as_ref().unwrap().id,
        "web was built on the new company image"
    );
    assert_eq!(
        shop2.parent.as_ref().unwrap().image,
        web2.image.as_ref().unwrap().id
    );
    assert_eq!(web2.reason.as_deref(), Some("parent company changed"));
    assert_eq!(shop2.reason.as_deref(), Some("parent web changed"));

    // A person takes only the company image of the proposal: web's lock at that commit was
    // tested on the old company image, so it is not deployed.
    apply_by_hand(&ops, branch, "images/company");
    let refused = rebake(&ops, state, &["deploy", "web"], &[]);
    assert_ne!(refused.status.code(), Some(0), "{}", text(&refused));
    assert!(
        text(&refused).contains("was not tested with this parent"),
        "{}",
        text(&refused)
    );
    assert_eq!(running_image(WEB_CONTAINER), *web_id, "web keeps running");
    // The whole tree merged: web runs the image built on the new company image.
    merge(&ops, branch);
    let deployed = rebake(&ops, state, &["deploy"], &[]);
    assert_eq!(deployed.status.code(), Some(0), "{}", text(&deployed));
    assert_eq!(
        running_image(WEB_CONTAINER),
        web2.image.as_ref().unwrap().id
    );
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", WEB_CONTAINER])
        .output();
    assert_eq!(
        company2.reason.as_deref(),
        Some("the template or the policy changed, or a rebuild was forced")
    );
}

const SLOW: &str = "FROM {{base_image}}\nARG SOURCE_DATE_EPOCH\nRUN sleep 1 && echo {{policy_name}} > /etc/company\n";

/// Two images on the Debian base and one on the first; `rebake build --format json` with
/// `extra_config` appended to rebake.yaml. Returns the rows by image.
fn build_three(
    ops: &crate::support::gitops::GitOps,
    state: &Path,
    extra_config: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    std::fs::write(ops.clone.join("rebake.yaml"), extra_config).unwrap();
    let out = rebake(
        ops,
        state,
        &["build", "--force", "--no-cache", "--format", "json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter()
        .map(|r| (r["image"].as_str().unwrap().to_string(), r))
        .collect()
}

fn slow_gitops() -> crate::support::gitops::GitOps {
    gitops_with(&[
        ("templates/slow.Dockerfile.hbs".into(), SLOW.into()),
        ("templates/child.Dockerfile.hbs".into(), CHILD.into()),
        (
            "policies/alpha.yaml".into(),
            tree_policy("slow.Dockerfile.hbs", None, "/etc/company"),
        ),
        (
            "policies/beta.yaml".into(),
            tree_policy("slow.Dockerfile.hbs", None, "/etc/company"),
        ),
        (
            "policies/gamma.yaml".into(),
            tree_policy("child.Dockerfile.hbs", Some("alpha"), "/etc/gamma"),
        ),
    ])
}

/// (start, end) of a build row, in ms from the run's start.
fn span(row: &serde_json::Value) -> (u64, u64) {
    let start = row["started_ms"].as_u64().unwrap();
    (start, start + row["duration_ms"].as_u64().unwrap())
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// One engine with `engine.jobs: 2`, then with `jobs: 1`, then a second engine beside it
/// (`engine.builders`): the same three images each time.
#[test]
fn builds_run_in_parallel_per_engine_jobs_and_spread_over_two_engines() {
    let second = crate::support::second_engine::SecondEngine::start();
    let registry = crate::support::registry::TestRegistry::start();
    let ops = slow_gitops();
    let (state, _guard) = shared_state();
    let with_registry = format!("registry:\n  url: {}\n  insecure: true\n", registry.host());

    // engine.jobs: 2 — independent images at once, a child after its parent.
    let two = build_three(&ops, state, &format!("{with_registry}engine:\n  jobs: 2\n"));
    let (alpha, beta, gamma) = (span(&two["alpha"]), span(&two["beta"]), span(&two["gamma"]));
    assert!(
        overlap(alpha, beta),
        "alpha {alpha:?} and beta {beta:?} built at once"
    );
    assert!(
        gamma.0 >= alpha.1,
        "gamma {gamma:?} starts after its parent alpha {alpha:?}"
    );

    // engine.jobs: 1 — one build at a time.
    let one = build_three(&ops, state, &format!("{with_registry}engine:\n  jobs: 1\n"));
    let (alpha, beta, gamma) = (span(&one["alpha"]), span(&one["beta"]), span(&one["gamma"]));
    assert!(
        !overlap(alpha, beta) && !overlap(alpha, gamma) && !overlap(beta, gamma),
        "one at a time: {alpha:?} {beta:?} {gamma:?}"
    );

    // engine.builders — one job on each of two engines: alpha and beta go to different
    // engines at once; gamma gets its parent through the registry when its engine lacks it.
    let config = format!(
        "{with_registry}engine:\n  jobs: 1\n  builders:\n    - {}\n",
        second.host
    );
    let rows = build_three(&ops, state, &config);
    let engines: BTreeSet<&str> = rows
        .values()
        .map(|r| r["engine"].as_str().expect("each row names its engine"))
        .collect();
    assert_eq!(engines.len(), 2, "both engines built: {rows:?}");
    assert!(engines.contains(second.host.as_str()), "{rows:?}");
    assert_ne!(rows["alpha"]["engine"], rows["beta"]["engine"], "{rows:?}");
    assert!(
        overlap(span(&rows["alpha"]), span(&rows["beta"])),
        "{rows:?}"
    );
    let (gamma, _) = lock(&ops, "gamma");
    let (alpha, _) = lock(&ops, "alpha");
    let parent = gamma.parent.as_ref().unwrap();
    assert_eq!(parent.image, alpha.image.as_ref().unwrap().id);
    assert!(
        parent
            .digest
            .as_deref()
            .unwrap()
            .starts_with(&registry.host()),
        "{parent:?}"
    );
    // The pushed manifest says why gamma was built and what it builds on (OCI annotations);
    // its config is the image the lock names.
    let pushed = gamma.image.as_ref().unwrap().digest.clone().unwrap();
    let (repo, digest) = pushed.split_once('@').unwrap();
    let url = format!(
        "http://{}/v2/{}/manifests/{digest}",
        registry.host(),
        repo.strip_prefix(&format!("{}/", registry.host())).unwrap()
    );
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let got = std::process::Command::new("curl")
        .args(["-sf", "-H", &format!("Accept: {oci}"), &url])
        .output()
        .expect("curl (apt-get install curl)");
    let manifest: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(manifest["mediaType"], oci, "{manifest}");
    assert_eq!(
        manifest["config"]["digest"],
        gamma.image.as_ref().unwrap().id
    );
    let annotations = &manifest["annotations"];
    assert_eq!(
        annotations["dev.rebake.reason"].as_str(),
        gamma.reason.as_deref(),
        "{manifest}"
    );
    let parent_digest = parent.digest.as_deref().unwrap();
    assert_eq!(
        annotations["org.opencontainers.image.base.name"],
        parent_digest
    );
    assert_eq!(
        annotations["org.opencontainers.image.base.digest"],
        parent_digest.split_once('@').unwrap().1
    );

    // The same images every way: builds are reproducible across runs and engines.
    for image in ["alpha", "beta", "gamma"] {
        assert_eq!(two[image]["image_id"], one[image]["image_id"], "{image}");
        assert_eq!(two[image]["image_id"], rows[image]["image_id"], "{image}");
    }
}
