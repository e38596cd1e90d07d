//! The status writer: the only code that changes an object the signer watches. Every write is a merge patch
//! on `/status` carrying the resourceVersion the decision was made on, under the client-side rate limit;
//! every failure is counted in `api_errors_total`.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams};

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
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
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
        self.api.get_opt(name).await.inspect_err(|e| {
            self.metrics.api_error(ApiOperation::Get, status_code(e));
        })
    }
}
