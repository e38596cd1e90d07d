//! The real Kubernetes control plane for tests: kube-apiserver + etcd (+ kube-controller-manager) built from
//! Go modules by `tests/kube/build.sh` and run as one child process (`tests/kube/main.go`).
//!
//! `shared()` starts one control plane per test binary on first use; it stops when the test process ends
//! (the harness exits when its standard input closes, so even a crashed test run leaves nothing behind).
//! `ControlPlane::start` starts a private one with options (kube-controller-manager, extra client CAs).
//! `exclusive()` serialises the tests of one binary that use the signer's identity on the shared control
//! plane, since CSRs, signerNames and Leases are cluster-wide.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;

/// What the harness printed when it was ready.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ready {
    pub kubeconfig: PathBuf,
    pub server: String,
    pub dir: PathBuf,
    #[serde(rename = "servingCA")]
    pub serving_ca: PathBuf,
    #[serde(rename = "clientCA")]
    pub client_ca: PathBuf,
    #[serde(rename = "clientCAKey")]
    pub client_ca_key: PathBuf,
    pub tokens: BTreeMap<String, String>,
    pub audit_log: PathBuf,
    pub kcm: bool,
    pub startup_millis: u64,
}

/// The signer's ServiceAccount (created by the harness, without permissions).
pub const SIGNER_NAMESPACE: &str = "csr-signer";
pub const SIGNER_SERVICE_ACCOUNT: &str = "csr-signer";

#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Also run kube-controller-manager (csrsigning, csrapproving, csrcleaner).
    pub kcm: bool,
    /// CA for the built-in kubernetes.io signers (cert, key).
    pub kcm_signing: Option<(PathBuf, PathBuf)>,
    pub kcm_args: Vec<String>,
    /// Further CAs the apiserver accepts client certificates from.
    pub extra_client_ca: Option<PathBuf>,
    /// Further kube-apiserver flags, after the harness's own (e.g. a `--runtime-config` that turns an API
    /// off).
    pub apiserver_args: Vec<String>,
}

pub struct ControlPlane {
    pub ready: Ready,
    child: Mutex<Child>,
    // Held open: the harness stops when it closes.
    stdin: Mutex<Option<ChildStdin>>,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the harness (cached by tests/kube/build.sh) and returns its path.
pub fn controlplane_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(repo_root().join("tests/kube/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/kube/build.sh");
        assert!(
            out.status.success(),
            "tests/kube/build.sh failed (the real-apiserver tests need Go; see README.md)"
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

impl ControlPlane {
    pub fn start(opts: &Options) -> ControlPlane {
        let bin = controlplane_bin();
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("controlplane.log");
        let mut cmd = Command::new(&bin);
        cmd.arg("--exit-on-stdin-eof");
        if opts.kcm {
            cmd.arg("--kcm");
        }
        if let Some((cert, key)) = &opts.kcm_signing {
            cmd.arg(format!("--kcm-signing-cert={}", cert.display()));
            cmd.arg(format!("--kcm-signing-key={}", key.display()));
        }
        for a in &opts.kcm_args {
            cmd.arg(format!("--kcm-arg={a}"));
        }
        if let Some(ca) = &opts.extra_client_ca {
            cmd.arg(format!("--extra-client-ca={}", ca.display()));
        }
        if !opts.apiserver_args.is_empty() {
            cmd.arg("--").args(&opts.apiserver_args);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            let _ = child.wait();
            panic!(
                "the control plane did not start; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let ready: Ready = serde_json::from_str(&line).unwrap();
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stdout.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        ControlPlane {
            ready,
            child: Mutex::new(child),
            stdin: Mutex::new(Some(stdin)),
            log,
            _logdir: logdir,
        }
    }

    pub fn token(&self, context: &str) -> &str {
        self.ready
            .tokens
            .get(context)
            .unwrap_or_else(|| panic!("no context {context}"))
    }

    /// A kubeconfig (YAML) for one of the harness's identities, or any bearer token.
    pub fn kubeconfig_yaml(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube\n  cluster: {{server: \"{}\", certificate-authority: \"{}\"}}\n\
             users:\n- name: u\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: c\n  context: {{cluster: kube, user: u}}\ncurrent-context: c\n",
            self.ready.server,
            self.ready.serving_ca.display()
        )
    }

    pub async fn client(&self, context: &str) -> kube::Client {
        self.client_for_token(self.token(context)).await
    }

    pub async fn client_for_token(&self, token: &str) -> kube::Client {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml(token)).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }

    /// Renders the Helm chart (release `csr-signer` in namespace `csr-signer`, so its ServiceAccount is the
    /// harness's signer account) for `signers` and applies its ServiceAccount and RBAC objects as the admin.
    /// The signer then has exactly the permissions a `helm install` would give it.
    pub async fn apply_chart_rbac(&self, signers: &[&str], lease_name: &str) {
        self.apply_chart_rbac_with(signers, lease_name, &[]).await
    }

    /// `apply_chart_rbac` with further `render.py` arguments.
    pub async fn apply_chart_rbac_with(&self, signers: &[&str], lease_name: &str, extra: &[&str]) {
        let objects = render_chart_with(
            SIGNER_NAMESPACE,
            SIGNER_NAMESPACE,
            signers,
            lease_name,
            extra,
        );
        let admin = self.client("admin").await;
        for obj in objects {
            apply(&admin, obj).await;
        }
    }

    /// Every request the apiserver has finished serving, from its audit log, in the local API's request
    /// record form. A marker request is made first and awaited in the log, so everything that completed
    /// before this call is included.
    pub async fn requests(&self) -> Vec<csr_signer::dev::RequestRecord> {
        static MARK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let marker = format!(
            "audit-marker-{}",
            MARK.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let admin = self.client("admin").await;
        let _ = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin, "default")
            .get_opt(&marker)
            .await;
        for _ in 0..200 {
            let text = std::fs::read_to_string(&self.ready.audit_log).unwrap_or_default();
            if text.contains(&marker) {
                return text.lines().filter_map(audit_record).collect();
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the audit log never recorded {marker}");
    }

    /// The audit log's events as JSON (user, verb, objectRef, responseStatus, ...), after the same marker
    /// wait as `requests`.
    pub async fn audit_events(&self) -> Vec<serde_json::Value> {
        self.requests().await;
        std::fs::read_to_string(&self.ready.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Closing stdin stops the harness cleanly, and only a clean stop removes its state directory
        // (~120 MB of etcd data and certificates); kill only if it does not stop in time.
        if let Ok(mut stdin) = self.stdin.lock() {
            stdin.take();
        }
        if let Ok(mut c) = self.child.lock() {
            for _ in 0..200 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The control plane shared by every test of this test binary (no kube-controller-manager).
pub fn shared() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(|| ControlPlane::start(&Options::default()))
}

/// Serialises tests that use cluster-wide state (CSRs, the signer's identity, Leases) on `shared()`.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The chart's objects of the RBAC kinds (and its ServiceAccount), rendered by the real Helm library.
pub fn render_chart(
    release: &str,
    namespace: &str,
    signers: &[&str],
    lease_name: &str,
) -> Vec<serde_json::Value> {
    render_chart_with(release, namespace, signers, lease_name, &[])
}

/// `render_chart` with further `render.py` arguments (e.g. `--no-trust-bundles`).
pub fn render_chart_with(
    release: &str,
    namespace: &str,
    signers: &[&str],
    lease_name: &str,
    extra: &[&str],
) -> Vec<serde_json::Value> {
    let python = Command::new(repo_root().join("tests/chart/venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/chart/venv.sh");
    assert!(python.status.success(), "tests/chart/venv.sh failed");
    let python = String::from_utf8(python.stdout).unwrap().trim().to_string();
    let mut cmd = Command::new(python);
    cmd.current_dir(repo_root().join("tests/chart"))
        .arg("render.py")
        .args(["--release", release, "--namespace", namespace])
        .args(["--lease-name", lease_name]);
    for s in signers {
        cmd.args(["--signer", s]);
    }
    cmd.args(extra);
    let out = cmd.output().expect("render.py");
    assert!(
        out.status.success(),
        "render.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"].as_array().unwrap().clone()
}

/// Server-side applies one object (create or update) as `client`.
pub async fn apply(client: &kube::Client, obj: serde_json::Value) {
    let api_version = obj["apiVersion"].as_str().unwrap().to_string();
    let kind = obj["kind"].as_str().unwrap().to_string();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    let plural = match kind.as_str() {
        "ServiceAccount" => "serviceaccounts",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "Namespace" => "namespaces",
        "Node" => "nodes",
        "Pod" => "pods",
        other => panic!("apply: no plural known for {other}"),
    };
    let ar = ApiResource {
        group,
        version,
        api_version,
        kind: kind.clone(),
        plural: plural.into(),
    };
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None if matches!(kind.as_str(), "ServiceAccount" | "Role" | "RoleBinding") => {
            Api::namespaced_with(client.clone(), SIGNER_NAMESPACE, &ar)
        }
        None => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        &name,
        &PatchParams::apply("csr-signer-tests").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
}

fn audit_record(line: &str) -> Option<csr_signer::dev::RequestRecord> {
    let ev: serde_json::Value = serde_json::from_str(line).ok()?;
    let method = match ev["verb"].as_str()? {
        "create" => http::Method::POST,
        "update" => http::Method::PUT,
        "patch" => http::Method::PATCH,
        "delete" | "deletecollection" => http::Method::DELETE,
        _ => http::Method::GET,
    };
    let uri = ev["requestURI"].as_str()?;
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    Some(csr_signer::dev::RequestRecord {
        method,
        path: path.to_string(),
        query: query.to_string(),
        user: ev["user"]["username"].as_str().unwrap_or("").to_string(),
        status: ev["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
    })
}

/// Whether `path` exists and is executable (kubectl versions on the test machine).
pub fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}
