//! cert-manager as the upstream authority: one `CertificateRequest` (cert-manager.io/v1,
//! `isCA: true`) per signing intermediate, to the configured Issuer or ClusterIssuer.
//!
//! [`CertManager::certify`] files the request in the signer's namespace (labelled as ours,
//! named `podcert-signer-intermediate-<random>`), then reads it every [`POLL`] until it ends:
//! issued (`Ready` with `status.certificate` and `status.ca`), denied (a `Denied` condition:
//! an approver refused it), or failed (`Ready` False with reason `Failed`, or
//! `InvalidRequest`). A request still waiting for approval or for its issuer is simply waited
//! for — cert-manager retries an unavailable issuer itself. Each replica labels its requests
//! with its identity; before filing, it deletes its own earlier ones (each was for a key that
//! is gone, or has been answered) and any of ours older than an intermediate's validity (a
//! replica that went away mid-request), so a replica has at most one; an issued one is
//! deleted once its certificate is taken.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, ObjectMeta};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{Answer, Refusal, UpstreamError};
use crate::config::IssuerRef;

/// How often a filed request is read while it waits.
pub const POLL: Duration = Duration::from_secs(1);
/// After this long unanswered, a request is reported as waiting (once).
const WAITING_REPORT_AFTER: Duration = Duration::from_secs(60);

const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const LABEL_PURPOSE: &str = "podcert-signer/purpose";
/// The replica that filed a request (its `--identity`, as a label value).
const LABEL_REPLICA: &str = "podcert-signer/replica";

/// The CertificateRequests of one namespace, to one issuer.
#[derive(Clone)]
pub struct CertManager {
    api: Api<DynamicObject>,
    resource: ApiResource,
    issuer: IssuerRef,
    /// This replica, as the label value of its requests.
    replica: String,
    /// Requests of ours older than this are some gone replica's, deleted before filing.
    stale_after: Duration,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// What a request has come to.
#[derive(Debug)]
enum State {
    Waiting,
    Issued(Answer),
    Refused(Box<Refusal>),
}

impl CertManager {
    /// Requests to `issuer` in `namespace`, filed as replica `identity`; ours older than
    /// `stale_after` are deleted before filing.
    pub fn new(
        client: Client,
        namespace: &str,
        issuer: IssuerRef,
        identity: &str,
        stale_after: Duration,
    ) -> Self {
        let resource = ApiResource {
            group: "cert-manager.io".into(),
            version: "v1".into(),
            api_version: "cert-manager.io/v1".into(),
            kind: "CertificateRequest".into(),
            plural: "certificaterequests".into(),
        };
        CertManager {
            api: Api::namespaced_with(client, namespace, &resource),
            resource,
            issuer,
            replica: label_value(identity),
            stale_after,
        }
    }

    /// Where the requests go, for logs and Events: `Issuer ns/name` or `ClusterIssuer name`.
    pub fn describe(&self) -> String {
        let IssuerRef { name, kind, group } = &self.issuer;
        match self.api.namespace() {
            Some(ns) if kind == "Issuer" => format!("{kind}.{group} {ns}/{name}"),
            _ => format!("{kind}.{group} {name}"),
        }
    }

    /// Asks the issuer to certify `csr_pem` as a CA for `duration`, and waits for its answer
    /// (the caller stops waiting by dropping the future).
    pub async fn certify(
        &self,
        csr_pem: &str,
        duration: Duration,
    ) -> Result<Answer, UpstreamError> {
        let name = self.file(csr_pem, duration).await?;
        info!(request = %name, issuer = %self.describe(), "asked cert-manager to certify a new signing intermediate");
        let started = tokio::time::Instant::now();
        let mut reported = false;
        let mut failing = false;
        loop {
            let read = self.api.get_opt(&name).await;
            let read_failed = read.is_err();
            let state = match read {
                Ok(Some(cr)) => state_of(&cr),
                Ok(None) => {
                    return Err(UpstreamError::Unreachable(format!(
                        "the CertificateRequest {name} was deleted before it was answered"
                    )));
                }
                // Said once per run of failures, not every second of an API outage.
                Err(e) => {
                    if !failing {
                        warn!(request = %name, error = %e, "reading the CertificateRequest failed; reading it again every second");
                    }
                    State::Waiting
                }
            };
            failing = read_failed;
            match state {
                State::Waiting => {
                    if !reported && started.elapsed() >= WAITING_REPORT_AFTER {
                        reported = true;
                        warn!(request = %name, issuer = %self.describe(), waited = ?started.elapsed(), "the CertificateRequest for the signing intermediate is not answered yet (not approved, or the issuer is not ready); still signing with the current intermediate while there is one");
                    }
                }
                State::Issued(answer) => {
                    if let Err(e) = self.api.delete(&name, &DeleteParams::default()).await {
                        warn!(request = %name, error = %e, "could not delete the answered CertificateRequest; it is deleted before the next one is filed");
                    }
                    return Ok(answer);
                }
                State::Refused(mut refusal) => {
                    refusal.request = Some(self.object_ref(&name));
                    return Err(UpstreamError::Refused(refusal));
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Deletes this replica's earlier requests (and ours that are stale), then files one for
    /// `csr_pem`; returns its name.
    async fn file(&self, csr_pem: &str, duration: Duration) -> Result<String, UpstreamError> {
        let ours = ListParams::default().labels(&format!(
            "{LABEL_MANAGED_BY}=podcert-signer,{LABEL_PURPOSE}=intermediate"
        ));
        let unreachable = |doing: &str, e: kube::Error| {
            UpstreamError::Unreachable(format!("{doing} CertificateRequests failed: {e}"))
        };
        for earlier in self
            .api
            .list(&ours)
            .await
            .map_err(|e| unreachable("listing our", e))?
        {
            let mine = earlier.labels().get(LABEL_REPLICA) == Some(&self.replica);
            let stale = earlier
                .metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| {
                    let age = system_now().saturating_sub(t.0.as_second());
                    u64::try_from(age).unwrap_or(0) > self.stale_after.as_secs()
                });
            if !mine && !stale {
                continue;
            }
            match self
                .api
                .delete(&earlier.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(unreachable("deleting an earlier of our", e)),
            }
        }
        let mut cr =
            DynamicObject::new("", &self.resource).within(self.api.namespace().unwrap_or_default());
        cr.metadata = ObjectMeta {
            generate_name: Some("podcert-signer-intermediate-".into()),
            namespace: cr.metadata.namespace.take(),
            labels: Some(BTreeMap::from([
                (LABEL_MANAGED_BY.into(), "podcert-signer".into()),
                (LABEL_PURPOSE.into(), "intermediate".into()),
                (LABEL_REPLICA.into(), self.replica.clone()),
            ])),
            ..ObjectMeta::default()
        };
        cr.data = json!({"spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(csr_pem),
            "isCA": true,
            "duration": format!("{}s", duration.as_secs()),
            "usages": ["cert sign", "crl sign", "digital signature"],
            "issuerRef": {
                "name": self.issuer.name,
                "kind": self.issuer.kind,
                "group": self.issuer.group,
            },
        }});
        let created = self
            .api
            .create(&PostParams::default(), &cr)
            .await
            .map_err(|e| unreachable("creating", e))?;
        Ok(created.name_any())
    }

    fn object_ref(&self, name: &str) -> k8s_openapi::api::core::v1::ObjectReference {
        k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(self.resource.api_version.clone()),
            kind: Some(self.resource.kind.clone()),
            namespace: self.api.namespace().map(str::to_owned),
            name: Some(name.to_owned()),
            ..Default::default()
        }
    }
}

/// Unix seconds now, by the system clock (request ages are the API server's times).
fn system_now() -> i64 {
    signer_core::time::unix_seconds(std::time::SystemTime::now())
}

/// `identity` as a label value: its letters, digits, `-`, `_` and `.`, at most 63, starting
/// and ending with a letter or digit (`replica` if nothing is left).
fn label_value(identity: &str) -> String {
    let kept: String = identity
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect();
    let trimmed = kept.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "replica".into()
    } else {
        trimmed.to_owned()
    }
}

/// The condition of `type_` in `status.conditions`, when present.
fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn decoded(status: &Value, field: &str) -> Result<String, String> {
    let b64 = status[field]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("status.{field} is empty"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| format!("status.{field} is not base64"))?;
    String::from_utf8(bytes).map_err(|_| format!("status.{field} is not PEM text"))
}

/// What `cr`'s status says (cert-manager's conditions: Approved/Denied, InvalidRequest,
/// Ready with reason Pending, Failed or Issued).
fn state_of(cr: &DynamicObject) -> State {
    let status = &cr.data["status"];
    let message = |c: &Value| c["message"].as_str().unwrap_or_default().to_owned();
    if let Some(c) = condition(status, "Denied").filter(|c| c["status"] == "True") {
        return State::Refused(Box::new(Refusal::new("Denied", message(c))));
    }
    if let Some(c) = condition(status, "InvalidRequest").filter(|c| c["status"] == "True") {
        return State::Refused(Box::new(Refusal::new("InvalidRequest", message(c))));
    }
    match condition(status, "Ready") {
        Some(c) if c["status"] == "True" => {
            match (decoded(status, "certificate"), decoded(status, "ca")) {
                (Ok(chain_pem), Ok(roots_pem)) => State::Issued(Answer {
                    chain_pem,
                    roots_pem,
                    from: cr.name_any(),
                }),
                (Err(e), _) | (_, Err(e)) => State::Refused(Box::new(Refusal::new(
                    "Unusable",
                    format!("cert-manager marked it Ready but {e}"),
                ))),
            }
        }
        Some(c) if c["status"] == "False" && c["reason"] == "Failed" => {
            State::Refused(Box::new(Refusal::new("Failed", message(c))))
        }
        _ => State::Waiting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cr(status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
            "metadata": {"name": "podcert-signer-intermediate-x", "namespace": "podcert-signer"},
            "status": status,
        }))
        .unwrap()
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn a_replica_identity_becomes_a_valid_label_value() {
        assert_eq!(
            label_value("podcert-signer-7d9f_12"),
            "podcert-signer-7d9f_12"
        );
        assert_eq!(label_value("-a:b/c-"), "abc");
        assert_eq!(label_value("::"), "replica");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn a_request_waits_until_cert_manager_answers_it() {
        for status in [
            json!({}),
            json!({"conditions": [{"type": "Approved", "status": "True"}]}),
            json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Pending", "message": "issuer not ready"}]}),
        ] {
            assert!(
                matches!(state_of(&cr(status.clone())), State::Waiting),
                "{status}"
            );
        }
    }

    #[test]
    fn ready_gives_the_chain_and_the_ca() {
        let status = json!({
            "conditions": [{"type": "Approved", "status": "True"}, {"type": "Ready", "status": "True", "reason": "Issued"}],
            "certificate": b64("CHAIN"), "ca": b64("ROOT"),
        });
        let State::Issued(a) = state_of(&cr(status)) else {
            panic!()
        };
        assert_eq!(
            (a.chain_pem.as_str(), a.roots_pem.as_str()),
            ("CHAIN", "ROOT")
        );
    }

    #[test]
    fn denied_failed_invalid_and_a_ready_without_its_ca_are_refusals_with_their_reason() {
        let cases = [
            (
                json!({"conditions": [{"type": "Denied", "status": "True", "reason": "Policy", "message": "no CAs here"}]}),
                "Denied",
                "no CAs here",
            ),
            (
                json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Failed", "message": "signing failed"}]}),
                "Failed",
                "signing failed",
            ),
            (
                json!({"conditions": [{"type": "InvalidRequest", "status": "True", "message": "bad CSR"}]}),
                "InvalidRequest",
                "bad CSR",
            ),
            (
                json!({"conditions": [{"type": "Ready", "status": "True"}], "certificate": b64("CHAIN")}),
                "Unusable",
                "status.ca is empty",
            ),
        ];
        for (status, reason, says) in cases {
            let State::Refused(r) = state_of(&cr(status.clone())) else {
                panic!("{status}")
            };
            assert_eq!(r.reason, reason);
            assert!(r.message.contains(says), "{}", r.message);
        }
    }
}
