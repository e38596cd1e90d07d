//! Response helpers shared by the router (`server`) and the discovery endpoints (`discovery`): JSON and
//! text bodies with kube-apiserver's headers, Status errors, and the timestamp format of object metadata.

use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use serde_json::Value;

use super::status::ApiError;

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(Body::from(body))
        .unwrap_or_default()
}

pub fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.body);
    if let Some(s) = e.retry_after {
        if let Ok(v) = http::HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
    }
    r
}

pub fn text_response(code: u16, text: &str) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from(text.to_string()))
        .unwrap_or_default()
}
