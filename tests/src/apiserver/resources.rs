//! What the server serves: the resource types, and the versions of each a given Kubernetes
//! release serves ([`ServerOptions`]).

use std::time::Duration;

/// A resource type the server serves.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: &'static str,
    pub versions: Vec<&'static str>,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub has_status: bool,
}

impl ResourceType {
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }
}

/// Which Kubernetes the server pretends to be.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Served versions of podcertificaterequests (empty: not served).
    pub pcr_versions: Vec<&'static str>,
    /// Served versions of clustertrustbundles (empty: not served).
    pub ctb_versions: Vec<&'static str>,
    /// How many changes are kept for watches before 410 Gone.
    pub history_limit: usize,
    /// PCRs older than this are deleted (kube-controller-manager does it at 30 minutes).
    pub pcr_gc_after: Duration,
    /// Where to listen: a loopback address (port 0 picks a free port).
    pub listen: std::net::SocketAddr,
    /// The wall clock status times are checked against ("within 5 minutes of
    /// kube-apiserver's current time"): the system's, or the signer's compressed clock in a
    /// time-compressed run. Object timestamps and garbage collection stay on real time.
    pub clock: signer_core::time::Clock,
}

impl ServerOptions {
    /// 1.35/1.36 with the beta APIs enabled.
    pub fn v1beta1() -> Self {
        ServerOptions {
            pcr_versions: vec!["v1beta1"],
            ctb_versions: vec!["v1beta1"],
            history_limit: 100_000,
            pcr_gc_after: Duration::from_secs(1800),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            clock: signer_core::time::Clock::system(),
        }
    }

    /// 1.37: GA, v1 preferred and v1beta1 still served.
    pub fn v1_and_v1beta1() -> Self {
        ServerOptions {
            pcr_versions: vec!["v1", "v1beta1"],
            ctb_versions: vec!["v1", "v1beta1"],
            ..Self::v1beta1()
        }
    }

    /// Only v1 served (a future release without the beta).
    pub fn v1_only() -> Self {
        ServerOptions {
            pcr_versions: vec!["v1"],
            ctb_versions: vec!["v1"],
            ..Self::v1beta1()
        }
    }

    /// 1.34 with the alpha gate on.
    pub fn v1alpha1() -> Self {
        ServerOptions {
            pcr_versions: vec!["v1alpha1"],
            ctb_versions: vec!["v1beta1"],
            ..Self::v1beta1()
        }
    }

    pub(super) fn resources(&self) -> Vec<ResourceType> {
        let mut r = vec![
            ResourceType {
                group: "",
                versions: vec!["v1"],
                plural: "secrets",
                kind: "Secret",
                namespaced: true,
                has_status: false,
            },
            ResourceType {
                group: "",
                versions: vec!["v1"],
                plural: "events",
                kind: "Event",
                namespaced: true,
                has_status: false,
            },
            ResourceType {
                group: "events.k8s.io",
                versions: vec!["v1"],
                plural: "events",
                kind: "Event",
                namespaced: true,
                has_status: false,
            },
            ResourceType {
                group: "coordination.k8s.io",
                versions: vec!["v1"],
                plural: "leases",
                kind: "Lease",
                namespaced: true,
                has_status: false,
            },
        ];
        // What the identity policy reads: namespace labels, pods, Services.
        for (plural, kind, namespaced) in [
            ("namespaces", "Namespace", false),
            ("pods", "Pod", true),
            ("services", "Service", true),
        ] {
            r.push(ResourceType {
                group: "",
                versions: vec!["v1"],
                plural,
                kind,
                namespaced,
                has_status: plural != "namespaces",
            });
        }
        for (plural, kind, namespaced) in [
            ("roles", "Role", true),
            ("rolebindings", "RoleBinding", true),
            ("clusterroles", "ClusterRole", false),
            ("clusterrolebindings", "ClusterRoleBinding", false),
        ] {
            r.push(ResourceType {
                group: "rbac.authorization.k8s.io",
                versions: vec!["v1"],
                plural,
                kind,
                namespaced,
                has_status: false,
            });
        }
        if !self.pcr_versions.is_empty() {
            r.push(ResourceType {
                group: "certificates.k8s.io",
                versions: self.pcr_versions.clone(),
                plural: "podcertificaterequests",
                kind: "PodCertificateRequest",
                namespaced: true,
                has_status: true,
            });
        }
        if !self.ctb_versions.is_empty() {
            r.push(ResourceType {
                group: "certificates.k8s.io",
                versions: self.ctb_versions.clone(),
                plural: "clustertrustbundles",
                kind: "ClusterTrustBundle",
                namespaced: false,
                has_status: false,
            });
        }
        r
    }
}
