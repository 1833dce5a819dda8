//! The control plane's own PKI, as `hack/local-up-cluster.sh` and envtest make one: a cluster
//! CA that signs kube-apiserver's serving certificate and every client certificate (the user
//! is the CN, the group the O — how kube-apiserver's `--client-ca-file` authenticator reads
//! them), and the service-account key pair kube-apiserver signs and checks tokens with.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A client certificate and its key (PEM).
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

fn key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key")
}

impl Pki {
    /// Generates the PKI into `dir`: `ca.crt`, `apiserver.crt`/`.key`, `sa.key`/`sa.pub`.
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = key();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "podcert test cluster CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_pem = ca.clone().self_signed(&ca_key).unwrap().pem();
        let pki = Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            issuer: Issuer::new(ca, ca_key),
        };
        std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();

        let serving_key = key();
        let mut serving = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
        ])
        .unwrap();
        serving
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        serving.subject_alt_names.push(SanType::IpAddress(
            std::net::Ipv4Addr::new(10, 0, 0, 1).into(),
        ));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = serving.signed_by(&serving_key, &pki.issuer).unwrap();
        std::fs::write(dir.join("apiserver.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("apiserver.key"), serving_key.serialize_pem()).unwrap();

        let sa = key();
        std::fs::write(dir.join("sa.key"), sa.serialize_pem()).unwrap();
        std::fs::write(dir.join("sa.pub"), sa.public_key_pem()).unwrap();
        pki
    }

    /// A client certificate for `user`, in `group` if given (rcgen writes one O per name).
    pub fn client(&self, user: &str, group: Option<&str>) -> ClientCert {
        let key = key();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(g) = group {
            params.distinguished_name.push(DnType::OrganizationName, g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}
