//! `csr-signer request`, the requester's side, in its pure parts: what goes into the CSR for the identity
//! the tool runs as, when to renew, which exit code an outcome gets, and how files are replaced. No kube
//! here: `src/cli/request.rs` does the IO (SelfSubjectReview, CSR create and watch, ClusterTrustBundles).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509ReqBuilder, X509};

/// Who the tool runs as, from the apiserver's SelfSubjectReview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    /// (namespace, service account) when the username is a service account's.
    pub service_account: Option<(String, String)>,
}

impl Identity {
    pub fn from_username(username: &str) -> Identity {
        let service_account = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
            .map(|(ns, sa)| (ns.to_string(), sa.to_string()));
        Identity {
            username: username.to_string(),
            service_account,
        }
    }

    /// The CSR's `generateName`: `<namespace>-<sa>-` for a service account (so `kubectl get csr` shows
    /// whose it is), else the username cut to what a name may hold.
    pub fn generate_name(&self) -> String {
        let base = match &self.service_account {
            Some((ns, sa)) => format!("{ns}-{sa}"),
            None => self.username.clone(),
        };
        let mut name: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(200)
            .collect();
        name = name.trim_matches(|c| c == '-' || c == '.').to_string();
        if name.is_empty() {
            name = "request".into();
        }
        name.push('-');
        name
    }
}

/// What the command line adds to or changes in the identity's names.
#[derive(Debug, Clone, Default)]
pub struct NameOptions {
    /// Replaces the default commonName (the username).
    pub common_name: Option<String>,
    /// Leave out the service account's DNS and SPIFFE names.
    pub no_identity_sans: bool,
    /// `cluster.local`: the last labels of `<sa>.<ns>.svc.<cluster domain>`.
    pub cluster_domain: String,
    /// `cluster.local`: the SPIFFE trust domain of `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub trust_domain: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub uris: Vec<String>,
}

/// The subject and SANs of the CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub common_name: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub uris: Vec<String>,
}

/// The names the default signer policy (README "Configuration": `{username}` as CN;
/// `{serviceaccount}.{namespace}.svc[.cluster.local]`; `spiffe://cluster.local/ns/{namespace}/sa/{serviceaccount}`)
/// grants this identity, plus what was asked for on the command line. A user that is not a service account
/// gets its username as CN and only the extra SANs.
pub fn names(id: &Identity, opts: &NameOptions) -> Names {
    let mut dns = Vec::new();
    let mut uris = Vec::new();
    if let (Some((ns, sa)), false) = (&id.service_account, opts.no_identity_sans) {
        dns.push(format!("{sa}.{ns}.svc"));
        if !opts.cluster_domain.is_empty() {
            dns.push(format!("{sa}.{ns}.svc.{}", opts.cluster_domain));
        }
        if !opts.trust_domain.is_empty() {
            uris.push(format!("spiffe://{}/ns/{ns}/sa/{sa}", opts.trust_domain));
        }
    }
    let add = |v: &mut Vec<String>, extra: &[String]| {
        for e in extra {
            if !v.contains(e) {
                v.push(e.clone());
            }
        }
    };
    add(&mut dns, &opts.dns);
    add(&mut uris, &opts.uris);
    let mut ips = Vec::new();
    for ip in &opts.ips {
        if !ips.contains(ip) {
            ips.push(*ip);
        }
    }
    Names {
        common_name: opts
            .common_name
            .clone()
            .unwrap_or_else(|| id.username.clone()),
        dns,
        ips,
        uris,
    }
}

/// A PEM PKCS#10 request for `names`, signed by `key` (SHA-256 for RSA and P-256, SHA-384/512 for
/// P-384/521, none for Ed25519).
pub fn build_csr(
    key: &PKey<Private>,
    names: &Names,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut b = X509ReqBuilder::new()?;
    b.set_version(0)?;
    let mut subject = X509NameBuilder::new()?;
    if !names.common_name.is_empty() {
        subject.append_entry_by_text("CN", &names.common_name)?;
    }
    b.set_subject_name(&subject.build())?;
    b.set_pubkey(key)?;
    if !(names.dns.is_empty() && names.ips.is_empty() && names.uris.is_empty()) {
        let mut san = SubjectAlternativeName::new();
        for d in &names.dns {
            san.dns(d);
        }
        for ip in &names.ips {
            san.ip(&ip.to_string());
        }
        for u in &names.uris {
            san.uri(u);
        }
        if names.common_name.is_empty() {
            san.critical();
        }
        let mut exts = Stack::new()?;
        exts.push(san.build(&b.x509v3_context(None))?)?;
        b.add_extensions(&exts)?;
    }
    let digest = match key.id() {
        openssl::pkey::Id::ED25519 => MessageDigest::null(),
        openssl::pkey::Id::EC if key.bits() > 384 => MessageDigest::sha512(),
        openssl::pkey::Id::EC if key.bits() > 256 => MessageDigest::sha384(),
        _ => MessageDigest::sha256(),
    };
    b.sign(key, digest)?;
    b.build().to_pem()
}

/// When a certificate is renewed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewPolicy {
    /// Fraction of the validity (NotBefore → NotAfter) after which to renew, like the kubelet's and
    /// PodCertificateRequest's `beginRefreshAt`.
    pub at: f64,
    /// Renew when this much validity remains (instead of `at`).
    pub before: Option<Duration>,
    /// ± this fraction of the validity, so that a fleet started together does not renew together.
    pub jitter: f64,
}

impl Default for RenewPolicy {
    fn default() -> Self {
        RenewPolicy {
            at: 2.0 / 3.0,
            before: None,
            jitter: 0.05,
        }
    }
}

/// The renewal time of a certificate valid from `not_before` to `not_after`. `sample` in [-1, 1] places
/// it within the jitter. Never before NotBefore nor after NotAfter.
pub fn renew_time(
    not_before: SystemTime,
    not_after: SystemTime,
    policy: &RenewPolicy,
    sample: f64,
) -> SystemTime {
    let validity = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    let base = match policy.before {
        Some(before) => (validity - before.as_secs_f64()).max(0.0),
        None => validity * policy.at.clamp(0.0, 1.0),
    };
    let offset = (base + validity * policy.jitter * sample.clamp(-1.0, 1.0)).clamp(0.0, validity);
    not_before + Duration::from_secs_f64(offset)
}

/// What `request --renew` does first with the files it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Request a certificate now.
    Request,
    /// The certificate on disk is good: sleep until then, then renew.
    WaitUntil(SystemTime),
}

/// `cert` is (NotBefore, NotAfter, renewal time) of a certificate on disk that matches the key on disk.
pub fn start(now: SystemTime, cert: Option<(SystemTime, SystemTime, SystemTime)>) -> Start {
    match cert {
        Some((not_before, not_after, due)) if not_before <= now && now < not_after && now < due => {
            Start::WaitUntil(due)
        }
        _ => Start::Request,
    }
}

/// How one request ended, and so the process's exit code (README "csr-signer request" and `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Key, certificate and bundle written.
    Issued,
    /// The approver added `Denied`.
    Denied,
    /// The signer added `Failed` (its policy refused the request).
    Failed,
    /// No certificate within `--timeout` (nobody approved, or no signer is running).
    Timeout,
    /// The apiserver refused or could not be reached, or the CSR disappeared.
    Api,
    /// A local problem: files, the kubeconfig, a setting.
    Local,
}

impl Outcome {
    /// 2 is a bad command line (clap's own).
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Issued => 0,
            Outcome::Local => 1,
            Outcome::Denied => 3,
            Outcome::Failed => 4,
            Outcome::Timeout => 5,
            Outcome::Api => 6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Api => "api_error",
            Outcome::Local => "local_error",
        }
    }
}

/// Replaces `path` with `data` so that a reader sees the old file or the new one, never a part: a
/// temporary file in the same directory (created with `mode`, so a key is never readable by others,
/// not even for a moment), fsynced, renamed over `path`, then the directory fsynced so the rename
/// survives a crash.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(mode);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The wait before the next attempt after `failures` failed ones in a row: 10 s, 20 s, 40 s … at most 5 min.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(5);
    Duration::from_secs(10u64 << doublings).min(Duration::from_secs(300))
}

/// The processes under `proc_root` (`/proc`) whose command name (`comm`) is `name`, except `except`
/// (ourselves): the targets of `--signal-process`.
pub fn pids_named(proc_root: &Path, name: &str, except: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(proc_root).into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        if pid as u32 == except {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end_matches('\n') == name {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// NotBefore and NotAfter of a certificate.
pub fn validity(cert: &X509) -> Result<(SystemTime, SystemTime), openssl::error::ErrorStack> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0)?;
    let at = |t: &openssl::asn1::Asn1TimeRef| -> Result<SystemTime, openssl::error::ErrorStack> {
        let d = epoch.diff(t)?;
        let secs = i64::from(d.days) * 86_400 + i64::from(d.secs);
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
    };
    Ok((at(cert.not_before())?, at(cert.not_after())?))
}

/// Whether `cert` certifies `key`'s public key.
pub fn key_matches(key: &PKey<Private>, cert: &X509) -> bool {
    cert.public_key().is_ok_and(|p| p.public_eq(key))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use openssl::x509::X509Req;

    fn sa() -> Identity {
        Identity::from_username("system:serviceaccount:team-a:app")
    }

    fn opts() -> NameOptions {
        NameOptions {
            cluster_domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_service_account_gets_the_default_templates_names() {
        let n = names(&sa(), &opts());
        assert_eq!(n.common_name, "system:serviceaccount:team-a:app");
        assert_eq!(n.dns, ["app.team-a.svc", "app.team-a.svc.cluster.local"]);
        assert_eq!(n.uris, ["spiffe://cluster.local/ns/team-a/sa/app"]);
        assert!(n.ips.is_empty());
        assert_eq!(sa().generate_name(), "team-a-app-");
    }

    #[test]
    fn extras_are_added_once_and_identity_sans_can_be_left_out() {
        let mut o = opts();
        o.dns = vec!["app.team-a.svc".into(), "api.example.com".into()];
        o.ips = vec!["10.0.0.1".parse().unwrap(), "10.0.0.1".parse().unwrap()];
        let n = names(&sa(), &o);
        assert_eq!(
            n.dns,
            [
                "app.team-a.svc",
                "app.team-a.svc.cluster.local",
                "api.example.com"
            ]
        );
        assert_eq!(n.ips.len(), 1);
        o.no_identity_sans = true;
        o.common_name = Some("app.team-a.svc".into());
        let n = names(&sa(), &o);
        assert_eq!(n.dns, ["app.team-a.svc", "api.example.com"]);
        assert!(n.uris.is_empty());
        assert_eq!(n.common_name, "app.team-a.svc");
    }

    #[test]
    fn a_person_gets_only_its_username() {
        let id = Identity::from_username("alice@example.com");
        assert_eq!(id.service_account, None);
        let n = names(&id, &opts());
        assert_eq!(n.common_name, "alice@example.com");
        assert!(n.dns.is_empty() && n.uris.is_empty());
        assert_eq!(id.generate_name(), "alice-example.com-");
        // Not a service account: a colon inside the name, or parts missing.
        for u in [
            "system:serviceaccount:a:b:c",
            "system:serviceaccount::b",
            "system:serviceaccount:a",
        ] {
            assert_eq!(Identity::from_username(u).service_account, None, "{u}");
        }
    }

    #[test]
    fn the_csr_holds_the_names_and_verifies_for_every_key_type() {
        use crate::ca_init::{generate_key, KeyType};
        for kt in [
            KeyType::P256,
            KeyType::P384,
            KeyType::Rsa2048,
            KeyType::Ed25519,
        ] {
            let key = generate_key(kt).unwrap();
            let mut o = opts();
            o.ips = vec!["192.0.2.7".parse().unwrap()];
            let pem = build_csr(&key, &names(&sa(), &o)).unwrap();
            let req = X509Req::from_pem(&pem).unwrap();
            assert!(req.verify(&req.public_key().unwrap()).unwrap(), "{kt:?}");
            // The signer's own parser reads what we wrote.
            use crate::csr::San;
            let parsed = crate::csr::parse_and_verify(&pem).unwrap();
            assert_eq!(parsed.common_names, ["system:serviceaccount:team-a:app"]);
            assert_eq!(
                parsed.sans,
                [
                    San::Dns("app.team-a.svc".into()),
                    San::Dns("app.team-a.svc.cluster.local".into()),
                    San::Ip("192.0.2.7".parse().unwrap()),
                    San::Uri("spiffe://cluster.local/ns/team-a/sa/app".into()),
                ]
            );
        }
    }

    #[test]
    fn renewal_time_follows_the_fraction_the_margin_and_the_jitter() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(900);
        let p = RenewPolicy {
            at: 2.0 / 3.0,
            before: None,
            jitter: 0.0,
        };
        assert_eq!(renew_time(nb, na, &p, 1.0), nb + Duration::from_secs(600));
        let j = RenewPolicy { jitter: 0.1, ..p };
        assert_eq!(renew_time(nb, na, &j, 1.0), nb + Duration::from_secs(690));
        assert_eq!(renew_time(nb, na, &j, -1.0), nb + Duration::from_secs(510));
        let b = RenewPolicy {
            before: Some(Duration::from_secs(895)),
            ..p
        };
        assert_eq!(renew_time(nb, na, &b, 0.0), nb + Duration::from_secs(5));
        // Never outside the validity.
        let huge = RenewPolicy {
            before: Some(Duration::from_secs(10_000)),
            jitter: 0.5,
            ..p
        };
        assert_eq!(renew_time(nb, na, &huge, -1.0), nb);
        let late = RenewPolicy {
            at: 0.99,
            jitter: 0.5,
            ..p
        };
        assert_eq!(renew_time(nb, na, &late, 1.0), na);
    }

    #[test]
    fn a_good_certificate_on_disk_is_kept_until_due() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(start(t(100), None), Start::Request);
        assert_eq!(
            start(t(100), Some((t(50), t(200), t(150)))),
            Start::WaitUntil(t(150))
        );
        // Due, expired, or not yet valid: request now.
        assert_eq!(start(t(150), Some((t(50), t(200), t(150)))), Start::Request);
        assert_eq!(start(t(250), Some((t(50), t(200), t(150)))), Start::Request);
        assert_eq!(start(t(40), Some((t(50), t(200), t(150)))), Start::Request);
    }

    #[test]
    fn every_outcome_has_its_own_exit_code() {
        let all = [
            Outcome::Issued,
            Outcome::Denied,
            Outcome::Failed,
            Outcome::Timeout,
            Outcome::Api,
            Outcome::Local,
        ];
        let codes: std::collections::BTreeSet<u8> = all.iter().map(|o| o.exit_code()).collect();
        assert_eq!(codes.len(), all.len());
        assert_eq!(Outcome::Issued.exit_code(), 0);
        // 1 is also what main() returns for an error; 2 is clap's for a usage error.
        assert_eq!(Outcome::Local.exit_code(), 1);
        assert!(!codes.contains(&2));
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_to_five_minutes() {
        let secs: Vec<u64> = (1..=8).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn signal_targets_are_processes_of_that_name_but_not_ourselves() {
        let root = tempfile::tempdir().unwrap();
        for (pid, comm) in [
            ("1", "pause\n"),
            ("7", "nginx\n"),
            ("9", "nginx\n"),
            ("12", "nginx-x\n"),
        ] {
            std::fs::create_dir(root.path().join(pid)).unwrap();
            std::fs::write(root.path().join(pid).join("comm"), comm).unwrap();
        }
        std::fs::create_dir(root.path().join("self")).unwrap();
        std::fs::create_dir(root.path().join("15")).unwrap(); // gone: no comm
        assert_eq!(pids_named(root.path(), "nginx", 0), [7, 9]);
        assert_eq!(pids_named(root.path(), "nginx", 9), [7]);
        assert!(pids_named(root.path(), "ngin", 0).is_empty());
        // On this machine: our own process is found by its name, unless excepted.
        let me = std::process::id();
        let own = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(pids_named(Path::new("/proc"), own.trim_end(), 0).contains(&(me as i32)));
        assert!(!pids_named(Path::new("/proc"), own.trim_end(), me).contains(&(me as i32)));
    }

    #[test]
    fn atomic_write_replaces_with_the_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tls.key");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("tls.key")]);
        // A directory that does not exist: an error, nothing left behind.
        assert!(write_atomic(&dir.path().join("no/such/file"), b"x", 0o644).is_err());
    }
}
