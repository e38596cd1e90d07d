//! Every signature leaves a record: the audit file holds a `signed` record for each one the CA made and
//! exactly one `issued` record per certificate on a CSR, even when the apiserver applied a write whose
//! answer never came back. The file fails closed, the client's own retries of 429/503 are visible, and
//! the signer resumes within seconds after an apiserver outage.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller_support::*;
use csr_signer::ca_init::KeyType;
use csr_signer::metrics::Metrics;
use csr_signer::service::{self, RunOptions, Service};
use http::Method;
use support::{key, CsrSpec, TestCa};

const USAGES: &[&str] = &["digital signature", "client auth"];
const ISSUED: &str =
    "csr_signer_requests_total{kind=\"csr\",outcome=\"issued\",reason=\"None\",signer=\"example.com/mtls\"}";
const SIGNED: &str =
    "csr_signer_certificates_signed_total{kind=\"csr\",signer=\"example.com/mtls\"}";

/// The signer's client as `csr-signer run` builds it (retries counted in `metrics`), from the signer's
/// kubeconfig; successful status writes lose their answer while `lose` is above zero: the apiserver
/// applied the write, the signer sees a transport error.
async fn signer_client(env: &Env, metrics: Arc<Metrics>, lose: Arc<AtomicUsize>) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(env.signer_kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let inner = csr_signer::controller::client::build(cfg, metrics).unwrap();
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let lose = lose.clone();
        let status_write = req.method() == Method::PATCH && req.uri().path().ends_with("/status");
        async move {
            let resp = inner.send(req).await?;
            if status_write
                && resp.status().is_success()
                && lose
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                return Err(kube::Error::Service(
                    "injected: connection reset after the write was applied".into(),
                ));
            }
            Ok::<_, kube::Error>(resp)
        }
    });
    kube::Client::new(svc, "default")
}

async fn start(
    env: &Env,
    ca: &TestCa,
    audit_file: &std::path::Path,
    lose: Arc<AtomicUsize>,
) -> (Service, tokio::sync::oneshot::Sender<()>) {
    let mut settings = env.settings(&ca.cert, &ca.key, "", false);
    settings.audit.file = Some(audit_file.to_path_buf());
    let metrics = Arc::new(Metrics::new().unwrap());
    let client = signer_client(env, metrics.clone(), lose).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let svc = service::start_with_metrics(
        settings,
        client,
        async move {
            let _ = rx.await;
        },
        RunOptions {
            identity: Some("replica-a".into()),
            ca_poll_interval: Some(Duration::from_millis(200)),
        },
        metrics,
    )
    .await
    .unwrap();
    (svc, tx)
}

on_both_servers! {
    async fn every_signature_is_recorded_even_when_the_answer_to_the_write_is_lost(server) {
        let ca = TestCa::new(KeyType::P256);
        let env = Env::on(server).await;
        let audit = env.dir.path().join("audit.jsonl");
        const LOST: usize = 3;
        let lose = Arc::new(AtomicUsize::new(LOST));
        let (svc, stop) = start(&env, &ca, &audit, lose.clone()).await;
        if !env.is_real() {
            let status = Match::new(Some(Method::PATCH), "/status");
            env.faults().fail_next(2, status.clone(), Failure::InternalError);
            env.faults().fail_next(2, status.clone(), Failure::ServiceUnavailable);
            env.faults()
                .fail_next(2, status.clone(), Failure::TooManyRequests { retry_after_secs: 1 });
            env.faults().conflict_next_write(status);
        }
        let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
        let mut names = env.create_approved("audited", 8, &pem, USAGES).await;
        env.wait_all_issued(&names).await;
        assert_eq!(lose.load(Ordering::SeqCst), 0, "every injected loss happened");
        // One more after the dust settled: stray retries would have shown by then.
        names.extend(env.create_approved("settle", 1, &pem, USAGES).await);
        env.wait_all_issued(&names).await;

        let writes = env.status_writes_by_name().await;
        for n in &names {
            assert_eq!(writes.get(n).copied(), Some(1), "{n}: one successful status write");
        }
        let text = scrape(svc.listen).await;
        let late = assert_audit_trail(&env, &audit, &names, sample(&text, SIGNED)).await;
        assert_eq!(late, LOST, "the certificates whose answer was lost");
        assert_eq!(sample(&text, ISSUED), Some(names.len() as f64), "issued counted once each");
        if !env.is_real() {
            // 503 and 429 were retried inside the client, and shown.
            for code in ["503", "429"] {
                let series = format!("csr_signer_api_retries_total{{code=\"{code}\",operation=\"update_status\"}}");
                assert_eq!(sample(&text, &series), Some(2.0), "{series}\n{text}");
            }
        }
        stop.send(()).unwrap();
        svc.wait().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_file_that_cannot_be_written_stops_issuance_until_it_can() {
    let ca = TestCa::new(KeyType::P256);
    let env = Env::start().await;
    // /dev/full opens and then fails every write (ENOSPC), like a full disk.
    let (svc, stop) = start(
        &env,
        &ca,
        std::path::Path::new("/dev/full"),
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    let names = env.create_approved("unrecorded", 1, &pem, USAGES).await;
    let mut text = String::new();
    for _ in 0..600 {
        text = scrape(svc.listen).await;
        if sample(&text, "csr_signer_requests_total{kind=\"csr\",outcome=\"error\",reason=\"AuditUnavailable\",signer=\"example.com/mtls\"}")
            .is_some_and(|v| v >= 2.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sample(
            &text,
            "csr_signer_audit_write_errors_total{event=\"signed\"}"
        )
        .is_some_and(|v| v >= 2.0),
        "{text}"
    );
    assert!(sample(&text, SIGNED).is_some_and(|v| v >= 2.0), "{text}");
    assert_eq!(sample(&text, ISSUED), Some(0.0));
    assert_eq!(
        env.status_write_attempts(&names[0]).await,
        0,
        "nothing unrecorded left the process"
    );
    stop.send(()).unwrap();
    svc.wait().await.unwrap();

    // Once the trail can be kept again, the same CSR is issued, once.
    let audit = env.dir.path().join("audit.jsonl");
    let (svc, stop) = start(&env, &ca, &audit, Arc::new(AtomicUsize::new(0))).await;
    env.wait_all_issued(&names).await;
    assert_eq!(env.status_writes(&names[0]).await, 1);
    let late = assert_audit_trail(
        &env,
        &audit,
        &names,
        sample(&scrape(svc.listen).await, SIGNED),
    )
    .await;
    assert_eq!(late, 0);
    stop.send(()).unwrap();
    svc.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_apiserver_outage_the_signer_resumes_within_its_watch_backoff_cap() {
    let ca = TestCa::new(KeyType::P256);
    let env = Env::start().await;
    let audit = env.dir.path().join("audit.jsonl");
    let (svc, stop) = start(&env, &ca, &audit, Arc::new(AtomicUsize::new(0))).await;
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    let first = env.create_approved("before", 1, &pem, USAGES).await;
    env.wait_all_issued(&first).await;

    // Outage: every list and watch of CSRs fails with 500 (not retried inside the client), long enough
    // for the watch backoff to reach its cap (250 ms doubling to 5 s: about 13 s).
    let csr_reads = Match::new(
        Some(Method::GET),
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
    );
    env.faults()
        .fail_next(1_000_000, csr_reads, Failure::InternalError);
    env.faults().close_watches();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let restarts_during = sample(
        &scrape(svc.listen).await,
        "csr_signer_watch_restarts_total{kind=\"csr\",signer=\"example.com/mtls\"}",
    )
    .unwrap();
    env.faults().clear();
    let back = Instant::now();
    let after = env.create_approved("after", 1, &pem, USAGES).await;
    env.wait_all_issued(&after).await;
    let resumed = back.elapsed();
    // The cap is 5 s with +20 % jitter; 12 s leaves room for a slow machine and still fails kube's
    // default (30 s cap), which by now would wait 25 s or more.
    assert!(
        resumed < Duration::from_secs(12),
        "resumed after {resumed:?}"
    );
    // Retrying, not spinning: at most one attempt per 250 ms, at least one per cap.
    assert!(
        (4.0..=80.0).contains(&restarts_during),
        "{restarts_during} watch restarts in a 20 s outage"
    );
    eprintln!("resumed {resumed:?} after the outage; {restarts_during} watch restarts during 20 s");
    stop.send(()).unwrap();
    svc.wait().await.unwrap();
}
