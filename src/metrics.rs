//! The Prometheus registry and every metric csr-signer exports, with fixed label sets.
//!
//! Label values come only from small closed sets: configured signerNames, the request kind (`csr`,
//! `pcr`), the outcome/result enums, refusal reasons, error classes, API operations and HTTP status codes. Never a CSR name or a
//! requester: CSR names are generated per request and would grow the series set without bound.

use std::collections::HashMap;
use std::sync::Mutex;

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
    pub signing_errors: IntCounterVec,
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
    pub ca_certificate_not_after: GaugeVec,
    pub ca_published_since: GaugeVec,
    pub max_lifetime: GaugeVec,
    /// The label values (after `signer`) each signer's per-CA series were last set with, so that a
    /// CA gone from the configuration or from its state loses its series.
    per_ca: Mutex<HashMap<(&'static str, String), Vec<PerCaLabels>>>,
    pub auto_approvals: IntCounterVec,
    pub not_auto_approved: IntCounterVec,
}

/// The label values of one per-CA series after `signer` (`[ca, state]` or `[ca]`).
type PerCaLabels = Vec<String>;

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
                "Time to verify, apply policy to and issue one request (kind: csr, pcr).",
                SIGNING_BUCKETS,
                &["signer", "kind"],
            )?,
            issuance_latency: histogram(
                "csr_signer_issuance_latency_seconds",
                "Time from the Approved condition (a PCR: its creation) to the certificate written to status.",
                ISSUANCE_BUCKETS,
                &["signer", "kind"],
            )?,
            requests: IntCounterVec::new(
                Opts::new("csr_signer_requests_total", "Decisions taken, by outcome and reason."),
                &["signer", "kind", "outcome", "reason"],
            )?,
            granted_lifetime: histogram(
                "csr_signer_granted_lifetime_seconds",
                "Validity (notAfter - now) granted to issued certificates.",
                LIFETIME_BUCKETS,
                &["signer", "kind"],
            )?,
            lifetime_requests: IntCounterVec::new(
                Opts::new(
                    "csr_signer_lifetime_requests_total",
                    "Issued certificates by how the requested lifetime was treated.",
                ),
                &["signer", "kind", "result"],
            )?,
            ca_not_after: GaugeVec::new(
                Opts::new(
                    "csr_signer_ca_not_after_timestamp_seconds",
                    "NotAfter of the signing CA certificate, as a Unix timestamp.",
                ),
                &["signer"],
            )?,
            signing_errors: IntCounterVec::new(
                Opts::new(
                    "csr_signer_signing_errors_total",
                    "Errors of the CA key in a PKCS#11 token, by kind of error (module, token, session, login, key, device); each is retried.",
                ),
                &["signer", "error"],
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
                    "Requests waiting for the signer: CSRs approved, not denied or failed, without a certificate; PCRs without a terminal condition.",
                ),
                &["signer", "kind"],
            )?,
            oldest_approved_not_issued: GaugeVec::new(
                Opts::new(
                    "csr_signer_oldest_approved_not_issued_seconds",
                    "Age since approval (a PCR: creation) of the oldest request waiting for the signer (0 if none).",
                ),
                &["signer", "kind"],
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
                &["signer", "kind"],
            )?,
            certificates_signed: IntCounterVec::new(
                Opts::new(
                    "csr_signer_certificates_signed_total",
                    "Signatures the CA made, counted when made, whether or not the certificate then reached the CSR or PCR.",
                ),
                &["signer", "kind"],
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
                    "When the signer's trust anchors were last confirmed up to date on the apiserver: its ClusterTrustBundle (via=clustertrustbundle), or the ConfigMap in every selected namespace (via=configmap).",
                ),
                &["signer", "via"],
            )?,
            trust_bundle_errors: IntCounterVec::new(
                Opts::new(
                    "csr_signer_trust_bundle_errors_total",
                    "Failed attempts to publish a signer's trust anchors, by reason and by where (via=clustertrustbundle or configmap).",
                ),
                &["signer", "via", "reason"],
            )?,
            trust_bundle_missing_anchor: IntGaugeVec::new(
                Opts::new(
                    "csr_signer_trust_bundle_missing_anchor",
                    "1 while the published ClusterTrustBundle (via=clustertrustbundle), or the ConfigMap of some selected namespace (via=configmap), lacks the anchor of the signing CA (certificates it issues do not verify against it); must be 0.",
                ),
                &["signer", "via"],
            )?,
            ca_certificate_not_after: GaugeVec::new(
                Opts::new(
                    "csr_signer_ca_certificate_not_after_timestamp_seconds",
                    "NotAfter of each CA of a signer (state: active signs, published is the next one, retiring the previous one), as a Unix timestamp.",
                ),
                &["signer", "ca", "state"],
            )?,
            ca_published_since: GaugeVec::new(
                Opts::new(
                    "csr_signer_ca_published_since_timestamp_seconds",
                    "When each CA in state published first went into the signer's ClusterTrustBundle (Unix timestamp; leader only, kept across restarts in the bundle's csr-signer/published-since annotation).",
                ),
                &["signer", "ca"],
            )?,
            max_lifetime: GaugeVec::new(
                Opts::new(
                    "csr_signer_max_lifetime_seconds",
                    "The longest certificate lifetime the signer grants (policy lifetime.max).",
                ),
                &["signer"],
            )?,
            per_ca: Mutex::new(HashMap::new()),
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
        m.registry.register(Box::new(m.signing_errors.clone()))?;
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
        m.registry
            .register(Box::new(m.ca_certificate_not_after.clone()))?;
        m.registry
            .register(Box::new(m.ca_published_since.clone()))?;
        m.registry.register(Box::new(m.max_lifetime.clone()))?;
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
    /// first request (an absent series cannot fire `> 0`). The CSR series; PCR ones come with the PCR
    /// watch (`init_kind`).
    pub fn init_signer(&self, signer: &str) {
        self.ca_reload_errors.with_label_values(&[signer]);
        for error in crate::pkcs11::TokenErrorKind::ALL {
            self.signing_errors
                .with_label_values(&[signer, error.as_str()]);
        }
        self.init_kind(signer, "csr");
    }

    /// Creates a signer's per-request series of one kind (`csr`, `pcr`) at zero.
    pub fn init_kind(&self, signer: &str, kind: &str) {
        let _ = self.signing_duration.with_label_values(&[signer, kind]);
        let _ = self.issuance_latency.with_label_values(&[signer, kind]);
        let _ = self.granted_lifetime.with_label_values(&[signer, kind]);
        self.requests
            .with_label_values(&[signer, kind, "issued", "None"]);
        for result in crate::policy::LifetimeOutcome::ALL {
            self.lifetime_requests
                .with_label_values(&[signer, kind, result.as_str()]);
        }
        self.certificates_signed.with_label_values(&[signer, kind]);
        self.watch_restarts.with_label_values(&[signer, kind]);
        self.approved_not_issued
            .with_label_values(&[signer, kind])
            .set(0);
        self.oldest_approved_not_issued
            .with_label_values(&[signer, kind])
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

    /// Counts errors of a CA key in a token.
    pub fn record_signing_errors(&self, signer: &str, kind: crate::pkcs11::TokenErrorKind, n: u64) {
        self.signing_errors
            .with_label_values(&[signer, kind.as_str()])
            .inc_by(n);
    }

    /// Counts one signature made by a signer's CA.
    pub fn record_signed(&self, signer: &str, kind: &str) {
        self.certificates_signed
            .with_label_values(&[signer, kind])
            .inc();
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
    pub fn decision(&self, signer: &str, kind: &str, outcome: Outcome, reason: &str) {
        self.requests
            .with_label_values(&[signer, kind, outcome.as_str(), reason])
            .inc();
    }

    /// Time spent verifying, checking and signing one request (successful engine calls only).
    pub fn record_signing(&self, signer: &str, kind: &str, took: std::time::Duration) {
        self.signing_duration
            .with_label_values(&[signer, kind])
            .observe(took.as_secs_f64());
    }

    /// One certificate written: the decision, approval→issued latency and the lifetime granted.
    pub fn record_issued(
        &self,
        signer: &str,
        kind: &str,
        latency: std::time::Duration,
        granted_seconds: u64,
        lifetime: &str,
    ) {
        self.decision(signer, kind, Outcome::Issued, "None");
        self.issuance_latency
            .with_label_values(&[signer, kind])
            .observe(latency.as_secs_f64());
        self.granted_lifetime
            .with_label_values(&[signer, kind])
            .observe(granted_seconds as f64);
        self.lifetime_requests
            .with_label_values(&[signer, kind, lifetime])
            .inc();
    }

    /// The backlog of one signer's requests of one kind and the age of its oldest entry.
    pub fn set_backlog(&self, signer: &str, kind: &str, count: i64, oldest_seconds: f64) {
        self.approved_not_issued
            .with_label_values(&[signer, kind])
            .set(count);
        self.oldest_approved_not_issued
            .with_label_values(&[signer, kind])
            .set(oldest_seconds);
    }

    /// The signing CA's NotAfter, as Unix seconds.
    pub fn set_ca_not_after(&self, signer: &str, unix_seconds: f64) {
        self.ca_not_after
            .with_label_values(&[signer])
            .set(unix_seconds);
    }

    /// Every CA of `signer` as `(ca name, state, notAfter Unix seconds)`; series of CAs no longer
    /// listed (removed from the configuration, or moved to another state) are removed.
    pub fn set_ca_certificates(&self, signer: &str, cas: &[(&str, &str, f64)]) {
        let series = cas
            .iter()
            .map(|(name, state, t)| (vec![name.to_string(), state.to_string()], *t))
            .collect();
        self.replace_per_ca(&self.ca_certificate_not_after, "not_after", signer, series);
    }

    /// The published-since time of each CA of `signer` in state published that is in its bundle;
    /// the others' series are removed.
    pub fn set_ca_published_since(&self, signer: &str, cas: &[(&str, f64)]) {
        let series = cas
            .iter()
            .map(|(name, t)| (vec![name.to_string()], *t))
            .collect();
        self.replace_per_ca(&self.ca_published_since, "published_since", signer, series);
    }

    /// The longest lifetime `signer` grants, in seconds.
    pub fn set_max_lifetime(&self, signer: &str, seconds: f64) {
        self.max_lifetime.with_label_values(&[signer]).set(seconds);
    }

    fn replace_per_ca(
        &self,
        gauge: &GaugeVec,
        family: &'static str,
        signer: &str,
        series: Vec<(Vec<String>, f64)>,
    ) {
        let mut known = match self.per_ca.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let before = known
            .insert(
                (family, signer.to_owned()),
                series.iter().map(|(l, _)| l.clone()).collect(),
            )
            .unwrap_or_default();
        let labels = |rest: &[String]| -> Vec<String> {
            std::iter::once(signer.to_owned())
                .chain(rest.iter().cloned())
                .collect()
        };
        for old in before {
            if !series.iter().any(|(l, _)| *l == old) {
                let l = labels(&old);
                let refs: Vec<&str> = l.iter().map(String::as_str).collect();
                let _ = gauge.remove_label_values(&refs);
            }
        }
        for (rest, value) in &series {
            let l = labels(rest);
            let refs: Vec<&str> = l.iter().map(String::as_str).collect();
            gauge.with_label_values(&refs).set(*value);
        }
    }

    /// New CA files that were rejected (counted once per breakage).
    pub fn record_ca_reload_error(&self, signer: &str) {
        self.ca_reload_errors.with_label_values(&[signer]).inc();
    }

    /// Creates the trust-bundle series of a signer for one `via` (errors at zero for each reason, the
    /// missing-anchor gauge at 0, the publish time at 0 = never), so alerts and dashboards see them before
    /// the first sync and on standby replicas (which never publish; the alert takes the max over replicas).
    pub fn init_trust_bundle(&self, signer: &str, via: &str, reasons: &[&str]) {
        for reason in reasons {
            self.trust_bundle_errors
                .with_label_values(&[signer, via, reason]);
        }
        self.trust_bundle_missing_anchor
            .with_label_values(&[signer, via])
            .set(0);
        self.trust_bundle_published
            .with_label_values(&[signer, via])
            .set(0.0);
    }

    /// The signer's anchors were confirmed up to date (through `via`) at `unix_seconds`.
    pub fn record_trust_bundle_published(&self, signer: &str, via: &str, unix_seconds: f64) {
        self.trust_bundle_published
            .with_label_values(&[signer, via])
            .set(unix_seconds);
    }

    /// One failed publish attempt; `via` and `reason` come from fixed sets (see `trust::publish`,
    /// `trust::configmaps`).
    pub fn record_trust_bundle_error(&self, signer: &str, via: &str, reason: &str) {
        self.trust_bundle_errors
            .with_label_values(&[signer, via, reason])
            .inc();
    }

    /// Whether what is published through `via` lacks the signing CA's anchor.
    pub fn set_trust_bundle_missing_anchor(&self, signer: &str, via: &str, missing: bool) {
        self.trust_bundle_missing_anchor
            .with_label_values(&[signer, via])
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
        m.init_kind("example.com/mtls", "pcr");
        m.signing_duration
            .with_label_values(&["example.com/mtls", "csr"])
            .observe(0.0003);
        m.decision(
            "example.com/mtls",
            "csr",
            Outcome::Failed,
            "UsageNotAllowed",
        );
        m.decision(
            "example.com/mtls",
            "pcr",
            Outcome::Failed,
            "UnsupportedKeyType",
        );
        m.api_error(ApiOperation::UpdateStatus, 409);
        m.leader.set(1);
        let text = m.encode().unwrap();
        for name in [
            "csr_signer_signing_duration_seconds_bucket{kind=\"csr\",signer=\"example.com/mtls\",le=\"0.0005\"} 1",
            "csr_signer_issuance_latency_seconds_count{kind=\"csr\",signer=\"example.com/mtls\"} 0",
            "csr_signer_issuance_latency_seconds_count{kind=\"pcr\",signer=\"example.com/mtls\"} 0",
            "csr_signer_requests_total{kind=\"csr\",outcome=\"failed\",reason=\"UsageNotAllowed\",signer=\"example.com/mtls\"} 1",
            "csr_signer_requests_total{kind=\"pcr\",outcome=\"failed\",reason=\"UnsupportedKeyType\",signer=\"example.com/mtls\"} 1",
            "csr_signer_requests_total{kind=\"csr\",outcome=\"issued\",reason=\"None\",signer=\"example.com/mtls\"} 0",
            "csr_signer_requests_total{kind=\"pcr\",outcome=\"issued\",reason=\"None\",signer=\"example.com/mtls\"} 0",
            "csr_signer_granted_lifetime_seconds_count{kind=\"csr\",signer=\"example.com/mtls\"} 0",
            "csr_signer_lifetime_requests_total{kind=\"csr\",result=\"clamped\",signer=\"example.com/mtls\"} 0",
            "csr_signer_ca_reload_errors_total{signer=\"example.com/mtls\"} 0",
            "csr_signer_approved_not_issued{kind=\"csr\",signer=\"example.com/mtls\"} 0",
            "csr_signer_approved_not_issued{kind=\"pcr\",signer=\"example.com/mtls\"} 0",
            "csr_signer_oldest_approved_not_issued_seconds{kind=\"csr\",signer=\"example.com/mtls\"} 0",
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
    fn per_ca_series_follow_the_configuration() {
        let m = Metrics::new().unwrap();
        let s = "example.com/mtls";
        m.set_ca_certificates(
            s,
            &[("active", "active", 100.0), ("next", "published", 200.0)],
        );
        m.set_ca_published_since(s, &[("next", 50.0)]);
        m.set_ca_certificates("example.com/web", &[("active", "active", 300.0)]);
        let text = m.encode().unwrap();
        for line in [
            "csr_signer_ca_certificate_not_after_timestamp_seconds{ca=\"active\",signer=\"example.com/mtls\",state=\"active\"} 100",
            "csr_signer_ca_certificate_not_after_timestamp_seconds{ca=\"next\",signer=\"example.com/mtls\",state=\"published\"} 200",
            "csr_signer_ca_published_since_timestamp_seconds{ca=\"next\",signer=\"example.com/mtls\"} 50",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
        // `next` signs now (named so), the old one retires: no series keeps the old state.
        m.set_ca_certificates(s, &[("next", "active", 200.0), ("old", "retiring", 100.0)]);
        m.set_ca_published_since(s, &[]);
        let text = m.encode().unwrap();
        assert!(!text.contains("state=\"published\""), "{text}");
        assert!(
            !text.contains("ca=\"active\",signer=\"example.com/mtls\""),
            "{text}"
        );
        assert!(
            !text.contains("csr_signer_ca_published_since_timestamp_seconds{"),
            "{text}"
        );
        assert!(text.contains("csr_signer_ca_certificate_not_after_timestamp_seconds{ca=\"old\",signer=\"example.com/mtls\",state=\"retiring\"} 100"));
        // Other signers are untouched.
        assert!(text.contains("csr_signer_ca_certificate_not_after_timestamp_seconds{ca=\"active\",signer=\"example.com/web\",state=\"active\"} 300"));
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
