//! The fuzz targets' checks in the normal test command: over the committed seed corpus, and
//! as property tests over random and mutated inputs. `cargo fuzz` explores far more; these
//! keep every build honest.

use std::path::PathBuf;

use podcert_fuzz::{ca_pem, pkix, pkix_input, status_builder, stub_csr};
use podcert_tests::fixtures::{intermediate_ca_pem, kubelet_keys};
use proptest::prelude::*;

fn status(data: &[u8]) {
    status_builder(data);
}

/// A target's name (its corpus directory) and its check.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 4] = [
    ("stub_csr", stub_csr),
    ("pkix", pkix),
    ("ca_pem", ca_pem),
    ("status_builder", status),
];

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn every_seed_of_every_target_holds() {
    for (target, check) in TARGETS {
        let seeds = seeds(target);
        assert!(seeds.len() >= 4, "{target}: {} seeds", seeds.len());
        for seed in &seeds {
            check(seed);
        }
    }
}

/// The seeds reach the deep paths: some are issued, not all are refused at the first byte.
#[test]
fn the_seeds_reach_issuance() {
    use podcert_tests::fixtures::decide;
    use signer_core::{Decision, KeyMaterial};
    let issued = seeds("stub_csr")
        .into_iter()
        .filter(|der| {
            matches!(
                decide("uid", KeyMaterial::StubCsr { der: der.clone() }),
                Decision::Issue(_)
            )
        })
        .count();
    assert!(issued >= 6, "{issued} stub CSR seeds issued");
    let judged = seeds("status_builder")
        .iter()
        .filter(|s| status_builder(s))
        .count();
    assert_eq!(
        judged,
        seeds("status_builder").len(),
        "every status seed is a storable PCR"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bytes_hold_for_every_target(data in prop::collection::vec(any::<u8>(), 0..1500)) {
        for (_, check) in TARGETS {
            check(&data);
        }
    }

    #[test]
    fn mutated_seeds_hold(target in 0..TARGETS.len(), pick in any::<prop::sample::Index>(),
                          edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let (name, check) = TARGETS[target];
        let seeds = seeds(name);
        let mut data = pick.get(&seeds).clone();
        if !data.is_empty() {
            for (at, byte) in edits {
                let i = at.index(data.len());
                data[i] = byte;
            }
        }
        check(&data);
    }
}

/// Writes the seed corpus: `cargo test -p podcert-fuzz --test properties -- --ignored`.
#[test]
#[ignore = "regenerates fuzz/corpus; run by hand"]
fn regenerate_seed_corpus() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    for k in kubelet_keys() {
        let name = k.key_type.to_lowercase();
        write("stub_csr", &format!("{name}-empty"), &k.stub_csr_der);
        write(
            "stub_csr",
            &format!("{name}-non-empty"),
            &k.non_empty_csr_der,
        );
        write(
            "pkix",
            &name,
            &pkix_input(&k.pod_uid, &k.spki_der, &k.proof),
        );
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        for (version, spec) in [
            (
                "v1beta1",
                serde_json::json!({"pkixPublicKey": b64(&k.spki_der), "proofOfPossession": b64(&k.proof)}),
            ),
            (
                "v1",
                serde_json::json!({"stubPKCS10Request": b64(&k.stub_csr_der)}),
            ),
        ] {
            let mut pcr = serde_json::json!({
                "apiVersion": format!("certificates.k8s.io/{version}"), "kind": "PodCertificateRequest",
                "metadata": {"name": "req-1", "namespace": "ns", "uid": "11111111-2222-4333-8444-555555555555",
                             "resourceVersion": "7", "generation": 1, "creationTimestamp": "2026-11-21T00:00:00Z"},
                "spec": {"signerName": "example.com/spiffe", "podName": "p", "podUID": k.pod_uid,
                         "serviceAccountName": "sa", "serviceAccountUID": "sau", "nodeName": "n", "nodeUID": "nu",
                         "maxExpirationSeconds": 86400, "unverifiedUserAnnotations": {"example.com/a": "b"}}
            });
            pcr["spec"]
                .as_object_mut()
                .unwrap()
                .extend(spec.as_object().unwrap().clone());
            write(
                "status_builder",
                &format!("{name}-{version}.json"),
                &serde_json::to_vec_pretty(&pcr).unwrap(),
            );
        }
    }
    let (crt, key, roots) = intermediate_ca_pem("seed");
    write(
        "ca_pem",
        "intermediate",
        format!("{crt}\0{key}\0{roots}").as_bytes(),
    );
    for (i, case) in podcert_tests::secrets::broken_ca_keys()
        .iter()
        .step_by(7)
        .enumerate()
    {
        write(
            "ca_pem",
            &format!("broken-key-{i}"),
            format!("{crt}\0{}", case.text).as_bytes(),
        );
    }
}
