//! Kubelet-exact key material made by `tests/oracle` (Go standard library), CAs as operators
//! bring them, and one signer-core signer for tests that decide requests directly.
//!
//! Regenerate the keys with `cd tests/oracle && go run . keys > ../fixtures/kubelet-keys.json`.

use std::path::PathBuf;

use base64::Engine;
use serde::{Deserialize, Deserializer};

/// One key as a kubelet would hold it, with both proof formats.
#[derive(Debug, Clone, Deserialize)]
pub struct KubeletKey {
    /// The kubelet's `keyType` name, or `RSA2048` / `ECDSAP224` for refused types.
    pub key_type: String,
    /// Whether the API server admits this key type.
    pub supported: bool,
    pub pod_uid: String,
    #[serde(deserialize_with = "b64")]
    pub spki_der: Vec<u8>,
    /// Signature of `pod_uid` as the 1.34/1.35 kubelet makes it.
    #[serde(deserialize_with = "b64")]
    pub proof: Vec<u8>,
    /// Empty-template CSR as the 1.36+ kubelet makes it.
    #[serde(deserialize_with = "b64")]
    pub stub_csr_der: Vec<u8>,
    /// Validly signed, but with a subject and SANs.
    #[serde(deserialize_with = "b64")]
    pub non_empty_csr_der: Vec<u8>,
    #[serde(deserialize_with = "b64")]
    pub pkcs8_der: Vec<u8>,
}

impl KubeletKey {
    /// The private key as a PKCS#8 PEM block.
    pub fn key_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8_der.clone()))
    }
}

fn b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(serde::de::Error::custom)
}

/// `tests/` in the source tree.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every fixture key: the six supported types, then RSA2048 and ECDSAP224.
pub fn kubelet_keys() -> Vec<KubeletKey> {
    let path = tests_dir().join("fixtures/kubelet-keys.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("kubelet-keys.json parses")
}

/// A root as wave 1 generated it (`tls.crt`/`ca.crt` PEM, `tls.key` PEM): path length 0, so
/// it cannot sign a signing intermediate and signs leaves itself until it is rotated out.
pub fn single_tier_root_pem() -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "podcert-signer CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// A CA as cert-manager gives a BYO user: a P-384 root and a P-256 intermediate (path length
/// 0) below it, as (`tls.crt` = the intermediate, `tls.key`, `ca.crt` = the root) PEM.
pub fn intermediate_ca_pem(name: &str) -> (String, String, String) {
    intermediate_ca_pem_with_path_len(name, 0)
}

/// [`intermediate_ca_pem`] with the intermediate's path length `path_len`: with 1 or more, the
/// signer makes its signing intermediates below it.
pub fn intermediate_ca_pem_with_path_len(name: &str, path_len: u8) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.distinguished_name
        .push(DnType::CommonName, format!("{name} root"));
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_cert = root.self_signed(&root_key).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut inter = CertificateParams::new(Vec::<String>::new()).unwrap();
    inter
        .distinguished_name
        .push(DnType::CommonName, format!("{name} intermediate"));
    inter.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    inter.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    inter.use_authority_key_identifier_extension = true;
    let inter_cert = inter
        .signed_by(&key, &Issuer::new(root, &root_key))
        .unwrap();
    (inter_cert.pem(), key.serialize_pem(), root_cert.pem())
}

/// A signer with `config` and a fresh P-256 CA valid 30 days.
pub fn signer_with(config: &signer_core::PolicyConfig) -> signer_core::Signer {
    use signer_core::{CaKeyType, CaPem, Policy, Signer};
    let policy = Policy::new(config).unwrap();
    let pem = CaPem::generate(
        CaKeyType::EcdsaP256,
        policy.trust_domain(),
        std::time::Duration::from_secs(86_400 * 30),
        std::time::SystemTime::now(),
    )
    .unwrap();
    Signer::new(
        std::sync::Arc::new(policy),
        std::sync::Arc::new(pem.load().unwrap()),
    )
}

/// One signer for a test binary: the default policy and a fresh P-256 CA valid 30 days.
pub fn test_signer() -> &'static signer_core::Signer {
    static SIGNER: std::sync::OnceLock<signer_core::Signer> = std::sync::OnceLock::new();
    SIGNER.get_or_init(|| signer_with(&signer_core::PolicyConfig::default()))
}

/// [`test_signer`]'s decision, now, for `key_material` from pod `pod_uid` of service account
/// `sa` in namespace `ns`, asking for 24 h and carrying no annotations.
pub fn decide(pod_uid: &str, key_material: signer_core::KeyMaterial) -> signer_core::Decision {
    let request = signer_core::Request {
        namespace: "ns".into(),
        pod_uid: pod_uid.into(),
        service_account_name: "sa".into(),
        max_expiration_seconds: 86_400,
        unverified_user_annotations: Default::default(),
        key_material,
    };
    test_signer()
        .decide(&request, std::time::SystemTime::now())
        .expect("a healthy CA decides every request")
}
