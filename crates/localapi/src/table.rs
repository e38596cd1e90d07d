//! `meta.k8s.io/v1` Table output (what `kubectl get` asks for), with the CSR printer columns of
//! pkg/printers/internalversion and a Name/Age default for the other resources.

use serde_json::{json, Value};

use super::csr::condition_summary;
use super::resources::{Behaviour, ResourceDef};

/// apimachinery duration.HumanDuration.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, dy)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(obj: &Value) -> String {
    let Some(ts) = obj["metadata"]["creationTimestamp"].as_str() else {
        return "<unknown>".into();
    };
    match chrono::DateTime::parse_from_rfc3339(ts) {
        Ok(t) => human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

const PCR_SIGNER_NAME_DESC: &str = "signerName indicates the requested signer.\n\nAll signer names beginning with `kubernetes.io` are reserved for use by the Kubernetes project.  There is currently one well-known signer documented by the Kubernetes project, `kubernetes.io/kube-apiserver-client-pod`, which will issue client certificates understood by kube-apiserver.  It is currently unimplemented.";
const PCR_ANNOTATIONS_DESC: &str = "unverifiedUserAnnotations allow pod authors to pass additional information to the signer implementation.  Kubernetes does not restrict or validate this metadata in any way.\n\nEntries are subject to the same validation as object metadata annotations, with the addition that all keys must be domain-prefixed. No restrictions are placed on values, except an overall size limitation on the entire field.\n\nSigners should document the keys and values they support.  Signers should deny requests that contain keys they do not recognize.";

/// printPodCertificateRequest's State: the last Issued/Denied/Failed condition, else Pending.
fn pcr_state(o: &Value) -> &'static str {
    let mut state = "Pending";
    for c in o["status"]["conditions"].as_array().into_iter().flatten() {
        match c["type"].as_str() {
            Some("Issued") => state = "Issued",
            Some("Denied") => state = "Denied",
            Some("Failed") => state = "Failed",
            _ => {}
        }
    }
    state
}

const CSR_SIGNER_NAME_DESC: &str = "Requested signer for the request. It is a qualified name in the form: `scope-hostname.io/name`. If empty, it will be defaulted:\n 1. If it's a kubelet client certificate, it is assigned\n    \"kubernetes.io/kube-apiserver-client-kubelet\".\n 2. If it's a kubelet serving certificate, it is assigned\n    \"kubernetes.io/kubelet-serving\".\n 3. Otherwise, it is assigned \"kubernetes.io/legacy-unknown\".\nDistribution of trust for signers happens out of band. You can select on this field using `spec.signerName`.";
const CSR_EXPIRATION_DESC: &str = "expirationSeconds is the requested duration of validity of the issued certificate. The certificate signer may issue a certificate with a different validity duration so a client must check the delta between the notBefore and and notAfter fields in the issued certificate to determine the actual duration.\n\nThe v1.22+ in-tree implementations of the well-known Kubernetes signers will honor this field as long as the requested duration is not greater than the maximum duration they will honor per the --cluster-signing-duration CLI flag to the Kubernetes controller manager.\n\nCertificate signers may not honor this field for various reasons:\n\n  1. Old signer that is unaware of the field (such as the in-tree\n     implementations prior to v1.22)\n  2. Signer whose configured maximum is shorter than the requested duration\n  3. Signer whose configured minimum is longer than the requested duration\n\nThe minimum valid value for expirationSeconds is 600, i.e. 10 minutes.";

fn col(name: &str, ty: &str, format: &str, description: &str) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": 0})
}

fn row_object(obj: &Value, include: Option<&str>) -> Value {
    match include.unwrap_or("PartialObjectMetadata") {
        "None" => Value::Null,
        "Object" => obj.clone(),
        _ => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"].clone()})
        }
    }
}

pub fn table(
    def: &ResourceDef,
    _version: &str,
    objs: &[Value],
    rv: &str,
    include: Option<&str>,
) -> Value {
    let name_desc = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
    let age_desc = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
    let (columns, rows): (Vec<Value>, Vec<Value>) = match def.behaviour {
        Behaviour::Csr => (
            vec![
                col("Name", "string", "name", name_desc),
                col("Age", "string", "", age_desc),
                // kube-apiserver's descriptions (printers: swagger docs of the spec fields; the
                // Requestor column reuses the description of spec.request).
                col("SignerName", "string", "", CSR_SIGNER_NAME_DESC),
                col("Requestor", "string", "", "Base64-encoded PKCS#10 CSR data"),
                col("RequestedDuration", "string", "", CSR_EXPIRATION_DESC),
                col("Condition", "string", "", "Conditions applied to the request, such as approval or denial."),
            ],
            objs.iter()
                .map(|o| {
                    let dur = o["spec"]["expirationSeconds"]
                        .as_i64()
                        .map(human_duration)
                        .unwrap_or_else(|| "<none>".into());
                    json!({"cells": [
                        o["metadata"]["name"], age(o), o["spec"]["signerName"].as_str().unwrap_or(""),
                        o["spec"]["username"].as_str().unwrap_or(""), dur, condition_summary(o)
                    ], "object": row_object(o, include)})
                })
                .collect(),
        ),
        Behaviour::Pcr => (
            // printers.go; the server prints wide, so the annotations are the seventh cell.
            vec![
                col("Name", "string", "name", name_desc),
                col("PodName", "string", "", "podName is the name of the pod into which the certificate will be mounted."),
                col("ServiceAccountName", "string", "", "serviceAccountName is the name of the service account the pod is running as."),
                col("NodeName", "string", "", "nodeName is the name of the node the pod is assigned to."),
                col("SignerName", "string", "", PCR_SIGNER_NAME_DESC),
                col("State", "string", "", "Is the request Pending, Issued, Denied, or Failed?"),
                col("UnverifiedUserAnnotations", "string", "", PCR_ANNOTATIONS_DESC),
            ],
            objs.iter()
                .map(|o| {
                    let spec = |f: &str| o["spec"][f].as_str().unwrap_or("").to_string();
                    // labels.FormatLabels: sorted k=v pairs, or <none>.
                    let annotations = o["spec"]["unverifiedUserAnnotations"]
                        .as_object()
                        .filter(|m| !m.is_empty())
                        .map_or_else(
                            || "<none>".to_string(),
                            |m| {
                                let mut kv: Vec<String> = m
                                    .iter()
                                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                                    .collect();
                                kv.sort();
                                kv.join(",")
                            },
                        );
                    json!({"cells": [
                        o["metadata"]["name"], spec("podName"), spec("serviceAccountName"),
                        spec("nodeName"), spec("signerName"), pcr_state(o), annotations
                    ], "object": row_object(o, include)})
                })
                .collect(),
        ),
        Behaviour::Namespace => (
            vec![
                col("Name", "string", "name", name_desc),
                col("Status", "string", "", "The status of the namespace"),
                col("Age", "string", "", age_desc),
            ],
            objs.iter()
                .map(|o| json!({"cells": [o["metadata"]["name"], o["status"]["phase"].as_str().unwrap_or(""), age(o)], "object": row_object(o, include)}))
                .collect(),
        ),
        _ => (
            vec![col("Name", "string", "name", name_desc), col("Age", "string", "", age_desc)],
            objs.iter()
                .map(|o| json!({"cells": [o["metadata"]["name"], age(o)], "object": row_object(o, include)}))
                .collect(),
        ),
    };
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
           "columnDefinitions": columns, "rows": rows})
}
