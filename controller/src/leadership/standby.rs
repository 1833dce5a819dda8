//! Standby and terms: the loop that turns elected leadership into leadership terms.
//!
//! Every replica stands by until it is elected and could sign (with our own root, while it
//! holds or may create the CA: [`crate::ca::CaView::can_sign`]; with an upstream authority,
//! once it holds a certified intermediate: [`crate::ca::upstream::Certified::held`]);
//! then it runs one term ([`crate::leadership::term::run`]) until leadership is lost, shutdown is asked
//! for, or the term fails. A failed term (a task panicked or ended) is followed by a new one
//! after the controller's backoff, so one bug does not stop signing for good and a
//! persistent one does not spin. A standby is ready once the election has completed a round
//! and while it could sign if it led.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::leadership::term::TermEnd;
use crate::runtime::admin::{Health, Loop};
use crate::runtime::retry;

/// Runs terms while elected, until `shutdown`.
pub async fn lead_while_elected<V, T: Future<Output = TermEnd>>(
    mut leader: watch::Receiver<bool>,
    mut eligibility: watch::Receiver<V>,
    can_sign: impl Fn(&V) -> bool,
    health: Arc<Health>,
    shutdown: CancellationToken,
    mut term: impl FnMut(CancellationToken) -> T,
) {
    let mut failed_terms = retry::backoff();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        info!("standing by for the leader Lease");
        loop {
            let can_sign = can_sign(&eligibility.borrow_and_update());
            if *leader.borrow_and_update() && can_sign {
                break;
            }
            health.set_ready(can_sign && health.has_campaigned());
            tokio::select! {
                changed = leader.changed() => if changed.is_err() { return },
                changed = eligibility.changed() => if changed.is_err() { return },
                _ = ticker.tick() => health.beat(Loop::Leadership),
                _ = shutdown.cancelled() => return,
            }
        }
        let token = shutdown.child_token();
        let stop = token.clone();
        let mut still_leader = leader.clone();
        let ends_with_leadership = async move {
            while *still_leader.borrow_and_update() {
                if still_leader.changed().await.is_err() {
                    break;
                }
            }
            stop.cancel();
            std::future::pending::<TermEnd>().await
        };
        let end = tokio::select! {
            end = term(token.clone()) => end,
            never = ends_with_leadership => never,
        };
        token.cancel();
        match end {
            TermEnd::Stopped if shutdown.is_cancelled() => return,
            TermEnd::Stopped => {
                failed_terms = retry::backoff();
                warn!("no longer the leader; stopped signing");
            }
            TermEnd::CannotSign => {
                warn!(
                    "elected, but this replica cannot sign; standing by so that one that can takes over"
                )
            }
            TermEnd::Failed(why) => {
                let delay = failed_terms.next().expect("the backoff never ends");
                error!(?why, retry_in = ?delay, "the leadership term failed; starting a new one");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::ca::{CaView, SecretState, Unusable};
    use crate::runtime::metrics::Tasks;
    use crate::runtime::supervisor::{Lifetime, Supervisor};

    /// A term whose first incarnation has a task that panics; later ones run until stopped.
    #[tokio::test(start_paused = true)]
    async fn a_term_whose_task_panics_ends_is_counted_and_is_followed_by_a_new_term() {
        let metrics = Tasks::default();
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        let (leader_tx, leader) = watch::channel(true);
        let fresh_install = CaView {
            secret: Some(SecretState::Absent),
            ..Default::default()
        };
        let (_view_tx, view) = watch::channel(fresh_install);
        let shutdown = CancellationToken::new();
        let terms = Arc::new(AtomicU32::new(0));
        let (m, t) = (metrics.clone(), terms.clone());
        let run = tokio::spawn(lead_while_elected(
            leader,
            view,
            CaView::can_sign,
            health,
            shutdown.clone(),
            move |token| {
                let n = t.fetch_add(1, Ordering::SeqCst);
                let mut tasks = Supervisor::new("term", token.clone(), m.clone());
                let wait = token.clone();
                tasks.spawn("controller", Lifetime::UntilCancelled, async move {
                    wait.cancelled().await
                });
                if n == 0 {
                    tasks.spawn("ca", Lifetime::UntilCancelled, async {
                        panic!("injected into the first term")
                    });
                }
                async move {
                    match tasks.watch(Duration::from_secs(5)).await {
                        crate::runtime::supervisor::Ended::Cancelled => TermEnd::Stopped,
                        failed => TermEnd::Failed(failed),
                    }
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            terms.load(Ordering::SeqCst),
            2,
            "the failed term was replaced"
        );
        let counted = metrics.get("term", "ca");
        assert_eq!(counted, 1);
        // Losing leadership ends the second term; shutdown ends the loop.
        leader_tx.send_replace(false);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(terms.load(Ordering::SeqCst), 2);
        shutdown.cancel();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn no_term_starts_while_the_replica_cannot_sign() {
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        let (_leader_tx, leader) = watch::channel(true);
        let unusable = CaView {
            secret: Some(SecretState::Unusable(Unusable::Content(
                "tls.key: not a key".into(),
            ))),
            ..Default::default()
        };
        let (_view_tx, view) = watch::channel(unusable);
        let shutdown = CancellationToken::new();
        let terms = Arc::new(AtomicU32::new(0));
        let t = terms.clone();
        let run = tokio::spawn(lead_while_elected(
            leader,
            view,
            CaView::can_sign,
            health.clone(),
            shutdown.clone(),
            move |_| {
                t.fetch_add(1, Ordering::SeqCst);
                async { TermEnd::Stopped }
            },
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(terms.load(Ordering::SeqCst), 0);
        assert!(
            !health.is_ready(),
            "a replica that cannot sign is not ready"
        );
        shutdown.cancel();
        run.await.unwrap();
    }
}
