//! PodCertificateRequests as a kubelet makes them, for the signer's tests: the Node, ServiceAccount and Pod
//! a request names (created as admin), keys and stub requests made by the openssl CLI, and requests
//! created as the node (`Env::node`) through v1 or v1beta1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::certificates::{v1, v1beta1};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;

use super::{kube_support, Env};

pub const NS: &str = "pcr-team";

/// Settings YAML (`settings_yaml`) with `pod_certificates` (one line, indented as a key of the signer)
/// added to the signer.
pub fn with_pod_certificates(settings_yaml: &str, pod_certificates: &str) -> String {
    let (head, tail) = settings_yaml.split_once("controller:").unwrap();
    format!("{head}{pod_certificates}controller:{tail}")
}
pub const NODE: &str = "node-1";
pub const POD: &str = "web-0";
pub const SERVICE_ACCOUNT: &str = "web";

/// The UIDs the server gave the objects a request names.
pub struct Fixture {
    pub node_uid: String,
    pub pod_uid: String,
    pub service_account_uid: String,
}

/// Creates (as admin) namespace `NS`, Node `NODE`, ServiceAccount `SERVICE_ACCOUNT` and Pod `POD` bound to
/// the node, mounting one `podCertificate` volume source per signer (NodeRestriction lets the node ask
/// only for signers its pod mounts).
pub async fn fixture(env: &Env, signers: &[&str]) -> Fixture {
    let admin = &env.admin;
    let sources: Vec<_> = signers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"podCertificate": {"signerName": s, "keyType": "ECDSAP256",
                                      "credentialBundlePath": format!("bundle-{i}.pem")}})
        })
        .collect();
    for obj in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": SERVICE_ACCOUNT, "namespace": NS}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD, "namespace": NS},
               "spec": {"nodeName": NODE, "serviceAccountName": SERVICE_ACCOUNT,
                        "containers": [{"name": "app", "image": "registry.example/app:1",
                                        "volumeMounts": [{"name": "certs", "mountPath": "/var/run/certs"}]}],
                        "volumes": [{"name": "certs", "projected": {"sources": sources}}]}}),
    ] {
        kube_support::apply(admin, obj).await;
    }
    let node = Api::<Node>::all(admin.clone()).get(NODE).await.unwrap();
    let sa = Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .get(SERVICE_ACCOUNT)
        .await
        .unwrap();
    let pod = Api::<Pod>::namespaced(admin.clone(), NS)
        .get(POD)
        .await
        .unwrap();
    Fixture {
        node_uid: node.metadata.uid.unwrap(),
        pod_uid: pod.metadata.uid.unwrap(),
        service_account_uid: sa.metadata.uid.unwrap(),
    }
}

pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub const P256: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
pub const P384: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"];

/// A kubelet's private key (openssl `genpkey` arguments), PEM in `dir/<name>.pem`.
pub fn key(dir: &Path, name: &str, genpkey: &[&str]) -> PathBuf {
    let path = dir.join(format!("{name}.pem"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend(["-out", path.to_str().unwrap()]);
    openssl(&args);
    path
}

/// The stub request a 1.36+ kubelet sends: PKCS#10, DER, empty subject, no attributes.
pub fn stub_request(key: &Path) -> Vec<u8> {
    openssl(&[
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        "/",
        "-outform",
        "DER",
    ])
}

/// What a 1.35 kubelet sends instead: the DER SubjectPublicKeyInfo and, for an ECDSA key, the proof of
/// possession (ASN.1 ECDSA over SHA-256 of the pod UID's bytes).
pub fn legacy_key(dir: &Path, key: &Path, pod_uid: &str) -> (Vec<u8>, Vec<u8>) {
    let k = key.to_str().unwrap();
    let spki = openssl(&["pkey", "-in", k, "-pubout", "-outform", "DER"]);
    let uid = dir.join("pod-uid");
    std::fs::write(&uid, pod_uid).unwrap();
    let pop = openssl(&["dgst", "-sha256", "-sign", k, uid.to_str().unwrap()]);
    (spki, pop)
}

/// A v1 spec for the fixture's pod, `signer` and stub request (empty: none).
pub fn spec_v1(f: &Fixture, signer: &str, stub: Vec<u8>) -> v1::PodCertificateRequestSpec {
    v1::PodCertificateRequestSpec {
        signer_name: signer.into(),
        pod_name: POD.into(),
        pod_uid: f.pod_uid.clone(),
        service_account_name: SERVICE_ACCOUNT.into(),
        service_account_uid: f.service_account_uid.clone(),
        node_name: NODE.into(),
        node_uid: f.node_uid.clone(),
        max_expiration_seconds: Some(86400),
        stub_pkc_s10_request: ByteString(stub),
        unverified_user_annotations: None,
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        ..Default::default()
    }
}

/// Creates a v1 PCR as `node`.
pub async fn create_v1(node: &kube::Client, name: &str, spec: v1::PodCertificateRequestSpec) {
    Api::<v1::PodCertificateRequest>::namespaced(node.clone(), NS)
        .create(
            &PostParams::default(),
            &v1::PodCertificateRequest {
                metadata: meta(name),
                spec,
                status: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("the node creates {name}: {e}"));
}

/// Creates a v1beta1 PCR as `node`: the v1 spec plus, for a 1.35 kubelet, the legacy key fields.
pub async fn create_v1beta1(
    node: &kube::Client,
    name: &str,
    s: v1::PodCertificateRequestSpec,
    legacy: Option<(Vec<u8>, Vec<u8>)>,
) {
    let (pkix, pop) = legacy.unzip();
    let spec = v1beta1::PodCertificateRequestSpec {
        signer_name: s.signer_name,
        pod_name: s.pod_name,
        pod_uid: s.pod_uid,
        service_account_name: s.service_account_name,
        service_account_uid: s.service_account_uid,
        node_name: s.node_name,
        node_uid: s.node_uid,
        max_expiration_seconds: s.max_expiration_seconds,
        stub_pkc_s10_request: s.stub_pkc_s10_request,
        unverified_user_annotations: s.unverified_user_annotations,
        pkix_public_key: pkix.map(ByteString),
        proof_of_possession: pop.map(ByteString),
    };
    Api::<v1beta1::PodCertificateRequest>::namespaced(node.clone(), NS)
        .create(
            &PostParams::default(),
            &v1beta1::PodCertificateRequest {
                metadata: meta(name),
                spec,
                status: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("the node creates {name} through v1beta1: {e}"));
}

/// Waits until PCR `name` has a terminal condition (read through v1: both versions share one storage).
pub async fn wait_terminal(env: &Env, name: &str) -> v1::PodCertificateRequest {
    let api = Api::<v1::PodCertificateRequest>::namespaced(env.admin.clone(), NS);
    for _ in 0..600 {
        let pcr = api.get(name).await.unwrap();
        if pcr
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| !c.is_empty())
        {
            return pcr;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} got no terminal condition");
}
