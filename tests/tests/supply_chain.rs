//! The supply chain of the binary the image ships: `cargo deny` allows only the licences,
//! crates and sources deny.toml names (and does refuse what it does not), and `scripts/sbom`
//! writes a CycloneDX SBOM that names that exact binary and every crate compiled into it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use podcert_tests::oracles::{cargo_deny_binary, stdout_of};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `cargo deny check licenses bans sources` with the config `config` (the network-free checks).
fn cargo_deny(config: &Path) -> Output {
    Command::new(cargo_deny_binary())
        .current_dir(repo())
        .args(["--frozen", "--config"])
        .arg(config)
        .args(["check", "licenses", "bans", "sources"])
        .output()
        .expect("cargo-deny runs")
}

#[test]
fn cargo_deny_passes_the_shipped_policy_and_refuses_a_stricter_one() {
    let shipped = repo().join("deny.toml");
    let out = cargo_deny(&shipped);
    assert!(out.status.success(), "cargo deny:\n{}", text(&out));

    // The check bites: without ISC (aws-lc's licence) and with rustls banned, both are named.
    let policy = std::fs::read_to_string(&shipped).unwrap();
    let stricter = policy.replace("    \"ISC\",\n", "").replace(
        "deny = [\n",
        "deny = [\n    { crate = \"rustls\", reason = \"a test of the ban\" },\n",
    );
    assert_ne!(stricter, policy);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("deny.toml");
    std::fs::write(&config, stricter).unwrap();
    let out = cargo_deny(&config);
    let said = text(&out);
    assert!(!out.status.success(), "a stricter policy passed:\n{said}");
    assert!(said.contains("rejected") && said.contains("ISC"), "{said}");
    assert!(said.contains("banned") && said.contains("rustls"), "{said}");
}

/// Crates whose sources the binary names (the paths of panic locations): every one must be
/// in the SBOM. A crate without a panic site leaves no path, so this is a floor, not the list.
fn crates_named_in(binary: &[u8]) -> BTreeSet<(String, String)> {
    let text = String::from_utf8_lossy(binary);
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("/registry/src/") {
        // …/registry/src/index.crates.io-<hash>/<name>-<version>/src/…
        let rest = &text[i..];
        let Some(dir) = rest.split('/').nth(4) else {
            continue;
        };
        if let Some((name, version)) = dir.rsplit_once('-').filter(|(_, v)| {
            v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok())
        }) {
            found.insert((name.to_owned(), version.to_owned()));
        }
    }
    found
}

#[test]
fn the_sbom_names_the_image_binary_and_every_crate_compiled_into_it() {
    let binary = podcert_tests::image_binary();
    let dir = tempfile::tempdir().unwrap();
    let sbom_path = dir.path().join("podcert-signer.cdx.json");
    stdout_of(
        Command::new(repo().join("scripts/sbom"))
            .arg("--binary")
            .arg(&binary)
            .arg("--out")
            .arg(&sbom_path),
    );
    let sbom: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sbom_path).unwrap()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["specVersion"], "1.6");

    let bytes = std::fs::read(&binary).unwrap();
    let subject = &sbom["metadata"]["component"];
    assert_eq!(subject["name"], "podcert-signer");
    assert_eq!(
        subject["hashes"][0]["content"],
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        "the SBOM names another file"
    );

    let listed: BTreeSet<(String, String)> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let named = crates_named_in(&bytes);
    assert!(
        named.len() > 20,
        "too few crate paths in the binary: {named:?}"
    );
    let missing: Vec<_> = named.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "compiled in but not in the SBOM: {missing:?}"
    );
    // Test and benchmark crates are not in the binary, so not in its SBOM.
    for test_only in [
        "tower-test",
        "proptest",
        "criterion",
        "tempfile",
        "podcert-tests",
    ] {
        assert!(
            !listed.iter().any(|(n, _)| n == test_only),
            "{test_only} is listed"
        );
    }
    // Every registry crate is pinned by its checksum and has a package URL and a licence.
    for c in sbom["components"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        if c.get("purl").is_some() {
            assert_eq!(c["hashes"][0]["alg"], "SHA-256", "{name}");
        }
        assert!(
            c["licenses"].as_array().is_some_and(|l| !l.is_empty()),
            "{name} has no licence"
        );
    }
}
