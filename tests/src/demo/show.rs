//! What the demo shows: the progress bar while requests wait, and the table of issued SVIDs.

use std::io::Write as _;
use std::time::{Duration, Instant};

use super::Demo;
use crate::kubelet::Format;

/// 0.8 ms, 12 ms, 1.4 s; 24h, 90m.
pub(super) fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

pub(super) fn hours(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        format!("{}m", s / 60)
    }
}

impl Demo {
    /// One row per SVID: namespace, service account, key type, proof, SPIFFE ID, serial,
    /// lifetime, create → Issued latency.
    pub fn table(&self) -> String {
        let header = [
            "NAMESPACE",
            "SERVICE ACCOUNT",
            "KEY TYPE",
            "PROOF",
            "SPIFFE ID",
            "SERIAL",
            "LIFETIME",
            "LATENCY",
        ];
        let rows: Vec<[String; 8]> = self
            .issued
            .iter()
            .map(|i| {
                [
                    i.workload.namespace.to_string(),
                    i.workload.service_account.to_string(),
                    i.workload.key_type.to_string(),
                    match i.workload.format {
                        Format::Csr => "stub CSR".into(),
                        Format::Pkix => "PKIX+PoP".into(),
                    },
                    i.spiffe_id.clone(),
                    // The serial is 20 bytes: its first 8 identify it in a table.
                    format!("{}…", &i.serial[..16.min(i.serial.len())]),
                    hours(i.lifetime),
                    millis(i.latency),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut l = String::new();
            for (cell, w) in cells.into_iter().zip(widths) {
                l.push_str(cell);
                l.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
            l.trim_end().to_string() + "\n"
        };
        let mut out = line(header.to_vec());
        for row in &rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }
}

/// A one-line progress bar on stderr (nothing when off).
pub(super) struct Progress {
    on: bool,
    total: usize,
    started: Instant,
}

impl Progress {
    pub(super) fn new(on: bool, total: usize) -> Self {
        Progress {
            on,
            total,
            started: Instant::now(),
        }
    }

    pub(super) fn say(&mut self, what: &str) {
        if self.on {
            eprint!("\r\x1b[2K{what}…");
            let _ = std::io::stderr().flush();
        }
    }

    pub(super) fn bar(&mut self, done: usize) {
        if self.on {
            const WIDTH: usize = 30;
            let filled = done * WIDTH / self.total.max(1);
            eprint!(
                "\r\x1b[2K[{}{}] {done}/{} issued  {:.1} s",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                self.total,
                self.started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }

    pub(super) fn finish(&mut self) {
        if self.on {
            eprintln!();
        }
    }
}
