//! apt's deb822 `.sources` format: which archives to read and which keyring signs each.

use super::deb822;
use crate::redact::{redact_url, split_credentials, UrlCredentials};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Debian's archive keyring, the default when a source has no `Signed-By`.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Where apt keeps deb822 sources.
pub const HOST_SOURCES_DIR: &str = "/etc/apt/sources.list.d";

/// Which keys may sign a source's `InRelease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedBy {
    /// Keyring files (binary or ASCII-armored).
    Files(Vec<PathBuf>),
    /// An ASCII-armored key block written inline in the `.sources` file.
    Inline(String),
}

/// One `deb` paragraph of a `.sources` file.
#[derive(Debug, Clone)]
pub struct SourceEntry {
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub architectures: Vec<String>,
    pub signed_by: SignedBy,
    /// Where the entry was written, for messages.
    pub origin: String,
}

/// One archive suite to fetch: the unit the scan verifies and caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteSource {
    /// The archive's URI without credentials: shown in messages, written in locks.
    pub uri: String,
    /// Credentials the `.sources` file wrote into the URI (`http://user:pw@host/…`): sent to
    /// the mirror, never shown or stored.
    pub credentials: Option<UrlCredentials>,
    pub suite: String,
    pub components: Vec<String>,
    pub signed_by: SignedBy,
    pub origin: String,
}

impl SuiteSource {
    /// `<uri>/dists/<suite>/`.
    pub fn dists_url(&self) -> String {
        format!("{}/dists/{}/", self.uri.trim_end_matches('/'), self.suite)
    }
    /// A stable key naming this suite in the state directory.
    pub fn state_key(&self) -> String {
        let s: String = format!("{}_{}", self.uri, self.suite)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        s.trim_matches('_').to_string()
    }
}

fn words(v: Option<&str>) -> Vec<String> {
    v.map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Parses one `.sources` text; `origin` names it in errors. Only `deb` entries that are not
/// `Enabled: no` are returned.
pub fn parse(text: &str, origin: &str) -> Result<Vec<SourceEntry>> {
    let paragraphs = deb822::parse(text).map_err(|e| anyhow::anyhow!("{origin}:{e}"))?;
    let mut out = Vec::new();
    for p in paragraphs {
        let at = format!("{origin}:{}", p.line);
        let types = words(p.get("Types"));
        if types.is_empty() {
            bail!("{at}: source entry has no 'Types' field (add 'Types: deb')");
        }
        if !types.iter().any(|t| t == "deb") {
            continue;
        }
        if p.get("Enabled")
            .is_some_and(|v| v.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let uris = words(p.get("URIs"));
        let suites = words(p.get("Suites"));
        if uris.is_empty() {
            bail!("{at}: source entry has no 'URIs' field");
        }
        if suites.is_empty() {
            bail!("{at}: source entry has no 'Suites' field");
        }
        for u in &uris {
            if !(u.starts_with("http://") || u.starts_with("https://") || u.starts_with("file:/")) {
                bail!(
                    "{at}: URI {:?} is not http(s) or file (rebake reads archives over HTTP(S) or \
                     from disk)",
                    redact_url(u)
                );
            }
        }
        let mut components = words(p.get("Components"));
        if components.is_empty() {
            // A flat repository ("Suites: ./") has no components; rebake needs dists/ layout.
            bail!("{at}: source entry has no 'Components' field (flat repositories are not supported)");
        }
        components.dedup();
        let signed_by = match p.get("Signed-By") {
            None => SignedBy::Files(vec![PathBuf::from(DEFAULT_KEYRING)]),
            Some(v) if v.contains("BEGIN PGP PUBLIC KEY BLOCK") => SignedBy::Inline(v.to_string()),
            Some(v) => SignedBy::Files(v.split_whitespace().map(PathBuf::from).collect()),
        };
        out.push(SourceEntry {
            uris,
            suites,
            components,
            architectures: words(p.get("Architectures")),
            signed_by,
            origin: at,
        });
    }
    Ok(out)
}

pub fn read_file(path: &Path) -> Result<Vec<SourceEntry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read sources file {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// The host's apt sources: every `*.sources` file in `/etc/apt/sources.list.d`.
pub fn read_host() -> Result<Vec<SourceEntry>> {
    read_dir(Path::new(HOST_SOURCES_DIR))
}

pub fn read_dir(dir: &Path) -> Result<Vec<SourceEntry>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read apt sources directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sources"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(read_file(&f)?);
    }
    if out.is_empty() {
        bail!(
            "no deb822 apt sources found in {} (write a .sources file, or pass --sources FILE)",
            dir.display()
        );
    }
    Ok(out)
}

/// A suite's release family: `trixie-security` → `trixie`.
pub fn family(suite: &str) -> &str {
    suite.split('-').next().unwrap_or(suite)
}

/// The suites to read for one Debian release (e.g. `trixie`): every listed suite of that
/// release (`trixie`, `trixie-updates`, `trixie-security`, ...). When the sources name no suite
/// of that release — the host runs bookworm, the image is trixie — the suites of the first
/// listed release are re-pointed at it on the same mirrors (`bookworm-security` →
/// `trixie-security`); sources of other families (third-party repositories) are left out.
pub fn suites_for_release(entries: &[SourceEntry], release: &str) -> Result<Vec<SuiteSource>> {
    let has_release = entries
        .iter()
        .flat_map(|e| &e.suites)
        .any(|s| family(s) == release);
    let from = if has_release {
        release.to_string()
    } else {
        match entries.first().and_then(|e| e.suites.first()) {
            Some(s) => family(s).to_string(),
            None => bail!("the apt sources list no suites"),
        }
    };
    let mut out: Vec<SuiteSource> = Vec::new();
    for e in entries {
        for s in &e.suites {
            if family(s) != from {
                continue;
            }
            let suite = format!("{release}{}", &s[from.len()..]);
            for uri in &e.uris {
                let (uri, credentials) = split_credentials(uri);
                let candidate = SuiteSource {
                    uri: uri.trim_end_matches('/').to_string(),
                    credentials,
                    suite: suite.clone(),
                    components: e.components.clone(),
                    signed_by: e.signed_by.clone(),
                    origin: e.origin.clone(),
                };
                if !out
                    .iter()
                    .any(|o| o.uri == candidate.uri && o.suite == candidate.suite)
                {
                    out.push(candidate);
                }
            }
        }
    }
    if out.is_empty() {
        bail!("the apt sources name no suite of release {release:?}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
Types: deb\nURIs: https://third.example/node\nSuites: nodistro\nComponents: main\nSigned-By: /usr/share/keyrings/other.gpg\n";

    #[test]
    fn maps_host_release_to_image_release() {
        let e = parse(HOST, "host.sources").unwrap();
        assert_eq!(e.len(), 3);
        let s = suites_for_release(&e, "trixie").unwrap();
        let names: Vec<_> = s.iter().map(|s| s.suite.as_str()).collect();
        assert_eq!(names, ["trixie", "trixie-updates", "trixie-security"]);
        assert_eq!(s[2].uri, "http://mirror.example/debian-security");
        let s = suites_for_release(&e, "bookworm").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0].dists_url(),
            "http://mirror.example/debian/dists/bookworm/"
        );
    }

    #[test]
    fn credentials_in_a_uri_are_kept_apart() {
        let text = "Types: deb\nURIs: http://mirror:S3CRET@127.0.0.1:9/debian\nSuites: trixie\n\
                    Components: main\n";
        let s = suites_for_release(&parse(text, "c.sources").unwrap(), "trixie").unwrap();
        assert_eq!(s[0].uri, "http://127.0.0.1:9/debian");
        assert_eq!(s[0].credentials.as_ref().unwrap().password, "S3CRET");
        assert!(!format!("{:?}", s[0]).contains("S3CRET"));
        let e = parse(&text.replace("http:", "ftp:"), "c.sources").unwrap_err();
        assert!(!e.to_string().contains("S3CRET"), "{e}");
    }

    #[test]
    fn missing_fields_name_the_place() {
        let e = parse("Types: deb\nSuites: x\nComponents: main\n", "f.sources").unwrap_err();
        assert!(e.to_string().contains("f.sources:1"), "{e}");
        assert!(e.to_string().contains("URIs"), "{e}");
    }
}
