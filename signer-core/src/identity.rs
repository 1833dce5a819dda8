//! The identity policy: which namespaces and service accounts may get an SVID from this
//! signer, and with which settings.
//!
//! An operator writes it as a YAML file (usually a mounted ConfigMap); [`IdentityPolicy::parse`]
//! reads and validates all of it, and any mistake comes back as a [`PolicyError`] naming the
//! line. A policy is an ordered list of rules. For each request the first rule whose
//! `namespaces` select the request's namespace (by name, by label selector, or both — each
//! given part must hold) and whose `serviceAccounts.allow` includes its service account (all
//! when omitted) applies; a service account in a namespace-matching rule's
//! `serviceAccounts.deny` is refused at once, never passed on to a later rule. No applicable
//! rule is a denial ([`DenyReason::NotAllowedByPolicy`]). A rule may narrow the signer's
//! settings: its own SPIFFE ID template, a shorter lifetime, fewer key types, client or server
//! usage only ([`Usage`]); may ask for DNS names of the Services that select the pod and for
//! the pod's IPs, which the controller looks up live and signer-core puts beside the one URI
//! SAN; and may let its workloads narrow the grant further with user annotations
//! ([`crate::annotations`]).
//!
//! ```yaml
//! rules:
//!   - name: payments
//!     namespaces:
//!       selector: {matchLabels: {team: payments}}
//!     serviceAccounts: {deny: [default]}
//!     lifetime: 6h
//!     keyTypes: [ECDSAP256]
//!     usage: server
//!     dnsNames: {services: true}
//!     userAnnotations: [lifetime, dns-names]
//!   - name: everyone-else
//!     namespaces: {names: [web, batch]}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::annotations::AnnotationKey;
use crate::key::KeyType;
use crate::policy::MIN_LIFETIME_SECONDS;
use crate::request::{Denial, DenyReason};
use crate::selector::{LabelSelector, LabelSelectorSpec};
use crate::spiffe::{SpiffeIdTemplate, TrustDomain};
use crate::usage::Usage;

/// Why a policy file cannot be used: the line (1-based, 0 when unknown) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct PolicyError {
    pub line: usize,
    pub message: String,
}

/// What a request is, as far as the policy is concerned; every field is verified (the
/// namespace's labels are read live from the API server).
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub service_account: &'a str,
}

/// What the applicable rule asks of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The rule's name, for messages and logs.
    pub rule: String,
    /// Its SPIFFE ID template, if it has its own.
    pub template: Option<SpiffeIdTemplate>,
    /// Its lifetime cap, if it has one (never above the signer's `--default-lifetime`).
    pub lifetime: Option<Duration>,
    /// Its key types, if it narrows them.
    pub key_types: Option<Vec<KeyType>>,
    /// Client, server or both (the default).
    pub usage: Usage,
    pub dns_names: DnsNames,
    /// The user annotations its workloads may set (none by default).
    pub user_annotations: BTreeSet<AnnotationKey>,
}

/// Which names beside the SPIFFE ID a rule asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsNames {
    /// `<svc>.<ns>.svc` and `<svc>.<ns>.svc.<cluster domain>` for each Service in the pod's
    /// namespace whose selector matches the pod's labels.
    #[serde(default)]
    pub services: bool,
    /// The pod's own IP addresses as IP SANs.
    #[serde(default, rename = "podIP")]
    pub pod_ip: bool,
}

impl DnsNames {
    /// Whether the pod must be looked up at all.
    pub fn any(&self) -> bool {
        self.services || self.pod_ip
    }
}

#[derive(Debug, Clone)]
struct Rule {
    namespace_names: Option<BTreeSet<String>>,
    namespace_selector: Option<LabelSelector>,
    allow: Option<BTreeSet<String>>,
    deny: BTreeSet<String>,
    grant: Grant,
}

/// A validated identity policy.
#[derive(Debug, Clone)]
pub struct IdentityPolicy {
    rules: Vec<Rule>,
    /// Whether any rule selects namespaces by a non-empty label selector: settled once when
    /// the file is read, asked on every request.
    reads_namespace_labels: bool,
}

// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    rules: Vec<Spanned<RuleSpec>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleSpec {
    name: String,
    namespaces: NamespacesSpec,
    #[serde(default)]
    service_accounts: AccountsSpec,
    spiffe_id_template: Option<Spanned<String>>,
    lifetime: Option<Spanned<String>>,
    key_types: Option<Spanned<Vec<String>>>,
    usage: Option<Spanned<String>>,
    #[serde(default)]
    dns_names: DnsNames,
    user_annotations: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespacesSpec {
    names: Option<Vec<String>>,
    selector: Option<Spanned<LabelSelectorSpec>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsSpec {
    allow: Option<Vec<String>>,
    #[serde(default)]
    deny: Vec<String>,
}

impl IdentityPolicy {
    /// Reads and validates a policy file. `trust_domain` fills rules' templates; a rule's
    /// lifetime may not exceed `max_lifetime` (the signer's `--default-lifetime`, which the
    /// CA's planning assumes is the longest any leaf lives).
    pub fn parse(
        yaml: &str,
        trust_domain: &TrustDomain,
        max_lifetime: Duration,
    ) -> Result<Self, PolicyError> {
        let file: File = serde_saphyr::from_str(yaml).map_err(|e| PolicyError {
            line: e.location().map_or(0, |l| l.line() as usize),
            message: e.to_string(),
        })?;
        if file.rules.is_empty() {
            return Err(PolicyError {
                line: 1,
                message: "the policy has no rules, so it would deny every request; list at least one rule".into(),
            });
        }
        let mut names = BTreeSet::new();
        let mut rules = Vec::with_capacity(file.rules.len());
        for spec in file.rules {
            let line = spec.referenced.line() as usize;
            let at = |message: String| PolicyError { line, message };
            let s = spec.value;
            let rule_err = |m: String| at(format!("rule {:?}: {m}", s.name));
            if s.name.is_empty() {
                return Err(at("a rule needs a name".into()));
            }
            if !names.insert(s.name.clone()) {
                return Err(rule_err("another rule has this name".into()));
            }
            if s.namespaces.names.is_none() && s.namespaces.selector.is_none() {
                return Err(rule_err(
                    "namespaces needs names, a selector or both (use selector: {} for every namespace)"
                        .into(),
                ));
            }
            let name = &s.name;
            let namespace_selector = field(
                name,
                "namespaces.selector",
                s.namespaces.selector.as_ref(),
                LabelSelector::new,
            )?;
            let template = field(
                name,
                "spiffeIdTemplate",
                s.spiffe_id_template.as_ref(),
                |t| SpiffeIdTemplate::new(t, trust_domain).map_err(|e| e.to_string()),
            )?;
            let lifetime = field(name, "lifetime", s.lifetime.as_ref(), |l| {
                lifetime(l, max_lifetime)
            })?;
            let key_types = field(name, "keyTypes", s.key_types.as_ref(), |k| key_types(k))?;
            let usage = field(name, "usage", s.usage.as_ref(), |u| u.parse::<Usage>())?;
            let user_annotations = field(
                name,
                "userAnnotations",
                s.user_annotations.as_ref(),
                |keys| user_annotations(keys, &s.dns_names),
            )?;
            rules.push(Rule {
                namespace_names: s.namespaces.names.map(|n| n.into_iter().collect()),
                namespace_selector,
                allow: s.service_accounts.allow.map(|a| a.into_iter().collect()),
                deny: s.service_accounts.deny.into_iter().collect(),
                grant: Grant {
                    rule: s.name,
                    template,
                    lifetime,
                    key_types,
                    usage: usage.unwrap_or_default(),
                    dns_names: s.dns_names,
                    user_annotations: user_annotations.unwrap_or_default(),
                },
            });
        }
        let reads_namespace_labels = rules
            .iter()
            .any(|r| r.namespace_selector.as_ref().is_some_and(|s| !s.is_empty()));
        Ok(IdentityPolicy {
            rules,
            reads_namespace_labels,
        })
    }

    /// Whether any rule selects namespaces by label (the controller then reads them); an
    /// empty selector (`selector: {}`, every namespace) needs no labels.
    pub fn reads_namespace_labels(&self) -> bool {
        self.reads_namespace_labels
    }

    /// The grant of the rule that applies to `subject`, or the denial.
    pub fn decide(&self, subject: &Subject<'_>) -> Result<&Grant, Denial> {
        for rule in &self.rules {
            let by_name = rule
                .namespace_names
                .as_ref()
                .is_none_or(|n| n.contains(subject.namespace));
            let by_label = rule
                .namespace_selector
                .as_ref()
                .is_none_or(|s| s.matches(subject.namespace_labels));
            if !(by_name && by_label) {
                continue;
            }
            if rule.deny.contains(subject.service_account) {
                return Err(Denial::new(
                    DenyReason::NotAllowedByPolicy,
                    format!(
                        "service account {:?} in namespace {:?} is denied by rule {:?} of the identity policy",
                        subject.service_account, subject.namespace, rule.grant.rule
                    ),
                ));
            }
            if rule
                .allow
                .as_ref()
                .is_none_or(|a| a.contains(subject.service_account))
            {
                return Ok(&rule.grant);
            }
        }
        Err(Denial::new(
            DenyReason::NotAllowedByPolicy,
            format!(
                "no rule of the identity policy allows service account {:?} in namespace {:?}",
                subject.service_account, subject.namespace
            ),
        ))
    }
}

/// `check` applied to an optional field; its error names the field's own line.
fn field<T, U>(
    rule: &str,
    what: &str,
    value: Option<&Spanned<T>>,
    check: impl FnOnce(&T) -> Result<U, String>,
) -> Result<Option<U>, PolicyError> {
    value
        .map(|v| {
            check(&v.value).map_err(|m| PolicyError {
                line: v.referenced.line() as usize,
                message: format!("rule {rule:?}: {what}: {m}"),
            })
        })
        .transpose()
}

fn key_types(names: &[String]) -> Result<Vec<KeyType>, String> {
    if names.is_empty() {
        return Err("at least one key type (or leave keyTypes out)".into());
    }
    names
        .iter()
        .map(|k| {
            k.parse::<KeyType>().map_err(|_| {
                format!(
                    "unknown key type {k:?} (one of {})",
                    KeyType::ALL.map(KeyType::as_str).join(", ")
                )
            })
        })
        .collect()
}

/// The annotation keys a rule lists: known names, each once; `dns-names` only where the rule
/// gives Service names to choose from.
fn user_annotations(
    keys: &[String],
    dns_names: &DnsNames,
) -> Result<BTreeSet<AnnotationKey>, String> {
    let mut set = BTreeSet::new();
    for k in keys {
        let key = k.parse::<AnnotationKey>()?;
        if !set.insert(key) {
            return Err(format!("{k:?} is listed twice"));
        }
        if key == AnnotationKey::DnsNames && !dns_names.services {
            return Err(
                "dns-names chooses among the pod's Service names, so the rule needs dnsNames: {services: true}"
                    .into(),
            );
        }
    }
    Ok(set)
}

fn lifetime(text: &str, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.as_secs() < MIN_LIFETIME_SECONDS.unsigned_abs() {
        return Err(format!(
            "{text} is shorter than the {MIN_LIFETIME_SECONDS}s every certificate must last"
        ));
    }
    if d > max {
        return Err(format!(
            "{text} is longer than the signer's --default-lifetime ({}s); a rule can only shorten it",
            max.as_secs()
        ));
    }
    Ok(d)
}

/// `90m`, `6h`, `1d`, `3600s`, `1h 30m`: humantime's durations.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as 6h, 90m or 1d ({e})"))
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
