//! Image references as the engine reads them: image ids, repositories without tag or digest,
//! and Docker Hub's short names.

/// `sha256:<64 hex>` or 64 lowercase hex digits: an engine's image id, not a registry reference.
pub fn is_image_id(image_ref: &str) -> bool {
    let hex = image_ref.strip_prefix("sha256:").unwrap_or(image_ref);
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `sha256:<64 lowercase hex>`: an image id as rebake writes it (a Dockerfile's `FROM`, a lock).
pub fn is_canonical_image_id(image_ref: &str) -> bool {
    image_ref.starts_with("sha256:") && is_image_id(image_ref)
}
/// The repository of an image reference: without tag and digest. An image id stays as it is.
pub fn image_repository(image_ref: &str) -> String {
    if is_image_id(image_ref) {
        return image_ref.to_string();
    }
    let without_digest = image_ref.split('@').next().unwrap_or(image_ref);
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[last_slash..].find(':') {
        Some(colon) => without_digest[..last_slash + colon].to_string(),
        None => without_digest.to_string(),
    }
}

/// A repository the way the engine resolves it: Docker Hub names get `docker.io/` (and
/// `library/` for official images), so `nginx` and `docker.io/library/nginx` compare equal.
pub fn normalized_repository(repository: &str) -> String {
    let first = repository.split('/').next().unwrap_or("");
    let has_registry = repository.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        repository.to_string()
    } else if repository.contains('/') {
        format!("docker.io/{repository}")
    } else {
        format!("docker.io/library/{repository}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        assert_eq!(image_repository("nginx"), "nginx");
        assert_eq!(image_repository("nginx:1.2"), "nginx");
        assert_eq!(
            image_repository("localhost:5000/a/b:tag@sha256:ab"),
            "localhost:5000/a/b"
        );
        assert_eq!(image_repository("localhost:5000/a"), "localhost:5000/a");
        assert_eq!(normalized_repository("nginx"), "docker.io/library/nginx");
        assert_eq!(normalized_repository("me/app"), "docker.io/me/app");
        assert_eq!(normalized_repository("localhost/app"), "localhost/app");
        let id = format!("sha256:{}", "a".repeat(64));
        assert!(is_image_id(&id));
        assert!(!is_image_id("nginx:latest"));
        assert!(!is_image_id(&"A".repeat(64)));
        assert!(is_image_id(&"a".repeat(64)));
        assert!(!is_canonical_image_id(&"a".repeat(64)));
        assert!(is_canonical_image_id(&id));
    }
}
