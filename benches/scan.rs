//! `cargo bench --bench scan`: the scan's speed on Debian's real archive.
//!
//! Reads the host's apt sources, re-points them at `REBAKE_BENCH_RELEASE` (default trixie),
//! downloads and verifies main + -updates + -security for amd64, then measures:
//! 1. parsing the uncompressed Packages text (MB/s on one core);
//! 2. scanning 1,000 inventories of ~150 installed packages against the merged index;
//! 3. a second fetch of the unchanged archive (requests made, indices parsed).
//!
//! Not a test: it prints numbers for the README and checks them against the floors.

use rebake::debian::archive::{fetch_release, Fetcher};
use rebake::debian::index::{ReleaseIndex, SuiteIndex, SuiteMeta};
use rebake::debian::release::Release;
use rebake::debian::sources::{read_host, suites_for_release};
use rebake::debian::status::InstalledPackage;
use rebake::debian::{packages, verify};
use rebake::output::Progress;
use rebake::plan::{scan_inventories, scan_inventory, Inventory};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let release = std::env::var("REBAKE_BENCH_RELEASE").unwrap_or_else(|_| "trixie".into());
    let arch = "amd64";
    let state = std::env::temp_dir().join("rebake-bench-state");
    let rt = tokio::runtime::Runtime::new()?;
    let entries = read_host()?;
    let suites = suites_for_release(&entries, &release)?;
    println!("release {release}/{arch}: {} suites", suites.len());

    // Verified download of each suite's Packages text.
    let fetcher = Fetcher::new(&state, Progress::disabled())?;
    let t = Instant::now();
    let mut texts: Vec<(SuiteMeta, Vec<u8>)> = Vec::new();
    for s in &suites {
        let inrelease = rt.block_on(async {
            reqwest::get(format!("{}InRelease", s.dists_url()))
                .await?
                .error_for_status()?
                .bytes()
                .await
        })?;
        let text = verify::verify_clearsigned(&inrelease, &s.signed_by, &s.dists_url())?;
        let rel = Release::parse(&text)?;
        let mut all = Vec::new();
        for c in &s.components {
            let (_, t) = rt.block_on(fetcher.download_packages(&s.dists_url(), &rel, c, arch))?;
            all.extend(t);
            all.push(b'\n');
        }
        let meta = SuiteMeta {
            uri: s.uri.clone(),
            suite: s.suite.clone(),
            label: rel.label.clone(),
            date: rel.date_text.clone(),
            inrelease_sha256: String::new(),
            security: rel.is_security(&s.suite),
            pin: rel.default_pin(),
        };
        texts.push((meta, all));
    }
    println!("download+verify+unxz: {:.2?}", t.elapsed());

    // 1. Parse throughput, one core, best of 5.
    let total_bytes: usize = texts.iter().map(|(_, t)| t.len()).sum();
    let mut best = Duration::MAX;
    let mut parsed: Vec<SuiteIndex> = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out: Vec<SuiteIndex> = texts
            .iter()
            .map(|(m, text)| SuiteIndex {
                meta: m.clone(),
                packages: packages::parse(text).expect("real Packages parses"),
            })
            .collect();
        best = best.min(t.elapsed());
        parsed = out;
    }
    let stanzas: usize = parsed.iter().map(|s| s.packages.len()).sum();
    let mbps = total_bytes as f64 / 1e6 / best.as_secs_f64();
    println!(
        "parse: {:.1} MB, {stanzas} stanzas in {best:.2?} = {mbps:.0} MB/s (floor 300 MB/s)",
        total_bytes as f64 / 1e6
    );

    // 2. Scan 1,000 inventories of ~150 packages each.
    let main: Vec<packages::BinaryPackage> = parsed[0].packages.clone();
    let names_in_updates: std::collections::HashSet<String> = parsed[1..]
        .iter()
        .flat_map(|s| s.packages.iter().map(|p| p.name.clone()))
        .collect();
    let upgradable: Vec<&packages::BinaryPackage> = main
        .iter()
        .filter(|p| names_in_updates.contains(&p.name))
        .collect();
    let index = ReleaseIndex::new(&release, arch, parsed);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize
    };
    let to_installed = |p: &packages::BinaryPackage| InstalledPackage {
        name: p.name.clone(),
        version: p.version.clone(),
        arch: p.arch.clone(),
        source: p.source.clone(),
        source_version: p.source_version.clone(),
    };
    let inventories: Vec<Inventory> = (0..1000)
        .map(|i| {
            // Mostly packages from main, a few with updates: like a real image.
            let mut pkgs: Vec<InstalledPackage> = (0..140)
                .map(|_| to_installed(&main[rnd() % main.len()]))
                .collect();
            for _ in 0..10 {
                if !upgradable.is_empty() {
                    pkgs.push(to_installed(upgradable[rnd() % upgradable.len()]));
                }
            }
            Inventory {
                name: format!("image-{i}"),
                release: release.clone(),
                arch: arch.into(),
                packages: pkgs,
                include_non_security: true,
                note: None,
            }
        })
        .collect();
    let mut best = Duration::MAX;
    let mut findings = 0;
    for _ in 0..5 {
        let t = Instant::now();
        findings = scan_inventories(&index, None, &inventories)
            .iter()
            .map(|s| s.findings.len())
            .sum::<usize>();
        best = best.min(t.elapsed());
    }
    let mut one_core = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let n: usize = inventories
            .iter()
            .map(|inv| scan_inventory(&index, None, inv).findings.len())
            .sum();
        assert_eq!(n, findings);
        one_core = one_core.min(t.elapsed());
    }
    println!(
        "scan: 1000 inventories x 150 packages in {best:.2?} on all cores, {one_core:.2?} on one ({findings} findings; floor 50 ms)"
    );

    // 3. Unchanged archive: first a full fetch to fill the state, then the measured one.
    let f1 = Fetcher::new(&state, Progress::disabled())?;
    rt.block_on(fetch_release(&f1, &release, arch, &suites))?;
    let f2 = Fetcher::new(&state, Progress::disabled())?;
    let t = Instant::now();
    let idx = rt.block_on(fetch_release(&f2, &release, arch, &suites))?;
    let s = &f2.stats;
    println!(
        "unchanged archive: {} requests ({} answered 304 Not Modified), {} indices parsed, {} from cache, {} packages, {:.2?}",
        s.requests.load(Ordering::Relaxed),
        s.not_modified.load(Ordering::Relaxed),
        s.indices_parsed.load(Ordering::Relaxed),
        s.indices_from_cache.load(Ordering::Relaxed),
        idx.package_count(),
        t.elapsed()
    );
    Ok(())
}
