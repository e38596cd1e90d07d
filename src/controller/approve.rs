//! Carrying out auto-approval for one pending CSR: the engine's verdict (`explain`, the same decision
//! `sign` makes), `approval::AutoApprove::decide`, the SubjectAccessReviews it asks for, and the
//! approval write. No decision is made here.
//!
//! The write is a merge patch on `/approval` that carries the resourceVersion the decision was made
//! on and every existing condition, plus `Approved` (reason `AutoApproved`): a CSR changed meanwhile
//! (denied by a person, say) gives a 409 and is looked at again, never overwritten.

use std::time::SystemTime;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::write::path_segment;
use crate::approval::{self, AccessCheck, Approval, AutoApprove, NotApproved};
use crate::engine::{SignRequest, SignerEngine};
use crate::metrics::{status_code, ApiOperation, Metrics};
use crate::policy::Requester;

/// What happened to one pending CSR.
#[derive(Debug)]
pub enum Outcome {
    /// Approved under this rule (the watch brings it back, approved, to be signed).
    Approved { rule: String },
    /// Left pending for a person, with why.
    Left {
        reason: NotApproved,
        message: String,
    },
    /// 409: it changed since it was read; look again.
    Changed,
    /// 404: gone.
    Gone,
    /// An API error: try again later (never a terminal condition).
    Transient { message: String },
}

/// Decides and, when allowed, approves `csr` (a pending CSR of `signer`).
pub async fn auto_approve(
    client: &kube::Client,
    metrics: &Metrics,
    signer: &SignerEngine,
    approver: &AutoApprove,
    csr: &CertificateSigningRequest,
) -> Outcome {
    let Some(name) = csr.metadata.name.as_deref() else {
        return Outcome::Gone;
    };
    let username = csr.spec.username.clone().unwrap_or_default();
    let groups = csr.spec.groups.clone().unwrap_or_default();
    // The same annotations the signing path decides on (approval and signing must not disagree).
    let annotations = super::store::decision_annotations(csr);
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let req = SignRequest {
        request: &csr.spec.request.0,
        usages: &usages,
        expiration_seconds: csr.spec.expiration_seconds,
        annotations: annotations.as_ref(),
        username: &username,
        groups: &groups,
    };
    let who = Requester {
        username: &username,
        groups: &groups,
    };
    let (rule, checks) = match approver.decide(signer.name(), &who, &signer.explain(&req)) {
        Approval::Leave { reason, message } => return Outcome::Left { reason, message },
        Approval::Approve { rule, checks } => (rule, checks),
    };
    for check in &checks {
        match review(client, metrics, csr, check).await {
            Ok(true) => {}
            Ok(false) => {
                return Outcome::Left {
                    reason: NotApproved::AccessReviewDenied,
                    message: format!(
                        "not auto-approved: a SubjectAccessReview says {username:?} may not {} {}{} (rule {rule:?} matched); a person must decide",
                        check.verb,
                        check.resource,
                        check.name.as_deref().map(|n| format!(" {n}")).unwrap_or_default(),
                    ),
                }
            }
            Err(message) => return Outcome::Transient { message },
        }
    }
    let mut conditions = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::from_second(
        crate::metrics::unix_seconds(SystemTime::now()).floor() as i64,
    )
    .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now());
    conditions.push(CertificateSigningRequestCondition {
        type_: "Approved".into(),
        status: "True".into(),
        reason: Some(approval::APPROVED_REASON.into()),
        message: Some(approval::approved_message(signer.name(), &rule)),
        last_update_time: Some(Time(now)),
        last_transition_time: None,
    });
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": csr.metadata.resource_version },
        "status": { "conditions": conditions },
    });
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    match api
        .patch_approval(
            &path_segment(name),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Outcome::Approved { rule },
        Err(e) => {
            let code = status_code(&e);
            metrics.api_error(ApiOperation::Approve, code);
            match code {
                409 => Outcome::Changed,
                404 => Outcome::Gone,
                _ => Outcome::Transient {
                    message: format!("approving: {e}"),
                },
            }
        }
    }
}

/// One SubjectAccessReview for the CSR's requester (user, groups, uid and extra as the apiserver
/// stamped them on the CSR).
async fn review(
    client: &kube::Client,
    metrics: &Metrics,
    csr: &CertificateSigningRequest,
    check: &AccessCheck,
) -> Result<bool, String> {
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: csr.spec.username.clone(),
            groups: csr.spec.groups.clone(),
            uid: csr.spec.uid.clone(),
            extra: csr.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some(check.resource.into()),
                verb: Some(check.verb.clone()),
                name: check.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    match api.create(&PostParams::default(), &sar).await {
        Ok(r) => Ok(r.status.is_some_and(|s| s.allowed)),
        Err(e) => {
            metrics.api_error(ApiOperation::AccessReview, status_code(&e));
            Err(format!("SubjectAccessReview: {e}"))
        }
    }
}
