//! Kubernetes label selectors (`matchLabels` and `matchExpressions`), as the identity policy
//! selects namespaces with them.
//!
//! The semantics are `metav1.LabelSelector`'s: every `matchLabels` pair and every expression
//! must hold; `In` and `NotIn` need at least one value, `Exists` and `DoesNotExist` none; a
//! key that is absent satisfies `NotIn` and `DoesNotExist`; an empty selector selects
//! everything. [`LabelSelector::new`] refuses a malformed selector, so a policy that loads
//! can always be evaluated.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A selector as written (`metav1.LabelSelector`'s fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorSpec {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<ExpressionSpec>,
}

/// One `matchExpressions` entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpressionSpec {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// A validated selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl LabelSelector {
    /// Validates `spec`; the error says which key or operator is wrong.
    pub fn new(spec: &LabelSelectorSpec) -> Result<Self, String> {
        let mut requirements: Vec<Requirement> = spec
            .match_labels
            .iter()
            .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
            .collect();
        for e in &spec.match_expressions {
            if e.key.is_empty() {
                return Err("a matchExpressions key is empty".into());
            }
            let key = e.key.clone();
            let with_values = |values: &[String]| {
                if values.is_empty() {
                    Err(format!(
                        "matchExpressions key {:?}: operator {} needs at least one value",
                        e.key, e.operator
                    ))
                } else {
                    Ok(values.to_vec())
                }
            };
            let without_values = || {
                if e.values.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "matchExpressions key {:?}: operator {} takes no values",
                        e.key, e.operator
                    ))
                }
            };
            requirements.push(match e.operator.as_str() {
                "In" => Requirement::In(key, with_values(&e.values)?),
                "NotIn" => Requirement::NotIn(key, with_values(&e.values)?),
                "Exists" => without_values().map(|()| Requirement::Exists(key))?,
                "DoesNotExist" => without_values().map(|()| Requirement::DoesNotExist(key))?,
                other => {
                    return Err(format!(
                        "matchExpressions key {:?}: unknown operator {other:?} (In, NotIn, Exists or DoesNotExist)",
                        e.key
                    ));
                }
            });
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether it has no requirement, so it selects everything without reading labels.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selector(yaml: &str) -> Result<LabelSelector, String> {
        LabelSelector::new(&serde_saphyr::from_str(yaml).expect("valid YAML"))
    }

    #[test]
    fn an_empty_selector_selects_everything() {
        let s = selector("{}").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("team", "pay")])));
    }

    #[test]
    fn match_labels_needs_every_pair() {
        let s = selector("matchLabels: {team: pay, tier: prod}").unwrap();
        assert!(!s.is_empty());
        assert!(s.matches(&labels(&[("team", "pay"), ("tier", "prod"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("team", "pay")])));
        assert!(!s.matches(&labels(&[("team", "pay"), ("tier", "dev")])));
    }

    #[test]
    fn each_operator_as_kubernetes_defines_it() {
        let s = selector(
            "matchExpressions:\n\
             - {key: tier, operator: In, values: [prod, staging]}\n\
             - {key: legacy, operator: NotIn, values: ['true']}\n\
             - {key: team, operator: Exists}\n\
             - {key: quarantined, operator: DoesNotExist}\n",
        )
        .unwrap();
        assert!(s.matches(&labels(&[("tier", "prod"), ("team", "a")])));
        assert!(
            s.matches(&labels(&[
                ("tier", "staging"),
                ("team", "a"),
                ("legacy", "false")
            ])),
            "NotIn holds for another value"
        );
        assert!(!s.matches(&labels(&[("tier", "dev"), ("team", "a")])), "In");
        assert!(
            !s.matches(&labels(&[
                ("tier", "prod"),
                ("team", "a"),
                ("legacy", "true")
            ])),
            "NotIn"
        );
        assert!(!s.matches(&labels(&[("tier", "prod")])), "Exists");
        assert!(
            !s.matches(&labels(&[
                ("tier", "prod"),
                ("team", "a"),
                ("quarantined", "")
            ])),
            "DoesNotExist"
        );
    }

    #[test]
    fn a_malformed_selector_is_refused_with_the_key_and_operator() {
        for (yaml, says) in [
            (
                "matchExpressions: [{key: a, operator: In}]",
                "In needs at least one value",
            ),
            (
                "matchExpressions: [{key: a, operator: NotIn, values: []}]",
                "NotIn needs at least one value",
            ),
            (
                "matchExpressions: [{key: a, operator: Exists, values: [x]}]",
                "Exists takes no values",
            ),
            (
                "matchExpressions: [{key: a, operator: Equals, values: [x]}]",
                "unknown operator \"Equals\"",
            ),
            (
                "matchExpressions: [{key: '', operator: Exists}]",
                "key is empty",
            ),
        ] {
            let e = selector(yaml).unwrap_err();
            assert!(e.contains(says), "{yaml}: {e}");
        }
    }
}
