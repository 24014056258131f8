//! A real OpenSSH server for tests: Debian's `/usr/sbin/sshd` in the foreground (`-D -e`) on
//! `127.0.0.1:<free port>`, with a generated host key, a generated user key allowed to log in
//! as the current user (through an `authorized_keys` file in the temp dir) and its own config
//! file: no PAM, no passwords, `StrictModes no`, root allowed with a key
//! (`PermitRootLogin prohibit-password`: the tests run as root). The git commands that clients
//! run over it (`git-upload-pack`, `git-receive-pack`) are the machine's own git.
//!
//! Ready once the server sends its `SSH-2.0-` banner; killed on drop. Its log (`-e`, level
//! VERBOSE: every login, accepted or not) is [`TestSshd::log`].

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::registry::free_port;
use super::require_tool;

pub const SSHD_BIN: &str = "/usr/sbin/sshd";
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct TestSshd {
    pub port: u16,
    /// The login: the user the tests run as.
    pub user: String,
    /// The user's private key (ed25519, OpenSSH format), protected by [`TestSshd::passphrase`]
    /// when one was asked for.
    pub user_key: PathBuf,
    pub passphrase: Option<String>,
    /// `ssh-ed25519 AAAA…` (no comment).
    host_public: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl TestSshd {
    /// A server whose user key has no passphrase.
    pub fn start() -> TestSshd {
        TestSshd::start_with(None)
    }

    /// Starts sshd; `passphrase` protects the generated user key. Panics naming the Debian
    /// package when sshd or ssh-keygen is missing, or with sshd's log when it does not come up.
    pub fn start_with(passphrase: Option<&str>) -> TestSshd {
        assert!(
            Path::new(SSHD_BIN).exists(),
            "{SSHD_BIN} not found: apt-get install openssh-server (needed by this test)"
        );
        let keygen = require_tool("ssh-keygen", "openssh-client");
        let dir = tempfile::tempdir().expect("temp dir for sshd");
        let host_key = dir.path().join("host_ed25519");
        let user_key = dir.path().join("user_ed25519");
        for (key, pass, comment) in [
            (&host_key, "", "rebake-test-host"),
            (&user_key, passphrase.unwrap_or(""), "rebake-test-user"),
        ] {
            let out = Command::new(&keygen)
                .args(["-q", "-t", "ed25519", "-N", pass, "-C", comment, "-f"])
                .arg(key)
                .output()
                .expect("run ssh-keygen");
            assert!(
                out.status.success(),
                "ssh-keygen: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let public = |key: &Path| {
            let text = std::fs::read_to_string(key.with_extension("pub")).unwrap();
            text.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let host_public = public(&host_key);
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::write(&authorized_keys, format!("{}\n", public(&user_key))).unwrap();

        // sshd started by root needs its privilege separation directory (Debian's service
        // creates it at boot; here nothing has).
        if is_root() {
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }
        let port = free_port();
        let config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {authorized_keys}\n\
             StrictModes no\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\n\
             LogLevel VERBOSE\n",
            host_key = host_key.display(),
            pid = dir.path().join("sshd.pid").display(),
            authorized_keys = authorized_keys.display(),
        );
        let config_path = dir.path().join("sshd_config");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new(SSHD_BIN)
            .args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SSHD_BIN}: {e}"));
        let mut sshd = TestSshd {
            port,
            user: current_user(),
            user_key,
            passphrase: passphrase.map(str::to_owned),
            host_public,
            child: Some(child),
            dir,
        };
        sshd.wait_ready();
        sshd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut banner = [0u8; 8];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-" {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(exit)) = child.try_wait() {
                    panic!(
                        "sshd exited ({exit}) before answering; its log:\n{}",
                        self.log()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not answer on 127.0.0.1:{} within {START_TIMEOUT:?}; its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The line `ssh-keyscan -p PORT 127.0.0.1` prints for this server's key:
    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_public)
    }

    /// The host key's fingerprint as `ssh-keygen -l` prints it: `SHA256:…`.
    pub fn host_fingerprint(&self) -> String {
        let out = Command::new(require_tool("ssh-keygen", "openssh-client"))
            .arg("-l")
            .arg("-f")
            .arg(self.dir.path().join("host_ed25519.pub"))
            .output()
            .expect("ssh-keygen -l");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("ssh-keygen -l printed {text:?}"))
            .to_string()
    }

    /// `ssh://USER@127.0.0.1:PORT/<absolute path>` of a repository on this machine.
    pub fn url(&self, repo: &Path) -> String {
        assert!(repo.is_absolute(), "{} is not absolute", repo.display());
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn current_user() -> String {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .expect("id -un (coreutils)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
