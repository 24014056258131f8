//! What every forge client shares: turning an HTTP answer into a [`ForgeError`] a caller can
//! branch on, and retrying with backoff (5xx, timeouts) or after a rate limit's reset.

use super::{ForgeError, ForgeResult};
use reqwest::header::HeaderMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// First backoff delay; doubled each retry.
    pub base_delay: Duration,
    /// A rate limit that resets later than this is an error, not a wait.
    pub max_wait: Duration,
    /// Until the connection to the forge is up.
    pub connect_timeout: Duration,
    /// The longest wait for the next piece of an answer (a stalled forge).
    pub read_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_wait: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// How long a 429/403 rate-limit answer asks to wait: `Retry-After` (seconds), else
/// `X-RateLimit-Reset` (epoch seconds) when `X-RateLimit-Remaining` is 0.
pub fn rate_limit_wait(status: u16, headers: &HeaderMap) -> Option<Duration> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(secs) = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        if status == 429 || status == 403 || status == 503 {
            return Some(Duration::from_secs(secs));
        }
    }
    if (status == 429 || status == 403) && header("x-ratelimit-remaining") == Some("0") {
        let reset = header("x-ratelimit-reset")?.trim().parse::<u64>().ok()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    if status == 429 {
        return Some(Duration::from_secs(1));
    }
    None
}

/// Classifies a non-success answer. `permission` says what the token needs, for 401/403.
/// The `message` of a forge's JSON error body, or the body as it is.
pub fn api_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.to_string())
}

pub fn classify(
    forge: &str,
    status: u16,
    headers: &HeaderMap,
    body: &str,
    permission: &str,
) -> ForgeError {
    let forge = forge.to_string();
    // Forge messages are short JSON; keep errors one line and bounded.
    let message: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let message: String = message.chars().take(300).collect();
    if let Some(retry_after) = rate_limit_wait(status, headers) {
        return ForgeError::RateLimited { forge, retry_after };
    }
    match status {
        401 | 403 => ForgeError::Unauthorized {
            forge,
            status,
            permission: permission.to_string(),
        },
        404 => ForgeError::NotFound {
            forge,
            what: message,
        },
        409 => ForgeError::Conflict { forge, message },
        500..=599 => ForgeError::Server {
            forge,
            status,
            attempts: 1,
            message,
        },
        _ => ForgeError::Invalid {
            forge,
            status,
            message,
        },
    }
}

/// Runs `op` until it succeeds, retrying server errors and network failures with exponential
/// backoff and waiting out rate limits, within `policy`.
pub async fn with_retries<T, F, Fut>(policy: &RetryPolicy, mut op: F) -> ForgeResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ForgeResult<T>>,
{
    let mut attempt = 1;
    let mut delay = policy.base_delay;
    loop {
        let err = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if attempt >= policy.max_attempts {
            return Err(match err {
                ForgeError::Server {
                    forge,
                    status,
                    message,
                    ..
                } => ForgeError::Server {
                    forge,
                    status,
                    attempts: attempt,
                    message,
                },
                e => e,
            });
        }
        match &err {
            ForgeError::RateLimited { retry_after, .. } if *retry_after <= policy.max_wait => {
                tracing::warn!("{err}; waiting");
                tokio::time::sleep(*retry_after).await;
            }
            ForgeError::Server { .. } | ForgeError::Network { .. } => {
                tracing::warn!("{err}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            _ => return Err(err),
        }
        attempt += 1;
    }
}
