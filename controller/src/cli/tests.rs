//! The command line's rules, flag by flag, and its reference in docs/configuration.md.

use super::*;
use crate::config::Config;
use clap::CommandFactory;

#[test]
fn the_cli_definition_is_consistent() {
    Args::command().debug_assert();
}

/// The flags of `cmd` and its subcommands, as `--name`, with their environment
/// variables; a subcommand's own flags (`status --pod`) have none.
fn flags(cmd: &clap::Command, out: &mut Vec<(String, Option<String>)>, top: bool) {
    for arg in cmd.get_arguments() {
        // Hidden flags (the compressed clock of the lifecycle tests) are not for users.
        if arg.is_hide_set() {
            continue;
        }
        if let Some(long) = arg.get_long().filter(|l| !["help", "version"].contains(l)) {
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            out.push((
                format!("--{long}"),
                if top { env } else { Some(String::new()) },
            ));
        }
    }
    for sub in cmd.get_subcommands() {
        flags(sub, out, false);
    }
}

/// docs/configuration.md's flag tables: the `--flags` named in each row's first cell.
fn documented_flags() -> (String, std::collections::BTreeSet<String>) {
    let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let page = std::fs::read_to_string(&page).expect("docs/configuration.md");
    let mut documented = std::collections::BTreeSet::new();
    for row in page.lines().filter(|l| l.starts_with("| `--")) {
        let first = row.split('|').nth(1).unwrap_or_default();
        for part in first.split('`').filter(|p| p.starts_with("--")) {
            documented.insert(part.to_string());
        }
    }
    (page, documented)
}

#[test]
fn every_flag_is_documented_and_every_documented_flag_exists() {
    let mut all = Vec::new();
    flags(&Args::command(), &mut all, true);
    let (page, documented) = documented_flags();
    let names: std::collections::BTreeSet<String> = all.iter().map(|(f, _)| f.clone()).collect();
    let undocumented: Vec<_> = names.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "flags missing from docs/configuration.md: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&names).collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents no such flag: {unknown:?}"
    );
    // The page says every flag has a PODCERT_<FLAG> variable; hold the code to it.
    assert!(page.contains("`PODCERT_<FLAG>`"));
    for (flag, env) in all.iter().filter(|(_, env)| env.as_deref() != Some("")) {
        let want = format!("PODCERT_{}", flag[2..].replace('-', "_").to_uppercase());
        assert_eq!(env.as_deref(), Some(want.as_str()), "{flag}");
    }
}

fn args(extra: &[&str]) -> Result<Config, ConfigError> {
    let mut argv = vec!["podcert-signer", "--signer-name", "example.com/spiffe"];
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv).expect("parses").config()
}

#[test]
fn defaults_make_a_valid_config() {
    let c = args(&[]).unwrap();
    assert_eq!(c.ca.trust_bundle_name, "example.com:spiffe:ca");
    assert_eq!(c.ca.secret.to_string(), "podcert-signer/podcert-signer-ca");
    assert_eq!(c.lease.name.to_string(), "podcert-signer/podcert-signer");
}

#[test]
fn bad_values_name_their_flag() {
    for (flags, setting) in [
        (&["--trust-domain", "Bad"][..], "trust-domain"),
        (&["--default-lifetime", "10m"], "default-lifetime"),
        (&["--refresh-fraction", "0"], "refresh-fraction"),
        (&["--ca-secret", "no-slash"], "ca-secret"),
        (&["--concurrency", "0"], "concurrency"),
        (&["--pending-warning-after", "0s"], "pending-warning-after"),
        (&["--lease-renew-interval", "10s"], "lease-renew-interval"),
        (&["--log-level", "a=b=c"], "log-level"),
        (&["--intermediate-validity", "36h"], "intermediate-validity"),
        (&["--ca-rotate-before", "8d"], "ca-rotate-before"),
        (&["--ca-validity", "150d"], "ca-validity"),
        (&["--time-scale", "0"], "time-scale"),
        (
            &["--spiffe-id-template", "spiffe://{trust_domain}/x"],
            "spiffe-id-template",
        ),
    ] {
        let e = args(flags).unwrap_err();
        assert_eq!(e.setting, setting, "{flags:?}");
        assert!(e.to_string().starts_with(&format!("--{setting}: ")));
    }
}

#[test]
fn the_upstream_flags_are_checked_together() {
    let upstream = ["--upstream-authority", "cert-manager"];
    for (flags, setting) in [
        (&upstream[..], "upstream-issuer"),
        (&["--upstream-issuer", "corp-ca"], "upstream-issuer"),
        (
            &[upstream[0], upstream[1], "--upstream-issuer", "Corp_CA"],
            "upstream-issuer",
        ),
        (
            &[
                upstream[0],
                upstream[1],
                "--upstream-issuer",
                "corp-ca",
                "--upstream-issuer-group",
                "not a group",
            ],
            "upstream-issuer-group",
        ),
    ] {
        let e = args(flags).unwrap_err();
        assert_eq!(e.setting, setting, "{flags:?}: {e}");
    }
    let c = args(&[
        upstream[0],
        upstream[1],
        "--upstream-issuer",
        "corp-ca",
        "--upstream-issuer-kind",
        "ClusterIssuer",
    ])
    .unwrap();
    assert_eq!(
        c.ca.upstream,
        Some(crate::config::UpstreamConfig {
            authority: crate::config::UpstreamAuthority::CertManager {
                namespace: "podcert-signer".into(),
                issuer: crate::config::IssuerRef {
                    name: "corp-ca".into(),
                    kind: "ClusterIssuer".into(),
                    group: "cert-manager.io".into(),
                },
            },
            trust_anchors: None,
        })
    );
    assert!(args(&[]).unwrap().ca.upstream.is_none());
    // Pinned roots: read at start, certificates only, and only with an upstream.
    let dir = tempfile::tempdir().unwrap();
    let anchors = dir.path().join("anchors.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(
        &anchors,
        podcert_tests::fixtures::intermediate_ca_pem("Corp").2,
    )
    .unwrap();
    std::fs::write(&not_pem, "no certificates here").unwrap();
    let (anchors, not_pem) = (anchors.to_str().unwrap(), not_pem.to_str().unwrap());
    let with = |file: &str| {
        args(&[
            upstream[0],
            upstream[1],
            "--upstream-issuer",
            "corp-ca",
            "--upstream-trust-anchors",
            file,
        ])
    };
    for bad in [not_pem, "/nonexistent/anchors.pem"] {
        assert_eq!(
            with(bad).unwrap_err().setting,
            "upstream-trust-anchors",
            "{bad}"
        );
    }
    assert!(
        with(anchors)
            .unwrap()
            .ca
            .upstream
            .unwrap()
            .trust_anchors
            .is_some()
    );
    let e = args(&["--upstream-trust-anchors", anchors]).unwrap_err();
    assert_eq!(e.setting, "upstream-trust-anchors");
    let e = Args::try_parse_from([
        "podcert-signer",
        "--signer-name",
        "example.com/spiffe",
        "--upstream-authority",
        "aws-pca",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("--upstream-authority"), "{e}");
}

#[test]
fn the_vault_flags_are_checked_together_and_name_credentials_by_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("vault-ca.pem");
    std::fs::write(
        &ca,
        podcert_tests::fixtures::intermediate_ca_pem("Vault TLS").2,
    )
    .unwrap();
    let ca = ca.to_str().unwrap();
    let vault = ["--upstream-authority", "vault"];
    let address = ["--upstream-vault-address", "https://vault.example:8200"];
    let role = ["--upstream-vault-role", "podcert-signer"];
    let with = |extra: &[&str]| {
        let mut all = vault.to_vec();
        all.extend_from_slice(extra);
        args(&all)
    };
    for (flags, setting) in [
        (&role[..], "upstream-vault-address"),
        (
            &[address[0], "http://vault.example:8200", role[0], role[1]][..],
            "upstream-vault-address",
        ),
        (
            &[
                address[0],
                "https://vault.example:8200/v1",
                role[0],
                role[1],
            ],
            "upstream-vault-address",
        ),
        (&address[..], "upstream-vault-role"),
        (
            &[
                address[0],
                address[1],
                role[0],
                role[1],
                "--upstream-vault-pki-mount",
                "../sys",
            ],
            "upstream-vault-pki-mount",
        ),
        (
            &[
                address[0],
                address[1],
                role[0],
                role[1],
                "--upstream-vault-ca-file",
                "/nonexistent.pem",
            ],
            "upstream-vault-ca-file",
        ),
        (
            &[address[0], address[1], "--upstream-vault-auth", "token"],
            "upstream-vault-token-file",
        ),
        (
            &[
                address[0],
                address[1],
                role[0],
                role[1],
                "--upstream-vault-auth",
                "token",
                "--upstream-vault-token-file",
                "/t",
            ],
            "upstream-vault-role",
        ),
        (
            &[
                address[0],
                address[1],
                role[0],
                role[1],
                "--upstream-issuer",
                "corp-ca",
            ],
            "upstream-issuer",
        ),
    ] {
        let e = with(flags).unwrap_err();
        assert_eq!(e.setting, setting, "{flags:?}: {e}");
    }
    // Vault's flags without Vault.
    let e = args(&address).unwrap_err();
    assert_eq!(e.setting, "upstream-vault-address");
    let e = args(&[
        "--upstream-authority",
        "cert-manager",
        "--upstream-issuer",
        "corp-ca",
        role[0],
        role[1],
    ])
    .unwrap_err();
    assert_eq!(e.setting, "upstream-vault-role");

    let c = with(&[
        address[0],
        address[1],
        role[0],
        role[1],
        "--upstream-vault-ca-file",
        ca,
    ])
    .unwrap();
    let Some(crate::config::UpstreamAuthority::Vault(v)) = c.ca.upstream.map(|u| u.authority)
    else {
        panic!("a Vault upstream")
    };
    assert_eq!(v.address.to_string(), "https://vault.example:8200/");
    assert_eq!(v.pki_mount, "pki");
    assert_eq!(v.ca.map(|c| c.len()), Some(1));
    assert_eq!(
        v.auth,
        crate::config::VaultAuth::Kubernetes {
            mount: "kubernetes".into(),
            role: "podcert-signer".into(),
            jwt_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
        }
    );
    let c = with(&[
        address[0],
        address[1],
        "--upstream-vault-auth",
        "token",
        "--upstream-vault-token-file",
        "/run/vault/token",
    ])
    .unwrap();
    let Some(crate::config::UpstreamAuthority::Vault(v)) = c.ca.upstream.map(|u| u.authority)
    else {
        panic!("a Vault upstream")
    };
    assert_eq!(
        v.auth,
        crate::config::VaultAuth::Token {
            file: "/run/vault/token".into()
        }
    );
}

#[test]
fn the_pkcs11_flags_are_checked_together_and_the_pin_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("module.so");
    std::fs::write(&module, b"").unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "s3cret-pin\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let (module, pin, empty) = (
        module.to_str().unwrap(),
        pin.to_str().unwrap(),
        empty.to_str().unwrap(),
    );
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    for (flags, setting) in [
        (&["--ca-pkcs11-pin-file", pin][..], "ca-pkcs11-pin-file"),
        (&["--ca-pkcs11-module", module], "ca-pkcs11-pin-file"),
        (
            &["--ca-pkcs11-module", missing, "--ca-pkcs11-pin-file", pin],
            "ca-pkcs11-module",
        ),
        (
            &[
                "--ca-pkcs11-module",
                module,
                "--ca-pkcs11-pin-file",
                missing,
            ],
            "ca-pkcs11-pin-file",
        ),
        (
            &["--ca-pkcs11-module", module, "--ca-pkcs11-pin-file", empty],
            "ca-pkcs11-pin-file",
        ),
        (
            &[
                "--ca-pkcs11-module",
                module,
                "--ca-pkcs11-pin-file",
                pin,
                "--ca-pkcs11-token-label",
                "a-token-label-longer-than-32-bytes",
            ],
            "ca-pkcs11-token-label",
        ),
    ] {
        let e = args(flags).unwrap_err();
        assert_eq!(e.setting, setting, "{flags:?}: {e}");
    }
    let with_upstream = [
        "--ca-pkcs11-module",
        module,
        "--ca-pkcs11-pin-file",
        pin,
        "--upstream-authority",
        "cert-manager",
        "--upstream-issuer",
        "corp-ca",
    ];
    // With an upstream authority the token holds the intermediates' keys.
    let c = args(&with_upstream).unwrap();
    assert!(c.ca.pkcs11.is_some() && c.ca.upstream.is_some());
    let c = args(&["--ca-pkcs11-module", module, "--ca-pkcs11-pin-file", pin]).unwrap();
    let token = c.ca.pkcs11.as_ref().expect("a token is configured");
    assert_eq!(token.token_label, "podcert-signer");
    assert_eq!(token.key_label, "podcert-signer-root");
    assert!(!format!("{c:?}").contains("s3cret"));
    assert!(args(&[]).unwrap().ca.pkcs11.is_none());
}

#[test]
fn signer_names_follow_the_api_rules() {
    for bad in [
        "spiffe",
        "example/spiffe",
        "kubernetes.io/spiffe",
        "x.kubernetes.io/a",
        "example.com/",
        "Example.com/a",
        "example.com/a b",
        // Accepted by this signer once, refused by kube-apiserver's ValidateSignerName.
        "a.example/x/y",
        "Example.com/X_y",
        "podcert.example.org/a/b-c_d.e",
    ] {
        assert_eq!(
            validate_signer_name(bad).unwrap_err().setting,
            "signer-name",
            "{bad}"
        );
    }
    for good in ["example.com/spiffe", "podcert.example.org/a.b-c"] {
        validate_signer_name(good).unwrap();
    }
}

#[test]
fn the_trust_bundle_suffix_must_make_a_name_the_api_server_accepts() {
    for bad in ["-ca", "ca-", "CA", "c_a", ""] {
        let flag = format!("--trust-bundle-suffix={bad}");
        let e = args(&[flag.as_str()]).unwrap_err();
        assert_eq!(e.setting, "trust-bundle-suffix", "{bad:?}");
    }
    assert_eq!(
        args(&["--trust-bundle-suffix", "roots.v2"])
            .unwrap()
            .ca
            .trust_bundle_name,
        "example.com:spiffe:roots.v2"
    );
}

#[test]
fn unparseable_flags_are_refused_by_clap_naming_the_flag() {
    let e = Args::try_parse_from([
        "podcert-signer",
        "--signer-name",
        "a.b/c",
        "--allowed-key-types",
        "RSA2048",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("--allowed-key-types"), "{e}");
    let e = Args::try_parse_from([
        "podcert-signer",
        "--signer-name",
        "a.b/c",
        "--default-lifetime",
        "soon",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("--default-lifetime"), "{e}");
}
