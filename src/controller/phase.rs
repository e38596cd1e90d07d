//! Where a CSR stands, read from its status alone (k8s-csr-rules §1.3–1.5 and Appendix B). Pure.

use std::time::SystemTime;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;

/// Where a CSR stands, from the signer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No Approved/Denied/Failed condition and no certificate.
    Pending,
    /// Approved, not denied, not failed, no certificate: ours to decide.
    Approved,
    /// Has a certificate.
    Issued,
    /// Denied (whatever else it has).
    Denied,
    /// Has a Failed condition with status True (or empty).
    Failed,
}

/// Classifies a CSR per Appendix B: a certificate wins, then Denied, then a true Failed, then Approved.
pub fn phase_of(csr: &CertificateSigningRequest) -> Phase {
    let status = csr.status.as_ref();
    if status
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
    {
        return Phase::Issued;
    }
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let has = |t: &str| conditions.iter().any(|c| c.type_ == t);
    if has("Denied") {
        return Phase::Denied;
    }
    // kube-controller-manager's HasTrueCondition: an empty status counts as true.
    if conditions
        .iter()
        .any(|c| c.type_ == "Failed" && (c.status.is_empty() || c.status == "True"))
    {
        return Phase::Failed;
    }
    if has("Approved") {
        return Phase::Approved;
    }
    Phase::Pending
}

/// The Approved condition's time (lastUpdateTime, else lastTransitionTime; one-second resolution).
pub fn approved_time(csr: &CertificateSigningRequest) -> Option<SystemTime> {
    let c = csr
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Approved")?;
    let t = c
        .last_update_time
        .as_ref()
        .or(c.last_transition_time.as_ref())?;
    Some(SystemTime::from(t.0))
}

/// resourceVersions are opaque, but every apiserver we talk to issues increasing decimals; when
/// both parse, an older one is a replayed event and can be skipped. Correctness never depends on
/// this (the write precondition does), it only saves a wasted 409.
pub fn is_older(new: &str, old: &str) -> bool {
    match (new.parse::<u64>(), old.parse::<u64>()) {
        (Ok(n), Ok(o)) => n < o,
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };
    use k8s_openapi::ByteString;

    fn csr(conds: &[(&str, &str)], cert: Option<&[u8]>) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                certificate: cert.map(|c| ByteString(c.to_vec())),
                conditions: Some(
                    conds
                        .iter()
                        .map(|(t, s)| CertificateSigningRequestCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_appendix_b() {
        assert_eq!(phase_of(&csr(&[], None)), Phase::Pending);
        assert_eq!(
            phase_of(&csr(&[("Approved", "True")], None)),
            Phase::Approved
        );
        assert_eq!(
            phase_of(&csr(&[("Approved", "True"), ("Denied", "True")], None)),
            Phase::Denied
        );
        assert_eq!(
            phase_of(&csr(&[("Approved", "True"), ("Failed", "True")], None)),
            Phase::Failed
        );
        assert_eq!(
            phase_of(&csr(&[("Approved", "True"), ("Failed", "")], None)),
            Phase::Failed
        );
        // A Failed condition with status False does not stop signing (HasTrueCondition).
        assert_eq!(
            phase_of(&csr(&[("Approved", "True"), ("Failed", "False")], None)),
            Phase::Approved
        );
        assert_eq!(
            phase_of(&csr(&[("Approved", "True")], Some(b"x"))),
            Phase::Issued
        );
        assert_eq!(
            phase_of(&csr(&[("Approved", "True")], Some(b""))),
            Phase::Approved
        );
        assert_eq!(phase_of(&csr(&[("Denied", "True")], None)), Phase::Denied);
    }

    #[test]
    fn older_resource_versions_are_detected_only_when_numeric() {
        assert!(is_older("9", "10"));
        assert!(!is_older("10", "10"));
        assert!(!is_older("11", "10"));
        assert!(!is_older("abc", "10"));
    }
}
