//! The user annotations a workload may set (`userAnnotations` in its `podCertificate` volume,
//! `spec.unverifiedUserAnnotations` of the request), read into typed values.
//!
//! Nobody verifies these values: they only ever *narrow* what the identity policy grants, and
//! never choose the identity. An identity-policy rule lists which of the three keys, each
//! under the signer's own domain (`example.com/…` for signer `example.com/spiffe`), its
//! workloads may set ([`AnnotationKey`]): `lifetime` (a duration, e.g. `6h`), `usage`
//! (`client`, `server` or `both`) and `dns-names` (a comma-separated list of DNS names).
//! [`read`] refuses any other key, any key the rule does not list and any malformed value,
//! with the API's reason `InvalidUnverifiedUserAnnotations` and a message naming the key and
//! what is allowed; [`crate::signer`] then checks each value against the grant (a lifetime
//! within the rule's bounds, a usage within the rule's, DNS names among those the policy would
//! give the pod). Without a rule that lists them — and always with the signer's plain
//! settings — every annotation is refused, as contract §4 asks of unknown keys.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::request::{Denial, DenyReason};
use crate::usage::Usage;

/// An annotation a rule may let workloads set, by its name after the signer's domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AnnotationKey {
    /// `<domain>/lifetime`: a shorter lifetime than the rule's.
    Lifetime,
    /// `<domain>/usage`: client or server only, within the rule's usage.
    Usage,
    /// `<domain>/dns-names`: which of the pod's Service DNS names to carry.
    DnsNames,
}

impl AnnotationKey {
    pub const ALL: [AnnotationKey; 3] = [
        AnnotationKey::Lifetime,
        AnnotationKey::Usage,
        AnnotationKey::DnsNames,
    ];

    /// The key's name after `<domain>/`.
    pub fn name(self) -> &'static str {
        match self {
            AnnotationKey::Lifetime => "lifetime",
            AnnotationKey::Usage => "usage",
            AnnotationKey::DnsNames => "dns-names",
        }
    }
}

impl fmt::Display for AnnotationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AnnotationKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AnnotationKey::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("{s:?} is not an annotation workloads may set (one of lifetime, usage, dns-names)")
            })
    }
}

/// What a workload asked for, read and well-formed but not yet checked against its grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    /// `<domain>/lifetime`, in seconds.
    pub lifetime: Option<i64>,
    pub usage: Option<Usage>,
    /// `<domain>/dns-names`, in the order given, without repeats.
    pub dns_names: Option<Vec<String>>,
}

/// Who allows what, for messages: a rule by name, or nobody (no identity policy).
#[derive(Debug, Clone, Copy)]
pub struct Allowed<'a> {
    /// The signer's domain, the keys' prefix.
    pub domain: &'a str,
    /// The keys the rule lists (empty without one).
    pub keys: &'a BTreeSet<AnnotationKey>,
    /// The rule's name; None without an identity policy.
    pub rule: Option<&'a str>,
}

impl Allowed<'_> {
    /// "rule "x" allows example.com/lifetime, example.com/usage", or why nothing is allowed.
    pub fn says(&self) -> String {
        let listed: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{}/{k}", self.domain))
            .collect();
        match (self.rule, listed.is_empty()) {
            (Some(rule), false) => format!("rule {rule:?} allows {}", listed.join(", ")),
            (Some(rule), true) => format!(
                "rule {rule:?} allows none (its userAnnotations lists the keys workloads may set)"
            ),
            (None, _) => "this signer allows none without an identity policy whose rule lists them (userAnnotations)".into(),
        }
    }

    /// A denial for `key`, saying `problem`.
    pub fn deny(&self, key: AnnotationKey, problem: impl fmt::Display) -> Denial {
        Denial::new(
            DenyReason::InvalidUnverifiedUserAnnotations,
            format!(
                "unverifiedUserAnnotations: {}/{key}: {problem}",
                self.domain
            ),
        )
    }
}

/// Reads `annotations` as far as `allowed` permits; the first key that is not allowed, or the
/// first malformed value, is the denial.
pub fn read(
    annotations: &BTreeMap<String, String>,
    allowed: &Allowed<'_>,
) -> Result<Asked, Denial> {
    let mut asked = Asked::default();
    for (key, value) in annotations {
        let known = key
            .strip_prefix(allowed.domain)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|name| name.parse::<AnnotationKey>().ok())
            .filter(|k| allowed.keys.contains(k));
        let Some(known) = known else {
            return Err(Denial::new(
                DenyReason::InvalidUnverifiedUserAnnotations,
                format!(
                    "unverifiedUserAnnotations: the key {:?} is not allowed: {}",
                    shown(key),
                    allowed.says()
                ),
            ));
        };
        match known {
            AnnotationKey::Lifetime => {
                let d = parse_duration(value).map_err(|m| allowed.deny(known, m))?;
                asked.lifetime = Some(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            }
            AnnotationKey::Usage => {
                asked.usage = Some(value.trim().parse().map_err(|m| allowed.deny(known, m))?);
            }
            AnnotationKey::DnsNames => {
                asked.dns_names = Some(dns_names(value).map_err(|m| allowed.deny(known, m))?);
            }
        }
    }
    Ok(asked)
}

/// A key as shown in a message: at most 100 characters of it (a key is the user's, and
/// may be long).
fn shown(key: &str) -> String {
    key.chars().take(100).collect()
}

/// `6h`, `90m`, `1d`: humantime's durations, as the identity policy writes them.
fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|_| format!("{:?} is not a duration such as 6h, 90m or 1d", shown(value)))
}

/// A comma-separated list of DNS names, at least one, each once.
fn dns_names(value: &str) -> Result<Vec<String>, String> {
    let mut seen = BTreeSet::new();
    let mut names = Vec::new();
    for name in value.split(',').map(str::trim) {
        if !crate::names::is_dns1123_subdomain(name) {
            return Err(format!(
                "{:?} is not a DNS name (give a comma-separated list of the pod's Service names)",
                shown(name)
            ));
        }
        if seen.insert(name) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_with(keys: &[AnnotationKey], pairs: &[(&str, &str)]) -> Result<Asked, Denial> {
        let keys: BTreeSet<_> = keys.iter().copied().collect();
        let annotations = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read(
            &annotations,
            &Allowed {
                domain: "example.com",
                keys: &keys,
                rule: Some("web"),
            },
        )
    }

    #[test]
    fn each_listed_key_reads_as_its_typed_value() {
        let asked = read_with(
            &AnnotationKey::ALL,
            &[
                ("example.com/lifetime", "2h"),
                ("example.com/usage", "client"),
                (
                    "example.com/dns-names",
                    "api.shop.svc, api.shop.svc ,web.shop.svc",
                ),
            ],
        )
        .unwrap();
        assert_eq!(asked.lifetime, Some(7200));
        assert_eq!(asked.usage, Some(Usage::Client));
        assert_eq!(asked.dns_names.unwrap(), ["api.shop.svc", "web.shop.svc"]);
    }

    #[test]
    fn a_key_the_rule_does_not_list_or_of_another_domain_is_denied_naming_what_is_allowed() {
        for key in [
            "example.com/usage",
            "example.com/spiffe-id",
            "other.io/lifetime",
            "example.comm/lifetime",
            "lifetime",
        ] {
            let d = read_with(&[AnnotationKey::Lifetime], &[(key, "client")]).unwrap_err();
            assert_eq!(d.reason, DenyReason::InvalidUnverifiedUserAnnotations);
            assert!(d.message.contains(&format!("{key:?}")), "{}", d.message);
            assert!(
                d.message
                    .contains("rule \"web\" allows example.com/lifetime"),
                "{}",
                d.message
            );
        }
    }

    #[test]
    fn a_malformed_value_is_denied_naming_its_key() {
        for (key, value, says) in [
            ("example.com/lifetime", "soon", "is not a duration"),
            ("example.com/usage", "Server", "is not a usage"),
            (
                "example.com/dns-names",
                "api.shop.svc,,x",
                "is not a DNS name",
            ),
            ("example.com/dns-names", "*.shop.svc", "is not a DNS name"),
        ] {
            let d = read_with(&AnnotationKey::ALL, &[(key, value)]).unwrap_err();
            assert_eq!(d.reason, DenyReason::InvalidUnverifiedUserAnnotations);
            assert!(
                d.message
                    .starts_with(&format!("unverifiedUserAnnotations: {key}: ")),
                "{}",
                d.message
            );
            assert!(d.message.contains(says), "{}", d.message);
        }
    }

    #[test]
    fn without_a_rule_nothing_is_allowed() {
        let keys = BTreeSet::new();
        let annotations = BTreeMap::from([("example.com/lifetime".into(), "2h".into())]);
        let d = read(
            &annotations,
            &Allowed {
                domain: "example.com",
                keys: &keys,
                rule: None,
            },
        )
        .unwrap_err();
        assert!(
            d.message.contains("allows none without an identity policy"),
            "{}",
            d.message
        );
    }
}
