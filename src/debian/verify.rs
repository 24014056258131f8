//! OpenPGP verification of `InRelease`, done the way apt does it: `gpgv --status-fd` against
//! the source's keyring, requiring `VALIDSIG` and no bad, expired or revoked signature.
//! Only the text gpgv prints as signed is used afterwards (the clear-sign framing ignores
//! trailing whitespace and anything outside the signed block).

use super::sources::SignedBy;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("gpgv not found ({0}); install it: apt-get install gpgv")]
    GpgvMissing(String),
    #[error("bad OpenPGP signature on {what} (key {key}): the file was altered after signing")]
    BadSignature { what: String, key: String },
    #[error("{what} is signed by key {key}, which is not in the keyring {keyring}")]
    UnknownKey {
        what: String,
        key: String,
        keyring: String,
    },
    #[error("{what} is signed by key {key}, which is expired or revoked (keyring {keyring})")]
    KeyNotUsable {
        what: String,
        key: String,
        keyring: String,
    },
    #[error("{what} carries no valid OpenPGP signature from keyring {keyring}: {detail}")]
    NotSigned {
        what: String,
        keyring: String,
        detail: String,
    },
}

/// Decodes an ASCII-armored key block to binary OpenPGP packets (what gpgv reads).
pub fn dearmor(armored: &str) -> Result<Vec<u8>> {
    let mut body = String::new();
    let mut in_block = false;
    let mut in_headers = false;
    for line in armored.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN PGP") {
            in_block = true;
            in_headers = true;
            continue;
        }
        if line.starts_with("-----END PGP") {
            break;
        }
        if !in_block {
            continue;
        }
        if in_headers {
            if line.is_empty() {
                in_headers = false;
                continue;
            }
            if line.contains(": ") {
                continue;
            }
            in_headers = false;
        }
        // A lone '.' stands for an empty line in deb822 inline keys.
        if line.starts_with('=') || line == "." || line.is_empty() {
            continue;
        }
        body.push_str(line);
    }
    if body.is_empty() {
        bail!("no ASCII-armored OpenPGP key block found");
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .context("armored key block is not valid base64")
}

/// The OpenPGP CRC-24 of `data` (RFC 4880, section 6.1): the armor checksum.
fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0x00B7_04CE;
    for &byte in data {
        crc ^= u32::from(byte) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4CFB;
            }
        }
    }
    crc & 0x00FF_FFFF
}

/// ASCII-armors binary OpenPGP key packets as one public key block (the inverse of
/// [`dearmor`]; what `gpg --export --armor` writes).
pub fn armor(packets: &[u8]) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let body = engine.encode(packets);
    let mut out = String::from("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push('=');
    out.push_str(&engine.encode(&crc24(packets).to_be_bytes()[1..]));
    out.push_str("\n-----END PGP PUBLIC KEY BLOCK-----\n");
    out
}

/// A key block as the value of a deb822 `Signed-By` field (apt reads a key given inline):
/// on the lines after the field name, each indented by a space, an empty line written `.`.
pub fn deb822_inline_key(armored: &str) -> String {
    let mut out = String::new();
    for line in armored.lines() {
        out.push_str("\n ");
        out.push_str(if line.is_empty() { "." } else { line });
    }
    out
}

/// Resolves a source's `Signed-By` to keyring files gpgv can read, dearmoring where needed
/// into `scratch`.
fn keyring_files(signed_by: &SignedBy, scratch: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let write = |bytes: Vec<u8>, n: usize| -> Result<PathBuf> {
        let p = scratch.join(format!("keyring{n}.gpg"));
        std::fs::write(&p, bytes)?;
        Ok(p)
    };
    match signed_by {
        SignedBy::Inline(text) => out.push(write(dearmor(text)?, 0)?),
        SignedBy::Files(paths) => {
            for (n, p) in paths.iter().enumerate() {
                let bytes = std::fs::read(p)
                    .with_context(|| format!("cannot read keyring {}", p.display()))?;
                if bytes.starts_with(b"-----BEGIN PGP") {
                    let text = String::from_utf8_lossy(&bytes);
                    let bin = dearmor(&text).with_context(|| format!("keyring {}", p.display()))?;
                    out.push(write(bin, n + 1)?);
                } else {
                    out.push(p.clone());
                }
            }
        }
    }
    Ok(out)
}

pub fn describe(signed_by: &SignedBy) -> String {
    match signed_by {
        SignedBy::Inline(_) => "(inline key in the sources file)".to_string(),
        SignedBy::Files(p) => p
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Verifies a clear-signed `InRelease` and returns the signed text only. `what` names the file
/// (its URL) in errors.
pub fn verify_clearsigned(inrelease: &[u8], signed_by: &SignedBy, what: &str) -> Result<String> {
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let keyrings = keyring_files(signed_by, scratch.path())?;
    let input = scratch.path().join("InRelease");
    let output = scratch.path().join("Release");
    std::fs::write(&input, inrelease)?;
    let mut cmd = Command::new("gpgv");
    cmd.env("GNUPGHOME", scratch.path())
        .arg("--status-fd")
        .arg("1")
        .arg("--output")
        .arg(&output);
    for k in &keyrings {
        cmd.arg("--keyring").arg(k);
    }
    cmd.arg(&input);
    let out = cmd
        .output()
        .map_err(|e| VerifyError::GpgvMissing(e.to_string()))?;
    let status = String::from_utf8_lossy(&out.stdout);
    let keyring = describe(signed_by);
    let key_of = |tag: &str| -> Option<String> {
        status.lines().find_map(|l| {
            let rest = l.strip_prefix("[GNUPG:] ")?;
            let mut w = rest.split_whitespace();
            (w.next()? == tag).then(|| w.next().unwrap_or("?").to_string())
        })
    };
    let what = what.to_string();
    if let Some(key) = key_of("BADSIG") {
        return Err(VerifyError::BadSignature { what, key }.into());
    }
    // Like apt: one valid signature from the keyring is enough (Debian signs with several
    // keys, and a keyring may hold only some); a signature from an expired or revoked key
    // does not count. gpgv's exit code is non-zero whenever any key is missing, so the
    // status lines decide.
    let unusable: Vec<String> = status
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("[GNUPG:] ")?;
            let mut w = rest.split_whitespace();
            let tag = w.next()?;
            ["EXPKEYSIG", "REVKEYSIG", "EXPSIG"]
                .contains(&tag)
                .then(|| w.next().unwrap_or("").to_string())
        })
        .collect();
    let valid = status.lines().any(|l| {
        let Some(rest) = l.strip_prefix("[GNUPG:] VALIDSIG ") else {
            return false;
        };
        let fprs: Vec<&str> = rest.split_whitespace().collect();
        let (signer, primary) = (
            fprs.first().copied().unwrap_or(""),
            fprs.last().copied().unwrap_or(""),
        );
        !unusable.iter().any(|k| {
            !k.is_empty() && (signer.ends_with(k.as_str()) || primary.ends_with(k.as_str()))
        })
    });
    if !valid {
        if let Some(key) = unusable.first() {
            return Err(VerifyError::KeyNotUsable {
                what,
                key: key.clone(),
                keyring,
            }
            .into());
        }
        if let Some(key) = key_of("NO_PUBKEY").or_else(|| key_of("ERRSIG")) {
            return Err(VerifyError::UnknownKey { what, key, keyring }.into());
        }
        let detail = String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("gpgv failed")
            .to_string();
        return Err(VerifyError::NotSigned {
            what,
            keyring,
            detail,
        }
        .into());
    }
    let text = std::fs::read(&output).context("gpgv wrote no signed text")?;
    String::from_utf8(text).map_err(|_| anyhow!("signed text of {what} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dearmor_decodes_body_and_skips_checksum() {
        let armored = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: x\n\naGVsbG8=\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";
        assert_eq!(dearmor(armored).unwrap(), b"hello");
        assert!(dearmor("nothing").is_err());
    }

    #[test]
    fn crc24_matches_the_rfc_reference_values() {
        // The RFC's initial value is the checksum of no data; "123456789" is the usual check
        // input for CRC-24/OpenPGP.
        assert_eq!(crc24(b""), 0xB704CE);
        assert_eq!(crc24(b"123456789"), 0x21CF02);
    }

    #[test]
    fn armor_round_trips_through_dearmor() {
        let packets: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let armored = armor(&packets);
        assert!(armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n"));
        assert!(armored
            .lines()
            .all(|l| l.len() <= 64 || l.starts_with("-----")));
        assert_eq!(dearmor(&armored).unwrap(), packets);
        let inline = deb822_inline_key(&armored);
        assert!(inline.starts_with("\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n "));
        assert_eq!(dearmor(&inline).unwrap(), packets);
    }
}
