//! Start-up: the Kubernetes client and which API versions the cluster serves.
//!
//! [`connect`] builds the client from `--kubeconfig`/`--context`, or infers it the way kubectl
//! does (kube reads a multi-file `KUBECONFIG` itself), without kube's own retry layer: every
//! failed call reaches its caller, which retries on its own schedule ([`crate::runtime::retry`]'s
//! backoff, the lease loop's renew interval, the watchers' backoff). [`Cluster::discover`]
//! then finds the served PodCertificateRequest and ClusterTrustBundle versions; a transient discovery
//! failure is retried with the controller's backoff, so an API brownout at start never
//! becomes a crash loop. Only answers that need an operator end the process: no client
//! configuration, or no PodCertificateRequest API at all.

use kube::Client;
use kube::config::KubeConfigOptions;
use kube::core::ApiResource;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ClusterConfig;
use crate::requests::pcr::PcrVersion;
use crate::runtime::retry;

/// Served versions of clustertrustbundles, best first.
pub const CTB_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha1"];

/// The best served version of `plural` in certificates.k8s.io among `preference`, or None.
async fn discover(
    client: &Client,
    plural: &str,
    preference: &[&str],
) -> Result<Option<ApiResource>, kube::Error> {
    let group = match kube::discovery::group(client, crate::requests::pcr::GROUP).await {
        Ok(g) => g,
        Err(kube::Error::Discovery(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    for version in preference {
        if let Some((ar, _)) = group
            .versioned_resources(version)
            .into_iter()
            .find(|(ar, _)| ar.plural == plural)
        {
            return Ok(Some(ar));
        }
    }
    Ok(None)
}

/// Why the signer cannot start; each needs an operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
    #[error(
        "the cluster serves no PodCertificateRequest API (certificates.k8s.io v1, v1beta1 or v1alpha1). \
         On Kubernetes 1.35/1.36 enable the feature gate PodCertificateRequest=true (kube-apiserver, \
         kubelet, kube-controller-manager) and --runtime-config=certificates.k8s.io/v1beta1/podcertificaterequests=true \
         on kube-apiserver; on 1.34 use certificates.k8s.io/v1alpha1; from 1.37 it is served by default"
    )]
    PcrNotServed,
    #[error("cannot listen on the admin address: {0}")]
    Admin(#[source] std::io::Error),
    #[error("cannot listen on --secure-metrics-addr: {0}")]
    SecureMetrics(#[source] std::io::Error),
    #[error("cannot listen on --bundle-endpoint-addr: {0}")]
    BundleEndpoint(#[source] std::io::Error),
    #[error(
        "--bundle-endpoint-addr serves the bundle this signer publishes in a ClusterTrustBundle, \
         and this cluster serves no ClusterTrustBundle API (certificates.k8s.io v1beta1, or v1alpha1 \
         with the ClusterTrustBundle feature gate)"
    )]
    BundleEndpointWithoutCtb,
    #[error(
        "--federation-config publishes each imported bundle in a ClusterTrustBundle, and this \
         cluster serves no ClusterTrustBundle API (certificates.k8s.io v1beta1, or v1alpha1 with \
         the ClusterTrustBundle feature gate)"
    )]
    FederationWithoutCtb,
    #[error("the TLS client for the upstream authority: {0}")]
    UpstreamTls(String),
    #[error("the PKCS#11 token for root keys (--ca-pkcs11-*): {0}")]
    Token(#[source] crate::ca::pkcs11::TokenError),
    #[error("stopped before start-up finished")]
    Cancelled,
}

/// The client and the resources this cluster serves.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// The PodCertificateRequest version watched and written.
    pub pcr_version: PcrVersion,
    /// None when the cluster serves no ClusterTrustBundle API: signing goes on unpublished.
    pub ctb: Option<ApiResource>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("pcr", &self.pcr_version.api_version())
            .field("ctb", &self.ctb.as_ref().map(|c| &c.api_version))
            .finish_non_exhaustive()
    }
}

/// A client for the configured cluster.
pub async fn connect(config: &ClusterConfig) -> Result<Client, StartError> {
    let client_err = |e: &dyn std::fmt::Display| StartError::Client(e.to_string());
    let options = KubeConfigOptions {
        context: config.context.clone(),
        ..Default::default()
    };
    let mut kube_config = match &config.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| StartError::Client(format!("--kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| client_err(&e))?
        }
        None if config.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| client_err(&e))?,
        None => kube::Config::infer().await.map_err(|e| client_err(&e))?,
    };
    // kube's client would otherwise retry 429, 503 and 504 inside one call, up to 15 times
    // with a backoff that grows to minutes: a request could hang through an outage unseen
    // (no error counted, a leader's round or a term's shutdown held up). Those answers come
    // back to the caller instead, which counts them and retries on its own schedule.
    kube_config.default_retry = false;
    Client::try_from(kube_config).map_err(|e| client_err(&e))
}

impl Cluster {
    /// Finds the served versions, retrying transient failures until `cancel`.
    pub async fn discover(client: Client, cancel: &CancellationToken) -> Result<Self, StartError> {
        let pcr_versions = PcrVersion::PREFERENCE.map(PcrVersion::as_str);
        let (pcr, ctb) = retry::retry("API discovery", cancel, || async {
            let pcr = discover(&client, "podcertificaterequests", &pcr_versions).await?;
            let ctb = discover(&client, "clustertrustbundles", &CTB_VERSIONS).await?;
            Ok::<_, kube::Error>((pcr, ctb))
        })
        .await
        .ok_or(StartError::Cancelled)?;
        let pcr_version = pcr
            .and_then(|ar| PcrVersion::named(&ar.version))
            .ok_or(StartError::PcrNotServed)?;
        info!(
            api_version = %pcr_version.api_version(),
            "watching PodCertificateRequests"
        );
        match &ctb {
            Some(ar) => info!(api_version = %ar.api_version, "publishing the trust bundle"),
            None => warn!(
                "the cluster serves no ClusterTrustBundle API: the trust bundle is not published (enable the \
                 ClusterTrustBundle feature gate and certificates.k8s.io/v1beta1/clustertrustbundles runtime \
                 config); signing goes on"
            ),
        }
        Ok(Cluster {
            client,
            pcr_version,
            ctb,
        })
    }
}
