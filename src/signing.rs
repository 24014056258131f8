//! Signatures in cosign's formats, with an ECDSA P-256 key (the key `cosign import-key-pair`
//! accepts: PEM PKCS#8 `PRIVATE KEY`, or SEC1 `EC PRIVATE KEY`):
//!
//! - the image signature: cosign's "simple signing" payload naming the repository and the
//!   manifest digest, signed as is (ECDSA-P256-SHA256, ASN.1 DER, base64 in the annotation);
//! - attestations: in-toto statements in DSSE envelopes, the signature over DSSE's
//!   pre-authentication encoding (PAE) of the payload type and payload.
//!
//! Key material never appears in a message: errors name the file or variable only.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use serde_json::{json, Value};

use crate::config::SigningConfig;

/// DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The `type` of cosign's simple-signing payload.
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The private key. `Debug` never shows it.
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(ECDSA P-256, ***)")
    }
}

/// A public key signatures are checked with.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: VerifyingKey,
}

impl Signer {
    /// Parses a PEM private key; `origin` (a file name or variable) names it in errors.
    pub fn from_pem(pem: &str, origin: &str) -> Result<Signer> {
        let label = pem
            .lines()
            .find_map(|l| l.trim().strip_prefix("-----BEGIN "))
            .map(|l| l.trim_end_matches('-').to_string());
        let key = match label.as_deref() {
            Some("PRIVATE KEY") => SigningKey::from_pkcs8_pem(pem)
                .map_err(|_| anyhow!("{origin}: not a PKCS#8 ECDSA P-256 private key"))?,
            Some("EC PRIVATE KEY") => p256::SecretKey::from_sec1_pem(pem)
                .map(SigningKey::from)
                .map_err(|_| anyhow!("{origin}: not a SEC1 ECDSA P-256 private key"))?,
            Some(l) if l.contains("ENCRYPTED") => bail!(
                "{origin}: the key is encrypted ({l}); rebake reads unencrypted PEM keys: \
                 decrypt it into a file only rebake's user can read (openssl pkcs8 -topk8 \
                 -nocrypt)"
            ),
            Some(l) => bail!(
                "{origin}: a PEM {l:?}, not an ECDSA P-256 private key (PRIVATE KEY or EC \
                 PRIVATE KEY)"
            ),
            None => bail!("{origin}: not a PEM private key (no -----BEGIN line)"),
        };
        Ok(Signer { key })
    }

    /// The key `signing` names (`key_file` or `key_env`); None when it names only a public key.
    pub fn from_config(signing: &SigningConfig) -> Result<Option<Signer>> {
        if let Some(path) = &signing.key_file {
            let origin = format!("signing.key_file {}", path.display());
            let pem = std::fs::read_to_string(path)
                .map_err(|e| anyhow!("{origin}: cannot read it: {}", e.kind()))?;
            return Signer::from_pem(&pem, &origin).map(Some);
        }
        if let Some(var) = &signing.key_env {
            let origin = format!("the environment variable {var} (signing.key_env)");
            let pem = std::env::var(var).map_err(|_| anyhow!("{origin} is not set"))?;
            return Signer::from_pem(&pem, &origin).map(Some);
        }
        Ok(None)
    }

    /// ECDSA-P256-SHA256 over `message`, ASN.1 DER (what cosign writes and checks).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: DerSignature = self.key.sign(message);
        sig.as_bytes().to_vec()
    }

    pub fn verifier(&self) -> Verifier {
        Verifier {
            key: *self.key.verifying_key(),
        }
    }
}

impl Verifier {
    /// The public half of a raw P-256 scalar (the fuzz targets' fixed key).
    pub fn from_scalar(scalar: &[u8; 32]) -> Result<Verifier> {
        let key = SigningKey::from_slice(scalar).map_err(|_| anyhow!("not a P-256 scalar"))?;
        Ok(Verifier {
            key: *key.verifying_key(),
        })
    }

    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo, as `cosign.pub`).
    pub fn from_pem(pem: &str, origin: &str) -> Result<Verifier> {
        VerifyingKey::from_public_key_pem(pem)
            .map(|key| Verifier { key })
            .map_err(|_| anyhow!("{origin}: not a PEM ECDSA P-256 public key (PUBLIC KEY)"))
    }

    /// `signing.public_key` when set, else the public half of the signing key.
    pub fn from_config(signing: &SigningConfig) -> Result<Verifier> {
        if let Some(path) = &signing.public_key {
            let origin = format!("signing.public_key {}", path.display());
            let pem = std::fs::read_to_string(path)
                .map_err(|e| anyhow!("{origin}: cannot read it: {}", e.kind()))?;
            return Verifier::from_pem(&pem, &origin);
        }
        Ok(Signer::from_config(signing)?
            .ok_or_else(|| anyhow!("signing names no key to verify with"))?
            .verifier())
    }

    /// The PEM `PUBLIC KEY`, as `cosign public-key` prints it.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// Checks a DER (or, as some signers write it, fixed-size r‖s) signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        let ok = match DerSignature::try_from(signature) {
            Ok(der) => self.key.verify(message, &der).is_ok(),
            Err(_) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| self.key.verify(message, &s).is_ok()),
        };
        if !ok {
            bail!("the signature does not verify with the configured public key");
        }
        Ok(())
    }
}

/// DSSE's pre-authentication encoding: `DSSEv1 <len> <type> <len> <payload>`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope of an in-toto statement, signed (keyid empty, as cosign writes it for a key).
pub fn dsse_envelope(signer: &Signer, statement: &Value) -> Vec<u8> {
    let payload = serde_json::to_vec(statement).unwrap_or_default();
    let sig = signer.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload));
    let envelope = json!({
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": B64.encode(&payload),
        "signatures": [{"keyid": "", "sig": B64.encode(sig)}],
    });
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// The statement inside a DSSE envelope, when one of its signatures verifies with `verifier`.
pub fn dsse_open(verifier: &Verifier, envelope: &[u8]) -> Result<Value> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope {
        payload_type: String,
        payload: String,
        signatures: Vec<Sig>,
    }
    #[derive(serde::Deserialize)]
    struct Sig {
        sig: String,
    }
    let e: Envelope = serde_json::from_slice(envelope).context("not a DSSE envelope")?;
    if e.payload_type != IN_TOTO_PAYLOAD_TYPE {
        bail!(
            "payloadType {:?} is not {IN_TOTO_PAYLOAD_TYPE}",
            e.payload_type
        );
    }
    let payload = B64
        .decode(e.payload.as_bytes())
        .context("the envelope's payload is not base64")?;
    let message = pae(&e.payload_type, &payload);
    let verified = e.signatures.iter().any(|s| {
        B64.decode(s.sig.as_bytes())
            .is_ok_and(|sig| verifier.verify(&message, &sig).is_ok())
    });
    if !verified {
        bail!("no signature of the envelope verifies with the configured public key");
    }
    serde_json::from_slice(&payload).context("the envelope's payload is not JSON")
}

/// cosign's simple-signing payload for `repository` (without tag or digest) at `digest`.
pub fn simple_signing_payload(repository: &str, digest: &str) -> Vec<u8> {
    let payload = json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": SIMPLE_SIGNING_TYPE,
        },
        "optional": null,
    });
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// Checks a simple-signing payload and its base64 signature: it verifies, and it names
/// `repository` and `digest`.
pub fn check_simple_signing(
    verifier: &Verifier,
    payload: &[u8],
    signature_b64: &str,
    repository: &str,
    digest: &str,
) -> Result<()> {
    let sig = B64
        .decode(signature_b64.trim().as_bytes())
        .context("the signature annotation is not base64")?;
    verifier.verify(payload, &sig)?;
    let v: Value = serde_json::from_slice(payload).context("the signed payload is not JSON")?;
    let critical = &v["critical"];
    if critical["type"] != SIMPLE_SIGNING_TYPE {
        bail!("the signed payload is not a cosign container image signature");
    }
    let signed_digest = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or("");
    if signed_digest != digest {
        bail!("the signature is for {signed_digest}, not {digest}");
    }
    let reference = critical["identity"]["docker-reference"]
        .as_str()
        .unwrap_or("");
    if reference != repository {
        bail!("the signature names the repository {reference}, not {repository}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throw-away key made with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgl5aaGjQbUWEim236
LvYvxbdlygfULTx9C9llFh6eXKChRANCAATEt20Fw2JDJPMxu4s3VAz8JKDQAFxJ
1sgifiPJ6Cxbj6Qo5uy1xv96h/yxah/1HKXsZeCaugNCQRcvxxD5I/9D
-----END PRIVATE KEY-----
";

    #[test]
    fn pae_is_the_dsse_encoding() {
        // The example of DSSE's protocol.md.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn envelopes_verify_and_tampering_does_not() {
        let signer = Signer::from_pem(KEY, "test key").unwrap();
        let statement = json!({"_type": "https://in-toto.io/Statement/v1", "x": 1});
        let envelope = dsse_envelope(&signer, &statement);
        assert_eq!(dsse_open(&signer.verifier(), &envelope).unwrap(), statement);
        let mut e: Value = serde_json::from_slice(&envelope).unwrap();
        e["payload"] = json!(B64.encode(br#"{"_type":"https://in-toto.io/Statement/v1","x":2}"#));
        let tampered = serde_json::to_vec(&e).unwrap();
        let err = dsse_open(&signer.verifier(), &tampered).unwrap_err();
        assert!(err.to_string().contains("verifies"), "{err}");
    }

    #[test]
    fn an_encrypted_or_other_key_is_refused_with_what_to_do() {
        let cosign = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nZXhhbXBsZQ==\n\
                      -----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
        let err = Signer::from_pem(cosign, "signing.key_file cosign.key").unwrap_err();
        assert!(
            err.to_string().contains("encrypted") && err.to_string().contains("cosign.key"),
            "{err}"
        );
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nZXhhbXBsZQ==\n-----END RSA PRIVATE KEY-----\n";
        let err = Signer::from_pem(rsa, "k").unwrap_err().to_string();
        assert!(
            err.contains("RSA PRIVATE KEY") && err.contains("P-256"),
            "{err}"
        );
        let err = Signer::from_pem("not a key", "k").unwrap_err().to_string();
        assert!(err.contains("not a PEM private key"), "{err}");
    }

    #[test]
    fn errors_never_show_the_key() {
        let broken = KEY.replace("MIGHAgEA", "MIGHAgEC");
        let err = Signer::from_pem(&broken, "signing.key_file k.pem").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("k.pem") && !text.contains("MIGH"), "{text}");
        let signer = Signer::from_pem(KEY, "k").unwrap();
        assert!(!format!("{signer:?}").contains("MIGH"));
    }
}
