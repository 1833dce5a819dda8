//! Kubernetes name rules, as kube-apiserver applies them: DNS-1123 labels and subdomains,
//! signer names, ClusterTrustBundle names.
//!
//! They are string rules, not Kubernetes types, and both sides need them exactly: the signer
//! refuses at start a `--signer-name` or trust-bundle name the API server would reject (so a
//! misconfigured signer cannot start fine and then never work), and the test API server
//! refuses what kube-apiserver refuses. Each function names the upstream function it mirrors
//! (`k8s.io/apimachinery/pkg/util/validation`, `pkg/apis/core/validation`) and returns its
//! messages word for word, empty when the name is valid.

/// `IsDNS1123Label`'s message for a name that does not match its pattern.
pub const DNS1123_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
/// `IsDNS1123Subdomain`'s message for a name that does not match its pattern.
pub const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
/// `ValidateSignerName`'s message for a name without exactly one `/`.
pub const SIGNER_NAME_FORM_MESSAGE: &str =
    "must be a fully qualified domain and path of the form 'example.com/signer-name'";

fn is_label_shape(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// `validation.IsDNS1123Label`: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > 63 {
        errors.push("must be no more than 63 characters".to_string());
    }
    if !is_label_shape(s) {
        errors.push(DNS1123_LABEL_MESSAGE.to_string());
    }
    errors
}

/// `validation.IsDNS1123Subdomain`: dot-separated label shapes, at most 253 characters.
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > 253 {
        errors.push("must be no more than 253 characters".to_string());
    }
    if !s.split('.').all(is_label_shape) {
        errors.push(DNS1123_SUBDOMAIN_MESSAGE.to_string());
    }
    errors
}

pub fn is_dns1123_label(s: &str) -> bool {
    dns1123_label_errors(s).is_empty()
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    dns1123_subdomain_errors(s).is_empty()
}

/// `IsKubernetesSignerName`: signers under `kubernetes.io` belong to Kubernetes.
pub fn is_kubernetes_signer_name(signer_name: &str) -> bool {
    let host = signer_name.split_once('/').map_or(signer_name, |(h, _)| h);
    host == "kubernetes.io" || host.ends_with(".kubernetes.io")
}

/// `apivalidation.ValidateSignerName`: exactly one `/`; a domain of at least two DNS-1123
/// labels (≤ 253 characters); a path of dot-separated DNS-1123 subdomains; ≤ 571 characters.
pub fn signer_name_errors(signer_name: &str) -> Vec<String> {
    if signer_name.is_empty() {
        return vec!["Required value".to_string()];
    }
    let segments: Vec<&str> = signer_name.split('/').collect();
    let [domain, path] = segments[..] else {
        return vec![SIGNER_NAME_FORM_MESSAGE.to_string()];
    };
    let mut errors = Vec::new();
    if domain.len() > 253 {
        errors.push("Too long: may not be more than 253 bytes".to_string());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if let Some((label, label_errors)) = labels
        .iter()
        .map(|l| (l, dns1123_label_errors(l)))
        .find(|(_, e)| !e.is_empty())
    {
        errors.extend(
            label_errors
                .into_iter()
                .map(|e| format!("validating label {label:?}: {e}")),
        );
    }
    if labels.len() < 2 {
        errors.push("should be a domain with at least two segments separated by dots".to_string());
    }
    if let Some((label, label_errors)) = path
        .split('.')
        .map(|l| (l, dns1123_subdomain_errors(l)))
        .find(|(_, e)| !e.is_empty())
    {
        errors.extend(
            label_errors
                .into_iter()
                .map(|e| format!("validating label {label:?}: {e}")),
        );
    }
    // A domain (253), a namespace-like label (63), '.', a resource-like name (253), and '/'.
    if signer_name.len() > 253 + 63 + 1 + 253 + 1 {
        errors.push("Too long: may not be more than 571 bytes".to_string());
    }
    errors
}

/// `apivalidation.ValidateClusterTrustBundleName(signerName)`: a bundle with a signer name is
/// named `<signerName with '/' as ':'>:<suffix>`, the suffix a DNS-1123 subdomain; one
/// without may not contain `:`.
pub fn cluster_trust_bundle_name_errors(signer_name: &str, name: &str) -> Vec<String> {
    if signer_name.is_empty() {
        if name.contains(':') {
            return vec![
                "ClusterTrustBundle without signer name must not have \":\" in its name".into(),
            ];
        }
        return dns1123_subdomain_errors(name);
    }
    let prefix = format!("{}:", signer_name.replace('/', ":"));
    match name.strip_prefix(&prefix) {
        Some(suffix) => dns1123_subdomain_errors(suffix),
        None => vec![format!(
            "ClusterTrustBundle for signerName {signer_name} must be named with prefix {prefix}"
        )],
    }
}

#[cfg(test)]
mod tests {
    //! Cases from upstream `pkg/apis/core/validation` tests of `ValidateSignerName` and
    //! `ValidateClusterTrustBundleName`, and the names this signer once accepted wrongly.
    use super::*;

    #[test]
    fn signer_names_kube_apiserver_accepts() {
        for ok in [
            "example.com/signer-name",
            "foo.com/abc",
            "podcert.example.org/a.b-c",
            "k8s.io/x",
            "example.com/namespace.resource-name",
        ] {
            assert_eq!(signer_name_errors(ok), Vec::<String>::new(), "{ok}");
        }
    }

    #[test]
    fn signer_names_kube_apiserver_refuses() {
        for bad in [
            "",
            "not-valid-signername",
            "a.example/x/y",
            "example/spiffe",
            "Example.com/x",
            "example.com/X_y",
            "example.com/a_b",
            "example.com/",
            "example.com/a..b",
            "-example.com/a",
            "example.com/a b",
        ] {
            assert!(!signer_name_errors(bad).is_empty(), "{bad:?} was accepted");
        }
        assert_eq!(
            signer_name_errors("a.example/x/y"),
            [SIGNER_NAME_FORM_MESSAGE]
        );
        assert_eq!(
            signer_name_errors("example/spiffe"),
            ["should be a domain with at least two segments separated by dots"]
        );
        let long = format!(
            "{}.com/{}",
            "a".repeat(63),
            vec!["b".repeat(250); 3].join(".")
        );
        assert!(
            signer_name_errors(&long).iter().any(|e| e.contains("571")),
            "{:?}",
            signer_name_errors(&long)
        );
    }

    #[test]
    fn kubernetes_signers_are_recognised() {
        assert!(is_kubernetes_signer_name(
            "kubernetes.io/kube-apiserver-client"
        ));
        assert!(is_kubernetes_signer_name("x.kubernetes.io/y"));
        assert!(!is_kubernetes_signer_name("notkubernetes.io/y"));
    }

    #[test]
    fn cluster_trust_bundle_names() {
        assert!(
            cluster_trust_bundle_name_errors("example.com/spiffe", "example.com:spiffe:ca")
                .is_empty()
        );
        assert!(
            !cluster_trust_bundle_name_errors("example.com/spiffe", "example.com:spiffe:-ca")
                .is_empty()
        );
        assert!(
            !cluster_trust_bundle_name_errors("example.com/spiffe", "example.com:spiffe:")
                .is_empty()
        );
        assert!(!cluster_trust_bundle_name_errors("example.com/spiffe", "other:ca").is_empty());
        assert!(cluster_trust_bundle_name_errors("", "plain-bundle").is_empty());
        assert!(!cluster_trust_bundle_name_errors("", "a:b").is_empty());
    }
}
