//! Update, the patch flavours (JSON, merge, strategic merge, apply) and delete / deletecollection.

#[allow(unused_imports)]
use super::*;

pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

pub(super) enum Input {
    Put(Value),
    Patch(PatchKind, Value),
}

/// Strategic merge for the types served here: a JSON merge patch, except that
/// `metadata.finalizers` (patchStrategy=merge) is unioned and `$patch`/`$retainKeys` directives
/// are dropped. No CSR, Lease, Event or ConfigMap field has a list merge key that matters.
pub(super) fn strategic_merge(doc: &mut Value, patch: &Value) {
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

pub(super) fn strip_directives(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !k.starts_with('$') && !k.starts_with("$setElementOrder"));
        for (_, x) in m.iter_mut() {
            strip_directives(x);
        }
    }
}

/// Server-side apply, simplified: the applied configuration is merged into the live object, with
/// `status.conditions` merged by `type` (its listMapKey). Field ownership is not tracked.
pub(super) fn apply_merge(doc: &mut Value, applied: &Value) {
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

enum InputKind {
    Put,
    Patch,
}

fn def_is_pcr(def: &ResourceDef) -> bool {
    def.behaviour == Behaviour::Pcr
}

pub(super) fn patch(
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

pub(super) fn meta_str<'a>(v: &'a Value, f: &str) -> &'a str {
    v["metadata"][f].as_str().unwrap_or("")
}

/// Compare ignoring the fields the store owns.
pub(super) fn same_object(a: &Value, b: &Value) -> bool {
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

pub(super) fn update(
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
        if def_is_pcr(r.def) {
            crate::pcr::check_types(obj, &r.version)?;
        }
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
    let input_kind = match &input {
        Input::Put(_) => InputKind::Put,
        Input::Patch(..) => InputKind::Patch,
    };
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
                        crate::managed::record_apply(&mut doc, Some(cur), &p, r.force, &w)?;
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
                // The generic store's error names the resource where the kind belongs (and prints
                // the uint64 0).
                let errs = [FieldError::invalid("metadata.resourceVersion", "0".into(), "must be specified for an update")];
                let as_kind = crate::status::Gr { kind: gr.resource, ..gr };
                return Err(ApiError::invalid(as_kind, &r.name, &errs));
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
            Behaviour::ClusterTrustBundle => errs.extend(crate::ctb::validate(&new, Some(cur))),
            Behaviour::Pcr => {
                if !matches!(input_kind, InputKind::Put) {
                    crate::pcr::check_types(&new, &version)?;
                }
                let status = r.subresource == "status";
                crate::pcr::prepare_update(&mut new, cur, &version, status);
                if status {
                    errs.extend(crate::pcr::validate_status_update(&new, cur, chrono::Utc::now()));
                    if errs.is_empty() {
                        errs.extend(crate::pcr::sign_check(&new, cur, user));
                    }
                } else {
                    errs.extend(crate::pcr::validate_update(&new, cur));
                }
            }
            Behaviour::Namespace => {
                if r.subresource.is_empty() {
                    new["status"] = cur["status"].clone();
                } else {
                    new["spec"] = cur["spec"].clone();
                }
                new["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(r.name);
            }
            Behaviour::Generic | Behaviour::AccessReview | Behaviour::SubjectAccessReview => {}
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(gr, &r.name, &errs));
        }
        match def.behaviour {
            Behaviour::Csr => csr::admit_update(&new, cur, path, user)?,
            Behaviour::ClusterTrustBundle => crate::ctb::admit(&new, Some(cur), user)?,
            _ => {}
        }
        if same_object(&new, cur) {
            return Ok(Change::NoOp);
        }
        if !applied {
            crate::managed::record_update(&mut sent, Some(cur), &w);
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

pub(super) fn delete(
    sh: &Shared,
    r: &ResReq,
    body: &[u8],
    query: &Query,
) -> Result<(u16, Value), ApiError> {
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

pub(super) fn delete_collection(
    sh: &Shared,
    r: &ResReq,
    query: &Query,
) -> Result<(u16, Value), ApiError> {
    let (fs, ls) = selectors(r, query)?;
    let (items, rv) = sh.store.list(r.def.key(), ns_filter(r));
    let mut deleted = Vec::new();
    for v in items.iter().filter(|v| fs.matches(v) && ls.matches(v)) {
        let sub = ResReq {
            def: r.def,
            version: r.version.clone(),
            namespace: crate::store::namespace_of(v).to_string(),
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
