//! The Go reference program (tests/gopem/main.go, standard library only), built with the local `go` and
//! run once per test binary; inputs are streamed to it one line at a time.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

struct GoPem {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn build() -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/gopem");
    // One binary per test crate: test binaries run in parallel, and `go build` over an executable that
    // another one is running fails.
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(concat!("gopem-", env!("CARGO_CRATE_NAME")));
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "this test compares csr-signer with Go's encoding/pem and crypto/x509 and needs `go` on \
                 PATH (scripts/test.sh requires Go too): cannot run `go build` in {}: {e}",
                src.display()
            )
        });
    assert!(
        status.success(),
        "`go build` of tests/gopem failed: {status}"
    );
    bin
}

fn process() -> &'static Mutex<GoPem> {
    static GO: OnceLock<Mutex<GoPem>> = OnceLock::new();
    GO.get_or_init(|| {
        let mut child = Command::new(build())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/gopem");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Mutex::new(GoPem {
            _child: child,
            stdin,
            stdout,
        })
    })
}

fn ask(line: &str) -> String {
    let mut go = process().lock().unwrap_or_else(|p| p.into_inner());
    writeln!(go.stdin, "{line}").expect("write to gopem");
    go.stdin.flush().expect("flush gopem");
    let mut answer = String::new();
    go.stdout.read_line(&mut answer).expect("read from gopem");
    assert!(answer.ends_with('\n'), "gopem stopped (input {line})");
    answer.pop();
    answer
}

/// What Go's `pem.Decode` returns for `input`: `none x<rest>` or
/// `block x<type> x<bytes> x<rest> [x<key>=x<value> ...]`, all hex.
pub fn go_decode(input: &[u8]) -> String {
    ask(&hex(input))
}

/// Go's `x509.ParseCertificate`: the subject as Go prints it, or Go's error.
pub fn go_parse_certificate(der: &[u8]) -> Result<String, String> {
    let answer = ask(&format!("cert:{}", hex(der)));
    let (kind, value) = answer.split_once(" x").expect("gopem answer");
    let value = String::from_utf8(unhex(value)).expect("utf-8");
    match kind {
        "ok" => Ok(value),
        _ => Err(value),
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
