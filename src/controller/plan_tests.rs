//! The plan for every row of Appendix B and every engine outcome, without HTTP.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition;

use super::*;
use crate::engine::{Decision, Issued};
use crate::policy::{LifetimeOutcome, Reason, Refusal};

fn approved() -> Vec<CertificateSigningRequestCondition> {
    vec![CertificateSigningRequestCondition {
        type_: "Approved".into(),
        status: "True".into(),
        reason: Some("ByTest".into()),
        ..Default::default()
    }]
}

fn issued() -> Signed {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    Signed::Decision(Decision::Issued(Issued {
        certificate_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into(),
        serial: "0a1b".into(),
        not_before: now - Duration::from_secs(300),
        not_after: now + Duration::from_secs(3600),
        granted_seconds: 3900,
        requested_seconds: Some(3600),
        lifetime: LifetimeOutcome::Honoured,
        begin_refresh_at: None,
    }))
}

fn refused(reason: Reason) -> Signed {
    Signed::Decision(Decision::Refused(Refusal::new(reason, "the message")))
}

fn run(phase: Phase, signed: &Signed) -> Option<Plan> {
    let conditions = approved();
    plan(
        Kind::CertificateSigningRequest,
        phase,
        Subject {
            resource_version: "42",
            conditions: &conditions,
        },
        signed,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )
}

#[test]
fn only_an_approved_object_without_certificate_denial_or_failure_is_acted_on() {
    // Appendix B rows: certificate present, pending, denied, failed → nothing written, no event.
    for phase in [Phase::Issued, Phase::Pending, Phase::Denied, Phase::Failed] {
        for signed in [issued(), refused(Reason::KeyTooWeak)] {
            assert_eq!(run(phase, &signed), None, "{phase:?}");
        }
        assert!(!wants_decision(phase));
    }
    assert!(wants_decision(Phase::Approved));
}

#[test]
fn issued_writes_the_certificate_under_the_read_resource_version() {
    let p = run(Phase::Approved, &issued()).unwrap();
    assert_eq!(p.outcome, Outcome::Issued);
    assert_eq!(p.reason, "None");
    assert!(!p.retry);
    let w = p.write.unwrap();
    assert_eq!(w["metadata"]["resourceVersion"], "42");
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(w["status"]["certificate"].as_str().unwrap())
        .unwrap();
    assert!(String::from_utf8(pem)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    // Nothing but the certificate: conditions are not touched by an issuance.
    assert!(w["status"].get("conditions").is_none());
    let ev = p.event.unwrap();
    assert_eq!((ev.type_, ev.reason), (EventType::Normal, "Issued"));
    assert!(ev.message.contains("serial 0a1b"), "{}", ev.message);
    assert!(
        ev.message.contains("requested 3600s, honoured"),
        "{}",
        ev.message
    );
    let facts = p.issued.unwrap();
    assert_eq!(facts.granted_seconds, 3900);
    assert_eq!(facts.lifetime, "honoured");
    assert_eq!(facts.not_after, "2027-01-15T09:00:00Z");
}

#[test]
fn every_refusal_is_one_failed_condition_kept_beside_approved_and_never_retried() {
    for reason in Reason::ALL {
        let p = run(Phase::Approved, &refused(reason)).unwrap();
        assert_eq!(p.outcome, Outcome::Failed);
        assert_eq!(p.reason, reason.as_str(), "condition reason = metric label");
        assert!(!p.retry, "{reason:?} is terminal");
        let w = p.write.unwrap();
        assert_eq!(w["metadata"]["resourceVersion"], "42");
        let conds = w["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[0]["type"], "Approved");
        assert_eq!(conds[1]["type"], "Failed");
        assert_eq!(conds[1]["status"], "True");
        assert_eq!(conds[1]["reason"], reason.as_str());
        assert_eq!(conds[1]["message"], "the message");
        assert_eq!(conds[1]["lastUpdateTime"], "2027-01-15T08:00:00Z");
        assert!(w["status"].get("certificate").is_none());
        let ev = p.event.unwrap();
        assert_eq!((ev.type_, ev.reason), (EventType::Warning, "SigningFailed"));
        assert_eq!(ev.message, format!("{}: the message", reason.as_str()));
    }
}

#[test]
fn engine_errors_are_transient_write_nothing_and_retry() {
    for class in ["CaExpired", "CaUnavailable", "Crypto", "Encode", "Internal"] {
        let p = run(
            Phase::Approved,
            &Signed::Error {
                class,
                message: "boom".into(),
            },
        )
        .unwrap();
        assert_eq!(p.write, None, "{class}: never a Failed condition");
        assert_eq!(p.outcome, Outcome::Error);
        assert_eq!(p.reason, class);
        assert!(p.retry);
        let ev = p.event.unwrap();
        assert_eq!((ev.type_, ev.reason), (EventType::Warning, "SigningError"));
        assert_eq!(ev.message, format!("{class}: boom (will retry)"));
    }
    // API trouble gets no event (recording one would need the failing API).
    let p = run(
        Phase::Approved,
        &Signed::Error {
            class: API_ERROR,
            message: "503".into(),
        },
    )
    .unwrap();
    assert!(p.retry && p.write.is_none() && p.event.is_none());
}

#[test]
fn write_errors_reread_on_conflict_forget_on_gone_and_retry_otherwise() {
    assert_eq!(after_write_error(409), AfterWriteError::Reread);
    assert_eq!(after_write_error(404), AfterWriteError::Forget);
    for code in [0, 400, 403, 422, 429, 500, 503] {
        assert_eq!(after_write_error(code), AfterWriteError::Retry, "{code}");
    }
}

fn run_pcr(signed: &Signed) -> Option<Plan> {
    plan(
        Kind::PodCertificateRequest,
        Phase::Approved,
        Subject {
            resource_version: "42",
            conditions: &[],
        },
        signed,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )
}

fn issued_pod() -> Signed {
    let Signed::Decision(Decision::Issued(mut i)) = issued() else {
        unreachable!()
    };
    i.begin_refresh_at = Some(i.not_before + Duration::from_secs(1950));
    Signed::Decision(Decision::Issued(i))
}

#[test]
fn a_pcr_is_issued_in_one_write_with_its_condition_chain_and_whole_second_times() {
    let p = run_pcr(&issued_pod()).unwrap();
    assert_eq!(
        (p.outcome, p.reason, p.retry),
        (Outcome::Issued, "None", false)
    );
    let w = p.write.unwrap();
    assert_eq!(w["metadata"]["resourceVersion"], "42");
    let st = &w["status"];
    assert!(st["certificateChain"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(st.get("certificate").is_none());
    assert_eq!(st["notBefore"], "2027-01-15T07:55:00Z");
    assert_eq!(st["notAfter"], "2027-01-15T09:00:00Z");
    assert_eq!(st["beginRefreshAt"], "2027-01-15T08:27:30Z");
    let conds = st["conditions"].as_array().unwrap();
    assert_eq!(conds.len(), 1, "exactly one terminal condition");
    assert_eq!(conds[0]["type"], "Issued");
    assert_eq!(conds[0]["status"], "True");
    assert_eq!(conds[0]["reason"], "Issued");
    assert_eq!(conds[0]["lastTransitionTime"], "2027-01-15T08:00:00Z");
    assert!(conds[0]["message"]
        .as_str()
        .unwrap()
        .contains("serial 0a1b"));
    assert_eq!(p.event.unwrap().reason, "Issued");
}

#[test]
fn a_pcr_issuance_without_a_refresh_time_is_an_internal_error_not_a_write() {
    let p = run_pcr(&issued()).unwrap();
    assert_eq!((p.outcome, p.reason), (Outcome::Error, "Internal"));
    assert!(p.retry && p.write.is_none());
}

#[test]
fn a_pcr_refusal_is_its_single_denied_or_failed_condition() {
    for reason in Reason::ALL {
        let p = run_pcr(&refused(reason)).unwrap();
        assert_eq!(
            (p.outcome, p.reason, p.retry),
            (Outcome::Failed, reason.as_str(), false)
        );
        let w = p.write.unwrap();
        let st = w["status"].as_object().unwrap();
        assert_eq!(
            st.len(),
            1,
            "Denied/Failed: conditions is the only status field"
        );
        let conds = st["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 1);
        let c = &conds[0];
        assert_eq!(c["type"], reason.pcr_condition());
        assert!(["Denied", "Failed"].contains(&c["type"].as_str().unwrap()));
        assert_eq!(c["status"], "True");
        assert_eq!(c["reason"], reason.as_str());
        assert_eq!(c["message"], "the message");
        assert_eq!(c["lastTransitionTime"], "2027-01-15T08:00:00Z");
        let ev = p.event.unwrap();
        let expected = if reason.pcr_condition() == "Denied" {
            "SigningDenied"
        } else {
            "SigningFailed"
        };
        assert_eq!((ev.type_, ev.reason), (EventType::Warning, expected));
    }
    // Transient errors stay transient for PCRs too: no terminal condition.
    let p = run_pcr(&Signed::Error {
        class: "CaUnavailable",
        message: "boom".into(),
    })
    .unwrap();
    assert!(p.retry && p.write.is_none());
}

#[test]
fn kind_labels_are_a_closed_set() {
    assert_eq!(Kind::CertificateSigningRequest.label(), "csr");
    assert_eq!(Kind::PodCertificateRequest.label(), "pcr");
}
