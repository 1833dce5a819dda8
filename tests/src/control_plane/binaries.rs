//! The real Kubernetes binaries, built from Go modules by `scripts/build-kubernetes` (the one
//! place that knows how) into `target/kubernetes/`. A test asks for `kube-apiserver@1.37`; the
//! script is run under a file lock, so tests that start at once build each binary once, and it
//! answers at once when the binary is current. A build that fails — the Go module proxy out
//! of reach among the causes — fails the test with the script's own message.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// The path of `target` (`etcd`, `kube-apiserver@1.37`, `podcert-kubelet@1.35`), built if
/// missing or stale.
pub fn binary(target: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get_or_insert_with(HashMap::new).get(target) {
        return path.clone();
    }
    let root = workspace();
    let dir = root.join("target/kubernetes");
    std::fs::create_dir_all(&dir).unwrap();
    // Another test process (cargo runs one per test binary) may be building too.
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().expect("the build lock");
    let out = Command::new(root.join("scripts/build-kubernetes"))
        .arg(target)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("scripts/build-kubernetes does not run: {e}"));
    drop(lock);
    assert!(
        out.status.success(),
        "scripts/build-kubernetes {target} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.exists(),
        "scripts/build-kubernetes {target} printed {path:?}, which does not exist"
    );
    built
        .as_mut()
        .unwrap()
        .insert(target.to_string(), path.clone());
    path
}
