//! rustls, as `examples/mtls` uses it: each case's server is the example's `serve` on a
//! loopback port allowing only the client's SPIFFE ID, its client the example's `exchange`
//! allowing only the server's, each reading its SVID and bundle from files as the kubelet
//! writes them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spiffe_mtls::{CredentialFiles, Served, exchange, serve};

use super::{Case, Party};
use crate::oracles::Verdict;

/// Writes `party`'s credential bundle (key, then chain) and the trust bundle into `dir`.
fn files(dir: &Path, side: &str, party: &Party, roots_pem: &str) -> CredentialFiles {
    let credential_bundle = dir.join(format!("{side}-credential-bundle.pem"));
    let trust_bundle = dir.join(format!("{side}-trust-bundle.pem"));
    std::fs::write(
        &credential_bundle,
        format!("{}{}", party.key_pem, party.chain_pem),
    )
    .unwrap();
    std::fs::write(&trust_bundle, roots_pem).unwrap();
    CredentialFiles::new(credential_bundle, trust_bundle)
}

async fn handshake(case: &Case) -> String {
    let dir = tempfile::tempdir().unwrap();
    let server_files = Arc::new(files(dir.path(), "server", &case.server, &case.roots_pem));
    let client_files = files(dir.path(), "client", &case.client, &case.roots_pem);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, mut served) = tokio::sync::mpsc::unbounded_channel();
    let report = move |s: Served| {
        let _ = report.send(s);
    };
    let server = tokio::spawn(serve(
        listener,
        server_files,
        vec![case.client.spiffe_id.clone()],
        report,
    ));
    let mut problems = Vec::new();
    match tokio::time::timeout(
        Duration::from_secs(10),
        exchange(
            addr,
            &client_files,
            std::slice::from_ref(&case.server.spiffe_id),
        ),
    )
    .await
    {
        Ok(Ok(x)) if x.peer == case.server.spiffe_id => {}
        Ok(Ok(x)) => problems.push(format!("client: the server is {}", x.peer)),
        Ok(Err(e)) => problems.push(format!("client: {e}")),
        Err(_) => problems.push("client: timed out".into()),
    }
    // The server reports once the connection is over (or refused).
    let outcome = tokio::time::timeout(Duration::from_secs(10), served.recv())
        .await
        .ok()
        .flatten();
    server.abort();
    match outcome {
        Some(Served::Accepted { peer }) if peer == case.client.spiffe_id => {}
        Some(Served::Accepted { peer }) => problems.push(format!("server: the client is {peer}")),
        Some(Served::Refused { error }) => problems.push(format!("server: {error}")),
        None => problems.push("server: no outcome".into()),
    }
    problems.join("; ")
}

/// Runs every case through the example's server and client.
pub fn handshakes(cases: &[Case]) -> Vec<Verdict> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    cases
        .iter()
        .map(|case| Verdict {
            name: case.name.clone(),
            error: rt.block_on(handshake(case)),
        })
        .collect()
}
