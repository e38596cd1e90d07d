//! Field ownership (`metadata.managedFields`, FieldsV1) as kube-apiserver's field manager keeps it
//! (k8s.io/apimachinery `managedfields/internal` over sigs.k8s.io/structured-merge-diff):
//!
//! - a write's field set is what it added or modified compared with the live object
//!   (`typed.Compare`): leaves, plus every map, list item or set member it created (encoded with
//!   `"."`); an apply owns exactly the fields of its configuration (`ToFieldSet`);
//! - fields the write path's strategy resets (`GetResetFields`, e.g. `spec` and `status` for a CSR
//!   written through the main resource) are never owned through that path, and the identity
//!   fields (`metadata.name`, `uid`, …) never at all;
//! - updates of an object without managed fields are not tracked (`skipNonAppliedManager`) until
//!   the first apply, which attributes the existing fields to `before-first-apply`;
//! - an apply conflicts (409) when it changes a field another manager owns, unless forced; a
//!   non-apply write takes such fields over; removed fields are released by everyone; fields an
//!   applier stops applying are removed unless someone else owns them.
//!
//! Lists: `conditions` are maps keyed by `type` (`k:{"type":"Approved"}`), `ownerReferences` by
//! `uid`, `metadata.finalizers` are sets (`v:"example.com/x"`); other lists are atomic leaves.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::status::ApiError;

/// Field names, `k:{…}` keys of associative list items and `v:…` members of set lists.
type Path = Vec<String>;
type Set = BTreeSet<Path>;

/// `stripMetaManager`: identity fields no manager owns.
fn stripped(p: &[String]) -> bool {
    match p {
        [a] => matches!(a.as_str(), "apiVersion" | "kind" | "metadata"),
        [m, f] if m == "metadata" => matches!(
            f.as_str(),
            "name"
                | "namespace"
                | "creationTimestamp"
                | "selfLink"
                | "uid"
                | "clusterName"
                | "generation"
                | "managedFields"
                | "resourceVersion"
        ),
        _ => false,
    }
}

enum ListKind {
    /// listType=map with these keys.
    Map(&'static [&'static str]),
    /// listType=set.
    Set,
    Atomic,
}

fn list_kind(path: &[String]) -> ListKind {
    match path {
        [.., f] if f == "conditions" => ListKind::Map(&["type"]),
        [m, f] if m == "metadata" && f == "finalizers" => ListKind::Set,
        [m, f] if m == "metadata" && f == "ownerReferences" => ListKind::Map(&["uid"]),
        _ => ListKind::Atomic,
    }
}

/// The path element of a list item: `k:{"type":"X"}` or `v:"value"`.
fn item_pe(kind: &ListKind, item: &Value) -> Option<String> {
    match kind {
        ListKind::Map(keys) => {
            let mut m = Map::new();
            for k in keys.iter() {
                m.insert(k.to_string(), item.get(*k)?.clone());
            }
            Some(format!("k:{}", Value::Object(m)))
        }
        ListKind::Set => Some(format!("v:{item}")),
        ListKind::Atomic => None,
    }
}

/// A list's items by path element (the first of duplicates).
fn items_by_pe(kind: &ListKind, items: &[Value]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for i in items {
        if let Some(pe) = item_pe(kind, i) {
            if !out.iter().any(|(p, _)| *p == pe) {
                out.push((pe, i.clone()));
            }
        }
    }
    out
}

/// What changed between two objects (`typed.Comparison`).
#[derive(Default)]
struct Comparison {
    added: Set,
    modified: Set,
    removed: Set,
}

fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

fn compare(l: Option<&Value>, r: Option<&Value>, path: &mut Path, c: &mut Comparison) {
    let (l, r) = (present(l), present(r));
    if l.is_none() && r.is_none() {
        return;
    }
    let leaf = |path: &Path, c: &mut Comparison| {
        if path.is_empty() {
            return;
        }
        match (l, r) {
            (None, _) => c.added.insert(path.clone()),
            (_, None) => c.removed.insert(path.clone()),
            (Some(a), Some(b)) if a != b => c.modified.insert(path.clone()),
            _ => false,
        };
    };
    let empty_map = |v: Option<&Value>| v.is_none_or(|v| v.as_object().is_some_and(Map::is_empty));
    let empty_list = |v: Option<&Value>| v.is_none_or(|v| v.as_array().is_some_and(Vec::is_empty));
    let is = |v: Option<&Value>, f: fn(&Value) -> bool| v.is_none_or(f);
    if is(l, Value::is_object) && is(r, Value::is_object) {
        if empty_map(l) && empty_map(r) {
            return leaf(path, c);
        }
        let keys: BTreeSet<&String> = l
            .and_then(Value::as_object)
            .into_iter()
            .chain(r.and_then(Value::as_object))
            .flat_map(|m| m.keys())
            .collect();
        for k in keys {
            path.push(k.clone());
            compare(l.and_then(|v| v.get(k)), r.and_then(|v| v.get(k)), path, c);
            path.pop();
        }
    } else if is(l, Value::is_array) && is(r, Value::is_array) {
        let kind = list_kind(path);
        if matches!(kind, ListKind::Atomic) || (empty_list(l) && empty_list(r)) {
            return leaf(path, c);
        }
        let li = items_by_pe(&kind, l.and_then(Value::as_array).map_or(&[], |v| v));
        let ri = items_by_pe(&kind, r.and_then(Value::as_array).map_or(&[], |v| v));
        let mut pes: Vec<&String> = li.iter().map(|(p, _)| p).collect();
        for (p, _) in &ri {
            if !pes.contains(&p) {
                pes.push(p);
            }
        }
        for pe in pes {
            let find = |items: &[(String, Value)]| {
                items.iter().find(|(p, _)| p == pe).map(|(_, v)| v.clone())
            };
            let (a, b) = (find(&li), find(&ri));
            path.push(pe.clone());
            compare(a.as_ref(), b.as_ref(), path, c);
            path.pop();
        }
    } else {
        return leaf(path, c);
    }
    if !path.is_empty() {
        if l.is_none() {
            c.added.insert(path.clone());
        } else if r.is_none() {
            c.removed.insert(path.clone());
        }
    }
}

/// `TypedValue.ToFieldSet`: the fields an applied configuration sets.
fn to_field_set(v: &Value, path: &mut Path, out: &mut Set) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                path.push(k.clone());
                to_field_set(x, path, out);
                if x.is_null() || x.as_object().is_some_and(Map::is_empty) {
                    out.insert(path.clone());
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            let kind = list_kind(path);
            if matches!(kind, ListKind::Atomic) {
                out.insert(path.clone());
                return;
            }
            for (pe, item) in items_by_pe(&kind, items) {
                path.push(pe);
                to_field_set(&item, path, out);
                out.insert(path.clone());
                path.pop();
            }
        }
        _ => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn to_fields_v1(set: &Set) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    fn encode(n: &Node) -> Value {
        let mut m = Map::new();
        if n.member && !n.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &n.children {
            let key = if k.starts_with("k:") || k.starts_with("v:") {
                k.clone()
            } else {
                format!("f:{k}")
            };
            m.insert(key, encode(c));
        }
        Value::Object(m)
    }
    let mut root = Node::default();
    for p in set {
        let mut cur = &mut root;
        for k in p {
            cur = cur.children.entry(k.clone()).or_default();
        }
        cur.member = true;
    }
    encode(&root)
}

fn from_fields_v1(v: &Value) -> Set {
    fn walk(v: &Value, prefix: &mut Path, out: &mut Set) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<(&String, &Value)> = m
            .iter()
            .filter(|(k, _)| k.starts_with("f:") || k.starts_with("k:") || k.starts_with("v:"))
            .collect();
        if (children.is_empty() || m.contains_key(".")) && !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        for (k, x) in children {
            prefix.push(k.strip_prefix("f:").unwrap_or(k).to_string());
            walk(x, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Set::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// fieldpath.Path.String: `.status.conditions[type="Approved"].status`, `.metadata.finalizers[="x"]`.
fn path_string(p: &[String]) -> String {
    let mut s = String::new();
    for e in p {
        if let Some(k) = e.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = keys.iter().map(|(n, v)| format!("{n}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else {
            s.push('.');
            s.push_str(e);
        }
    }
    s
}

#[derive(Clone)]
struct Entry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: String,
    set: Set,
}

impl Entry {
    /// BuildManagerIdentifier: appliers are one manager whatever API version they use.
    fn same_manager(
        &self,
        manager: &str,
        operation: &str,
        subresource: &str,
        api_version: &str,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == "Apply" || self.api_version == api_version)
    }

    /// printManager (conflict messages).
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        // As kube-apiserver's printManager: the version only for updaters, never for appliers.
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or("").to_string(),
                    operation: e["operation"].as_str().unwrap_or("").to_string(),
                    subresource: e["subresource"].as_str().unwrap_or("").to_string(),
                    api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
                    time: e["time"].as_str().unwrap_or("").to_string(),
                    set: from_fields_v1(&e["fieldsV1"]),
                })
                .filter(|e| !e.set.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Encodes the entries, sorted as kube-apiserver sorts them (appliers first, then by time,
/// manager, API version and subresource).
fn store(obj: &mut Value, mut list: Vec<Entry>) {
    list.retain(|e| !e.set.is_empty());
    list.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let arr: Vec<Value> = list
        .into_iter()
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                               "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.set)});
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(m) = obj["metadata"].as_object_mut() {
        if arr.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

/// What wrote the object.
pub struct Writer<'a> {
    pub manager: &'a str,
    pub subresource: &'a str,
    pub api_version: &'a str,
    pub now: &'a str,
    /// The resource's API group and kind (for its reset fields and zero value).
    pub group: &'a str,
    pub kind: &'a str,
}

impl Writer<'_> {
    /// GetResetFields of the write path's strategy: paths whose writes the strategy undoes.
    fn reset(&self, p: &[String]) -> bool {
        let resets: &[&[&str]] = match (self.group, self.kind, self.subresource) {
            ("certificates.k8s.io", "CertificateSigningRequest", "") => &[&["spec"], &["status"]],
            ("certificates.k8s.io", "CertificateSigningRequest", "status") => {
                &[&["spec"], &["status", "conditions"]]
            }
            ("certificates.k8s.io", "CertificateSigningRequest", "approval") => {
                &[&["spec"], &["status", "certificate"]]
            }
            ("", "Namespace", "status") => &[&["spec"]],
            ("", "Namespace", _) => &[&["status"]],
            _ => &[],
        };
        resets
            .iter()
            .any(|r| p.len() >= r.len() && p.iter().zip(r.iter()).all(|(a, b)| a == b))
    }

    /// The fields this write may own: reset and identity fields removed.
    fn filter(&self, set: Set) -> Set {
        set.into_iter()
            .filter(|p| !self.reset(p) && !stripped(p))
            .collect()
    }

    /// The Go zero value of the kind as the field manager sees it: the struct fields that always
    /// exist (so creating an object never "adds" its `spec`).
    fn zero(&self) -> Value {
        match (self.group, self.kind) {
            (_, "CertificateSigningRequest" | "Namespace") => {
                json!({"metadata": {}, "spec": {}, "status": {}})
            }
            (_, "Lease" | "ClusterTrustBundle") => json!({"metadata": {}, "spec": {}}),
            ("", "Event") => json!({"metadata": {}, "involvedObject": {}, "source": {}}),
            ("events.k8s.io", "Event") => json!({"metadata": {}, "regarding": {}}),
            _ => json!({"metadata": {}}),
        }
    }

    fn compare(&self, old: &Value, new: &Value) -> Comparison {
        let mut c = Comparison::default();
        compare(Some(old), Some(new), &mut Vec::new(), &mut c);
        c.added = self.filter(c.added);
        c.modified = self.filter(c.modified);
        c.removed = self.filter(c.removed);
        c
    }

    fn entry(&self, operation: &str, set: Set) -> Entry {
        Entry {
            manager: self.manager.to_string(),
            operation: operation.to_string(),
            subresource: self.subresource.to_string(),
            api_version: self.api_version.to_string(),
            time: self.now.to_string(),
            set,
        }
    }
}

/// `Updater.Update` for `manager` over the other entries: fields it changes move to it, removed
/// fields are released by everyone.
fn update(list: &mut Vec<Entry>, old: &Value, new: &Value, w: &Writer<'_>, manager: &str) {
    let c = w.compare(old, new);
    let changed: Set = c.added.union(&c.modified).cloned().collect();
    for e in list.iter_mut() {
        e.set
            .retain(|p| !changed.contains(p) && !c.removed.contains(p));
    }
    if !changed.is_empty() {
        let pos = list
            .iter()
            .position(|e| e.same_manager(manager, "Update", w.subresource, w.api_version));
        let i = pos.unwrap_or_else(|| {
            list.push(Entry {
                manager: manager.to_string(),
                ..w.entry("Update", Set::new())
            });
            list.len() - 1
        });
        list[i].set.extend(changed);
        list[i].time = w.now.to_string();
    }
    list.retain(|e| !e.set.is_empty());
}

/// Records a non-apply write (create, update, patch) of `new` over `old` (None: a create).
/// `new` is the object as the client sent it, before the strategy's changes.
pub fn record_update(new: &mut Value, old: Option<&Value>, w: &Writer<'_>) {
    let list = old.map(entries).unwrap_or_default();
    if old.is_some() && list.is_empty() {
        // skipNonAppliedManager: not tracked until the first apply.
        store(new, Vec::new());
        return;
    }
    let mut list = list;
    let zero = w.zero();
    update(&mut list, old.unwrap_or(&zero), new, w, w.manager);
    store(new, list);
}

/// Server-side apply bookkeeping on the merged object `new`: conflicts (409 unless `force`),
/// ownership of the applied fields, and removal of fields this manager no longer applies and
/// nobody else owns.
pub fn record_apply(
    new: &mut Value,
    old: Option<&Value>,
    applied: &Value,
    force: bool,
    w: &Writer<'_>,
) -> Result<(), ApiError> {
    let zero = w.zero();
    let live = old.unwrap_or(&zero);
    let mut list = entries(live);
    if list.is_empty() {
        // The fields that exist before the first apply belong to "before-first-apply".
        update(&mut list, &zero, live, w, "before-first-apply");
    }
    let mut set = Set::new();
    to_field_set(applied, &mut Vec::new(), &mut set);
    let set = w.filter(set);
    let previous = list
        .iter()
        .find(|e| e.same_manager(w.manager, "Apply", w.subresource, w.api_version))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    list.retain(|e| !e.same_manager(w.manager, "Apply", w.subresource, w.api_version));
    // Fields no longer applied and owned by nobody else are removed.
    for p in previous.iter().filter(|p| !set.contains(*p)) {
        let kept = set.iter().any(|q| q.starts_with(p))
            || list.iter().any(|e| e.set.iter().any(|q| overlaps(p, q)));
        if !kept {
            remove_at(new, p);
        }
    }
    let c = w.compare(live, new);
    let changed: Set = c.added.union(&c.modified).cloned().collect();
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for e in &list {
        for p in e.set.intersection(&changed) {
            conflicts.push((e.describe(), p.clone()));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(apply_conflict(&conflicts));
    }
    for e in list.iter_mut() {
        e.set
            .retain(|p| !changed.contains(p) && !c.removed.contains(p));
    }
    list.retain(|e| !e.set.is_empty());
    list.push(w.entry("Apply", set));
    store(new, list);
    Ok(())
}

fn remove_at(v: &mut Value, p: &[String]) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    let mut at: Vec<String> = Vec::new();
    for k in parents {
        let next = if k.starts_with("k:") || k.starts_with("v:") {
            let kind = list_kind(&at);
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|i| item_pe(&kind, i).as_deref() == Some(k.as_str()))
            })
        } else {
            cur.as_object_mut().and_then(|m| m.get_mut(k))
        };
        match next {
            Some(x) => cur = x,
            None => return,
        }
        at.push(k.clone());
    }
    if last.starts_with("k:") || last.starts_with("v:") {
        let kind = list_kind(&at);
        if let Some(a) = cur.as_array_mut() {
            a.retain(|i| item_pe(&kind, i).as_deref() != Some(last.as_str()));
        }
    } else if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// NewConflictError: one cause per conflicting field; the message lists them per manager.
fn apply_conflict(conflicts: &[(String, Path)]) -> ApiError {
    let message = if conflicts.len() == 1 {
        let (m, p) = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with {m}: {}",
            path_string(p)
        )
    } else {
        let mut by_manager: BTreeMap<&String, Vec<String>> = BTreeMap::new();
        for (m, p) in conflicts {
            by_manager.entry(m).or_default().push(path_string(p));
        }
        let mut lines = Vec::new();
        for (m, paths) in by_manager {
            lines.push(format!("conflicts with {m}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": path_string(p)}))
        .collect();
    // errors.NewApplyConflict: the details carry only the causes.
    ApiError::new(409, "Conflict", message, Some(json!({"causes": causes})))
}
