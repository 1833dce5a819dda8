//! NSS (Firefox, Thunderbird, and the TLS of programs that link libnss): chain verification
//! with `vfychain` from Debian's `libnss3-tools`, for each side's usage — the server's leaf as
//! an SSL server (`-u 1`), the client's as an SSL client (`-u 0`) — with the bundle's roots as
//! the only trust anchors (`-t`) and NSS's PKIX library (`-pp`). NSS has no SPIFFE library:
//! the SPIFFE ID is read from the leaf by NSS itself (`certutil -L` of the leaf imported into
//! a scratch database) and compared with the one expected. Not a handshake: the issue asks NSS
//! for chain verification, and no NSS TLS client or server ships in that package.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Case, Party};
use crate::oracles::Verdict;

/// Fails naming the tool when NSS's tools are missing.
fn require_tools() {
    for name in ["vfychain", "certutil"] {
        assert!(
            Command::new(name).arg("--help").output().is_ok(),
            "the interop matrix needs NSS's `{name}` (Debian: apt-get install libnss3-tools; scripts/test installs it)"
        );
    }
}

/// Each PEM certificate of `pem`, as its own PEM text.
fn certificates(pem: &str) -> Vec<String> {
    pem::parse_many(pem)
        .unwrap()
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| pem::encode(&b))
        .collect()
}

/// Whether `vfychain` accepts `party`'s chain for `usage` with `roots` as the only anchors;
/// the file of the leaf it was given.
fn verify(
    dir: &Path,
    side: &str,
    party: &Party,
    roots: &[String],
    usage: &str,
) -> Result<PathBuf, String> {
    let write = |name: String, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let chain: Vec<PathBuf> = certificates(&party.chain_pem)
        .iter()
        .enumerate()
        .map(|(n, cert)| write(format!("{side}-{n}.pem"), cert))
        .collect();
    let mut cmd = Command::new("vfychain");
    cmd.args(["-pp", "-u", usage]);
    for path in &chain {
        cmd.arg("-a").arg(path);
    }
    for (n, root) in roots.iter().enumerate() {
        cmd.args(["-t", "-a"])
            .arg(write(format!("root-{n}.pem"), root));
    }
    let out = cmd.output().expect("vfychain runs");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() && said.contains("Chain is good") {
        Ok(chain.into_iter().next().expect("a chain has a leaf"))
    } else {
        Err(said.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// The URI SANs of `leaf` as NSS reads them: imported into a scratch database of `side`,
/// printed by `certutil -L`.
fn uris_as_nss_reads(dir: &Path, side: &str, leaf: &Path) -> Result<Vec<String>, String> {
    let db_dir = dir.join(format!("db-{side}"));
    std::fs::create_dir_all(&db_dir).unwrap();
    let db = format!("sql:{}", db_dir.display());
    let run = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("certutil")
            .args(args)
            .output()
            .expect("certutil runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "certutil {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let leaf = leaf.display().to_string();
    run(&["-N", "-d", &db, "--empty-password"])?;
    run(&["-A", "-d", &db, "-n", "leaf", "-t", ",,", "-a", "-i", &leaf])?;
    let listing = run(&["-L", "-d", &db, "-n", "leaf"])?;
    Ok(listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("URI: "))
        .map(|u| u.trim_matches('"').to_owned())
        .collect())
}

fn check(dir: &Path, case: &Case) -> String {
    let roots = certificates(&case.roots_pem);
    let mut problems = Vec::new();
    for (side, party, usage) in [("server", &case.server, "1"), ("client", &case.client, "0")] {
        let read = verify(dir, side, party, &roots, usage)
            .and_then(|leaf| uris_as_nss_reads(dir, side, &leaf));
        match read {
            Ok(uris) if uris.len() == 1 && uris[0] == party.spiffe_id => {}
            Ok(uris) => problems.push(format!(
                "{side}: the leaf's URI SANs are {uris:?}, not [{}]",
                party.spiffe_id
            )),
            Err(e) => problems.push(format!("{side}: {e}")),
        }
    }
    problems.join("; ")
}

/// Verifies every case's two chains.
pub fn verifications(cases: &[Case]) -> Vec<Verdict> {
    require_tools();
    cases
        .iter()
        .map(|case| {
            let dir = tempfile::tempdir().unwrap();
            Verdict {
                name: case.name.clone(),
                error: check(dir.path(), case),
            }
        })
        .collect()
}
