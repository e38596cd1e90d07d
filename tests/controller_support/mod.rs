//! Shared helpers for the controller's tests: a local Kubernetes API over real HTTP, kube clients
//! for its users, the signer service in-process or as a subprocess, and CSR helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use csr_signer::config::Settings;
use csr_signer::service::{self, RunOptions, Service};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

#[path = "../kube_support/mod.rs"]
pub mod kube_support;

pub mod pcr;

#[allow(unused_imports)]
pub use csr_signer::dev::{Failure, Match};

#[allow(unused_imports)]
pub use crate::support::SIGNER;

/// Which API server a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Local,
    Real,
}

/// Defines one test body run twice: against the local API (`<name>::local_api`) and against the real
/// kube-apiserver (`<name>::real_apiserver`). The body gets `server: Server` for `Env::on(server)`.
#[macro_export]
macro_rules! on_both_servers {
    ($(#[$meta:meta])* async fn $name:ident($server:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($server: Server) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local_api() {
                run(Server::Local).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real_apiserver() {
                run(Server::Real).await
            }
        }
    };
}

/// Which server the test talks to.
pub enum Backend {
    /// `csr-signer dev`'s in-memory API, with fault injection and a request log.
    Local(csr_signer::dev::LocalApi),
    /// The real kube-apiserver of this test binary (`kube_support::shared()`), held exclusively.
    Real(tokio::sync::MutexGuard<'static, ()>),
}

/// A running API server (local or real) and clients for its users.
pub struct Env {
    pub backend: Backend,
    pub base: String,
    pub admin: kube::Client,
    pub developer: kube::Client,
    pub signer: kube::Client,
    pub signer_token: String,
    pub dir: tempfile::TempDir,
}

/// A kube client for `base` authenticating with a bearer token, through a kubeconfig like a
/// user's (so the same code path as `--kubeconfig`).
pub async fn client(base: &str, token: &str) -> kube::Client {
    let yaml = kubeconfig_yaml(base, token, None);
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

pub fn kubeconfig_yaml(base: &str, token: &str, ca: Option<&Path>) -> String {
    let ca = ca
        .map(|p| format!(", certificate-authority: \"{}\"", p.display()))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: \"{base}\"{ca}}}\nusers:\n- name: u\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: c\n  context: {{cluster: local, user: u}}\ncurrent-context: c\n"
    )
}

impl Env {
    pub async fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let api = csr_signer::dev::start(csr_signer::dev::LocalApiConfig::plain_http())
            .await
            .unwrap();
        let base = api.base_url();
        let admin = client(&base, &api.token("admin").unwrap()).await;
        let developer = client(&base, &api.token("developer").unwrap()).await;
        let signer_token = api.token(csr_signer::dev::SIGNER_USER).unwrap();
        let signer = client(&base, &signer_token).await;
        Env {
            backend: Backend::Local(api),
            base,
            admin,
            developer,
            signer,
            signer_token,
            dir,
        }
    }

    pub async fn on(server: Server) -> Env {
        match server {
            Server::Local => Env::start().await,
            Server::Real => Env::start_real().await,
        }
    }

    /// The same environment on the real kube-apiserver: the harness's identities, and the signer's
    /// ServiceAccount bound to the RBAC the Helm chart renders for `SIGNER` (nothing more). Tests on the real
    /// server run one at a time; each starts with no CSRs and no Leases.
    pub async fn start_real() -> Env {
        let cp = kube_support::shared();
        let guard = kube_support::exclusive().await;
        let admin = cp.client("admin").await;
        Api::<CertificateSigningRequest>::all(admin.clone())
            .delete_collection(&Default::default(), &Default::default())
            .await
            .unwrap();
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
            admin.clone(),
            kube_support::SIGNER_NAMESPACE,
        )
        .delete_collection(&Default::default(), &Default::default())
        .await
        .unwrap();
        cp.apply_chart_rbac(&[SIGNER], "csr-signer").await;
        let signer_token = cp.token("signer").to_string();
        Env {
            backend: Backend::Real(guard),
            base: cp.ready.server.clone(),
            developer: cp.client("developer").await,
            signer: cp.client("signer").await,
            admin,
            signer_token,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self.backend, Backend::Real(_))
    }

    /// The local API's fault injection and request log (the real apiserver has neither).
    pub fn faults(&self) -> &csr_signer::dev::Faults {
        match &self.backend {
            Backend::Local(api) => api.faults(),
            Backend::Real(_) => panic!("fault injection exists only on the local API"),
        }
    }

    /// Writes a kubeconfig for the signer's identity (for the binary as a subprocess).
    pub fn signer_kubeconfig(&self) -> PathBuf {
        let p = self.dir.path().join("signer.kubeconfig");
        let ca = self
            .is_real()
            .then(|| kube_support::shared().ready.serving_ca.clone());
        std::fs::write(
            &p,
            kubeconfig_yaml(&self.base, &self.signer_token, ca.as_deref()),
        )
        .unwrap();
        p
    }

    /// A client for the kubelet of `node-1` (`system:node:node-1`, group `system:nodes`): what creates
    /// PodCertificateRequests, under the Node authorizer and NodeRestriction admission.
    pub async fn node(&self) -> kube::Client {
        match &self.backend {
            Backend::Real(_) => kube_support::shared().client("node-1").await,
            Backend::Local(api) => {
                let token = api
                    .token("system:node:node-1")
                    .unwrap_or_else(|| api.add_user(csr_signer::dev::User::node("node-1")));
                client(&self.base, &token).await
            }
        }
    }

    pub fn csrs(&self) -> Api<CertificateSigningRequest> {
        Api::all(self.admin.clone())
    }

    /// Creates a CSR as the developer.
    pub async fn create(
        &self,
        name: &str,
        signer: &str,
        pem: &[u8],
        usages: &[&str],
        expiration: Option<i32>,
    ) {
        let api: Api<CertificateSigningRequest> = Api::all(self.developer.clone());
        api.create(
            &PostParams::default(),
            &csr_object(name, signer, pem, usages, expiration),
        )
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }

    /// Creates a CSR as `client` and returns the error, if any.
    pub async fn try_create_as(
        &self,
        client: &kube::Client,
        csr: &CertificateSigningRequest,
    ) -> Result<CertificateSigningRequest, kube::Error> {
        Api::<CertificateSigningRequest>::all(client.clone())
            .create(&PostParams::default(), csr)
            .await
    }

    /// Creates `n` CSRs named `<prefix>-<i>` for `SIGNER` with the same request, and approves each.
    pub async fn create_approved(
        &self,
        prefix: &str,
        n: usize,
        pem: &[u8],
        usages: &[&str],
    ) -> Vec<String> {
        let mut names = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("{prefix}-{i}");
            self.create(&name, SIGNER, pem, usages, None).await;
            self.approve(&name).await;
            names.push(name);
        }
        names
    }

    pub async fn approve(&self, name: &str) {
        self.add_approval_condition(name, "Approved", "TestApproved")
            .await;
    }

    pub async fn deny(&self, name: &str) {
        self.add_approval_condition(name, "Denied", "TestDenied")
            .await;
    }

    async fn add_approval_condition(&self, name: &str, type_: &str, reason: &str) {
        let api = self.csrs();
        let name = &seg(name);
        for _ in 0..20 {
            let mut csr = api.get(name).await.unwrap();
            let status = csr
                .status
                .get_or_insert_with(CertificateSigningRequestStatus::default);
            status.conditions.get_or_insert_with(Vec::new).push(
                CertificateSigningRequestCondition {
                    type_: type_.to_string(),
                    status: "True".to_string(),
                    reason: Some(reason.to_string()),
                    message: Some(format!("{type_} by the test")),
                    ..Default::default()
                },
            );
            match api
                .patch_approval(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({
                        "metadata": {"resourceVersion": csr.metadata.resource_version},
                        "status": {"conditions": status.conditions},
                    })),
                )
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => panic!("{type_} {name}: {e}"),
            }
        }
        panic!("{type_} {name}: too many conflicts");
    }

    /// Waits (generously: this is liveness, not a timing assertion) until `pred` holds.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&CertificateSigningRequest) -> bool,
    ) -> CertificateSigningRequest {
        let api = self.csrs();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let csr = api.get(&seg(name)).await.unwrap();
            if pred(&csr) {
                return csr;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{name}: gave up waiting for {what}; last: {:?}", csr.status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_certificate(&self, name: &str) -> String {
        let csr = self.wait_for(name, "a certificate", has_certificate).await;
        certificate(&csr).unwrap()
    }

    /// Waits until every CSR in `names` has a certificate.
    pub async fn wait_all_issued(&self, names: &[String]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            let list = self
                .csrs()
                .list(&ListParams::default().fields(&format!("spec.signerName={SIGNER}")))
                .await
                .unwrap();
            let issued: std::collections::HashSet<String> = list
                .items
                .iter()
                .filter(|c| has_certificate(c))
                .filter_map(|c| c.metadata.name.clone())
                .collect();
            let missing = names.iter().filter(|n| !issued.contains(*n)).count();
            if missing == 0 {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{missing} of {} CSRs still without a certificate",
                    names.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every request the server has served: the local API's request log, or the real apiserver's audit log.
    pub async fn requests(&self) -> Vec<csr_signer::dev::RequestRecord> {
        match &self.backend {
            Backend::Local(api) => api.faults().requests(),
            Backend::Real(_) => kube_support::shared().requests().await,
        }
    }

    /// Successful (2xx) status writes the API served for `name`.
    pub async fn status_writes(&self, name: &str) -> usize {
        self.status_writes_by_name()
            .await
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// The HTTP status of every status write (PATCH/PUT on /status) per CSR name, in order.
    pub async fn status_write_codes_by_name(&self) -> std::collections::HashMap<String, Vec<u16>> {
        let mut out: std::collections::HashMap<String, Vec<u16>> = Default::default();
        for r in self.requests().await {
            if !(r.method == http::Method::PATCH || r.method == http::Method::PUT) {
                continue;
            }
            let name = r
                .path
                .strip_suffix("/status")
                .and_then(|p| p.rsplit_once("/certificatesigningrequests/"))
                .map(|(_, n)| n.to_string());
            if let Some(n) = name {
                out.entry(n).or_default().push(r.status);
            }
        }
        out
    }

    /// Successful (2xx) status writes per CSR name, from one read of the request log.
    pub async fn status_writes_by_name(&self) -> std::collections::HashMap<String, usize> {
        let mut out = std::collections::HashMap::new();
        for r in self.requests().await {
            if !(r.method == http::Method::PATCH || r.method == http::Method::PUT)
                || !(200..300).contains(&r.status)
            {
                continue;
            }
            let name = r
                .path
                .strip_suffix("/status")
                .and_then(|p| p.rsplit_once("/certificatesigningrequests/"))
                .map(|(_, n)| n.to_string());
            if let Some(n) = name {
                *out.entry(n).or_insert(0) += 1;
            }
        }
        out
    }

    /// Status writes (PATCH/PUT on /status) the API received for `name`, whatever their outcome.
    pub async fn status_write_attempts(&self, name: &str) -> usize {
        let suffix = format!("/certificatesigningrequests/{name}/status");
        self.requests()
            .await
            .iter()
            .filter(|r| r.path.ends_with(&suffix))
            .filter(|r| r.method == http::Method::PATCH || r.method == http::Method::PUT)
            .count()
    }

    /// Every request that named `name` in its path.
    pub async fn requests_naming(&self, name: &str) -> Vec<(http::Method, String, u16)> {
        let needle = format!("/certificatesigningrequests/{name}");
        self.requests()
            .await
            .into_iter()
            .filter(|r| r.path.contains(&needle))
            .map(|r| (r.method, r.path, r.status))
            .collect()
    }

    /// The signer's user name on this server.
    pub fn signer_user(&self) -> &'static str {
        if self.is_real() {
            "system:serviceaccount:csr-signer:csr-signer"
        } else {
            csr_signer::dev::SIGNER_USER
        }
    }

    /// Settings YAML for one signer using `ca`, with the controller tuned for tests.
    pub fn settings(
        &self,
        ca_cert: &Path,
        ca_key: &Path,
        policy: &str,
        leader_election: bool,
    ) -> Settings {
        let yaml = settings_yaml(ca_cert, ca_key, policy, leader_election, "127.0.0.1:0");
        Settings::from_yaml(&yaml, "test.yaml").unwrap()
    }

    /// Starts the signer service in-process as the signer's identity.
    pub async fn start_signer(
        &self,
        settings: Settings,
        identity: &str,
    ) -> (Service, tokio::sync::oneshot::Sender<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = service::start(
            settings,
            self.signer.clone(),
            async move {
                let _ = rx.await;
            },
            RunOptions {
                identity: Some(identity.to_string()),
                ca_poll_interval: Some(Duration::from_millis(200)),
            },
        )
        .await
        .unwrap();
        (svc, tx)
    }
}

pub fn settings_yaml(
    ca_cert: &Path,
    ca_key: &Path,
    policy: &str,
    leader_election: bool,
    listen: &str,
) -> String {
    format!(
        "signers:\n- name: {SIGNER}\n  ca: {{certFile: {}, keyFile: {}}}\n  policy: {{{policy}}}\n\
         controller:\n  qps: 2000\n  burst: 2000\n  workers: 4\n  events: true\n  \
         leaderElection: {{enabled: {leader_election}, namespace: csr-signer, leaseName: csr-signer, leaseDurationSeconds: 4, renewDeadlineSeconds: 3, retryPeriodSeconds: 1}}\n\
         server: {{listen: \"{listen}\"}}\n",
        ca_cert.display(),
        ca_key.display()
    )
}

#[allow(unused_imports)]
pub use crate::support::{csr_object, with_annotation};

/// `name` as a URL path segment for kube-rs, which puts names into paths as given. Deliberately not the
/// signer's own encoder: every byte but ASCII letters and digits is escaped.
pub fn seg(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn has_certificate(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

pub fn certificate(csr: &CertificateSigningRequest) -> Option<String> {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .map(|c| String::from_utf8_lossy(&c.0).into_owned())
        .filter(|s| !s.is_empty())
}

pub fn conditions(csr: &CertificateSigningRequest) -> Vec<CertificateSigningRequestCondition> {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
}

pub fn failed_conditions(
    csr: &CertificateSigningRequest,
) -> Vec<CertificateSigningRequestCondition> {
    conditions(csr)
        .into_iter()
        .filter(|c| c.type_ == "Failed")
        .collect()
}

/// The audit file's records (`audit.file`), one JSON object per line.
pub fn audit_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Checks the audit file against the API: every CSR in `names` has exactly one `issued` record, naming the
/// certificate on it (SHA-256 by openssl's own fingerprint, serial, uid, requester) and a `signed` record
/// made for that serial; no serial was signed twice; the `signed` records are as many as the signer counted
/// in `signed_total`. Returns how many issuances were confirmed other than by the write's own answer.
pub async fn assert_audit_trail(
    env: &Env,
    path: &Path,
    names: &[String],
    signed_total: Option<f64>,
) -> usize {
    let recs = audit_records(path);
    let mut issued: std::collections::HashMap<String, Vec<&serde_json::Value>> = Default::default();
    let mut signed = std::collections::HashSet::new();
    for r in &recs {
        assert_eq!(r["signer"], SIGNER, "{r}");
        assert!(!r["uid"].as_str().unwrap().is_empty(), "{r}");
        match r["event"].as_str().unwrap() {
            "signed" => assert!(
                signed.insert(r["serial"].as_str().unwrap().to_string()),
                "signed twice: {r}"
            ),
            "issued" => issued
                .entry(r["csr"].as_str().unwrap().to_string())
                .or_default()
                .push(r),
            other => panic!("unknown event {other}"),
        }
    }
    assert_eq!(
        signed_total,
        Some(signed.len() as f64),
        "signed records vs certificates_signed_total"
    );
    let mut late = 0;
    for n in names {
        let csr = env.csrs().get(&seg(n)).await.unwrap();
        let leaf = openssl::x509::X509::from_pem(certificate(&csr).unwrap().as_bytes()).unwrap();
        let sha256: String = leaf
            .digest(openssl::hash::MessageDigest::sha256())
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let serial = leaf
            .serial_number()
            .to_bn()
            .unwrap()
            .to_hex_str()
            .unwrap()
            .to_lowercase();
        let mine = issued.get(n).cloned().unwrap_or_default();
        assert_eq!(mine.len(), 1, "{n}: exactly one issued record: {mine:?}");
        let r = mine[0];
        assert_eq!(r["sha256"], sha256.as_str(), "{n}");
        assert_eq!(r["serial"], serial.as_str(), "{n}");
        assert_eq!(r["uid"], csr.metadata.uid.as_deref().unwrap(), "{n}");
        assert_eq!(r["requester"], csr.spec.username.as_deref().unwrap(), "{n}");
        assert!(
            signed.contains(&serial),
            "{n}: the signature was recorded when made"
        );
        if r["confirmedBy"] != "write" {
            late += 1;
        }
    }
    late
}

/// Fetches /metrics from a running signer.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one sample line (`name{labels} value`) in a scrape, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Deletes every ClusterTrustBundle, so a trust test starts with none (they are cluster-scoped and outlive a
/// test on the shared server).
pub async fn no_bundles(env: &Env) {
    let api: Api<k8s_openapi::api::certificates::v1::ClusterTrustBundle> =
        Api::all(env.admin.clone());
    for b in api.list(&ListParams::default()).await.unwrap().items {
        let _ = api
            .delete(
                b.metadata.name.as_deref().unwrap(),
                &kube::api::DeleteParams::default(),
            )
            .await;
    }
}
