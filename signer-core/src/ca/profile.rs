//! What every CA certificate we make carries: the [`CaProfile`].
//!
//! Roots and signing intermediates differ only in who signs them, how long they live and how
//! many CAs may follow them (a root: one, the intermediate; an intermediate: none). Both are
//! CAs for keyCertSign and CRL signing and name the trust domain's SPIFFE ID. When the
//! operator asks for it they also carry a critical name constraint that permits only URIs whose
//! host is the trust domain, so even a stolen intermediate cannot mint an identity outside it:
//! Go's crypto/x509 and OpenSSL enforce it, but rustls-webpki refuses every chain that carries
//! one, so it is off by default (every TLS stack accepts the default profile). rcgen has no
//! URI subtree, so the extension is encoded with x509-cert's `NameConstraints`.

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa,
    KeyUsagePurpose, SanType,
};
use x509_cert::der::asn1::Ia5String;
use x509_cert::der::{self, Encode};
use x509_cert::ext::pkix::constraints::name::{GeneralSubtree, NameConstraints};
use x509_cert::ext::pkix::name::GeneralName;

use super::{CaError, CaKeyType};
use crate::spiffe::TrustDomain;
use crate::time::to_offset;
use crate::x509::random_serial;

/// id-ce-nameConstraints (RFC 5280 §4.2.1.10).
const NAME_CONSTRAINTS_OID: &[u64] = &[2, 5, 29, 30];

/// How the CAs we make look: key type, trust domain, and whether they carry the URI name
/// constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaProfile {
    pub key_type: CaKeyType,
    pub trust_domain: TrustDomain,
    /// Whether roots and intermediates carry a permitted-subtree URI name constraint for the
    /// trust domain (off by default). rustls-webpki (0.103.12 and later) refuses every chain
    /// that carries a URI name constraint, so rustls-based workloads need it off.
    pub name_constraints: bool,
}

/// Which tier a CA certificate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Root,
    Intermediate,
}

impl CaProfile {
    /// The default profile for `trust_domain`: ECDSA P-256, no name constraint.
    pub fn new(trust_domain: TrustDomain) -> Self {
        CaProfile {
            key_type: CaKeyType::default(),
            trust_domain,
            name_constraints: false,
        }
    }

    /// The parameters of a CA certificate of `tier`, valid over `[not_before, not_after]`
    /// (Unix seconds).
    pub(crate) fn params(
        &self,
        tier: Tier,
        not_before: i64,
        not_after: i64,
    ) -> Result<CertificateParams, CaError> {
        let generate = |e: rcgen::Error| CaError::Generate(e.to_string());
        let td = &self.trust_domain;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "podcert-signer");
        let (common_name, path_len) = match tier {
            Tier::Root => (format!("podcert-signer root CA for {td}"), 1),
            Tier::Intermediate => (format!("podcert-signer signing CA for {td}"), 0),
        };
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names =
            vec![SanType::URI(td.id().as_str().try_into().map_err(generate)?)];
        if self.name_constraints {
            params.custom_extensions.push(name_constraint(td)?);
        }
        params.use_authority_key_identifier_extension = tier == Tier::Intermediate;
        params.serial_number = Some(random_serial());
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        Ok(params)
    }
}

/// A critical nameConstraints extension permitting URIs whose host is exactly `td` (RFC 5280:
/// a URI constraint without a leading period names one host).
fn name_constraint(td: &TrustDomain) -> Result<CustomExtension, CaError> {
    let generate = |e: der::Error| CaError::Generate(format!("encoding the name constraint: {e}"));
    let constraints = NameConstraints {
        permitted_subtrees: Some(vec![GeneralSubtree {
            base: GeneralName::UniformResourceIdentifier(
                Ia5String::new(td.as_str()).map_err(generate)?,
            ),
            minimum: 0,
            maximum: None,
        }]),
        excluded_subtrees: None,
    };
    let mut ext = CustomExtension::from_oid_content(
        NAME_CONSTRAINTS_OID,
        constraints.to_der().map_err(generate)?,
    );
    ext.set_criticality(true);
    Ok(ext)
}
