//! The counters behind `GET /metrics`. The Prometheus project's `prometheus-client` crate keeps
//! them and writes them in the Prometheus text exposition format (version 0.0.4).

use super::{lock, Service};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Counters for `/metrics`. Cheap to clone; every clone counts into the same numbers.
///
/// The worker counts scans, findings, builds and proposals from each
/// [`ScanSummary`](super::ScanSummary), deploys, and failures of stages `scan` and `deploy`; the
/// webhook handlers count webhooks. Stages run by a [`Jobs`](super::Jobs) implementation may
/// count their own failures with [`Metrics::inc_failure`] (e.g. `build`, `test`, `publish`,
/// `propose`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<MetricsInner>,
    /// The state directory whose fix timeline (`rebake_fix_latency_seconds`) is shown.
    timeline_dir: Option<Arc<std::path::PathBuf>>,
}

/// The metrics, and the registry that writes them (it holds clones of the same counters).
struct MetricsInner {
    registry: Registry,
    scans: Counter,
    findings: Counter,
    builds: Counter,
    proposals: Counter,
    deploys: Counter,
    last_successful_scan: Gauge,
    failures: CounterFamily<StageLabels>,
    webhooks: CounterFamily<WebhookLabels>,
    running_missing: GaugeFamily<ContainerLabels>,
    running_age: GaugeFamily<ContainerLabels>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
struct ContainerLabels {
    container: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
struct WebhookLabels {
    forge: String,
    result: String,
}

/// Metrics (counters, gauges) by label set, written in the order of their labels and listed
/// (`# HELP`, `# TYPE`) before their first sample, as `/metrics` always showed them.
/// prometheus-client's own `Family` writes its samples in hash order and leaves out a family that
/// has none yet.
#[derive(Debug)]
struct Family<L, M>(Arc<Mutex<BTreeMap<L, M>>>);

type CounterFamily<L> = Family<L, Counter>;
/// Replaced as a whole by each scan of the running containers.
type GaugeFamily<L> = Family<L, Gauge>;

impl<L, M> Clone for Family<L, M> {
    fn clone(&self) -> Self {
        Family(self.0.clone())
    }
}

impl<L, M> Default for Family<L, M> {
    fn default() -> Self {
        Family(Arc::default())
    }
}

impl<L: Ord> CounterFamily<L> {
    fn inc_by(&self, labels: L, n: u64) {
        lock(&self.0).entry(labels).or_default().inc_by(n);
    }
}

impl<L, M> EncodeMetric for Family<L, M>
where
    L: EncodeLabelSet + Ord + fmt::Debug + Send + Sync + 'static,
    M: EncodeMetric + Default + fmt::Debug + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        for (labels, metric) in lock(&self.0).iter() {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::default().metric_type()
    }
}

impl Default for Metrics {
    /// Every metric at zero, with no failure stage listed yet ([`Metrics::new`] lists `scan`
    /// and `deploy`).
    fn default() -> Self {
        let (scans, findings, builds, proposals, deploys) = Default::default();
        let last_successful_scan = Gauge::default();
        let failures = CounterFamily::default();
        let webhooks = CounterFamily::default();
        let running_missing = GaugeFamily::default();
        let running_age = GaugeFamily::default();
        // Names without `_total`: prometheus-client adds it to every counter. The registry adds
        // the period that ends each help text.
        let mut registry = Registry::default();
        let counters: [(&str, &str, &Counter); 5] = [
            ("rebake_scans", "Scans that completed", &scans),
            (
                "rebake_findings",
                "Packages found with a newer version in the archive",
                &findings,
            ),
            ("rebake_builds", "Images built", &builds),
            (
                "rebake_proposals",
                "Proposals opened or updated",
                &proposals,
            ),
            ("rebake_deploys", "Deploys that succeeded", &deploys),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register("rebake_failures", "Failed jobs, by stage", failures.clone());
        registry.register(
            "rebake_webhooks",
            "Webhook deliveries received, by forge and result",
            webhooks.clone(),
        );
        registry.register(
            "rebake_running_security_updates",
            "Source packages with a security update in the verified archive that each running container's image lacks",
            running_missing.clone(),
        );
        registry.register(
            "rebake_running_security_update_age_seconds",
            "Seconds since the first verified InRelease carried the oldest security fix each running container lacks",
            running_age.clone(),
        );
        registry.register(
            "rebake_last_successful_scan_timestamp_seconds",
            "Unix time of the end of the last successful scan (0: none since start)",
            last_successful_scan.clone(),
        );
        Metrics {
            inner: Arc::new(MetricsInner {
                registry,
                scans,
                findings,
                builds,
                proposals,
                deploys,
                last_successful_scan,
                failures,
                webhooks,
                running_missing,
                running_age,
            }),
            timeline_dir: None,
        }
    }
}

impl Metrics {
    /// Also shows the fix latency histogram of `state_dir`'s timeline
    /// ([`crate::timeline`]), read at each scrape (it survives restarts).
    pub fn with_timeline(mut self, state_dir: &std::path::Path) -> Self {
        self.timeline_dir = Some(Arc::new(state_dir.to_path_buf()));
        self
    }

    pub fn new() -> Self {
        let metrics = Metrics::default();
        for stage in ["scan", "deploy"] {
            metrics.inc_failure_by(stage, 0);
        }
        metrics
    }

    pub fn inc_scans(&self) {
        self.inner.scans.inc();
    }
    pub fn add_findings(&self, n: u64) {
        self.inner.findings.inc_by(n);
    }
    pub fn add_builds(&self, n: u64) {
        self.inner.builds.inc_by(n);
    }
    pub fn add_proposals(&self, n: u64) {
        self.inner.proposals.inc_by(n);
    }
    pub fn inc_deploys(&self) {
        self.inner.deploys.inc();
    }
    pub fn inc_failure(&self, stage: &str) {
        self.inc_failure_by(stage, 1);
    }
    fn inc_failure_by(&self, stage: &str, n: u64) {
        let stage = stage.to_string();
        self.inner.failures.inc_by(StageLabels { stage }, n);
    }
    pub fn inc_webhook(&self, forge: &str, result: &str) {
        let labels = WebhookLabels {
            forge: forge.to_string(),
            result: result.to_string(),
        };
        self.inner.webhooks.inc_by(labels, 1);
    }
    /// What the running containers lack, as the last scan of them found (replacing the last).
    pub fn set_running(&self, running: &[super::RunningFixes]) {
        let mut missing = lock(&self.inner.running_missing.0);
        let mut age = lock(&self.inner.running_age.0);
        missing.clear();
        age.clear();
        for r in running {
            let labels = ContainerLabels {
                container: r.container.clone(),
            };
            missing
                .entry(labels.clone())
                .or_default()
                .set(r.missing as i64);
            age.entry(labels).or_default().set(r.oldest_age_seconds);
        }
    }

    pub fn set_last_successful_scan(&self, time: DateTime<Utc>) {
        self.inner.last_successful_scan.set(time.timestamp());
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.inner.registry)
            .expect("writing metrics to a String cannot fail");
        if let Some(dir) = &self.timeline_dir {
            match crate::timeline::read(dir) {
                Ok(t) => out.push_str(&crate::timeline::exposition(&t)),
                Err(e) => tracing::warn!("fix latency not shown: {e:#}"),
            }
            out.push_str(&crate::jobs::exposition(dir));
        }
        out
    }
}

pub(super) async fn handler(State(service): State<Service>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        service.inner.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition as rebake wrote it before prometheus-client: names, help, types, label
    /// order and escaping stay the same.
    #[test]
    fn exposition_text() {
        let m = Metrics::new();
        assert_eq!(
            m.render(),
            "\
# HELP rebake_scans_total Scans that completed.
# TYPE rebake_scans_total counter
rebake_scans_total 0
# HELP rebake_findings_total Packages found with a newer version in the archive.
# TYPE rebake_findings_total counter
rebake_findings_total 0
# HELP rebake_builds_total Images built.
# TYPE rebake_builds_total counter
rebake_builds_total 0
# HELP rebake_proposals_total Proposals opened or updated.
# TYPE rebake_proposals_total counter
rebake_proposals_total 0
# HELP rebake_deploys_total Deploys that succeeded.
# TYPE rebake_deploys_total counter
rebake_deploys_total 0
# HELP rebake_failures_total Failed jobs, by stage.
# TYPE rebake_failures_total counter
rebake_failures_total{stage=\"deploy\"} 0
rebake_failures_total{stage=\"scan\"} 0
# HELP rebake_webhooks_total Webhook deliveries received, by forge and result.
# TYPE rebake_webhooks_total counter
# HELP rebake_running_security_updates Source packages with a security update in the verified archive that each running container's image lacks.
# TYPE rebake_running_security_updates gauge
# HELP rebake_running_security_update_age_seconds Seconds since the first verified InRelease carried the oldest security fix each running container lacks.
# TYPE rebake_running_security_update_age_seconds gauge
# HELP rebake_last_successful_scan_timestamp_seconds Unix time of the end of the last successful scan (0: none since start).
# TYPE rebake_last_successful_scan_timestamp_seconds gauge
rebake_last_successful_scan_timestamp_seconds 0
"
        );
        m.inc_scans();
        m.add_findings(3);
        m.add_builds(2);
        m.add_proposals(1);
        m.inc_deploys();
        m.inc_failure("build");
        m.inc_failure("deploy");
        m.inc_webhook("github", "unauthorized");
        m.inc_webhook("gitea", "deploy_queued");
        m.inc_webhook("github", "duplicate");
        m.clone().inc_webhook("github", "duplicate");
        m.inc_failure("we\"ird\\st\nage");
        m.set_last_successful_scan(DateTime::from_timestamp(1_750_000_000, 0).unwrap());
        assert_eq!(
            m.render(),
            "\
# HELP rebake_scans_total Scans that completed.
# TYPE rebake_scans_total counter
rebake_scans_total 1
# HELP rebake_findings_total Packages found with a newer version in the archive.
# TYPE rebake_findings_total counter
rebake_findings_total 3
# HELP rebake_builds_total Images built.
# TYPE rebake_builds_total counter
rebake_builds_total 2
# HELP rebake_proposals_total Proposals opened or updated.
# TYPE rebake_proposals_total counter
rebake_proposals_total 1
# HELP rebake_deploys_total Deploys that succeeded.
# TYPE rebake_deploys_total counter
rebake_deploys_total 1
# HELP rebake_failures_total Failed jobs, by stage.
# TYPE rebake_failures_total counter
rebake_failures_total{stage=\"build\"} 1
rebake_failures_total{stage=\"deploy\"} 1
rebake_failures_total{stage=\"scan\"} 0
rebake_failures_total{stage=\"we\\\"ird\\\\st\\nage\"} 1
# HELP rebake_webhooks_total Webhook deliveries received, by forge and result.
# TYPE rebake_webhooks_total counter
rebake_webhooks_total{forge=\"gitea\",result=\"deploy_queued\"} 1
rebake_webhooks_total{forge=\"github\",result=\"duplicate\"} 2
rebake_webhooks_total{forge=\"github\",result=\"unauthorized\"} 1
# HELP rebake_running_security_updates Source packages with a security update in the verified archive that each running container's image lacks.
# TYPE rebake_running_security_updates gauge
# HELP rebake_running_security_update_age_seconds Seconds since the first verified InRelease carried the oldest security fix each running container lacks.
# TYPE rebake_running_security_update_age_seconds gauge
# HELP rebake_last_successful_scan_timestamp_seconds Unix time of the end of the last successful scan (0: none since start).
# TYPE rebake_last_successful_scan_timestamp_seconds gauge
rebake_last_successful_scan_timestamp_seconds 1750000000
"
        );
    }

    /// With a state directory, `/metrics` also shows the jobs' runs and failures, from the
    /// summaries their runs leave (so runs of `rebake job run` count too).
    #[test]
    fn job_runs_and_failures_are_shown() {
        let dir = tempfile::tempdir().unwrap();
        let text = Metrics::new().with_timeline(dir.path()).render();
        assert!(
            text.contains("# TYPE rebake_job_failures_total counter\n"),
            "{text}"
        );
        let summary = serde_json::json!({
            "runs": 3,
            "failures": 1,
            "last": {
                "image": "db", "job": "dump", "kind": "backup", "target": "docker:db",
                "started": "2026-11-29T02:30:00.000Z", "duration_ms": 1500, "waited_ms": 0,
                "result": "failed", "exit_code": 2, "reason": "x", "log": "l",
                "image_id": null, "backup": null, "restored": null
            }
        });
        crate::state::write_atomic(
            &crate::jobs::job_dir(dir.path(), "db", "dump").join(crate::jobs::SUMMARY_FILE),
            summary.to_string().as_bytes(),
        )
        .unwrap();
        let text = Metrics::new().with_timeline(dir.path()).render();
        for line in [
            "rebake_job_runs_total{image=\"db\",job=\"dump\"} 3",
            "rebake_job_failures_total{image=\"db\",job=\"dump\"} 1",
            "rebake_job_last_run_timestamp_seconds{image=\"db\",job=\"dump\"} 1795919400",
            "rebake_job_last_run_success{image=\"db\",job=\"dump\"} 0",
            "rebake_job_last_run_duration_seconds{image=\"db\",job=\"dump\"} 1.5",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in:\n{text}");
        }
    }

    /// With a state directory, `/metrics` also shows its fix latency histogram.
    #[test]
    fn the_fix_timeline_is_shown() {
        let dir = tempfile::tempdir().unwrap();
        let seen: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
        crate::timeline::proposed(dir.path(), "abc", "web", seen, seen).unwrap();
        let text = Metrics::new().with_timeline(dir.path()).render();
        assert!(
            text.contains("rebake_fix_latency_seconds_count{image=\"web\",stage=\"proposed\"} 1"),
            "{text}"
        );
        assert!(!Metrics::new().render().contains("rebake_fix_latency"));
    }
}
