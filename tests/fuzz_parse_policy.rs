//! Property tests over parse + policy + issue: arbitrary bytes, and valid requests mutated byte by
//! byte, never panic; anything that is issued verifies with OpenSSL; arbitrary name patterns are
//! refused at load naming the key, or never give one name to two identities. Case counts are fixed
//! so the run is bounded (PROPTEST_CASES raises them for a longer local run).

mod support;

use std::sync::OnceLock;
use std::time::SystemTime;

use base64::Engine as _;
use csr_signer::ca_init::KeyType;
use csr_signer::engine::{Decision, Engine};
use proptest::prelude::*;
use support::*;

struct Fixture {
    ca: TestCa,
    engine: Engine,
    der: Vec<Vec<u8>>,
    key: openssl::pkey::PKey<openssl::pkey::Private>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ca = TestCa::new(KeyType::P256);
        let engine = ca.engine("sans: {dns: [\"*.example.com\"], ip: true, email: true}, subject: {commonNames: [\"*\"]}");
        let der = [KeyType::P256, KeyType::Ed25519, KeyType::Rsa2048]
            .into_iter()
            .map(|k| {
                CsrSpec::new(key(k), &[("CN", "svc"), ("O", "org")])
                    .sans(&["DNS:a.example.com", "IP:10.0.0.1", "email:a@example.com"])
                    .build()
                    .to_der()
                    .expect("der")
            })
            .collect();
        Fixture {
            ca,
            engine,
            der,
            key: key(KeyType::P256),
        }
    })
}

fn pem(der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
        .into_bytes()
}

fn check(request: &[u8], usages: &[String], expiration: Option<i32>) {
    let f = fixture();
    let signer = f.engine.signer("example.com/mtls").expect("signer");
    match signer.sign(&request_for(request, usages, expiration), SystemTime::now()) {
        Ok(Decision::Issued(i)) => {
            verify_with_store(&i.certificate_pem, &f.ca.root_x509())
                .expect("whatever is issued verifies");
        }
        Ok(Decision::Refused(r)) => assert!(!r.message.is_empty()),
        Err(e) => panic!("a request must never cause a transient error: {e}"),
    }
}

fn request_for<'a>(
    pem: &'a [u8],
    usages: &'a [String],
    expiration: Option<i32>,
) -> csr_signer::engine::SignRequest<'a> {
    request(pem, usages, expiration, "anyone")
}

fn usages() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(vec![
            "digital signature",
            "key encipherment",
            "client auth",
            "server auth",
            "cert sign",
            "any",
            "bogus",
            "",
        ])
        .prop_map(String::from),
        0..5,
    )
}

/// Patterns that make ambiguous ones likely: free sequences of pieces, and two placeholders parted
/// by `-`, `.`, nothing or a mix, between random pieces.
fn pattern() -> impl Strategy<Value = String> {
    let piece =
        || prop::sample::select(vec!["{namespace}", "{serviceaccount}", "*", "a", ".", "-"]);
    let placeholder = || prop::sample::select(vec!["{namespace}", "{serviceaccount}"]);
    let joiner = prop::sample::select(vec!["-", ".", "", "a-", "-a.", ".a"]);
    prop_oneof![
        prop::collection::vec(piece(), 1..6).prop_map(|pieces| pieces.concat()),
        (
            prop::collection::vec(piece(), 0..2),
            placeholder(),
            joiner,
            placeholder(),
            prop::collection::vec(piece(), 0..2),
        )
            .prop_map(|(pre, a, j, b, post)| format!(
                "{}{a}{j}{b}{}",
                pre.concat(),
                post.concat()
            )),
    ]
}

/// Kubernetes-like names with the characters that make expansions collide.
const NAMES: [&str; 7] = ["a", "b", "a-b", "b-a", "a.b", "b.a", "a-a.b"];

/// `pattern` filled for namespace `ns` and service account `sa`, `*` as `a`.
fn expand(pattern: &str, ns: &str, sa: &str) -> String {
    pattern
        .replace("{namespace}", ns)
        .replace("{serviceaccount}", sa)
        .replace('*', "a")
}

/// Asks `engine` for a certificate naming `dns` on behalf of service account `ns`/`sa`.
fn ask_dns(engine: &Engine, dns: &str, ns: &str, sa: &str) -> Option<String> {
    let pem = CsrSpec::new(fixture().key.clone(), &[])
        .sans(&[&format!("DNS:{dns}")])
        .pem();
    let usages = strings(&["digital signature", "client auth"]);
    let username = format!("system:serviceaccount:{ns}:{sa}");
    let signer = engine.signer("example.com/mtls").expect("signer");
    match signer.sign(&request(&pem, &usages, None, &username), SystemTime::now()) {
        Ok(Decision::Issued(i)) => {
            verify_with_store(&i.certificate_pem, &fixture().ca.root_x509())
                .expect("whatever is issued verifies");
            Some(i.certificate_pem)
        }
        Ok(Decision::Refused(r)) => {
            assert!(!r.message.is_empty());
            None
        }
        Err(e) => panic!("a request must never cause a transient error: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), us in usages(), exp in any::<Option<i32>>()) {
        check(&bytes, &us, exp);
        check(&pem(&bytes), &us, exp);
    }

    #[test]
    fn mutated_requests_never_panic(which in 0usize..3, edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<Option<prop::sample::Index>>(), us in usages()) {
        let mut der = fixture().der[which].clone();
        for (i, b) in edits {
            let i = i.index(der.len());
            der[i] = b;
        }
        if let Some(c) = cut {
            der.truncate(c.index(der.len()));
        }
        check(&pem(&der), &us, Some(3600));
    }

    #[test]
    fn valid_requests_with_arbitrary_asks_never_panic(which in 0usize..3, us in usages(), exp in any::<Option<i32>>()) {
        check(&pem(&fixture().der[which]), &us, exp);
    }

    /// A DNS pattern either stops loading naming its key, or the name it gives one service account
    /// is refused to every other service account whose expansion of the pattern is the same name.
    #[test]
    fn patterns_are_refused_at_load_or_name_one_identity(
        p in pattern(),
        na in prop::sample::select(NAMES.to_vec()),
        sa in prop::sample::select(NAMES.to_vec()),
    ) {
        let yaml = format!(
            "sans: {{dns: [{}]}}, subject: {{commonNames: []}}",
            serde_json::to_string(&p).expect("json")
        );
        let settings = match csr_signer::config::Settings::from_yaml(&fixture().ca.settings_yaml(&yaml), "fuzz.yaml") {
            Ok(s) => s,
            Err(e) => {
                let e = e.to_string();
                prop_assert!(e.starts_with("fuzz.yaml: signers[0].policy.sans.dns[0]: "), "{e}");
                return Ok(());
            }
        };
        let engine = Engine::from_settings(&settings).expect("engine");
        let value = expand(&p, na, sa);
        if ask_dns(&engine, &value, na, sa).is_none() {
            return Ok(());
        }
        let uses_ns = p.contains("{namespace}");
        let uses_sa = p.contains("{serviceaccount}");
        for nb in NAMES {
            for sb in NAMES {
                let other = (uses_ns && nb != na) || (uses_sa && sb != sa);
                if other && expand(&p, nb, sb) == value {
                    prop_assert!(
                        ask_dns(&engine, &value, nb, sb).is_none(),
                        "{p}: {value} for {na}/{sa} and for {nb}/{sb}"
                    );
                }
            }
        }
    }
}
