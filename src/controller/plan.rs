//! What to do with one object, decided without IO: given where it stands and what the engine answered,
//! the status patch to write (if any), the outcome and reason (the same string for the condition, the
//! metric label and the log field), the event, and whether to retry. The worker only carries plans out.
//!
//! Terminal versus transient lives here and nowhere else: a refusal is a result (one `Failed` condition,
//! never retried); an engine error is transient (no write, retry with backoff, never `Failed`).

use std::time::SystemTime;

use k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::events::EventType;
use super::phase::Phase;
use crate::engine::{Decision, Issued};
use crate::metrics::Outcome;

/// The resource kinds a signer writes certificates to. Everything kind-specific about a status write is
/// behind this enum, so the worker and the plan serve a second kind (PodCertificateRequest) unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    CertificateSigningRequest,
}

impl Kind {
    /// The merge patch that writes a certificate, guarded by the resourceVersion the decision was made on.
    fn issued_patch(self, resource_version: &str, issued: &Issued) -> serde_json::Value {
        use base64::Engine as _;
        match self {
            Kind::CertificateSigningRequest => serde_json::json!({
                "metadata": { "resourceVersion": resource_version },
                "status": {
                    "certificate": base64::engine::general_purpose::STANDARD
                        .encode(issued.certificate_pem.as_bytes()),
                },
            }),
        }
    }

    /// The merge patch that adds one `Failed` condition. A merge patch replaces the whole list, so every
    /// existing condition (Approved above all) is carried over as it was.
    fn refused_patch(
        self,
        resource_version: &str,
        conditions: &[CertificateSigningRequestCondition],
        failed: CertificateSigningRequestCondition,
    ) -> serde_json::Value {
        match self {
            Kind::CertificateSigningRequest => {
                let mut all = conditions.to_vec();
                all.push(failed);
                serde_json::json!({
                    "metadata": { "resourceVersion": resource_version },
                    "status": { "conditions": all },
                })
            }
        }
    }
}

/// What the engine answered for one snapshot.
#[derive(Debug)]
pub enum Signed {
    Decision(Decision),
    /// A transient failure (CA unavailable or expired, crypto, internal), with its class (the `reason`
    /// label of `outcome="error"`) and a message.
    Error {
        class: &'static str,
        message: String,
    },
}

/// The object as the decision saw it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub resource_version: &'a str,
    pub conditions: &'a [CertificateSigningRequestCondition],
}

/// An event to record about the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
}

/// The facts of an issued certificate, for the metrics and the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedFacts {
    pub serial: String,
    pub not_after: String,
    pub granted_seconds: u64,
    pub requested_seconds: Option<u64>,
    pub lifetime: &'static str,
}

/// What to do with one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The status patch to write; `None` when nothing is written.
    pub write: Option<serde_json::Value>,
    pub outcome: Outcome,
    /// "None" for issued, the refusal reason for failed, the error class for error.
    pub reason: &'static str,
    /// For people: the refusal or error message (empty for issued).
    pub message: String,
    /// Recorded once the write succeeded (at once when there is no write).
    pub event: Option<PlannedEvent>,
    pub issued: Option<IssuedFacts>,
    /// Transient: try again after backoff.
    pub retry: bool,
}

/// Whether an object in `phase` is the signer's to decide (Appendix B: approved, not denied, not failed,
/// no certificate yet). Everything else is left exactly as it is.
pub fn wants_decision(phase: Phase) -> bool {
    phase == Phase::Approved
}

/// Plans the handling of an object in `phase` for which the engine answered `signed`; `None` when the
/// object is not the signer's to decide (see `wants_decision`).
pub fn plan(
    kind: Kind,
    phase: Phase,
    subject: Subject<'_>,
    signed: &Signed,
    now: SystemTime,
) -> Option<Plan> {
    if !wants_decision(phase) {
        return None;
    }
    Some(match signed {
        Signed::Decision(Decision::Issued(issued)) => {
            let not_after = humantime::format_rfc3339_seconds(issued.not_after).to_string();
            let requested = issued
                .requested_seconds
                .map_or_else(|| "none".to_string(), |s| format!("{s}s"));
            Plan {
                write: Some(kind.issued_patch(subject.resource_version, issued)),
                outcome: Outcome::Issued,
                reason: "None",
                message: String::new(),
                event: Some(PlannedEvent {
                    type_: EventType::Normal,
                    reason: "Issued",
                    message: format!(
                        "issued certificate serial {} valid until {not_after}; granted {}s (requested {requested}, {})",
                        issued.serial,
                        issued.granted_seconds,
                        issued.lifetime.describe()
                    ),
                }),
                issued: Some(IssuedFacts {
                    serial: issued.serial.clone(),
                    not_after,
                    granted_seconds: issued.granted_seconds,
                    requested_seconds: issued.requested_seconds,
                    lifetime: issued.lifetime.as_str(),
                }),
                retry: false,
            }
        }
        Signed::Decision(Decision::Refused(refusal)) => {
            let reason = refusal.reason.as_str();
            let failed = CertificateSigningRequestCondition {
                type_: "Failed".to_string(),
                status: "True".to_string(),
                reason: Some(reason.to_string()),
                message: Some(refusal.message.clone()),
                last_update_time: Some(Time(timestamp(now))),
                last_transition_time: None,
            };
            Plan {
                write: Some(kind.refused_patch(
                    subject.resource_version,
                    subject.conditions,
                    failed,
                )),
                outcome: Outcome::Failed,
                reason,
                message: refusal.message.clone(),
                event: Some(PlannedEvent {
                    type_: EventType::Warning,
                    reason: "SigningFailed",
                    message: format!("{reason}: {}", refusal.message),
                }),
                issued: None,
                retry: false,
            }
        }
        Signed::Error { class, message } => Plan {
            write: None,
            outcome: Outcome::Error,
            reason: class,
            message: message.clone(),
            // API trouble is visible in api_errors_total; an event about it would need the API too.
            event: (*class != API_ERROR).then(|| PlannedEvent {
                type_: EventType::Warning,
                reason: "SigningError",
                message: format!("{class}: {message} (will retry)"),
            }),
            issued: None,
            retry: true,
        },
    })
}

/// The error class of apiserver failures.
pub const API_ERROR: &str = "ApiError";

/// What to do after a status write failed with `code` (0: no response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterWriteError {
    /// 409: the object changed since it was read (or another replica wrote first): re-read it and decide
    /// again on what is there now.
    Reread,
    /// 404: it is gone; forget it.
    Forget,
    /// Anything else: transient, retry after backoff.
    Retry,
}

pub fn after_write_error(code: u16) -> AfterWriteError {
    match code {
        409 => AfterWriteError::Reread,
        404 => AfterWriteError::Forget,
        _ => AfterWriteError::Retry,
    }
}

fn timestamp(t: SystemTime) -> k8s_openapi::jiff::Timestamp {
    let secs = crate::metrics::unix_seconds(t);
    k8s_openapi::jiff::Timestamp::from_second(secs.floor() as i64)
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
