//! Tiny container images for engine tests, made in a few milliseconds without a registry or
//! mmdebstrap: Debian's statically linked `/bin/busybox` (package `busybox-static`) plus
//! symlinks for the applets the tests use, `/etc/passwd` and `/etc/group`, a web page in
//! `/www`, and a few files with known modes and owners — written by hand in `docker save`
//! format (`manifest.json`, the config JSON, one layer tar) and loaded through bollard's
//! `import_image` (`POST /images/load`).
//!
//! Contents of every tiny image:
//! - `/bin/busybox` and symlinks `/bin/{sh,cat,echo,httpd,id,ls,sleep,stat,true,false,wget}`
//! - `/etc/passwd`: `root` (0), `app` (1000), `nobody` (65534); `/etc/group`: `root`, `app`,
//!   `nogroup`
//! - `/www/index.html` (0644, root:root) containing [`INDEX_TEXT`]
//! - `/data/secret` (0600, app:app)
//!
//! The same arguments always give the same bytes, hence the same image id; each combination is
//! loaded once per test process.

use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;

use bollard::query_parameters::ImportImageOptions;
use bollard::Docker;
use futures_util::StreamExt;

/// Text served by the httpd image's `/index.html`.
pub const INDEX_TEXT: &str = "hello from the rebake tiny image";
/// Where the tiny images come from.
pub const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "httpd", "id", "ls", "sleep", "stat", "true", "false", "wget",
];

static LOADED: LazyLock<tokio::sync::Mutex<HashMap<String, String>>> =
    LazyLock::new(Default::default);

/// What makes one tiny image.
#[derive(Debug, Clone, Default)]
pub struct TinySpec<'a> {
    /// Repository name the image is tagged with (`rebake-test/<name>:latest`).
    pub name: &'a str,
    /// `Cmd`; empty for none.
    pub cmd: &'a [&'a str],
    /// `User`; None for none (root).
    pub user: Option<&'a str>,
    /// `ExposedPorts` (tcp).
    pub exposed_ports: &'a [u16],
}

/// The id of a tiny image with this command and user (loaded once per process).
pub async fn tiny_image(docker: &Docker, name: &str, cmd: &[&str], user: Option<&str>) -> String {
    load(
        docker,
        &TinySpec {
            name,
            cmd,
            user,
            exposed_ports: &[],
        },
    )
    .await
}

/// A tiny image whose command is `busybox httpd -f -vv -p 80 -h /www`, port 80 exposed.
pub async fn tiny_httpd_image(docker: &Docker) -> String {
    load(
        docker,
        &TinySpec {
            name: "httpd",
            cmd: &["/bin/httpd", "-f", "-vv", "-p", "80", "-h", "/www"],
            user: None,
            exposed_ports: &[80],
        },
    )
    .await
}

/// Loads the image `spec` describes into the engine (once per process); its id.
pub async fn load(docker: &Docker, spec: &TinySpec<'_>) -> String {
    let archive = save_archive(spec);
    let key = super::sha256_hex(&archive);
    let mut loaded = LOADED.lock().await;
    if let Some(id) = loaded.get(&key) {
        return id.clone();
    }
    let mut stream = docker.import_image(
        ImportImageOptions {
            quiet: true,
            ..Default::default()
        },
        bollard::body_full(archive.into()),
        None,
    );
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            panic!("loading tiny image {}: {e}", spec.name);
        }
    }
    let id = format!("sha256:{}", super::sha256_hex(&config_json(spec)));
    docker.inspect_image(&id).await.unwrap_or_else(|e| {
        panic!(
            "tiny image {} ({id}) not in the engine after load: {e}",
            spec.name
        )
    });
    loaded.insert(key, id.clone());
    id
}

/// The busybox binary, or a panic naming the package.
fn busybox() -> Vec<u8> {
    let path = Path::new(BUSYBOX);
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{BUSYBOX}: {e}: apt-get install busybox-static (the tiny test images are made from it)"
        )
    });
    // The dynamically linked `busybox` package would not run in an image without libc.
    assert!(
        !has_interpreter(&bytes),
        "{BUSYBOX} is dynamically linked: apt-get install busybox-static (the tiny test images need the static build)"
    );
    bytes
}

/// Whether a 64-bit little-endian ELF file names a program interpreter (`PT_INTERP`), i.e. is
/// dynamically linked. Other formats: false (not checked).
fn has_interpreter(elf: &[u8]) -> bool {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        elf.get(o..o + 4) == Some(&3u32.to_le_bytes()[..])
    })
}

/// The image's one layer.
pub fn layer_tar() -> Vec<u8> {
    static LAYER: LazyLock<Vec<u8>> = LazyLock::new(build_layer);
    LAYER.clone()
}

fn build_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut h = header(tar::EntryType::Directory, mode, 0, 0, 0);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, id: u64, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, mode, id, id, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    for (path, mode) in [
        ("bin", 0o755),
        ("data", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("www", 0o755),
    ] {
        dir(&mut b, path, mode);
    }
    file(&mut b, "bin/busybox", 0o755, 0, &busybox());
    for applet in APPLETS {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    let passwd = "root:x:0:0:root:/root:/bin/sh\n\
                  app:x:1000:1000:app:/data:/bin/sh\n\
                  nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    let group = "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n";
    file(&mut b, "etc/passwd", 0o644, 0, passwd.as_bytes());
    file(&mut b, "etc/group", 0o644, 0, group.as_bytes());
    let page = format!("<html><body>{INDEX_TEXT}</body></html>\n");
    file(&mut b, "www/index.html", 0o644, 0, page.as_bytes());
    file(&mut b, "data/secret", 0o600, 1000, b"secret\n");
    b.into_inner().unwrap()
}

fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(0);
    h
}

fn engine_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        other => panic!("no Docker architecture name for {other}"),
    }
}

/// The image config JSON (its SHA-256 is the image id).
pub fn config_json(spec: &TinySpec<'_>) -> Vec<u8> {
    let layer_digest = format!("sha256:{}", super::sha256_hex(&layer_tar()));
    let mut config = serde_json::json!({
        "Env": ["PATH=/bin"],
        "WorkingDir": "/",
    });
    if !spec.cmd.is_empty() {
        config["Cmd"] = serde_json::json!(spec.cmd);
    }
    if let Some(user) = spec.user {
        config["User"] = serde_json::json!(user);
    }
    if !spec.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, serde_json::Value> = spec
            .exposed_ports
            .iter()
            .map(|p| (format!("{p}/tcp"), serde_json::json!({})))
            .collect();
        config["ExposedPorts"] = serde_json::Value::Object(ports);
    }
    let doc = serde_json::json!({
        "architecture": engine_arch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "rebake tests: tiny image"}],
    });
    serde_json::to_vec(&doc).unwrap()
}

/// The whole `docker save` archive.
pub fn save_archive(spec: &TinySpec<'_>) -> Vec<u8> {
    let layer = layer_tar();
    let config = config_json(spec);
    let layer_dir = super::sha256_hex(&layer);
    let config_name = format!("{}.json", super::sha256_hex(&config));
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [format!("rebake-test/{}:latest", spec.name)],
        "Layers": [format!("{layer_dir}/layer.tar")],
    }]);
    let manifest = serde_json::to_vec(&manifest).unwrap();

    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: String, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    add(format!("{layer_dir}/layer.tar"), &layer);
    add(config_name, &config);
    add("manifest.json".to_string(), &manifest);
    b.into_inner().unwrap()
}
