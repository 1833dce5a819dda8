//! Python oracles: py-spiffe parsing SVIDs, and JWKs checked against their `x5c`; the runner
//! of a Python script over a batch of cases ([`python_batch`]).

use std::io::Write;
use std::process::{Command, Stdio};

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
pub(crate) fn python_batch(
    script: &str,
    input: &[u8],
    missing: &str,
) -> Vec<Result<String, String>> {
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
