//! The CA profiles of the matrix, and the cases: two SVIDs of each key type under each.
//!
//! Every profile is made by signer-core exactly as the controller makes it: a root (ours, or an
//! operator's), a signing intermediate under it, leaves signed by [`Signer::decide`] for the
//! kubelet's keys (`tests/fixtures`).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use signer_core::{
    Ca, CaKeyType, CaProfile, Decision, Grant, IdentityPolicy, KeyMaterial, Placement, Policy,
    PolicyConfig, Request, Signer, Subject, TrustDomain,
};

use super::{Case, Party};
use crate::fixtures::{KubeletKey, intermediate_ca_pem_with_path_len, kubelet_keys};

const TRUST_DOMAIN: &str = "example.org";
const DAY: Duration = Duration::from_secs(86_400);

/// A CA profile we ship, or a situation every workload meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Profile {
    /// What the signer makes with default flags: P-256 root and intermediate, no name constraint.
    Default,
    /// `--ca-name-constraints=true`: a URI name constraint for the trust domain on both CAs.
    Constrained,
    /// `--ca-key-type ECDSAP384`.
    RootP384,
    /// `--ca-key-type ED25519`.
    RootEd25519,
    /// An operator's CA: its P-384 root in `ca.crt`, its P-256 intermediate (path length 1) in
    /// `tls.crt`, and our signing intermediate under that.
    Byo,
    /// A root rotation's overlap: the bundle holds the old and the new root; the server's SVID
    /// chains to the old one, the client's to the new one.
    RotationOverlap,
}

impl Profile {
    pub const ALL: [Profile; 6] = [
        Profile::Default,
        Profile::Constrained,
        Profile::RootP384,
        Profile::RootEd25519,
        Profile::Byo,
        Profile::RotationOverlap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Constrained => "name-constrained",
            Profile::RootP384 => "P-384 root",
            Profile::RootEd25519 => "Ed25519 root",
            Profile::Byo => "BYO root + intermediate",
            Profile::RotationOverlap => "rotation overlap",
        }
    }

    /// (server's signer, client's signer, trust bundle).
    fn signers(self) -> (Signer, Signer, String) {
        let ca = |profile: &CaProfile| -> Ca {
            profile
                .root(365 * DAY, SystemTime::now())
                .unwrap()
                .load()
                .unwrap()
        };
        let (profile, root) = match self {
            Profile::Default => (ca_profile(), ca(&ca_profile())),
            Profile::Constrained => {
                let p = CaProfile {
                    name_constraints: true,
                    ..ca_profile()
                };
                (p.clone(), ca(&p))
            }
            Profile::RootP384 | Profile::RootEd25519 => {
                let key_type = if self == Profile::RootP384 {
                    CaKeyType::EcdsaP384
                } else {
                    CaKeyType::Ed25519
                };
                let p = CaProfile {
                    key_type,
                    ..ca_profile()
                };
                (p.clone(), ca(&p))
            }
            Profile::Byo => (ca_profile(), operator_ca()),
            Profile::RotationOverlap => {
                let (old, new) = (ca(&ca_profile()), ca(&ca_profile()));
                let roots = format!("{}{}", old.trust_bundle_pem(), new.trust_bundle_pem());
                let p = ca_profile();
                return (leader_signer(&old, &p), leader_signer(&new, &p), roots);
            }
        };
        let roots = root.trust_bundle_pem().to_owned();
        (
            leader_signer(&root, &profile),
            leader_signer(&root, &profile),
            roots,
        )
    }
}

fn ca_profile() -> CaProfile {
    CaProfile::new(TrustDomain::new(TRUST_DOMAIN).unwrap())
}

/// A signer as a leader makes it: a signing intermediate of `profile` under `root`.
fn leader_signer(root: &Ca, profile: &CaProfile) -> Signer {
    let intermediate = root
        .sign_intermediate(profile, 7 * DAY, SystemTime::now())
        .unwrap();
    let policy = Policy::new(&PolicyConfig {
        trust_domain: TRUST_DOMAIN.into(),
        ..Default::default()
    })
    .unwrap();
    Signer::new(Arc::new(policy), Arc::new(intermediate))
}

/// An operator's two-tier CA as cert-manager gives it (`tests/src/fixtures.rs`), with room
/// below its intermediate for our signing intermediate.
fn operator_ca() -> Ca {
    let (crt, key, root) = intermediate_ca_pem_with_path_len("Example Corp", 1);
    Ca::from_pem(&crt, &key, Some(&root)).unwrap()
}

/// The SVID `signer` issues for `key` to service account `sa`.
fn svid(signer: &Signer, key: &KubeletKey, sa: &str) -> Party {
    svid_with(signer, None, &Placement::default(), key, sa)
}

/// The Service DNS name the server's SVID carries for gRPC ([`named_svid`]), and the name a
/// gRPC client dials to reach service account `sa`.
fn service_name(sa: &str) -> String {
    format!("{sa}.interop.svc")
}

/// The server's SVID as gRPC's stock TLS needs it: issued under an identity-policy rule with
/// `dnsNames: {services: true}`, so it also carries the DNS name of the Service that selects
/// the pod.
fn named_svid(signer: &Signer, key: &KubeletKey) -> Party {
    static SERVICES: OnceLock<IdentityPolicy> = OnceLock::new();
    let identity = SERVICES.get_or_init(|| {
        policy("rules:\n  - name: services\n    namespaces: {names: [interop]}\n    dnsNames: {services: true}\n")
    });
    let placement = Placement {
        service_dns_names: vec![service_name("server")],
        pod_ips: vec![],
    };
    svid_with(
        signer,
        Some(grant(identity, "server")),
        &placement,
        key,
        "server",
    )
}

/// An identity policy of our trust domain.
fn policy(yaml: &str) -> IdentityPolicy {
    IdentityPolicy::parse(yaml, &TrustDomain::new(TRUST_DOMAIN).unwrap(), DAY).unwrap()
}

/// The grant `identity` gives service account `sa` of namespace `interop`.
fn grant<'p>(identity: &'p IdentityPolicy, sa: &str) -> &'p Grant {
    identity
        .decide(&Subject {
            namespace: "interop",
            namespace_labels: &BTreeMap::new(),
            service_account: sa,
        })
        .unwrap()
}

/// The SVID `signer` issues for `key` to service account `sa` under `grant`, with the names
/// found for its pod.
fn svid_with(
    signer: &Signer,
    grant: Option<&Grant>,
    placement: &Placement,
    key: &KubeletKey,
    sa: &str,
) -> Party {
    let request = Request {
        namespace: "interop".into(),
        pod_uid: key.pod_uid.clone(),
        service_account_name: sa.into(),
        max_expiration_seconds: 86_400,
        unverified_user_annotations: BTreeMap::new(),
        key_material: KeyMaterial::Pkix {
            spki_der: key.spki_der.clone(),
            proof: key.proof.clone(),
        },
    };
    let decision = signer
        .decide_under(grant, &request, placement, SystemTime::now())
        .unwrap();
    let Decision::Issue(issued) = decision else {
        panic!("{} was denied", key.key_type);
    };
    Party {
        chain_pem: issued.chain_pem,
        key_pem: key.key_pem(),
        spiffe_id: issued.spiffe_id.to_string(),
    }
}

/// Every cell: each profile × each key type the API server admits; then the two controls,
/// which every stack must refuse.
pub fn cases() -> Vec<Case> {
    let keys: Vec<KubeletKey> = kubelet_keys().into_iter().filter(|k| k.supported).collect();
    let mut cases = Vec::new();
    for profile in Profile::ALL {
        let (server, client, roots_pem) = profile.signers();
        for key in &keys {
            cases.push(Case {
                name: format!("{}/{}", profile.name(), key.key_type),
                cell: Some((profile, key.key_type.clone())),
                server: svid(&server, key, "server"),
                server_named: named_svid(&server, key),
                server_name: service_name("server"),
                client: svid(&client, key, "client"),
                roots_pem: roots_pem.clone(),
            });
        }
    }
    // The controls use a key every stack accepts (NSS 3.87 refuses Ed25519, the first
    // fixture): a refusal must be the control's, not the key type's.
    let key = keys
        .iter()
        .find(|k| k.key_type == "ECDSAP256")
        .expect("a P-256 fixture");
    let (server, _, roots_pem) = Profile::Default.signers();
    let (foreign, _, _) = Profile::Default.signers();
    cases.push(Case {
        name: CONTROL_UNTRUSTED_CLIENT.into(),
        cell: None,
        server: svid(&server, key, "server"),
        server_named: named_svid(&server, key),
        server_name: service_name("server"),
        client: svid(&foreign, key, "client"),
        roots_pem: roots_pem.clone(),
    });
    let mut impostor = svid(&server, key, "server");
    impostor.spiffe_id = format!("spiffe://{TRUST_DOMAIN}/ns/interop/sa/someone-else");
    cases.push(Case {
        name: CONTROL_WRONG_SERVER_ID.into(),
        cell: None,
        server: impostor,
        server_named: named_svid(&server, key),
        // gRPC's client names the server it expects by the host name it dials.
        server_name: service_name("someone-else"),
        client: svid(&server, key, "client"),
        roots_pem,
    });
    cases
}

/// A control: the client's SVID chains to a root the bundle does not hold.
pub const CONTROL_UNTRUSTED_CLIENT: &str = "control/untrusted client";
/// A control: the server is not the SPIFFE ID the client expects.
pub const CONTROL_WRONG_SERVER_ID: &str = "control/wrong server ID";

/// Per-rule usage (issue 30): service account `server-only` gets serverAuth alone,
/// `client-only` clientAuth alone.
const USAGE_POLICY: &str = "\
rules:
  - name: servers
    namespaces: {names: [interop]}
    serviceAccounts: {allow: [server-only]}
    usage: server
  - name: clients
    namespaces: {names: [interop]}
    serviceAccounts: {allow: [client-only]}
    usage: client
";

/// Handshakes between leaves of one usage each, P-256 under the default profile, and whether
/// a stack must accept each: a server-only leaf serving to a client-only one, accepted; a
/// client-only leaf serving, and a server-only one calling, refused.
pub fn usage_cases() -> Vec<(Case, bool)> {
    let key = kubelet_keys()
        .into_iter()
        .find(|k| k.key_type == "ECDSAP256")
        .expect("a P-256 fixture");
    let (signer, _, roots_pem) = Profile::Default.signers();
    let identity = policy(USAGE_POLICY);
    let leaf = |sa: &str| {
        let grant = grant(&identity, sa);
        svid_with(&signer, Some(grant), &Placement::default(), &key, sa)
    };
    let case = |name: &str, server: &str, client: &str| {
        let server_leaf = leaf(server);
        Case {
            name: format!("usage/{name}"),
            cell: None,
            server: server_leaf.clone(),
            // (gRPC is not among the stacks of these cases.)
            server_named: server_leaf,
            server_name: service_name(server),
            client: leaf(client),
            roots_pem: roots_pem.clone(),
        }
    };
    vec![
        (case("each in its role", "server-only", "client-only"), true),
        (
            case("client-only serving", "client-only", "client-only"),
            false,
        ),
        (
            case("server-only calling", "server-only", "server-only"),
            false,
        ),
    ]
}
