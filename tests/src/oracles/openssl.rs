//! OpenSSL as an oracle: `openssl verify` of a chain (at a given time), and RSA keys and
//! proofs OpenSSL makes.

use std::io::Write;
use std::process::{Command, Stdio};

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
