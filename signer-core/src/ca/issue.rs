//! Making CAs: a new self-signed root ([`CaProfile::root`]) and a signing intermediate under a
//! root ([`Ca::sign_intermediate`]).
//!
//! A root is stored (it is the trust anchor, and must survive restarts); an intermediate is
//! made in memory by whoever leads and is never stored, so no signing key ever rests in the
//! cluster. Both are backdated an hour for clock skew — more than any leaf is backdated, so a
//! fresh intermediate can sign at once — and an intermediate never outlives its root: its
//! validity is cut to the root's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{Issuer, KeyPair, SigningKey};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::profile::{CaProfile, Tier};
use super::{Ca, CaError, CaKey, CaKeyType, CaPem, KeyDevice};
use crate::spiffe::TrustDomain;
use crate::time::unix_seconds;
use crate::x509::certificate_pem;

/// How far a new CA's notBefore is set in the past.
const CA_BACKDATE_SECONDS: i64 = 3600;

fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

pub(super) fn generate_key(key_type: CaKeyType) -> Result<KeyPair, CaError> {
    KeyPair::generate_for(key_type.algorithm()).map_err(|e| CaError::Generate(e.to_string()))
}

impl CaProfile {
    /// A new self-signed root, valid from `now` (backdated an hour) for `validity`. It may
    /// sign one tier of intermediates (path length 1).
    pub fn root(&self, validity: Duration, now: SystemTime) -> Result<CaPem, CaError> {
        let key = generate_key(self.key_type)?;
        let cert_pem =
            self.self_signed(&key, validity, now, |e| CaError::Generate(e.to_string()))?;
        Ok(CaPem {
            roots_pem: Some(cert_pem.clone()),
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// A new self-signed root, as [`CaProfile::root`] makes it, for a key held by `device`
    /// (which signs the certificate). Its certificate is [`Ca::trust_bundle_pem`].
    pub fn root_for_device(
        &self,
        device: Arc<dyn KeyDevice>,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Ca, CaError> {
        if device.key_type() != self.key_type {
            return Err(CaError::Device(format!(
                "the key is {}, the profile asks for {}",
                device.key_type(),
                self.key_type
            )));
        }
        let key = CaKey::device(device.clone());
        let cert_pem = self.self_signed(&key, validity, now, |e| signing_failed(&key, e))?;
        Ca::from_device(&cert_pem, device, None)
    }

    /// The PEM of a root certificate for `key`, signed by it; `failed` says why signing
    /// failed.
    fn self_signed(
        &self,
        key: &impl SigningKey,
        validity: Duration,
        now: SystemTime,
        failed: impl FnOnce(rcgen::Error) -> CaError,
    ) -> Result<String, CaError> {
        let now = unix_seconds(now);
        let params = self.params(
            Tier::Root,
            now.saturating_sub(CA_BACKDATE_SECONDS),
            now.saturating_add(seconds(validity)),
        )?;
        let cert = params.self_signed(key).map_err(failed)?;
        Ok(certificate_pem(cert.der()))
    }
}

/// Why signing with `key` failed: the device's own words when a device refused.
fn signing_failed(key: &CaKey, e: rcgen::Error) -> CaError {
    match key.take_device_error() {
        Some(why) => CaError::Device(format!("signing failed: {why}")),
        None => CaError::Generate(e.to_string()),
    }
}

impl CaPem {
    /// A new root for `trust_domain` with the default, name-constrained profile (see
    /// [`CaProfile::root`]).
    pub fn generate(
        key_type: CaKeyType,
        trust_domain: &TrustDomain,
        validity: Duration,
        now: SystemTime,
    ) -> Result<CaPem, CaError> {
        CaProfile {
            key_type,
            ..CaProfile::new(trust_domain.clone())
        }
        .root(validity, now)
    }
}

impl Ca {
    /// A new signing intermediate under this CA, with a key made here and never written
    /// anywhere: valid from `now` (backdated an hour, but not before this CA) for `validity`,
    /// cut to this CA's own notAfter. Refused when a path-length constraint leaves no room
    /// (see [`Ca::has_room_for_intermediate`]) or this CA has expired.
    pub fn sign_intermediate(
        &self,
        profile: &CaProfile,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Ca, CaError> {
        if !self.room_for_intermediate {
            return Err(CaError::Generate(
                "the CA's path-length constraint leaves no room for a signing intermediate".into(),
            ));
        }
        let now = unix_seconds(now);
        let not_before = now.saturating_sub(CA_BACKDATE_SECONDS).max(self.not_before);
        let not_after = now.saturating_add(seconds(validity)).min(self.not_after);
        if not_after <= now {
            return Err(CaError::Generate(format!(
                "the CA expired at {} (Unix time); it cannot sign an intermediate",
                self.not_after
            )));
        }
        let key = generate_key(profile.key_type)?;
        let params = profile.params(Tier::Intermediate, not_before, not_after)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| signing_failed(self.issuer.key(), e))?;
        let (_, parsed) = X509Certificate::from_der(cert.der())
            .map_err(|_| CaError::Generate("the new intermediate does not parse".into()))?;
        // Checked once here, so each leaf's self-check needs only the link to it.
        let (_, parent_key) = SubjectPublicKeyInfo::from_der(&self.signing.spki_der)
            .map_err(|_| CaError::Generate("the CA's own key does not parse".into()))?;
        parsed.verify_signature(Some(&parent_key)).map_err(|e| {
            CaError::Generate(format!(
                "the new intermediate does not verify under the CA ({e})"
            ))
        })?;
        let subject = parsed.subject().to_string();
        let signing = crate::self_check::SigningCert::of(&parsed);
        let mut intermediates_pem = certificate_pem(cert.der());
        intermediates_pem.push_str(&self.intermediates_pem);
        Ok(Ca {
            issuer: Issuer::new(params, CaKey::Memory(key)),
            intermediates_pem,
            trust_bundle_pem: self.trust_bundle_pem.clone(),
            not_before,
            not_after,
            subject,
            room_for_intermediate: false,
            name_constrained: self.name_constrained || profile.name_constraints,
            signing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::{GeneralName, ParsedExtension};

    const DAY: u64 = 86_400;

    fn profile() -> CaProfile {
        CaProfile::new(TrustDomain::new("example.org").unwrap())
    }

    fn root(validity_days: u64) -> Ca {
        profile()
            .root(Duration::from_secs(DAY * validity_days), SystemTime::now())
            .unwrap()
            .load()
            .unwrap()
    }

    fn der_of(pem_text: &str) -> Vec<Vec<u8>> {
        pem::parse_many(pem_text)
            .unwrap()
            .into_iter()
            .map(|p| p.into_contents())
            .collect()
    }

    #[test]
    fn a_root_has_room_for_one_intermediate_and_the_intermediate_for_none() {
        let root = root(365);
        assert!(root.has_room_for_intermediate());
        let intermediate = root
            .sign_intermediate(&profile(), Duration::from_secs(DAY * 7), SystemTime::now())
            .unwrap();
        assert!(!intermediate.has_room_for_intermediate());
        assert!(matches!(
            intermediate.sign_intermediate(&profile(), Duration::from_secs(DAY), SystemTime::now()),
            Err(CaError::Generate(_))
        ));
        // The chain after a leaf is the intermediate; the bundle is still the root.
        assert_eq!(der_of(intermediate.intermediates_pem()).len(), 1);
        assert_eq!(intermediate.trust_bundle_pem(), root.trust_bundle_pem());
    }

    #[test]
    fn an_intermediate_never_outlives_its_root() {
        let root = root(3);
        let intermediate = root
            .sign_intermediate(&profile(), Duration::from_secs(DAY * 7), SystemTime::now())
            .unwrap();
        assert_eq!(intermediate.not_after_unix(), root.not_after_unix());
        assert!(intermediate.not_before_unix() >= root.not_before_unix());
        let later = SystemTime::now() + Duration::from_secs(DAY * 4);
        assert!(
            root.sign_intermediate(&profile(), Duration::from_secs(DAY), later)
                .is_err()
        );
    }

    #[test]
    fn both_tiers_carry_the_trust_domain_name_constraint_when_asked_and_none_by_default() {
        let permitted_uris = |pem_text: &str| -> Vec<String> {
            let der = der_of(pem_text).remove(0);
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            cert.extensions()
                .iter()
                .filter_map(|e| match e.parsed_extension() {
                    ParsedExtension::NameConstraints(nc) => {
                        assert!(e.critical);
                        Some(nc.permitted_subtrees.clone().unwrap_or_default())
                    }
                    _ => None,
                })
                .flatten()
                .map(|s| match s.base {
                    GeneralName::URI(u) => u.to_string(),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let constrained = CaProfile {
            name_constraints: true,
            ..profile()
        };
        let constrained_root = constrained
            .root(Duration::from_secs(DAY), SystemTime::now())
            .unwrap()
            .load()
            .unwrap();
        let intermediate = constrained_root
            .sign_intermediate(&constrained, Duration::from_secs(DAY), SystemTime::now())
            .unwrap();
        assert_eq!(
            permitted_uris(constrained_root.trust_bundle_pem()),
            ["example.org"]
        );
        assert_eq!(
            permitted_uris(intermediate.intermediates_pem()),
            ["example.org"]
        );
        assert!(constrained_root.is_name_constrained() && intermediate.is_name_constrained());

        let open = root(1);
        assert!(permitted_uris(open.trust_bundle_pem()).is_empty());
        assert!(!open.is_name_constrained());
        let open_intermediate = open
            .sign_intermediate(&profile(), Duration::from_secs(DAY), SystemTime::now())
            .unwrap();
        assert!(permitted_uris(open_intermediate.intermediates_pem()).is_empty());
        assert!(!open_intermediate.is_name_constrained());
        // An open intermediate under a constrained root is still on a constrained path.
        let under_constrained = constrained_root
            .sign_intermediate(&profile(), Duration::from_secs(DAY), SystemTime::now())
            .unwrap();
        assert!(under_constrained.is_name_constrained());
    }

    #[test]
    fn a_pathlen_0_root_has_no_room_for_an_intermediate_and_refuses_to_sign_one() {
        // A CA made before two tiers: pathlen 0.
        let key = KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, "old");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let cert = p.self_signed(&key).unwrap();
        let ca = Ca::from_pem(&cert.pem(), &key.serialize_pem(), None).unwrap();
        assert!(!ca.has_room_for_intermediate());
        assert!(matches!(
            ca.sign_intermediate(&profile(), Duration::from_secs(DAY), SystemTime::now()),
            Err(CaError::Generate(_))
        ));
    }

    /// An operator's CA in `tls.crt` under a root in `ca.crt`, with these pathLen constraints.
    fn byo(root_path_len: Option<u8>, ca_path_len: Option<u8>) -> Ca {
        let constraint = |n: Option<u8>| match n {
            Some(n) => rcgen::BasicConstraints::Constrained(n),
            None => rcgen::BasicConstraints::Unconstrained,
        };
        let params = |cn: &str, n: Option<u8>| {
            let mut p = rcgen::CertificateParams::default();
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            p.is_ca = rcgen::IsCa::Ca(constraint(n));
            p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
            p
        };
        let root_key = KeyPair::generate().unwrap();
        let root = params("root", root_path_len)
            .self_signed(&root_key)
            .unwrap();
        let issuer = Issuer::new(params("root", root_path_len), &root_key);
        let key = KeyPair::generate().unwrap();
        let ca = params("ca", ca_path_len).signed_by(&key, &issuer).unwrap();
        Ca::from_pem(&ca.pem(), &key.serialize_pem(), Some(&root.pem())).unwrap()
    }

    #[test]
    fn every_path_length_constraint_up_to_the_root_in_ca_crt_must_leave_room() {
        assert!(byo(None, None).has_room_for_intermediate());
        assert!(byo(Some(2), Some(1)).has_room_for_intermediate());
        // The operator's CA allows no CA below it.
        assert!(!byo(None, Some(0)).has_room_for_intermediate());
        // The root allows one CA below it, the operator's: not a second.
        assert!(!byo(Some(1), None).has_room_for_intermediate());
    }

    /// A device that signs with a key in memory, or refuses.
    #[derive(Debug)]
    struct SoftDevice {
        key: KeyPair,
        refuse: bool,
    }

    impl KeyDevice for SoftDevice {
        fn key_type(&self) -> CaKeyType {
            CaKeyType::EcdsaP256
        }
        fn public_key(&self) -> &[u8] {
            rcgen::PublicKeyData::der_bytes(&self.key)
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
            if self.refuse {
                return Err("the token is not logged in".into());
            }
            self.key.sign(message).map_err(|e| e.to_string())
        }
    }

    fn device(refuse: bool) -> Arc<SoftDevice> {
        Arc::new(SoftDevice {
            key: KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            refuse,
        })
    }

    #[test]
    fn a_root_whose_key_is_in_a_device_signs_its_certificate_and_intermediates_through_it() {
        let device = device(false);
        let root = profile()
            .root_for_device(
                device.clone(),
                Duration::from_secs(DAY * 365),
                SystemTime::now(),
            )
            .unwrap();
        // It reloads from its certificate and the device, as from a Secret without tls.key.
        let reloaded = Ca::from_device(root.trust_bundle_pem(), device, None).unwrap();
        assert!(reloaded.has_room_for_intermediate());
        let intermediate = reloaded
            .sign_intermediate(&profile(), Duration::from_secs(DAY), SystemTime::now())
            .unwrap();
        let chain = der_of(intermediate.intermediates_pem());
        let (_, cert) = X509Certificate::from_der(&chain[0]).unwrap();
        let root_der = der_of(root.trust_bundle_pem());
        let (_, root_cert) = X509Certificate::from_der(&root_der[0]).unwrap();
        cert.verify_signature(Some(root_cert.public_key())).unwrap();
    }

    #[test]
    fn a_device_that_refuses_or_holds_another_key_is_named_with_its_reason() {
        let e = profile()
            .root_for_device(device(true), Duration::from_secs(DAY), SystemTime::now())
            .unwrap_err();
        assert_eq!(
            e,
            CaError::Device("signing failed: the token is not logged in".into())
        );
        let root = profile()
            .root_for_device(device(false), Duration::from_secs(DAY), SystemTime::now())
            .unwrap();
        let e = Ca::from_device(root.trust_bundle_pem(), device(false), None).unwrap_err();
        assert!(
            matches!(e, CaError::Device(ref m) if m.contains("does not match")),
            "{e}"
        );
        let p384 = CaProfile {
            key_type: CaKeyType::EcdsaP384,
            ..profile()
        };
        assert!(matches!(
            p384.root_for_device(device(false), Duration::from_secs(DAY), SystemTime::now()),
            Err(CaError::Device(_))
        ));
    }
}
