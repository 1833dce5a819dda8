//! Root rotation with trust overlap: prepare → publish → activate → retire.
//!
//! A root we generated is replaced once it has less than `root_rotate_before` left — or at
//! once ([`Why`]) when it is a root from before two tiers, which cannot sign intermediates,
//! when its key is in the Secret while root keys are now kept in a PKCS#11 token
//! ([`RootKeys::wants_rotation`]), or when it carries a name constraint the profile no longer
//! asks for, or lacks one it asks for (`--ca-name-constraints` changed):
//!
//! 1. **Prepare**: a new root is generated and stored beside the active one (`next.crt`,
//!    `next.key` in the CA Secret). Nothing is signed with it yet.
//! 2. **Preview**: the preview trust bundle (for canary pods, see [`super::trust_bundle`]) is
//!    synced with both roots as current; once that has succeeded, the Secret records when
//!    ([`super::secret::NEXT_PREVIEWED_AT`]).
//! 3. **Publish**: `preview_delay` later (time for canaries to show trouble), the live trust
//!    bundle is synced with both roots as current; once that has succeeded, the Secret records
//!    when ([`super::secret::NEXT_PUBLISHED_AT`]).
//! 4. **Activate**: `propagation_delay` after publication (time for every kubelet to project
//!    the new bundle), the next root becomes the active one and its predecessor's key is
//!    dropped; the leader makes a new signing intermediate under it at once.
//! 5. **Retire**: the trust bundle keeps the old root, now retired, until the last leaf that
//!    chains to it has expired (see [`super::trust_bundle`]), then drops it.
//!
//! Every step is one write, conditioned on the resourceVersion it was planned from, so a
//! restart or failover at any point resumes from what the cluster holds, and two leaders
//! racing make one rotation: the loser's write gets 409 and the watch brings the winner's.
//! [`plan`] is the pure decision; [`Rotator::perform`] the writes.

use kube::runtime::events::{EventType, Recorder};
use signer_core::CaProfile;
use tracing::info;

use super::root_keys::RootKeys;
use super::secret::{LoadedCa, NextRoot, Replaced, SecretStore};
use super::trust_bundle::{Roots, TrustBundle};
use crate::ca::metrics::{CaMetrics, Role};
use crate::config::CaLifecycle;
use crate::runtime::clock::Clock;

/// The next step of a root's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do; look again at this Unix second, if ever.
    Wait(Option<i64>),
    /// Generate the next root and store it beside the active one.
    Prepare(Why),
    /// Publish both roots in the preview trust bundle, then record when.
    Preview,
    /// Publish both roots in the live trust bundle, then record when.
    Publish,
    /// Make the next root the active one.
    Activate,
}

/// Why a root is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It has less than `root_rotate_before` left.
    Due,
    /// A root from before two tiers: no room for a signing intermediate.
    SingleTier,
    /// Its key is in the Secret while root keys are kept in a PKCS#11 token.
    KeyOutsideToken,
    /// It carries a name constraint while the profile asks for none (`wanted` false), or the
    /// other way round.
    NameConstraints { wanted: bool },
}

impl Why {
    /// Said in the `RootPrepared` Event and log line.
    fn says(self) -> &'static str {
        match self {
            Why::Due => "the active root is due for rotation",
            Why::SingleTier => {
                "the active root cannot sign intermediates (a root from before two tiers)"
            }
            Why::KeyOutsideToken => {
                "the active root's key is in the Secret while root keys are kept in the PKCS#11 token"
            }
            Why::NameConstraints { wanted: false } => {
                "the active root carries a URI name constraint and --ca-name-constraints is false"
            }
            Why::NameConstraints { wanted: true } => {
                "the active root carries no URI name constraint and --ca-name-constraints is true"
            }
        }
    }
}

/// What to do next with `ca`, at Unix second `now`, for roots made with `profile` and
/// kept by `keys`.
pub fn plan(
    ca: &LoadedCa,
    lifecycle: &CaLifecycle,
    keys: &RootKeys,
    profile: &CaProfile,
    now: i64,
) -> Step {
    if !ca.managed {
        // An operator's root: rotated by replacing the Secret.
        return Step::Wait(None);
    }
    let seconds = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    match &ca.next {
        None => {
            let root = &ca.active.ca;
            let rotate_at = root
                .not_after_unix()
                .saturating_sub(seconds(lifecycle.root_rotate_before));
            if !root.has_room_for_intermediate() {
                Step::Prepare(Why::SingleTier)
            } else if keys.wants_rotation(&ca.active.key) {
                Step::Prepare(Why::KeyOutsideToken)
            } else if root.is_name_constrained() != profile.name_constraints {
                Step::Prepare(Why::NameConstraints {
                    wanted: profile.name_constraints,
                })
            } else if now >= rotate_at {
                Step::Prepare(Why::Due)
            } else {
                Step::Wait(Some(rotate_at))
            }
        }
        // (A rotation begun before preview bundles has only a publication time.)
        Some(NextRoot {
            previewed_at: None,
            published_at: None,
            ..
        }) => Step::Preview,
        Some(NextRoot {
            previewed_at: Some(at),
            published_at: None,
            ..
        }) => due(now, *at, lifecycle.preview_delay, Step::Publish),
        Some(NextRoot {
            published_at: Some(at),
            ..
        }) => due(now, *at, lifecycle.propagation_delay, Step::Activate),
    }
}

/// `step` if `delay` has passed at `now` since Unix second `since`; else wait until it has.
fn due(now: i64, since: i64, delay: std::time::Duration, step: Step) -> Step {
    let at = since.saturating_add(i64::try_from(delay.as_secs()).unwrap_or(i64::MAX));
    if now >= at {
        step
    } else {
        Step::Wait(Some(at))
    }
}

/// Performs rotation steps for the leader.
#[derive(Clone)]
pub struct Rotator {
    pub store: SecretStore,
    pub trust_bundle: Option<TrustBundle>,
    pub profile: CaProfile,
    pub lifecycle: CaLifecycle,
    pub clock: Clock,
    pub recorder: Recorder,
    pub metrics: CaMetrics,
}

impl std::fmt::Debug for Rotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotator")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Why a step did not complete; it is planned again from what the cluster holds.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("generating the next root failed: {0}")]
    Generate(#[from] signer_core::CaError),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

impl Rotator {
    /// Performs `step` on `ca` (as read at its resourceVersion). Ok(true) when a write
    /// landed; Ok(false) when another writer got there first.
    pub async fn perform(&self, step: Step, ca: &LoadedCa) -> Result<bool, StepError> {
        let now = self.clock.now();
        let (updated, reason, note) = match step {
            Step::Wait(_) => return Ok(false),
            Step::Prepare(why) => {
                let next =
                    self.store
                        .keys
                        .generate(&self.profile, self.lifecycle.root_validity, now)?;
                let note = format!(
                    "{}: prepared a new root ({}, valid until {}); it is published beside the active one before it signs",
                    why.says(),
                    next.ca.subject(),
                    humantime::format_rfc3339_seconds(next.ca.not_after())
                );
                let updated = LoadedCa {
                    next: Some(NextRoot::prepared(next)),
                    ..ca.clone()
                };
                (updated, "RootPrepared", note)
            }
            Step::Preview | Step::Publish => {
                let Some(next) = &ca.next else {
                    return Ok(false);
                };
                let mut next = next.clone();
                let now = Some(self.clock.unix_now());
                let (reason, note) = if step == Step::Preview {
                    next.previewed_at = now;
                    let note = format!(
                        "the preview trust bundle publishes the new root beside the active one; the live one does after {}",
                        humantime::format_duration(self.lifecycle.preview_delay)
                    );
                    ("RootPreviewed", note)
                } else {
                    next.published_at = now;
                    let note = format!(
                        "the trust bundle publishes the new root beside the active one; it signs after {}",
                        humantime::format_duration(self.lifecycle.propagation_delay)
                    );
                    ("RootPublished", note)
                };
                let updated = LoadedCa {
                    next: Some(next),
                    ..ca.clone()
                };
                // The bundles hold what the CA will record (the live one the next root once it
                // is recorded published): synced as the write will make it, before the write.
                if let Some(tb) = &self.trust_bundle {
                    tb.sync(Roots::Ours(&updated)).await?;
                }
                (updated, reason, note)
            }
            Step::Activate => {
                let Some(next) = &ca.next else {
                    return Ok(false);
                };
                let updated = LoadedCa {
                    active: next.root.clone(),
                    next: None,
                    ..ca.clone()
                };
                let note = format!(
                    "the new root ({}) signs from now on; the old one stays in the trust bundle until its last leaf has expired",
                    next.root.ca.subject()
                );
                (updated, "RootActivated", note)
            }
        };
        match self.store.replace(&updated).await? {
            Replaced::Conflict => {
                if let (Step::Prepare(_), Some(next)) = (step, &updated.next) {
                    self.store.keys.discard(&next.root);
                }
                info!(secret = %self.store.name, ?step, "the CA Secret changed meanwhile; planning again from what it holds");
                Ok(false)
            }
            Replaced::Replaced => {
                info!(secret = %self.store.name, ?step, "{note}");
                if step == Step::Activate {
                    self.metrics.rotated(Role::Root);
                }
                self.store
                    .report(
                        &self.recorder,
                        EventType::Normal,
                        "RotateRoot",
                        reason,
                        note,
                    )
                    .await;
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The schedule, step by step, on a root's own timeline.

    use std::time::{Duration, SystemTime};

    use signer_core::{CaPem, TrustDomain};

    use crate::ca::Root;

    use super::*;

    const DAY: u64 = 86_400;

    fn lifecycle() -> CaLifecycle {
        CaLifecycle {
            root_validity: Duration::from_secs(365 * DAY),
            root_rotate_before: Duration::from_secs(90 * DAY),
            preview_delay: Duration::from_secs(2 * DAY),
            propagation_delay: Duration::from_secs(DAY),
            intermediate_validity: Duration::from_secs(7 * DAY),
            retain_retired_roots: Duration::from_secs(DAY),
        }
    }

    /// [`plan`] with the test lifecycle and root keys in the Secret.
    fn plan_with(ca: &LoadedCa, profile: &CaProfile, now: i64) -> Step {
        plan(ca, &lifecycle(), &RootKeys::Secret, profile, now)
    }

    fn profile() -> CaProfile {
        CaProfile::new(TrustDomain::new("example.org").unwrap())
    }

    fn root(now: SystemTime) -> Root {
        root_of(&profile(), now)
    }

    fn root_of(profile: &CaProfile, now: SystemTime) -> Root {
        Root::load(profile.root(Duration::from_secs(365 * DAY), now).unwrap()).unwrap()
    }

    fn ca(now: SystemTime) -> LoadedCa {
        LoadedCa {
            active: root(now),
            next: None,
            managed: true,
            resource_version: Some("1".into()),
        }
    }

    fn unix(t: SystemTime) -> i64 {
        signer_core::time::unix_seconds(t)
    }

    #[test]
    fn a_fresh_root_waits_until_it_has_rotate_before_left() {
        let now = SystemTime::now();
        let ca = ca(now);
        let rotate_at = unix(ca.active.ca.not_after()) - 90 * DAY as i64;
        assert_eq!(
            plan_with(&ca, &profile(), unix(now)),
            Step::Wait(Some(rotate_at))
        );
        assert_eq!(
            plan_with(&ca, &profile(), rotate_at),
            Step::Prepare(Why::Due)
        );
    }

    #[test]
    fn a_prepared_root_is_previewed_then_published_then_activated() {
        let now = SystemTime::now();
        let mut ca = ca(now);
        ca.next = Some(NextRoot::prepared(root(now)));
        assert_eq!(plan_with(&ca, &profile(), unix(now)), Step::Preview);
        let previewed = unix(now);
        ca.next.as_mut().unwrap().previewed_at = Some(previewed);
        assert_eq!(
            plan_with(&ca, &profile(), previewed + DAY as i64),
            Step::Wait(Some(previewed + 2 * DAY as i64)),
            "in the preview bundle alone for the preview delay"
        );
        assert_eq!(
            plan_with(&ca, &profile(), previewed + 2 * DAY as i64),
            Step::Publish
        );
        let published = previewed + 2 * DAY as i64;
        ca.next.as_mut().unwrap().published_at = Some(published);
        assert_eq!(
            plan_with(&ca, &profile(), published + 10),
            Step::Wait(Some(published + DAY as i64))
        );
        assert_eq!(
            plan_with(&ca, &profile(), published + DAY as i64),
            Step::Activate
        );
    }

    #[test]
    fn a_rotation_published_before_preview_bundles_goes_on_to_activation() {
        let now = SystemTime::now();
        let mut ca = ca(now);
        ca.next = Some(NextRoot {
            published_at: Some(unix(now)),
            ..NextRoot::prepared(root(now))
        });
        assert_eq!(
            plan_with(&ca, &profile(), unix(now) + DAY as i64),
            Step::Activate
        );
    }

    #[test]
    fn an_operators_root_is_never_rotated_by_us() {
        let now = SystemTime::now();
        let mut ca = ca(now);
        ca.managed = false;
        let far = unix(ca.active.ca.not_after()) + 1;
        assert_eq!(plan_with(&ca, &profile(), far), Step::Wait(None));
    }

    #[test]
    fn a_single_tier_root_of_ours_is_replaced_at_once() {
        // What wave 1 generated: pathlen 0, so no room for a signing intermediate.
        let (cert_pem, key_pem) = podcert_tests::fixtures::single_tier_root_pem();
        let old = Root::load(CaPem {
            cert_pem,
            key_pem,
            roots_pem: None,
        })
        .unwrap();
        let ca = LoadedCa {
            active: old,
            ..ca(SystemTime::now())
        };
        assert_eq!(
            plan_with(&ca, &profile(), unix(SystemTime::now())),
            Step::Prepare(Why::SingleTier)
        );
    }

    #[test]
    fn a_root_whose_name_constraint_the_profile_no_longer_matches_is_replaced_at_once() {
        let now = SystemTime::now();
        let constrained = CaProfile {
            name_constraints: true,
            ..profile()
        };
        // Made under the old default (constrained); the profile now asks for none.
        let ca = LoadedCa {
            active: root_of(&constrained, now),
            ..ca(now)
        };
        assert_eq!(
            plan_with(&ca, &profile(), unix(now)),
            Step::Prepare(Why::NameConstraints { wanted: false })
        );
        // And the other way round; a root that matches waits for its time.
        assert_eq!(
            plan_with(&ca, &constrained, unix(now)),
            Step::Wait(Some(unix(ca.active.ca.not_after()) - 90 * DAY as i64))
        );
        let open = self::ca(now);
        assert_eq!(
            plan_with(&open, &constrained, unix(now)),
            Step::Prepare(Why::NameConstraints { wanted: true })
        );
    }
}
