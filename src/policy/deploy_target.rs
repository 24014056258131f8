//! Where a policy deploys its image (`deploy:`): a standalone Docker container, a Swarm service,
//! or manifests in the repository. Parses Docker's port, volume and restart syntax.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::image_tests::{argv, timeout, validate_http, HttpCheck, RawHttpCheck};
use super::{is_valid_docker_name, DEFAULT_HEALTH_TIMEOUT_SECONDS};
use crate::config::{
    is_env_var_name, is_valid_engine_host, scalar_map, Diagnostics, FieldPath, ScalarString,
    ENGINE_HOST_HELP,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployTarget {
    pub docker: Option<RawDockerTarget>,
    pub swarm: Option<RawSwarmTarget>,
    pub manifests: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDockerTarget {
    pub host: Option<String>,
    pub name: Option<String>,
    pub ports: Option<Vec<ScalarString>>,
    pub volumes: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, ScalarString>>,
    pub networks: Option<Vec<String>>,
    pub restart: Option<String>,
    pub labels: Option<BTreeMap<String, ScalarString>>,
    pub pre_deploy: Option<Vec<ScalarString>>,
    pub health: Option<RawHealth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub http: Option<RawHttpCheck>,
    pub command: Option<Vec<ScalarString>>,
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSwarmTarget {
    pub service: Option<String>,
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
// A few per policy, loaded once: plain variants are simpler to match than a Box.
#[allow(clippy::large_enum_variant)]
pub enum DeployTarget {
    Docker(DockerTarget),
    Swarm(SwarmTarget),
    /// Files in the repository (compose, stack, Kubernetes) whose image references rebake
    /// rewrites to the new digest in the same pull request; a GitOps engine rolls them out.
    Manifests(Vec<PathBuf>),
}

impl DeployTarget {
    /// How deploy results and the deployment log name the target: `docker:<name>`,
    /// `swarm:<service>` (after `<host>/` when it names an engine); None for manifests.
    pub fn label(&self) -> Option<String> {
        let (host, kind, name) = match self {
            DeployTarget::Docker(d) => (&d.host, "docker", &d.name),
            DeployTarget::Swarm(s) => (&s.host, "swarm", &s.service),
            DeployTarget::Manifests(_) => return None,
        };
        Some(match host {
            Some(h) => format!("{h}/{kind}:{name}"),
            None => format!("{kind}:{name}"),
        })
    }
}

/// A standalone container on a Docker host, replaced by one from the new digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockerTarget {
    /// Engine address; None = the engine from rebake.yaml.
    pub host: Option<String>,
    /// Container name.
    pub name: String,
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<VolumeMount>,
    pub env: BTreeMap<String, String>,
    pub networks: Vec<String>,
    pub restart: RestartPolicy,
    pub labels: BTreeMap<String, String>,
    /// Run inside the running (old) container (`docker exec`, as the image's user) before it
    /// is replaced, like a database dump into a mounted volume. Skipped when no container runs
    /// yet; a non-zero exit aborts the deploy.
    pub pre_deploy: Option<Vec<String>>,
    /// Checked on the new container; on failure the old one is restored.
    pub health: Option<HealthCheck>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    Tcp,
    Udp,
}

/// `[ip:]host_port:container_port[/tcp|udp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortMapping {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: PortProtocol,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        let protocol = match self.protocol {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        };
        write!(f, "{}:{}/{protocol}", self.host_port, self.container_port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeSource {
    /// An absolute directory or file on the Docker host (a bind mount).
    HostPath(PathBuf),
    /// A named Docker volume.
    Named(String),
}

/// `source:target[:ro|:rw]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeMount {
    pub source: VolumeSource,
    pub target: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RestartPolicy {
    No,
    Always,
    UnlessStopped,
    OnFailure { max_retries: Option<u32> },
}

impl fmt::Display for RestartPolicy {
    /// Docker's spelling, as `docker run --restart` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
            RestartPolicy::OnFailure { max_retries: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure {
                max_retries: Some(n),
            } => write!(f, "on-failure:{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub probe: HealthProbe,
    /// How long the new container has to become healthy.
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthProbe {
    Http(HttpCheck),
    /// Run in the new container (`docker exec`); healthy on exit code 0.
    Command(Vec<String>),
}

/// A Docker Swarm service whose image is updated to the new digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwarmTarget {
    pub service: String,
    /// Address of a manager's engine; None = the engine from rebake.yaml.
    pub host: Option<String>,
}

pub(super) fn validate_deploy(
    d: &mut Diagnostics,
    field: &FieldPath,
    raw: RawDeployTarget,
) -> Option<DeployTarget> {
    let kinds: Vec<&str> = [
        ("docker", raw.docker.is_some()),
        ("swarm", raw.swarm.is_some()),
        ("manifests", raw.manifests.is_some()),
    ]
    .iter()
    .filter(|(_, present)| *present)
    .map(|(kind, _)| *kind)
    .collect();
    if kinds.len() != 1 {
        let message = if kinds.is_empty() {
            "names no target".to_string()
        } else {
            format!("has more than one kind of target: {}", kinds.join(", "))
        };
        d.error(
            field,
            message,
            "give each deploy entry exactly one of docker:, swarm: or manifests: (use several \
             entries for several targets)",
        );
        return None;
    }
    if let Some(docker) = raw.docker {
        validate_docker(d, &field.key("docker"), docker).map(DeployTarget::Docker)
    } else if let Some(swarm) = raw.swarm {
        let field = field.key("swarm");
        let host = swarm
            .host
            .filter(|h| check_engine_host(d, &field.key("host"), h));
        match swarm.service {
            Some(service) if is_valid_docker_name(&service) => {
                Some(DeployTarget::Swarm(SwarmTarget { service, host }))
            }
            Some(service) => {
                d.error(
                    &field.key("service"),
                    format!("'{service}' is not a valid service name"),
                    "use letters, digits, '_', '.' and '-', starting with a letter or digit",
                );
                None
            }
            None => {
                d.error(
                    &field.key("service"),
                    "is missing",
                    "add 'service:', the name of the Swarm service to update",
                );
                None
            }
        }
    } else {
        let manifests = raw.manifests.unwrap_or_default();
        let field = field.key("manifests");
        if manifests.is_empty() {
            d.error(
                &field,
                "is empty",
                "list the files whose image references rebake rewrites, like deploy/web.yaml",
            );
            return None;
        }
        let mut paths = Vec::new();
        for (i, manifest) in manifests.iter().enumerate() {
            let path = Path::new(manifest);
            let inside_repo = !manifest.is_empty()
                && path
                    .components()
                    .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if inside_repo {
                paths.push(path.to_path_buf());
            } else {
                d.error(
                    &field.index(i),
                    format!("'{manifest}' is not a path inside the repository"),
                    "write a path relative to the repository root, without '..', like \
                     deploy/web/compose.yaml",
                );
            }
        }
        (paths.len() == manifests.len()).then_some(DeployTarget::Manifests(paths))
    }
}

fn check_engine_host(d: &mut Diagnostics, field: &FieldPath, host: &str) -> bool {
    let ok = is_valid_engine_host(host);
    if !ok {
        d.error(
            field,
            format!("'{host}' is not a Docker engine address"),
            ENGINE_HOST_HELP,
        );
    }
    ok
}

fn validate_docker(
    d: &mut Diagnostics,
    field: &FieldPath,
    raw: RawDockerTarget,
) -> Option<DockerTarget> {
    let errors_before = d.list.len();
    let host = raw
        .host
        .filter(|h| check_engine_host(d, &field.key("host"), h));
    let name = match raw.name {
        Some(name) if is_valid_docker_name(&name) => name,
        Some(name) => {
            d.error(
                &field.key("name"),
                format!("'{name}' is not a valid container name"),
                "use letters, digits, '_', '.' and '-', starting with a letter or digit, like \
                 rebake-nginx",
            );
            String::new()
        }
        None => {
            d.error(
                &field.key("name"),
                "is missing",
                "add 'name:', the container's name, like rebake-nginx",
            );
            String::new()
        }
    };
    let mut ports = Vec::new();
    for (i, port) in raw.ports.unwrap_or_default().into_iter().enumerate() {
        match parse_port_mapping(&port.0) {
            Ok(mapping) => ports.push(mapping),
            Err(problem) => d.error(
                &field.key("ports").index(i),
                format!("'{}' is not a port mapping: {problem}", port.0),
                "write [ip:]host_port:container_port[/udp], quoted, like \"127.0.0.1:8080:80\"",
            ),
        }
    }
    let mut volumes = Vec::new();
    for (i, volume) in raw.volumes.unwrap_or_default().iter().enumerate() {
        match parse_volume(volume) {
            Ok(mount) => volumes.push(mount),
            Err(problem) => d.error(
                &field.key("volumes").index(i),
                format!("'{volume}' is not a volume: {problem}"),
                "write /host/dir:/container/dir or volume-name:/container/dir, optionally \
                 followed by :ro",
            ),
        }
    }
    let env = scalar_map(raw.env.unwrap_or_default());
    for (key, value) in &env {
        if !is_env_var_name(key) {
            d.error(
                &field.key("env").key(key),
                format!("'{key}' is not an environment variable name"),
                "use letters, digits and '_', not starting with a digit",
            );
        } else if value.contains('\0') {
            d.error(
                &field.key("env").key(key),
                "contains a NUL character",
                "remove it",
            );
        }
    }
    let networks = raw.networks.unwrap_or_default();
    for (i, network) in networks.iter().enumerate() {
        if !is_valid_docker_name(network) {
            d.error(
                &field.key("networks").index(i),
                format!("'{network}' is not a valid network name"),
                "use letters, digits, '_', '.' and '-', starting with a letter or digit",
            );
        }
    }
    let restart = match raw.restart.as_deref() {
        None => RestartPolicy::UnlessStopped,
        Some(text) => parse_restart(text).unwrap_or_else(|| {
            d.error(
                &field.key("restart"),
                format!("'{text}' is not a restart policy"),
                "use no, always, unless-stopped, on-failure or on-failure:<max retries>",
            );
            RestartPolicy::UnlessStopped
        }),
    };
    let labels = scalar_map(raw.labels.unwrap_or_default());
    for (key, value) in &labels {
        if key.trim().is_empty() || key.contains(char::is_whitespace) || value.contains('\0') {
            d.error(
                &field.key("labels").key(key),
                "is not a valid label",
                "use keys without spaces, like org.example.team: web",
            );
        }
    }
    let pre_deploy = raw.pre_deploy.and_then(|command| {
        argv(
            d,
            &field.key("pre_deploy"),
            command,
            "[sh, -c, \"pg_dumpall > /backup/dump.sql\"]",
        )
    });
    let health = raw.health.and_then(|health| {
        let field = field.key("health");
        let timeout_seconds = timeout(
            d,
            &field.key("timeout_seconds"),
            health.timeout_seconds,
            DEFAULT_HEALTH_TIMEOUT_SECONDS,
        );
        let probe = match (health.http, health.command) {
            (Some(http), None) => HealthProbe::Http(validate_http(d, &field.key("http"), http)?),
            (None, Some(command)) => {
                HealthProbe::Command(argv(d, &field.key("command"), command, "[pg_isready]")?)
            }
            _ => {
                d.error(
                    &field,
                    "needs exactly one of http: or command:",
                    "add 'http: {port: 80}' or 'command: [pg_isready]', not both",
                );
                return None;
            }
        };
        Some(HealthCheck {
            probe,
            timeout_seconds,
        })
    });
    (d.list.len() == errors_before).then_some(DockerTarget {
        host,
        name,
        ports,
        volumes,
        env,
        networks,
        restart,
        labels,
        pre_deploy,
        health,
    })
}

/// Parses Docker's `[ip:]host_port:container_port[/tcp|udp]`.
pub fn parse_port_mapping(text: &str) -> Result<PortMapping, String> {
    let (mapping, protocol) = match text.rsplit_once('/') {
        Some((mapping, "tcp")) => (mapping, PortProtocol::Tcp),
        Some((mapping, "udp")) => (mapping, PortProtocol::Udp),
        Some((_, other)) => return Err(format!("unknown protocol '{other}'")),
        None => (text, PortProtocol::Tcp),
    };
    let (host_ip, ports) = if let Some(rest) = mapping.strip_prefix('[') {
        let (ip, ports) = rest
            .split_once("]:")
            .ok_or("an IPv6 address must be followed by ':port'")?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("'{ip}' is not an IP address"))?;
        (Some(ip), ports)
    } else {
        match mapping.matches(':').count() {
            1 => (None, mapping),
            2 => {
                let (ip, ports) = mapping.split_once(':').unwrap_or_default();
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| format!("'{ip}' is not an IP address"))?;
                (Some(ip), ports)
            }
            0 => return Err("it needs both a host port and a container port".to_string()),
            _ => return Err("too many ':'".to_string()),
        }
    };
    let (host_port, container_port) = ports
        .split_once(':')
        .ok_or("it needs both a host port and a container port")?;
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("'{p}' is not a port number (1-65535)"))
    };
    Ok(PortMapping {
        host_ip,
        host_port: port(host_port)?,
        container_port: port(container_port)?,
        protocol,
    })
}

/// Parses `source:target[:ro|:rw]`; a source starting with `/` is a host path.
pub fn parse_volume(text: &str) -> Result<VolumeMount, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, read_only) = match parts.as_slice() {
        [source, target] => (*source, *target, false),
        [source, target, "ro"] => (*source, *target, true),
        [source, target, "rw"] => (*source, *target, false),
        [_, _, option] => return Err(format!("unknown option '{option}' (use ro or rw)")),
        _ => return Err("it needs a source and a target separated by ':'".to_string()),
    };
    let source = if source.starts_with('/') {
        VolumeSource::HostPath(PathBuf::from(source))
    } else if is_valid_docker_name(source) && source.len() >= 2 {
        VolumeSource::Named(source.to_string())
    } else {
        return Err(format!(
            "'{source}' is neither an absolute host path nor a volume name"
        ));
    };
    if !target.starts_with('/') || target.contains('\0') {
        return Err(format!("the target '{target}' is not an absolute path"));
    }
    Ok(VolumeMount {
        source,
        target: PathBuf::from(target),
        read_only,
    })
}

fn parse_restart(text: &str) -> Option<RestartPolicy> {
    match text {
        "no" => Some(RestartPolicy::No),
        "always" => Some(RestartPolicy::Always),
        "unless-stopped" => Some(RestartPolicy::UnlessStopped),
        "on-failure" => Some(RestartPolicy::OnFailure { max_retries: None }),
        other => {
            let retries = other.strip_prefix("on-failure:")?.parse().ok()?;
            Some(RestartPolicy::OnFailure {
                max_retries: Some(retries),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_and_volume_syntax() {
        assert!(parse_port_mapping("80").is_err());
        assert!(parse_port_mapping("0:80").is_err());
        assert!(parse_port_mapping("8080:80/sctp").is_err());
        assert!(parse_port_mapping("localhost:8080:80").is_err());
        assert!(parse_volume("data:/var/lib/postgresql").is_ok());
        assert!(parse_volume("rel/dir:/x").is_err());
        assert!(parse_volume("/a:b").is_err());
        assert!(parse_volume("/a:/b:z").is_err());
    }
}
