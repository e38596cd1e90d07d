//! What the trust-distribution tests (ClusterTrustBundles, ConfigMaps) share: reading the signer's
//! metrics, and checking that a certificate it issues verifies against nothing but published PEM.
#![allow(dead_code)]

use std::time::Duration;

use crate::controller_support::{sample, scrape, Env, SIGNER};
use crate::support::{key, openssl_verify, CsrSpec};
use csr_signer::ca_init::KeyType;

pub const USAGES: &[&str] = &["digital signature", "client auth"];

pub async fn metric(svc: &csr_signer::service::Service, series: &str) -> Option<f64> {
    sample(&scrape(svc.listen).await, series)
}

pub async fn wait_metric(
    svc: &csr_signer::service::Service,
    series: &str,
    ok: impl Fn(f64) -> bool,
) {
    for _ in 0..300 {
        if metric(svc, series).await.is_some_and(&ok) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{series} never reached the expected value:\n{}",
        scrape(svc.listen).await
    );
}

/// Issues one CSR and checks `openssl verify` accepts it with only `bundle_pem` as trust.
pub async fn issued_verifies_against(env: &Env, name: &str, bundle_pem: &str) {
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    env.create(name, SIGNER, &pem, USAGES, None).await;
    env.approve(name).await;
    let chain = env.wait_certificate(name).await;
    let anchors = env.dir.path().join(format!("{name}-bundle.pem"));
    std::fs::write(&anchors, bundle_pem).unwrap();
    openssl_verify(&chain, &anchors, env.dir.path())
        .unwrap_or_else(|e| panic!("{name} does not verify against the published PEM: {e}"));
}
