//! `podcert-signer status`: why is my pod stuck?
//!
//! An operator's one question, answered from what the cluster already records: the
//! PodCertificateRequests of a namespace (or of one pod, or everywhere) with their state,
//! age, reason and message — for a request still waiting, the last Event on it (the signer's
//! `StillPending`, `KeyMaterialNotServed`, `SignForbidden`) — and then the signer itself:
//! which replica holds the Lease and when it last renewed, whether the CA Secret exists and
//! whether a root rotation is under way (read as metadata only: no key crosses the wire), and
//! the roots published in the ClusterTrustBundle with their expiry. [`report`] gathers it
//! ([`Report`]) and [`Report::render`] prints it; nothing is written to the cluster.

use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::ca::secret::{NEXT_PREVIEWED_AT, NEXT_PUBLISHED_AT};
use crate::ca::trust_bundle::Ctb;
use crate::cluster::{self, Cluster, StartError};
use crate::config::Config;
use crate::requests::pcr::{Pcr, terminal_condition};

/// Which requests to show.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Query {
    /// Only requests in this namespace (default: every namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Only the requests of this pod (`spec.podName`).
    #[arg(long)]
    pub pod: Option<String>,
}

/// How long discovery may take before the command gives up.
const REACH_TIMEOUT: Duration = Duration::from_secs(15);

/// One request as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    pub namespace: String,
    pub name: String,
    pub pod: String,
    pub signer_name: String,
    /// Issued, Denied, Failed or Pending.
    pub state: String,
    pub age: Duration,
    pub reason: String,
    pub message: String,
}

/// Everything `status` prints.
#[derive(Debug, Clone)]
pub struct Report {
    pub signer_name: String,
    pub requests: Vec<RequestLine>,
    /// `holder (renewed N s ago)`, or why there is none.
    pub leader: String,
    pub ca_secret: String,
    pub trust_bundle: String,
}

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("could not reach the API server within {REACH_TIMEOUT:?}")]
    Unreachable,
    #[error("listing PodCertificateRequests: {0}")]
    List(#[source] kube::Error),
}

/// Reads the cluster and builds the report.
pub async fn report(config: &Config, query: &Query) -> Result<Report, StatusError> {
    let client = cluster::connect(&config.cluster).await?;
    let give_up = CancellationToken::new();
    let timer = give_up.clone();
    let _timer = tokio::spawn(async move {
        tokio::time::sleep(REACH_TIMEOUT).await;
        timer.cancel();
    });
    let cluster = match Cluster::discover(client.clone(), &give_up).await {
        Err(StartError::Cancelled) => return Err(StatusError::Unreachable),
        other => other?,
    };
    let pcrs: Api<Pcr> = match &query.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &cluster.pcr_version),
        None => Api::all_with(client.clone(), &cluster.pcr_version),
    };
    // The pod is picked here, not with a field selector: which PCR fields are selectable
    // differs between releases.
    let mut found: Vec<Pcr> = pcrs
        .list(&ListParams::default())
        .await
        .map_err(StatusError::List)?
        .items
        .into_iter()
        .filter(|p| query.pod.as_ref().is_none_or(|pod| &p.spec.pod_name == pod))
        .collect();
    found.sort_by_key(|p| {
        (
            p.namespace(),
            p.creation_timestamp().map(|t| t.0),
            p.name_any(),
        )
    });

    let events = events(&client, query.namespace.as_deref()).await;
    let now = Timestamp::now();
    let requests = found
        .iter()
        .map(|p| request_line(p, &events, now))
        .collect();
    Ok(Report {
        signer_name: config.signer_name.clone(),
        requests,
        leader: leader(&client, config, now).await,
        ca_secret: ca_secret(&client, config).await,
        trust_bundle: trust_bundle(&cluster, config, now).await,
    })
}

/// Events about requests, newest last; empty if they cannot be read.
async fn events(client: &kube::Client, namespace: Option<&str>) -> Vec<Event> {
    let api: Api<Event> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut events: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("PodCertificateRequest"))
        })
        .collect();
    events.sort_by_key(last_seen);
    events
}

fn last_seen(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn request_line(p: &Pcr, events: &[Event], now: Timestamp) -> RequestLine {
    let age = p
        .creation_timestamp()
        .and_then(|t| Duration::try_from(now - t.0).ok())
        .unwrap_or_default();
    let (state, reason, message) = match terminal_condition(p) {
        Some(c) => (c.type_.clone(), c.reason.clone(), c.message.clone()),
        None => {
            // Still waiting: the last word anyone said about it.
            let uid = p.uid();
            let said = events.iter().rev().find(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.uid == uid
                        || (r.name.as_deref() == Some(&p.name_any())
                            && r.namespace == p.namespace())
                })
            });
            match said {
                Some(e) => (
                    "Pending".into(),
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default(),
                ),
                None => ("Pending".into(), String::new(), String::new()),
            }
        }
    };
    RequestLine {
        namespace: p.namespace().unwrap_or_default(),
        name: p.name_any(),
        pod: p.spec.pod_name.clone(),
        signer_name: p.spec.signer_name.clone(),
        state,
        age,
        reason,
        message,
    }
}

async fn leader(client: &kube::Client, config: &Config, now: Timestamp) -> String {
    let lease = &config.lease.name;
    let api: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
    match api.get_opt(&lease.name).await {
        Ok(Some(l)) => {
            let spec = l.spec.unwrap_or_default();
            let renewed = spec
                .renew_time
                .as_ref()
                .and_then(|t| Duration::try_from(now - t.0).ok())
                .map(|d| format!("renewed {} ago", human(d)))
                .unwrap_or_else(|| "never renewed".into());
            let expired = spec
                .lease_duration_seconds
                .zip(spec.renew_time.as_ref())
                .and_then(|(secs, t)| {
                    Duration::try_from(now - t.0)
                        .ok()
                        .map(|d| d.as_secs() > secs as u64)
                })
                .unwrap_or(false);
            match spec.holder_identity.filter(|h| !h.is_empty()) {
                Some(holder) if !expired => format!("{holder} (Lease {lease}, {renewed})"),
                Some(holder) => format!(
                    "none: {holder}'s Lease {lease} expired ({renewed}); is any replica running?"
                ),
                None => format!("none: Lease {lease} is not held"),
            }
        }
        Ok(None) => format!("none: no Lease {lease} (the signer has never run, or runs elsewhere)"),
        Err(e) => format!("unknown: cannot read Lease {lease}: {}", short(&e)),
    }
}

async fn ca_secret(client: &kube::Client, config: &Config) -> String {
    use crate::config::UpstreamAuthority;
    match config.ca.upstream.as_ref().map(|u| &u.authority) {
        Some(UpstreamAuthority::CertManager { issuer, .. }) => {
            return format!(
                "none: an upstream authority certifies the intermediates ({} {}, cert-manager)",
                issuer.kind, issuer.name
            );
        }
        Some(UpstreamAuthority::Vault(vault)) => {
            return format!(
                "none: an upstream authority certifies the intermediates (Vault {}, mount {})",
                vault.address, vault.pki_mount
            );
        }
        None => {}
    }
    let secret = &config.ca.secret;
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
    // Metadata only: the Secret's data never leaves the API server.
    match api.get_metadata_opt(&secret.name).await {
        Ok(Some(meta)) => {
            let annotations = meta.annotations();
            match (
                annotations.get(NEXT_PREVIEWED_AT),
                annotations.get(NEXT_PUBLISHED_AT),
            ) {
                (_, Some(at)) => format!(
                    "{secret}: present; a root rotation is under way (next root published at Unix {at})"
                ),
                (Some(at), None) => format!(
                    "{secret}: present; a root rotation is under way (next root in the preview bundle since Unix {at}, not yet live)"
                ),
                (None, None) => format!("{secret}: present; no rotation under way"),
            }
        }
        Ok(None) => format!(
            "{secret}: missing (the leader creates it on a fresh install; if one existed, it restores it from memory)"
        ),
        Err(e) => format!("{secret}: cannot read: {}", short(&e)),
    }
}

async fn trust_bundle(cluster: &Cluster, config: &Config, now: Timestamp) -> String {
    let name = &config.ca.trust_bundle_name;
    let Some(resource) = &cluster.ctb else {
        return format!("{name}: the cluster serves no ClusterTrustBundle API");
    };
    let api: Api<Ctb> = Api::all_with(cluster.client.clone(), resource);
    match api.get_opt(name).await {
        Ok(Some(ctb)) => match signer_core::ca::summarize(&ctb.spec.trust_bundle) {
            Ok(roots) => {
                let mut out = format!("{name}: {} root(s)", roots.len());
                for r in roots {
                    let left = r.not_after - now.as_second();
                    let _ = write!(
                        out,
                        "\n    {} valid until {} ({})",
                        if r.subject.is_empty() {
                            "(empty subject)"
                        } else {
                            &r.subject
                        },
                        Timestamp::from_second(r.not_after)
                            .map_or_else(|_| r.not_after.to_string(), |t| t.to_string()),
                        if left > 0 {
                            format!("{} left", human(Duration::from_secs(left as u64)))
                        } else {
                            "EXPIRED".into()
                        }
                    );
                }
                out
            }
            Err(e) => format!("{name}: unreadable: {e}"),
        },
        Ok(None) => format!("{name}: not published (no leader has published its roots yet)"),
        Err(e) => format!("{name}: cannot read: {}", short(&e)),
    }
}

fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// 45s, 3m, 5h, 12d.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7_200 => format!("{}m", s / 60),
        7_200..172_800 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

impl Report {
    /// The text `status` prints: the requests as a table, then the signer.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.requests.is_empty() {
            out.push_str("No PodCertificateRequests found.\n");
        } else {
            let rows: Vec<[String; 7]> = self
                .requests
                .iter()
                .map(|r| {
                    [
                        r.namespace.clone(),
                        r.name.clone(),
                        r.pod.clone(),
                        r.signer_name.clone(),
                        r.state.clone(),
                        human(r.age),
                        r.reason.clone(),
                    ]
                })
                .collect();
            let header = [
                "NAMESPACE",
                "REQUEST",
                "POD",
                "SIGNER",
                "STATE",
                "AGE",
                "REASON",
            ];
            let mut widths = header.map(str::len);
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |cells: &[&str]| {
                let mut l = String::new();
                for (cell, w) in cells.iter().zip(widths) {
                    let _ = write!(l, "{cell:<w$}  ");
                }
                l.trim_end().to_string() + "\n"
            };
            out.push_str(&line(&header));
            for (row, r) in rows.iter().zip(&self.requests) {
                out.push_str(&line(&row.each_ref().map(String::as_str)));
                if !r.message.is_empty() {
                    let _ = writeln!(out, "    {}", r.message);
                }
            }
            let waiting = self
                .requests
                .iter()
                .filter(|r| r.state == "Pending" && r.signer_name != self.signer_name)
                .count();
            if waiting > 0 {
                let _ = writeln!(
                    out,
                    "{waiting} pending request(s) name another signer than {}: this signer will not answer them.",
                    self.signer_name
                );
            }
        }
        let _ = write!(
            out,
            "\nSigner {}\n  leader:       {}\n  CA Secret:    {}\n  trust bundle: {}\n",
            self.signer_name, self.leader, self.ca_secret, self.trust_bundle
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(300)), "5m");
        assert_eq!(human(Duration::from_secs(5 * 3600)), "5h");
        assert_eq!(human(Duration::from_secs(12 * 86_400)), "12d");
    }
}
