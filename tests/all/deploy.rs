//! The deploy stage against the machine's dockerd: standalone containers (replace, pre-deploy
//! hook, health check, rollback, unchanged), a single-node swarm (update, rollback), and the
//! manifest rewrite. Images are the tiny busybox images of `support::tiny_image`; every
//! container, volume and service a test makes carries the label `rebake.test.deploy=1` and is
//! removed at the end, also when the test fails.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use bollard::models::{
    ExecConfig, LocalNodeState, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    SwarmInitRequest, TaskSpec, TaskSpecContainerSpec, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    ImportImageOptions, InspectContainerOptions, InspectServiceOptions, LeaveSwarmOptions,
    RemoveContainerOptions, RemoveVolumeOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use rebake::deploy::{
    deploy_docker, deploy_swarm_with, DeployResult, SwarmSettings, IMAGE_LABEL, PREVIOUS_SUFFIX,
};
use rebake::manifests::rewrite_manifests;
use rebake::policy::{
    DockerTarget, HealthCheck, HealthProbe, HttpCheck, PortMapping, PortProtocol, RestartPolicy,
    SwarmTarget, VolumeMount, VolumeSource,
};

use crate::support::engine::{docker, runtime};

mod gate;
mod signed;
use crate::support::registry::free_port;
use crate::support::tiny_image::{self, TinySpec, INDEX_TEXT};

const TEST_LABEL: &str = "rebake.test.deploy";

/// A server command serving `/www` that stops at once on SIGTERM (httpd as PID 1 would
/// ignore it, and every stop would wait out the engine's 10 s).
const SERVE: &str = "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait";

/// The server image (the "old" image of the tests).
async fn image_a(docker: &Docker) -> String {
    tiny(docker, "deploy-a", &["/bin/sh", "-c", SERVE]).await
}

/// Another server image (different config, hence another id): the "new" image.
async fn image_b(docker: &Docker) -> String {
    let serve_verbose = SERVE.replace("httpd -f", "httpd -f -v");
    tiny(docker, "deploy-b", &["/bin/sh", "-c", &serve_verbose]).await
}

/// An image whose command exits at once.
async fn image_exits(docker: &Docker) -> String {
    tiny(docker, "deploy-exits", &["/bin/false"]).await
}

/// A server without the page (`/index.html` answers 404).
async fn image_no_page(docker: &Docker) -> String {
    tiny(
        docker,
        "deploy-no-page",
        &["/bin/httpd", "-f", "-p", "80", "-h", "/tmp"],
    )
    .await
}

async fn tiny(docker: &Docker, name: &str, cmd: &[&str]) -> String {
    tiny_image::load(
        docker,
        &TinySpec {
            name,
            cmd,
            user: None,
            exposed_ports: &[80],
        },
    )
    .await
}

/// A server image with a HEALTHCHECK running `check` every 200 ms.
async fn image_with_healthcheck(docker: &Docker, name: &str, check: &[&str]) -> String {
    let cmd = ["/bin/sh", "-c", SERVE];
    let spec = TinySpec {
        name,
        cmd: &cmd,
        user: None,
        exposed_ports: &[80],
    };
    let mut config: serde_json::Value =
        serde_json::from_slice(&tiny_image::config_json(&spec)).unwrap();
    let mut test = vec!["CMD".to_string()];
    test.extend(check.iter().map(|s| s.to_string()));
    config["config"]["Healthcheck"] = serde_json::json!({
        "Test": test,
        "Interval": 200_000_000u64,
        "Timeout": 1_000_000_000u64,
        "Retries": 2,
    });
    let config = serde_json::to_vec(&config).unwrap();
    let layer = tiny_image::layer_tar();
    let layer_dir = crate::support::sha256_hex(&layer);
    let id_hex = crate::support::sha256_hex(&config);
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{id_hex}.json"),
        "RepoTags": [format!("rebake-test/{name}:latest")],
        "Layers": [format!("{layer_dir}/layer.tar")],
    }]))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in [
        (format!("{layer_dir}/layer.tar"), &layer[..]),
        (format!("{id_hex}.json"), &config[..]),
        ("manifest.json".to_string(), &manifest[..]),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }
    let archive = b.into_inner().unwrap();
    let mut stream = docker.import_image(
        ImportImageOptions {
            quiet: true,
            ..Default::default()
        },
        bollard::body_full(archive.into()),
        None,
    );
    while let Some(item) = stream.next().await {
        item.expect("loading the healthcheck image");
    }
    format!("sha256:{id_hex}")
}

/// Removes the test's containers (also `<name>.rebake-previous`) and volumes, however it ends.
struct Cleanup {
    docker: Docker,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let containers = std::mem::take(&mut self.containers);
        let volumes = std::mem::take(&mut self.volumes);
        runtime().block_on(async move {
            for name in containers {
                for n in [name.clone(), format!("{name}{PREVIOUS_SUFFIX}")] {
                    let options = RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    };
                    let _ = docker.remove_container(&n, Some(options)).await;
                }
            }
            for volume in volumes {
                let _ = docker
                    .remove_volume(&volume, None::<RemoveVolumeOptions>)
                    .await;
            }
        });
    }
}

/// A target named `rebake-deploy-<test>-<pid>` on a free port, with a named volume on `/srv`
/// and an http health probe of the page.
fn target(docker: &Docker, test: &str) -> (DockerTarget, u16, Cleanup) {
    let name = format!("rebake-deploy-{test}-{}", std::process::id());
    let volume = format!("{name}-data");
    runtime().block_on(async {
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(HashMap::from([(TEST_LABEL.to_string(), "1".to_string())])),
                ..Default::default()
            })
            .await
            .expect("create the test volume")
    });
    let port = free_port();
    let target = DockerTarget {
        host: None,
        name: name.clone(),
        ports: vec![PortMapping {
            host_ip: Some("127.0.0.1".parse().unwrap()),
            host_port: port,
            container_port: 80,
            protocol: PortProtocol::Tcp,
        }],
        volumes: vec![VolumeMount {
            source: VolumeSource::Named(volume.clone()),
            target: PathBuf::from("/srv"),
            read_only: false,
        }],
        env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
        networks: vec![],
        restart: RestartPolicy::UnlessStopped,
        labels: BTreeMap::from([
            (TEST_LABEL.to_string(), "1".to_string()),
            ("team".to_string(), "web".to_string()),
        ]),
        pre_deploy: None,
        health: Some(HealthCheck {
            probe: HealthProbe::Http(HttpCheck {
                port: 80,
                path: "/index.html".to_string(),
                status: 200,
                contains: Some(INDEX_TEXT.to_string()),
            }),
            timeout_seconds: 10,
        }),
    };
    let cleanup = Cleanup {
        docker: docker.clone(),
        containers: vec![name],
        volumes: vec![volume],
    };
    (target, port, cleanup)
}

/// Runs `argv` in a container: exit code and output.
async fn exec_in(docker: &Docker, container: &str, argv: &[&str]) -> (i64, String) {
    let created = docker
        .create_exec(
            container,
            ExecConfig {
                cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("create exec");
    let mut output = String::new();
    if let StartExecResults::Attached { output: mut o, .. } = docker
        .start_exec(&created.id, None)
        .await
        .expect("start exec")
    {
        while let Some(Ok(item)) = o.next().await {
            if let LogOutput::StdOut { message } | LogOutput::StdErr { message } = item {
                output.push_str(&String::from_utf8_lossy(&message));
            }
        }
    }
    for _ in 0..40 {
        let inspect = docker
            .inspect_exec(&created.id)
            .await
            .expect("inspect exec");
        if inspect.running != Some(true) {
            if let Some(code) = inspect.exit_code {
                return (code, output);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no exit code for {argv:?}");
}

async fn get_page(port: u16) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}/index.html");
    let response = reqwest::get(&url).await.expect("GET the page");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn container_exists(docker: &Docker, name: &str) -> bool {
    docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .is_ok()
}

#[test]
fn docker_replaces_container_runs_hook_and_keeps_volume() {
    let docker = docker();
    let (mut target, port, _cleanup) = target(&docker, "happy");
    let name = target.name.clone();
    target.pre_deploy = Some(vec![
        "sh".to_string(),
        "-c".to_string(),
        "hostname > /srv/dump".to_string(),
    ]);
    runtime().block_on(async {
        let a = image_a(&docker).await;
        let b = image_b(&docker).await;

        // First deploy: nothing ran, the hook is skipped.
        let first = deploy_docker(&docker, &target, &a).await.expect("deploy A");
        assert_eq!(first.result, DeployResult::Deployed, "{first:?}");
        assert_eq!(first.from, None);
        assert_eq!(first.target, format!("docker:{name}"));
        let old = docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .unwrap();
        let old_id = old.id.clone().unwrap();
        let (code, _) = exec_in(&docker, &name, &["sh", "-c", "echo kept > /srv/kept"]).await;
        assert_eq!(code, 0);
        assert!(!exec_in(&docker, &name, &["cat", "/srv/dump"])
            .await
            .1
            .contains(&old_id[..12]));

        // Replace with B.
        let started = Instant::now();
        let outcome = deploy_docker(&docker, &target, &b).await.expect("deploy B");
        eprintln!("deploy A→B took {:?}", started.elapsed());
        assert_eq!(outcome.result, DeployResult::Deployed, "{outcome:?}");
        assert_eq!(outcome.from.as_deref(), Some(a.as_str()));
        assert_eq!(outcome.to, b);

        let new = docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .unwrap();
        assert_ne!(new.id, old.id, "a new container");
        assert_eq!(new.image.as_deref(), Some(b.as_str()));
        let config = new.config.clone().unwrap();
        let labels = config.labels.unwrap();
        assert_eq!(labels.get(IMAGE_LABEL), Some(&b));
        assert_eq!(labels.get("team").map(String::as_str), Some("web"));
        assert!(config.env.unwrap().contains(&"GREETING=hello".to_string()));
        let host_config = new.host_config.clone().unwrap();
        let binding = &host_config.port_bindings.unwrap()["80/tcp"]
            .clone()
            .unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port, Some(port.to_string()));
        assert_eq!(
            host_config
                .restart_policy
                .unwrap()
                .name
                .unwrap()
                .to_string(),
            "unless-stopped"
        );
        // It serves, the volume kept its data, the hook ran in the old container.
        let (status, body) = get_page(port).await;
        assert_eq!(status, 200);
        assert!(body.contains(INDEX_TEXT), "{body}");
        assert_eq!(
            exec_in(&docker, &name, &["cat", "/srv/kept"]).await,
            (0, "kept\n".into())
        );
        let (code, dump) = exec_in(&docker, &name, &["cat", "/srv/dump"]).await;
        assert_eq!(code, 0);
        assert_eq!(
            dump.trim(),
            &old_id[..12],
            "the hook ran in the old container"
        );
        assert!(!container_exists(&docker, &format!("{name}{PREVIOUS_SUFFIX}")).await);
        assert!(
            !container_exists(&docker, &old_id).await,
            "the old container is removed"
        );

        // The same image again: nothing happens.
        let again = deploy_docker(&docker, &target, &b)
            .await
            .expect("deploy B again");
        assert_eq!(again.result, DeployResult::Unchanged, "{again:?}");
        let same = docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .unwrap();
        assert_eq!(same.id, new.id);

        // A failing hook aborts: the running container stays as it is.
        target.pre_deploy = Some(vec![
            "sh".into(),
            "-c".into(),
            "echo no dump; exit 3".into(),
        ]);
        let refused = deploy_docker(&docker, &target, &a)
            .await
            .expect("deploy with failing hook");
        match &refused.result {
            DeployResult::Failed { reason } => {
                assert!(reason.contains("exited with 3"), "{reason}");
                assert!(reason.contains("no dump"), "{reason}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        let still = docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .unwrap();
        assert_eq!(still.id, new.id);
        assert_eq!(still.state.unwrap().running, Some(true));
        assert_eq!(get_page(port).await.0, 200);
    });
}

#[test]
fn docker_failed_health_check_rolls_back() {
    let docker = docker();
    let (mut target, port, _cleanup) = target(&docker, "rollback");
    let name = target.name.clone();
    runtime().block_on(async {
        let a = image_a(&docker).await;
        let exits = image_exits(&docker).await;
        let no_page = image_no_page(&docker).await;

        let first = deploy_docker(&docker, &target, &a).await.expect("deploy A");
        assert_eq!(first.result, DeployResult::Deployed, "{first:?}");
        let old_id = docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .unwrap()
            .id
            .unwrap();
        let (code, _) = exec_in(&docker, &name, &["sh", "-c", "echo precious > /srv/db"]).await;
        assert_eq!(code, 0);

        let check_restored = |what: &'static str| {
            let docker = docker.clone();
            let name = name.clone();
            let old_id = old_id.clone();
            let a = a.clone();
            async move {
                let info = docker
                    .inspect_container(&name, None::<InspectContainerOptions>)
                    .await
                    .unwrap();
                assert_eq!(
                    info.id.as_deref(),
                    Some(old_id.as_str()),
                    "{what}: the previous container is back"
                );
                assert_eq!(info.image.as_deref(), Some(a.as_str()));
                assert_eq!(info.state.unwrap().running, Some(true), "{what}");
                let (status, body) = get_page(port).await;
                assert_eq!(status, 200, "{what}");
                assert!(body.contains(INDEX_TEXT), "{what}");
                assert_eq!(
                    exec_in(&docker, &name, &["cat", "/srv/db"]).await,
                    (0, "precious\n".into()),
                    "{what}: the volume's data"
                );
                assert!(!container_exists(&docker, &format!("{name}{PREVIOUS_SUFFIX}")).await);
            }
        };

        // The new container exits at once.
        let started = Instant::now();
        let outcome = deploy_docker(&docker, &target, &exits)
            .await
            .expect("deploy");
        eprintln!("rollback (exits) took {:?}", started.elapsed());
        match &outcome.result {
            DeployResult::RolledBack { reason } => assert!(reason.contains("stopped"), "{reason}"),
            other => panic!("expected RolledBack, got {other:?}"),
        }
        assert_eq!(outcome.from.as_deref(), Some(a.as_str()));
        check_restored("exits").await;

        // The new container runs but its page is missing: the probe times out.
        target.health.as_mut().unwrap().timeout_seconds = 2;
        let outcome = deploy_docker(&docker, &target, &no_page)
            .await
            .expect("deploy");
        match &outcome.result {
            DeployResult::RolledBack { reason } => {
                assert!(reason.contains("status 404"), "{reason}");
                assert!(reason.contains("within 2s"), "{reason}");
            }
            other => panic!("expected RolledBack, got {other:?}"),
        }
        check_restored("no page").await;
    });
}

#[test]
fn docker_uses_the_images_healthcheck() {
    let docker = docker();
    let (mut target, port, _cleanup) = target(&docker, "healthcheck");
    let name = target.name.clone();
    // The policy's probe would pass for both images: the image's HEALTHCHECK decides.
    target.health.as_mut().unwrap().timeout_seconds = 15;
    runtime().block_on(async {
        let a = image_a(&docker).await;
        let healthy = image_with_healthcheck(&docker, "deploy-healthy", &["/bin/true"]).await;
        let unhealthy = image_with_healthcheck(&docker, "deploy-unhealthy", &["/bin/false"]).await;
        assert_eq!(
            deploy_docker(&docker, &target, &a).await.unwrap().result,
            DeployResult::Deployed
        );
        let outcome = deploy_docker(&docker, &target, &unhealthy).await.unwrap();
        match &outcome.result {
            DeployResult::RolledBack { reason } => {
                assert!(reason.contains("HEALTHCHECK"), "{reason}")
            }
            other => panic!("expected RolledBack, got {other:?}"),
        }
        let info = docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .unwrap();
        assert_eq!(info.image.as_deref(), Some(a.as_str()));
        assert_eq!(get_page(port).await.0, 200);

        let outcome = deploy_docker(&docker, &target, &healthy).await.unwrap();
        assert_eq!(outcome.result, DeployResult::Deployed, "{outcome:?}");
        let info = docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .unwrap();
        assert_eq!(info.image.as_deref(), Some(healthy.as_str()));
        let health = info.state.unwrap().health.unwrap().status.unwrap();
        assert_eq!(health.to_string(), "healthy");
    });
}

#[test]
fn docker_unknown_image_fails_and_changes_nothing() {
    let docker = docker();
    let (target, _port, _cleanup) = target(&docker, "unknown");
    runtime().block_on(async {
        let missing = format!("sha256:{}", "0".repeat(64));
        let outcome = deploy_docker(&docker, &target, &missing).await.unwrap();
        match &outcome.result {
            DeployResult::Failed { reason } => assert!(reason.contains("no image"), "{reason}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        // A registry that does not answer: the pull fails.
        let port = free_port();
        let unreachable = format!("127.0.0.1:{port}/rebake-test/web@sha256:{}", "1".repeat(64));
        let outcome = deploy_docker(&docker, &target, &unreachable).await.unwrap();
        match &outcome.result {
            DeployResult::Failed { reason } => assert!(reason.contains("cannot pull"), "{reason}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(!container_exists(&docker, &target.name).await);
    });
}

/// Leaves the swarm at the end when the test joined it.
struct SwarmGuard {
    docker: Docker,
    initialised: bool,
    service: String,
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let service = self.service.clone();
        let initialised = self.initialised;
        runtime().block_on(async move {
            let _ = docker.delete_service(&service).await;
            if initialised {
                // Give the tasks a moment to go, then leave.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = docker
                    .leave_swarm(Some(LeaveSwarmOptions { force: true }))
                    .await;
            }
        });
    }
}

async fn service_image(docker: &Docker, service: &str) -> String {
    docker
        .inspect_service(service, None::<InspectServiceOptions>)
        .await
        .unwrap()
        .spec
        .unwrap()
        .task_template
        .unwrap()
        .container_spec
        .unwrap()
        .image
        .unwrap()
}

#[test]
fn swarm_update_and_rollback() {
    let docker = docker();
    let service = format!("rebake-deploy-swarm-{}", std::process::id());
    let state = runtime()
        .block_on(docker.info())
        .expect("docker info")
        .swarm
        .and_then(|s| s.local_node_state);
    let initialised = state != Some(LocalNodeState::ACTIVE);
    if initialised {
        runtime()
            .block_on(docker.init_swarm(SwarmInitRequest {
                listen_addr: Some("127.0.0.1:0".to_string()),
                advertise_addr: Some("127.0.0.1".to_string()),
                ..Default::default()
            }))
            .expect("docker swarm init on 127.0.0.1");
    }
    let _guard = SwarmGuard {
        docker: docker.clone(),
        initialised,
        service: service.clone(),
    };
    runtime().block_on(async {
        let a = image_a(&docker).await;
        let b = image_b(&docker).await;
        let exits = image_exits(&docker).await;
        let spec = ServiceSpec {
            name: Some(service.clone()),
            labels: Some(HashMap::from([(TEST_LABEL.to_string(), "1".to_string())])),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(a.clone()),
                    labels: Some(HashMap::from([(TEST_LABEL.to_string(), "1".to_string())])),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                    delay: Some(200_000_000),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        docker
            .create_service(spec, None)
            .await
            .expect("create the service");
        let target = SwarmTarget {
            service: service.clone(),
            host: None,
        };
        let settings = SwarmSettings {
            monitor: Duration::from_secs(1),
            timeout: Duration::from_secs(60),
            registry_auth: None,
        };

        let started = Instant::now();
        let outcome = deploy_swarm_with(&docker, &target, &b, &settings)
            .await
            .expect("update to B");
        eprintln!("swarm update A→B took {:?}", started.elapsed());
        assert_eq!(outcome.result, DeployResult::Deployed, "{outcome:?}");
        assert_eq!(outcome.from.as_deref(), Some(a.as_str()));
        assert_eq!(service_image(&docker, &service).await, b);
        let update = docker
            .inspect_service(&service, None::<InspectServiceOptions>)
            .await
            .unwrap()
            .spec
            .unwrap()
            .update_config
            .unwrap();
        assert_eq!(update.order.unwrap().to_string(), "start-first");
        assert_eq!(update.failure_action.unwrap().to_string(), "rollback");

        let again = deploy_swarm_with(&docker, &target, &b, &settings)
            .await
            .unwrap();
        assert_eq!(again.result, DeployResult::Unchanged, "{again:?}");

        let started = Instant::now();
        let outcome = deploy_swarm_with(&docker, &target, &exits, &settings)
            .await
            .expect("update");
        eprintln!("swarm rollback took {:?}", started.elapsed());
        assert!(
            matches!(outcome.result, DeployResult::RolledBack { .. }),
            "{outcome:?}"
        );
        assert_eq!(
            service_image(&docker, &service).await,
            b,
            "back on the old image"
        );
    });
}

#[test]
fn rewrite_manifests_in_compose_and_kubernetes() {
    let repo = tempfile::tempdir().unwrap();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let new_ref = format!("registry.example.com/images/web@{digest}");
    let compose = "\
# the web stack
services:
  web:
    image: registry.example.com/images/web:2024-01 # rebake rewrites this
    ports:
      - \"127.0.0.1:8080:80\"
  db:
    image: registry.example.com/images/db@sha256:0000000000000000000000000000000000000000000000000000000000000000
  proxy:
    image: \"registry.example.com/images/web-proxy:1\"
";
    let k8s = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # the front end
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: \"registry.example.com/images/web@sha256:1111111111111111111111111111111111111111111111111111111111111111\"
      containers:
        - image: registry.example.com/images/web
          name: web
        - name: sidecar
          image: registry.example.com/images/sidecar:3
";
    let untouched = "services:\n  other:\n    image: registry.example.com/images/other:1\n";
    std::fs::create_dir_all(repo.path().join("deploy/k8s")).unwrap();
    std::fs::write(repo.path().join("deploy/compose.yaml"), compose).unwrap();
    std::fs::write(repo.path().join("deploy/k8s/web.yml"), k8s).unwrap();
    std::fs::write(repo.path().join("deploy/other.yaml"), untouched).unwrap();

    let paths = vec![
        PathBuf::from("deploy/compose.yaml"),
        PathBuf::from("deploy/k8s"),
        PathBuf::from("deploy/other.yaml"),
    ];
    let changed = rewrite_manifests(repo.path(), &paths, "web", &new_ref).unwrap();
    assert_eq!(
        changed,
        vec![
            PathBuf::from("deploy/compose.yaml"),
            PathBuf::from("deploy/k8s/web.yml")
        ]
    );
    let compose_after = std::fs::read_to_string(repo.path().join("deploy/compose.yaml")).unwrap();
    assert_eq!(
        compose_after,
        compose.replace("registry.example.com/images/web:2024-01", &new_ref)
    );
    let k8s_after = std::fs::read_to_string(repo.path().join("deploy/k8s/web.yml")).unwrap();
    let expected = k8s
        .replace(
            "registry.example.com/images/web@sha256:1111111111111111111111111111111111111111111111111111111111111111",
            &new_ref,
        )
        .replace("- image: registry.example.com/images/web\n", &format!("- image: {new_ref}\n"));
    assert_eq!(k8s_after, expected);
    assert_eq!(
        std::fs::read_to_string(repo.path().join("deploy/other.yaml")).unwrap(),
        untouched
    );
    // Deterministic and idempotent: a second run changes nothing.
    assert!(rewrite_manifests(repo.path(), &paths, "web", &new_ref)
        .unwrap()
        .is_empty());
    // Not a digest reference: refused.
    assert!(rewrite_manifests(
        repo.path(),
        &paths,
        "web",
        "registry.example.com/images/web:1"
    )
    .is_err());
}
