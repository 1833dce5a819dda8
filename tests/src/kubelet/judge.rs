//! Judging what was issued as the kubelet and the API server would ([`check_issued`]), and a
//! run summed up as JSON with latency percentiles ([`Report`]).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::{Created, Terminal};

/// Checks an issued status as the kubelet and API server would: the leaf holds the requested
/// key, the status times equal the leaf's, the single URI SAN is `spiffe_id`, and the chain
/// verifies up to a root of `trust_bundle_pem`.
pub fn check_issued(
    status: &Value,
    spki_der: &[u8],
    spiffe_id: &str,
    trust_bundle_pem: &str,
) -> Result<(), String> {
    let chain = status["certificateChain"]
        .as_str()
        .ok_or("no certificateChain")?;
    let blocks = pem::parse_many(chain).map_err(|e| e.to_string())?;
    let certs: Vec<X509Certificate<'_>> = blocks
        .iter()
        .map(|b| {
            X509Certificate::from_der(b.contents())
                .map(|(_, c)| c)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let leaf = certs.first().ok_or("empty chain")?;
    if leaf.public_key().raw != spki_der {
        return Err("the leaf's key is not the requested key".into());
    }
    let ts = |k: &str| -> Result<i64, String> {
        status[k]
            .as_str()
            .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_second())
            .ok_or(format!("no {k}"))
    };
    if ts("notBefore")? != leaf.validity().not_before.timestamp()
        || ts("notAfter")? != leaf.validity().not_after.timestamp()
    {
        return Err("status times differ from the leaf's".into());
    }
    let id = signer_core::spiffe::svid_id(blocks[0].contents()).map_err(|e| e.to_string())?;
    if id.as_str() != spiffe_id {
        return Err(format!("SPIFFE ID {id}, expected {spiffe_id}"));
    }
    let roots: Vec<Vec<u8>> = pem::parse_many(trust_bundle_pem)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|p| p.into_contents())
        .collect();
    let roots: Vec<X509Certificate<'_>> = roots
        .iter()
        .filter_map(|r| X509Certificate::from_der(r).ok().map(|(_, c)| c))
        .collect();
    for pair in certs.windows(2) {
        pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .map_err(|e| format!("chain link does not verify: {e}"))?;
    }
    let top = certs.last().expect("non-empty");
    if !roots
        .iter()
        .any(|r| top.verify_signature(Some(r.public_key())).is_ok())
    {
        return Err("the chain does not verify up to the trust bundle".into());
    }
    Ok(())
}

/// A run summed up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub requested: usize,
    pub issued: usize,
    pub denied: BTreeMap<String, usize>,
    pub failed: usize,
    pub pending: usize,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub latency_ms: BTreeMap<String, f64>,
}

impl Report {
    pub fn new(created: &[Created], outcomes: &[Option<Terminal>], started: Instant) -> Report {
        let mut r = Report {
            requested: created.len(),
            ..Default::default()
        };
        let mut latencies: Vec<f64> = Vec::new();
        let mut last = started;
        for (c, o) in created.iter().zip(outcomes) {
            match o {
                None => r.pending += 1,
                Some(t) => {
                    latencies
                        .push(t.at.saturating_duration_since(c.sent_at).as_secs_f64() * 1000.0);
                    last = last.max(t.at);
                    match t.condition() {
                        "Issued" => r.issued += 1,
                        "Denied" => *r.denied.entry(t.reason().to_string()).or_default() += 1,
                        _ => r.failed += 1,
                    }
                }
            }
        }
        r.seconds = last.saturating_duration_since(started).as_secs_f64();
        r.requests_per_second = if r.seconds > 0.0 {
            (r.requested - r.pending) as f64 / r.seconds
        } else {
            0.0
        };
        latencies.sort_by(f64::total_cmp);
        for (name, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0)] {
            if !latencies.is_empty() {
                let i =
                    ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
                r.latency_ms
                    .insert(name.into(), (latencies[i] * 10.0).round() / 10.0);
            }
        }
        r
    }
}
