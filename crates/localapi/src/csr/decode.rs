//! What kube-apiserver's decoding does to a CSR body before any rule runs: Go's JSON type checks (400s),
//! re-encoding as the typed struct would, and strict field validation's unknown fields.

#[allow(unused_imports)]
use super::*;

/// Rejects bodies Go's JSON decoder would refuse (wrong types, bad base64) with a 400, before any
/// semantic validation, as kube-apiserver's decode step does.
pub fn check_types(obj: &Value) -> Result<(), ApiError> {
    // encoding/json's UnmarshalTypeError: "cannot unmarshal <JSON type> into Go struct field …".
    let bad_value = |v: &Value, field: &str, want: &str| {
        let got = match v {
            Value::String(_) => "string".to_string(),
            Value::Bool(_) => "bool".to_string(),
            Value::Array(_) => "array".to_string(),
            Value::Object(_) => "object".to_string(),
            Value::Number(n) if want.starts_with("int") || want.starts_with("uint") => {
                format!("number {n}")
            }
            Value::Number(_) => "number".to_string(),
            Value::Null => "null".to_string(),
        };
        Err(ApiError::bad_request(format!(
            "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: json: cannot unmarshal {got} into Go struct field {field} of type {want}"
        )))
    };
    let spec = &obj["spec"];
    if !spec.is_null() && !spec.is_object() {
        return bad_value(
            spec,
            "CertificateSigningRequest.spec",
            "v1.CertificateSigningRequestSpec",
        );
    }
    for f in ["request"] {
        match &spec[f] {
            Value::Null => {}
            Value::String(s) => {
                if B64.decode(s).is_err() {
                    return Err(ApiError::bad_request(format!(
                        "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: illegal base64 data in spec.{f}"
                    )));
                }
            }
            v => return bad_value(v, "CertificateSigningRequestSpec.spec.request", "[]uint8"),
        }
    }
    for f in ["signerName", "username", "uid"] {
        if !(spec[f].is_null() || spec[f].is_string()) {
            return bad_value(
                &spec[f],
                &format!("CertificateSigningRequestSpec.spec.{f}"),
                "string",
            );
        }
    }
    match &spec["expirationSeconds"] {
        Value::Null => {}
        v @ Value::Number(n) => {
            if n.as_i64().is_none_or(|x| i32::try_from(x).is_err()) {
                return bad_value(
                    v,
                    "CertificateSigningRequestSpec.spec.expirationSeconds",
                    "int32",
                );
            }
        }
        v => {
            return bad_value(
                v,
                "CertificateSigningRequestSpec.spec.expirationSeconds",
                "int32",
            )
        }
    }
    for (f, item) in [("usages", "v1.KeyUsage"), ("groups", "string")] {
        let field = format!("CertificateSigningRequestSpec.spec.{f}");
        match &spec[f] {
            Value::Null => {}
            Value::Array(a) => {
                if let Some(v) = a.iter().find(|v| !v.is_string()) {
                    return bad_value(v, &field, item);
                }
            }
            v => return bad_value(v, &field, &format!("[]{item}")),
        }
    }
    let status = &obj["status"];
    if !status.is_null() && !status.is_object() {
        return bad_value(
            status,
            "CertificateSigningRequest.status",
            "v1.CertificateSigningRequestStatus",
        );
    }
    match &status["certificate"] {
        Value::Null => {}
        Value::String(s) if B64.decode(s).is_ok() => {}
        Value::String(_) => {
            return Err(ApiError::bad_request(
                "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: illegal base64 data in status.certificate",
            ))
        }
        v => {
            return bad_value(
                v,
                "CertificateSigningRequestStatus.status.certificate",
                "[]uint8",
            )
        }
    }
    match &status["conditions"] {
        Value::Null => {}
        Value::Array(a) => {
            for c in a {
                if !c.is_object() {
                    return bad_value(
                        c,
                        "CertificateSigningRequestStatus.status.conditions",
                        "v1.CertificateSigningRequestCondition",
                    );
                }
                for f in [
                    "type",
                    "status",
                    "reason",
                    "message",
                    "lastUpdateTime",
                    "lastTransitionTime",
                ] {
                    if !(c[f].is_null() || c[f].is_string()) {
                        return bad_value(
                            &c[f],
                            &format!("CertificateSigningRequestCondition.status.conditions.{f}"),
                            "string",
                        );
                    }
                }
                for f in ["lastUpdateTime", "lastTransitionTime"] {
                    if let Some(t) = c[f].as_str() {
                        if chrono::DateTime::parse_from_rfc3339(t).is_err() {
                            return Err(ApiError::bad_request(format!(
                                "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: parsing time {} as \"2006-01-02T15:04:05Z07:00\": cannot parse",
                                quote(t)
                            )));
                        }
                    }
                }
            }
        }
        v => {
            return bad_value(
                v,
                "CertificateSigningRequestStatus.status.conditions",
                "[]v1.CertificateSigningRequestCondition",
            )
        }
    }
    Ok(())
}

/// Re-encodes spec and status the way Go would after decoding into the typed struct: unknown
/// fields dropped, empty optional fields omitted, `status` always present.
pub fn normalize(obj: &mut Value) {
    let spec = obj["spec"].clone();
    let mut s = Map::new();
    s.insert(
        "request".into(),
        spec["request"]
            .as_str()
            .map(|x| json!(x))
            .unwrap_or(Value::Null),
    );
    if let Some(x) = spec["signerName"].as_str() {
        s.insert("signerName".into(), json!(x));
    }
    if let Some(x) = spec["expirationSeconds"].as_i64() {
        s.insert("expirationSeconds".into(), json!(x));
    }
    for f in ["usages", "groups"] {
        if let Some(a) = spec[f].as_array() {
            if !a.is_empty() {
                s.insert(f.into(), Value::Array(a.clone()));
            }
        }
    }
    for f in ["username", "uid"] {
        if let Some(x) = spec[f].as_str() {
            if !x.is_empty() {
                s.insert(f.into(), json!(x));
            }
        }
    }
    if let Some(e) = spec["extra"].as_object() {
        if !e.is_empty() {
            s.insert("extra".into(), Value::Object(e.clone()));
        }
    }
    let mut st = Map::new();
    let conds: Vec<Value> = conditions(obj)
        .into_iter()
        .map(|c| {
            let mut m = Map::new();
            for f in [
                "type",
                "status",
                "reason",
                "message",
                "lastUpdateTime",
                "lastTransitionTime",
            ] {
                if let Some(x) = c[f].as_str() {
                    if !x.is_empty() {
                        m.insert(f.into(), json!(x));
                    }
                }
            }
            // type and status are not omitempty in Go.
            for f in ["type", "status"] {
                m.entry(f).or_insert(json!(""));
            }
            Value::Object(m)
        })
        .collect();
    if !conds.is_empty() {
        st.insert("conditions".into(), Value::Array(conds));
    }
    if let Some(c) = obj["status"]["certificate"].as_str() {
        if !c.is_empty() {
            st.insert("certificate".into(), json!(c));
        }
    }
    obj["spec"] = Value::Object(s);
    obj["status"] = Value::Object(st);
}

/// Fields Go's strict decoder would not recognise (`fieldValidation=Strict|Warn`).
pub fn unknown_fields(obj: &Value) -> Vec<String> {
    const TOP: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
    const META: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ];
    const SPEC: &[&str] = &[
        "request",
        "signerName",
        "expirationSeconds",
        "usages",
        "username",
        "uid",
        "groups",
        "extra",
    ];
    const STATUS: &[&str] = &["conditions", "certificate"];
    const COND: &[&str] = &[
        "type",
        "status",
        "reason",
        "message",
        "lastUpdateTime",
        "lastTransitionTime",
    ];
    let mut out = Vec::new();
    let mut check = |v: &Value, known: &[&str], prefix: &str| {
        if let Some(m) = v.as_object() {
            for k in m.keys() {
                if !known.contains(&k.as_str()) {
                    out.push(format!("{prefix}{k}"));
                }
            }
        }
    };
    check(obj, TOP, "");
    check(&obj["metadata"], META, "metadata.");
    check(&obj["spec"], SPEC, "spec.");
    check(&obj["status"], STATUS, "status.");
    if let Some(conds) = obj["status"]["conditions"].as_array() {
        for (i, c) in conds.iter().enumerate() {
            check(c, COND, &format!("status.conditions[{i}]."));
        }
    }
    out
}
