//! The other resources the signer uses: Leases, core and events.k8s.io Events, ConfigMaps,
//! Namespaces, and ClusterTrustBundles (v1beta1 + v1, signer-linked naming, attest) — plus
//! discovery as kube-rs sees it.
#![allow(clippy::unwrap_used)]

mod local_api_common;
mod support;

use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle as ClusterTrustBundleV1beta1;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use local_api_common::*;
use serde_json::json;

fn lease(name: &str, holder: &str) -> Lease {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}})).unwrap()
}

#[tokio::test]
async fn leases_create_update_conflict() {
    let api = plain().await;
    let leases: Api<Lease> = Api::namespaced(
        api.client(csr_signer::dev::SIGNER_USER).unwrap(),
        "csr-signer",
    );
    let l = leases
        .create(&PostParams::default(), &lease("csr-signer", "pod-a"))
        .await
        .unwrap();
    let mut mine = l.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    let updated = leases
        .replace("csr-signer", &PostParams::default(), &mine)
        .await
        .unwrap();
    assert_eq!(
        updated.spec.unwrap().holder_identity.as_deref(),
        Some("pod-b")
    );
    // The stale copy loses.
    let (code, reason, msg) = api_err(
        leases
            .replace("csr-signer", &PostParams::default(), &l)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(msg, "Operation cannot be fulfilled on leases.coordination.k8s.io \"csr-signer\": the object has been modified; please apply your changes to the latest version and try again");
    // Leases do not allow unconditional updates.
    let mut no_rv = mine.clone();
    no_rv.metadata.resource_version = None;
    let (code, _, msg) = api_err(
        leases
            .replace("csr-signer", &PostParams::default(), &no_rv)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    // The generic store's text (genericregistry.Store.Update): the resource where the kind
    // belongs, the uint64 0; tests/local_api_pcr.rs compares it with the real apiserver.
    assert_eq!(msg, "leases.coordination.k8s.io \"csr-signer\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update");
    // Outside its namespace the signer is forbidden.
    let other: Api<Lease> =
        Api::namespaced(api.client(csr_signer::dev::SIGNER_USER).unwrap(), "default");
    let (code, _, msg) = api_err(
        other
            .create(&PostParams::default(), &lease("x", "y"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert_eq!(msg, "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:csr-signer:csr-signer\" cannot create resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"default\"");
}

#[tokio::test]
async fn lease_patches() {
    let api = plain().await;
    let leases: Api<Lease> = Api::namespaced(
        api.client(csr_signer::dev::SIGNER_USER).unwrap(),
        "csr-signer",
    );
    leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .unwrap();
    // Created by another manager: taking its fields over needs force, as on a real server.
    let p = PatchParams::apply("csr-signer").force();
    let got = leases
        .patch("l", &p, &Patch::Apply(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "b"}})))
        .await
        .unwrap();
    assert_eq!(
        got.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("b")
    );
    assert_eq!(
        got.spec.as_ref().unwrap().lease_duration_seconds,
        Some(15),
        "apply merges"
    );
    let got = leases
        .patch(
            "l",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"holderIdentity": null}})),
        )
        .await
        .unwrap();
    assert!(got.spec.unwrap().holder_identity.is_none());
    // Apply creates a missing object.
    let created = leases
        .patch("new", &p, &Patch::Apply(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "new"}, "spec": {"holderIdentity": "c"}})))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
}

#[tokio::test]
async fn events_core_and_events_k8s_io() {
    let api = plain().await;
    let client = api.client(csr_signer::dev::SIGNER_USER).unwrap();
    let core: Api<Event> = Api::namespaced(client.clone(), "default");
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "csr-a."},
        "involvedObject": {"kind": "CertificateSigningRequest", "name": "csr-a", "apiVersion": "certificates.k8s.io/v1"},
        "reason": "Issued", "message": "issued", "type": "Normal"
    })).unwrap();
    let created = core.create(&PostParams::default(), &ev).await.unwrap();
    assert!(created.metadata.name.unwrap().starts_with("csr-a."));
    let admin: Api<Event> = Api::namespaced(api.client("admin").unwrap(), "default");
    let got = admin
        .list(&ListParams::default().fields("involvedObject.name=csr-a,reason=Issued"))
        .await
        .unwrap();
    assert_eq!(got.items.len(), 1);
    let new: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, "default");
    let e2: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "csr-a.1"}, "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "example.com/csr-signer", "reportingInstance": "pod-a", "action": "Sign",
        "reason": "Issued", "regarding": {"kind": "CertificateSigningRequest", "name": "csr-a"}, "type": "Normal"
    })).unwrap();
    new.create(&PostParams::default(), &e2).await.unwrap();
    // A namespace that does not exist.
    let missing: Api<Event> = Api::namespaced(api.client("admin").unwrap(), "nope");
    let (code, _, msg) = api_err(
        missing
            .create(&PostParams::default(), &ev)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);
    assert_eq!(msg, "namespaces \"nope\" not found");
}

#[tokio::test]
async fn configmaps_and_namespaces() {
    let api = plain().await;
    let client = api.client("admin").unwrap();
    let ns: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = ns
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert!(names.contains(&"default".to_string()) && names.contains(&"csr-signer".to_string()));
    let created = ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-c"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    let cms: Api<ConfigMap> = Api::namespaced(client, "team-c");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "1"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let got = cms
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"b": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(got.data.unwrap().len(), 2);
    let bad: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "Bad_Name"}})).unwrap();
    let (code, _, msg) = api_err(cms.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(code, 422);
    assert!(msg.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{msg}");
}

fn ctb(name: &str, signer: Option<&str>, bundle: &str) -> serde_json::Value {
    let mut spec = json!({"trustBundle": bundle});
    if let Some(s) = signer {
        spec["signerName"] = json!(s);
    }
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "ClusterTrustBundle", "metadata": {"name": name, "labels": {"example.com/ctb": "live"}}, "spec": spec})
}

const CTB_PATH: &str = "/apis/certificates.k8s.io/v1/clustertrustbundles";

#[tokio::test]
async fn ctb_signer_linked_naming_and_attest() {
    let api = plain().await;
    let ca = String::from_utf8(cert_pem("root", true)).unwrap();
    let signer = csr_signer::dev::SIGNER_USER;
    let (code, body) = post_json(
        &api,
        signer,
        CTB_PATH,
        &ctb("example.com:mtls:live", Some("example.com/mtls"), &ca),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = post_json(
        &api,
        signer,
        CTB_PATH,
        &ctb("live", Some("example.com/mtls"), &ca),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(body["message"], "ClusterTrustBundle.certificates.k8s.io \"live\" is invalid: metadata.name: Invalid value: \"live\": ClusterTrustBundle for signerName example.com/mtls must be named with prefix example.com:mtls:");
    let (code, body) = post_json(&api, signer, CTB_PATH, &ctb("a:b", None, &ca)).await;
    assert_eq!(code, 422);
    assert_eq!(body["message"], "ClusterTrustBundle.certificates.k8s.io \"a:b\" is invalid: metadata.name: Invalid value: \"a:b\": ClusterTrustBundle without signer name must not have \":\" in its name");
    // attest is checked against the signer: the signer may not publish for another signer.
    let (code, body) = post_json(
        &api,
        signer,
        CTB_PATH,
        &ctb("example.com:other:live", Some("example.com/other"), &ca),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(body["message"], "clustertrustbundles.certificates.k8s.io \"example.com:other:live\" is forbidden: user not permitted to attest for signerName \"example.com/other\"");
    // Both served versions see the same object.
    let client = api.client("admin").unwrap();
    let v1: Api<ClusterTrustBundle> = Api::all(client.clone());
    let beta: Api<ClusterTrustBundleV1beta1> = Api::all(client);
    let lp = ListParams::default()
        .fields("spec.signerName=example.com/mtls")
        .labels("example.com/ctb=live");
    assert_eq!(v1.list(&lp).await.unwrap().items.len(), 1);
    let b = beta.get("example.com:mtls:live").await.unwrap();
    assert_eq!(b.spec.trust_bundle, ca);
    // signerName is immutable.
    let (code, body) = patch_json(
        &api,
        "admin",
        &format!("{CTB_PATH}/example.com:mtls:live"),
        "application/merge-patch+json",
        &json!({"spec": {"signerName": "example.com/x"}}),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("spec.signerName: Invalid value: \"example.com/x\": field is immutable"),
        "{body}"
    );
}

#[tokio::test]
async fn ctb_trust_bundle_validation() {
    let api = plain().await;
    let leaf = String::from_utf8(cert_pem("leaf", false)).unwrap();
    let (code, body) = post_json(&api, "admin", CTB_PATH, &ctb("leafy", None, &leaf)).await;
    assert_eq!(code, 422);
    assert_eq!(body["message"], "ClusterTrustBundle.certificates.k8s.io \"leafy\" is invalid: spec.trustBundle: Invalid value: \"<value omitted>\": entry 0 does not have the CA bit set");
    let (code, body) = post_json(&api, "admin", CTB_PATH, &ctb("empty", None, "")).await;
    assert_eq!(code, 422);
    assert_eq!(body["message"], "ClusterTrustBundle.certificates.k8s.io \"empty\" is invalid: spec.trustBundle: Invalid value: \"<value omitted>\": at least one trust anchor must be provided");
    let ca = String::from_utf8(cert_pem("root", true)).unwrap();
    let (code, body) = post_json(
        &api,
        "admin",
        CTB_PATH,
        &ctb("dups", None, &format!("{ca}{ca}")),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(body["message"], "ClusterTrustBundle.certificates.k8s.io \"dups\" is invalid: spec.trustBundle: Invalid value: \"<value omitted>\": duplicate trust anchor (indices [0 1])");
}

#[tokio::test]
async fn discovery_lists_served_resources() {
    let api = plain().await;
    let d = Discovery::new(api.client("admin").unwrap())
        .run()
        .await
        .unwrap();
    let certs = d.get("certificates.k8s.io").expect("group served");
    let kinds: Vec<String> = certs
        .recommended_resources()
        .into_iter()
        .map(|(r, _)| r.kind)
        .collect();
    assert!(
        kinds.contains(&"CertificateSigningRequest".to_string()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"ClusterTrustBundle".to_string()),
        "{kinds:?}"
    );
    assert!(d.get("coordination.k8s.io").is_some());
    assert!(d.get("events.k8s.io").is_some());
    let v = api
        .client("admin")
        .unwrap()
        .apiserver_version()
        .await
        .unwrap();
    assert_eq!(v.major, "1");
}

#[tokio::test]
async fn https_with_kubeconfig_ca() {
    let api = csr_signer::dev::start(csr_signer::dev::LocalApiConfig::default())
        .await
        .unwrap();
    let pem = api.ca_pem().expect("TLS has a CA");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    create(&api, "developer", "tls").await;
    let yaml = api.kubeconfig_yaml(&["developer"]).unwrap();
    let kc: kube::config::Kubeconfig = serde_yaml::from_str(&yaml).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let c: Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> =
        Api::all(kube::Client::try_from(cfg).unwrap());
    assert_eq!(
        c.get("tls").await.unwrap().spec.username.as_deref(),
        Some("developer")
    );
    api.shutdown().await;
}

#[tokio::test]
async fn kube_runtime_event_recorder_creates_then_patches_series() {
    use kube::runtime::events::{Event as REvent, EventType, Recorder, Reporter};
    use kube::Resource;
    let api = plain().await;
    let csr = create(&api, "developer", "evented").await;
    let reporter = Reporter {
        controller: "csr-signer".into(),
        instance: Some("pod-a".into()),
    };
    let recorder = Recorder::new(api.client(csr_signer::dev::SIGNER_USER).unwrap(), reporter);
    let ev = REvent {
        type_: EventType::Normal,
        reason: "Issued".into(),
        note: Some("certificate issued".into()),
        action: "Sign".into(),
        secondary: None,
    };
    let reference = csr.object_ref(&());
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(api.client("admin").unwrap(), "default");
    let list = events
        .list(&ListParams::default().fields("regarding.name=evented"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
}

#[tokio::test]
async fn server_side_apply_ownership_and_conflicts() {
    let api = plain().await;
    let leases: Api<Lease> = Api::namespaced(api.client("admin").unwrap(), "csr-signer");
    let body = |holder: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "ssa"},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}})
    };
    leases
        .patch(
            "ssa",
            &PatchParams::apply("pod-a"),
            &Patch::Apply(body("pod-a")),
        )
        .await
        .unwrap();
    // Another manager changing an owned field conflicts.
    let err = leases
        .patch(
            "ssa",
            &PatchParams::apply("pod-b"),
            &Patch::Apply(body("pod-b")),
        )
        .await
        .unwrap_err();
    let (code, reason, msg) = api_err(err);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        msg,
        "Apply failed with 1 conflict: conflict with \"pod-a\": .spec.holderIdentity"
    );
    // Applying the same value is not a conflict; force takes ownership.
    leases
        .patch(
            "ssa",
            &PatchParams::apply("pod-b"),
            &Patch::Apply(body("pod-a")),
        )
        .await
        .unwrap();
    let got = leases
        .patch(
            "ssa",
            &PatchParams::apply("pod-b").force(),
            &Patch::Apply(body("pod-b")),
        )
        .await
        .unwrap();
    assert_eq!(
        got.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("pod-b")
    );
    let managers: Vec<String> = got
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"pod-b".to_string()), "{managers:?}");
    // A field the manager stops applying, owned by nobody else, is removed; shared ones stay.
    let with_transitions = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "ssa"},
                                  "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 15, "leaseTransitions": 3}});
    let got = leases
        .patch(
            "ssa",
            &PatchParams::apply("pod-b"),
            &Patch::Apply(with_transitions),
        )
        .await
        .unwrap();
    assert_eq!(got.spec.unwrap().lease_transitions, Some(3));
    let got = leases
        .patch(
            "ssa",
            &PatchParams::apply("pod-b"),
            &Patch::Apply(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "ssa"},
                                  "spec": {"holderIdentity": "pod-b"}})),
        )
        .await
        .unwrap();
    let spec = got.spec.unwrap();
    assert!(
        spec.lease_transitions.is_none(),
        "only pod-b owned leaseTransitions"
    );
    assert_eq!(
        spec.lease_duration_seconds,
        Some(15),
        "pod-a still owns leaseDurationSeconds"
    );
    // A non-apply write takes fields over without conflict; a later apply by the old owner conflicts.
    leases
        .patch(
            "ssa",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"holderIdentity": "manual"}})),
        )
        .await
        .unwrap();
    let (code, _, msg) = api_err(
        leases
            .patch(
                "ssa",
                &PatchParams::apply("pod-b"),
                &Patch::Apply(body("pod-b")),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);
    assert!(msg.contains("conflict with \"editor\""), "{msg}");
}

#[tokio::test]
async fn malformed_bodies_get_status_errors_not_dropped_connections() {
    let api = plain().await;
    create(&api, "developer", "m").await;
    let csr = format!("{CSR_PATH}/m");
    let ns = "/api/v1/namespaces";
    let cm = "/api/v1/namespaces/default/configmaps";
    let cases: Vec<(&str, String, &str, Vec<u8>)> = vec![
        (
            "POST",
            ns.to_string(),
            "application/json",
            br#"{"metadata": "x"}"#.to_vec(),
        ),
        (
            "POST",
            ns.to_string(),
            "application/json",
            br#"{"metadata": {"name": "n", "labels": "x"}}"#.to_vec(),
        ),
        (
            "POST",
            cm.to_string(),
            "application/json",
            br#"[1, 2]"#.to_vec(),
        ),
        (
            "POST",
            cm.to_string(),
            "application/json",
            b"{not json".to_vec(),
        ),
        (
            "POST",
            CSR_PATH.to_string(),
            "application/json",
            br#"{"metadata": {"name": "z"}, "spec": "x"}"#.to_vec(),
        ),
        (
            "POST",
            CSR_PATH.to_string(),
            "application/json",
            br#"{"metadata": {"name": "z"}, "status": {"conditions": [1]}}"#.to_vec(),
        ),
        (
            "POST",
            CSR_PATH.to_string(),
            "application/vnd.kubernetes.protobuf",
            b"k8s\x00\xff\xff".to_vec(),
        ),
        (
            "PATCH",
            csr.clone(),
            "application/merge-patch+json",
            br#"{"metadata": 5}"#.to_vec(),
        ),
        (
            "PATCH",
            csr.clone(),
            "application/json-patch+json",
            br#"[{"op": "replace", "path": "/metadata", "value": "s"}]"#.to_vec(),
        ),
        (
            "PATCH",
            csr.clone(),
            "application/json-patch+json",
            br#"[{"op": "replace", "path": "", "value": 3}]"#.to_vec(),
        ),
        (
            "PATCH",
            csr.clone(),
            "application/strategic-merge-patch+json",
            br#"{"metadata": {"finalizers": "x"}}"#.to_vec(),
        ),
        (
            "PATCH",
            format!("{cm}/new?fieldManager=t"),
            "application/apply-patch+yaml",
            b"hello".to_vec(),
        ),
        (
            "PATCH",
            format!("{cm}/new?fieldManager=t"),
            "application/apply-patch+yaml",
            b"metadata: [1]".to_vec(),
        ),
        (
            "PATCH",
            format!("{csr}/status?fieldManager=t"),
            "application/apply-patch+yaml",
            b"status: {conditions: x}".to_vec(),
        ),
        (
            "PUT",
            csr.clone(),
            "application/json",
            br#"{"metadata": {"name": "m", "labels": [1]}}"#.to_vec(),
        ),
        (
            "PUT",
            format!("{csr}/approval"),
            "application/json",
            br#"{"metadata": {"name": "m"}, "status": {"conditions": [{"type": 1}]}}"#.to_vec(),
        ),
        ("DELETE", csr.clone(), "application/json", b"{bad".to_vec()),
        ("PATCH", csr.clone(), "text/plain", b"x".to_vec()),
    ];
    for (method, path, ct, body) in cases {
        let (code, v) = raw(&api, Some("admin"), method, &path, Some((ct, body.clone()))).await;
        assert!(
            (400..500).contains(&code),
            "{method} {path} {}: {code} {v}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(v["kind"], "Status", "{method} {path}: {v}");
    }
    // The server is still healthy and the object unchanged.
    let (code, v) = get_json(&api, "admin", &csr).await;
    assert_eq!(code, 200);
    assert!(v["metadata"]["labels"].is_null());
}

#[tokio::test]
async fn self_subject_access_review_answers_from_rbac() {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let api = plain().await;
    let ask = |user: &'static str,
               verb: &'static str,
               resource: &'static str,
               sub: Option<&'static str>,
               name: Option<&'static str>| {
        let client = api.client(user).unwrap();
        async move {
            let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
            let r = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some(verb.into()),
                        group: Some("certificates.k8s.io".into()),
                        resource: Some(resource.into()),
                        subresource: sub.map(Into::into),
                        name: name.map(Into::into),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            reviews
                .create(&PostParams::default(), &r)
                .await
                .unwrap()
                .status
                .unwrap()
                .allowed
        }
    };
    assert!(
        ask(
            "developer",
            "create",
            "certificatesigningrequests",
            None,
            None
        )
        .await
    );
    assert!(
        !ask(
            "developer",
            "update",
            "certificatesigningrequests",
            Some("approval"),
            None
        )
        .await
    );
    assert!(
        ask(
            "approver",
            "approve",
            "signers",
            None,
            Some("example.com/*")
        )
        .await
    );
    assert!(
        !ask(
            "approver",
            "approve",
            "signers",
            None,
            Some("example.com/mtls")
        )
        .await,
        "resourceNames are exact"
    );
    assert!(
        ask(
            csr_signer::dev::SIGNER_USER,
            "sign",
            "signers",
            None,
            Some("example.com/mtls")
        )
        .await
    );
    assert!(ask("admin", "delete", "certificatesigningrequests", None, None).await);
}
