//! The HTTP side: request parsing (k8s RequestInfo rules), authentication, authorization, and the
//! create / get / list / watch / update / patch / delete handlers over the store.

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

/// State shared by all request handlers.
pub struct Shared {
    pub store: Arc<Store>,
    pub users: RwLock<Vec<User>>,
    pub faults: Faults,
    pub server_address: String,
    pub started: Instant,
}

const MAX_BODY: usize = 3 * 1024 * 1024;

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

    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                "Request entity too large: limit is 3145728",
                None,
            ))
        }
    };

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
    body: Bytes,
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
        if verb != "create" {
            return error_response(&ApiError::method_not_allowed());
        }
        return match decode_body(headers, &body) {
            Ok(v) => json_response(201, &access_review(&user, v)),
            Err(e) => error_response(&e),
        };
    }
    let attrs = Attributes {
        verb,
        group: r.def.group,
        resource: r.def.resource,
        subresource: &r.subresource,
        name: &r.name,
        namespace: &r.namespace,
    };
    if !user.allowed(&attrs) {
        let msg = attrs.forbidden_message(&user.name);
        return error_response(&ApiError::forbidden(r.def.gr(), &r.name, &msg));
    }
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
    v["kind"] = json!(def.kind);
    v["apiVersion"] = json!(def.api_version(version));
    v
}

fn get(sh: &Shared, r: &ResReq, want_table: bool, query: &Query) -> Result<(u16, Value), ApiError> {
    let obj = sh
        .store
        .get(r.def.key(), &r.namespace, &r.name)
        .ok_or_else(|| ApiError::not_found(r.def.gr(), &r.name))?;
    let obj = with_gvk(&obj, r.def, &r.version);
    if want_table {
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        return Ok((
            200,
            table::table(r.def, &r.version, &[obj], &rv, query.get("includeObject")),
        ));
    }
    Ok((200, obj))
}

fn selectors(r: &ResReq, query: &Query) -> Result<(FieldSelector, LabelSelector), ApiError> {
    let fs = FieldSelector::parse(
        query.get("fieldSelector").unwrap_or(""),
        r.def.field_selectors,
    )?;
    let ls = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
    Ok((fs, ls))
}

fn ns_filter(r: &ResReq) -> Option<&str> {
    if r.def.namespaced && !r.namespace.is_empty() {
        Some(r.namespace.as_str())
    } else {
        None
    }
}

fn list(
    sh: &Shared,
    r: &ResReq,
    query: &Query,
    want_table: bool,
) -> Result<(u16, Value), ApiError> {
    let (fs, ls) = selectors(r, query)?;
    let (items, rv) = sh.store.list(r.def.key(), ns_filter(r));
    let mut start_after: Option<(String, String)> = None;
    if let Some(c) = query.get("continue").filter(|c| !c.is_empty()) {
        let (crv, key) = decode_continue(c)
            .ok_or_else(|| ApiError::bad_request("continue key is not valid: invalid token"))?;
        if sh.store.is_compacted(crv) {
            return Err(ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."));
        }
        start_after = Some(key);
    }
    let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let matching: Vec<&Arc<Value>> = items
        .iter()
        .filter(|v| fs.matches(v) && ls.matches(v))
        .filter(|v| {
            start_after.as_ref().is_none_or(|(ns, n)| {
                (super::store::namespace_of(v), name_of(v)) > (ns.as_str(), n.as_str())
            })
        })
        .collect();
    let total = matching.len();
    let take = if limit > 0 { limit.min(total) } else { total };
    let page: Vec<Value> = matching[..take].iter().map(|v| (***v).clone()).collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    // As the etcd3 store pages: a full page gets a continue token when any object (matching or
    // not) follows its last item; remainingItemCount only without selectors.
    if limit > 0 && take == limit {
        if let Some(last) = page.last() {
            let key = (
                super::store::namespace_of(last).to_string(),
                name_of(last).to_string(),
            );
            let more = items.iter().any(|v| {
                (super::store::namespace_of(v), name_of(v)) > (key.0.as_str(), key.1.as_str())
            });
            if more {
                meta["continue"] = json!(encode_continue(rv, &key));
                if fs.is_empty() && ls.is_empty() {
                    meta["remainingItemCount"] = json!(total - take);
                }
            }
        }
    }
    if want_table {
        let objs: Vec<Value> = page
            .iter()
            .map(|v| with_gvk(v, r.def, &r.version))
            .collect();
        let mut t = table::table(
            r.def,
            &r.version,
            &objs,
            &rv.to_string(),
            query.get("includeObject"),
        );
        t["metadata"] = meta;
        return Ok((200, t));
    }
    let items: Vec<Value> = page
        .into_iter()
        .map(|mut v| {
            if let Some(m) = v.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            v
        })
        .collect();
    Ok((
        200,
        json!({"kind": r.def.list_kind(), "apiVersion": r.def.api_version(&r.version), "metadata": meta, "items": items}),
    ))
}

fn encode_continue(rv: u64, key: &(String, String)) -> String {
    use base64::Engine;
    let raw = json!({"rv": rv, "ns": key.0, "name": key.1}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(s: &str) -> Option<(u64, (String, String))> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    Some((
        v["rv"].as_u64()?,
        (
            v["ns"].as_str()?.to_string(),
            v["name"].as_str()?.to_string(),
        ),
    ))
}

fn watch(sh: &Arc<Shared>, r: &ResReq, query: &Query, want_table: bool) -> Response {
    let (fs, ls) = match selectors(r, query) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let mut fs = fs;
    if !r.name.is_empty() {
        // A watch on one object is a watch with metadata.name=<name>.
        match FieldSelector::parse(&format!("metadata.name={}", r.name), &["metadata.name"]) {
            Ok(n) => {
                let orig = fs.clone();
                let both: Filter = Arc::new(move |v: &Value| orig.matches(v) && n.matches(v));
                return watch_stream(sh, r, query, both, want_table);
            }
            Err(e) => return error_response(&e),
        }
    }
    fs = fs.clone();
    let filter: Filter = Arc::new(move |v: &Value| fs.matches(v) && ls.matches(v));
    watch_stream(sh, r, query, filter, want_table)
}

fn watch_stream(
    sh: &Arc<Shared>,
    r: &ResReq,
    query: &Query,
    filter: Filter,
    want_table: bool,
) -> Response {
    let from = match query.get("resourceVersion").unwrap_or("") {
        "" | "0" => None,
        s => match s.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                return error_response(&ApiError::bad_request(format!(
                    "invalid resource version: {}",
                    quote(s)
                )))
            }
        },
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .unwrap_or(1800);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let def = r.def;
    let version = r.version.clone();
    let ns = ns_filter(r).map(str::to_string);
    let include = query.get("includeObject").map(str::to_string);
    // `kubectl get -w`: each event carries a one-row Table; only the first has the columns.
    let to_table = move |obj: Value, first: bool| -> Value {
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let mut t = table::table(def, "", &[obj], &rv, include.as_deref());
        if !first {
            t["columnDefinitions"] = json!([]);
        }
        t
    };
    let line = move |t: &str, obj: Value| -> Bytes {
        let mut s = serde_json::to_vec(&json!({"type": t, "object": obj})).unwrap_or_default();
        s.push(b'\n');
        Bytes::from(s)
    };
    let initial = query.get("sendInitialEvents") == Some("true");
    let rx = match sh.store.watch(def.key(), ns, filter, from, initial) {
        Ok(rx) => Some(rx),
        Err(e) => {
            let first = line("ERROR", e.body.clone());
            let stream = futures::stream::once(async move { Ok::<Bytes, Infallible>(first) });
            return watch_response(Body::from_stream(stream));
        }
    };
    let stream = futures::stream::unfold((rx, true), move |(rx, first)| {
        let version = version.clone();
        let to_table = to_table.clone();
        async move {
            let mut rx = rx?;
            loop {
                let msg = tokio::select! {
                    m = rx.recv() => m,
                    _ = tokio::time::sleep_until(deadline) => None,
                };
                let out = match msg? {
                    WatchMsg::Event(t, obj) if want_table => {
                        line(t.as_str(), to_table(with_gvk(&obj, def, &version), first))
                    }
                    WatchMsg::Event(t, obj) => line(t.as_str(), with_gvk(&obj, def, &version)),
                    WatchMsg::Bookmark(rv) => {
                        if !bookmarks {
                            continue;
                        }
                        line(
                            "BOOKMARK",
                            json!({"kind": def.kind, "apiVersion": def.api_version(&version), "metadata": {"resourceVersion": rv.to_string()}}),
                        )
                    }
                    WatchMsg::InitialEventsEnd(rv) => line(
                        "BOOKMARK",
                        json!({"kind": def.kind, "apiVersion": def.api_version(&version),
                               "metadata": {"resourceVersion": rv.to_string(),
                                            "annotations": {"k8s.io/initial-events-end": "true"}}}),
                    ),
                };
                return Some((Ok::<Bytes, Infallible>(out), (Some(rx), false)));
            }
        }
    });
    watch_response(Body::from_stream(stream))
}

fn watch_response(body: Body) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .header("transfer-encoding", "chunked")
        .body(body)
        .unwrap_or_default()
}

/// Generic ObjectMeta name checks on create (path segment rules, plus DNS rules per resource).
fn validate_meta_create(def: &ResourceDef, obj: &Value) -> Vec<FieldError> {
    let mut el = Vec::new();
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if name.is_empty() {
        el.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
        return el;
    }
    for bad in [".", ".."] {
        if name == bad {
            el.push(FieldError::invalid(
                "metadata.name",
                quote(name),
                format!("may not be '{bad}'"),
            ));
        }
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            el.push(FieldError::invalid(
                "metadata.name",
                quote(name),
                format!("may not contain '{bad}'"),
            ));
        }
    }
    match def.behaviour {
        Behaviour::Csr | Behaviour::ClusterTrustBundle | Behaviour::AccessReview => {}
        Behaviour::Namespace => {
            for m in csr::dns1123_label_errors(name) {
                el.push(FieldError::invalid("metadata.name", quote(name), m));
            }
        }
        Behaviour::Generic => {
            if el.is_empty() && def.resource != "events" {
                for m in csr::dns1123_subdomain_errors(name) {
                    el.push(FieldError::invalid("metadata.name", quote(name), m));
                }
            }
        }
    }
    el
}

fn generate_suffix() -> String {
    use rand::Rng;
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char)
        .collect()
}

fn check_gvk(obj: &Value, def: &ResourceDef, version: &str) -> Result<(), ApiError> {
    let want = def.api_version(version);
    if let Some(av) = obj["apiVersion"].as_str() {
        if av != want {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want})"
            )));
        }
    }
    if let Some(k) = obj["kind"].as_str() {
        if k != def.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
    }
    Ok(())
}

fn namespace_exists(sh: &Shared, ns: &str) -> Result<(), ApiError> {
    if sh.store.get("core/namespaces", "", ns).is_some() {
        return Ok(());
    }
    Err(ApiError::not_found(
        super::status::Gr {
            group: "",
            resource: "namespaces",
            kind: "Namespace",
        },
        ns,
    ))
}

fn clean_meta(meta: &mut Value) {
    if let Some(m) = meta.as_object_mut() {
        for f in ["labels", "annotations"] {
            if m.get(f)
                .is_some_and(|v| v.is_null() || v.as_object().is_some_and(|o| o.is_empty()))
            {
                m.remove(f);
            }
        }
        for f in ["finalizers", "ownerReferences", "managedFields"] {
            if m.get(f)
                .is_some_and(|v| v.is_null() || v.as_array().is_some_and(|o| o.is_empty()))
            {
                m.remove(f);
            }
        }
        for f in ["selfLink", "generateName", "deletionGracePeriodSeconds"] {
            if m.get(f)
                .is_some_and(|v| v.is_null() || v.as_str() == Some(""))
            {
                m.remove(f);
            }
        }
    }
}

/// Gives `obj` the managed fields computed on `sent` (the object as the client sent it).
fn take_managed_fields(obj: &mut Value, sent: &Value) {
    match sent["metadata"].get("managedFields") {
        Some(m) => obj["metadata"]["managedFields"] = m.clone(),
        None => {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
        }
    }
}

fn writer<'a>(r: &'a ResReq, api_version: &'a str, now: &'a str) -> super::managed::Writer<'a> {
    super::managed::Writer {
        manager: &r.manager,
        subresource: &r.subresource,
        api_version,
        now,
        group: r.def.group,
        kind: r.def.kind,
    }
}

fn create(
    sh: &Shared,
    r: &ResReq,
    mut obj: Value,
    user: &User,
    query: &Query,
    applied: Option<&Value>,
) -> Result<(u16, Value), ApiError> {
    check_meta_types(r.def, &obj)?;
    check_gvk(&obj, r.def, &r.version)?;
    field_validation(r.def, &obj, query)?;
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if r.def.namespaced {
        let body_ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
        if !body_ns.is_empty() && body_ns != r.namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        obj["metadata"]["namespace"] = json!(r.namespace);
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "managedFields",
            "generation",
            "selfLink",
        ] {
            m.remove(f);
        }
    }
    let mut generated = false;
    if obj["metadata"]["name"].as_str().unwrap_or("").is_empty() {
        if let Some(g) = obj["metadata"]["generateName"]
            .as_str()
            .filter(|g| !g.is_empty())
        {
            obj["metadata"]["name"] = json!(format!("{g}{}", generate_suffix()));
            generated = true;
        }
    }
    clean_meta(&mut obj["metadata"]);
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let gr = r.def.gr();
    // The field manager sees the object as sent, before the strategy changes it.
    let mut sent = obj.clone();

    let mut errs = validate_meta_create(r.def, &obj);
    match r.def.behaviour {
        Behaviour::Csr => {
            csr::check_types(&obj)?;
            csr::prepare_create(&mut obj, user);
            csr::normalize(&mut obj);
            errs.extend(csr::validate(&obj, None, WritePath::Main));
        }
        Behaviour::ClusterTrustBundle => errs.extend(super::ctb::validate(&obj, None)),
        Behaviour::Namespace => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            if let Some(l) = obj["metadata"].as_object_mut() {
                let labels = l.entry("labels").or_insert(json!({}));
                labels["kubernetes.io/metadata.name"] = json!(name);
            }
        }
        Behaviour::Generic | Behaviour::AccessReview => {}
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(gr, &name, &errs));
    }
    match r.def.behaviour {
        Behaviour::Csr => csr::admit_create(&obj)?,
        Behaviour::ClusterTrustBundle => super::ctb::admit(&obj, None, user)?,
        _ => {}
    }
    if r.def.namespaced {
        namespace_exists(sh, &r.namespace)?;
    }
    obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
    obj["kind"] = json!(r.def.kind);
    obj["apiVersion"] = json!(r.def.api_version(&r.version));
    let (av, now) = (r.def.api_version(&r.version), now_rfc3339());
    let w = writer(r, &av, &now);
    match applied {
        Some(a) => super::managed::record_apply(&mut sent, None, a, true, &w)?,
        None => super::managed::record_update(&mut sent, None, &w),
    }
    take_managed_fields(&mut obj, &sent);
    if is_dry_run(query) {
        return Ok((201, obj));
    }
    let (stored, _) = sh.store.mutate(r.def.key(), &r.namespace, &name, |cur| {
        if cur.is_some() {
            return Err(if generated {
                ApiError::generate_name_conflict(gr, &name)
            } else {
                ApiError::already_exists(gr, &name)
            });
        }
        Ok(Change::Create(obj))
    })?;
    Ok((201, with_gvk(&stored, r.def, &r.version)))
}

/// Server-side field validation for CSR bodies: Strict rejects unknown fields with 400; Warn
/// (the default) and Ignore accept them (the fields are dropped by normalisation).
fn field_validation(def: &ResourceDef, obj: &Value, query: &Query) -> Result<(), ApiError> {
    if def.behaviour != Behaviour::Csr || query.get("fieldValidation") != Some("Strict") {
        return Ok(());
    }
    let unknown = csr::unknown_fields(obj);
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {}", quote(f)))
        .collect();
    Err(ApiError::bad_request(format!(
        "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: strict decoding error: {}",
        list.join(", ")
    )))
}

/// ObjectMeta fields must have their Go types before anything indexes into them (a string where
/// an object belongs is a decode error, 400, in kube-apiserver).
fn check_meta_types(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    let bad = |field: &str| {
        Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: json: cannot unmarshal into Go struct field {}",
            def.kind,
            def.versions.first().copied().unwrap_or(""),
            def.kind,
            field
        )))
    };
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body",
        ));
    }
    let meta = &obj["metadata"];
    if meta.is_null() {
        return Ok(());
    }
    let Some(m) = meta.as_object() else {
        return bad("metadata of type v1.ObjectMeta");
    };
    for f in ["labels", "annotations"] {
        match m.get(f) {
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) if o.values().all(Value::is_string) => {}
            _ => {
                return bad(&format!(
                    "ObjectMeta.metadata.{f} of type map[string]string"
                ))
            }
        }
    }
    match m.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        _ => return bad("ObjectMeta.metadata.finalizers of type []string"),
    }
    for f in [
        "name",
        "generateName",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
    ] {
        if !matches!(m.get(f), None | Some(Value::Null) | Some(Value::String(_))) {
            return bad(&format!("ObjectMeta.metadata.{f} of type string"));
        }
    }
    for f in ["spec", "status"] {
        if !matches!(
            obj.get(f),
            None | Some(Value::Null) | Some(Value::Object(_))
        ) {
            return bad(&format!("{}.{f}", def.kind));
        }
    }
    Ok(())
}

fn is_dry_run(query: &Query) -> bool {
    query.get("dryRun").is_some_and(|d| d == "All")
}

pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

enum Input {
    Put(Value),
    Patch(PatchKind, Value),
}

/// Strategic merge for the types served here: a JSON merge patch, except that
/// `metadata.finalizers` (patchStrategy=merge) is unioned and `$patch`/`$retainKeys` directives
/// are dropped. No CSR, Lease, Event or ConfigMap field has a list merge key that matters.
fn strategic_merge(doc: &mut Value, patch: &Value) {
    let mut p = patch.clone();
    let extra_finalizers: Option<Vec<Value>> = p["metadata"]["finalizers"].as_array().cloned();
    strip_directives(&mut p);
    if let Some(fins) = &extra_finalizers {
        let mut merged = doc["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for f in fins {
            if !merged.contains(f) {
                merged.push(f.clone());
            }
        }
        p["metadata"]["finalizers"] = Value::Array(merged);
    }
    json_patch::merge(doc, &p);
}

fn strip_directives(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !k.starts_with('$') && !k.starts_with("$setElementOrder"));
        for (_, x) in m.iter_mut() {
            strip_directives(x);
        }
    }
}

/// Server-side apply, simplified: the applied configuration is merged into the live object, with
/// `status.conditions` merged by `type` (its listMapKey). Field ownership is not tracked.
fn apply_merge(doc: &mut Value, applied: &Value) {
    let mut p = applied.clone();
    if let Some(newc) = applied["status"]["conditions"].as_array() {
        let mut merged = doc["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for c in newc {
            match merged.iter_mut().find(|m| m["type"] == c["type"]) {
                Some(m) => json_patch::merge(m, c),
                None => merged.push(c.clone()),
            }
        }
        p["status"]["conditions"] = Value::Array(merged);
    }
    json_patch::merge(doc, &p);
}

fn patch(
    sh: &Shared,
    r: &ResReq,
    headers: &HeaderMap,
    body: &[u8],
    user: &User,
    query: &Query,
) -> Result<(u16, Value), ApiError> {
    let kind = match content_type(headers).as_str() {
        "application/json-patch+json" => PatchKind::Json,
        "application/merge-patch+json" => PatchKind::Merge,
        "application/strategic-merge-patch+json" => PatchKind::Strategic,
        "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    let pv: Value = match kind {
        PatchKind::Apply => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
        _ => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
    };
    if let PatchKind::Apply = kind {
        if query.get("fieldManager").unwrap_or("").is_empty() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                None,
            ));
        }
        // Apply creates the object when it does not exist (main resource only).
        check_meta_types(r.def, &pv)?;
        if r.subresource.is_empty() && sh.store.get(r.def.key(), &r.namespace, &r.name).is_none() {
            let mut obj = pv.clone();
            obj["metadata"]["name"] = json!(r.name);
            return create(sh, r, obj, user, query, Some(&pv)).map(|(_, v)| (201, v));
        }
    }
    update(sh, r, Input::Patch(kind, pv), user, query)
}

fn meta_str<'a>(v: &'a Value, f: &str) -> &'a str {
    v["metadata"][f].as_str().unwrap_or("")
}

/// Compare ignoring the fields the store owns.
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        if let Some(m) = v.as_object_mut() {
            m.remove("kind");
            m.remove("apiVersion");
        }
        v
    };
    strip(a) == strip(b)
}

fn update(
    sh: &Shared,
    r: &ResReq,
    input: Input,
    user: &User,
    query: &Query,
) -> Result<(u16, Value), ApiError> {
    let gr = r.def.gr();
    let path = match r.def.behaviour {
        Behaviour::Csr => WritePath::from_subresource(&r.subresource).unwrap_or(WritePath::Main),
        _ => WritePath::Main,
    };
    if let Input::Put(obj) = &input {
        check_gvk(obj, r.def, &r.version)?;
        field_validation(r.def, obj, query)?;
        let body_name = meta_str(obj, "name");
        if !body_name.is_empty() && body_name != r.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                r.name
            )));
        }
        if r.def.namespaced {
            let ns = meta_str(obj, "namespace");
            if !ns.is_empty() && ns != r.namespace {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
    }
    let force_conflict = r.force_conflict;
    let dry = is_dry_run(query);
    let def = r.def;
    let version = r.version.clone();
    let mut answer: Option<Value> = None;
    let (stored, _) = sh.store.mutate(def.key(), &r.namespace, &r.name, |cur| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(gr, &r.name));
        };
        let api_version = def.api_version(&version);
        let now = now_rfc3339();
        let w = writer(r, &api_version, &now);
        let mut applied = false;
        let mut new = match input {
            Input::Put(v) => v,
            Input::Patch(kind, p) => {
                let mut doc = with_gvk(cur, def, &version);
                match kind {
                    PatchKind::Json => {
                        let ops: json_patch::Patch = serde_json::from_value(p)
                            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                        json_patch::patch(&mut doc, &ops.0).map_err(|e| {
                            ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}"), None)
                        })?;
                    }
                    PatchKind::Merge => json_patch::merge(&mut doc, &p),
                    PatchKind::Strategic => strategic_merge(&mut doc, &p),
                    PatchKind::Apply => {
                        apply_merge(&mut doc, &p);
                        super::managed::record_apply(&mut doc, Some(cur), &p, r.force, &w)?;
                        applied = true;
                    }
                }
                doc
            }
        };
        check_meta_types(def, &new)?;
        if force_conflict {
            return Err(ApiError::stale(gr, &r.name));
        }
        if !new.is_object() {
            return Err(ApiError::bad_request("Object 'Kind' is missing in the request body"));
        }
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        let cur_rv = meta_str(cur, "resourceVersion").to_string();
        let new_rv = meta_str(&new, "resourceVersion").to_string();
        if new_rv.is_empty() || new_rv == "0" {
            if !def.unconditional_update {
                let errs = [FieldError::invalid("metadata.resourceVersion", "0x0".into(), "must be specified for an update")];
                return Err(ApiError::invalid(gr, &r.name, &errs));
            }
        } else if new_rv != cur_rv {
            return Err(ApiError::stale(gr, &r.name));
        }
        let new_uid = meta_str(&new, "uid").to_string();
        let cur_uid = meta_str(cur, "uid").to_string();
        if !new_uid.is_empty() && new_uid != cur_uid {
            return Err(ApiError::conflict(
                gr,
                &r.name,
                &format!("Precondition failed: UID in precondition: {new_uid}, UID in object meta: {cur_uid}"),
            ));
        }
        // Fields the server owns come from the stored object.
        for f in ["uid", "creationTimestamp", "deletionTimestamp", "resourceVersion", "generation"] {
            match cur["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        new["metadata"]["name"] = json!(r.name);
        if def.namespaced {
            new["metadata"]["namespace"] = json!(r.namespace);
        } else if let Some(m) = new["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        new["kind"] = cur["kind"].clone();
        new["apiVersion"] = cur["apiVersion"].clone();
        clean_meta(&mut new["metadata"]);
        // The field manager sees the object as sent, before the strategy changes it.
        let mut sent = new.clone();

        let mut errs = Vec::new();
        match def.behaviour {
            Behaviour::Csr => {
                csr::check_types(&new)?;
                csr::prepare_update(&mut new, cur, path, &now_rfc3339());
                errs.extend(csr::validate(&new, Some(cur), path));
            }
            Behaviour::ClusterTrustBundle => errs.extend(super::ctb::validate(&new, Some(cur))),
            Behaviour::Namespace => {
                if r.subresource.is_empty() {
                    new["status"] = cur["status"].clone();
                } else {
                    new["spec"] = cur["spec"].clone();
                }
                new["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(r.name);
            }
            Behaviour::Generic | Behaviour::AccessReview => {}
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(gr, &r.name, &errs));
        }
        match def.behaviour {
            Behaviour::Csr => csr::admit_update(&new, cur, path, user)?,
            Behaviour::ClusterTrustBundle => super::ctb::admit(&new, Some(cur), user)?,
            _ => {}
        }
        if same_object(&new, cur) {
            return Ok(Change::NoOp);
        }
        if !applied {
            super::managed::record_update(&mut sent, Some(cur), &w);
            take_managed_fields(&mut new, &sent);
        }
        if dry {
            answer = Some(new);
            return Ok(Change::NoOp);
        }
        let finalizing = !meta_str(&new, "deletionTimestamp").is_empty()
            && new["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty());
        if finalizing {
            // The answer is the object as last written (without its finalizers), not the stored one.
            answer = Some(new);
            return Ok(Change::Delete);
        }
        Ok(Change::Update(new))
    })?;
    let out = answer.unwrap_or_else(|| (*stored).clone());
    Ok((200, with_gvk(&out, r.def, &r.version)))
}

fn delete(sh: &Shared, r: &ResReq, body: &[u8], query: &Query) -> Result<(u16, Value), ApiError> {
    let gr = r.def.gr();
    let opts: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("json: {e}")))?
    };
    let pre_uid = opts["preconditions"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let pre_rv = opts["preconditions"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let dry = is_dry_run(query)
        || opts["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    let mut kept = false;
    let (obj, _) = sh.store.mutate(r.def.key(), &r.namespace, &r.name, |cur| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(gr, &r.name));
        };
        let uid = meta_str(cur, "uid");
        if !pre_uid.is_empty() && pre_uid != uid {
            return Err(ApiError::conflict(gr, &r.name, &format!("Precondition failed: UID in precondition: {pre_uid}, UID in object meta: {uid}")));
        }
        let rv = meta_str(cur, "resourceVersion");
        if !pre_rv.is_empty() && pre_rv != rv {
            return Err(ApiError::conflict(gr, &r.name, &format!("Precondition failed: ResourceVersion in precondition: {pre_rv}, ResourceVersion in object meta: {rv}")));
        }
        if dry {
            return Ok(Change::NoOp);
        }
        let has_finalizers = cur["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if has_finalizers {
            kept = true;
            if !meta_str(cur, "deletionTimestamp").is_empty() {
                return Ok(Change::NoOp);
            }
            let mut v = cur.clone();
            v["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            v["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            return Ok(Change::Update(v));
        }
        Ok(Change::Delete)
    })?;
    if kept {
        return Ok((200, with_gvk(&obj, r.def, &r.version)));
    }
    Ok((
        200,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": r.name, "group": r.def.group, "kind": r.def.resource, "uid": meta_str(&obj, "uid")}}),
    ))
}

fn delete_collection(sh: &Shared, r: &ResReq, query: &Query) -> Result<(u16, Value), ApiError> {
    let (fs, ls) = selectors(r, query)?;
    let (items, rv) = sh.store.list(r.def.key(), ns_filter(r));
    let mut deleted = Vec::new();
    for v in items.iter().filter(|v| fs.matches(v) && ls.matches(v)) {
        let sub = ResReq {
            def: r.def,
            version: r.version.clone(),
            namespace: super::store::namespace_of(v).to_string(),
            name: name_of(v).to_string(),
            subresource: String::new(),
            watch_path: false,
            force_conflict: false,
            manager: String::new(),
            force: false,
        };
        match delete(sh, &sub, &[], query) {
            Ok(_) => {
                let mut item = (**v).clone();
                if let Some(m) = item.as_object_mut() {
                    m.remove("kind");
                    m.remove("apiVersion");
                }
                deleted.push(item);
            }
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let _ = EventType::Deleted;
    Ok((
        200,
        json!({"kind": r.def.list_kind(), "apiVersion": r.def.api_version(&r.version),
               "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
    ))
}
