//! What is read from a node is capped: a peer answering INFO with a 100 MB bulk string makes
//! the call fail with a protocol error, without growing our memory by the reply's size.
//! The peer is a tiny TCP server on 127.0.0.1 (this test binary holds only this test, so the
//! RSS measurement sees no other test's allocations).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use pika_remedy::config::Timeouts;
use pika_remedy::node::redis::{RedisNodes, MAX_READ_PER_CONNECTION};
use pika_remedy::node::{NodeError, Nodes};

const HUGE: usize = 100 * 1024 * 1024;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Answers the first command on each connection with `$<HUGE>` and HUGE bytes (stops when the
/// client goes away). At most `conns` connections, each bounded by the write of HUGE bytes.
fn huge_peer(conns: usize) -> (u16, std::thread::JoinHandle<usize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let h = std::thread::spawn(move || {
        let mut sent_total = 0;
        for _ in 0..conns {
            let Ok((mut s, _)) = l.accept() else { break };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            if s.read(&mut buf).unwrap_or(0) == 0 {
                continue;
            }
            if s.write_all(format!("${HUGE}\r\n").as_bytes()).is_err() {
                continue;
            }
            let chunk = vec![b'a'; 64 * 1024];
            let mut sent = 0;
            while sent < HUGE {
                match s.write(&chunk) {
                    Ok(n) if n > 0 => sent += n,
                    _ => break,
                }
            }
            sent_total += sent;
        }
        sent_total
    });
    (port, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100mb_info_reply_is_a_protocol_error_not_100mb_of_memory() {
    let (port, peer) = huge_peer(1);
    let nodes = RedisNodes::new(
        &Timeouts {
            connect: Duration::from_millis(500),
            command: Duration::from_secs(5),
        },
        None,
    );
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let before = rss_bytes();
    let t = Instant::now();
    let r = nodes.status(&addr).await;
    let took = t.elapsed();
    let after = rss_bytes();
    let grew = after.saturating_sub(before);
    eprintln!(
        "100 MB INFO reply: {r:?} after {took:?}; RSS {} MiB -> {} MiB (+{} MiB)",
        before >> 20,
        after >> 20,
        grew >> 20
    );
    match &r {
        Err(NodeError::Protocol(m)) => {
            assert!(
                m.contains("exceeds") && m.contains(&MAX_READ_PER_CONNECTION.to_string()),
                "{m}"
            )
        }
        other => panic!("expected a protocol error for a 100 MB reply, got {other:?}"),
    }
    assert!(
        grew < 32 * 1024 * 1024,
        "RSS grew by {grew} bytes reading a capped reply"
    );
    let sent = peer.join().expect("peer");
    assert!(
        sent < HUGE,
        "the client read the whole reply ({sent} bytes)"
    );
}
