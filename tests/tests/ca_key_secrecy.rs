//! No byte of a CA private key appears in what the CA loader says about it, whichever format
//! the key is in, however it is broken, and whichever Secret key it was pasted into.

use podcert_tests::secrets::{broken_ca_keys, leak};
use signer_core::{Ca, CaKeyType, CaPem, TrustDomain};

fn good_ca() -> CaPem {
    CaPem::generate(
        CaKeyType::EcdsaP256,
        &TrustDomain::new("example.org").unwrap(),
        std::time::Duration::from_secs(86_400 * 30),
        std::time::SystemTime::now(),
    )
    .unwrap()
}

#[test]
fn a_broken_key_is_refused_and_never_quoted_in_any_secret_key() {
    let ca = good_ca();
    let cases = broken_ca_keys();
    assert!(cases.len() >= 90, "{} cases", cases.len());
    for case in &cases {
        for (field, result) in [
            ("tls.key", Ca::from_pem(&ca.cert_pem, &case.text, None)),
            ("tls.crt", Ca::from_pem(&case.text, &ca.key_pem, None)),
            (
                "ca.crt",
                Ca::from_pem(&ca.cert_pem, &ca.key_pem, Some(&case.text)),
            ),
        ] {
            let err = match result {
                Ok(_) => panic!("{} in {field} loaded", case.name),
                Err(e) => e,
            };
            assert!(
                err.to_string().starts_with(field),
                "{}: the error does not name {field}: {err}",
                case.name
            );
            for shown in [err.to_string(), format!("{err:?}")] {
                if let Some(piece) = leak(&shown, &case.secret_der) {
                    panic!(
                        "{} in {field}: the error quotes the key ({piece}): {shown}",
                        case.name
                    );
                }
            }
        }
    }
}
