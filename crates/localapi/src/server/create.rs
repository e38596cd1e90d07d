//! Create, and the metadata rules every write shares (generateName, GVK, namespace, managed fields,
//! field validation, dry run).

#[allow(unused_imports)]
use super::*;

/// Generic ObjectMeta name checks on create (path segment rules, plus DNS rules per resource).
pub(super) fn validate_meta_create(def: &ResourceDef, obj: &Value) -> Vec<FieldError> {
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
        Behaviour::Csr
        | Behaviour::ClusterTrustBundle
        | Behaviour::AccessReview
        | Behaviour::SubjectAccessReview => {}
        Behaviour::Namespace => {
            for m in csr::dns1123_label_errors(name) {
                el.push(FieldError::invalid("metadata.name", quote(name), m));
            }
        }
        Behaviour::Generic | Behaviour::Pcr => {
            if el.is_empty() && def.resource != "events" {
                for m in csr::dns1123_subdomain_errors(name) {
                    el.push(FieldError::invalid("metadata.name", quote(name), m));
                }
            }
        }
    }
    el
}

pub(super) fn generate_suffix() -> String {
    use rand::Rng;
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char)
        .collect()
}

pub(super) fn check_gvk(obj: &Value, def: &ResourceDef, version: &str) -> Result<(), ApiError> {
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

pub(super) fn namespace_exists(sh: &Shared, ns: &str) -> Result<(), ApiError> {
    if sh.store.get("core/namespaces", "", ns).is_some() {
        return Ok(());
    }
    Err(ApiError::not_found(
        crate::status::Gr {
            group: "",
            resource: "namespaces",
            kind: "Namespace",
        },
        ns,
    ))
}

pub(super) fn clean_meta(meta: &mut Value) {
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
pub(super) fn take_managed_fields(obj: &mut Value, sent: &Value) {
    match sent["metadata"].get("managedFields") {
        Some(m) => obj["metadata"]["managedFields"] = m.clone(),
        None => {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
        }
    }
}

pub(super) fn writer<'a>(
    r: &'a ResReq,
    api_version: &'a str,
    now: &'a str,
) -> crate::managed::Writer<'a> {
    crate::managed::Writer {
        manager: &r.manager,
        subresource: &r.subresource,
        api_version,
        now,
        group: r.def.group,
        kind: r.def.kind,
    }
}

pub(super) fn create(
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
    if r.def.behaviour == Behaviour::Pcr {
        crate::pcr::check_types(&obj, &r.version)?;
    }
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
        Behaviour::ClusterTrustBundle => errs.extend(crate::ctb::validate(&obj, None)),
        Behaviour::Pcr => {
            crate::pcr::prepare_create(&mut obj, &r.version);
            // NodeRestriction is mutating admission: it runs before the strategy's validation.
            crate::pcr::admit_create(&sh.store, &obj, user, &r.namespace)?;
            errs.extend(crate::pcr::validate_create(&obj));
        }
        Behaviour::Namespace => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            if let Some(l) = obj["metadata"].as_object_mut() {
                let labels = l.entry("labels").or_insert(json!({}));
                labels["kubernetes.io/metadata.name"] = json!(name);
            }
        }
        Behaviour::Generic | Behaviour::AccessReview | Behaviour::SubjectAccessReview => {}
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(gr, &name, &errs));
    }
    match r.def.behaviour {
        Behaviour::Csr => csr::admit_create(&obj)?,
        Behaviour::ClusterTrustBundle => crate::ctb::admit(&obj, None, user)?,
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
        Some(a) => crate::managed::record_apply(&mut sent, None, a, true, &w)?,
        None => crate::managed::record_update(&mut sent, None, &w),
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
pub(super) fn field_validation(
    def: &ResourceDef,
    obj: &Value,
    query: &Query,
) -> Result<(), ApiError> {
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
pub(super) fn check_meta_types(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
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

pub(super) fn is_dry_run(query: &Query) -> bool {
    query.get("dryRun").is_some_and(|d| d == "All")
}
