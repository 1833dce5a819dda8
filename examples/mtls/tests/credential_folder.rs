//! Where the binary finds its credentials, as the SPIFFE Filesystem Delivery draft asks an
//! application to look (§3.1): its own configuration first (`--credential-folder`), else the
//! folder `SPIFFE_CREDENTIAL_FOLDER` names; with neither, it says so and names both.

use std::path::PathBuf;
use std::process::Command;

/// Runs `spiffe-mtls client` once against a closed port, with `SPIFFE_CREDENTIAL_FOLDER` set
/// to `env` (or unset); its exit code and standard error.
fn client(extra: &[&str], env: Option<&PathBuf>) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spiffe-mtls"));
    cmd.args(["client", "--connect", "127.0.0.1:9"])
        .args(extra)
        .args(["--allow", "spiffe://example.org/ns/shop/sa/api"]);
    match env {
        Some(folder) => cmd.env("SPIFFE_CREDENTIAL_FOLDER", folder),
        None => cmd.env_remove("SPIFFE_CREDENTIAL_FOLDER"),
    };
    let out = cmd.output().expect("the example runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn empty_folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spiffe-mtls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_folder_comes_from_the_flag_else_from_spiffe_credential_folder() {
    let from_env = empty_folder("env");
    let from_flag = empty_folder("flag");
    // The environment names the folder: it is read (and found wanting).
    let (code, err) = client(&[], Some(&from_env));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: no credential-bundle.pem in the credential folder",
            from_env.display()
        )),
        "{err}"
    );
    // The flag wins over the environment.
    let flag = from_flag.display().to_string();
    let (code, err) = client(&["--credential-folder", &flag], Some(&from_env));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&flag) && !err.contains(&from_env.display().to_string()),
        "{err}"
    );
    // Neither: a usage error naming both ways.
    let (code, err) = client(&[], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--credential-folder") && err.contains("SPIFFE_CREDENTIAL_FOLDER"),
        "{err}"
    );
    for dir in [from_env, from_flag] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
