//! End-to-end controller benchmarks against the local API over real HTTP (P-256 CA):
//!
//! 1. `drain_2000`: time for the signer to issue 2,000 pre-approved CSRs, next to the local API's
//!    raw status-write rate measured in the same run (the same 2,000-write pattern from a plain
//!    kube client with a pre-made certificate). Reports issued/s and the ratio.
//! 2. `latency_at_100_per_s`: CSRs approved at 100/s; approval-sent → certificate-seen (watch)
//!    latency, p50 and p99.
//! 3. RSS of a `csr-signer run` subprocess with 20,000 CSRs of its signer present (most issued).
//!
//! The signer runs with client QPS/burst 5000 (the default 50/100 is for real apiservers and would
//! make (1) measure the limiter, not the signer). Figures go to stdout for the README.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use criterion::{criterion_group, Criterion};
use csr_signer::ca_init::{self, KeyType};
use csr_signer::config::Settings;
use csr_signer::dev::{self, LocalApi, LocalApiConfig};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

use support::SIGNER;
const QPS: u32 = 5000;

struct Fixture {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    ca: ca_init::Created,
    request_pem: Vec<u8>,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca_init::init(&ca_init::InitOptions {
        out: dir.path().join("ca"),
        key_type: KeyType::P256,
        days: 365,
        common_name: "bench CA".into(),
        intermediate: false,
    })
    .expect("ca");
    let request_pem =
        support::CsrSpec::new(support::key(KeyType::P256), &[("CN", "developer")]).pem();
    Fixture {
        rt,
        dir,
        ca,
        request_pem,
    }
}

fn settings(f: &Fixture, listen: &str) -> String {
    format!(
        "signers:\n- name: {SIGNER}\n  ca: {{certFile: {}, keyFile: {}}}\n\
         controller: {{qps: {QPS}, burst: {QPS}, workers: 4, events: false, leaderElection: {{enabled: false}}}}\n\
         server: {{listen: \"{listen}\"}}\n",
        f.ca.cert.display(),
        f.ca.key.display()
    )
}

fn csr(name: &str, pem: &[u8]) -> CertificateSigningRequest {
    support::csr_object(
        name,
        SIGNER,
        pem,
        &["digital signature", "client auth"],
        None,
    )
}

async fn approve(api: &Api<CertificateSigningRequest>, name: &str) {
    support::approve_now(api, name).await
}

/// Creates `n` CSRs named `<prefix>-<i>`, approved when `approved`.
async fn populate(
    api: &LocalApi,
    prefix: &str,
    n: usize,
    pem: &[u8],
    approved: bool,
) -> Vec<String> {
    let dev = Api::<CertificateSigningRequest>::all(api.client("developer").expect("client"));
    let admin = Api::<CertificateSigningRequest>::all(api.client("admin").expect("client"));
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    futures::stream::iter(names.clone())
        .for_each_concurrent(8, |name| {
            let (dev, admin) = (dev.clone(), admin.clone());
            async move {
                dev.create(&PostParams::default(), &csr(&name, pem))
                    .await
                    .expect("create");
                if approved {
                    approve(&admin, &name).await;
                }
            }
        })
        .await;
    names
}

/// Waits until every CSR with `prefix` has a certificate.
async fn wait_issued(api: &LocalApi, prefix: &str, n: usize) {
    let admin = Api::<CertificateSigningRequest>::all(api.client("admin").expect("client"));
    loop {
        let list = admin
            .list(&kube::api::ListParams::default().fields(&format!("spec.signerName={SIGNER}")))
            .await
            .expect("list");
        let done = list
            .items
            .iter()
            .filter(|c| {
                c.metadata
                    .name
                    .as_deref()
                    .is_some_and(|x| x.starts_with(prefix))
            })
            .filter(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.certificate.as_ref())
                    .is_some()
            })
            .count();
        if done >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_signer(
    f: &Fixture,
    api: &LocalApi,
) -> (
    csr_signer::service::Service,
    tokio::sync::oneshot::Sender<()>,
) {
    let s = Settings::from_yaml(&settings(f, "127.0.0.1:0"), "bench.yaml").expect("settings");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let svc = csr_signer::service::start(
        s,
        api.client(dev::SIGNER_USER).expect("client"),
        async move {
            let _ = rx.await;
        },
        csr_signer::service::RunOptions {
            identity: Some("bench".into()),
            ca_poll_interval: None,
        },
    )
    .await
    .expect("signer");
    (svc, tx)
}

fn drain(c: &mut Criterion) {
    let f = fixture();
    const N: usize = 2000;
    // A certificate the raw writer puts on each CSR (the API checks it parses).
    let cert_b64 = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(&f.ca.cert).expect("ca cert"));
    let rates: Arc<Mutex<HashMap<&'static str, Vec<f64>>>> = Arc::default();
    let mut g = c.benchmark_group("controller");
    // One 2,000-CSR drain per sample; setup (creating and approving) is not timed.
    g.sample_size(10);
    g.sampling_mode(criterion::SamplingMode::Flat);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(1));
    let r = rates.clone();
    g.bench_function("raw_status_writes_2000", |b| {
        b.iter_custom(|iters| {
            f.rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let api = dev::start(LocalApiConfig::plain_http()).await.expect("api");
                    populate(&api, "raw", N, &f.request_pem, true).await;
                    let signer = Api::<CertificateSigningRequest>::all(
                        api.client(dev::SIGNER_USER).expect("client"),
                    );
                    // Names and resourceVersions up front (untimed), as the signer has them from its watch.
                    let targets: Vec<(String, String)> = signer
                        .list(&kube::api::ListParams::default())
                        .await
                        .expect("list")
                        .items
                        .into_iter()
                        .map(|c| {
                            (
                                c.metadata.name.unwrap_or_default(),
                                c.metadata.resource_version.unwrap_or_default(),
                            )
                        })
                        .collect();
                    let t = Instant::now();
                    futures::stream::iter(targets)
                        .for_each_concurrent(4, |(name, rv)| {
                            let signer = signer.clone();
                            let cert_b64 = cert_b64.clone();
                            async move {
                                signer
                                    .patch_status(
                                        &name,
                                        &PatchParams::default(),
                                        &Patch::Merge(serde_json::json!({
                                            "metadata": {"resourceVersion": rv},
                                            "status": {"certificate": cert_b64},
                                        })),
                                    )
                                    .await
                                    .expect("raw status write");
                            }
                        })
                        .await;
                    let took = t.elapsed();
                    total += took;
                    r.lock()
                        .expect("rates")
                        .entry("raw")
                        .or_default()
                        .push(N as f64 / took.as_secs_f64());
                    api.shutdown().await;
                }
                total
            })
        })
    });
    let r = rates.clone();
    g.bench_function("drain_2000_preapproved", |b| {
        b.iter_custom(|iters| {
            f.rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let api = dev::start(LocalApiConfig::plain_http()).await.expect("api");
                    populate(&api, "drain", N, &f.request_pem, true).await;
                    let t = Instant::now();
                    let (svc, stop) = start_signer(&f, &api).await;
                    // Poll the in-process counter: listing 2,000 CSRs to check would load the API.
                    let issued = svc
                        .metrics
                        .requests
                        .with_label_values(&[SIGNER, "csr", "issued", "None"]);
                    let mut synced_at = None;
                    while issued.get() < N as u64 {
                        if synced_at.is_none() && svc.readiness.watches_synced() {
                            synced_at = Some((Instant::now(), issued.get()));
                        }
                        tokio::time::sleep(Duration::from_micros(500)).await;
                    }
                    let took = t.elapsed();
                    total += took;
                    let since_sync = synced_at.map(|(at, already)| {
                        let rest = (N as u64).saturating_sub(already) as f64;
                        rest / at.elapsed().as_secs_f64().max(1e-9)
                    });
                    {
                        let mut rates = r.lock().expect("rates");
                        rates
                            .entry("signer")
                            .or_default()
                            .push(N as f64 / took.as_secs_f64());
                        if let Some(v) = since_sync {
                            rates.entry("after_sync").or_default().push(v);
                        }
                    }
                    wait_issued(&api, "drain", N).await;
                    let _ = stop.send(());
                    svc.wait().await.expect("signer");
                    api.shutdown().await;
                }
                total
            })
        })
    });
    g.finish();
    let rates = rates.lock().expect("rates");
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let raw = median(rates.get("raw").map(Vec::as_slice).unwrap_or(&[]));
    let signer = median(rates.get("signer").map(Vec::as_slice).unwrap_or(&[]));
    let after_sync = median(rates.get("after_sync").map(Vec::as_slice).unwrap_or(&[]));
    let pct = |x: f64| if raw > 0.0 { x / raw * 100.0 } else { 0.0 };
    println!(
        "RESULT drain 2000: signer {signer:.0} issued/s from process start ({:.0}% of raw), {after_sync:.0}/s counted from watch sync ({:.0}% of raw); raw status writes {raw:.0}/s (merge-patch with resourceVersion, 4 in flight); client qps/burst {QPS}",
        pct(signer),
        pct(after_sync)
    );
}

fn latency(c: &mut Criterion) {
    let _ = c;
    let f = fixture();
    const N: usize = 1000;
    let (p50, p99) = f.rt.block_on(async {
        let api = dev::start(LocalApiConfig::plain_http()).await.expect("api");
        let names = populate(&api, "lat", N, &f.request_pem, false).await;
        let (svc, stop) = start_signer(&f, &api).await;
        // Let the signer sync before offering load.
        while !svc.readiness.watches_synced() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let admin = Api::<CertificateSigningRequest>::all(api.client("admin").expect("client"));
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let watch = {
            let (admin, sent, seen) = (admin.clone(), sent.clone(), seen.clone());
            tokio::spawn(async move {
                let mut done = std::collections::HashSet::new();
                let mut s = watcher(
                    admin,
                    watcher::Config::default().fields(&format!("spec.signerName={SIGNER}")),
                )
                .boxed();
                while let Ok(Some(ev)) = s.try_next().await {
                    let objs = match ev {
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![o],
                        _ => vec![],
                    };
                    for o in objs {
                        let name = o.metadata.name.clone().unwrap_or_default();
                        if o.status
                            .as_ref()
                            .and_then(|s| s.certificate.as_ref())
                            .is_some()
                            && done.insert(name.clone())
                        {
                            if let Some(t) = sent.lock().expect("sent").get(&name) {
                                seen.lock().expect("seen").push(t.elapsed());
                            }
                        }
                    }
                    if done.len() >= N {
                        return;
                    }
                }
            })
        };
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for name in &names {
            tick.tick().await;
            sent.lock()
                .expect("sent")
                .insert(name.clone(), Instant::now());
            let admin = admin.clone();
            let name = name.clone();
            tokio::spawn(async move { approve(&admin, &name).await });
        }
        let _ = tokio::time::timeout(Duration::from_secs(120), watch).await;
        let _ = stop.send(());
        let _ = svc.wait().await;
        api.shutdown().await;
        let mut v = seen.lock().expect("seen").clone();
        v.sort();
        let pick = |q: f64| {
            v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        (pick(0.50), pick(0.99))
    });
    println!(
        "RESULT latency at 100 CSRs/s ({N} CSRs): approval->issued p50 {:.1} ms, p99 {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

fn rss(c: &mut Criterion) {
    let _ = c;
    let f = fixture();
    const N: usize = 20_000;
    let kb = f.rt.block_on(async {
        let api = dev::start(LocalApiConfig::plain_http()).await.expect("api");
        // 19,000 approved (the signer issues them), 1,000 pending.
        populate(&api, "mem", N - 1000, &f.request_pem, true).await;
        populate(&api, "pend", 1000, &f.request_pem, false).await;
        let kubeconfig = f.dir.path().join("signer.kubeconfig");
        api.write_kubeconfig(&kubeconfig, &[dev::SIGNER_USER])
            .expect("kubeconfig");
        let config = f.dir.path().join("rss.yaml");
        std::fs::write(&config, settings(&f, "127.0.0.1:0")).expect("config");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_csr-signer"))
            .args(["run", "--config"])
            .arg(&config)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        wait_issued(&api, "mem", N - 1000).await;
        // Settle, then read the resident set.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = child.id().expect("pid");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc");
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let _ = child.kill().await;
        api.shutdown().await;
        kb
    });
    println!(
        "RESULT rss with {N} CSRs present (19,000 issued, 1,000 pending): {:.1} MiB",
        kb as f64 / 1024.0
    );
}

criterion_group!(benches, drain, latency, rss);

fn main() {
    // `cargo test --all-targets` runs benches once without `--bench`: check that the drain still works
    // there, and leave the minute-long latency and memory runs to real benchmark runs.
    if std::env::args().any(|a| a == "--bench") {
        benches();
    } else {
        let mut c = Criterion::default().configure_from_args();
        drain(&mut c);
    }
    Criterion::default().configure_from_args().final_summary();
}
