//! OpenSSL: Python's `ssl`, which is libssl, in the interop matrix.

use super::Case;
use crate::oracles::Verdict;

/// Runs each interop case as a mutual handshake in OpenSSL, through Python's `ssl` over a
/// socket pair: each side requires and verifies the peer's chain against the bundle (libssl
/// checks the purpose of the peer's role), checks no host name, and reads the peer's SPIFFE
/// ID with `cryptography` as py-spiffe does (exactly one URI SAN). Ok holds the OpenSSL
/// version.
pub fn handshakes(cases: &[Case]) -> Vec<Verdict> {
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
    super::python_handshakes(
        SCRIPT,
        cases,
        "is `cryptography` installed? it comes with py-spiffe",
    )
}
