//! Who is asking, and may they: authentication, impersonation and the RBAC authorizer, as
//! kube-apiserver runs them, over the Roles, ClusterRoles and bindings stored in this server.
//!
//! A bearer token *is* the user name here (test credentials): `podcert-test` is the admin
//! (`system:masters`), `system:serviceaccount:<ns>:<name>` a service account,
//! `system:node:<name>` a kubelet (`system:nodes`); everyone is `system:authenticated`.
//! `Impersonate-User`/`Impersonate-Group` work for a user allowed to `impersonate` users and
//! groups, as on a real server. [`Authorizer::allows`] mirrors the RBAC authorizer's rule
//! matching (`pkg/registry/rbac/validation` `RuleAllows`): verbs, API groups, resources with
//! subresources, resource names, `*` wildcards, and cluster-wide versus namespaced bindings.
//! The `sign` and `attest` checks of `pkg/certauthorization.IsAuthorizedForSignerName` ask
//! for the exact signer name and then for `<domain>/*`.

use serde_json::Value;

use super::store::Store;

/// The admin's token; `system:masters` bypasses authorization as on a real server.
pub const ADMIN: &str = "podcert-test";
/// A second admin whose PodCertificateRequests skip the cryptographic admission checks (key
/// type, proof of possession, CSR signature): what a privileged writer straight to storage or
/// a compromised API path could create, so the signer's own checks stay tested.
pub const UNCHECKED: &str = "podcert-unchecked";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// The user a bearer token names.
    pub fn from_token(token: &str) -> User {
        let mut groups = vec!["system:authenticated".to_string()];
        if token == ADMIN || token == UNCHECKED {
            groups.push("system:masters".into());
        } else if let Some(rest) = token.strip_prefix("system:serviceaccount:") {
            groups.push("system:serviceaccounts".into());
            if let Some((ns, _)) = rest.split_once(':') {
                groups.push(format!("system:serviceaccounts:{ns}"));
            }
        } else if token.starts_with("system:node:") {
            groups.push("system:nodes".into());
        }
        User {
            name: token.to_string(),
            groups,
        }
    }

    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// What a request does, as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub api_group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Attributes {
    /// The message kube-apiserver's 403 carries.
    pub fn forbidden_message(&self, user: &User) -> String {
        let (plural, sub) = self
            .resource
            .split_once('/')
            .map_or((self.resource.as_str(), None), |(r, s)| (r, Some(s)));
        let qualified = match self.api_group.as_str() {
            "" => plural.to_string(),
            group => format!("{plural}.{group}"),
        };
        let what = match &self.name {
            Some(n) => format!("{qualified} {n:?}"),
            None => qualified,
        };
        // responsewriters.forbiddenMessage: the subresource joined to the resource by "/".
        let resource = match sub {
            Some(s) => format!("resource \"{plural}/{s}\""),
            None => format!("resource {plural:?}"),
        };
        let scope = match &self.namespace {
            Some(ns) => format!(" in the namespace {ns:?}"),
            None => " at the cluster scope".to_string(),
        };
        format!(
            "{what} is forbidden: User {:?} cannot {} {resource} in API group {:?}{scope}",
            user.name, self.verb, self.api_group
        )
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// `RuleAllows`: does one PolicyRule allow the request?
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let has = |field: &str, want: &str| {
        strings(&rule[field])
            .iter()
            .any(|x| *x == "*" || *x == want)
    };
    let resource_matches = strings(&rule["resources"]).iter().any(|r| {
        *r == "*"
            || *r == a.resource
            || a.resource
                .split_once('/')
                .is_some_and(|(_, sub)| *r == format!("*/{sub}"))
    });
    let names = strings(&rule["resourceNames"]);
    has("verbs", &a.verb)
        && has("apiGroups", &a.api_group)
        && resource_matches
        && (names.is_empty() || a.name.as_deref().is_some_and(|n| names.contains(&n)))
}

fn subject_matches(subject: &Value, user: &User) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"].as_str().unwrap_or("");
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// The RBAC authorizer over what `store` holds.
#[derive(Debug)]
pub struct Authorizer<'a> {
    pub store: &'a Store,
}

impl Authorizer<'_> {
    fn role_rules(&self, binding: &Value, binding_ns: &str) -> Vec<Value> {
        let role = &binding["roleRef"];
        let name = role["name"].as_str().unwrap_or("");
        let object = match role["kind"].as_str() {
            Some("ClusterRole") => {
                self.store
                    .get(&("clusterroles".into(), String::new(), name.into()))
            }
            Some("Role") => self
                .store
                .get(&("roles".into(), binding_ns.into(), name.into())),
            _ => None,
        };
        object
            .and_then(|r| r["rules"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Whether `user` may do `a`.
    pub fn allows(&self, user: &User, a: &Attributes) -> bool {
        if user.is_master() {
            return true;
        }
        let bound = |b: &Value| {
            b["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| subject_matches(s, user))
        };
        let cluster = self
            .store
            .list("clusterrolebindings", None)
            .filter(|(_, b)| bound(b))
            .flat_map(|(_, b)| self.role_rules(b, ""));
        let namespaced: Vec<Value> = match &a.namespace {
            Some(ns) => self
                .store
                .list("rolebindings", Some(ns))
                .filter(|(_, b)| bound(b))
                .flat_map(|(_, b)| self.role_rules(b, ns))
                .collect(),
            None => Vec::new(),
        };
        cluster.chain(namespaced).any(|rule| rule_allows(&rule, a))
    }

    /// `IsAuthorizedForSignerName`: `verb` (sign, attest, approve) on `signers` named the
    /// signer, or `<domain>/*`.
    pub fn allows_for_signer(&self, user: &User, verb: &str, signer_name: &str) -> bool {
        let ask = |name: String| Attributes {
            verb: verb.into(),
            api_group: "certificates.k8s.io".into(),
            resource: "signers".into(),
            namespace: None,
            name: Some(name),
        };
        self.allows(user, &ask(signer_name.into()))
            || signer_name
                .split_once('/')
                .is_some_and(|(domain, _)| self.allows(user, &ask(format!("{domain}/*"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, group: &str, resource: &str, name: Option<&str>) -> Attributes {
        Attributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            namespace: Some("ns".into()),
            name: name.map(Into::into),
        }
    }

    #[test]
    fn rules_match_as_rbac_matches_them() {
        let rule = json!({"apiGroups": ["certificates.k8s.io"], "resources": ["podcertificaterequests/status"], "verbs": ["update"]});
        assert!(rule_allows(
            &rule,
            &attrs(
                "update",
                "certificates.k8s.io",
                "podcertificaterequests/status",
                Some("r")
            )
        ));
        assert!(!rule_allows(
            &rule,
            &attrs(
                "update",
                "certificates.k8s.io",
                "podcertificaterequests",
                Some("r")
            )
        ));
        assert!(!rule_allows(
            &rule,
            &attrs(
                "patch",
                "certificates.k8s.io",
                "podcertificaterequests/status",
                Some("r")
            )
        ));
        let named = json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ca"], "verbs": ["get"]});
        assert!(rule_allows(
            &named,
            &attrs("get", "", "secrets", Some("ca"))
        ));
        assert!(!rule_allows(
            &named,
            &attrs("get", "", "secrets", Some("other"))
        ));
        assert!(
            !rule_allows(&named, &attrs("get", "", "secrets", None)),
            "a name-restricted rule never allows a request without a name"
        );
        let wild = json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]});
        assert!(rule_allows(&wild, &attrs("update", "x", "y/status", None)));
        assert!(!rule_allows(&wild, &attrs("update", "x", "y", None)));
    }

    #[test]
    fn users_and_groups_from_tokens() {
        assert!(User::from_token(ADMIN).is_master());
        let sa = User::from_token("system:serviceaccount:podcert-signer:podcert-signer");
        assert!(
            sa.groups
                .contains(&"system:serviceaccounts:podcert-signer".to_string())
        );
        assert!(!sa.is_master());
        assert!(
            User::from_token("system:node:n1")
                .groups
                .contains(&"system:nodes".to_string())
        );
    }
}
