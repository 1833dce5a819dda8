//! The interop matrix (issue 29): our SVIDs in a real mutual TLS handshake with Go's
//! crypto/tls, OpenSSL, rustls (`examples/mtls`) and Java's JSSE, under every CA profile we
//! ship, for every key type the kubelet makes (`podcert_tests::interop`). Every stack accepts
//! every cell of every profile but the name-constrained one, which exactly the stacks named in
//! [`REFUSE_URI_NAME_CONSTRAINTS`] refuse, for that reason; every stack refuses both controls.
//! `cargo test -p podcert-tests --test interop -- --nocapture` prints the matrix
//! (docs/interop.md shows it as measured).

use std::collections::BTreeMap;

use podcert_tests::interop::{
    CONTROL_UNTRUSTED_CLIENT, CONTROL_WRONG_SERVER_ID, Case, Profile, Stack, cases,
};

/// The stacks that refuse any chain carrying a URI name constraint, and what each says.
/// rustls-webpki: RUSTSEC-2026-0098, rustls/webpki#514 (0.103.12 and later).
const REFUSE_URI_NAME_CONSTRAINTS: [(Stack, &str); 1] = [(Stack::Rustls, "name constraint")];

fn profile_of(case: &Case) -> Option<Profile> {
    Profile::ALL
        .into_iter()
        .find(|p| case.name.starts_with(&format!("{}/", p.name())))
}

#[test]
fn every_stack_accepts_our_svids_under_every_profile_and_the_constrained_one_as_documented() {
    let cases = cases();
    let mut failures = Vec::new();
    let mut matrix = Matrix::new();
    for stack in Stack::ALL {
        let verdicts = stack.run(&cases);
        assert_eq!(verdicts.len(), cases.len(), "{stack}");
        for (case, verdict) in cases.iter().zip(verdicts) {
            assert_eq!(case.name, verdict.name);
            let passed = verdict.error.is_empty();
            let Some(profile) = profile_of(case) else {
                // A control: the stack must have refused it.
                assert!(
                    [CONTROL_UNTRUSTED_CLIENT, CONTROL_WRONG_SERVER_ID]
                        .contains(&case.name.as_str())
                );
                if passed {
                    failures.push(format!("{stack} accepted {}", case.name));
                }
                continue;
            };
            let key_type = case.name.rsplit('/').next().unwrap().to_owned();
            matrix
                .entry((profile, key_type))
                .or_default()
                .push((stack, passed));
            let refusal = REFUSE_URI_NAME_CONSTRAINTS
                .iter()
                .find(|(s, _)| *s == stack && profile == Profile::Constrained);
            match (refusal, passed) {
                (None, false) => failures.push(format!("{stack} refused {}: {}", case.name, verdict.error)),
                (Some(_), true) => failures.push(format!(
                    "{stack} accepted {}, which REFUSE_URI_NAME_CONSTRAINTS and docs/interop.md say it refuses",
                    case.name
                )),
                (Some((_, says)), false) if !verdict.error.contains(says) => failures.push(format!(
                    "{stack} refused {} for another reason than the name constraint: {}",
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
