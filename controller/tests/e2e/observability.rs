//! What an operator watches, proven with the real tools: the alert rules pass `promtool`'s
//! own checks and unit tests (one firing and one quiet case per alert); a real Prometheus
//! scrapes a working signer and every query of the Grafana dashboard returns data; requests
//! that wait too long are counted and get a `StillPending` Event.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;
use podcert_tests::kubelet::{Format, PodRequest, Tamper};
use podcert_tests::oracles::{promtool_binary, stdout_of};
use podcert_tests::prometheus::Prometheus;
use serde_json::Value;

use crate::support::*;

fn monitoring(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../monitoring")
        .join(file)
}

fn yaml(file: &str) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(monitoring(file)).unwrap()).unwrap()
}

fn promtool(args: &[&str]) {
    stdout_of(
        Command::new(promtool_binary())
            .args(args)
            .current_dir(monitoring("")),
    );
}

#[test]
fn every_alert_passes_promtool_and_has_a_firing_and_a_quiet_unit_test() {
    promtool(&["check", "rules", "alerts.yaml"]);
    promtool(&["test", "rules", "alerts_test.yaml"]);

    let alerts: BTreeSet<String> = yaml("alerts.yaml")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    // Each alert has its runbook in docs/operations.md, and each runbook its alert.
    let operations = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .unwrap();
    let runbooks: BTreeSet<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix("### Podcert"))
        .map(|name| format!("Podcert{}", name.trim()))
        .collect();
    assert_eq!(
        alerts, runbooks,
        "alerts.yaml against docs/operations.md's runbooks"
    );
    let tests = yaml("alerts_test.yaml");
    let cases: Vec<(String, bool)> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .map(|c| {
            let fires = c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            (c["alertname"].as_str().unwrap().to_string(), fires)
        })
        .collect();
    for alert in &alerts {
        for fires in [true, false] {
            assert!(
                cases.contains(&(alert.clone(), fires)),
                "alerts_test.yaml has no case where {alert} {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
}

/// Every panel query of the dashboard, with Grafana's `$__rate_interval` as Grafana would
/// set it for this test's 1 s scrape interval.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(monitoring("dashboard.json")).unwrap())
            .unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_string();
            p["targets"].as_array().unwrap().iter().map(move |t| {
                (
                    title.clone(),
                    t["expr"]
                        .as_str()
                        .unwrap()
                        .replace("$__rate_interval", "1m"),
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_signer_and_every_dashboard_query_returns_data() {
    let (cluster, signer) = ready_cluster().await;
    let prometheus = Prometheus::start(
        &[format!("127.0.0.1:{}", signer.admin_port)],
        &[&monitoring("alerts.yaml")],
    )
    .await;
    let tracker = cluster.tracker("v1beta1");

    // Issued for every key type in both formats, and denied for several reasons — with a
    // readable key of a known type, and with a key of a type the API does not admit.
    let issued = all_key_types("observed");
    let denied: Vec<PodRequest> = [
        ("ECDSAP256", Format::Pkix, Tamper::ForgedProof),
        ("ED25519", Format::Csr, Tamper::UnknownAnnotation),
        ("RSA2048", Format::Pkix, Tamper::None),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (kt, format, tamper))| {
        let mut p = PodRequest::new("observed", &format!("bad-{i}"), "sa", kt, format);
        p.tamper = tamper;
        p
    })
    .collect();
    let mut created = cluster
        .kubelet("v1beta1")
        .create_all(&issued, 4)
        .await
        .unwrap();
    created.extend(
        cluster
            .unchecked_kubelet("v1beta1")
            .create_all(&denied, 4)
            .await
            .unwrap(),
    );
    let outcomes = tracker.wait_all(&created, Duration::from_secs(60)).await;
    assert_eq!(count_issued(&outcomes), issued.len());

    // Prometheus has scraped the signer since every decision landed.
    let total = created.len() as f64;
    let mut seen = 0.0;
    for _ in 0..100 {
        let r = prometheus.query("sum(podcert_requests_total)").await;
        seen = r[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if seen == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, total, "log:\n{}", prometheus.log());
    // Two more scrapes, so every rate has samples on both sides of the traffic.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let queries = dashboard_queries();
    assert!(queries.len() >= 12, "{queries:?}");
    for (panel, expr) in &queries {
        let result = prometheus.query(expr).await;
        assert!(
            result.as_array().is_some_and(|r| !r.is_empty()),
            "dashboard panel {panel:?}: {expr} returned no data"
        );
    }

    // Denials carry the requested key type whenever the key can be read.
    let denial = |labels: &str| format!("podcert_requests_total{{outcome=\"denied\",{labels}}}");
    for labels in [
        "key_type=\"ECDSAP256\",reason=\"InvalidProofOfPossession\"",
        "key_type=\"ED25519\",reason=\"InvalidUnverifiedUserAnnotations\"",
        "key_type=\"unknown\",reason=\"UnsupportedKeyType\"",
    ] {
        let r = prometheus.query(&denial(labels)).await;
        assert_eq!(r[0]["value"][1], "1", "{labels}: {r}");
    }
    // Nothing waits, and exactly one replica leads.
    for (expr, want) in [
        ("max(podcert_pending_requests)", "0"),
        ("sum(podcert_leader)", "1"),
    ] {
        assert_eq!(prometheus.query(expr).await[0]["value"][1], want, "{expr}");
    }
    // Prometheus loaded every alert rule and evaluates it without error.
    let rules = prometheus.api("rules").await;
    let health: Vec<(String, String)> = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["health"].as_str().unwrap().into(),
            )
        })
        .collect();
    let shipped = yaml("alerts.yaml")["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(health.len(), shipped, "{rules:#}");
    assert!(health.iter().all(|(_, h)| h == "ok"), "{health:?}");
}

/// Requests the signer cannot answer (key material a v1-only cluster does not serve) are
/// counted as pending with the age of the oldest, and each gets one `StillPending` Event once
/// it has waited longer than `--pending-warning-after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_too_long_are_counted_and_get_a_still_pending_event() {
    let cluster = Cluster::start(ServerOptions::v1_only()).await;
    let signer = cluster.signer("a", &["--pending-warning-after", "2s"]);
    signer.wait_ready(Duration::from_secs(30)).await;
    let stuck: Vec<_> = all_key_types("stuck")
        .into_iter()
        .filter(|p| p.format == Format::Pkix)
        .take(2)
        .collect();
    for (i, (mut body, _)) in cluster
        .kubelet("v1beta1")
        .bodies(&stuck)
        .into_iter()
        .enumerate()
    {
        body["metadata"]["name"] = format!("req-stuck-{i}").into();
        body["metadata"]["uid"] = format!("uid-stuck-{i}").into();
        cluster.server.put("podcertificaterequests", "stuck", body);
    }
    let events = cluster
        .wait_for_events("StillPending", 2, Duration::from_secs(20))
        .await;
    for e in &events {
        assert_eq!(e["type"], "Warning", "{e:#}");
        assert!(
            e["note"].as_str().unwrap().starts_with("no status after "),
            "{e:#}"
        );
        assert_eq!(e["regarding"]["namespace"], "stuck", "{e:#}");
    }
    assert_eq!(signer.metric("podcert_pending_requests").await, Some(2.0));
    assert!(
        signer
            .metric("podcert_oldest_pending_request_seconds")
            .await
            .is_some_and(|age| age >= 2.0)
    );
    // Once per request: a few more looks add no Event.
    tokio::time::sleep(crate::support::PENDING_LOOK * 2).await;
    assert_eq!(cluster.occurrences("StillPending"), 2);
}

/// `podcert-signer status`, run as an operator would with the signer's flags and an admin
/// kubeconfig: one pod's requests, each with its state and why, then the signer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_why_a_pods_requests_wait_and_how_the_signer_is() {
    let cluster = Cluster::start(ServerOptions::v1_only()).await;
    let mut signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    let tracker = cluster.tracker("v1");
    // Pod `web`: one request issued, one denied; one a 1.35 kubelet filed, which a v1-only
    // cluster does not serve the key material of (it waits). Pod `other` is not asked about.
    let issued = PodRequest::new("shop", "web", "web", "ECDSAP256", Format::Csr);
    let mut denied = PodRequest::new("shop", "web", "web", "ED25519", Format::Csr);
    denied.tamper = Tamper::UnknownAnnotation;
    let other = PodRequest::new("shop", "other", "other", "ECDSAP256", Format::Csr);
    let mut created = cluster
        .kubelet("v1")
        .create_all(&[issued, other], 2)
        .await
        .unwrap();
    created.extend(
        cluster
            .unchecked_kubelet("v1")
            .create_all(&[denied], 1)
            .await
            .unwrap(),
    );
    let waiting = PodRequest::new("shop", "web", "web", "ED25519", Format::Pkix);
    let (mut body, _) = cluster.kubelet("v1beta1").bodies(&[waiting]).remove(0);
    body["metadata"]["name"] = "web-waiting".into();
    body["metadata"]["uid"] = "uid-web-waiting".into();
    cluster.server.put("podcertificaterequests", "shop", body);
    tracker.wait_all(&created, Duration::from_secs(30)).await;
    cluster
        .wait_for_event("KeyMaterialNotServed", Duration::from_secs(20))
        .await;

    let status = |query: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_podcert-signer"))
            .args(["--signer-name", SIGNER, "--kubeconfig"])
            .arg(&cluster.kubeconfig)
            .arg("status")
            .args(query)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = status(&["--namespace", "shop", "--pod", "web"]);
    let row = |state: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with("shop ") && l.contains(&format!(" {state} ")))
            .unwrap_or_else(|| panic!("no {state} row in\n{text}"));
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("Issued")[2..5], ["web", SIGNER, "Issued"], "{text}");
    assert_eq!(
        row("Denied")[6],
        "InvalidUnverifiedUserAnnotations",
        "{text}"
    );
    assert_eq!(row("Pending")[6], "KeyMaterialNotServed", "{text}");
    // The message under the waiting request says what to do.
    assert!(
        text.contains("Enable certificates.k8s.io/v1beta1"),
        "{text}"
    );
    assert!(
        !text.contains(" other "),
        "another pod's request shown:\n{text}"
    );
    for line in [
        "  leader:       signer-a (Lease podcert-signer/podcert-signer, renewed ",
        "  CA Secret:    podcert-signer/podcert-signer-ca: present; no rotation under way",
        "  trust bundle: example.com:spiffe:ca: 1 root(s)",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }

    // With the signer gone, its Lease runs out and status says there is no leader.
    signer.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let text = status(&[]);
    assert!(
        text.contains(
            "  leader:       none: signer-a's Lease podcert-signer/podcert-signer expired"
        ),
        "{text}"
    );
    // Every namespace: pod `other` too.
    assert!(text.contains(" other "), "{text}");
}
