//! The CA's life on a compressed clock (issue 9): one real second is twenty minutes, so a
//! root lives 11 hours (33 s), is replaced 5 hours before its end, is previewed for half an
//! hour and then published 2 hours before it signs, and each signing intermediate lives 2 hours and is renewed after one.
//! Requests keep coming all the while; a test kubelet sees every bundle change an hour late
//! and must verify every chain it is given against the bundle it could have seen then.
//!
//! What must hold, whatever happens to the leader: every chain verifies (Go's crypto/x509 and
//! `openssl verify`, at the time it was issued) against the lagging kubelet's bundle; no
//! published bundle ever lacks the root of a leaf still valid at that moment; no leaf
//! outlives its intermediate; every root that became active had been prepared exactly once,
//! retired roots leave the bundle, and canary pods (the `preview` bundle) met every new root
//! the preview delay before the rest (the `live` one).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use podcert_tests::apiserver::ServerOptions;
use podcert_tests::kubelet::{Created, Terminal, check_issued};
use podcert_tests::oracles::{IssuedCase, go_judge, openssl_verify_at};
use signer_core::time::Clock;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::support::*;

/// One real second is this many seconds of certificate time.
const SCALE: u32 = 1200;
const HOUR: i64 = 3600;
/// Bundle changes reach the test kubelet this late: less than the propagation delay.
const KUBELET_LAG: i64 = HOUR;

/// A test API server and signer flags sharing one compressed clock.
pub(crate) async fn compressed() -> (Cluster, Clock, Vec<String>) {
    let origin = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let clock = Clock::scaled(UNIX_EPOCH + Duration::from_secs(origin), SCALE);
    let cluster = Cluster::start(ServerOptions {
        clock,
        ..ServerOptions::v1beta1()
    })
    .await;
    let flags = [
        ("--time-scale", SCALE.to_string()),
        ("--time-origin", origin.to_string()),
        ("--default-lifetime", "1h".into()),
        // notBefore must be within 5 minutes of the API server's time: 250 ms real here.
        ("--backdate", "0s".into()),
        ("--intermediate-validity", "2h".into()),
        ("--ca-preview-delay", "30m".into()),
        ("--ca-propagation-delay", "2h".into()),
        ("--ca-rotate-before", "5h".into()),
        ("--ca-validity", "11h".into()),
    ]
    .into_iter()
    .flat_map(|(f, v)| [f.to_string(), v])
    .collect();
    (cluster, clock, flags)
}

fn signer(cluster: &Cluster, name: &str, flags: &[String]) -> SignerProcess {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    cluster.signer(name, &flags)
}

/// Every distinct trust bundle and CA Secret the cluster held, stamped with the compressed
/// time at which it was first seen (polled every 20 ms of real time, 24 s of certificate time).
#[derive(Default)]
struct History {
    bundles: Vec<(i64, String)>,
    /// The same for the preview bundle (read after the live one at each poll).
    previews: Vec<(i64, String)>,
    /// The bundle's SPIFFE sequence with each distinct bundle: (trust bundle, sequence).
    sequences: Vec<(String, u64)>,
    /// (time, tls.crt, next.crt)
    secrets: Vec<(i64, String, Option<String>)>,
    secret_missing: bool,
}

fn follow(cluster: &Cluster, clock: Clock) -> (Arc<Mutex<History>>, tokio::task::JoinHandle<()>) {
    let history = Arc::new(Mutex::new(History::default()));
    let (h, server) = (history.clone(), cluster.server.shared.clone());
    let task = tokio::spawn(async move {
        loop {
            let now = clock.unix_now();
            let get = |plural: &str, ns: &str, name: &str| {
                server
                    .store
                    .lock()
                    .unwrap()
                    .get(&(plural.into(), ns.into(), name.into()))
                    .cloned()
            };
            let ctb = get("clustertrustbundles", "", CTB_NAME);
            let bundle = ctb
                .as_ref()
                .map(|b| b["spec"]["trustBundle"].as_str().unwrap_or("").to_owned());
            let sequence = ctb.as_ref().and_then(|b| {
                b["metadata"]["annotations"]["podcert-signer/spiffe-sequence"]
                    .as_str()
                    .and_then(|s| s.parse::<u64>().ok())
            });
            let preview = get("clustertrustbundles", "", PREVIEW_CTB_NAME)
                .map(|b| b["spec"]["trustBundle"].as_str().unwrap_or("").to_owned());
            let secret = get("secrets", CA_NS, CA_NAME);
            {
                let mut h = h.lock().unwrap();
                if let Some(p) = preview
                    && h.previews.last().is_none_or(|(_, last)| *last != p)
                {
                    h.previews.push((now, p));
                }
                if let (Some(b), Some(seq)) = (&bundle, sequence)
                    && h.sequences.last() != Some(&(b.clone(), seq))
                {
                    h.sequences.push((b.clone(), seq));
                }
                if let Some(b) = bundle
                    && h.bundles.last().is_none_or(|(_, last)| *last != b)
                {
                    h.bundles.push((now, b));
                }
                match secret {
                    Some(s) => {
                        let field = |k: &str| s["data"][k].as_str().map(str::to_owned);
                        let entry = (field("tls.crt").unwrap_or_default(), field("next.crt"));
                        if h.secrets
                            .last()
                            .is_none_or(|(_, a, n)| (a, n) != (&entry.0, &entry.1))
                        {
                            h.secrets.push((now, entry.0, entry.1));
                        }
                    }
                    None if !h.secrets.is_empty() => h.secret_missing = true,
                    None => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (history, task)
}

/// Requests keep coming: three every 300 ms of real time (calling `during` after each
/// batch) until `real` has passed; then every one's outcome.
async fn keep_requesting(
    cluster: &Cluster,
    real: Duration,
    mut during: impl AsyncFnMut(),
) -> Vec<(Created, Terminal)> {
    let tracker = cluster.tracker("v1beta1");
    let kubelet = cluster.kubelet("v1beta1");
    let started = tokio::time::Instant::now();
    let mut created = Vec::new();
    let mut batch = 0;
    while started.elapsed() < real {
        let pods = plain_burst(&format!("b{batch}"), 3);
        created.extend(kubelet.create_all(&pods, 3).await.unwrap());
        batch += 1;
        during().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let outcomes = tracker.wait_all(&created, Duration::from_secs(60)).await;
    created
        .into_iter()
        .zip(outcomes)
        .map(|(c, o)| {
            let o = o.unwrap_or_else(|| panic!("{}/{} never answered", c.namespace, c.name));
            (c, o)
        })
        .collect()
}

fn ders(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap()
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

fn status_time(status: &serde_json::Value, field: &str) -> i64 {
    status[field]
        .as_str()
        .unwrap()
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap()
        .as_second()
}

/// What the issue asks to hold, over a whole run.
fn assert_lifecycle(history: &History, issued: &[(Created, Terminal)]) -> (usize, usize) {
    let bundle_at = |t: i64| {
        history
            .bundles
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map(|(_, b)| b.as_str())
    };
    let first_bundle = history.bundles.first().expect("a bundle was published").0;
    let mut cases = Vec::new();
    let mut intermediates = BTreeSet::new();
    for (c, t) in issued {
        assert_eq!(t.condition(), "Issued", "{}: {:?}", c.name, t.status);
        let chain = t.status["certificateChain"].as_str().unwrap();
        let certs = ders(chain);
        assert_eq!(certs.len(), 2, "leaf and signing intermediate");
        let (_, leaf) = X509Certificate::from_der(&certs[0]).unwrap();
        let (_, intermediate) = X509Certificate::from_der(&certs[1]).unwrap();
        assert!(
            leaf.validity().not_after <= intermediate.validity().not_after,
            "{}: the leaf outlives its intermediate",
            c.name
        );
        intermediates.insert(certs[1].clone());
        let issued_at = status_time(&t.status, "notBefore");
        // Pods started in the first hour after install had no bundle yet to see.
        if issued_at - KUBELET_LAG < first_bundle {
            continue;
        }
        let seen = bundle_at(issued_at - KUBELET_LAG).unwrap();
        openssl_verify_at(chain, seen, Some(issued_at + 1)).unwrap_or_else(|e| {
            panic!(
                "{}: issued at {issued_at} against the kubelet's bundle: {e}",
                c.name
            )
        });
        let mut case = IssuedCase::from_status(
            &c.name,
            &t.status,
            seen,
            &c.spki_der,
            &spiffe_id(&c.request),
            3600,
        );
        case.at = issued_at + 1;
        cases.push(case);
    }
    assert!(
        cases.len() * 10 >= issued.len() * 8,
        "only {} of {} chains were issued after the first hour",
        cases.len(),
        issued.len()
    );
    for v in go_judge(&cases) {
        assert_eq!(v.error, "", "Go crypto/x509 rejects {}", v.name);
    }
    // No bundle ever lacked the root of a leaf live at that moment.
    for (at, bundle) in &history.bundles {
        for (c, t) in issued {
            let (nb, na) = (
                status_time(&t.status, "notBefore"),
                status_time(&t.status, "notAfter"),
            );
            if (nb..na).contains(at) {
                check_issued(&t.status, &c.spki_der, &spiffe_id(&c.request), bundle)
                    .unwrap_or_else(|e| {
                        panic!("bundle of {at} lacks the root of live {}: {e}", c.name)
                    });
            }
        }
    }
    // Every active root had been the prepared next root before (none made twice or lost).
    let mut prepared = Vec::new();
    let mut actives = Vec::new();
    for (_, active, next) in &history.secrets {
        if actives.last() != Some(active) {
            actives.push(active.clone());
        }
        if let Some(n) = next
            && prepared.last() != Some(n)
        {
            prepared.push(n.clone());
        }
    }
    assert!(!history.secret_missing, "the CA Secret vanished");
    assert_eq!(
        actives[1..],
        prepared[..actives.len() - 1],
        "each activated root is the one prepared before it"
    );
    assert!(
        prepared.len() <= actives.len(),
        "a prepared root was abandoned: {} prepared, {} activated",
        prepared.len(),
        actives.len() - 1
    );
    let roots: BTreeSet<Vec<u8>> = history.bundles.iter().flat_map(|(_, b)| ders(b)).collect();
    assert_eq!(
        roots.len(),
        actives.len() + usize::from(prepared.len() == actives.len())
    );
    // The first root was retired: it left the bundle, and at most the active root, the one
    // before it (still retained) and a next one remain.
    let (first, last) = (&history.bundles[0].1, &history.bundles.last().unwrap().1);
    let first_root = &ders(first)[0];
    assert!(
        !ders(last).contains(first_root),
        "the first root never left the bundle"
    );
    assert!(ders(last).len() <= 3, "{} roots remain", ders(last).len());
    // Canary pods met each new root in the preview bundle the preview delay (30 minutes,
    // less a poll's slack) before it joined the live bundle.
    let first_seen = |bundles: &[(i64, String)], root: &Vec<u8>| {
        bundles
            .iter()
            .find(|(_, b)| ders(b).contains(root))
            .map(|(at, _)| *at)
    };
    for root in roots
        .iter()
        .filter(|r| *r != &ders(&history.bundles[0].1)[0])
    {
        let live = first_seen(&history.bundles, root).unwrap();
        let preview = first_seen(&history.previews, root).expect("a root live but never previewed");
        assert!(
            live - preview >= 1800 - 300,
            "a root was previewed at {preview} and live at {live}: not the preview delay apart"
        );
    }
    // The SPIFFE sequence federated domains read: it changed with every change of the roots
    // and never went back.
    assert!(history.sequences.len() >= history.bundles.len());
    for pair in history.sequences.windows(2) {
        let ((b0, s0), (b1, s1)) = (&pair[0], &pair[1]);
        assert!(s1 >= s0, "the sequence went back from {s0} to {s1}");
        assert!(b0 == b1 || s1 > s0, "the roots changed under sequence {s0}");
    }
    (actives.len() - 1, intermediates.len())
}

async fn labelled(signer: &SignerProcess, role: &str) -> f64 {
    signer
        .metric(&format!("podcert_ca_rotations_total{{role=\"{role}\"}}"))
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_root_rotations_and_twenty_intermediates_while_requests_keep_coming() {
    let _heavy = heavy_scenario().await;
    let (cluster, clock, flags) = compressed().await;
    let (history, follower) = follow(&cluster, clock);
    let signer = signer(&cluster, "a", &flags);
    signer.wait_ready(Duration::from_secs(30)).await;
    // 22 hours: three activations (at about 8, 14 and 20 hours).
    let issued = keep_requesting(&cluster, Duration::from_secs(66), async || {}).await;
    follower.abort();
    let history = std::mem::take(&mut *history.lock().unwrap());
    let (root_rotations, intermediates) = assert_lifecycle(&history, &issued);
    assert!(root_rotations >= 3, "{root_rotations} root rotations");
    assert!(
        intermediates >= 20,
        "{intermediates} intermediates signed leaves"
    );
    assert!(labelled(&signer, "root").await >= 3.0);
    assert!(labelled(&signer, "intermediate").await >= 20.0);
    for reason in [
        "RootPrepared",
        "RootPreviewed",
        "RootPublished",
        "RootActivated",
    ] {
        let n = cluster.occurrences(reason);
        assert!(n >= 3, "{n} {reason} Events");
    }
}

/// Kill -9 of the leader right after each rotation step, with a standby waiting: whoever
/// leads next resumes from what the Secret holds, and the rotation completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_at_every_rotation_step_loses_and_duplicates_nothing() {
    let _heavy = heavy_scenario().await;
    let (cluster, clock, flags) = compressed().await;
    let (history, follower) = follow(&cluster, clock);
    let mut replicas = [
        signer(&cluster, "r0", &flags),
        signer(&cluster, "r1", &flags),
    ];
    replicas[0].wait_ready(Duration::from_secs(30)).await;
    let steps = [
        "RootPrepared",
        "RootPreviewed",
        "RootPublished",
        "RootActivated",
    ];
    let mut killed_after = 0;
    let mut spawned = 2;
    let issued = keep_requesting(&cluster, Duration::from_secs(66), async || {
        let seen: u64 = steps.iter().map(|s| cluster.occurrences(s)).sum();
        if seen > killed_after {
            killed_after = seen;
            let holder = cluster.lease_holder();
            if let Some(i) = replicas
                .iter()
                .position(|r| Some(&r.identity) == holder.as_ref())
            {
                replicas[i].kill();
                replicas[i] = signer(&cluster, &format!("r{spawned}"), &flags);
                spawned += 1;
            }
        }
    })
    .await;
    follower.abort();
    let history = std::mem::take(&mut *history.lock().unwrap());
    let (root_rotations, _) = assert_lifecycle(&history, &issued);
    assert!(
        killed_after >= 6,
        "the leader was killed after only {killed_after} steps"
    );
    assert!(root_rotations >= 2, "{root_rotations} root rotations");
}

/// The CA Secret's active root (`tls.crt`, DER) and whether it carries a name constraint;
/// None while there is no Secret.
fn active_root_constrained(cluster: &Cluster) -> Option<(Vec<u8>, bool)> {
    let der = ders(cluster.ca_secret_data()?.get("tls.crt")?).remove(0);
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let constrained = cert.extensions().iter().any(|e| {
        matches!(
            e.parsed_extension(),
            x509_parser::extensions::ParsedExtension::NameConstraints(_)
        )
    });
    Some((der, constrained))
}

/// An upgrade from a release whose default CA profile carried the URI name constraint
/// (issue 29): the signer, now run with the default, replaces that root at once — prepared
/// with an Event that says why, published, activated after the propagation delay — by one
/// without, while requests keep being issued and verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_made_under_the_old_constrained_default_is_rotated_out_at_once() {
    // On the compressed clock, like the other lifecycle scenarios: not beside them.
    let _heavy = heavy_scenario().await;
    let (cluster, _clock, flags) = compressed().await;
    let mut old_flags = flags.clone();
    old_flags.extend(["--ca-name-constraints".to_string(), "true".to_string()]);
    let old = signer(&cluster, "old", &old_flags);
    old.wait_ready(Duration::from_secs(30)).await;
    let (old_root, constrained) = active_root_constrained(&cluster).expect("a CA Secret");
    assert!(constrained, "the old default made a constrained root");
    drop(old);

    let new = signer(&cluster, "new", &flags);
    new.wait_ready(Duration::from_secs(30)).await;
    // The root is due for its ordinary rotation 6 hours (18 s) into its life; this one is
    // prepared long before, for the constraint.
    let prepared = cluster
        .wait_for_events("RootPrepared", 1, Duration::from_secs(15))
        .await;
    let note = prepared[0]["note"].as_str().unwrap();
    assert!(
        note.contains("carries a URI name constraint and --ca-name-constraints is false"),
        "{note}"
    );
    // Activated after the propagation delay (2 hours: 6 s): a root without the constraint.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (root, constrained) = active_root_constrained(&cluster).expect("a CA Secret");
        if root != old_root {
            assert!(!constrained, "the new root carries the constraint");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the constrained root was not replaced; log:\n{}",
            new.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_burst_issued(
        &cluster,
        "after",
        10,
        Duration::from_secs(30),
        &new.log_text(),
    )
    .await;
}
