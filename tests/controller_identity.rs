//! The controller applies the identity rules of issue 10 item 7 like `sign` does: a name for someone
//! else's `system:` identity or a placeholder value that is not what it names ends as one `Failed`
//! condition with its reason; a lifetime the CA's NotAfter cut is reported as "capped by the CA".
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;

use controller_support::*;
use csr_signer::ca_init::{self, KeyType};
use openssl::x509::X509;
use support::{key, CsrSpec, TestCa};

on_both_servers! {
    async fn identity_refusals_fail_once_and_a_ca_cut_lifetime_says_so(server) {
        // A CA that ends in two days, so that a ten-day certificate is cut by it.
        let dir = tempfile::tempdir().unwrap();
        let created = ca_init::init(&ca_init::InitOptions {
            out: dir.path().to_owned(),
            key_type: KeyType::P256,
            days: 2,
            common_name: "two-day CA".into(),
            intermediate: false,
        })
        .unwrap();
        let ca = TestCa { cert: created.cert, key: created.key, chain: None, root: created.trust_anchor, dir };
        let env = Env::on(server).await;
        // The developer acts as a registration authority: it may fill placeholders for anyone.
        let (svc, stop) = env
            .start_signer(env.settings(&ca.cert, &ca.key, "trustedRequesters: [developer]", false), "replica-a")
            .await;
        let usages: &[&str] = &["digital signature", "client auth"];
        let cases: [(&str, Vec<u8>, &str); 3] = [
            (
                "system-group-for-another",
                CsrSpec::new(key(KeyType::P256), &[("CN", "developer"), ("O", "system:nodes")]).pem(),
                "SubjectNotAllowed",
            ),
            (
                "node-name-for-another",
                CsrSpec::new(key(KeyType::P256), &[("CN", "system:node:node-1")]).pem(),
                "SubjectNotAllowed",
            ),
            (
                "spiffe-namespace-not-a-namespace",
                CsrSpec::new(key(KeyType::P256), &[])
                    .sans(&["URI:spiffe://cluster.local/ns/-a/sa/app"])
                    .pem(),
                "SanNotAllowed",
            ),
        ];
        for (name, pem, _) in &cases {
            env.create(name, SIGNER, pem, usages, None).await;
            env.approve(name).await;
        }
        for (name, _, reason) in &cases {
            let csr = env
                .wait_for(name, "a Failed condition", |c| !failed_conditions(c).is_empty())
                .await;
            let failed = failed_conditions(&csr);
            assert_eq!(failed.len(), 1, "{name}: {failed:?}");
            assert_eq!(failed[0].reason.as_deref(), Some(*reason), "{name}: {:?}", failed[0].message);
            assert!(certificate(&csr).is_none(), "{name} must not be signed");
        }

        let cut = "ten-days-from-a-two-day-ca";
        let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
        env.create(cut, SIGNER, &pem, usages, Some(10 * 86_400)).await;
        env.approve(cut).await;
        let chain = env.wait_certificate(cut).await;
        let leaf = X509::from_pem(chain.as_bytes()).unwrap();
        assert_eq!(
            leaf.not_after().compare(ca.root_x509().not_after()).unwrap(),
            std::cmp::Ordering::Equal,
            "the certificate ends with the CA"
        );
        let text = scrape(svc.listen).await;
        assert_eq!(
            sample(&text, "csr_signer_lifetime_requests_total{kind=\"csr\",result=\"capped_by_ca\",signer=\"example.com/mtls\"}"),
            Some(1.0),
            "{text}"
        );
        stop.send(()).unwrap();
        svc.wait().await.unwrap();
    }
}
