//! Memory under churn: CSRs are created, approved and deleted at a steady rate with a constant
//! number alive, against `csr-signer dev --no-signer` (the local API) with `csr-signer run` signing
//! them, both child processes on loopback. After each 1,000 CSRs issued it records the resident
//! memory of both; after warm-up (the first lap around the alive set, and the history window and
//! event TTL filling up) both must stay flat. Reports the figures and the slope of the second
//! half in KiB per 1,000 CSRs, measured in this run.
//!
//! The local API runs with `--event-ttl 60s` (kube-apiserver's default is one hour, which a run of
//! minutes would not reach); its watch history keeps 75 s or 10,000 events, as by default.
//! `cargo test --all-targets` runs a short version (1,000 CSRs, 300 alive, 50/s) to check it works; the
//! full run is `cargo bench --bench soak` (16,000 CSRs, 2,000 alive, at 80 CSRs/s).

#[path = "../tests/process_support/mod.rs"]
mod process_support;
#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csr_signer::ca_init::KeyType;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, DeleteParams, PostParams};
use process_support::{mib, run_settings_events, run_signer, DevApi, Proc};

struct Plan {
    total: usize,
    alive: usize,
    per_second: u32,
    /// The signer records Events (`SOAK_EVENTS=false` turns them off, to tell the event
    /// recorder's own memory from the rest).
    events: bool,
}

/// One RSS sample: CSRs issued so far, local API KiB, signer KiB.
type Sample = (usize, u64, u64);

fn issued(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with("csr_signer_requests_total{") && l.contains("\"issued\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

async fn scrape(listen: SocketAddr) -> String {
    match reqwest::get(format!("http://{listen}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let num: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

async fn soak(plan: &Plan) -> Vec<Sample> {
    let _ = csr_signer::server::raise_open_file_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut api = DevApi::start_with(dir.path(), false, &["--event-ttl", "60s"]).await;
    let ca = support::TestCa::new(KeyType::P256);
    let listen = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let mut signer: Proc = run_signer(
        dir.path(),
        &run_settings_events(&ca.cert, &ca.key, listen, 5000, plan.events),
        &api.kubeconfig,
        "admin",
        listen,
    )
    .await;
    let dev = Api::<CertificateSigningRequest>::all(api.client("developer").await);
    let admin = Api::<CertificateSigningRequest>::all(api.client("admin").await);
    let pem =
        Arc::new(support::CsrSpec::new(support::key(KeyType::P256), &[("CN", "developer")]).pem());

    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / plan.per_second);
    let mut samples = Vec::new();
    let mut next_sample = 1000;
    let started = Instant::now();
    for i in 0..plan.total + plan.alive {
        tick.tick().await;
        let permit = in_flight.clone().acquire_owned().await.expect("permit");
        let (dev, admin, pem, failures) =
            (dev.clone(), admin.clone(), pem.clone(), failures.clone());
        let create = i < plan.total;
        let delete = i.checked_sub(plan.alive);
        tokio::spawn(async move {
            let _permit = permit;
            if create {
                let name = format!("soak-{i}");
                let csr = support::csr_object(
                    &name,
                    support::SIGNER,
                    &pem,
                    &["digital signature", "client auth"],
                    None,
                );
                if dev.create(&PostParams::default(), &csr).await.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                support::approve_now(&admin, &name).await;
            }
            if let Some(old) = delete {
                if admin
                    .delete(&format!("soak-{old}"), &DeleteParams::default())
                    .await
                    .is_err()
                {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        if i % 100 == 0 {
            let done = issued(&scrape(listen).await);
            if done >= next_sample {
                samples.push((done, api.proc.rss_kib(), signer.rss_kib()));
                next_sample += 1000;
            }
        }
    }
    let _ = in_flight.acquire_many(64).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = issued(&scrape(listen).await);
    while done < plan.total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        done = issued(&scrape(listen).await);
    }
    samples.push((done, api.proc.rss_kib(), signer.rss_kib()));
    let took = started.elapsed();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "API calls failed");
    assert!(
        done >= plan.total,
        "only {done} of {} CSRs issued; signer log:\n{}",
        plan.total,
        signer.log_text()
    );
    println!(
        "soak: {} CSRs issued in {:.0} s ({:.0}/s), {} alive",
        done,
        took.as_secs_f64(),
        done as f64 / took.as_secs_f64(),
        plan.alive
    );
    samples
}

fn report(plan: &Plan, samples: &[Sample]) {
    println!("CSRs issued | local API RSS MiB | signer RSS MiB");
    for (n, a, s) in samples {
        println!("{n:>11} | {:>17.1} | {:>14.1}", mib(*a), mib(*s));
    }
    // Flatness after warm-up: the second half of the run.
    let half: Vec<&Sample> = samples
        .iter()
        .filter(|(n, _, _)| *n >= plan.total / 2)
        .collect();
    let per_k = |f: &dyn Fn(&Sample) -> u64| {
        let pts: Vec<(f64, f64)> = half
            .iter()
            .map(|s| (s.0 as f64 / 1000.0, f(s) as f64))
            .collect();
        slope(&pts)
    };
    let api_slope = per_k(&|s| s.1);
    let signer_slope = per_k(&|s| s.2);
    println!(
        "RESULT soak ({} CSRs, {} alive, {}/s, signer events {}): local API {:.1} -> {:.1} MiB, signer {:.1} -> {:.1} MiB; \
         second-half slope: local API {:+.0} KiB, signer {:+.1} KiB per 1,000 CSRs",
        plan.total,
        plan.alive,
        plan.per_second,
        if plan.events { "on" } else { "off" },
        mib(samples.first().map_or(0, |s| s.1)),
        mib(samples.last().map_or(0, |s| s.1)),
        mib(samples.first().map_or(0, |s| s.2)),
        mib(samples.last().map_or(0, |s| s.2)),
        api_slope,
        signer_slope
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let events = std::env::var("SOAK_EVENTS").map_or(true, |v| v != "false");
    let plan = if full {
        Plan {
            total: 16_000,
            alive: 2_000,
            per_second: 80,
            events,
        }
    } else {
        // Debug build: slow enough that a CSR must live a few seconds to be issued before its
        // deletion.
        Plan {
            total: 1_000,
            alive: 300,
            per_second: 50,
            events,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let samples = rt.block_on(soak(&plan));
    report(&plan, &samples);
}
