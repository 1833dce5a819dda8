//! SPIFFE identities: trust domains, SPIFFE IDs and the template that names a pod's identity.
//!
//! Every rule of contract §7 is checked once, when the operator configures the signer: a
//! [`SpiffeIdTemplate`] only accepts templates that yield a valid SPIFFE ID for every valid
//! Kubernetes namespace and service-account name, so rendering on the hot path is string
//! concatenation. The only inputs are verified fields — the request's namespace and service
//! account — which [`SpiffeIdTemplate::render`] checks against Kubernetes' own name rules, so
//! a name with a `/` cannot smuggle in extra path segments.

use std::fmt;

use crate::names::{is_dns1123_label, is_dns1123_subdomain};

/// Why a trust domain, SPIFFE ID or template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpiffeError(String);

fn err(msg: impl Into<String>) -> SpiffeError {
    SpiffeError(msg.into())
}

/// A SPIFFE trust domain: lowercase `[a-z0-9._-]`, 1..=255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn new(name: &str) -> Result<Self, SpiffeError> {
        if name.is_empty() {
            return Err(err("trust domain is empty"));
        }
        if name.len() > 255 {
            return Err(err("trust domain is longer than 255 bytes"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
        {
            return Err(err(format!(
                "trust domain {name:?} has the character {c:?}; only lowercase letters, digits, '.', '_' and '-' are allowed"
            )));
        }
        Ok(TrustDomain(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID (`spiffe://<td>`, no path), as a CA may carry it.
    pub fn id(&self) -> SpiffeId {
        SpiffeId(format!("spiffe://{}", self.0))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A syntactically valid SPIFFE ID (`spiffe://<trust-domain>[/<path>]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId(String);

impl SpiffeId {
    /// Parses and validates a SPIFFE ID per contract §7.
    pub fn parse(id: &str) -> Result<Self, SpiffeError> {
        if id.len() > 2048 {
            return Err(err("SPIFFE ID is longer than 2048 bytes"));
        }
        let rest = id
            .strip_prefix("spiffe://")
            .ok_or_else(|| err(format!("SPIFFE ID {id:?} does not start with spiffe://")))?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        TrustDomain::new(td)?;
        if path.is_empty() {
            return Ok(SpiffeId(id.to_owned()));
        }
        // `path` starts with '/', so the first split element is empty.
        for segment in path.split('/').skip(1) {
            match segment {
                "" => return Err(err(format!("SPIFFE ID {id:?} has an empty path segment"))),
                "." | ".." => {
                    return Err(err(format!("SPIFFE ID {id:?} has a '.' or '..' segment")));
                }
                s => {
                    if let Some(c) = s
                        .chars()
                        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
                    {
                        return Err(err(format!(
                            "SPIFFE ID {id:?} has the character {c:?} in its path; only letters, digits, '.', '_' and '-' are allowed"
                        )));
                    }
                }
            }
        }
        Ok(SpiffeId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain: the authority between `spiffe://` and the path.
    pub fn trust_domain(&self) -> &str {
        let rest = self.0.strip_prefix("spiffe://").unwrap_or(&self.0);
        rest.split('/').next().unwrap_or(rest)
    }
}

/// The SPIFFE ID of an X.509-SVID (X509-SVID §2): its one URI SAN, a valid SPIFFE ID. Says
/// nothing of the chain; verify that first.
pub fn svid_id(der: &[u8]) -> Result<SpiffeId, SpiffeError> {
    use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| err(format!("not a certificate: {e}")))?;
    let uris: Vec<&str> = cert
        .extensions()
        .iter()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some(&san.general_names),
            _ => None,
        })
        .flatten()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [id] => SpiffeId::parse(id),
        _ => Err(err(format!(
            "not an X.509-SVID: it has {} URI SANs, not one",
            uris.len()
        ))),
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Namespace,
    ServiceAccount,
}

/// The template that turns a verified (namespace, service account) into a SPIFFE ID.
///
/// Written as a whole ID whose authority is the placeholder `{trust_domain}`; the path may use
/// `{namespace}` and `{service_account}`, and must use both, so that no two namespaces or
/// service accounts ever share an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeIdTemplate {
    /// `spiffe://<td>` with the trust domain filled in.
    prefix: String,
    path: Vec<Part>,
}

impl SpiffeIdTemplate {
    /// The Kubernetes convention.
    pub const DEFAULT: &'static str = "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}";

    pub fn new(template: &str, trust_domain: &TrustDomain) -> Result<Self, SpiffeError> {
        let path = template
            .strip_prefix("spiffe://{trust_domain}")
            .ok_or_else(|| {
                err(format!(
                    "SPIFFE ID template {template:?} must start with spiffe://{{trust_domain}}"
                ))
            })?;
        if !path.starts_with('/') {
            return Err(err(format!(
                "SPIFFE ID template {template:?} needs a path after the trust domain"
            )));
        }
        let mut parts = Vec::new();
        let mut rest = path;
        while let Some((literal, after)) = rest.split_once('{') {
            if !literal.is_empty() {
                parts.push(Part::Literal(literal.to_owned()));
            }
            let (name, after) = after.split_once('}').ok_or_else(|| {
                err(format!(
                    "SPIFFE ID template {template:?} has an unclosed '{{'"
                ))
            })?;
            parts.push(match name {
                "namespace" => Part::Namespace,
                "service_account" => Part::ServiceAccount,
                other => {
                    return Err(err(format!(
                        "SPIFFE ID template {template:?} has the unknown placeholder {{{other}}}; use {{namespace}} and {{service_account}}"
                    )));
                }
            });
            rest = after;
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        if !parts.contains(&Part::Namespace) || !parts.contains(&Part::ServiceAccount) {
            return Err(err(format!(
                "SPIFFE ID template {template:?} must use both {{namespace}} and {{service_account}}"
            )));
        }
        check_unambiguous(template, &parts)?;
        let this = SpiffeIdTemplate {
            prefix: format!("spiffe://{trust_domain}"),
            path: parts,
        };
        // Kubernetes names are non-empty and start and end with [a-z0-9], so a placeholder
        // never forms an empty, '.' or '..' segment: one sample proves every rendering valid.
        // The longest names must also fit in 2048 bytes.
        SpiffeId::parse(&this.render_unchecked("x", "x"))?;
        let longest = this.render_unchecked(&"a".repeat(63), &"a".repeat(253));
        if longest.len() > 2048 {
            return Err(err(format!(
                "SPIFFE ID template {template:?} can yield IDs longer than 2048 bytes"
            )));
        }
        Ok(this)
    }

    /// The SPIFFE ID of `service_account` in `namespace`, or why those names are not valid
    /// Kubernetes names.
    pub fn render(&self, namespace: &str, service_account: &str) -> Result<SpiffeId, SpiffeError> {
        if !is_dns1123_label(namespace) {
            return Err(err(format!(
                "namespace {namespace:?} is not a valid Kubernetes namespace name"
            )));
        }
        if !is_dns1123_subdomain(service_account) {
            return Err(err(format!(
                "service account {service_account:?} is not a valid Kubernetes service account name"
            )));
        }
        // Valid by construction: `new` proved every rendering of valid names valid.
        Ok(SpiffeId(self.render_unchecked(namespace, service_account)))
    }

    fn render_unchecked(&self, namespace: &str, service_account: &str) -> String {
        let mut id = String::with_capacity(self.prefix.len().saturating_add(64));
        id.push_str(&self.prefix);
        for part in &self.path {
            id.push_str(match part {
                Part::Literal(l) => l,
                Part::Namespace => namespace,
                Part::ServiceAccount => service_account,
            });
        }
        id
    }
}

/// Characters a namespace (DNS-1123 label) or service account (DNS-1123 subdomain) name can
/// contain.
fn can_occur_in_a_name(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '-' | '.')
}

/// Two different (namespace, service account) pairs must never render the same ID. That holds
/// when the text between any two placeholders has a character no name can contain (`/`, `_`,
/// an upper-case letter): it marks where the first name ends. `{namespace}-{service_account}`
/// fails (`a-b` + `c` and `a` + `b-c`), as do `.` and placeholders with nothing between.
fn check_unambiguous(template: &str, parts: &[Part]) -> Result<(), SpiffeError> {
    let mut between: Option<&str> = None;
    for part in parts {
        match part {
            Part::Literal(l) => between = between.map(|_| l.as_str()),
            Part::Namespace | Part::ServiceAccount => {
                if let Some(sep) = between
                    && sep.chars().all(can_occur_in_a_name)
                {
                    return Err(err(format!(
                        "SPIFFE ID template {template:?} is ambiguous: {} between two placeholders can occur in a namespace or service account name, so two workloads could get one ID; separate them with a character names cannot contain, such as '/' or '_'",
                        if sep.is_empty() {
                            "nothing".to_owned()
                        } else {
                            format!("{sep:?}")
                        }
                    )));
                }
                between = Some("");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "spiffe_tests.rs"]
mod tests;
