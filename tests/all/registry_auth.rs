//! Registries that need a login: Debian's `docker-registry` with htpasswd (Basic) for push,
//! the deploy's digest check and the deploy's pull; a token service (Bearer, the Docker token
//! protocol) for the digest check. The secret comes from the environment variable rebake.yaml
//! names and never appears in an error.

use std::collections::BTreeMap;
use std::sync::Once;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use bollard::query_parameters::RemoveImageOptionsBuilder;
use rebake::config::RegistryConfig;
use rebake::deploy::{deploy_docker_with, DeployResult};
use rebake::policy::{DockerTarget, RestartPolicy};
use rebake::publish::{push, registry_has, RegistryAuth};

use crate::image_tests::engine;
use crate::support::registry::TestRegistry;
use crate::support::tiny_image::tiny_image;

const USER: &str = "bot";
const SECRET: &str = "s3cret-Registry-Pass";
const SECRET_ENV: &str = "REBAKE_TEST_REGISTRY_PASSWORD";
const WRONG_ENV: &str = "REBAKE_TEST_REGISTRY_WRONG_PASSWORD";

fn set_secrets() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var(SECRET_ENV, SECRET);
        std::env::set_var(WRONG_ENV, "not-the-password");
    });
}

fn with_login(config: RegistryConfig, env: &str) -> RegistryConfig {
    RegistryConfig {
        username: Some(USER.to_string()),
        password_env: Some(env.to_string()),
        ..config
    }
}

#[tokio::test]
async fn push_check_and_pull_with_a_registry_login() {
    set_secrets();
    let docker = engine().await;
    let registry = TestRegistry::start_with_login(USER, SECRET);
    let anonymous = registry.config();
    let config = with_login(registry.config(), SECRET_ENV);
    // A command no other test's image has, so removing the image below affects only this test.
    let image = tiny_image(
        &docker,
        "registry-login",
        &["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
        None,
    )
    .await;

    // Without the login the push is refused and says so.
    let err = push(&docker, &image, &anonymous, "tiny", "v1")
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("image tiny"), "{text}");
    assert!(text.contains("the registry needs a login"), "{text}");

    // A wrong password: refused, the secret is never shown.
    let wrong = with_login(registry.config(), WRONG_ENV);
    let err = push(&docker, &image, &wrong, "tiny", "v1")
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("refused the login \"bot\""), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");

    // With the login: pushed, and the digest check logs in too.
    let reference = push(&docker, &image, &config, "tiny", "v1").await.unwrap();
    assert!(registry_has(&config, &reference).await.unwrap());
    let made_up = format!(
        "{}@sha256:{}",
        reference.split_once('@').unwrap().0,
        "0".repeat(64)
    );
    assert!(!registry_has(&config, &made_up).await.unwrap());
    let err = registry_has(&anonymous, &reference).await.unwrap_err();
    assert!(format!("{err:#}").contains("requires a login"), "{err:#}");
    let err = registry_has(&wrong, &reference).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("refused the login \"bot\""), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");

    // The deploy pulls the digest with the login when the engine lacks the image.
    docker
        .remove_image(
            &image,
            Some(RemoveImageOptionsBuilder::new().force(true).build()),
            None,
        )
        .await
        .expect("remove the local image");
    let name = format!("rebake-registry-login-{}", std::process::id());
    let target = DockerTarget {
        host: None,
        name: name.clone(),
        ports: vec![],
        volumes: vec![],
        env: BTreeMap::new(),
        networks: vec![],
        restart: RestartPolicy::No,
        labels: BTreeMap::new(),
        pre_deploy: None,
        health: None,
    };
    let without = deploy_docker_with(&docker, &target, &reference, None)
        .await
        .unwrap();
    assert!(
        matches!(without.result, DeployResult::Failed { .. }),
        "{:?}",
        without.result
    );
    let auth = RegistryAuth::from_config(&config).unwrap();
    let outcome = deploy_docker_with(&docker, &target, &reference, auth.as_ref())
        .await
        .unwrap();
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &name])
        .output();
    assert_eq!(outcome.result, DeployResult::Deployed, "{outcome:?}");
}

/// A registry that asks for a Bearer token from its token service, like most hosted ones.
#[tokio::test]
async fn digest_check_through_a_token_service() {
    set_secrets();
    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let realm = format!("http://{host}/token");
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"))
        )
    };
    let app = axum::Router::new()
        .route(
            "/token",
            axum::routing::get(
                move |headers: HeaderMap,
                      query: axum::extract::Query<BTreeMap<String, String>>| async move {
                    let ok = headers.get("authorization").and_then(|v| v.to_str().ok())
                        == Some(basic.as_str())
                        && query.get("service").map(String::as_str) == Some("test-registry")
                        && query.get("scope").map(String::as_str)
                            == Some("repository:team/web:pull");
                    if ok {
                        (StatusCode::OK, r#"{"token":"tok-123"}"#).into_response()
                    } else {
                        StatusCode::UNAUTHORIZED.into_response()
                    }
                },
            ),
        )
        .route(
            "/v2/team/web/manifests/{digest}",
            axum::routing::head(
                move |headers: HeaderMap, axum::extract::Path(digest): axum::extract::Path<String>| {
                    let realm = realm.clone();
                    async move {
                        if headers.get("authorization").and_then(|v| v.to_str().ok())
                            != Some("Bearer tok-123")
                        {
                            let challenge = format!(
                                r#"Bearer realm="{realm}",service="test-registry",scope="repository:team/web:pull""#
                            );
                            return (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)])
                                .into_response();
                        }
                        if digest == DIGEST {
                            StatusCode::OK.into_response()
                        } else {
                            StatusCode::NOT_FOUND.into_response()
                        }
                    }
                },
            ),
        );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let config = RegistryConfig {
        url: host.clone(),
        host: host.clone(),
        namespace: None,
        insecure: true,
        username: Some(USER.to_string()),
        password_env: Some(SECRET_ENV.to_string()),
    };
    assert!(registry_has(&config, &format!("{host}/team/web@{DIGEST}"))
        .await
        .unwrap());
    let other = format!("{host}/team/web@sha256:{}", "2".repeat(64));
    assert!(!registry_has(&config, &other).await.unwrap());
    let wrong = RegistryConfig {
        password_env: Some(WRONG_ENV.to_string()),
        ..config
    };
    let err = registry_has(&wrong, &format!("{host}/team/web@{DIGEST}"))
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("token service"), "{text}");
    assert!(text.contains("refused the login \"bot\""), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    server.abort();
}

/// A token service that answers without end is cut off at the limit, not buffered.
#[tokio::test]
async fn endless_token_service_answer_is_refused_at_its_limit() {
    use crate::support::{Fault, TestServer};
    set_secrets();
    let empty = tempfile::tempdir().unwrap();
    let tokens = TestServer::start(empty.path());
    tokens.fault("/token", Fault::Endless);
    let realm = format!("{}/token", tokens.url());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let app =
        axum::Router::new().route(
            "/v2/team/web/manifests/{digest}",
            axum::routing::head(move || {
                let challenge = format!(r#"Bearer realm="{realm}",service="test-registry""#);
                async move {
                    (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]).into_response()
                }
            }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let config = RegistryConfig {
        url: host.clone(),
        host: host.clone(),
        namespace: None,
        insecure: true,
        username: Some(USER.to_string()),
        password_env: Some(SECRET_ENV.to_string()),
    };
    let started = std::time::Instant::now();
    let err = registry_has(
        &config,
        &format!("{host}/team/web@sha256:{}", "1".repeat(64)),
    )
    .await
    .unwrap_err();
    let text = format!("{err:#}");
    eprintln!("refused in {:?}: {text}", started.elapsed());
    assert!(text.contains(&format!("{}/token", tokens.url())), "{text}");
    assert!(
        text.contains("more than 1048576 bytes (the limit for a token service's answer)"),
        "{text}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    server.abort();
}

/// Signatures and attestations go to a registry that needs a login the same way (rebake's own
/// API calls answer the Basic challenge), and without the login the error says so.
#[tokio::test]
async fn signing_and_attestations_with_a_registry_login() {
    set_secrets();
    let docker = engine().await;
    let registry = TestRegistry::start_with_login(USER, SECRET);
    let config = with_login(registry.config(), SECRET_ENV);
    let image = tiny_image(&docker, "registry-login-signed", &["/bin/sh"], None).await;
    let pushed = push(&docker, &image, &config, "signed", "v1")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = crate::attest::keypair(dir.path(), "cosign");
    let (repo, hex) = rebake::attest::split_digest(&pushed).unwrap();
    let lock = crate::attest::lock_for("signed", &image, &pushed);
    let statements =
        rebake::attest::statements(&lock, repo, hex, &crate::attest::facts("0123abcd"), &[]);
    let signer = crate::attest::signer(&key);

    let err = rebake::attest::attach(&registry.config(), &signer, &pushed, &statements)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{err:#}");

    rebake::attest::attach(&config, &signer, &pushed, &statements)
        .await
        .unwrap();
    let verifier = crate::attest::verifier(&public);
    assert_eq!(
        rebake::attest::check_signature(&config, &verifier, &pushed)
            .await
            .unwrap(),
        Ok(())
    );
    let found = rebake::attest::fetch_attestations(&config, &verifier, &pushed)
        .await
        .unwrap();
    assert_eq!(found.verified.len(), 4, "{:?}", found.failed);
}
