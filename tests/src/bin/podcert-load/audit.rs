//! What the signer asks of the real kube-apiserver, from its audit log: kube-apiserver records
//! every request the signer's ServiceAccount makes (level Metadata, one line once the response
//! is complete), and a run counts the lines written between two marks, by verb and resource.
//! This is how a run shows the signer's API calls per issued certificate, for podcert-signer and
//! for a peer alike, without trusting either signer's own metrics.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The user whose requests are recorded: the ServiceAccount `manifests/` makes for the signer.
pub(crate) const SIGNER_USER: &str = "system:serviceaccount:podcert-signer:podcert-signer";

/// kube-apiserver's audit log of the signer's requests.
pub(crate) struct AuditLog {
    path: PathBuf,
}

/// A position in the audit log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark(u64);

impl AuditLog {
    /// Writes the audit policy into `dir` and returns the log and the flags that make
    /// kube-apiserver keep it.
    pub(crate) fn configure(dir: &Path) -> (AuditLog, Vec<String>) {
        let policy = dir.join("audit-policy.yaml");
        std::fs::write(
            &policy,
            format!(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\n\
                 omitStages: [RequestReceived, ResponseStarted]\n\
                 rules:\n- level: Metadata\n  users: [\"{SIGNER_USER}\"]\n- level: None\n"
            ),
        )
        .expect("the audit policy is written");
        let path = dir.join("audit.log");
        let flags = vec![
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", path.display()),
            // Written as each request completes, so a mark taken after a run sees all of it.
            "--audit-log-mode=blocking".into(),
            "--audit-log-maxbackup=0".into(),
        ];
        (AuditLog { path }, flags)
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark(std::fs::metadata(&self.path).map_or(0, |m| m.len()))
    }

    /// The signer's requests since `since`, by "verb resource[/subresource]".
    pub(crate) fn since(&self, since: Mark) -> BTreeMap<String, u64> {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.path) {
            file.seek(SeekFrom::Start(since.0))
                .expect("the audit log seeks");
            file.read_to_string(&mut text).expect("the audit log reads");
        }
        let mut counts = BTreeMap::new();
        for event in text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["user"]["username"] == SIGNER_USER)
        {
            let verb = event["verb"].as_str().unwrap_or("?");
            let object = &event["objectRef"];
            let resource = match (object["resource"].as_str(), object["subresource"].as_str()) {
                (Some(r), Some(s)) => format!("{r}/{s}"),
                (Some(r), None) => r.to_string(),
                _ => event["requestURI"].as_str().unwrap_or("?").to_string(),
            };
            *counts.entry(format!("{verb} {resource}")).or_insert(0) += 1;
        }
        counts
    }
}

/// Requests by kind, summed into what the benchmark's targets name: writes to
/// PodCertificateRequests (the issuance itself) and reads on the hot path (get and list of
/// anything but the leader-election Lease, which is renewed on a clock, not per certificate;
/// a watch is one long request). `by_kind` keeps everything, Lease renewals included.
pub(crate) fn summary(counts: &BTreeMap<String, u64>, issued: usize) -> serde_json::Value {
    let sum = |pred: &dyn Fn(&str, &str) -> bool| -> u64 {
        counts
            .iter()
            .filter(|(k, _)| {
                let (verb, resource) = k.split_once(' ').unwrap_or((k, ""));
                pred(verb, resource)
            })
            .map(|(_, n)| n)
            .sum()
    };
    let pcr_writes = sum(&|v, r| {
        matches!(v, "create" | "update" | "patch") && r.starts_with("podcertificaterequests")
    });
    let reads = sum(&|v, r| matches!(v, "get" | "list") && r != "leases");
    let total: u64 = counts.values().sum();
    let per = |n: u64| ((n as f64 / issued.max(1) as f64) * 1000.0).round() / 1000.0;
    serde_json::json!({
        "total": total,
        "per_issued": per(total),
        "pcr_writes": pcr_writes,
        "pcr_writes_per_issued": per(pcr_writes),
        "reads": reads,
        "by_kind": counts,
    })
}
