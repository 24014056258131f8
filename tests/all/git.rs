//! The git layer of the propose stage against real repositories: bare "origin" repositories in
//! temp dirs (file paths, `file://` URLs, and `git daemon` for the smart protocol), changed
//! behind rebake's back by a "human" with the `git` CLI.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use git2::Oid;
use rebake::git::{redact_url, Auth, Identity, PushOutcome, Workspace};
use tempfile::TempDir;

use crate::support::gitops::git;
use crate::support::require_tool;

fn oid(hex: &str) -> Oid {
    Oid::from_str(hex).unwrap_or_else(|e| panic!("{hex:?} is not an oid: {e}"))
}

/// A bare origin whose default branch is `default`, with one commit holding a README, an
/// image's Dockerfile and an old image's lock (the only file of its directory).
struct Origin {
    tmp: TempDir,
    bare: PathBuf,
}

impl Origin {
    fn new(default: &str) -> Origin {
        let tmp = TempDir::new().unwrap();
        let bare = tmp.path().join("origin.git");
        // The bare repository itself is created with git2, as the brief for these tests asks.
        let repo = git2::Repository::init_bare(&bare).unwrap();
        repo.set_head(&format!("refs/heads/{default}")).unwrap();
        drop(repo);

        let seed = tmp.path().join("seed");
        git(tmp.path(), &["clone", "-q", bare.to_str().unwrap(), "seed"]);
        git(&seed, &["checkout", "-q", "-b", default]);
        std::fs::write(seed.join("README.md"), "# gitops\n").unwrap();
        std::fs::create_dir_all(seed.join("images/nginx")).unwrap();
        std::fs::write(seed.join("images/nginx/Dockerfile"), "FROM old\n").unwrap();
        std::fs::create_dir_all(seed.join("images/old")).unwrap();
        std::fs::write(seed.join("images/old/rebake.lock"), "old lock\n").unwrap();
        std::fs::write(seed.join("build.sh"), "#!/bin/sh\n").unwrap();
        git(&seed, &["add", "."]);
        git(&seed, &["update-index", "--chmod=+x", "build.sh"]);
        git(&seed, &["commit", "-q", "-m", "initial"]);
        git(&seed, &["push", "-q", "origin", default]);
        Origin { tmp, bare }
    }

    fn url(&self) -> String {
        self.bare.to_str().unwrap().to_owned()
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// What origin's branch points at (None: no such branch).
    fn head(&self, branch: &str) -> Option<Oid> {
        let repo = git2::Repository::open_bare(&self.bare).unwrap();
        let head = repo
            .find_reference(&format!("refs/heads/{branch}"))
            .ok()
            .map(|r| r.target().unwrap());
        head
    }

    /// A person's clone of origin (non-bare, git CLI), checked out at `branch`.
    fn human_clone(&self, name: &str, branch: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        if !dir.exists() {
            git(self.tmp.path(), &["clone", "-q", &self.url(), name]);
        }
        git(&dir, &["fetch", "-q", "origin"]);
        git(
            &dir,
            &["checkout", "-q", "-B", branch, &format!("origin/{branch}")],
        );
        dir
    }

    /// A person commits a change to `file` on `branch` and pushes it; returns the commit.
    fn human_push(&self, branch: &str, file: &str, content: &str) -> Oid {
        let dir = self.human_clone("human", branch);
        std::fs::write(dir.join(file), content).unwrap();
        git(&dir, &["add", file]);
        git(&dir, &["commit", "-q", "-m", "human change"]);
        git(&dir, &["push", "-q", "origin", branch]);
        oid(&git(&dir, &["rev-parse", "HEAD"]))
    }

    fn workspace(&self, url: &str) -> (TempDir, Workspace) {
        let state = TempDir::new().unwrap();
        let ws = Workspace::open_or_clone(url, &state.path().join("repo"), &Auth::None)
            .expect("clone origin");
        (state, ws)
    }
}

fn files(list: &[(&str, Option<&str>)]) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    list.iter()
        .map(|(p, c)| (PathBuf::from(p), c.map(|c| c.as_bytes().to_vec())))
        .collect()
}

fn commit(ws: &Workspace, base: Oid, list: &[(&str, Option<&str>)], message: &str) -> Oid {
    ws.commit_on(
        base,
        &files(list),
        message,
        &Identity::default(),
        &Identity::default(),
        Some(1_700_000_000),
    )
    .expect("commit_on")
}

#[test]
fn identity_defaults_to_rebake_at_localhost() {
    let id = Identity::default();
    assert_eq!(
        (id.name.as_str(), id.email.as_str()),
        ("rebake", "rebake@localhost")
    );
}

#[test]
fn clone_fetch_and_default_branch_main() {
    let origin = Origin::new("main");
    let (_state, ws) = origin.workspace(&origin.url());
    assert_eq!(ws.default_branch().unwrap(), "main");
    assert_eq!(ws.remote_head("main").unwrap(), origin.head("main"));
    assert_eq!(ws.remote_head("nope").unwrap(), None);
    assert!(
        ws.repo().is_bare(),
        "rebake's workspace needs no working tree"
    );
}

#[test]
fn default_branch_follows_origin_head_trunk() {
    let origin = Origin::new("trunk");
    // A `main` branch exists too: origin's HEAD, not the name, decides.
    let seed = origin.tmp.path().join("seed");
    git(&seed, &["push", "-q", "origin", "trunk:main"]);
    let (_state, ws) = origin.workspace(&origin.file_url());
    ws.fetch().unwrap();
    assert_eq!(ws.default_branch().unwrap(), "trunk");

    // origin switches its default branch; the next fetch sees it.
    git(&origin.bare, &["symbolic-ref", "HEAD", "refs/heads/main"]);
    ws.fetch().unwrap();
    assert_eq!(ws.default_branch().unwrap(), "main");
}

#[test]
fn open_existing_workspace_resets_origin_url_and_fetch_prunes() {
    let origin = Origin::new("main");
    let state = TempDir::new().unwrap();
    let dir = state.path().join("repo");
    let ws = Workspace::open_or_clone(&origin.url(), &dir, &Auth::None).unwrap();
    let base = ws.remote_head("main").unwrap().unwrap();
    let c1 = commit(&ws, base, &[("a", Some("1"))], "x");
    assert_eq!(
        ws.push_with_lease("rebake/gone", c1, None).unwrap(),
        PushOutcome::Pushed
    );
    drop(ws);

    // The same origin under another URL: the existing clone is reused, its origin repointed.
    let ws = Workspace::open_or_clone(&origin.file_url(), &dir, &Auth::None).unwrap();
    let url = ws
        .repo()
        .find_remote("origin")
        .unwrap()
        .url()
        .unwrap()
        .to_owned();
    assert_eq!(url, origin.file_url());

    // Someone deletes the branch on origin: fetch prunes the tracking ref.
    git(&origin.bare, &["branch", "-D", "rebake/gone"]);
    assert_eq!(
        ws.remote_head("rebake/gone").unwrap(),
        Some(c1),
        "as of the last fetch"
    );
    ws.fetch().unwrap();
    assert_eq!(ws.remote_head("rebake/gone").unwrap(), None);

    // A directory that is not a repository is refused, not overwritten.
    let junk = state.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("file"), "x").unwrap();
    let err = Workspace::open_or_clone(&origin.url(), &junk, &Auth::None).unwrap_err();
    assert!(err.to_string().contains("not a git repository"), "{err:#}");
}

#[test]
fn commit_on_replaces_nested_and_deletes_files() {
    let origin = Origin::new("main");
    let (_state, ws) = origin.workspace(&origin.url());
    let base = ws.remote_head("main").unwrap().unwrap();

    let author = Identity::new("Rebake Bot", "bot@example.org");
    let committer = Identity::new("CI", "ci@example.org");
    let new = ws
        .commit_on(
            base,
            &files(&[
                ("images/nginx/Dockerfile", Some("FROM new\n")),
                ("images/nginx/context/conf.d/site.conf", Some("server {}\n")),
                ("images/old/rebake.lock", None),
                ("build.sh", Some("#!/bin/sh\necho new\n")),
                ("not/there", None),
            ]),
            "nginx: security update\n\nbody line\n",
            &author,
            &committer,
            Some(1_700_000_000),
        )
        .unwrap();

    // Contents, through the API…
    assert_eq!(
        ws.read_file(new, "images/nginx/Dockerfile")
            .unwrap()
            .as_deref(),
        Some(&b"FROM new\n"[..])
    );
    assert_eq!(
        ws.read_file(new, "images/nginx/context/conf.d/site.conf")
            .unwrap()
            .as_deref(),
        Some(&b"server {}\n"[..])
    );
    assert_eq!(ws.read_file(new, "images/old/rebake.lock").unwrap(), None);
    assert_eq!(
        ws.read_file(base, "images/old/rebake.lock")
            .unwrap()
            .as_deref(),
        Some(&b"old lock\n"[..]),
        "the base commit is untouched"
    );
    assert_eq!(
        ws.read_file(new, "README.md").unwrap().as_deref(),
        Some(&b"# gitops\n"[..])
    );
    assert!(
        ws.read_file(new, "images").is_err(),
        "a directory is not a file"
    );

    // …and as git itself sees them: exact file list and modes, empty dir gone.
    let listing = git(
        ws.path(),
        &[
            "ls-tree",
            "-r",
            "--format=%(objectmode) %(path)",
            &new.to_string(),
        ],
    );
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        [
            "100644 README.md",
            "100755 build.sh",
            "100644 images/nginx/Dockerfile",
            "100644 images/nginx/context/conf.d/site.conf",
        ]
    );
    let base_listing = git(
        ws.path(),
        &[
            "ls-tree",
            "--format=%(objectmode) %(path)",
            &base.to_string(),
        ],
    );
    assert!(base_listing.contains("100755 build.sh"), "{base_listing}");
    assert_eq!(
        git(
            ws.path(),
            &["ls-tree", "--name-only", &format!("{new}:images")]
        ),
        "nginx"
    );
    git(ws.path(), &["fsck", "--strict", "--no-dangling"]);

    // Parent, identities, time, message.
    assert_eq!(
        git(ws.path(), &["rev-parse", &format!("{new}^")]),
        base.to_string()
    );
    assert_eq!(
        git(
            ws.path(),
            &[
                "show",
                "-s",
                "--format=%an <%ae> %at|%cn <%ce> %ct",
                &new.to_string()
            ]
        ),
        "Rebake Bot <bot@example.org> 1700000000|CI <ci@example.org> 1700000000"
    );
    assert_eq!(
        ws.commit_message(new).unwrap(),
        "nginx: security update\n\nbody line\n"
    );

    // Same inputs, same commit; same files with another message: equal trees.
    let again = ws
        .commit_on(
            base,
            &files(&[
                ("images/old/rebake.lock", None),
                ("build.sh", Some("#!/bin/sh\necho new\n")),
                ("images/nginx/context/conf.d/site.conf", Some("server {}\n")),
                ("images/nginx/Dockerfile", Some("FROM new\n")),
            ]),
            "nginx: security update\n\nbody line\n",
            &author,
            &committer,
            Some(1_700_000_000),
        )
        .unwrap();
    assert_eq!(again, new, "commits are reproducible");
    let other = commit(
        &ws,
        base,
        &[
            ("images/nginx/Dockerfile", Some("FROM new\n")),
            ("images/nginx/context/conf.d/site.conf", Some("server {}\n")),
            ("images/old/rebake.lock", None),
            ("build.sh", Some("#!/bin/sh\necho new\n")),
        ],
        "another title",
    );
    assert_ne!(other, new);
    assert!(ws.tree_equal(other, new));
    assert!(!ws.tree_equal(base, new));
    assert!(!ws.tree_equal(base, Oid::ZERO_SHA1));

    // Bad paths are refused.
    for bad in ["/etc/passwd", "../x", "a/../../x", ".git/config", ""] {
        let err = ws
            .commit_on(
                base,
                &files(&[(bad, Some("x"))]),
                "m",
                &author,
                &committer,
                None,
            )
            .unwrap_err();
        assert!(!err.to_string().is_empty(), "{bad}");
    }
    // A file where the base has a directory, and the other way round.
    assert!(ws
        .commit_on(
            base,
            &files(&[("images", Some("x"))]),
            "m",
            &author,
            &committer,
            None
        )
        .is_err());
    assert!(ws
        .commit_on(
            base,
            &files(&[("README.md/x", Some("x"))]),
            "m",
            &author,
            &committer,
            None
        )
        .is_err());
}

/// A commit on `base` whose nginx Dockerfile is `FROM <version>`, with message `<version>`.
fn nginx_version(ws: &Workspace, base: Oid, version: &str) -> Oid {
    let dockerfile = format!("FROM {version}\n");
    commit(
        ws,
        base,
        &[("images/nginx/Dockerfile", Some(dockerfile.as_str()))],
        version,
    )
}

/// The whole lease story on one kind of remote URL.
fn lease_scenario(origin: &Origin, url: &str) {
    let (_state, ws) = origin.workspace(url);
    let branch = "rebake/nginx";
    let main = ws.remote_head("main").unwrap().unwrap();

    // Create: the branch must not exist.
    let c1 = nginx_version(&ws, main, "v1");
    assert_eq!(
        ws.push_with_lease(branch, c1, None).unwrap(),
        PushOutcome::Pushed
    );
    assert_eq!(origin.head(branch), Some(c1));
    assert_eq!(
        ws.remote_head(branch).unwrap(),
        Some(c1),
        "tracking ref follows the push"
    );
    assert_eq!(ws.ls_remote(branch).unwrap(), Some(c1));

    // Pushing the same commit again is a no-op success (a rerun after a crash).
    assert_eq!(
        ws.push_with_lease(branch, c1, None).unwrap(),
        PushOutcome::Pushed
    );

    // "Create" when it already exists with something else: refused.
    let other = commit(&ws, main, &[("x", Some("x"))], "other");
    assert_eq!(
        ws.push_with_lease(branch, other, None).unwrap(),
        PushOutcome::LeaseBroken { remote: Some(c1) }
    );
    assert_eq!(origin.head(branch), Some(c1));

    // Update with the right lease; a rewrite (not a fast-forward) is fine on rebake's branch.
    let c2 = nginx_version(&ws, main, "v2");
    assert!(!ws.is_ancestor(c1, c2).unwrap());
    assert_eq!(
        ws.push_with_lease(branch, c2, Some(c1)).unwrap(),
        PushOutcome::Pushed
    );
    assert_eq!(origin.head(branch), Some(c2));

    // A person pushes to the branch meanwhile: rebake's stale lease must not overwrite it.
    let human = origin.human_push(branch, "NOTES", "please keep\n");
    let c3 = nginx_version(&ws, main, "v3");
    assert_eq!(
        ws.push_with_lease(branch, c3, Some(c2)).unwrap(),
        PushOutcome::LeaseBroken {
            remote: Some(human)
        }
    );
    assert_eq!(
        origin.head(branch),
        Some(human),
        "the human's commit survives"
    );
    assert_eq!(
        ws.remote_head(branch).unwrap(),
        Some(c2),
        "nothing fetched yet"
    );
    ws.fetch().unwrap();
    assert_eq!(ws.remote_head(branch).unwrap(), Some(human));
    assert_eq!(ws.commit_message(human).unwrap(), "human change\n");

    // Deletion is leased too.
    assert_eq!(
        ws.delete_remote_branch(branch, c2).unwrap(),
        PushOutcome::LeaseBroken {
            remote: Some(human)
        }
    );
    assert_eq!(origin.head(branch), Some(human));
    assert_eq!(
        ws.delete_remote_branch(branch, human).unwrap(),
        PushOutcome::Pushed
    );
    assert_eq!(origin.head(branch), None);
    assert_eq!(ws.remote_head(branch).unwrap(), None);
    // Already gone: nothing to do.
    assert_eq!(
        ws.delete_remote_branch(branch, human).unwrap(),
        PushOutcome::Pushed
    );

    // A branch someone deleted while rebake expected its own head there: not recreated.
    assert_eq!(
        ws.push_with_lease(branch, c3, None).unwrap(),
        PushOutcome::Pushed
    );
    git(&origin.bare, &["branch", "-D", branch]);
    assert_eq!(
        ws.push_with_lease(branch, c1, Some(c3)).unwrap(),
        PushOutcome::LeaseBroken { remote: None }
    );
    assert_eq!(origin.head(branch), None);

    // Invalid branch names are errors before any network traffic.
    assert!(ws.push_with_lease("bad..name", c1, None).is_err());
}

#[test]
fn push_with_lease_on_a_plain_path_remote() {
    let origin = Origin::new("main");
    lease_scenario(&origin, &origin.url());
}

#[test]
fn push_with_lease_on_a_file_url_remote() {
    let origin = Origin::new("main");
    lease_scenario(&origin, &origin.file_url());
}

/// `git daemon` serving one bare repository over git:// with push enabled: the smart protocol,
/// where origin itself checks the old value of the ref.
struct GitDaemon {
    child: Child,
    url: String,
}

impl GitDaemon {
    fn start(origin: &Origin) -> GitDaemon {
        require_tool("git", "git");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = origin.bare.parent().unwrap();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
                base.to_str().unwrap(),
            ])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon (package git)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        GitDaemon {
            child,
            url: format!("git://127.0.0.1:{port}/origin.git"),
        }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn push_with_lease_over_the_smart_protocol() {
    let origin = Origin::new("main");
    let daemon = GitDaemon::start(&origin);
    lease_scenario(&origin, &daemon.url);
}

#[test]
fn a_change_between_negotiation_and_update_is_refused_by_origin() {
    let origin = Origin::new("main");
    let daemon = GitDaemon::start(&origin);
    let (_state, ws) = origin.workspace(&daemon.url);
    let branch = "rebake/nginx";
    let main = ws.remote_head("main").unwrap().unwrap();
    let c1 = nginx_version(&ws, main, "v1");
    assert_eq!(
        ws.push_with_lease(branch, c1, None).unwrap(),
        PushOutcome::Pushed
    );

    // A person's commit is on origin (on main) ...
    let human = origin.human_push("main", "NOTES", "mine\n");
    // ... and lands on rebake's branch after origin advertised c1 but before it updates the
    // ref: a pre-receive hook moves the branch, as a concurrent push would.
    let hook = origin.bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >/dev/null\n\
             env -u GIT_QUARANTINE_PATH -u GIT_OBJECT_DIRECTORY \
             -u GIT_ALTERNATE_OBJECT_DIRECTORIES git update-ref refs/heads/{branch} {human}\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    let c2 = nginx_version(&ws, main, "v2");
    assert_eq!(
        ws.push_with_lease(branch, c2, Some(c1)).unwrap(),
        PushOutcome::LeaseBroken {
            remote: Some(human)
        }
    );
    assert_eq!(
        origin.head(branch),
        Some(human),
        "the human's commit survives"
    );
}

#[test]
fn merged_branch_is_an_ancestor_of_the_default_branch() {
    let origin = Origin::new("main");
    let (_state, ws) = origin.workspace(&origin.url());
    let main = ws.remote_head("main").unwrap().unwrap();
    let proposal = nginx_version(&ws, main, "v1");
    assert_eq!(
        ws.push_with_lease("rebake/nginx", proposal, None).unwrap(),
        PushOutcome::Pushed
    );

    // main moves on, then a person merges the proposal with a merge commit.
    let unrelated = origin.human_push("main", "OTHER", "x\n");
    let human = origin.human_clone("human", "main");
    git(&human, &["fetch", "-q", "origin"]);
    git(
        &human,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "Merge rebake/nginx",
            "origin/rebake/nginx",
        ],
    );
    git(&human, &["push", "-q", "origin", "main"]);
    let merge = oid(&git(&human, &["rev-parse", "HEAD"]));

    assert!(!ws.is_ancestor(proposal, main).unwrap());
    ws.fetch().unwrap();
    let head = ws.remote_head("main").unwrap().unwrap();
    assert_eq!(head, merge);
    assert!(ws.is_ancestor(proposal, head).unwrap());
    assert!(ws.is_ancestor(head, head).unwrap());
    assert!(!ws.is_ancestor(head, proposal).unwrap());
    assert_eq!(
        ws.read_file(head, "images/nginx/Dockerfile")
            .unwrap()
            .as_deref(),
        Some(&b"FROM v1\n"[..])
    );

    // First-parent history: the merge, then what main had; not the proposal itself.
    assert_eq!(ws.log_first_parent(head, 10), [merge, unrelated, main]);
    assert_eq!(ws.log_first_parent(head, 1), [merge]);
    assert!(ws.log_first_parent(Oid::ZERO_SHA1, 5).is_empty());
}

/// An HTTP server that answers every request with 401 (Basic) and records the
/// `Authorization` headers it was sent.
fn unauthorized_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            for line in head.lines() {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("authorization") {
                        log.lock().unwrap().push(value.trim().to_owned());
                    }
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (format!("http://127.0.0.1:{port}/owner/repo.git"), seen)
}

#[test]
fn a_token_never_appears_in_errors() {
    const TOKEN: &str = "ghp_SECRET123";
    let auth = Auth::Token(TOKEN.to_owned());
    assert!(!format!("{auth:?}").contains(TOKEN));

    let origin = Origin::new("main");
    let state = TempDir::new().unwrap();
    let dir = state.path().join("repo");
    let ws = Workspace::open_or_clone(&origin.url(), &dir, &Auth::None).unwrap();
    let main = ws.remote_head("main").unwrap().unwrap();
    let c1 = commit(&ws, main, &[("a", Some("1"))], "x");
    drop(ws);

    // Nothing listens there: the connection fails.
    let ws = Workspace::open_or_clone("http://127.0.0.1:9/x.git", &dir, &auth).unwrap();
    let err = ws.push_with_lease("rebake/nginx", c1, None).unwrap_err();
    let text = format!("{err:#} {err:?}");
    eprintln!("connection refused: {err:#}");
    assert!(!text.contains(TOKEN), "{text}");
    assert!(
        text.contains("127.0.0.1:9"),
        "the error names the remote: {text}"
    );
    let err = ws.fetch().unwrap_err();
    assert!(!format!("{err:#} {err:?}").contains(TOKEN));
    assert!(format!("{ws:?}").contains("redacted") && !format!("{ws:?}").contains(TOKEN));

    // A server that rejects the token: it was offered (as x-access-token), then refused, and
    // the error says so without the token.
    let (url, seen) = unauthorized_server();
    let ws = Workspace::open_or_clone(&url, &dir, &auth).unwrap();
    let err = ws.push_with_lease("rebake/nginx", c1, None).unwrap_err();
    let text = format!("{err:#} {err:?}");
    eprintln!("token rejected: {err:#}");
    assert!(!text.contains(TOKEN), "{text}");
    assert!(text.contains("token was rejected"), "{text}");
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"))
    );
    assert!(
        seen.lock().unwrap().contains(&basic),
        "the token is sent as x-access-token: {:?}",
        seen.lock().unwrap()
    );
    let err = ws.fetch().unwrap_err();
    assert!(!format!("{err:#} {err:?}").contains(TOKEN));

    // A token written into the URL itself is redacted as well.
    let url_with_token = format!("https://x-access-token:{TOKEN}@127.0.0.1:9/x.git");
    let ws = Workspace::open_or_clone(&url_with_token, &dir, &auth).unwrap();
    let err = ws.fetch().unwrap_err();
    assert!(!format!("{err:#} {err:?}").contains(TOKEN), "{err:#}");
}

#[test]
fn urls_are_redacted() {
    assert_eq!(
        redact_url("https://x-access-token:ghp_x@github.com/o/r.git"),
        "https://x-access-token:***@github.com/o/r.git"
    );
    assert_eq!(
        redact_url("https://ghp_x@github.com/o/r.git"),
        "https://***@github.com/o/r.git"
    );
    assert_eq!(
        redact_url("ssh://git@host/o/r.git"),
        "ssh://git@host/o/r.git"
    );
    assert_eq!(
        redact_url("git@github.com:o/r.git"),
        "git@github.com:o/r.git"
    );
    assert_eq!(redact_url("/srv/git/r.git"), "/srv/git/r.git");
    assert_eq!(
        redact_url("https://github.com/o/r.git"),
        "https://github.com/o/r.git"
    );
}

#[test]
fn a_token_in_the_origin_url_stays_out_of_the_workspace_config() {
    const TOKEN: &str = "ghp_URLSECRET4242";
    let origin = Origin::new("main");
    let daemon = GitDaemon::start(&origin);
    let state = TempDir::new().unwrap();
    let dir = state.path().join("repo");
    let config = || std::fs::read_to_string(dir.join("config")).unwrap();

    // A clone: origin's URL is kept, the token is not.
    let url = daemon
        .url
        .replace("git://", &format!("git://x-access-token:{TOKEN}@"));
    let ws = Workspace::open_or_clone(&url, &dir, &Auth::None).expect("clone");
    assert!(ws.remote_head("main").unwrap().is_some());
    assert!(!config().contains(TOKEN), "{}", config());
    assert!(config().contains("127.0.0.1"), "{}", config());
    drop(ws);

    // An existing workspace pointed at an https URL with a token: the config has no token,
    // and the token still reaches the server, through the credentials callback.
    let (http_url, seen) = unauthorized_server();
    let url = http_url.replace("http://", &format!("http://x-access-token:{TOKEN}@"));
    let ws = Workspace::open_or_clone(&url, &dir, &Auth::None).unwrap();
    assert!(!config().contains(TOKEN), "{}", config());
    assert!(config().contains(&http_url), "{}", config());
    let err = ws.fetch().unwrap_err();
    assert!(!format!("{err:#} {err:?}").contains(TOKEN), "{err:#}");
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"))
    );
    assert!(
        seen.lock().unwrap().contains(&basic),
        "{:?}",
        seen.lock().unwrap()
    );
}
