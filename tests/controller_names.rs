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

        // Their events exist too (an Event's own name must be a DNS subdomain; it names the CSR in
        // involvedObject). Events are best effort: wait for them generously.
        let uids: Vec<String> = {
            let mut v = Vec::new();
            for name in HOSTILE {
                v.push(env.csrs().get(&seg(name)).await.unwrap().metadata.uid.unwrap());
            }
            v
        };
        let events: kube::Api<k8s_openapi::api::core::v1::Event> =
            kube::Api::namespaced(env.admin.clone(), "default");
        let mut missing = uids.clone();
        for _ in 0..400 {
            let list = events.list(&Default::default()).await.unwrap();
            missing.retain(|uid| {
                !list.items.iter().any(|e| {
                    e.involved_object.uid.as_deref() == Some(uid.as_str())
                        && e.reason.as_deref() == Some("Issued")
                })
            });
            if missing.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(missing.is_empty(), "no Issued event for {missing:?}");

        let text = scrape(svc.listen).await;
        assert_eq!(
            sample(&text, "csr_signer_requests_total{kind=\"csr\",outcome=\"issued\",reason=\"None\",signer=\"example.com/mtls\"}"),
            Some(HOSTILE.len() as f64 + 1.0)
        );
        assert_eq!(
            sample(&text, "csr_signer_certificates_signed_total{kind=\"csr\",signer=\"example.com/mtls\"}"),
            Some(HOSTILE.len() as f64 + 1.0)
        );
        stop.send(()).unwrap();
        svc.wait().await.unwrap();
    }
}

/// A CSR name that, printed raw, would forge a whole log line.
const FORGER: &str =
    "x\n2026-01-01T00:00:00.000000Z  INFO csr_signer::controller::worker: certificate issued csr=victim";

/// Runs `csr-signer run` with `format` until `name` is issued; returns its log (stderr).
async fn binary_log(env: &Env, ca: &TestCa, format: &str, name: &str) -> String {
    let dir = env.dir.path();
    let config = dir.join(format!("{format}.yaml"));
    std::fs::write(
        &config,
        settings_yaml(&ca.cert, &ca.key, "", false, "127.0.0.1:0"),
    )
    .unwrap();
    let log = dir.join(format!("{format}.log"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_csr-signer"))
        .args(["run", "--log-format", format, "--config"])
        .arg(&config)
        .arg("--kubeconfig")
        .arg(env.signer_kubeconfig())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    env.create(name, SIGNER, &pem, USAGES, None).await;
    env.approve(name).await;
    env.wait_certificate(name).await;
    // The log line follows the write; give it a moment, then stop the signer.
    let mut text = String::new();
    for _ in 0..200 {
        text = std::fs::read_to_string(&log).unwrap();
        // The name itself says "certificate issued" (escaped, inside the "certificate signed" line): wait for
        // a line whose own message it is, i.e. whose first level field is followed by it.
        let own_message = text.lines().any(|l| {
            l.split_once(" INFO ").is_some_and(|(_, rest)| {
                rest.starts_with("csr_signer::controller::worker: certificate issued ")
            })
        });
        if own_message || text.contains("\"message\":\"certificate issued\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_a_name_cannot_forge_a_log_line() {
    let ca = TestCa::new(KeyType::P256);
    let env = Env::start().await;

    let text = binary_log(&env, &ca, "text", FORGER).await;
    assert!(
        !text.lines().any(|l| l.starts_with("2026-01-01T00:00:00")),
        "a forged line:\n{text}"
    );
    let escaped = FORGER.replace('\n', "\\n");
    assert!(
        !text.contains('\u{1b}'),
        "no terminal escapes in a log file"
    );
    let issued: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!(": certificate issued csr={escaped} ")))
        .collect();
    assert_eq!(issued.len(), 1, "{text}");
    let signed: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains(&format!(
                ": certificate signed audit=\"signed\" csr={escaped} "
            ))
        })
        .collect();
    assert_eq!(signed.len(), 1, "{text}");

    // JSON escapes by itself: every line parses, and the name comes back exactly.
    let name = format!("{FORGER}-json");
    let text = binary_log(&env, &ca, "json", &name).await;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let issued: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["fields"]["message"] == "certificate issued")
        .collect();
    assert_eq!(issued.len(), 1, "{text}");
    assert_eq!(issued[0]["fields"]["csr"], name.as_str());
}
