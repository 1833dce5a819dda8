//! The decision: one [`Request`] in, one [`Decision`] out.
//!
//! [`Signer::decide`] runs the checks cheapest first — annotations, identity names, key type,
//! proof of possession, names, usage, lifetime — and either denies with the first failed
//! check's reason or signs an X.509-SVID (contract §7) for the requested key, which the
//! [`crate::self_check`] reads back before it is returned. Errors are reserved for what is not
//! the request's fault (the CA expires too soon, signing failed, the self-check failed): the
//! controller retries those and never writes them as `Denied` or `Failed`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, IsCa, SanType};

use crate::annotations::{self, Allowed, AnnotationKey, Asked};
use crate::ca::Ca;
use crate::identity::Grant;
use crate::key::SubjectKey;
use crate::policy::{MIN_LIFETIME_SECONDS, Policy, Validity};
use crate::proof::verify_possession;
use crate::request::{Decision, Denial, DenyReason, Issued, Request};
use crate::self_check::{self, Expected};
use crate::spiffe::SpiffeId;
use crate::time::unix_seconds;
use crate::time::{from_unix_seconds, to_offset};
use crate::usage::Usage;
use crate::x509::{certificate_pem, random_serial};

/// What the controller found live about a request's pod, for a grant that asks for names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// DNS names of the Services in the pod's namespace whose selectors match its labels.
    pub service_dns_names: Vec<String>,
    /// The pod's IP addresses.
    pub pod_ips: Vec<IpAddr>,
}

/// Why a request could not be decided now; never the request's fault, so retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error(
        "the CA certificate is valid only until {ca_not_after} (Unix time), leaving less than {MIN_LIFETIME_SECONDS}s for a new certificate"
    )]
    CaExpiresTooSoon { ca_not_after: i64 },
    #[error("the CA certificate is not valid before {ca_not_before} (Unix time)")]
    CaNotYetValid { ca_not_before: i64 },
    #[error("signing the certificate failed: {0}")]
    Sign(String),
    /// The signed leaf is not what was decided ([`crate::self_check`]): a bug in issuance,
    /// caught before the leaf left.
    #[error("the signed certificate failed its self-check: {0}")]
    SelfCheck(String),
}

/// What the checks decided a certificate must be.
struct Decided<'r> {
    key: SubjectKey<'r>,
    spiffe_id: SpiffeId,
    /// DNS names and IPs beside the SPIFFE ID.
    names: Vec<SanType>,
    validity: Validity,
    usage: Usage,
}

/// No rule, no annotations.
static NO_ANNOTATIONS: BTreeSet<AnnotationKey> = BTreeSet::new();

/// A policy and a CA: everything needed to decide requests. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Signer {
    policy: Arc<Policy>,
    ca: Arc<Ca>,
    /// A corruption of the signing path, for the self-check's tests.
    #[cfg(test)]
    fault: Option<faults::Fault>,
}

impl Signer {
    pub fn new(policy: Arc<Policy>, ca: Arc<Ca>) -> Self {
        Signer {
            policy,
            ca,
            #[cfg(test)]
            fault: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Decides `request` as of `now`, with the signer's own settings (no identity policy).
    pub fn decide(&self, request: &Request, now: SystemTime) -> Result<Decision, IssueError> {
        self.decide_under(None, request, &Placement::default(), now)
    }

    /// Decides `request` under the identity policy's `grant` (None: no policy), with the
    /// names found for its pod.
    pub fn decide_under(
        &self,
        grant: Option<&Grant>,
        request: &Request,
        placement: &Placement,
        now: SystemTime,
    ) -> Result<Decision, IssueError> {
        match self.check(grant, request, placement, now) {
            Ok(decided) => self.issue(decided).map(Decision::Issue),
            Err(Checked::Deny(d)) => Ok(Decision::Deny(d)),
            Err(Checked::Error(e)) => Err(e),
        }
    }

    fn check<'r>(
        &self,
        grant: Option<&Grant>,
        request: &'r Request,
        placement: &Placement,
        now: SystemTime,
    ) -> Result<Decided<'r>, Checked> {
        check_pod_uid(&request.pod_uid)?;
        let may_set = Allowed {
            domain: self.policy.annotation_domain(),
            keys: grant.map_or(&NO_ANNOTATIONS, |g| &g.user_annotations),
            rule: grant.map(|g| g.rule.as_str()),
        };
        let asked = annotations::read(&request.unverified_user_annotations, &may_set)?;
        let template = grant
            .and_then(|g| g.template.as_ref())
            .unwrap_or(self.policy.template());
        let spiffe_id = template
            .render(&request.namespace, &request.service_account_name)
            .map_err(|e| Denial::new(DenyReason::InvalidIdentity, e.to_string()))?;
        // A rule's key types only narrow the signer's (`--allowed-key-types`).
        let allowed = self.policy.allowed_key_types();
        let narrowed: Option<Vec<_>> = grant.and_then(|g| g.key_types.as_ref()).map(|kts| {
            kts.iter()
                .copied()
                .filter(|k| allowed.contains(k))
                .collect()
        });
        let key_types = narrowed.as_deref().unwrap_or(allowed);
        let key = verify_possession(&request.key_material, &request.pod_uid, key_types)?;
        let names = match grant {
            Some(g) => extra_names(g, placement, &asked, &may_set)?,
            None => Vec::new(),
        };
        let usage = usage(grant, &asked, &may_set)?;
        // A rule's lifetime only shortens (identity.rs refuses one above the signer's), and a
        // workload's only shortens the rule's.
        let cap = lifetime_cap(&self.policy, grant, &asked, &may_set)?;
        let mut validity = self
            .policy
            .validity(request.max_expiration_seconds.min(cap), now)?;

        // A leaf must not begin before its CA: backdated past a CA made moments ago (an
        // upstream's, which backdates nothing), it starts with the CA instead, its lifetime
        // kept; a CA that is not valid yet at all signs nothing.
        let ca_not_before = self.ca.not_before_unix();
        if validity.not_before < ca_not_before {
            if unix_seconds(now) < ca_not_before {
                return Err(Checked::Error(IssueError::CaNotYetValid { ca_not_before }));
            }
            let lifetime = validity.not_after.saturating_sub(validity.not_before);
            validity = self
                .policy
                .window(ca_not_before, ca_not_before.saturating_add(lifetime));
        }
        // A leaf must not outlive its CA; shorten it, but never below the API's minimum.
        if validity.not_after > self.ca.not_after_unix() {
            let not_after = self.ca.not_after_unix();
            if not_after.saturating_sub(validity.not_before) < MIN_LIFETIME_SECONDS {
                return Err(Checked::Error(IssueError::CaExpiresTooSoon {
                    ca_not_after: not_after,
                }));
            }
            validity = self.policy.window(validity.not_before, not_after);
        }
        Ok(Decided {
            key,
            spiffe_id,
            names,
            validity,
            usage,
        })
    }

    fn issue(&self, decided: Decided<'_>) -> Result<Issued, IssueError> {
        let Decided {
            key,
            spiffe_id,
            names,
            validity: v,
            usage,
        } = decided;
        let sign_err = |e: rcgen::Error| IssueError::Sign(e.to_string());
        let mut params = CertificateParams::default();
        // contract §7: empty subject, so rcgen marks the SAN extension critical; exactly one
        // URI SAN, then any DNS and IP names the grant asked for.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            spiffe_id.as_str().try_into().map_err(sign_err)?,
        )];
        params.subject_alt_names.extend(names);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = usage.key_usages(key.is_rsa());
        params.extended_key_usages = usage.extended_key_usages();
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial();
        let serial_hex = serial
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        params.serial_number = Some(serial);
        params.not_before = to_offset(v.not_before);
        params.not_after = to_offset(v.not_after);

        let leaf = params
            .signed_by(&key.as_rcgen(), self.ca.issuer())
            .map_err(sign_err)?;
        let expected = Expected {
            spki_der: key.spki_der(),
            sans: &params.subject_alt_names,
            validity: v,
            usage,
            rsa: key.is_rsa(),
        };
        #[cfg(test)]
        let corrupted = faults::apply(self.fault, leaf.der(), params.clone(), &key, self);
        #[cfg(test)]
        let leaf_der: &[u8] = &corrupted;
        #[cfg(not(test))]
        let leaf_der: &[u8] = leaf.der();
        self_check::leaf(leaf_der, self.ca.signing_cert(), &expected)
            .map_err(IssueError::SelfCheck)?;
        let mut chain_pem = certificate_pem(leaf_der);
        chain_pem.push_str(self.ca.intermediates_pem());
        Ok(Issued {
            chain_pem,
            not_before: from_unix_seconds(v.not_before),
            not_after: from_unix_seconds(v.not_after),
            begin_refresh_at: from_unix_seconds(v.begin_refresh_at),
            spiffe_id,
            key_type: key.key_type(),
            serial_hex,
        })
    }
}

enum Checked {
    Deny(Denial),
    Error(IssueError),
}

impl From<Denial> for Checked {
    fn from(d: Denial) -> Self {
        Checked::Deny(d)
    }
}

/// The API server requires `spec.podUID` (non-empty, at most 128 characters) and the proof
/// of possession signs it; we do not rely on either, so a request without one is denied.
fn check_pod_uid(pod_uid: &str) -> Result<(), Denial> {
    if pod_uid.is_empty() {
        return Err(Denial::new(
            DenyReason::InvalidIdentity,
            "spec.podUID is empty; a request must name the UID of the pod it is for",
        ));
    }
    if pod_uid.len() > MAX_POD_UID_LEN {
        return Err(Denial::new(
            DenyReason::InvalidIdentity,
            format!("spec.podUID is longer than {MAX_POD_UID_LEN} characters"),
        ));
    }
    Ok(())
}

/// The SANs beside the SPIFFE ID that `grant` asks for, from what the controller found — or,
/// when the workload chose among the Service names (`<domain>/dns-names`), those alone, each
/// one the policy would have given. A name that is not a valid DNS name is the controller's
/// bug or a hostile Service name: the request is denied rather than issued with a name the
/// API server or a client would reject.
fn extra_names(
    grant: &Grant,
    placement: &Placement,
    asked: &Asked,
    allowed: &Allowed<'_>,
) -> Result<Vec<SanType>, Denial> {
    let mut names = Vec::new();
    if grant.dns_names.services {
        let services = &placement.service_dns_names;
        let chosen: &[String] = match &asked.dns_names {
            Some(chosen) => {
                if let Some(other) = chosen.iter().find(|n| !services.contains(n)) {
                    let mut offered: Vec<&str> =
                        services.iter().map(String::as_str).take(20).collect();
                    if services.len() > offered.len() {
                        offered.push("...");
                    }
                    return Err(allowed.deny(
                        AnnotationKey::DnsNames,
                        format_args!(
                            "{other:?} is not a name of a Service that selects this pod; rule {:?} gives {}",
                            grant.rule,
                            if offered.is_empty() { "none".to_string() } else { offered.join(", ") }
                        ),
                    ));
                }
                chosen
            }
            None => services,
        };
        for name in chosen {
            if !crate::names::is_dns1123_subdomain(name) {
                return Err(Denial::new(
                    DenyReason::InvalidIdentity,
                    format!("the Service DNS name {name:?} is not a valid DNS name"),
                ));
            }
            let ia5 = name.as_str().try_into().map_err(|_| {
                Denial::new(
                    DenyReason::InvalidIdentity,
                    format!("the Service DNS name {name:?} is not ASCII"),
                )
            })?;
            names.push(SanType::DnsName(ia5));
        }
    }
    if grant.dns_names.pod_ip {
        names.extend(placement.pod_ips.iter().copied().map(SanType::IpAddress));
    }
    Ok(names)
}

/// The usage: the rule's (both without one), or the narrower one the workload asked for.
fn usage(grant: Option<&Grant>, asked: &Asked, allowed: &Allowed<'_>) -> Result<Usage, Denial> {
    let granted = grant.map_or(Usage::Both, |g| g.usage);
    match asked.usage {
        None => Ok(granted),
        Some(u) if granted.allows(u) => Ok(u),
        Some(u) => Err(allowed.deny(
            AnnotationKey::Usage,
            format_args!(
                "{u} is outside what rule {:?} grants ({granted})",
                allowed.rule.unwrap_or_default()
            ),
        )),
    }
}

/// The longest lifetime, in seconds: the rule's cap (none without one), or the shorter one
/// the workload asked for, which must lie within the rule's and the API's bounds.
fn lifetime_cap(
    policy: &Policy,
    grant: Option<&Grant>,
    asked: &Asked,
    allowed: &Allowed<'_>,
) -> Result<i64, Denial> {
    let seconds = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let rule_cap = grant.and_then(|g| g.lifetime).map(seconds);
    let Some(wanted) = asked.lifetime else {
        return Ok(rule_cap.unwrap_or(i64::MAX));
    };
    let show =
        |s: i64| humantime::format_duration(Duration::from_secs(s.unsigned_abs())).to_string();
    if wanted < MIN_LIFETIME_SECONDS {
        return Err(allowed.deny(
            AnnotationKey::Lifetime,
            format_args!(
                "{} is shorter than the {} every certificate must last",
                show(wanted),
                show(MIN_LIFETIME_SECONDS)
            ),
        ));
    }
    let most = rule_cap.unwrap_or_else(|| seconds(policy.max_leaf_lifetime()));
    if wanted > most {
        return Err(allowed.deny(
            AnnotationKey::Lifetime,
            format_args!(
                "{} is longer than rule {:?} allows ({})",
                show(wanted),
                allowed.rule.unwrap_or_default(),
                show(most)
            ),
        ));
    }
    Ok(wanted)
}

/// Upstream `validation.ValidatePodCertificateRequest`: UIDs are at most 128 characters.
const MAX_POD_UID_LEN: usize = 128;

#[cfg(test)]
mod faults {
    //! Deliberate corruptions of the signing path, each of which the self-check must catch:
    //! the leaf is signed again, differently, after the real one was made.

    use std::time::{Duration, SystemTime};

    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};

    use super::Signer;
    use crate::key::SubjectKey;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Fault {
        /// The leaf certifies a key nobody asked for.
        OtherKey,
        /// Another CA signs it.
        OtherCa,
        /// A DNS name nobody decided.
        ExtraName,
        /// codeSigning beside the decided usage.
        ExtraUsage,
        /// A day longer than decided.
        LongerValidity,
        /// One bit of the signature flipped.
        BadSignature,
    }

    impl Signer {
        pub(crate) fn with_fault(mut self, fault: Fault) -> Self {
            self.fault = Some(fault);
            self
        }
    }

    pub fn apply(
        fault: Option<Fault>,
        der: &[u8],
        mut params: CertificateParams,
        key: &SubjectKey<'_>,
        signer: &Signer,
    ) -> Vec<u8> {
        let issuer = signer.ca.issuer();
        let resign = |params: CertificateParams| {
            params
                .signed_by(&key.as_rcgen(), issuer)
                .unwrap()
                .der()
                .to_vec()
        };
        match fault {
            None => der.to_vec(),
            Some(Fault::OtherKey) => {
                let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                params.signed_by(&other, issuer).unwrap().der().to_vec()
            }
            Some(Fault::OtherCa) => {
                let profile = crate::CaProfile::new(signer.policy.trust_domain().clone());
                let other = profile
                    .root(Duration::from_secs(86_400 * 30), SystemTime::now())
                    .unwrap()
                    .load()
                    .unwrap();
                params
                    .signed_by(&key.as_rcgen(), other.issuer())
                    .unwrap()
                    .der()
                    .to_vec()
            }
            Some(Fault::ExtraName) => {
                params
                    .subject_alt_names
                    .push(SanType::DnsName("evil.example".try_into().unwrap()));
                resign(params)
            }
            Some(Fault::ExtraUsage) => {
                params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::CodeSigning);
                resign(params)
            }
            Some(Fault::LongerValidity) => {
                params.not_after += time::Duration::days(1);
                resign(params)
            }
            Some(Fault::BadSignature) => {
                let mut der = der.to_vec();
                let last = der.len() - 1;
                der[last] ^= 1;
                der
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The self-check, against a signing path corrupted on purpose.

    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::faults::Fault;
    use super::*;
    use crate::time::from_unix_seconds;
    use crate::{CaKeyType, CaPem, KeyMaterial, PolicyConfig};

    fn signer() -> Signer {
        let policy = Policy::new(&PolicyConfig::default()).unwrap();
        let pem = CaPem::generate(
            CaKeyType::EcdsaP256,
            policy.trust_domain(),
            Duration::from_secs(86_400 * 30),
            SystemTime::now(),
        )
        .unwrap();
        let ca = Ca::from_pem(&pem.cert_pem, &pem.key_pem, None).unwrap();
        Signer::new(Arc::new(policy), Arc::new(ca))
    }

    fn request(alg: &'static rcgen::SignatureAlgorithm) -> Request {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        Request {
            namespace: "shop".into(),
            pod_uid: "uid".into(),
            service_account_name: "web".into(),
            max_expiration_seconds: 86_400,
            unverified_user_annotations: BTreeMap::new(),
            key_material: KeyMaterial::StubCsr {
                der: params.serialize_request(&key).unwrap().der().to_vec(),
            },
        }
    }

    /// A signer under an intermediate valid from `not_before` (Unix seconds), certified by a
    /// root, as an upstream that backdates nothing makes one.
    fn signer_under_ca_from(not_before: i64) -> Signer {
        let policy = Policy::new(&PolicyConfig::default()).unwrap();
        let root_pem = CaPem::generate(
            CaKeyType::EcdsaP256,
            policy.trust_domain(),
            Duration::from_secs(86_400 * 30),
            SystemTime::now(),
        )
        .unwrap();
        let root = Ca::from_pem(&root_pem.cert_pem, &root_pem.key_pem, None).unwrap();
        let requested = crate::CaProfile::new(policy.trust_domain().clone())
            .intermediate_request(SystemTime::now())
            .unwrap();
        let mut csr =
            rcgen::CertificateSigningRequestParams::from_pem(requested.csr_pem()).unwrap();
        csr.params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        csr.params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        csr.params.not_before = crate::time::to_offset(not_before);
        csr.params.not_after = crate::time::to_offset(not_before + 7 * 86_400);
        let chain = csr.signed_by(root.issuer()).unwrap().pem();
        let ca = requested
            .certified(&chain, &root_pem.cert_pem, SystemTime::now())
            .unwrap();
        Signer::new(Arc::new(policy), Arc::new(ca))
    }

    #[test]
    fn a_leaf_under_a_ca_made_moments_ago_starts_with_the_ca_and_keeps_its_lifetime() {
        let now = SystemTime::now();
        let ca_from = unix_seconds(now) - 10;
        let signer = signer_under_ca_from(ca_from);
        let Decision::Issue(issued) = signer
            .decide(&request(&rcgen::PKCS_ECDSA_P256_SHA256), now)
            .unwrap()
        else {
            panic!("not issued")
        };
        assert_eq!(
            unix_seconds(issued.not_before),
            ca_from,
            "not backdated past its CA"
        );
        assert_eq!(
            issued.not_after.duration_since(issued.not_before).unwrap(),
            Duration::from_secs(86_400),
            "the lifetime asked for"
        );
        // Before the CA's notBefore there is nothing to sign with.
        let early = from_unix_seconds(ca_from - 100);
        let e = signer
            .decide(&request(&rcgen::PKCS_ECDSA_P256_SHA256), early)
            .unwrap_err();
        assert_eq!(
            e,
            IssueError::CaNotYetValid {
                ca_not_before: ca_from
            }
        );
    }

    #[test]
    fn every_corruption_of_the_signing_path_is_caught_and_nothing_is_issued() {
        for (fault, says) in [
            (Fault::OtherKey, "does not certify the requested key"),
            (Fault::OtherCa, "does not verify under the signing CA's key"),
            (Fault::ExtraName, "subjectAltName is not the decided one"),
            (
                Fault::ExtraUsage,
                "extendedKeyUsage is not the decided both",
            ),
            (Fault::LongerValidity, "not the decided"),
            (Fault::BadSignature, "does not verify"),
        ] {
            let signer = signer().with_fault(fault);
            match signer.decide(&request(&rcgen::PKCS_ECDSA_P256_SHA256), SystemTime::now()) {
                Err(IssueError::SelfCheck(m)) => assert!(m.contains(says), "{fault:?}: {m}"),
                other => panic!("{fault:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_uncorrupted_leaf_of_every_key_type_passes() {
        for alg in [
            &rcgen::PKCS_ED25519,
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        ] {
            let decision = signer().decide(&request(alg), SystemTime::now()).unwrap();
            assert!(matches!(decision, Decision::Issue(_)), "{decision:?}");
        }
    }
}
