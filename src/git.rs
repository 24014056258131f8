//! The git layer of the propose stage, on git2 (libgit2) only — no `git` executable.
//!
//! A [`Workspace`] is rebake's own clone of the GitOps repository (bare: nothing is ever checked
//! out). The propose stage uses it like this:
//!
//! 1. [`Workspace::open_or_clone`], then [`Workspace::fetch`] — every branch of `origin` lands in
//!    `refs/remotes/origin/*` (pruned), and `refs/remotes/origin/HEAD` follows origin's `HEAD`;
//! 2. [`Workspace::default_branch`] and [`Workspace::remote_head`] give the base commit and the
//!    current head of `rebake/<image>` as of that fetch;
//! 3. [`Workspace::commit_on`] writes a commit on top of the base with the regenerated files,
//!    straight into the object database (no index, no working tree);
//! 4. [`Workspace::push_with_lease`] moves `refs/heads/rebake/<image>` on origin to that commit
//!    **only if** origin still has the head the caller last saw. Anything else — a person pushed to
//!    the branch, deleted it, or created it — is reported as [`PushOutcome::LeaseBroken`] and
//!    nothing on origin changes.
//!
//! ## The lease
//!
//! libgit2 has no `--force-with-lease`. It is built from its `push_negotiation` callback, which
//! runs after origin has advertised its refs and before anything is uploaded: the advertised
//! value of the branch is compared with the expected one and the push is cancelled on any
//! difference. Over the smart protocols (https, ssh) the update command then carries that same
//! advertised value as its old id, and `git receive-pack` applies it only if the ref still has
//! it, so a change that lands between negotiation and update is refused by origin
//! (`push_update_reference` reports it) and also ends as `LeaseBroken`. For local (`file://`
//! or plain path) remotes libgit2 writes the ref itself: the check and the write are then a few
//! microseconds apart instead of atomic.
//!
//! A push that creates the branch (`expected == None`) is a plain push; one that rewrites
//! rebake's own branch (`expected == Some(_)`) is a forced (`+`) push, since the branch is rebuilt
//! on top of the newest default branch — the lease, not fast-forwarding, is what protects it.
//!
//! ## Transports and who is trusted
//!
//! [`Transport::of`] tells from origin's URL how it is reached, by git's rules: `ssh://…` and
//! scp-like `user@host:path` are ssh, `http(s)://…` is https, the rest local. The caller picks
//! the matching [`Auth`]. Servers are authenticated by libgit2 itself, never accepted blindly:
//!
//! - ssh: libgit2 (1.9, libssh2 backend) reads `$HOME/.ssh/known_hosts` and refuses a host whose
//!   key is not there, or differs (`GIT_ECERTIFICATE`, "invalid or unknown remote ssh hostkey").
//!   rebake sets a certificate callback on ssh remotes only to *record* the key the server
//!   offered; it passes libgit2's decision through unchanged. A refusal becomes an error naming
//!   the host, the known_hosts file, what it holds for the host, and the `ssh-keyscan` line
//!   that adds it.
//! - https: OpenSSL verifies the certificate against the system's CAs; `SSL_CERT_FILE` (a PEM
//!   file) and `SSL_CERT_DIR` add others. A refusal names the server and how to trust a CA.
//!
//! ## Secrets
//!
//! A token is only handed to libgit2 from the credential callback; it never goes into a URL,
//! and every error message leaving this module is scrubbed of it (and of any `user:password@`
//! in a remote URL). [`Auth`]'s `Debug` does not print secrets either.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use git2::{
    AutotagOption, Cred, CredentialType, Direction, ErrorCode, FetchOptions, FetchPrune,
    ObjectType, Oid, ProxyOptions, PushOptions, RemoteCallbacks, Repository, Signature, Sort, Time,
    Tree,
};

/// The remote every workspace talks to.
pub const ORIGIN: &str = "origin";

/// Where [`Workspace::fetch`] puts origin's branches.
const TRACKING_PREFIX: &str = "refs/remotes/origin/";

/// libgit2 asks again for credentials when the ones it got were refused; after this many
/// answers for the same operation, the credentials are reported as rejected.
const MAX_CREDENTIAL_ATTEMPTS: u32 = 1;

/// File modes of tree entries.
const MODE_BLOB: i32 = 0o100_644;
const MODE_BLOB_EXECUTABLE: i32 = 0o100_755;
const MODE_TREE: i32 = 0o040_000;

/// Author or committer of rebake's commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

impl Identity {
    pub fn new(name: impl Into<String>, email: impl Into<String>) -> Identity {
        Identity {
            name: name.into(),
            email: email.into(),
        }
    }
}

impl Default for Identity {
    /// `rebake <rebake@localhost>`.
    fn default() -> Identity {
        Identity::new("rebake", "rebake@localhost")
    }
}

/// How a remote is reached, told from its URL by git's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `ssh://[user@]host[:port]/path`, `git+ssh://…`, or scp-like `[user@]host:path`.
    Ssh,
    /// `http://…` or `https://…`.
    Http,
    /// `file://…` or a path.
    Local,
    /// Another scheme (`git://`): no credentials.
    Other,
}

impl Transport {
    pub fn of(url: &str) -> Transport {
        if let Some((scheme, _)) = url.split_once("://") {
            let is_scheme = !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            if is_scheme {
                return match scheme.to_ascii_lowercase().as_str() {
                    "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
                    "http" | "https" => Transport::Http,
                    "file" => Transport::Local,
                    _ => Transport::Other,
                };
            }
        }
        // git: a colon before any slash makes an scp-like ssh address (`host:path`).
        match url.find(':') {
            Some(colon) if colon > 0 && !url[..colon].contains('/') => Transport::Ssh,
            _ => Transport::Local,
        }
    }
}

/// Host and port of an ssh remote URL (`ssh://` or scp-like); None for other URLs.
pub fn ssh_endpoint(url: &str) -> Option<(String, u16)> {
    if Transport::of(url) != Transport::Ssh {
        return None;
    }
    let (authority, scp) = match url.split_once("://") {
        Some((_, rest)) => (rest.split('/').next().unwrap_or(rest), false),
        None => (url, true),
    };
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        let port = after.strip_prefix(':').filter(|_| !scp);
        (host, port)
    } else if scp {
        (host_port.split(':').next()?, None)
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = match port.filter(|p| !p.is_empty()) {
        Some(p) => p.parse().ok()?,
        None => 22,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// How to authenticate to origin.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials (file remotes, public https, or libgit2's default credentials).
    None,
    /// https with a token: user `x-access-token`, password the token (GitHub, GitHub App
    /// installation tokens, Gitea/Forgejo personal access tokens all accept this).
    Token(String),
    /// A user and password (written into origin's URL: `https://user:pw@host/…`).
    UserPass { user: String, password: String },
    /// ssh with the keys of the running ssh-agent (`SSH_AUTH_SOCK`).
    SshAgent,
    /// ssh with a private key file.
    SshKey {
        private: PathBuf,
        passphrase: Option<String>,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Token(_) => f.write_str("Auth::Token(<redacted>)"),
            Auth::UserPass { user, .. } => write!(f, "Auth::UserPass({user}:<redacted>)"),
            Auth::SshAgent => f.write_str("Auth::SshAgent"),
            Auth::SshKey {
                private,
                passphrase,
            } => f
                .debug_struct("Auth::SshKey")
                .field("private", private)
                .field("passphrase", &passphrase.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

impl Auth {
    /// The secrets an error message must never contain.
    fn secrets(&self) -> Vec<&str> {
        match self {
            Auth::Token(token) => vec![token.as_str()],
            Auth::UserPass { password, .. } => vec![password.as_str()],
            Auth::SshKey {
                passphrase: Some(p),
                ..
            } => vec![p.as_str()],
            _ => Vec::new(),
        }
    }
}

/// What became of a push. A broken lease is an answer, not an error: the caller decides
/// (typically: fetch again and leave the branch to the person who changed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Origin's branch now points at the new commit (or is deleted, for a deletion).
    Pushed,
    /// Origin's branch was not at the expected commit; nothing was changed. `remote` is what
    /// origin had (`None`: the branch does not exist there).
    LeaseBroken { remote: Option<Oid> },
}

/// rebake's clone of the GitOps repository.
pub struct Workspace {
    repo: Repository,
    auth: Auth,
    /// origin's URL with any `user:password@` removed, for messages.
    display_url: String,
    /// The user part of origin's URL when it may hold a secret; scrubbed from messages too.
    url_secret: Option<String>,
}

impl fmt::Debug for Workspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspace")
            .field("path", &self.repo.path())
            .field("origin", &self.display_url)
            .field("auth", &self.auth)
            .finish()
    }
}

impl Workspace {
    /// Clones `remote_url` (bare) into `dir` when `dir` does not exist or is empty; otherwise opens
    /// the repository at `dir` and points its `origin` at `remote_url` (creating `origin` if
    /// needed). Does not fetch an existing repository: call [`Workspace::fetch`].
    ///
    /// Credentials written into `remote_url` (`https://x-access-token:TOKEN@host/…`) are taken
    /// out of it: the workspace's config holds origin's URL without them, and they are given
    /// to git through the credentials callback (before `auth`).
    pub fn open_or_clone(remote_url: &str, dir: &Path, auth: &Auth) -> Result<Workspace> {
        let display_url = redact_url(remote_url);
        let secret = url_secret(remote_url);
        let (remote_url, from_url) = split_credentials(remote_url);
        let remote_url = remote_url.as_str();
        let auth = &match from_url {
            // A lone user part over https is a token, as git forges take it.
            Some(c) if c.password.is_empty() => Auth::Token(c.user),
            Some(c) if c.user == "x-access-token" => Auth::Token(c.password),
            Some(c) => Auth::UserPass {
                user: c.user,
                password: c.password,
            },
            None => auth.clone(),
        };
        let empty_dir = match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", dir.display()));
            }
        };
        if empty_dir {
            let ws = Workspace::clone_into(remote_url, dir, auth, display_url, secret)?;
            // Sets refs/remotes/origin/HEAD, which a clone does not always do.
            ws.fetch()?;
            return Ok(ws);
        }
        let repo = Repository::open(dir).map_err(|e| {
            anyhow!(
                "{} exists and is not a git repository ({}); remove it or point rebake's \
                 state directory elsewhere",
                dir.display(),
                e.message()
            )
        })?;
        let result = match repo.find_remote(ORIGIN) {
            Ok(_) => repo.remote_set_url(ORIGIN, remote_url),
            Err(e) if e.code() == ErrorCode::NotFound => repo.remote(ORIGIN, remote_url).map(drop),
            Err(e) => Err(e),
        };
        let ws = Workspace {
            repo,
            auth: auth.clone(),
            display_url,
            url_secret: secret,
        };
        result.map_err(|e| {
            ws.error(
                e,
                &format!(
                    "cannot set origin of {} to {}",
                    dir.display(),
                    ws.display_url
                ),
            )
        })?;
        Ok(ws)
    }

    fn clone_into(
        url: &str,
        dir: &Path,
        auth: &Auth,
        display_url: String,
        secret: Option<String>,
    ) -> Result<Workspace> {
        let session = Session::default();
        let mut fetch = FetchOptions::new();
        fetch
            .remote_callbacks(remote_callbacks(auth, url, &session))
            .proxy_options(proxy_auto())
            .download_tags(AutotagOption::None);
        let mut builder = git2::build::RepoBuilder::new();
        builder.bare(true).fetch_options(fetch);
        match builder.clone(url, dir) {
            Ok(repo) => Ok(Workspace {
                repo,
                auth: auth.clone(),
                display_url,
                url_secret: secret,
            }),
            Err(e) => Err(anyhow!(
                "cannot clone {} into {}: {}",
                display_url,
                dir.display(),
                scrub(
                    &describe(&e, &display_url, &session),
                    auth,
                    secret.as_deref()
                )
            )),
        }
    }

    /// The underlying repository, for what this module does not cover.
    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// The repository's git directory.
    pub fn path(&self) -> &Path {
        self.repo.path()
    }

    /// Fetches every branch of origin into `refs/remotes/origin/*`, deleting tracking refs of
    /// branches origin no longer has, and points `refs/remotes/origin/HEAD` at origin's `HEAD`.
    pub fn fetch(&self) -> Result<()> {
        let mut remote = self
            .repo
            .find_remote(ORIGIN)
            .map_err(|e| self.error(e, "the workspace has no origin remote"))?;
        let session = Session::default();
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(remote_callbacks(&self.auth, &self.display_url, &session))
            .proxy_options(proxy_auto())
            .prune(FetchPrune::On)
            .download_tags(AutotagOption::None);
        remote
            .fetch(
                &["+refs/heads/*:refs/remotes/origin/*"],
                Some(&mut options),
                Some("rebake: fetch"),
            )
            .map_err(|e| {
                self.net_error(
                    e,
                    &format!("cannot fetch from {}", self.display_url),
                    &session,
                )
            })?;

        // origin's HEAD, from the advertisement of the fetch that just ran.
        let head = remote
            .default_branch()
            .ok()
            .and_then(|buf| buf.as_str().ok().map(str::to_owned));
        if let Some(branch) = head.as_deref().and_then(|r| r.strip_prefix("refs/heads/")) {
            let tracking = format!("{TRACKING_PREFIX}{branch}");
            if self.repo.find_reference(&tracking).is_ok() {
                self.repo
                    .reference_symbolic(
                        "refs/remotes/origin/HEAD",
                        &tracking,
                        true,
                        "rebake: origin HEAD",
                    )
                    .map_err(|e| self.error(e, "cannot record origin's HEAD"))?;
            }
        }
        Ok(())
    }

    /// origin's default branch as of the last fetch: what origin's `HEAD` points at, else
    /// `main`, else `master` (whichever origin has).
    pub fn default_branch(&self) -> Result<String> {
        if let Ok(head) = self.repo.find_reference("refs/remotes/origin/HEAD") {
            if let Some(branch) = head
                .symbolic_target()
                .ok()
                .flatten()
                .and_then(|t| t.strip_prefix(TRACKING_PREFIX))
            {
                if self.remote_head(branch)?.is_some() {
                    return Ok(branch.to_owned());
                }
            }
        }
        for branch in ["main", "master"] {
            if self.remote_head(branch)?.is_some() {
                return Ok(branch.to_owned());
            }
        }
        bail!(
            "cannot tell the default branch of {}: it has no HEAD, no main and no master branch \
             (is it empty? push a first commit to it)",
            self.display_url
        )
    }

    /// The commit origin's `branch` pointed at as of the last fetch or push; `None` when origin
    /// had no such branch.
    pub fn remote_head(&self, branch: &str) -> Result<Option<Oid>> {
        let name = format!("{TRACKING_PREFIX}{branch}");
        match self.repo.find_reference(&name) {
            Ok(reference) => {
                let oid = reference
                    .peel_to_commit()
                    .map_err(|e| self.error(e, &format!("{name} does not point at a commit")))?
                    .id();
                Ok(Some(oid))
            }
            Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidSpec) => Ok(None),
            Err(e) => Err(self.error(e, &format!("cannot read {name}"))),
        }
    }

    /// Asks origin now (one connection, nothing downloaded) where its `branch` points.
    pub fn ls_remote(&self, branch: &str) -> Result<Option<Oid>> {
        let refname = branch_ref(branch)?;
        self.live_ref(&refname)
    }

    fn live_ref(&self, refname: &str) -> Result<Option<Oid>> {
        let mut remote = self
            .repo
            .find_remote(ORIGIN)
            .map_err(|e| self.error(e, "the workspace has no origin remote"))?;
        let session = Session::default();
        let connection = remote
            .connect_auth(
                Direction::Fetch,
                Some(remote_callbacks(&self.auth, &self.display_url, &session)),
                Some(proxy_auto()),
            )
            .map_err(|e| {
                self.net_error(
                    e,
                    &format!("cannot connect to {}", self.display_url),
                    &session,
                )
            })?;
        let heads = connection
            .list()
            .map_err(|e| self.error(e, &format!("cannot list refs of {}", self.display_url)))?;
        Ok(heads
            .iter()
            .find(|h| h.name() == refname)
            .map(|h| h.oid())
            .filter(|oid| !oid.is_zero()))
    }

    /// Writes a commit whose parent is `base` and whose tree is `base`'s tree with `files`
    /// replaced: `(path, Some(bytes))` writes a file (creating directories as needed, keeping
    /// the executable bit of a file it replaces), `(path, None)` deletes one (directories left
    /// empty disappear; deleting a missing file is not an error). Paths are relative to the
    /// repository root. No ref is moved and nothing is checked out. `time` (seconds since the
    /// epoch, UTC) makes the commit reproducible; `None` means now.
    pub fn commit_on(
        &self,
        base: Oid,
        files: &[(PathBuf, Option<Vec<u8>>)],
        message: &str,
        author: &Identity,
        committer: &Identity,
        time: Option<i64>,
    ) -> Result<Oid> {
        let parent = self
            .repo
            .find_commit(base)
            .map_err(|e| self.error(e, &format!("base commit {base} not found")))?;
        let base_tree = parent
            .tree()
            .map_err(|e| self.error(e, &format!("cannot read the tree of {base}")))?;

        let mut changes = BTreeMap::new();
        for (path, content) in files {
            add_change(&mut changes, path, content.as_deref())?;
        }
        let tree_id = match self.apply_changes(Some(&base_tree), &changes, "")? {
            Some(id) => id,
            None => self
                .repo
                .treebuilder(None)
                .and_then(|b| b.write())
                .map_err(|e| self.error(e, "cannot write an empty tree"))?,
        };
        let tree = self
            .repo
            .find_tree(tree_id)
            .map_err(|e| self.error(e, "cannot read the new tree"))?;

        let author = signature(author, time).context("invalid author")?;
        let committer = signature(committer, time).context("invalid committer")?;
        self.repo
            .commit(None, &author, &committer, message, &tree, &[&parent])
            .map_err(|e| self.error(e, &format!("cannot write a commit on {base}")))
    }

    /// A merge commit of `theirs` into `ours` (parents in that order, as `git merge` makes
    /// them), by `committer`; `None` when the trees conflict. No ref is moved.
    pub fn merge_commit(
        &self,
        ours: Oid,
        theirs: Oid,
        message: &str,
        committer: &Identity,
    ) -> Result<Option<Oid>> {
        let find = |oid: Oid| {
            self.repo
                .find_commit(oid)
                .map_err(|e| self.error(e, &format!("commit {oid} not found")))
        };
        let (ours, theirs) = (find(ours)?, find(theirs)?);
        let mut index = self
            .repo
            .merge_commits(&ours, &theirs, None)
            .map_err(|e| self.error(e, "cannot merge"))?;
        if index.has_conflicts() {
            return Ok(None);
        }
        let tree_id = index
            .write_tree_to(&self.repo)
            .map_err(|e| self.error(e, "cannot write the merged tree"))?;
        let tree = self
            .repo
            .find_tree(tree_id)
            .map_err(|e| self.error(e, "cannot read the merged tree"))?;
        let who = signature(committer, None).context("invalid committer")?;
        self.repo
            .commit(None, &who, &who, message, &tree, &[&ours, &theirs])
            .map(Some)
            .map_err(|e| self.error(e, "cannot write the merge commit"))
    }

    /// Applies `changes` to `base` (a directory of the tree, at `prefix`). `None`: the result
    /// is an empty directory, which git does not store.
    fn apply_changes(
        &self,
        base: Option<&Tree<'_>>,
        changes: &BTreeMap<String, Change>,
        prefix: &str,
    ) -> Result<Option<Oid>> {
        let mut builder = self
            .repo
            .treebuilder(base)
            .map_err(|e| self.error(e, "cannot start a tree"))?;
        for (name, change) in changes {
            let path = format!("{prefix}{name}");
            let existing = base.and_then(|t| t.get_name(name));
            let existing_kind = existing.as_ref().and_then(|e| e.kind());
            match change {
                Change::File(Some(data)) => {
                    if existing_kind == Some(ObjectType::Tree) {
                        bail!("cannot write file {path}: it is a directory in the base commit");
                    }
                    let mode = match existing.as_ref().map(|e| e.filemode()) {
                        Some(MODE_BLOB_EXECUTABLE) => MODE_BLOB_EXECUTABLE,
                        _ => MODE_BLOB,
                    };
                    let blob = self
                        .repo
                        .blob(data)
                        .map_err(|e| self.error(e, &format!("cannot store {path}")))?;
                    builder
                        .insert(name.as_str(), blob, mode)
                        .map_err(|e| self.error(e, &format!("cannot add {path}")))?;
                }
                Change::File(None) => {
                    if existing_kind == Some(ObjectType::Tree) {
                        bail!("cannot delete file {path}: it is a directory in the base commit");
                    }
                    if existing.is_some() {
                        builder
                            .remove(name.as_str())
                            .map_err(|e| self.error(e, &format!("cannot delete {path}")))?;
                    }
                }
                Change::Dir(inner) => {
                    let subtree = match (&existing, existing_kind) {
                        (Some(entry), Some(ObjectType::Tree)) => {
                            Some(self.repo.find_tree(entry.id()).map_err(|e| {
                                self.error(e, &format!("cannot read directory {path}"))
                            })?)
                        }
                        (Some(_), _) => {
                            bail!("cannot write under {path}/: it is a file in the base commit")
                        }
                        (None, _) => None,
                    };
                    match self.apply_changes(subtree.as_ref(), inner, &format!("{path}/"))? {
                        Some(id) => {
                            builder
                                .insert(name.as_str(), id, MODE_TREE)
                                .map_err(|e| self.error(e, &format!("cannot add {path}/")))?;
                        }
                        None if existing.is_some() => builder
                            .remove(name.as_str())
                            .map_err(|e| self.error(e, &format!("cannot delete {path}/")))?,
                        None => {}
                    }
                }
            }
        }
        if builder.is_empty() {
            return Ok(None);
        }
        let id = builder
            .write()
            .map_err(|e| self.error(e, &format!("cannot write tree {prefix}")))?;
        Ok(Some(id))
    }

    /// Whether two commits (or trees) have identical contents. Unknown objects are never equal.
    pub fn tree_equal(&self, a: Oid, b: Oid) -> bool {
        match (self.tree_id(a), self.tree_id(b)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    fn tree_id(&self, oid: Oid) -> Option<Oid> {
        let object = self.repo.find_object(oid, None).ok()?;
        object.peel_to_tree().ok().map(|t| t.id())
    }

    /// The full message (title, blank line, body) of a commit.
    pub fn commit_message(&self, oid: Oid) -> Result<String> {
        let commit = self
            .repo
            .find_commit(oid)
            .map_err(|e| self.error(e, &format!("commit {oid} not found")))?;
        Ok(String::from_utf8_lossy(commit.message_bytes()).into_owned())
    }

    /// The contents of the file at `path` in `commit`; `None` when there is no such path.
    pub fn read_file(&self, commit: Oid, path: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
        let path = path.as_ref();
        let tree = self
            .repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(|e| self.error(e, &format!("commit {commit} not found")))?;
        let entry = match tree.get_path(path) {
            Ok(entry) => entry,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => {
                return Err(self.error(e, &format!("cannot look up {}", path.display())));
            }
        };
        if entry.kind() != Some(ObjectType::Blob) {
            bail!("{} in {commit} is not a file", path.display());
        }
        let blob = self
            .repo
            .find_blob(entry.id())
            .map_err(|e| self.error(e, &format!("cannot read {}", path.display())))?;
        Ok(Some(blob.content().to_vec()))
    }

    /// Whether `ancestor` is `of` or one of its ancestors (`git merge-base --is-ancestor`).
    pub fn is_ancestor(&self, ancestor: Oid, of: Oid) -> Result<bool> {
        if ancestor == of {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(of, ancestor)
            .map_err(|e| self.error(e, &format!("cannot compare {ancestor} with {of}")))
    }

    /// Up to `limit` commits from `from` following first parents only (`from` first): on a
    /// default branch, the commits that landed on it, merges included, in order.
    pub fn log_first_parent(&self, from: Oid, limit: usize) -> Vec<Oid> {
        let walk = || -> std::result::Result<Vec<Oid>, git2::Error> {
            let mut walk = self.repo.revwalk()?;
            walk.set_sorting(Sort::NONE)?;
            walk.simplify_first_parent()?;
            walk.push(from)?;
            Ok(walk.take(limit).map_while(|r| r.ok()).collect())
        };
        walk().unwrap_or_default()
    }

    /// Sets origin's `refs/heads/<branch>` to `new` if, and only if, origin has it at
    /// `expected` (`None`: the branch must not exist). Otherwise nothing changes on origin and
    /// the answer is [`PushOutcome::LeaseBroken`] with what origin has. A branch that already
    /// points at `new` counts as pushed. After a push, [`Workspace::remote_head`] returns `new`.
    pub fn push_with_lease(
        &self,
        branch: &str,
        new: Oid,
        expected: Option<Oid>,
    ) -> Result<PushOutcome> {
        let refname = branch_ref(branch)?;
        if self.repo.find_commit(new).is_err() {
            bail!("cannot push {new} to {branch}: no such commit in the workspace");
        }
        let spec = match expected {
            Some(_) => format!("+{new}:{refname}"),
            None => format!("{new}:{refname}"),
        };
        let outcome = self.push_leased(&refname, &spec, Some(new), expected)?;
        if outcome == PushOutcome::Pushed {
            let tracking = format!("{TRACKING_PREFIX}{branch}");
            self.repo
                .reference(&tracking, new, true, "rebake: push")
                .map_err(|e| self.error(e, &format!("cannot update {tracking}")))?;
        }
        Ok(outcome)
    }

    /// Deletes origin's `refs/heads/<branch>` if, and only if, it points at `expected`.
    /// A branch that is already gone counts as deleted.
    pub fn delete_remote_branch(&self, branch: &str, expected: Oid) -> Result<PushOutcome> {
        let refname = branch_ref(branch)?;
        let spec = format!(":{refname}");
        let outcome = self.push_leased(&refname, &spec, None, Some(expected))?;
        if outcome == PushOutcome::Pushed {
            let tracking = format!("{TRACKING_PREFIX}{branch}");
            match self.repo.find_reference(&tracking) {
                Ok(mut r) => r
                    .delete()
                    .map_err(|e| self.error(e, &format!("cannot delete {tracking}")))?,
                Err(e) if e.code() == ErrorCode::NotFound => {}
                Err(e) => return Err(self.error(e, &format!("cannot read {tracking}"))),
            }
        }
        Ok(outcome)
    }

    /// One push of `spec` (which updates `refname` to `new`, or deletes it when `new` is None),
    /// leased on `expected`.
    fn push_leased(
        &self,
        refname: &str,
        spec: &str,
        new: Option<Oid>,
        expected: Option<Oid>,
    ) -> Result<PushOutcome> {
        let mut remote = self
            .repo
            .find_remote(ORIGIN)
            .map_err(|e| self.error(e, "the workspace has no origin remote"))?;

        // Why the push was cancelled before upload, when it was.
        let cancelled: Cell<Option<PushOutcome>> = Cell::new(None);
        let rejected: RefCell<Option<String>> = RefCell::new(None);
        let session = Session::default();

        let mut callbacks = remote_callbacks(&self.auth, &self.display_url, &session);
        callbacks.push_negotiation(|updates| {
            for update in updates {
                if update.dst_refname_bytes() != refname.as_bytes() {
                    continue;
                }
                let current = Some(update.src()).filter(|oid| !oid.is_zero());
                if current == new {
                    // Already where we want it: nothing to do, and nothing to overwrite.
                    cancelled.set(Some(PushOutcome::Pushed));
                } else if current != expected {
                    cancelled.set(Some(PushOutcome::LeaseBroken { remote: current }));
                } else {
                    continue;
                }
                return Err(git2::Error::from_str("rebake: push cancelled by the lease"));
            }
            Ok(())
        });
        callbacks.push_update_reference(|name, status| {
            if let Some(status) = status {
                *rejected.borrow_mut() = Some(format!("{name}: {status}"));
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options
            .remote_callbacks(callbacks)
            .proxy_options(proxy_auto());

        let result = remote.push(&[spec], Some(&mut options));
        drop(options);
        if let Some(outcome) = cancelled.get() {
            tracing::debug!(refname, ?outcome, "push decided at negotiation");
            return Ok(outcome);
        }
        result.map_err(|e| {
            self.net_error(
                e,
                &format!("cannot push {refname} to {}", self.display_url),
                &session,
            )
        })?;
        if let Some(reason) = rejected.into_inner() {
            // Refused by origin: most likely the ref moved after negotiation. Look again.
            let now = self.live_ref(refname)?;
            if now == new {
                return Ok(PushOutcome::Pushed);
            }
            if now != expected {
                return Ok(PushOutcome::LeaseBroken { remote: now });
            }
            bail!(
                "{} refused the update of {refname}: {} (check the token's permission to push \
                 and any branch protection on {refname})",
                self.display_url,
                self.scrub(&reason)
            );
        }
        Ok(PushOutcome::Pushed)
    }

    /// A git2 error as an anyhow error with `what` in front, without any secret.
    fn error(&self, e: git2::Error, what: &str) -> anyhow::Error {
        anyhow!("{}: {}", self.scrub(what), self.scrub(e.message()))
    }

    /// Like [`Workspace::error`], for an error of a network operation: a refused ssh host key
    /// or TLS certificate is explained.
    fn net_error(&self, e: git2::Error, what: &str, session: &Session) -> anyhow::Error {
        anyhow!(
            "{}: {}",
            self.scrub(what),
            self.scrub(&describe(&e, &self.display_url, session))
        )
    }

    fn scrub(&self, text: &str) -> String {
        scrub(text, &self.auth, self.url_secret.as_deref())
    }
}

/// One node of the requested changes, by path component.
enum Change {
    File(Option<Vec<u8>>),
    Dir(BTreeMap<String, Change>),
}

fn add_change(
    changes: &mut BTreeMap<String, Change>,
    path: &Path,
    content: Option<&[u8]>,
) -> Result<()> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => {
                let name = name
                    .to_str()
                    .ok_or_else(|| anyhow!("path {} is not valid UTF-8", path.display()))?;
                if name.eq_ignore_ascii_case(".git") {
                    bail!("path {} would write inside .git", path.display());
                }
                names.push(name.to_owned());
            }
            Component::CurDir => {}
            _ => bail!(
                "path {} must be relative to the repository root, without '..'",
                path.display()
            ),
        }
    }
    let Some((file, dirs)) = names.split_last() else {
        bail!("empty path in the files to commit");
    };
    let mut level = changes;
    for dir in dirs {
        let node = level
            .entry(dir.clone())
            .or_insert_with(|| Change::Dir(BTreeMap::new()));
        level = match node {
            Change::Dir(inner) => inner,
            Change::File(_) => bail!(
                "path {} is under a path that is itself in the files to commit",
                path.display()
            ),
        };
    }
    if level.contains_key(file) {
        bail!("path {} is in the files to commit twice", path.display());
    }
    level.insert(file.clone(), Change::File(content.map(<[u8]>::to_vec)));
    Ok(())
}

fn branch_ref(branch: &str) -> Result<String> {
    let refname = format!("refs/heads/{branch}");
    if branch.is_empty() || !git2::Reference::is_valid_name(&refname) {
        bail!("'{branch}' is not a valid branch name");
    }
    Ok(refname)
}

fn signature(who: &Identity, time: Option<i64>) -> Result<Signature<'static>> {
    let signature = match time {
        Some(seconds) => Signature::new(&who.name, &who.email, &Time::new(seconds, 0)),
        None => Signature::now(&who.name, &who.email),
    };
    signature.map_err(|e| anyhow!("{} <{}>: {}", who.name, who.email, e.message()))
}

fn proxy_auto() -> ProxyOptions<'static> {
    let mut proxy = ProxyOptions::new();
    proxy.auto();
    proxy
}

/// What the callbacks of one network operation saw.
#[derive(Default)]
struct Session {
    /// Credential answers given so far.
    attempts: Cell<u32>,
    /// The ssh host key the server offered, if any.
    host_key: RefCell<Option<OfferedHostKey>>,
}

/// An ssh server's host key as it offered it.
#[derive(Debug, Clone)]
struct OfferedHostKey {
    /// `ssh-ed25519`, `ssh-rsa`, …
    kind: &'static str,
    /// The key blob, base64 (as in known_hosts).
    base64: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    fingerprint: Option<String>,
}

/// Callbacks that answer libgit2's credential requests from `auth` for the remote `url`.
fn remote_callbacks<'a>(auth: &'a Auth, url: &str, session: &'a Session) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(move |url, username_from_url, allowed| {
        credentials(auth, &session.attempts, url, username_from_url, allowed)
    });
    if Transport::of(url) == Transport::Ssh {
        // Records the offered key for the error message; libgit2 has already checked it
        // against known_hosts and keeps its own verdict (passthrough).
        callbacks.certificate_check(move |cert, _host| {
            if let Some(hostkey) = cert.as_hostkey() {
                use base64::Engine;
                let kind = hostkey.hostkey_type().map_or("unknown", |t| t.name());
                *session.host_key.borrow_mut() = hostkey.hostkey().map(|blob| OfferedHostKey {
                    kind,
                    base64: base64::engine::general_purpose::STANDARD.encode(blob),
                    fingerprint: hostkey.hash_sha256().map(|h| {
                        format!(
                            "SHA256:{}",
                            base64::engine::general_purpose::STANDARD_NO_PAD.encode(h)
                        )
                    }),
                });
            }
            Ok(git2::CertificateCheckStatus::CertificatePassthrough)
        });
    }
    callbacks
}

/// The message of a failed network operation on `url` (already redacted), with an explanation
/// and a fix when the server's identity was refused.
fn describe(e: &git2::Error, url: &str, session: &Session) -> String {
    let message = e.message();
    let refused = e.code() == ErrorCode::Certificate
        || (e.class() == git2::ErrorClass::Ssl && message.contains("certificate"))
        || (e.class() == git2::ErrorClass::Ssh && message.contains("hostkey"));
    if !refused {
        return message.to_owned();
    }
    match Transport::of(url) {
        Transport::Ssh => {
            let Some((host, port)) = ssh_endpoint(url) else {
                return message.to_owned();
            };
            let offered = session.host_key.borrow().clone();
            explain_ssh_host_key(&host, port, offered.as_ref(), &known_hosts_path())
        }
        Transport::Http => {
            let server = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| {
                    let host = u.host_str()?.to_owned();
                    Some(format!("{host}:{}", u.port_or_known_default()?))
                })
                .unwrap_or_else(|| url.to_owned());
            format!(
                "the TLS certificate of {server} is not trusted ({message}). If the server's \
                 certificate comes from your own CA, trust that CA: add it to the system's \
                 certificates (on Debian: copy it to /usr/local/share/ca-certificates/NAME.crt \
                 and run update-ca-certificates), or set SSL_CERT_FILE to a PEM file that holds \
                 it. Otherwise check that {server} is the server you mean to reach"
            )
        }
        Transport::Local | Transport::Other => message.to_owned(),
    }
}

/// The known_hosts file libgit2 reads: `$HOME/.ssh/known_hosts`.
fn known_hosts_path() -> PathBuf {
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".ssh/known_hosts"),
        None => PathBuf::from("~/.ssh/known_hosts"),
    }
}

/// What a known_hosts file says about one host.
#[derive(Debug, PartialEq, Eq)]
enum KnownHost {
    /// The file does not exist (or cannot be read).
    NoFile,
    /// No plain-text entry names the host (hashed entries cannot be told apart here).
    NotListed,
    /// Entries name the host, none with the offered key; the 1-based line of the first.
    OtherKey { line: usize },
    /// An entry has the offered key.
    Listed,
}

/// Looks `name` (`host`, or `[host]:port` off port 22, as ssh writes it) up in known_hosts
/// `text`, against the key blob `offered` (base64) when it is known.
fn known_host(text: Option<&str>, name: &str, offered: Option<&str>) -> KnownHost {
    let Some(text) = text else {
        return KnownHost::NoFile;
    };
    let mut first_other = None;
    for (number, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let Some(hosts) = fields.next() else { continue };
        if hosts.starts_with('#') || hosts.starts_with('@') {
            continue; // comments; @cert-authority and @revoked lines are no plain entries
        }
        let names_it = hosts
            .split(',')
            .any(|pattern| pattern.eq_ignore_ascii_case(name));
        if !names_it {
            continue;
        }
        let (_kind, key) = (fields.next(), fields.next());
        if offered.is_some() && key == offered {
            return KnownHost::Listed;
        }
        first_other.get_or_insert(number + 1);
    }
    match first_other {
        Some(line) => KnownHost::OtherKey { line },
        None => KnownHost::NotListed,
    }
}

/// Why libgit2 refused the ssh server `host`:`port`, and what to do.
fn explain_ssh_host_key(
    host: &str,
    port: u16,
    offered: Option<&OfferedHostKey>,
    known_hosts: &Path,
) -> String {
    let name = if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    };
    let file = known_hosts.display();
    let text = std::fs::read_to_string(known_hosts).ok();
    let found = known_host(text.as_deref(), &name, offered.map(|k| k.base64.as_str()));
    let offered_text = offered.map_or(String::new(), |k| {
        format!(
            " (it offered {} {})",
            k.kind,
            k.fingerprint.as_deref().unwrap_or("with no fingerprint")
        )
    });
    let keyscan = format!("ssh-keyscan -p {port} {host} >> {file}");
    let rule = "rebake (libgit2) trusts only ssh servers whose key is in the known_hosts file of \
                the user it runs as, ~/.ssh/known_hosts";
    match found {
        KnownHost::OtherKey { line } => format!(
            "the ssh host key of {name} does not match the one in {file} (line {line}){offered_text}: \
             the server's key has changed, or something is between rebake and the server. \
             {rule}. Ask the server's administrator for its key fingerprint; if the change is \
             expected, remove the old key with `ssh-keygen -R '{name}' -f {file}` and add the new \
             one with `{keyscan}`"
        ),
        KnownHost::NoFile => format!(
            "the ssh host key of {name} is unknown: {file} does not exist{offered_text}. {rule}. \
             Add the server's key after checking its fingerprint with the server's \
             administrator: `mkdir -p {dir} && {keyscan}`",
            dir = known_hosts
                .parent()
                .map_or_else(|| ".".into(), |d| d.display().to_string())
        ),
        KnownHost::NotListed | KnownHost::Listed => format!(
            "the ssh host key of {name} is unknown: {name} is not in {file}{offered_text}. {rule}. \
             Add the server's key after checking its fingerprint with the server's \
             administrator: `{keyscan}`"
        ),
    }
}

fn credentials(
    auth: &Auth,
    attempts: &Cell<u32>,
    url: &str,
    username_from_url: Option<&str>,
    allowed: CredentialType,
) -> std::result::Result<Cred, git2::Error> {
    let url = redact_url(url);
    let ssh_user = username_from_url.unwrap_or("git");
    // An ssh username is not a credential: asking for it does not count as an attempt.
    if allowed == CredentialType::USERNAME {
        return Cred::username(ssh_user);
    }
    let attempt = attempts.get() + 1;
    attempts.set(attempt);
    if attempt > MAX_CREDENTIAL_ATTEMPTS {
        let what = match auth {
            Auth::None => "the remote requires credentials and none are configured".to_owned(),
            Auth::Token(_) => "the token was rejected (is it valid, and does it have permission \
                               to read and push to this repository?)"
                .to_owned(),
            Auth::UserPass { user, .. } => {
                format!("the user {user} and password from origin's URL were rejected")
            }
            Auth::SshAgent => "no key of the ssh-agent was accepted".to_owned(),
            Auth::SshKey { private, .. } => {
                format!("the ssh key {} was rejected", private.display())
            }
        };
        return Err(git2::Error::from_str(&format!(
            "authentication to {url} failed: {what}"
        )));
    }
    match auth {
        Auth::None if allowed.contains(CredentialType::DEFAULT) => Cred::default(),
        Auth::None => Err(git2::Error::from_str(&format!(
            "{url} asks for credentials and none are configured"
        ))),
        Auth::Token(token) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
            Cred::userpass_plaintext("x-access-token", token)
        }
        Auth::Token(_) => Err(git2::Error::from_str(&format!(
            "a token authenticates only over https; {url} asks for another kind of credentials"
        ))),
        Auth::UserPass { user, password }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
        {
            Cred::userpass_plaintext(user, password)
        }
        Auth::UserPass { .. } => Err(git2::Error::from_str(&format!(
            "a user and password authenticate only over https; {url} asks for another kind of \
             credentials"
        ))),
        Auth::SshAgent if allowed.contains(CredentialType::SSH_KEY) => {
            Cred::ssh_key_from_agent(ssh_user)
        }
        Auth::SshKey {
            private,
            passphrase,
        } if allowed.contains(CredentialType::SSH_KEY) => {
            Cred::ssh_key(ssh_user, None, private, passphrase.as_deref())
        }
        Auth::SshAgent | Auth::SshKey { .. } => Err(git2::Error::from_str(&format!(
            "an ssh key authenticates only over ssh; {url} asks for another kind of credentials"
        ))),
    }
}

/// `text` with every secret of `auth`, and `url_secret`, replaced by `***`.
fn scrub(text: &str, auth: &Auth, url_secret: Option<&str>) -> String {
    let mut text = text.to_owned();
    for secret in auth.secrets().into_iter().chain(url_secret) {
        if !secret.is_empty() {
            text = text.replace(secret, "***");
        }
    }
    text
}

/// Runs blocking git work on the blocking pool, with the workspace for `remote_url` opened (or
/// cloned) in `dir` inside the closure: a `Workspace` is not `Sync`.
pub async fn with_workspace<T: Send + 'static>(
    remote_url: &str,
    dir: &Path,
    auth: &Auth,
    f: impl FnOnce(&Workspace) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (url, dir, auth) = (remote_url.to_string(), dir.to_path_buf(), auth.clone());
    tokio::task::spawn_blocking(move || f(&Workspace::open_or_clone(&url, &dir, &auth)?)).await?
}

pub use crate::redact::redact_url;
use crate::redact::{split_credentials, url_secret};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_follows_gits_rules() {
        for (url, transport) in [
            ("ssh://git@example.org:2222/ops/images.git", Transport::Ssh),
            ("git+ssh://example.org/ops/images.git", Transport::Ssh),
            ("git@example.org:ops/images.git", Transport::Ssh),
            ("example.org:ops/images.git", Transport::Ssh),
            ("https://example.org/ops/images.git", Transport::Http),
            ("HTTP://example.org/ops/images.git", Transport::Http),
            ("file:///srv/git/images.git", Transport::Local),
            ("/srv/git/images.git", Transport::Local),
            ("./images:old", Transport::Local),
            ("/srv/a:b/images.git", Transport::Local),
            ("git://example.org/images.git", Transport::Other),
        ] {
            assert_eq!(Transport::of(url), transport, "{url}");
        }
    }

    #[test]
    fn ssh_endpoints() {
        let at = |url: &str| ssh_endpoint(url);
        assert_eq!(
            at("ssh://root@127.0.0.1:2222/srv/x.git"),
            Some(("127.0.0.1".into(), 2222))
        );
        assert_eq!(
            at("ssh://example.org/x.git"),
            Some(("example.org".into(), 22))
        );
        assert_eq!(at("ssh://git@[::1]:2200/x.git"), Some(("::1".into(), 2200)));
        assert_eq!(
            at("git@example.org:ops/x.git"),
            Some(("example.org".into(), 22))
        );
        assert_eq!(at("https://example.org/x.git"), None);
        assert_eq!(at("/srv/x.git"), None);
    }

    #[test]
    fn known_hosts_lookup() {
        let text = "# comment\n\
                    |1|c2FsdA==|aGFzaA== ssh-ed25519 AAAAhashed\n\
                    other.example,[127.0.0.1]:2222 ssh-ed25519 AAAAold\n\
                    @cert-authority [127.0.0.1]:2222 ssh-ed25519 AAAAca\n\
                    [127.0.0.1]:2223 ssh-ed25519 AAAAnew\n";
        assert_eq!(
            known_host(None, "[127.0.0.1]:2222", Some("AAAAnew")),
            KnownHost::NoFile
        );
        assert_eq!(
            known_host(Some(text), "[127.0.0.1]:2222", Some("AAAAnew")),
            KnownHost::OtherKey { line: 3 }
        );
        assert_eq!(
            known_host(Some(text), "[127.0.0.1]:2223", Some("AAAAnew")),
            KnownHost::Listed
        );
        assert_eq!(
            known_host(Some(text), "127.0.0.1", Some("AAAAnew")),
            KnownHost::NotListed
        );
    }

    #[test]
    fn refused_host_keys_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".ssh/known_hosts");
        let offered = OfferedHostKey {
            kind: "ssh-ed25519",
            base64: "AAAAnew".into(),
            fingerprint: Some("SHA256:abc".into()),
        };
        let missing = explain_ssh_host_key("127.0.0.1", 2222, Some(&offered), &file);
        for part in [
            "[127.0.0.1]:2222 is unknown",
            "does not exist",
            "ssh-ed25519 SHA256:abc",
            "~/.ssh/known_hosts",
            &format!("ssh-keyscan -p 2222 127.0.0.1 >> {}", file.display()),
        ] {
            assert!(missing.contains(part), "{part} missing from: {missing}");
        }

        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "[127.0.0.1]:2222 ssh-ed25519 AAAAold\n").unwrap();
        let changed = explain_ssh_host_key("127.0.0.1", 2222, Some(&offered), &file);
        assert!(changed.contains("does not match"), "{changed}");
        assert!(
            changed.contains("ssh-keygen -R '[127.0.0.1]:2222'"),
            "{changed}"
        );

        let default_port = explain_ssh_host_key("example.org", 22, None, &file);
        assert!(
            default_port.contains("example.org is not in"),
            "{default_port}"
        );
        assert!(
            default_port.contains("ssh-keyscan -p 22 example.org"),
            "{default_port}"
        );
    }
}
