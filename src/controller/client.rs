//! The kube client the signer talks through: kube's own stack, with its retry of 429, 503 and 504 answers
//! made visible. kube retries those inside the client by default (`Config::default_retry`), so the
//! signer saw neither the throttling nor its delay; here the same policy runs as our layer, and every
//! retried answer is counted (`api_retries_total` and `api_errors_total`, by operation and code) and
//! logged before the client waits and tries again.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder};
use tower::buffer::BufferLayer;
use tower::retry::{Policy, RetryLayer};
use tower::BoxError;

use crate::metrics::{ApiOperation, Metrics};

/// Retries per request: 50 ms doubling to 10 s (or the server's `Retry-After`), at most 5 times; past
/// that the error reaches the controller, which backs off per CSR.
fn policy() -> RetryPolicy {
    RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(10), 5, true)
        .unwrap_or_else(|_| RetryPolicy::server_retry())
}

/// A client for `config` whose retries are counted in `metrics` and logged. Call within a tokio runtime
/// (the buffer that lets the retry layer clone the service spawns its worker).
pub fn build(mut config: kube::Config, metrics: Arc<Metrics>) -> kube::Result<kube::Client> {
    config.default_retry = false;
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&BufferLayer::new(1024))
        .with_layer(&RetryLayer::new(CountedRetry {
            inner: policy(),
            metrics,
        }))
        .build())
}

#[derive(Clone)]
struct CountedRetry {
    inner: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl<Res> Policy<Request<Body>, Response<Res>, BoxError> for CountedRetry {
    type Future = <RetryPolicy as Policy<Request<Body>, Response<Res>, BoxError>>::Future;

    fn retry(
        &mut self,
        req: &mut Request<Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        let code = result.as_ref().ok().map(|r| r.status().as_u16());
        let wait = self.inner.retry(req, result);
        if let (Some(_), Some(code)) = (&wait, code) {
            let op = operation(req);
            self.metrics.api_error(op, code);
            self.metrics.api_retry(op, code);
            tracing::warn!(
                operation = op.as_str(),
                code,
                method = %req.method(),
                path = %req.uri().path(),
                "apiserver asked to back off; retrying"
            );
        }
        wait
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        <RetryPolicy as Policy<Request<Body>, Response<Res>, BoxError>>::clone_request(
            &mut self.inner,
            req,
        )
    }
}

/// The `operation` label of a request, from its method and path.
fn operation(req: &Request<Body>) -> ApiOperation {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    if path.contains("/leases") {
        ApiOperation::Lease
    } else if path.contains("/events") {
        ApiOperation::CreateEvent
    } else if path.ends_with("/status") {
        ApiOperation::UpdateStatus
    } else if query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1")
    {
        ApiOperation::Watch
    } else if path.ends_with("/certificatesigningrequests") {
        ApiOperation::List
    } else {
        ApiOperation::Get
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(method: http::Method, uri: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(Vec::new()))
            .unwrap()
    }

    #[test]
    fn requests_map_to_the_operations_of_api_errors_total() {
        use http::Method;
        let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
        for (m, uri, op) in [
            (
                Method::GET,
                format!("{csrs}?fieldSelector=x"),
                ApiOperation::List,
            ),
            (
                Method::GET,
                format!("{csrs}?watch=true&resourceVersion=5"),
                ApiOperation::Watch,
            ),
            (Method::GET, format!("{csrs}/a%3Fb"), ApiOperation::Get),
            (
                Method::PATCH,
                format!("{csrs}/a%3Fb/status"),
                ApiOperation::UpdateStatus,
            ),
            (
                Method::POST,
                "/api/v1/namespaces/default/events".to_string(),
                ApiOperation::CreateEvent,
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/pki/leases/csr-signer".to_string(),
                ApiOperation::Lease,
            ),
        ] {
            assert_eq!(operation(&req(m, &uri)), op, "{uri}");
        }
    }
}
