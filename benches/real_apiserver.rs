//! Controller benchmarks against the REAL kube-apiserver (v1.37, embedded etcd; `tests/kube/`, started by
//! `tests/kube_support`), P-256 CA. The signer runs as the ServiceAccount
//! `system:serviceaccount:csr-signer:csr-signer` bound to exactly the Helm chart's RBAC.
//!
//! 1. `drain_2000_preapproved`: the signer (in-process, 4 workers) issues 2,000 pre-approved CSRs. In the
//!    same iteration, on another 2,000 pre-approved CSRs, a plain kube client with the signer's identity
//!    does the raw status writes the signer does (merge patch of `status.certificate` with a pre-made
//!    certificate and the `metadata.resourceVersion` precondition, 4 in flight, resourceVersions listed
//!    beforehand), and, as a diagnostic, the same raw writes from a client that also holds the signer's
//!    watch. The three rotate their order, so load drift on the shared machine hits all alike.
//!    Criterion times the signer; the summary gives issued/s, raw writes/s and their ratio.
//! 2. Latency: 1,000 pending CSRs approved at 100/s; approval sent → certificate seen by a watching client,
//!    p50 and p99, split into approval sent → Approved seen by the watch, and Approved seen → certificate
//!    seen (the signer's part).
//! 3. RSS: VmHWM and VmRSS of a `csr-signer run` subprocess (kubeconfig with the signer's token) with 20,000
//!    CSRs of its signer present (19,000 approved, which it issues, and 1,000 pending).
//!
//! CSRs are deleted (admin deletecollection) before and after every phase. The signer runs with client
//! QPS/burst 5000 (the default 50/100 is for production apiservers and would make (1) measure the client
//! limiter); the plain kube clients have no client-side limiter. Leader election and events are off, as
//! in benches/controller.rs.
//!
//! Where the time goes: for each timed part, CPU seconds of this process (the raw client, or the
//! in-process signer), of the control plane process (kube-apiserver + etcd) and of the whole machine
//! (/proc/stat), so a shortfall can be told apart from other builds on the shared machine.
//!
//! Without `--bench` (`cargo test --all-targets`) each part runs once on a handful of CSRs.

#[path = "../tests/kube_support/mod.rs"]
mod kube_support;

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use criterion::Criterion;
use csr_signer::ca_init::{self, KeyType};
use csr_signer::config::Settings;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

use support::SIGNER;
const SIGNER_USER: &str = "system:serviceaccount:csr-signer:csr-signer";
const QPS: u32 = 5000;
const WORKERS: usize = 4;
/// Concurrency of the untimed setup (creating and approving CSRs).
const SETUP_CONCURRENCY: usize = 16;

struct Sizes {
    drain: usize,
    latency: usize,
    rss_issued: usize,
    rss_pending: usize,
}

const BENCH: Sizes = Sizes {
    drain: 2000,
    latency: 1000,
    rss_issued: 19_000,
    rss_pending: 1000,
};
const SMOKE: Sizes = Sizes {
    drain: 10,
    latency: 10,
    rss_issued: 10,
    rss_pending: 5,
};

struct Fixture {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    ca: ca_init::Created,
    request_pem: Vec<u8>,
    /// The CA certificate, base64: the pre-made certificate of the raw writes.
    cert_b64: String,
    cp: &'static kube_support::ControlPlane,
    /// The control plane process (kube-apiserver and etcd in one process), for its CPU time.
    cp_pid: Option<u32>,
    admin: kube::Client,
    developer: kube::Client,
    signer: kube::Client,
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
    let cert_b64 =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&ca.cert).expect("ca cert"));
    let started = Instant::now();
    let cp = kube_support::shared();
    let (admin, developer, signer) = rt.block_on(async {
        cp.apply_chart_rbac(&[SIGNER], "csr-signer").await;
        (
            cp.client("admin").await,
            cp.client("developer").await,
            cp.client("signer").await,
        )
    });
    println!(
        "control plane ready in {:.1} s (kube-apiserver up in {} ms), chart RBAC applied for {SIGNER_USER}",
        started.elapsed().as_secs_f64(),
        cp.ready.startup_millis
    );
    let f = Fixture {
        rt,
        dir,
        ca,
        request_pem,
        cert_b64,
        cp,
        cp_pid: child_named("controlplane"),
        admin,
        developer,
        signer,
    };
    f.rt.block_on(delete_all(&f));
    f
}

fn settings(f: &Fixture, listen: &str) -> String {
    format!(
        "signers:\n- name: {SIGNER}\n  ca: {{certFile: {}, keyFile: {}}}\n\
         controller: {{qps: {QPS}, burst: {QPS}, workers: {WORKERS}, events: false, leaderElection: {{enabled: false}}}}\n\
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

/// Creates `n` CSRs named `<prefix>-<i>` as the developer, approved by the admin when `approved`.
async fn populate(f: &Fixture, prefix: &str, n: usize, approved: bool) -> Vec<String> {
    let dev = Api::<CertificateSigningRequest>::all(f.developer.clone());
    let admin = Api::<CertificateSigningRequest>::all(f.admin.clone());
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let pem = f.request_pem.as_slice();
    futures::stream::iter(names.clone())
        .for_each_concurrent(SETUP_CONCURRENCY, |name| {
            let (dev, admin) = (dev.clone(), admin.clone());
            async move {
                dev.create(&PostParams::default(), &csr(&name, pem))
                    .await
                    .unwrap_or_else(|e| panic!("create {name}: {e}"));
                if approved {
                    approve(&admin, &name).await;
                }
            }
        })
        .await;
    names
}

/// Deletes every CSR (admin deletecollection) and waits until none is left.
async fn delete_all(f: &Fixture) {
    let admin = Api::<CertificateSigningRequest>::all(f.admin.clone());
    admin
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("deletecollection");
    for _ in 0..600 {
        let left = admin
            .list_metadata(&ListParams::default().limit(1))
            .await
            .expect("list");
        if left.items.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("CSRs still present a minute after deletecollection");
}

/// Counts the CSRs with `prefix` that have a certificate (paged list, as the admin).
async fn count_issued(f: &Fixture, prefix: &str) -> usize {
    let admin = Api::<CertificateSigningRequest>::all(f.admin.clone());
    let mut done = 0;
    let mut lp = ListParams::default()
        .fields(&format!("spec.signerName={SIGNER}"))
        .limit(500);
    loop {
        let page = admin.list(&lp).await.expect("list");
        done += page
            .items
            .iter()
            .filter(|c| {
                c.metadata
                    .name
                    .as_deref()
                    .is_some_and(|x| x.starts_with(prefix))
                    && c.status
                        .as_ref()
                        .and_then(|s| s.certificate.as_ref())
                        .is_some()
            })
            .count();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return done,
        }
    }
}

async fn start_signer(
    f: &Fixture,
) -> (
    csr_signer::service::Service,
    tokio::sync::oneshot::Sender<()>,
) {
    let s = Settings::from_yaml(&settings(f, "127.0.0.1:0"), "bench.yaml").expect("settings");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let svc = csr_signer::service::start(
        s,
        f.signer.clone(),
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

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// utime + stime of a process, in seconds (clock ticks of 1/100 s, Linux's USER_HZ).
fn proc_cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 3, utime 14, stime 15.
    (tick(11) + tick(12)) / 100.0
}

/// A child process of this one with the given command name.
fn child_named(comm: &str) -> Option<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let name = head.split_once('(')?.1;
        let ppid = rest.split_whitespace().nth(1)?;
        (name == comm && ppid == me).then_some(pid)
    })
}

/// CPU seconds used so far: by this process (the raw client, or the in-process signer), by the control
/// plane, and by the whole machine (every process, from /proc/stat).
#[derive(Clone, Copy)]
struct Cpu {
    me: f64,
    cp: f64,
    machine: f64,
    at: Instant,
}

/// CPU used between two readings, in seconds, and the wall time.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    me: f64,
    cp: f64,
    machine: f64,
    wall: f64,
}

impl CpuUse {
    fn others(&self) -> f64 {
        (self.machine - self.me - self.cp).max(0.0)
    }
}

fn cpu_now(f: &Fixture) -> Cpu {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let busy: f64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .enumerate()
        // user nice system idle iowait irq softirq steal: all but idle and iowait.
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum();
    Cpu {
        me: proc_cpu_secs("self"),
        cp: f.cp_pid.map_or(0.0, |p| proc_cpu_secs(&p.to_string())),
        machine: busy / 100.0,
        at: Instant::now(),
    }
}

impl Cpu {
    fn since(&self, f: &Fixture) -> CpuUse {
        let now = cpu_now(f);
        CpuUse {
            me: now.me - self.me,
            cp: now.cp - self.cp,
            machine: now.machine - self.machine,
            wall: (now.at - self.at).as_secs_f64(),
        }
    }
}

/// One raw-writer drain's figures.
#[derive(Default, Clone, Copy)]
struct Raw {
    per_s: f64,
    write_p50: Duration,
    write_p99: Duration,
    cpu: CpuUse,
}

/// One iteration's figures.
#[derive(Default, Clone)]
struct DrainRun {
    raw: Raw,
    /// The same raw writes with a watch like the signer's open on the same client (diagnostic).
    raw_watch: Raw,
    signer_per_s: f64,
    signer_after_sync_per_s: f64,
    signer_sync: Duration,
    signer_cpu: CpuUse,
    /// The signer's mean verify + policy + issue time per CSR (its signing-duration histogram).
    signer_sign_mean: Duration,
}

/// The raw status-write rate over `n` freshly created, approved CSRs, as the signer's identity. With
/// `with_watch`, the client also holds a watch on the signer's CSRs (as a controller does), listed
/// before the timed part and decoding every event while the writes run.
async fn raw_drain(f: &Fixture, tag: &str, n: usize, with_watch: bool) -> Raw {
    let prefix = format!("raw{}{tag}", if with_watch { "w" } else { "" });
    populate(f, &prefix, n, true).await;
    let signer = Api::<CertificateSigningRequest>::all(f.signer.clone());
    let watch = if with_watch {
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
        let api = signer.clone();
        let task = tokio::spawn(async move {
            let mut synced_tx = Some(synced_tx);
            let mut certs = 0usize;
            let mut s = watcher(
                api,
                watcher::Config::default().fields(&format!("spec.signerName={SIGNER}")),
            )
            .boxed();
            while let Ok(Some(ev)) = s.try_next().await {
                match ev {
                    watcher::Event::InitDone => {
                        if let Some(tx) = synced_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                        certs += usize::from(
                            o.status
                                .as_ref()
                                .and_then(|s| s.certificate.as_ref())
                                .is_some(),
                        );
                    }
                    _ => {}
                }
            }
            certs
        });
        let _ = synced_rx.await;
        Some(task)
    } else {
        None
    };
    // Names and resourceVersions up front (untimed), as the signer has them from its watch.
    let targets: Vec<(String, String)> = signer
        .list(&ListParams::default().fields(&format!("spec.signerName={SIGNER}")))
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
    assert_eq!(targets.len(), n, "CSRs left over from an earlier phase");
    let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let cpu = cpu_now(f);
    let t = Instant::now();
    futures::stream::iter(targets)
        .for_each_concurrent(WORKERS, |(name, rv)| {
            let signer = signer.clone();
            let cert_b64 = f.cert_b64.clone();
            let lat = lat.clone();
            async move {
                let t = Instant::now();
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
                    .unwrap_or_else(|e| panic!("raw status write {name}: {e}"));
                lat.lock().expect("lat").push(t.elapsed());
            }
        })
        .await;
    let took = t.elapsed();
    let cpu = cpu.since(f);
    if let Some(task) = watch {
        task.abort();
    }
    let mut lat = lat.lock().expect("lat").clone();
    lat.sort();
    delete_all(f).await;
    Raw {
        per_s: n as f64 / took.as_secs_f64(),
        write_p50: quantile(&lat, 0.5),
        write_p99: quantile(&lat, 0.99),
        cpu,
    }
}

/// The signer's drain of `n` freshly created, approved CSRs; returns the time from process start.
async fn signer_drain(f: &Fixture, tag: &str, n: usize, run: &mut DrainRun) -> Duration {
    let prefix = format!("drain{tag}");
    populate(f, &prefix, n, true).await;
    let cpu = cpu_now(f);
    let t = Instant::now();
    let (svc, stop) = start_signer(f).await;
    // Poll the in-process counter: listing 2,000 CSRs to check would load the apiserver.
    let issued = svc
        .metrics
        .requests
        .with_label_values(&[SIGNER, "csr", "issued", "None"]);
    let mut synced_at = None;
    while issued.get() < n as u64 {
        if synced_at.is_none() && svc.readiness.watches_synced() {
            synced_at = Some((Instant::now(), issued.get()));
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the signer issued only {} of {n} in 5 minutes",
            issued.get()
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let took = t.elapsed();
    run.signer_cpu = cpu.since(f);
    let sign = svc
        .metrics
        .signing_duration
        .with_label_values(&[SIGNER, "csr"]);
    run.signer_sign_mean =
        Duration::from_secs_f64(sign.get_sample_sum() / sign.get_sample_count().max(1) as f64);
    run.signer_per_s = n as f64 / took.as_secs_f64();
    if let Some((at, already)) = synced_at {
        run.signer_sync = at - t;
        let rest = (n as u64).saturating_sub(already) as f64;
        run.signer_after_sync_per_s = rest / at.elapsed().as_secs_f64().max(1e-9);
    }
    let _ = stop.send(());
    svc.wait().await.expect("signer");
    assert_eq!(count_issued(f, &prefix).await, n, "issued on the apiserver");
    delete_all(f).await;
    took
}

fn drain(c: &mut Criterion, f: &Fixture, n: usize) -> Vec<DrainRun> {
    let runs: Arc<Mutex<Vec<DrainRun>>> = Arc::default();
    let mut g = c.benchmark_group("real_apiserver");
    // Three 2,000-CSR drains per sample (raw writer, raw writer with a watch, signer); criterion times
    // the signer's; setup is not timed.
    g.sample_size(10);
    g.sampling_mode(criterion::SamplingMode::Flat);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(1));
    let r = runs.clone();
    g.bench_function(format!("drain_{n}_preapproved"), |b| {
        b.iter_custom(|iters| {
            f.rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let i = r.lock().expect("runs").len();
                    let tag = i.to_string();
                    let mut run = DrainRun::default();
                    // Rotate the order so drift in the machine's load hits all three alike.
                    for step in 0..3 {
                        match (i + step) % 3 {
                            0 => run.raw = raw_drain(f, &tag, n, false).await,
                            1 => total += signer_drain(f, &tag, n, &mut run).await,
                            _ => run.raw_watch = raw_drain(f, &tag, n, true).await,
                        }
                    }
                    let per_k = |x: f64| x / n as f64 * 1e6;
                    let raw = |name: &str, r: &Raw| {
                        format!(
                            "{name} {:.0}/s (write p50 {:.1} ms, p99 {:.1} ms; CPU ms/1000: client {:.0}, control plane {:.0}, others {:.0})",
                            r.per_s,
                            ms(r.write_p50),
                            ms(r.write_p99),
                            per_k(r.cpu.me),
                            per_k(r.cpu.cp),
                            per_k(r.cpu.others()),
                        )
                    };
                    println!(
                        "  iteration {i}: {}; {}; signer {:.0}/s from start ({:.0}/s after watch sync at {:.0} ms; CPU ms/1000: signer {:.0} (sign {:.0} µs/CSR), control plane {:.0}, others {:.0}); load {}",
                        raw("raw", &run.raw),
                        raw("raw+watch", &run.raw_watch),
                        run.signer_per_s,
                        run.signer_after_sync_per_s,
                        ms(run.signer_sync),
                        per_k(run.signer_cpu.me),
                        run.signer_sign_mean.as_secs_f64() * 1e6,
                        per_k(run.signer_cpu.cp),
                        per_k(run.signer_cpu.others()),
                        loadavg()
                    );
                    r.lock().expect("runs").push(run);
                }
                total
            })
        })
    });
    g.finish();
    let runs = runs.lock().expect("runs").clone();
    runs
}

struct Latency {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    approve_p50: Duration,
    approve_p99: Duration,
    /// Approval sent → the Approved condition seen by the watch (one write and one watch delivery).
    approved_seen_p50: Duration,
    approved_seen_p99: Duration,
    /// Approved condition seen → certificate seen (the signer's part: its watch delivery, signing, its
    /// status write, and the delivery to the watching client).
    signer_part_p50: Duration,
    signer_part_p99: Duration,
    cpu: CpuUse,
}

fn latency(f: &Fixture, n: usize) -> Latency {
    f.rt.block_on(async {
        let names = populate(f, "lat", n, false).await;
        let (svc, stop) = start_signer(f).await;
        // Let the signer sync before offering load.
        while !svc.readiness.watches_synced() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let admin = Api::<CertificateSigningRequest>::all(f.admin.clone());
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let approved_seen: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let signer_part: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let approve_rtt: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
        let watch = {
            let (admin, sent, seen) = (admin.clone(), sent.clone(), seen.clone());
            let (approved_seen, signer_part) = (approved_seen.clone(), signer_part.clone());
            tokio::spawn(async move {
                let mut done = std::collections::HashSet::new();
                let mut approved_at: HashMap<String, Instant> = HashMap::new();
                let mut synced_tx = Some(synced_tx);
                let mut s = watcher(
                    admin,
                    watcher::Config::default().fields(&format!("spec.signerName={SIGNER}")),
                )
                .boxed();
                while let Ok(Some(ev)) = s.try_next().await {
                    let objs = match ev {
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![o],
                        watcher::Event::InitDone => {
                            if let Some(tx) = synced_tx.take() {
                                let _ = tx.send(());
                            }
                            vec![]
                        }
                        _ => vec![],
                    };
                    for o in objs {
                        let name = o.metadata.name.clone().unwrap_or_default();
                        let approved = o
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| c.iter().any(|c| c.type_ == "Approved"));
                        if approved && !approved_at.contains_key(&name) {
                            let now = Instant::now();
                            approved_at.insert(name.clone(), now);
                            if let Some(t) = sent.lock().expect("sent").get(&name) {
                                approved_seen.lock().expect("seen").push(now - *t);
                            }
                        }
                        if o.status
                            .as_ref()
                            .and_then(|s| s.certificate.as_ref())
                            .is_some()
                            && done.insert(name.clone())
                        {
                            if let Some(t) = sent.lock().expect("sent").get(&name) {
                                seen.lock().expect("seen").push(t.elapsed());
                            }
                            if let Some(a) = approved_at.get(&name) {
                                signer_part.lock().expect("seen").push(a.elapsed());
                            }
                        }
                    }
                    if done.len() >= n {
                        return;
                    }
                }
            })
        };
        // The watching client is listed and watching before the first approval.
        let _ = synced_rx.await;
        let cpu = cpu_now(f);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for name in &names {
            tick.tick().await;
            let t = Instant::now();
            sent.lock().expect("sent").insert(name.clone(), t);
            let (admin, name, rtt) = (admin.clone(), name.clone(), approve_rtt.clone());
            tokio::spawn(async move {
                approve(&admin, &name).await;
                rtt.lock().expect("rtt").push(t.elapsed());
            });
        }
        tokio::time::timeout(Duration::from_secs(120), watch)
            .await
            .expect("every approved CSR issued within 2 minutes")
            .expect("watch task");
        let cpu = cpu.since(f);
        let _ = stop.send(());
        let _ = svc.wait().await;
        delete_all(f).await;
        let mut v = seen.lock().expect("seen").clone();
        v.sort();
        let sorted = |m: &Arc<Mutex<Vec<Duration>>>| {
            let mut v = m.lock().expect("samples").clone();
            v.sort();
            v
        };
        let a = sorted(&approve_rtt);
        let aseen = sorted(&approved_seen);
        let spart = sorted(&signer_part);
        Latency {
            n: v.len(),
            p50: quantile(&v, 0.50),
            p99: quantile(&v, 0.99),
            max: v.last().copied().unwrap_or_default(),
            approve_p50: quantile(&a, 0.50),
            approve_p99: quantile(&a, 0.99),
            approved_seen_p50: quantile(&aseen, 0.50),
            approved_seen_p99: quantile(&aseen, 0.99),
            signer_part_p50: quantile(&spart, 0.50),
            signer_part_p99: quantile(&spart, 0.99),
            cpu,
        }
    })
}

struct Rss {
    hwm_kib: u64,
    rss_kib: u64,
    issue_time: Duration,
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/<pid>/status")
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The signer's `issued` decisions, from its /metrics.
async fn scrape_issued(addr: &str) -> Option<u64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let series = format!(
        "csr_signer_requests_total{{kind=\"csr\",outcome=\"issued\",reason=\"None\",signer=\"{SIGNER}\"}}"
    );
    text.lines()
        .find(|l| l.starts_with(&series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

fn rss(f: &Fixture, issued: usize, pending: usize) -> Rss {
    f.rt.block_on(async {
        populate(f, "mem", issued, true).await;
        populate(f, "pend", pending, false).await;
        let kubeconfig = f.dir.path().join("signer.kubeconfig");
        std::fs::write(&kubeconfig, f.cp.kubeconfig_yaml(f.cp.token("signer")))
            .expect("kubeconfig");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let config = f.dir.path().join("rss.yaml");
        std::fs::write(&config, settings(f, &listen)).expect("config");
        let log = f.dir.path().join("rss-signer.log");
        let t = Instant::now();
        // The benchmark gets the binary's path the way benches/controller.rs does (Cargo builds the
        // package's binaries for its benches and sets CARGO_BIN_EXE_<name>).
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_csr-signer"))
            .args(["run", "--config"])
            .arg(&config)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn csr-signer run");
        loop {
            if scrape_issued(&listen).await.unwrap_or(0) >= issued as u64 {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "csr-signer run exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(600),
                "the signer did not issue {issued} CSRs in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let issue_time = t.elapsed();
        // Settle, then read the resident set (and its peak, which the initial list sets).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = child.id().expect("pid");
        let hwm_kib = proc_status_kib(pid, "VmHWM:");
        let rss_kib = proc_status_kib(pid, "VmRSS:");
        let _ = child.kill().await;
        assert_eq!(
            count_issued(f, "mem").await,
            issued,
            "issued on the apiserver"
        );
        delete_all(f).await;
        Rss {
            hwm_kib,
            rss_kib,
            issue_time,
        }
    })
}

fn main() {
    let started = Instant::now();
    // `cargo test --all-targets` runs benches once without `--bench`: there, each part runs once on a
    // handful of CSRs, to check it works; the real sizes are for benchmark runs.
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes = if bench { BENCH } else { SMOKE };
    let load_before = loadavg();
    let f = fixture();
    let mut c = Criterion::default().configure_from_args();
    let runs = drain(&mut c, &f, sizes.drain);
    let lat = latency(&f, sizes.latency);
    let mem = rss(&f, sizes.rss_issued, sizes.rss_pending);
    c.final_summary();

    let col = |g: fn(&DrainRun) -> f64| runs.iter().map(g).collect::<Vec<f64>>();
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.0}–{hi:.0}")
    };
    let raw = col(|r| r.raw.per_s);
    let raw_watch = col(|r| r.raw_watch.per_s);
    let signer = col(|r| r.signer_per_s);
    let after_sync = col(|r| r.signer_after_sync_per_s);
    let ratio = col(|r| r.signer_per_s / r.raw.per_s * 100.0);
    let ratio_sync = col(|r| r.signer_after_sync_per_s / r.raw.per_s * 100.0);
    let ratio_watch = col(|r| r.signer_per_s / r.raw_watch.per_s * 100.0);
    let sync_ms = col(|r| ms(r.signer_sync));
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let n = sizes.drain;
    // Medians over the iterations of CPU ms per 1,000 CSRs, and of % of one core.
    let per_k = |v: Vec<f64>| median(&v) / n as f64 * 1e6;
    let busy = |v: Vec<f64>| median(&v) * 100.0;
    println!();
    println!("==================== real kube-apiserver: summary ====================");
    println!(
        "mode: {}; kube-apiserver v1.37.2 + embedded etcd (tests/kube), P-256 CA, signer as {SIGNER_USER} (chart RBAC)",
        if bench { "benchmark" } else { "test (smoke sizes)" }
    );
    println!("signer: in-process, {WORKERS} workers, client qps/burst {QPS}/{QPS} (so its limiter is not what is measured), events off, leader election off; plain clients have no limiter");
    println!(
        "drain {n} pre-approved CSRs ({} iterations, medians; min–max in brackets):",
        runs.len()
    );
    println!(
        "  signer, from process start (CA load, initial list, watch):  {:>6.0} issued/s  [{}]",
        median(&signer),
        spread(&signer)
    );
    println!(
        "  signer, counted from watch sync (sync after {:>3.0} ms):        {:>6.0} issued/s  [{}]",
        median(&sync_ms),
        median(&after_sync),
        spread(&after_sync)
    );
    println!(
        "  raw status writes, plain kube client as the signer's SA:    {:>6.0} writes/s  [{}]  (merge patch status.certificate + resourceVersion, pre-made cert, {WORKERS} in flight; per write p50 {:.1} ms, p99 {:.1} ms)",
        median(&raw),
        spread(&raw),
        median(&col(|r| ms(r.raw.write_p50))),
        median(&col(|r| ms(r.raw.write_p99)))
    );
    println!(
        "  ratio signer/raw: {:.0} % from start [{}], {:.0} % from watch sync [{}]   target ≥ 90 %: {}",
        median(&ratio),
        spread(&ratio),
        median(&ratio_sync),
        spread(&ratio_sync),
        met(median(&ratio) >= 90.0)
    );
    println!(
        "  diagnostic: the same raw writes while that client also holds the signer's watch: {:.0} writes/s [{}]; signer/that {:.0} % [{}]",
        median(&raw_watch),
        spread(&raw_watch),
        median(&ratio_watch),
        spread(&ratio_watch)
    );
    println!(
        "  CPU ms per 1,000 CSRs (client or signer / control plane = kube-apiserver + etcd / other processes):"
    );
    println!(
        "    raw {:.0} / {:.0} / {:.0};  raw+watch {:.0} / {:.0} / {:.0};  signer {:.0} / {:.0} / {:.0} (its signing histogram: {:.0} µs per CSR, wall time)",
        per_k(col(|r| r.raw.cpu.me)),
        per_k(col(|r| r.raw.cpu.cp)),
        per_k(col(|r| r.raw.cpu.others())),
        per_k(col(|r| r.raw_watch.cpu.me)),
        per_k(col(|r| r.raw_watch.cpu.cp)),
        per_k(col(|r| r.raw_watch.cpu.others())),
        per_k(col(|r| r.signer_cpu.me)),
        per_k(col(|r| r.signer_cpu.cp)),
        per_k(col(|r| r.signer_cpu.others())),
        median(&col(|r| r.signer_sign_mean.as_secs_f64() * 1e6))
    );
    println!(
        "  machine busy during the timed part (% of one core; 200 = both cores busy): raw {:.0} %, raw+watch {:.0} %, signer {:.0} % (of which other processes {:.0} / {:.0} / {:.0} %)",
        busy(col(|r| r.raw.cpu.machine / r.raw.cpu.wall)),
        busy(col(|r| r.raw_watch.cpu.machine / r.raw_watch.cpu.wall)),
        busy(col(|r| r.signer_cpu.machine / r.signer_cpu.wall)),
        busy(col(|r| r.raw.cpu.others() / r.raw.cpu.wall)),
        busy(col(|r| r.raw_watch.cpu.others() / r.raw_watch.cpu.wall)),
        busy(col(|r| r.signer_cpu.others() / r.signer_cpu.wall))
    );
    println!(
        "latency, {} CSRs approved at 100/s, approval sent → certificate seen by a watch: p50 {:.1} ms, p99 {:.1} ms (max {:.1} ms)   target p99 ≤ 50 ms: {}",
        lat.n,
        ms(lat.p50),
        ms(lat.p99),
        ms(lat.max),
        met(lat.p99 <= Duration::from_millis(50))
    );
    println!(
        "  parts: approval PATCH round trip p50 {:.1} / p99 {:.1} ms; approval sent → Approved seen by the watch p50 {:.1} / p99 {:.1} ms; Approved seen → certificate seen (signer's part) p50 {:.1} / p99 {:.1} ms",
        ms(lat.approve_p50),
        ms(lat.approve_p99),
        ms(lat.approved_seen_p50),
        ms(lat.approved_seen_p99),
        ms(lat.signer_part_p50),
        ms(lat.signer_part_p99)
    );
    println!(
        "  CPU during the {:.1} s of approvals: bench process (signer + watcher) {:.0} %, control plane {:.0} %, other processes {:.0} % (of one core)",
        lat.cpu.wall,
        lat.cpu.me / lat.cpu.wall * 100.0,
        lat.cpu.cp / lat.cpu.wall * 100.0,
        lat.cpu.others() / lat.cpu.wall * 100.0
    );
    println!(
        "memory of `csr-signer run` with {} CSRs present ({} issued by it in {:.1} s, {} pending): VmHWM {:.1} MiB, VmRSS {:.1} MiB   target ≤ 64 MiB: {}",
        sizes.rss_issued + sizes.rss_pending,
        sizes.rss_issued,
        mem.issue_time.as_secs_f64(),
        sizes.rss_pending,
        mib(mem.hwm_kib),
        mib(mem.rss_kib),
        met(mem.hwm_kib <= 64 * 1024)
    );
    println!(
        "load average before {load_before}, after {}; {} cores; whole run {:.0} s",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
    println!("=======================================================================");
}
