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
/// behind this enum, so the worker and the plan serve both kinds with one code path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    CertificateSigningRequest,
    /// KEP-4317: no approval step; the signer writes one terminal condition (Issued, Denied or Failed),
    /// and with Issued the chain and its times, in one status write.
    PodCertificateRequest,
}

impl Kind {
    /// The `kind` label of the per-request metrics (a closed set: csr, pcr).
    pub fn label(self) -> &'static str {
        match self {
            Kind::CertificateSigningRequest => "csr",
            Kind::PodCertificateRequest => "pcr",
        }
    }

    /// The merge patch that writes a certificate, guarded by the resourceVersion the decision was made on.
    /// `None` when the engine's answer lacks what this kind's status requires (a PCR needs beginRefreshAt).
    fn issued_patch(
        self,
        resource_version: &str,
        issued: &Issued,
        message: &str,
        now: SystemTime,
    ) -> Option<serde_json::Value> {
        use base64::Engine as _;
        Some(match self {
            Kind::CertificateSigningRequest => serde_json::json!({
                "metadata": { "resourceVersion": resource_version },
                "status": {
                    "certificate": base64::engine::general_purpose::STANDARD
                        .encode(issued.certificate_pem.as_bytes()),
                },
            }),
            // The apiserver checks notBefore/notAfter equal the leaf's and beginRefreshAt lies within
            // [notBefore+10m, notAfter-10m]; metav1.Time is whole seconds, as the engine's times are.
            Kind::PodCertificateRequest => serde_json::json!({
                "metadata": { "resourceVersion": resource_version },
                "status": {
                    "conditions": [pcr_condition("Issued", "Issued", message, now)],
                    "certificateChain": issued.certificate_pem,
                    "notBefore": rfc3339(issued.not_before),
                    "notAfter": rfc3339(issued.not_after),
                    "beginRefreshAt": rfc3339(issued.begin_refresh_at?),
                },
            }),
        })
    }

    /// The merge patch that records a refusal. A CSR gets one `Failed` condition added; a merge patch
    /// replaces the whole list, so every existing condition (Approved above all) is carried over as it
    /// was. A PCR gets its single terminal condition: Denied (policy) or Failed (signer-side, permanent).
    fn refused_patch(
        self,
        resource_version: &str,
        conditions: &[CertificateSigningRequestCondition],
        refusal: &crate::engine::Refusal,
        now: SystemTime,
    ) -> serde_json::Value {
        let reason = refusal.reason.as_str();
        match self {
            Kind::CertificateSigningRequest => {
                let mut all = conditions.to_vec();
                all.push(CertificateSigningRequestCondition {
                    type_: "Failed".to_string(),
                    status: "True".to_string(),
                    reason: Some(reason.to_string()),
                    message: Some(refusal.message.clone()),
                    last_update_time: Some(Time(timestamp(now))),
                    last_transition_time: None,
                });
                serde_json::json!({
                    "metadata": { "resourceVersion": resource_version },
                    "status": { "conditions": all },
                })
            }
            Kind::PodCertificateRequest => serde_json::json!({
                "metadata": { "resourceVersion": resource_version },
                "status": {
                    "conditions": [pcr_condition(
                        refusal.reason.pcr_condition(),
                        reason,
                        &refusal.message,
                        now,
                    )],
                },
            }),
        }
    }

    /// The event reason of a refusal: what `kubectl describe` shows next to the message.
    fn refused_event_reason(self, refusal: &crate::engine::Refusal) -> &'static str {
        match self {
            Kind::PodCertificateRequest if refusal.reason.pcr_condition() == "Denied" => {
                "SigningDenied"
            }
            _ => "SigningFailed",
        }
    }
}

/// A PCR's terminal condition (metav1.Condition: reason and lastTransitionTime are required; the message
/// is capped at the API's 32768 characters).
fn pcr_condition(type_: &str, reason: &str, message: &str, now: SystemTime) -> serde_json::Value {
    let message: String = message.chars().take(32_768).collect();
    serde_json::json!({
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": rfc3339(now),
    })
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
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
            let message = format!(
                "issued certificate serial {} valid until {not_after}; granted {}s (requested {requested}, {})",
                issued.serial,
                issued.granted_seconds,
                issued.lifetime.describe()
            );
            let Some(write) = kind.issued_patch(subject.resource_version, issued, &message, now)
            else {
                // An engine answer this kind cannot record is the engine's bug: never a terminal
                // condition, retried (and visible) like any internal error.
                return plan(
                    kind,
                    phase,
                    subject,
                    &Signed::Error {
                        class: "Internal",
                        message: "the engine issued no refresh time for a pod certificate"
                            .to_string(),
                    },
                    now,
                );
            };
            Plan {
                write: Some(write),
                outcome: Outcome::Issued,
                reason: "None",
                message: String::new(),
                event: Some(PlannedEvent {
                    type_: EventType::Normal,
                    reason: "Issued",
                    message,
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
            Plan {
                write: Some(kind.refused_patch(
                    subject.resource_version,
                    subject.conditions,
                    refusal,
                    now,
                )),
                outcome: Outcome::Failed,
                reason,
                message: refusal.message.clone(),
                event: Some(PlannedEvent {
                    type_: EventType::Warning,
                    reason: kind.refused_event_reason(refusal),
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
