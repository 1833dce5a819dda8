//! One full issuance (proof check + leaf signing + PEM) per subject key type and proof format,
//! with a P-256 CA, beside the raw cost of the same verify and sign operations.
//!
//! `cargo bench -p signer-core --bench issuance`; `scripts/bench-table` turns the results into
//! the table in docs/performance.md. Inputs are the Go-made kubelet fixtures in `tests/fixtures`.

// Tests assert; the crate's no-assertion rule (clippy.toml) is for its library code.
#![allow(clippy::disallowed_macros)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};
use signer_core::signature::{Digest, SignatureScheme};
use signer_core::*;

#[derive(serde::Deserialize)]
struct Fixture {
    key_type: String,
    supported: bool,
    pod_uid: String,
    spki_der: String,
    proof: String,
    stub_csr_der: String,
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn fixtures() -> Vec<Fixture> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/kubelet-keys.json"
    );
    let all: Vec<Fixture> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    all.into_iter().filter(|f| f.supported).collect()
}

fn request(f: &Fixture, key_material: KeyMaterial) -> Request {
    Request {
        namespace: "payments".into(),
        pod_uid: f.pod_uid.clone(),
        service_account_name: "api".into(),
        max_expiration_seconds: 86_400,
        unverified_user_annotations: BTreeMap::new(),
        key_material,
    }
}

fn benches(c: &mut Criterion) {
    let policy = Policy::new(&PolicyConfig::default()).unwrap();
    let pem = CaPem::generate(
        CaKeyType::EcdsaP256,
        policy.trust_domain(),
        Duration::from_secs(86_400 * 365),
        SystemTime::now(),
    )
    .unwrap();
    let root = Ca::from_pem(&pem.cert_pem, &pem.key_pem, None).unwrap();
    // Leaves are signed by the leader's signing intermediate, as in production.
    let profile = CaProfile::new(policy.trust_domain().clone());
    let week = Duration::from_secs(86_400 * 7);
    let ca = root
        .sign_intermediate(&profile, week, SystemTime::now())
        .unwrap();
    let signer = Signer::new(Arc::new(policy), Arc::new(ca));
    // An intermediate rotation: a new P-256 key and a certificate signed by the root.
    c.bench_function("intermediate/new/ECDSAP256", |b| {
        b.iter(|| {
            root.sign_intermediate(black_box(&profile), week, SystemTime::now())
                .unwrap()
        })
    });

    for f in fixtures() {
        let spki = b64(&f.spki_der);
        let proof = b64(&f.proof);
        let pkix = request(
            &f,
            KeyMaterial::Pkix {
                spki_der: spki.clone(),
                proof: proof.clone(),
            },
        );
        let csr = request(
            &f,
            KeyMaterial::StubCsr {
                der: b64(&f.stub_csr_der),
            },
        );
        for (format, req) in [("pkix", &pkix), ("csr", &csr)] {
            assert!(matches!(
                signer.decide(req, SystemTime::now()),
                Ok(Decision::Issue(_))
            ));
            c.bench_function(&format!("issue/{}/{format}", f.key_type), |b| {
                b.iter(|| signer.decide(black_box(req), SystemTime::now()).unwrap())
            });
        }

        // The raw proof check: one library verify of the pod-UID signature.
        let key = SubjectKey::from_spki_der(&spki).unwrap();
        let scheme = match key.key_type() {
            KeyType::Ed25519 => SignatureScheme::Ed25519,
            KeyType::Rsa3072 | KeyType::Rsa4096 => SignatureScheme::RsaPssSha256AnySalt,
            _ => SignatureScheme::Ecdsa(Digest::Sha256),
        };
        key.verify(scheme, f.pod_uid.as_bytes(), &proof).unwrap();
        c.bench_function(&format!("raw-verify/{}/pkix", f.key_type), |b| {
            b.iter(|| {
                key.verify(scheme, black_box(f.pod_uid.as_bytes()), black_box(&proof))
                    .unwrap()
            })
        });
    }

    // The raw leaf signature: ECDSA P-256 over a TBSCertificate-sized message.
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let ca_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
    let tbs = vec![0x5au8; 450];
    c.bench_function("raw-sign/ECDSAP256", |b| {
        b.iter(|| ca_key.sign(&rng, black_box(&tbs)).unwrap())
    });
}

criterion_group! {
    name = issuance;
    config = Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(issuance);
