//! CA private keys broken in every way an operator can break them, and a detector of key
//! material in text (logs, errors, Events, metrics).
//!
//! [`broken_ca_keys`] takes one key of every format the signer reads — PKCS#8 (P-256, P-384,
//! Ed25519), SEC1 (P-256, P-384) and PKCS#1 (RSA) — and breaks each in every way: blank lines
//! and RFC 1421 headers inside the body, CRLF, truncation, a non-base64 byte, wrong or
//! mismatched labels, corrupt DER, two keys. [`leak`] finds any run of a key's base64 body,
//! hex or decimal bytes in a text.

use base64::Engine;

use crate::oracles::openssl;

/// One private key in one PEM format, with the DER that must never appear anywhere.
#[derive(Debug, Clone)]
pub struct CaKey {
    pub format: &'static str,
    pub pem: String,
    pub der: Vec<u8>,
}

/// `tls.key` text that does not load, and the secret it contains.
#[derive(Debug, Clone)]
pub struct BrokenKey {
    pub name: String,
    pub text: String,
    pub secret_der: Vec<u8>,
}

fn pem_of(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The key in OpenSSL's "traditional" form: SEC1 for EC keys, PKCS#1 for RSA keys.
fn traditional(pkcs8_pem: &str) -> String {
    String::from_utf8(openssl(&["pkey", "-traditional"], pkcs8_pem.as_bytes())).unwrap()
}

fn key(format: &'static str, pem_text: String) -> CaKey {
    let der = pem::parse(&pem_text).unwrap().into_contents();
    CaKey {
        format,
        pem: pem_text,
        der,
    }
}

/// One fresh key of every format and type the CA loader reads.
pub fn ca_keys() -> Vec<CaKey> {
    let pkcs8 = |alg| rcgen::KeyPair::generate_for(alg).unwrap().serialize_pem();
    let p256 = pkcs8(&rcgen::PKCS_ECDSA_P256_SHA256);
    let p384 = pkcs8(&rcgen::PKCS_ECDSA_P384_SHA384);
    let rsa = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        b"",
    );
    let rsa = String::from_utf8(rsa).unwrap();
    vec![
        key("PKCS#8 P-256", p256.clone()),
        key("SEC1 P-256", traditional(&p256)),
        key("PKCS#8 P-384", p384.clone()),
        key("SEC1 P-384", traditional(&p384)),
        key("PKCS#8 Ed25519", pkcs8(&rcgen::PKCS_ED25519)),
        key("PKCS#8 RSA", rsa.clone()),
        key("PKCS#1 RSA", traditional(&rsa)),
    ]
}

/// Every way of breaking `key`'s PEM text that we know of.
pub fn breakages(key: &CaKey) -> Vec<BrokenKey> {
    let text = key.pem.replace("\r\n", "\n");
    let lines: Vec<&str> = text.lines().collect();
    let (begin, body, end) = (lines[0], &lines[1..lines.len() - 1], lines[lines.len() - 1]);
    let label = begin
        .trim_start_matches("-----BEGIN ")
        .trim_end_matches("-----");
    let join = |ls: &[&str]| ls.join("\n") + "\n";
    let with = |extra_after_begin: &[&str], body: &[&str], end: &str| {
        let mut ls = vec![begin];
        ls.extend_from_slice(extra_after_begin);
        ls.extend_from_slice(body);
        ls.push(end);
        join(&ls)
    };
    let mut blank_inside: Vec<&str> = body.to_vec();
    blank_inside.insert(1.min(body.len()), "");
    let body_text = body.join("");
    let half = &body_text[..body_text.len() / 2];
    let mut starred = body_text.clone();
    starred.replace_range(body_text.len() / 2..body_text.len() / 2 + 1, "*");
    let mut corrupt_der = key.der.clone();
    let mid = corrupt_der.len() / 2;
    corrupt_der[mid] ^= 0x5a;
    corrupt_der.truncate(corrupt_der.len() - 3);
    let other_label = if label == "PRIVATE KEY" {
        "EC PRIVATE KEY"
    } else {
        "PRIVATE KEY"
    };

    let cases: Vec<(&str, String)> = vec![
        ("a blank line after BEGIN", with(&[""], body, end)),
        (
            "a blank line inside the body",
            with(&[], &blank_inside, end),
        ),
        (
            "RFC 1421 headers",
            with(
                &[
                    "Proc-Type: 4,ENCRYPTED",
                    "DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF",
                    "",
                ],
                body,
                end,
            ),
        ),
        (
            "CRLF line endings and a blank line",
            with(&[""], body, end).replace('\n', "\r\n"),
        ),
        ("a body cut in half", with(&[], &[half], end)),
        ("no END line", join(&[begin, half])),
        ("a non-base64 byte in the body", with(&[], &[&starred], end)),
        ("the CERTIFICATE label", pem_of("CERTIFICATE", &key.der)),
        ("another key format's label", pem_of(other_label, &key.der)),
        ("an unknown label", pem_of("SECRET STUFF", &key.der)),
        (
            "mismatched BEGIN and END labels",
            with(&[], body, "-----END CERTIFICATE-----"),
        ),
        ("corrupt DER", pem_of(label, &corrupt_der)),
        ("the key twice", format!("{text}{text}")),
        (
            "the ENCRYPTED PRIVATE KEY label",
            pem_of("ENCRYPTED PRIVATE KEY", &key.der),
        ),
    ];
    cases
        .into_iter()
        .map(|(how, text)| BrokenKey {
            name: format!("{} with {how}", key.format),
            text,
            secret_der: key.der.clone(),
        })
        .collect()
}

/// Every broken key of every format.
pub fn broken_ca_keys() -> Vec<BrokenKey> {
    ca_keys().iter().flat_map(breakages).collect()
}

/// Runs in `text` of at least `min` characters of `alphabet`.
fn runs(text: &str, min: usize, alphabet: impl Fn(char) -> bool) -> Vec<&str> {
    text.split(|c: char| !alphabet(c))
        .filter(|r| r.len() >= min)
        .collect()
}

/// The first piece of `secret_der` that `text` shows, as base64 (the PEM body, at any of the
/// three byte alignments), hex, or a list of decimal bytes: None if there is none. Runs of 12
/// base64 characters (9 bytes) or 8 bytes are the threshold; a random key shares such a run
/// with unrelated text with negligible probability.
pub fn leak(text: &str, secret_der: &[u8]) -> Option<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let bodies: Vec<String> = (0..3)
        .map(|skip| b64.encode(secret_der.get(skip..).unwrap_or_default()))
        .collect();
    for run in runs(text, 12, |c| {
        c.is_ascii_alphanumeric() || c == '+' || c == '/'
    }) {
        // A run may continue past the quoted key; any 12-character window of it is enough.
        let chars: Vec<char> = run.chars().collect();
        for w in chars.windows(12) {
            let w: String = w.iter().collect();
            if bodies.iter().any(|b| b.contains(&w)) {
                return Some(format!("base64 {w:?}"));
            }
        }
    }
    let hex: String = secret_der.iter().map(|b| format!("{b:02x}")).collect();
    for run in runs(text, 16, |c| c.is_ascii_hexdigit()) {
        let lower = run.to_ascii_lowercase();
        let chars: Vec<char> = lower.chars().collect();
        for w in chars.windows(16) {
            let w: String = w.iter().collect();
            if hex.contains(&w) {
                return Some(format!("hex {w:?}"));
            }
        }
    }
    // Debug-formatted bytes: "48, 119, 2, 1, ..." (eight in a row).
    let numbers: Vec<Option<u8>> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .map(|n| n.parse().ok())
        .collect();
    for w in numbers.windows(8) {
        if let Some(bytes) = w.iter().copied().collect::<Option<Vec<u8>>>()
            && secret_der.windows(8).any(|s| s == bytes.as_slice())
        {
            return Some(format!("decimal bytes {bytes:?}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detector_finds_each_encoding_and_ignores_ordinary_text() {
        let der: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der[5..40]);
        assert!(leak(&format!("invalid header: {b64}"), &der).is_some());
        let hex: String = der[10..20].iter().map(|b| format!("{b:02X}")).collect();
        assert!(leak(&format!("key={hex}"), &der).is_some());
        assert!(leak(&format!("{:?}", &der[3..15]), &der).is_some());
        assert_eq!(
            leak(
                "tls.key: the \"PRIVATE KEY\" block is not a valid PKCS#8 private key; ClusterTrustBundle 2026-11-21T17:06:49Z",
                &der
            ),
            None
        );
    }
}
