//! The podcert-signer binary: parse the command line and run.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    podcert_signer::run(podcert_signer::cli::Args::parse()).await
}
