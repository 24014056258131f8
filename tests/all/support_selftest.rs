//! The test infrastructure checked against the real tools: the generated archive verifies with
//! `gpgv`, its hashes and compressed files agree with `sha256sum`/`md5sum`/`xz`/`gzip`, apt
//! accepts it (and refuses the tampered variants), and the file server speaks HTTP correctly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::apt::AptSandbox;
use crate::support::archive::{dpkg_status, Pkg, StatusEntry, TestArchive};
use crate::support::http::TestServer;
use crate::support::{md5_hex, require_tool, sha256_hex};

fn sample_archive() -> TestArchive {
    let mut a = TestArchive::new();
    a.add(
        "debian",
        "trixie",
        Pkg::new("libssl3t64", "3.5.1-1", "amd64").source("openssl"),
    );
    a.add(
        "debian",
        "trixie",
        Pkg::new("openssl", "3.5.1-1", "amd64").field("Depends", "libssl3t64 (>= 3.5.1)"),
    );
    a.add(
        "debian",
        "trixie",
        Pkg::new("tzdata", "2025b-4", "all").section("localization"),
    );
    a.add(
        "debian",
        "trixie",
        Pkg::new("libc6", "2.41-12", "amd64").source("glibc"),
    );
    a.add(
        "debian",
        "trixie-updates",
        Pkg::new("tzdata", "2025b-4+deb13u1", "all"),
    );
    a.add(
        "debian-security",
        "trixie-security",
        Pkg::new("libssl3t64", "3.5.1-1+deb13u1", "amd64").source("openssl"),
    );
    a.add(
        "debian-security",
        "trixie-security",
        Pkg::new("openssl", "3.5.1-1+deb13u1", "amd64"),
    );
    a.add(
        "debian-security",
        "trixie-security",
        Pkg::new("libc6", "2.41-12+deb13u1", "amd64").source("glibc (2.41-12+deb13u1)"),
    );
    a.publish();
    a
}

fn gpgv(keyring: &Path, args: &[&Path]) -> (bool, String) {
    let gpgv = require_tool("gpgv", "gpgv");
    let out = Command::new(gpgv)
        .arg("--status-fd")
        .arg("1")
        .arg("--keyring")
        .arg(keyring)
        .args(args)
        .output()
        .expect("run gpgv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `(hash, size, path)` lines of one hash section of a Release file.
fn release_section(release: &str, section: &str) -> Vec<(String, u64, String)> {
    let mut lines = release.lines().skip_while(|l| *l != format!("{section}:"));
    lines.next();
    lines
        .take_while(|l| l.starts_with(' '))
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(parts.len(), 3, "bad Release line {l:?}");
            (
                parts[0].to_string(),
                parts[1].parse().unwrap(),
                parts[2].to_string(),
            )
        })
        .collect()
}

fn tool_stdout(tool: &str, package: &str, args: &[&str], file: &Path) -> Vec<u8> {
    let out = Command::new(require_tool(tool, package))
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{tool} {}: {:?}", file.display(), out);
    out.stdout
}

#[test]
fn md5_matches_known_vectors() {
    assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(
        md5_hex(
            b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
        ),
        "57edf4a22be3c955ac49da2e2107b67a"
    );
}

#[test]
fn archive_is_signed_and_verifies_with_gpgv() {
    let a = sample_archive();
    for (root, suite) in [
        ("debian", "trixie"),
        ("debian", "trixie-updates"),
        ("debian-security", "trixie-security"),
    ] {
        let dists = a.dists(root, suite);
        let (ok, out) = gpgv(&a.keyring(), &[&dists.join("InRelease")]);
        assert!(ok, "gpgv InRelease of {root}/{suite}: {out}");
        assert!(out.contains("[GNUPG:] VALIDSIG"), "{out}");
        assert!(
            out.contains(a.signing_subkey_fingerprint()),
            "signed by the subkey: {out}"
        );
        assert!(
            out.contains(a.key_fingerprint()),
            "primary in VALIDSIG: {out}"
        );
        let (ok, out) = gpgv(
            &a.keyring(),
            &[&dists.join("Release.gpg"), &dists.join("Release")],
        );
        assert!(ok, "gpgv Release.gpg of {root}/{suite}: {out}");
        // The signed text of InRelease is exactly Release.
        let inrelease = std::fs::read_to_string(dists.join("InRelease")).unwrap();
        let release = std::fs::read_to_string(dists.join("Release")).unwrap();
        assert!(inrelease.starts_with("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"));
        assert!(
            inrelease.contains(&release),
            "InRelease embeds Release verbatim"
        );
        // Not by the other key.
        let (ok, out) = gpgv(&a.other_key_keyring(), &[&dists.join("InRelease")]);
        assert!(!ok, "InRelease must not verify with the other key: {out}");
    }
    let asc = std::fs::read_to_string(a.keyring_asc()).unwrap();
    assert!(asc.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    let bin = std::fs::read(a.keyring()).unwrap();
    assert!(bin[0] & 0x80 != 0, "keyring.gpg is binary OpenPGP");
}

#[test]
fn release_lists_correct_hashes_and_by_hash_copies() {
    let a = sample_archive();
    let dists = a.dists("debian-security", "trixie-security");
    let release = std::fs::read_to_string(dists.join("Release")).unwrap();
    for field in [
        "Origin: Debian\n",
        "Label: Debian-Security\n",
        "Suite: stable-security\n",
        "Codename: trixie-security\n",
        "Acquire-By-Hash: yes\n",
        "Architectures: amd64\n",
        "Components: main\n",
        "\nDate: ",
        "\nValid-Until: ",
    ] {
        assert!(
            release.contains(field),
            "Release lacks {field:?}:\n{release}"
        );
    }
    let sha = release_section(&release, "SHA256");
    let md5 = release_section(&release, "MD5Sum");
    assert_eq!(sha.len(), 3, "{release}");
    assert_eq!(md5.len(), 3, "{release}");
    for ((hash, size, path), (md5sum, md5size, md5path)) in sha.iter().zip(&md5) {
        assert_eq!((size, path), (md5size, md5path));
        let file = dists.join(path);
        let data = std::fs::read(&file).unwrap();
        assert_eq!(data.len() as u64, *size, "{path}");
        let sha256sum = tool_stdout("sha256sum", "coreutils", &[], &file);
        assert_eq!(&String::from_utf8_lossy(&sha256sum)[..64], hash, "{path}");
        let md5sum_out = tool_stdout("md5sum", "coreutils", &[], &file);
        assert_eq!(
            &String::from_utf8_lossy(&md5sum_out)[..32],
            md5sum,
            "{path}"
        );
        assert_eq!(md5_hex(&data), *md5sum);
        let by_hash = file.parent().unwrap().join("by-hash/SHA256").join(hash);
        assert_eq!(
            std::fs::read(by_hash).unwrap(),
            data,
            "by-hash copy of {path}"
        );
    }
    // The compressed files decompress, with the real tools, to Packages.
    let bin = dists.join("main/binary-amd64");
    let packages = std::fs::read(bin.join("Packages")).unwrap();
    assert_eq!(
        tool_stdout("xz", "xz-utils", &["-dc"], &bin.join("Packages.xz")),
        packages
    );
    assert_eq!(
        tool_stdout("gzip", "gzip", &["-dc"], &bin.join("Packages.gz")),
        packages
    );
    let text = String::from_utf8(packages).unwrap();
    assert!(
        text.contains(
            "Package: libc6\nSource: glibc (2.41-12+deb13u1)\nVersion: 2.41-12+deb13u1\n"
        ),
        "{text}"
    );
    assert!(text.contains("Filename: pool/main/g/glibc/libc6_2.41-12+deb13u1_amd64.deb\n"));
    assert!(text.ends_with("\n\n"));
}

#[test]
fn negative_fixtures_fail_verification() {
    let a = sample_archive();
    let dists = a.dists("debian", "trixie");
    let inrelease = dists.join("InRelease");

    a.tamper_inrelease("debian", "trixie");
    let (ok, out) = gpgv(&a.keyring(), &[&inrelease]);
    assert!(!ok && out.contains("BADSIG"), "tampered InRelease: {out}");

    a.sign_with_other_key("debian", "trixie");
    let (ok, out) = gpgv(&a.keyring(), &[&inrelease]);
    assert!(!ok && out.contains("NO_PUBKEY"), "other key: {out}");
    let (ok, out) = gpgv(&a.other_key_keyring(), &[&inrelease]);
    assert!(ok, "other key verifies with its own keyring: {out}");

    a.sign_with_both_keys("debian", "trixie");
    // gpgv exits non-zero when any signature cannot be checked, yet reports the good one:
    // like apt, a verifier must decide on the status lines (VALIDSIG by a keyring key, no
    // BADSIG), not on gpgv's exit code.
    let (ok, out) = gpgv(&a.keyring(), &[&inrelease]);
    assert!(
        !ok && out.contains("[GNUPG:] VALIDSIG")
            && out.contains("[GNUPG:] NO_PUBKEY")
            && !out.contains("BADSIG"),
        "two signatures, one known: {out}"
    );

    a.publish();
    let release = std::fs::read_to_string(dists.join("Release")).unwrap();
    let sha = release_section(&release, "SHA256");
    a.corrupt_packages("debian", "trixie");
    for (hash, _, path) in &sha {
        let file = dists.join(path);
        assert_ne!(&sha256_hex(&std::fs::read(&file).unwrap()), hash, "{path}");
        let by_hash = file.parent().unwrap().join("by-hash/SHA256").join(hash);
        assert_ne!(
            &sha256_hex(&std::fs::read(by_hash).unwrap()),
            hash,
            "{path}"
        );
    }
    let xz = tool_stdout(
        "xz",
        "xz-utils",
        &["-dc"],
        &dists.join("main/binary-amd64/Packages.xz"),
    );
    assert!(String::from_utf8_lossy(&xz).contains("Package: rebake-corrupted\n"));
    // Release itself is still validly signed.
    let (ok, out) = gpgv(&a.keyring(), &[&inrelease]);
    assert!(ok, "{out}");
}

fn status_sample() -> String {
    dpkg_status(&[
        StatusEntry::new("libssl3t64", "3.5.1-1", "amd64").source("openssl"),
        StatusEntry::new("libc6", "2.41-12", "amd64").source("glibc"),
        StatusEntry::new("openssl", "3.5.0-2", "amd64").config_files(),
    ])
}

#[test]
fn dpkg_status_is_read_by_dpkg_query() {
    let tool = require_tool("dpkg-query", "dpkg");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("info")).unwrap();
    std::fs::create_dir(dir.path().join("updates")).unwrap();
    std::fs::write(dir.path().join("status"), status_sample()).unwrap();
    let out = Command::new(tool)
        .arg("--admindir")
        .arg(dir.path())
        .args([
            "-W",
            "-f",
            "${db:Status-Abbrev}|${Package}|${Version}|${source:Package}|${source:Version}\n",
        ])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ii |libc6|2.41-12|glibc|2.41-12\n\
         ii |libssl3t64|3.5.1-1|openssl|3.5.1-1\n\
         rc |openssl|3.5.0-2|openssl|3.5.0-2\n"
    );
    // Tuple form, as the scan tests write it.
    let tuples = dpkg_status(&[
        (
            "zlib1g",
            "1:1.3.dfsg+really1.3.1-1+b1",
            "amd64",
            Some("zlib (1:1.3.dfsg+really1.3.1-1)"),
        ),
        ("base-files", "13.8", "amd64", None),
    ]);
    assert!(tuples.starts_with("Package: base-files\nStatus: install ok installed\n"));
    assert!(tuples.contains(
        "Source: zlib (1:1.3.dfsg+really1.3.1-1)\nVersion: 1:1.3.dfsg+really1.3.1-1+b1\n"
    ));
}

#[test]
fn apt_accepts_the_archive_and_chooses_candidates() {
    let mut a = sample_archive();
    let server = TestServer::start(a.dir());
    let sources = a.write_sources(&server.url());
    let apt = AptSandbox::new(&sources, &status_sample());

    // apt fetched by hash, as Acquire-By-Hash asks.
    assert!(
        server.count("/by-hash/SHA256/") >= 3,
        "{:#?}",
        server.requests()
    );
    assert_eq!(server.count_status("/", 404), 0, "{:#?}", server.requests());

    assert_eq!(
        apt.candidate("libssl3t64").as_deref(),
        Some("3.5.1-1+deb13u1")
    );
    assert_eq!(apt.installed("libssl3t64").as_deref(), Some("3.5.1-1"));
    assert_eq!(apt.candidate("tzdata").as_deref(), Some("2025b-4+deb13u1"));
    assert_eq!(
        apt.installed("openssl"),
        None,
        "config-files is not installed"
    );
    assert_eq!(apt.candidate("openssl").as_deref(), Some("3.5.1-1+deb13u1"));
    assert_eq!(apt.candidate("no-such-package"), None);
    let all = apt.candidates(&["libssl3t64", "tzdata", "no-such-package", "libc6"]);
    assert_eq!(all["libssl3t64"].as_deref(), Some("3.5.1-1+deb13u1"));
    assert_eq!(all["tzdata"].as_deref(), Some("2025b-4+deb13u1"));
    assert_eq!(all["libc6"].as_deref(), Some("2.41-12+deb13u1"));
    assert_eq!(all["no-such-package"], None);

    // The archive changes between scans: a newer security fix appears.
    a.add(
        "debian-security",
        "trixie-security",
        Pkg::new("libssl3t64", "3.5.1-1+deb13u2", "amd64").source("openssl"),
    );
    a.publish();
    server.clear_log();
    apt.update_ok();
    assert_eq!(
        apt.candidate("libssl3t64").as_deref(),
        Some("3.5.1-1+deb13u2")
    );
    // Unchanged indices were not downloaded again: InRelease answered by a 304, or apt did not
    // ask again for the files it already has.
    assert!(
        server.count_status("trixie-updates/InRelease", 304) == 1,
        "{:#?}",
        server.requests()
    );

    // Expired suite: apt refuses it.
    a.expire("debian-security", "trixie-security");
    a.publish();
    let run = apt.update();
    assert!(
        run.output().contains("is expired"),
        "apt should refuse an expired Valid-Until:\n{}",
        run.output()
    );
}

#[test]
fn apt_refuses_tampered_and_foreign_signed_archives() {
    let a = sample_archive();
    let server = TestServer::start(a.dir());
    let sources = a.write_sources(&server.url());

    a.tamper_inrelease("debian-security", "trixie-security");
    let apt = AptSandbox::prepare(&sources, "");
    let run = apt.update();
    assert!(
        run.output().contains("BADSIG") || run.output().contains("signatures were invalid"),
        "{}",
        run.output()
    );
    assert!(apt.candidate("libssl3t64").as_deref() != Some("3.5.1-1+deb13u1"));

    a.publish();
    a.sign_with_other_key("debian-security", "trixie-security");
    let apt = AptSandbox::prepare(&sources, "");
    let run = apt.update();
    assert!(run.output().contains("NO_PUBKEY"), "{}", run.output());

    a.publish();
    a.corrupt_packages("debian-security", "trixie-security");
    let apt = AptSandbox::prepare(&sources, "");
    let run = apt.update();
    assert!(
        run.output().contains("Hash Sum mismatch")
            || run.output().contains("File has unexpected size"),
        "{}",
        run.output()
    );
    assert_eq!(apt.candidate("rebake-corrupted"), None);

    // Two signatures, one by a key apt does not have: accepted, as for Debian's archive.
    a.publish();
    a.sign_with_both_keys("debian-security", "trixie-security");
    let apt = AptSandbox::new(&sources, "");
    assert_eq!(
        apt.candidate("libssl3t64").as_deref(),
        Some("3.5.1-1+deb13u1")
    );
}

fn raw_http(server: &TestServer, request: &str) -> String {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

#[test]
fn server_serves_files_with_validators_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::write(dir.path().join("a/b/file.txt"), "hello\n").unwrap();
    let server = TestServer::start(dir.path());
    assert!(server.url().starts_with("http://127.0.0.1:"));

    let r = raw_http(
        &server,
        "GET /a/b/file.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\nhello\n"), "{r}");
    assert_eq!(header(&r, "Content-Length"), Some("6"));
    let etag = header(&r, "ETag").unwrap().to_string();
    let lm = header(&r, "Last-Modified").unwrap().to_string();
    assert!(lm.ends_with(" GMT"), "{lm}");

    let r = raw_http(
        &server,
        &format!("GET /a/b/file.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 304 "), "{r}");
    assert!(r.ends_with("\r\n\r\n"), "no body: {r}");
    let r = raw_http(
        &server,
        &format!("GET /a/b/file.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: {lm}\r\nConnection: close\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 304 "), "{r}");

    // Changed within the same second: new ETag, later Last-Modified, full answer.
    std::fs::write(dir.path().join("a/b/file.txt"), "world!\n").unwrap();
    let r = raw_http(
        &server,
        &format!("GET /a/b/file.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: {lm}\r\nConnection: close\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    assert!(r.ends_with("world!\n"));
    assert_ne!(header(&r, "ETag").unwrap(), etag);

    let r = raw_http(
        &server,
        "HEAD /a/b/file.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        r.starts_with("HTTP/1.1 200 ") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    assert_eq!(header(&r, "Content-Length"), Some("7"));
    for path in [
        "/missing",
        "/a/b",
        "/a/../a/b/file.txt",
        "/%2e%2e/etc/passwd",
    ] {
        let r = raw_http(
            &server,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert!(r.starts_with("HTTP/1.1 404 "), "{path}: {r}");
    }

    server.fail_next("file.txt", 503);
    let r = raw_http(
        &server,
        "GET /a/b/file.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
    let r = raw_http(
        &server,
        "GET /a/b/file.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200 "), "only once: {r}");

    // Two pipelined requests on one keep-alive connection.
    let r = raw_http(
        &server,
        "GET /a/b/file.txt HTTP/1.1\r\nHost: x\r\n\r\nHEAD /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.matches("HTTP/1.1 ").count(), 2, "{r}");
    assert!(
        r.contains("Connection: keep-alive") && r.contains("HTTP/1.1 404 "),
        "{r}"
    );

    let log = server.requests();
    let statuses: Vec<(String, String, u16)> = log
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.status))
        .collect();
    assert_eq!(statuses[0], ("GET".into(), "/a/b/file.txt".into(), 200));
    assert_eq!(statuses[1], ("GET".into(), "/a/b/file.txt".into(), 304));
    assert_eq!(log[1].header("if-none-match"), Some(etag.as_str()));
    assert!(log[1].is_conditional());
    assert_eq!(server.count("file.txt"), 9);
    assert_eq!(server.count_status("file.txt", 304), 2);
    assert_eq!(server.count("/missing"), 2);
    server.clear_log();
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn server_works_with_reqwest_keep_alive_and_conditional_get() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("InRelease"), "signed\n").unwrap();
    let server = TestServer::start(dir.path());
    let client = reqwest::Client::new();
    let url = format!("{}/InRelease", server.url());

    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(first.text().await.unwrap(), "signed\n");
    // Reuses the pooled keep-alive connection.
    for _ in 0..3 {
        let again = client
            .get(&url)
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        assert_eq!(again.bytes().await.unwrap().len(), 0);
    }
    let missing = client
        .get(format!("{}/nope", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(server.count("/InRelease"), 4);
    assert_eq!(server.count_status("/InRelease", 304), 3);
}

#[test]
#[should_panic(expected = "no-such-tool-rebake not found on PATH: apt-get install some-package")]
fn missing_tool_fails_with_what_to_install() {
    require_tool("no-such-tool-rebake", "some-package");
}
