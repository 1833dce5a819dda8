//! Our SPIFFE bundle document read by another implementation: Python's `cryptography` builds
//! each JWK's public key from its parameters alone, and it must be the key of the CA
//! certificate in the same entry's `x5c` (X509-SVID §6.1, RFC 7517/7518) — for every CA key
//! type we make, and an RSA root such as an operator's own CA may have.

use std::time::{Duration, SystemTime};

use podcert_tests::oracles::py_jwk_matches_x5c;
use signer_core::bundle::SpiffeBundle;
use signer_core::{CaKeyType, CaPem, TrustDomain};

#[test]
fn every_jwk_we_publish_describes_its_certificates_key() {
    let td = TrustDomain::new("a.example").unwrap();
    let mut roots: Vec<Vec<u8>> = CaKeyType::ALL
        .iter()
        .map(|k| {
            let pem =
                CaPem::generate(*k, &td, Duration::from_secs(3600), SystemTime::now()).unwrap();
            pem::parse(&pem.cert_pem).unwrap().into_contents()
        })
        .collect();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    roots.push(params.self_signed(&rsa).unwrap().der().to_vec());
    let bundle = SpiffeBundle {
        trust_domain: td,
        sequence: Some(1),
        refresh_hint: None,
        x509_authorities: roots.clone(),
    };
    let read = py_jwk_matches_x5c(&bundle.to_json().unwrap());
    assert_eq!(read.len(), roots.len());
    let kinds: Vec<String> = read
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(kinds, ["EC", "EC", "OKP", "RSA"]);
}
