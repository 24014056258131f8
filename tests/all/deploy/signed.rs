//! The deploy gate with `deploy.verify: required`: a digest is deployed only when its cosign
//! signature verifies with the configured key and a signed SLSA provenance describes the lock
//! at the deploy commit and names a commit it contains. Each refusal names the failed check.

use base64::Engine as _;
use rebake::attest;
use rebake::rollout::DeployRun;

use super::gate::Gate;
use super::image_a;
use crate::attest::{facts, keypair, lock_for, signer, verifier};
use crate::support::engine::{docker, runtime};
use crate::support::gitops::{git, text};
use crate::support::registry::TestRegistry;

fn refused(r: &rebake::rollout::ImageRollout) -> String {
    r.refused
        .clone()
        .unwrap_or_else(|| panic!("not refused: {r:?}"))
}

/// Replaces the provenance envelope at `sha256-<hex>.att` with one whose statement names
/// another commit, keeping the signature: what an attacker editing the registry would do.
fn tamper_with_provenance(registry: &TestRegistry, pushed: &str) {
    let config = registry.config();
    let (repo, hex) = attest::split_digest(pushed).unwrap();
    let path = rebake::publish::repository_path(&config, repo).unwrap();
    let tag = format!("sha256-{hex}.att");
    let api = rebake::publish::RegistryApi::new(&config).unwrap();
    runtime().block_on(async {
        let bytes = rebake::publish::get_manifest(&api, path, &tag)
            .await
            .unwrap()
            .unwrap();
        let mut manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let layer = &mut manifest["layers"][0];
        assert_eq!(layer["annotations"]["predicateType"], attest::PROVENANCE);
        let digest = layer["digest"].as_str().unwrap().to_string();
        let envelope = rebake::publish::get_blob(&api, path, &digest)
            .await
            .unwrap();
        let mut envelope: serde_json::Value = serde_json::from_slice(&envelope).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
        let mut statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        statement["predicate"]["buildDefinition"]["externalParameters"]["source"]["commit"] =
            serde_json::json!("0000000000000000000000000000000000000000");
        envelope["payload"] =
            serde_json::json!(b64.encode(serde_json::to_vec(&statement).unwrap()));
        let forged = serde_json::to_vec(&envelope).unwrap();
        let forged_digest = rebake::publish::put_blob(&api, path, &forged)
            .await
            .unwrap();
        layer["digest"] = serde_json::json!(forged_digest);
        layer["size"] = serde_json::json!(forged.len());
        rebake::publish::put_manifest(
            &api,
            path,
            &tag,
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .await
        .unwrap();
    });
}

#[test]
fn deploy_verify_refuses_a_wrong_key_a_tampered_attestation_and_a_foreign_provenance() {
    let gate = Gate::new("signed");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "cosign");
    let (_, other) = keypair(dir.path(), "other");
    let registry = TestRegistry::start();
    let config = registry.config();
    let id = runtime().block_on(image_a(&docker()));
    let pushed = runtime()
        .block_on(rebake::publish::push(&docker(), &id, &config, "gate", "v1"))
        .unwrap();
    let (repo, hex) = attest::split_digest(&pushed).unwrap();
    let lock = lock_for("gate", &id, &pushed);
    // Built from main's head, as `rebake propose` builds.
    let built_from = git(&gate.ops.bare, &["rev-parse", "main"]);
    let sign = |commit: &str| {
        let statements = attest::statements(&lock, repo, hex, &facts(commit), &[]);
        runtime()
            .block_on(attest::attach(&config, &signer(&key), &pushed, &statements))
            .unwrap();
    };
    gate.propose(&lock.to_yaml().unwrap());
    let merge = gate.merge(None);
    let run = |public: &std::path::Path| DeployRun {
        verify: Some(verifier(public)),
        ..gate.run(None, Some(config.clone()))
    };

    // Not signed at all.
    let why = refused(&gate.deploy(&run(&public)));
    assert!(
        why.contains("signature check failed: no signature"),
        "{why}"
    );

    // Signed, but checked with another key.
    sign(&built_from);
    let why = refused(&gate.deploy(&run(&other)));
    assert!(
        why.contains("signature check failed") && why.contains("does not verify"),
        "{why}"
    );

    // The provenance envelope edited in the registry.
    tamper_with_provenance(&registry, &pushed);
    let why = refused(&gate.deploy(&run(&public)));
    assert!(
        why.contains("attestation check failed") && why.contains(attest::PROVENANCE),
        "{why}"
    );

    // Signed by the right key, every attestation but the provenance.
    let without_provenance: Vec<(String, serde_json::Value)> =
        attest::statements(&lock, repo, hex, &facts(&built_from), &[])
            .into_iter()
            .filter(|(kind, _)| kind != attest::PROVENANCE)
            .collect();
    runtime()
        .block_on(attest::attach(
            &config,
            &signer(&key),
            &pushed,
            &without_provenance,
        ))
        .unwrap();
    let why = refused(&gate.deploy(&run(&public)));
    assert!(
        why.contains("provenance check failed: no signed SLSA provenance"),
        "{why}"
    );

    // Signed by the right key, but built from a commit the deploy commit does not contain.
    sign("1111111111111111111111111111111111111111");
    let why = refused(&gate.deploy(&run(&public)));
    assert!(
        why.contains("provenance check failed") && why.contains("does not contain"),
        "{why}"
    );
    assert_eq!(gate.running(), None, "nothing was deployed");
    let log = gate.log();
    assert!(
        log.iter().all(|l| !l["refused"].is_null()),
        "every refusal is in the deployments log: {log:?}"
    );

    // rebake.yaml's `deploy.verify: required` with `signing.public_key`, through the CLI: the
    // properly signed digest is deployed; with another key it is refused, exit 1.
    sign(&built_from);
    let yaml = |public: &std::path::Path| {
        format!(
            "forge:\n  kind: git\n  url: {}\nregistry:\n  url: {}\n  insecure: true\nsigning:\n  \
             public_key: {}\ndeploy:\n  verify: required\n",
            gate.ops.bare.display(),
            registry.host(),
            public.display()
        )
    };
    let cli = |public: &std::path::Path| {
        std::fs::write(gate.ops.clone.join("rebake.yaml"), yaml(public)).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_rebake"))
            .args(["deploy", "gate", "--commit", &merge, "--repo"])
            .arg(&gate.ops.clone)
            .env("REBAKE_STATE_DIR", gate.state.path())
            .env("REBAKE_SECURITY_TRACKER", "off")
            .output()
            .unwrap()
    };
    let out = cli(&other);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("signature check failed"),
        "{}",
        text(&out)
    );
    assert_eq!(gate.running(), None);
    let out = cli(&public);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(gate.running().as_deref(), Some(id.as_str()));
}
