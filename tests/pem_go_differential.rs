//! csr-signer's PEM reader (`csr_signer::pem::decode`) against Go's `encoding/pem.Decode` itself, run
//! as the reference program in tests/gopem (standard library only, built here with the local `go`):
//! for arbitrary bytes and for structured mutations of valid PEM, both must return the same block
//! (type, headers, bytes) or none, and the same rest. Then the cases that made csr-signer sign a request
//! nobody reviewed, by name.

mod gopem;

use base64::Engine as _;
use gopem::go_decode;
use proptest::prelude::*;

/// Ours, in the same format.
fn rust_decode(input: &[u8]) -> String {
    match csr_signer::pem::decode(input) {
        (None, rest) => format!("none x{}", hex(rest)),
        (Some(b), rest) => {
            let mut s = format!("block x{} x{} x{}", hex(&b.label), hex(&b.bytes), hex(rest));
            for (k, v) in &b.headers {
                s.push_str(&format!(" x{}=x{}", hex(k), hex(v)));
            }
            s
        }
    }
}

use gopem::hex;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A piece of a PEM-like document.
#[derive(Clone, Debug)]
enum Piece {
    Begin(&'static str, &'static str),
    End(&'static str, &'static str),
    Header(&'static str),
    /// Base64 of these bytes, its last character before the padding replaced by the given one (which
    /// sets trailing bits Go ignores), wrapped at this width, with these separators inserted at these
    /// places.
    Body(Vec<u8>, Option<u8>, usize, Vec<(usize, &'static str)>),
    Text(&'static str),
}

const LABELS: &[&str] = &[
    "CERTIFICATE REQUEST",
    "CERTIFICATE",
    "NEW CERTIFICATE REQUEST",
    "",
    "A",
    "CERTIFICATE REQUEST ",
    "CERTIFICATE-REQUEST",
    "A:B",
];
const EOLS: &[&str] = &[
    "\n", "\r\n", "", " \n", "\t\r\n", "\r", "\x0c\n", " x\n", "-----\n", "\n\n",
];
const HEADERS: &[&str] = &[
    "Proc-Type: 4,ENCRYPTED\n",
    "a:b\n",
    " k : v \r\n",
    ":\n",
    "k:\u{a0}v\u{3000}\n",
    "k: \u{85}x\u{2000}\n",
    "a:c\n",
];
const SEPARATORS: &[&str] = &[
    "\n", "\r\n", " ", "\t", "\x0c", "\x0b", "=", "\r", "\n\n", "-", "\u{a0}", "*", ":",
];
const TEXTS: &[&str] = &[
    "",
    "\n",
    "junk\n",
    "-----BEGIN ",
    "\n-----END ",
    "-----",
    "-----BEGIN CERTIFICATE REQUEST-----",
    "\n-----END CERTIFICATE REQUEST-----\n",
    "Zm9v\n",
    "=\n",
    "\r\n",
    "x:y\n",
];

/// Mostly the encoder's own last character; sometimes any base64 character.
fn last_char() -> impl Strategy<Value = Option<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    prop_oneof![2 => Just(None), 1 => prop::sample::select(ALPHABET).prop_map(Some)]
}

fn piece() -> impl Strategy<Value = Piece> {
    let label = prop::sample::select(LABELS);
    let eol = prop::sample::select(EOLS);
    prop_oneof![
        3 => (label.clone(), eol.clone()).prop_map(|(l, e)| Piece::Begin(l, e)),
        3 => (label, eol).prop_map(|(l, e)| Piece::End(l, e)),
        1 => prop::sample::select(HEADERS).prop_map(Piece::Header),
        3 => (
            prop::collection::vec(any::<u8>(), 0..40),
            last_char(),
            prop_oneof![Just(64usize), Just(4), Just(5), Just(1), Just(1000)],
            prop::collection::vec((0usize..80, prop::sample::select(SEPARATORS)), 0..3),
        )
            .prop_map(|(b, l, w, s)| Piece::Body(b, l, w, s)),
        2 => prop::sample::select(TEXTS).prop_map(Piece::Text),
    ]
}

fn render(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Begin(l, e) => out.extend(format!("-----BEGIN {l}-----{e}").as_bytes()),
            Piece::End(l, e) => out.extend(format!("-----END {l}-----{e}").as_bytes()),
            Piece::Header(h) => out.extend(h.as_bytes()),
            Piece::Text(t) => out.extend(t.as_bytes()),
            Piece::Body(bytes, last, width, seps) => {
                let mut encoded = b64(bytes).into_bytes();
                if let (Some(c), Some(i)) = (last, encoded.iter().rposition(|&b| b != b'=')) {
                    encoded[i] = *c;
                }
                let mut body = String::new();
                for chunk in encoded.chunks(*width) {
                    body.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
                    body.push('\n');
                }
                for (at, sep) in seps {
                    let mut i = (*at).min(body.len());
                    while !body.is_char_boundary(i) {
                        i -= 1;
                    }
                    body.insert_str(i, sep);
                }
                out.extend(body.as_bytes());
            }
        }
    }
    out
}

/// A well-formed block of each kind, as the base for byte-level mutations.
fn document() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(piece(), 0..10).prop_map(|p| render(&p))
}

/// A document, then a few single-byte edits: insert, delete or replace, biased to PEM's own bytes.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        Just(b'\n'),
        Just(b'\r'),
        Just(b'-'),
        Just(b' '),
        Just(b'\t'),
        Just(b':'),
        Just(b'='),
        Just(0x0c),
        any::<u8>()
    ];
    (
        document(),
        prop::collection::vec((0u8..3, any::<prop::sample::Index>(), byte), 0..4),
    )
        .prop_map(|(mut doc, edits)| {
            for (op, at, b) in edits {
                let i = at.index(doc.len() + 1);
                match op {
                    0 => doc.insert(i, b),
                    1 if i < doc.len() => {
                        doc.remove(i);
                    }
                    _ if i < doc.len() => doc[i] = b,
                    _ => doc.push(b),
                }
            }
            doc
        })
}

/// A valid block with every framing variation Go tolerates or rejects, then concatenated with others.
fn framed_blocks() -> impl Strategy<Value = Vec<u8>> {
    let block = (
        prop::sample::select(LABELS),
        prop::sample::select(EOLS),
        prop::collection::vec(prop::sample::select(HEADERS), 0..2),
        prop::collection::vec(any::<u8>(), 0..60),
        last_char(),
        prop_oneof![Just(64usize), Just(76), Just(3), Just(10_000)],
        prop::collection::vec((0usize..100, prop::sample::select(SEPARATORS)), 0..2),
        prop::sample::select(LABELS),
        prop::sample::select(EOLS),
    )
        .prop_map(
            |(l, e1, headers, bytes, last, width, seps, end_label, e2)| {
                let mut p = vec![Piece::Begin(l, e1)];
                p.extend(headers.into_iter().map(Piece::Header));
                if !p.is_empty() && matches!(p.last(), Some(Piece::Header(_))) {
                    p.push(Piece::Text("\n"));
                }
                p.push(Piece::Body(bytes, last, width, seps));
                p.push(Piece::End(end_label, e2));
                p
            },
        );
    (
        prop::sample::select(TEXTS),
        prop::collection::vec((block, prop::sample::select(TEXTS)), 1..4),
    )
        .prop_map(|(lead, blocks)| {
            let mut p = vec![Piece::Text(lead)];
            for (b, sep) in blocks {
                p.extend(b);
                p.push(Piece::Text(sep));
            }
            render(&p)
        })
}

fn assert_same(input: &[u8]) -> Result<(), TestCaseError> {
    let go = go_decode(input);
    let ours = rust_decode(input);
    prop_assert_eq!(
        &ours,
        &go,
        "input {:?} (hex {})",
        String::from_utf8_lossy(input),
        hex(input)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_decode_as_go_decodes_them(input in prop::collection::vec(any::<u8>(), 0..300)) {
        assert_same(&input)?;
    }

    #[test]
    fn pem_like_documents_decode_as_go_decodes_them(input in document()) {
        assert_same(&input)?;
    }

    #[test]
    fn mutated_documents_decode_as_go_decodes_them(input in mutated()) {
        assert_same(&input)?;
    }

    #[test]
    fn framed_blocks_decode_as_go_decodes_them(input in framed_blocks()) {
        assert_same(&input)?;
    }
}

/// A real request's DER, with a subject that tells the two apart.
fn request_der(cn: &str) -> Vec<u8> {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509NameBuilder, X509ReqBuilder};
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group"))
            .expect("key"),
    )
    .expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("cn");
    let mut b = X509ReqBuilder::new().expect("builder");
    b.set_subject_name(&name.build()).expect("subject");
    b.set_pubkey(&key).expect("pubkey");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    b.build().to_der().expect("der")
}

fn wrapped(der: &[u8]) -> String {
    let mut s = String::new();
    for c in b64(der).as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(c).expect("ascii"));
        s.push('\n');
    }
    s
}

/// The named cases: each must read as Go reads it (checked against Go here too), and the expectation
/// is written out so that a reader agreeing with a broken Go build would still fail.
#[test]
fn named_cases_pick_the_block_go_picks() {
    let unreviewed = request_der("unreviewed");
    let reviewed = request_der("reviewed");
    let u = wrapped(&unreviewed);
    let r = wrapped(&reviewed);
    let second =
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{r}-----END CERTIFICATE REQUEST-----\n");
    // (name, input, the DER Go finds, or None)
    let cases: Vec<(&str, String, Option<&[u8]>)> = vec![
        (
            "BEGIN line not ended by a newline, then a good block",
            format!("-----BEGIN CERTIFICATE REQUEST-----{u}-----END CERTIFICATE REQUEST-----\n{second}"),
            Some(&reviewed),
        ),
        (
            "form feed inside the base64, then a good block",
            format!("-----BEGIN CERTIFICATE REQUEST-----\n\x0c{u}-----END CERTIFICATE REQUEST-----\n{second}"),
            Some(&reviewed),
        ),
        (
            "spaces and tabs inside the base64 are ignored",
            format!("-----BEGIN CERTIFICATE REQUEST-----\n \t{}\t \n{}-----END CERTIFICATE REQUEST-----\n", &u[..10], &u[10..]),
            Some(&unreviewed),
        ),
        (
            "CR/LF line ends",
            format!("-----BEGIN CERTIFICATE REQUEST-----\r\n{}-----END CERTIFICATE REQUEST-----\r\n", u.replace('\n', "\r\n")),
            Some(&unreviewed),
        ),
        (
            "text before and after",
            format!("hello\n-----BEGIN CERTIFICATE REQUEST-----\n{u}-----END CERTIFICATE REQUEST-----\ntrailing"),
            Some(&unreviewed),
        ),
        (
            "BEGIN not at the start of a line is not a block",
            format!("x-----BEGIN CERTIFICATE REQUEST-----\n{u}-----END CERTIFICATE REQUEST-----\n{second}"),
            Some(&reviewed),
        ),
        (
            "END type differs, then a good block",
            format!("-----BEGIN CERTIFICATE REQUEST-----\n{u}-----END CERTIFICATE-----\n{second}"),
            Some(&reviewed),
        ),
        (
            "missing END",
            format!("-----BEGIN CERTIFICATE REQUEST-----\n{u}"),
            None,
        ),
        (
            "garbage after END on the same line, then a good block",
            format!("-----BEGIN CERTIFICATE REQUEST-----\n{u}-----END CERTIFICATE REQUEST----- x\n{second}"),
            Some(&reviewed),
        ),
        (
            "bad base64 padding, then a good block",
            format!("-----BEGIN CERTIFICATE REQUEST-----\n{u}=\n-----END CERTIFICATE REQUEST-----\n{second}"),
            Some(&reviewed),
        ),
        (
            "a repeated BEGIN line: the last one before END counts",
            format!("-----BEGIN CERTIFICATE REQUEST-----\n{u}-----BEGIN CERTIFICATE REQUEST-----\n{r}-----END CERTIFICATE REQUEST-----\n"),
            Some(&reviewed),
        ),
    ];
    for (name, input, want) in &cases {
        let go = go_decode(input.as_bytes());
        assert_eq!(rust_decode(input.as_bytes()), go, "{name}: differs from Go");
        let (block, _) = csr_signer::pem::decode(input.as_bytes());
        assert_eq!(
            block.map(|b| b.bytes).as_deref(),
            *want,
            "{name}: not the block expected"
        );
    }
}

#[test]
fn headers_are_read_as_go_reads_them() {
    let input = b"-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\n k : v : w \r\nk2:\xc2\xa0v\xc2\xa0\n\nQUJD\n-----END X-----\n";
    assert_eq!(rust_decode(input), go_decode(input));
    let (b, _) = csr_signer::pem::decode(input);
    let b = b.expect("block");
    assert_eq!(b.headers.len(), 3);
    assert_eq!(b.headers[&b"k".to_vec()], b"v : w");
    assert_eq!(b.headers[&b"k2".to_vec()], b"v");
}
