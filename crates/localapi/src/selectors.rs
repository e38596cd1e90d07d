//! Field and label selectors (`fieldSelector=` / `labelSelector=` query parameters).

use serde_json::Value;

use super::status::ApiError;

#[derive(Debug, Clone)]
enum Op {
    Eq,
    NotEq,
    In,
    NotIn,
    Exists,
    NotExists,
}

#[derive(Debug, Clone)]
struct Req {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed field selector; only the resource's supported fields are accepted.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    reqs: Vec<Req>,
}

/// Splits on unescaped commas and unescapes `\,` `\=` `\\` (fields.ParseSelector).
fn split_escaped(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push('\\');
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Value of a dotted field path, as the field-label conversion exposes it.
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for p in path.split('.') {
        cur = &cur[p];
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl FieldSelector {
    /// Selects everything (fields.Selector.Empty).
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { reqs });
        }
        for part in split_escaped(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (key, op, val) = if let Some((k, v)) = part.split_once("!=") {
                (k, Op::NotEq, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, Op::Eq, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, Op::Eq, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let key = key.trim();
            if !supported.contains(&key) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {key}"
                )));
            }
            reqs.push(Req {
                key: key.to_string(),
                op,
                values: vec![unescape(val)],
            });
        }
        Ok(FieldSelector { reqs })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| {
            let v = field_value(obj, &r.key);
            match r.op {
                Op::Eq => v == r.values[0],
                Op::NotEq => v != r.values[0],
                _ => true,
            }
        })
    }
}

/// A parsed label selector (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`).
#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    reqs: Vec<Req>,
}

fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl LabelSelector {
    /// Selects everything (labels.Selector.Empty).
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        let bad = |p: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: found '{p}', expected: identifier"
            ))
        };
        for part in split_top_level(s) {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                Req {
                    key: k.trim().to_string(),
                    op: Op::NotExists,
                    values: vec![],
                }
            } else if let Some((k, v)) = p.split_once("!=") {
                Req {
                    key: k.trim().to_string(),
                    op: Op::NotEq,
                    values: vec![v.trim().to_string()],
                }
            } else if let Some((k, v)) = p.split_once("==") {
                Req {
                    key: k.trim().to_string(),
                    op: Op::Eq,
                    values: vec![v.trim().to_string()],
                }
            } else if let Some((k, v)) = p.split_once('=') {
                Req {
                    key: k.trim().to_string(),
                    op: Op::Eq,
                    values: vec![v.trim().to_string()],
                }
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                Req {
                    key: k.trim().to_string(),
                    op: Op::NotIn,
                    values: set_values(rest).ok_or_else(|| bad(p))?,
                }
            } else if let Some((k, rest)) = p.split_once(" in ") {
                Req {
                    key: k.trim().to_string(),
                    op: Op::In,
                    values: set_values(rest).ok_or_else(|| bad(p))?,
                }
            } else {
                Req {
                    key: p.to_string(),
                    op: Op::Exists,
                    values: vec![],
                }
            };
            if req.key.is_empty() || req.key.contains(' ') {
                return Err(bad(p));
            }
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.reqs.iter().all(|r| {
            let v = labels[&r.key].as_str();
            match r.op {
                Op::Eq => v == Some(r.values[0].as_str()),
                Op::NotEq => v != Some(r.values[0].as_str()),
                Op::In => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
                Op::NotIn => v.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
            }
        })
    }
}

fn set_values(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
    )
}
