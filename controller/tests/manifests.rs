//! manifests/ and charts/podcert-signer: what `kubectl apply -k manifests/` and `helm install`
//! would create is well-formed and the same with the chart's default values, the chart's
//! values reach the objects they name, and the RBAC of both allows exactly the calls the
//! controller makes.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;
use podcert_tests::kubelet::{Format, PodRequest};
use serde_json::Value;
use support::*;

fn rendered() -> Vec<Value> {
    rendered_manifests().to_vec()
}

/// Both ways to install, rendered with their defaults: kustomize and real Helm.
fn renderings() -> [(&'static str, Vec<Value>); 2] {
    [
        ("manifests/", rendered()),
        ("charts/podcert-signer", rendered_chart(&[])),
    ]
}

/// The ClusterRole's rule on `signers` (sign and attest).
fn signers_rule(objects: &[Value]) -> &Value {
    objects.iter().find(|o| o["kind"] == "ClusterRole").unwrap()["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"][0] == "signers")
        .unwrap()
}

fn by_kind_and_name(mut objects: Vec<Value>) -> Vec<Value> {
    objects.sort_by_key(|o| (o["kind"].to_string(), o["metadata"]["name"].to_string()));
    objects
}

#[test]
fn the_chart_with_default_values_renders_exactly_the_kustomize_base() {
    let kustomized = by_kind_and_name(rendered());
    let charted = by_kind_and_name(rendered_chart(&[]));
    assert_eq!(kustomized.len(), charted.len());
    for (k, h) in kustomized.iter().zip(&charted) {
        assert_eq!(
            k, h,
            "{} {}: manifests/ and the chart differ",
            k["kind"], k["metadata"]["name"]
        );
    }
}

/// monitoring/scrape-config.yaml scrapes what both ways to install serve: the metrics Service's
/// HTTPS port, by its name, with Prometheus's own token (Debian's promtool, built without
/// Kubernetes service discovery, cannot check it; the real API server test reads the port).
#[test]
fn the_scrape_config_reaches_the_shipped_metrics_port_over_https_with_a_token() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../monitoring/scrape-config.yaml"),
    )
    .unwrap();
    let config: Value = serde_saphyr::from_str(&text).unwrap();
    let job = &config["scrape_configs"][0];
    assert_eq!(job["scheme"], "https");
    assert!(job["authorization"]["credentials_file"].is_string());
    let keep = job["relabel_configs"][0]["regex"].as_str().unwrap();
    let (service, port) = keep.split_once(';').unwrap();
    for (source, objects) in renderings() {
        let svc = objects
            .iter()
            .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == service)
            .unwrap_or_else(|| panic!("{source} has no Service {service}"));
        let target = &svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port)
            .unwrap_or_else(|| panic!("{source}: {service} has no port {port}"))["targetPort"];
        let deploy = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let c = &deploy["spec"]["template"]["spec"]["containers"][0];
        let served = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == *target)
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap();
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.contains(&format!("--secure-metrics-addr=0.0.0.0:{served}").as_str()),
            "{source}: the scraped port {served} is not where /metrics is served over HTTPS: {args:?}"
        );
    }
}

/// The NetworkPolicy switched on both ways: the kustomize component added to the base, and
/// the chart with `networkPolicy.enabled`; off by default in both.
#[test]
fn the_chart_with_a_network_policy_renders_exactly_the_kustomize_component() {
    let policies = |objects: &[Value]| {
        objects
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(policies(&rendered()).is_empty() && policies(&rendered_chart(&[])).is_empty());
    let kustomized = by_kind_and_name(rendered_manifests_with(&["network-policy"]));
    let charted = by_kind_and_name(rendered_chart(&[("networkPolicy.enabled", "true")]));
    assert_eq!(kustomized, charted, "the component and the chart differ");
    let policy = &policies(&charted)[0];
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "podcert-signer"
    );
    // Every port the Deployment exposes — the admin port, and with federation the bundle
    // endpoint's — is one the policy admits.
    let ingress = policy["spec"]["ingress"][0]["ports"]
        .as_array()
        .unwrap()
        .clone();
    for objects in [
        charted.clone(),
        rendered_manifests_with(&["federation", "network-policy"]),
    ] {
        let deploy = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let ports = deploy["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap();
        assert!(!ports.is_empty());
        for port in ports {
            assert!(
                ingress.iter().any(|p| p["port"] == port["containerPort"]),
                "{port} is not admitted by {ingress:?}"
            );
        }
    }
    assert_typed(charted);
}

/// The chart with one value `set` renders exactly what the base with `component` does, object
/// for object; the chart's objects, sorted.
fn component_as_charted(component: &str, set: (&str, &str)) -> Vec<Value> {
    let kustomized = by_kind_and_name(rendered_manifests_with(&[component]));
    let charted = by_kind_and_name(rendered_chart(&[set]));
    assert_eq!(kustomized.len(), charted.len());
    for (k, h) in kustomized.iter().zip(&charted) {
        assert_eq!(
            k, h,
            "{} {}: the component and the chart differ",
            k["kind"], k["metadata"]["name"]
        );
    }
    charted
}

/// The upstream authority switched on both ways: the kustomize component, and the chart
/// given the issuer the component's upstream.env names. Both render the same objects, and the
/// RBAC grows by the CertificateRequest Role only then.
#[test]
fn the_chart_with_an_upstream_issuer_renders_exactly_the_kustomize_component() {
    let charted = component_as_charted(
        "upstream-cert-manager",
        ("upstream.certManager.issuer", "podcert-signer-upstream"),
    );
    let upstream_role = |objects: &[Value]| {
        objects
            .iter()
            .any(|o| o["kind"] == "Role" && o["metadata"]["name"] == "podcert-signer-upstream")
    };
    assert!(upstream_role(&charted));
    assert!(!upstream_role(&by_kind_and_name(rendered_chart(&[]))));
    assert_typed(charted);
}

/// Vault as the upstream authority, both ways: the kustomize component, and the chart given
/// the address the component's upstream.env names. Both render the same objects: the
/// settings, the Vault CA's volume, and RBAC grown by system:auth-delegator only then.
#[test]
fn the_chart_with_a_vault_address_renders_exactly_the_kustomize_component() {
    let charted = component_as_charted(
        "upstream-vault",
        ("upstream.vault.address", "https://vault.vault.svc:8200"),
    );
    let delegator = |objects: &[Value]| {
        objects.iter().any(|o| {
            o["kind"] == "ClusterRoleBinding" && o["roleRef"]["name"] == "system:auth-delegator"
        })
    };
    assert!(delegator(&charted));
    assert!(!delegator(&by_kind_and_name(rendered_chart(&[]))));
    assert_typed(charted);
}

/// The chart's volumes compose: with an identity policy, Vault and pinned upstream roots at
/// once, each file is mounted where its setting points.
#[test]
fn the_charts_mounted_files_compose_and_their_settings_point_at_them() {
    let components = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/components");
    let policy = components.join("identity-policy/policy.yaml");
    let objects = rendered_chart_with(
        &[
            ("upstream.vault.address", "https://vault.example:8200"),
            ("upstream.trustAnchorsConfigMap", "org-roots"),
        ],
        &[("identityPolicy.policy", &policy)],
    );
    let config = &objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["data"].get("PODCERT_SIGNER_NAME").is_some())
        .unwrap()["data"];
    let deploy = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let setting = |name: &str| {
        config[name]
            .as_str()
            .or_else(|| {
                env.iter()
                    .find(|e| e["name"] == name)
                    .and_then(|e| e["value"].as_str())
            })
            .unwrap_or_else(|| panic!("{name} is not set"))
            .to_owned()
    };
    for (name, volume, config_map) in [
        ("PODCERT_IDENTITY_POLICY", "identity-policy", None),
        (
            "PODCERT_UPSTREAM_VAULT_CA_FILE",
            "vault-ca",
            Some("podcert-signer-vault-ca"),
        ),
        (
            "PODCERT_UPSTREAM_TRUST_ANCHORS",
            "upstream-trust-anchors",
            Some("org-roots"),
        ),
    ] {
        let file = setting(name);
        let mount = mounts
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("{volume} is not mounted"));
        assert!(
            file.starts_with(&format!("{}/", mount["mountPath"].as_str().unwrap())),
            "{name}={file} is outside {mount}"
        );
        let v = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume)
            .unwrap();
        if let Some(cm) = config_map {
            assert_eq!(v["configMap"]["name"], cm);
        }
    }
    assert_typed(objects);
}

/// The identity policy switched on both ways: the two kustomize components added to the base,
/// and the chart given the same policy file with `identityPolicy.serviceDnsNames`. Each
/// renders the same objects, and the RBAC grows only when switched on.
#[test]
fn the_chart_with_an_identity_policy_renders_exactly_the_kustomize_components() {
    let components = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/components");
    let policy = components.join("identity-policy/policy.yaml");
    for (parts, dns) in [
        (&["identity-policy"][..], "false"),
        (&["identity-policy", "service-dns-names"][..], "true"),
    ] {
        let kustomized = by_kind_and_name(rendered_manifests_with(parts));
        let charted = by_kind_and_name(rendered_chart_with(
            &[("identityPolicy.serviceDnsNames", dns)],
            &[("identityPolicy.policy", &policy)],
        ));
        let names = |objects: &[Value]| -> Vec<String> {
            objects
                .iter()
                .map(|o| format!("{} {}", o["kind"], o["metadata"]["name"]))
                .collect()
        };
        assert_eq!(names(&kustomized), names(&charted), "{parts:?}");
        for (k, h) in kustomized.iter().zip(&charted) {
            assert_eq!(
                k, h,
                "{parts:?}: {} {}: the components and the chart differ",
                k["kind"], k["metadata"]["name"]
            );
        }
        let roles = names(&charted)
            .into_iter()
            .filter(|n| n.starts_with("\"ClusterRole\""))
            .count();
        assert_eq!(
            roles,
            parts.len() + 2,
            "one ClusterRole per component, the signer's and the metrics reader's"
        );
        assert_typed(charted);
    }
    let deploy = rendered_chart(&[])
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    assert!(
        deploy["spec"]["template"]["spec"]["volumes"].is_null(),
        "no policy, no volume: {deploy}"
    );
}

/// Service DNS names are asked for by a policy rule: without a policy the chart says so.
#[test]
fn the_chart_refuses_service_dns_names_without_a_policy() {
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/podcert-signer");
    let out = std::process::Command::new(podcert_tests::oracles::helm_binary())
        .arg("template")
        .arg("podcert-signer")
        .arg(&chart)
        .args(["--set", "identityPolicy.serviceDnsNames=true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("identityPolicy.serviceDnsNames needs identityPolicy.policy"),
        "{said}"
    );
}

#[test]
fn the_charts_values_reach_the_objects_they_name() {
    let objects = rendered_chart(&[
        ("signerName", "pki.example.net/workloads"),
        ("trustDomain", "prod.example.net"),
        ("replicas", "3"),
        ("image.repository", "registry.example.net/podcert-signer"),
        ("image.tag", "9.9.9"),
        ("resources.limits.memory", "256Mi"),
        ("ca.secretName", "root-ca"),
        ("ca.nameConstraints", "true"),
        ("ca.validity", "730d"),
        ("namespace.create", "false"),
    ]);
    let find = |kind: &str| objects.iter().find(|o| o["kind"] == kind).unwrap();
    let config = &find("ConfigMap")["data"];
    assert_eq!(config["PODCERT_SIGNER_NAME"], "pki.example.net/workloads");
    assert_eq!(config["PODCERT_TRUST_DOMAIN"], "prod.example.net");
    assert_eq!(config["PODCERT_CA_NAME_CONSTRAINTS"], "true");
    assert_eq!(config["PODCERT_CA_VALIDITY"], "730d");
    assert!(config.get("PODCERT_CA_ROTATE_BEFORE").is_none(), "{config}");
    // Another content, another name: the Deployment rolls when a setting changes.
    let default_name = rendered_chart(&[])
        .into_iter()
        .find(|o| o["kind"] == "ConfigMap")
        .unwrap()["metadata"]["name"]
        .clone();
    assert_ne!(find("ConfigMap")["metadata"]["name"], default_name);
    let deploy = find("Deployment");
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(c["image"], "registry.example.net/podcert-signer:9.9.9");
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(c["resources"]["requests"]["memory"], "32Mi");
    assert_eq!(
        c["envFrom"][0]["configMapRef"]["name"],
        find("ConfigMap")["metadata"]["name"]
    );
    assert!(
        c["args"]
            .as_array()
            .unwrap()
            .contains(&"--ca-secret=podcert-signer/root-ca".into()),
        "{c}"
    );
    let signers = signers_rule(&objects);
    assert_eq!(
        signers["resourceNames"],
        serde_json::json!(["pki.example.net/workloads"])
    );
    assert_eq!(
        find("Role")["rules"][0]["resourceNames"],
        serde_json::json!(["root-ca"])
    );
    assert!(objects.iter().all(|o| o["kind"] != "Namespace"));
}

/// Deserializes `obj` as `T` and back: a field the typed struct does not know (a typo, a wrong
/// level) disappears and the comparison fails.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) {
    let typed: T =
        serde_json::from_value(obj.clone()).unwrap_or_else(|e| panic!("{}: {e}", obj["kind"]));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, obj,
        "{} {} has fields the API does not know",
        obj["kind"], obj["metadata"]["name"]
    );
}

#[test]
fn every_rendered_object_is_a_valid_typed_kubernetes_object() {
    for (from, objects) in renderings() {
        // One object of each kind, and a second ClusterRole: the metrics reader's.
        assert_eq!(objects.len(), 11, "{from}: one object of each kind");
        assert_typed(objects);
    }
}

/// Every object is one of the kinds we ship, each kind is there, and each is a valid typed
/// Kubernetes object.
fn assert_typed(objects: Vec<Value>) {
    use k8s_openapi::api::{
        apps::v1 as apps, core::v1 as core, networking::v1 as networking, policy::v1 as policy,
        rbac::v1 as rbac,
    };
    // Every rendering has these kinds; a NetworkPolicy only where it is switched on.
    let mut kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .filter(|k| *k != "NetworkPolicy")
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "Namespace",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    for obj in &objects {
        match obj["kind"].as_str().unwrap() {
            "Namespace" => round_trip::<core::Namespace>(obj),
            "ServiceAccount" => round_trip::<core::ServiceAccount>(obj),
            "ConfigMap" => round_trip::<core::ConfigMap>(obj),
            "Service" => round_trip::<core::Service>(obj),
            "ClusterRole" => round_trip::<rbac::ClusterRole>(obj),
            "ClusterRoleBinding" => round_trip::<rbac::ClusterRoleBinding>(obj),
            "Role" => round_trip::<rbac::Role>(obj),
            "RoleBinding" => round_trip::<rbac::RoleBinding>(obj),
            "Deployment" => round_trip::<apps::Deployment>(obj),
            "PodDisruptionBudget" => round_trip::<policy::PodDisruptionBudget>(obj),
            "NetworkPolicy" => round_trip::<networking::NetworkPolicy>(obj),
            other => panic!("unexpected kind {other}"),
        }
    }
}

#[test]
fn the_deployment_is_locked_down_and_configured_from_config_env() {
    for (_, objects) in renderings() {
        assert_locked_down_and_configured(objects);
    }
}

fn assert_locked_down_and_configured(objects: Vec<Value>) {
    let deploy = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert!(
        c["resources"]["limits"]["memory"].is_string()
            && c["resources"]["requests"]["cpu"].is_string()
    );
    // Every flag the container gets must parse: the args and the config.env variables.
    let config = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    assert_eq!(
        c["envFrom"][0]["configMapRef"]["name"],
        config["metadata"]["name"]
    );
    // Run the binary as the Deployment would (its args, config.env as its environment) but
    // with no cluster: it must get past flag validation (exit 2) and fail only at connecting.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_podcert-signer"));
    cmd.env_clear().env("KUBECONFIG", "/nonexistent/kubeconfig");
    for (k, v) in config["data"].as_object().unwrap() {
        cmd.env(k, v.as_str().unwrap());
    }
    cmd.args(
        c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap()),
    );
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot build a Kubernetes client"),
        "{stderr}"
    );
    let sa = objects
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .unwrap();
    assert_eq!(
        sa["automountServiceAccountToken"], false,
        "only the signer's pods get a token"
    );
    assert_eq!(pod["automountServiceAccountToken"], true);
    let signers_rule = signers_rule(&objects);
    assert_eq!(
        signers_rule["resourceNames"],
        serde_json::json!([config["data"]["PODCERT_SIGNER_NAME"]]),
        "one place to name the signer"
    );
}

/// An RBAC rule, flattened.
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
    /// None: cluster-wide (ClusterRole via ClusterRoleBinding); Some(ns): a Role.
    namespace: Option<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn rules(objects: &[Value]) -> Vec<Rule> {
    let mut out = Vec::new();
    for o in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        let namespace =
            (o["kind"] == "Role").then(|| o["metadata"]["namespace"].as_str().unwrap().to_string());
        for r in o["rules"].as_array().unwrap() {
            out.push(Rule {
                groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                verbs: strings(&r["verbs"]),
                names: strings(&r["resourceNames"]),
                namespace: namespace.clone(),
            });
        }
    }
    out
}

/// What RBAC is asked for one request.
struct Attributes {
    group: String,
    /// `resource` or `resource/subresource`.
    resource: String,
    verb: String,
    namespace: Option<String>,
    name: Option<String>,
}

fn attributes(method: &str, path: &str, query: &str) -> Option<Attributes> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", g, _, rest @ ..] if !rest.is_empty() => (*g, rest),
        _ => return None, // discovery: allowed to every authenticated user
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        r => (None, r),
    };
    let resource = match rest.get(2) {
        Some(sub) => format!("{}/{sub}", rest[0]),
        None => rest[0].to_string(),
    };
    let mut name = rest.get(1).map(|s| s.to_string());
    let watch = query.contains("watch=true");
    let verb = match (method, name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => panic!("{method} {path}"),
    };
    // list/watch with fieldSelector=metadata.name=X is authorized as resourceName X.
    if name.is_none() {
        name = query.split('&').find_map(|kv| {
            kv.strip_prefix("fieldSelector=metadata.name%3D")
                .map(str::to_string)
        });
    }
    Some(Attributes {
        group: group.to_string(),
        resource,
        verb: verb.to_string(),
        namespace,
        name,
    })
}

fn allowed(
    rules: &[Rule],
    group: &str,
    resource: &str,
    verb: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    rules.iter().any(|r| {
        r.namespace
            .as_deref()
            .is_none_or(|ns| Some(ns) == namespace)
            && (r.groups.iter().any(|g| g == group || g == "*"))
            && (r.resources.iter().any(|x| x == resource || x == "*"))
            && (r.verbs.iter().any(|v| v == verb || v == "*"))
            && (r.names.is_empty() || name.is_some_and(|n| r.names.iter().any(|x| x == n)))
    })
}

/// A CA Secret as wave 1 generated it: ours (labelled), but a root with path length 0, which
/// cannot sign intermediates and so is rotated out at once.
fn single_tier_root_secret() -> Value {
    use base64::Engine;
    let (cert, key) = podcert_tests::fixtures::single_tier_root_pem();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": CA_NAME, "namespace": CA_NS,
                     "labels": {"app.kubernetes.io/managed-by": "podcert-signer"}},
        "data": {"tls.crt": b64(&cert), "tls.key": b64(&key), "ca.crt": b64(&cert)},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rbac_allows_every_call_the_controller_makes_and_nothing_it_does_not() {
    // A run that exercises every path: CA creation, trust bundle, leader election, issuing,
    // denying (Event), then CA Secret deletion (recreate), trust-bundle drift (update), and
    // two root rotations (Secret updates; the second one's Events recur, so are patched).
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let signer = cluster.signer(
        "a",
        &[
            "--ca-secret",
            "podcert-signer/podcert-signer-ca",
            "--ca-preview-delay",
            "1s",
            "--ca-propagation-delay",
            "1s",
        ],
    );
    signer.wait_ready(Duration::from_secs(30)).await;
    let tracker = cluster.tracker("v1beta1");
    let mut bad = PodRequest::new("shop", "bad", "sa", "ECDSAP256", Format::Csr);
    bad.tamper = podcert_tests::kubelet::Tamper::UnknownAnnotation;
    let pods = vec![
        PodRequest::new("shop", "good", "sa", "ECDSAP256", Format::Csr),
        bad,
    ];
    let created = cluster
        .kubelet("v1beta1")
        .create_all(&pods, 2)
        .await
        .unwrap();
    let outcomes = tracker.wait_all(&created, Duration::from_secs(20)).await;
    assert!(outcomes.iter().all(Option::is_some));
    cluster.server.delete("secrets", CA_NS, CA_NAME);
    let mut ctb = cluster
        .server
        .get("clustertrustbundles", "", CTB_NAME)
        .unwrap();
    ctb["spec"]["trustBundle"] = "drift".into();
    cluster.server.put("clustertrustbundles", "", ctb);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(cluster.server.get("secrets", CA_NS, CA_NAME).is_some());
    for n in 1..=2 {
        cluster
            .server
            .put("secrets", CA_NS, single_tier_root_secret());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while cluster.occurrences("RootActivated") < n {
            assert!(tokio::time::Instant::now() < deadline, "rotation {n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Both ways to install must allow exactly these calls.
    for (source, objects) in renderings() {
        let rbac = rules(&objects);
        let signer_name =
            objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap()["data"]["PODCERT_SIGNER_NAME"]
                .as_str()
                .unwrap()
                .to_string();
        let mut used: std::collections::BTreeSet<(String, String, String)> = Default::default();
        for r in cluster
            .server
            .requests()
            .iter()
            .filter(|r| r.user == SIGNER_USER)
        {
            let Some(Attributes {
                group,
                resource,
                verb,
                namespace: ns,
                name,
            }) = attributes(&r.method, &r.path, &r.query)
            else {
                continue;
            };
            assert!(
                allowed(
                    &rbac,
                    &group,
                    &resource,
                    &verb,
                    ns.as_deref(),
                    name.as_deref()
                ),
                "{source} does not allow {verb} {group}/{resource} {ns:?} {name:?} ({} {}?{})",
                r.method,
                r.path,
                r.query
            );
            // The API server's own checks behind these writes (contract §4, §6).
            if resource == "podcertificaterequests/status" {
                assert!(allowed(
                    &rbac,
                    "certificates.k8s.io",
                    "signers",
                    "sign",
                    None,
                    Some(&signer_name)
                ));
            }
            if resource == "clustertrustbundles" && (verb == "create" || verb == "update") {
                assert!(allowed(
                    &rbac,
                    "certificates.k8s.io",
                    "signers",
                    "attest",
                    None,
                    Some(&signer_name)
                ));
            }
            used.insert((group, resource, verb));
        }
        // And nothing granted goes unused (apart from watch on the same resources as list).
        // The reviews behind /metrics over HTTPS are kube-apiserver's own, which this test's
        // API server does not serve: real/metrics.rs makes them under the shipped RBAC.
        let reviews = [
            ("authentication.k8s.io", "tokenreviews"),
            ("authorization.k8s.io", "subjectaccessreviews"),
        ];
        for rule in &rbac {
            for g in &rule.groups {
                for res in rule.resources.iter().filter(|r| *r != "signers") {
                    if reviews.contains(&(g.as_str(), res.as_str())) {
                        continue;
                    }
                    for v in &rule.verbs {
                        assert!(
                            used.contains(&(g.clone(), res.clone(), v.clone())),
                            "{source} grants {v} {g}/{res}, which the controller never used"
                        );
                    }
                }
            }
        }
    }
}

/// The example manifests: typed objects, with projections that follow contract §5/§6 and lay
/// out SPIFFE credential folders (the Filesystem Delivery draft): each volume holds one SVID as
/// `credential-bundle.pem` and our trust domain's live bundle as
/// `<trust-domain>.spiffe-trust-bundle.pem`, selected by the draft's labels, and each container
/// that mounts one is told where by `SPIFFE_CREDENTIAL_FOLDER`.
#[test]
fn the_example_manifests_are_valid_and_lay_out_spiffe_credential_folders() {
    use k8s_openapi::api::{
        admissionregistration::v1 as admission, apps::v1 as apps, core::v1 as core,
    };
    let config = rendered()
        .into_iter()
        .find(|o| o["kind"] == "ConfigMap")
        .unwrap()["data"]
        .clone();
    let signer = config["PODCERT_SIGNER_NAME"].as_str().unwrap();
    let trust_domain = config["PODCERT_TRUST_DOMAIN"].as_str().unwrap();
    let (mut certs, mut bundles) = (0, 0);
    for (file, objects) in example_objects() {
        for obj in objects {
            let spec = match obj["kind"].as_str().unwrap() {
                "Pod" => {
                    round_trip::<core::Pod>(&obj);
                    &obj["spec"]
                }
                "Deployment" => {
                    round_trip::<apps::Deployment>(&obj);
                    &obj["spec"]["template"]["spec"]
                }
                "Service" => {
                    round_trip::<core::Service>(&obj);
                    continue;
                }
                "ServiceAccount" => {
                    round_trip::<core::ServiceAccount>(&obj);
                    continue;
                }
                "ValidatingAdmissionPolicy" => {
                    round_trip::<admission::ValidatingAdmissionPolicy>(&obj);
                    continue;
                }
                "ValidatingAdmissionPolicyBinding" => {
                    round_trip::<admission::ValidatingAdmissionPolicyBinding>(&obj);
                    continue;
                }
                other => panic!("{file}: unexpected kind {other}"),
            };
            for volume in spec["volumes"].as_array().unwrap() {
                let sources = volume["projected"]["sources"].as_array().unwrap();
                let svids: Vec<_> = sources
                    .iter()
                    .filter_map(|s| s.get("podCertificate"))
                    .collect();
                assert_eq!(svids.len(), 1, "{file}: a credential folder holds one SVID");
                for pc in svids {
                    certs += 1;
                    assert_eq!(pc["signerName"], signer);
                    assert_eq!(pc["credentialBundlePath"], "credential-bundle.pem");
                    assert!(
                        pc.get("userAnnotations").is_none(),
                        "the examples run without an identity policy, which denies any userAnnotations"
                    );
                    assert!(matches!(
                        pc["keyType"].as_str(),
                        Some("ECDSAP256" | "ED25519")
                    ));
                }
                let trusted: Vec<_> = sources
                    .iter()
                    .filter_map(|s| s.get("clusterTrustBundle"))
                    .collect();
                assert_eq!(trusted.len(), 1, "{file}: our domain's bundle, once");
                for ctb in trusted {
                    bundles += 1;
                    assert_eq!(ctb["signerName"], signer);
                    // An unset selector matches nothing (contract §6); ours selects the live
                    // bundle of our own trust domain by the draft's labels.
                    let selected = &ctb["labelSelector"]["matchLabels"];
                    assert_eq!(selected["k8s.spiffe.io/canarying"], "live", "{file}");
                    for key in [
                        "k8s.spiffe.io/workload-trust-domain",
                        "k8s.spiffe.io/peer-trust-domain",
                    ] {
                        assert_eq!(selected[key], trust_domain, "{file}: {key}");
                    }
                    assert_eq!(
                        ctb["path"],
                        format!("{trust_domain}.spiffe-trust-bundle.pem")
                    );
                }
            }
            // Whoever mounts a credential folder is told where one is.
            for c in spec["containers"].as_array().unwrap() {
                let folders: Vec<&Value> = c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| &m["mountPath"])
                    .collect();
                let told = c["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["name"] == "SPIFFE_CREDENTIAL_FOLDER");
                assert!(
                    folders.is_empty() || told.is_some_and(|e| folders.contains(&&e["value"])),
                    "{file}: {} mounts {folders:?} but SPIFFE_CREDENTIAL_FOLDER names none of them",
                    c["name"]
                );
            }
        }
    }
    assert_eq!((certs, bundles), (4, 4));
}

/// The deployment's container of a rendering.
fn container(objects: &[Value]) -> &Value {
    &objects.iter().find(|o| o["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"]["containers"]
        [0]
}

#[test]
fn the_federation_component_serves_the_endpoint_and_composes_with_the_others_in_any_order() {
    for order in [
        ["federation", "identity-policy", "service-dns-names"],
        ["identity-policy", "service-dns-names", "federation"],
    ] {
        let objects = rendered_manifests_with(&order);
        assert_typed(objects.clone());
        let c = container(&objects);
        let env = |name: &str| {
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .unwrap_or_else(|| panic!("{order:?}: no {name}"))
                .clone()
        };
        assert_eq!(
            env("PODCERT_BUNDLE_ENDPOINT_PROFILE")["value"],
            "https_spiffe"
        );
        assert_eq!(
            env("PODCERT_SERVICE_ACCOUNT")["valueFrom"]["fieldRef"]["fieldPath"],
            "spec.serviceAccountName"
        );
        // Both components' files are mounted, whichever was added first.
        let pod = &objects.iter().find(|o| o["kind"] == "Deployment").unwrap()["spec"]["template"]
            ["spec"];
        for (volume, file_env) in [
            ("federation", "PODCERT_FEDERATION_CONFIG"),
            ("identity-policy", "PODCERT_IDENTITY_POLICY"),
        ] {
            let v = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == volume)
                .unwrap_or_else(|| panic!("{order:?}: no volume {volume}"));
            let config_map = v["configMap"]["name"].as_str().unwrap();
            assert!(
                objects
                    .iter()
                    .any(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == config_map),
                "{order:?}: {config_map} is not rendered"
            );
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == volume)
                .unwrap_or_else(|| panic!("{order:?}: no mount of {volume}"));
            assert!(
                env(file_env)["value"]
                    .as_str()
                    .unwrap()
                    .starts_with(mount["mountPath"].as_str().unwrap()),
                "{order:?}: {file_env} is not in the mounted volume"
            );
        }
        let port = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "bundle-endpoint")
            .unwrap();
        assert_eq!(port["containerPort"], 8443);
        assert!(
            objects.iter().any(|o| o["kind"] == "Service"
                && o["spec"]["ports"][0]["targetPort"] == "bundle-endpoint")
        );
        // The Role names the Secret the signer keeps the endpoint's SVID in.
        let ca_secret = podcert_signer::ObjectName {
            namespace: "podcert-signer".into(),
            name: "podcert-signer-ca".into(),
        };
        let svid = podcert_signer::endpoint_svid_secret_name(&ca_secret);
        let role = objects
            .iter()
            .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == "podcert-signer-federation")
            .unwrap();
        assert_eq!(role["metadata"]["namespace"], svid.namespace.as_str());
        assert_eq!(role["rules"][0]["resourceNames"][0], svid.name.as_str());
    }
}

/// The Dockerfile passes hadolint (which does find fault: the same file with an unpinned base
/// does not pass), its build stage runs scripts/build-release — the build whose binary the HSM
/// end-to-end test runs — and the image is a glibc distroless one of the build stage's Debian
/// release, so the binary can dlopen a PKCS#11 module.
#[test]
fn the_dockerfile_passes_hadolint_and_ships_the_tested_build_on_a_glibc_base() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap();
    let hadolint = |file: &std::path::Path| {
        std::process::Command::new(podcert_tests::oracles::hadolint_binary())
            .arg(file)
            .output()
            .unwrap()
    };
    let out = hadolint(&path);
    assert!(
        out.status.success(),
        "hadolint Dockerfile:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dir = tempfile::tempdir().unwrap();
    let unpinned = dir.path().join("Dockerfile");
    std::fs::write(&unpinned, text.replace("rust:1.89-bookworm", "rust:latest")).unwrap();
    let out = hadolint(&unpinned);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stdout).contains("DL3007"),
        "hadolint let an unpinned base pass: {out:?}"
    );

    let froms: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(
        froms,
        [
            "rust:1.89-bookworm AS build",
            "gcr.io/distroless/cc-debian12:nonroot"
        ],
        "the build stage is Debian 12 (bookworm), and so is the glibc of the image"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("RUN scripts/build-release ")),
        "the build stage runs scripts/build-release"
    );
    let rust_version =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("rust-version = ")
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap();
    assert!(
        froms[0].starts_with(&format!("rust:{rust_version}-")),
        "the image builds with the workspace's rust-version, {rust_version}"
    );
}
