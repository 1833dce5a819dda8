//! What keeping the root key in a PKCS#11 token (a real SoftHSM2) costs: an intermediate
//! rotation (a new key in memory and a certificate the root signs) with the root key in the
//! token and in memory, and a leaf issuance under each intermediate — which must not differ,
//! since leaves are signed by the intermediate's key, in memory, either way.
//!
//! `cargo bench -p podcert-signer --bench root_in_token` (needs `softhsm2`, as the tests).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use podcert_signer::{Pin, RootKeys, Token, TokenConfig};
use podcert_tests::fixtures::kubelet_keys;
use podcert_tests::softhsm::TestToken;
use signer_core::*;

fn benches(c: &mut Criterion) {
    let token = TestToken::new("bench");
    let in_token = RootKeys::Token(
        Token::open(TokenConfig {
            module: token.module.clone(),
            token_label: token.label.clone(),
            key_label: "bench-root".into(),
            pin: Pin::new(token.pin.clone()),
        })
        .unwrap(),
    );
    let policy = Arc::new(Policy::new(&PolicyConfig::default()).unwrap());
    let profile = CaProfile::new(policy.trust_domain().clone());
    let year = Duration::from_secs(86_400 * 365);
    let week = Duration::from_secs(86_400 * 7);
    let key = kubelet_keys()
        .into_iter()
        .find(|k| k.key_type == "ECDSAP256")
        .unwrap();
    let request = Request {
        namespace: "payments".into(),
        pod_uid: key.pod_uid.clone(),
        service_account_name: "api".into(),
        max_expiration_seconds: 86_400,
        unverified_user_annotations: BTreeMap::new(),
        key_material: KeyMaterial::Pkix {
            spki_der: key.spki_der.clone(),
            proof: key.proof.clone(),
        },
    };
    for (name, keys) in [("memory", RootKeys::Secret), ("softhsm2", in_token)] {
        let root = keys.generate(&profile, year, SystemTime::now()).unwrap();
        c.bench_function(&format!("intermediate/new/root-in-{name}"), |b| {
            b.iter(|| {
                root.ca
                    .sign_intermediate(black_box(&profile), week, SystemTime::now())
                    .unwrap()
            })
        });
        let intermediate = root
            .ca
            .sign_intermediate(&profile, week, SystemTime::now())
            .unwrap();
        let signer = Signer::new(policy.clone(), Arc::new(intermediate));
        assert!(matches!(
            signer.decide(&request, SystemTime::now()),
            Ok(Decision::Issue(_))
        ));
        c.bench_function(&format!("issue/ECDSAP256/root-in-{name}"), |b| {
            b.iter(|| {
                signer
                    .decide(black_box(&request), SystemTime::now())
                    .unwrap()
            })
        });
    }
}

criterion_group! {
    name = root_in_token;
    config = Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(root_in_token);
