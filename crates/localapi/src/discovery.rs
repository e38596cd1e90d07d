//! Discovery documents: `/version`, `/api`, `/apis`, `/apis/<group>[/<version>]`, and the OpenAPI
//! endpoints kubectl reads before `apply`.

use axum::response::Response;
use http::HeaderMap;
use serde_json::{json, Value};

use super::openapi;
use super::resources::{self, RESOURCES};
use super::response::json_response;

/// The Kubernetes release this API mimics.
pub const MINOR: &str = "37";
/// The oldest minor whose data this release accepts: `MINOR` - 1, as kube-apiserver reports it.
const MIN_COMPATIBILITY_MINOR: &str = "36";

pub fn version() -> Value {
    json!({
        "major": "1", "minor": MINOR, "emulationMajor": "1", "emulationMinor": MINOR,
        "minCompatibilityMajor": "1", "minCompatibilityMinor": MIN_COMPATIBILITY_MINOR,
        "gitVersion": format!("v1.{MINOR}.0-csr-signer-dev"), "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0",
        "compiler": "gc", "platform": "linux/amd64"
    })
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.versions.contains(&version))
    {
        let mut e = json!({
            "name": r.resource, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": resources::ALL_VERBS, "storageVersionHash": ""
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if matches!(
            r.behaviour,
            resources::Behaviour::AccessReview | resources::Behaviour::SubjectAccessReview
        ) {
            e["verbs"] = json!(["create"]);
        }
        if r.behaviour == resources::Behaviour::Namespace {
            e["verbs"] = json!(["create", "delete", "get", "list", "patch", "update", "watch"]);
        }
        list.push(e);
        for s in r.subresources {
            list.push(json!({
                "name": format!("{}/{}", r.resource, s), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"]
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}

fn api_group(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// Non-resource paths; None means 404.
pub fn non_resource(path: &str, _headers: &HeaderMap, server_address: &str) -> Option<Response> {
    let path = path.trim_end_matches('/');
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let v = match segs.as_slice() {
        ["api"] => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}),
        ["api", "v1"] => resource_list("", "v1"),
        ["apis"] => {
            let groups: Vec<Value> = resources::groups()
                .into_iter()
                .map(|(g, vs)| {
                    let mut o = api_group(g, &vs);
                    o.as_object_mut().map(|m| m.remove("kind"));
                    o
                })
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        ["apis", g] => {
            let (_, vs) = resources::groups()
                .into_iter()
                .find(|(name, _)| name == g)?;
            let mut o = api_group(g, &vs);
            o["kind"] = json!("APIGroup");
            o["apiVersion"] = json!("v1");
            o
        }
        ["apis", g, v] => {
            if !resources::group_version_served(g, v) {
                return None;
            }
            resource_list(g, v)
        }
        ["openapi", "v2"] => return Some(openapi::v2_response()),
        ["openapi", "v3"] => openapi::v3_index(),
        ["openapi", "v3", "api", v] => openapi::v3_doc("", v)?,
        ["openapi", "v3", "apis", g, v] => openapi::v3_doc(g, v)?,
        _ => return None,
    };
    Some(json_response(200, &v))
}
