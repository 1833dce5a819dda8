//! Java's JSSE: `tests/jsse/Handshake.java`, run by the machine's JDK as a single source file
//! over one directory per case (`java` on PATH, or `$JAVA_HOME/bin/java`; missing, the test
//! fails naming it).

use std::path::PathBuf;
use std::process::Command;

use super::Case;
use crate::oracles::Verdict;

fn java() -> PathBuf {
    let candidate = std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("java"));
    let probe = Command::new(&candidate).arg("-version").output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "the interop matrix needs a JDK (11 or later): `java` is not on PATH and JAVA_HOME has none (Debian: apt-get install openjdk-17-jdk-headless)"
    );
    candidate
}

/// Runs every case in one JVM.
pub fn handshakes(cases: &[Case]) -> Vec<Verdict> {
    let dir = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let d = dir.path().join(n.to_string());
        std::fs::create_dir(&d).unwrap();
        for (side, party) in [("server", &case.server), ("client", &case.client)] {
            std::fs::write(d.join(format!("{side}.pem")), &party.chain_pem).unwrap();
            std::fs::write(d.join(format!("{side}.key")), &party.key_pem).unwrap();
            std::fs::write(d.join(format!("{side}.id")), &party.spiffe_id).unwrap();
        }
        std::fs::write(d.join("roots.pem"), &case.roots_pem).unwrap();
        dirs.push(d);
    }
    let source = crate::fixtures::tests_dir().join("jsse/Handshake.java");
    let out = Command::new(java())
        .arg(&source)
        .args(&dirs)
        .output()
        .expect("java runs");
    assert!(
        out.status.success(),
        "{} failed: {}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{stdout}");
    cases
        .iter()
        .zip(lines)
        .enumerate()
        .map(|(n, (case, line))| {
            let (index, error) = line.split_once('\t').unwrap_or((line, ""));
            assert_eq!(index, n.to_string(), "{stdout}");
            Verdict {
                name: case.name.clone(),
                error: error.to_owned(),
            }
        })
        .collect()
}
