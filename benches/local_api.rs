//! Raw capacity of the local API, as a kube-rs client sees it over plain HTTP on loopback:
//! - CSR status writes per second (the signer's certificate write), sequential and 8-way concurrent;
//! - watch fan-out: time for one CSR change to reach every one of N open watches.
//!
//! The controller's end-to-end benchmark reports its throughput as a ratio of these.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use csr_signer::dev::{self, LocalApi, LocalApiConfig, SIGNER_USER};
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn csr_pem() -> Vec<u8> {
    support::CsrSpec::new(
        support::key(csr_signer::ca_init::KeyType::P256),
        &[("CN", "bench")],
    )
    .pem()
}

fn cert_pem() -> Vec<u8> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let key =
        openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "bench").unwrap();
    let name = name.build();
    let mut b = openssl::x509::X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    b.build().to_pem().unwrap()
}

struct Fixture {
    api: LocalApi,
    admin: Api<CertificateSigningRequest>,
    signer: Api<CertificateSigningRequest>,
    request: Vec<u8>,
    cert_b64: String,
    next: usize,
}

impl Fixture {
    async fn new() -> Self {
        let api = dev::start(LocalApiConfig {
            max_history: 10_000,
            ..LocalApiConfig::plain_http()
        })
        .await
        .unwrap();
        let admin = Api::all(api.client("admin").unwrap());
        let signer = Api::all(api.client(SIGNER_USER).unwrap());
        Fixture {
            api,
            admin,
            signer,
            request: csr_pem(),
            cert_b64: base64::engine::general_purpose::STANDARD.encode(cert_pem()),
            next: 0,
        }
    }

    async fn create_pending(&mut self, n: usize) -> Vec<String> {
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            self.next += 1;
            let name = format!("bench-{}", self.next);
            let csr = CertificateSigningRequest {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                spec: CertificateSigningRequestSpec {
                    request: ByteString(self.request.clone()),
                    signer_name: support::SIGNER.into(),
                    usages: Some(vec!["client auth".into()]),
                    ..Default::default()
                },
                status: None,
            };
            self.admin
                .create(&PostParams::default(), &csr)
                .await
                .unwrap();
            names.push(name);
        }
        names
    }

    async fn write_cert(&self, name: &str) {
        let patch = json!({"status": {"certificate": self.cert_b64}});
        self.signer
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
}

fn status_writes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let fx = std::sync::Arc::new(tokio::sync::Mutex::new(rt.block_on(Fixture::new())));
    let mut g = c.benchmark_group("local_api_status_write");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut f = fx.lock().await;
                let names = f.create_pending(iters as usize).await;
                let start = Instant::now();
                for n in &names {
                    f.write_cert(n).await;
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("concurrent_8", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut f = fx.lock().await;
                let names = f.create_pending(iters as usize).await;
                let f = &*f;
                let start = Instant::now();
                futures::stream::iter(names.iter())
                    .for_each_concurrent(8, |n| async move { f.write_cert(n).await })
                    .await;
                start.elapsed()
            })
        })
    });
    g.finish();
    let writes = rt.block_on(async {
        let mut f = fx.lock().await;
        let names = f.create_pending(500).await;
        let f = &*f;
        let start = Instant::now();
        futures::stream::iter(names.iter())
            .for_each_concurrent(8, |n| async move { f.write_cert(n).await })
            .await;
        500.0 / start.elapsed().as_secs_f64()
    });
    println!(
        "local API: {writes:.0} CSR status writes/s (kube-rs, 8 concurrent, plain HTTP, loopback)"
    );
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn watch_fan_out(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("local_api_watch_fan_out");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for watchers in [1usize, 10, 100] {
        let (fx, mut streams) = rt.block_on(async {
            let mut fx = Fixture::new().await;
            fx.create_pending(1).await;
            let mut streams = Vec::new();
            for _ in 0..watchers {
                let api: Api<CertificateSigningRequest> =
                    Api::all(fx.api.client(SIGNER_USER).unwrap());
                let rv = fx.api.resource_version().to_string();
                let wp = WatchParams {
                    bookmarks: false,
                    ..WatchParams::default()
                };
                streams.push(api.watch(&wp, &rv).await.unwrap().boxed());
            }
            (fx, streams)
        });
        g.throughput(Throughput::Elements(watchers as u64));
        g.bench_with_input(BenchmarkId::from_parameter(watchers), &watchers, |b, _| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // A fresh value every time: an unchanged label would be a no-op without an event.
                        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let start = Instant::now();
                        let patch = json!({"metadata": {"labels": {"seq": seq.to_string()}}});
                        fx.admin
                            .patch("bench-1", &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .unwrap();
                        for s in streams.iter_mut() {
                            match s.next().await {
                                Some(Ok(WatchEvent::Modified(_))) => {}
                                other => panic!("unexpected watch item {other:?}"),
                            }
                        }
                        total += start.elapsed();
                    }
                    total
                })
            })
        });
        drop(streams);
        rt.block_on(fx.api.shutdown());
    }
    g.finish();
}

criterion_group!(benches, status_writes, watch_fan_out);
criterion_main!(benches);
