//! Certificates per second with the CA key in a PKCS#11 token (SoftHSM2) against the same path with
//! the key in memory, one and two signing threads, measured side by side in the same run (alternating
//! blocks, median) because the machines here are shared and noisy.
//!
//! SoftHSM is software: it signs with OpenSSL in the same process, so this measures what the PKCS#11
//! path itself costs (session pool, C_Sign, the r‖s → DER conversion), not an HSM. See ca/README.md
//! for what a hardware or network HSM's rate means.
//!
//! Needs softhsm2 (scripts/test.sh installs it). Run: `cargo bench --bench pkcs11`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput};
use csr_signer::ca_init::{self, InitOptions, KeyType};
use csr_signer::config::{Pkcs11Settings, Settings};
use csr_signer::engine::{Decision, Engine, SignRequest};
use support::SIGNER;

const MODULE: &str = support::SOFTHSM_MODULE;
const PIN: &str = "bench-pin-1234";

struct Case {
    name: &'static str,
    memory: Engine,
    token: Engine,
}

fn engine(ca: &str) -> Engine {
    let yaml = format!(
        "signers:\n- name: {SIGNER}\n  ca: {ca}\n  policy: {{subject: {{commonNames: [\"*\"]}}, sans: {{dns: [\"*.example.com\"]}}}}\n"
    );
    Engine::from_settings(&Settings::from_yaml(&yaml, "bench").expect("settings")).expect("engine")
}

fn case(dir: &Path, name: &'static str, kind: KeyType, token: &str, pin_file: &Path) -> Case {
    let opts = |out: &str| InitOptions {
        out: dir.join(out),
        key_type: kind,
        days: 30,
        common_name: format!("bench {name}"),
        intermediate: false,
    };
    let file_ca = ca_init::init(&opts(&format!("{token}-file"))).expect("file CA");
    let p11 = Pkcs11Settings {
        module: MODULE.into(),
        uri: format!("pkcs11:token={token};object=ca"),
        pin_file: pin_file.to_owned(),
        sessions: 2,
    };
    let token_ca = ca_init::init_pkcs11(&opts(token), &p11).expect("token CA");
    Case {
        name,
        memory: engine(&format!(
            "{{certFile: {}, keyFile: {}}}",
            file_ca.cert.display(),
            file_ca.key.display()
        )),
        token: engine(&format!(
            "{{certFile: {}, pkcs11: {{module: {MODULE}, uri: \"{}\", pinFile: {}, sessions: 2}}}}",
            token_ca.cert.display(),
            p11.uri,
            pin_file.display()
        )),
    }
}

fn issue(engine: &Engine, csr: &[u8], usages: &[String]) {
    let req = SignRequest {
        request: csr,
        usages,
        expiration_seconds: Some(3600),
        annotations: None,
        username: "system:serviceaccount:bench:svc",
        groups: &[],
    };
    match engine
        .signer(SIGNER)
        .expect("signer")
        .sign(&req, SystemTime::now())
    {
        Ok(Decision::Issued(i)) => {
            black_box(i.certificate_pem);
        }
        other => panic!("bench request not issued: {other:?}"),
    }
}

fn parallel(threads: usize, iters: u64, f: impl Fn() + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads as u64 {
            let f = &f;
            let n = iters / threads as u64 + u64::from(t < iters % threads as u64);
            scope.spawn(move || (0..n).for_each(|_| f()));
        }
    });
    start.elapsed()
}

fn main() {
    let dir = tempfile::tempdir().expect("dir");
    support::softhsm_tokens(dir.path(), &["rsa", "p256"], PIN);
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, PIN).expect("pin");
    let cases = [
        case(dir.path(), "RSA-2048", KeyType::Rsa2048, "rsa", &pin_file),
        case(dir.path(), "P-256", KeyType::P256, "p256", &pin_file),
    ];
    let csr = support::CsrSpec::new(support::key(KeyType::P256), &[("CN", "svc")])
        .sans(&["DNS:svc.example.com"])
        .pem();
    let usages = support::strings(&["digital signature", "server auth"]);

    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    for k in &cases {
        let mut g = c.benchmark_group(format!("pkcs11/{}", k.name));
        g.throughput(Throughput::Elements(1));
        for (label, engine) in [("memory", &k.memory), ("softhsm", &k.token)] {
            g.bench_function(format!("{label}, 1 thread"), |b| {
                b.iter(|| issue(engine, &csr, &usages))
            });
            g.bench_function(format!("{label}, 2 threads"), |b| {
                b.iter_custom(|iters| parallel(2, iters, || issue(engine, &csr, &usages)))
            });
        }
        g.finish();
    }
    c.final_summary();
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!("\n== certificates per second (median of 9 alternating blocks) ==");
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>12} {:>16} {:>16}",
        "CA key",
        "memory 1t",
        "softhsm 1t",
        "memory 2t",
        "softhsm 2t",
        "softhsm/mem 1t",
        "softhsm/mem 2t"
    );
    for k in &cases {
        let block = if k.name.starts_with("RSA") { 60 } else { 300 };
        let mut runs: [Vec<f64>; 4] = Default::default();
        for _ in 0..9 {
            for (i, (engine, threads)) in
                [(&k.memory, 1), (&k.token, 1), (&k.memory, 2), (&k.token, 2)]
                    .into_iter()
                    .enumerate()
            {
                let n = block * threads as u64;
                let t = parallel(threads, n, || issue(engine, &csr, &usages));
                runs[i].push(n as f64 / t.as_secs_f64());
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let [m1, t1, m2, t2] = runs.each_mut().map(med);
        println!(
            "{:<10} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>15.0}% {:>15.0}%",
            k.name,
            m1,
            t1,
            m2,
            t2,
            100.0 * t1 / m1,
            100.0 * t2 / m2
        );
    }
}
