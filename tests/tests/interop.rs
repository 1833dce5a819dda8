//! The interop matrix (issue 29): our SVIDs in a real mutual TLS handshake with Go's
//! crypto/tls, OpenSSL, BoringSSL (gRPC), rustls (`examples/mtls`) and Java's JSSE, and verified by NSS's
//! `vfychain` for both usages, under every CA profile we
//! ship, for every key type the kubelet makes (`podcert_tests::interop`). Every stack accepts
//! every cell but those [`expected_refusal`] names — each refused by a rule of that stack, for
//! that reason — and every stack refuses both controls.
//! `cargo test -p podcert-tests --test interop -- --nocapture` prints the matrix
//! (docs/interop.md shows it as measured).

use std::collections::BTreeMap;

use podcert_tests::interop::{
    CONTROL_UNTRUSTED_CLIENT, CONTROL_WRONG_SERVER_ID, Profile, Stack, cases, usage_cases,
};

/// The cells a stack refuses, by a rule of its own, and what its refusal says; every other
/// cell must pass. docs/interop.md quotes each rule.
fn expected_refusal(stack: Stack, profile: Profile, key_type: &str) -> Option<&'static str> {
    match (stack, profile, key_type) {
        // rustls-webpki fails closed on URI name constraints (RUSTSEC-2026-0098,
        // rustls/webpki#514; 0.103.12 and later).
        (Stack::Rustls, Profile::Constrained, _) => Some("name constraint"),
        // NSS as Debian 12 ships it (3.87) knows no Ed25519: a root signed with it is an
        // unrecognized algorithm (SEC_ERROR_UNRECOGNIZED_OID), an Ed25519 leaf a key fit for
        // no TLS usage.
        (Stack::Nss, Profile::RootEd25519, _) => Some("Unrecognized Object Identifier"),
        (Stack::Nss, _, "ED25519") => Some("Chain is bad"),
        // BoringSSL's default list of the signature algorithms it accepts from a peer
        // (kVerifySignatureAlgorithms, ssl/extensions.cc) has no Ed25519 and, in the BoringSSL
        // grpcio 1.85 ships, no ECDSA P-521: a peer with such a key cannot sign the handshake,
        // and the connection is closed.
        (Stack::BoringSsl, _, "ED25519" | "ECDSAP521") => Some("Handshake read failed"),
        _ => None,
    }
}

#[test]
fn every_stack_accepts_our_svids_under_every_profile_but_where_a_rule_of_its_own_refuses_them() {
    let cases = cases();
    let mut failures = Vec::new();
    let mut matrix = Matrix::new();
    for stack in Stack::ALL {
        let verdicts = stack.run(&cases);
        assert_eq!(verdicts.len(), cases.len(), "{stack}");
        for (case, verdict) in cases.iter().zip(verdicts) {
            assert_eq!(case.name, verdict.name);
            let passed = verdict.error.is_empty();
            let Some((profile, key_type)) = &case.cell else {
                // A control: the stack must have refused it — the impostor for the ID its
                // leaf carries (`…/sa/server`), not for a harness of ours failing.
                assert!(
                    [CONTROL_UNTRUSTED_CLIENT, CONTROL_WRONG_SERVER_ID]
                        .contains(&case.name.as_str())
                );
                // (gRPC's client names the server it expects by the host name it dials.)
                let impostor = match stack {
                    Stack::BoringSsl => "Hostname Verification Check failed",
                    _ => "/ns/interop/sa/server",
                };
                let for_the_id =
                    case.name != CONTROL_WRONG_SERVER_ID || verdict.error.contains(impostor);
                if passed || !for_the_id {
                    failures.push(format!(
                        "{stack} did not refuse {} as it should: {:?}",
                        case.name, verdict.error
                    ));
                }
                continue;
            };
            let (profile, key_type) = (*profile, key_type.as_str());
            matrix
                .entry((profile, key_type.to_owned()))
                .or_default()
                .push((stack, passed));
            match (expected_refusal(stack, profile, key_type), passed) {
                (None, false) => failures.push(format!(
                    "{stack} refused {}: {}",
                    case.name, verdict.error
                )),
                (Some(_), true) => failures.push(format!(
                    "{stack} accepted {}, which expected_refusal and docs/interop.md say it refuses",
                    case.name
                )),
                (Some(says), false) if !verdict.error.contains(says) => failures.push(format!(
                    "{stack} refused {} for another reason than the documented one: {}",
                    case.name, verdict.error
                )),
                _ => {}
            }
        }
    }
    println!("{}", table(&matrix));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// (profile, key type) → whether each stack accepted the cell.
type Matrix = BTreeMap<(Profile, String), Vec<(Stack, bool)>>;

/// The matrix as a Markdown table: one row per profile and key type, one column per stack.
fn table(matrix: &Matrix) -> String {
    let mut out = String::from("| profile | key type |");
    for stack in Stack::ALL {
        out.push_str(&format!(" {stack} |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(Stack::ALL.len()));
    for ((profile, key_type), cells) in matrix {
        out.push_str(&format!("\n| {} | {key_type} |", profile.name()));
        for stack in Stack::ALL {
            let passed = cells.iter().any(|&(s, ok)| s == stack && ok);
            out.push_str(if passed { " ✓ |" } else { " ✗ |" });
        }
    }
    out
}

/// Per-rule usage (issue 30): a client-only leaf is refused as a server and a server-only
/// leaf as a client, by Go's crypto/tls and OpenSSL, each for the usage; the pair each in its
/// role is accepted.
#[test]
fn a_client_only_leaf_is_refused_as_a_server_and_a_server_only_leaf_as_a_client() {
    let cases = usage_cases();
    let (cases, accept): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
    for stack in [Stack::Go, Stack::OpenSsl] {
        for ((case, verdict), accept) in cases.iter().zip(stack.run(&cases)).zip(&accept) {
            if *accept {
                assert_eq!(verdict.error, "", "{stack} refused {}", case.name);
            } else {
                let says = match stack {
                    Stack::Go => "incompatible key usage",
                    _ => "unsuitable certificate purpose",
                };
                assert!(
                    verdict.error.contains(says),
                    "{stack} on {}: {:?}",
                    case.name,
                    verdict.error
                );
            }
        }
    }
}
