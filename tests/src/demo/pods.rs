//! What the demo's kubelet does for each pod: a fresh key of the pod's key type, the request
//! it files with either proof format, and, once issued, the leaf described and two workloads
//! speaking mTLS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, RsaKeySize, SigningKey};
use serde_json::json;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Issued, SIGNER_NAME, Workload};
use crate::kubelet::Format;

/// A fresh key of the kubelet's `keyType`.
pub(super) fn make_key(key_type: &str) -> Result<KeyPair, String> {
    let made = match key_type {
        "ED25519" => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        "ECDSAP256" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        "ECDSAP384" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        "ECDSAP521" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512),
        "RSA3072" => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072),
        other => return Err(format!("no key type {other}")),
    };
    made.map_err(|e| format!("generating a {key_type} key: {e}"))
}

/// The request a kubelet files for pod `pod` of workload `w`.
pub(super) fn request_body(
    w: &Workload,
    pod: &str,
    pod_uid: &str,
    key: &KeyPair,
) -> Result<serde_json::Value, String> {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut spec = json!({
        "signerName": SIGNER_NAME, "podName": pod, "podUID": pod_uid,
        "serviceAccountName": w.service_account, "serviceAccountUID": crate::random_uid(),
        "nodeName": "demo-node", "nodeUID": "demo-node-uid", "maxExpirationSeconds": 86_400,
    });
    match w.format {
        Format::Csr => {
            // Go's x509.CreateCertificateRequest with an empty template: no subject, nothing else.
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            let csr = params
                .serialize_request(key)
                .map_err(|e| format!("making a CSR: {e}"))?;
            spec["stubPKCS10Request"] = b64(csr.der()).into();
        }
        Format::Pkix => {
            // The 1.35 kubelet signs the pod UID: Ed25519 plainly, ECDSA over SHA-256.
            if !matches!(w.key_type, "ED25519" | "ECDSAP256") {
                return Err(format!("no pkix proof made here for {}", w.key_type));
            }
            let proof = key
                .sign(pod_uid.as_bytes())
                .map_err(|e| format!("signing the pod UID: {e}"))?;
            spec["pkixPublicKey"] = b64(&key.subject_public_key_info()).into();
            spec["proofOfPossession"] = b64(&proof).into();
        }
    }
    Ok(json!({
        "apiVersion": "certificates.k8s.io/v1beta1", "kind": "PodCertificateRequest",
        "metadata": {
            "generateName": format!("{pod}-"), "namespace": w.namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": pod_uid, "controller": true}],
        },
        "spec": spec,
    }))
}

/// The leaf's SPIFFE ID (read as the example workload reads it), serial (hex) and lifetime.
pub(super) fn describe_leaf(chain_pem: &str) -> Result<(String, String, Duration), String> {
    let leaf = pem::parse_many(chain_pem)
        .map_err(|e| format!("the chain is not PEM: {e}"))?
        .into_iter()
        .next()
        .ok_or("an empty chain")?;
    let spiffe_id = spiffe_mtls::spiffe_id(&leaf.contents().to_vec().into())
        .map_err(|e| format!("the leaf: {e}"))?;
    let (_, cert) = X509Certificate::from_der(leaf.contents())
        .map_err(|e| format!("the leaf does not parse: {e}"))?;
    let validity = cert.validity();
    let lifetime = (validity.not_after.timestamp() - validity.not_before.timestamp()).max(0);
    Ok((
        spiffe_id,
        cert.raw_serial_as_string().replace(':', ""),
        Duration::from_secs(lifetime as u64),
    ))
}

/// `client` calls `server`, each reading its credential folder; each accepts only the other's
/// SPIFFE ID.
pub(super) async fn mtls(client: &Issued, server: &Issued) -> Result<String, String> {
    let folder = |i: &Issued| spiffe_mtls::CredentialFiles::folder(i.bundle.parent().unwrap());
    let server_files = Arc::new(folder(server));
    let client_files = folder(client);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let serving = tokio::spawn(spiffe_mtls::serve(
        listener,
        server_files,
        vec![client.spiffe_id.clone()],
        |_| {},
    ));
    let exchange =
        spiffe_mtls::exchange(addr, &client_files, std::slice::from_ref(&server.spiffe_id)).await;
    serving.abort();
    let x = exchange.map_err(|e| format!("the mTLS handshake failed: {e}"))?;
    Ok(format!(
        "{} -> {}: {}",
        client.spiffe_id,
        x.peer,
        x.reply.trim_end()
    ))
}

pub(super) fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}
