//! The record of every certificate the CA signs, for SREs who must answer "what did this CA sign, for
//! whom, and when".
//!
//! Two records per certificate, joined by serial and SHA-256:
//! - `signed`, made the moment the CA's signature exists and *before* the certificate leaves the process,
//!   whatever then happens to the status write;
//! - `issued`, once the certificate is known to be on the CSR (the write succeeded, or a re-read or the
//!   watch after a failed write shows exactly our certificate there).
//!
//! Both go to the log (`certificate signed`, `certificate issued`) and, when `audit.file` is set, to an
//! append-only JSON-lines file, rotated by size. The file fails closed: when a `signed` record cannot be
//! written and synced, the certificate is dropped unreleased and the CSR retried later (a CA must not
//! hand out what it did not record). A failed `issued` record cannot take the certificate back; it is
//! counted and logged like any audit failure.
//!
//! Durability: each record is one `write` on a file opened with `O_APPEND`, then `fdatasync`, before
//! the call returns. Rotation renames `file` → `file.1` → … → `file.N` (the oldest is removed), fsyncs
//! the directory, then opens a new `file`; a record never spans two files.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// `audit:` in the settings file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuditSettings {
    /// JSON-lines file receiving one record per signature and per confirmed issuance; none: log only.
    pub file: Option<PathBuf>,
    /// Rotate when the file would grow past this many megabytes (MiB).
    pub max_size_megabytes: u64,
    /// Rotated files kept (`file.1` newest … `file.N` oldest).
    pub max_backups: u32,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            file: None,
            max_size_megabytes: 100,
            max_backups: 10,
        }
    }
}

impl AuditSettings {
    /// The settings' own checks (key names relative to `audit.`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
            return Err(("file", "must not be empty (leave it out to disable)".into()));
        }
        if self.max_size_megabytes == 0 {
            return Err(("maxSizeMegabytes", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The CA signed a certificate (it has not left the process yet).
    Signed,
    /// The certificate is on the CSR.
    Issued,
}

/// How an issuance was confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confirmed {
    /// The status write succeeded.
    Write,
    /// The write failed or its answer was lost; reading the CSR again showed our certificate.
    Reread,
    /// As `Reread`, seen on the watch.
    Watch,
}

impl Confirmed {
    pub fn as_str(self) -> &'static str {
        match self {
            Confirmed::Write => "write",
            Confirmed::Reread => "reread",
            Confirmed::Watch => "watch",
        }
    }
}

/// One audit record. Never holds key material: the certificate is identified by serial and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub event: Event,
    pub signer: String,
    pub csr: String,
    pub uid: String,
    pub requester: String,
    /// Lower-case hex.
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// SHA-256 of the leaf certificate's DER, lower-case hex (`openssl x509 -outform der | sha256sum`).
    pub sha256: String,
    /// The replica that signed.
    pub replica: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed_by: Option<Confirmed>,
}

/// SHA-256 of the first certificate of a PEM chain, lower-case hex.
pub fn leaf_sha256(chain_pem: &[u8]) -> Result<String, openssl::error::ErrorStack> {
    let leaf = openssl::x509::X509::from_pem(chain_pem)?;
    let digest = openssl::sha::sha256(&leaf.to_der()?);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// RFC 3339 with milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Why a record did not reach the file.
#[derive(Debug, thiserror::Error)]
#[error("audit file {}: {error}", path.display())]
pub struct AuditError {
    pub path: PathBuf,
    #[source]
    pub error: std::io::Error,
}

/// The append-only JSON-lines file.
#[derive(Debug)]
pub struct AuditFile {
    path: PathBuf,
    max_bytes: u64,
    max_backups: u32,
    state: Mutex<Option<Open>>,
}

#[derive(Debug)]
struct Open {
    file: File,
    len: u64,
}

impl AuditFile {
    /// Opens (creating) the file; `Ok(None)` when no file is configured. Fails when it cannot be opened,
    /// so a misconfigured audit file stops startup instead of the first signature.
    pub fn open(settings: &AuditSettings) -> Result<Option<AuditFile>, AuditError> {
        let Some(path) = settings.file.clone() else {
            return Ok(None);
        };
        let f = AuditFile {
            max_bytes: settings.max_size_megabytes.saturating_mul(1024 * 1024),
            max_backups: settings.max_backups,
            state: Mutex::new(None),
            path,
        };
        let opened = f.open_file()?;
        *f.lock() = Some(opened);
        Ok(Some(f))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, error: std::io::Error) -> AuditError {
        AuditError {
            path: self.path.clone(),
            error,
        }
    }

    fn open_file(&self) -> Result<Open, AuditError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&self.path)
            .map_err(|e| self.err(e))?;
        let len = file.metadata().map_err(|e| self.err(e))?.len();
        Ok(Open { file, len })
    }

    /// Appends one record and syncs it to disk. Blocking: call from a blocking context.
    pub fn append(&self, record: &Record) -> Result<(), AuditError> {
        let mut line =
            serde_json::to_vec(record).map_err(|e| self.err(std::io::Error::other(e)))?;
        line.push(b'\n');
        let mut state = self.lock();
        // A failed write or rotation leaves no file open; the next record reopens it.
        let mut open = match state.take() {
            Some(o) => o,
            None => self.open_file()?,
        };
        if open.len > 0 && open.len + line.len() as u64 > self.max_bytes {
            drop(open);
            self.rotate()?;
            open = self.open_file()?;
        }
        open.file.write_all(&line).map_err(|e| self.err(e))?;
        open.file.sync_data().map_err(|e| self.err(e))?;
        open.len += line.len() as u64;
        *state = Some(open);
        Ok(())
    }

    fn backup(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&self) -> Result<(), AuditError> {
        if self.max_backups == 0 {
            std::fs::remove_file(&self.path).map_err(|e| self.err(e))?;
        } else {
            match std::fs::remove_file(self.backup(self.max_backups)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err(e)),
            }
            for n in (1..self.max_backups).rev() {
                match std::fs::rename(self.backup(n), self.backup(n + 1)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(self.err(e)),
                }
            }
            std::fs::rename(&self.path, self.backup(1)).map_err(|e| self.err(e))?;
        }
        // The renames must survive a crash as well as the records do.
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(serial: &str) -> Record {
        Record {
            time: timestamp(SystemTime::UNIX_EPOCH),
            event: Event::Signed,
            signer: "example.com/mtls".into(),
            csr: "a\nb".into(),
            uid: "u".into(),
            requester: "developer".into(),
            serial: serial.into(),
            not_before: "1970-01-01T00:00:00Z".into(),
            not_after: "1970-01-02T00:00:00Z".into(),
            sha256: "00".repeat(32),
            replica: "r".into(),
            confirmed_by: None,
        }
    }

    #[test]
    fn records_are_json_lines_and_rotation_keeps_n_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let line_len = serde_json::to_vec(&record("0001")).unwrap().len() as u64 + 1;
        let f = AuditFile {
            path: path.clone(),
            // Three records per file.
            max_bytes: line_len * 3,
            max_backups: 2,
            state: Mutex::new(None),
        };
        for i in 0..10 {
            f.append(&record(&format!("{i:04}"))).unwrap();
        }
        let read = |p: &Path| -> Vec<String> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    assert_eq!(v["csr"], "a\nb");
                    assert_eq!(v["event"], "signed");
                    assert!(v.get("confirmedBy").is_none());
                    v["serial"].as_str().unwrap().to_string()
                })
                .collect()
        };
        assert_eq!(read(&path), ["0009"]);
        assert_eq!(read(&f.backup(1)), ["0006", "0007", "0008"]);
        assert_eq!(read(&f.backup(2)), ["0003", "0004", "0005"]);
        assert!(!f.backup(3).exists());
    }

    #[test]
    fn a_file_that_cannot_be_written_is_an_error_not_a_silent_loss() {
        let dir = tempfile::tempdir().unwrap();
        let s = AuditSettings {
            file: Some(dir.path().join("missing-dir").join("audit.jsonl")),
            ..AuditSettings::default()
        };
        assert!(AuditFile::open(&s).is_err());
        // /dev/full accepts the open and fails every write.
        let full = AuditFile {
            path: PathBuf::from("/dev/full"),
            max_bytes: u64::MAX,
            max_backups: 1,
            state: Mutex::new(None),
        };
        let e = full.append(&record("01")).unwrap_err();
        assert!(e.to_string().contains("/dev/full"), "{e}");
    }

    #[test]
    fn settings_are_checked() {
        assert!(AuditSettings::default().validate().is_ok());
        let zero = AuditSettings {
            max_size_megabytes: 0,
            ..AuditSettings::default()
        };
        assert_eq!(zero.validate().unwrap_err().0, "maxSizeMegabytes");
    }
}
