//! spiffe-mtls server|client: see the crate documentation and examples/README.md.
//!
//! ```text
//! SPIFFE_CREDENTIAL_FOLDER=/run/workload-spiffe-credentials \
//!     spiffe-mtls server --listen 0.0.0.0:8443 --allow spiffe://cluster.local/ns/shop/sa/web
//! spiffe-mtls client --connect api:8443 --credential-folder /run/workload-spiffe-credentials \
//!     --allow spiffe://cluster.local/ns/shop/sa/api --allow spiffe://b.example.org/ns/shop/sa/api
//! spiffe-mtls client --connect api:8443 --credential-bundle ... --trust-bundle ... \
//!     --federated-bundle b.example.org=/var/run/svid/b-bundle.pem --allow ...
//! ```
//!
//! The credentials come from `--credential-folder`, else from `--credential-bundle` and
//! `--trust-bundle`, else from the folder `SPIFFE_CREDENTIAL_FOLDER` names, as the SPIFFE
//! Filesystem Delivery draft asks an application to look; `--federated-bundle` adds a trust
//! domain's bundle to any of them.

use std::process::ExitCode;
use std::sync::Arc;

use spiffe_mtls::credentials::CREDENTIAL_FOLDER_ENV;
use spiffe_mtls::{CredentialFiles, Served, exchange, serve};

fn usage() -> ExitCode {
    eprintln!(
        "usage: spiffe-mtls server --listen ADDR | client --connect ADDR  [--credential-folder PATH | --credential-bundle PATH --trust-bundle PATH] [--federated-bundle TRUST_DOMAIN=PATH]... --allow SPIFFE_ID...  (no credential flags: the folder ${CREDENTIAL_FOLDER_ENV} names)"
    );
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(mode) = args.next() else {
        return usage();
    };
    let (mut addr, mut bundle, mut trust, mut folder, mut allow, mut every) =
        (None, None, None, None, Vec::new(), None);
    let mut federated: Vec<(String, String)> = Vec::new();
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            return usage();
        };
        match flag.as_str() {
            "--listen" | "--connect" => addr = Some(value),
            "--credential-folder" => folder = Some(value),
            "--credential-bundle" => bundle = Some(value),
            "--trust-bundle" => trust = Some(value),
            "--allow" => allow.push(value),
            "--federated-bundle" => match value.split_once('=') {
                Some((domain, path)) if !domain.is_empty() && !path.is_empty() => {
                    federated.push((domain.to_owned(), path.to_owned()))
                }
                _ => {
                    eprintln!(
                        "spiffe-mtls: --federated-bundle: {value:?} is not TRUST_DOMAIN=PATH"
                    );
                    return ExitCode::from(2);
                }
            },
            "--every" => match value.parse::<u64>() {
                Ok(secs) if secs > 0 => every = Some(std::time::Duration::from_secs(secs)),
                _ => {
                    eprintln!("spiffe-mtls: --every: {value:?} is not a whole number of seconds");
                    return ExitCode::from(2);
                }
            },
            _ => return usage(),
        }
    }
    let Some(addr) = addr else {
        return usage();
    };
    if allow.is_empty() {
        eprintln!("spiffe-mtls: --allow: name at least one SPIFFE ID to accept");
        return ExitCode::from(2);
    }
    let files = match (folder, bundle, trust) {
        (Some(folder), None, None) => CredentialFiles::folder(folder),
        (Some(_), _, _) => {
            eprintln!(
                "spiffe-mtls: --credential-folder: give either the folder or --credential-bundle and --trust-bundle, not both"
            );
            return ExitCode::from(2);
        }
        (None, Some(bundle), Some(trust)) => CredentialFiles::new(bundle, trust),
        (None, Some(_), None) | (None, None, Some(_)) => {
            eprintln!("spiffe-mtls: --credential-bundle and --trust-bundle go together");
            return ExitCode::from(2);
        }
        (None, None, None) => match std::env::var_os(CREDENTIAL_FOLDER_ENV) {
            Some(folder) if !folder.is_empty() => CredentialFiles::folder(folder),
            _ => {
                eprintln!(
                    "spiffe-mtls: no credentials: give --credential-folder (or --credential-bundle and --trust-bundle), or set {CREDENTIAL_FOLDER_ENV}"
                );
                return ExitCode::from(2);
            }
        },
    };
    let files = Arc::new(
        federated
            .into_iter()
            .fold(files, |f, (domain, path)| f.with_federated(&domain, path)),
    );
    match mode.as_str() {
        "server" => {
            let listener = match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("spiffe-mtls: --listen {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            eprintln!("listening on {addr}");
            let result = serve(listener, files, allow, |s| match s {
                Served::Accepted { peer } => println!("accepted {peer}"),
                Served::Refused { error } => println!("refused: {error}"),
            })
            .await;
            eprintln!("spiffe-mtls: {result:?}");
            ExitCode::FAILURE
        }
        "client" => {
            let target = match tokio::net::lookup_host(&addr)
                .await
                .ok()
                .and_then(|mut a| a.next())
            {
                Some(a) => a,
                None => {
                    eprintln!("spiffe-mtls: --connect {addr}: cannot resolve");
                    return ExitCode::FAILURE;
                }
            };
            loop {
                let result = exchange(target, &files, &allow).await;
                match &result {
                    Ok(x) => println!("server {} says: {}", x.peer, x.reply),
                    Err(e) => eprintln!("spiffe-mtls: {e}"),
                }
                match every {
                    // As a long-running client, keep going (certificates rotate underneath).
                    Some(period) => tokio::time::sleep(period).await,
                    None if result.is_ok() => return ExitCode::SUCCESS,
                    None => return ExitCode::FAILURE,
                }
            }
        }
        _ => usage(),
    }
}
