//! Fetching a suite the way apt would trust it: `InRelease` by conditional GET, OpenPGP
//! verified, `Valid-Until` and replay (`Date` going backwards) refused; then each `Packages`
//! index (by-hash when advertised, `.xz` preferred) accepted only when its size and SHA256
//! match the verified Release. Parsed indices are cached in the state directory keyed by that
//! SHA256, so an unchanged archive costs one conditional request per suite and no parsing.

use super::index::{decode_cache, encode_cache, SuiteIndex, SuiteMeta};
use super::release::{parse_date, Release};
use super::sources::SuiteSource;
use super::{packages, verify};
use crate::download::{self, Timeouts};
use crate::output::Progress;
use crate::redact::UrlCredentials;
use crate::state::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The largest InRelease accepted (Debian's main suite's is about 150 KB).
pub const INRELEASE_LIMIT: u64 = 16 * download::MIB;

/// Counters a caller (or benchmark) can read after fetching.
#[derive(Debug, Default)]
pub struct FetchStats {
    pub requests: AtomicUsize,
    pub not_modified: AtomicUsize,
    pub indices_downloaded: AtomicUsize,
    pub indices_parsed: AtomicUsize,
    pub indices_from_cache: AtomicUsize,
    pub bytes_downloaded: AtomicUsize,
}

/// What the state directory remembers about a suite between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SuiteState {
    etag: Option<String>,
    last_modified: Option<String>,
    /// The newest verified `Date` seen: an older one later means replay or rollback.
    date: Option<String>,
}

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    timeouts: Timeouts,
    state_dir: PathBuf,
    pub stats: Arc<FetchStats>,
    progress: Progress,
    /// The clock used for `Valid-Until`; a parameter so tests can move it.
    pub now: DateTime<Utc>,
    /// Credentials for archives whose `.sources` URI held them, by the archive's URI (with a
    /// trailing `/`): sent as HTTP Basic to URLs under it, never part of a URL.
    credentials: Arc<std::sync::Mutex<Vec<(String, UrlCredentials)>>>,
}

enum Body {
    NotModified,
    Found {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    Missing,
}

impl Fetcher {
    /// A fetcher with the default timeouts and the environment's overrides
    /// ([`Timeouts::from_env`]).
    pub fn new(state_dir: &Path, progress: Progress) -> Result<Fetcher> {
        Fetcher::with_timeouts(state_dir, progress, Timeouts::from_env()?)
    }

    pub fn with_timeouts(
        state_dir: &Path,
        progress: Progress,
        timeouts: Timeouts,
    ) -> Result<Fetcher> {
        let client = timeouts.client().context("cannot create HTTP client")?;
        Ok(Fetcher {
            client,
            timeouts,
            state_dir: state_dir.to_path_buf(),
            stats: Arc::default(),
            progress,
            now: Utc::now(),
            credentials: Arc::default(),
        })
    }

    fn suite_dir(&self, src: &SuiteSource) -> PathBuf {
        self.state_dir.join("suites").join(src.state_key())
    }

    fn cache_path(&self, sha256: &str) -> PathBuf {
        self.state_dir.join("indices").join(format!("{sha256}.tsv"))
    }

    /// GET with optional conditional headers, the body read up to `limit` bytes (`what` names
    /// whose limit) within the timeouts, the overall one sized to the size the answer
    /// announces, else to `limit`. `file:` URLs read
    /// the disk. Connection failures and 5xx answers are tried up to three times; a timeout
    /// or an oversized body is not (a stalled mirror would only hold the job longer).
    async fn get(
        &self,
        url: &str,
        cond: Option<&SuiteState>,
        limit: u64,
        what: &str,
    ) -> Result<Body> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(path) = url.strip_prefix("file://") {
            return match download::read_file(Path::new(path), limit, what) {
                Ok(bytes) => Ok(Body::Found {
                    bytes,
                    etag: None,
                    last_modified: None,
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Body::Missing),
                Err(e) => Err(anyhow!("cannot read {path}: {e}")),
            };
        }
        let t = &self.timeouts;
        let overall = t.sized(limit);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.client.get(url);
            let credentials = self
                .credentials
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|(prefix, _)| url.starts_with(prefix.as_str()))
                .map(|(_, c)| c.clone());
            if let Some(c) = credentials {
                req = req.basic_auth(c.user, Some(c.password));
            }
            if let Some(c) = cond {
                if let Some(e) = &c.etag {
                    req = req.header(reqwest::header::IF_NONE_MATCH, e);
                }
                if let Some(m) = &c.last_modified {
                    req = req.header(reqwest::header::IF_MODIFIED_SINCE, m);
                }
            }
            let started = tokio::time::Instant::now();
            let deadline = started + overall;
            let resp = match download::send(req, url, t, deadline, overall).await {
                Ok(r) => r,
                Err(e) if attempt < 3 && e.is_connect() => {
                    tokio::time::sleep(Duration::from_millis(300 * attempt)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let status = resp.status();
            if status.is_server_error() && attempt < 3 {
                tokio::time::sleep(Duration::from_millis(300 * attempt)).await;
                continue;
            }
            if status == reqwest::StatusCode::NOT_MODIFIED {
                self.stats.not_modified.fetch_add(1, Ordering::Relaxed);
                return Ok(Body::NotModified);
            }
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(Body::Missing);
            }
            if !status.is_success() {
                bail!("cannot fetch {url}: HTTP {status}");
            }
            let header = |h: reqwest::header::HeaderName| {
                resp.headers()
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let etag = header(reqwest::header::ETAG);
            let last_modified = header(reqwest::header::LAST_MODIFIED);
            // A smaller size announced: the overall bound is sized to it.
            let (deadline, overall) = match resp.content_length() {
                Some(size) if size < limit => (started + t.sized(size), t.sized(size)),
                _ => (deadline, overall),
            };
            let bytes = download::read_body(resp, url, limit, what, t, deadline, overall).await?;
            self.stats
                .bytes_downloaded
                .fetch_add(bytes.len(), Ordering::Relaxed);
            return Ok(Body::Found {
                bytes,
                etag,
                last_modified,
            });
        }
    }

    /// Fetches and verifies one suite's indices for `arch`.
    pub async fn fetch_suite(&self, src: &SuiteSource, arch: &str) -> Result<SuiteIndex> {
        let base = src.dists_url();
        if let Some(credentials) = &src.credentials {
            let prefix = format!("{}/", src.uri.trim_end_matches('/'));
            let mut known = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
            if !known.iter().any(|(p, _)| *p == prefix) {
                known.push((prefix, credentials.clone()));
            }
        }
        let inrelease_url = format!("{base}InRelease");
        let dir = self.suite_dir(src);
        let state_file = dir.join("state.json");
        let cached_inrelease = dir.join("InRelease");
        let state: SuiteState = std::fs::read(&state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let have_cached = cached_inrelease.exists();
        let (raw, etag, last_modified) = match self
            .get(
                &inrelease_url,
                have_cached.then_some(&state),
                INRELEASE_LIMIT,
                "the limit for an InRelease file",
            )
            .await?
        {
            Body::NotModified => (
                std::fs::read(&cached_inrelease).with_context(|| {
                    format!("cannot read cached {}", cached_inrelease.display())
                })?,
                state.etag.clone(),
                state.last_modified.clone(),
            ),
            Body::Found {
                bytes,
                etag,
                last_modified,
            } => (bytes, etag, last_modified),
            Body::Missing => bail!(
                "{inrelease_url} does not exist (rebake needs a signed InRelease; check the suite name in {})",
                src.origin
            ),
        };
        let text = verify::verify_clearsigned(&raw, &src.signed_by, &inrelease_url)?;
        let release =
            Release::parse(&text).with_context(|| format!("in verified {inrelease_url}"))?;
        if let Some(until) = release.valid_until {
            if until < self.now {
                bail!(
                    "{inrelease_url} expired: Valid-Until {} is in the past (a stale or frozen mirror; refusing its data)",
                    until.to_rfc2822()
                );
            }
        }
        if let Some(seen) = state.date.as_deref().and_then(|d| parse_date(d).ok()) {
            if release.date < seen {
                bail!(
                    "{inrelease_url} is older than one already seen: Date {} < {} (replay or rollback; refusing it)",
                    release.date_text,
                    state.date.as_deref().unwrap_or_default()
                );
            }
        }
        let mut packages = Vec::new();
        for component in &src.components {
            let part = self
                .fetch_packages(&base, &release, component, arch)
                .await
                .with_context(|| format!("{base}: {component}/binary-{arch}"))?;
            packages.extend(part);
        }
        // Only now, with everything verified, remember what was seen.
        let new_state = SuiteState {
            etag,
            last_modified,
            date: Some(release.date_text.clone()),
        };
        if !have_cached || std::fs::read(&cached_inrelease).ok().as_deref() != Some(&raw[..]) {
            write_atomic(&cached_inrelease, &raw)?;
        }
        write_atomic(&state_file, &serde_json::to_vec_pretty(&new_state)?)?;
        Ok(SuiteIndex {
            meta: SuiteMeta {
                uri: src.uri.clone(),
                suite: src.suite.clone(),
                label: release.label.clone(),
                date: release.date_text.clone(),
                inrelease_sha256: crate::state::sha256_hex(&raw),
                security: release.is_security(&src.suite),
                pin: release.default_pin(),
            },
            packages,
        })
    }

    /// Downloads one component's Packages index, verified against the Release (size and
    /// SHA256) and uncompressed. Returns the index's SHA256 and its text.
    pub async fn download_packages(
        &self,
        base: &str,
        release: &Release,
        component: &str,
        arch: &str,
    ) -> Result<(String, Vec<u8>)> {
        let (path, name, expected) = choose_index(release, component, arch)?;
        let by_hash = format!(
            "{base}{}/by-hash/SHA256/{}",
            index_dir(component, arch),
            expected.sha256
        );
        let plain = format!("{base}{path}");
        // Never more than the verified Release says the file holds.
        let what = format!(
            "the size the verified Release states for {path}: the file does not match the verified Release"
        );
        let mut body = Body::Missing;
        let mut url = plain.clone();
        if release.acquire_by_hash {
            body = self.get(&by_hash, None, expected.size, &what).await?;
            url = by_hash;
        }
        if matches!(body, Body::Missing) {
            body = self.get(&plain, None, expected.size, &what).await?;
            url = plain;
        }
        let Body::Found { bytes, .. } = body else {
            bail!("{url} does not exist although the verified Release lists it");
        };
        self.stats
            .indices_downloaded
            .fetch_add(1, Ordering::Relaxed);
        if bytes.len() as u64 != expected.size {
            bail!(
                "{url}: size {} does not match the verified Release ({}); refusing it",
                bytes.len(),
                expected.size
            );
        }
        let got = crate::state::sha256_hex(&bytes);
        if got != expected.sha256 {
            bail!(
                "{url}: SHA256 {got} does not match the verified Release ({}); refusing it",
                expected.sha256
            );
        }
        // Uncompressed, no larger than the Release lists the plain file, else than the limit.
        let limit = release
            .sha256
            .get(&format!("{}/Packages", index_dir(component, arch)))
            .map_or(PACKAGES_UNCOMPRESSED_LIMIT, |plain| plain.size);
        let text = tokio::task::spawn_blocking(move || decompress(name, &bytes, limit))
            .await?
            .with_context(|| url.clone())?;
        Ok((expected.sha256, text))
    }

    async fn fetch_packages(
        &self,
        base: &str,
        release: &Release,
        component: &str,
        arch: &str,
    ) -> Result<Vec<packages::BinaryPackage>> {
        let (_, _, expected) = choose_index(release, component, arch)?;
        let cache = self.cache_path(&expected.sha256);
        if let Ok(bytes) = std::fs::read(&cache) {
            if let Ok(p) = decode_cache(&bytes) {
                self.stats
                    .indices_from_cache
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(p);
            }
        }
        let _spinner = self
            .progress
            .spinner(&format!("{base}: {component}/binary-{arch}"));
        let (_, text) = self
            .download_packages(base, release, component, arch)
            .await?;
        let parsed = tokio::task::spawn_blocking(move || packages::parse(&text))
            .await?
            .map_err(|e| anyhow!("{base}{}/Packages: {e}", index_dir(component, arch)))?;
        self.stats.indices_parsed.fetch_add(1, Ordering::Relaxed);
        write_atomic(&cache, &encode_cache(&parsed))?;
        Ok(parsed)
    }
}

fn index_dir(component: &str, arch: &str) -> String {
    format!("{component}/binary-{arch}")
}

/// The Packages file to fetch: `.xz` preferred, then `.gz`, then plain, as listed in the
/// verified Release.
fn choose_index(
    release: &Release,
    component: &str,
    arch: &str,
) -> Result<(String, &'static str, super::release::IndexFile)> {
    let dir = index_dir(component, arch);
    ["Packages.xz", "Packages.gz", "Packages"]
        .iter()
        .find_map(|name| {
            let path = format!("{dir}/{name}");
            release.sha256.get(&path).map(|f| (path, *name, f.clone()))
        })
        .ok_or_else(|| anyhow!("the verified Release lists no Packages index for {dir}"))
}

/// The largest uncompressed Packages file accepted when the Release does not list its size
/// (Debian's largest, main/binary-amd64 of a release, is about 60 MB).
pub const PACKAGES_UNCOMPRESSED_LIMIT: u64 = 1024 * download::MIB;

/// Uncompresses an index by its file name, refusing more than `limit` bytes of output.
pub fn decompress(name: &str, bytes: &[u8], limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity((bytes.len() * 6).min(limit as usize));
    let read = if name.ends_with(".xz") {
        liblzma::read::XzDecoder::new(bytes)
            .take(limit + 1)
            .read_to_end(&mut out)
            .context("xz data is corrupt")?
    } else if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(bytes)
            .take(limit + 1)
            .read_to_end(&mut out)
            .context("gzip data is corrupt")?
    } else {
        out.extend_from_slice(bytes);
        bytes.len()
    };
    if read as u64 > limit {
        bail!("uncompressed, {name} holds more than {limit} bytes; refusing it");
    }
    Ok(out)
}

/// Fetches every suite of a release concurrently and merges them.
pub async fn fetch_release(
    fetcher: &Fetcher,
    release: &str,
    arch: &str,
    suites: &[SuiteSource],
) -> Result<super::index::ReleaseIndex> {
    let mut set = tokio::task::JoinSet::new();
    for (n, s) in suites.iter().enumerate() {
        let f = fetcher.clone();
        let s = s.clone();
        let arch = arch.to_string();
        set.spawn(async move { (n, f.fetch_suite(&s, &arch).await) });
    }
    let mut results: Vec<Option<SuiteIndex>> = vec![None; suites.len()];
    while let Some(joined) = set.join_next().await {
        let (n, r) = joined.context("fetch task failed")?;
        results[n] = Some(r?);
    }
    Ok(super::index::ReleaseIndex::new(
        release,
        arch,
        results.into_iter().flatten().collect(),
    ))
}

#[cfg(test)]
mod credential_tests {
    use super::*;

    #[tokio::test]
    async fn a_mirror_password_never_appears_in_fetch_errors() {
        let text = "Types: deb\nURIs: http://mirror:S3CRET@127.0.0.1:9/debian\nSuites: trixie\n\
                    Components: main\n";
        let entries = super::super::sources::parse(text, "c.sources").unwrap();
        let suites = super::super::sources::suites_for_release(&entries, "trixie").unwrap();
        let state = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::new(state.path(), Progress::auto(false)).unwrap();
        let e = fetch_release(&fetcher, "trixie", "amd64", &suites)
            .await
            .unwrap_err();
        let text = format!("{e:#} {e:?}");
        assert!(!text.contains("S3CRET"), "{text}");
        assert!(text.contains("127.0.0.1:9"), "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn decompression_stops_at_the_limit() {
        let zeros = vec![0u8; 4 << 20];
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&zeros).unwrap();
        let xz = xz.finish().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&zeros).unwrap();
        let gz = gz.finish().unwrap();
        for (name, data) in [("Packages.xz", &xz), ("Packages.gz", &gz)] {
            assert_eq!(decompress(name, data, 4 << 20).unwrap().len(), 4 << 20);
            let err = decompress(name, data, 1 << 20).unwrap_err().to_string();
            assert!(err.contains("more than 1048576 bytes"), "{err}");
            assert!(err.contains(name), "{err}");
        }
    }
}
