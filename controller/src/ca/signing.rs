//! The CA that signs leaves during a leader's term: a signing intermediate made in memory.
//!
//! Each term makes its own intermediate under the active root, and a new one half-way
//! through the current one's life (never later than 1¼ longest leaf lifetimes before it
//! expires, so no leaf is ever cut short). The intermediate's key exists only in this
//! process: nothing to store, nothing to steal from the cluster, nothing two replicas could
//! disagree on — a new leader simply makes its own. A root with no room for an intermediate
//! (an operator's `pathlen:0` CA, or a root made before two tiers, which is then rotated out)
//! signs leaves itself.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use signer_core::{Ca, CaError, CaProfile};

use super::root_keys::Root;

/// The CA leaves are signed with now, and when to replace it.
#[derive(Debug, Clone)]
pub struct SigningCa {
    pub ca: Arc<Ca>,
    /// When to make the next intermediate; None when the root signs leaves itself.
    pub renew_at: Option<SystemTime>,
}

impl SigningCa {
    /// The signing CA under `root` as of `now`.
    pub fn new(
        root: &Root,
        profile: &CaProfile,
        validity: Duration,
        longest_leaf: Duration,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        if !root.ca.has_room_for_intermediate() {
            return Ok(SigningCa {
                ca: root.ca.clone(),
                renew_at: None,
            });
        }
        let ca = root.ca.sign_intermediate(profile, validity, now)?;
        Ok(SigningCa::intermediate(ca, longest_leaf, now))
    }

    /// An intermediate `ca` made (or certified) at `now`: renewed half-way through what is
    /// left of its life, and never later than 1¼ longest leaf lifetimes before it expires.
    pub fn intermediate(ca: Ca, longest_leaf: Duration, now: SystemTime) -> Self {
        let not_after = ca.not_after();
        let left = not_after.duration_since(now).unwrap_or_default();
        let halfway = now + left / 2;
        // A leaf needs its whole lifetime left on the intermediate: renew with a quarter of
        // a leaf lifetime to spare, so a request decided at that moment is never cut short.
        let latest = not_after
            .checked_sub(longest_leaf + longest_leaf / 4)
            .unwrap_or(now);
        SigningCa {
            ca: Arc::new(ca),
            renew_at: Some(halfway.min(latest)),
        }
    }

    /// Whether `ca` is an intermediate we made (else the root signs leaves itself).
    pub fn is_intermediate(&self) -> bool {
        self.renew_at.is_some()
    }

    /// Whether it is time for a new intermediate.
    pub fn due(&self, now: SystemTime) -> bool {
        self.renew_at.is_some_and(|t| now >= t)
    }
}

#[cfg(test)]
mod tests {
    use signer_core::TrustDomain;

    use super::*;

    const HOUR: u64 = 3600;

    fn profile() -> CaProfile {
        CaProfile::new(TrustDomain::new("example.org").unwrap())
    }

    fn root(validity: Duration, now: SystemTime) -> Root {
        Root::load(profile().root(validity, now).unwrap()).unwrap()
    }

    #[test]
    fn an_intermediate_is_renewed_half_way_through_its_life() {
        let now = SystemTime::now();
        let root = root(Duration::from_secs(365 * 24 * HOUR), now);
        let week = Duration::from_secs(7 * 24 * HOUR);
        let day = Duration::from_secs(24 * HOUR);
        let s = SigningCa::new(&root, &profile(), week, day, now).unwrap();
        assert!(s.is_intermediate());
        let renew_at = s.renew_at.unwrap();
        let half = renew_at.duration_since(now).unwrap();
        assert!(
            half.abs_diff(week / 2) <= Duration::from_secs(1),
            "{half:?}"
        );
        assert!(!s.due(now) && s.due(renew_at));
    }

    #[test]
    fn a_root_without_room_signs_leaves_itself_and_is_never_renewed() {
        let (cert_pem, key_pem) = podcert_tests::fixtures::single_tier_root_pem();
        let root = Root::load(signer_core::CaPem {
            cert_pem,
            key_pem,
            roots_pem: None,
        })
        .unwrap();
        let day = Duration::from_secs(24 * HOUR);
        let s = SigningCa::new(&root, &profile(), 7 * day, day, SystemTime::now()).unwrap();
        assert!(!s.is_intermediate());
        assert!(Arc::ptr_eq(&s.ca, &root.ca));
        assert!(!s.due(SystemTime::now() + 400 * day));
    }

    #[test]
    fn near_the_roots_end_it_is_renewed_before_less_than_a_leaf_lifetime_is_left() {
        let now = SystemTime::now();
        // The root has 30 hours left, so the intermediate is cut to 30 hours.
        let root = root(Duration::from_secs(30 * HOUR), now);
        let day = Duration::from_secs(24 * HOUR);
        let s = SigningCa::new(&root, &profile(), 7 * day, day, now).unwrap();
        let renew_at = s.renew_at.unwrap();
        assert_eq!(renew_at + day + day / 4, s.ca.not_after());
    }
}
