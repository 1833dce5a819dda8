//! The identity policy file (`--identity-policy`): loaded at start, followed while running.
//!
//! [`IdentityFile::load`] reads and validates the file once at start; a bad policy stops the
//! signer with the file and line (exit code 2), like a bad flag. [`follow`] then reads it
//! again every [`RELOAD_EVERY`] — a ConfigMap mounted as a volume changes by a symlink swap,
//! which polling sees without inotify — and publishes each new valid policy. A reload that
//! fails keeps the last good policy, logs the file and line, and counts in
//! `podcert_identity_policy_reloads_total{result="error"}`; `podcert_identity_policy_loaded`
//! says whether the policy in use is the file's current content.

use std::sync::Arc;
use std::time::Duration;

use signer_core::IdentityPolicy;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

pub use crate::config::IdentityFile;
use crate::runtime::metrics::{IntGauge, Registrar};
use crate::runtime::supervisor::Ticks;

/// How often the file is read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The identity policy file's metrics: whether the policy in use is the file's current
/// content, and its reloads by result.
#[derive(Debug, Clone, Default)]
pub struct PolicyMetrics {
    loaded: IntGauge,
    reloads: prometheus_client::metrics::family::Family<
        ResultLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl PolicyMetrics {
    pub fn register(r: &mut Registrar) -> Self {
        PolicyMetrics {
            loaded: r.add(
                "identity_policy_loaded",
                "1 while the identity policy in use is the file's current content",
                IntGauge::default(),
            ),
            reloads: r.add(
                "identity_policy_reloads",
                "Reloads of the identity policy file after it changed, by result",
                Default::default(),
            ),
        }
    }

    /// A reload after the file changed: the new policy is in use, or (`ok` false) the last good
    /// one is kept.
    fn reloaded(&self, ok: bool) {
        self.loaded.set(i64::from(ok));
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    #[cfg(test)]
    fn reloads(&self, result: &'static str) -> u64 {
        self.reloads.get_or_create(&ResultLabels { result }).get()
    }
}

/// Follows the file until `token` is cancelled, sending each new valid policy on `tx`.
pub async fn follow(
    file: IdentityFile,
    tx: watch::Sender<Arc<IdentityPolicy>>,
    metrics: PolicyMetrics,
    token: CancellationToken,
) {
    let mut last_text = file.initial_text.clone();
    metrics.loaded.set(1);
    let mut ticks = Ticks::every(RELOAD_EVERY);
    while ticks.next(&token).await {
        let outcome = file.read().and_then(|text| {
            if text == last_text {
                return Ok(None);
            }
            let policy = file.parse(&text);
            last_text = text;
            policy.map(Some)
        });
        let ok = match outcome {
            Ok(None) => continue,
            Ok(Some(policy)) => {
                info!(path = %file.path.display(), "identity policy reloaded");
                tx.send_replace(Arc::new(policy));
                true
            }
            Err(e) => {
                error!(error = %e, "the identity policy file cannot be used; keeping the last good policy");
                false
            }
        };
        metrics.reloaded(ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signer_core::TrustDomain;

    const GOOD: &str = "rules:\n  - name: a\n    namespaces: {names: [a]}\n";
    const OTHER: &str = "rules:\n  - name: b\n    namespaces: {names: [b]}\n";
    const BAD: &str = "rules:\n  - name: a\n    namespaces: {names: [a]}\n    lifetime: forever\n";

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn allows(policy: &IdentityPolicy, namespace: &str) -> bool {
        policy
            .decide(&signer_core::Subject {
                namespace,
                namespace_labels: &Default::default(),
                service_account: "sa",
            })
            .is_ok()
    }

    #[test]
    fn a_bad_file_at_start_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, BAD).unwrap();
        let e = IdentityFile::load(&path, &td(), Duration::from_secs(86_400)).unwrap_err();
        assert!(
            e.starts_with(&format!("{} line 4: rule \"a\": lifetime:", path.display())),
            "{e}"
        );
        let missing =
            IdentityFile::load(&dir.path().join("none"), &td(), Duration::from_secs(86_400));
        assert!(missing.unwrap_err().contains("No such file"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_reload_keeps_the_last_good_policy_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let file = IdentityFile::load(&path, &td(), Duration::from_secs(86_400)).unwrap();
        let (tx, mut rx) = watch::channel(file.initial.clone());
        let metrics = PolicyMetrics::default();
        let token = CancellationToken::new();
        let task = tokio::spawn(follow(file, tx, metrics.clone(), token.clone()));

        std::fs::write(&path, BAD).unwrap();
        tokio::time::sleep(RELOAD_EVERY * 2).await;
        assert!(!rx.has_changed().unwrap(), "a bad file is not published");
        assert!(
            allows(&rx.borrow(), "a"),
            "the last good policy stays in use"
        );
        assert_eq!(metrics.loaded.get(), 0);
        assert_eq!(
            metrics.reloads("error"),
            1,
            "one error per bad content, not per look"
        );

        std::fs::write(&path, OTHER).unwrap();
        tokio::time::timeout(RELOAD_EVERY * 2, rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(allows(&rx.borrow_and_update(), "b") && !allows(&rx.borrow(), "a"));
        assert_eq!(metrics.loaded.get(), 1);
        token.cancel();
        task.await.unwrap();
    }
}
