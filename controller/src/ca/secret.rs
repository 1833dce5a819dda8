//! The CA in a `kubernetes.io/tls` Secret: load it, create it once, follow its changes.
//!
//! [`CaStore::load_or_create`] reads the Secret; if it does not exist, it puts back the CA this
//! process already held or else generates one, and creates the Secret with create-only semantics, so two replicas starting together end up
//! with the same CA (the loser of the race loads the winner's). A Secret that exists but
//! cannot be used is never overwritten or regenerated over: start fails with an error naming
//! the Secret key at fault. [`CaStore::follow`] then watches the Secret: a valid change (a BYO
//! CA renewed by cert-manager) is loaded; an invalid one is logged and the last good CA kept;
//! a deletion is repaired by recreating the Secret from the last good PEM, retrying until it
//! succeeds, so the CA is never lost.

use std::collections::BTreeMap;
use std::time::SystemTime;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use signer_core::{Ca, CaError, CaKeyType, CaPem, TrustDomain};
use tracing::{error, info, warn};

use crate::cli::ObjectName;

pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";

/// Why the CA could not be loaded or created at start.
#[derive(Debug, thiserror::Error)]
pub enum CaStoreError {
    #[error(
        "CA Secret {secret} is unusable ({source}); refusing to start. podcert-signer never overwrites a CA: fix the Secret, or delete it to have a new CA generated"
    )]
    Unusable { secret: String, source: CaError },
    #[error(
        "CA Secret {secret} is unusable: {message}; refusing to start. podcert-signer never overwrites a CA: fix the Secret, or delete it to have a new CA generated"
    )]
    Malformed { secret: String, message: String },
    #[error("generating a CA failed: {0}")]
    Generate(#[source] CaError),
    #[error("reading or creating CA Secret {secret}: {source}")]
    Api { secret: String, source: kube::Error },
}

/// The PEM texts of a CA Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct CaSecretData {
    pub tls_crt: String,
    pub tls_key: String,
    pub ca_crt: Option<String>,
}

impl std::fmt::Debug for CaSecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSecretData")
            .field("tls_crt", &self.tls_crt)
            .finish_non_exhaustive()
    }
}

impl CaSecretData {
    fn from_secret(secret: &Secret) -> Result<Self, String> {
        let data = secret.data.as_ref().ok_or("it has no data")?;
        let text = |key: &str| -> Result<Option<String>, String> {
            data.get(key)
                .map(|b| {
                    String::from_utf8(b.0.clone()).map_err(|_| format!("{key} is not PEM text"))
                })
                .transpose()
        };
        Ok(CaSecretData {
            tls_crt: text(TLS_CRT)?.ok_or_else(|| format!("it has no {TLS_CRT}"))?,
            tls_key: text(TLS_KEY)?.ok_or_else(|| format!("it has no {TLS_KEY}"))?,
            ca_crt: text(CA_CRT)?,
        })
    }

    pub fn load(&self) -> Result<Ca, CaError> {
        Ca::from_pem(&self.tls_crt, &self.tls_key, self.ca_crt.as_deref())
    }

    fn to_secret(&self, name: &ObjectName) -> Secret {
        let mut data = BTreeMap::from([
            (
                TLS_CRT.to_string(),
                ByteString(self.tls_crt.clone().into_bytes()),
            ),
            (
                TLS_KEY.to_string(),
                ByteString(self.tls_key.clone().into_bytes()),
            ),
        ]);
        if let Some(ca) = &self.ca_crt {
            data.insert(CA_CRT.to_string(), ByteString(ca.clone().into_bytes()));
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(name.name.clone()),
                namespace: Some(name.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "podcert-signer".to_string(),
                )])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaStore {
    api: Api<Secret>,
    name: ObjectName,
}

impl CaStore {
    pub fn new(client: Client, name: ObjectName) -> Self {
        CaStore {
            api: Api::namespaced(client, &name.namespace),
            name,
        }
    }

    fn api_err(&self, source: kube::Error) -> CaStoreError {
        CaStoreError::Api {
            secret: self.name.to_string(),
            source,
        }
    }

    fn parse(&self, secret: &Secret) -> Result<(CaSecretData, Ca), CaStoreError> {
        let data =
            CaSecretData::from_secret(secret).map_err(|message| CaStoreError::Malformed {
                secret: self.name.to_string(),
                message,
            })?;
        let ca = data.load().map_err(|source| CaStoreError::Unusable {
            secret: self.name.to_string(),
            source,
        })?;
        Ok((data, ca))
    }

    /// Loads the CA, or generates and creates it if the Secret does not exist.
    pub async fn load_or_create(
        &self,
        key_type: CaKeyType,
        trust_domain: &TrustDomain,
        validity: std::time::Duration,
        remembered: Option<&CaSecretData>,
    ) -> Result<(CaSecretData, Ca), CaStoreError> {
        if let Some(secret) = self
            .api
            .get_opt(&self.name.name)
            .await
            .map_err(|e| self.api_err(e))?
        {
            let loaded = self.parse(&secret)?;
            info!(secret = %self.name, subject = loaded.1.subject(), "loaded the CA");
            return Ok(loaded);
        }
        // Missing: put back the CA this process already held (a previous term's, whose Secret
        // was deleted), or else generate one. Generating when a CA is known would lose it.
        let (data, what) = match remembered {
            Some(data) => (
                data.clone(),
                "recreated the missing CA Secret from the CA this process held",
            ),
            None => {
                let pem = CaPem::generate(key_type, trust_domain, validity, SystemTime::now())
                    .map_err(CaStoreError::Generate)?;
                let data = CaSecretData {
                    ca_crt: Some(pem.cert_pem.clone()),
                    tls_crt: pem.cert_pem,
                    tls_key: pem.key_pem,
                };
                (data, "generated a new CA and stored it")
            }
        };
        match self
            .api
            .create(&PostParams::default(), &data.to_secret(&self.name))
            .await
        {
            Ok(_) => {
                let ca = data.load().map_err(CaStoreError::Generate)?;
                info!(secret = %self.name, subject = ca.subject(), "{what}");
                Ok((data, ca))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Another replica created it first: use theirs.
                let secret = self
                    .api
                    .get(&self.name.name)
                    .await
                    .map_err(|e| self.api_err(e))?;
                let loaded = self.parse(&secret)?;
                info!(secret = %self.name, "another replica created the CA first; loaded it");
                Ok(loaded)
            }
            Err(e) => Err(self.api_err(e)),
        }
    }

    /// Recreates the deleted Secret from `data`, retrying with backoff until it exists again.
    /// A missing Secret must not outlive this leader: the next one would generate a new CA.
    async fn recreate(&self, data: &CaSecretData) {
        let mut attempt = 0;
        loop {
            match self
                .api
                .create(&PostParams::default(), &data.to_secret(&self.name))
                .await
            {
                Ok(_) => return info!(secret = %self.name, "recreated the CA Secret"),
                // Someone else put a Secret there; the watch brings it.
                Err(kube::Error::Api(s)) if s.code == 409 => return,
                Err(e) => {
                    attempt += 1;
                    let delay = crate::reconcile::backoff(attempt);
                    error!(secret = %self.name, error = %e, retry_in = ?delay, "could not recreate the CA Secret; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Follows the Secret until the stream ends, calling `on_change` with each new valid CA.
    /// Starts from `current`, the data loaded at start.
    pub async fn follow(
        &self,
        mut current: CaSecretData,
        mut on_change: impl FnMut(&CaSecretData, Ca),
    ) {
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", self.name.name));
        let mut events = watcher::watcher(self.api.clone(), config)
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                    match CaSecretData::from_secret(&secret)
                        .map_err(|m| m.to_string())
                        .and_then(|d| {
                            let ca = d.load().map_err(|e| e.to_string())?;
                            Ok((d, ca))
                        }) {
                        Ok((data, _)) if data == current => {}
                        Ok((data, ca)) => {
                            info!(secret = %self.name, subject = ca.subject(), "the CA Secret changed; signing with the new CA");
                            on_change(&data, ca);
                            current = data;
                        }
                        Err(e) => {
                            error!(secret = %self.name, error = %e, "the CA Secret changed to something unusable; still signing with the last good CA")
                        }
                    }
                }
                Ok(watcher::Event::Delete(_)) => {
                    warn!(secret = %self.name, "the CA Secret was deleted; recreating it from the CA in memory");
                    self.recreate(&current).await;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(secret = %self.name, error = %e, "watching the CA Secret failed; retrying")
                }
            }
        }
    }
}
