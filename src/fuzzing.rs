//! The fuzz targets' logic, one plain function per target, shared by `fuzz/fuzz_targets/*.rs`
//! (cargo fuzz on nightly) and by the stable replay test `tests/all/fuzz_corpora.rs`, which
//! runs every saved input of `fuzz/corpus/<target>/` through the same function.
//!
//! Each function takes arbitrary bytes and must return without panicking: the parsers answer
//! malformed input with an error. Where a parser accepts its input, the function also checks a
//! few properties of the result (and panics, as a finding, when one does not hold).

use crate::config;
use crate::debian::{changelog, deb822, packages, release, sources, status, version};
use crate::lock::Lock;
use crate::policy;
use crate::server::{self, WebhookForge, PROPOSAL_BRANCH_PREFIX};
use std::cmp::Ordering;
use std::path::Path;

/// A target: its name (the directory under `fuzz/corpus/`) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("deb822", deb822_target),
    ("packages", packages_target),
    ("status", status_target),
    ("version", version_target),
    ("release", release_target),
    ("changelog", changelog_target),
    ("policy", policy_target),
    ("config", config_target),
    ("lock", lock_target),
    ("webhook", webhook_target),
    ("attestation", attestation_target),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The deb822 parser (Release, `.sources`, dpkg status), and `.sources` reading on top of it.
pub fn deb822_target(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let lines = text.lines().count();
    match deb822::parse(text) {
        Ok(paragraphs) => {
            for p in &paragraphs {
                assert!(!p.fields.is_empty(), "a paragraph has at least one field");
                assert!(p.line >= 1 && p.line <= lines, "paragraph line in range");
                for f in &p.fields {
                    assert!(!f.name.is_empty() && !f.name.contains(char::is_whitespace));
                    assert!(f.line >= p.line && f.line <= lines, "field line in range");
                    assert!(p.field(&f.name).is_some());
                }
            }
        }
        Err(e) => assert!(e.line >= 1 && e.line <= lines, "error line in range: {e}"),
    }
    let _ = sources::parse(text, "fuzz.sources");
}

/// The fast Packages parser.
pub fn packages_target(data: &[u8]) {
    if let Ok(list) = packages::parse(data) {
        for p in list {
            assert!(!p.name.is_empty() && !p.version.is_empty() && !p.arch.is_empty());
        }
    }
}

/// The dpkg status parser.
pub fn status_target(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(list) = status::parse(text) {
        for p in &list {
            assert!(version::is_valid_package_name(&p.name), "{:?}", p.name);
            assert!(version::parse(&p.version).is_ok(), "{:?}", p.version);
        }
        assert!(list
            .windows(2)
            .all(|w| (&w[0].name, &w[0].arch) <= (&w[1].name, &w[1].arch)));
    }
}

/// dpkg's order on an independent implementation: versions cut into alternating non-digit
/// and digit runs; non-digit runs compared character by character (`~` first, then the end,
/// then letters, then the rest), digit runs as numbers of any length.
pub fn reference_compare(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (String, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, rest)) => (e.trim_start_matches('0').to_string(), rest),
            None => (String::new(), v),
        };
        match rest.rfind('-') {
            Some(i) => (epoch, &rest[..i], &rest[i + 1..]),
            None => (epoch, rest, ""),
        }
    }
    fn numeric(a: &str, b: &str) -> Ordering {
        let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
    fn weight(c: Option<char>) -> (i32, u32) {
        match c {
            Some('~') => (0, 0),
            None => (1, 0),
            Some(c) if c.is_ascii_alphabetic() => (2, c as u32),
            Some(c) => (3, c as u32),
        }
    }
    fn runs(s: &str) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let d = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (alpha, tail) = rest.split_at(d);
            let n = tail
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(tail.len());
            let (num, tail) = tail.split_at(n);
            out.push((alpha, num));
            rest = tail;
        }
        out
    }
    fn part(a: &str, b: &str) -> Ordering {
        let (ra, rb) = (runs(a), runs(b));
        for i in 0..ra.len().max(rb.len()) {
            let (aa, an) = ra.get(i).copied().unwrap_or(("", ""));
            let (ba, bn) = rb.get(i).copied().unwrap_or(("", ""));
            let (mut x, mut y) = (aa.chars(), ba.chars());
            loop {
                let (cx, cy) = (x.next(), y.next());
                if cx.is_none() && cy.is_none() {
                    break;
                }
                let o = weight(cx).cmp(&weight(cy));
                if o != Ordering::Equal {
                    return o;
                }
            }
            let o = numeric(an, bn);
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    numeric(&ea, &eb)
        .then_with(|| part(ua, ub))
        .then_with(|| part(ra, rb))
}

/// Debian version order: up to three versions, one a line. Antisymmetry on each pair,
/// transitivity on the triple, and, for versions that pass the policy grammar, agreement with
/// [`reference_compare`] and with an explicit `0:` epoch.
pub fn version_target(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let v: Vec<&str> = text.split('\n').take(3).collect();
    for a in &v {
        assert_eq!(version::compare(a, a), Ordering::Equal);
        if let Ok(parts) = version::parse(a) {
            assert!(parts.upstream.starts_with(|c: char| c.is_ascii_digit()));
            if !a.contains(':') {
                let with_epoch = format!("0:{a}");
                assert_eq!(version::compare(&with_epoch, a), Ordering::Equal, "{a:?}");
            }
        }
        for b in &v {
            let ab = version::compare(a, b);
            assert_eq!(
                ab,
                version::compare(b, a).reverse(),
                "antisymmetry {a:?} {b:?}"
            );
            let valid = |s: &str| version::parse(s).is_ok_and(|p| p.epoch <= u32::MAX as u64);
            if valid(a) && valid(b) {
                assert_eq!(ab, reference_compare(a, b), "reference on {a:?} {b:?}");
            }
        }
    }
    if let [a, b, c] = v[..] {
        let (ab, bc, ac) = (
            version::compare(a, b),
            version::compare(b, c),
            version::compare(a, c),
        );
        if ab != Ordering::Greater && bc != Ordering::Greater {
            assert_ne!(
                ac,
                Ordering::Greater,
                "transitivity {a:?} <= {b:?} <= {c:?}"
            );
            if ab == Ordering::Equal && bc == Ordering::Equal {
                assert_eq!(
                    ac,
                    Ordering::Equal,
                    "transitivity of = on {a:?} {b:?} {c:?}"
                );
            }
        }
    }
    // Version's Ord agrees with compare.
    if let [a, b, ..] = v[..] {
        if let (Ok(x), Ok(y)) = (version::Version::new(a), version::Version::new(b)) {
            assert_eq!(x.cmp(&y), version::compare(a, b));
        }
    }
}

/// Release/InRelease text (the signed text after verification; gpgv is not run here).
pub fn release_target(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(r) = release::Release::parse(text) {
        assert!(!r.sha256.is_empty());
        for f in r.sha256.values() {
            assert!(f.sha256.len() == 64 && f.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(f.sha256, f.sha256.to_ascii_lowercase());
        }
        let _ = (r.is_security("x"), r.default_pin());
    }
    let _ = release::parse_date(text);
}

/// A Debian changelog (`changelog.Debian.gz`, decompressed): every entry has a version and a
/// distribution, each CVE id is well-formed, named once per entry, and found in the text; the
/// range an update brings is a subset of the entries, within its bounds.
pub fn changelog_target(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let entries = changelog::parse(text);
    for e in &entries {
        // dpkg-parsechangelog's header grammar (`[^\(\) \t]+`): it keeps, with a warning, a
        // version with other odd bytes such as a carriage return, and so does rebake.
        assert!(!e.version.is_empty() && !e.version.contains(['(', ')', ' ', '\t']));
        assert!(!e.distributions.is_empty());
        for (i, id) in e.cves.iter().enumerate() {
            let mut parts = id.split('-');
            assert_eq!(parts.next(), Some("CVE"));
            let year = parts.next().expect("year");
            let number = parts.next().expect("number");
            assert!(year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()));
            assert!(number.len() >= 4 && number.bytes().all(|b| b.is_ascii_digit()));
            assert!(!e.cves[..i].contains(id), "{id} named twice");
            assert!(text.contains(id.as_str()));
        }
    }
    if let (Some(newest), Some(oldest)) = (entries.first(), entries.last()) {
        let range = changelog::between(&entries, Some(&oldest.version), &newest.version);
        assert!(range.len() <= entries.len());
        for e in range {
            assert_ne!(
                version::compare(&e.version, &newest.version),
                Ordering::Greater
            );
            assert_eq!(
                version::compare(&e.version, &oldest.version),
                Ordering::Greater
            );
        }
    }
    let _ = changelog::cve_ids(text);
}

fn show_diagnostics(diagnostics: &[config::Diagnostic]) {
    for d in diagnostics {
        let _ = d.to_string();
    }
}

/// A policy file (`policies/<image>.yaml`).
pub fn policy_target(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Err(d) = policy::parse_policy("fuzz", Path::new("policies/fuzz.yaml"), text) {
        show_diagnostics(&d);
    }
}

/// `rebake.yaml`.
pub fn config_target(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Err(d) = config::parse(Path::new("/srv/ops/rebake.yaml"), text) {
        show_diagnostics(&d);
    }
}

/// `images/<name>/rebake.lock`: read, and a lock that reads is written and read back equal
/// (sorted, and without mirror credentials).
pub fn lock_target(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let origin = Path::new("images/fuzz/rebake.lock");
    if let Ok(lock) = Lock::parse(text, origin) {
        let yaml = lock.to_yaml().expect("a lock that reads can be written");
        let again = Lock::parse(&yaml, origin).expect("a written lock reads back");
        // Written sorted, and without credentials in archive URIs (a lock never stores them).
        let mut expected = lock.clone();
        expected.packages.sort();
        for a in &mut expected.archive {
            a.uri = crate::redact::split_credentials(&a.uri).0;
        }
        assert_eq!(again, expected, "lock round trip");
    }
}

/// A webhook delivery: the first byte picks the forge, the rest is the `pull_request` payload.
/// A merged proposal is always a rebake branch, an `owner/name` repository and a lowercase
/// commit id. The signature check is run on the same bytes too.
pub fn webhook_target(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let forge = if first & 1 == 0 {
        WebhookForge::Github
    } else {
        WebhookForge::Gitea
    };
    if let Ok(Some(m)) = server::merged_proposal_from_payload(forge, body) {
        assert!(m.head_branch.starts_with(PROPOSAL_BRANCH_PREFIX));
        assert!(!m.base_branch.is_empty());
        let (owner, name) = m.repository.split_once('/').expect("owner/name");
        assert!(!owner.is_empty() && !name.is_empty() && !name.contains('/'));
        assert!(matches!(m.merge_commit.len(), 40 | 64));
        assert!(m
            .merge_commit
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let _ = m.key();
    }
    let (secret, rest) = body.split_at(body.len().min(8));
    let signature = String::from_utf8_lossy(&rest[..rest.len().min(64)]);
    let _ = server::verify_signature(secret, body, &signature);
}

/// The fuzz key's scalar: the corpus's envelopes and signatures are signed with it, so inputs
/// reach past the signature check.
pub const FUZZ_KEY_SCALAR: [u8; 32] = [7; 32];
/// The image the `attestation` target's lock records.
pub const FUZZ_DIGEST: &str =
    "registry.example/fuzz@sha256:abababababababababababababababababababababababababababababababab";

/// What a registry serves about an image's signature and attestations: the bytes as an OCI
/// manifest, as a DSSE envelope (opened with the fuzz key; a statement that opens is checked
/// against a lock) and, split at the first newline, as a base64 signature and a simple-signing
/// payload. A provenance that matches the lock is about the lock's digest.
pub fn attestation_target(data: &[u8]) {
    use crate::{attest, signing};
    let _ = attest::manifest_layers(data);
    let verifier = signing::Verifier::from_scalar(&FUZZ_KEY_SCALAR).expect("the fuzz key");
    if let Ok(statement) = signing::dsse_open(&verifier, data) {
        let lock = Lock {
            lock_version: crate::lock::LOCK_VERSION,
            name: "fuzz".into(),
            suite: "trixie".into(),
            architecture: "amd64".into(),
            archive: Vec::new(),
            base: None,
            parent: None,
            reason: None,
            packages: Vec::new(),
            image: Some(crate::lock::ImageRef {
                id: format!("sha256:{}", "c".repeat(64)),
                digest: Some(FUZZ_DIGEST.into()),
            }),
            tests: None,
        };
        if attest::provenance_matches(&statement, &lock).is_ok() {
            let hex = FUZZ_DIGEST.rsplit(':').next().unwrap_or_default();
            let about = statement["subject"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["digest"]["sha256"] == hex));
            assert!(about, "a matching provenance is about the lock's digest");
        }
        let _ = attest::provenance_commit(&statement);
    }
    if let Some(at) = data.iter().position(|&b| b == b'\n') {
        let (sig, payload) = (&data[..at], &data[at + 1..]);
        let repo = FUZZ_DIGEST.split('@').next().unwrap_or_default();
        let digest = FUZZ_DIGEST.split('@').nth(1).unwrap_or_default();
        let _ = signing::check_simple_signing(
            &verifier,
            payload,
            &String::from_utf8_lossy(sig),
            repo,
            digest,
        );
    }
}
