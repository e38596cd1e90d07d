//! The signing engine: for each configured signerName, verify → policy → issue, with a CA that can be
//! swapped at run time. The controller and `csr-signer sign` both call `SignerEngine::sign`, so the
//! offline command and the service make exactly the same decision.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ca::{CaFile, CaFiles, SigningCa, TrustedCa, TrustedCaFiles};
use crate::config::{CaSettings, OtherCaSettings, Settings, SignerName};
use crate::csr;
use crate::error::{Error, Result};
pub use crate::policy::LifetimeOutcome;
use crate::policy::{Ask, Grant, PodIdentity, PodPolicy, Policy, Requester};
pub use crate::refusal::{Reason, Refusal};

/// The annotation cert-manager, Istio and older clients use to ask for a lifetime.
pub const DURATION_ANNOTATION: &str = "experimental.cert-manager.io/request-duration";

/// What the signer is asked to sign: the CSR object's relevant fields.
#[derive(Clone, Copy, Debug)]
pub struct SignRequest<'a> {
    /// `spec.request` (PEM bytes, already base64-decoded from JSON).
    pub request: &'a [u8],
    /// `spec.usages`.
    pub usages: &'a [String],
    /// `spec.expirationSeconds`.
    pub expiration_seconds: Option<i32>,
    /// `metadata.annotations`.
    pub annotations: Option<&'a BTreeMap<String, String>>,
    /// `spec.username`.
    pub username: &'a str,
    /// `spec.groups`.
    pub groups: &'a [String],
}

/// Backdating of a pod certificate's NotBefore. kube-apiserver refuses a status whose NotBefore is 5
/// minutes or more from its own clock, so this stays well inside that: clock skew plus the time the
/// status write takes must fit in the rest.
pub const POD_BACKDATE: Duration = Duration::from_secs(60);

/// What a PodCertificateRequest asks for: its spec, without Kubernetes types. kube-apiserver has checked
/// the pod, service account and node against the live objects when the node created it.
#[derive(Clone, Copy, Debug)]
pub struct PodRequest<'a> {
    pub namespace: &'a str,
    pub pod_name: &'a str,
    pub pod_uid: &'a str,
    pub service_account_name: &'a str,
    pub service_account_uid: &'a str,
    pub node_name: &'a str,
    pub node_uid: &'a str,
    /// `spec.maxExpirationSeconds`.
    pub max_expiration_seconds: Option<i32>,
    /// `spec.stubPKCS10Request` (DER): only its key is used.
    pub stub_pkcs10_request: Option<&'a [u8]>,
    /// v1beta1 before 1.36: `spec.pkixPublicKey` (DER SubjectPublicKeyInfo) …
    pub pkix_public_key: Option<&'a [u8]>,
    /// … and `spec.proofOfPossession`, a signature over the pod UID with that key.
    pub proof_of_possession: Option<&'a [u8]>,
    /// `spec.unverifiedUserAnnotations`.
    pub unverified_user_annotations: Option<&'a BTreeMap<String, String>>,
}

/// An issued certificate with what the controller reports about it.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Leaf followed by intermediates, PEM.
    pub certificate_pem: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// NotAfter − NotBefore.
    pub granted_seconds: u64,
    pub requested_seconds: Option<u64>,
    pub lifetime: LifetimeOutcome,
    /// Pod certificates: when the kubelet should start renewing (`status.beginRefreshAt`).
    pub begin_refresh_at: Option<SystemTime>,
}

/// The outcome of a signing attempt that did not hit a transient error.
#[derive(Clone, Debug)]
pub enum Decision {
    Issued(Issued),
    Refused(Refusal),
}

/// What `--explain` shows: the decision without a signature.
#[derive(Clone, Debug)]
pub enum Explanation {
    Grant(Grant),
    Refused(Refusal),
}

/// One signerName with its policy and CA.
pub struct SignerEngine {
    name: SignerName,
    policy: Policy,
    ca_settings: CaSettings,
    ca_keys: CaKeys,
    current: RwLock<(Arc<SigningCa>, CaFiles)>,
    /// The `otherCas` entries with where each was set, in configuration order.
    other_settings: Vec<(OtherCaSettings, CaKeys)>,
    /// CAs trusted but not signing (`otherCas`), as last loaded, with the bytes each was loaded from
    /// (same order as `other_settings`).
    others: RwLock<(Arc<[TrustedCa]>, Vec<TrustedCaFiles>)>,
    /// `None`: PodCertificateRequests for this signer are left alone.
    pods: Option<PodPolicy>,
    /// `None`: this signer's CSRs are approved by people (or other approvers) only.
    auto_approve: Option<crate::approval::AutoApprove>,
}

/// One CA of a signer, as the per-CA metrics and `ca status` name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaEntry {
    /// `ca.name` or the `otherCas` entry's name.
    pub name: String,
    /// `active`, `published` or `retiring`.
    pub state: &'static str,
    pub not_after: SystemTime,
}

/// Where a signer's `ca:` keys were set, so that an error about a CA file (at startup or on reload)
/// names the key and what set it: `config.yaml: signers[0].ca.keyFile: /ca/tls.key: …`.
#[derive(Clone, Debug)]
struct CaKeys {
    /// `(file, key, origin)` for each of the `ca:` files.
    keys: Vec<(CaFile, String, String)>,
}

impl CaKeys {
    /// The keys under `prefix` (`signers[0].ca`, `signers[0].otherCas[1]`) naming `files`.
    fn new(settings: &Settings, prefix: &str, files: &[CaFile]) -> CaKeys {
        let keys = files
            .iter()
            .map(|&f| {
                let key = format!("{prefix}.{}", f.key());
                let origin = settings.origin_of(&key);
                (f, key, origin)
            })
            .collect();
        CaKeys { keys }
    }

    /// Wraps an error about a CA file in the setting that named the file.
    fn locate(&self, e: Error) -> Error {
        let file = match &e {
            Error::Ca { file, .. } => file,
            Error::Token { .. } => &CaFile::Token,
            _ => return e,
        };
        match self.keys.iter().find(|(f, _, _)| f == file) {
            Some((_, key, origin)) => Error::Setting {
                origin: origin.clone(),
                key: key.clone(),
                source: Box::new(e),
            },
            None => e,
        }
    }
}

impl std::fmt::Debug for SignerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerEngine")
            .field("name", &self.name)
            .field("ca", &self.ca())
            .finish()
    }
}

impl SignerEngine {
    /// Loads the signer's CAs; `settings` says where each setting came from.
    fn new(settings: &Settings, index: usize) -> Result<SignerEngine> {
        let signer = &settings.signers[index];
        let ca_keys = CaKeys::new(
            settings,
            &format!("signers[{index}].ca"),
            &[
                CaFile::Cert,
                CaFile::Key,
                CaFile::Chain,
                CaFile::Passphrase,
                CaFile::Pin,
                CaFile::Token,
            ],
        );
        let (ca, files) =
            SigningCa::load(&signer.ca, SystemTime::now()).map_err(|e| ca_keys.locate(e))?;
        let other_settings: Vec<(OtherCaSettings, CaKeys)> = signer
            .other_cas
            .iter()
            .enumerate()
            .map(|(j, o)| {
                let keys = CaKeys::new(
                    settings,
                    &format!("signers[{index}].otherCas[{j}]"),
                    &[CaFile::Cert, CaFile::Chain],
                );
                (o.clone(), keys)
            })
            .collect();
        let mut others = Vec::with_capacity(other_settings.len());
        let mut other_files = Vec::with_capacity(other_settings.len());
        for (o, keys) in &other_settings {
            let read = TrustedCaFiles::read(o);
            others.push(TrustedCa::load(o, SystemTime::now()).map_err(|e| keys.locate(e))?);
            other_files.push(read);
        }
        Ok(SignerEngine {
            name: signer.name.clone(),
            policy: signer.policy.clone(),
            ca_settings: signer.ca.clone(),
            ca_keys,
            current: RwLock::new((Arc::new(ca), files)),
            other_settings,
            others: RwLock::new((others.into(), other_files)),
            pods: signer.pod_certificates.clone(),
            auto_approve: signer.auto_approve.clone(),
        })
    }

    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The CA in use now.
    pub fn ca(&self) -> Arc<SigningCa> {
        // A poisoned lock only means a panic elsewhere while swapping; the value is still whole.
        match self.current.read() {
            Ok(g) => g.0.clone(),
            Err(p) => p.into_inner().0.clone(),
        }
    }

    /// The CAs this signer trusts but does not sign with, as last loaded.
    pub fn other_cas(&self) -> Arc<[TrustedCa]> {
        match self.others.read() {
            Ok(g) => g.0.clone(),
            Err(p) => p.into_inner().0.clone(),
        }
    }

    /// Every CA of the signer: the signing one first, then `otherCas` in configuration order.
    pub fn ca_entries(&self) -> Vec<CaEntry> {
        let mut out = vec![CaEntry {
            name: self.ca_settings.name.clone(),
            state: "active",
            not_after: self.ca_not_after(),
        }];
        out.extend(self.other_cas().iter().map(|o| CaEntry {
            name: o.name.clone(),
            state: o.state.as_str(),
            not_after: o.not_after,
        }));
        out
    }

    /// The signing CA's `ca.name`.
    pub fn ca_name(&self) -> &str {
        &self.ca_settings.name
    }

    /// Re-reads the `otherCas` files, one result per entry in configuration order: `Ok(true)` when
    /// that entry's files changed and the new ones were swapped in; an error keeps the entry's previous
    /// certificates trusted (and published).
    pub fn reload_other_cas_if_changed(&self) -> Vec<Result<bool>> {
        let (mut cas, mut files) = match self.others.read() {
            Ok(g) => (g.0.to_vec(), g.1.clone()),
            Err(p) => {
                let g = p.into_inner();
                (g.0.to_vec(), g.1.clone())
            }
        };
        let mut results = Vec::with_capacity(self.other_settings.len());
        for (j, (o, keys)) in self.other_settings.iter().enumerate() {
            let read = TrustedCaFiles::read(o);
            if read == files[j] {
                results.push(Ok(false));
                continue;
            }
            match TrustedCa::load(o, SystemTime::now()) {
                Ok(ca) => {
                    cas[j] = ca;
                    files[j] = read;
                    results.push(Ok(true));
                }
                Err(e) => results.push(Err(keys.locate(e))),
            }
        }
        if results.iter().any(|r| matches!(r, Ok(true))) {
            let mut guard = match self.others.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *guard = (cas.into(), files);
        }
        results
    }

    pub fn ca_not_after(&self) -> SystemTime {
        self.ca().not_after
    }

    /// Re-reads the CA files. `Ok(true)` when different, valid files were swapped in; an error keeps
    /// the old CA signing.
    pub fn reload_ca_if_changed(&self) -> Result<bool> {
        let files = CaFiles::read(&self.ca_settings).map_err(|e| self.ca_keys.locate(e))?;
        let unchanged = match self.current.read() {
            Ok(g) => g.1 == files,
            Err(p) => p.into_inner().1 == files,
        };
        if unchanged {
            return Ok(false);
        }
        let ca = SigningCa::from_files(&self.ca_settings, &files, SystemTime::now())
            .map_err(|e| self.ca_keys.locate(e))?;
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = (Arc::new(ca), files);
        Ok(true)
    }

    fn ask<'a>(&self, req: &SignRequest<'a>) -> Ask<'a> {
        Ask {
            usages: req.usages,
            expiration_seconds: req.expiration_seconds.map(i64::from),
            duration_annotation: req
                .annotations
                .and_then(|a| a.get(DURATION_ANNOTATION))
                .map(String::as_str),
            requester: Requester {
                username: req.username,
                groups: req.groups,
            },
        }
    }

    /// Parses the request and verifies its self-signature, refusing a key the policy does not accept
    /// before the verification (its cost grows with the square of the RSA modulus size: a requester
    /// could otherwise make every refused request expensive). Repeated usages are refused first, as
    /// kube-apiserver does.
    fn verified(
        &self,
        req: &SignRequest<'_>,
        ca: &SigningCa,
    ) -> std::result::Result<csr::VerifiedCsr, Refusal> {
        if let Some((i, usage)) = crate::usage::first_duplicate(req.usages) {
            return Err(Refusal::new(
                Reason::MalformedRequest,
                format!("spec.usages[{i}]: duplicate value {usage:?}"),
            ));
        }
        let parsed = csr::parse(req.request)?;
        self.policy.key_algorithms().check(parsed.key())?;
        not_the_ca_subject(parsed.verify()?, &ca.subject_der)
    }

    /// Verify, decide and sign. `Err` is transient (expired CA, crypto or encoding failure): retry,
    /// never write Failed.
    pub fn sign(&self, req: &SignRequest<'_>, now: SystemTime) -> Result<Decision> {
        let ca = self.ca();
        let csr = match self.verified(req, &ca) {
            Ok(c) => c,
            Err(refusal) => return Ok(Decision::Refused(refusal)),
        };
        let grant = match self.policy.decide(&csr, &self.ask(req)) {
            Ok(g) => g,
            Err(refusal) => return Ok(Decision::Refused(refusal)),
        };
        let issued = crate::issue::issue(&ca, &csr, &grant, now)?;
        let granted = issued
            .not_after
            .duration_since(issued.not_before)
            .unwrap_or(Duration::ZERO);
        let lifetime = if cut_by_ca(now, grant.lifetime, ca.not_after)? {
            LifetimeOutcome::CappedByCa
        } else {
            grant.lifetime_outcome
        };
        Ok(Decision::Issued(Issued {
            certificate_pem: issued.certificate_pem,
            serial: issued.serial,
            not_before: issued.not_before,
            not_after: issued.not_after,
            granted_seconds: granted.as_secs(),
            requested_seconds: grant.requested.map(|d| d.as_secs()),
            lifetime,
            begin_refresh_at: None,
        }))
    }

    /// Whether this signer signs PodCertificateRequests (`podCertificates.enabled`).
    pub fn signs_pods(&self) -> bool {
        self.pods.is_some()
    }

    pub fn pod_policy(&self) -> Option<&PodPolicy> {
        self.pods.as_ref()
    }

    /// How this signer approves CSRs itself (`autoApprove`), if it does.
    pub fn auto_approve(&self) -> Option<&crate::approval::AutoApprove> {
        self.auto_approve.as_ref()
    }

    /// The key a PodCertificateRequest certifies: from the stub PKCS#10 request (signature verified, its
    /// subject and extensions ignored: kube-apiserver requires them empty), else from the v1beta1
    /// `pkixPublicKey` with its proof of possession. The policy's key check runs before any signature
    /// verification, as for CSRs.
    fn pod_key(
        &self,
        policy: &PodPolicy,
        req: &PodRequest<'_>,
    ) -> std::result::Result<csr::ProvenKey, Refusal> {
        if let Some(stub) = req.stub_pkcs10_request.filter(|s| !s.is_empty()) {
            let parsed = csr::parse_der(stub.to_vec())?;
            policy.check_key(parsed.key())?;
            return Ok(parsed.verify()?.proven_key());
        }
        match (req.pkix_public_key, req.proof_of_possession) {
            (Some(key), Some(proof)) if !key.is_empty() => {
                let parsed = csr::parse_public_key(key)?;
                policy.check_key(parsed.key())?;
                parsed.verify_proof(req.pod_uid.as_bytes(), proof)
            }
            _ => Err(Refusal::new(
                Reason::MalformedRequest,
                "the request carries no public key: spec.stubPKCS10Request is empty and there is no pkixPublicKey with a proofOfPossession",
            )),
        }
    }

    /// Decide and sign a PodCertificateRequest. `Ok(Refused)` is terminal (its reason's
    /// `pcr_condition` says Denied or Failed); `Err` is transient, as for `sign`.
    pub fn sign_pod(&self, req: &PodRequest<'_>, now: SystemTime) -> Result<Decision> {
        let Some(policy) = &self.pods else {
            return Ok(Decision::Refused(Refusal::new(
                Reason::IdentityNotAllowed,
                format!(
                    "{} does not sign pod certificates (podCertificates.enabled is false)",
                    self.name
                ),
            )));
        };
        let ca = self.ca();
        let key = match self.pod_key(policy, req) {
            Ok(k) => k,
            Err(r) => return Ok(Decision::Refused(r)),
        };
        let id = PodIdentity {
            namespace: req.namespace,
            pod_name: req.pod_name,
            service_account: req.service_account_name,
            node_name: req.node_name,
        };
        let grant = match policy.decide(
            &id,
            req.max_expiration_seconds,
            req.unverified_user_annotations,
        ) {
            Ok(g) => g,
            Err(r) => return Ok(Decision::Refused(r)),
        };
        let now = UNIX_EPOCH
            + Duration::from_secs(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
        if now >= ca.not_after {
            return Err(Error::CaExpired {
                not_after: humantime::format_rfc3339_seconds(ca.not_after).to_string(),
            });
        }
        let not_before = now - POD_BACKDATE;
        let mut not_after = not_before + grant.lifetime;
        let mut lifetime = grant.lifetime_outcome;
        if not_after > ca.not_after {
            not_after = ca.not_after;
            lifetime = LifetimeOutcome::CappedByCa;
        }
        let granted = not_after.duration_since(not_before).unwrap_or_default();
        if granted < crate::policy::MIN_POD_LIFETIME {
            return Ok(Decision::Refused(Refusal::new(
                Reason::CaExpiresTooSoon,
                format!(
                    "the signing CA expires at {}: a certificate would last {}, less than the 1h kube-apiserver requires",
                    humantime::format_rfc3339_seconds(ca.not_after),
                    humantime::format_duration(granted)
                ),
            )));
        }
        let subject_der = match &grant.common_name {
            Some(cn) => common_name_subject(cn)?,
            None => vec![0x30, 0x00],
        };
        if subject_der == ca.subject_der {
            return Ok(Decision::Refused(Refusal::new(
                Reason::SubjectNotAllowed,
                "the rendered subject is the signing CA's own subject",
            )));
        }
        let leaf = csr::VerifiedCsr {
            subject_der,
            common_names: grant.common_name.iter().cloned().collect(),
            organizations: Vec::new(),
            other_attributes: Vec::new(),
            spki_der: key.spki_der,
            public_key_bits: key.public_key_bits,
            key: key.key,
            sans: grant.sans.clone(),
            requests_ca: false,
        };
        let issue_grant = Grant {
            usages: grant.usages.clone(),
            lifetime: granted,
            requested: Some(grant.requested),
            lifetime_outcome: lifetime,
            sans: grant.sans.clone(),
        };
        let issued = crate::issue::issue_between(&ca, &leaf, &issue_grant, not_before, not_after)?;
        // Spread renewals over the fleet by something each pod has of its own.
        let spread = {
            let d = openssl::sha::sha256(req.pod_uid.as_bytes());
            f64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])) / (f64::from(u32::MAX) + 1.0)
        };
        let refresh =
            crate::policy::refresh_offset(granted, grant.refresh_at, grant.refresh_jitter, spread);
        Ok(Decision::Issued(Issued {
            certificate_pem: issued.certificate_pem,
            serial: issued.serial,
            not_before: issued.not_before,
            not_after: issued.not_after,
            granted_seconds: granted.as_secs(),
            requested_seconds: Some(grant.requested.as_secs()),
            lifetime,
            begin_refresh_at: Some(not_before + refresh),
        }))
    }

    /// The decision without signing (for `csr-signer sign --explain`).
    pub fn explain(&self, req: &SignRequest<'_>) -> Explanation {
        let ca = self.ca();
        match self
            .verified(req, &ca)
            .and_then(|csr| self.policy.decide(&csr, &self.ask(req)))
        {
            Ok(g) => Explanation::Grant(g),
            Err(r) => Explanation::Refused(r),
        }
    }
}

/// A subject of one commonName (UTF8String), DER.
fn common_name_subject(cn: &str) -> Result<Vec<u8>> {
    use der::asn1::Utf8StringRef;
    use x509_cert::attr::AttributeTypeAndValue;
    use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
    let enc = |e: der::Error| Error::Encode {
        context: "pod certificate subject",
        message: e.to_string(),
    };
    let value = der::Any::encode_from(&Utf8StringRef::new(cn).map_err(enc)?).map_err(enc)?;
    let atv = AttributeTypeAndValue {
        oid: const_oid::db::rfc4519::CN,
        value,
    };
    let mut name = RdnSequence::default();
    name.push(RelativeDistinguishedName::try_from(vec![atv]).map_err(enc)?);
    der::Encode::to_der(&name).map_err(enc)
}

/// Whether the CA's NotAfter, not the granted lifetime, ended the validity: with one more second of
/// CA life the certificate would have lasted longer. Same arithmetic as issuance (`issue::validity`).
fn cut_by_ca(now: SystemTime, lifetime: Duration, ca_not_after: SystemTime) -> Result<bool> {
    let one_more_second = ca_not_after + Duration::from_secs(1);
    let (_, not_after) = crate::issue::validity(now, lifetime, one_more_second)?;
    Ok(not_after > ca_not_after)
}

/// A leaf whose subject is byte for byte its CA's cannot be told from the CA by name: chain builders
/// (OpenSSL among them) take it for self-issued, and issuance would drop its authorityKeyIdentifier.
/// kube-controller-manager signs it; we refuse it.
fn not_the_ca_subject(
    csr: csr::VerifiedCsr,
    ca_subject: &[u8],
) -> std::result::Result<csr::VerifiedCsr, crate::refusal::Refusal> {
    if csr.subject_der == ca_subject {
        return Err(crate::refusal::Refusal::new(
            crate::refusal::Reason::SubjectNotAllowed,
            "the subject is the signing CA's own subject",
        ));
    }
    Ok(csr)
}

/// Every configured signer.
#[derive(Debug)]
pub struct Engine {
    signers: Vec<SignerEngine>,
}

impl Engine {
    /// Loads every signer's CA; the first failure stops startup.
    pub fn from_settings(settings: &Settings) -> Result<Engine> {
        let signers = (0..settings.signers.len())
            .map(|i| SignerEngine::new(settings, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Engine { signers })
    }

    pub fn signer(&self, name: &str) -> Option<&SignerEngine> {
        self.signers.iter().find(|s| s.name() == name)
    }

    /// Like `signer`, as an error for callers that need one.
    pub fn require(&self, name: &str) -> Result<&SignerEngine> {
        self.signer(name)
            .ok_or_else(|| Error::UnknownSigner(name.to_owned()))
    }

    pub fn signers(&self) -> impl Iterator<Item = &SignerEngine> {
        self.signers.iter()
    }

    /// Logs out of every PKCS#11 token and closes the sessions (shutdown, once nothing signs).
    pub fn logout_tokens(&self) {
        for s in &self.signers {
            if let Some(key) = s.ca().pkcs11_key() {
                key.logout();
            }
        }
    }
}
