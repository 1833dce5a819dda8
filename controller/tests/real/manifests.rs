//! What users apply, judged by the real server's schemas and admission: `kubectl apply
//! --dry-run=server` (strict field validation, as kubectl does by default) of `manifests/`
//! alone and with each component, of the Helm chart's renderings, and of the examples (their
//! pods' credential folders are projected volumes the server checks), on API servers 1.37 and
//! 1.35. Every object must be accepted as written.

use podcert_tests::control_plane::{ControlPlane, Release};

use crate::support::{example_objects, rendered_chart, rendered_manifests_with};

fn dry_run(cp: &ControlPlane, what: &str, objects: &[serde_json::Value]) {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let out = cp
        .kubectl(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&list.to_string()),
        )
        .unwrap_or_else(|e| panic!("{what}: the {} server refused it:\n{e}", cp.release()));
    // One line per object, each accepted (nothing skipped silently).
    assert_eq!(
        out.lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count(),
        objects.len(),
        "{what}:\n{out}"
    );
}

async fn everything_we_ship_is_accepted_by(release: Release) {
    let cp = ControlPlane::start(release).await;
    // The namespace must exist for namespaced objects to pass admission in a dry run.
    for ns in ["podcert-signer", "shop"] {
        cp.create(podcert_tests::control_plane::objects::namespace(ns))
            .await;
    }
    for components in [
        &[][..],
        &["identity-policy"],
        &["identity-policy", "service-dns-names"],
        &["federation"],
        &["federation", "identity-policy", "service-dns-names"],
        &["federation", "network-policy"],
    ] {
        dry_run(
            &cp,
            &format!("manifests/ with {components:?}"),
            &rendered_manifests_with(components),
        );
    }
    // As the README's first pod: its ServiceAccount made first (a pod's admission looks it up).
    cp.create(podcert_tests::control_plane::objects::service_account(
        "shop", "web",
    ))
    .await;
    for (file, objects) in example_objects() {
        dry_run(&cp, &format!("examples/{file}"), &objects);
    }
    let policy = cp.dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "rules:\n  - name: all\n    namespaces: {selector: {}}\n",
    )
    .unwrap();
    dry_run(&cp, "the chart's defaults", &rendered_chart(&[]));
    dry_run(
        &cp,
        "the chart with a NetworkPolicy",
        &rendered_chart(&[("networkPolicy.enabled", "true")]),
    );
    dry_run(
        &cp,
        "the chart with an identity policy, Service names and a PKCS#11 root",
        &crate::support::rendered_chart_with(
            &[
                ("identityPolicy.serviceDnsNames", "true"),
                ("ca.pkcs11.module", "/usr/lib/softhsm/libsofthsm2.so"),
                ("ca.pkcs11.pinFile", "/var/run/secrets/hsm/pin"),
            ],
            &[("identityPolicy.policy", &policy)],
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_we_ship_is_accepted_by_api_server_1_37() {
    everything_we_ship_is_accepted_by(Release::V1_37).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_we_ship_is_accepted_by_api_server_1_35() {
    everything_we_ship_is_accepted_by(Release::V1_35).await;
}
