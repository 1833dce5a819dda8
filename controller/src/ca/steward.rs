//! The leader's part of the CA's life: what one leadership term does with the CA.
//!
//! [`Steward::begin`] settles the CA the term signs under — the one this process holds, or on
//! a fresh install only a new root it generates and stores create-only — publishes its roots
//! in the trust bundle before anything is signed under them, and makes the term's signing
//! intermediate in memory ([`SigningCa`]). [`Steward::keep`], one of the term's tasks, then
//! renews the intermediate half-way through its life, acts on the [`CaView`] (publish new
//! roots and then sign under them; put a missing Secret back from memory), takes the root
//! rotation's steps ([`super::rotation`]) and repairs trust-bundle drift. Every replica's
//! [`super::CaKeeper`] follows the CA; only the leader's steward writes.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::Recorder;
use signer_core::{Policy, Signer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::rotation::{self, Rotator, Step};
use super::{
    CaView, Created, LoadedCa, Root, Roots, SecretState, SecretStore, SigningCa, TrustBundle,
};
use crate::ca::metrics::{CaMetrics, Role};
use crate::config::CaConfig;
use crate::runtime::clock::Clock;
use crate::runtime::retry;

/// The CA a term begins with: the roots it holds and the intermediate it signs with.
#[derive(Debug)]
pub struct Begun {
    pub ca: LoadedCa,
    pub signing: SigningCa,
}

/// Why a term could not begin signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotBegun {
    /// The term's token was cancelled first.
    Stopped,
    /// This process holds no usable CA and may not create one.
    CannotSign,
}

/// Everything the leader's part of the CA needs; built once per process.
pub struct Steward {
    pub store: SecretStore,
    pub trust_bundle: Option<TrustBundle>,
    pub view: watch::Receiver<CaView>,
    pub ca: CaConfig,
    pub policy: Arc<Policy>,
    pub clock: Clock,
    pub recorder: Recorder,
    pub metrics: CaMetrics,
}

impl std::fmt::Debug for Steward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steward")
            .field("secret", &self.store.name)
            .finish_non_exhaustive()
    }
}

/// How long to wait after a rotation step failed before planning it again.
const STEP_RETRY: Duration = Duration::from_secs(5);

impl Steward {
    /// Settles the CA, publishes its roots and makes the signing intermediate.
    pub async fn begin(&self, token: &CancellationToken) -> Result<Begun, NotBegun> {
        let stopped_or = |otherwise| {
            if token.is_cancelled() {
                NotBegun::Stopped
            } else {
                otherwise
            }
        };
        let Some(ca) = self.settle(token).await else {
            return Err(stopped_or(NotBegun::CannotSign));
        };
        if self.publish(&ca, token).await.is_none() {
            return Err(NotBegun::Stopped);
        }
        match self.signing_ca(&ca.active) {
            Ok(signing) => Ok(Begun { ca, signing }),
            Err(e) => {
                error!(error = %e, "cannot make a signing CA under the root");
                Err(stopped_or(NotBegun::CannotSign))
            }
        }
    }

    /// A signer for `signing` under the operator's policy.
    pub fn signer(&self, signing: &SigningCa) -> Arc<Signer> {
        Arc::new(Signer::new(self.policy.clone(), signing.ca.clone()))
    }

    /// At the term's end: only a leader has a signing intermediate.
    pub fn end_term(&self) {
        self.metrics.none(Role::Intermediate);
    }

    /// The CA this term signs under: the one this process holds, or a new root on a fresh
    /// install. None if the term ended first or this process cannot sign.
    pub async fn settle(&self, token: &CancellationToken) -> Option<LoadedCa> {
        let mut view_rx = self.view.clone();
        let ca = &self.ca;
        let keys = &self.store.keys;
        // Set once another replica's CA was stored first: nothing more is made, its CA comes
        // through the view. The root this process made, if its key is new, is then discarded.
        let mut raced = false;
        let mut unstored: Option<Root> = None;
        loop {
            let view = view_rx.borrow_and_update().clone();
            if let Some(known) = view.known {
                if let Some(lost) = unstored.take() {
                    let in_use = known.active.key == lost.key
                        || known.next.as_ref().is_some_and(|n| n.root.key == lost.key);
                    if !in_use {
                        keys.discard(&lost);
                    }
                }
                return Some(known);
            }
            if view.fresh_install() && !raced {
                let first =
                    keys.first_root(&ca.profile, ca.lifecycle.root_validity, self.clock.now());
                let first = match first {
                    Ok(first) => first,
                    Err(e) => {
                        error!(error = %e, "making the first root CA failed");
                        return None;
                    }
                };
                let generated = LoadedCa::generated(first.root);
                match retry::retry("creating the CA Secret", token, || {
                    self.store.create(&generated)
                })
                .await?
                {
                    Created::Created => {
                        let subject = generated.active.ca.subject();
                        if first.new_key {
                            info!(secret = %self.store.name, subject, "generated a new root CA and stored it");
                        } else {
                            info!(secret = %self.store.name, subject, "made a root CA for the key found in the token and stored it");
                        }
                        return Some(generated);
                    }
                    // Another replica created it first: its CA arrives through the view.
                    Created::AlreadyExists => {
                        raced = true;
                        if first.new_key {
                            unstored = Some(generated.active);
                        }
                        info!(secret = %self.store.name, "another replica created the CA first; waiting for it")
                    }
                }
            } else if view.secret.is_some() && !(raced && view.fresh_install()) {
                // The Secret is unusable, so this process cannot sign. (After a lost race, the
                // winner's Secret, not yet seen, is waited for instead.)
                return None;
            }
            tokio::select! {
                changed = view_rx.changed() => changed.ok()?,
                _ = token.cancelled() => return None,
            }
        }
    }

    /// The signing CA under `root` (an intermediate made now, or the root itself), counted and
    /// reported.
    pub fn signing_ca(&self, root: &Root) -> Result<SigningCa, signer_core::CaError> {
        let ca = &self.ca;
        let signing = SigningCa::new(
            root,
            &ca.profile,
            ca.lifecycle.intermediate_validity,
            self.policy.max_leaf_lifetime(),
            self.clock.now(),
        )?;
        if signing.is_intermediate() {
            let unix = signing.ca.not_after_unix();
            self.metrics.not_after(Role::Intermediate, unix);
            self.metrics.rotated(Role::Intermediate);
            info!(root = root.ca.subject(), not_after = %humantime::format_rfc3339_seconds(signing.ca.not_after()), "made a new signing intermediate");
        } else {
            warn!(
                root = root.ca.subject(),
                "the root CA's path-length constraint leaves no room for a signing intermediate; it signs leaves itself"
            );
        }
        Ok(signing)
    }

    /// Publishes the roots of `ca` (keeping retired ones), retrying until done; None if the
    /// term ended first. Without a ClusterTrustBundle API there is nothing to publish.
    pub async fn publish(&self, ca: &LoadedCa, token: &CancellationToken) -> Option<()> {
        match &self.trust_bundle {
            Some(tb) => tb.publish(Roots::Ours(ca), token).await,
            None => Some(()),
        }
    }

    /// For the rest of the term: renew the signing intermediate, act on the CA view (publish a
    /// changed set of roots before signing under it, put a missing Secret back), take the root
    /// rotation's next step when it is due, and repair trust-bundle drift.
    pub async fn keep(
        self: Arc<Self>,
        mut current: LoadedCa,
        mut signing: SigningCa,
        signer: watch::Sender<Arc<Signer>>,
        token: CancellationToken,
    ) {
        let clock = self.clock;
        let lifecycle = self.ca.lifecycle;
        let rotator = Rotator {
            store: self.store.clone(),
            trust_bundle: self.trust_bundle.clone(),
            profile: self.ca.profile.clone(),
            lifecycle,
            clock,
            recorder: self.recorder.clone(),
            metrics: self.metrics.clone(),
        };
        let sign_with = |signing: &SigningCa| {
            signer.send_replace(Arc::new(Signer::new(
                self.policy.clone(),
                signing.ca.clone(),
            )));
        };
        let mut view_rx = self.view.clone();
        let mut resync = tokio::time::interval(self.ca.trust_bundle_resync);
        resync.tick().await;
        loop {
            let view = view_rx.borrow_and_update().clone();
            if let Some(known) = view.needs_restore() {
                warn!(secret = %self.store.name, "the CA Secret is missing; recreating it from the CA in memory");
                match retry::retry("recreating the CA Secret", &token, || {
                    self.store.create(known)
                })
                .await
                {
                    Some(Created::Created) => {
                        info!(secret = %self.store.name, "recreated the CA Secret")
                    }
                    Some(Created::AlreadyExists) => {}
                    None => return,
                }
            }
            if let Some(known) = view.known.as_ref().filter(|k| **k != current) {
                if self.publish(known, &token).await.is_none() {
                    return;
                }
                if known.active != current.active {
                    match self.signing_ca(&known.active) {
                        Ok(new) => {
                            sign_with(&new);
                            info!(
                                root = known.active.ca.subject(),
                                "signing under the new root"
                            );
                            signing = new;
                        }
                        Err(e) => {
                            error!(error = %e, "cannot sign under the new root; still signing under the old one")
                        }
                    }
                }
                current = known.clone();
            }
            // When to look again: the earliest of the intermediate's renewal, the rotation's next
            // step, and a retry of whatever just failed.
            let mut wake = signing.renew_at;
            let retry_at = || Some(clock.now() + clock.scaled_duration(STEP_RETRY));
            if signing.due(clock.now()) {
                match self.signing_ca(&current.active) {
                    Ok(new) => {
                        sign_with(&new);
                        signing = new;
                        wake = signing.renew_at;
                    }
                    Err(e) => {
                        error!(error = %e, "making a new signing intermediate failed; will retry");
                        wake = retry_at();
                    }
                }
            }
            // The rotation acts only on the Secret as this term holds it, at its resourceVersion.
            if let Some(SecretState::Usable(stored)) = &view.secret
                && *stored == current
            {
                let next_look = match rotation::plan(
                    stored,
                    &lifecycle,
                    &rotator.store.keys,
                    &rotator.profile,
                    clock.unix_now(),
                ) {
                    Step::Wait(at) => at.map(signer_core::time::from_unix_seconds),
                    step => match rotator.perform(step, stored).await {
                        // The watch brings what the write did.
                        Ok(_) => None,
                        Err(e) => {
                            warn!(?step, error = %e, "a root rotation step failed; will retry");
                            retry_at()
                        }
                    },
                };
                wake = wake.into_iter().chain(next_look).min();
            }
            let sleep = async {
                match wake {
                    Some(t) => crate::runtime::clock::sleep_until(&clock, t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = view_rx.changed() => if changed.is_err() { return },
                _ = sleep => {}
                _ = resync.tick() => {
                    if let Some(tb) = &self.trust_bundle {
                        tb.repair(Roots::Ours(&current)).await;
                    }
                }
                _ = token.cancelled() => return,
            }
        }
    }
}
