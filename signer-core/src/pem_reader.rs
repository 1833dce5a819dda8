//! Reading PEM that the operator gives us, which may hold a private key.
//!
//! PEM libraries quote the text they could not read in their errors: the `pem` crate reads a
//! body with a blank line in it as RFC 1421 headers and reports the first body line, which for
//! a SEC1 P-256 or an Ed25519 PKCS#8 key *is* the whole key. So every PEM text we read — the
//! CA Secret's `tls.crt`, `tls.key` and `ca.crt` — goes through [`read_blocks`], whose
//! [`PemProblem`] is a fixed description that names what is wrong and quotes nothing, and
//! whose block labels are shown only when they are a label we know ([`PemBlock::label_for_humans`]).
//! A block's DER is wiped when the block is dropped: for `tls.key` it is the private key.

use std::fmt;

/// One block of PEM text: its label (`CERTIFICATE`, `EC PRIVATE KEY`, ...) and its DER body,
/// which is wiped when the block is dropped.
pub(crate) struct PemBlock {
    label: String,
    der: Vec<u8>,
}

impl Drop for PemBlock {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl fmt::Debug for PemBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemBlock")
            .field("label", &self.label_for_humans())
            .field("der_len", &self.der.len())
            .finish()
    }
}

/// The labels we read or recognise; any other label is not repeated back.
const KNOWN_LABELS: [&str; 8] = [
    "CERTIFICATE",
    "PRIVATE KEY",
    "EC PRIVATE KEY",
    "RSA PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "EC PARAMETERS",
    "PUBLIC KEY",
    "CERTIFICATE REQUEST",
];

impl PemBlock {
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn der(&self) -> &[u8] {
        &self.der
    }

    /// The DER, which the caller now keeps (certificates: public, not wiped).
    pub(crate) fn into_der(mut self) -> Vec<u8> {
        std::mem::take(&mut self.der)
    }

    /// Zeroes the DER and empties it.
    fn wipe(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.der);
    }

    /// The label, quoted, if it is one we know; otherwise a phrase that does not repeat it.
    pub(crate) fn label_for_humans(&self) -> String {
        if KNOWN_LABELS.contains(&self.label.as_str()) {
            format!("{:?}", self.label)
        } else {
            "of an unrecognised type".to_owned()
        }
    }
}

/// Why PEM text could not be read. Deliberately carries no part of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PemProblem {
    #[error("no PEM block (no \"-----BEGIN ...-----\" line)")]
    NoBlock,
    #[error("a PEM block's BEGIN and END labels differ")]
    MismatchedLabels,
    #[error("a PEM block has no matching \"-----END ...-----\" line")]
    MissingEnd,
    #[error("a PEM block's framing is malformed")]
    MalformedFraming,
    #[error(
        "a PEM block's body has a blank line or a \"Name: value\" line inside it (often a paste mistake); the body must be unbroken base64"
    )]
    BrokenBody,
    #[error("a PEM block's body is not valid base64")]
    NotBase64,
    #[error("the text is not UTF-8")]
    NotUtf8,
    #[error(
        "a PEM block carries RFC 1421 headers (an encrypted key, \"Proc-Type: 4,ENCRYPTED\"?); give it unencrypted"
    )]
    Headers,
}

impl From<pem::PemError> for PemProblem {
    fn from(e: pem::PemError) -> Self {
        // Every variant is mapped by kind; none of the payloads (which may quote a key) is kept.
        match e {
            pem::PemError::MismatchedTags(..) => PemProblem::MismatchedLabels,
            pem::PemError::MalformedFraming => PemProblem::MalformedFraming,
            pem::PemError::MissingBeginTag => PemProblem::NoBlock,
            pem::PemError::MissingEndTag => PemProblem::MissingEnd,
            pem::PemError::MissingData => PemProblem::BrokenBody,
            pem::PemError::InvalidData(_) => PemProblem::NotBase64,
            pem::PemError::InvalidHeader(_) => PemProblem::BrokenBody,
            pem::PemError::NotUtf8(_) => PemProblem::NotUtf8,
        }
    }
}

/// Every PEM block in `text`, in order. At least one; none with headers.
pub(crate) fn read_blocks(text: &str) -> Result<Vec<PemBlock>, PemProblem> {
    let blocks = pem::parse_many(text).map_err(PemProblem::from)?;
    if blocks.is_empty() {
        return Err(PemProblem::NoBlock);
    }
    // Every body becomes a block (wiped when dropped) before any is refused.
    let mut headers = false;
    let read: Vec<PemBlock> = blocks
        .into_iter()
        .map(|b| {
            headers |= b.headers().iter().next().is_some();
            PemBlock {
                label: b.tag().to_owned(),
                der: b.into_contents(),
            }
        })
        .collect();
    if headers {
        return Err(PemProblem::Headers);
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocks_der_is_wiped() {
        let text = "-----BEGIN PRIVATE KEY-----\nAQIDBA==\n-----END PRIVATE KEY-----\n";
        let mut block = read_blocks(text).unwrap().remove(0);
        assert_eq!(block.der(), [1, 2, 3, 4]);
        block.wipe();
        assert!(
            block.der().is_empty(),
            "the DER survived: {:?}",
            block.der()
        );
    }

    /// With a blank line inside a key's body, `pem` reads the lines before it as RFC 1421
    /// headers and quotes the first in its error: for a SEC1 P-256 key, that is the key.
    #[test]
    fn a_broken_body_is_described_without_quoting_it() {
        let body = "MHcCAQEEIDeadBeefDeadBeefDeadBeefDeadBeefDeadBeefDeadBeefDeadoAoG";
        let text = format!(
            "-----BEGIN EC PRIVATE KEY-----\n{body}\n\nCCqGSM49\n-----END EC PRIVATE KEY-----\n"
        );
        let raw = pem::parse_many(&text).unwrap_err().to_string();
        assert!(raw.contains(body), "the pem crate quotes the body: {raw}");
        let ours = read_blocks(&text).unwrap_err();
        assert_eq!(ours, PemProblem::BrokenBody);
        assert!(!ours.to_string().contains("MHcC"), "{ours}");
    }

    #[test]
    fn headers_are_refused_and_unknown_labels_not_repeated() {
        let text = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(read_blocks(text).unwrap_err(), PemProblem::Headers);
        let odd = read_blocks("-----BEGIN SECRET abc123-----\nAAAA\n-----END SECRET abc123-----\n")
            .unwrap();
        assert_eq!(odd[0].label_for_humans(), "of an unrecognised type");
        assert!(!format!("{odd:?}").contains("abc123"));
    }
}
