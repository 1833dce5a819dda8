//! A signing intermediate certified by a CA someone else runs (cert-manager, Vault): the
//! key is made here (or in a device) and never leaves it, a PKCS#10 request asks the
//! upstream to certify it, and what comes back is checked before it signs anything.
//!
//! [`CaProfile::intermediate_request`] makes the key in memory and the request (the
//! profile's subject, trust-domain URI and CA key usages; the upstream decides the rest);
//! [`CaProfile::intermediate_request_for`] asks for a key a device made and holds. [`Requested::certified`]
//! takes the upstream's answer — our certificate followed by any intermediates, and the
//! upstream's roots — and refuses it unless it is a CA certificate (CA:TRUE, keyCertSign)
//! for exactly our key, each certificate signed by the next, the last by one of the roots, and
//! valid now. The roots it names become the trust anchors the ClusterTrustBundle publishes.

use std::fmt;
use std::time::SystemTime;

use super::profile::Tier;
use super::{Ca, CaError, CaKey, CaProfile};
use crate::time::unix_seconds;

/// A key waiting for the upstream to certify it, and the request that asks for it. Its
/// `Debug` never shows the key.
pub struct Requested {
    key: CaKey,
    csr_pem: String,
}

impl fmt::Debug for Requested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requested")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

impl CaProfile {
    /// A new intermediate key of the profile's type, in memory, and a PKCS#10 request for it,
    /// with the subject and SAN of the intermediates we make ourselves.
    pub fn intermediate_request(&self, now: SystemTime) -> Result<Requested, CaError> {
        let key = super::issue::generate_key(self.key_type)?;
        self.intermediate_request_for(CaKey::Memory(key), now)
    }

    /// [`CaProfile::intermediate_request`] for `key`, which may be a device's (it signs the
    /// request); refused unless it is of the profile's type.
    pub fn intermediate_request_for(
        &self,
        key: CaKey,
        now: SystemTime,
    ) -> Result<Requested, CaError> {
        if rcgen::PublicKeyData::algorithm(&key) != self.key_type.algorithm() {
            return Err(CaError::Generate(format!(
                "the intermediate's key is not of the profile's type, {}",
                self.key_type
            )));
        }
        let now = unix_seconds(now);
        // The validity is the upstream's to decide; the request carries none.
        let mut params = self.params(Tier::Intermediate, now, now)?;
        // The upstream picks the serial and writes the key identifiers.
        params.serial_number = None;
        params.use_authority_key_identifier_extension = false;
        let csr_pem = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(|e| {
                let device = key
                    .take_device_error()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                CaError::Generate(format!("making the certificate request: {e}{device}"))
            })?;
        Ok(Requested { key, csr_pem })
    }
}

impl Requested {
    /// The PKCS#10 request, PEM.
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// The intermediate, from the upstream's answer: `chain_pem` (our certificate first,
    /// then any intermediates up to, optionally, a root) and `roots_pem` (the upstream's
    /// roots). Refused unless it can sign chains that verify to those roots (see the module
    /// header); the error says which of the two is at fault.
    pub fn certified(
        self,
        chain_pem: &str,
        roots_pem: &str,
        now: SystemTime,
    ) -> Result<Ca, UpstreamAnswerError> {
        let ca = Ca::from_pem_chain(chain_pem, self.key, Some(roots_pem))
            .map_err(UpstreamAnswerError::from)?;
        let now = unix_seconds(now);
        if now < ca.not_before_unix() || now >= ca.not_after_unix() {
            return Err(UpstreamAnswerError::Certificate(format!(
                "it is not valid now (notBefore {}, notAfter {}, Unix time)",
                ca.not_before_unix(),
                ca.not_after_unix()
            )));
        }
        Ok(ca)
    }
}

/// Why an upstream's answer cannot sign: the certificate it made, or the roots it named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamAnswerError {
    #[error("the certificate the upstream issued: {0}")]
    Certificate(String),
    #[error("the upstream's CA certificates: {0}")]
    Roots(String),
}

impl From<CaError> for UpstreamAnswerError {
    /// The loader's words name the Secret keys of a stored CA; here they are the answer's
    /// chain and roots.
    fn from(e: CaError) -> Self {
        let words = |m: String| {
            m.replace("tls.crt", "the chain")
                .replace("ca.crt", "the roots")
        };
        match e {
            CaError::Roots(m) => UpstreamAnswerError::Roots(words(m)),
            CaError::Key(m)
            | CaError::Certificate(m)
            | CaError::Generate(m)
            | CaError::Device(m) => UpstreamAnswerError::Certificate(words(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateSigningRequestParams, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    use super::*;
    use crate::TrustDomain;
    use crate::time::to_offset;

    const DAY: i64 = 86_400;

    /// An upstream CA: a self-signed root, as cert-manager's CA Issuer or a Vault mount holds.
    struct Upstream {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    impl Upstream {
        fn new(name: &str) -> Upstream {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            let pem = params.self_signed(&key).unwrap().pem();
            Upstream {
                issuer: Issuer::new(params, key),
                pem,
            }
        }

        /// Certifies `csr_pem` for `[from, until]` (Unix seconds from now), a CA or not.
        fn sign(&self, csr_pem: &str, is_ca: bool, from: i64, until: i64) -> String {
            let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
            let now = unix_seconds(SystemTime::now());
            csr.params.not_before = to_offset(now + from);
            csr.params.not_after = to_offset(now + until);
            if is_ca {
                csr.params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                csr.params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            } else {
                csr.params.is_ca = IsCa::ExplicitNoCa;
                csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            }
            csr.signed_by(&self.issuer).unwrap().pem()
        }
    }

    fn request() -> Requested {
        CaProfile::new(TrustDomain::new("example.org").unwrap())
            .intermediate_request(SystemTime::now())
            .unwrap()
    }

    #[test]
    fn a_ca_certificate_for_our_key_under_the_named_root_signs_and_publishes_that_root() {
        let upstream = Upstream::new("Org Root");
        let req = request();
        assert!(
            req.csr_pem()
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        );
        let chain = upstream.sign(req.csr_pem(), true, -60, 7 * DAY);
        let ca = req
            .certified(&chain, &upstream.pem, SystemTime::now())
            .unwrap();
        assert_eq!(ca.trust_bundle_pem(), upstream.pem);
        assert_eq!(
            ca.intermediates_pem(),
            chain,
            "leaves carry our certificate"
        );
        assert!(
            ca.subject()
                .contains("podcert-signer signing CA for example.org")
        );
        assert!(!ca.has_room_for_intermediate());
    }

    #[test]
    fn a_given_key_is_requested_for_only_if_it_is_of_the_profiles_type() {
        let profile = CaProfile::new(TrustDomain::new("example.org").unwrap());
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let e = profile
            .intermediate_request_for(CaKey::Memory(p384), SystemTime::now())
            .unwrap_err();
        assert!(e.to_string().contains("not of the profile's type"), "{e}");
        let p256 = KeyPair::generate().unwrap();
        let public = rcgen::PublicKeyData::der_bytes(&p256).to_vec();
        let requested = profile
            .intermediate_request_for(CaKey::Memory(p256), SystemTime::now())
            .unwrap();
        let csr = CertificateSigningRequestParams::from_pem(requested.csr_pem()).unwrap();
        assert_eq!(
            rcgen::PublicKeyData::der_bytes(&csr.public_key),
            &public[..]
        );
    }

    #[test]
    fn an_answer_for_another_key_is_refused() {
        let upstream = Upstream::new("Org Root");
        let (ours, theirs) = (request(), request());
        let chain = upstream.sign(theirs.csr_pem(), true, -60, 7 * DAY);
        let e = ours
            .certified(&chain, &upstream.pem, SystemTime::now())
            .unwrap_err();
        assert!(
            matches!(&e, UpstreamAnswerError::Certificate(m) if m.contains("does not match the public key of the first certificate in the chain")),
            "{e}"
        );
    }

    #[test]
    fn a_certificate_that_is_not_a_ca_is_refused() {
        let upstream = Upstream::new("Org Root");
        let req = request();
        let chain = upstream.sign(req.csr_pem(), false, -60, 7 * DAY);
        let e = req
            .certified(&chain, &upstream.pem, SystemTime::now())
            .unwrap_err();
        assert!(e.to_string().contains("is not a CA"), "{e}");
    }

    #[test]
    fn roots_that_did_not_sign_the_chain_are_refused() {
        let (upstream, other) = (Upstream::new("Org Root"), Upstream::new("Other Root"));
        let req = request();
        let chain = upstream.sign(req.csr_pem(), true, -60, 7 * DAY);
        let e = req
            .certified(&chain, &other.pem, SystemTime::now())
            .unwrap_err();
        assert_eq!(
            e,
            UpstreamAnswerError::Roots(
                "no certificate in the roots signed the last certificate of the chain".into()
            )
        );
    }

    #[test]
    fn a_certificate_not_valid_now_is_refused() {
        let upstream = Upstream::new("Org Root");
        for (from, until) in [(-2 * DAY, -DAY), (DAY, 2 * DAY)] {
            let req = request();
            let chain = upstream.sign(req.csr_pem(), true, from, until);
            let e = req
                .certified(&chain, &upstream.pem, SystemTime::now())
                .unwrap_err();
            assert!(e.to_string().contains("is not valid now"), "{e}");
        }
    }
}
