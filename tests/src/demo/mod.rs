//! The demo: the signer's main job, on this machine, with no cluster.
//!
//! [`run`] starts the test API server (Kubernetes 1.37: `v1` and `v1beta1`), the real
//! `podcert-signer` binary against it, and plays the kubelet for a handful of pods in three
//! namespaces: each pod gets a fresh key (Ed25519, ECDSA P-256/384/521, RSA-3072, made with
//! rcgen as a kubelet makes one with Go) and files a PodCertificateRequest with either proof
//! format — a stub PKCS#10 request (1.36+ kubelets) or `pkixPublicKey` with a signature of the
//! pod UID (1.35 kubelets). A progress bar follows the requests until each is issued; then
//! every credential bundle (key, then chain, as the kubelet writes `credentialBundlePath`) and
//! the trust bundle are written to a folder, the table [`Demo::table`] describes each SVID,
//! and two of the workloads speak mTLS with the example verifier (`examples/mtls`).

mod pods;
mod show;

use pods::{describe_leaf, make_key, mtls, request_body, write};
use show::Progress;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use rcgen::PublicKeyData;

use crate::apiserver::{ServerOptions, TestApiServer};
use crate::kubelet::{Created, Format, PodRequest, Tracker, pcr_resource};

pub const SIGNER_NAME: &str = "example.com/spiffe";
pub const TRUST_DOMAIN: &str = "demo.example";
const TRUST_BUNDLE: &str = "example.com:spiffe:ca";

/// One pod's `podCertificate` volume source.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub namespace: &'static str,
    pub service_account: &'static str,
    pub key_type: &'static str,
    pub format: Format,
}

/// The pods of the demo: every key type, both proof formats, three namespaces.
pub const WORKLOADS: [Workload; 8] = [
    Workload {
        namespace: "shop",
        service_account: "web",
        key_type: "ECDSAP256",
        format: Format::Csr,
    },
    Workload {
        namespace: "shop",
        service_account: "api",
        key_type: "ED25519",
        format: Format::Csr,
    },
    Workload {
        namespace: "shop",
        service_account: "cart",
        key_type: "ECDSAP256",
        format: Format::Pkix,
    },
    Workload {
        namespace: "payments",
        service_account: "ledger",
        key_type: "ECDSAP384",
        format: Format::Csr,
    },
    Workload {
        namespace: "payments",
        service_account: "gateway",
        key_type: "ED25519",
        format: Format::Pkix,
    },
    Workload {
        namespace: "payments",
        service_account: "fraud",
        key_type: "ECDSAP521",
        format: Format::Csr,
    },
    Workload {
        namespace: "billing",
        service_account: "invoices",
        key_type: "RSA3072",
        format: Format::Csr,
    },
    Workload {
        namespace: "billing",
        service_account: "reports",
        key_type: "ECDSAP256",
        format: Format::Csr,
    },
];

/// The two workloads that speak mTLS: `web` calls `api`.
const CLIENT: usize = 0;
const SERVER: usize = 1;

#[derive(Debug, Clone)]
pub struct Options {
    /// The signer binary (the one users deploy).
    pub signer_bin: PathBuf,
    /// Where credential bundles, the trust bundle and the signer's log go.
    pub out: PathBuf,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// One issued SVID.
#[derive(Debug, Clone)]
pub struct Issued {
    pub workload: Workload,
    pub spiffe_id: String,
    pub serial: String,
    pub lifetime: Duration,
    /// From the create call to the kubelet's watch seeing the Issued status.
    pub latency: Duration,
    /// `credential-bundle.pem` in the workload's SPIFFE credential folder.
    pub bundle: PathBuf,
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct Demo {
    pub issued: Vec<Issued>,
    pub trust_bundle: PathBuf,
    /// The client's view of the mTLS exchange: `<client> -> <server>: <reply>`.
    pub handshake: String,
    pub signer_log: PathBuf,
}

/// The signer process; killed when dropped.
struct SignerProcess(Child);

impl Drop for SignerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the demo; an error says which step failed.
pub async fn run(options: &Options) -> Result<Demo, String> {
    std::fs::create_dir_all(&options.out)
        .map_err(|e| format!("cannot create {}: {e}", options.out.display()))?;
    let server = TestApiServer::start(ServerOptions::v1_and_v1beta1());
    let kubeconfig = server.write_kubeconfig(&options.out);
    let signer_log = options.out.join("signer.log");
    let mut signer = start_signer(options, &kubeconfig, &signer_log)?;
    let client = crate::kube_client(&kubeconfig).await;
    // Follow every request, as the kubelet does, from before the first is filed.
    let tracker = Tracker::start(client.clone(), "v1beta1");

    let mut progress = Progress::new(options.progress, WORKLOADS.len());
    progress.say("starting the signer");
    wait_for(&mut signer, Duration::from_secs(30), || {
        server
            .get("clustertrustbundles", "", TRUST_BUNDLE)
            .is_some()
    })
    .await
    .map_err(|e| format!("{e}; see {}", signer_log.display()))?;

    progress.say("making keys and filing requests");
    let mut filed = Vec::new();
    for (i, w) in WORKLOADS.iter().enumerate() {
        let key = make_key(w.key_type)?;
        let pod = format!("{}-{i}", w.service_account);
        let pod_uid = crate::random_uid();
        let body = request_body(w, &pod, &pod_uid, &key)?;
        let api = Api::namespaced_with(client.clone(), w.namespace, &pcr_resource("v1beta1"));
        let sent_at = Instant::now();
        let made: DynamicObject = serde_json::from_value(body).map_err(|e| e.to_string())?;
        let made = api
            .create(&PostParams::default(), &made)
            .await
            .map_err(|e| format!("filing {pod}'s request: {e}"))?;
        let request = PodRequest::new(w.namespace, &pod, w.service_account, w.key_type, w.format);
        filed.push((
            Created {
                namespace: w.namespace.into(),
                name: made.metadata.name.clone().unwrap_or_default(),
                request,
                spki_der: key.subject_public_key_info(),
                sent_at,
            },
            key,
        ));
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = filed
            .iter()
            .filter(|(c, _)| tracker.get(c).is_some())
            .count();
        progress.bar(done);
        if done == filed.len() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {} requests were not answered within 60 s; see {}",
                filed.len() - done,
                filed.len(),
                signer_log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress.finish();

    let trust = server
        .get("clustertrustbundles", "", TRUST_BUNDLE)
        .and_then(|b| b["spec"]["trustBundle"].as_str().map(str::to_string))
        .ok_or("the trust bundle disappeared")?;
    let trust_bundle = options.out.join("trust-bundle.pem");
    write(&trust_bundle, &trust)?;
    let mut issued = Vec::new();
    for ((created, key), w) in filed.iter().zip(WORKLOADS) {
        let terminal = tracker.get(created).expect("every request is terminal");
        if terminal.condition() != "Issued" {
            return Err(format!(
                "{}/{} was {} ({}): {}",
                w.namespace,
                created.name,
                terminal.condition(),
                terminal.reason(),
                terminal.status["conditions"][0]["message"]
            ));
        }
        let chain = terminal.status["certificateChain"]
            .as_str()
            .ok_or("an Issued status without a chain")?;
        let (spiffe_id, serial, lifetime) = describe_leaf(chain)?;
        let dir = options.out.join(format!(
            "{}-{}-{}",
            w.namespace,
            w.service_account,
            w.key_type.to_lowercase()
        ));
        // A SPIFFE credential folder, as the examples' projections lay it out.
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let bundle = dir.join("credential-bundle.pem");
        write(&bundle, &format!("{}{chain}", key.serialize_pem()))?;
        write(
            &dir.join(format!("{TRUST_DOMAIN}.spiffe-trust-bundle.pem")),
            &trust,
        )?;
        issued.push(Issued {
            workload: w,
            spiffe_id,
            serial,
            lifetime,
            latency: terminal.at.saturating_duration_since(created.sent_at),
            bundle,
        });
    }
    let handshake = mtls(&issued[CLIENT], &issued[SERVER]).await?;
    drop(signer);
    Ok(Demo {
        issued,
        trust_bundle,
        handshake,
        signer_log,
    })
}

fn start_signer(options: &Options, kubeconfig: &Path, log: &Path) -> Result<SignerProcess, String> {
    let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    Command::new(&options.signer_bin)
        .args(["--signer-name", SIGNER_NAME, "--trust-domain", TRUST_DOMAIN])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--admin-addr", &format!("127.0.0.1:{}", crate::free_port())])
        .args(["--log-level", "info"])
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map(SignerProcess)
        .map_err(|e| {
            format!(
                "cannot start the signer {}: {e} (build it: cargo build -p podcert-signer)",
                options.signer_bin.display()
            )
        })
}

/// Waits until `ready` holds, or the signer exits, or `timeout` passes.
async fn wait_for(
    signer: &mut SignerProcess,
    timeout: Duration,
    ready: impl Fn() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if let Ok(Some(status)) = signer.0.try_wait() {
            return Err(format!("the signer exited ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the signer did not publish its CA within {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
