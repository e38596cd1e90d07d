//! A CA key that never leaves a PKCS#11 token (an HSM, or SoftHSM to try it).
//!
//! The key is named by an RFC 7512 URI (`pkcs11:token=csr-signer;object=ca-key`); the module (the
//! vendor's library) and the PIN come from the settings and a file, never from the URI, the config
//! file or the command line, so the PIN is never in anything that gets printed or committed.
//!
//! Signing borrows a logged-in session from a small pool (a PKCS#11 session is single-threaded), so
//! each signing thread has its own. A session, login or token error drops that session and retries
//! once on a fresh one (re-initialising the module, finding the token again by label or serial, and
//! logging in again); what still fails is an `Error::Token`, which the controller retries with backoff
//! like any transient error, never `Failed`. A rejected PIN is not tried again until the PIN file
//! changes: retrying a wrong PIN would lock the token's user PIN.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};

use crate::ca::SignatureAlgorithm;
use crate::config::Pkcs11Settings;
use crate::error::{Error, Result};

/// Why a token operation failed: the `error` label of `csr_signer_signing_errors_total` (a small
/// fixed set) and the log field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenErrorKind {
    /// The module could not be loaded or initialised.
    Module,
    /// No token matches the URI, or it went away (removed, not present, slot gone).
    Token,
    /// The session was closed or became invalid.
    Session,
    /// Logging in failed, or the session is no longer logged in.
    Login,
    /// No private key matches the URI, or it cannot sign as needed.
    Key,
    /// The device reported an error (device error, memory, general failure).
    Device,
}

impl TokenErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenErrorKind::Module => "module",
            TokenErrorKind::Token => "token",
            TokenErrorKind::Session => "session",
            TokenErrorKind::Login => "login",
            TokenErrorKind::Key => "key",
            TokenErrorKind::Device => "device",
        }
    }

    /// Every kind, for metrics that start at zero.
    pub const ALL: [TokenErrorKind; 6] = [
        TokenErrorKind::Module,
        TokenErrorKind::Token,
        TokenErrorKind::Session,
        TokenErrorKind::Login,
        TokenErrorKind::Key,
        TokenErrorKind::Device,
    ];

    /// The kind of a PKCS#11 return value (`fallback` for the ones that say nothing about the token).
    fn of(e: &CkError, fallback: TokenErrorKind) -> TokenErrorKind {
        let CkError::Pkcs11(rv, _) = e else {
            return match e {
                CkError::LibraryLoading(_) | CkError::MissingSymbol(_) => TokenErrorKind::Module,
                _ => fallback,
            };
        };
        match rv {
            RvError::CryptokiNotInitialized | RvError::CryptokiAlreadyInitialized => {
                TokenErrorKind::Module
            }
            RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::DeviceRemoved
            | RvError::SlotIdInvalid => TokenErrorKind::Token,
            RvError::SessionClosed
            | RvError::SessionHandleInvalid
            | RvError::SessionCount
            | RvError::SessionExists => TokenErrorKind::Session,
            RvError::UserNotLoggedIn
            | RvError::PinIncorrect
            | RvError::PinLocked
            | RvError::PinExpired
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::UserPinNotInitialized => TokenErrorKind::Login,
            RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::GeneralError
            | RvError::FunctionFailed
            | RvError::HostMemory => TokenErrorKind::Device,
            RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
            | RvError::KeyTypeInconsistent
            | RvError::KeyFunctionNotPermitted
            | RvError::MechanismInvalid
            | RvError::MechanismParamInvalid => TokenErrorKind::Key,
            _ => fallback,
        }
    }
}

fn token_error(kind: TokenErrorKind, context: impl Into<String>, e: Option<CkError>) -> Error {
    Error::Token {
        kind,
        context: context.into(),
        source: e.map(Box::new),
    }
}

/// A CKR_* failure, classified.
fn ck(context: &'static str, fallback: TokenErrorKind) -> impl Fn(CkError) -> Error {
    move |e| token_error(TokenErrorKind::of(&e, fallback), context, Some(e))
}

/// An RFC 7512 PKCS#11 URI, reduced to what selects a token and a key. Only path attributes are
/// accepted: `pin-value` and `pin-source` would put the PIN (or where it is) in the config, and
/// `module-path` would load a library the `module` setting did not name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
}

impl Pkcs11Uri {
    /// Parses and checks a URI: a token (`token` or `serial`) and a key (`object` or `id`) are
    /// required; `type`, when given, must be `private`.
    pub fn parse(uri: &str) -> std::result::Result<Pkcs11Uri, String> {
        let Some(rest) = uri.strip_prefix("pkcs11:") else {
            return Err("must start with \"pkcs11:\" (RFC 7512)".into());
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if let Some(q) = query {
            let names: Vec<&str> = q
                .split('&')
                .filter(|a| !a.is_empty())
                .map(|a| a.split_once('=').map_or(a, |(n, _)| n))
                .collect();
            if let Some(n) = names.iter().find(|n| n.starts_with("pin-")) {
                return Err(format!(
                    "query attribute {n} is not accepted: the PIN comes from pinFile only"
                ));
            }
            if let Some(n) = names.first() {
                return Err(format!(
                    "query attribute {n} is not accepted (the module comes from the module setting)"
                ));
            }
        }
        let mut out = Pkcs11Uri::default();
        let mut seen = Vec::new();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let Some((name, value)) = attr.split_once('=') else {
                return Err(format!("attribute {attr:?} has no value"));
            };
            if seen.contains(&name) {
                return Err(format!("attribute {name} appears twice"));
            }
            seen.push(name);
            let bytes = percent_encoding::percent_decode_str(value).collect::<Vec<u8>>();
            let text = || {
                String::from_utf8(bytes.clone())
                    .map_err(|_| format!("attribute {name} is not UTF-8 once percent-decoded"))
            };
            match name {
                "token" => out.token = Some(text()?),
                "serial" => out.serial = Some(text()?),
                "manufacturer" => out.manufacturer = Some(text()?),
                "model" => out.model = Some(text()?),
                "object" => out.object = Some(text()?),
                "id" => out.id = Some(bytes),
                "type" => {
                    if text()? != "private" {
                        return Err(
                            "type must be \"private\": the signer needs the private key".into()
                        );
                    }
                }
                // Informational in RFC 7512; the module setting decides which library is loaded.
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer"
                | "slot-id" => {}
                other => return Err(format!("unknown attribute {other}")),
            }
        }
        if out.token.is_none() && out.serial.is_none() {
            return Err("name the token with token=LABEL or serial=SERIAL".into());
        }
        if out.object.is_none() && out.id.is_none() {
            return Err("name the key with object=LABEL or id=%HEX".into());
        }
        Ok(out)
    }

    fn matches_token(&self, label: &str, serial: &str, manufacturer: &str, model: &str) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.token, label)
            && eq(&self.serial, serial)
            && eq(&self.manufacturer, manufacturer)
            && eq(&self.model, model)
    }

    /// What selects the object, for `C_FindObjects`.
    fn template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![Attribute::Class(class)];
        if let Some(o) = &self.object {
            t.push(Attribute::Label(o.as_bytes().to_vec()));
        }
        if let Some(id) = &self.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }
}

/// The PIN, read from its file (one trailing newline removed). Never printed: `AuthPin` is a
/// `secrecy` secret that zeroes itself and has no `Display`.
pub struct Pin(AuthPin);

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

impl Pin {
    /// The PIN from its file's bytes (trailing newlines removed): `None` unless one line of UTF-8.
    pub fn from_bytes(bytes: &[u8]) -> Option<Pin> {
        let mut b = bytes;
        while let [rest @ .., b'\n' | b'\r'] = b {
            b = rest;
        }
        let text = std::str::from_utf8(b).ok()?;
        if text.is_empty() || text.contains('\n') {
            return None;
        }
        Some(Pin(AuthPin::from(text.to_owned())))
    }
}

/// One context per module path for the whole process: `C_Initialize` is once per process, and
/// finalising a module another `SigningCa` still uses (the one before a reload) would close its
/// sessions. Modules are never finalised; the process exit unloads them.
fn module(path: &Path) -> Result<Pkcs11> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let ctx = Pkcs11::new(path).map_err(|e| {
        token_error(
            TokenErrorKind::Module,
            format!("cannot load the PKCS#11 module {}", path.display()),
            Some(e),
        )
    })?;
    initialize(&ctx)?;
    modules.insert(path.to_owned(), ctx.clone());
    Ok(ctx)
}

/// `C_Initialize`, where another user of the same library in this process may have done it already.
fn initialize(ctx: &Pkcs11) -> Result<()> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(ck(
            "initialising the PKCS#11 module",
            TokenErrorKind::Module,
        )(e)),
    }
}

/// The slot holding the token the URI names.
fn find_slot(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(ck("listing the token slots", TokenErrorKind::Token))?;
    let mut found = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(ck("reading token information", TokenErrorKind::Token))?;
        if uri.matches_token(
            info.label(),
            info.serial_number(),
            info.manufacturer_id(),
            info.model(),
        ) {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(token_error(
            TokenErrorKind::Token,
            "no token matches the URI",
            None,
        )),
        many => Err(token_error(
            TokenErrorKind::Token,
            format!(
                "{} tokens match the URI: add serial= to name one",
                many.len()
            ),
            None,
        )),
    }
}

/// Logs in on a fresh session. Login is per application and token, so another session may have done
/// it already.
fn login(session: &Session, pin: &Pin) -> Result<()> {
    match session.login(UserType::User, Some(&pin.0)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(ck("logging in to the token", TokenErrorKind::Login)(e)),
    }
}

/// The one object of `class` the URI names.
fn find_one(session: &Session, uri: &Pkcs11Uri, class: ObjectClass) -> Result<ObjectHandle> {
    let what = if class == ObjectClass::PRIVATE_KEY {
        "private key"
    } else {
        "public key"
    };
    let found = session
        .find_objects(&uri.template(class))
        .map_err(ck("searching the token", TokenErrorKind::Key))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(token_error(
            TokenErrorKind::Key,
            format!("no {what} on the token matches the URI"),
            None,
        )),
        many => Err(token_error(
            TokenErrorKind::Key,
            format!(
                "{} {what}s match the URI: add id= or a unique object=",
                many.len()
            ),
            None,
        )),
    }
}

/// A logged-in session and the key's handle in it (handles may change when the token reconnects).
struct Lease {
    session: Session,
    key: ObjectHandle,
}

struct Pool {
    idle: Vec<Lease>,
    /// Sessions open, idle or lent.
    open: usize,
}

/// A CA private key inside a PKCS#11 token.
pub struct Pkcs11Key {
    ctx: Pkcs11,
    uri: Pkcs11Uri,
    pin: Pin,
    algorithm: SignatureAlgorithm,
    max_sessions: usize,
    pool: Mutex<Pool>,
    freed: Condvar,
    /// Set when the token rejected the PIN: logging in again with the same PIN would only count
    /// towards locking it.
    pin_rejected: AtomicBool,
    /// Sessions dropped after a token error and replaced.
    reconnects: AtomicU64,
    /// Token errors by kind (`TokenErrorKind::ALL` order) not yet taken into the metrics.
    errors: [AtomicU64; 6],
    /// When this key last reset the module (see `may_reset`).
    last_reset: Mutex<Option<std::time::Instant>>,
}

/// Least time between two module resets by one key.
const MODULE_RESET_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("uri", &self.uri)
            .field("algorithm", &self.algorithm)
            .field("pin", &self.pin)
            .finish()
    }
}

impl Pkcs11Key {
    /// Connects to the token and logs in (one session; more open as signing threads need them).
    /// `algorithm` comes from the CA certificate; the caller proves the key matches it.
    pub fn open(
        settings: &Pkcs11Settings,
        pin: Pin,
        algorithm: SignatureAlgorithm,
    ) -> Result<Pkcs11Key> {
        let uri = Pkcs11Uri::parse(&settings.uri)
            .map_err(|m| token_error(TokenErrorKind::Key, format!("uri: {m}"), None))?;
        let key = Pkcs11Key {
            ctx: module(&settings.module)?,
            uri,
            pin,
            algorithm,
            max_sessions: settings.sessions.max(1),
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            pin_rejected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            errors: Default::default(),
            last_reset: Mutex::new(None),
        };
        let lease = key.connect()?;
        key.check_key_attributes(&lease)?;
        key.give_back(lease);
        Ok(key)
    }

    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// How many times a session was replaced after a token error.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Token errors seen since the last call, by kind (recovered ones included).
    pub fn take_errors(&self) -> Vec<(TokenErrorKind, u64)> {
        TokenErrorKind::ALL
            .into_iter()
            .zip(&self.errors)
            .filter_map(|(k, n)| match n.swap(0, Ordering::Relaxed) {
                0 => None,
                n => Some((k, n)),
            })
            .collect()
    }

    fn count(&self, e: &Error) {
        if let Some(k) = e.token_kind() {
            if let Some(i) = TokenErrorKind::ALL.iter().position(|x| *x == k) {
                self.errors[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A new logged-in session on the token the URI names, with the key's handle.
    fn connect(&self) -> Result<Lease> {
        if self.pin_rejected.load(Ordering::Relaxed) {
            return Err(token_error(
                TokenErrorKind::Login,
                "the token rejected the PIN; not logging in again until the PIN file changes",
                None,
            ));
        }
        let slot = match find_slot(&self.ctx, &self.uri) {
            Ok(slot) => slot,
            // The module was finalised under us (a reset, another component): initialise it again.
            Err(e) if e.token_kind() == Some(TokenErrorKind::Module) => {
                initialize(&self.ctx)?;
                find_slot(&self.ctx, &self.uri)?
            }
            // The token is gone or the module is in an error state it does not leave by itself
            // (SoftHSM after its files went away, a network HSM client after the appliance
            // restarted): only C_Finalize + C_Initialize makes it look at the token again. Other
            // keys on this module see their sessions closed and reconnect the same way.
            Err(e) if self.may_reset(&e) => {
                tracing::warn!(kind = e.token_kind().map_or("", |k| k.as_str()), error = %crate::error::chain(&e), "resetting the PKCS#11 module to reconnect to the token");
                // Failing to finalise (already finalised) changes nothing: initialise either way.
                let _ = self.ctx.clone().finalize();
                initialize(&self.ctx)?;
                find_slot(&self.ctx, &self.uri)?
            }
            Err(e) => return Err(e),
        };
        let session = self
            .ctx
            .open_ro_session(slot)
            .map_err(ck("opening a session", TokenErrorKind::Session))?;
        if let Err(e) = login(&session, &self.pin) {
            if let Error::Token {
                source: Some(s), ..
            } = &e
            {
                if matches!(
                    **s,
                    CkError::Pkcs11(
                        RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired,
                        _
                    )
                ) {
                    self.pin_rejected.store(true, Ordering::Relaxed);
                }
            }
            return Err(e);
        }
        let key = find_one(&session, &self.uri, ObjectClass::PRIVATE_KEY)?;
        Ok(Lease { session, key })
    }

    /// Whether `e` (from finding the token) calls for a module reset, at most once per
    /// `MODULE_RESET_EVERY`: a reset interrupts every session of the module, so retries from several
    /// signing threads must not turn into a storm of them.
    fn may_reset(&self, e: &Error) -> bool {
        if !matches!(
            e.token_kind(),
            Some(TokenErrorKind::Token | TokenErrorKind::Device)
        ) {
            return false;
        }
        let mut last = self.last_reset.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < MODULE_RESET_EVERY) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }

    /// A security team expects a CA key that cannot leave the token; one that can is loaded (a
    /// migration may need it) but said loudly.
    fn check_key_attributes(&self, lease: &Lease) -> Result<()> {
        let attrs = lease
            .session
            .get_attributes(
                lease.key,
                &[
                    AttributeType::Sign,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::KeyType,
                ],
            )
            .map_err(ck("reading the key's attributes", TokenErrorKind::Key))?;
        let (mut sign, mut sensitive, mut extractable, mut key_type) = (None, None, None, None);
        for a in attrs {
            match a {
                Attribute::Sign(b) => sign = Some(b),
                Attribute::Sensitive(b) => sensitive = Some(b),
                Attribute::Extractable(b) => extractable = Some(b),
                Attribute::KeyType(t) => key_type = Some(t),
                _ => {}
            }
        }
        if sign == Some(false) {
            return Err(token_error(
                TokenErrorKind::Key,
                "the private key may not sign (CKA_SIGN is false)",
                None,
            ));
        }
        let expected = match self.algorithm {
            SignatureAlgorithm::RsaSha256 => KeyType::RSA,
            SignatureAlgorithm::Ed25519 => KeyType::EC_EDWARDS,
            _ => KeyType::EC,
        };
        if let Some(t) = key_type {
            if t != expected {
                return Err(token_error(
                    TokenErrorKind::Key,
                    format!("the private key is of type {t}, but the CA certificate holds a {expected} key"),
                    None,
                ));
            }
        }
        if sensitive == Some(false) || extractable == Some(true) {
            tracing::warn!(
                sensitive = ?sensitive,
                extractable = ?extractable,
                "the CA key in the token can be exported (CKA_SENSITIVE false or CKA_EXTRACTABLE true)"
            );
        }
        Ok(())
    }

    /// Takes an idle session, or opens one while fewer than `max_sessions` are open, or waits.
    fn take(&self) -> Result<Lease> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(l) = pool.idle.pop() {
                return Ok(l);
            }
            if pool.open < self.max_sessions {
                pool.open += 1;
                drop(pool);
                return self.connect().inspect_err(|_| self.forget_one());
            }
            pool = self.freed.wait(pool).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn give_back(&self, lease: Lease) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.idle.push(lease);
        drop(pool);
        self.freed.notify_one();
    }

    /// A session that was dropped (or never opened) frees its place.
    fn forget_one(&self) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.open = pool.open.saturating_sub(1);
        drop(pool);
        self.freed.notify_one();
    }

    /// The X.509 signature value over `tbs` (ECDSA as DER, RSA PKCS#1 v1.5, Ed25519 raw). The digest
    /// is computed here, so only 32–64 bytes cross to the token (a network HSM's round trip does not
    /// grow with the certificate).
    pub fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>> {
        let (mechanism, input) = self.mechanism_and_input(tbs)?;
        let mut last = None;
        for attempt in 0..2 {
            let lease = match self.take() {
                Ok(l) => l,
                Err(e) => {
                    self.count(&e);
                    // Connecting is tried twice: the first attempt may have reset the module.
                    if attempt == 0 && e.token_kind().is_some() {
                        tracing::warn!(kind = e.token_kind().map_or("", |k| k.as_str()), error = %crate::error::chain(&e), "token unavailable; reconnecting");
                        last = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            };
            match lease.session.sign(&mechanism, lease.key, &input) {
                Ok(raw) => {
                    self.give_back(lease);
                    return self.to_x509_signature(raw);
                }
                Err(e) => {
                    let mut kind = TokenErrorKind::of(&e, TokenErrorKind::Device);
                    // Modules differ in what they say when the login is gone (SoftHSM: the key
                    // handle is invalid); the session's state says it plainly.
                    if kind == TokenErrorKind::Key && !logged_in(&lease.session) {
                        kind = TokenErrorKind::Login;
                    }
                    let err = token_error(kind, "signing with the token", Some(e));
                    self.count(&err);
                    // Every token error gets one fresh session (which ones a reconnect cures differs
                    // between modules); close what can be closed of this one.
                    drop(lease);
                    self.forget_one();
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(kind = kind.as_str(), error = %crate::error::chain(&err), "token error while signing; reconnecting");
                    last = Some(err);
                }
            }
        }
        Err(last
            .unwrap_or_else(|| token_error(TokenErrorKind::Device, "signing with the token", None)))
    }

    fn mechanism_and_input(&self, tbs: &[u8]) -> Result<(Mechanism<'static>, Vec<u8>)> {
        let digest = |md: MessageDigest| {
            hash(md, tbs)
                .map(|d| d.to_vec())
                .map_err(crate::error::crypto("hashing the TBSCertificate"))
        };
        Ok(match self.algorithm {
            SignatureAlgorithm::RsaSha256 => {
                // DigestInfo for SHA-256 (RFC 8017 §9.2 note 1), then the hash: CKM_RSA_PKCS pads it.
                let mut input = vec![
                    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
                ];
                input.extend(digest(MessageDigest::sha256())?);
                (Mechanism::RsaPkcs, input)
            }
            SignatureAlgorithm::EcdsaSha256 => (Mechanism::Ecdsa, digest(MessageDigest::sha256())?),
            SignatureAlgorithm::EcdsaSha384 => (Mechanism::Ecdsa, digest(MessageDigest::sha384())?),
            SignatureAlgorithm::EcdsaSha512 => (Mechanism::Ecdsa, digest(MessageDigest::sha512())?),
            SignatureAlgorithm::Ed25519 => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                tbs.to_vec(),
            ),
        })
    }

    /// PKCS#11 ECDSA signatures are r‖s, each as long as the curve order; X.509 wants
    /// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
    fn to_x509_signature(&self, raw: Vec<u8>) -> Result<Vec<u8>> {
        match self.algorithm {
            SignatureAlgorithm::RsaSha256 | SignatureAlgorithm::Ed25519 => Ok(raw),
            _ => {
                if raw.is_empty() || !raw.len().is_multiple_of(2) {
                    return Err(token_error(
                        TokenErrorKind::Device,
                        format!(
                            "the token returned an ECDSA signature of {} bytes",
                            raw.len()
                        ),
                        None,
                    ));
                }
                let (r, s) = raw.split_at(raw.len() / 2);
                let c = crate::error::crypto("encoding the ECDSA signature");
                let sig = EcdsaSig::from_private_components(
                    BigNum::from_slice(r).map_err(&c)?,
                    BigNum::from_slice(s).map_err(&c)?,
                )
                .map_err(&c)?;
                sig.to_der().map_err(&c)
            }
        }
    }

    /// Logs out and closes this key's sessions, for shutdown. Login is per application and token, so
    /// this logs out every session of the process on the token.
    pub fn logout(&self) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = pool.idle.first() {
            if let Err(e) = l.session.logout() {
                tracing::debug!(error = %e, "logout");
            }
        }
        let n = pool.idle.len();
        pool.idle.clear();
        pool.open = pool.open.saturating_sub(n);
    }
}

fn logged_in(session: &Session) -> bool {
    use cryptoki::session::SessionState;
    session.get_session_info().is_ok_and(|i| {
        matches!(
            i.session_state(),
            SessionState::RoUser | SessionState::RwUser | SessionState::RwSecurityOfficer
        )
    })
}

/// Public key material of a key pair made in a token, for the CA certificate.
pub struct Generated {
    pub public_key: openssl::pkey::PKey<openssl::pkey::Public>,
}

/// Which key pair `ca init --pkcs11` makes inside the token.
#[derive(Clone, Copy, Debug)]
pub enum TokenKeyType {
    Rsa(u32),
    Ec(openssl::nid::Nid),
    Ed25519,
}

/// Generates a key pair inside the token (`CKA_TOKEN`, private: sensitive, not extractable, sign
/// only). Refuses when the URI already names a key: a CA key is never replaced by accident.
pub fn generate(settings: &Pkcs11Settings, pin: &Pin, key_type: TokenKeyType) -> Result<Generated> {
    let uri = Pkcs11Uri::parse(&settings.uri)
        .map_err(|m| token_error(TokenErrorKind::Key, format!("uri: {m}"), None))?;
    let ctx = module(&settings.module)?;
    let slot = find_slot(&ctx, &uri)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(ck("opening a read-write session", TokenErrorKind::Session))?;
    login(&session, pin)?;
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        let found = session
            .find_objects(&uri.template(class))
            .map_err(ck("searching the token", TokenErrorKind::Key))?;
        if !found.is_empty() {
            return Err(token_error(
                TokenErrorKind::Key,
                "the token already holds a key the URI names; refusing to create another",
                None,
            ));
        }
    }
    let mut common = vec![Attribute::Token(true)];
    if let Some(o) = &uri.object {
        common.push(Attribute::Label(o.as_bytes().to_vec()));
    }
    // Without an id, the same random one on both halves keeps the pair findable together.
    let id = match &uri.id {
        Some(id) => id.clone(),
        None => {
            let mut id = vec![0u8; 16];
            openssl::rand::rand_bytes(&mut id)
                .map_err(crate::error::crypto("generating a key id"))?;
            id
        }
    };
    common.push(Attribute::Id(id));
    let mut public = common.clone();
    public.push(Attribute::Verify(true));
    let mut private = common;
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Derive(false),
        Attribute::Unwrap(false),
    ]);
    let mechanism = match key_type {
        TokenKeyType::Rsa(bits) => {
            public.push(Attribute::ModulusBits(u64::from(bits).into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
        TokenKeyType::Ec(nid) => {
            public.push(Attribute::EcParams(curve_oid_der(nid)?));
            Mechanism::EccKeyPairGen
        }
        TokenKeyType::Ed25519 => {
            // id-Ed25519 (RFC 8410), the encoding PKCS#11 3.0 allows besides the curve name.
            public.push(Attribute::EcParams(vec![0x06, 0x03, 0x2b, 0x65, 0x70]));
            Mechanism::EccEdwardsKeyPairGen
        }
    };
    let (pub_handle, _) = session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(ck(
            "generating the key pair in the token",
            TokenErrorKind::Key,
        ))?;
    let public_key = read_public_key(&session, pub_handle, key_type)?;
    Ok(Generated { public_key })
}

fn curve_oid_der(nid: openssl::nid::Nid) -> Result<Vec<u8>> {
    use openssl::nid::Nid;
    Ok(match nid {
        Nid::X9_62_PRIME256V1 => vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        Nid::SECP384R1 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        Nid::SECP521R1 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        _ => {
            return Err(token_error(
                TokenErrorKind::Key,
                "unsupported curve for a token key",
                None,
            ))
        }
    })
}

/// The public half as OpenSSL sees it. `CKA_EC_POINT` is a DER OCTET STRING around the point.
fn read_public_key(
    session: &Session,
    handle: ObjectHandle,
    key_type: TokenKeyType,
) -> Result<openssl::pkey::PKey<openssl::pkey::Public>> {
    use openssl::pkey::PKey;
    let c = crate::error::crypto("reading the token's public key");
    let wanted: &[AttributeType] = match key_type {
        TokenKeyType::Rsa(_) => &[AttributeType::Modulus, AttributeType::PublicExponent],
        _ => &[AttributeType::EcPoint],
    };
    let attrs = session
        .get_attributes(handle, wanted)
        .map_err(ck("reading the public key", TokenErrorKind::Key))?;
    let (mut n, mut e, mut point) = (None, None, None);
    for a in attrs {
        match a {
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            _ => {}
        }
    }
    let missing = || token_error(TokenErrorKind::Key, "the public key lacks its values", None);
    match key_type {
        TokenKeyType::Rsa(_) => {
            let (n, e) = (n.ok_or_else(missing)?, e.ok_or_else(missing)?);
            let rsa = openssl::rsa::Rsa::from_public_components(
                BigNum::from_slice(&n).map_err(&c)?,
                BigNum::from_slice(&e).map_err(&c)?,
            )
            .map_err(&c)?;
            PKey::from_rsa(rsa).map_err(&c)
        }
        TokenKeyType::Ec(nid) => {
            let point = unwrap_octet_string(&point.ok_or_else(missing)?);
            let group = openssl::ec::EcGroup::from_curve_name(nid).map_err(&c)?;
            let mut bn = openssl::bn::BigNumContext::new().map_err(&c)?;
            let p = openssl::ec::EcPoint::from_bytes(&group, &point, &mut bn).map_err(&c)?;
            let ec = openssl::ec::EcKey::from_public_key(&group, &p).map_err(&c)?;
            PKey::from_ec_key(ec).map_err(&c)
        }
        TokenKeyType::Ed25519 => {
            let point = unwrap_octet_string(&point.ok_or_else(missing)?);
            PKey::public_key_from_raw_bytes(&point, openssl::pkey::Id::ED25519).map_err(&c)
        }
    }
}

/// The content of a DER OCTET STRING, or the bytes as they are (some modules return the bare point).
fn unwrap_octet_string(v: &[u8]) -> Vec<u8> {
    use der::Decode;
    der::asn1::OctetString::from_der(v)
        .map(|o| o.as_bytes().to_vec())
        .unwrap_or_else(|_| v.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_select_a_token_and_a_key() {
        let u = Pkcs11Uri::parse("pkcs11:token=csr-signer;object=ca-key").expect("valid");
        assert_eq!(u.token.as_deref(), Some("csr-signer"));
        assert_eq!(u.object.as_deref(), Some("ca-key"));
        let u = Pkcs11Uri::parse("pkcs11:serial=0123;id=%01%a2;type=private").expect("valid");
        assert_eq!(u.serial.as_deref(), Some("0123"));
        assert_eq!(u.id, Some(vec![0x01, 0xa2]));
        let u = Pkcs11Uri::parse("pkcs11:token=My%20CA;object=k%3bey").expect("valid");
        assert_eq!(u.token.as_deref(), Some("My CA"));
        assert_eq!(u.object.as_deref(), Some("k;ey"));
    }

    #[test]
    fn uris_never_carry_a_pin_or_a_module() {
        for (uri, says) in [
            ("pkcs11:token=a;object=b?pin-value=1234", "pin-value"),
            ("pkcs11:token=a;object=b?pin-source=file:/p", "pin-source"),
            ("pkcs11:token=a;object=b?module-path=/x.so", "module-path"),
        ] {
            let e = Pkcs11Uri::parse(uri).expect_err(uri);
            assert!(e.contains(says), "{uri}: {e}");
            assert!(!e.contains("1234"), "{e}");
        }
    }

    #[test]
    fn incomplete_or_ambiguous_uris_are_refused() {
        for (uri, says) in [
            ("token=a;object=b", "pkcs11:"),
            ("pkcs11:object=b", "token="),
            ("pkcs11:token=a", "object="),
            ("pkcs11:token=a;token=b;object=c", "twice"),
            ("pkcs11:token=a;object=c;type=public", "private"),
            (
                "pkcs11:token=a;object=c;colour=red",
                "unknown attribute colour",
            ),
            ("pkcs11:token=a;object", "no value"),
        ] {
            let e = Pkcs11Uri::parse(uri).expect_err(uri);
            assert!(e.contains(says), "{uri}: {e}");
        }
    }

    #[test]
    fn pins_lose_trailing_newlines_and_nothing_else() {
        assert!(Pin::from_bytes(b"1234\n").is_some());
        assert!(Pin::from_bytes(b"\n").is_none());
        assert!(Pin::from_bytes(b"12\n34").is_none());
        assert!(Pin::from_bytes(&[0xff, 0xfe]).is_none());
        assert_eq!(
            format!("{:?}", Pin::from_bytes(b"1234").expect("pin")),
            "Pin(<redacted>)"
        );
    }
}
