//! Tests of the trust bundle: which roots are published and retained through rotations.

use super::*;
use crate::ca::Root;
use crate::ca::secret::NextRoot;

fn root(cn: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.self_signed(&key).unwrap().pem()
}

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn record(ann: &str) -> BTreeMap<String, i64> {
    serde_json::from_str(ann).unwrap()
}

#[test]
fn the_sequence_changes_with_the_roots_and_never_goes_back() {
    assert_eq!(next_sequence(None, true, 1_000), "1000", "a first bundle");
    assert_eq!(
        next_sequence(Some("1000"), false, 5_000),
        "1000",
        "same roots"
    );
    assert_eq!(
        next_sequence(Some("1000"), true, 5_000),
        "5000",
        "new roots"
    );
    assert_eq!(
        next_sequence(Some("5000"), true, 4_000),
        "5001",
        "a clock behind the last writer's still moves it forward"
    );
    assert_eq!(
        next_sequence(Some("garbage"), false, 6_000),
        "6000",
        "an edited annotation starts again from now"
    );
    assert_eq!(
        next_sequence(None, false, 6_000),
        "6000",
        "a bundle from before"
    );
}

#[test]
fn a_first_publication_holds_and_records_the_current_roots() {
    let a = root("a");
    let (bundle, annotation) = desired(None, None, &a, NOW, DAY);
    assert_eq!(ders(&bundle), ders(&a));
    assert_eq!(record(&annotation).into_values().collect::<Vec<_>>(), [0]);
}

#[test]
fn a_replaced_root_stays_for_the_longest_leaf_lifetime_then_goes() {
    let (a, b) = (root("a"), root("b"));
    let (published, ann) = desired(None, None, &a, NOW, DAY);
    // Rotation to b: a is kept, after b, until NOW + a day.
    let (rotated, ann2) = desired(Some(&published), Some(&ann), &b, NOW, DAY);
    assert_eq!(ders(&rotated), [ders(&b), ders(&a)].concat());
    assert_eq!(
        record(&ann2).get(&sha256_hex(&ders(&a)[0])),
        Some(&(NOW + DAY))
    );
    // Later syncs keep the recorded time rather than extending it...
    let (later, ann3) = desired(Some(&rotated), Some(&ann2), &b, NOW + DAY / 2, DAY);
    assert_eq!(ders(&later), ders(&rotated));
    assert_eq!(ann3, ann2);
    // ...and once it has passed, the old root goes.
    let (expired, ann4) = desired(Some(&later), Some(&ann3), &b, NOW + DAY + 1, DAY);
    assert_eq!(ders(&expired), ders(&b));
    assert_eq!(record(&ann4).len(), 1);
}

#[test]
fn a_root_that_comes_back_is_current_again() {
    let (a, b) = (root("a"), root("b"));
    let (p1, n1) = desired(None, None, &a, NOW, DAY);
    let (p2, n2) = desired(Some(&p1), Some(&n1), &b, NOW, DAY);
    let (p3, n3) = desired(Some(&p2), Some(&n2), &a, NOW, DAY);
    assert_eq!(ders(&p3), [ders(&a), ders(&b)].concat());
    assert_eq!(record(&n3).get(&sha256_hex(&ders(&a)[0])), Some(&0));
}

#[test]
fn a_root_we_never_published_is_drift_and_dropped_at_once() {
    let (a, x) = (root("a"), root("x"));
    let (_, ann) = desired(None, None, &a, NOW, DAY);
    // Someone replaced our bundle by another root: ours comes back, theirs goes.
    let (repaired, _) = desired(Some(&x), Some(&ann), &a, NOW, DAY);
    assert_eq!(ders(&repaired), ders(&a));
    let (repaired, _) = desired(Some(&format!("{a}{x}")), Some("not json"), &a, NOW, DAY);
    assert_eq!(ders(&repaired), ders(&a));
}

#[test]
fn the_preview_bundle_carries_the_drafts_labels_and_the_live_one_also_our_older_ones() {
    let live = trust_domain_labels("cluster.local", "cluster.local", Channel::Live);
    let preview = trust_domain_labels("cluster.local", "cluster.local", Channel::Preview);
    assert_eq!(live[LABEL_CANARYING], "live");
    assert_eq!(preview[LABEL_CANARYING], "preview");
    for labels in [&live, &preview] {
        assert_eq!(labels[LABEL_WORKLOAD_TRUST_DOMAIN], "cluster.local");
        assert_eq!(labels[LABEL_PEER_TRUST_DOMAIN], "cluster.local");
    }
    // A pod selecting the older label gets the live roots only, never the preview's.
    assert_eq!(live[LABEL_TRUST_DOMAIN], "cluster.local");
    assert!(!preview.contains_key(LABEL_TRUST_DOMAIN), "{preview:?}");
    assert_eq!(
        preview_name("example.com:spiffe:ca"),
        "example.com:spiffe:ca.preview"
    );
}

#[test]
fn a_next_root_is_current_in_the_preview_bundle_when_prepared_and_in_the_live_one_once_published() {
    let ca_pem = || {
        signer_core::CaPem::generate(
            signer_core::CaKeyType::EcdsaP256,
            &signer_core::TrustDomain::new("example.org").unwrap(),
            std::time::Duration::from_secs(30 * DAY as u64),
            std::time::SystemTime::now(),
        )
        .unwrap()
    };
    let mut ca = LoadedCa::generated(Root::load(ca_pem()).unwrap());
    let active = ca.active.ca.trust_bundle_pem().to_owned();
    let next = Root::load(ca_pem()).unwrap();
    let both = format!("{active}{}", next.ca.trust_bundle_pem());
    assert_eq!(Channel::Live.current_roots(&ca), active, "no rotation");
    assert_eq!(Channel::Preview.current_roots(&ca), active, "no rotation");
    ca.next = Some(NextRoot::prepared(next));
    assert_eq!(Channel::Preview.current_roots(&ca), both, "prepared");
    assert_eq!(Channel::Live.current_roots(&ca), active, "prepared");
    ca.next.as_mut().unwrap().previewed_at = Some(1_800_000_000);
    assert_eq!(Channel::Live.current_roots(&ca), active, "previewed");
    ca.next.as_mut().unwrap().published_at = Some(1_800_086_400);
    assert_eq!(Channel::Live.current_roots(&ca), both, "published");
    assert_eq!(Channel::Preview.current_roots(&ca), both, "published");
}
