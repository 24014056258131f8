//! Proposals pushed over the two transports people use for a private GitOps repository, each
//! against a real server: ssh (Debian's sshd, a key from rebake.yaml `git.ssh_key` with its
//! passphrase from the environment, the host checked against `~/.ssh/known_hosts`) and https
//! with a token (`git http-backend` behind TLS from a private CA — the forge's API too —
//! trusted through `SSL_CERT_FILE`). `rebake propose` runs end to end as a user runs it.

use std::path::Path;
use std::process::Output;

use crate::support::engine::runtime;
use crate::support::fake_forge::FakeForge;
use crate::support::fake_github::FakeGitHub;
use crate::support::git_https::{Credentials, GitHttpsServer};
use crate::support::gitops::{
    action, branch_head, git, propose, shared_state, text, ticker_gitops,
};
use crate::support::sshd::TestSshd;

/// stdout and stderr together: what the user sees.
fn seen(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn write_known_hosts(home: &Path, content: &str) {
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/known_hosts"), content).unwrap();
}

#[test]
fn ssh_push_trusts_only_known_hosts_and_logs_in_with_the_configured_key() {
    const PASSPHRASE: &str = "correct horse battery staple";
    let ops = ticker_gitops("rebake-test-ssh-ticker");
    let (state, _guard) = shared_state();
    let sshd = TestSshd::start_with(Some(PASSPHRASE));
    git(
        &ops.clone,
        &["remote", "set-url", "origin", &sshd.url(&ops.bare)],
    );
    // The key next to rebake.yaml, named relative to it.
    std::fs::copy(&sshd.user_key, ops.clone.join("deploy_key")).unwrap();
    std::fs::write(
        ops.clone.join("rebake.yaml"),
        "git:\n  ssh_key: deploy_key\n  ssh_key_passphrase_env: REBAKE_TEST_SSH_PASSPHRASE\n",
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let home_dir = home.path().to_str().unwrap();
    let env = [
        ("HOME", home_dir),
        ("REBAKE_TEST_SSH_PASSPHRASE", PASSPHRASE),
    ];
    let host = format!("[127.0.0.1]:{}", sshd.port);
    let keyscan = format!("ssh-keyscan -p {} 127.0.0.1 >>", sshd.port);

    // No known_hosts at all: refused before logging in, and the message says what to do.
    let unknown = propose(&ops, state, &env);
    let message = seen(&unknown);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    for part in [
        format!("the ssh host key of {host} is unknown"),
        "~/.ssh/known_hosts".to_string(),
        format!("{home_dir}/.ssh/known_hosts"),
        format!("ssh-ed25519 {}", sshd.host_fingerprint()),
        keyscan.clone(),
    ] {
        assert!(message.contains(&part), "{part:?} missing:\n{message}");
    }
    assert!(!message.contains(PASSPHRASE), "{message}");
    assert_eq!(branch_head(&ops.bare, "rebake/ticker"), None);
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());

    // known_hosts holds another key for that host (here: the user's key): refused, and told
    // apart from an unknown host.
    let other_key = std::fs::read_to_string(sshd.user_key.with_extension("pub")).unwrap();
    write_known_hosts(home.path(), &format!("{host} {other_key}"));
    let changed = propose(&ops, state, &env);
    let message = seen(&changed);
    assert_eq!(changed.status.code(), Some(1), "{}", text(&changed));
    assert!(
        message.contains(&format!("the ssh host key of {host} does not match")),
        "{message}"
    );
    assert!(message.contains(&keyscan), "{message}");
    assert_eq!(branch_head(&ops.bare, "rebake/ticker"), None);

    // The server's own key, as ssh-keyscan writes it: pushed with the passphrase-protected key.
    write_known_hosts(home.path(), &format!("{}\n", sshd.known_hosts_line()));
    let pushed = propose(&ops, state, &env);
    assert_eq!(action(&pushed, "ticker"), "opened", "{}", text(&pushed));
    assert_eq!(pushed.status.code(), Some(0), "{}", text(&pushed));
    let head = branch_head(&ops.bare, "rebake/ticker").expect("branch pushed over ssh");
    let message = git(&ops.bare, &["log", "-1", "--format=%B", &head]);
    assert!(message.starts_with("ticker: first build ("), "{message}");
    let log = sshd.log();
    assert!(
        log.contains(&format!("Accepted publickey for {}", sshd.user)),
        "{log}"
    );
}

#[test]
fn https_push_with_a_token_trusts_the_ca_in_ssl_cert_file() {
    const TOKEN: &str = "ghp_httpsTOKEN0123456789";
    const WRONG: &str = "ghp_WRONGhttps987654321";
    let ops = ticker_gitops("rebake-test-https-ticker");
    let (state, _guard) = shared_state();
    let fake = runtime().block_on(FakeGitHub::start(&ops.bare, "acme", "images", TOKEN));
    let server = GitHttpsServer::start(ops.dir.path(), TOKEN);
    // The forge's API behind the same private CA: its client (native-tls) must trust it too.
    let api = server.tls_proxy(&fake.url());
    let remote = server.url("origin.git");
    git(&ops.clone, &["remote", "set-url", "origin", &remote]);
    std::fs::write(
        ops.clone.join("rebake.yaml"),
        format!(
            "forge:\n  kind: github\n  url: {}\n  repository: acme/images\n  token_env: REBAKE_TEST_GITHUB_TOKEN\n",
            api.url()
        ),
    )
    .unwrap();
    let ca = server.ca_file();
    let ca = ca.to_str().unwrap();
    let server_name = remote
        .trim_start_matches("https://")
        .trim_end_matches("/origin.git")
        .to_string();

    // The private CA is not trusted: a clear certificate error, nothing sent, nothing pushed.
    let untrusted = propose(&ops, state, &[("REBAKE_TEST_GITHUB_TOKEN", TOKEN)]);
    let message = seen(&untrusted);
    assert_eq!(untrusted.status.code(), Some(1), "{}", text(&untrusted));
    assert!(
        message.contains(&format!(
            "the TLS certificate of {server_name} is not trusted"
        )),
        "{message}"
    );
    assert!(message.contains("SSL_CERT_FILE"), "{message}");
    assert!(!message.contains(TOKEN), "{message}");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert_eq!(branch_head(&ops.bare, "rebake/ticker"), None);

    // Trusted, but the token is wrong: refused by the git server; the message names the remote
    // and never the token.
    let denied = propose(
        &ops,
        state,
        &[("REBAKE_TEST_GITHUB_TOKEN", WRONG), ("SSL_CERT_FILE", ca)],
    );
    let message = seen(&denied);
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied));
    assert!(message.contains(&remote), "{message}");
    assert!(message.contains("the token was rejected"), "{message}");
    assert!(!message.contains(WRONG), "{message}");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.credentials == Credentials::Wrong && r.status == 401),
        "{:?}",
        server.requests()
    );
    assert!(!server.requests().iter().any(|r| r.status == 200));
    assert_eq!(branch_head(&ops.bare, "rebake/ticker"), None);
    assert!(fake.prs().is_empty());

    // Trusted and the right token: pushed over https, one pull request opened over https.
    let opened = propose(
        &ops,
        state,
        &[("REBAKE_TEST_GITHUB_TOKEN", TOKEN), ("SSL_CERT_FILE", ca)],
    );
    assert_eq!(action(&opened, "ticker"), "opened", "{}", text(&opened));
    assert_eq!(opened.status.code(), Some(0), "{}", text(&opened));
    let head = branch_head(&ops.bare, "rebake/ticker").expect("branch pushed over https");
    let prs = fake.prs();
    assert_eq!(prs.len(), 1, "{prs:?}");
    assert!(
        prs[0].title.starts_with("ticker: first build ("),
        "{}",
        prs[0].title
    );
    let message = git(&ops.bare, &["log", "-1", "--format=%s", &head]);
    assert_eq!(message, prs[0].title);
    let requests = server.requests();
    let pushes: Vec<_> = requests.iter().filter(|r| r.is_push()).collect();
    assert!(
        !pushes.is_empty()
            && pushes
                .iter()
                .all(|r| r.credentials == Credentials::Right && r.status == 200),
        "{requests:?}"
    );
    assert!(api.relayed() > 0, "the forge was reached through TLS");
    fake.assert_no_violations();
}
