//! `csr-signer run` (a child process, signing against `csr-signer dev --no-signer`) with its
//! /metrics /healthz /readyz port under attack on loopback: 2,000 connections that never send a
//! byte and 500 that send a 3 MiB body, all at once. A kubelet probe must keep getting its answer
//! (a liveness probe failing would restart a healthy signer), the signer must keep signing, the
//! silent connections must be closed by the server, and its memory must stay small and come back.
//!
//! Bounds (generous for a shared 2-core machine): `/healthz`, `/readyz` and `/metrics` answer
//! within [`ANSWER`]; a CSR approved during the attack is issued within [`ISSUE`]; peak RSS at most
//! `PEAK_OVER_BASELINE_MIB` (48 MiB) over the baseline; silent connections closed within 40 s (the head
//! timeout is 10 s); RSS afterwards within `RETURN_MIB` (32 MiB) of the baseline.
#![allow(clippy::unwrap_used)]

mod process_support;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csr_signer::ca_init::KeyType;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use process_support::{
    mib, run_settings, run_signer, sample_peak, send_body, DevApi, BODIES, BODY_BYTES, SILENT,
};
use tokio::net::TcpStream;

const ANSWER: Duration = Duration::from_secs(10);
const ISSUE: Duration = Duration::from_secs(30);

/// A POST with a 3 MiB body to one of the server's paths (none takes a body).
async fn flood(addr: SocketAddr, path: &'static str) -> u16 {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return 0;
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {BODY_BYTES}\r\n\r\n"
    );
    send_body(tcp, head, BODY_BYTES).await
}

async fn get(client: &reqwest::Client, addr: SocketAddr, path: &str) -> (u16, Duration) {
    let t = Instant::now();
    let r = tokio::time::timeout(ANSWER, client.get(format!("http://{addr}{path}")).send())
        .await
        .unwrap_or_else(|_| panic!("{path} did not answer within {ANSWER:?}"))
        .unwrap();
    (r.status().as_u16(), t.elapsed())
}

async fn wait_issued(csrs: &Api<CertificateSigningRequest>, name: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let c = csrs.get(name).await.unwrap();
        if c.status.and_then(|s| s.certificate).is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not issued within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_under_idle_connections_and_large_bodies() {
    csr_signer::server::raise_open_file_limit().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api = DevApi::start(dir.path(), false).await;
    let ca = support::TestCa::new(KeyType::P256);
    let listen = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let mut signer = run_signer(
        dir.path(),
        &run_settings(&ca.cert, &ca.key, listen, 100),
        &api.kubeconfig,
        "admin",
        listen,
    )
    .await;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&http, listen, "/readyz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready: {}",
            signer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let csrs = Api::<CertificateSigningRequest>::all(api.client("admin").await);
    let pem = support::CsrSpec::new(support::key(KeyType::P256), &[("CN", "admin")]).pem();
    let new_csr = |name: &str| {
        support::csr_object(
            name,
            support::SIGNER,
            &pem,
            &["digital signature", "client auth"],
            None,
        )
    };
    csrs.create(&PostParams::default(), &new_csr("before"))
        .await
        .unwrap();
    support::approve_now(&csrs, "before").await;
    wait_issued(&csrs, "before", ISSUE).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = signer.rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let peak = sample_peak(signer.pid(), stop.clone());
    let paths = ["/metrics", "/healthz", "/nothing-here"];
    let (ready, attack) = process_support::attack(
        listen,
        SILENT,
        BODIES,
        move |i| flood(listen, paths[i % paths.len()]),
        Duration::from_secs(40),
    );
    ready.await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (health, health_took) = get(&http, listen, "/healthz").await;
    assert_eq!(health, 200);
    let (ready_code, ready_took) = get(&http, listen, "/readyz").await;
    assert_eq!(ready_code, 200);
    let (metrics, metrics_took) = get(&http, listen, "/metrics").await;
    assert_eq!(metrics, 200);
    let t = Instant::now();
    csrs.create(&PostParams::default(), &new_csr("during"))
        .await
        .unwrap();
    support::approve_now(&csrs, "during").await;
    wait_issued(&csrs, "during", ISSUE).await;
    let issue_took = t.elapsed();

    let report = tokio::task::spawn_blocking(move || attack.join().unwrap())
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let peak = peak.await.unwrap();
    println!(
        "baseline {:.1} MiB, peak {:.1} MiB under {SILENT} idle + {BODIES} bodies; healthz \
         {health_took:?}, readyz {ready_took:?}, metrics {metrics_took:?}, issued in \
         {issue_took:?}; body answers {:?}",
        mib(baseline),
        mib(peak),
        report.codes
    );
    // No handler takes a body: a POST is 405 (or 404 off the routes), never served.
    assert!(
        report.codes.keys().all(|c| matches!(c, 0 | 404 | 405)),
        "{:?}",
        report.codes
    );
    assert_eq!(
        report.kept_open, 0,
        "silent connections kept open past the head timeout"
    );

    let now = process_support::assert_memory_bounded(&mut signer, baseline, peak).await;
    println!("after: {:.1} MiB", mib(now));
    assert_eq!(get(&http, listen, "/healthz").await.0, 200);
}
