//! Loopback ports for the servers a test binary starts, each handed out at most once.
//!
//! The tests of one binary run in parallel and kill servers on purpose. A port freed by a
//! kill -9 (or by `free_port` releasing its probe) is free again for the kernel, so a server of
//! another test could start on it, and a test that still addresses the dead node would be
//! answered by a stranger (seen once: "recorded master … reports role slave" of another test's
//! cluster). Every pick goes through this registry, so no port is used twice by one binary.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

fn used() -> &'static Mutex<HashSet<u16>> {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    USED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Record `port` as used; false if this binary had it before (the caller picks another).
pub fn claim(port: u16) -> bool {
    used()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(port)
}

/// A listener on 127.0.0.1 at a port this binary never used before, held by the caller.
pub fn listen() -> TcpListener {
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        if claim(l.local_addr().expect("local_addr").port()) {
            return l;
        }
    }
    panic!("no unused loopback port in 1000 picks");
}

/// `listen` for a tokio server (call inside a runtime).
pub fn listen_tokio() -> tokio::net::TcpListener {
    let l = listen();
    l.set_nonblocking(true).expect("set_nonblocking");
    tokio::net::TcpListener::from_std(l).expect("tokio listener")
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this binary never used before
/// (the `listen` probe, released). Another process can take it before we use it: starters
/// retry on a clash.
pub fn free_port() -> u16 {
    listen().local_addr().expect("local_addr").port()
}
