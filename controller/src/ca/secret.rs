//! The CA Secret: a `kubernetes.io/tls` Secret holding the CA as PEM, read and followed by
//! every replica, written only by the leader.
//!
//! [`SecretStore::states`] follows the Secret with a watch and yields what it holds after
//! every change *and after every (re)list*: a Secret that vanished while the watch was down
//! (410 Expired, API restart) produces no Delete event, so absence is concluded from the
//! relist itself. [`SecretStore::create`] writes it create-only: it never overwrites a CA,
//! so two leaders racing end up with one CA (the loser's create gets 409 and the watch brings
//! the winner's).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use signer_core::{Ca, CaPem};

use crate::config::ObjectName;

pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";

/// What the CA Secret holds.
#[derive(Debug, Clone)]
pub enum SecretState {
    /// There is no such Secret.
    Absent,
    /// A CA that loads and checks.
    Usable(LoadedCa),
    /// Something that is not a usable CA; the message names the key at fault and never
    /// quotes key material.
    Unusable(String),
}

/// A CA as stored and as loaded.
#[derive(Debug, Clone)]
pub struct LoadedCa {
    pub pem: CaPem,
    pub ca: Arc<Ca>,
}

impl LoadedCa {
    pub fn load(pem: CaPem) -> Result<Self, signer_core::CaError> {
        let ca = pem.load()?;
        Ok(LoadedCa {
            pem,
            ca: Arc::new(ca),
        })
    }
}

impl PartialEq for LoadedCa {
    fn eq(&self, other: &Self) -> bool {
        self.pem == other.pem
    }
}

/// The PEM texts of a Secret's data, or why they are not there.
fn pem_of(secret: &Secret) -> Result<CaPem, String> {
    let data = secret.data.as_ref().ok_or("it has no data")?;
    let text = |key: &str| -> Result<Option<String>, String> {
        data.get(key)
            .map(|b| String::from_utf8(b.0.clone()).map_err(|_| format!("{key} is not PEM text")))
            .transpose()
    };
    Ok(CaPem {
        cert_pem: text(TLS_CRT)?.ok_or_else(|| format!("it has no {TLS_CRT}"))?,
        key_pem: text(TLS_KEY)?.ok_or_else(|| format!("it has no {TLS_KEY}"))?,
        roots_pem: text(CA_CRT)?,
    })
}

/// What `secret` holds.
pub fn state_of(secret: &Secret) -> SecretState {
    match pem_of(secret).and_then(|pem| LoadedCa::load(pem).map_err(|e| e.to_string())) {
        Ok(loaded) => SecretState::Usable(loaded),
        Err(message) => SecretState::Unusable(message),
    }
}

fn to_secret(pem: &CaPem, name: &ObjectName) -> Secret {
    let mut data = BTreeMap::from([
        (
            TLS_CRT.to_string(),
            ByteString(pem.cert_pem.clone().into_bytes()),
        ),
        (
            TLS_KEY.to_string(),
            ByteString(pem.key_pem.clone().into_bytes()),
        ),
    ]);
    if let Some(roots) = &pem.roots_pem {
        data.insert(CA_CRT.to_string(), ByteString(roots.clone().into_bytes()));
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

/// What a create-only write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// A Secret of that name exists already (another replica's, or the operator's).
    AlreadyExists,
}

#[derive(Debug, Clone)]
pub struct SecretStore {
    api: Api<Secret>,
    pub name: ObjectName,
}

impl SecretStore {
    pub fn new(client: Client, name: ObjectName) -> Self {
        SecretStore {
            api: Api::namespaced(client, &name.namespace),
            name,
        }
    }

    /// The Secret as an Event's subject.
    pub fn object_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            namespace: Some(self.name.namespace.clone()),
            name: Some(self.name.name.clone()),
            ..Default::default()
        }
    }

    /// Creates the Secret holding `pem`, never replacing one that exists.
    pub async fn create(&self, pem: &CaPem) -> Result<Created, kube::Error> {
        match self
            .api
            .create(&PostParams::default(), &to_secret(pem, &self.name))
            .await
        {
            Ok(_) => Ok(Created::Created),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Created::AlreadyExists),
            Err(e) => Err(e),
        }
    }

    /// What the Secret holds after each change and after each (re)list, forever; watch
    /// errors are retried by kube's watcher backoff and reported as `Err`.
    pub fn states(&self) -> impl Stream<Item = Result<SecretState, watcher::Error>> + Send + use<> {
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", self.name.name));
        let events = watcher::watcher(self.api.clone(), config).default_backoff();
        // During a (re)list: the Secret listed, if any; concluded at InitDone.
        events
            .scan(None::<Option<Secret>>, |listing, event| {
                let out = match event {
                    Err(e) => Some(Err(e)),
                    Ok(watcher::Event::Init) => {
                        *listing = Some(None);
                        None
                    }
                    Ok(watcher::Event::InitApply(s)) => {
                        *listing = Some(Some(s));
                        None
                    }
                    Ok(watcher::Event::InitDone) => Some(Ok(match listing.take().flatten() {
                        Some(s) => state_of(&s),
                        None => SecretState::Absent,
                    })),
                    Ok(watcher::Event::Apply(s)) => Some(Ok(state_of(&s))),
                    Ok(watcher::Event::Delete(_)) => Some(Ok(SecretState::Absent)),
                };
                std::future::ready(Some(out))
            })
            .filter_map(std::future::ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signer_core::{CaKeyType, TrustDomain};
    use std::time::{Duration, SystemTime};

    fn pem() -> CaPem {
        CaPem::generate(
            CaKeyType::EcdsaP256,
            &TrustDomain::new("example.org").unwrap(),
            Duration::from_secs(86_400 * 30),
            SystemTime::now(),
        )
        .unwrap()
    }

    fn name() -> ObjectName {
        ObjectName {
            namespace: "ns".into(),
            name: "ca".into(),
        }
    }

    #[test]
    fn a_stored_ca_reads_back_as_usable() {
        let pem = pem();
        match state_of(&to_secret(&pem, &name())) {
            SecretState::Usable(loaded) => assert_eq!(loaded.pem, pem),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_secret_without_a_key_is_unusable_and_says_which() {
        let mut s = to_secret(&pem(), &name());
        s.data.as_mut().unwrap().remove(TLS_KEY);
        match state_of(&s) {
            SecretState::Unusable(m) => assert_eq!(m, "it has no tls.key"),
            other => panic!("{other:?}"),
        }
    }
}
