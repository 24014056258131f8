//! The deploy stage: roll a tested image out to the targets a policy names, by digest.
//!
//! - [`deploy_docker`]: a standalone container on a Docker host, replaced by one from the new
//!   image under the same name, with the ports, volumes, env, networks, restart policy and
//!   labels the policy gives. The old container is stopped and kept (renamed
//!   `<name>.rebake-previous`) until the new one is healthy; when it is not, the new one is
//!   removed and the old one is renamed back and started again, on the same volumes.
//! - [`deploy_swarm`]: a Docker Swarm service updated to the new image with a rolling update
//!   (start-first where allowed, failure action rollback), waiting for convergence.
//! - [`rewrite_manifests`]: compose files, swarm stack files and Kubernetes manifests whose
//!   `image:` fields are rewritten to `repo@sha256:…`, line by line, so the rest of each file
//!   stays byte for byte as it was; a GitOps engine rolls them out after merge.
//!
//! Everything goes through the Docker Engine API (bollard); no docker CLI.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::StartExecResults;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ExecConfig, HealthStatusEnum, HostConfig,
    ImageInspect, NetworkConnectRequest, PortBinding, RestartPolicy as EngineRestartPolicy,
    RestartPolicyNameEnum, ServiceSpecRollbackConfigFailureActionEnum,
    ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, ServiceUpdateStatusStateEnum, TaskState,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, InspectServiceOptions,
    ListTasksOptions, LogsOptions, RemoveContainerOptions, RenameContainerOptions,
    StopContainerOptions, UpdateServiceOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde::Serialize;

use crate::policy::{
    DockerTarget, HealthProbe, HttpCheck, PortProtocol, RestartPolicy, SwarmTarget, VolumeSource,
    DEFAULT_HEALTH_TIMEOUT_SECONDS,
};
use crate::publish::RegistryAuth;

/// Label on every container rebake deploys: the image reference it was deployed from.
pub const IMAGE_LABEL: &str = "dev.rebake.image";
/// Suffix of the name the old container carries while its replacement is checked.
pub const PREVIOUS_SUFFIX: &str = ".rebake-previous";
/// How long a `pre_deploy` hook may run.
const PRE_DEPLOY_TIMEOUT: Duration = Duration::from_secs(600);
/// How often health is polled.
const HEALTH_POLL: Duration = Duration::from_millis(250);
/// Without any health check: how long the new container must keep running.
const SETTLE: Duration = Duration::from_secs(1);
/// Time for one HTTP probe request.
const HTTP_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many lines of the new container's output a failure reason quotes.
const LOG_TAIL_LINES: usize = 10;

/// What one deploy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployOutcome {
    /// `docker:<name>`, `swarm:<service>` (prefixed by `<host>/` when the target names an
    /// engine host), or `manifests`.
    pub target: String,
    /// The image: the repository of the reference (`registry/repo`), or the image id when
    /// deploying by id. The caller may replace it with the policy's name.
    pub image: String,
    /// The image reference that ran before (the container's `dev.rebake.image` label, else the
    /// image it was created from); None when nothing ran.
    pub from: Option<String>,
    /// The image reference deployed (`repo@sha256:…` or an image id).
    pub to: String,
    pub result: DeployResult,
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum DeployResult {
    /// The new image runs and passed its health check.
    Deployed,
    /// The target already ran this image; nothing was touched.
    Unchanged,
    /// The new image failed; what ran before runs again.
    RolledBack { reason: String },
    /// Nothing was changed (the image could not be pulled, a pre-deploy hook failed, …), or a
    /// first deploy failed with nothing to go back to.
    Failed { reason: String },
}

impl DeployResult {
    /// `deployed`, `unchanged`, `rolled_back` or `failed`.
    pub fn word(&self) -> &'static str {
        match self {
            DeployResult::Deployed => "deployed",
            DeployResult::Unchanged => "unchanged",
            DeployResult::RolledBack { .. } => "rolled_back",
            DeployResult::Failed { .. } => "failed",
        }
    }

    /// Deployed or unchanged.
    pub fn is_success(&self) -> bool {
        matches!(self, DeployResult::Deployed | DeployResult::Unchanged)
    }
}

impl fmt::Display for DeployResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeployResult::RolledBack { reason } => write!(f, "rolled back: {reason}"),
            DeployResult::Failed { reason } => write!(f, "failed: {reason}"),
            other => f.write_str(other.word()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Docker: a standalone container
// ---------------------------------------------------------------------------------------------

/// Replaces the container `target.name` with one from `image_ref` (`repo@sha256:…`, pulled when
/// the engine lacks it, or an image id `sha256:…`).
///
/// In order: undo a deploy that was interrupted half-way (a `<name>.rebake-previous` left
/// behind); [`DeployResult::Unchanged`] when the container already runs this image; run
/// `pre_deploy` in the running old container (as its user; a non-zero exit aborts with
/// [`DeployResult::Failed`], the old container untouched); stop the old container and rename it
/// `<name>.rebake-previous`; create and start the new one; check its health (the image's
/// HEALTHCHECK when it has one, else the policy's probe, else that it keeps running) within the
/// policy's timeout; then remove the previous container (never its volumes) →
/// [`DeployResult::Deployed`], or remove the new one and restore the previous →
/// [`DeployResult::RolledBack`].
///
/// `Err` only when the engine fails in a way that leaves the target in an unknown state (the
/// previous container could not be restored): a person has to look.
pub async fn deploy_docker(
    docker: &Docker,
    target: &DockerTarget,
    image_ref: &str,
) -> Result<DeployOutcome> {
    deploy_docker_with(docker, target, image_ref, None).await
}

/// [`deploy_docker`], pulling the image with the registry login `auth` when the engine lacks it.
pub async fn deploy_docker_with(
    docker: &Docker,
    target: &DockerTarget,
    image_ref: &str,
    auth: Option<&RegistryAuth>,
) -> Result<DeployOutcome> {
    let started = Instant::now();
    let mut outcome = DeployOutcome {
        target: crate::policy::DeployTarget::Docker(target.clone())
            .label()
            .unwrap_or_default(),
        image: crate::image_ref::image_repository(image_ref),
        from: None,
        to: image_ref.to_string(),
        result: DeployResult::Deployed,
        duration: Duration::ZERO,
    };
    let result = deploy_docker_inner(docker, target, image_ref, auth, &mut outcome).await;
    outcome.duration = started.elapsed();
    let result = result?;
    outcome.result = result;
    tracing::info!(
        target = %outcome.target,
        image = %image_ref,
        result = %outcome.result,
        duration_ms = outcome.duration.as_millis() as u64,
        "docker deploy finished"
    );
    Ok(outcome)
}

async fn deploy_docker_inner(
    docker: &Docker,
    target: &DockerTarget,
    image_ref: &str,
    auth: Option<&RegistryAuth>,
    outcome: &mut DeployOutcome,
) -> Result<DeployResult> {
    let name = target.name.as_str();
    let previous_name = format!("{name}{PREVIOUS_SUFFIX}");
    recover_interrupted(docker, name, &previous_name).await?;

    let image = match ensure_image(docker, image_ref, auth).await {
        Ok(image) => image,
        Err(e) => return Ok(DeployResult::Failed { reason: e }),
    };
    let image_id = image.id.clone().unwrap_or_default();

    let old = inspect_container(docker, name)
        .await
        .with_context(|| format!("cannot inspect the container {name}"))?;
    if let Some(old) = &old {
        outcome.from = Some(container_image_ref(old));
        let running = old.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if running && old.image.as_deref() == Some(image_id.as_str()) {
            return Ok(DeployResult::Unchanged);
        }
        if let (true, Some(argv)) = (running, &target.pre_deploy) {
            let user = old.config.as_ref().and_then(|c| c.user.clone());
            let hook = tokio::time::timeout(
                PRE_DEPLOY_TIMEOUT,
                exec(docker, name, argv, user.filter(|u| !u.is_empty())),
            )
            .await;
            let failure = match hook {
                Err(_) => Some(format!(
                    "pre_deploy {argv:?} did not finish within {}s",
                    PRE_DEPLOY_TIMEOUT.as_secs()
                )),
                Ok(Err(e)) => Some(format!("pre_deploy {argv:?} could not run: {e}")),
                Ok(Ok((0, _))) => None,
                Ok(Ok((code, output))) => Some(format!(
                    "pre_deploy {argv:?} exited with {code}; the old container keeps running{}",
                    quote_output(&output)
                )),
            };
            if let Some(reason) = failure {
                return Ok(DeployResult::Failed { reason });
            }
        }
        // Stop and set aside; restart it if that fails half-way.
        // The container's own stop timeout (its StopTimeout, else the engine's 10 s) applies.
        let stop = StopContainerOptions::default();
        if let Err(e) = docker.stop_container(name, Some(stop)).await {
            if !crate::engine::is_not_modified(&e) {
                return Ok(DeployResult::Failed {
                    reason: format!("cannot stop the old container {name}: {e}"),
                });
            }
        }
        if let Err(e) = rename(docker, name, &previous_name).await {
            let _ = docker.start_container(name, None).await;
            return Ok(DeployResult::Failed {
                reason: format!("cannot rename the old container {name} to {previous_name}: {e}"),
            });
        }
    }
    let had_previous = old.is_some();

    // The new container.
    let new_id = match create_and_start(docker, target, image_ref).await {
        Ok(id) => id,
        Err((id, reason)) => {
            return restore(
                docker,
                name,
                &previous_name,
                id.as_deref(),
                had_previous,
                reason,
            )
            .await;
        }
    };
    let timeout = Duration::from_secs(
        target
            .health
            .as_ref()
            .map_or(DEFAULT_HEALTH_TIMEOUT_SECONDS, |h| h.timeout_seconds),
    );
    match check_health(docker, &new_id, &image, target, timeout).await {
        Ok(()) => {
            if had_previous {
                remove_container(docker, &previous_name)
                    .await
                    .with_context(|| {
                        format!("the new {name} is healthy, but removing {previous_name} failed")
                    })?;
            }
            Ok(DeployResult::Deployed)
        }
        Err(reason) => {
            let logs = container_logs(docker, &new_id).await;
            let reason = format!("{reason}{}", quote_output(&logs));
            restore(
                docker,
                name,
                &previous_name,
                Some(&new_id),
                had_previous,
                reason,
            )
            .await
        }
    }
}

/// A deploy interrupted between setting the old container aside and finishing: the old one
/// (`previous`) is what last ran healthy, so it goes back in place.
async fn recover_interrupted(docker: &Docker, name: &str, previous: &str) -> Result<()> {
    let Some(_) = inspect_container(docker, previous).await? else {
        return Ok(());
    };
    tracing::warn!(
        container = name,
        "restoring {previous} left by an interrupted deploy"
    );
    if inspect_container(docker, name).await?.is_some() {
        remove_container(docker, name)
            .await
            .with_context(|| format!("cannot remove {name} left by an interrupted deploy"))?;
    }
    rename(docker, previous, name)
        .await
        .with_context(|| format!("cannot rename {previous} back to {name}"))?;
    match docker.start_container(name, None).await {
        Ok(()) => Ok(()),
        Err(e) if crate::engine::is_not_modified(&e) => Ok(()),
        Err(e) => Err(anyhow!("cannot start {name} again: {e}")),
    }
}

/// Removes the new container (when it was created) and puts the previous one back.
async fn restore(
    docker: &Docker,
    name: &str,
    previous: &str,
    new_id: Option<&str>,
    had_previous: bool,
    reason: String,
) -> Result<DeployResult> {
    if let Some(id) = new_id {
        remove_container(docker, id)
            .await
            .with_context(|| format!("{reason}; and removing the failed new {name} failed"))?;
    }
    if !had_previous {
        return Ok(DeployResult::Failed {
            reason: format!("{reason} (no previous container to restore)"),
        });
    }
    rename(docker, previous, name)
        .await
        .with_context(|| format!("{reason}; and renaming {previous} back to {name} failed"))?;
    match docker.start_container(name, None).await {
        Ok(()) => {}
        Err(e) if crate::engine::is_not_modified(&e) => {}
        Err(e) => bail!("{reason}; and starting the previous {name} again failed: {e}"),
    }
    Ok(DeployResult::RolledBack { reason })
}

/// The image, pulled first when the engine lacks it and `image_ref` names a registry.
pub(crate) async fn ensure_image(
    docker: &Docker,
    image_ref: &str,
    auth: Option<&RegistryAuth>,
) -> Result<ImageInspect, String> {
    match docker.inspect_image(image_ref).await {
        Ok(image) => return Ok(image),
        Err(e) if !crate::engine::is_not_found(&e) => {
            return Err(format!("cannot inspect the image {image_ref}: {e}"))
        }
        Err(_) => {}
    }
    if crate::image_ref::is_image_id(image_ref) {
        return Err(format!(
            "the engine has no image {image_ref} (an image id cannot be pulled)"
        ));
    }
    tracing::info!(image = image_ref, "pulling");
    let options = CreateImageOptions {
        from_image: Some(image_ref.to_string()),
        ..Default::default()
    };
    let credentials = auth.map(RegistryAuth::engine_credentials);
    let mut stream = docker.create_image(Some(options), None, credentials);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            return Err(format!("cannot pull {image_ref}: {e}"));
        }
    }
    docker
        .inspect_image(image_ref)
        .await
        .map_err(|e| format!("pulled {image_ref}, but the engine has no such image: {e}"))
}

/// Creates the container as the policy describes it and starts it. On failure, the id of a
/// container that was created (to remove) and the reason.
async fn create_and_start(
    docker: &Docker,
    target: &DockerTarget,
    image_ref: &str,
) -> Result<String, (Option<String>, String)> {
    let name = target.name.as_str();
    let body = container_body(target, image_ref);
    let options = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| (None, format!("cannot create the new container {name}: {e}")))?;
    let id = created.id;
    for network in target.networks.iter().skip(1) {
        let request = NetworkConnectRequest {
            container: id.clone(),
            endpoint_config: None,
        };
        if let Err(e) = docker.connect_network(network, request).await {
            return Err((
                Some(id),
                format!("cannot connect the new container to the network {network}: {e}"),
            ));
        }
    }
    if let Err(e) = docker.start_container(&id, None).await {
        return Err((
            Some(id),
            format!("cannot start the new container {name}: {e}"),
        ));
    }
    Ok(id)
}

/// The create request for `target` running `image_ref`.
pub fn container_body(target: &DockerTarget, image_ref: &str) -> ContainerCreateBody {
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for port in &target.ports {
        let protocol = match port.protocol {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        };
        let key = format!("{}/{protocol}", port.container_port);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(port.host_ip.map(|ip| ip.to_string()).unwrap_or_default()),
                host_port: Some(port.host_port.to_string()),
            });
    }
    let binds: Vec<String> = target
        .volumes
        .iter()
        .map(|v| {
            let source = match &v.source {
                VolumeSource::HostPath(path) => path.display().to_string(),
                VolumeSource::Named(name) => name.clone(),
            };
            let mode = if v.read_only { ":ro" } else { "" };
            format!("{source}:{}{mode}", v.target.display())
        })
        .collect();
    let (restart_name, max_retries) = match target.restart {
        RestartPolicy::No => (RestartPolicyNameEnum::NO, None),
        RestartPolicy::Always => (RestartPolicyNameEnum::ALWAYS, None),
        RestartPolicy::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        RestartPolicy::OnFailure { max_retries } => (
            RestartPolicyNameEnum::ON_FAILURE,
            max_retries.map(i64::from),
        ),
    };
    let mut labels: HashMap<String, String> = target
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(IMAGE_LABEL.to_string(), image_ref.to_string());
    let host_config = HostConfig {
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        binds: (!binds.is_empty()).then_some(binds),
        restart_policy: Some(EngineRestartPolicy {
            name: Some(restart_name),
            maximum_retry_count: max_retries,
        }),
        network_mode: target.networks.first().cloned(),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image_ref.to_string()),
        env: (!target.env.is_empty())
            .then(|| target.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        labels: Some(labels),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Waits until the new container is healthy: the image's HEALTHCHECK when it has one, else the
/// policy's probe, else running for [`SETTLE`]. A container that stops fails at once.
async fn check_health(
    docker: &Docker,
    id: &str,
    image: &ImageInspect,
    target: &DockerTarget,
    timeout: Duration,
) -> Result<(), String> {
    let image_healthcheck = image
        .config
        .as_ref()
        .and_then(|c| c.healthcheck.as_ref())
        .and_then(|h| h.test.as_ref())
        .is_some_and(|test| test.first().is_some_and(|t| t != "NONE"));
    let deadline = Instant::now() + timeout;
    let mut last: String;
    let client = reqwest::Client::builder()
        .timeout(HTTP_PROBE_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let settle_until = Instant::now() + SETTLE;
    loop {
        let info = docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| format!("cannot inspect the new container: {e}"))?;
        let state = info.state.clone().unwrap_or_default();
        if !state.running.unwrap_or(false) || state.restarting.unwrap_or(false) {
            return Err(format!(
                "the new container stopped (exit code {})",
                state.exit_code.unwrap_or(-1)
            ));
        }
        if image_healthcheck {
            let health = state.health.unwrap_or_default();
            match health.status {
                Some(HealthStatusEnum::HEALTHY) => return Ok(()),
                Some(HealthStatusEnum::UNHEALTHY) => {
                    let output = health
                        .log
                        .and_then(|l| l.last().and_then(|r| r.output.clone()))
                        .unwrap_or_default();
                    return Err(format!(
                        "the image's HEALTHCHECK reports unhealthy{}",
                        quote_output(&output)
                    ));
                }
                other => {
                    last = match other {
                        Some(status) => format!("health status {status}"),
                        None => "no health status yet".to_string(),
                    }
                }
            }
        } else {
            match target.health.as_ref().map(|h| &h.probe) {
                Some(HealthProbe::Http(check)) => {
                    match http_probe(&client, &info, target, check).await {
                        Ok(()) => return Ok(()),
                        Err(problem) => last = problem,
                    }
                }
                Some(HealthProbe::Command(argv)) => match exec(docker, id, argv, None).await {
                    Ok((0, _)) => return Ok(()),
                    Ok((code, output)) => {
                        last = format!("{argv:?} exited with {code}{}", quote_output(&output))
                    }
                    Err(e) => last = format!("{argv:?} could not run: {e}"),
                },
                None => {
                    if Instant::now() >= settle_until {
                        return Ok(());
                    }
                    last = "still settling".to_string();
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not healthy within {}s (last: {last})",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(HEALTH_POLL).await;
    }
}

/// One GET of the policy's http probe: through the host port the policy publishes for
/// `check.port`, else the container's address on its first network.
async fn http_probe(
    client: &reqwest::Client,
    info: &ContainerInspectResponse,
    target: &DockerTarget,
    check: &HttpCheck,
) -> Result<(), String> {
    let published = target
        .ports
        .iter()
        .find(|p| p.container_port == check.port && p.protocol == PortProtocol::Tcp);
    let authority = match published {
        Some(port) => match port.host_ip {
            Some(IpAddr::V6(ip)) if !ip.is_unspecified() => format!("[{ip}]:{}", port.host_port),
            Some(IpAddr::V6(_)) => format!("[::1]:{}", port.host_port),
            Some(IpAddr::V4(ip)) if !ip.is_unspecified() => format!("{ip}:{}", port.host_port),
            _ => format!("127.0.0.1:{}", port.host_port),
        },
        None => {
            let ip = info
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .and_then(|networks| {
                    let mut addresses: Vec<_> = networks
                        .iter()
                        .filter_map(|(name, e)| {
                            e.ip_address
                                .clone()
                                .filter(|ip| !ip.is_empty())
                                .map(|ip| (name.clone(), ip))
                        })
                        .collect();
                    addresses.sort();
                    addresses.into_iter().next().map(|(_, ip)| ip)
                })
                .ok_or_else(|| {
                    format!(
                        "port {} is not published and the container has no address",
                        check.port
                    )
                })?;
            format!("{ip}:{}", check.port)
        }
    };
    let url = format!("http://{authority}{}", check.path);
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    if status != check.status {
        return Err(format!(
            "GET {url}: status {status}, expected {}",
            check.status
        ));
    }
    if let Some(text) = &check.contains {
        let body = response
            .text()
            .await
            .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
        if !body.contains(text.as_str()) {
            return Err(format!("GET {url}: the body does not contain {text:?}"));
        }
    }
    Ok(())
}

/// Runs `argv` in a running container; its exit code and output (stdout and stderr).
async fn exec(
    docker: &Docker,
    container: &str,
    argv: &[String],
    user: Option<String>,
) -> Result<(i64, String)> {
    let config = ExecConfig {
        cmd: Some(argv.to_vec()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        user,
        ..Default::default()
    };
    let created = docker.create_exec(container, config).await?;
    let mut output = String::new();
    if let StartExecResults::Attached {
        output: mut stream, ..
    } = docker.start_exec(&created.id, None).await?
    {
        while let Some(item) = stream.next().await {
            match item? {
                LogOutput::StdOut { message } | LogOutput::StdErr { message } => {
                    output.push_str(&String::from_utf8_lossy(&message));
                }
                _ => {}
            }
        }
    }
    // The stream ends when the process does; the exit code can lag a moment behind.
    for _ in 0..40 {
        let inspect = docker.inspect_exec(&created.id).await?;
        if inspect.running != Some(true) {
            if let Some(code) = inspect.exit_code {
                return Ok((code, output));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the engine reports no exit code for {argv:?}")
}

/// The last lines of a container's output.
async fn container_logs(docker: &Docker, id: &str) -> String {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: LOG_TAIL_LINES.to_string(),
        ..Default::default()
    };
    let mut stream = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(Ok(item)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&item.into_bytes()));
    }
    text
}

/// ` (output: …)` with the last lines of `output`, or nothing when it is empty.
fn quote_output(output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!(" (output: {})", tail.join(" | ").trim())
}

async fn inspect_container(
    docker: &Docker,
    name: &str,
) -> Result<Option<ContainerInspectResponse>, BollardError> {
    match docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => Ok(Some(info)),
        Err(e) if crate::engine::is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn rename(docker: &Docker, from: &str, to: &str) -> Result<(), BollardError> {
    let options = RenameContainerOptions {
        name: to.to_string(),
    };
    docker.rename_container(from, options).await
}

/// Removes a container, never its volumes; gone already is fine.
async fn remove_container(docker: &Docker, name: &str) -> Result<(), BollardError> {
    let options = RemoveContainerOptions {
        force: true,
        v: false,
        ..Default::default()
    };
    match docker.remove_container(name, Some(options)).await {
        Err(e) if crate::engine::is_not_found(&e) => Ok(()),
        other => other,
    }
}

/// The reference a container was deployed from: rebake's label, else its configured image.
fn container_image_ref(info: &ContainerInspectResponse) -> String {
    let config = info.config.as_ref();
    config
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(IMAGE_LABEL).cloned())
        .or_else(|| config.and_then(|c| c.image.clone()))
        .or_else(|| info.image.clone())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Swarm
// ---------------------------------------------------------------------------------------------

/// How a swarm update is run and waited for.
#[derive(Debug, Clone)]
pub struct SwarmSettings {
    /// How long each updated task is watched for failure before the update moves on.
    pub monitor: Duration,
    /// How long the update (including a rollback) may take to converge.
    pub timeout: Duration,
    /// The registry login the swarm's nodes pull the image with.
    pub registry_auth: Option<RegistryAuth>,
}

impl Default for SwarmSettings {
    fn default() -> Self {
        SwarmSettings {
            monitor: Duration::from_secs(5),
            timeout: Duration::from_secs(300),
            registry_auth: None,
        }
    }
}

/// [`deploy_swarm_with`] with the default settings.
pub async fn deploy_swarm(
    docker: &Docker,
    target: &SwarmTarget,
    image_ref: &str,
) -> Result<DeployOutcome> {
    deploy_swarm_with(docker, target, image_ref, &SwarmSettings::default()).await
}

/// Updates the service's image to `image_ref` with a rolling update — start-first (stop-first
/// when it publishes ports in host mode, where two tasks cannot share a port), failure action
/// rollback, each task monitored for `settings.monitor` — and waits for the swarm to converge:
/// [`DeployResult::Deployed`] when the update completed and every task runs the new image,
/// [`DeployResult::RolledBack`] when the swarm rolled it back, [`DeployResult::Failed`] when it
/// paused or did not converge in time. `Err` when the service cannot be read or updated.
pub async fn deploy_swarm_with(
    docker: &Docker,
    target: &SwarmTarget,
    image_ref: &str,
    settings: &SwarmSettings,
) -> Result<DeployOutcome> {
    let started = Instant::now();
    let service_name = target.service.as_str();
    let mut outcome = DeployOutcome {
        target: crate::policy::DeployTarget::Swarm(target.clone())
            .label()
            .unwrap_or_default(),
        image: crate::image_ref::image_repository(image_ref),
        from: None,
        to: image_ref.to_string(),
        result: DeployResult::Deployed,
        duration: Duration::ZERO,
    };
    let service = docker
        .inspect_service(service_name, None::<InspectServiceOptions>)
        .await
        .with_context(|| format!("cannot inspect the swarm service {service_name}"))?;
    let version = service
        .version
        .as_ref()
        .and_then(|v| v.index)
        .ok_or_else(|| anyhow!("the swarm service {service_name} has no version"))?;
    let mut spec = service
        .spec
        .clone()
        .ok_or_else(|| anyhow!("the swarm service {service_name} has no spec"))?;
    let current = spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .ok_or_else(|| anyhow!("the swarm service {service_name} runs no container image"))?;
    outcome.from = Some(current.clone());
    let updating = matches!(
        service.update_status.as_ref().and_then(|s| s.state),
        Some(
            ServiceUpdateStatusStateEnum::UPDATING | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED
        )
    );
    if same_image(&current, image_ref) && !updating {
        outcome.result = DeployResult::Unchanged;
        outcome.duration = started.elapsed();
        return Ok(outcome);
    }
    let host_mode_ports = spec
        .endpoint_spec
        .as_ref()
        .and_then(|e| e.ports.as_ref())
        .is_some_and(|ports| {
            ports
                .iter()
                .any(|p| p.publish_mode.map(|m| m.to_string()).as_deref() == Some("host"))
        });
    let monitor_ns = i64::try_from(settings.monitor.as_nanos()).unwrap_or(i64::MAX);
    let mut update = spec.update_config.clone().unwrap_or_default();
    update.order = Some(if host_mode_ports {
        ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
    } else {
        ServiceSpecUpdateConfigOrderEnum::START_FIRST
    });
    update.failure_action = Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK);
    update.monitor = Some(monitor_ns);
    update.parallelism = Some(update.parallelism.unwrap_or(1));
    spec.update_config = Some(update);
    let mut rollback = spec.rollback_config.clone().unwrap_or_default();
    rollback.order = Some(if host_mode_ports {
        ServiceSpecRollbackConfigOrderEnum::STOP_FIRST
    } else {
        ServiceSpecRollbackConfigOrderEnum::START_FIRST
    });
    rollback.failure_action = Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE);
    rollback.monitor = Some(monitor_ns);
    rollback.parallelism = Some(rollback.parallelism.unwrap_or(1));
    spec.rollback_config = Some(rollback);
    let container = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
        .ok_or_else(|| anyhow!("the swarm service {service_name} runs no container"))?;
    container.image = Some(image_ref.to_string());
    let before = service
        .update_status
        .as_ref()
        .and_then(|s| s.started_at.clone());

    let options = UpdateServiceOptions {
        version: i32::try_from(version).context("service version out of range")?,
        ..Default::default()
    };
    let response = docker
        .update_service(
            service_name,
            spec,
            options,
            settings
                .registry_auth
                .as_ref()
                .map(RegistryAuth::engine_credentials),
        )
        .await
        .with_context(|| format!("cannot update the swarm service {service_name}"))?;
    for warning in response.warnings.unwrap_or_default() {
        tracing::warn!(service = service_name, "{warning}");
    }

    let updated_at = Instant::now();
    let deadline = updated_at + settings.timeout;
    let result = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let service = docker
            .inspect_service(service_name, None::<InspectServiceOptions>)
            .await
            .with_context(|| format!("cannot inspect the swarm service {service_name}"))?;
        let status = service
            .update_status
            .clone()
            .filter(|s| s.started_at.is_some() && s.started_at != before);
        let message = status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default();
        let state = status.as_ref().and_then(|s| s.state);
        // No fresh update status: the swarm started no update (nothing to change in the
        // tasks) or has not started it yet; trust the tasks only after a monitor period.
        let may_be_done = match state {
            Some(ServiceUpdateStatusStateEnum::COMPLETED) => true,
            None => updated_at.elapsed() >= settings.monitor,
            _ => false,
        };
        if may_be_done && tasks_converged(docker, service_name, image_ref).await? {
            break DeployResult::Deployed;
        }
        match state {
            Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) => {
                break DeployResult::RolledBack {
                    reason: format!("the swarm rolled the update back: {message}"),
                };
            }
            Some(
                state @ (ServiceUpdateStatusStateEnum::PAUSED
                | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED),
            ) => {
                break DeployResult::Failed {
                    reason: format!("the swarm update is {state}: {message}"),
                };
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            break DeployResult::Failed {
                reason: format!(
                    "the swarm service {service_name} did not converge within {}s{}",
                    settings.timeout.as_secs(),
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(" (last: {message})")
                    }
                ),
            };
        }
    };
    outcome.result = result;
    outcome.duration = started.elapsed();
    tracing::info!(
        target = %outcome.target,
        image = %image_ref,
        result = %outcome.result,
        duration_ms = outcome.duration.as_millis() as u64,
        "swarm deploy finished"
    );
    Ok(outcome)
}

/// Every task the service wants running runs `image_ref`, and at least one does.
async fn tasks_converged(docker: &Docker, service: &str, image_ref: &str) -> Result<bool> {
    let mut filters = HashMap::new();
    filters.insert("service".to_string(), vec![service.to_string()]);
    filters.insert("desired-state".to_string(), vec!["running".to_string()]);
    let tasks = docker
        .list_tasks(Some(ListTasksOptions {
            filters: Some(filters),
        }))
        .await
        .with_context(|| format!("cannot list the tasks of {service}"))?;
    let mut running = 0;
    for task in &tasks {
        let image = task
            .spec
            .as_ref()
            .and_then(|s| s.container_spec.as_ref())
            .and_then(|c| c.image.as_deref())
            .unwrap_or("");
        let state = task.status.as_ref().and_then(|s| s.state);
        if !same_image(image, image_ref) || state != Some(TaskState::RUNNING) {
            return Ok(false);
        }
        running += 1;
    }
    Ok(running > 0)
}

/// Whether a service's image is `image_ref` (the swarm may pin a tag to `tag@digest`).
fn same_image(service_image: &str, image_ref: &str) -> bool {
    if service_image == image_ref {
        return true;
    }
    match (service_image.split_once('@'), image_ref.split_once('@')) {
        (Some((a_name, a_digest)), Some((b_name, b_digest))) => {
            a_digest == b_digest
                && crate::image_ref::image_repository(a_name)
                    == crate::image_ref::image_repository(b_name)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_words() {
        assert_eq!(DeployResult::Deployed.to_string(), "deployed");
        assert_eq!(
            DeployResult::RolledBack { reason: "x".into() }.to_string(),
            "rolled back: x"
        );
    }
}
