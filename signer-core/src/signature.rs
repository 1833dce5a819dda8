//! Signature algorithms: the schemes a subject key proves possession with, and which of them an
//! AlgorithmIdentifier in a stub CSR names.
//!
//! The API server admits a stub CSR whose signature Go's `CertificateRequest.CheckSignature`
//! accepts (`crypto/x509`, `checkSignature` and `getSignatureAlgorithmFromAI`). For the six
//! admitted key types that is: pure Ed25519; ECDSA with SHA-256, SHA-384 or SHA-512 on any
//! curve; RSA PKCS#1 v1.5 with SHA-256/384/512; RSASSA-PSS with SHA-256/384/512, MGF1 with the
//! same hash, a salt as long as the hash and the default trailer. [`SignatureScheme::identify`]
//! reads exactly those. Two deliberate differences, both refusals with a message naming what
//! was found: SHA-1 (Go still admits it on CSRs; it has no place in a new credential, no
//! kubelet sends it, and our crypto backend cannot check it on P-384), and parameters where the
//! RFCs say there are none (RFC 5758 §3.2, RFC 8410 §3) or NULL (RFC 4055 §5), compared by
//! their full encoding rather than ignored as Go does for ECDSA and PKCS#1 v1.5.

use std::fmt;

use x509_cert::der::asn1::{AnyRef, ObjectIdentifier};
use x509_cert::der::{Decode, Reader, SliceReader, Tagged};
use x509_cert::spki::AlgorithmIdentifierRef;

/// A signature algorithm a subject key can prove possession with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// Pure Ed25519 (no prehash).
    Ed25519,
    /// ECDSA over the key's own curve with the given digest, ASN.1 DER `Ecdsa-Sig-Value`.
    Ecdsa(Digest),
    /// RSASSA-PSS with SHA-256 and MGF1-SHA-256 at any salt length: what Go's
    /// `rsa.VerifyPSS(pub, crypto.SHA256, hash, sig, nil)` — the API server's admission check
    /// of a `proofOfPossession` — admits. The kubelet signs with the maximum salt.
    RsaPssSha256AnySalt,
    /// RSASSA-PSS with the digest, MGF1 with the same digest, and a salt as long as the
    /// digest: the only PSS form Go reads from an AlgorithmIdentifier.
    RsaPss(Digest),
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1(Digest),
}

/// The digests Go pairs with signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha256,
    Sha384,
    Sha512,
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureScheme::Ed25519 => f.write_str("Ed25519"),
            SignatureScheme::Ecdsa(d) => write!(f, "ECDSA with {d:?}"),
            SignatureScheme::RsaPssSha256AnySalt => f.write_str("RSA-PSS with SHA-256"),
            SignatureScheme::RsaPss(d) => write!(f, "RSA-PSS with {d:?}"),
            SignatureScheme::RsaPkcs1(d) => write!(f, "RSA PKCS#1 v1.5 with {d:?}"),
        }
    }
}

mod oid {
    use super::ObjectIdentifier as Oid;
    pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
    pub const ECDSA_SHA1: Oid = Oid::new_unwrap("1.2.840.10045.4.1");
    pub const ECDSA_SHA224: Oid = Oid::new_unwrap("1.2.840.10045.4.3.1");
    pub const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    pub const ECDSA_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
    pub const RSA_MD2: Oid = Oid::new_unwrap("1.2.840.113549.1.1.2");
    pub const RSA_MD5: Oid = Oid::new_unwrap("1.2.840.113549.1.1.4");
    pub const RSA_SHA1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
    pub const RSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
    pub const RSA_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    pub const RSA_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    pub const RSA_SHA512: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
    pub const RSA_SHA224: Oid = Oid::new_unwrap("1.2.840.113549.1.1.14");
    pub const MGF1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.8");
    pub const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
    pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
    pub const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
    pub const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
}

/// Parameters as the identifier's RFC wants them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Params {
    Absent,
    NullOrAbsent,
}

impl Params {
    fn admit(self, found: Option<AnyRef<'_>>) -> bool {
        match (self, found) {
            (_, None) => true,
            (Params::NullOrAbsent, Some(p)) => p == AnyRef::NULL,
            (Params::Absent, Some(_)) => false,
        }
    }
}

fn digest_of(hash: &ObjectIdentifier) -> Option<Digest> {
    match *hash {
        oid::SHA256 => Some(Digest::Sha256),
        oid::SHA384 => Some(Digest::Sha384),
        oid::SHA512 => Some(Digest::Sha512),
        _ => None,
    }
}

impl Digest {
    /// The digest's length in bytes, which a PSS salt must equal.
    fn len(self) -> u32 {
        match self {
            Digest::Sha256 => 32,
            Digest::Sha384 => 48,
            Digest::Sha512 => 64,
        }
    }
}

impl SignatureScheme {
    /// The scheme `alg` names, or a message naming what was found and why it is refused.
    pub fn identify(alg: &AlgorithmIdentifierRef<'_>) -> Result<SignatureScheme, String> {
        use Digest::*;
        let (scheme, params) = match alg.oid {
            oid::ED25519 => (SignatureScheme::Ed25519, Params::Absent),
            oid::ECDSA_SHA256 => (SignatureScheme::Ecdsa(Sha256), Params::Absent),
            oid::ECDSA_SHA384 => (SignatureScheme::Ecdsa(Sha384), Params::Absent),
            oid::ECDSA_SHA512 => (SignatureScheme::Ecdsa(Sha512), Params::Absent),
            oid::RSA_SHA256 => (SignatureScheme::RsaPkcs1(Sha256), Params::NullOrAbsent),
            oid::RSA_SHA384 => (SignatureScheme::RsaPkcs1(Sha384), Params::NullOrAbsent),
            oid::RSA_SHA512 => (SignatureScheme::RsaPkcs1(Sha512), Params::NullOrAbsent),
            oid::RSA_PSS => return pss(alg.parameters),
            oid::ECDSA_SHA1 | oid::RSA_SHA1 => {
                return Err(format!(
                    "the signature algorithm {} uses SHA-1, which is not accepted; sign with SHA-256 or stronger",
                    alg.oid
                ));
            }
            oid::RSA_MD2 | oid::RSA_MD5 | oid::ECDSA_SHA224 | oid::RSA_SHA224 => {
                return Err(format!(
                    "the signature algorithm {} is not accepted (Go refuses MD2, MD5 and SHA-224 signatures); sign with SHA-256 or stronger",
                    alg.oid
                ));
            }
            other => {
                return Err(format!(
                    "the signature algorithm {other} is not one the API server admits for the supported key types"
                ));
            }
        };
        if !params.admit(alg.parameters) {
            let want = match params {
                Params::Absent => "absent parameters",
                Params::NullOrAbsent => "NULL or absent parameters",
            };
            return Err(format!(
                "the signature algorithm {} ({scheme}) must have {want}, but has a {}",
                alg.oid,
                describe(alg.parameters)
            ));
        }
        Ok(scheme)
    }
}

/// A parameters field, described by its tag (class and number) and length, never its bytes.
fn describe(p: Option<AnyRef<'_>>) -> String {
    match p {
        None => "none".into(),
        Some(p) => format!("{} of {} bytes", p.tag(), p.value().len()),
    }
}

/// RSASSA-PSS-params (RFC 4055 §3.1) as Go reads them: hash, MGF and salt length all present
/// (their SHA-1 defaults are refused), MGF1 over the same hash, hash parameters NULL or
/// absent, salt length equal to the hash length, trailer field 1.
fn pss(params: Option<AnyRef<'_>>) -> Result<SignatureScheme, String> {
    let bad = |why: &str| format!("the RSASSA-PSS parameters {why}");
    let params = params.ok_or_else(|| bad("are missing"))?;
    if params.tag() != x509_cert::der::Tag::Sequence {
        return Err(bad("are not a SEQUENCE"));
    }
    let [hash, mgf, salt, trailer] = explicit_fields(params.value())
        .map_err(|e| bad(&format!("are not valid DER ({e})")))?
        .ok_or_else(|| bad("have fields other than [0] to [3], or out of order"))?;
    let (Some(hash), Some(mgf), Some(salt)) = (hash, mgf, salt) else {
        return Err(bad(
            "leave the hash, mask generation function or salt length at its SHA-1 default",
        ));
    };
    let hash = AlgorithmIdentifierRef::from_der(hash)
        .map_err(|_| bad("have a hash that is not an AlgorithmIdentifier"))?;
    let mgf = AlgorithmIdentifierRef::from_der(mgf)
        .map_err(|_| bad("have a mask generation function that is not an AlgorithmIdentifier"))?;
    if !Params::NullOrAbsent.admit(hash.parameters) {
        return Err(bad("have hash parameters other than NULL"));
    }
    let digest = digest_of(&hash.oid).ok_or_else(|| {
        if hash.oid == oid::SHA1 {
            bad("use SHA-1, which is not accepted")
        } else {
            bad(&format!(
                "use the hash {}, not SHA-256, SHA-384 or SHA-512",
                hash.oid
            ))
        }
    })?;
    if mgf.oid != oid::MGF1 {
        return Err(bad(&format!(
            "use the mask generation function {}, not MGF1",
            mgf.oid
        )));
    }
    let mgf_hash = mgf
        .parameters
        .and_then(|p| p.decode_as::<AlgorithmIdentifierRef<'_>>().ok())
        .ok_or_else(|| bad("have MGF1 without a hash"))?;
    if mgf_hash.oid != hash.oid || !Params::NullOrAbsent.admit(mgf_hash.parameters) {
        return Err(bad("use a different hash for MGF1 than for the message"));
    }
    let salt = u32::from_der(salt)
        .map_err(|_| bad("have a salt length that is not a small non-negative INTEGER"))?;
    if salt != digest.len() {
        return Err(bad(&format!(
            "have a salt of {salt} bytes; Go admits only a salt as long as the hash ({} bytes)",
            digest.len()
        )));
    }
    if let Some(trailer) = trailer
        && u8::from_der(trailer) != Ok(1)
    {
        return Err(bad("have a trailer field other than 1"));
    }
    Ok(SignatureScheme::RsaPss(digest))
}

/// The contents of a SEQUENCE of `[0]`..`[3]` EXPLICIT fields, each at most once and in
/// order (DER): each the DER of the field's own value; None if any other field is there.
fn explicit_fields(contents: &[u8]) -> x509_cert::der::Result<Option<[Option<&[u8]>; 4]>> {
    let mut reader = SliceReader::new(contents)?;
    let mut fields = [None; 4];
    let mut next = 0usize;
    while !reader.is_finished() {
        let field = AnyRef::decode(&mut reader)?;
        let x509_cert::der::Tag::ContextSpecific {
            constructed: true,
            number,
        } = field.tag()
        else {
            return Ok(None);
        };
        let n = usize::from(number.value());
        let Some(slot) = fields.get_mut(n).filter(|_| n >= next) else {
            return Ok(None);
        };
        *slot = Some(field.value());
        next = n + 1;
    }
    Ok(Some(fields))
}
