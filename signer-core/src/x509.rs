//! Small X.509 helpers shared by the CA and the leaf issuer: serial numbers and PEM.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_twenty_bytes_and_differ() {
        let (a, b) = (random_serial().to_bytes(), random_serial().to_bytes());
        assert_eq!(a.len(), 20);
        assert!(a[0] & 0x80 == 0 && a[0] & 0x40 != 0);
        assert_ne!(a, b);
    }
}
