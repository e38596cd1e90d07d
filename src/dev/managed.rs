//! Field ownership (`metadata.managedFields`, FieldsV1) for server-side apply: who set which
//! field, apply conflicts when another manager owns a field whose value an apply would change,
//! and removal of fields a manager stops applying. Lists of objects that all carry a `type`
//! (conditions, `listType=map` keyed by type) are tracked per item as `k:{"type":"…"}`, so an
//! approver's Approved and a signer's Failed condition have different owners; other lists are
//! atomic leaves.

use serde_json::{json, Map, Value};

use super::status::{ApiError, Gr};

type Path = Vec<String>;

/// Fields the server owns or that identify the object: never tracked.
fn ignored(p: &[String]) -> bool {
    match p {
        [a] if a == "apiVersion" || a == "kind" => true,
        [m, f, ..] if m == "metadata" => matches!(
            f.as_str(),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
                | "managedFields"
                | "selfLink"
                | "generateName"
        ),
        _ => false,
    }
}

/// The `k:{"type":"X"}` key of a typed list item, if the list is keyed by type.
fn item_key(item: &Value) -> Option<String> {
    item["type"]
        .as_str()
        .map(|t| format!("k:{}", json!({"type": t})))
}

fn keyed_list(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(|i| item_key(i).is_some())
}

/// Leaf paths of a JSON value (objects and type-keyed lists recurse; scalars, other arrays and
/// empty objects are leaves).
pub fn leaves(v: &Value) -> Vec<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut Vec<Path>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    prefix.push(k.clone());
                    walk(x, prefix, out);
                    prefix.pop();
                }
            }
            Value::Array(items) if keyed_list(items) => {
                for item in items {
                    if let Some(k) = item_key(item) {
                        prefix.push(k);
                        walk(item, prefix, out);
                        prefix.pop();
                    }
                }
            }
            _ => {
                if !prefix.is_empty() && !ignored(prefix) {
                    out.push(prefix.clone());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn value_at<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for k in p {
        cur = if k.starts_with("k:") {
            cur.as_array()?
                .iter()
                .find(|i| item_key(i).as_deref() == Some(k.as_str()))?
        } else {
            cur.as_object()?.get(k)?
        };
    }
    Some(cur)
}

fn remove_at(v: &mut Value, p: &[String]) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        let next = if k.starts_with("k:") {
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|i| item_key(i).as_deref() == Some(k.as_str()))
            })
        } else {
            cur.as_object_mut().and_then(|m| m.get_mut(k))
        };
        match next {
            Some(x) => cur = x,
            None => return,
        }
    }
    if last.starts_with("k:") {
        if let Some(a) = cur.as_array_mut() {
            a.retain(|i| item_key(i).as_deref() != Some(last.as_str()));
        }
    } else if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn to_fields_v1(paths: &[Path]) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for k in p {
            let key = if k.starts_with("k:") {
                k.clone()
            } else {
                format!("f:{k}")
            };
            let node = cur.entry(key).or_insert_with(|| json!({}));
            let Some(m) = node.as_object_mut() else { break };
            cur = m;
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value) -> Vec<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut Vec<Path>) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<(&String, &Value)> = m
            .iter()
            .filter(|(k, _)| k.starts_with("f:") || k.starts_with("k:"))
            .collect();
        if (children.is_empty() || m.contains_key(".")) && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (k, x) in children {
            prefix.push(if k.starts_with("k:") {
                k.clone()
            } else {
                k[2..].to_string()
            });
            walk(x, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

struct Entry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: String,
    paths: Vec<Path>,
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
                    paths: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn store(obj: &mut Value, list: Vec<Entry>) {
    let arr: Vec<Value> = list
        .into_iter()
        .filter(|e| !e.paths.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                               "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.paths)});
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
}

fn upsert<'e>(list: &'e mut Vec<Entry>, w: &Writer<'_>, operation: &str) -> &'e mut Entry {
    let pos = list.iter().position(|e| {
        e.manager == w.manager && e.operation == operation && e.subresource == w.subresource
    });
    let i = match pos {
        Some(i) => i,
        None => {
            list.push(Entry {
                manager: w.manager.to_string(),
                operation: operation.to_string(),
                subresource: w.subresource.to_string(),
                api_version: w.api_version.to_string(),
                time: w.now.to_string(),
                paths: Vec::new(),
            });
            list.len() - 1
        }
    };
    let e = &mut list[i];
    e.time = w.now.to_string();
    e
}

/// Records a non-apply write (create, update, patch): the writer takes ownership of every field
/// whose value it changed; other managers lose those fields.
pub fn record_update(new: &mut Value, old: Option<&Value>, w: &Writer<'_>) {
    let mut list = old.map(entries).unwrap_or_default();
    let empty = Value::Null;
    let old_v = old.unwrap_or(&empty);
    let mut changed: Vec<Path> = leaves(new)
        .into_iter()
        .filter(|p| value_at(old_v, p) != value_at(new, p))
        .collect();
    // Fields that disappeared are released by everyone.
    let removed: Vec<Path> = leaves(old_v)
        .into_iter()
        .filter(|p| value_at(new, p).is_none())
        .collect();
    for e in list.iter_mut() {
        e.paths
            .retain(|q| !changed.iter().chain(removed.iter()).any(|p| overlaps(p, q)));
    }
    if !changed.is_empty() {
        let e = upsert(&mut list, w, "Update");
        e.paths.append(&mut changed);
        e.paths.sort();
        e.paths.dedup();
    }
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
    gr: Gr<'_>,
    name: &str,
) -> Result<(), ApiError> {
    let mut list = old.map(entries).unwrap_or_default();
    let empty = Value::Null;
    let old_v = old.unwrap_or(&empty);
    let applied_paths = leaves(applied);
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for p in &applied_paths {
        if value_at(old_v, p) == value_at(applied, p) {
            continue;
        }
        for e in &list {
            if e.manager != w.manager && e.paths.iter().any(|q| overlaps(p, q)) {
                conflicts.push((e.manager.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(apply_conflict(&conflicts, w.api_version, gr, name));
    }
    // Forced (or uncontested) fields move to this manager.
    for e in list.iter_mut() {
        if e.manager != w.manager {
            e.paths
                .retain(|q| !conflicts.iter().any(|(_, p)| overlaps(p, q)));
        }
    }
    let previous: Vec<Path> = list
        .iter()
        .find(|e| {
            e.manager == w.manager && e.operation == "Apply" && e.subresource == w.subresource
        })
        .map(|e| e.paths.clone())
        .unwrap_or_default();
    for p in previous.iter().filter(|p| !applied_paths.contains(p)) {
        let owned_by_other = list.iter().any(|e| {
            !(e.manager == w.manager && e.operation == "Apply")
                && e.paths.iter().any(|q| overlaps(p, q))
        });
        if !owned_by_other {
            remove_at(new, p);
        }
    }
    let e = upsert(&mut list, w, "Apply");
    e.paths = applied_paths;
    e.paths.sort();
    e.paths.dedup();
    store(new, list);
    Ok(())
}

fn apply_conflict(
    conflicts: &[(String, Path)],
    api_version: &str,
    gr: Gr<'_>,
    name: &str,
) -> ApiError {
    let version = api_version.rsplit('/').next().unwrap_or(api_version);
    let field = |p: &Path| format!(".{}", p.join("."));
    let message = if conflicts.len() == 1 {
        let (m, p) = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with {m:?} using {version}: {}",
            field(p)
        )
    } else {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with {m:?} using {version}: {}", field(p)))
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m:?} using {version}"), "field": field(p)}))
        .collect();
    ApiError::new(
        409,
        "Conflict",
        message,
        Some(json!({"name": name, "group": gr.group, "kind": gr.resource, "causes": causes})),
    )
}
