//! Kubernetes `Status` error bodies (apimachinery `errors.go` shapes) and field errors
//! (`field/errors.go` message format), so clients see exactly what kube-apiserver would send.

use serde_json::{json, Value};

/// An API failure: HTTP code plus the `Status` body kube-apiserver would return.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
    /// Seconds for a `Retry-After` header (429 / generated-name conflicts).
    pub retry_after: Option<u64>,
}

/// What a request addresses, for error messages: `<resource>.<group>` and the kind.
#[derive(Debug, Clone, Copy)]
pub struct Gr<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub kind: &'a str,
}

impl Gr<'_> {
    /// `resource.group`, or the bare resource for the core group (schema.GroupResource.String).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// `Kind.group`, or the bare kind for the core group (schema.GroupKind.String).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn details(&self, name: &str) -> Value {
        let mut d = serde_json::Map::new();
        if !name.is_empty() {
            d.insert("name".into(), json!(name));
        }
        // StatusDetails fields are omitempty: the core group is absent, not "".
        if !self.group.is_empty() {
            d.insert("group".into(), json!(self.group));
        }
        d.insert("kind".into(), json!(self.resource));
        Value::Object(d)
    }
}

fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("kind".into(), json!("Status"));
    m.insert("apiVersion".into(), json!("v1"));
    m.insert("metadata".into(), json!({}));
    m.insert("status".into(), json!("Failure"));
    m.insert("message".into(), json!(message));
    if !reason.is_empty() {
        m.insert("reason".into(), json!(reason));
    }
    if let Some(d) = details {
        m.insert("details".into(), d);
    }
    m.insert("code".into(), json!(code));
    Value::Object(m)
}

impl ApiError {
    pub fn new(
        code: u16,
        reason: &str,
        message: impl Into<String>,
        details: Option<Value>,
    ) -> Self {
        ApiError {
            code,
            body: failure(code, reason, &message.into(), details),
            retry_after: None,
        }
    }

    pub fn not_found(gr: Gr<'_>, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} {:?} not found", gr.qualified(), name),
            Some(gr.details(name)),
        )
    }

    pub fn already_exists(gr: Gr<'_>, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} {:?} already exists", gr.qualified(), name),
            Some(gr.details(name)),
        )
    }

    pub fn generate_name_conflict(gr: Gr<'_>, name: &str) -> Self {
        let mut details = gr.details(name);
        details["retryAfterSeconds"] = json!(1);
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!(
                "{} {:?} already exists, the server was not able to generate a unique name for the object",
                gr.qualified(),
                name
            ),
            Some(details),
        );
        e.retry_after = Some(1);
        e
    }

    pub fn conflict(gr: Gr<'_>, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {:?}: {}",
                gr.qualified(),
                name,
                why
            ),
            Some(gr.details(name)),
        )
    }

    pub fn stale(gr: Gr<'_>, name: &str) -> Self {
        Self::conflict(
            gr,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// Admission / authorization 403: `<gr> "<name>" is forbidden: <why>` (name part absent if empty).
    pub fn forbidden(gr: Gr<'_>, name: &str, why: &str) -> Self {
        let msg = if name.is_empty() {
            format!("{} is forbidden: {}", gr.qualified(), why)
        } else {
            format!("{} {:?} is forbidden: {}", gr.qualified(), name, why)
        };
        Self::new(403, "Forbidden", msg, Some(gr.details(name)))
    }

    /// 403 for a non-resource path (`forbidden: User "x" cannot get path "/api"`).
    pub fn forbidden_path(why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("forbidden: {why}"),
            Some(json!({})),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message, None)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            None,
        )
    }

    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct:?})"),
            None,
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized", None)
    }

    pub fn resource_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        )
    }

    /// 429 as kube-apiserver's max-in-flight filter sends it, with `Retry-After`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
            Some(serde_json::json!({"retryAfterSeconds": retry_after_secs})),
        );
        e.retry_after = Some(retry_after_secs);
        e
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message, None)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
            None,
        )
    }

    /// 422 from a field error list (errors.NewInvalid).
    pub fn invalid(gr: Gr<'_>, name: &str, errs: &[FieldError]) -> Self {
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.kind.cause(), "message": e.body(), "field": e.field}))
            .collect();
        let mut msgs: Vec<String> = Vec::new();
        for e in errs {
            let m = e.to_string();
            if !msgs.contains(&m) {
                msgs.push(m);
            }
        }
        let agg = match msgs.len() {
            0 => String::new(),
            1 => format!(": {}", msgs[0]),
            _ => format!(": [{}]", msgs.join(", ")),
        };
        let message = format!("{} {:?} is invalid{}", gr.qualified_kind(), name, agg);
        let mut details = serde_json::Map::new();
        if !name.is_empty() {
            details.insert("name".into(), json!(name));
        }
        if !gr.group.is_empty() {
            details.insert("group".into(), json!(gr.group));
        }
        details.insert("kind".into(), json!(gr.kind));
        details.insert("causes".into(), Value::Array(causes));
        Self::new(422, "Invalid", message, Some(Value::Object(details)))
    }
}

/// field.ErrorType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
}

impl FieldErrorKind {
    fn text(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
        }
    }

    fn cause(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
        }
    }
}

/// One field.Error. `value` is already rendered the way Go prints it (`%q` strings, `%v` numbers).
#[derive(Debug, Clone)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: String,
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        Self {
            kind: FieldErrorKind::Required,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }
    pub fn invalid(field: impl Into<String>, value: String, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Invalid,
            field: field.into(),
            value: Some(value),
            detail: detail.into(),
        }
    }
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            kind: FieldErrorKind::NotSupported,
            field: field.into(),
            value: Some(quote(value)),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Self {
            kind: FieldErrorKind::Duplicate,
            field: field.into(),
            value: Some(quote(value)),
            detail: String::new(),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Forbidden,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            kind: FieldErrorKind::TooLong,
            field: field.into(),
            value: None,
            detail: format!(
                "may not be more than {max} {}",
                if max == 1 { "byte" } else { "bytes" }
            ),
        }
    }

    /// ErrorBody(): the message without the field path.
    pub fn body(&self) -> String {
        let mut s = match (&self.value, self.kind) {
            (
                Some(v),
                FieldErrorKind::Invalid | FieldErrorKind::NotSupported | FieldErrorKind::Duplicate,
            ) => format!("{}: {}", self.kind.text(), v),
            _ => self.kind.text().to_string(),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Go's `%q` for the strings we print (ASCII-escaping like strconv.Quote for the common cases).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How a field error prints a `[]byte` value (field.ErrorBody: `json.Marshal`, so standard base64
/// in quotes, or `null` for a nil slice).
pub fn go_bytes(b: Option<&[u8]>) -> String {
    use base64::Engine;
    match b {
        None => "null".to_string(),
        Some(b) => format!(
            "\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(b)
        ),
    }
}
