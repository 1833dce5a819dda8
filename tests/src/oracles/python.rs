//! Python oracles: py-spiffe parsing SVIDs, JWKs checked against their `x5c`, and OpenSSL's
//! TLS (Python's `ssl` is libssl) in the interop matrix.

use std::io::Write;
use std::process::{Command, Stdio};

use super::Verdict;

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

/// Runs each interop case as a mutual handshake in OpenSSL, through Python's `ssl` over a
/// socket pair: each side requires and verifies the peer's chain against the bundle (libssl
/// checks the purpose of the peer's role), checks no host name, and reads the peer's SPIFFE
/// ID with `cryptography` as py-spiffe does (exactly one URI SAN). Ok holds the OpenSSL
/// version.
pub fn py_ssl_handshake(cases: &[crate::interop::Case]) -> Vec<Verdict> {
    const SCRIPT: &str = r#"
import os, socket, ssl, tempfile, threading
from cryptography import x509
def cases(cases): return cases
def spiffe_id(der):
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        raise ValueError(f"an X.509-SVID has exactly one spiffe:// URI SAN, this one {uris}")
    return uris[0]
def context(side, party, roots, d):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if side == "server" else ssl.PROTOCOL_TLS_CLIENT)
    chain, key = os.path.join(d, side + ".pem"), os.path.join(d, side + ".key")
    open(chain, "w").write(party["chain_pem"])
    open(key, "w").write(party["key_pem"])
    ctx.load_cert_chain(chain, key)
    ctx.load_verify_locations(cadata=roots)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
def check(case):
    with tempfile.TemporaryDirectory() as d:
        server = context("server", case["server"], case["roots_pem"], d)
        client = context("client", case["client"], case["roots_pem"], d)
        a, b = socket.socketpair()
        a.settimeout(10); b.settimeout(10)
        seen = {}
        def serve():
            try:
                conn = server.wrap_socket(a, server_side=True)
                conn.recv(1)
                seen["client"] = spiffe_id(conn.getpeercert(binary_form=True))
                conn.close()
            except Exception as e:
                seen["error"] = f"{type(e).__name__}: {e}"
                a.close()
        t = threading.Thread(target=serve)
        t.start()
        problems = []
        conn = None
        try:
            conn = client.wrap_socket(b)
            peer = spiffe_id(conn.getpeercert(binary_form=True))
            if peer != case["server"]["spiffe_id"]:
                raise ValueError(f"the server is {peer}")
            conn.sendall(b"x")
        except Exception as e:
            problems.append(f"client: {type(e).__name__}: {e}")
        finally:
            # wrap_socket took b's descriptor: closing conn is what ends the connection.
            (conn or b).close()
        t.join()
        if "error" in seen:
            problems.append("server: " + seen["error"])
        elif seen.get("client") != case["client"]["spiffe_id"]:
            problems.append(f"server: the client is {seen.get('client')}")
        if problems:
            raise ValueError("; ".join(problems))
        return ssl.OPENSSL_VERSION
"#;
    let results = python_batch(
        SCRIPT,
        &serde_json::to_vec(cases).unwrap(),
        "is `cryptography` installed? it comes with py-spiffe",
    );
    cases
        .iter()
        .zip(results)
        .map(|(case, r)| Verdict {
            name: case.name.clone(),
            error: r.err().unwrap_or_default(),
        })
        .collect()
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
