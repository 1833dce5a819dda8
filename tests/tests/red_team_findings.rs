//! The red team's findings, one test each, judged where it matters by Go's `crypto/x509` (the
//! API server's and the kubelet's parser). Finding 1, the CA key in the logs, is
//! `ca_key_secrecy.rs` here and `no_byte_of_a_broken_ca_key_reaches_the_logs_...` end to end.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use num_bigint::BigUint;
use podcert_tests::fixtures::{decide, kubelet_keys};
use podcert_tests::oracles::{go_make_csrs, go_read_csrs, openssl};
use signer_core::*;
use x509_cert::der::asn1::{Any, BitString, ObjectIdentifier, SetOfVec, Uint};
use x509_cert::der::{Decode, Encode, Tag};
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
use x509_cert::request::{CertReq, CertReqInfo, Version};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

fn csr_decision(der: &[u8]) -> Decision {
    decide("uid", KeyMaterial::StubCsr { der: der.to_vec() })
}

#[track_caller]
fn assert_denied(decision: Decision, reason: DenyReason, says: &str) {
    match decision {
        Decision::Deny(d) => {
            assert_eq!(d.reason, reason, "{}", d.message);
            assert!(
                d.message.contains(says),
                "{:?} does not say {says:?}",
                d.message
            );
        }
        Decision::Issue(i) => panic!("issued {} where {reason} was due", i.spiffe_id),
    }
}

fn p256() -> (EcdsaKeyPair, Vec<u8>) {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
    (key, pkcs8.as_ref().to_vec())
}

fn p256_spki(key: &EcdsaKeyPair) -> Vec<u8> {
    use aws_lc_rs::encoding::AsDer;
    key.public_key().as_der().unwrap().as_ref().to_vec()
}

fn sign(key: &EcdsaKeyPair, message: &[u8]) -> Vec<u8> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    key.sign(&rng, message).unwrap().as_ref().to_vec()
}

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// A CSR over `info`, validly signed by `key` with ECDSA-SHA256: whatever it carries, it comes
/// from the key holder.
fn signed_csr(key: &EcdsaKeyPair, info: CertReqInfo) -> Vec<u8> {
    csr_over(key, info.to_der().unwrap())
}

/// A CSR whose CertificationRequestInfo is the bytes `info_der`, whatever they are, signed by
/// `key` with ECDSA-SHA256.
fn csr_over(key: &EcdsaKeyPair, info_der: Vec<u8>) -> Vec<u8> {
    let signature = sign(key, &info_der);
    let mut body = info_der;
    let algorithm = AlgorithmIdentifierOwned {
        oid: ECDSA_WITH_SHA256,
        parameters: None,
    };
    body.extend(algorithm.to_der().unwrap());
    body.extend(BitString::from_bytes(&signature).unwrap().to_der().unwrap());
    Any::new(Tag::Sequence, body).unwrap().to_der().unwrap()
}

fn empty_info(spki_der: &[u8]) -> CertReqInfo {
    CertReqInfo {
        version: Version::V1,
        subject: RdnSequence(Vec::new()),
        public_key: SubjectPublicKeyInfoOwned::from_der(spki_der).unwrap(),
        attributes: SetOfVec::new(),
    }
}

#[test]
fn our_csr_builder_makes_csrs_we_issue_and_go_admits() {
    let (key, _) = p256();
    let der = signed_csr(&key, empty_info(&p256_spki(&key)));
    assert!(matches!(csr_decision(&der), Decision::Issue(_)));
    assert!(go_read_csrs(&[der])[0].admitted_and_empty());
}

/// Finding 2: a subject of an empty RDN followed by `CN=admin` reads as empty to a parser
/// that stops at the empty RDN; Go reads two RDNs. So do we, and deny it.
#[test]
fn finding_2_an_empty_rdn_before_cn_admin_is_not_an_empty_subject() {
    let (key, _) = p256();
    let mut info = empty_info(&p256_spki(&key));
    let cn = x509_cert::attr::AttributeTypeAndValue {
        oid: ObjectIdentifier::new_unwrap("2.5.4.3"),
        value: Any::new(Tag::Utf8String, b"admin".to_vec()).unwrap(),
    };
    info.subject = RdnSequence(vec![
        RelativeDistinguishedName(SetOfVec::new()),
        RelativeDistinguishedName(SetOfVec::try_from(vec![cn]).unwrap()),
    ]);
    let der = signed_csr(&key, info);
    let go = &go_read_csrs(std::slice::from_ref(&der))[0];
    assert_eq!((go.error.as_str(), go.rdns), ("", 2), "{go:?}");
    assert_denied(
        csr_decision(&der),
        DenyReason::InvalidStubPKCS10Request,
        "empty subject",
    );
}

/// Finding 3: an SPKI with an element after its key bits hit a debug assertion. Now it is a
/// denial, in the pkix form and inside a validly signed CSR.
#[test]
fn finding_3_an_spki_with_an_extra_element_is_denied_without_a_panic() {
    let (key, _) = p256();
    let spki = p256_spki(&key);
    assert_eq!(spki[1] as usize, spki.len() - 2, "short-form length");
    let mut extended = vec![0x30, spki[1] + 2];
    extended.extend_from_slice(&spki[2..]);
    extended.extend_from_slice(&[0x05, 0x00]); // NULL after the BIT STRING
    let proof = sign(&key, b"uid");
    assert_denied(
        decide(
            "uid",
            KeyMaterial::Pkix {
                spki_der: extended.clone(),
                proof,
            },
        ),
        DenyReason::UnsupportedKeyType,
        "not valid DER",
    );
    // The same key inside a CSR, signed over exactly those bytes.
    let mut info_der = empty_info(&spki).to_der().unwrap();
    let at = info_der
        .windows(spki.len())
        .position(|w| w == spki.as_slice())
        .unwrap();
    info_der.splice(at..at + spki.len(), extended.iter().copied());
    info_der[1] += 2; // the info SEQUENCE's short-form length
    assert_denied(
        csr_decision(&csr_over(&key, info_der)),
        DenyReason::InvalidStubPKCS10Request,
        "not a valid DER PKCS#10",
    );
}

fn rsa_spki(modulus: &BigUint, exponent: u64) -> Vec<u8> {
    let mut numbers = x509_cert::der::asn1::SequenceOf::<Uint, 2>::new();
    numbers
        .add(Uint::new(&modulus.to_bytes_be()).unwrap())
        .unwrap();
    numbers
        .add(Uint::new(&exponent.to_be_bytes()).unwrap())
        .unwrap();
    SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1"),
            parameters: Some(Any::null()),
        },
        subject_public_key: BitString::from_bytes(&numbers.to_der().unwrap()).unwrap(),
    }
    .to_der()
    .unwrap()
}

fn openssl_prime(bits: u32) -> BigUint {
    let hex = openssl(
        &["prime", "-generate", "-bits", &bits.to_string(), "-hex"],
        b"",
    );
    BigUint::parse_bytes(String::from_utf8(hex).unwrap().trim().as_bytes(), 16).unwrap()
}

/// Finding 4: keys with exponent 3 or 2^32+1 (which Go's crypto/rsa refuses), with valid
/// proofs, were certified; so were moduli anyone can factor.
#[test]
fn finding_4_weak_rsa_keys_are_refused_with_the_rule_they_break() {
    for e in ["3", "4294967297"] {
        let (spki, proof) = podcert_tests::oracles::openssl_rsa(3072, e, "uid");
        assert_denied(
            decide(
                "uid",
                KeyMaterial::Pkix {
                    spki_der: spki,
                    proof,
                },
            ),
            DenyReason::UnsupportedKeyType,
            &format!("RSA public exponent {e} is not accepted"),
        );
    }
    // A good key from the same tool is issued, so the refusals above are about the exponent.
    let (spki, proof) = podcert_tests::oracles::openssl_rsa(3072, "65537", "uid");
    assert!(matches!(
        decide(
            "uid",
            KeyMaterial::Pkix {
                spki_der: spki,
                proof
            }
        ),
        Decision::Issue(_)
    ));

    // Moduli anyone can factor at a glance are refused whatever the proof.
    let prime = openssl_prime(3072);
    let one = BigUint::from(1u8);
    let two_to_3071: BigUint = BigUint::from(1u8) << 3071usize;
    for (modulus, says) in [
        (&prime - &one, "is even"),
        (((&two_to_3071 / 3u8) | &one) * 3u8, "divisible by 3"),
    ] {
        assert_eq!(modulus.bits(), 3072);
        assert_denied(
            decide(
                "uid",
                KeyMaterial::Pkix {
                    spki_der: rsa_spki(&modulus, 65_537),
                    proof: vec![1; 384],
                },
            ),
            DenyReason::UnsupportedKeyType,
            says,
        );
    }
    // A prime modulus costs a modular exponentiation to detect, so that check runs only for a
    // requester who proved possession (rsa.rs tests it on OpenSSL-made primes); a stranger's
    // prime modulus with a forged proof is turned away by the proof.
    assert_denied(
        decide(
            "uid",
            KeyMaterial::Pkix {
                spki_der: rsa_spki(&prime, 65_537),
                proof: vec![1; 384],
            },
        ),
        DenyReason::InvalidProofOfPossession,
        "not a valid RSA3072 signature",
    );
}

/// Finding 5: ECDSA CSRs signed with SHA-512 on P-256 and P-384 were denied, though Go and the
/// API server admit them. Every algorithm Go writes for each key type is issued now.
#[test]
fn finding_5_every_signature_algorithm_go_admits_is_issued() {
    let keys: Vec<_> = kubelet_keys().into_iter().filter(|k| k.supported).collect();
    let mut cases: Vec<(&[u8], &str)> = Vec::new();
    for k in &keys {
        let algs: &[&str] = match k.key_type.as_str() {
            "ED25519" => &["Ed25519"],
            "ECDSAP256" | "ECDSAP384" | "ECDSAP521" => {
                &["ECDSA-SHA256", "ECDSA-SHA384", "ECDSA-SHA512"]
            }
            _ => &[
                "SHA256-RSA",
                "SHA384-RSA",
                "SHA512-RSA",
                "SHA256-RSAPSS",
                "SHA384-RSAPSS",
                "SHA512-RSAPSS",
            ],
        };
        cases.extend(algs.iter().map(|a| (k.pkcs8_der.as_slice(), *a)));
    }
    let csrs = go_make_csrs(&cases);
    let readings = go_read_csrs(&csrs);
    for (((_, alg), der), go) in cases.iter().zip(&csrs).zip(&readings) {
        assert!(go.admitted_and_empty(), "{alg}: {go:?}");
        match csr_decision(der) {
            Decision::Issue(_) => {}
            Decision::Deny(d) => panic!("{alg}: denied {}: {}", d.reason, d.message),
        }
    }
}

/// Finding 5, second half: algorithm parameters were compared by tag number only, so a
/// context-specific `[5]` passed for NULL. And SHA-1 is refused by name.
#[test]
fn finding_5_parameters_are_compared_whole_and_sha1_is_named() {
    let rsa = kubelet_keys()
        .into_iter()
        .find(|k| k.key_type == "RSA3072")
        .unwrap();
    let ec = kubelet_keys()
        .into_iter()
        .find(|k| k.key_type == "ECDSAP256")
        .unwrap();
    let csrs = go_make_csrs(&[
        (rsa.pkcs8_der.as_slice(), "SHA256-RSA"),
        (ec.pkcs8_der.as_slice(), "ECDSA-SHA256"),
    ]);
    let with_algorithm = |der: &[u8], oid: &str, parameters: Option<Any>| {
        let mut req = CertReq::from_der(der).unwrap();
        req.algorithm = AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap(oid),
            parameters,
        };
        req.to_der().unwrap()
    };
    let context_5 = Any::new(
        Tag::ContextSpecific {
            constructed: false,
            number: x509_cert::der::TagNumber::new(5),
        },
        Vec::new(),
    )
    .unwrap();
    assert_denied(
        csr_decision(&with_algorithm(
            &csrs[0],
            "1.2.840.113549.1.1.11",
            Some(context_5),
        )),
        DenyReason::InvalidStubPKCS10Request,
        "must have NULL or absent parameters, but has a CONTEXT-SPECIFIC [5]",
    );
    // NULL and absent are both fine for PKCS#1 v1.5 (RFC 4055 allows either).
    assert!(matches!(
        csr_decision(&with_algorithm(&csrs[0], "1.2.840.113549.1.1.11", None)),
        Decision::Issue(_)
    ));
    assert_denied(
        csr_decision(&with_algorithm(&csrs[1], "1.2.840.10045.4.1", None)),
        DenyReason::InvalidStubPKCS10Request,
        "uses SHA-1",
    );
}

/// Finding 6: an empty pod UID with a proof over the empty string was issued.
#[test]
fn finding_6_an_empty_pod_uid_is_denied() {
    let (key, _) = p256();
    let spki_der = p256_spki(&key);
    let proof = sign(&key, b"");
    assert_denied(
        decide("", KeyMaterial::Pkix { spki_der, proof }),
        DenyReason::InvalidIdentity,
        "spec.podUID is empty",
    );
    assert_denied(
        decide(
            "",
            KeyMaterial::StubCsr {
                der: signed_csr(&key, empty_info(&p256_spki(&key))),
            },
        ),
        DenyReason::InvalidIdentity,
        "spec.podUID is empty",
    );
}

/// Finding 6, second half: a template under which two workloads share an ID is refused when
/// the signer is configured (unit tests in `spiffe.rs` cover the rule's cases).
#[test]
fn finding_6_an_ambiguous_spiffe_id_template_is_refused() {
    let config = PolicyConfig {
        spiffe_id_template: "spiffe://{trust_domain}/{namespace}-{service_account}".into(),
        ..PolicyConfig::default()
    };
    let err = Policy::new(&config).unwrap_err().to_string();
    assert!(err.contains("ambiguous"), "{err}");
}

/// Beyond the findings: key material larger than the API allows is denied before it is
/// parsed, whoever wrote it.
#[test]
fn key_material_over_the_api_limit_is_denied_before_parsing() {
    let k = kubelet_keys()
        .into_iter()
        .find(|k| k.key_type == "ECDSAP256")
        .unwrap();
    let mut csr = k.stub_csr_der.clone();
    csr.resize(10 * 1024 + 1, 0);
    assert_denied(
        csr_decision(&csr),
        DenyReason::InvalidKeyMaterial,
        "spec.stubPKCS10Request is 10241 bytes",
    );
    let mut proof = k.proof.clone();
    proof.resize(10 * 1024 + 1, 0);
    assert_denied(
        decide(
            &k.pod_uid,
            KeyMaterial::Pkix {
                spki_der: k.spki_der.clone(),
                proof,
            },
        ),
        DenyReason::InvalidKeyMaterial,
        "spec.proofOfPossession is 10241 bytes",
    );
}

/// Whatever we issue for, Go admits and reads as empty: every single-byte change to a Go-made
/// CSR of each key type, and every truncation, judged by both.
#[test]
fn every_csr_we_issue_for_go_admits_as_empty() {
    let keys: Vec<_> = kubelet_keys().into_iter().filter(|k| k.supported).collect();
    let mut issued = Vec::new();
    let mut judged = 0usize;
    for k in &keys {
        let der = &k.stub_csr_der;
        let mut variants: Vec<Vec<u8>> = (0..der.len())
            .flat_map(|i| {
                [0x01u8, 0x80, 0xff].into_iter().map(move |x| {
                    let mut v = der.clone();
                    v[i] ^= x;
                    v
                })
            })
            .collect();
        variants.extend((0..der.len()).map(|n| der[..n].to_vec()));
        variants.push(der.clone());
        for v in variants {
            judged += 1;
            if let Decision::Issue(_) = csr_decision(&v) {
                issued.push(v);
            }
        }
    }
    // The untouched CSRs, at least, are issued.
    assert!(
        issued.len() >= keys.len(),
        "{} issued of {judged}",
        issued.len()
    );
    for (der, go) in issued.iter().zip(go_read_csrs(&issued)) {
        assert!(
            go.admitted_and_empty(),
            "issued for a CSR Go reads as {go:?}: {der:02x?}"
        );
    }
}
