//! Bounded HTTP downloads: every body is read as a stream with a running count and refused as
//! soon as it passes its limit, and every request has a connect, a read (idle) and an overall
//! timeout. An error names the URL and the limit or the timeout that ended it.
//!
//! The timeouts can be shortened (tests) or lengthened (a slow link) from the environment:
//! `REBAKE_HTTP_CONNECT_TIMEOUT`, `REBAKE_HTTP_READ_TIMEOUT`, `REBAKE_HTTP_TIMEOUT` (the
//! overall bound of one request, replacing the one sized to the file), in seconds (fractions
//! allowed).

use std::time::Duration;
use tokio::time::Instant;

pub const MIB: u64 = 1 << 20;

/// How long a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Until the TCP (and TLS) connection is up.
    pub connect: Duration,
    /// The longest wait for the answer's head or the next piece of its body.
    pub read: Duration,
    /// The whole request, head and body, for a small file.
    pub overall: Duration,
    /// Added to `overall` per MiB of an expected size ([`Timeouts::sized`]): the slowest
    /// transfer accepted (4 s per MiB: 256 KiB/s).
    pub per_mib: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
            overall: Duration::from_secs(60),
            per_mib: Duration::from_secs(4),
        }
    }
}

pub const CONNECT_TIMEOUT_ENV: &str = "REBAKE_HTTP_CONNECT_TIMEOUT";
pub const READ_TIMEOUT_ENV: &str = "REBAKE_HTTP_READ_TIMEOUT";
pub const OVERALL_TIMEOUT_ENV: &str = "REBAKE_HTTP_TIMEOUT";

impl Timeouts {
    /// The defaults, with the environment's overrides (see the module documentation). A value
    /// that is not a positive number of seconds is an error naming the variable.
    pub fn from_env() -> anyhow::Result<Timeouts> {
        let mut t = Timeouts::default();
        let read = |name: &str| -> anyhow::Result<Option<Duration>> {
            let Ok(text) = std::env::var(name) else {
                return Ok(None);
            };
            let secs: f64 = text
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0)
                .ok_or_else(|| {
                    anyhow::anyhow!("{name}={text:?} is not a positive number of seconds")
                })?;
            Ok(Some(Duration::from_secs_f64(secs)))
        };
        if let Some(d) = read(CONNECT_TIMEOUT_ENV)? {
            t.connect = d;
        }
        if let Some(d) = read(READ_TIMEOUT_ENV)? {
            t.read = d;
        }
        if let Some(d) = read(OVERALL_TIMEOUT_ENV)? {
            t.overall = d;
            t.per_mib = Duration::ZERO;
        }
        Ok(t)
    }

    /// The overall bound for a body of `size` bytes: `overall` plus `per_mib` for each MiB.
    pub fn sized(&self, size: u64) -> Duration {
        let mib = size.div_ceil(MIB);
        self.overall + self.per_mib.saturating_mul(mib.min(u32::MAX as u64) as u32)
    }

    /// A client with these connect and read timeouts (the overall bound is per request, see
    /// [`send`]).
    pub fn client(&self) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .user_agent(concat!("rebake/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect)
            .read_timeout(self.read)
            .build()
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// Why a download failed. The message names the URL and what ended it.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cannot fetch {url}: connect timeout: no connection within {}", secs(*.after))]
    ConnectTimeout { url: String, after: Duration },
    #[error("cannot fetch {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("cannot fetch {url}: read timeout: nothing received for {}", secs(*.after))]
    ReadTimeout { url: String, after: Duration },
    #[error("cannot fetch {url}: overall timeout: not complete within {}", secs(*.after))]
    OverallTimeout { url: String, after: Duration },
    #[error("cannot fetch {url}: more than {limit} bytes ({what}); refusing it")]
    TooLarge {
        url: String,
        limit: u64,
        what: String,
    },
    #[error("cannot fetch {url}: {detail}")]
    Other { url: String, detail: String },
}

impl DownloadError {
    /// A failure to reach the server at all (worth a retry).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            DownloadError::Connect { .. } | DownloadError::ConnectTimeout { .. }
        )
    }

    fn from_reqwest(e: reqwest::Error, url: &str, t: &Timeouts) -> DownloadError {
        let url = url.to_string();
        if e.is_connect() && (e.is_timeout() || chain(&e).contains("timed out")) {
            DownloadError::ConnectTimeout {
                url,
                after: t.connect,
            }
        } else if e.is_connect() {
            DownloadError::Connect {
                url,
                detail: chain(&e),
            }
        } else if e.is_timeout() {
            DownloadError::ReadTimeout { url, after: t.read }
        } else {
            DownloadError::Other {
                url,
                detail: chain(&e),
            }
        }
    }
}

/// An error and its causes, `: `-separated (reqwest's and octocrab's own messages leave out
/// the cause, like "connection refused" or a read timeout).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Which timeout ended a wait that may not pass `deadline`.
fn waited_out(url: &str, t: &Timeouts, deadline: Instant, overall: Duration) -> DownloadError {
    if Instant::now() >= deadline {
        DownloadError::OverallTimeout {
            url: url.to_string(),
            after: overall,
        }
    } else {
        DownloadError::ReadTimeout {
            url: url.to_string(),
            after: t.read,
        }
    }
}

/// Sends `request` and waits for the answer's head: at most the connect plus the read timeout,
/// and never past `deadline` (which `overall` after the start is).
pub async fn send(
    request: reqwest::RequestBuilder,
    url: &str,
    t: &Timeouts,
    deadline: Instant,
    overall: Duration,
) -> Result<reqwest::Response, DownloadError> {
    let head_by = deadline.min(Instant::now() + t.connect + t.read);
    match tokio::time::timeout_at(head_by, request.send()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(DownloadError::from_reqwest(e, url, t)),
        Err(_) => Err(waited_out(url, t, deadline, overall)),
    }
}

/// Reads `response`'s body, at most `limit` bytes (`what` says whose limit, for the error),
/// each piece within the read timeout and the whole by `deadline`.
pub async fn read_body(
    mut response: reqwest::Response,
    url: &str,
    limit: u64,
    what: &str,
    t: &Timeouts,
    deadline: Instant,
    overall: Duration,
) -> Result<Vec<u8>, DownloadError> {
    let too_large = || DownloadError::TooLarge {
        url: url.to_string(),
        limit,
        what: what.to_string(),
    };
    let announced = response.content_length();
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(announced.unwrap_or(0).min(limit).min(64 * MIB) as usize);
    loop {
        let by = deadline.min(Instant::now() + t.read);
        let piece = match tokio::time::timeout_at(by, response.chunk()).await {
            Ok(Ok(piece)) => piece,
            Ok(Err(e)) => return Err(DownloadError::from_reqwest(e, url, t)),
            Err(_) => return Err(waited_out(url, t, deadline, overall)),
        };
        let Some(piece) = piece else {
            return Ok(body);
        };
        if (body.len() + piece.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&piece);
    }
}

/// Reads a local file of at most `limit` bytes.
pub fn read_file(path: &std::path::Path, limit: u64, what: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut body = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut body)?;
    if body.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "{} is larger than {limit} bytes ({what})",
            path.display()
        )));
    }
    Ok(body)
}

/// GETs `url` (no retries) and returns its body: at most `limit` bytes, within `t`'s
/// timeouts. Anything but a 2xx answer is an error naming the URL and the status.
pub async fn get(
    client: &reqwest::Client,
    url: &str,
    limit: u64,
    what: &str,
    t: &Timeouts,
) -> anyhow::Result<Vec<u8>> {
    let started = Instant::now();
    let response = send(client.get(url), url, t, started + t.overall, t.overall).await?;
    if !response.status().is_success() {
        anyhow::bail!("cannot fetch {url}: HTTP {}", response.status());
    }
    // The whole download is bounded by the size it announces, else by the limit.
    let overall = t.sized(response.content_length().unwrap_or(limit).min(limit));
    let deadline = started + overall;
    Ok(read_body(response, url, limit, what, t, deadline, overall).await?)
}
