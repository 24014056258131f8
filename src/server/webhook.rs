//! The forges' webhooks: signature verification, the pull_request payload read into a
//! [`MergedProposal`], and the two handlers (`POST /webhook/github`, `POST /webhook/gitea`).

use super::{lock, Enqueued, MergedProposal, Service, WebhookForge, PROPOSAL_BRANCH_PREFIX};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use tracing::{error, info, warn};

pub(super) async fn github_webhook(
    State(service): State<Service>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    service.webhook(WebhookForge::Github, &headers, &body)
}

pub(super) async fn gitea_webhook(
    State(service): State<Service>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    service.webhook(WebhookForge::Gitea, &headers, &body)
}

/// The answer to one webhook delivery; `result` is the `result` label of
/// `rebake_webhooks_total`.
struct Outcome {
    status: StatusCode,
    result: &'static str,
    message: String,
}

fn outcome(status: StatusCode, result: &'static str, message: impl Into<String>) -> Outcome {
    Outcome {
        status,
        result,
        message: message.into(),
    }
}

/// HMAC-SHA256 of `body` with `secret`, compared in constant time with the hex `signature`.
pub fn verify_signature(secret: &[u8], body: &[u8], signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// The lowercase hex HMAC-SHA256 of `body` with `secret` (how GitHub and Gitea sign).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The JSON of a delivery: the body itself (`application/json`), or the `payload` field of a
/// form-encoded body (`application/x-www-form-urlencoded`, GitHub's default content type).
fn json_payload(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, String> {
    let content_type = header_str(headers, "content-type").unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Ok(body.to_vec());
    }
    form_urlencoded::parse(body)
        .find(|(name, _)| name == "payload")
        .map(|(_, value)| value.into_owned().into_bytes())
        .ok_or_else(|| {
            "a form-encoded delivery without a 'payload' field; set the webhook's content type \
             to application/json"
                .to_string()
        })
}

impl Service {
    fn webhook(&self, forge: WebhookForge, headers: &HeaderMap, body: &[u8]) -> Response {
        let outcome = match self.inner.forge {
            Some(configured) if configured == forge => self.webhook_outcome(forge, headers, body),
            configured => {
                let message = match configured {
                    Some(configured) => format!(
                        "this service takes webhooks from {configured} only \
                         (POST /webhook/{configured}): nothing done"
                    ),
                    None => "this service's forge (rebake.yaml forge.kind) is not GitHub or \
                             Gitea: no webhook acts, nothing done"
                        .to_string(),
                };
                warn!("{forge} webhook refused: {message}");
                outcome(StatusCode::NOT_FOUND, "wrong_forge", message)
            }
        };
        self.inner
            .metrics
            .inc_webhook(forge.as_str(), outcome.result);
        (outcome.status, outcome.message).into_response()
    }

    fn webhook_outcome(&self, forge: WebhookForge, headers: &HeaderMap, body: &[u8]) -> Outcome {
        let secret_env = &self.inner.secret_env;
        let secret = match std::env::var(secret_env) {
            Ok(secret) if !secret.is_empty() => secret,
            _ => {
                warn!(
                    "{forge} webhook refused: the environment variable {secret_env} holding the \
                     webhook secret is not set; set it to the secret configured on the forge"
                );
                return outcome(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_secret",
                    "webhook secret is not configured on this server",
                );
            }
        };
        let (signature_header, delivery_header, event_header) = match forge {
            WebhookForge::Github => ("x-hub-signature-256", "x-github-delivery", "x-github-event"),
            WebhookForge::Gitea => ("x-gitea-signature", "x-gitea-delivery", "x-gitea-event"),
        };
        let Some(signature) = header_str(headers, signature_header) else {
            warn!("{forge} webhook refused: no {signature_header} header");
            return outcome(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("missing {signature_header}"),
            );
        };
        let signature_hex = match forge {
            WebhookForge::Github => signature.strip_prefix("sha256="),
            WebhookForge::Gitea => Some(signature),
        };
        if !signature_hex.is_some_and(|hex| verify_signature(secret.as_bytes(), body, hex)) {
            warn!("{forge} webhook refused: the {signature_header} signature does not match");
            return outcome(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("invalid {signature_header}"),
            );
        }
        let event = header_str(headers, event_header).unwrap_or("");
        // The signature is over the body as sent; the JSON may be form-encoded in it.
        let payload = match json_payload(headers, body) {
            Ok(payload) => payload,
            Err(message) => {
                warn!("{forge} webhook refused: {message}");
                return outcome(StatusCode::BAD_REQUEST, "bad_request", message);
            }
        };
        let body = &payload[..];
        let delivery = header_str(headers, delivery_header).map(|id| format!("{forge}:{id}"));
        match &delivery {
            Some(id) => {
                if !lock(&self.inner.deliveries).seen.insert(id.clone()) {
                    info!("{forge} delivery {id} seen before: ignored");
                    return outcome(StatusCode::OK, "duplicate", "duplicate delivery ignored");
                }
            }
            None => warn!("{forge} webhook without {delivery_header}: cannot detect a repeat"),
        }

        let result = self.handle_event(forge, event, body);

        if let Some(id) = &delivery {
            let mut deliveries = lock(&self.inner.deliveries);
            if !result.status.is_success() {
                // Not done: let the forge's retry, or a redelivery once the sender's settings
                // are fixed, through.
                deliveries.seen.remove(id);
            }
            if let Err(e) = deliveries.persist() {
                error!("recording webhook delivery {id}: {e:#}");
            }
        }
        result
    }

    fn handle_event(&self, forge: WebhookForge, event: &str, body: &[u8]) -> Outcome {
        match event {
            "ping" => outcome(StatusCode::OK, "ping", "pong"),
            "pull_request" => self.handle_pull_request(forge, body),
            "" => outcome(StatusCode::ACCEPTED, "ignored", "no event header: ignored"),
            other => outcome(
                StatusCode::ACCEPTED,
                "ignored",
                format!("event {other} ignored"),
            ),
        }
    }

    fn handle_pull_request(&self, forge: WebhookForge, body: &[u8]) -> Outcome {
        let event: PullRequestEvent = match serde_json::from_slice(body) {
            Ok(event) => event,
            Err(e) => {
                warn!("{forge} pull_request payload does not parse: {e}");
                return outcome(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("pull_request payload does not parse: {e}"),
                );
            }
        };
        match proposal_from_event(forge, event) {
            Err(message) => {
                warn!("{forge} pull_request refused: {message}");
                outcome(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            Ok(PullRequestDecision::Ignore(result, message)) => {
                info!("{forge} pull_request: {message}");
                // Actions other than "closed" are ignored like other events (202); a closed
                // pull request that deploys nothing is understood and answered 200.
                let status = if result == "ignored" {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::OK
                };
                outcome(status, result, message)
            }
            Ok(PullRequestDecision::Deploy(merged)) => {
                if let Some(from) = &self.inner.deploys_from {
                    if !merged.repository.eq_ignore_ascii_case(&from.repository)
                        || merged.base_branch != from.branch
                    {
                        let message = format!(
                            "{} merged into {} of {}: this service deploys from {} of {}",
                            merged.key(),
                            merged.base_branch,
                            merged.repository,
                            from.branch,
                            from.repository
                        );
                        info!("{forge} pull_request: {message}");
                        return outcome(StatusCode::OK, "other_repository", message);
                    }
                }
                let key = merged.key();
                match self.enqueue_deploy(merged) {
                    Ok(Enqueued::Queued) => {
                        info!("merged proposal {key}: deploy queued");
                        outcome(
                            StatusCode::ACCEPTED,
                            "deploy_queued",
                            format!("deploy queued for {key}"),
                        )
                    }
                    Ok(Enqueued::AlreadyPending) => outcome(
                        StatusCode::OK,
                        "duplicate",
                        format!("deploy of {key} already queued"),
                    ),
                    Ok(Enqueued::AlreadyDone) => outcome(
                        StatusCode::OK,
                        "duplicate",
                        format!("{key} already deployed"),
                    ),
                    Err(e) => {
                        error!("{e:#}");
                        outcome(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "error",
                            "could not record the deploy; retry the delivery",
                        )
                    }
                }
            }
        }
    }
}

// The fields read from a pull_request payload; GitHub and Gitea share these names.
#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: Option<u64>,
    pull_request: PullRequestPayload,
    repository: RepositoryPayload,
}

#[derive(Deserialize)]
struct PullRequestPayload {
    number: Option<u64>,
    merged: Option<bool>,
    merge_commit_sha: Option<String>,
    head: BranchPayload,
    base: BranchPayload,
}

#[derive(Deserialize)]
struct BranchPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    label: Option<String>,
}

#[derive(Deserialize)]
struct RepositoryPayload {
    full_name: String,
}

enum PullRequestDecision {
    Deploy(MergedProposal),
    Ignore(&'static str, String),
}

/// A `pull_request` payload read the way the webhook handler reads it (after the signature
/// check): the merged proposal to deploy, `Ok(None)` for a payload that deploys nothing
/// (another action, not merged, not a rebake branch), or the reason it is refused (answered
/// 400). Used by the fuzz targets; the handler itself goes through [`proposal_from_event`].
pub fn merged_proposal_from_payload(
    forge: WebhookForge,
    body: &[u8],
) -> std::result::Result<Option<MergedProposal>, String> {
    let event: PullRequestEvent = serde_json::from_slice(body)
        .map_err(|e| format!("pull_request payload does not parse: {e}"))?;
    Ok(match proposal_from_event(forge, event)? {
        PullRequestDecision::Deploy(merged) => Some(merged),
        PullRequestDecision::Ignore(..) => None,
    })
}

fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_branch_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"~^:?*[\\".contains(&b))
}

fn proposal_from_event(
    forge: WebhookForge,
    event: PullRequestEvent,
) -> std::result::Result<PullRequestDecision, String> {
    let pr = event.pull_request;
    let Some(number) = event.number.or(pr.number) else {
        return Err("pull_request payload has no number".to_string());
    };
    let name = format!("{}#{number}", event.repository.full_name);
    if event.action != "closed" {
        return Ok(PullRequestDecision::Ignore(
            "ignored",
            format!("{name} {}: nothing to do", event.action),
        ));
    }
    if pr.merged != Some(true) {
        return Ok(PullRequestDecision::Ignore(
            "not_merged",
            format!("{name} closed without merge: nothing to deploy"),
        ));
    }
    // Gitea reports head.ref "refs/pull/N/head" once the head branch is deleted; head.label
    // still holds the branch name then.
    let head_branch = match (forge, pr.head.label) {
        (WebhookForge::Gitea, Some(label)) if pr.head.git_ref.starts_with("refs/pull/") => label,
        _ => pr.head.git_ref,
    };
    if !head_branch.starts_with(PROPOSAL_BRANCH_PREFIX) {
        return Ok(PullRequestDecision::Ignore(
            "not_rebake",
            format!("{name} merged from {head_branch}, not a rebake proposal: nothing to deploy"),
        ));
    }
    if !is_branch_name(&head_branch) || !is_branch_name(&pr.base.git_ref) {
        return Err(format!("{name}: invalid branch name in the payload"));
    }
    let repository = event.repository.full_name;
    let valid_repo = repository.split('/').count() == 2
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if !valid_repo {
        return Err(format!("{name}: repository.full_name is not owner/name"));
    }
    let merge_commit = match pr.merge_commit_sha {
        Some(sha) if is_commit_id(&sha) => sha.to_ascii_lowercase(),
        _ => {
            return Err(format!(
                "{name} is merged but pull_request.merge_commit_sha is missing or not a commit id"
            ))
        }
    };
    Ok(PullRequestDecision::Deploy(MergedProposal {
        forge,
        repository,
        number,
        head_branch,
        merge_commit,
        base_branch: pr.base.git_ref,
    }))
}
