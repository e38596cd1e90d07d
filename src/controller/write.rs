//! The status writer: the only code that changes an object the signer watches. Every write is a merge patch
//! on `/status` carrying the resourceVersion the decision was made on, under the client-side rate limit;
//! every failure is counted in `api_errors_total`.

use std::borrow::Cow;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::ratelimit::TokenBucket;
use crate::metrics::{status_code, ApiOperation, Metrics};

pub struct StatusWriter {
    api: Api<CertificateSigningRequest>,
    limiter: TokenBucket,
    metrics: std::sync::Arc<Metrics>,
}

impl StatusWriter {
    pub fn new(
        client: kube::Client,
        limiter: TokenBucket,
        metrics: std::sync::Arc<Metrics>,
    ) -> StatusWriter {
        StatusWriter {
            api: Api::all(client),
            limiter,
            metrics,
        }
    }

    /// Writes `patch` to `name`'s status. On error, returns the HTTP status (0: no response).
    pub async fn write(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<CertificateSigningRequest, (u16, kube::Error)> {
        self.limiter.acquire().await;
        self.api
            .patch_status(
                &path_segment(name),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(|e| {
                let code = status_code(&e);
                self.metrics.api_error(ApiOperation::UpdateStatus, code);
                (code, e)
            })
    }

    /// Reads `name` again (after a 409); `Ok(None)` when it is gone.
    pub async fn reread(
        &self,
        name: &str,
    ) -> Result<Option<CertificateSigningRequest>, kube::Error> {
        self.limiter.acquire().await;
        self.api
            .get_opt(&path_segment(name))
            .await
            .inspect_err(|e| {
                self.metrics.api_error(ApiOperation::Get, status_code(e));
            })
    }
}

/// Everything but RFC 3986's unreserved characters is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `name` as one URL path segment. kube-rs puts names into request paths as given, and kube-apiserver
/// accepts any CSR name that is not `.` or `..` and holds no `/` or `%` (apimachinery
/// `content.IsPathSegmentName`), so `a b`, `a?b` (which would address `a` with a query), `a#b` or a
/// newline are real names: every name the signer puts into a path goes through here.
pub fn path_segment(name: &str) -> Cow<'_, str> {
    utf8_percent_encode(name, SEGMENT).into()
}

#[cfg(test)]
mod tests {
    use super::path_segment;

    #[test]
    fn names_become_single_path_segments() {
        assert_eq!(path_segment("csr-1.example_x~"), "csr-1.example_x~");
        assert_eq!(path_segment("a b"), "a%20b");
        assert_eq!(path_segment("a?b"), "a%3Fb");
        assert_eq!(path_segment("a#b"), "a%23b");
        assert_eq!(path_segment("a\tb\nc"), "a%09b%0Ac");
        assert_eq!(path_segment("é"), "%C3%A9");
        assert_eq!(path_segment("a:b@c"), "a%3Ab%40c");
    }
}
