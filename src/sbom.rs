//! Software bills of materials from an image's lock: SPDX 2.3 JSON and CycloneDX 1.6 JSON,
//! listing every installed Debian package with its purl
//! (`pkg:deb/debian/<name>@<version>?arch=<arch>&distro=debian-13`) and source package, and
//! the image, base and verified archive facts. Deterministic: the same lock gives the same
//! bytes (timestamps are the archive's verified `Date`, ids are derived from the content).

use crate::lock::Lock;
use serde_json::{json, Value};
use sha2::Digest;

/// Debian's release number for a codename, as purl's `distro` qualifier names it.
fn release_number(codename: &str) -> Option<&'static str> {
    Some(match codename {
        "buster" => "10",
        "bullseye" => "11",
        "bookworm" => "12",
        "trixie" => "13",
        "forky" => "14",
        "duke" => "15",
        _ => return None,
    })
}

/// Percent-encodes what purl does not allow raw in a version or qualifier value.
fn purl_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The package URL of a Debian binary package of `lock`.
pub fn purl(lock: &Lock, name: &str, version: &str, arch: &str) -> String {
    let distro = match release_number(&lock.suite) {
        Some(n) => format!("debian-{n}"),
        None => lock.suite.clone(),
    };
    format!(
        "pkg:deb/debian/{}@{}?arch={}&distro={}",
        purl_encode(name),
        purl_encode(version),
        purl_encode(arch),
        purl_encode(&distro)
    )
}

/// The archive's verified `Date` (the newest of the lock's suites) as RFC 3339, else the epoch.
fn timestamp(lock: &Lock) -> String {
    lock.archive
        .iter()
        .filter_map(|a| {
            chrono::DateTime::parse_from_rfc2822(&a.date.replace(" UTC", " +0000")).ok()
        })
        .max()
        .map(|d| {
            d.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

fn content_hash(lock: &Lock) -> [u8; 32] {
    let text = lock.to_yaml().unwrap_or_default();
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// The facts of the image, its base and the verified archive, as (name, value) pairs.
fn facts(lock: &Lock) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(image) = &lock.image {
        out.push(("rebake:image.id".to_string(), image.id.clone()));
        if let Some(d) = &image.digest {
            out.push(("rebake:image.digest".to_string(), d.clone()));
        }
    }
    if let Some(base) = &lock.base {
        out.push((
            "rebake:base.rootfs-sha256".into(),
            base.rootfs_sha256.clone(),
        ));
        out.push(("rebake:base.id".into(), base.id.clone()));
    }
    for a in &lock.archive {
        out.push((
            format!("rebake:archive.{}", a.suite),
            format!(
                "{} InRelease sha256:{} Date {}",
                a.uri, a.inrelease_sha256, a.date
            ),
        ));
    }
    out
}

/// An SPDX identifier made of the allowed characters, unique by `n`.
fn spdx_id(kind: &str, name: &str, n: usize) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{n}-{clean}")
}

/// SPDX 2.3 (JSON) of the image described by `lock`.
pub fn spdx(lock: &Lock) -> Value {
    let hash = hex::encode(content_hash(lock));
    let image_version = lock.image.as_ref().map(|i| i.id.clone());
    let facts: Vec<String> = facts(lock)
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": lock.name,
        "versionInfo": image_version.clone().unwrap_or_else(|| "unbuilt".into()),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "supplier": "NOASSERTION",
        "comment": format!("Built by rebake from Debian {}/{}. {}", lock.suite, lock.architecture, facts.join("; ")),
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    for (n, p) in lock.packages.iter().enumerate() {
        let id = spdx_id("Package", &p.name, n);
        packages.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "supplier": "Organization: Debian",
            "sourceInfo": format!("built from the Debian source package {} {}", p.source, p.source_version),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(lock, &p.name, &p.version, &p.arch),
            }],
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("rebake image {}", lock.name),
        "documentNamespace": format!("https://rebake.invalid/spdx/{}/{hash}", lock.name),
        "creationInfo": {
            "created": timestamp(lock),
            "creators": [format!("Tool: rebake-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

/// CycloneDX 1.6 (JSON) of the image described by `lock`.
pub fn cyclonedx(lock: &Lock) -> Value {
    let mut h = content_hash(lock);
    // An RFC 4122 UUID (version 5 layout) derived from the content.
    h[6] = (h[6] & 0x0f) | 0x50;
    h[8] = (h[8] & 0x3f) | 0x80;
    let u = hex::encode(&h[..16]);
    let serial = format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &u[..8],
        &u[8..12],
        &u[12..16],
        &u[16..20],
        &u[20..32]
    );
    let mut properties: Vec<Value> = vec![
        json!({"name": "rebake:debian.release", "value": lock.suite}),
        json!({"name": "rebake:debian.architecture", "value": lock.architecture}),
    ];
    properties.extend(
        facts(lock)
            .into_iter()
            .map(|(k, v)| json!({"name": k, "value": v})),
    );
    let mut components = Vec::new();
    let mut refs = Vec::new();
    for p in &lock.packages {
        let purl = purl(lock, &p.name, &p.version, &p.arch);
        refs.push(Value::String(purl.clone()));
        components.push(json!({
            "type": "library",
            "bom-ref": purl,
            "name": p.name,
            "version": p.version,
            "purl": purl,
            "supplier": {"name": "Debian"},
            "properties": [
                {"name": "rebake:debian.source", "value": p.source},
                {"name": "rebake:debian.source-version", "value": p.source_version},
                {"name": "rebake:debian.arch", "value": p.arch},
            ],
        }));
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": timestamp(lock),
            "tools": {"components": [{
                "type": "application",
                "name": "rebake",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": {
                "type": "container",
                "bom-ref": "image",
                "name": lock.name,
                "version": lock.image.as_ref().map(|i| i.id.clone()).unwrap_or_else(|| "unbuilt".into()),
            },
            "properties": properties,
        },
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": refs}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_encode_epochs_and_name_the_release() {
        let lock = Lock {
            lock_version: 1,
            name: "web".into(),
            suite: "trixie".into(),
            architecture: "amd64".into(),
            archive: Vec::new(),
            base: None,
            parent: None,
            reason: None,
            packages: Vec::new(),
            image: None,
            tests: None,
        };
        assert_eq!(
            purl(&lock, "zlib1g", "1:1.3.dfsg+really1.3.1-1+b1", "amd64"),
            "pkg:deb/debian/zlib1g@1%3A1.3.dfsg%2Breally1.3.1-1%2Bb1?arch=amd64&distro=debian-13"
        );
        assert_eq!(
            purl(&lock, "libstdc++6", "14.2.0-19", "amd64"),
            "pkg:deb/debian/libstdc%2B%2B6@14.2.0-19?arch=amd64&distro=debian-13"
        );
        assert_eq!(
            spdx_id("Package", "libstdc++6", 3),
            "SPDXRef-Package-3-libstdc--6"
        );
    }
}
