//! The controller under apiserver faults, CA file swaps and log capture: afterwards every approved
//! CSR has exactly one certificate, nothing else changed, and the CA key never leaks.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;

use std::time::Duration;

use controller_support::*;
use csr_signer::ca_init::KeyType;
use http::Method;
use openssl::x509::X509;
use support::{key, verify_with_store, CsrSpec, TestCa};

const USAGES: &[&str] = &["digital signature", "client auth"];

async fn create_approved(env: &Env, prefix: &str, n: usize) -> Vec<String> {
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    env.create_approved(prefix, n, &pem, USAGES).await
}

async fn assert_exactly_once(env: &Env, names: &[String]) {
    let writes = env.status_writes_by_name().await;
    for n in names {
        assert_eq!(
            writes.get(n).copied().unwrap_or(0),
            1,
            "{n}: exactly one successful status write"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_faults_leave_every_approved_csr_with_exactly_one_certificate() {
    let ca = TestCa::new(KeyType::P256);
    let env = Env::start().await;
    let audit = env.dir.path().join("audit.jsonl");
    let mut settings = env.settings(&ca.cert, &ca.key, "", false);
    settings.audit.file = Some(audit.clone());
    let (svc, stop) = env.start_signer(settings, "replica-a").await;
    let status_writes = Match::new(Some(Method::PATCH), "/status");
    let mut all = Vec::new();

    // Bursts of 500, 503 and 429 on status writes.
    env.faults()
        .fail_next(5, status_writes.clone(), Failure::InternalError);
    env.faults()
        .fail_next(5, status_writes.clone(), Failure::ServiceUnavailable);
    env.faults().fail_next(
        5,
        status_writes.clone(),
        Failure::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    all.extend(create_approved(&env, "burst", 10).await);
    env.wait_all_issued(&all).await;

    // Conflicting writes: the next status writes see a concurrent change.
    for _ in 0..3 {
        env.faults().conflict_next_write(status_writes.clone());
    }
    all.extend(create_approved(&env, "conflict", 3).await);
    env.wait_all_issued(&all).await;

    // Dropped watches and compaction (the next watch from an old version gets 410).
    env.faults().close_watches();
    env.faults().compact();
    all.extend(create_approved(&env, "rewatch", 5).await);
    env.faults().close_watches();
    all.extend(create_approved(&env, "rewatch2", 5).await);
    env.wait_all_issued(&all).await;

    // Slow responses.
    env.faults()
        .add_latency(Match::any(), Duration::from_millis(150));
    all.extend(create_approved(&env, "slow", 5).await);
    env.wait_all_issued(&all).await;
    env.faults().clear();

    // Signing stuck (every status write fails) shows in the approved-not-issued gauges...
    env.faults().fail_next(
        1_000_000,
        status_writes.clone(),
        Failure::ServiceUnavailable,
    );
    let stuck = create_approved(&env, "stuck", 2).await;
    let mut seen = (None, None);
    for _ in 0..600 {
        let text = scrape(svc.listen).await;
        seen = (
            sample(
                &text,
                "csr_signer_approved_not_issued{kind=\"csr\",signer=\"example.com/mtls\"}",
            ),
            sample(
                &text,
                "csr_signer_oldest_approved_not_issued_seconds{kind=\"csr\",signer=\"example.com/mtls\"}",
            ),
        );
        if seen.0 == Some(2.0) && seen.1.is_some_and(|v| v > 0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.0, Some(2.0), "{seen:?}");
    assert!(seen.1.is_some_and(|v| v > 0.0), "{seen:?}");
    // ... and drains once the apiserver recovers.
    env.faults().clear();
    all.extend(stuck);
    env.wait_all_issued(&all).await;

    // Give stragglers (backoff timers, replayed events) a chance to misbehave, then check.
    all.extend(create_approved(&env, "final", 2).await);
    env.wait_all_issued(&all).await;
    assert_exactly_once(&env, &all).await;
    for n in &all {
        let csr = env.csrs().get(n).await.unwrap();
        assert!(
            failed_conditions(&csr).is_empty(),
            "{n}: transient faults must never become Failed"
        );
        verify_with_store(&certificate(&csr).unwrap(), &ca.root_x509()).unwrap();
    }
    let text = scrape(svc.listen).await;
    assert!(
        sample(
            &text,
            "csr_signer_api_errors_total{code=\"500\",operation=\"update_status\"}"
        )
        .is_some_and(|v| v >= 5.0),
        "{text}"
    );
    assert!(sample(
        &text,
        "csr_signer_api_errors_total{code=\"409\",operation=\"update_status\"}"
    )
    .is_some_and(|v| v >= 3.0));
    assert_eq!(
        sample(&text, "csr_signer_requests_total{kind=\"csr\",outcome=\"issued\",reason=\"None\",signer=\"example.com/mtls\"}"),
        Some(all.len() as f64)
    );
    // Every signature made under these faults is in the audit file, and each certificate once as issued.
    assert_audit_trail(
        &env,
        &audit,
        &all,
        sample(
            &text,
            "csr_signer_certificates_signed_total{kind=\"csr\",signer=\"example.com/mtls\"}",
        ),
    )
    .await;
    // The gauge is refreshed once a second: wait for it to drain (liveness, not timing).
    let mut gauge = None;
    for _ in 0..600 {
        let text = scrape(svc.listen).await;
        gauge = sample(
            &text,
            "csr_signer_approved_not_issued{kind=\"csr\",signer=\"example.com/mtls\"}",
        );
        if gauge == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gauge, Some(0.0));
    let text = scrape(svc.listen).await;
    assert_eq!(
        sample(
            &text,
            "csr_signer_oldest_approved_not_issued_seconds{kind=\"csr\",signer=\"example.com/mtls\"}"
        ),
        Some(0.0)
    );
    stop.send(()).unwrap();
    svc.wait().await.unwrap();
}

on_both_servers! {
    async fn a_second_certificate_is_impossible_even_with_two_unsynchronised_signers(server) {
        // Leader election off on both: they race for every CSR; the resourceVersion precondition and
        // the write-once rule must still leave exactly one certificate each.
        let ca = TestCa::new(KeyType::P256);
        let env = Env::on(server).await;
        let (a, stop_a) = env
            .start_signer(env.settings(&ca.cert, &ca.key, "", false), "racer-a")
            .await;
        let (b, stop_b) = env
            .start_signer(env.settings(&ca.cert, &ca.key, "", false), "racer-b")
            .await;
        let names = create_approved(&env, "race", 40).await;
        env.wait_all_issued(&names).await;
        let mut seen = Vec::new();
        for n in &names {
            let first = certificate(&env.csrs().get(n).await.unwrap()).unwrap();
            seen.push(first);
        }
        // Let both settle, then confirm nothing changed and each CSR got one write.
        env.create(
            "settle",
            SIGNER,
            &CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem(),
            USAGES,
            None,
        )
        .await;
        env.approve("settle").await;
        env.wait_certificate("settle").await;
        for (n, first) in names.iter().zip(&seen) {
            let now = certificate(&env.csrs().get(n).await.unwrap()).unwrap();
            assert_eq!(&now, first, "{n}: certificate changed");
        }
        assert_exactly_once(&env, &names).await;
        let issued = sample(&scrape(a.listen).await, "csr_signer_requests_total{kind=\"csr\",outcome=\"issued\",reason=\"None\",signer=\"example.com/mtls\"}").unwrap_or(0.0)
            + sample(&scrape(b.listen).await, "csr_signer_requests_total{kind=\"csr\",outcome=\"issued\",reason=\"None\",signer=\"example.com/mtls\"}").unwrap_or(0.0);
        assert_eq!(issued, names.len() as f64 + 1.0);
        stop_a.send(()).unwrap();
        stop_b.send(()).unwrap();
        a.wait().await.unwrap();
        b.wait().await.unwrap();
    }
}

fn swap_ca_files(ca_dir: &std::path::Path, cert: &[u8], key: &[u8]) {
    // Like a Secret volume: write a new directory, then swap the `..data` symlink atomically.
    let stamp = format!("..{}", uuid::Uuid::new_v4().simple());
    let new_dir = ca_dir.join(&stamp);
    std::fs::create_dir(&new_dir).unwrap();
    std::fs::write(new_dir.join("tls.crt"), cert).unwrap();
    std::fs::write(new_dir.join("tls.key"), key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        new_dir.join("tls.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let tmp = ca_dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).unwrap();
    std::fs::rename(&tmp, ca_dir.join("..data")).unwrap();
}

on_both_servers! {
    async fn ca_files_swapped_on_disk_are_picked_up_and_a_broken_swap_keeps_the_old_ca(server) {
        let first = TestCa::new(KeyType::P256);
        let second = TestCa::new(KeyType::Ed25519);
        let env = Env::on(server).await;
        // A Secret-volume-like layout: tls.crt -> ..data/tls.crt, ..data -> ..<stamp>.
        let vol = env.dir.path().join("ca-volume");
        std::fs::create_dir(&vol).unwrap();
        swap_ca_files(
            &vol,
            &std::fs::read(&first.cert).unwrap(),
            &std::fs::read(&first.key).unwrap(),
        );
        std::os::unix::fs::symlink("..data/tls.crt", vol.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", vol.join("tls.key")).unwrap();
        let (svc, stop) = env
            .start_signer(
                env.settings(&vol.join("tls.crt"), &vol.join("tls.key"), "", false),
                "replica-a",
            )
            .await;

        let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
        env.create("before", SIGNER, &pem, USAGES, None).await;
        env.approve("before").await;
        verify_with_store(&env.wait_certificate("before").await, &first.root_x509()).unwrap();

        swap_ca_files(
            &vol,
            &std::fs::read(&second.cert).unwrap(),
            &std::fs::read(&second.key).unwrap(),
        );
        let second_not_after = {
            let c = X509::from_pem(&std::fs::read(&second.cert).unwrap()).unwrap();
            c.not_after().to_string()
        };
        // Probe until a certificate chains to the new CA (liveness, generous).
        let mut reloaded = false;
        for _ in 0..600 {
            env.create("after-probe", SIGNER, &pem, USAGES, None).await;
            env.approve("after-probe").await;
            let chain = env.wait_certificate("after-probe").await;
            env.csrs()
                .delete("after-probe", &Default::default())
                .await
                .unwrap();
            if verify_with_store(&chain, &second.root_x509()).is_ok() {
                reloaded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(reloaded, "new CA ({second_not_after}) never used");

        // A broken swap (certificate and key that do not match) keeps the second CA signing.
        swap_ca_files(
            &vol,
            &std::fs::read(&first.cert).unwrap(),
            &std::fs::read(&second.key).unwrap(),
        );
        let mut counted = false;
        for _ in 0..600 {
            let text = scrape(svc.listen).await;
            if sample(
                &text,
                "csr_signer_ca_reload_errors_total{signer=\"example.com/mtls\"}",
            )
            .is_some_and(|v| v >= 1.0)
            {
                counted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(counted, "broken CA swap not counted");
        env.create("after-broken", SIGNER, &pem, USAGES, None).await;
        env.approve("after-broken").await;
        let chain = env.wait_certificate("after-broken").await;
        verify_with_store(&chain, &second.root_x509()).unwrap();
        stop.send(()).unwrap();
        svc.wait().await.unwrap();
    }
}
