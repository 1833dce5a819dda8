//! The CA Secret: a `kubernetes.io/tls` Secret holding the root CA as PEM, read and followed
//! by every replica, written only by the leader.
//!
//! `tls.crt`, `tls.key` and `ca.crt` hold the active root. While a root rotation is under way
//! (see [`super::rotation`]) `next.crt` and `next.key` hold the root prepared to replace it,
//! and the annotations [`NEXT_PREVIEWED_AT`] and [`NEXT_PUBLISHED_AT`] record when the preview
//! and the live trust bundle began to publish it.
//! A Secret we created carries the label `app.kubernetes.io/managed-by: podcert-signer`; only
//! such a root is rotated by us (an operator's root is rotated by replacing the Secret).
//! Every write after the first carries the resourceVersion it was planned from.
//!
//! [`SecretStore::secrets`] follows the Secret with a watch and yields what it holds after
//! every change *and after every (re)list*: a Secret that vanished while the watch was down
//! (410 Expired, API restart) produces no Delete event, so absence is concluded from the
//! relist itself. [`SecretStore::create`] writes it create-only: it never overwrites a CA,
//! so two leaders racing end up with one CA (the loser's create gets 409 and the watch brings
//! the winner's).

use std::collections::BTreeMap;

use futures::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::root_keys::{Root, RootKeys, StoredKey, Unusable};
use crate::config::ObjectName;
use crate::runtime::wiped::WipedSecret;

pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";
pub const NEXT_CRT: &str = "next.crt";
pub const NEXT_KEY: &str = "next.key";
/// Unix second at which the preview trust bundle was first synced with the next root in it.
pub const NEXT_PREVIEWED_AT: &str = "podcert-signer/next-root-previewed-at";
/// Unix second at which the live trust bundle was first synced with the next root in it.
pub const NEXT_PUBLISHED_AT: &str = "podcert-signer/next-root-published-at";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "podcert-signer");

/// What the CA Secret holds.
#[derive(Debug, Clone)]
pub enum SecretState {
    /// There is no such Secret.
    Absent,
    /// A CA that loads and checks.
    Usable(LoadedCa),
    /// Something that is not a usable CA, and why.
    Unusable(Unusable),
}

/// The root prepared to replace the active one, and when the preview and the live bundle
/// began to publish it.
#[derive(Debug, Clone, PartialEq)]
pub struct NextRoot {
    pub root: Root,
    pub previewed_at: Option<i64>,
    pub published_at: Option<i64>,
}

impl NextRoot {
    /// A root just prepared: published nowhere yet.
    pub fn prepared(root: Root) -> Self {
        NextRoot {
            root,
            previewed_at: None,
            published_at: None,
        }
    }
}

/// What the CA Secret holds, loaded: the active root, the next root during a rotation, and
/// whether we manage (rotate) it. Equal when the stored CA is; the resourceVersion is only
/// what a write is conditioned on.
#[derive(Debug, Clone)]
pub struct LoadedCa {
    pub active: Root,
    pub next: Option<NextRoot>,
    pub managed: bool,
    pub resource_version: Option<String>,
}

impl PartialEq for LoadedCa {
    fn eq(&self, other: &Self) -> bool {
        self.active == other.active && self.next == other.next && self.managed == other.managed
    }
}

impl LoadedCa {
    /// A root we just generated, before it is stored.
    pub fn generated(active: Root) -> Self {
        LoadedCa {
            active,
            next: None,
            managed: true,
            resource_version: None,
        }
    }
}

/// What `secret` holds, or why it is not a usable CA (naming the key at fault).
fn load(secret: &Secret, keys: &RootKeys) -> Result<LoadedCa, Unusable> {
    let content = |m: String| Unusable::Content(m);
    let data = secret
        .data
        .as_ref()
        .ok_or_else(|| content("it has no data".into()))?;
    let text = |key: &str| -> Result<Option<String>, Unusable> {
        data.get(key)
            .map(|b| {
                String::from_utf8(b.0.clone()).map_err(|e| {
                    zeroize::Zeroize::zeroize(&mut e.into_bytes());
                    content(format!("{key} is not PEM text"))
                })
            })
            .transpose()
    };
    let active = keys.load(
        text(TLS_CRT)?.ok_or_else(|| content(format!("it has no {TLS_CRT}")))?,
        text(TLS_KEY)?,
        text(CA_CRT)?,
        (TLS_CRT, TLS_KEY),
    )?;
    let next = match (text(NEXT_CRT)?, text(NEXT_KEY)?) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(content(format!("it has {NEXT_KEY} but no {NEXT_CRT}")));
        }
        (Some(cert_pem), key_pem) => {
            let root = keys
                .load(
                    cert_pem.clone(),
                    key_pem,
                    Some(cert_pem),
                    (NEXT_CRT, NEXT_KEY),
                )
                .map_err(|e| match e {
                    Unusable::Content(m) => content(format!("the next root: {m}")),
                    Unusable::Token(m) => Unusable::Token(format!("the next root: {m}")),
                })?;
            let annotations = secret.metadata.annotations.as_ref();
            let time = |annotation: &str| match annotations.and_then(|a| a.get(annotation)) {
                None => Ok(None),
                Some(t) => t.parse::<i64>().map(Some).map_err(|_| {
                    content(format!("the annotation {annotation} is not a Unix time"))
                }),
            };
            Some(NextRoot {
                root,
                previewed_at: time(NEXT_PREVIEWED_AT)?,
                published_at: time(NEXT_PUBLISHED_AT)?,
            })
        }
    };
    let managed = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .is_some_and(|v| v == MANAGED_BY.1);
    Ok(LoadedCa {
        active,
        next,
        managed,
        resource_version: secret.metadata.resource_version.clone(),
    })
}

/// What `secret` holds, its root keys read from `keys`.
pub fn state_of(secret: &Secret, keys: &RootKeys) -> SecretState {
    match load(secret, keys) {
        Ok(loaded) => SecretState::Usable(loaded),
        Err(message) => SecretState::Unusable(message),
    }
}

fn to_secret(ca: &LoadedCa, name: &ObjectName) -> WipedSecret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let active = &ca.active;
    let mut data = BTreeMap::from([(TLS_CRT.to_string(), bytes(&active.cert_pem))]);
    if let StoredKey::Secret(key_pem) = &active.key {
        data.insert(TLS_KEY.to_string(), bytes(key_pem));
    }
    if let Some(roots) = &active.roots_pem {
        data.insert(CA_CRT.to_string(), bytes(roots));
    }
    let mut annotations = BTreeMap::new();
    if let Some(next) = &ca.next {
        data.insert(NEXT_CRT.to_string(), bytes(&next.root.cert_pem));
        if let StoredKey::Secret(key_pem) = &next.root.key {
            data.insert(NEXT_KEY.to_string(), bytes(key_pem));
        }
        for (annotation, at) in [
            (NEXT_PREVIEWED_AT, next.previewed_at),
            (NEXT_PUBLISHED_AT, next.published_at),
        ] {
            if let Some(at) = at {
                annotations.insert(annotation.to_string(), at.to_string());
            }
        }
    }
    let labels = ca
        .managed
        .then(|| BTreeMap::from([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())]));
    WipedSecret::new(Secret {
        metadata: ObjectMeta {
            name: Some(name.name.clone()),
            namespace: Some(name.namespace.clone()),
            labels,
            annotations: (!annotations.is_empty()).then_some(annotations),
            resource_version: ca.resource_version.clone(),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    })
}

/// What a create-only write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// A Secret of that name exists already (another replica's, or the operator's).
    AlreadyExists,
}

/// What a conditioned replace did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    Replaced,
    /// The Secret changed (or vanished) since the resourceVersion the write was planned from;
    /// the watch brings what it holds now.
    Conflict,
}

#[derive(Debug, Clone)]
pub struct SecretStore {
    api: Api<Secret>,
    pub name: ObjectName,
    /// Where the roots' keys are: in the Secret, or in a token.
    pub keys: RootKeys,
}

impl SecretStore {
    pub fn new(client: Client, name: ObjectName, keys: RootKeys) -> Self {
        SecretStore {
            api: Api::namespaced(client, &name.namespace),
            name,
            keys,
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

    /// Publishes an Event about the Secret (a failure is logged, never fatal).
    pub async fn report(
        &self,
        recorder: &Recorder,
        type_: EventType,
        action: &str,
        reason: &str,
        note: String,
    ) {
        let regarding = self.object_ref();
        if let Err(e) =
            crate::runtime::events::publish(recorder, &regarding, type_, action, reason, note).await
        {
            tracing::warn!(%reason, error = %e, "could not publish an Event about the CA Secret");
        }
    }

    /// Creates the Secret holding `ca`, never replacing one that exists.
    pub async fn create(&self, ca: &LoadedCa) -> Result<Created, kube::Error> {
        let mut secret = to_secret(ca, &self.name);
        secret.metadata.resource_version = None;
        match self.api.create(&PostParams::default(), &secret).await {
            Ok(echo) => {
                drop(WipedSecret::new(echo));
                Ok(Created::Created)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Created::AlreadyExists),
            Err(e) => Err(e),
        }
    }

    /// Replaces the Secret by `ca`, on condition that it is still at `ca.resource_version`
    /// (a write without one is refused here, never sent).
    pub async fn replace(&self, ca: &LoadedCa) -> Result<Replaced, kube::Error> {
        if ca.resource_version.is_none() {
            return Ok(Replaced::Conflict);
        }
        match self
            .api
            .replace(
                &self.name.name,
                &PostParams::default(),
                &to_secret(ca, &self.name),
            )
            .await
        {
            Ok(echo) => {
                drop(WipedSecret::new(echo));
                Ok(Replaced::Replaced)
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(Replaced::Conflict),
            Err(e) => Err(e),
        }
    }

    /// What the Secret holds, loaded, with where root keys are kept (see [`state_of`]).
    pub fn state_of(&self, secret: Option<&Secret>) -> SecretState {
        match secret {
            Some(s) => state_of(s, &self.keys),
            None => SecretState::Absent,
        }
    }

    /// The Secret after each change and after each (re)list (None: there is none), forever;
    /// watch errors are retried by kube's watcher backoff and reported as `Err`.
    pub fn secrets(
        &self,
    ) -> impl Stream<Item = Result<Option<WipedSecret>, watcher::Error>> + Send + use<> {
        follow(self.api.clone(), &self.name.name)
    }

    /// Whether an unusable state may mend without the Secret changing: its root key is
    /// looked up in a token, which another replica may just have written to, or which may be
    /// briefly unreachable. Wrong content does not mend by reading it again.
    pub fn may_mend(state: &SecretState) -> bool {
        matches!(state, SecretState::Unusable(Unusable::Token(_)))
    }
}

/// The Secret `name` of `api` after each change and after each (re)list (None: there is
/// none), forever — a watch of that one name (RBAC may limit list and watch to it); watch
/// errors are retried by kube's watcher backoff and reported as `Err`. Each copy is wiped
/// when dropped (the Secret holds key material).
pub fn follow(
    api: Api<Secret>,
    name: &str,
) -> impl Stream<Item = Result<Option<WipedSecret>, watcher::Error>> + Send + use<> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher::watcher(api, config).default_backoff();
    // During a (re)list: the Secret listed, if any; concluded at InitDone.
    events
        .scan(None::<Option<WipedSecret>>, |listing, event| {
            let out = match event {
                Err(e) => Some(Err(e)),
                Ok(watcher::Event::Init) => {
                    *listing = Some(None);
                    None
                }
                Ok(watcher::Event::InitApply(s)) => {
                    *listing = Some(Some(WipedSecret::new(s)));
                    None
                }
                Ok(watcher::Event::InitDone) => Some(Ok(listing.take().flatten())),
                Ok(watcher::Event::Apply(s)) => Some(Ok(Some(WipedSecret::new(s)))),
                Ok(watcher::Event::Delete(s)) => {
                    drop(WipedSecret::new(s));
                    Some(Ok(None))
                }
            };
            std::future::ready(Some(out))
        })
        .filter_map(std::future::ready)
}

#[cfg(test)]
#[path = "secret_tests.rs"]
mod tests;
