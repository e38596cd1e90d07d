//! The status writer: the only code that changes an object the signer watches. Every write is a merge patch
//! on `/status` carrying the resourceVersion the decision was made on, under the client-side rate limit;
//! every failure is counted in `api_errors_total`.

use std::borrow::Cow;
use std::sync::OnceLock;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::pcr::{self, PcrVersion, Served};
use super::plan::Kind;
use super::ratelimit::TokenBucket;
use super::store::{seen_csr, Key, Seen};
use crate::metrics::{status_code, ApiOperation, Metrics};

pub struct StatusWriter {
    client: kube::Client,
    csrs: Api<CertificateSigningRequest>,
    /// The PCR versions discovery found; set before the first PCR watch starts.
    pcr: OnceLock<Served>,
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
            csrs: Api::all(client.clone()),
            client,
            pcr: OnceLock::new(),
            limiter,
            metrics,
        }
    }

    pub fn set_pcr_served(&self, v: Served) {
        let _ = self.pcr.set(v);
    }

    /// The PCR version in use (PCR keys exist only once it is set).
    pub fn pcr_version(&self) -> PcrVersion {
        self.pcr.get().map_or(PcrVersion::V1, |s| s.version)
    }

    /// For a PCR that shows no key through v1: its legacy key fields read through v1beta1, when the
    /// cluster serves it (`Ok(None)` otherwise: the engine then refuses the request).
    pub async fn legacy_key(&self, key: &Key) -> Result<Option<(Vec<u8>, Vec<u8>)>, kube::Error> {
        let Some(served) = self.pcr.get() else {
            return Ok(None);
        };
        if served.version != PcrVersion::V1 || !served.v1beta1 {
            return Ok(None);
        }
        self.limiter.acquire().await;
        pcr::legacy_key(&self.client, key).await.inspect_err(|e| {
            self.metrics.api_error(ApiOperation::Get, status_code(e));
        })
    }

    /// Writes `patch` to `key`'s status and returns what the apiserver now holds (`None` if it is no
    /// longer `signer_name`'s). On error, returns the HTTP status (0: no response).
    pub async fn write(
        &self,
        key: &Key,
        signer_name: &str,
        patch: &serde_json::Value,
    ) -> Result<Option<Seen>, (u16, kube::Error)> {
        self.limiter.acquire().await;
        let res = match key.kind {
            Kind::CertificateSigningRequest => self
                .csrs
                .patch_status(
                    &path_segment(&key.name),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
                .map(|csr| seen_csr(key.signer, signer_name, &csr)),
            Kind::PodCertificateRequest => {
                pcr::write_status(&self.client, self.pcr_version(), key, signer_name, patch).await
            }
        };
        res.map_err(|e| {
            let code = status_code(&e);
            self.metrics.api_error(ApiOperation::UpdateStatus, code);
            (code, e)
        })
    }

    /// Reads `key` again (after a 409); `Ok(None)` when it is gone.
    pub async fn reread(&self, key: &Key, signer_name: &str) -> Result<Option<Seen>, kube::Error> {
        self.limiter.acquire().await;
        let res = match key.kind {
            Kind::CertificateSigningRequest => self
                .csrs
                .get_opt(&path_segment(&key.name))
                .await
                .map(|o| o.and_then(|csr| seen_csr(key.signer, signer_name, &csr))),
            Kind::PodCertificateRequest => {
                pcr::reread(&self.client, self.pcr_version(), key, signer_name).await
            }
        };
        res.inspect_err(|e| {
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
