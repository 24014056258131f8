//! The publish stage (`rebake::publish`) against the machine's Docker engine and a real
//! registry (Debian's `docker-registry`, started on a free 127.0.0.1 port).

use bollard::query_parameters::RemoveImageOptions;
use rebake::publish::{push, registry_has};

use crate::image_tests::engine;
use crate::support::registry::TestRegistry;
use crate::support::tiny_image::tiny_image;

fn is_digest_ref(reference: &str, repo: &str) -> bool {
    reference
        .strip_prefix(repo)
        .and_then(|rest| rest.strip_prefix("@sha256:"))
        .is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

#[tokio::test]
async fn push_returns_the_digest_the_registry_holds() {
    let docker = engine().await;
    let registry = TestRegistry::start();
    let config = registry.config();
    let image = tiny_image(&docker, "publish", &["/bin/sh"], None).await;

    let reference = push(&docker, &image, &config, "tiny", "v1").await.unwrap();
    let repo = format!("127.0.0.1:{}/tiny", registry.port);
    assert!(is_digest_ref(&reference, &repo), "{reference}");
    assert!(registry_has(&config, &reference).await.unwrap());

    // The registry serves that manifest by digest (what a deploy pulls).
    let digest = reference.split_once('@').unwrap().1;
    assert_eq!(
        registry.get(&format!("/v2/tiny/manifests/{digest}")),
        Some(200)
    );

    let made_up = format!("{repo}@sha256:{}", "0".repeat(64));
    assert!(!registry_has(&config, &made_up).await.unwrap());

    // Pushing the same image again gives the same digest (idempotent).
    let again = push(&docker, &image, &config, "tiny", "v1").await.unwrap();
    assert_eq!(again, reference);

    // The tag push() made points at a registry that goes away with this test.
    docker
        .remove_image(&format!("{repo}:v1"), None::<RemoveImageOptions>, None)
        .await
        .expect("untag the pushed image");

    // A reference in another registry is refused, not looked up elsewhere.
    let err = registry_has(&config, &format!("example.org/tiny@{digest}"))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("not in registry"), "{err:#}");
}

#[tokio::test]
async fn push_to_a_stopped_registry_names_the_image_and_the_registry() {
    let docker = engine().await;
    let mut registry = TestRegistry::start();
    let config = registry.config();
    registry.stop();
    let image = tiny_image(&docker, "publish", &["/bin/sh"], None).await;

    let err = push(&docker, &image, &config, "tiny", "v1")
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("image tiny"), "{text}");
    assert!(
        text.contains(&format!("registry 127.0.0.1:{}", registry.port)),
        "{text}"
    );
    assert!(text.contains("unreachable"), "{text}");

    let err = registry_has(
        &config,
        &format!("127.0.0.1:{}/tiny@sha256:{}", registry.port, "0".repeat(64)),
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("unreachable"), "{err:#}");
}
