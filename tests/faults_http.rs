//! Slow clients and huge bodies: slowloris connections are closed after the header read
//! timeout while the service keeps answering others; a body over `webhook.max_body_bytes` gets
//! a 413 with `Connection: close` and never a broken pipe; a body that does not arrive gets a
//! 408; connections beyond `service.max_connections` are closed at once.
//!
//! In-process service on 127.0.0.1:0 with a trivial reconciler; raw TCP clients.
//! `PIKA_REMEDY_SLOWLORIS` sets the number of slow connections (default 2000).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pika_remedy::config::{Config, Loaded, Secret};
use pika_remedy::http::{self, App};
use pika_remedy::service::events::EventLog;
use pika_remedy::service::supervisor::{Supervisor, SupervisorConfig};
use support::fakes::FakeReconciler;

const BEARER: &str = "slow-t0ken-5";

async fn start(service_extra: &str) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let text = format!(
        r#"
[service]
shutdown_grace = "1s"
{service_extra}
[webhook]
max_body_bytes = 65536
[[cluster]]
name = "mymaster"
nodes = [{{ addr = "127.0.0.1:7000" }}, {{ addr = "127.0.0.1:7001" }}]
"#
    );
    let config = Config::parse(&text, "test.toml").expect("config");
    let loaded = Loaded {
        config,
        path: "test.toml".into(),
        cluster_passwords: Default::default(),
        consul_token: None,
        etcd_password: None,
        webhook_bearer: Some(Secret::new(BEARER)),
        webhook_basic_password: None,
        read_only_token: None,
    };
    let sup = Supervisor::new(
        Arc::new(FakeReconciler::new(&["mymaster"]).idle_reason("topology converged")),
        Arc::new(EventLog::in_memory(10)),
        SupervisorConfig::from_config(&loaded.config),
    );
    let metrics: http::MetricsFn =
        Arc::new(|_| (http::OPENMETRICS_CONTENT_TYPE, "# EOF\n".to_string()));
    let app = App::new(&loaded, sup, metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(http::serve(listener, app, async move {
        let _ = rx.await;
    }));
    (addr, stop)
}

/// `GET /healthz` on a fresh connection; the time to the answer.
fn healthz(addr: SocketAddr) -> Result<Duration, String> {
    let t = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if out.starts_with("HTTP/1.1 200") {
        Ok(t.elapsed())
    } else {
        Err(format!("unexpected answer: {out:?}"))
    }
}

/// Has the server closed this connection (EOF or reset) when read?
fn closed_by_server(s: &mut TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let mut b = [0u8; 256];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => true, // an error answer (408) before the close counts too
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_others_answered() {
    let n: usize = std::env::var("PIKA_REMEDY_SLOWLORIS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let (addr, _stop) = start("header_read_timeout = \"2s\"").await;
    let result = tokio::task::spawn_blocking(move || {
        let mut slow = Vec::with_capacity(n);
        for _ in 0..n {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
            // Headers that never end.
            s.write_all(b"POST /v1/alerts HTTP/1.1\r\nHost: x\r\n")
                .expect("write");
            slow.push(s);
        }
        let opened = Instant::now();
        // Others are answered while the slow connections are open.
        let latency = healthz(addr).expect("healthz during the attack");
        // Keep trickling a header byte per 500 ms (each byte would reset a naive idle timer).
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut open = n;
        while Instant::now() < deadline && open > 0 {
            std::thread::sleep(Duration::from_millis(500));
            open = 0;
            for s in slow.iter_mut() {
                if s.write_all(b"X").is_ok() && !closed_by_server(s) {
                    open += 1;
                }
            }
        }
        (latency, open, opened.elapsed(), healthz(addr))
    })
    .await
    .expect("client thread");
    let (latency, open, after, again) = result;
    eprintln!(
        "{n} slowloris connections: healthz answered in {latency:?} during the attack; {open} still open after {after:?} (header_read_timeout 2s)"
    );
    assert_eq!(open, 0, "slow connections still open after {after:?}");
    again.expect("healthz after the attack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_gets_413_with_connection_close_never_a_broken_pipe() {
    let (addr, _stop) = start("").await;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut ok = 0;
        let mut bad = Vec::new();
        for _ in 0..30 {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            let size = 4 * 1024 * 1024;
            let head = format!(
                "POST /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {BEARER}\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
            );
            s.write_all(head.as_bytes()).expect("head");
            // Upload the whole body like a client that does not look at early answers.
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0;
            let mut write_err = None;
            while sent < size {
                match s.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) => {
                        write_err = Some(e.to_string());
                        break;
                    }
                }
            }
            let mut out = Vec::new();
            let read = s.read_to_end(&mut out);
            let text = String::from_utf8_lossy(&out).to_string();
            if text.starts_with("HTTP/1.1 413")
                && text.to_ascii_lowercase().contains("connection: close")
            {
                ok += 1;
            } else {
                bad.push(format!("write: {write_err:?}, read: {read:?}, answer: {text:?}"));
            }
        }
        (ok, bad)
    })
    .await
    .expect("client thread");
    let (ok, bad) = outcome;
    eprintln!("oversized bodies: {ok}/30 answered 413 with Connection: close");
    assert!(
        bad.is_empty(),
        "{} of 30 without a 413: {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_that_never_arrives_gets_408() {
    let (addr, _stop) = start("body_read_timeout = \"1s\"").await;
    let text = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let head = format!(
            "POST /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {BEARER}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"rec"
        );
        s.write_all(head.as_bytes()).expect("head");
        let t = Instant::now();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        (String::from_utf8_lossy(&out).to_string(), t.elapsed())
    })
    .await
    .expect("client");
    let (text, took) = text;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?} after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let (addr, _stop) = start("max_connections = 16").await;
    let open = tokio::task::spawn_blocking(move || {
        let mut conns: Vec<TcpStream> = (0..40)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect"))
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let mut open = 0;
        for s in conns.iter_mut() {
            if !closed_by_server(s) {
                open += 1;
            }
        }
        open
    })
    .await
    .expect("client");
    assert!(open <= 16, "{open} connections open, limit 16");
    assert!(open >= 8, "only {open} connections served");
}
