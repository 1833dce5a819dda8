//! The decision: one [`Request`] in, one [`Decision`] out.
//!
//! [`Signer::decide`] runs the checks cheapest first — annotations, identity names, key type,
//! proof of possession, lifetime — and either denies with the first failed check's reason or
//! signs an X.509-SVID (contract §7) for the requested key. Errors are reserved for what is not
//! the request's fault (the CA expires too soon, signing failed): the controller retries
//! those and never writes them as `Denied` or `Failed`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
};

use crate::ca::Ca;
use crate::identity::Grant;
use crate::key::SubjectKey;
use crate::policy::{MIN_LIFETIME_SECONDS, Policy, Validity};
use crate::proof::verify_possession;
use crate::request::{Decision, Denial, DenyReason, Issued, Request};
use crate::spiffe::SpiffeId;
use crate::time::{from_unix_seconds, to_offset};
use crate::x509::random_serial;

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
}

/// A policy and a CA: everything needed to decide requests. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Signer {
    policy: Arc<Policy>,
    ca: Arc<Ca>,
}

impl Signer {
    pub fn new(policy: Arc<Policy>, ca: Arc<Ca>) -> Self {
        Signer { policy, ca }
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
            Ok((key, spiffe_id, names, validity)) => self
                .issue(&key, spiffe_id, names, validity)
                .map(Decision::Issue),
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
    ) -> Result<(SubjectKey<'r>, SpiffeId, Vec<SanType>, Validity), Checked> {
        check_pod_uid(&request.pod_uid)?;
        self.policy
            .check_annotations(&request.unverified_user_annotations)?;
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
        let names = grant.map_or(Ok(Vec::new()), |g| extra_names(g, placement))?;
        // A rule's lifetime only shortens (identity.rs refuses one above the signer's).
        let cap = grant
            .and_then(|g| g.lifetime)
            .map_or(i64::MAX, |l| i64::try_from(l.as_secs()).unwrap_or(i64::MAX));
        let mut validity = self
            .policy
            .validity(request.max_expiration_seconds.min(cap), now)?;

        // A leaf must not outlive its CA; shorten it, but never below the API's minimum.
        if validity.not_before < self.ca.not_before_unix() {
            return Err(Checked::Error(IssueError::CaNotYetValid {
                ca_not_before: self.ca.not_before_unix(),
            }));
        }
        if validity.not_after > self.ca.not_after_unix() {
            let not_after = self.ca.not_after_unix();
            if not_after.saturating_sub(validity.not_before) < MIN_LIFETIME_SECONDS {
                return Err(Checked::Error(IssueError::CaExpiresTooSoon {
                    ca_not_after: not_after,
                }));
            }
            validity = self.policy.window(validity.not_before, not_after);
        }
        Ok((key, spiffe_id, names, validity))
    }

    fn issue(
        &self,
        key: &SubjectKey<'_>,
        spiffe_id: SpiffeId,
        names: Vec<SanType>,
        v: Validity,
    ) -> Result<Issued, IssueError> {
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
        params.key_usages = if key.is_rsa() {
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ]
        } else {
            vec![KeyUsagePurpose::DigitalSignature]
        };
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
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
        let mut chain_pem = leaf.pem();
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

/// The SANs beside the SPIFFE ID that `grant` asks for, from what the controller found. A
/// name that is not a valid DNS name is the controller's bug or a hostile Service name: the
/// request is denied rather than issued with a name the API server or a client would reject.
fn extra_names(grant: &Grant, placement: &Placement) -> Result<Vec<SanType>, Denial> {
    let mut names = Vec::new();
    if grant.dns_names.services {
        for name in &placement.service_dns_names {
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

/// Upstream `validation.ValidatePodCertificateRequest`: UIDs are at most 128 characters.
const MAX_POD_UID_LEN: usize = 128;
