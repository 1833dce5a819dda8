//! Clients that try to wear the signer's servers down (issue 31): the admin server (probes,
//! `/metrics`) and the SPIFFE bundle endpoint under thousands of idle connections, slowloris
//! heads, oversized headers, HTTP/1.1 pipelining floods and garbage TLS, each attacker from
//! its own loopback address — while the kubelet's probes, a federated peer's bundle fetches
//! and issuance go on from another. What must hold: every probe and every fetch answered,
//! every request issued, every abusive connection closed by the server within its limits
//! (`runtime/http_server.rs`), and the signer's memory bounded. The figures are printed
//! (`--nocapture`) for docs/security.md.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use podcert_tests::https::{WebCert, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};

use crate::federation::endpoint_flags;
use crate::support::*;

/// How long the attack lasts.
const ATTACK: Duration = Duration::from_secs(20);
/// Pipelining-flood connections, each closed by the server after its hundredth request.
const FLOODS: usize = 40;
/// The servers' header timeout (5 s) and some slack: an abusive connection is closed by then.
const CLOSED_WITHIN: Duration = Duration::from_secs(8);

/// A connection to `to` from loopback address `from` (each attacker has its own).
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Whether the server closes `stream` within `within` (reads return end of file or an
/// error), whatever it sent before.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + within;
    loop {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// The signer's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// How long the same traffic runs without an attack, for comparison.
const CALM: Duration = Duration::from_secs(8);

/// What the well-behaved clients saw in one phase.
struct Traffic {
    /// Probes answered, and as many bundle fetches.
    answered: usize,
    /// The slowest probe plus fetch.
    slowest: Duration,
    /// The requests filed, issued, and how fast.
    report: podcert_tests::kubelet::Report,
    peak_kib: u64,
}

/// Until `until`, from 127.0.0.1: a kubelet probe and a peer's bundle fetch every 250 ms, each
/// answered within 2 s, and two requests filed every second; then waits for their outcomes.
async fn traffic(
    cluster: &Cluster,
    signer: &SignerProcess,
    endpoint: SocketAddr,
    web: &WebCert,
    until: Instant,
    phase: &str,
) -> Traffic {
    let kubelet = cluster.kubelet("v1beta1");
    let tracker = cluster.tracker("v1beta1");
    let (mut answered, mut slowest, mut peak_kib) = (0, Duration::ZERO, 0);
    let mut created = Vec::new();
    let started = Instant::now();
    while Instant::now() < until {
        let asked = Instant::now();
        let ready = timeout(Duration::from_secs(2), signer.admin("/ready")).await;
        assert!(
            matches!(ready, Ok(Some((200, _)))),
            "a probe went unanswered ({phase}): {ready:?}"
        );
        let bundle = timeout(Duration::from_secs(2), get(endpoint, &web.ca_pem, "/")).await;
        assert!(
            matches!(bundle, Ok(Ok((200, _)))),
            "a bundle fetch went unanswered ({phase}): {:?}",
            bundle.map(|b| b.map(|(code, _)| code))
        );
        slowest = slowest.max(asked.elapsed());
        answered += 1;
        if answered % 4 == 0 {
            let pods = plain_burst(&format!("{phase}{}", answered / 4), 2);
            created.extend(kubelet.create_all(&pods, 2).await.unwrap());
        }
        peak_kib = peak_kib.max(rss_kib(signer.child.id()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let outcomes = tracker.wait_all(&created, Duration::from_secs(30)).await;
    Traffic {
        answered,
        slowest,
        report: podcert_tests::kubelet::Report::new(&created, &outcomes, started.into_std()),
        peak_kib,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_clients_starve_neither_probes_nor_bundle_fetches_nor_issuance() {
    let _heavy = heavy_scenario().await;
    let cluster = Cluster::start(podcert_tests::apiserver::ServerOptions::v1beta1()).await;
    let web = WebCert::generate("operator web CA");
    let endpoint: SocketAddr = format!("127.0.0.1:{}", podcert_tests::free_port())
        .parse()
        .unwrap();
    let flags = endpoint_flags(&cluster, &web, endpoint);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let signer = cluster.signer("a", &flags);
    signer.wait_ready(Duration::from_secs(30)).await;
    // The endpoint serves once the bundle is published (it answers 503 before).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(get(endpoint, &web.ca_pem, "/").await, Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "the bundle endpoint never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin: SocketAddr = format!("127.0.0.1:{}", signer.admin_port).parse().unwrap();
    let pid = signer.child.id();
    // The same traffic without an attack first: what the attack's figures compare with.
    let calm = traffic(
        &cluster,
        &signer,
        endpoint,
        &web,
        Instant::now() + CALM,
        "calm",
    )
    .await;
    assert_eq!(
        calm.report.issued, calm.report.requested,
        "{:?}",
        calm.report
    );
    let rss_before = rss_kib(pid);
    let addr = |n: u8| IpAddr::from([127, 0, 0, n]);
    let until = Instant::now() + ATTACK;

    // 1. Idle connections, 2,000 to each server from 127.0.0.2: none may stay open.
    let idle = tokio::spawn(async move {
        let mut streams = Vec::new();
        for _ in 0..2000 {
            for to in [admin, endpoint] {
                if let Ok(s) = connect_from(addr(2), to).await {
                    streams.push(s);
                }
            }
        }
        let opened = streams.len();
        let mut held = 0;
        for s in &mut streams {
            if !closed_by_server(s, CLOSED_WITHIN).await {
                held += 1;
            }
        }
        (opened, held)
    });
    // 2. Slowloris from 127.0.0.3: a head that never ends, one byte every 300 ms.
    let slowloris = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let to = if i % 2 == 0 { admin } else { endpoint };
            tasks.push(tokio::spawn(async move {
                let Ok(mut s) = connect_from(addr(3), to).await else {
                    return true;
                };
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").await;
                let started = Instant::now();
                while started.elapsed() < CLOSED_WITHIN {
                    if s.write_all(b"a").await.is_err() {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                closed_by_server(&mut s, Duration::from_millis(500)).await
            }));
        }
        let mut closed = 0;
        for t in tasks {
            closed += usize::from(t.await.unwrap());
        }
        closed
    });
    // 3. Oversized heads to the admin server from 127.0.0.4: refused with 431, or closed.
    let oversized = tokio::spawn(async move {
        let mut refused = 0;
        for _ in 0..20 {
            let Ok(mut s) = connect_from(addr(4), admin).await else {
                continue;
            };
            let head = format!(
                "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "b".repeat(256 * 1024)
            );
            let _ = s.write_all(head.as_bytes()).await;
            let mut answer = Vec::new();
            let _ = timeout(CLOSED_WITHIN, s.read_to_end(&mut answer)).await;
            let answer = String::from_utf8_lossy(&answer);
            if answer.is_empty() || answer.starts_with("HTTP/1.1 431") {
                refused += 1;
            }
        }
        refused
    });
    // 4. Pipelining floods from 127.0.0.5: requests written as fast as the server takes them,
    //    never waiting for a response — 40 connections of them, one after another (an
    //    unending flood would measure how fast this machine encodes /metrics, and starve the
    //    other scenarios running beside this one).
    let answered_in_flood = Arc::new(AtomicUsize::new(0));
    let pipelined = {
        let answered = answered_in_flood.clone();
        tokio::spawn(async move {
            let mut connections = 0;
            let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
            while Instant::now() < until && connections < FLOODS {
                let Ok(mut s) = connect_from(addr(5), admin).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                connections += 1;
                let (mut r, mut w) = s.split();
                let write = async {
                    while w.write_all(&request).await.is_ok() && Instant::now() < until {}
                };
                let read = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    // Reads only to learn when the server closes: the flood never waits on it.
                    while let Ok(Ok(n)) = timeout(CLOSED_WITHIN, r.read(&mut buf)).await {
                        if n == 0 {
                            break;
                        }
                        answered.fetch_add(
                            buf[..n].windows(8).filter(|w| w == b"HTTP/1.1").count(),
                            Ordering::Relaxed,
                        );
                    }
                };
                tokio::select! { _ = write => {}, _ = read => {} }
            }
            connections
        })
    };
    // 5. Garbage instead of a TLS ClientHello, to the bundle endpoint from 127.0.0.6.
    let garbage = tokio::spawn(async move {
        let mut closed = 0;
        for i in 0..300u32 {
            let Ok(mut s) = connect_from(addr(6), endpoint).await else {
                continue;
            };
            let junk: Vec<u8> = (0..1024u32)
                .map(|j| (i.wrapping_mul(31) ^ j) as u8)
                .collect();
            let _ = s.write_all(&junk).await;
            closed += usize::from(closed_by_server(&mut s, CLOSED_WITHIN).await);
        }
        closed
    });

    // Meanwhile, from 127.0.0.1: the kubelet's probes and a peer's bundle fetches every
    // 250 ms, each answered within 2 s, and requests keep coming.
    let during = traffic(&cluster, &signer, endpoint, &web, until, "attack").await;
    assert_eq!(
        during.report.issued, during.report.requested,
        "requests filed during the attack: {:?}",
        during.report
    );

    let (opened, held) = idle.await.unwrap();
    let slow_closed = slowloris.await.unwrap();
    let refused = oversized.await.unwrap();
    let flood_connections = pipelined.await.unwrap();
    let garbage_closed = garbage.await.unwrap();
    let peak_kib = during.peak_kib.max(rss_kib(pid));
    println!(
        "hostile clients for {ATTACK:?}: {opened} idle connections opened, {held} still open after {CLOSED_WITHIN:?}; \
         {slow_closed}/40 slowloris closed; {refused}/20 oversized heads refused; {flood_connections} pipelining connections, \
         {} responses; {garbage_closed}/300 garbage TLS closed; {} probes and as many bundle fetches answered; \
         signer RSS {} KiB before, {} KiB at peak",
        answered_in_flood.load(Ordering::Relaxed),
        during.answered,
        rss_before,
        peak_kib
    );
    for (phase, t) in [
        ("without the attack", &calm),
        ("during the attack", &during),
    ] {
        println!(
            "{phase}: {} issued at {:.2}/s, create->Issued p50 {} ms, p99 {} ms; probes and fetches slowest {:?}",
            t.report.issued,
            t.report.requests_per_second,
            t.report.latency_ms["p50"],
            t.report.latency_ms["p99"],
            t.slowest
        );
    }
    assert_eq!(held, 0, "idle connections the server never closed");
    assert_eq!(
        slow_closed, 40,
        "slowloris connections the server never closed"
    );
    assert_eq!(refused, 20, "oversized heads the server answered");
    assert_eq!(
        garbage_closed, 300,
        "garbage TLS connections the server never closed"
    );
    assert_eq!(
        flood_connections, FLOODS,
        "a pipelining flood kept one connection for the whole attack"
    );
    let answered = answered_in_flood.load(Ordering::Relaxed);
    assert!(
        answered <= FLOODS * 100,
        "{answered} pipelined requests answered: more than 100 on some connection"
    );
    assert!(
        peak_kib < rss_before + 64 * 1024,
        "the signer grew from {rss_before} KiB to {peak_kib} KiB under attack"
    );
}
