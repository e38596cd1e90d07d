//! The Prometheus registry and every metric csr-signer exports, with fixed label sets.
//!
//! Label values come only from small closed sets: configured signerNames, the outcome/result enums,
//! refusal reasons, error classes, API operations and HTTP status codes. Never a CSR name or a
//! requester: CSR names are generated per request and would grow the series set without bound.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Signing (verify + policy + issue) is tens of microseconds to a few milliseconds; RSA-4096 CAs
/// reach ~10 ms. Buckets are dense below 1 ms so p99 is meaningful on fast keys.
const SIGNING_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.000_75, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Approval → certificate written: milliseconds when healthy, seconds when backing off.
const ISSUANCE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Granted lifetimes: 10 min (API minimum) to a year.
const LIFETIME_BUCKETS: &[f64] = &[
    600.0,
    3600.0,
    21_600.0,
    28_800.0,
    86_400.0,
    604_800.0,
    2_592_000.0,
    7_776_000.0,
    31_536_000.0,
];

/// The kube-apiserver operations the signer performs; the `operation` label of `api_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiOperation {
    List,
    Watch,
    Get,
    UpdateStatus,
    CreateEvent,
    Lease,
    Approve,
    AccessReview,
}

impl ApiOperation {
    pub const ALL: [ApiOperation; 8] = [
        ApiOperation::List,
        ApiOperation::Watch,
        ApiOperation::Get,
        ApiOperation::UpdateStatus,
        ApiOperation::CreateEvent,
        ApiOperation::Lease,
        ApiOperation::Approve,
        ApiOperation::AccessReview,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiOperation::List => "list",
            ApiOperation::Watch => "watch",
            ApiOperation::Get => "get",
            ApiOperation::UpdateStatus => "update_status",
            ApiOperation::CreateEvent => "create_event",
            ApiOperation::Lease => "lease",
            ApiOperation::Approve => "approve",
            ApiOperation::AccessReview => "access_review",
        }
    }
}

/// Outcome of one decision; the `outcome` label of `requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Issued,
    Failed,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::Failed => "failed",
            Outcome::Error => "error",
        }
    }
}

/// Every metric of the contract, registered in one private registry.
pub struct Metrics {
    registry: Registry,
    pub signing_duration: HistogramVec,
    pub issuance_latency: HistogramVec,
    pub requests: IntCounterVec,
    pub granted_lifetime: HistogramVec,
    pub lifetime_requests: IntCounterVec,
    pub ca_not_after: GaugeVec,
    pub ca_reload_errors: IntCounterVec,
    pub approved_not_issued: IntGaugeVec,
    pub oldest_approved_not_issued: GaugeVec,
    pub api_errors: IntCounterVec,
    pub api_retries: IntCounterVec,
    pub watch_restarts: IntCounterVec,
    pub certificates_signed: IntCounterVec,
    pub audit_write_errors: IntCounterVec,
    pub leader: IntGauge,
    pub build_info: IntGaugeVec,
    pub trust_bundle_published: GaugeVec,
    pub trust_bundle_errors: IntCounterVec,
    pub trust_bundle_missing_anchor: IntGaugeVec,
    pub auto_approvals: IntCounterVec,
    pub not_auto_approved: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn histogram(
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
}

impl Metrics {
    /// Builds and registers every metric. Fails only on a programming error (duplicate or invalid name).
    pub fn new() -> crate::Result<Metrics> {
        Self::build().map_err(|e| crate::Error::Metrics(e.to_string()))
    }

    fn build() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let m = Metrics {
            signing_duration: histogram(
                "csr_signer_signing_duration_seconds",
                "Time to verify, apply policy to and issue one CSR.",
                SIGNING_BUCKETS,
                &["signer"],
            )?,
            issuance_latency: histogram(
                "csr_signer_issuance_latency_seconds",
                "Time from the Approved condition to the certificate written to status.",
                ISSUANCE_BUCKETS,
                &["signer"],
            )?,
            requests: IntCounterVec::new(
                Opts::new("csr_signer_requests_total", "Decisions taken, by outcome and reason."),
                &["signer", "outcome", "reason"],
            )?,
            granted_lifetime: histogram(
                "csr_signer_granted_lifetime_seconds",
                "Validity (notAfter - now) granted to issued certificates.",
                LIFETIME_BUCKETS,
                &["signer"],
            )?,
            lifetime_requests: IntCounterVec::new(
                Opts::new(
                    "csr_signer_lifetime_requests_total",
                    "Issued certificates by how the requested lifetime was treated.",
                ),
                &["signer", "result"],
            )?,
            ca_not_after: GaugeVec::new(
                Opts::new(
                    "csr_signer_ca_not_after_timestamp_seconds",
                    "NotAfter of the signing CA certificate, as a Unix timestamp.",
                ),
                &["signer"],
            )?,
            ca_reload_errors: IntCounterVec::new(
                Opts::new(
                    "csr_signer_ca_reload_errors_total",
                    "CA files that changed on disk but could not be loaded (the old CA keeps signing).",
                ),
                &["signer"],
            )?,
            approved_not_issued: IntGaugeVec::new(
                Opts::new(
                    "csr_signer_approved_not_issued",
                    "CSRs approved, not denied or failed, without a certificate yet.",
                ),
                &["signer"],
            )?,
            oldest_approved_not_issued: GaugeVec::new(
                Opts::new(
                    "csr_signer_oldest_approved_not_issued_seconds",
                    "Age since approval of the oldest approved CSR still without a certificate (0 if none).",
                ),
                &["signer"],
            )?,
            api_errors: IntCounterVec::new(
                Opts::new("csr_signer_api_errors_total", "Failed kube-apiserver requests."),
                &["operation", "code"],
            )?,
            api_retries: IntCounterVec::new(
                Opts::new(
                    "csr_signer_api_retries_total",
                    "kube-apiserver answers (429, 503, 504) the client retried by itself; each also counts in api_errors_total.",
                ),
                &["operation", "code"],
            )?,
            watch_restarts: IntCounterVec::new(
                Opts::new(
                    "csr_signer_watch_restarts_total",
                    "Watch streams that failed or ended and were restarted (a relist when history expired).",
                ),
                &["signer"],
            )?,
            certificates_signed: IntCounterVec::new(
                Opts::new(
                    "csr_signer_certificates_signed_total",
                    "Signatures the CA made, counted when made, whether or not the certificate then reached the CSR.",
                ),
                &["signer"],
            )?,
            audit_write_errors: IntCounterVec::new(
                Opts::new(
                    "csr_signer_audit_write_errors_total",
                    "Audit records that could not be written to audit.file (event: signed, issued).",
                ),
                &["event"],
            )?,
            leader: IntGauge::new(
                "csr_signer_leader",
                "1 if this replica holds the leader lease, else 0.",
            )?,
            build_info: IntGaugeVec::new(
                Opts::new("csr_signer_build_info", "Build information; always 1."),
                &["version"],
            )?,
            trust_bundle_published: GaugeVec::new(
                Opts::new(
                    "csr_signer_trust_bundle_published_timestamp_seconds",
                    "When the signer's ClusterTrustBundle was last confirmed up to date on the apiserver.",
                ),
                &["signer"],
            )?,
            trust_bundle_errors: IntCounterVec::new(
                Opts::new(
                    "csr_signer_trust_bundle_errors_total",
                    "Failed attempts to publish a signer's ClusterTrustBundle, by reason.",
                ),
                &["signer", "reason"],
            )?,
            trust_bundle_missing_anchor: IntGaugeVec::new(
                Opts::new(
                    "csr_signer_trust_bundle_missing_anchor",
                    "1 while the published ClusterTrustBundle lacks the anchor of the signing CA (certificates it issues do not verify against the bundle); must be 0.",
                ),
                &["signer"],
            )?,
            auto_approvals: IntCounterVec::new(
                Opts::new(
                    "csr_signer_auto_approvals_total",
                    "CSRs csr-signer approved itself, by the autoApprove rule that matched.",
                ),
                &["signer", "rule"],
            )?,
            not_auto_approved: IntCounterVec::new(
                Opts::new(
                    "csr_signer_not_auto_approved_total",
                    "Pending CSRs auto-approval left for a person (counted once per CSR), by why.",
                ),
                &["signer", "reason"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.signing_duration.clone()))?;
        m.registry.register(Box::new(m.issuance_latency.clone()))?;
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.granted_lifetime.clone()))?;
        m.registry.register(Box::new(m.lifetime_requests.clone()))?;
        m.registry.register(Box::new(m.ca_not_after.clone()))?;
        m.registry.register(Box::new(m.ca_reload_errors.clone()))?;
        m.registry
            .register(Box::new(m.approved_not_issued.clone()))?;
        m.registry
            .register(Box::new(m.oldest_approved_not_issued.clone()))?;
        m.registry.register(Box::new(m.api_errors.clone()))?;
        m.registry.register(Box::new(m.api_retries.clone()))?;
        m.registry.register(Box::new(m.watch_restarts.clone()))?;
        m.registry
            .register(Box::new(m.certificates_signed.clone()))?;
        m.registry
            .register(Box::new(m.audit_write_errors.clone()))?;
        m.registry.register(Box::new(m.leader.clone()))?;
        m.registry.register(Box::new(m.build_info.clone()))?;
        m.registry
            .register(Box::new(m.trust_bundle_published.clone()))?;
        m.registry
            .register(Box::new(m.trust_bundle_errors.clone()))?;
        m.registry
            .register(Box::new(m.trust_bundle_missing_anchor.clone()))?;
        m.registry.register(Box::new(m.auto_approvals.clone()))?;
        m.registry.register(Box::new(m.not_auto_approved.clone()))?;
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for event in ["signed", "issued"] {
            m.audit_write_errors.with_label_values(&[event]);
        }
        // Throttling shows as a rise from zero, not as a series appearing.
        for op in ApiOperation::ALL {
            for code in ["429", "503", "504"] {
                m.api_retries.with_label_values(&[op.as_str(), code]);
            }
        }
        Ok(m)
    }

    /// Creates every per-signer series at zero, so dashboards and alerts see the signer before its
    /// first request (an absent series cannot fire `> 0`).
    pub fn init_signer(&self, signer: &str) {
        let _ = self.signing_duration.with_label_values(&[signer]);
        let _ = self.issuance_latency.with_label_values(&[signer]);
        let _ = self.granted_lifetime.with_label_values(&[signer]);
        self.requests.with_label_values(&[signer, "issued", "None"]);
        for result in crate::policy::LifetimeOutcome::ALL {
            self.lifetime_requests
                .with_label_values(&[signer, result.as_str()]);
        }
        self.ca_reload_errors.with_label_values(&[signer]);
        self.certificates_signed.with_label_values(&[signer]);
        self.watch_restarts.with_label_values(&[signer]);
        self.approved_not_issued.with_label_values(&[signer]).set(0);
        self.oldest_approved_not_issued
            .with_label_values(&[signer])
            .set(0.0);
    }

    /// Counts one failed apiserver request. `code` is the HTTP status, or 0 when none came back.
    pub fn api_error(&self, op: ApiOperation, code: u16) {
        let code = if code == 0 {
            "none".to_string()
        } else {
            code.to_string()
        };
        self.api_errors
            .with_label_values(&[op.as_str(), code.as_str()])
            .inc();
    }

    /// Creates a signer's auto-approval series at zero (rules are from the configuration: bounded).
    pub fn init_auto_approval<'a>(&self, signer: &str, rules: impl Iterator<Item = &'a str>) {
        for rule in rules {
            self.auto_approvals.with_label_values(&[signer, rule]);
        }
        for reason in crate::approval::NotApproved::ALL {
            self.not_auto_approved
                .with_label_values(&[signer, reason.as_str()]);
        }
    }

    /// Counts one answer the client retried by itself (429, 503 or 504).
    pub fn api_retry(&self, op: ApiOperation, code: u16) {
        self.api_retries
            .with_label_values(&[op.as_str(), code.to_string().as_str()])
            .inc();
    }

    /// Counts one signature made by a signer's CA.
    pub fn record_signed(&self, signer: &str) {
        self.certificates_signed.with_label_values(&[signer]).inc();
    }

    /// Counts one audit record that did not reach the file.
    pub fn audit_write_error(&self, event: crate::audit::Event) {
        let event = match event {
            crate::audit::Event::Signed => "signed",
            crate::audit::Event::Issued => "issued",
        };
        self.audit_write_errors.with_label_values(&[event]).inc();
    }

    /// Counts one decision. `reason` is "None" for issued, the refusal reason for failed, the error
    /// class for error.
    pub fn decision(&self, signer: &str, outcome: Outcome, reason: &str) {
        self.requests
            .with_label_values(&[signer, outcome.as_str(), reason])
            .inc();
    }

    /// Time spent verifying, checking and signing one request (successful engine calls only).
    pub fn record_signing(&self, signer: &str, took: std::time::Duration) {
        self.signing_duration
            .with_label_values(&[signer])
            .observe(took.as_secs_f64());
    }

    /// One certificate written: the decision, approval→issued latency and the lifetime granted.
    pub fn record_issued(
        &self,
        signer: &str,
        latency: std::time::Duration,
        granted_seconds: u64,
        lifetime: &str,
    ) {
        self.decision(signer, Outcome::Issued, "None");
        self.issuance_latency
            .with_label_values(&[signer])
            .observe(latency.as_secs_f64());
        self.granted_lifetime
            .with_label_values(&[signer])
            .observe(granted_seconds as f64);
        self.lifetime_requests
            .with_label_values(&[signer, lifetime])
            .inc();
    }

    /// The approved-not-issued backlog of one signer and the age of its oldest entry.
    pub fn set_backlog(&self, signer: &str, count: i64, oldest_seconds: f64) {
        self.approved_not_issued
            .with_label_values(&[signer])
            .set(count);
        self.oldest_approved_not_issued
            .with_label_values(&[signer])
            .set(oldest_seconds);
    }

    /// The signing CA's NotAfter, as Unix seconds.
    pub fn set_ca_not_after(&self, signer: &str, unix_seconds: f64) {
        self.ca_not_after
            .with_label_values(&[signer])
            .set(unix_seconds);
    }

    /// New CA files that were rejected (counted once per breakage).
    pub fn record_ca_reload_error(&self, signer: &str) {
        self.ca_reload_errors.with_label_values(&[signer]).inc();
    }

    /// Creates the trust-bundle series of a signer (errors at zero for each reason, the missing-anchor
    /// gauge at 0, the publish time at 0 = never), so alerts and dashboards see them before the first
    /// sync and on standby replicas (which never publish; the alert takes the max over replicas).
    pub fn init_trust_bundle(&self, signer: &str, reasons: &[&str]) {
        for reason in reasons {
            self.trust_bundle_errors
                .with_label_values(&[signer, reason]);
        }
        self.trust_bundle_missing_anchor
            .with_label_values(&[signer])
            .set(0);
        self.trust_bundle_published
            .with_label_values(&[signer])
            .set(0.0);
    }

    /// The signer's ClusterTrustBundle was confirmed up to date at `unix_seconds`.
    pub fn record_trust_bundle_published(&self, signer: &str, unix_seconds: f64) {
        self.trust_bundle_published
            .with_label_values(&[signer])
            .set(unix_seconds);
    }

    /// One failed publish attempt; `reason` comes from a fixed set (see `trust::publish`).
    pub fn record_trust_bundle_error(&self, signer: &str, reason: &str) {
        self.trust_bundle_errors
            .with_label_values(&[signer, reason])
            .inc();
    }

    /// Whether the published bundle lacks the signing CA's anchor.
    pub fn set_trust_bundle_missing_anchor(&self, signer: &str, missing: bool) {
        self.trust_bundle_missing_anchor
            .with_label_values(&[signer])
            .set(i64::from(missing));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> crate::Result<String> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(|e| crate::Error::Metrics(e.to_string()))?;
        String::from_utf8(buf).map_err(|e| crate::Error::Metrics(e.to_string()))
    }
}

/// The HTTP status of a kube error, 0 when there was no response (the `code` label of `api_errors_total`).
pub fn status_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        _ => 0,
    }
}

/// Seconds since the Unix epoch (negative before it), for timestamp gauges.
pub fn unix_seconds(t: std::time::SystemTime) -> f64 {
    match t.duration_since(std::time::SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_contract_metric_with_fixed_labels() {
        let m = Metrics::new().unwrap();
        m.init_signer("example.com/mtls");
        m.signing_duration
            .with_label_values(&["example.com/mtls"])
            .observe(0.0003);
        m.decision("example.com/mtls", Outcome::Failed, "UsageNotAllowed");
        m.api_error(ApiOperation::UpdateStatus, 409);
        m.leader.set(1);
        let text = m.encode().unwrap();
        for name in [
            "csr_signer_signing_duration_seconds_bucket{signer=\"example.com/mtls\",le=\"0.0005\"} 1",
            "csr_signer_issuance_latency_seconds_count{signer=\"example.com/mtls\"} 0",
            "csr_signer_requests_total{outcome=\"failed\",reason=\"UsageNotAllowed\",signer=\"example.com/mtls\"} 1",
            "csr_signer_requests_total{outcome=\"issued\",reason=\"None\",signer=\"example.com/mtls\"} 0",
            "csr_signer_granted_lifetime_seconds_count{signer=\"example.com/mtls\"} 0",
            "csr_signer_lifetime_requests_total{result=\"clamped\",signer=\"example.com/mtls\"} 0",
            "csr_signer_ca_reload_errors_total{signer=\"example.com/mtls\"} 0",
            "csr_signer_approved_not_issued{signer=\"example.com/mtls\"} 0",
            "csr_signer_oldest_approved_not_issued_seconds{signer=\"example.com/mtls\"} 0",
            "csr_signer_api_errors_total{code=\"409\",operation=\"update_status\"} 1",
            "csr_signer_leader 1",
        ] {
            assert!(text.contains(name), "missing {name} in:\n{text}");
        }
        assert!(text.contains(&format!(
            "csr_signer_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn missing_status_code_is_labelled_none() {
        let m = Metrics::new().unwrap();
        m.api_error(ApiOperation::Watch, 0);
        assert!(m
            .encode()
            .unwrap()
            .contains("csr_signer_api_errors_total{code=\"none\",operation=\"watch\"} 1"));
    }
}
