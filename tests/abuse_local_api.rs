//! `csr-signer dev` (the local API, over TLS, as a child process) under attack from a local user
//! without credentials, on loopback: 2,000 connections that never start TLS and 500 that send a
//! 3 MiB request body with no or a wrong token, all at once. The server must stay small (it reads
//! no body before authenticating), keep answering an authenticated request and `/healthz`, close
//! the silent connections by itself, and give the memory back once the attack is over.
//!
//! Bounds (generous for a shared 2-core machine; measured here: baseline 28 MiB, peak 34 MiB,
//! answers in under 0.1 s. Before the fixes 200 such bodies took it to ~740 MiB, and 2,000
//! silent connections alone cost 88 MiB that never came back):
//! - peak RSS during the attack at most [`PEAK_OVER_BASELINE_MIB`] over the baseline;
//! - the authenticated list and `/healthz` answer within [`ANSWER`];
//! - a connection that never starts TLS is closed within the 10 s handshake timeout + slack;
//! - after the attack, RSS back within [`RETURN_MIB`] of the baseline.
#![allow(clippy::unwrap_used)]

mod process_support;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, ListParams, PostParams};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use process_support::{mib, DevApi};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE: usize = 2000;
const FLOODERS: usize = 500;
const BODY: usize = 3 * 1024 * 1024;
const PEAK_OVER_BASELINE_MIB: f64 = 48.0;
const RETURN_MIB: f64 = 32.0;
const ANSWER: Duration = Duration::from_secs(20);

/// Connections that connect and then say nothing.
async fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let conns =
            futures::future::join_all(chunk.iter().map(|_| TcpStream::connect(addr))).await;
        out.extend(conns.into_iter().map(|c| c.unwrap()));
    }
    out
}

/// Sends a create with a `BODY`-byte body over TLS (token: none, or a wrong one) and returns the
/// status line's code, or 0 when the server cut the connection before an answer was read.
async fn flood(addr: SocketAddr, token: Option<&'static str>) -> u16 {
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let ssl = b
        .build()
        .configure()
        .unwrap()
        .into_ssl("127.0.0.1")
        .unwrap();
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return 0;
    };
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    if std::pin::Pin::new(&mut tls).connect().await.is_err() {
        return 0;
    }
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /apis/certificates.k8s.io/v1/certificatesigningrequests HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nContent-Length: {BODY}\r\n{auth}\r\n"
    );
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..BODY / chunk.len() {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.flush().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(2).any(|w| w == b"\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&got)
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };
    let (code, ()) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(reader, writer)
    })
    .await
    .unwrap_or((0, ()));
    code
}

/// Samples the child's RSS every 50 ms; returns the peak (KiB) once `stop` is set.
fn sample_peak(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let peak = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            if let Some(kb) = process_support::rss_kib(pid) {
                peak.fetch_max(kb, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak.load(Ordering::SeqCst)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_unauthenticated_bodies_and_idle_connections() {
    csr_signer::server::raise_open_file_limit().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut api = DevApi::start(dir.path(), true).await;
    let addr = api.addr();
    let csrs = Api::<CertificateSigningRequest>::all(api.client("developer").await);
    let pem = support::CsrSpec::new(
        support::key(csr_signer::ca_init::KeyType::P256),
        &[("CN", "developer")],
    )
    .pem();
    for i in 0..20 {
        let csr = support::csr_object(
            &format!("warm-{i}"),
            support::SIGNER,
            &pem,
            &["client auth"],
            None,
        );
        csrs.create(&PostParams::default(), &csr).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = api.proc.rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let peak = sample_peak(api.proc.pid(), stop.clone());
    // The attack runs on its own threads, so encrypting 1.5 GB of junk does not starve the
    // checks below of their runtime.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let attack = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut idle = open_idle(addr, IDLE).await;
            let opened = Instant::now();
            let flooders: Vec<_> = (0..FLOODERS)
                .map(|i| tokio::spawn(flood(addr, (i % 2 == 0).then_some("not-a-token"))))
                .collect();
            let _ = ready_tx.send(());
            let mut codes = std::collections::BTreeMap::<u16, usize>::new();
            for f in flooders {
                *codes.entry(f.await.unwrap()).or_default() += 1;
            }
            // Connections that never start TLS are closed by the server (10 s handshake
            // timeout): each read ends (EOF or reset) well before 40 s after opening.
            let mut kept = 0;
            for conn in idle.iter_mut().take(20) {
                let left = Duration::from_secs(40).saturating_sub(opened.elapsed());
                let mut b = [0u8; 1];
                if !matches!(
                    tokio::time::timeout(left, conn.read(&mut b)).await,
                    Ok(Ok(0)) | Ok(Err(_))
                ) {
                    kept += 1;
                }
            }
            (codes, kept)
        })
    });
    ready_rx.await.unwrap();
    // Let the bodies arrive before asking.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let t = Instant::now();
    let listed = tokio::time::timeout(ANSWER, csrs.list(&ListParams::default()))
        .await
        .expect("the authenticated list answered in time")
        .unwrap();
    assert_eq!(listed.items.len(), 20);
    let list_took = t.elapsed();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&api.ca_pem()).unwrap())
        .build()
        .unwrap();
    let t = Instant::now();
    let health = tokio::time::timeout(
        ANSWER,
        https.get(format!("https://{addr}/healthz")).send(),
    )
    .await
    .expect("/healthz answered in time")
    .unwrap();
    assert_eq!(health.status(), 200);
    let health_took = t.elapsed();

    let (codes, kept) = tokio::task::spawn_blocking(move || attack.join().unwrap())
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let peak = peak.await.unwrap();
    println!(
        "baseline {:.1} MiB, peak {:.1} MiB under {IDLE} idle + {FLOODERS} bodies; \
         list {list_took:?}, healthz {health_took:?}; flood answers {codes:?}",
        mib(baseline),
        mib(peak)
    );
    assert!(
        codes.keys().all(|c| matches!(c, 0 | 401 | 403)),
        "an unauthenticated create got {codes:?}"
    );
    assert!(
        codes.contains_key(&401) && codes.contains_key(&403),
        "the server answered 401 (wrong token) and 403 (anonymous): {codes:?}"
    );
    assert!(
        mib(peak) < mib(baseline) + PEAK_OVER_BASELINE_MIB,
        "peak RSS {:.1} MiB (baseline {:.1} MiB)",
        mib(peak),
        mib(baseline)
    );
    assert_eq!(kept, 0, "silent connections kept open past the handshake timeout");

    // Memory comes back.
    let mut now = api.proc.rss_kib();
    let deadline = Instant::now() + Duration::from_secs(60);
    while mib(now) > mib(baseline) + RETURN_MIB && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        now = api.proc.rss_kib();
    }
    println!("after: {:.1} MiB", mib(now));
    assert!(
        mib(now) <= mib(baseline) + RETURN_MIB,
        "RSS {:.1} MiB after the attack, baseline {:.1} MiB",
        mib(now),
        mib(baseline)
    );
    // And it still serves.
    assert_eq!(
        csrs.list(&ListParams::default()).await.unwrap().items.len(),
        20
    );
}

#[tokio::test]
async fn an_authenticated_body_over_the_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let api = DevApi::start(dir.path(), false).await;
    let token = api.token("developer");
    let mut tcp = TcpStream::connect(api.addr()).await.unwrap();
    let head = format!(
        "POST /apis/certificates.k8s.io/v1/certificatesigningrequests HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        token,
        BODY + 1
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // No body sent: the answer comes from the declared length alone.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.contains("Request entity too large: limit is 3145728"),
        "{text}"
    );
}
