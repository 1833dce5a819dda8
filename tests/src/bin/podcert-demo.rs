//! podcert-demo: the signer's main job on this machine, with no cluster (see
//! `podcert_tests::demo`). `scripts/demo` builds the signer and runs this.
//!
//! ```text
//! podcert-demo --signer-bin target/release/podcert-signer [--out target/demo]
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use podcert_tests::demo::{self, Options, TRUST_DOMAIN};

fn usage(problem: &str) -> ! {
    eprintln!(
        "podcert-demo: {problem}\nusage: podcert-demo --signer-bin PATH [--out DIR (default target/demo)]"
    );
    std::process::exit(2)
}

fn parse_args() -> Options {
    let mut signer_bin = None;
    let mut out = PathBuf::from("target/demo");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--signer-bin" => signer_bin = Some(PathBuf::from(value())),
            "--out" => out = value().into(),
            "-h" | "--help" => usage("shows podcert-signer issuing SVIDs with no cluster"),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    Options {
        signer_bin: signer_bin.unwrap_or_else(|| usage("--signer-bin is required")),
        out,
        progress: std::io::stderr().is_terminal(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = parse_args();
    eprintln!(
        "podcert-demo: an in-process Kubernetes API server (1.37), the podcert-signer binary and a \
         kubelet emulator; {} pods ask for SVIDs in trust domain {TRUST_DOMAIN}",
        demo::WORKLOADS.len()
    );
    match demo::run(&options).await {
        Ok(d) => {
            println!("\n{}", d.table());
            println!(
                "credential bundles (key, then chain): {}/<namespace>-<service account>-<key type>/credentialbundle.pem",
                options.out.display()
            );
            println!("trust bundle: {}", d.trust_bundle.display());
            println!("signer log:   {}", d.signer_log.display());
            println!("mTLS (examples/mtls verifier): {}", d.handshake);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\npodcert-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
