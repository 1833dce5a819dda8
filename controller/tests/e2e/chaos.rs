//! Chaos: two replicas, a couple of thousand requests, and a seeded random mix of every fault
//! the test API server can inject plus `kill -9` and `SIGSTOP` of the replicas, for about
//! forty seconds. At the end: nothing pending, nothing `Failed`, nothing issued twice, one CA,
//! every chain valid. The seed is printed; `PODCERT_CHAOS_SEED=<seed>` replays a run, and
//! `PODCERT_CHAOS_REQUESTS` / `PODCERT_CHAOS_SECONDS` scale it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;

use crate::support::*;

/// SplitMix64: a seeded, dependency-free stream of choices.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn signal(p: &SignerProcess, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_under_random_faults_kills_and_stops_lose_nothing_and_keep_one_ca() {
    let _machine = heavy_scenario().await;
    let seed = env_or("PODCERT_CHAOS_SEED", {
        let mut b = [0u8; 8];
        getrandom_seed(&mut b);
        u64::from_le_bytes(b) % 1_000_000
    });
    let requests = env_or("PODCERT_CHAOS_REQUESTS", 2000) as usize;
    let seconds = env_or("PODCERT_CHAOS_SECONDS", 40);
    eprintln!(
        "chaos: seed {seed} (replay with PODCERT_CHAOS_SEED={seed}), {requests} requests, {seconds} s of faults"
    );
    let mut dice = Dice(seed);

    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let mut generation = 0;
    let mut spawn = |cluster: &Cluster| {
        generation += 1;
        cluster.signer(&format!("r{generation}"), &[])
    };
    let mut replicas = vec![spawn(&cluster), spawn(&cluster)];
    replicas[0].wait_ready(Duration::from_secs(30)).await;
    let first_ca = cluster.server.get("secrets", CA_NS, CA_NAME).unwrap()["data"].clone();
    let mut logs = String::new();

    let tracker = cluster.tracker("v1beta1");
    let kubelet = cluster.kubelet("v1beta1");
    let pods = plain_burst("chaos", requests);
    let chunks: Vec<_> = pods.chunks(requests.div_ceil(10).max(1)).collect();
    let mut created = Vec::new();
    let faults = cluster.server.faults();
    let started = tokio::time::Instant::now();
    let mut chunk = 0;
    while started.elapsed() < Duration::from_secs(seconds) || chunk < chunks.len() {
        if chunk < chunks.len() {
            created.extend(kubelet.create_all(chunks[chunk], 16).await.unwrap());
            chunk += 1;
        }
        if started.elapsed() >= Duration::from_secs(seconds) {
            continue;
        }
        let which = dice.below(10);
        let hold = dice.millis(300, 2000);
        match which {
            0 => cluster.server.restart(dice.millis(100, 1000)),
            1 => faults.drop_watches(),
            2 => {
                faults.stall_watches.store(true, Ordering::SeqCst);
                tokio::time::sleep(hold).await;
                faults.stall_watches.store(false, Ordering::SeqCst);
            }
            3 => faults.throttle_for(hold),
            4 => faults.fail_for(hold),
            5 => {
                faults.refuse_writes.store(true, Ordering::SeqCst);
                tokio::time::sleep(hold).await;
                faults.refuse_writes.store(false, Ordering::SeqCst);
            }
            6 => {
                faults
                    .delay_ms
                    .store(dice.below(150) + 20, Ordering::SeqCst);
                tokio::time::sleep(hold).await;
                faults.delay_ms.store(0, Ordering::SeqCst);
            }
            7 => faults
                .conflict_next_status_writes
                .store(10, Ordering::SeqCst),
            8 => {
                // kill -9 a replica and start a new one in its place.
                let i = dice.below(2) as usize;
                replicas[i].kill();
                logs.push_str(&replicas[i].log_text());
                replicas[i] = spawn(&cluster);
            }
            _ => {
                // SIGSTOP a replica for longer than the Lease (3 s), then SIGCONT.
                let i = dice.below(2) as usize;
                signal(&replicas[i], "-STOP");
                tokio::time::sleep(dice.millis(3500, 5000)).await;
                signal(&replicas[i], "-CONT");
            }
        }
        tokio::time::sleep(dice.millis(200, 1000)).await;
    }
    let outcomes = tracker.wait_all(&created, Duration::from_secs(120)).await;
    eprintln!(
        "chaos: {} of {} answered {:?} after the faults began",
        outcomes.iter().flatten().count(),
        created.len(),
        started.elapsed()
    );
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);
    assert_eq!(count_issued(&outcomes), requests, "seed {seed}");
    assert_eq!(
        pem_blocks(&bundle),
        1,
        "one root in the bundle (seed {seed})"
    );
    assert_eq!(
        cluster.server.get("secrets", CA_NS, CA_NAME).unwrap()["data"],
        first_ca,
        "the CA was replaced (seed {seed})"
    );
    for r in &replicas {
        logs.push_str(&r.log_text());
    }
    assert_eq!(
        logs.matches("generated a new root CA").count(),
        1,
        "seed {seed}"
    );
}

/// A seed from the OS, without a dependency: the low bits of a fresh random UID.
fn getrandom_seed(out: &mut [u8; 8]) {
    let uid = podcert_tests::random_uid();
    for (i, b) in uid
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .take(16)
        .enumerate()
    {
        out[i / 2] = (out[i / 2] << 4) | (b as char).to_digit(16).unwrap() as u8;
    }
}
