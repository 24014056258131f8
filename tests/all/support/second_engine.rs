//! A second Docker engine on this machine, for the tests and the benchmark of building on
//! more than one engine (`engine.builders`).

/// A second Docker engine on this machine (its own socket, data root, exec root, containerd
/// namespace and bridge, no NAT), as a build farm's second machine. Stopped on drop.
pub struct SecondEngine {
    pub host: String,
    bridge: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl SecondEngine {
    /// Starts `dockerd`; panics naming the package when it is missing, or with its log when it
    /// does not answer within 30 s.
    pub fn start() -> SecondEngine {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        // An empty config file: the machine's /etc/docker/daemon.json names its data root.
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        let namespace = format!("rebake-test-{}", std::process::id());
        // Its own bridge: `--bridge=none` would make dockerd delete the machine's docker0.
        let bridge = format!("rbk{}", std::process::id() % 100_000);
        let ip = |args: &[&str]| {
            let ok = std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?} (apt-get install iproute2; run as root)");
        };
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &bridge])
            .output();
        ip(&["link", "add", "name", &bridge, "type", "bridge"]);
        ip(&["addr", "add", "10.213.77.1/24", "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let mut child = std::process::Command::new("dockerd")
            .arg("--config-file")
            .arg(dir.path().join("daemon.json"))
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["--bridge", &bridge, "--iptables=false", "--ip6tables=false"])
            .args(["--containerd-namespace", &namespace])
            .args([
                "--containerd-plugins-namespace",
                &format!("{namespace}-plugins"),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd (apt-get install docker.io) starts the tests' second engine");
        let host = format!("unix://{}", socket.display());
        for _ in 0..60 {
            let up = std::process::Command::new("docker")
                .args(["-H", &host, "info"])
                .output()
                .is_ok_and(|o| o.status.success());
            if up {
                return SecondEngine {
                    host,
                    bridge,
                    child,
                    _dir: dir,
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the second dockerd did not answer on {host}:\n{}",
            std::fs::read_to_string(dir.path().join("dockerd.log")).unwrap_or_default()
        );
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its containers and leave containerd clean.
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let mut stopped = false;
        for _ in 0..40 {
            if self.child.try_wait().ok().flatten().is_some() {
                stopped = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .output();
    }
}
