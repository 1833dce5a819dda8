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

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, RsaKeySize, SigningKey};
use serde_json::json;
use x509_parser::prelude::{FromDer, X509Certificate};

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
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let bundle = dir.join("credentialbundle.pem");
        write(&bundle, &format!("{}{chain}", key.serialize_pem()))?;
        issued.push(Issued {
            workload: w,
            spiffe_id,
            serial,
            lifetime,
            latency: terminal.at.saturating_duration_since(created.sent_at),
            bundle,
        });
    }
    let handshake = mtls(&issued[CLIENT], &issued[SERVER], &trust_bundle).await?;
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
        // The example workload verifies with rustls, which refuses URI name constraints.
        .args(["--ca-name-constraints", "false", "--log-level", "info"])
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

/// A fresh key of the kubelet's `keyType`.
fn make_key(key_type: &str) -> Result<KeyPair, String> {
    let made = match key_type {
        "ED25519" => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        "ECDSAP256" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        "ECDSAP384" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        "ECDSAP521" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512),
        "RSA3072" => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072),
        other => return Err(format!("no key type {other}")),
    };
    made.map_err(|e| format!("generating a {key_type} key: {e}"))
}

/// The request a kubelet files for pod `pod` of workload `w`.
fn request_body(
    w: &Workload,
    pod: &str,
    pod_uid: &str,
    key: &KeyPair,
) -> Result<serde_json::Value, String> {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut spec = json!({
        "signerName": SIGNER_NAME, "podName": pod, "podUID": pod_uid,
        "serviceAccountName": w.service_account, "serviceAccountUID": crate::random_uid(),
        "nodeName": "demo-node", "nodeUID": "demo-node-uid", "maxExpirationSeconds": 86_400,
    });
    match w.format {
        Format::Csr => {
            // Go's x509.CreateCertificateRequest with an empty template: no subject, nothing else.
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            let csr = params
                .serialize_request(key)
                .map_err(|e| format!("making a CSR: {e}"))?;
            spec["stubPKCS10Request"] = b64(csr.der()).into();
        }
        Format::Pkix => {
            // The 1.35 kubelet signs the pod UID: Ed25519 plainly, ECDSA over SHA-256.
            if !matches!(w.key_type, "ED25519" | "ECDSAP256") {
                return Err(format!("no pkix proof made here for {}", w.key_type));
            }
            let proof = key
                .sign(pod_uid.as_bytes())
                .map_err(|e| format!("signing the pod UID: {e}"))?;
            spec["pkixPublicKey"] = b64(&key.subject_public_key_info()).into();
            spec["proofOfPossession"] = b64(&proof).into();
        }
    }
    Ok(json!({
        "apiVersion": "certificates.k8s.io/v1beta1", "kind": "PodCertificateRequest",
        "metadata": {
            "generateName": format!("{pod}-"), "namespace": w.namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": pod_uid, "controller": true}],
        },
        "spec": spec,
    }))
}

/// The leaf's SPIFFE ID (read as the example workload reads it), serial (hex) and lifetime.
fn describe_leaf(chain_pem: &str) -> Result<(String, String, Duration), String> {
    let leaf = pem::parse_many(chain_pem)
        .map_err(|e| format!("the chain is not PEM: {e}"))?
        .into_iter()
        .next()
        .ok_or("an empty chain")?;
    let spiffe_id = spiffe_mtls::spiffe_id(&leaf.contents().to_vec().into())
        .map_err(|e| format!("the leaf: {e}"))?;
    let (_, cert) = X509Certificate::from_der(leaf.contents())
        .map_err(|e| format!("the leaf does not parse: {e}"))?;
    let validity = cert.validity();
    let lifetime = (validity.not_after.timestamp() - validity.not_before.timestamp()).max(0);
    Ok((
        spiffe_id,
        cert.raw_serial_as_string().replace(':', ""),
        Duration::from_secs(lifetime as u64),
    ))
}

/// `client` calls `server`; each accepts only the other's SPIFFE ID.
async fn mtls(client: &Issued, server: &Issued, trust_bundle: &Path) -> Result<String, String> {
    let server_files = Arc::new(spiffe_mtls::CredentialFiles::new(
        &server.bundle,
        trust_bundle,
    ));
    let client_files = spiffe_mtls::CredentialFiles::new(&client.bundle, trust_bundle);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let serving = tokio::spawn(spiffe_mtls::serve(
        listener,
        server_files,
        vec![client.spiffe_id.clone()],
        |_| {},
    ));
    let exchange =
        spiffe_mtls::exchange(addr, &client_files, std::slice::from_ref(&server.spiffe_id)).await;
    serving.abort();
    let x = exchange.map_err(|e| format!("the mTLS handshake failed: {e}"))?;
    Ok(format!(
        "{} -> {}: {}",
        client.spiffe_id,
        x.peer,
        x.reply.trim_end()
    ))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// 0.8 ms, 12 ms, 1.4 s; 24h, 90m.
fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

fn hours(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        format!("{}m", s / 60)
    }
}

impl Demo {
    /// One row per SVID: namespace, service account, key type, proof, SPIFFE ID, serial,
    /// lifetime, create → Issued latency.
    pub fn table(&self) -> String {
        let header = [
            "NAMESPACE",
            "SERVICE ACCOUNT",
            "KEY TYPE",
            "PROOF",
            "SPIFFE ID",
            "SERIAL",
            "LIFETIME",
            "LATENCY",
        ];
        let rows: Vec<[String; 8]> = self
            .issued
            .iter()
            .map(|i| {
                [
                    i.workload.namespace.to_string(),
                    i.workload.service_account.to_string(),
                    i.workload.key_type.to_string(),
                    match i.workload.format {
                        Format::Csr => "stub CSR".into(),
                        Format::Pkix => "PKIX+PoP".into(),
                    },
                    i.spiffe_id.clone(),
                    // The serial is 20 bytes: its first 8 identify it in a table.
                    format!("{}…", &i.serial[..16.min(i.serial.len())]),
                    hours(i.lifetime),
                    millis(i.latency),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut l = String::new();
            for (cell, w) in cells.into_iter().zip(widths) {
                l.push_str(cell);
                l.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
            l.trim_end().to_string() + "\n"
        };
        let mut out = line(header.to_vec());
        for row in &rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }
}

/// A one-line progress bar on stderr (nothing when off).
struct Progress {
    on: bool,
    total: usize,
    started: Instant,
}

impl Progress {
    fn new(on: bool, total: usize) -> Self {
        Progress {
            on,
            total,
            started: Instant::now(),
        }
    }

    fn say(&mut self, what: &str) {
        if self.on {
            eprint!("\r\x1b[2K{what}…");
            let _ = std::io::stderr().flush();
        }
    }

    fn bar(&mut self, done: usize) {
        if self.on {
            const WIDTH: usize = 30;
            let filled = done * WIDTH / self.total.max(1);
            eprint!(
                "\r\x1b[2K[{}{}] {done}/{} issued  {:.1} s",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                self.total,
                self.started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn finish(&mut self) {
        if self.on {
            eprintln!();
        }
    }
}
