//! A real container registry for tests: Debian's `docker-registry` package (the CNCF
//! Distribution registry, `/usr/bin/docker-registry`), started on a free `127.0.0.1` port with
//! a temporary storage directory and a generated config, ready once `GET /v2/` answers.
//! Stopped (killed) on drop, or earlier with [`TestRegistry::stop`].
//!
//! The engine pushes to it over plain HTTP: dockerd treats registries on 127.0.0.0/8 as
//! insecure by default.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rebake::config::RegistryConfig;

/// The registry binary and the Debian package that has it.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub const REGISTRY_PACKAGE: &str = "docker-registry";

/// How long the registry gets to answer `/v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct TestRegistry {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts a registry; panics naming the package when it is not installed, or with the
    /// registry's log when it does not come up.
    pub fn start() -> TestRegistry {
        Self::start_with(None)
    }

    /// A registry that requires the login `user`/`password` (htpasswd, HTTP Basic), for reads
    /// and writes.
    pub fn start_with_login(user: &str, password: &str) -> TestRegistry {
        Self::start_with(Some((user, password)))
    }

    fn start_with(login: Option<(&str, &str)>) -> TestRegistry {
        assert!(
            std::path::Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} not found: apt-get install {REGISTRY_PACKAGE} (needed by this test)"
        );
        let dir = tempfile::tempdir().expect("temp dir for the registry");
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: rebake-test-registry\n",
            storage.display()
        );
        if let Some((user, password)) = login {
            // The registry reads bcrypt hashes only; Apache's htpasswd makes them.
            // (Not support::require_tool: the deploy benchmark includes this file alone.)
            const HTPASSWD: &str = "/usr/bin/htpasswd";
            assert!(
                std::path::Path::new(HTPASSWD).exists(),
                "{HTPASSWD} not found: apt-get install apache2-utils (needed by this test)"
            );
            let out = Command::new(HTPASSWD)
                .args(["-nbB", user, password])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: rebake-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {REGISTRY_BIN}: {e}"));
        let mut registry = TestRegistry {
            port,
            child: Some(child),
            dir,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.get("/v2/") {
                // 401: up, and asking for the login.
                if status == 200 || status == 401 {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(exit)) = child.try_wait() {
                    panic!(
                        "docker-registry exited ({exit}) before answering; its log:\n{}",
                        self.log()
                    );
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "docker-registry did not answer GET /v2/ on 127.0.0.1:{} within {:?}; its log:\n{}",
                    self.port,
                    START_TIMEOUT,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Status of a plain HTTP GET of `path`, None when nothing answers.
    pub fn get(&self, path: &str) -> Option<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )
        .ok()?;
        let mut head = Vec::new();
        stream.read_to_end(&mut head).ok()?;
        let text = String::from_utf8_lossy(&head);
        text.split_whitespace().nth(1)?.parse().ok()
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// rebake's view of this registry: plain HTTP, no namespace.
    pub fn config(&self) -> RegistryConfig {
        RegistryConfig {
            url: self.host(),
            host: self.host(),
            namespace: None,
            insecure: true,
            username: None,
            password_env: None,
        }
    }

    /// The registry's storage directory.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// What the registry logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Stops the registry now (the port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}
