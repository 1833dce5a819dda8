//! An upstream authority certifies the signing intermediates: the CA an organisation already
//! runs — a cert-manager issuer ([`cert_manager`]) or a Vault/OpenBao PKI mount ([`vault`]) —
//! is the trust anchor, and no root of ours exists.
//!
//! Every replica makes an intermediate's key in memory, asks the upstream to certify it
//! ([`Upstream::certify`]), and checks the answer ([`signer_core::Requested::certified`]: a
//! CA certificate for exactly that key, chaining to the roots the upstream names), so a
//! standby is ready to sign the moment it is elected, upstream or no upstream. The leader
//! publishes those roots in the ClusterTrustBundle before the intermediate signs anything.
//! Each replica renews half-way through its intermediate's life, as with our own root
//! ([`SigningCa`]). A renewal that fails — the upstream down, a request denied — is retried with backoff while
//! the current intermediate keeps signing, so an outage shorter than the time left after
//! half-way costs nothing (leaves are cut to the intermediate's end after that). When a
//! renewal brings a root the bundle lacks (the upstream rotated its CA), the new root is
//! published beside the old one and the new intermediate signs only after
//! `--ca-propagation-delay` (or once the old one could no longer sign a full leaf); the old
//! root then stays until its last leaf has expired. Refusals are counted in
//! `podcert_upstream_requests_total` and logged, and are Warning Events on the request where
//! one exists (cert-manager's); a request is never logged with a credential (cert-manager is
//! reached with the signer's own ServiceAccount; Vault's credentials stay in `vault`).

pub mod cert_manager;
pub mod vault;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{EventType, Recorder};
use signer_core::{Policy, Signer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::SigningCa;
use super::metrics::{CaMetrics, Role};
use super::pkcs11::{Token, TokenKey};
use super::steward::NotBegun;
use super::trust_bundle::{Roots, TrustBundle, ders};
use crate::config::CaConfig;
use crate::runtime::clock::{Clock, sleep_until};
use crate::runtime::retry;
pub use cert_manager::CertManager;
pub use vault::Vault;

/// What an upstream answered: our certificate (with any intermediates) and its roots.
#[derive(Debug, Clone)]
pub struct Answer {
    pub chain_pem: String,
    pub roots_pem: String,
    /// The request it answered, for logs.
    pub from: String,
}

/// The upstream refused to certify: denied (an approver, Vault's 403), failed, or answered
/// unusably.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Short and fixed: `Denied`, `Failed`, `InvalidRequest`, `Unusable`.
    pub reason: &'static str,
    pub message: String,
    /// The request refused, which its Event is about (None: no object stands for it).
    pub request: Option<ObjectReference>,
}

impl Refusal {
    pub fn new(reason: &'static str, message: String) -> Self {
        Refusal {
            reason,
            message,
            request: None,
        }
    }
}

/// Why no intermediate was certified this time.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream (or the API it is reached through) could not be asked: transient.
    #[error("{0}")]
    Unreachable(String),
    #[error("{}: {}", .0.reason, .0.message)]
    Refused(Box<Refusal>),
}

/// The configured upstream authority.
#[derive(Debug, Clone)]
pub enum Upstream {
    CertManager(Box<CertManager>),
    Vault(Box<Vault>),
    /// Answers from a test's script (the renewal schedule on a compressed clock).
    #[cfg(test)]
    Scripted(Arc<Scripted>),
}

/// A test's upstream: answers each CSR as the script says.
#[cfg(test)]
pub struct Scripted(pub Box<ScriptFn>);

/// What a test's upstream does with a CSR.
#[cfg(test)]
pub type ScriptFn = dyn Fn(&str) -> Result<Answer, UpstreamError> + Send + Sync;

#[cfg(test)]
impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripted")
    }
}

impl Upstream {
    /// The upstream `config` names, reached through `client` as replica `identity` (a
    /// request older than `stale_after` is some gone replica's), its TLS certificates
    /// checked on `clock`; an error if no TLS client can be built for it.
    pub fn new(
        client: kube::Client,
        config: &crate::config::UpstreamAuthority,
        identity: &str,
        stale_after: Duration,
        clock: Clock,
    ) -> Result<Self, String> {
        Ok(match config {
            crate::config::UpstreamAuthority::CertManager { namespace, issuer } => {
                Upstream::CertManager(Box::new(CertManager::new(
                    client,
                    namespace,
                    issuer.clone(),
                    identity,
                    stale_after,
                )))
            }
            crate::config::UpstreamAuthority::Vault(vault) => {
                let tls = crate::runtime::https_client::web_pki(
                    vault.ca.as_deref(),
                    "--upstream-vault-ca-file",
                    clock,
                )?;
                Upstream::Vault(Box::new(Vault::new(vault.clone(), Arc::new(tls))))
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            Upstream::CertManager(cm) => cm.describe(),
            Upstream::Vault(v) => v.describe(),
            #[cfg(test)]
            Upstream::Scripted(_) => "a scripted upstream".into(),
        }
    }

    async fn certify(
        &self,
        csr_pem: &str,
        duration: Duration,
        token: &CancellationToken,
    ) -> Option<Result<Answer, UpstreamError>> {
        // Cancelled in one place: each upstream's request is a plain future, dropped here.
        let asked = async {
            match self {
                Upstream::CertManager(cm) => cm.certify(csr_pem, duration).await,
                Upstream::Vault(v) => v.certify(csr_pem, duration).await,
                #[cfg(test)]
                Upstream::Scripted(s) => (s.0)(csr_pem),
            }
        };
        tokio::select! {
            answer = asked => Some(answer),
            _ = token.cancelled() => None,
        }
    }
}

/// A checked intermediate from the upstream, and the roots it chains to.
#[derive(Debug, Clone)]
pub struct Certified {
    pub signing: SigningCa,
    pub roots_pem: String,
}

impl Certified {
    /// Whether a replica may lead: it holds a certified intermediate.
    pub fn held(ready: &Option<Certified>) -> bool {
        ready.is_some()
    }
}

/// The CA's life when an upstream certifies the intermediates; built once per process.
///
/// Every replica keeps a certified intermediate ready ([`UpstreamSteward::run_keeper`], a
/// process task): it asks the upstream at start and again half-way through each
/// intermediate's life, and publishes the latest in [`UpstreamSteward::ready`]. A replica
/// campaigns for the Lease only once it holds one, so a failover never waits for the
/// upstream — a standby elected while the upstream is down signs at once. The leader's term
/// publishes the ready intermediate's roots before it signs ([`UpstreamSteward::begin`]) and
/// follows the keeper's renewals ([`UpstreamSteward::keep`]).
pub struct UpstreamSteward {
    pub upstream: Upstream,
    /// `--upstream-trust-anchors`: the only roots an answer may chain to; None: any the
    /// upstream names.
    pub trust_anchors: Option<String>,
    pub trust_bundle: Option<TrustBundle>,
    /// The PKCS#11 token the intermediates' keys are made in (`--ca-pkcs11-*`); None: in
    /// memory.
    pub token: Option<Arc<Token>>,
    pub ca: CaConfig,
    pub policy: Arc<Policy>,
    pub clock: Clock,
    pub recorder: Recorder,
    pub metrics: CaMetrics,
    /// The latest intermediate this replica holds certified; None until the first.
    pub ready: watch::Sender<Option<Certified>>,
}

impl std::fmt::Debug for UpstreamSteward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSteward")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl UpstreamSteward {
    /// Keeps a certified intermediate ready until `shutdown`: the first as soon as the
    /// upstream answers, then a new one half-way through each one's life (the current one
    /// stays ready, and signing, while the upstream is asked).
    pub async fn run_keeper(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let Some(certified) = self.obtain(&shutdown).await else {
                return;
            };
            info!(upstream = %self.upstream.describe(), subject = certified.signing.ca.subject(), not_after = %humantime::format_rfc3339_seconds(certified.signing.ca.not_after()), "the upstream certified a signing intermediate for this replica");
            let renew_at = certified.signing.renew_at;
            self.ready.send_replace(Some(certified));
            tokio::select! {
                () = async {
                    match renew_at {
                        Some(at) => sleep_until(&self.clock, at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// The intermediate this replica holds ready, once it has one (see `run_keeper`), with
    /// its roots published; None if the term ended first.
    pub async fn begin(&self, token: &CancellationToken) -> Result<Certified, NotBegun> {
        let mut ready = self.ready.subscribe();
        let certified = loop {
            if let Some(c) = ready.borrow_and_update().clone() {
                break c;
            }
            tokio::select! {
                _ = ready.changed() => {}
                _ = token.cancelled() => return Err(NotBegun::Stopped),
            }
        };
        self.publish(&certified.roots_pem, token)
            .await
            .ok_or(NotBegun::Stopped)?;
        self.signing_with(&certified);
        Ok(certified)
    }

    /// A signer for `signing` under the operator's policy.
    pub fn signer(&self, signing: &SigningCa) -> Arc<Signer> {
        Arc::new(Signer::new(self.policy.clone(), signing.ca.clone()))
    }

    /// At the term's end: only a leader has a signing intermediate.
    pub fn end_term(&self) {
        self.metrics.none(Role::Intermediate);
    }

    /// For the rest of the term: sign with each intermediate the keeper renews (with a new
    /// root, only after publishing it beside the current one for the propagation delay) and
    /// repair trust-bundle drift.
    pub async fn keep(
        self: Arc<Self>,
        mut current: Certified,
        signer: watch::Sender<Arc<Signer>>,
        token: CancellationToken,
    ) {
        let mut ready = self.ready.subscribe();
        ready.borrow_and_update();
        let mut resync = tokio::time::interval(self.ca.trust_bundle_resync);
        resync.tick().await;
        loop {
            // What the bundle must hold as current while the next intermediate is awaited,
            // for drift repair: the current roots, and the new ones too while they are being
            // trusted.
            let published = std::sync::Mutex::new(current.roots_pem.clone());
            let next = {
                let switch = async {
                    let next = loop {
                        ready.changed().await.ok()?;
                        let renewed = ready.borrow_and_update().clone();
                        if let Some(next) =
                            renewed.filter(|n| !Arc::ptr_eq(&n.signing.ca, &current.signing.ca))
                        {
                            break next;
                        }
                    };
                    let trusted = ders(&current.roots_pem);
                    let new_root = ders(&next.roots_pem).iter().any(|r| !trusted.contains(r));
                    if new_root {
                        let both = union(&current.roots_pem, &next.roots_pem);
                        self.publish(&both, &token).await?;
                        *published.lock().unwrap_or_else(|e| e.into_inner()) = both;
                        let latest = current
                            .signing
                            .ca
                            .not_after()
                            .checked_sub(self.policy.max_leaf_lifetime())
                            .unwrap_or(SystemTime::UNIX_EPOCH);
                        let at =
                            (self.clock.now() + self.ca.lifecycle.propagation_delay).min(latest);
                        info!(upstream = %self.upstream.describe(), signs_at = %humantime::format_rfc3339_seconds(at), "the upstream's new intermediate chains to a new root: published it beside the current one; the new intermediate signs once kubelets have had time to project it");
                        sleep_until(&self.clock, at).await;
                    }
                    self.publish(&next.roots_pem, &token).await?;
                    Some(next)
                };
                tokio::pin!(switch);
                loop {
                    tokio::select! {
                        next = &mut switch => break next,
                        _ = resync.tick() => {
                            let roots = published.lock().unwrap_or_else(|e| e.into_inner()).clone();
                            self.repair(&roots).await
                        }
                        _ = token.cancelled() => return,
                    }
                }
            };
            let Some(next) = next else { return };
            self.signing_with(&next);
            signer.send_replace(self.signer(&next.signing));
            current = next;
        }
    }

    fn signing_with(&self, certified: &Certified) {
        let ca = &certified.signing.ca;
        self.metrics
            .not_after(Role::Intermediate, ca.not_after_unix());
        self.metrics.rotated(Role::Intermediate);
        info!(upstream = %self.upstream.describe(), subject = ca.subject(), not_after = %humantime::format_rfc3339_seconds(ca.not_after()), "signing with an intermediate the upstream certified");
    }

    /// Asks the upstream until an intermediate is certified and passes our checks; None if
    /// the term ended first.
    async fn obtain(&self, token: &CancellationToken) -> Option<Certified> {
        let mut delays = retry::backoff();
        loop {
            let outcome = self.try_once(token).await?;
            let failed = match outcome {
                Ok(certified) => {
                    self.metrics.upstream_outcome("issued");
                    return Some(certified);
                }
                Err(UpstreamError::Unreachable(message)) => {
                    self.metrics.upstream_outcome("error");
                    warn!(upstream = %self.upstream.describe(), error = %message, "asking the upstream to certify a signing intermediate failed");
                    message
                }
                Err(UpstreamError::Refused(refusal)) => {
                    self.metrics
                        .upstream_outcome(&refusal.reason.to_ascii_lowercase());
                    error!(upstream = %self.upstream.describe(), reason = refusal.reason, message = %refusal.message, "the upstream refused to certify a signing intermediate");
                    self.report(&refusal).await;
                    refusal.message
                }
            };
            let delay = delays.next().expect("the backoff never ends");
            info!(retry_in = ?delay, "asking the upstream again after: {failed}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = token.cancelled() => return None,
            }
        }
    }

    async fn try_once(
        &self,
        token: &CancellationToken,
    ) -> Option<Result<Certified, UpstreamError>> {
        let validity = self.ca.lifecycle.intermediate_validity;
        let (requested, in_token) = match self.request(validity) {
            Ok(r) => r,
            Err(e) => {
                return Some(Err(UpstreamError::Unreachable(format!(
                    "making the intermediate's key and request failed: {e}"
                ))));
            }
        };
        // A token key that does not become a certified intermediate is destroyed at once.
        let discard = || {
            if let Some(key) = &in_token {
                key.destroy();
            }
        };
        let answer = match self
            .upstream
            .certify(requested.csr_pem(), validity, token)
            .await
        {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                discard();
                return Some(Err(e));
            }
            None => {
                discard();
                return None;
            }
        };
        let roots_pem = match self.pinned(&answer.roots_pem) {
            Ok(roots) => roots,
            Err(message) => {
                discard();
                return Some(Err(UpstreamError::Refused(Box::new(Refusal {
                    reason: "Unusable",
                    message: format!("{}'s answer cannot sign: {message}", answer.from),
                    request: None,
                }))));
            }
        };
        let now = self.clock.now();
        let longest_leaf = self.policy.max_leaf_lifetime();
        let checked = requested
            .certified(&answer.chain_pem, &roots_pem, now)
            .map_err(|e| e.to_string())
            .and_then(|ca| {
                let left = ca.not_after().duration_since(now).unwrap_or_default();
                if left < longest_leaf * 2 {
                    Err(format!(
                        "it is valid for {} more, less than twice the longest leaf lifetime ({}): ask the issuer for longer intermediates, or lower --intermediate-validity and the leaf lifetimes",
                        humantime::format_duration(Duration::from_secs(left.as_secs())),
                        humantime::format_duration(longest_leaf * 2)
                    ))
                } else {
                    Ok(ca)
                }
            });
        Some(match checked {
            Ok(ca) => {
                if ca.is_name_constrained() {
                    warn!(upstream = %self.upstream.describe(), "the upstream's chain carries a name constraint; rustls-based workloads refuse such chains");
                }
                Ok(Certified {
                    signing: SigningCa::intermediate(ca, longest_leaf, now),
                    roots_pem,
                })
            }
            Err(message) => {
                discard();
                Err(UpstreamError::Refused(Box::new(Refusal {
                    reason: "Unusable",
                    message: format!("{}'s answer cannot sign: {message}", answer.from),
                    request: None,
                })))
            }
        })
    }

    /// A new intermediate key and its request: in memory, or in the token — there after
    /// destroying the keys of intermediates that have ended (this replica's or a gone one's),
    /// and marked to end a day after an intermediate made now would. The token's key is
    /// returned too, to be destroyed if it is not certified.
    fn request(
        &self,
        validity: Duration,
    ) -> Result<(signer_core::ca::Requested, Option<Arc<TokenKey>>), String> {
        let now = self.clock.now();
        let Some(token) = &self.token else {
            let requested = self.ca.profile.intermediate_request(now);
            return requested.map(|r| (r, None)).map_err(|e| e.to_string());
        };
        match token.destroy_ended(now) {
            Ok(0) => {}
            Ok(n) => {
                info!(%token, destroyed = n, "destroyed the keys of signing intermediates that have ended")
            }
            Err(e) => {
                warn!(%token, error = %e, "could not look for ended intermediate keys in the token; they are looked for again at the next renewal")
            }
        }
        let until = now + validity + Duration::from_secs(86_400);
        let key = token
            .generate_until(self.ca.profile.key_type, Some(until))
            .map_err(|e| e.to_string())?;
        match self
            .ca
            .profile
            .intermediate_request_for(signer_core::CaKey::device(key.clone()), now)
        {
            Ok(requested) => Ok((requested, Some(key))),
            Err(e) => {
                key.destroy();
                Err(e.to_string())
            }
        }
    }

    /// The roots of `named` an answer may chain to: all of them, or with
    /// `--upstream-trust-anchors` only the pinned ones (an error if none is). An upstream
    /// that names no root (a Vault mount whose chain stops below its root) chains to the
    /// pinned roots, and without them cannot be used.
    fn pinned(&self, named: &str) -> Result<String, String> {
        let named_roots = ders(named);
        match &self.trust_anchors {
            None if named_roots.is_empty() => Err("it names no root (its CA chain stops below a self-signed certificate): import the root into the upstream's CA chain, or give it with --upstream-trust-anchors".into()),
            None => Ok(named.to_owned()),
            Some(anchors) if named_roots.is_empty() => Ok(anchors.clone()),
            Some(anchors) => {
                let anchors = ders(anchors);
                let kept: String = named_roots
                    .iter()
                    .filter(|r| anchors.contains(r))
                    .map(|der| signer_core::x509::certificate_pem(der))
                    .collect();
                if kept.is_empty() {
                    return Err("it names no root of --upstream-trust-anchors (the upstream's CA changed, or someone other than the upstream answered)".into());
                }
                Ok(kept)
            }
        }
    }

    /// Publishes `roots_pem` as the current roots, retrying until done; None if the term ended.
    async fn publish(&self, roots_pem: &str, token: &CancellationToken) -> Option<()> {
        match &self.trust_bundle {
            Some(tb) => tb.publish(Roots::Upstream(roots_pem), token).await,
            None => Some(()),
        }
    }

    async fn repair(&self, roots_pem: &str) {
        if let Some(tb) = &self.trust_bundle {
            tb.repair(Roots::Upstream(roots_pem)).await;
        }
    }

    async fn report(&self, refusal: &Refusal) {
        let Some(regarding) = &refusal.request else {
            return;
        };
        let reason = format!("Upstream{}", refusal.reason);
        let note = format!(
            "{} refused to certify a signing intermediate: {}; the current intermediate, if any, keeps signing, and the signer asks again",
            self.upstream.describe(),
            refusal.message
        );
        if let Err(e) = crate::runtime::events::publish(
            &self.recorder,
            regarding,
            EventType::Warning,
            "CertifyIntermediate",
            &reason,
            note,
        )
        .await
        {
            warn!(%reason, error = %e, "could not publish an Event about the upstream's refusal");
        }
    }
}

/// The certificates of `a` followed by those of `b` that `a` lacks, as PEM.
fn union(a: &str, b: &str) -> String {
    let mut roots = ders(a);
    for r in ders(b) {
        if !roots.contains(&r) {
            roots.push(r);
        }
    }
    roots
        .iter()
        .map(|der| signer_core::x509::certificate_pem(der))
        .collect()
}

#[cfg(test)]
mod tests;
