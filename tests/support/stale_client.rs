//! A stale client pinned to one node's address: it keeps ONE connection open and writes
//! `SET <prefix>:<n> <n>` every few milliseconds, never rediscovering the master. When its
//! connection is closed it reconnects to the same address (what a client with a hard-coded
//! address does). It counts acknowledged writes, refusals (`READONLY`, errors) and how often
//! its connection was closed under it, with the time of each event. Bounded (10 minutes).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct StaleStats {
    /// When each acknowledged write was answered `+OK` (since the client started).
    pub acked: Vec<Duration>,
    pub refused: u64,
    /// When the connection was found closed by the server (EOF or reset).
    pub closed: Vec<Duration>,
    pub connect_failures: u64,
}

pub struct StaleClient {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<StaleStats>>,
    started: Instant,
    handle: Option<std::thread::JoinHandle<()>>,
}

fn frame(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

impl StaleClient {
    pub fn start(port: u16, password: Option<String>, prefix: &str) -> StaleClient {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(StaleStats::default()));
        let started = Instant::now();
        let (s, st, prefix) = (stop.clone(), stats.clone(), prefix.to_string());
        let handle = std::thread::spawn(move || {
            let deadline = started + Duration::from_secs(600);
            let mut n: u64 = 0;
            let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                if conn.is_none() {
                    match TcpStream::connect(("127.0.0.1", port)) {
                        Ok(c) => {
                            let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                            let _ = c.set_write_timeout(Some(Duration::from_secs(3)));
                            let Ok(r) = c.try_clone() else { continue };
                            let mut r = BufReader::new(r);
                            let mut w = c;
                            if let Some(pw) = &password {
                                let mut line = String::new();
                                if w.write_all(&frame(&["AUTH", pw])).is_err()
                                    || r.read_line(&mut line).is_err()
                                {
                                    continue;
                                }
                            }
                            conn = Some((w, r));
                        }
                        Err(_) => {
                            st.lock().expect("stats").connect_failures += 1;
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    }
                }
                let Some((w, r)) = conn.as_mut() else {
                    continue;
                };
                n += 1;
                let key = format!("{prefix}:{n}");
                let mut line = String::new();
                let sent = w.write_all(&frame(&["SET", &key, &n.to_string()]));
                let read = sent.is_ok().then(|| r.read_line(&mut line));
                match read {
                    Some(Ok(k)) if k > 0 => {
                        let mut g = st.lock().expect("stats");
                        if line.starts_with("+OK") {
                            g.acked.push(started.elapsed());
                        } else {
                            g.refused += 1;
                        }
                    }
                    // EOF, reset or a failed write: closed under us.
                    _ => {
                        st.lock().expect("stats").closed.push(started.elapsed());
                        conn = None;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        StaleClient {
            stop,
            stats,
            started,
            handle: Some(handle),
        }
    }

    /// Time since the client started (the scale of the stats' timestamps).
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn stats(&self) -> StaleStats {
        self.stats.lock().expect("stats").clone()
    }

    pub fn finish(mut self) -> StaleStats {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.stats()
    }
}

impl Drop for StaleClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An idle client connection (it sent one PING); `is_closed` tells whether the server has
/// closed it since (EOF or reset on a read).
pub struct IdleClient {
    stream: TcpStream,
}

impl IdleClient {
    pub fn connect(port: u16, password: Option<&str>) -> IdleClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect idle client");
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut c = IdleClient { stream };
        if let Some(pw) = password {
            assert!(c.call(&["AUTH", pw]).starts_with("+OK"));
        }
        assert_eq!(c.call(&["PING"]), "+PONG\r\n");
        c
    }

    fn call(&mut self, args: &[&str]) -> String {
        self.stream.write_all(&frame(args)).expect("write");
        let mut r = BufReader::new(self.stream.try_clone().expect("clone"));
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        line
    }

    /// True once the server closed the connection: a read sees EOF or an error (a PING on a
    /// live connection answers instead).
    pub fn is_closed(&mut self) -> bool {
        if self.stream.write_all(&frame(&["PING"])).is_err() {
            return true;
        }
        let mut r = BufReader::new(match self.stream.try_clone() {
            Ok(s) => s,
            Err(_) => return true,
        });
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => true,
            Ok(_) => false,
        }
    }
}
