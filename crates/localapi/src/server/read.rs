//! Reads: get, list (selectors, paging with continue tokens) and watch (bookmarks, 410 Gone, streaming
//! lists), with Table output for kubectl.

#[allow(unused_imports)]
use super::*;

pub(super) fn get(
    sh: &Shared,
    r: &ResReq,
    want_table: bool,
    query: &Query,
) -> Result<(u16, Value), ApiError> {
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

pub(super) fn selectors(
    r: &ResReq,
    query: &Query,
) -> Result<(FieldSelector, LabelSelector), ApiError> {
    let fs = FieldSelector::parse(
        query.get("fieldSelector").unwrap_or(""),
        r.def.field_selectors,
    )?;
    let ls = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
    Ok((fs, ls))
}

pub(super) fn ns_filter(r: &ResReq) -> Option<&str> {
    if r.def.namespaced && !r.namespace.is_empty() {
        Some(r.namespace.as_str())
    } else {
        None
    }
}

pub(super) fn list(
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
                (crate::store::namespace_of(v), name_of(v)) > (ns.as_str(), n.as_str())
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
                crate::store::namespace_of(last).to_string(),
                name_of(last).to_string(),
            );
            let more = items.iter().any(|v| {
                (crate::store::namespace_of(v), name_of(v)) > (key.0.as_str(), key.1.as_str())
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

pub(super) fn encode_continue(rv: u64, key: &(String, String)) -> String {
    use base64::Engine;
    let raw = json!({"rv": rv, "ns": key.0, "name": key.1}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

pub(super) fn decode_continue(s: &str) -> Option<(u64, (String, String))> {
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

pub(super) fn watch(sh: &Arc<Shared>, r: &ResReq, query: &Query, want_table: bool) -> Response {
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

pub(super) fn watch_stream(
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

pub(super) fn watch_response(body: Body) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .header("transfer-encoding", "chunked")
        .body(body)
        .unwrap_or_default()
}
