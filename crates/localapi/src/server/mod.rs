//! The HTTP side: request parsing (k8s RequestInfo rules), authentication, authorization, and the
//! create / get / list / watch / update / patch / delete handlers over the store.
//!
//! A request body is read only once the request is authenticated and authorized (as
//! kube-apiserver's filter chain does), at most 3 MiB of it, within a shared budget of bytes being
//! read at once: a caller without credentials never makes the server hold more than its head.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderMap, Method};
use serde_json::{json, Value};

use super::auth::{Attributes, User};
use super::csr::{self, WritePath};
use super::faults::{Faults, Injected};
use super::resources::{self, Behaviour, ResourceDef};
use super::response::{error_response, json_response, now_rfc3339, text_response};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{quote, ApiError, FieldError};
use super::store::{name_of, Change, EventType, Filter, Store, WatchMsg};
use super::{discovery, protobuf, table};

pub mod conn;
mod create;
mod read;
mod update;

use create::*;
use read::*;
use update::*;

/// State shared by all request handlers.
pub struct Shared {
    pub store: Arc<Store>,
    pub users: RwLock<Vec<User>>,
    pub faults: Faults,
    pub server_address: String,
    pub started: Instant,
    pub bodies: BodyBudget,
}

/// kube-apiserver's `--max-request-body-bytes` default (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// How long a request waits for room in the body budget before it gets 429.
const BODY_BUDGET_WAIT: Duration = Duration::from_secs(10);

/// A body not received by then gets 504 (kube-apiserver's default `--request-timeout`).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes of request bodies being read at once, all connections together.
pub struct BodyBudget(tokio::sync::Semaphore);

impl BodyBudget {
    /// Never below one maximal body, so every allowed body can be read.
    pub fn new(bytes: usize) -> Self {
        let bytes = bytes.clamp(MAX_BODY, u32::MAX as usize);
        BodyBudget(tokio::sync::Semaphore::new(bytes))
    }

    /// Reads a body of at most [`MAX_BODY`] bytes, holding room for it in the budget meanwhile
    /// (its declared length, else the maximum).
    async fn read(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        let room = declared.map_or(MAX_BODY, |n| n as usize).max(1) as u32;
        let Ok(Ok(_held)) = tokio::time::timeout(BODY_BUDGET_WAIT, self.0.acquire_many(room)).await
        else {
            return Err(ApiError::too_many_requests(1));
        };
        match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(_)) => Err(too_large()),
            Err(_) => Err(ApiError::new(
                504,
                "Timeout",
                "Timeout: request did not complete within the allotted timeout",
                None,
            )),
        }
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        413,
        "RequestEntityTooLarge",
        "Request entity too large: limit is 3145728",
        None,
    )
}

/// Query string → (key, value) pairs, percent-decoded.
fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(x) => {
                        out.push(x);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1") | Some("true") | Some("")) && self.get(k).is_some()
    }
}

/// A resource request after path parsing.
struct ResReq {
    def: &'static ResourceDef,
    version: String,
    namespace: String,
    name: String,
    subresource: String,
    watch_path: bool,
    /// A "force conflict on next write" fault matched this request.
    force_conflict: bool,
    /// Field manager for managedFields (fieldManager param, else the User-Agent product).
    manager: String,
    /// `force=true` on an apply patch.
    force: bool,
}

enum Route {
    NonResource,
    Resource(ResReq),
    NotFound,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Route::NonResource,
    };
    let mut rest: Vec<&str> = rest.to_vec();
    let mut watch_path = false;
    if rest.first() == Some(&"watch") {
        watch_path = true;
        rest.remove(0);
    }
    let mut namespace = "";
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = rest[1];
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest.drain(0..2);
        } else {
            // The namespaces resource itself: /namespaces/<name>[/status].
            namespace = "";
        }
    }
    let resource = rest.first().copied().unwrap_or("");
    let Some(def) = resources::find(group, version, resource) else {
        return Route::NotFound;
    };
    // Namespaced resources may be listed/watched across namespaces; cluster-scoped ones never
    // live in a namespace.
    let scope_ok = if def.namespaced {
        !namespace.is_empty() || rest.len() == 1
    } else {
        namespace.is_empty()
    };
    if !scope_ok {
        return Route::NotFound;
    }
    if rest.len() > 3 {
        return Route::NotFound;
    }
    let sub = rest.get(2).copied().unwrap_or("");
    if !sub.is_empty() && !def.subresources.contains(&sub) {
        return Route::NotFound;
    }
    Route::Resource(ResReq {
        def,
        version: version.to_string(),
        namespace: namespace.to_string(),
        name: rest.get(1).map(|s| percent_decode(s)).unwrap_or_default(),
        subresource: sub.to_string(),
        watch_path,
        force_conflict: false,
        manager: String::new(),
        force: false,
    })
}

/// Who sent a request (kube-apiserver's bearer-token authenticator, then the anonymous one).
enum Auth {
    User(User),
    /// A bearer token that matches nobody: 401 on every path.
    Invalid,
}

fn authenticate(sh: &Shared, headers: &HeaderMap) -> Auth {
    let Some(h) = headers.get("authorization") else {
        return Auth::User(User::anonymous());
    };
    let Ok(h) = h.to_str() else {
        return Auth::Invalid;
    };
    let mut parts = h.trim().splitn(3, ' ');
    let scheme = parts.next().unwrap_or("");
    let token = parts.next().unwrap_or("");
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        // Not for the token authenticator: the request is anonymous.
        return Auth::User(User::anonymous());
    }
    let users = sh.users.read().unwrap_or_else(|p| p.into_inner());
    match users.iter().find(|u| u.token == token) {
        Some(u) => Auth::User(u.clone()),
        None => Auth::Invalid,
    }
}

/// The single entry point for every request.
pub async fn handle(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = Query(parse_query(parts.uri.query()));
    let raw_query = parts.uri.query().unwrap_or_default().to_string();
    // For the request log only: tests check who asked for what (e.g. that the signer's lists and
    // watches always carry its field selector).
    let user = match authenticate(&sh, &parts.headers) {
        Auth::User(u) => u.name,
        Auth::Invalid => String::new(),
    };
    let _in_flight = sh.faults.enter();

    match sh.faults.check(&method, &path) {
        Injected::None => {}
        Injected::Latency(d) => tokio::time::sleep(d).await,
        Injected::Fail(e, d) => {
            tokio::time::sleep(d).await;
            sh.faults.record(&method, &path, &raw_query, &user, e.code);
            return error_response(&e);
        }
    }

    let resp = dispatch(&sh, &method, &path, &query, &parts.headers, body).await;
    sh.faults
        .record(&method, &path, &raw_query, &user, resp.status().as_u16());
    resp
}

async fn dispatch(
    sh: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let user = match authenticate(sh, headers) {
        Auth::User(u) => u,
        Auth::Invalid => return error_response(&ApiError::unauthorized()),
    };
    // system:public-info-viewer (everyone, anonymous included).
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        return text_response(200, "ok");
    }
    if path == "/version" {
        return json_response(200, &discovery::version());
    }
    let r = match route(path) {
        Route::NonResource => {
            // Discovery and OpenAPI: system:discovery, bound to authenticated users only.
            if user.is_anonymous() {
                return error_response(&ApiError::forbidden_path(&format!(
                    "User {:?} cannot {} path {:?}",
                    user.name,
                    method.as_str().to_lowercase(),
                    path
                )));
            }
            return match discovery::non_resource(path, headers, &sh.server_address) {
                Some(resp) => resp,
                None => text_response(404, "404 page not found\n"),
            };
        }
        Route::NotFound => return error_response(&ApiError::resource_not_found()),
        Route::Resource(mut r) => {
            if matches!(*method, Method::PUT | Method::PATCH) {
                r.force_conflict = sh.faults.take_conflict(method, path);
            }
            r.manager = match query.get("fieldManager").filter(|m| !m.is_empty()) {
                Some(m) => m.to_string(),
                None => headers
                    .get("user-agent")
                    .and_then(|h| h.to_str().ok())
                    .and_then(|ua| ua.split('/').next())
                    .filter(|m| !m.is_empty())
                    .unwrap_or("unknown")
                    .to_string(),
            };
            r.force = query.get("force") == Some("true");
            r
        }
    };
    let is_watch = r.watch_path || query.flag("watch");
    let verb = match (method, r.name.is_empty()) {
        (&Method::GET, _) if is_watch => "watch",
        (&Method::GET, false) => "get",
        (&Method::GET, true) => "list",
        (&Method::POST, true) => "create",
        (&Method::PUT, false) => "update",
        (&Method::PATCH, false) => "patch",
        (&Method::DELETE, false) => "delete",
        (&Method::DELETE, true) => "deletecollection",
        _ => return error_response(&ApiError::method_not_allowed()),
    };
    if !r.subresource.is_empty() && !matches!(verb, "get" | "update" | "patch") {
        return error_response(&ApiError::method_not_allowed());
    }
    if r.def.behaviour == Behaviour::AccessReview && !user.is_anonymous() {
        // Every authenticated user may ask about itself (system:basic-user).
        let self_review_kind = r.def.kind == "SelfSubjectReview";
        return answer_review(sh, verb, headers, body, |v| {
            if self_review_kind {
                self_review(&user, v)
            } else {
                access_review(&user, v)
            }
        })
        .await;
    }
    let attrs = Attributes {
        verb,
        group: r.def.group,
        resource: r.def.resource,
        subresource: &r.subresource,
        name: &r.name,
        namespace: &r.namespace,
    };
    // The Node authorizer runs before RBAC (--authorization-mode=Node,RBAC); its reason for no
    // opinion ends RBAC's denial message.
    let node_decision = match crate::pcr::node_identity(&user) {
        Some(node) if r.def.behaviour == Behaviour::Pcr => {
            let stored = (verb == "get")
                .then(|| sh.store.get(r.def.key(), &r.namespace, &r.name))
                .flatten();
            let stored_node = stored.as_ref().and_then(|o| o["spec"]["nodeName"].as_str());
            Some(crate::pcr::node_authorizes(
                node,
                verb,
                &r.subresource,
                query.get("fieldSelector"),
                stored_node,
            ))
        }
        _ => None,
    };
    let node_allows = matches!(node_decision, Some(Ok(())));
    if !node_allows && !user.allowed(&attrs) {
        let mut msg = attrs.forbidden_message(&user.name);
        if let Some(Err(reason)) = &node_decision {
            msg = format!("{msg}: node: {reason}");
        }
        return error_response(&ApiError::forbidden(r.def.gr(), &r.name, &msg));
    }
    if r.def.behaviour == Behaviour::SubjectAccessReview {
        return answer_review(sh, verb, headers, body, |v| subject_access_review(sh, v)).await;
    }
    let body = match verb {
        "create" | "update" | "patch" | "delete" => match sh.bodies.read(headers, body).await {
            Ok(b) => b,
            Err(e) => return error_response(&e),
        },
        // Reads never look at a body; it is dropped unread.
        _ => Bytes::new(),
    };
    let want_table = headers
        .get("accept")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    let result = match verb {
        "get" => get(sh, &r, want_table, query),
        "list" => list(sh, &r, query, want_table),
        "watch" => return watch(sh, &r, query, want_table),
        "create" => {
            let obj = match decode_body(headers, &body) {
                Ok(v) => v,
                Err(e) => return error_response(&e),
            };
            create(sh, &r, obj, &user, query, None)
        }
        "update" => {
            let obj = match decode_body(headers, &body) {
                Ok(v) => v,
                Err(e) => return error_response(&e),
            };
            update(sh, &r, Input::Put(obj), &user, query)
        }
        "patch" => patch(sh, &r, headers, &body, &user, query),
        "delete" => delete(sh, &r, &body, query),
        "deletecollection" => delete_collection(sh, &r, query),
        _ => Err(ApiError::method_not_allowed()),
    };
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

/// Answers a SelfSubjectReview (authentication.k8s.io/v1): who the caller is, as kube-apiserver reports it.
fn self_review(user: &User, mut review: Value) -> Value {
    let mut info = json!({"username": user.name, "uid": user.uid, "groups": user.groups});
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    review["kind"] = json!("SelfSubjectReview");
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = json!({"userInfo": info});
    review
}

/// A review kind (create only, never stored): reads the body and answers it with `answer`.
async fn answer_review(
    sh: &Arc<Shared>,
    verb: &str,
    headers: &HeaderMap,
    body: Body,
    answer: impl FnOnce(Value) -> Value,
) -> Response {
    if verb != "create" {
        return error_response(&ApiError::method_not_allowed());
    }
    let body = match sh.bodies.read(headers, body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    match decode_body(headers, &body) {
        Ok(v) => json_response(201, &answer(v)),
        Err(e) => error_response(&e),
    }
}

/// Answers a SubjectAccessReview about `spec.user`: the rules of the local API's user of that name,
/// with the groups the review gives (RBAC, like kube-apiserver's, takes the review's word for them: a
/// `system:masters` group is allowed everything). An unknown user has no rules.
fn subject_access_review(sh: &Shared, review: Value) -> Value {
    let spec = &review["spec"];
    let name = spec["user"].as_str().unwrap_or("");
    let groups: Vec<String> = spec["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut subject = sh
        .users
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|u| u.name == name)
        .cloned()
        .unwrap_or_else(|| User::new(name));
    subject.groups = groups;
    let mut answer = access_review(&subject, review);
    answer["kind"] = json!("SubjectAccessReview");
    answer
}

/// Answers a SelfSubjectAccessReview from the caller's rules.
fn access_review(user: &User, mut review: Value) -> Value {
    let ra = &review["spec"]["resourceAttributes"];
    let allowed = if ra.is_object() {
        let s = |k: &str| ra[k].as_str().unwrap_or("").to_string();
        let (verb, group, resource, sub, name, ns) = (
            s("verb"),
            s("group"),
            s("resource"),
            s("subresource"),
            s("name"),
            s("namespace"),
        );
        let a = Attributes {
            verb: &verb,
            group: &group,
            resource: &resource,
            subresource: &sub,
            name: &name,
            namespace: &ns,
        };
        user.allowed(&a)
    } else {
        // Non-resource URLs: discovery, version and health are open to every authenticated user.
        let path = review["spec"]["nonResourceAttributes"]["path"]
            .as_str()
            .unwrap_or("");
        user.is_master()
            || [
                "/api", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi",
            ]
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    };
    review["kind"] = json!("SelfSubjectAccessReview");
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = json!({"allowed": allowed});
    review
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    let v: Value =
        match ct.as_str() {
            "application/json" | "" | "*/*" => serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("json: {e}")))?,
            "application/yaml" => serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("yaml: {e}")))?,
            "application/vnd.kubernetes.protobuf" => protobuf::decode(body)
                .map_err(|e| ApiError::bad_request(format!("protobuf: {e}")))?,
            other => return Err(ApiError::unsupported_media_type(other)),
        };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body",
        ));
    }
    Ok(v)
}

/// Sets kind/apiVersion for the version the client asked for.
fn with_gvk(v: &Value, def: &ResourceDef, version: &str) -> Value {
    let mut v = v.clone();
    if def.behaviour == Behaviour::Pcr {
        crate::pcr::to_version(&mut v, version);
    }
    v["kind"] = json!(def.kind);
    v["apiVersion"] = json!(def.api_version(version));
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with_length(n: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_LENGTH, n.into());
        h
    }

    /// A body whose bytes never come.
    fn stalled() -> Body {
        Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>())
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_share_a_budget_then_get_429_and_a_stalled_body_gets_504() {
        let budget = Arc::new(BodyBudget::new(MAX_BODY));
        let first = {
            let b = budget.clone();
            tokio::spawn(async move { b.read(&with_length(MAX_BODY), stalled()).await })
        };
        tokio::task::yield_now().await;
        // The budget is held by the stalled body: the next one waits, then gets 429.
        let second = budget
            .read(&with_length(10), Body::from("0123456789"))
            .await;
        let e = second.unwrap_err();
        assert_eq!((e.code, e.retry_after), (429, Some(1)));
        assert_eq!(e.body["reason"], "TooManyRequests");
        let e = first.await.unwrap().unwrap_err();
        assert_eq!((e.code, e.body["reason"].as_str()), (504, Some("Timeout")));
        // With the budget free again a body is read whole.
        let ok = budget
            .read(&with_length(3), Body::from("abc"))
            .await
            .unwrap();
        assert_eq!(&ok[..], b"abc");
    }

    #[tokio::test]
    async fn a_body_over_3_mib_is_refused_by_its_declared_length_or_its_bytes() {
        let budget = BodyBudget::new(64 << 20);
        let e = budget
            .read(&with_length(MAX_BODY + 1), stalled())
            .await
            .unwrap_err();
        assert_eq!(e.code, 413);
        assert_eq!(
            e.body["message"],
            "Request entity too large: limit is 3145728"
        );
        // No length declared (chunked): counted as it arrives.
        let big = Body::from(vec![b' '; MAX_BODY + 1]);
        let e = budget.read(&HeaderMap::new(), big).await.unwrap_err();
        assert_eq!(e.code, 413);
    }
}
