//! The container engine, through the Docker Engine API (bollard). No docker CLI.

use anyhow::{anyhow, Context, Result};
use bollard::Docker;

/// Connects to the engine at `host` (`unix:///path` or `tcp://host:port`, as in rebake.yaml's
/// `engine.host`) and negotiates the API version (the 20.10 engine speaks 1.41).
pub async fn connect(host: &str) -> Result<Docker> {
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, 600, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        let addr = host.replacen("tcp://", "http://", 1);
        Docker::connect_with_http(&addr, 600, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(anyhow!(
            "engine host {host:?} is neither unix:///path nor tcp://host:port"
        ));
    }
    .with_context(|| format!("cannot connect to the container engine at {host}"))?;
    let docker = docker.negotiate_version().await.map_err(|e| {
        anyhow!("container engine at {host} is unreachable ({e}); is dockerd running? (`docker info` must work)")
    })?;
    Ok(docker)
}

/// The engine answered 404: no such container, image or service.
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The engine answered 304: the container was already in the state asked for.
pub fn is_not_modified(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}
