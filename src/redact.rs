//! Secrets in URLs: `https://user:password@host/…` (a git remote, an apt mirror) must reach
//! neither a message nor a file rebake writes (a lock, a workspace's git config). Shared by
//! git, the archive sources and the build stage.

/// `url` without a password (or token) in its user part: `https://user:pw@host/x` →
/// `https://user:***@host/x`, `https://token@host/x` → `https://***@host/x`. scp-like ssh
/// addresses (`git@host:x`) and paths are returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((rest_start, authority)) = split_authority(url) else {
        return url.to_owned();
    };
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        // A lone user part over http(s) is usually a token; over ssh it is the login.
        None if is_http(url) => "***".to_owned(),
        None => userinfo.to_owned(),
    };
    format!(
        "{}{}{}",
        &url[..rest_start],
        redacted,
        &url[rest_start + at..]
    )
}

/// The part of `url`'s user info that [`redact_url`] hides, if any.
pub fn url_secret(url: &str) -> Option<String> {
    let (_, authority) = split_authority(url)?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    match userinfo.split_once(':') {
        Some((_, password)) => Some(password.to_owned()),
        None if is_http(url) => Some(userinfo.to_owned()),
        None => None,
    }
    .filter(|s| !s.is_empty())
}

/// Credentials that were written into a URL's user part.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlCredentials {
    pub user: String,
    /// Empty when the URL held a user part only (over http(s), usually a token).
    pub password: String,
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UrlCredentials({}:<redacted>)", self.user)
    }
}

/// `url` with the secret of its user part taken out, and the credentials it held: over
/// http(s) the whole user part goes (`https://user:pw@host/x` → `https://host/x`); over other
/// schemes the login stays and only a password goes (`ssh://git:pw@host/x` →
/// `ssh://git@host/x`). None when there was no secret.
pub fn split_credentials(url: &str) -> (String, Option<UrlCredentials>) {
    let Some((rest_start, authority)) = split_authority(url) else {
        return (url.to_owned(), None);
    };
    let Some(at) = authority.rfind('@') else {
        return (url.to_owned(), None);
    };
    let userinfo = &authority[..at];
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let after = &url[rest_start + at + 1..];
    if is_http(url) {
        let credentials = UrlCredentials {
            user: percent_decode(user),
            password: password.map(percent_decode).unwrap_or_default(),
        };
        (format!("{}{after}", &url[..rest_start]), Some(credentials))
    } else {
        match password {
            Some(password) => (
                format!("{}{user}@{after}", &url[..rest_start]),
                Some(UrlCredentials {
                    user: percent_decode(user),
                    password: percent_decode(password),
                }),
            ),
            None => (url.to_owned(), None),
        }
    }
}

/// `url` (without credentials) with `credentials` written into its user part, percent-encoded:
/// the form apt reads (`http://user:pw@host/…`). Only for files given to apt, never shown.
pub fn with_credentials(url: &str, credentials: &UrlCredentials) -> String {
    let Some((rest_start, _)) = split_authority(url) else {
        return url.to_owned();
    };
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let userinfo = if credentials.password.is_empty() {
        encode(&credentials.user)
    } else {
        format!(
            "{}:{}",
            encode(&credentials.user),
            encode(&credentials.password)
        )
    };
    format!("{}{userinfo}@{}", &url[..rest_start], &url[rest_start..])
}

/// `text` with every non-empty secret replaced by `***`.
pub fn scrub<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        if !secret.is_empty() {
            text = text.replace(secret, "***");
        }
    }
    text
}

fn is_http(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// `%XX` escapes of a URL's user part decoded (`p%40ss` → `p@ss`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` split after `scheme://`, and the authority (`user@host:port`) that follows.
fn split_authority(url: &str) -> Option<(usize, &str)> {
    let rest_start = url.find("://")? + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    Some((rest_start, &rest[..authority_end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_off_urls() {
        let (url, c) = split_credentials("https://x-access-token:S%40CRET@host:8443/o/r.git");
        assert_eq!(url, "https://host:8443/o/r.git");
        let c = c.unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("x-access-token", "S@CRET")
        );
        assert!(!format!("{c:?}").contains("S@CRET"));
        let (url, c) = split_credentials("http://tok@host/debian");
        assert_eq!(
            (url.as_str(), c.unwrap().user.as_str()),
            ("http://host/debian", "tok")
        );
        let (url, c) = split_credentials("ssh://git:pw@host/o/r.git");
        assert_eq!(
            (url.as_str(), c.unwrap().password.as_str()),
            ("ssh://git@host/o/r.git", "pw")
        );
        for plain in [
            "ssh://git@host/o/r.git",
            "git@host:o/r.git",
            "/srv/r.git",
            "https://h/x",
        ] {
            assert_eq!(split_credentials(plain), (plain.to_owned(), None));
        }
        assert_eq!(scrub("a pw b", ["pw", ""]), "a *** b");
        let (url, c) = split_credentials("https://u:p%40ss@host/debian");
        assert_eq!(
            with_credentials(&url, &c.unwrap()),
            "https://u:p%40ss@host/debian"
        );
    }
}
