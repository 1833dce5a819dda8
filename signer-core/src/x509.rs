//! Small X.509 helpers shared by the CA and the leaf issuer: serial numbers, PEM, and
//! whether a certificate is a root (self-signed).

/// A random positive serial of exactly 20 bytes (RFC 5280's maximum), 158 bits of entropy.
pub(crate) fn random_serial() -> rcgen::SerialNumber {
    let mut bytes = [0u8; 20];
    // Not reachable by request bytes: aws-lc's RNG aborts the process itself if the system
    // RNG fails, so this never returns an error in practice.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut bytes).expect("the system RNG does not fail");
    // Top bit clear keeps it positive; the next bit set keeps all 20 bytes in the encoding.
    let [top, ..] = &mut bytes;
    *top = (*top & 0x7f) | 0x40;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// A certificate's DER as one PEM `CERTIFICATE` block (LF line endings, no headers).
pub fn certificate_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Whether `der` is a self-signed certificate: its own issuer, its signature verified with
/// its own key (false for anything that does not parse).
pub fn is_self_signed(der: &[u8]) -> bool {
    use x509_parser::prelude::FromDer;
    x509_parser::certificate::X509Certificate::from_der(der).is_ok_and(|(_, c)| self_signed(&c))
}

/// Whether parsed `c` is its own issuer and verifies with its own key.
pub(crate) fn self_signed(c: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    c.subject() == c.issuer() && c.verify_signature(None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_is_self_signed_and_what_it_signs_is_not() {
        let root = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let root_cert = root.self_signed(&key).unwrap();
        let issuer = rcgen::Issuer::new(root, key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["leaf.test".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        assert!(is_self_signed(root_cert.der()));
        assert!(!is_self_signed(leaf.der()));
        assert!(!is_self_signed(b"not a certificate"));
    }

    #[test]
    fn serials_are_positive_twenty_bytes_and_differ() {
        let (a, b) = (random_serial().to_bytes(), random_serial().to_bytes());
        assert_eq!(a.len(), 20);
        assert!(a[0] & 0x80 == 0 && a[0] & 0x40 != 0);
        assert_ne!(a, b);
    }
}
