//! Publishing the CA roots in a ClusterTrustBundle, and keeping them there.
//!
//! The bundle is named `<signer-name with / as :>:<suffix>` (SPEC §6), carries
//! `spec.signerName` and labels naming the signer and trust domain, and holds the CA's
//! root(s) as PEM. [`TrustBundle::sync`] creates it or repairs any drift; the controller calls
//! it when the CA changes and periodically. When the cluster serves no ClusterTrustBundle
//! API the controller says so once and keeps signing.

use std::collections::BTreeMap;

use k8s_openapi::api::certificates::v1beta1::ClusterTrustBundleSpec;
use kube::api::{ObjectMeta, PostParams};
use kube::core::{ApiResource, NotUsed, Object};
use kube::{Api, Client};

/// A ClusterTrustBundle of any served version (the spec is the same in all).
pub type Ctb = Object<ClusterTrustBundleSpec, NotUsed>;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_TRUST_DOMAIN: &str = "podcert-signer/trust-domain";

#[derive(Debug, Clone)]
pub struct TrustBundle {
    api: Api<Ctb>,
    resource: ApiResource,
    pub name: String,
    signer_name: String,
    labels: BTreeMap<String, String>,
}

/// What [`TrustBundle::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    Created,
    Updated,
    Unchanged,
}

impl TrustBundle {
    pub fn new(
        client: Client,
        resource: ApiResource,
        name: String,
        signer_name: String,
        trust_domain: &str,
    ) -> Self {
        let mut labels = BTreeMap::from([
            (LABEL_NAME.to_string(), "podcert-signer".to_string()),
            (LABEL_MANAGED_BY.to_string(), "podcert-signer".to_string()),
        ]);
        // Label values are at most 63 characters; a longer trust domain is simply not labelled.
        if trust_domain.len() <= 63
            && trust_domain.starts_with(|c: char| c.is_ascii_alphanumeric())
            && trust_domain.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            labels.insert(LABEL_TRUST_DOMAIN.to_string(), trust_domain.to_string());
        }
        TrustBundle {
            api: Api::all_with(client, &resource),
            resource,
            name,
            signer_name,
            labels,
        }
    }

    /// Makes the published bundle hold exactly `bundle_pem`, with our signer name and labels.
    pub async fn sync(&self, bundle_pem: &str) -> Result<Synced, kube::Error> {
        let spec = ClusterTrustBundleSpec {
            signer_name: Some(self.signer_name.clone()),
            trust_bundle: bundle_pem.to_string(),
        };
        match self.api.get_opt(&self.name).await? {
            None => {
                let mut ctb = Ctb::new(&self.name, &self.resource, spec);
                ctb.metadata.labels = Some(self.labels.clone());
                match self.api.create(&PostParams::default(), &ctb).await {
                    Ok(_) => Ok(Synced::Created),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Synced::Unchanged),
                    Err(e) => Err(e),
                }
            }
            Some(mut ctb) => {
                let labels = ctb.metadata.labels.get_or_insert_with(BTreeMap::new);
                let labels_ok = self.labels.iter().all(|(k, v)| labels.get(k) == Some(v));
                if ctb.spec == spec && labels_ok {
                    return Ok(Synced::Unchanged);
                }
                labels.extend(self.labels.clone());
                ctb.spec = spec;
                ctb.metadata = ObjectMeta {
                    managed_fields: None,
                    ..ctb.metadata
                };
                self.api
                    .replace(&self.name, &PostParams::default(), &ctb)
                    .await?;
                Ok(Synced::Updated)
            }
        }
    }
}
