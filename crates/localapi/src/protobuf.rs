//! Decoding of Kubernetes protobuf bodies (`k8s\0` + runtime.Unknown) for the kinds kubectl 1.32+
//! sends as protobuf here: CertificateSigningRequest (`kubectl certificate approve|deny`), ConfigMap
//! and Namespace (`kubectl create`). Only decoding is needed:
//! responses are JSON, which client-go accepts. Field numbers are those of k8s.io/api generated.proto.

use base64::Engine;
use serde_json::{json, Map, Value};

type R<T> = Result<T, String>;

struct Reader<'a> {
    b: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> R<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some((&c, rest)) = self.b.split_first() else {
                return Err("truncated varint".into());
            };
            self.b = rest;
            v |= u64::from(c & 0x7f) << (7 * i);
            if c & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn next(&mut self) -> R<Option<(u64, Field<'a>)>> {
        if self.b.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wt) = (key >> 3, key & 7);
        let f = match wt {
            0 => Field::Varint(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
                if len > self.b.len() {
                    return Err("truncated field".into());
                }
                let (x, rest) = self.b.split_at(len);
                self.b = rest;
                Field::Bytes(x)
            }
            1 => {
                if self.b.len() < 8 {
                    return Err("truncated fixed64".into());
                }
                self.b = &self.b[8..];
                Field::Fixed
            }
            5 => {
                if self.b.len() < 4 {
                    return Err("truncated fixed32".into());
                }
                self.b = &self.b[4..];
                Field::Fixed
            }
            _ => return Err(format!("unsupported wire type {wt}")),
        };
        Ok(Some((num, f)))
    }
}

fn fields(b: &[u8]) -> R<Vec<(u64, Field<'_>)>> {
    let mut r = Reader { b };
    let mut out = Vec::new();
    while let Some(f) = r.next()? {
        out.push(f);
    }
    Ok(out)
}

fn string(b: &[u8]) -> R<String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8".to_string())
}

fn time(b: &[u8]) -> R<Value> {
    let mut secs = 0i64;
    for (n, f) in fields(b)? {
        if let (1, Field::Varint(v)) = (n, f) {
            secs = v as i64;
        }
    }
    // Go encodes the zero metav1.Time as an empty message (or year 1): both mean "unset".
    if secs <= 0 {
        return Ok(Value::Null);
    }
    let t = chrono::DateTime::from_timestamp(secs, 0).ok_or("bad time")?;
    Ok(json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
}

fn map_entry(b: &[u8]) -> R<(String, String)> {
    let (mut k, mut v) = (String::new(), String::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = string(x)?,
            (2, Field::Bytes(x)) => v = string(x)?,
            _ => {}
        }
    }
    Ok((k, v))
}

fn owner_ref(b: &[u8]) -> R<Value> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => drop(m.insert("kind".into(), json!(string(x)?))),
            (3, Field::Bytes(x)) => drop(m.insert("name".into(), json!(string(x)?))),
            (4, Field::Bytes(x)) => drop(m.insert("uid".into(), json!(string(x)?))),
            (5, Field::Bytes(x)) => drop(m.insert("apiVersion".into(), json!(string(x)?))),
            (6, Field::Varint(v)) => drop(m.insert("controller".into(), json!(v != 0))),
            (7, Field::Varint(v)) => drop(m.insert("blockOwnerDeletion".into(), json!(v != 0))),
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

fn object_meta(b: &[u8]) -> R<Value> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    let mut owners = Vec::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => drop(m.insert("name".into(), json!(string(x)?))),
            (2, Field::Bytes(x)) => drop(m.insert("generateName".into(), json!(string(x)?))),
            (3, Field::Bytes(x)) => drop(m.insert("namespace".into(), json!(string(x)?))),
            (5, Field::Bytes(x)) => drop(m.insert("uid".into(), json!(string(x)?))),
            (6, Field::Bytes(x)) => drop(m.insert("resourceVersion".into(), json!(string(x)?))),
            (7, Field::Varint(v)) => drop(m.insert("generation".into(), json!(v as i64))),
            (8, Field::Bytes(x)) => drop(m.insert("creationTimestamp".into(), time(x)?)),
            (9, Field::Bytes(x)) => drop(m.insert("deletionTimestamp".into(), time(x)?)),
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                labels.insert(k, json!(v));
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                annotations.insert(k, json!(v));
            }
            (13, Field::Bytes(x)) => owners.push(owner_ref(x)?),
            (14, Field::Bytes(x)) => finalizers.push(json!(string(x)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    if !owners.is_empty() {
        m.insert("ownerReferences".into(), Value::Array(owners));
    }
    Ok(Value::Object(m))
}

fn spec(b: &[u8]) -> R<Value> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut m = Map::new();
    let mut groups = Vec::new();
    let mut usages = Vec::new();
    let mut extra = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => drop(m.insert("request".into(), json!(b64.encode(x)))),
            (2, Field::Bytes(x)) => drop(m.insert("username".into(), json!(string(x)?))),
            (3, Field::Bytes(x)) => drop(m.insert("uid".into(), json!(string(x)?))),
            (4, Field::Bytes(x)) => groups.push(json!(string(x)?)),
            (5, Field::Bytes(x)) => usages.push(json!(string(x)?)),
            (6, Field::Bytes(x)) => {
                let mut key = String::new();
                let mut items = Vec::new();
                for (n2, f2) in fields(x)? {
                    match (n2, f2) {
                        (1, Field::Bytes(k)) => key = string(k)?,
                        (2, Field::Bytes(v)) => {
                            for (n3, f3) in fields(v)? {
                                if let (1, Field::Bytes(i)) = (n3, f3) {
                                    items.push(json!(string(i)?));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                extra.insert(key, Value::Array(items));
            }
            (7, Field::Bytes(x)) => drop(m.insert("signerName".into(), json!(string(x)?))),
            (8, Field::Varint(v)) => {
                drop(m.insert("expirationSeconds".into(), json!(v as i64 as i32)))
            }
            _ => {}
        }
    }
    if !groups.is_empty() {
        m.insert("groups".into(), Value::Array(groups));
    }
    if !usages.is_empty() {
        m.insert("usages".into(), Value::Array(usages));
    }
    if !extra.is_empty() {
        m.insert("extra".into(), Value::Object(extra));
    }
    Ok(Value::Object(m))
}

fn condition(b: &[u8]) -> R<Value> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => drop(m.insert("type".into(), json!(string(x)?))),
            (2, Field::Bytes(x)) => drop(m.insert("reason".into(), json!(string(x)?))),
            (3, Field::Bytes(x)) => drop(m.insert("message".into(), json!(string(x)?))),
            (4, Field::Bytes(x)) => drop(m.insert("lastUpdateTime".into(), time(x)?)),
            (5, Field::Bytes(x)) => drop(m.insert("lastTransitionTime".into(), time(x)?)),
            // Zero times decode to null and are filled by the strategy.
            (6, Field::Bytes(x)) => drop(m.insert("status".into(), json!(string(x)?))),
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

fn status(b: &[u8]) -> R<Value> {
    let mut m = Map::new();
    let mut conds = Vec::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => conds.push(condition(x)?),
            (2, Field::Bytes(x)) => drop(m.insert(
                "certificate".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(x)),
            )),
            _ => {}
        }
    }
    if !conds.is_empty() {
        m.insert("conditions".into(), Value::Array(conds));
    }
    Ok(Value::Object(m))
}

fn bytes_map_entry(b: &[u8]) -> R<(String, Value)> {
    let (mut k, mut v) = (String::new(), Vec::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = string(x)?,
            (2, Field::Bytes(x)) => v = x.to_vec(),
            _ => {}
        }
    }
    Ok((
        k,
        json!(base64::engine::general_purpose::STANDARD.encode(v)),
    ))
}

/// ConfigMap{metadata=1, data=2, binaryData=3, immutable=4}.
fn config_map(raw: &[u8], obj: &mut Map<String, Value>) -> R<()> {
    let (mut data, mut binary) = (Map::new(), Map::new());
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(x)) => drop(obj.insert("metadata".into(), object_meta(x)?)),
            (2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                data.insert(k, json!(v));
            }
            (3, Field::Bytes(x)) => {
                let (k, v) = bytes_map_entry(x)?;
                binary.insert(k, v);
            }
            (4, Field::Varint(v)) => drop(obj.insert("immutable".into(), json!(v != 0))),
            _ => {}
        }
    }
    if !data.is_empty() {
        obj.insert("data".into(), Value::Object(data));
    }
    if !binary.is_empty() {
        obj.insert("binaryData".into(), Value::Object(binary));
    }
    Ok(())
}

/// Namespace{metadata=1, spec=2{finalizers=1}}; status is server-owned.
fn namespace(raw: &[u8], obj: &mut Map<String, Value>) -> R<()> {
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(x)) => drop(obj.insert("metadata".into(), object_meta(x)?)),
            (2, Field::Bytes(x)) => {
                let mut fins = Vec::new();
                for (n2, f2) in fields(x)? {
                    if let (1, Field::Bytes(v)) = (n2, f2) {
                        fins.push(json!(string(v)?));
                    }
                }
                obj.insert("spec".into(), json!({"finalizers": fins}));
            }
            _ => {}
        }
    }
    Ok(())
}

/// SelfSubjectAccessReview{spec=2{resourceAttributes=1{namespace=1, verb=2, group=3, version=4,
/// resource=5, subresource=6, name=7}, nonResourceAttributes=2{path=1, verb=2}}}.
fn access_review(raw: &[u8], obj: &mut Map<String, Value>) -> R<()> {
    const RES: [&str; 7] = [
        "namespace",
        "verb",
        "group",
        "version",
        "resource",
        "subresource",
        "name",
    ];
    let mut spec = Map::new();
    for (n, f) in fields(raw)? {
        if let (2, Field::Bytes(x)) = (n, f) {
            for (n2, f2) in fields(x)? {
                let (key, names): (&str, &[&str]) = match n2 {
                    1 => ("resourceAttributes", &RES),
                    2 => ("nonResourceAttributes", &["path", "verb"]),
                    _ => continue,
                };
                let Field::Bytes(attrs) = f2 else { continue };
                let mut m = Map::new();
                for (n3, f3) in fields(attrs)? {
                    if let Field::Bytes(v) = f3 {
                        if let Some(name) = usize::try_from(n3)
                            .ok()
                            .and_then(|i| names.get(i.wrapping_sub(1)))
                        {
                            m.insert((*name).to_string(), json!(string(v)?));
                        }
                    }
                }
                spec.insert(key.to_string(), Value::Object(m));
            }
        }
    }
    obj.insert("spec".into(), Value::Object(spec));
    Ok(())
}

/// Decodes `k8s\0` + runtime.Unknown{typeMeta, raw} into JSON form, for the kinds kubectl sends
/// as protobuf to the resources served here (CertificateSigningRequest, ConfigMap, Namespace).
pub fn decode(body: &[u8]) -> R<Value> {
    let rest = body
        .strip_prefix(b"k8s\x00")
        .ok_or("missing protobuf envelope magic")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n2, f2) in fields(tm)? {
                    match (n2, f2) {
                        (1, Field::Bytes(x)) => api_version = string(x)?,
                        (2, Field::Bytes(x)) => kind = string(x)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = Some(x),
            _ => {}
        }
    }
    let raw = raw.ok_or("missing raw object")?;
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    match kind.as_str() {
        "CertificateSigningRequest" => {}
        "ConfigMap" => {
            config_map(raw, &mut obj)?;
            return Ok(Value::Object(obj));
        }
        "Namespace" => {
            namespace(raw, &mut obj)?;
            return Ok(Value::Object(obj));
        }
        "SelfSubjectAccessReview" => {
            access_review(raw, &mut obj)?;
            return Ok(Value::Object(obj));
        }
        // `kubectl auth whoami`: nothing in the request is read (the answer is the caller).
        "SelfSubjectReview" => return Ok(Value::Object(obj)),
        other => return Err(format!("unsupported protobuf kind {other:?}")),
    }
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(x)) => drop(obj.insert("metadata".into(), object_meta(x)?)),
            (2, Field::Bytes(x)) => drop(obj.insert("spec".into(), spec(x)?)),
            (3, Field::Bytes(x)) => drop(obj.insert("status".into(), status(x)?)),
            _ => {}
        }
    }
    Ok(Value::Object(obj))
}
