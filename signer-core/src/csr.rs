//! The stub PKCS#10 request, read whole with one strict DER decoder.
//!
//! Everything we judge in a `stubPKCS10Request` — version, subject, key, attributes (which
//! carry any requested extensions), signature algorithm and its parameters, signature — comes
//! from one read by the `der` crate (RustCrypto's `x509-cert` model of RFC 2986), which accepts
//! DER only. On top of that the request must re-encode to exactly its own bytes, so there is
//! one reading of it and it is the one Go's `crypto/x509` makes: a subject of an empty RDN
//! followed by `CN=admin` is two RDNs here, as it is in Go, not an empty name.

use x509_cert::der::asn1::BitStringRef;
use x509_cert::der::{Decode, Encode, Reader, SliceReader};
use x509_cert::request::CertReq;
use x509_cert::spki::AlgorithmIdentifierRef;

/// A stub CSR as read: the parts borrowed from the request's own bytes, plus what the full
/// model says about its contents.
#[derive(Debug)]
pub(crate) struct StubCsr<'a> {
    /// The DER CertificationRequestInfo: the bytes the signature covers.
    pub signed: &'a [u8],
    /// The DER SubjectPublicKeyInfo.
    pub spki_der: &'a [u8],
    pub algorithm: AlgorithmIdentifierRef<'a>,
    pub signature: BitStringRef<'a>,
    /// How many RDNs the subject has (an empty subject has none).
    pub subject_rdns: usize,
    /// The subject as text, for messages.
    pub subject: String,
    /// How many attributes (extension requests among them) it carries.
    pub attributes: usize,
}

impl<'a> StubCsr<'a> {
    /// Reads `der`; the error says what is wrong and quotes no bytes.
    pub(crate) fn decode(der: &'a [u8]) -> Result<Self, String> {
        let model = CertReq::from_der(der)
            .map_err(|e| format!("is not a valid DER PKCS#10 request ({e})"))?;
        if model.to_der().ok().as_deref() != Some(der) {
            return Err("is not in canonical DER form".into());
        }
        let parts = SliceReader::new(der).and_then(|mut r| {
            let parts = r.sequence(|csr| {
                let signed = csr.tlv_bytes()?;
                let algorithm = AlgorithmIdentifierRef::decode(csr)?;
                let signature = BitStringRef::decode(csr)?;
                Ok((signed, algorithm, signature))
            })?;
            r.finish(parts)
        });
        let (signed, algorithm, signature) =
            parts.map_err(|e| format!("is not a valid DER PKCS#10 request ({e})"))?;
        let spki_der = SliceReader::new(signed)
            .and_then(|mut r| {
                r.sequence(|info| {
                    info.tlv_bytes()?; // version
                    info.tlv_bytes()?; // subject
                    let spki = info.tlv_bytes()?;
                    info.tlv_bytes()?; // [0] attributes
                    Ok(spki)
                })
            })
            .map_err(|e| format!("is not a valid DER PKCS#10 request ({e})"))?;
        let info = &model.info;
        Ok(StubCsr {
            signed,
            spki_der,
            algorithm,
            signature,
            subject_rdns: info.subject.0.len(),
            subject: info.subject.to_string(),
            attributes: info.attributes.len(),
        })
    }
}
