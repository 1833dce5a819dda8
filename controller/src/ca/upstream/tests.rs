//! The upstream steward's keeper and term, on a compressed clock (a day of certificate time per real
//! second) with a scripted upstream: an organisation's CA made here certifies each request
//! for a week of certificate time, as cert-manager's CA issuer would. The real cert-manager
//! cannot be given a compressed clock, and Kubernetes' one-hour minimum leaf lifetime puts a
//! real intermediate's renewal 45 minutes away (see `controller/tests/real/upstream.rs` for
//! the rest, against the real one).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use clap::Parser;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use signer_core::time::unix_seconds;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::ca::metrics::CaMetrics;

const DAY: Duration = Duration::from_secs(86_400);

fn to_offset(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

/// An organisation's root, signing what it is asked for a week from the clock's now.
struct OrgCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl OrgCa {
    fn new(name: &str) -> OrgCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.not_before = to_offset(0);
        params.not_after = to_offset(unix_seconds(SystemTime::now()) + 100 * 365 * 86_400);
        let pem = params.self_signed(&key).unwrap().pem();
        OrgCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn certify(&self, csr_pem: &str, now: SystemTime) -> Answer {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        let now = unix_seconds(now);
        csr.params.not_before = to_offset(now);
        csr.params.not_after = to_offset(now + 7 * 86_400);
        csr.params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        csr.params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        Answer {
            chain_pem: csr.signed_by(&self.issuer).unwrap().pem(),
            roots_pem: self.pem.clone(),
            from: "scripted".into(),
        }
    }
}

/// Which CA answers, or none (an outage); and when (certificate time) each answer was given.
struct Script {
    answering: Option<usize>,
    answered_at: Vec<SystemTime>,
}

fn steward(script: Arc<Mutex<Script>>, cas: Arc<Vec<OrgCa>>) -> Arc<UpstreamSteward> {
    steward_pinned(script, cas, None)
}

fn steward_pinned(
    script: Arc<Mutex<Script>>,
    cas: Arc<Vec<OrgCa>>,
    trust_anchors: Option<String>,
) -> Arc<UpstreamSteward> {
    let origin = unix_seconds(SystemTime::now()).to_string();
    let config = crate::cli::Args::try_parse_from([
        "podcert-signer",
        "--signer-name",
        "example.com/spiffe",
        "--upstream-authority",
        "cert-manager",
        "--upstream-issuer",
        "corp-ca",
        "--time-scale",
        "86400",
        "--time-origin",
        &origin,
    ])
    .unwrap()
    .config()
    .unwrap();
    let clock = config.clock;
    let answer = move |csr: &str| {
        let mut s = script.lock().unwrap();
        let now = clock.now();
        match s.answering {
            Some(i) => {
                s.answered_at.push(now);
                Ok(cas[i].certify(csr, now))
            }
            None => Err(UpstreamError::Unreachable("the upstream is down".into())),
        }
    };
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
    Arc::new(UpstreamSteward {
        upstream: Upstream::Scripted(Arc::new(Scripted(Box::new(answer)))),
        trust_anchors,
        trust_bundle: None,
        token: None,
        ca: config.ca.clone(),
        policy: config.policy.clone(),
        clock,
        recorder: kube::runtime::events::Recorder::new(
            client,
            kube::runtime::events::Reporter {
                controller: "test".into(),
                instance: None,
            },
        ),
        metrics: CaMetrics::default(),
        ready: watch::Sender::new(None),
    })
}

/// Waits (real time, up to `timeout`) until the signer signs under another CA than `before`;
/// returns its subject key and issuer.
async fn next_signer(
    rx: &mut watch::Receiver<Arc<Signer>>,
    timeout: Duration,
) -> Option<Arc<Signer>> {
    tokio::time::timeout(timeout, rx.changed())
        .await
        .ok()?
        .ok()?;
    Some(rx.borrow_and_update().clone())
}

#[tokio::test]
async fn renewed_half_way_a_new_root_signs_only_after_the_propagation_delay_and_an_outage_keeps_the_current_one()
 {
    let cas = Arc::new(vec![OrgCa::new("Org CA 1"), OrgCa::new("Org CA 2")]);
    let script = Arc::new(Mutex::new(Script {
        answering: Some(0),
        answered_at: Vec::new(),
    }));
    let s = steward(script.clone(), cas.clone());
    let token = CancellationToken::new();
    let keeper = tokio::spawn(s.clone().run_keeper(token.clone()));
    let first = s.begin(&token).await.unwrap();
    let issued_at = s.clock.now();
    let renew_at = first.signing.renew_at.unwrap();
    let half = renew_at.duration_since(issued_at).unwrap();
    assert!(
        half.abs_diff(DAY * 7 / 2) < DAY / 4,
        "renewed half-way: {half:?}"
    );
    let (tx, mut rx) = watch::channel(s.signer(&first.signing));
    let keeping = tokio::spawn(s.clone().keep(first.clone(), tx, token.clone()));

    // Half-way (3½ days: 3½ real seconds), a new intermediate under the same root signs at
    // once.
    let second = next_signer(&mut rx, Duration::from_secs(10))
        .await
        .expect("renewed");
    let at = s.clock.now();
    assert!(at >= renew_at, "not before it was due");
    assert_eq!(ders(second.ca().trust_bundle_pem()), ders(&cas[0].pem));
    assert_ne!(second.ca().not_after(), first.signing.ca.not_after());

    // The organisation's CA rotates: the next renewal brings Org CA 2's root, which signs only
    // --ca-propagation-delay (24 h) after the answer.
    script.lock().unwrap().answering = Some(1);
    let third = next_signer(&mut rx, Duration::from_secs(10))
        .await
        .expect("renewed again");
    let switched = s.clock.now();
    let answered = *script.lock().unwrap().answered_at.last().unwrap();
    assert_eq!(ders(third.ca().trust_bundle_pem()), ders(&cas[1].pem));
    assert!(
        switched.duration_since(answered).unwrap() >= s.ca.lifecycle.propagation_delay,
        "signed {:?} after the answer",
        switched.duration_since(answered)
    );

    // An outage from the next renewal on: the current intermediate keeps signing (no change
    // of signer) for as long as it lasts.
    script.lock().unwrap().answering = None;
    assert!(
        next_signer(&mut rx, Duration::from_secs(5)).await.is_none(),
        "nothing replaces the current intermediate while the upstream is down"
    );
    assert!(
        s.clock.now() > third.ca().not_after() - DAY * 3,
        "an outage well past half-way"
    );
    // Back: the next attempt (backoff at most 60 real seconds, here well under) succeeds.
    script.lock().unwrap().answering = Some(1);
    assert!(
        next_signer(&mut rx, Duration::from_secs(70))
            .await
            .is_some()
    );
    token.cancel();
    keeping.await.unwrap();
    keeper.await.unwrap();
}

#[tokio::test]
async fn with_pinned_trust_anchors_an_answer_under_another_root_is_refused() {
    let cas = Arc::new(vec![OrgCa::new("Org CA 1"), OrgCa::new("Someone else")]);
    let script = Arc::new(Mutex::new(Script {
        answering: Some(1),
        answered_at: Vec::new(),
    }));
    let s = steward_pinned(script.clone(), cas.clone(), Some(cas[0].pem.clone()));
    let token = CancellationToken::new();
    match s.try_once(&token).await.unwrap() {
        Err(UpstreamError::Refused(r)) => {
            assert_eq!(r.reason, "Unusable");
            assert!(
                r.message
                    .contains("names no root of --upstream-trust-anchors"),
                "{}",
                r.message
            );
        }
        other => panic!("accepted an answer under an unpinned root: {other:?}"),
    }
    script.lock().unwrap().answering = Some(0);
    let certified = s.try_once(&token).await.unwrap().unwrap();
    assert_eq!(ders(&certified.roots_pem), ders(&cas[0].pem));
}
