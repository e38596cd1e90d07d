//! Minimal OpenAPI documents (v3 JSON and v2 protobuf): enough for kubectl to see that
//! PATCH/PUT/POST accept `fieldValidation`, so `kubectl apply` validates server-side instead of
//! needing full schemas. Schemas are not served; kubectl then treats objects as unstructured.

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::resources::RESOURCES;

fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn served_gvs() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for r in RESOURCES {
        for v in r.versions {
            if !out.contains(&(r.group, *v)) {
                out.push((r.group, *v));
            }
        }
    }
    out
}

pub fn v3_index() -> Value {
    let mut paths = Map::new();
    for (g, v) in served_gvs() {
        let k = gv_key(g, v);
        paths.insert(
            k.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash=0")}),
        );
    }
    json!({"paths": paths})
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operations(group: &str, version: &str, kind: &str, named: bool) -> Value {
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let write_params = json!([
        param("dryRun"),
        param("fieldManager"),
        param("fieldValidation")
    ]);
    let mut ops = Map::new();
    let mk = |action: &str, params: &Value| {
        json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": params,
               "responses": {"200": {"description": "OK"}}})
    };
    if named {
        ops.insert("get".into(), mk("get", &json!([])));
        ops.insert("put".into(), mk("put", &write_params));
        ops.insert("patch".into(), mk("patch", &write_params));
        ops.insert("delete".into(), mk("delete", &json!([param("dryRun")])));
    } else {
        ops.insert("get".into(), mk("list", &json!([])));
        ops.insert("post".into(), mk("post", &write_params));
        ops.insert(
            "delete".into(),
            mk("deletecollection", &json!([param("dryRun")])),
        );
    }
    Value::Object(ops)
}

pub fn v3_doc(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    let mut found = false;
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.versions.contains(&version))
    {
        found = true;
        let base = format!("/{}", gv_key(group, version));
        let prefix = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.resource)
        } else {
            format!("{base}/{}", r.resource)
        };
        paths.insert(prefix.clone(), operations(group, version, r.kind, false));
        paths.insert(
            format!("{prefix}/{{name}}"),
            operations(group, version, r.kind, true),
        );
        for s in r.subresources {
            paths.insert(
                format!("{prefix}/{{name}}/{s}"),
                operations(group, version, r.kind, true),
            );
        }
    }
    if !found {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0"}, "paths": paths,
                "components": {"schemas": {}}}),
    )
}

// --- OpenAPI v2 in gnostic protobuf form (what client-go's OpenAPISchema() decodes) ---

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn ld(num: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint((num << 3) | 2, &mut out);
    varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

fn query_param(name: &str) -> Vec<u8> {
    // ParametersItem{parameter=1: Parameter{non_body_parameter=2: NonBodyParameter{
    //   query_parameter_sub_schema=3: {in=2, name=4, type=6}}}}
    let sub = [ld(2, b"query"), ld(4, name.as_bytes()), ld(6, b"string")].concat();
    ld(1, &ld(2, &ld(3, &sub)))
}

fn v2_operation(group: &str, version: &str, kind: &str, write: bool) -> Vec<u8> {
    let mut op = Vec::new();
    if write {
        for p in ["dryRun", "fieldManager", "fieldValidation"] {
            op.extend(ld(8, &query_param(p)));
        }
    }
    let yaml = format!("group: {group:?}\nkind: {kind}\nversion: {version}\n");
    // vendor_extension=13: NamedAny{name=1, value=2: Any{yaml=2}}
    let named_any = [
        ld(1, b"x-kubernetes-group-version-kind"),
        ld(2, &ld(2, yaml.as_bytes())),
    ]
    .concat();
    op.extend(ld(13, &named_any));
    op
}

/// The protobuf OpenAPI v2 document: every served path with its operations, the write
/// operations declaring `dryRun`, `fieldManager` and `fieldValidation` (kubectl's
/// QueryParamVerifier looks for them on PATCH to choose server-side validation).
pub fn v2_protobuf() -> Vec<u8> {
    let mut paths = Vec::new();
    for r in RESOURCES {
        for version in r.versions {
            let base = format!("/{}", gv_key(r.group, version));
            let prefix = if r.namespaced {
                format!("{base}/namespaces/{{namespace}}/{}", r.resource)
            } else {
                format!("{base}/{}", r.resource)
            };
            let collection = [
                ld(2, &v2_operation(r.group, version, r.kind, false)),
                ld(4, &v2_operation(r.group, version, r.kind, true)),
            ]
            .concat();
            paths.extend(ld(
                2,
                &[ld(1, prefix.as_bytes()), ld(2, &collection)].concat(),
            ));
            let item = [
                ld(2, &v2_operation(r.group, version, r.kind, false)),
                ld(3, &v2_operation(r.group, version, r.kind, true)),
                ld(5, &v2_operation(r.group, version, r.kind, false)),
                ld(8, &v2_operation(r.group, version, r.kind, true)),
            ]
            .concat();
            paths.extend(ld(
                2,
                &[ld(1, format!("{prefix}/{{name}}").as_bytes()), ld(2, &item)].concat(),
            ));
        }
    }
    let info = [ld(1, b"Kubernetes"), ld(2, b"v1.37.0")].concat();
    [ld(1, b"2.0"), ld(2, &info), ld(8, &paths)].concat()
}

pub fn v2_response() -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream")
        .body(axum::body::Body::from(v2_protobuf()))
        .unwrap_or_default()
}
