//! Peer verification for SPIFFE X.509-SVIDs.
//!
//! [`SpiffeVerifier`] reads the peer's SPIFFE
//! ID, takes the bundle of the trust domain it names (X509-SVID §5: a peer's trust domain
//! chooses the bundle; none, and it is refused), checks the chain with rustls-webpki against
//! that bundle only for the right usage (serverAuth or clientAuth), then accepts the peer only
//! if its SPIFFE ID is one of the allowed IDs. A certificate that claims domain B but chains to
//! A's root is therefore refused even by a workload that trusts both.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use signer_core::spiffe::svid_id;

/// A trust bundle whose roots rustls-webpki cannot use as anchors.
#[derive(Debug, thiserror::Error)]
#[error("trust bundle of {domain}: {reason}")]
pub struct BundleError {
    pub domain: String,
    pub reason: String,
}

/// Accepts a peer whose X.509-SVID chains to its own trust domain's bundle, for the TLS
/// usage of its side, and whose SPIFFE ID is allowed.
#[derive(Debug)]
pub struct SpiffeVerifier {
    /// Trust domain → the anchors of its bundle.
    anchors: BTreeMap<String, Vec<TrustAnchor<'static>>>,
    allowed: Vec<String>,
    algorithms: WebPkiSupportedAlgorithms,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Rejected(String);

fn reject(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Rejected(
        message,
    )))))
}

impl SpiffeVerifier {
    pub fn new(
        bundles: &BTreeMap<String, Vec<CertificateDer<'static>>>,
        allowed: Vec<String>,
        provider: &CryptoProvider,
    ) -> Result<Self, BundleError> {
        let anchors = bundles
            .iter()
            .map(|(domain, roots)| {
                roots
                    .iter()
                    .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|a| (domain.clone(), a))
                    .map_err(|e| BundleError {
                        domain: domain.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok(SpiffeVerifier {
            anchors,
            allowed,
            algorithms: provider.signature_verification_algorithms,
        })
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<(), rustls::Error> {
        let id = svid_id(end_entity).map_err(|e| reject(e.to_string()))?;
        let domain = id.trust_domain();
        let id = id.to_string();
        let anchors = self.anchors.get(domain).ok_or_else(|| {
            reject(format!(
                "peer {id}: no trust bundle for trust domain {domain:?}"
            ))
        })?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| reject(format!("peer certificate: {e}")))?;
        cert.verify_for_usage(
            self.algorithms.all,
            anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| {
            // webpki fails closed on URI name constraints: say what to do about it.
            let hint = if matches!(e, webpki::Error::NameConstraintViolation) {
                " (rustls-webpki refuses chains with URI name constraints: the peer's signer must make its CAs without them, --ca-name-constraints=false)"
            } else {
                ""
            };
            reject(format!(
                "peer {id} does not chain to the trust bundle of {domain}: {e}{hint}"
            ))
        })?;
        if !self.allowed.contains(&id) {
            return Err(reject(format!("peer {id} is not allowed")));
        }
        Ok(())
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ClientCertVerifier for SpiffeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )
        .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The server is identified by its SPIFFE ID, not by the name we dialled.
        self.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )
        .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
