//! A cuttable TCP proxy for the chaos harness (tests/chaos.rs): the address the rest of the
//! system knows a component by. It can refuse or shut down the connections of one peer
//! (`block`), hold their bytes until the heal (`stall`: a silent partition), add one-way
//! latency to every chunk (`set_delay`: what `tc netem delay` does) and stall all of its
//! traffic in random short bursts (`set_lossy`: what TCP shows under packet loss, where
//! `tc netem loss` is not available).
//!
//! Who a connection comes from is its source address: a proxy is told the source addresses
//! of the nodes (`set_peers`); any other source is the services' side ([`SERVICE`]).
//! Every thread ends with its connection or on Drop; every wait polls a stop flag.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The identity of every source that is not a node: the services and the harness.
pub const SERVICE: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Connect timeout to the target.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

type Sources = Arc<Mutex<HashSet<IpAddr>>>;

/// The identity of a connection from `raw`: itself if it is a node's source, else
/// [`SERVICE`]. Looked up at every use, so `set_peers` also applies to open connections.
fn ident(peers: &Sources, raw: IpAddr) -> IpAddr {
    if peers.lock().expect("peers").contains(&raw) {
        raw
    } else {
        SERVICE
    }
}

pub struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    cut: Arc<AtomicBool>,
    /// The node sources this proxy tells apart; anything else is [`SERVICE`].
    peers: Sources,
    blocked: Sources,
    /// Sources whose traffic is held, not refused: connections stay open and bytes wait in
    /// the proxy until the heal, so both ends see what a dropped-packet partition gives them
    /// (timeouts, then TCP carrying on), not a reset.
    stalled: Sources,
    /// Added one-way latency in ms for every chunk forwarded (what `tc netem delay` does).
    delay_ms: Arc<AtomicU64>,
    /// While set, a driver thread opens random bursts during which every chunk waits.
    lossy: Arc<AtomicBool>,
    /// End of the current loss burst, in ms since `epoch` (0: none).
    burst_until: Arc<AtomicU64>,
    epoch: Instant,
    lossy_driver: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<(IpAddr, TcpStream)>>>,
    accept: Option<JoinHandle<()>>,
}

/// What a pipe needs to know to hold or slow its bytes.
#[derive(Clone)]
struct Hold {
    /// The connection's source address as accepted.
    from: IpAddr,
    peers: Sources,
    stalled: Sources,
    delay_ms: Arc<AtomicU64>,
    burst_until: Arc<AtomicU64>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
}

impl Hold {
    /// Wait while the source is stalled or a loss burst is open (polls every 5 ms; ends on
    /// the proxy's Drop), then the added delay.
    fn wait(&self) {
        let bound = Instant::now() + Duration::from_secs(600);
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < bound {
            let me = ident(&self.peers, self.from);
            let stalled = self.stalled.lock().expect("stalled").contains(&me);
            let now_ms = self.epoch.elapsed().as_millis() as u64;
            if !stalled && self.burst_until.load(Ordering::Relaxed) <= now_ms {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let d = self.delay_ms.load(Ordering::Relaxed);
        if d > 0 {
            std::thread::sleep(Duration::from_millis(d));
        }
    }
}

impl Proxy {
    /// A proxy on 127.0.0.1 with a free port.
    pub fn start() -> Proxy {
        Proxy::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind proxy")
    }

    /// A proxy listening on `addr` (port 0: any free port).
    pub fn start_on(addr: SocketAddr) -> std::io::Result<Proxy> {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        let addr = l.local_addr()?;
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let peers: Sources = Arc::default();
        let blocked: Sources = Arc::default();
        let stalled: Sources = Arc::default();
        let conns: Arc<Mutex<Vec<(IpAddr, TcpStream)>>> = Arc::default();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let burst_until = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let (t, c, s, cs) = (target.clone(), cut.clone(), stop.clone(), conns.clone());
        let (pe, bl, st, dl, bu) = (
            peers.clone(),
            blocked.clone(),
            stalled.clone(),
            delay_ms.clone(),
            burst_until.clone(),
        );
        let accept = std::thread::spawn(move || {
            // Ends when `stop` is set (Drop); polls every 10 ms.
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((client, peer)) => {
                        let to = *t.lock().expect("target");
                        let from = peer.ip();
                        let Some(to) = to else { continue };
                        if c.load(Ordering::Relaxed)
                            || bl.lock().expect("blocked").contains(&ident(&pe, from))
                        {
                            drop(client);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT) else {
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                            let mut g = cs.lock().expect("conns");
                            g.retain(|(_, x)| x.peer_addr().is_ok());
                            g.push((from, c2));
                            g.push((from, s2));
                        }
                        let hold = Hold {
                            from,
                            peers: pe.clone(),
                            stalled: st.clone(),
                            delay_ms: dl.clone(),
                            burst_until: bu.clone(),
                            epoch,
                            stop: s.clone(),
                        };
                        pipe(&client, &server, hold.clone());
                        pipe(&server, &client, hold);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Proxy {
            addr,
            target,
            cut,
            peers,
            blocked,
            stalled,
            delay_ms,
            lossy: Arc::new(AtomicBool::new(false)),
            burst_until,
            epoch,
            lossy_driver: None,
            stop,
            conns,
            accept: Some(accept),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_target(&self, to: SocketAddr) {
        *self.target.lock().expect("target") = Some(to);
    }

    /// The source addresses of the nodes; connections from any other source are [`SERVICE`].
    pub fn set_peers(&self, peers: &[IpAddr]) {
        *self.peers.lock().expect("peers") = peers.iter().copied().collect();
    }

    /// Cut: every live connection is shut down and new ones are refused until `heal`.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        for (_, s) in self.conns.lock().expect("conns").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Cut only the connections from `from` (live ones shut down, new ones refused).
    pub fn block(&self, from: IpAddr) {
        self.blocked.lock().expect("blocked").insert(from);
        let mut g = self.conns.lock().expect("conns");
        let hit = |raw: &IpAddr| ident(&self.peers, *raw) == from;
        for (_, s) in g.iter().filter(|(ip, _)| hit(ip)) {
            let _ = s.shutdown(Shutdown::Both);
        }
        g.retain(|(ip, _)| !hit(ip));
    }

    /// Hold the traffic of `from` (both directions) until `heal`: a silent partition.
    pub fn stall(&self, from: IpAddr) {
        self.stalled.lock().expect("stalled").insert(from);
    }

    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Emulated packet loss (stands in for `tc netem loss`, which this kernel lacks): until
    /// `heal`, the proxy's traffic in both directions stops for random bursts of
    /// `burst_ms` (min, max) every `gap_ms` (min, max), what TCP shows when packets are
    /// lost: retransmission stalls, then the bytes arrive. Seeded.
    pub fn set_lossy(&mut self, seed: u64, burst_ms: (u64, u64), gap_ms: (u64, u64)) {
        if self.lossy.swap(true, Ordering::Relaxed) {
            return;
        }
        let (lossy, stop, until, epoch) = (
            self.lossy.clone(),
            self.stop.clone(),
            self.burst_until.clone(),
            self.epoch,
        );
        self.lossy_driver = Some(std::thread::spawn(move || {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |lo: u64, hi: u64| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                lo + x.wrapping_mul(0x2545_F491_4F6C_DD1D) % (hi - lo).max(1)
            };
            // Bounded: ends at the heal, on Drop, or after 10 minutes.
            let bound = Instant::now() + Duration::from_secs(600);
            while lossy.load(Ordering::Relaxed)
                && !stop.load(Ordering::Relaxed)
                && Instant::now() < bound
            {
                let on = || lossy.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed);
                sleep_while(Duration::from_millis(next(gap_ms.0, gap_ms.1)), on);
                if !on() {
                    break;
                }
                let burst = next(burst_ms.0, burst_ms.1);
                let now = epoch.elapsed().as_millis() as u64;
                until.store(now + burst, Ordering::Relaxed);
                sleep_while(Duration::from_millis(burst), on);
            }
            until.store(0, Ordering::Relaxed);
        }));
    }

    pub fn heal(&mut self) {
        self.set_delay(0);
        self.lossy.store(false, Ordering::Relaxed);
        if let Some(h) = self.lossy_driver.take() {
            let _ = h.join();
        }
        self.burst_until.store(0, Ordering::Relaxed);
        self.cut.store(false, Ordering::Relaxed);
        self.blocked.lock().expect("blocked").clear();
        self.stalled.lock().expect("stalled").clear();
    }
}

/// Sleep `d`, in 10 ms steps, while `on()` holds.
fn sleep_while(d: Duration, on: impl Fn() -> bool) {
    let end = Instant::now() + d;
    while on() {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            return;
        };
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}

/// Copy `from` → `to` on a thread until either side closes (the thread's life is bounded by
/// the connection's; `cut` and Drop shut connections down). While the connection's source is
/// stalled or a loss burst is open, each chunk waits in the proxy (and TCP back-pressure holds
/// the rest).
fn pipe(from: &TcpStream, to: &TcpStream, hold: Hold) {
    let (Ok(mut a), Ok(mut b)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match a.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    hold.wait();
                    if b.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = a.shutdown(Shutdown::Both);
        let _ = b.shutdown(Shutdown::Both);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.lossy.store(false, Ordering::Relaxed);
        if let Some(h) = self.lossy_driver.take() {
            let _ = h.join();
        }
        self.cut();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}
