//! The real container engine (the machine's dockerd, through bollard) and a Debian base image
//! built once per test process from the live archive, for every test module that needs an
//! image (build, test, publish).
//!
//! Everything engine-related runs on one long-lived runtime ([`runtime`]): bollard's pooled
//! connections belong to the runtime that opened them.

use rebake::build::{build_base, BaseImage};
use rebake::debian::release::Release;
use rebake::debian::sources::{read_host, suites_for_release, SuiteSource};
use rebake::debian::verify::verify_clearsigned;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

pub const DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The runtime every engine call in the tests runs on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("cannot start a tokio runtime")
    })
}

/// The local dockerd, or a panic saying how to get one.
pub fn docker() -> bollard::Docker {
    runtime()
        .block_on(rebake::engine::connect(DOCKER_HOST))
        .unwrap_or_else(|e| {
            panic!("dockerd not running: {e:#} (apt-get install docker.io; start dockerd)")
        })
}

/// The host's apt sources re-pointed at `release` (the host may run another release).
pub fn release_suites(release: &str) -> Vec<SuiteSource> {
    let host = read_host().expect("the host's apt sources (/etc/apt/sources.list.d/*.sources)");
    suites_for_release(&host, release).expect("suites for the release")
}

/// The verified `Date` of `<release>`'s InRelease, as a unix timestamp: the base's
/// SOURCE_DATE_EPOCH.
pub fn archive_epoch(suites: &[SuiteSource], release: &str) -> i64 {
    let main = suites
        .iter()
        .find(|s| s.suite == release)
        .unwrap_or_else(|| panic!("the sources name no suite {release}"));
    let url = format!("{}InRelease", main.dists_url());
    let body = runtime().block_on(async {
        let resp = reqwest::get(&url).await.unwrap_or_else(|e| {
            panic!("cannot fetch {url}: {e} (the Debian mirror must be reachable)")
        });
        assert!(resp.status().is_success(), "{url}: HTTP {}", resp.status());
        resp.bytes().await.expect("InRelease body").to_vec()
    });
    let text = verify_clearsigned(&body, &main.signed_by, &url).expect("verified InRelease");
    Release::parse(&text).expect("Release").date.timestamp()
}

/// A base image for `release`/amd64, built once per test process (fresh, from the live
/// mirror), with its work directory kept for the process so later calls hit the cache.
pub fn shared_base(release: &str) -> BaseImage {
    shared_base_with_dir(release).0
}

/// [`shared_base`] and the work directory it was built in (and the epoch it used).
pub fn shared_base_with_dir(release: &str) -> (BaseImage, PathBuf, i64) {
    type Built = (BaseImage, PathBuf, i64);
    static BASES: OnceLock<Mutex<HashMap<String, Built>>> = OnceLock::new();
    let mut map = BASES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(b) = map.get(release) {
        return b.clone();
    }
    super::require_tool("mmdebstrap", "mmdebstrap");
    let suites = release_suites(release);
    let epoch = archive_epoch(&suites, release);
    // Under a private (0700) directory, like root's home or what `mktemp -d` makes: apt's
    // sandbox user `_apt` cannot read files there, and the base must build all the same.
    let private = tempfile::Builder::new()
        .prefix("rebake-private-")
        .tempdir()
        .expect("temp dir")
        .keep();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = private.join("bases");
    let docker = docker();
    let started = std::time::Instant::now();
    let base = runtime()
        .block_on(build_base(&docker, &suites, release, "amd64", epoch, &dir))
        .unwrap_or_else(|e| panic!("building the {release} base failed: {e:#}"));
    eprintln!(
        "shared base {release}/amd64 built in {:.1}s: rootfs {} id {}",
        started.elapsed().as_secs_f64(),
        base.rootfs_sha256,
        base.id
    );
    map.insert(release.to_string(), (base, dir, epoch));
    map[release].clone()
}
