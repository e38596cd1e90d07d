//! Property tests over parse + policy + issue: arbitrary bytes, and valid requests mutated byte by
//! byte, never panic; anything that is issued verifies with OpenSSL. Case counts are fixed so the run
//! is bounded (PROPTEST_CASES raises them for a longer local run).

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
        Fixture { ca, engine, der }
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
}
