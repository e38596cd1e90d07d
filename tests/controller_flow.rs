//! The controller against the local API over real HTTP: issuance per CA key type, refusals,
//! CSRs it must leave alone, and the approve-after-pending path.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;

use controller_support::*;
use csr_signer::ca_init::KeyType;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use openssl::x509::X509;
use support::{key, openssl_verify, verify_with_store, CsrSpec, TestCa};

fn validity_seconds(pem: &str) -> i64 {
    let cert = X509::from_pem(pem.as_bytes()).unwrap();
    let d = cert.not_before().diff(cert.not_after()).unwrap();
    i64::from(d.days) * 86400 + i64::from(d.secs)
}

async fn events_for(env: &Env, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::all(env.admin.clone());
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

async fn wait_event(env: &Env, name: &str, reason: &str) -> Event {
    for _ in 0..600 {
        if let Some(e) = events_for(env, name)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
        {
            return e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no {reason} event for {name}");
}

on_both_servers! {
    async fn issues_for_each_ca_key_type_and_the_chain_verifies_against_the_root(server) {
        let cases = [
            ("rsa2048", TestCa::new(KeyType::Rsa2048)),
            ("p256", TestCa::new(KeyType::P256)),
            ("p384", TestCa::new(KeyType::P384)),
            ("ed25519", TestCa::new(KeyType::Ed25519)),
            (
                "p256-intermediate",
                TestCa::with_intermediate(KeyType::P256),
            ),
        ];
        for (label, ca) in cases {
            let env = Env::on(server).await;
            let (svc, stop) = env
                .start_signer(env.settings(&ca.cert, &ca.key, "", false), "replica-a")
                .await;
            let short = format!("{label}-1h");
            let long = format!("{label}-1d");
            let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
            env.create(
                &short,
                SIGNER,
                &pem,
                &["digital signature", "client auth"],
                Some(3600),
            )
            .await;
            env.create(
                &long,
                SIGNER,
                &pem,
                &["digital signature", "client auth"],
                Some(86400),
            )
            .await;
            env.approve(&short).await;
            env.approve(&long).await;
            for (name, expected) in [(&short, 3600 + 300), (&long, 86400)] {
                let chain = env.wait_certificate(name).await;
                verify_with_store(&chain, &ca.root_x509()).unwrap_or_else(|e| panic!("{label}: {e}"));
                openssl_verify(&chain, &ca.root, ca.dir.path())
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                // NotBefore is backdated 5 min; below 8 h the full requested time follows it.
                assert_eq!(validity_seconds(&chain), expected, "{label} {name}");
                assert!(!chain.contains("PRIVATE KEY"));
                assert_eq!(
                    env.status_writes(name).await,
                    1,
                    "{label} {name}: exactly one status write"
                );
            }
            let ev = wait_event(&env, &short, "Issued").await;
            let msg = ev.message.unwrap_or_default();
            assert!(
                msg.contains("serial") && msg.contains("requested 3600s"),
                "{msg}"
            );

            let text = scrape(svc.listen).await;
            assert_eq!(
                sample(&text, "csr_signer_requests_total{kind=\"csr\",outcome=\"issued\",reason=\"None\",signer=\"example.com/mtls\"}"),
                Some(2.0),
                "{text}"
            );
            assert_eq!(
                sample(
                    &text,
                    "csr_signer_signing_duration_seconds_count{kind=\"csr\",signer=\"example.com/mtls\"}"
                ),
                Some(2.0)
            );
            assert_eq!(
                sample(
                    &text,
                    "csr_signer_issuance_latency_seconds_count{kind=\"csr\",signer=\"example.com/mtls\"}"
                ),
                Some(2.0)
            );
            stop.send(()).unwrap();
            svc.wait().await.unwrap();
        }
    }
}

on_both_servers! {
    async fn each_refusal_class_ends_as_one_failed_condition_with_an_event(server) {
        let ca = TestCa::new(KeyType::P256);
        let env = Env::on(server).await;
        let (svc, stop) = env
            .start_signer(env.settings(&ca.cert, &ca.key, "", false), "replica-a")
            .await;
        let good = || CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]);
        let rsa1024 =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap();
        let client_auth: &[&str] = &["digital signature", "client auth"];
        // (name, request, usages, expected reason, lifetime annotation)
        type Case<'a> = (&'a str, Vec<u8>, Vec<&'a str>, &'a str, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "key-too-weak",
                CsrSpec::new(rsa1024, &[("CN", "developer")]).pem(),
                client_auth.to_vec(),
                "KeyTooWeak",
                None,
            ),
            (
                "cert-sign",
                good().pem(),
                vec!["cert sign", "client auth"],
                "UsageNotAllowed",
                None,
            ),
            (
                "usage-required",
                good().pem(),
                vec!["digital signature"],
                "UsageRequired",
                None,
            ),
            (
                "ca-true",
                good().request_ca().pem(),
                client_auth.to_vec(),
                "CaNotAllowed",
                None,
            ),
            (
                "dns-outside",
                CsrSpec::new(key(KeyType::P256), &[("CN", "developer")])
                    .sans(&["DNS:evil.example.org"])
                    .pem(),
                client_auth.to_vec(),
                "SanNotAllowed",
                None,
            ),
            (
                "cn-of-other-user",
                CsrSpec::new(key(KeyType::P256), &[("CN", "admin")]).pem(),
                client_auth.to_vec(),
                "IdentityMismatch",
                None,
            ),
            (
                "no-identity",
                CsrSpec::new(key(KeyType::P256), &[]).pem(),
                client_auth.to_vec(),
                "NoIdentity",
                None,
            ),
            (
                "lifetime-too-short",
                good().pem(),
                client_auth.to_vec(),
                "LifetimeTooShort",
                Some("5m"),
            ),
            (
                "bad-annotation",
                good().pem(),
                client_auth.to_vec(),
                "MalformedRequest",
                Some("forever"),
            ),
        ];
        for (name, pem, usages, _, annotation) in &cases {
            let mut obj = csr_object(name, SIGNER, pem, usages, None);
            if let Some(a) = annotation {
                obj = with_annotation(obj, "experimental.cert-manager.io/request-duration", a);
            }
            env.try_create_as(&env.developer, &obj)
                .await
                .unwrap_or_else(|e| panic!("create {name}: {e}"));
            env.approve(name).await;
        }
        for (name, _, _, reason, _) in &cases {
            let csr = env
                .wait_for(name, "a Failed condition", |c| {
                    !failed_conditions(c).is_empty()
                })
                .await;
            let failed = failed_conditions(&csr);
            assert_eq!(failed.len(), 1, "{name}: {failed:?}");
            assert_eq!(failed[0].status, "True");
            assert_eq!(
                failed[0].reason.as_deref(),
                Some(*reason),
                "{name}: {:?}",
                failed[0].message
            );
            assert!(!failed[0].message.clone().unwrap_or_default().is_empty());
            assert!(certificate(&csr).is_none(), "{name} must not be signed");
            // The Approved condition survives the Failed write.
            assert!(conditions(&csr).iter().any(|c| c.type_ == "Approved"));
            let ev = wait_event(&env, name, "SigningFailed").await;
            assert!(ev.message.unwrap_or_default().starts_with(reason));
            assert_eq!(ev.type_.as_deref(), Some("Warning"));
        }
        // Never retried: a second look after more decisions changes nothing.
        let probe = "probe-after";
        env.create(probe, SIGNER, &good().pem(), client_auth, None)
            .await;
        env.approve(probe).await;
        env.wait_certificate(probe).await;
        for (name, _, _, reason, _) in &cases {
            let csr = env.csrs().get(name).await.unwrap();
            assert_eq!(failed_conditions(&csr).len(), 1, "{name}");
            assert_eq!(
                env.status_write_attempts(name).await,
                1,
                "{name}: one status write, never retried"
            );
            let text = scrape(svc.listen).await;
            assert!(
                sample(&text, &format!("csr_signer_requests_total{{kind=\"csr\",outcome=\"failed\",reason=\"{reason}\",signer=\"example.com/mtls\"}}"))
                    .is_some_and(|v| v >= 1.0),
                "{reason}"
            );
        }
        stop.send(()).unwrap();
        svc.wait().await.unwrap();
    }
}

on_both_servers! {
    async fn pending_denied_failed_and_other_signers_are_left_alone_and_late_approval_signs(server) {
        let ca = TestCa::new(KeyType::P256);
        let env = Env::on(server).await;
        let pem = || CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
        let usages: &[&str] = &["digital signature", "client auth"];
        env.create("other-signer", "example.com/other", &pem(), usages, None)
            .await;
        env.approve("other-signer").await;
        env.create("denied", SIGNER, &pem(), usages, None).await;
        env.deny("denied").await;
        env.create("pending", SIGNER, &pem(), usages, None).await;
        env.create("late", SIGNER, &pem(), usages, None).await;
        let before_other = env.csrs().get("other-signer").await.unwrap();
        let requests_before = env.requests_naming("other-signer").await.len();

        let (svc, stop) = env
            .start_signer(env.settings(&ca.cert, &ca.key, "", false), "replica-a")
            .await;
        // A CSR seen pending gets a one-time WaitingForApproval event...
        wait_event(&env, "late", "WaitingForApproval").await;
        // ... and is signed once approved.
        env.approve("late").await;
        env.wait_certificate("late").await;

        // The signer process tracks a failed CSR and leaves it alone even when approved later.
        env.create(
            "fails-first",
            SIGNER,
            &CsrSpec::new(key(KeyType::P256), &[("CN", "admin")]).pem(),
            usages,
            None,
        )
        .await;
        env.approve("fails-first").await;
        env.wait_for("fails-first", "Failed", |c| {
            !failed_conditions(c).is_empty()
        })
        .await;

        // Drive one more decision through the queue so anything mis-queued would have been handled.
        env.create("marker", SIGNER, &pem(), usages, None).await;
        env.approve("marker").await;
        env.wait_certificate("marker").await;

        for name in ["denied", "pending"] {
            let csr = env.csrs().get(name).await.unwrap();
            assert!(certificate(&csr).is_none(), "{name} must never be signed");
            assert!(
                failed_conditions(&csr).is_empty(),
                "{name} must not be failed"
            );
            assert_eq!(env.status_write_attempts(name).await, 0, "{name}");
        }
        assert_eq!(env.status_write_attempts("fails-first").await, 1);
        assert_eq!(
            events_for(&env, "late")
                .await
                .iter()
                .filter(|e| e.reason.as_deref() == Some("WaitingForApproval"))
                .count(),
            1
        );
        // The other signer's CSR: not written, and not even fetched by name (the watch is
        // server-side filtered, so it never reached the signer either).
        let after_other = env.csrs().get("other-signer").await.unwrap();
        assert_eq!(
            before_other.metadata.resource_version,
            after_other.metadata.resource_version
        );
        assert!(certificate(&after_other).is_none());
        let named = env.requests_naming("other-signer").await;
        assert_eq!(
            named.len(),
            requests_before + 1,
            "only the test's own GET: {named:?}"
        );
        // Every collection read by the signer (list and watch) is filtered server-side to its own
        // signerName, so other signers' CSRs never reach it at all.
        let collection = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
        let signer_reads: Vec<_> = env
            .requests()
            .await
            .into_iter()
            .filter(|r| r.user == env.signer_user() && r.path == collection)
            .collect();
        assert!(!signer_reads.is_empty(), "the signer listed and watched");
        for r in &signer_reads {
            let q = r.query.replace("%3D", "=").replace("%2F", "/");
            assert!(
                q.contains("fieldSelector=spec.signerName=example.com/mtls"),
                "unfiltered {} {}?{}",
                r.method,
                r.path,
                r.query
            );
        }
        stop.send(()).unwrap();
        svc.wait().await.unwrap();
    }
}
