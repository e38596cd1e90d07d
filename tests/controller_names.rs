//! CSR names kube-apiserver accepts but that are not plain URL path segments (space, `?`, `#`, tab,
//! newline, non-ASCII): each is issued with exactly one status write, and a CSR whose name is the
//! prefix before the `?` or `#` is never touched.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;

use std::collections::HashMap;

use controller_support::*;
use csr_signer::ca_init::KeyType;
use support::{key, verify_with_store, CsrSpec, TestCa};

const USAGES: &[&str] = &["digital signature", "client auth"];

/// Names kube-apiserver accepts for a CSR (apimachinery `content.IsPathSegmentName`: not `.`/`..`,
/// no `/` or `%`) that a URL path must escape.
const HOSTILE: &[&str] = &[
    "a b",
    "a?b",
    "a#b",
    "a\tb",
    "a\nb",
    "a?b#c d",
    "\u{e9}t\u{e9}-\u{540d}\u{524d}",
    "a:b@c+d=e;f,g&h$i!j'k(l)m*n",
    "a\\b\"c<d>e[f]g{h}i|j^k`l",
];

/// Successful status writes per CSR name (the path segment decoded, as the apiserver decodes it).
async fn status_writes(env: &Env) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in env.requests().await {
        if !(r.method == http::Method::PATCH || r.method == http::Method::PUT)
            || !(200..300).contains(&r.status)
        {
            continue;
        }
        let Some(raw) = r
            .path
            .strip_suffix("/status")
            .and_then(|p| p.rsplit_once("/certificatesigningrequests/"))
            .map(|(_, n)| n)
        else {
            continue;
        };
        let name = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .unwrap()
            .into_owned();
        *out.entry(name).or_insert(0) += 1;
    }
    out
}

on_both_servers! {
    async fn names_that_need_escaping_are_issued_once_and_their_prefix_is_untouched(server) {
        let ca = TestCa::new(KeyType::P256);
        let env = Env::on(server).await;
        let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
        // The prefix a mis-built path addresses instead (`a?b` → `a`); left pending, so any write is wrong.
        env.create("a", SIGNER, &pem, USAGES, None).await;
        let sibling_before = env.csrs().get("a").await.unwrap();
        let (svc, stop) = env
            .start_signer(env.settings(&ca.cert, &ca.key, "", false), "replica-a")
            .await;
        for name in HOSTILE {
            env.create(name, SIGNER, &pem, USAGES, None).await;
            env.approve(name).await;
        }
        let names: Vec<String> = HOSTILE.iter().map(|s| s.to_string()).collect();
        env.wait_all_issued(&names).await;
        for name in HOSTILE {
            let csr = env.csrs().get(&seg(name)).await.unwrap();
            assert_eq!(csr.metadata.name.as_deref(), Some(*name));
            assert!(failed_conditions(&csr).is_empty(), "{name:?}");
            verify_with_store(&certificate(&csr).unwrap(), &ca.root_x509()).unwrap();
        }
        // A settle CSR issued after the others: by then any stray retry would have happened.
        env.create("settle", SIGNER, &pem, USAGES, None).await;
        env.approve("settle").await;
        env.wait_certificate("settle").await;

        let writes = status_writes(&env).await;
        for name in HOSTILE {
            assert_eq!(writes.get(*name).copied(), Some(1), "{name:?}: {writes:?}");
        }
        assert_eq!(writes.get("a"), None, "{writes:?}");
        let sibling_after = env.csrs().get("a").await.unwrap();
        assert_eq!(
            sibling_after.metadata.resource_version, sibling_before.metadata.resource_version,
            "the pending sibling changed"
        );
        assert!(sibling_after.status.as_ref().is_none_or(|s| s.certificate.is_none()
            && s.conditions.as_ref().is_none_or(|c| c.is_empty())));

        let text = scrape(svc.listen).await;
        assert_eq!(
            sample(&text, "csr_signer_requests_total{outcome=\"issued\",reason=\"None\",signer=\"example.com/mtls\"}"),
            Some(HOSTILE.len() as f64 + 1.0)
        );
        assert_eq!(
            sample(&text, "csr_signer_certificates_signed_total{signer=\"example.com/mtls\"}"),
            Some(HOSTILE.len() as f64 + 1.0)
        );
        stop.send(()).unwrap();
        svc.wait().await.unwrap();
    }
}
