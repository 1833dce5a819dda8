//! What the load benchmark's figures are measured against: signer-core alone at the same pace,
//! and how long this machine stops a thread that never sleeps.
//!
//! A controller's CPU per certificate at a steady rate cannot be lower than what its own
//! crypto costs when it runs once every few milliseconds, with caches and branch predictors
//! cold from everything that ran in between. [`core_alone`] measures that floor: one
//! `Signer::decide` of a kubelet's P-256 stub CSR at a time, at a given rate (or back to back),
//! on one thread, timed by the thread's own CPU clock. Likewise no latency can be lower than the
//! pauses the machine imposes on a thread that is ready to run: [`stalls`] spins one thread per
//! CPU and records every gap between two readings of the clock, which on a virtual machine is
//! the hypervisor running someone else (the guest cannot see it as steal time when the host
//! does not report it).

use std::time::{Duration, Instant};

use serde::Serialize;
use signer_core::{Decision, KeyMaterial};

use crate::fixtures::{decide, kubelet_keys};

/// signer-core alone: what each decision cost on the thread's CPU clock.
#[derive(Debug, Serialize)]
pub struct CoreAlone {
    pub calls: usize,
    pub rate: Option<f64>,
    pub cpu_ms_per_call: f64,
}

/// Decides `calls` requests (fresh pod UIDs, one P-256 kubelet key, stub CSRs) one at a time,
/// each at its slot of `rate` per second (back to back when `None`), and returns the thread's
/// CPU time per decision. Panics if any is not issued: a floor of denials would measure nothing.
pub fn core_alone(calls: usize, rate: Option<f64>) -> CoreAlone {
    let key = kubelet_keys()
        .into_iter()
        .find(|k| k.key_type == "ECDSAP256")
        .expect("the fixtures hold a P-256 key");
    let material = || KeyMaterial::StubCsr {
        der: key.stub_csr_der.clone(),
    };
    let uids: Vec<String> = (0..calls).map(|_| crate::random_uid()).collect();
    // The first decision pays for loading the CA and the fixtures' first touch; not counted.
    assert!(matches!(
        decide(&crate::random_uid(), material()),
        Decision::Issue(_)
    ));
    let started = Instant::now();
    let cpu_before = thread_cpu();
    for (i, uid) in uids.iter().enumerate() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let decision = decide(uid, material());
        assert!(matches!(decision, Decision::Issue(_)), "{decision:?}");
    }
    let cpu = thread_cpu() - cpu_before;
    CoreAlone {
        calls,
        rate,
        cpu_ms_per_call: cpu.as_secs_f64() * 1000.0 / calls as f64,
    }
}

/// The calling thread's CPU time so far, from the scheduler's nanosecond account.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat (Linux) is readable");
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("schedstat's first field is nanoseconds on the CPU");
    Duration::from_nanos(ns)
}

/// What spinning threads saw: how often and how long the machine stopped them.
#[derive(Debug, Serialize)]
pub struct Stalls {
    pub seconds: f64,
    pub threads: usize,
    /// Gaps between two clock readings longer than 1 ms, and longer than 10 ms, over all
    /// threads.
    pub over_1ms: usize,
    pub over_10ms: usize,
    /// The longest gap any thread saw.
    pub longest_ms: f64,
    /// The share of the time the threads were stopped by gaps over 1 ms.
    pub lost_percent: f64,
}

/// Spins one thread per CPU for `seconds`, reading the clock in a tight loop.
pub fn stalls(seconds: f64) -> Stalls {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let run = Duration::from_secs_f64(seconds);
    let gaps: Vec<Vec<Duration>> = std::thread::scope(|s| {
        let spinners: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let started = Instant::now();
                    let mut previous = started;
                    let mut gaps = Vec::new();
                    while previous.duration_since(started) < run {
                        let now = Instant::now();
                        let gap = now.duration_since(previous);
                        if gap > Duration::from_millis(1) {
                            gaps.push(gap);
                        }
                        previous = now;
                    }
                    gaps
                })
            })
            .collect();
        spinners.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let all: Vec<Duration> = gaps.into_iter().flatten().collect();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Stalls {
        seconds,
        threads,
        over_1ms: all.len(),
        over_10ms: all
            .iter()
            .filter(|g| **g > Duration::from_millis(10))
            .count(),
        longest_ms: all.iter().copied().max().map_or(0.0, ms),
        lost_percent: all.iter().map(|g| g.as_secs_f64()).sum::<f64>() / (seconds * threads as f64)
            * 100.0,
    }
}
