//! What is particular to PodCertificateRequests (KEP-4317): which API version the cluster serves, where a
//! PCR stands, and what a decision needs from it. Everything else (cache, queue, plan, writes, events)
//! is the controller core shared with CSRs.
//!
//! Two served versions carry the same status: `certificates.k8s.io/v1` (1.37+) and `v1beta1` (1.35/1.36,
//! opt-in). v1beta1 also has the legacy `pkixPublicKey`/`proofOfPossession` pair that 1.35 kubelets
//! send instead of a stub PKCS#10 request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::certificates::{v1, v1beta1};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::api::{Api, Patch, PatchParams};

use super::phase::Phase;
use super::plan::Kind;
use super::store::{Key, Request, Seen, Work};

const GROUP: &str = "certificates.k8s.io";
const PLURAL: &str = "podcertificaterequests";

/// The PCR API version the signer talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcrVersion {
    V1,
    V1beta1,
}

impl PcrVersion {
    pub fn api_version(self) -> &'static str {
        match self {
            PcrVersion::V1 => "certificates.k8s.io/v1",
            PcrVersion::V1beta1 => "certificates.k8s.io/v1beta1",
        }
    }
}

/// What discovery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// The version watched and written: v1 when served.
    pub version: PcrVersion,
    /// v1beta1 is served too: a PCR from a 1.35 kubelet (legacy `pkixPublicKey`, no stub request) shows
    /// no key at all through v1, and is read through v1beta1 for it.
    pub v1beta1: bool,
}

/// The served PCR versions, v1 preferred; `None` when the cluster serves neither (before 1.37 PCRs are
/// opt-in). A group version that is not served answers 404, which is no error here.
pub async fn discover(client: &kube::Client) -> Result<Option<Served>, kube::Error> {
    let mut found = Vec::new();
    for (version, v) in [("v1", PcrVersion::V1), ("v1beta1", PcrVersion::V1beta1)] {
        match client
            .list_api_group_resources(&format!("{GROUP}/{version}"))
            .await
        {
            Ok(list) if list.resources.iter().any(|r| r.name == PLURAL) => found.push(v),
            Ok(_) => {}
            Err(e) if crate::metrics::status_code(&e) == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found.first().map(|&version| Served {
        version,
        v1beta1: found.contains(&PcrVersion::V1beta1),
    }))
}

/// Where a PCR stands. There is no approval step: a PCR without a terminal condition is the signer's
/// to decide, which is what `Approved` means to the controller. Once Issued, Denied or Failed is there
/// the whole status is immutable (the apiserver allows one terminal condition, status "True").
pub fn phase_of(conditions: &[Condition], chain: Option<&str>) -> Phase {
    if chain.is_some_and(|c| !c.is_empty()) {
        return Phase::Issued;
    }
    let has = |t: &str| conditions.iter().any(|c| c.type_ == t);
    if has("Issued") {
        Phase::Issued
    } else if has("Denied") {
        Phase::Denied
    } else if has("Failed") {
        Phase::Failed
    } else {
        Phase::Approved
    }
}

/// What a decision needs from a PCR's spec (all of it immutable after creation).
#[derive(Debug, Clone)]
pub struct PodFields {
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub service_account_name: String,
    pub service_account_uid: String,
    pub node_name: String,
    pub node_uid: String,
    pub max_expiration_seconds: Option<i32>,
    /// DER; empty when the kubelet (1.35) sent the legacy pair instead.
    pub stub_pkcs10_request: Vec<u8>,
    /// v1beta1 only: DER SubjectPublicKeyInfo.
    pub pkix_public_key: Option<Vec<u8>>,
    /// v1beta1 only: signature over the pod UID.
    pub proof_of_possession: Option<Vec<u8>>,
    pub unverified_user_annotations: Option<BTreeMap<String, String>>,
}

/// The spec fields both versions share, borrowed, so one function folds either.
struct Spec<'a> {
    signer_name: &'a str,
    pod_name: &'a str,
    pod_uid: &'a str,
    service_account_name: &'a str,
    service_account_uid: &'a str,
    node_name: &'a str,
    node_uid: &'a str,
    max_expiration_seconds: Option<i32>,
    stub: &'a [u8],
    pkix_public_key: Option<&'a [u8]>,
    proof_of_possession: Option<&'a [u8]>,
    unverified_user_annotations: Option<&'a BTreeMap<String, String>>,
}

struct Status<'a> {
    conditions: &'a [Condition],
    chain: Option<&'a str>,
}

/// The fields both versions share, borrowed from either version's PCR (the two are distinct generated
/// types with the same field names), with the legacy key fields given.
macro_rules! borrowed {
    ($pcr:expr, $pkix:expr, $proof:expr) => {{
        let s = &$pcr.spec;
        let status = $pcr.status.as_ref();
        (
            Spec {
                signer_name: &s.signer_name,
                pod_name: &s.pod_name,
                pod_uid: &s.pod_uid,
                service_account_name: &s.service_account_name,
                service_account_uid: &s.service_account_uid,
                node_name: &s.node_name,
                node_uid: &s.node_uid,
                max_expiration_seconds: s.max_expiration_seconds,
                stub: &s.stub_pkc_s10_request.0,
                pkix_public_key: $pkix,
                proof_of_possession: $proof,
                unverified_user_annotations: s.unverified_user_annotations.as_ref(),
            },
            Status {
                conditions: status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]),
                chain: status.and_then(|s| s.certificate_chain.as_deref()),
            },
        )
    }};
}

/// One observed v1 PCR, if it is `signer`'s (`signer_name`).
pub fn seen_v1(signer: usize, signer_name: &str, pcr: &v1::PodCertificateRequest) -> Option<Seen> {
    let (spec, status) = borrowed!(pcr, None, None);
    seen(signer, signer_name, &pcr.metadata, spec, status)
}

/// One observed v1beta1 PCR, if it is `signer`'s (`signer_name`).
pub fn seen_v1beta1(
    signer: usize,
    signer_name: &str,
    pcr: &v1beta1::PodCertificateRequest,
) -> Option<Seen> {
    let (spec, status) = borrowed!(
        pcr,
        pcr.spec.pkix_public_key.as_ref().map(|b| b.0.as_slice()),
        pcr.spec
            .proof_of_possession
            .as_ref()
            .map(|b| b.0.as_slice())
    );
    seen(signer, signer_name, &pcr.metadata, spec, status)
}

fn seen(
    signer: usize,
    signer_name: &str,
    meta: &ObjectMeta,
    spec: Spec<'_>,
    status: Status<'_>,
) -> Option<Seen> {
    // The server-side selector already filters; this guards against a server ignoring it.
    if spec.signer_name != signer_name {
        return None;
    }
    let key = Key {
        signer,
        kind: Kind::PodCertificateRequest,
        namespace: Some(Arc::from(meta.namespace.as_deref()?)),
        name: Arc::from(meta.name.as_deref()?),
    };
    let phase = phase_of(status.conditions, status.chain);
    let non_empty = |b: Option<&[u8]>| b.filter(|b| !b.is_empty()).map(<[u8]>::to_vec);
    let work = (phase == Phase::Approved).then(|| Work {
        requester: format!(
            "system:serviceaccount:{}:{}",
            key.namespace.as_deref().unwrap_or_default(),
            spec.service_account_name
        ),
        conditions: Vec::new(),
        request: Request::Pod(PodFields {
            namespace: key.namespace.as_deref().unwrap_or_default().to_string(),
            pod_name: spec.pod_name.to_string(),
            pod_uid: spec.pod_uid.to_string(),
            service_account_name: spec.service_account_name.to_string(),
            service_account_uid: spec.service_account_uid.to_string(),
            node_name: spec.node_name.to_string(),
            node_uid: spec.node_uid.to_string(),
            max_expiration_seconds: spec.max_expiration_seconds,
            stub_pkcs10_request: spec.stub.to_vec(),
            pkix_public_key: non_empty(spec.pkix_public_key),
            proof_of_possession: non_empty(spec.proof_of_possession),
            unverified_user_annotations: spec.unverified_user_annotations.cloned(),
        }),
    });
    Some(Seen {
        key,
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        phase,
        // No approval: the request waits from its creation (one-second resolution).
        waiting_since: meta
            .creation_timestamp
            .as_ref()
            .map(|t| SystemTime::from(t.0)),
        work,
        certificate: status
            .chain
            .filter(|c| !c.is_empty())
            .map(|c| c.as_bytes().to_vec()),
    })
}

/// The PCR API of the discovered version, for one namespace's status writes and reads.
pub(super) async fn write_status(
    client: &kube::Client,
    version: PcrVersion,
    key: &Key,
    signer_name: &str,
    patch: &serde_json::Value,
) -> Result<Option<Seen>, kube::Error> {
    let ns = key.namespace.as_deref().unwrap_or_default();
    let name = super::path_segment(&key.name);
    let pp = PatchParams::default();
    Ok(match version {
        PcrVersion::V1 => {
            let api: Api<v1::PodCertificateRequest> = Api::namespaced(client.clone(), ns);
            let o = api.patch_status(&name, &pp, &Patch::Merge(patch)).await?;
            seen_v1(key.signer, signer_name, &o)
        }
        PcrVersion::V1beta1 => {
            let api: Api<v1beta1::PodCertificateRequest> = Api::namespaced(client.clone(), ns);
            let o = api.patch_status(&name, &pp, &Patch::Merge(patch)).await?;
            seen_v1beta1(key.signer, signer_name, &o)
        }
    })
}

/// A PCR that carries no stub request as seen through v1 (a 1.35 kubelet's, with the legacy key fields
/// only v1beta1 shows): its `(pkixPublicKey, proofOfPossession)` read through v1beta1; `Ok(None)` when it
/// is gone or has none either.
pub(super) async fn legacy_key(
    client: &kube::Client,
    key: &Key,
) -> Result<Option<(Vec<u8>, Vec<u8>)>, kube::Error> {
    let api: Api<v1beta1::PodCertificateRequest> =
        Api::namespaced(client.clone(), key.namespace.as_deref().unwrap_or_default());
    Ok(api
        .get_opt(&super::path_segment(&key.name))
        .await?
        .and_then(|o| Some((o.spec.pkix_public_key?.0, o.spec.proof_of_possession?.0)))
        .filter(|(k, p)| !k.is_empty() && !p.is_empty()))
}

impl PodFields {
    /// Whether the request names its key through neither the stub request nor the legacy fields.
    pub fn lacks_key(&self) -> bool {
        self.stub_pkcs10_request.is_empty() && self.pkix_public_key.is_none()
    }
}

/// Reads one PCR again; `Ok(None)` when it is gone (or no longer the signer's).
pub(super) async fn reread(
    client: &kube::Client,
    version: PcrVersion,
    key: &Key,
    signer_name: &str,
) -> Result<Option<Seen>, kube::Error> {
    let ns = key.namespace.as_deref().unwrap_or_default();
    let name = super::path_segment(&key.name);
    Ok(match version {
        PcrVersion::V1 => {
            let api: Api<v1::PodCertificateRequest> = Api::namespaced(client.clone(), ns);
            api.get_opt(&name)
                .await?
                .and_then(|o| seen_v1(key.signer, signer_name, &o))
        }
        PcrVersion::V1beta1 => {
            let api: Api<v1beta1::PodCertificateRequest> = Api::namespaced(client.clone(), ns);
            api.get_opt(&name)
                .await?
                .and_then(|o| seen_v1beta1(key.signer, signer_name, &o))
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cond(t: &str) -> Condition {
        Condition {
            type_: t.into(),
            status: "True".into(),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }
    }

    #[test]
    fn a_pcr_waits_for_the_signer_until_one_terminal_condition_or_a_chain() {
        assert_eq!(phase_of(&[], None), Phase::Approved);
        assert_eq!(phase_of(&[], Some("")), Phase::Approved);
        assert_eq!(phase_of(&[cond("Issued")], None), Phase::Issued);
        assert_eq!(phase_of(&[], Some("-----BEGIN")), Phase::Issued);
        assert_eq!(phase_of(&[cond("Denied")], None), Phase::Denied);
        assert_eq!(phase_of(&[cond("Failed")], None), Phase::Failed);
    }

    fn pcr(
        signer: &str,
        status: Option<v1::PodCertificateRequestStatus>,
    ) -> v1::PodCertificateRequest {
        v1::PodCertificateRequest {
            metadata: ObjectMeta {
                name: Some("req-1".into()),
                namespace: Some("team-a".into()),
                uid: Some("u1".into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: v1::PodCertificateRequestSpec {
                signer_name: signer.into(),
                pod_name: "web-0".into(),
                pod_uid: "p1".into(),
                service_account_name: "web".into(),
                service_account_uid: "s1".into(),
                node_name: "node-1".into(),
                node_uid: "n1".into(),
                max_expiration_seconds: Some(86400),
                stub_pkc_s10_request: k8s_openapi::ByteString(vec![0x30, 0x00]),
                unverified_user_annotations: None,
            },
            status,
        }
    }

    #[test]
    fn a_waiting_pcr_keeps_its_request_and_a_settled_one_its_chain_only() {
        let s = seen_v1(3, "example.com/mtls", &pcr("example.com/mtls", None)).unwrap();
        assert_eq!(s.key.signer, 3);
        assert_eq!(s.key.namespace.as_deref(), Some("team-a"));
        assert_eq!(s.phase, Phase::Approved);
        let w = s.work.unwrap();
        assert_eq!(w.requester, "system:serviceaccount:team-a:web");
        let Request::Pod(p) = &w.request else {
            panic!("not a pod request")
        };
        assert_eq!((p.pod_uid.as_str(), p.node_name.as_str()), ("p1", "node-1"));
        assert_eq!(p.stub_pkcs10_request, vec![0x30, 0x00]);
        assert!(seen_v1(0, "example.com/other", &pcr("example.com/mtls", None)).is_none());
        let issued = seen_v1(
            0,
            "example.com/mtls",
            &pcr(
                "example.com/mtls",
                Some(v1::PodCertificateRequestStatus {
                    conditions: Some(vec![cond("Issued")]),
                    certificate_chain: Some("PEM".into()),
                    ..Default::default()
                }),
            ),
        )
        .unwrap();
        assert_eq!(issued.phase, Phase::Issued);
        assert!(issued.work.is_none());
        assert_eq!(issued.certificate.as_deref(), Some(&b"PEM"[..]));
    }

    #[test]
    fn a_v1beta1_pcr_keeps_its_legacy_key_and_a_keyless_one_is_marked() {
        let v1 = pcr("example.com/mtls", None);
        let beta = |stub: Vec<u8>, pkix: Option<Vec<u8>>| v1beta1::PodCertificateRequest {
            metadata: v1.metadata.clone(),
            spec: v1beta1::PodCertificateRequestSpec {
                signer_name: v1.spec.signer_name.clone(),
                pod_name: v1.spec.pod_name.clone(),
                pod_uid: v1.spec.pod_uid.clone(),
                service_account_name: v1.spec.service_account_name.clone(),
                service_account_uid: v1.spec.service_account_uid.clone(),
                node_name: v1.spec.node_name.clone(),
                node_uid: v1.spec.node_uid.clone(),
                max_expiration_seconds: None,
                stub_pkc_s10_request: k8s_openapi::ByteString(stub),
                pkix_public_key: pkix.clone().map(k8s_openapi::ByteString),
                proof_of_possession: pkix.map(|_| k8s_openapi::ByteString(vec![7])),
                unverified_user_annotations: None,
            },
            status: None,
        };
        let fields = |p: &v1beta1::PodCertificateRequest| {
            let Request::Pod(f) = seen_v1beta1(0, "example.com/mtls", p)
                .unwrap()
                .work
                .unwrap()
                .request
            else {
                panic!("not a pod request")
            };
            f
        };
        let legacy = fields(&beta(Vec::new(), Some(vec![0x30, 0x01])));
        assert_eq!(legacy.pkix_public_key.as_deref(), Some(&[0x30, 0x01][..]));
        assert_eq!(legacy.proof_of_possession.as_deref(), Some(&[7][..]));
        assert!(!legacy.lacks_key());
        assert!(!fields(&beta(vec![0x30], None)).lacks_key());
        // Through v1 a legacy request shows neither: read again through v1beta1.
        assert!(fields(&beta(Vec::new(), None)).lacks_key());
        assert!(
            fields(&beta(Vec::new(), Some(Vec::new()))).lacks_key(),
            "empty bytes are no key"
        );
    }
}
