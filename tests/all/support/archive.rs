//! A small but real Debian archive, generated in Rust and signed with a throw-away OpenPGP key.
//!
//! Layout written by [`TestArchive::publish`] under [`TestArchive::dir`], for every suite known
//! to the archive (the three standard ones always exist, empty until packages are added):
//!
//! ```text
//! debian/dists/trixie/{Release,InRelease,Release.gpg}
//! debian/dists/trixie/main/binary-amd64/{Packages,Packages.gz,Packages.xz}
//! debian/dists/trixie/main/binary-amd64/by-hash/SHA256/<sha256 of each of the three>
//! debian/dists/trixie-updates/...
//! debian-security/dists/trixie-security/...
//! ```
//!
//! The pool (`.deb` files) is not written: `Filename`, `Size` and the hashes in the stanzas are
//! realistic but describe files that do not exist.
//!
//! The signing key is an ed25519 primary key (certify only) with an ed25519 signing subkey, like
//! Debian's archive keys (which sign with subkeys). `keyring.gpg` holds its public part only; a
//! second, unrelated key ("other key") signs the negative fixtures.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

use super::{md5_hex, require_tool, sha256_hex};

/// The only component the archive has.
pub const COMPONENT: &str = "main";
/// The only architecture the archive has (`Architecture: all` packages are listed in its
/// `Packages` too, as Debian does).
pub const ARCH: &str = "amd64";

const MAINTAINER: &str = "Rebake Test Maintainers <test@example.invalid>";
const KEY_UID: &str = "rebake test <test@example.invalid>";
const OTHER_KEY_UID: &str = "rebake other test key <other@example.invalid>";

/// A binary package as the archive lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    /// `amd64` or `all`.
    pub arch: String,
    /// Value of the `Source:` field, e.g. `openssl` or `openssl (3.5.1-1)`; `None` when the
    /// source package has the binary's name and version (the field is then omitted).
    pub source: Option<String>,
    pub section: String,
    pub priority: String,
    /// Further fields (`Depends`, `Multi-Arch`, ...) in order; a name that matches a generated
    /// field (`Description`, `Maintainer`, `Installed-Size`, ...) replaces it.
    pub fields: Vec<(String, String)>,
}

impl Pkg {
    pub fn new(name: &str, version: &str, arch: &str) -> Self {
        Pkg {
            name: name.to_string(),
            version: version.to_string(),
            arch: arch.to_string(),
            source: None,
            section: "misc".to_string(),
            priority: "optional".to_string(),
            fields: Vec::new(),
        }
    }

    /// `Source:` field: `"openssl"` or `"openssl (3.5.1-1)"`.
    pub fn source(mut self, source: &str) -> Self {
        self.source = Some(source.to_string());
        self
    }

    pub fn section(mut self, section: &str) -> Self {
        self.section = section.to_string();
        self
    }

    pub fn priority(mut self, priority: &str) -> Self {
        self.priority = priority.to_string();
        self
    }

    /// Any other field, e.g. `.field("Depends", "libc6 (>= 2.38)")`.
    pub fn field(mut self, name: &str, value: &str) -> Self {
        self.fields.push((name.to_string(), value.to_string()));
        self
    }

    /// Source package name (without a version in parentheses).
    pub fn source_name(&self) -> &str {
        match &self.source {
            Some(s) => s.split_whitespace().next().unwrap_or(&self.name),
            None => &self.name,
        }
    }

    /// Source package version: the one in parentheses in `Source:`, else the binary's version.
    pub fn source_version(&self) -> &str {
        self.source
            .as_deref()
            .and_then(|s| s.split_once('('))
            .map(|(_, v)| v.trim_end_matches(')').trim())
            .unwrap_or(&self.version)
    }

    /// `pool/main/o/openssl/libssl3_3.5.1-1_amd64.deb` (epoch dropped, as in Debian).
    pub fn filename(&self) -> String {
        let src = self.source_name();
        let prefix = if src.starts_with("lib") && src.len() > 3 {
            &src[..4]
        } else {
            &src[..1]
        };
        let version = self
            .version
            .split_once(':')
            .map_or(self.version.as_str(), |(_, v)| v);
        format!(
            "pool/{COMPONENT}/{prefix}/{src}/{}_{}_{}.deb",
            self.name, version, self.arch
        )
    }

    /// The stanza as in a `Packages` file (no trailing blank line).
    pub fn stanza(&self) -> String {
        let identity = format!("{}_{}_{}", self.name, self.version, self.arch);
        let digest = sha256_hex(identity.as_bytes());
        let size = 2000 + u64::from_str_radix(&digest[..4], 16).unwrap_or(0);
        let installed_size = size * 3 / 1024 + 1;
        let description = format!("{} (rebake test package)", self.name);

        let mut fields: Vec<(String, String)> = vec![("Package".into(), self.name.clone())];
        if let Some(source) = &self.source {
            fields.push(("Source".into(), source.clone()));
        }
        fields.extend([
            ("Version".into(), self.version.clone()),
            ("Installed-Size".into(), installed_size.to_string()),
            ("Maintainer".into(), MAINTAINER.into()),
            ("Architecture".into(), self.arch.clone()),
        ]);
        let after_arch = fields.len();
        fields.extend([
            ("Description".into(), description.clone()),
            (
                "Description-md5".into(),
                md5_hex(format!("{description}\n").as_bytes()),
            ),
            ("Section".into(), self.section.clone()),
            ("Priority".into(), self.priority.clone()),
            ("Filename".into(), self.filename()),
            ("Size".into(), size.to_string()),
            ("MD5sum".into(), md5_hex(identity.as_bytes())),
            ("SHA256".into(), digest),
        ]);
        merge_fields(&mut fields, after_arch, &self.fields);
        render_stanza(&fields)
    }
}

/// Inserts `extra` fields at `at`, or replaces a field of the same name (case-insensitive).
fn merge_fields(fields: &mut Vec<(String, String)>, mut at: usize, extra: &[(String, String)]) {
    for (name, value) in extra {
        if let Some(existing) = fields
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            existing.1 = value.clone();
        } else {
            fields.insert(at, (name.clone(), value.clone()));
            at += 1;
        }
    }
}

fn render_stanza(fields: &[(String, String)]) -> String {
    let mut out = String::new();
    for (name, value) in fields {
        out.push_str(name);
        out.push(':');
        if !value.starts_with('\n') {
            out.push(' ');
        }
        out.push_str(value);
        out.push('\n');
    }
    out
}

/// An entry of `/var/lib/dpkg/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEntry {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// `Source:` value, e.g. `openssl` or `openssl (3.5.1-1)`.
    pub source: Option<String>,
    /// `Status:` value; `install ok installed` unless changed.
    pub status: String,
    pub section: String,
    pub priority: String,
    /// Further fields in order (`Multi-Arch`, `Depends`, ...); a name that matches a generated
    /// field replaces it.
    pub fields: Vec<(String, String)>,
}

impl StatusEntry {
    pub fn new(name: &str, version: &str, arch: &str) -> Self {
        StatusEntry {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
            source: None,
            status: "install ok installed".into(),
            section: "misc".into(),
            priority: "optional".into(),
            fields: Vec::new(),
        }
    }

    pub fn source(mut self, source: &str) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Removed but not purged: `Status: deinstall ok config-files` (with `Config-Version` and
    /// `Conffiles`, as dpkg writes it). Such a package is not installed.
    pub fn config_files(mut self) -> Self {
        self.status = "deinstall ok config-files".into();
        self
    }

    /// Any `Status:` value, e.g. `install ok half-configured`.
    pub fn status(mut self, status: &str) -> Self {
        self.status = status.into();
        self
    }

    pub fn field(mut self, name: &str, value: &str) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// The stanza as dpkg writes it (no trailing blank line).
    pub fn stanza(&self) -> String {
        let identity = format!("{}_{}_{}", self.name, self.version, self.arch);
        let digest = sha256_hex(identity.as_bytes());
        let installed_size = 100 + u64::from_str_radix(&digest[..3], 16).unwrap_or(0);
        let config_files = self.status.ends_with(" config-files");
        let mut fields: Vec<(String, String)> = vec![
            ("Package".into(), self.name.clone()),
            ("Status".into(), self.status.clone()),
            ("Priority".into(), self.priority.clone()),
            ("Section".into(), self.section.clone()),
            ("Installed-Size".into(), installed_size.to_string()),
            ("Maintainer".into(), MAINTAINER.into()),
            ("Architecture".into(), self.arch.clone()),
        ];
        if let Some(source) = &self.source {
            fields.push(("Source".into(), source.clone()));
        }
        fields.push(("Version".into(), self.version.clone()));
        let after_version = fields.len();
        if config_files {
            fields.push(("Config-Version".into(), self.version.clone()));
            fields.push((
                "Conffiles".into(),
                format!(
                    "\n /etc/{}/{}.conf {}",
                    self.name,
                    self.name,
                    md5_hex(identity.as_bytes())
                ),
            ));
        }
        fields.push((
            "Description".into(),
            format!(
                "{} (rebake test package)\n This package only exists in rebake's tests.",
                self.name
            ),
        ));
        merge_fields(&mut fields, after_version, &self.fields);
        render_stanza(&fields)
    }
}

impl From<Pkg> for StatusEntry {
    fn from(p: Pkg) -> Self {
        StatusEntry {
            source: p.source,
            section: p.section,
            priority: p.priority,
            ..StatusEntry::new(&p.name, &p.version, &p.arch)
        }
    }
}

impl From<&Pkg> for StatusEntry {
    fn from(p: &Pkg) -> Self {
        p.clone().into()
    }
}

impl From<(&str, &str, &str, Option<&str>)> for StatusEntry {
    fn from((name, version, arch, source): (&str, &str, &str, Option<&str>)) -> Self {
        let e = StatusEntry::new(name, version, arch);
        match source {
            Some(s) => e.source(s),
            None => e,
        }
    }
}

/// `(name, version, arch, source)`; an empty source means no `Source:` field.
impl From<(&str, &str, &str, &str)> for StatusEntry {
    fn from((name, version, arch, source): (&str, &str, &str, &str)) -> Self {
        (name, version, arch, (!source.is_empty()).then_some(source)).into()
    }
}

impl From<(&str, &str, &str)> for StatusEntry {
    fn from((name, version, arch): (&str, &str, &str)) -> Self {
        StatusEntry::new(name, version, arch)
    }
}

/// A realistic `/var/lib/dpkg/status`: one stanza per entry, sorted by name and architecture as
/// dpkg writes it. Entries are tuples `(name, version, arch, source)` (source `Option<&str>`
/// or `&str`, empty for none), [`Pkg`]s, or [`StatusEntry`]s (for
/// [`StatusEntry::config_files`] and other states).
pub fn dpkg_status<E: Clone + Into<StatusEntry>>(entries: &[E]) -> String {
    let mut entries: Vec<StatusEntry> = entries.iter().cloned().map(Into::into).collect();
    entries.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    entries
        .iter()
        .map(|e| e.stanza() + "\n")
        .collect::<String>()
}

/// A date the way Debian's `Release` files write it: `Sat, 15 Nov 2025 09:23:45 UTC`.
pub fn debian_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S UTC").to_string()
}

/// [`debian_date`] of now plus `offset` (negative for the past).
pub fn debian_date_from_now(offset: Duration) -> String {
    debian_date(Utc::now() + offset)
}

/// One suite of one archive root.
#[derive(Clone, Debug)]
struct Suite {
    packages: Vec<Pkg>,
    /// Overrides of Release fields; `None` removes the field.
    release: Vec<(String, Option<String>)>,
}

/// A throw-away OpenPGP key in the archive's GnuPG home.
#[derive(Clone, Debug)]
struct Key {
    /// Primary key fingerprint.
    fingerprint: String,
    /// Fingerprint of the key that makes signatures (the subkey for the archive key).
    signing_fingerprint: String,
}

/// A signed Debian archive in a temporary directory; see the module documentation.
pub struct TestArchive {
    tmp: tempfile::TempDir,
    suites: BTreeMap<(String, String), Suite>,
    /// Suites changed (or tampered with) since they were last published.
    dirty: Mutex<BTreeSet<(String, String)>>,
    key: Key,
    other_key: Key,
}

impl TestArchive {
    /// A new archive with the empty suites `debian/trixie`, `debian/trixie-updates` and
    /// `debian-security/trixie-security`, and two freshly generated keys. Nothing is written
    /// under [`dir`](Self::dir) until [`publish`](Self::publish).
    pub fn new() -> TestArchive {
        require_tool("gpg", "gnupg");
        // A short path: gpg-agent's socket lives in the home, and socket paths are limited to
        // about 107 bytes.
        let tmp = tempfile::Builder::new()
            .prefix("rbk")
            .tempdir_in("/tmp")
            .expect("create temp dir under /tmp");
        let home = tmp.path().join("g");
        fs::create_dir(&home).expect("create gnupg home");
        fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod gnupg home");
        fs::create_dir(tmp.path().join("www")).expect("create www dir");

        let mut archive = TestArchive {
            tmp,
            suites: BTreeMap::new(),
            dirty: Mutex::new(BTreeSet::new()),
            key: Key {
                fingerprint: String::new(),
                signing_fingerprint: String::new(),
            },
            other_key: Key {
                fingerprint: String::new(),
                signing_fingerprint: String::new(),
            },
        };
        // Archive key: certify-only primary + signing subkey, like Debian's.
        archive.gpg_ok(&["--quick-gen-key", KEY_UID, "ed25519", "cert", "never"]);
        let primary = archive.fingerprints(KEY_UID)[0].clone();
        archive.gpg_ok(&["--quick-add-key", &primary, "ed25519", "sign", "never"]);
        let fprs = archive.fingerprints(KEY_UID);
        assert_eq!(
            fprs.len(),
            2,
            "archive key should have a primary key and one subkey"
        );
        archive.key = Key {
            fingerprint: fprs[0].clone(),
            signing_fingerprint: fprs[1].clone(),
        };
        // Other key: a plain signing key, never in keyring.gpg.
        archive.gpg_ok(&["--quick-gen-key", OTHER_KEY_UID, "ed25519", "sign", "never"]);
        let other = archive.fingerprints(OTHER_KEY_UID)[0].clone();
        archive.other_key = Key {
            fingerprint: other.clone(),
            signing_fingerprint: other,
        };

        let fpr = archive.key.fingerprint.clone();
        let other = archive.other_key.fingerprint.clone();
        let keys = archive.tmp.path();
        for (file, args) in [
            ("keyring.gpg", vec!["--export", fpr.as_str()]),
            ("keyring.asc", vec!["--armor", "--export", fpr.as_str()]),
            ("other-keyring.gpg", vec!["--export", other.as_str()]),
            (
                "other-keyring.asc",
                vec!["--armor", "--export", other.as_str()],
            ),
        ] {
            let out = archive.gpg_ok(&args);
            assert!(!out.stdout.is_empty(), "gpg {args:?} exported nothing");
            fs::write(keys.join(file), &out.stdout).expect("write keyring");
        }

        for (root, suite) in [
            ("debian", "trixie"),
            ("debian", "trixie-updates"),
            ("debian-security", "trixie-security"),
        ] {
            archive.suite_mut(root, suite);
        }
        archive
    }

    /// Directory served over HTTP: holds `debian/` and `debian-security/`.
    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("www")
    }

    /// `<dir>/<root>/dists/<suite>`.
    pub fn dists(&self, root: &str, suite: &str) -> PathBuf {
        self.dir().join(root).join("dists").join(suite)
    }

    /// Binary keyring (`gpg --export`) with the archive key's public part: what `Signed-By`
    /// and `gpgv --keyring` take.
    pub fn keyring(&self) -> PathBuf {
        self.tmp.path().join("keyring.gpg")
    }

    /// The same key, ASCII-armored.
    pub fn keyring_asc(&self) -> PathBuf {
        self.tmp.path().join("keyring.asc")
    }

    /// Binary keyring with only the other key (the one [`sign_with_other_key`] uses).
    ///
    /// [`sign_with_other_key`]: Self::sign_with_other_key
    pub fn other_key_keyring(&self) -> PathBuf {
        self.tmp.path().join("other-keyring.gpg")
    }

    /// The other key, ASCII-armored.
    pub fn other_key_keyring_asc(&self) -> PathBuf {
        self.tmp.path().join("other-keyring.asc")
    }

    /// Fingerprint of the archive key's primary key.
    pub fn key_fingerprint(&self) -> &str {
        &self.key.fingerprint
    }

    /// Fingerprint of the archive key's signing subkey (what `gpgv` reports in `VALIDSIG`
    /// first).
    pub fn signing_subkey_fingerprint(&self) -> &str {
        &self.key.signing_fingerprint
    }

    pub fn other_key_fingerprint(&self) -> &str {
        &self.other_key.fingerprint
    }

    /// GnuPG home holding both secret keys (for tests that sign something themselves).
    pub fn gnupg_home(&self) -> PathBuf {
        self.tmp.path().join("g")
    }

    /// Adds a package to `<root>/<suite>` (component `main`); the suite is created if new.
    /// Several versions of one package may be added. Visible after [`publish`](Self::publish).
    pub fn add(&mut self, root: &str, suite: &str, pkg: Pkg) {
        self.suite_mut(root, suite).packages.push(pkg);
    }

    /// Removes every version of package `name` from `<root>/<suite>`; returns how many.
    pub fn remove(&mut self, root: &str, suite: &str, name: &str) -> usize {
        let pkgs = &mut self.suite_mut(root, suite).packages;
        let before = pkgs.len();
        pkgs.retain(|p| p.name != name);
        before - pkgs.len()
    }

    /// Packages of `<root>/<suite>` in the order added.
    pub fn packages(&self, root: &str, suite: &str) -> &[Pkg] {
        self.suites
            .get(&(root.to_string(), suite.to_string()))
            .map_or(&[], |s| &s.packages)
    }

    /// Sets a `Release` field of `<root>/<suite>` (replacing the default, or appended before
    /// the hash lists if not a default field). Defaults, in order: `Origin`, `Label` (`Debian`
    /// or `Debian-Security`), `Suite` (`stable`, `stable-updates`, `stable-security`,
    /// `stable-backports`; else the suite's name), `Version` (trixie: `13.1`, security: `13`),
    /// `Codename` (the suite's name), `Date` (now, at publish), `Valid-Until` (now + 7 days, at
    /// publish), `NotAutomatic` + `ButAutomaticUpgrades` (`yes`, only for `*-backports`),
    /// `Acquire-By-Hash: yes`, `No-Support-for-Architecture-all: Packages`,
    /// `Architectures: amd64`, `Components: main`, `Description`.
    pub fn set_release(&mut self, root: &str, suite: &str, field: &str, value: &str) {
        self.override_release(root, suite, field, Some(value.to_string()));
    }

    /// Removes a `Release` field (e.g. `Valid-Until`, `Acquire-By-Hash`).
    pub fn remove_release_field(&mut self, root: &str, suite: &str, field: &str) {
        self.override_release(root, suite, field, None);
    }

    /// Back to the default value of a `Release` field.
    pub fn reset_release_field(&mut self, root: &str, suite: &str, field: &str) {
        self.suite_mut(root, suite)
            .release
            .retain(|(n, _)| !n.eq_ignore_ascii_case(field));
    }

    /// `Valid-Until` 1 hour ago: an expired suite. `Date` keeps its default (now, at publish),
    /// so expiry is the only thing wrong even for a client that saw earlier `Date`s; combine
    /// with [`backdate`](Self::backdate) for a mirror frozen in the past.
    pub fn expire(&mut self, root: &str, suite: &str) {
        self.set_release(
            root,
            suite,
            "Valid-Until",
            &debian_date_from_now(-Duration::hours(1)),
        );
    }

    /// `Date` set to `age` ago (`Valid-Until` keeps its default, now + 7 days): a replayed or
    /// rolled-back suite when `age` reaches before the last `Date` seen.
    pub fn backdate(&mut self, root: &str, suite: &str, age: Duration) {
        self.set_release(root, suite, "Date", &debian_date_from_now(-age));
    }

    /// The `Release` text `publish` would write now (without the hash lists).
    pub fn release_fields(&self, root: &str, suite: &str) -> Vec<(String, String)> {
        let now = Utc::now();
        let mut fields = default_release(root, suite, now);
        if let Some(s) = self.suites.get(&(root.to_string(), suite.to_string())) {
            for (name, value) in &s.release {
                let pos = fields
                    .iter()
                    .position(|(n, _)| n.eq_ignore_ascii_case(name));
                match (pos, value) {
                    (Some(i), Some(v)) => fields[i].1 = v.clone(),
                    (Some(i), None) => {
                        fields.remove(i);
                    }
                    (None, Some(v)) => fields.push((name.clone(), v.clone())),
                    (None, None) => {}
                }
            }
        }
        fields
    }

    /// Writes every suite changed since it was last published (all of them the first time;
    /// a suite touched by `add`, `remove`, `set_release`, `expire`, ..., by a tamper helper, or
    /// by [`refresh`](Self::refresh)): `Packages{,.gz,.xz}` and their by-hash copies,
    /// `Release` (new `Date`), then `InRelease` (clear-signed) and `Release.gpg` (detached,
    /// armored) with the archive key. Unchanged suites keep their files byte for byte, so a
    /// client's conditional GET of them gets `304`. Files are replaced atomically; by-hash
    /// files of earlier publications stay, as on a real mirror.
    pub fn publish(&self) {
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap());
        for (root, suite) in &dirty {
            self.publish_suite(root, suite);
        }
    }

    /// Marks `<root>/<suite>` for republication: the next [`publish`](Self::publish) re-signs
    /// it with a new `Date` (and default `Valid-Until`) even if nothing else changed, as
    /// Debian re-signs its suites regularly.
    pub fn refresh(&self, root: &str, suite: &str) {
        self.mark_dirty(root, suite);
    }

    /// Marks every suite for republication.
    pub fn refresh_all(&self) {
        self.dirty
            .lock()
            .unwrap()
            .extend(self.suites.keys().cloned());
    }

    fn mark_dirty(&self, root: &str, suite: &str) {
        self.dirty
            .lock()
            .unwrap()
            .insert((root.to_string(), suite.to_string()));
    }

    fn publish_suite(&self, root: &str, suite: &str) {
        let dists = self.dists(root, suite);
        let bin = dists.join(COMPONENT).join(format!("binary-{ARCH}"));
        let by_hash = bin.join("by-hash").join("SHA256");
        fs::create_dir_all(&by_hash).expect("create dists dirs");

        let packages = packages_text(self.packages(root, suite));
        let files = [
            ("Packages", packages.clone().into_bytes()),
            ("Packages.gz", gzip(packages.as_bytes())),
            ("Packages.xz", xz(packages.as_bytes())),
        ];
        let mut md5_lines = String::new();
        let mut sha256_lines = String::new();
        for (name, data) in &files {
            let sha256 = sha256_hex(data);
            write_atomic(&bin.join(name), data);
            write_atomic(&by_hash.join(&sha256), data);
            let path = format!("{COMPONENT}/binary-{ARCH}/{name}");
            md5_lines.push_str(&format!(" {} {:>8} {path}\n", md5_hex(data), data.len()));
            sha256_lines.push_str(&format!(" {sha256} {:>8} {path}\n", data.len()));
        }

        let mut release = render_stanza(&self.release_fields(root, suite));
        release.push_str("MD5Sum:\n");
        release.push_str(&md5_lines);
        release.push_str("SHA256:\n");
        release.push_str(&sha256_lines);
        write_atomic(&dists.join("Release"), release.as_bytes());
        self.sign(&dists, &[&self.key]);
    }

    /// Signs `<dists>/Release` into `InRelease` and `Release.gpg` with `keys`.
    fn sign(&self, dists: &Path, keys: &[&Key]) {
        let release = dists.join("Release");
        for (out_name, mode) in [
            ("InRelease", "--clearsign"),
            ("Release.gpg", "--detach-sign"),
        ] {
            let tmp_out = dists.join(format!(".{out_name}.tmp"));
            let _ = fs::remove_file(&tmp_out);
            let mut args: Vec<String> = vec!["--digest-algo".into(), "SHA512".into()];
            for key in keys {
                args.push("--local-user".into());
                args.push(format!("{}!", key.signing_fingerprint));
            }
            args.extend([
                "--armor".into(),
                mode.into(),
                "--output".into(),
                tmp_out.display().to_string(),
                release.display().to_string(),
            ]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.gpg_ok(&args);
            fs::rename(&tmp_out, dists.join(out_name)).expect("rename signature");
        }
    }

    /// Alters one byte of the signed text of `InRelease` after signing (a digit of the first
    /// `SHA256:` hash), so the signature no longer verifies. `Release` and `Release.gpg` stay
    /// as published.
    pub fn tamper_inrelease(&self, root: &str, suite: &str) {
        let path = self.dists(root, suite).join("InRelease");
        let text = fs::read_to_string(&path).expect("read InRelease (publish first)");
        let start = text
            .find("\nSHA256:\n ")
            .expect("InRelease has a SHA256 list")
            + 10;
        let old = text.as_bytes()[start];
        let new = if old == b'0' { '1' } else { '0' };
        let mut tampered = text.clone();
        tampered.replace_range(start..start + 1, &new.to_string());
        assert_ne!(tampered, text);
        write_atomic(&path, tampered.as_bytes());
        self.mark_dirty(root, suite);
    }

    /// Re-signs `InRelease` and `Release.gpg` of `<root>/<suite>` with the other key only
    /// (not in [`keyring`](Self::keyring)). Content unchanged.
    pub fn sign_with_other_key(&self, root: &str, suite: &str) {
        self.sign(&self.dists(root, suite), &[&self.other_key]);
        self.mark_dirty(root, suite);
    }

    /// Re-signs `InRelease` and `Release.gpg` of `<root>/<suite>` with both keys, as Debian
    /// signs with several keys: verification must succeed on the known key although the
    /// other signature's key is missing (`NO_PUBKEY` next to `VALIDSIG`).
    pub fn sign_with_both_keys(&self, root: &str, suite: &str) {
        self.sign(&self.dists(root, suite), &[&self.key, &self.other_key]);
        self.mark_dirty(root, suite);
    }

    /// After signing, replaces `Packages`, `Packages.gz` and `Packages.xz` of `<root>/<suite>`
    /// and their by-hash copies (under the old hash names) with valid files that list one more
    /// package, `rebake-corrupted` — so their SHA256 no longer matches the signed `Release`.
    /// A client that skips the hash check would see that package.
    pub fn corrupt_packages(&self, root: &str, suite: &str) {
        let bin = self
            .dists(root, suite)
            .join(COMPONENT)
            .join(format!("binary-{ARCH}"));
        let original = fs::read_to_string(bin.join("Packages")).expect("read Packages");
        let evil = Pkg::new("rebake-corrupted", "99.0-1", "amd64").stanza();
        let corrupted = format!("{original}{evil}\n");
        for (name, data) in [
            ("Packages", corrupted.clone().into_bytes()),
            ("Packages.gz", gzip(corrupted.as_bytes())),
            ("Packages.xz", xz(corrupted.as_bytes())),
        ] {
            let old = fs::read(bin.join(name)).expect("read published index");
            write_atomic(&bin.join(name), &data);
            write_atomic(
                &bin.join("by-hash").join("SHA256").join(sha256_hex(&old)),
                &data,
            );
        }
        self.mark_dirty(root, suite);
    }

    /// deb822 apt sources: `<base_url>/debian` with `trixie trixie-updates`, and
    /// `<base_url>/debian-security` with `trixie-security`; component `main`, architecture
    /// `amd64`, `Signed-By:` [`keyring`](Self::keyring).
    pub fn sources(&self, base_url: &str) -> String {
        let base = base_url.trim_end_matches('/');
        let keyring = self.keyring();
        format!(
            "Types: deb\n\
             URIs: {base}/debian\n\
             Suites: trixie trixie-updates\n\
             Components: main\n\
             Architectures: amd64\n\
             Signed-By: {keyring}\n\
             \n\
             Types: deb\n\
             URIs: {base}/debian-security\n\
             Suites: trixie-security\n\
             Components: main\n\
             Architectures: amd64\n\
             Signed-By: {keyring}\n",
            keyring = keyring.display()
        )
    }

    /// Writes [`sources`](Self::sources) to `<tmp>/rebake-test.sources` (outside the served
    /// dir) and returns its path.
    pub fn write_sources(&self, base_url: &str) -> PathBuf {
        let path = self.tmp.path().join("rebake-test.sources");
        fs::write(&path, self.sources(base_url)).expect("write sources");
        path
    }

    fn suite_mut(&mut self, root: &str, suite: &str) -> &mut Suite {
        self.mark_dirty(root, suite);
        self.suites
            .entry((root.to_string(), suite.to_string()))
            .or_insert_with(|| Suite {
                packages: Vec::new(),
                release: Vec::new(),
            })
    }

    fn override_release(&mut self, root: &str, suite: &str, field: &str, value: Option<String>) {
        let release = &mut self.suite_mut(root, suite).release;
        if let Some(entry) = release
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(field))
        {
            entry.1 = value;
        } else {
            release.push((field.to_string(), value));
        }
    }

    /// Primary and subkey fingerprints of the key with `uid`, primary first.
    fn fingerprints(&self, uid: &str) -> Vec<String> {
        let out = self.gpg_ok(&["--with-colons", "--list-secret-keys", uid]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("fpr:"))
            .filter_map(|l| l.split(':').nth(9).map(str::to_string))
            .collect()
    }

    fn gpg(&self, args: &[&str]) -> Output {
        Command::new("gpg")
            .arg("--homedir")
            .arg(self.gnupg_home())
            .args([
                "--batch",
                "--yes",
                "--no-tty",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run gpg (apt-get install gnupg)")
    }

    fn gpg_ok(&self, args: &[&str]) -> Output {
        let out = self.gpg(args);
        assert!(
            out.status.success(),
            "gpg {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Default for TestArchive {
    fn default() -> Self {
        TestArchive::new()
    }
}

impl Drop for TestArchive {
    fn drop(&mut self) {
        // Stop the gpg-agent this archive's gpg calls started; the temp dir goes after.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.gnupg_home())
            .args(["--kill", "gpg-agent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn default_release(root: &str, suite: &str, now: DateTime<Utc>) -> Vec<(String, String)> {
    let security = root == "debian-security" || suite.ends_with("-security");
    let codename = suite;
    let alias = match suite {
        "trixie" => "stable".to_string(),
        s => match s.strip_prefix("trixie-") {
            Some(kind) => format!("stable-{kind}"),
            None => s.to_string(),
        },
    };
    let version = match suite {
        "trixie" => Some("13.1"),
        "trixie-security" => Some("13"),
        _ => None,
    };
    let description = match suite {
        "trixie" => "Debian 13.1 (rebake test archive)".to_string(),
        "trixie-security" => "Debian 13 - Security Updates (rebake test archive)".to_string(),
        "trixie-updates" => "Debian 13 - Updates (rebake test archive)".to_string(),
        s => format!("Debian {s} (rebake test archive)"),
    };
    let mut fields: Vec<(String, String)> = vec![
        ("Origin".into(), "Debian".into()),
        (
            "Label".into(),
            if security {
                "Debian-Security"
            } else {
                "Debian"
            }
            .into(),
        ),
        ("Suite".into(), alias),
    ];
    if let Some(v) = version {
        fields.push(("Version".into(), v.into()));
    }
    fields.extend([
        ("Codename".into(), codename.into()),
        ("Date".into(), debian_date(now)),
        ("Valid-Until".into(), debian_date(now + Duration::days(7))),
    ]);
    if suite.ends_with("-backports") {
        fields.push(("NotAutomatic".into(), "yes".into()));
        fields.push(("ButAutomaticUpgrades".into(), "yes".into()));
    }
    fields.extend([
        ("Acquire-By-Hash".into(), "yes".into()),
        ("No-Support-for-Architecture-all".into(), "Packages".into()),
        ("Architectures".into(), ARCH.into()),
        ("Components".into(), COMPONENT.into()),
        ("Description".into(), description),
    ]);
    fields
}

/// A `Packages` file: stanzas sorted by package name (versions of one package in the order
/// added), each followed by a blank line; empty for no packages.
fn packages_text(pkgs: &[Pkg]) -> String {
    let mut sorted: Vec<&Pkg> = pkgs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.iter().map(|p| p.stanza() + "\n").collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
    enc.write_all(data).expect("xz");
    enc.finish().expect("xz")
}

fn write_atomic(path: &Path, data: &[u8]) {
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    fs::write(&tmp, data).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}
