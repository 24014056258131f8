//! rebake's Debian answers must be dpkg's: version order checked against
//! `dpkg --compare-versions` on real versions from the host's Packages files.

use rebake::debian::{packages, version};
use std::cmp::Ordering;
use std::process::Command;

/// Every version in the host's apt lists (real Packages files), via apt itself so that any
/// compression apt chose (lz4, xz, none) is undone the same way.
fn host_versions() -> Vec<(String, String)> {
    let list = Command::new("apt-get")
        .args([
            "indextargets",
            "--format",
            "$(FILENAME)",
            "Created-By: Packages",
        ])
        .output()
        .expect("apt-get not found: this test needs Debian's apt (apt-get install apt)");
    let files: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .filter(|f| std::path::Path::new(f).exists())
        .collect();
    assert!(
        !files.is_empty(),
        "no Packages lists on this host: run `apt-get update` first"
    );
    let mut out = Vec::new();
    for f in files {
        let cat = Command::new("/usr/lib/apt/apt-helper")
            .args(["cat-file", &f])
            .output()
            .expect("apt-helper cat-file failed");
        assert!(cat.status.success(), "apt-helper cat-file {f} failed");
        for p in packages::parse(&cat.stdout).expect("host Packages must parse") {
            out.push((p.name, p.version));
        }
    }
    out
}

/// A small deterministic generator, so a failure can be reproduced.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn dpkg_agrees(pairs: &[(String, String)]) -> Vec<String> {
    let op = |o: Ordering| match o {
        Ordering::Less => "lt",
        Ordering::Equal => "eq",
        Ordering::Greater => "gt",
    };
    let chunks: Vec<&[(String, String)]> = pairs.chunks(pairs.len().div_ceil(4).max(1)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    let mut bad = Vec::new();
                    for (a, b) in chunk {
                        let ours = op(version::compare(a, b));
                        let st = Command::new("dpkg")
                            .args(["--compare-versions", a, ours, b])
                            .status()
                            .expect("dpkg not found (apt-get install dpkg)");
                        if !st.success() {
                            bad.push(format!("rebake says {a} {ours} {b}; dpkg disagrees"));
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

#[test]
fn version_order_agrees_with_dpkg_on_real_versions() {
    let pkgs = host_versions();
    let mut versions: Vec<String> = pkgs.iter().map(|(_, v)| v.clone()).collect();
    versions.sort();
    versions.dedup();
    assert!(
        versions.len() > 10_000,
        "expected a real archive's worth of versions"
    );
    // Sorted by rebake's order, neighbours are the closest calls: the hardest test.
    let mut sorted = versions.clone();
    sorted.sort_by(|a, b| version::compare(a, b));
    let mut pairs: Vec<(String, String)> = Vec::new();
    let step = (sorted.len() / 12_000).max(1);
    for i in (0..sorted.len() - 1).step_by(step) {
        pairs.push((sorted[i].clone(), sorted[i + 1].clone()));
    }
    // Versions of the same package across suites (real upgrade pairs).
    let mut by_name: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for (n, v) in &pkgs {
        by_name.entry(n.as_str()).or_default().push(v.as_str());
    }
    for vs in by_name.values().filter(|v| v.len() > 1) {
        pairs.push((vs[0].to_string(), vs[vs.len() - 1].to_string()));
    }
    // And random pairs, both directions.
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    for _ in 0..6_000 {
        let a = &versions[(rng.next() % versions.len() as u64) as usize];
        let b = &versions[(rng.next() % versions.len() as u64) as usize];
        pairs.push((a.clone(), b.clone()));
    }
    // The cases the design notes call out, and edge cases dpkg documents.
    for (a, b) in [
        ("0.9+ds-4", "0.9+ds0-3"),
        ("1.0~rc1-1", "1.0-1"),
        ("1:1.0-1", "2.0-1"),
        ("2.36-9+deb12u4", "2.36-9+deb12u10"),
        ("1.2.3-1+b1", "1.2.3-1"),
        ("1.0-1~bpo12+1", "1.0-1"),
        ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12"),
        ("1.0a", "1.0+"),
        ("1.0~~a", "1.0~"),
    ] {
        pairs.push((a.to_string(), b.to_string()));
        pairs.push((b.to_string(), a.to_string()));
    }
    assert!(pairs.len() >= 20_000, "only {} pairs", pairs.len());
    let bad = dpkg_agrees(&pairs);
    assert!(
        bad.is_empty(),
        "{} of {} pairs disagree with dpkg, e.g.:\n{}",
        bad.len(),
        pairs.len(),
        bad[..bad.len().min(20)].join("\n")
    );
}

#[test]
fn dpkg_status_of_this_host_parses_like_dpkg_query() {
    let text = std::fs::read_to_string("/var/lib/dpkg/status")
        .expect("no /var/lib/dpkg/status: this test needs a Debian host");
    let ours = rebake::debian::status::parse(&text).expect("host status must parse");
    let out = Command::new("dpkg-query")
        .args([
            "-W",
            "-f",
            "${db:Status-Status} ${Package} ${Architecture} ${Version} ${source:Package} ${source:Version}\n",
        ])
        .output()
        .expect("dpkg-query not found");
    let mut theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("installed "))
        .map(str::to_string)
        .collect();
    theirs.sort();
    let mut mine: Vec<String> = ours
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} {}",
                p.name, p.arch, p.version, p.source, p.source_version
            )
        })
        .collect();
    mine.sort();
    assert_eq!(mine, theirs);
}

/// Every `changelog.Debian.gz` this host's packages ship, parsed by rebake and by
/// `dpkg-parsechangelog --all`: the same entries (package, version, distribution, urgency) in
/// the same order.
#[test]
fn changelog_entries_agree_with_dpkg_parsechangelog() {
    use std::io::Read;
    crate::support::require_tool("dpkg-parsechangelog", "dpkg-dev");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/share/doc")
        .expect("/usr/share/doc")
        .filter_map(|e| {
            let p = e.ok()?.path().join("changelog.Debian.gz");
            (p.is_file() && !p.is_symlink()).then_some(p)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 50,
        "only {} changelogs on this host",
        files.len()
    );
    // dpkg-parsechangelog (perl) takes ~0.1 s a file: a spread of about 120 of them.
    let step = files.len().div_ceil(120);
    let files: Vec<_> = files.into_iter().step_by(step).collect();
    let scratch = tempfile::tempdir().unwrap();
    let (mut compared, mut entries, mut with_cves) = (0, 0, 0);
    for file in &files {
        let mut text = String::new();
        let bytes = std::fs::read(file).unwrap();
        if flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .is_err()
        {
            continue; // not UTF-8: dpkg would not read it either
        }
        let plain = scratch.path().join("changelog");
        std::fs::write(&plain, &text).unwrap();
        let out = Command::new("dpkg-parsechangelog")
            .args(["--all", "--format", "rfc822", "-l"])
            .arg(&plain)
            .output()
            .unwrap();
        let theirs: Vec<(String, String, String, String)> = String::from_utf8_lossy(&out.stdout)
            .split("\n\n")
            .filter(|s| s.contains("Version:"))
            .map(|stanza| {
                let field = |name: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                        .unwrap_or("")
                        .to_string()
                };
                (
                    field("Source"),
                    field("Version"),
                    field("Distribution"),
                    field("Urgency").to_lowercase(),
                )
            })
            .collect();
        let ours: Vec<(String, String, String, String)> = rebake::debian::changelog::parse(&text)
            .into_iter()
            .map(|e| {
                with_cves += usize::from(!e.cves.is_empty());
                (
                    e.package,
                    e.version,
                    e.distributions.join(" "),
                    e.urgency.unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(ours, theirs, "{}", file.display());
        compared += 1;
        entries += ours.len();
    }
    eprintln!(
        "{compared} changelogs, {entries} entries agree with dpkg-parsechangelog; \
         {with_cves} entries name CVEs"
    );
    assert!(compared >= 50);
}
