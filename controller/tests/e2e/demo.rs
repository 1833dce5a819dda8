//! The demo (`scripts/demo`, the README's run command without a cluster): every pod gets its
//! SVID, the credential bundles on disk are what a kubelet writes and verify to the trust
//! bundle with openssl, the table has a row per SVID, and the two workloads speak mTLS.

use std::time::Duration;

use podcert_tests::demo::{self, Options, WORKLOADS};
use podcert_tests::oracles::openssl_verify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_issues_every_pod_its_svid_and_two_workloads_speak_mtls() {
    let out = tempfile::tempdir().unwrap();
    let options = Options {
        signer_bin: env!("CARGO_BIN_EXE_podcert-signer").into(),
        out: out.path().join("demo"),
        progress: false,
    };
    let d = tokio::time::timeout(Duration::from_secs(120), demo::run(&options))
        .await
        .expect("the demo ends")
        .expect("the demo succeeds");
    assert_eq!(d.issued.len(), WORKLOADS.len());
    let trust = std::fs::read_to_string(&d.trust_bundle).unwrap();
    for i in &d.issued {
        let w = i.workload;
        assert_eq!(
            i.spiffe_id,
            format!(
                "spiffe://{}/ns/{}/sa/{}",
                demo::TRUST_DOMAIN,
                w.namespace,
                w.service_account
            )
        );
        assert_eq!(i.lifetime, Duration::from_secs(86_400));
        assert_eq!(i.serial.len(), 40, "{}", i.serial);
        // The kubelet's credential bundle: the private key, then the chain.
        let bundle = std::fs::read_to_string(&i.bundle).unwrap();
        assert!(
            bundle.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{bundle}"
        );
        let chain = &bundle[bundle.find("-----BEGIN CERTIFICATE-----").unwrap()..];
        openssl_verify(chain, &trust)
            .unwrap_or_else(|e| panic!("{} does not verify: {e}", i.bundle.display()));
    }
    let table = d.table();
    assert_eq!(table.lines().count(), 1 + WORKLOADS.len(), "{table}");
    assert!(
        table.starts_with("NAMESPACE  SERVICE ACCOUNT  KEY TYPE"),
        "{table}"
    );
    for key_type in ["ED25519", "ECDSAP256", "ECDSAP384", "ECDSAP521", "RSA3072"] {
        assert!(table.contains(key_type), "{key_type} missing:\n{table}");
    }
    for proof in ["stub CSR", "PKIX+PoP"] {
        assert!(table.contains(proof), "{proof} missing:\n{table}");
    }
    let web = "spiffe://demo.example/ns/shop/sa/web";
    let api = "spiffe://demo.example/ns/shop/sa/api";
    assert_eq!(
        d.handshake,
        format!("{web} -> {api}: hello {web} from {api}")
    );
}
