//! The counters behind `GET /metrics`, in the Prometheus text exposition format.

use super::{lock, Service};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters for `/metrics`. Cheap to clone; every clone counts into the same numbers.
///
/// The worker counts scans, findings, builds and proposals from each
/// [`ScanSummary`](super::ScanSummary), deploys, and failures of stages `scan` and `deploy`; the
/// webhook handlers count webhooks. Stages run by a [`Jobs`](super::Jobs) implementation may
/// count their own failures with [`Metrics::inc_failure`] (e.g. `build`, `test`, `publish`,
/// `propose`).
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<MetricsInner>,
}

#[derive(Default)]
struct MetricsInner {
    scans: AtomicU64,
    findings: AtomicU64,
    builds: AtomicU64,
    proposals: AtomicU64,
    deploys: AtomicU64,
    last_successful_scan: AtomicI64,
    failures: Mutex<BTreeMap<String, u64>>,
    webhooks: Mutex<BTreeMap<(String, String), u64>>,
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Metrics::default();
        {
            let mut failures = lock(&metrics.inner.failures);
            for stage in ["scan", "deploy"] {
                failures.insert(stage.to_string(), 0);
            }
        }
        metrics
    }

    pub fn inc_scans(&self) {
        self.inner.scans.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_findings(&self, n: u64) {
        self.inner.findings.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_builds(&self, n: u64) {
        self.inner.builds.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_proposals(&self, n: u64) {
        self.inner.proposals.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc_deploys(&self) {
        self.inner.deploys.fetch_add(1, Ordering::Relaxed);
    }
    pub fn inc_failure(&self, stage: &str) {
        *lock(&self.inner.failures)
            .entry(stage.to_string())
            .or_insert(0) += 1;
    }
    pub fn inc_webhook(&self, forge: &str, result: &str) {
        *lock(&self.inner.webhooks)
            .entry((forge.to_string(), result.to_string()))
            .or_insert(0) += 1;
    }
    pub fn set_last_successful_scan(&self, time: DateTime<Utc>) {
        self.inner
            .last_successful_scan
            .store(time.timestamp(), Ordering::Relaxed);
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let i = &self.inner;
        let simple = [
            ("rebake_scans_total", "Scans that completed.", &i.scans),
            (
                "rebake_findings_total",
                "Packages found with a newer version in the archive.",
                &i.findings,
            ),
            ("rebake_builds_total", "Images built.", &i.builds),
            (
                "rebake_proposals_total",
                "Proposals opened or updated.",
                &i.proposals,
            ),
            (
                "rebake_deploys_total",
                "Deploys that succeeded.",
                &i.deploys,
            ),
        ];
        for (name, help, value) in simple {
            header_lines(&mut out, name, help, "counter");
            out.push_str(&format!("{name} {}\n", value.load(Ordering::Relaxed)));
        }
        header_lines(
            &mut out,
            "rebake_failures_total",
            "Failed jobs, by stage.",
            "counter",
        );
        for (stage, n) in lock(&i.failures).iter() {
            out.push_str(&format!(
                "rebake_failures_total{{stage=\"{}\"}} {n}\n",
                escape_label(stage)
            ));
        }
        header_lines(
            &mut out,
            "rebake_webhooks_total",
            "Webhook deliveries received, by forge and result.",
            "counter",
        );
        for ((forge, result), n) in lock(&i.webhooks).iter() {
            out.push_str(&format!(
                "rebake_webhooks_total{{forge=\"{}\",result=\"{}\"}} {n}\n",
                escape_label(forge),
                escape_label(result)
            ));
        }
        header_lines(
            &mut out,
            "rebake_last_successful_scan_timestamp_seconds",
            "Unix time of the end of the last successful scan (0: none since start).",
            "gauge",
        );
        out.push_str(&format!(
            "rebake_last_successful_scan_timestamp_seconds {}\n",
            i.last_successful_scan.load(Ordering::Relaxed)
        ));
        out
    }
}

fn header_lines(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) async fn handler(State(service): State<Service>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        service.inner.metrics.render(),
    )
        .into_response()
}
