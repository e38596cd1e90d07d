//! Minimal OpenAPI documents: enough for kubectl to see that PATCH/PUT/POST accept
//! `fieldValidation` (so `kubectl apply` validates server-side instead of needing full schemas).

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::resources::RESOURCES;
use super::server::json_response;

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
        paths.insert(k.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash=0")}));
    }
    json!({"paths": paths})
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operations(group: &str, version: &str, kind: &str, named: bool) -> Value {
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let write_params = json!([param("dryRun"), param("fieldManager"), param("fieldValidation")]);
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
        ops.insert("delete".into(), mk("deletecollection", &json!([param("dryRun")])));
    }
    Value::Object(ops)
}

pub fn v3_doc(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    let mut found = false;
    for r in RESOURCES.iter().filter(|r| r.group == group && r.versions.contains(&version)) {
        found = true;
        let base = format!("/{}", gv_key(group, version));
        let prefix = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.resource)
        } else {
            format!("{base}/{}", r.resource)
        };
        paths.insert(prefix.clone(), operations(group, version, r.kind, false));
        paths.insert(format!("{prefix}/{{name}}"), operations(group, version, r.kind, true));
        for s in r.subresources {
            paths.insert(format!("{prefix}/{{name}}/{s}"), operations(group, version, r.kind, true));
        }
    }
    if !found {
        return None;
    }
    Some(json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0"}, "paths": paths,
                "components": {"schemas": {}}}))
}

/// kubectl falls back to v2 only when v3 is missing; v2 is served as 404 like a server that
/// disabled it, which kubectl tolerates once v3 answered.
pub fn v2_response() -> Response {
    json_response(
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "the server could not find the requested resource", "reason": "NotFound",
                "details": {}, "code": 404}),
    )
}
