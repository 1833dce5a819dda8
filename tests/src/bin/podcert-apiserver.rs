//! podcert-apiserver: the test API server as a standalone process, for `kubectl`, the demo
//! and local experiments.
//!
//! It serves HTTPS on a loopback address, writes an admin kubeconfig, installs the RBAC of a
//! rendered `manifests/` if asked, prints where everything is, and runs until SIGTERM or
//! Ctrl-C. It behaves as described in `tests/src/apiserver` (upstream's validation,
//! RBAC with `sign`/`attest`, impersonation, watches, faults are not injected here).
//!
//! ```text
//! podcert-apiserver --listen 127.0.0.1:6443 --kubeconfig /tmp/podcert.kubeconfig --release 1.37
//! KUBECONFIG=/tmp/podcert.kubeconfig kubectl get podcertificaterequests -A
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use podcert_tests::apiserver::{ServerOptions, TestApiServer};

struct Args {
    listen: SocketAddr,
    kubeconfig: PathBuf,
    release: String,
    rbac: Option<PathBuf>,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "podcert-apiserver: {problem}\nusage: podcert-apiserver [--listen 127.0.0.1:6443] [--kubeconfig FILE] \
         [--release 1.34|1.35|1.36|1.37|1.40] [--rbac RENDERED_MANIFESTS.yaml]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
        kubeconfig: std::env::temp_dir().join("podcert-apiserver.kubeconfig"),
        release: "1.37".into(),
        rbac: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--listen" => {
                let v = value();
                args.listen = v
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--listen {v:?} is not an address:port")));
                if !args.listen.ip().is_loopback() {
                    usage(&format!("--listen {v}: only loopback addresses are served"));
                }
            }
            "--kubeconfig" => args.kubeconfig = value().into(),
            "--release" => args.release = value(),
            "--rbac" => args.rbac = Some(value().into()),
            "-h" | "--help" => usage("serves the podcert test API server"),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    args
}

fn options(release: &str) -> ServerOptions {
    match release {
        "1.34" => ServerOptions::v1alpha1(),
        "1.35" | "1.36" => ServerOptions::v1beta1(),
        "1.37" => ServerOptions::v1_and_v1beta1(),
        "1.40" => ServerOptions::v1_only(),
        other => usage(&format!(
            "--release {other}: use 1.34, 1.35, 1.36, 1.37 or 1.40"
        )),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args();
    let mut options = options(&args.release);
    options.listen = args.listen;
    let server = TestApiServer::start(options);
    if let Some(path) = &args.rbac {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| usage(&format!("--rbac {}: {e}", path.display())));
        let objects: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| usage(&format!("--rbac {}: {e}", path.display())));
        let installed = server.install_rbac(&objects);
        eprintln!("installed {installed} RBAC objects from {}", path.display());
    }
    let dir = args
        .kubeconfig
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let written = server.write_kubeconfig(&dir);
    std::fs::rename(&written, &args.kubeconfig).expect("kubeconfig written");
    println!("serving {} (Kubernetes {})", server.url(), args.release);
    println!("admin kubeconfig: {}", args.kubeconfig.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("stopped");
}
