//! Chaos harness: a real master + 2 replicas, two `pika-remedy serve` processes on a real etcd
//! (periodic check every second), a writer that records every acknowledged write, and a seeded
//! random schedule of faults. The engine (`CHAOS_ENGINE`, default `redis`):
//!
//! * `redis`: `redis-server` with AOF and `appendfsync always`, on 127.0.0.1; each node makes
//!   its outgoing connections from its own loopback address (`bind-source-addr 127.0.1.N`).
//! * `pika`: real Pika (`PIKA_BIN`), each node in its own network namespace
//!   (tests/support/netns.rs: veth `10.77.<k>.1` root side, `10.77.<k>.2` inside). Pika has no
//!   `bind-source-addr`, but its connections leave the namespace from `10.77.<k>.2`; proxies on
//!   `10.77.<k>.1` for its three ports (P, P+2000 replication, P+10001 full sync) forward to
//!   `10.77.<k>.2`. Needs root.
//!
//! | fault            | how                                                                |
//! |------------------|--------------------------------------------------------------------|
//! | `kill9`          | SIGKILL of a node, held, restart from the same config and data dir  |
//! | `pause`          | SIGSTOP of a node, held, SIGCONT                                     |
//! | `cut_service`    | the node's proxies refuse and shut down the services' connections   |
//! | `cut_nodes`      | the same for the other nodes' connections, both ways                 |
//! | `isolate`        | both: the node is cut off from the service AND from its             |
//! |                  | replicas/master; clients on its side (writer, prober) still reach   |
//! |                  | it directly                                                          |
//! | `delay`          | 200–1000 ms added to every chunk to and from the node (`netem delay`) |
//! | `stall_service`  | silent partition: the service's traffic to the node is held in its  |
//! |                  | proxy (connections stay open, bytes wait until the heal): timeouts, |
//! |                  | not resets, as when packets are dropped                              |
//! | `stall_isolate`  | the same for the service and the other nodes (both directions)      |
//! | `lossy`          | emulated packet loss (stands in for `netem loss`): all the node's   |
//! |                  | proxied traffic stops in random 50–400 ms bursts every 0.1–1 s       |
//! | `serve_restart`  | SIGKILL of one `serve`, held, started again                          |
//! | `etcd_kill`      | SIGKILL of etcd, held, restart on the same data dir                  |
//! | `coord_cut`      | the services' path to etcd (a TCP proxy) cut, held, healed           |
//!
//! Partitions use TCP proxies (tests/support/proxy.rs) that the harness cuts (every live
//! connection of a peer shut down, new ones refused) or stalls (bytes held until the heal: the
//! silent kind); a proxy tells the peers apart by source address. This kernel has veth pairs
//! but no `netem` qdisc, so delay and loss are emulated in the proxies too.
//!
//! After each fault is healed the harness measures: seconds until converged (one master, both
//! other nodes replicas of its configured address with the link up, bounded by the engine's
//! `converge_timeout`: 40 s Redis, 60 s Pika); how long two nodes accepted writes at once (a
//! prober writes to every node directly every 100 ms); the acknowledged writes of that fault's
//! window missing on the converged master. At the end, every acknowledged write is checked on
//! the final master. Then the lost writes are looked for in the snapshots the services took
//! before a demotion discarded them (`support::snapshots`: listed from both services' audit
//! events, each read back by a server started on a copy). A table is printed and JSON written
//! to `<target>/chaos/chaos-seed<SEED>-n<N>.json` (Pika: `chaos-pika-seed…`). The test fails if
//! a fault leaves the cluster unconverged, or if a pause or partition lost a write that is in
//! no snapshot and not covered by a reported estimate (`policy.diverged = report`).
//!
//! `CHAOS_N` (faults, default 3: the short run of `make test`) and `CHAOS_SEED` (default 1);
//! `CHAOS_DIVERGED` sets `policy.diverged` (default `snapshot`). `chaos_pika` is the short Pika
//! run of `make test` (3 faults; skipped without `PIKA_BIN` or root, a failure under CI=true).
//! Every loop is bounded; every process is SIGKILLed on drop, namespaces deleted; traffic only
//! on 127.0.0.0/8 and the veth pairs' 10.77.0.0/16.

mod support;
#[path = "support/serve.rs"]
mod svc;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use support::etcd::EtcdServer;
use support::netns::{self, Netns};
use support::proxy::{Proxy, SERVICE as SERVICE_IP};
use support::real_pika::{self, NsPlace, PikaNode, PikaOptions};
use support::redis::{NodeOptions, RedisNode};
use support::snapshots::{self as snaps, Account, LossWindow, SnapCheck};
use svc::{cli, Service};

const CLUSTER: &str = "chaos";
/// A fault is healed after this long at least ...
const HOLD_MIN_MS: u64 = 1500;
/// ... and at most this long (failover needs confirm_window + a poll or two: ~2–3 s).
const HOLD_MAX_MS: u64 = 6000;
/// `lossy`: each loss burst (all of the node's proxied traffic waits) lasts this long ...
const LOSS_BURST_MS: (u64, u64) = (50, 400);
/// ... and the next one starts this long after (what TCP shows under packet loss:
/// retransmission stalls of a few hundred ms, then the bytes arrive).
const LOSS_GAP_MS: (u64, u64) = (100, 1000);
/// Prober period: the resolution of the "two nodes accepted writes" window.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Client socket timeout of the writer and the prober (a paused node must not stall them).
const IO_TIMEOUT: Duration = Duration::from_millis(300);
/// Writer period (~100 acknowledged writes/s when the cluster is healthy).
const WRITE_EVERY: Duration = Duration::from_millis(10);

// ------------------------------------------------------------------------------------------
// Seeded randomness (xorshift64*).

struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ------------------------------------------------------------------------------------------
// A tiny RESP client with short timeouts (the support client waits 5 s: too long here).

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One reply: strings and integers as text, nil as None inside arrays; errors as Err.
fn read_reply(r: &mut impl BufRead) -> Result<Vec<Option<String>>, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
    let line = line.trim_end_matches(['\r', '\n']);
    if line.is_empty() {
        return Err("closed".into());
    }
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | ":" => Ok(vec![Some(rest.to_string())]),
        "-" => Err(rest.to_string()),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| "bad bulk".to_string())?;
            if n < 0 {
                return Ok(vec![None]);
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
            buf.truncate(n as usize);
            Ok(vec![Some(String::from_utf8_lossy(&buf).into_owned())])
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| "bad array".to_string())?;
            let mut out = Vec::new();
            for _ in 0..n.max(0) {
                out.extend(read_reply(r)?);
            }
            Ok(out)
        }
        _ => Err(format!("bad reply {line:?}")),
    }
}

fn call(addr: SocketAddr, timeout: Duration, args: &[&str]) -> Result<Vec<Option<String>>, String> {
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    w.write_all(&encode(args)).map_err(|e| e.to_string())?;
    read_reply(&mut BufReader::new(s))
}

fn field(info: &str, key: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.trim_end_matches('\r')
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// (role, master address, link up) of the node at `addr`, or None if it does not answer.
fn role_of(addr: SocketAddr) -> Option<(String, Option<SocketAddr>, bool)> {
    let r = call(addr, IO_TIMEOUT, &["INFO", "replication"]).ok()?;
    let info = r.into_iter().next().flatten()?;
    let master = match (
        field(&info, "master_host").and_then(|h| h.parse::<IpAddr>().ok()),
        field(&info, "master_port").and_then(|p| p.parse::<u16>().ok()),
    ) {
        (Some(h), Some(p)) => Some(SocketAddr::new(h, p)),
        _ => None,
    };
    Some((
        field(&info, "role")?,
        master,
        field(&info, "master_link_status").as_deref() == Some("up"),
    ))
}

// ------------------------------------------------------------------------------------------
// The nodes.

/// Which server the nodes run.
#[derive(Clone, Debug)]
enum Engine {
    Redis,
    /// Real Pika, each node in its own network namespace.
    Pika(PathBuf),
}

impl Engine {
    fn name(&self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Pika(_) => "pika",
        }
    }

    /// After healing, the cluster must converge within this long (the goal is 10 s; the
    /// bound is wider so a slow run reports its number instead of aborting). Pika's slaves
    /// reconnect every ~3 s and a rejoin can need a full sync: a wider bound.
    fn converge_timeout(&self) -> Duration {
        match self {
            Engine::Redis => Duration::from_secs(40),
            Engine::Pika(_) => Duration::from_secs(60),
        }
    }
}

enum Server {
    Redis(RedisNode),
    Pika(PikaNode),
}

struct Node {
    /// The proxies in front of the node: the address everyone else uses (config, SLAVEOF,
    /// replica announcements). Redis: one, on 127.0.0.1. Pika: one per port it listens on
    /// (P, P+2000 replication, P+10001 full sync), on the root side of its veth.
    proxies: Vec<Proxy>,
    server: Server,
    name: String,
    /// The configured address (the proxy of the client port).
    addr: SocketAddr,
    /// The node's own address (clients on its side of a partition: writer, prober, harness).
    direct: SocketAddr,
    /// The source address of the node's own outgoing connections (its replication link).
    source: IpAddr,
    /// Pika: the node's namespace, deleted after the server is killed (field order).
    _ns: Option<Netns>,
}

impl Node {
    fn start_redis(index: u8, replica_of: Option<SocketAddr>) -> Node {
        let proxy = Proxy::start();
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, index + 1));
        let mut extra = vec![
            format!("bind-source-addr {source}"),
            "appendonly yes".to_string(),
            "appendfsync always".to_string(),
            format!("replica-announce-port {}", proxy.port()),
            "repl-timeout 5".to_string(),
        ];
        if let Some(p) = replica_of {
            extra.push(format!("replicaof {} {}", p.ip(), p.port()));
        }
        let redis = RedisNode::start(NodeOptions {
            extra,
            ..NodeOptions::default()
        });
        proxy.set_target(SocketAddr::from(([127, 0, 0, 1], redis.port())));
        Node {
            addr: proxy.addr(),
            direct: SocketAddr::from(([127, 0, 0, 1], redis.port())),
            proxies: vec![proxy],
            server: Server::Redis(redis),
            name: format!("n{index}"),
            source,
            _ns: None,
        }
    }

    /// Pika in namespace `10.77.<k>`: the proxies listen on 10.77.<k>.1 (root side) for the
    /// three ports and forward to 10.77.<k>.2 (the namespace side, where Pika listens); the
    /// node's own connections come from 10.77.<k>.2.
    fn start_pika(bin: &Path, index: u8, k: u8, replica_of: Option<SocketAddr>) -> Node {
        let ns = Netns::create(index, k).unwrap_or_else(|e| panic!("network namespace: {e}"));
        let root = IpAddr::V4(ns.root_ip);
        let inner = IpAddr::V4(ns.ns_ip);
        // Free in the root namespace (0.0.0.0 and 127.0.0.1), so the proxies can bind them.
        let mut proxies = Vec::new();
        let mut port = 0;
        for _ in 0..20 {
            port = real_pika::free_pika_port();
            proxies = [port, port + 2000, port + 10001]
                .iter()
                .filter_map(|&p| Proxy::start_on(SocketAddr::new(root, p)).ok())
                .collect();
            if proxies.len() == 3 {
                break;
            }
        }
        assert_eq!(proxies.len(), 3, "no free Pika port triple for the proxies");
        for p in &proxies {
            p.set_target(SocketAddr::new(inner, p.port()));
        }
        let mut extra = Vec::new();
        if let Some(m) = replica_of {
            extra.push(("slaveof".into(), format!("{}:{}", m.ip(), m.port())));
        }
        let pika = PikaNode::start(
            bin,
            PikaOptions {
                extra,
                netns: Some(NsPlace {
                    ns: ns.name.clone(),
                    iface: ns.ns_if.clone(),
                    ip: inner.to_string(),
                }),
                port: Some(port),
                ..PikaOptions::default()
            },
        );
        Node {
            addr: SocketAddr::new(root, port),
            direct: SocketAddr::new(inner, port),
            proxies,
            server: Server::Pika(pika),
            name: format!("n{index}"),
            source: inner,
            _ns: Some(ns),
        }
    }

    fn kill9(&mut self) {
        match &mut self.server {
            Server::Redis(r) => r.kill9(),
            Server::Pika(p) => p.kill9(),
        }
    }

    fn restart(&mut self) {
        match &mut self.server {
            Server::Redis(r) => r.restart(),
            Server::Pika(p) => p.restart(),
        }
    }

    fn pid(&self) -> Option<u32> {
        if let Server::Pika(p) = &self.server {
            return p.pid();
        }
        let r = call(self.direct, Duration::from_secs(2), &["INFO", "server"]).ok()?;
        field(&r.into_iter().next().flatten()?, "process_id")?
            .parse()
            .ok()
    }

    fn block(&self, from: IpAddr) {
        self.proxies.iter().for_each(|p| p.block(from));
    }

    fn stall(&self, from: IpAddr) {
        self.proxies.iter().for_each(|p| p.stall(from));
    }

    fn set_delay(&self, ms: u64) {
        self.proxies.iter().for_each(|p| p.set_delay(ms));
    }

    fn set_lossy(&mut self, seed: u64) {
        for (i, p) in self.proxies.iter_mut().enumerate() {
            p.set_lossy(seed.wrapping_add(i as u64), LOSS_BURST_MS, LOSS_GAP_MS);
        }
    }

    fn heal(&mut self) {
        self.proxies.iter_mut().for_each(Proxy::heal);
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Index of the single node that is master with both others linked to its configured address.
fn converged(nodes: &[Node]) -> Option<usize> {
    let roles: Vec<_> = nodes.iter().map(|n| role_of(n.direct)).collect();
    let masters: Vec<usize> = (0..nodes.len())
        .filter(|&i| roles[i].as_ref().is_some_and(|r| r.0 == "master"))
        .collect();
    let [m] = masters[..] else { return None };
    let maddr = nodes[m].addr;
    (0..nodes.len())
        .filter(|&i| i != m)
        .all(|i| {
            roles[i]
                .as_ref()
                .is_some_and(|r| r.0 == "slave" && r.1 == Some(maddr) && r.2)
        })
        .then_some(m)
}

// ------------------------------------------------------------------------------------------
// Writer and prober.

#[derive(Clone, Copy)]
struct Ack {
    seq: u64,

    at: Instant,
}

struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    /// Per node: the prober ticks (index since `t0`) at which it accepted a write.
    accepted: Arc<Mutex<Vec<Vec<u64>>>>,
    t0: Instant,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(ports: Vec<SocketAddr>, run_for: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let accepted = Arc::new(Mutex::new(vec![Vec::new(); ports.len()]));
        let t0 = Instant::now();
        let deadline = t0 + run_for;
        let mut threads = Vec::new();
        // The writer: SET w:<seq> to the node it believes is master; on any failure it asks
        // every node for its role and moves to the first master that answers.
        {
            let (stop, acks, ports) = (stop.clone(), acks.clone(), ports.clone());
            threads.push(std::thread::spawn(move || {
                let mut target = 0usize;
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    seq += 1;
                    let key = format!("w:{seq}");
                    let ok = call(ports[target], IO_TIMEOUT, &["SET", &key, "1"])
                        .is_ok_and(|r| r.first().cloned().flatten().as_deref() == Some("OK"));
                    if ok {
                        acks.lock().expect("acks").push(Ack {
                            seq,

                            at: Instant::now(),
                        });
                    } else if let Some(m) = (0..ports.len())
                        .find(|&i| role_of(ports[i]).is_some_and(|r| r.0 == "master"))
                    {
                        target = m;
                    }
                    std::thread::sleep(WRITE_EVERY);
                }
            }));
        }
        // One prober per node, on a shared tick schedule.
        for (i, port) in ports.iter().copied().enumerate() {
            let (stop, accepted) = (stop.clone(), accepted.clone());
            threads.push(std::thread::spawn(move || {
                let mut tick = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let at = t0 + PROBE_EVERY * tick as u32;
                    if let Some(d) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    let ok = call(port, IO_TIMEOUT, &["SET", "chaos:probe", "1"])
                        .is_ok_and(|r| r.first().cloned().flatten().as_deref() == Some("OK"));
                    if ok {
                        accepted.lock().expect("accepted")[i].push(tick);
                    }
                    // Skip ticks missed while a call hung on a paused node.
                    let now_tick = (t0.elapsed().as_millis() / PROBE_EVERY.as_millis()) as u64;
                    tick = (tick + 1).max(now_tick);
                }
            }));
        }
        Load {
            stop,
            acks,
            accepted,
            t0,
            threads,
        }
    }

    fn tick_of(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.t0).as_millis() / PROBE_EVERY.as_millis()) as u64
    }

    /// Ticks in [from, to] at which two or more nodes accepted the probe write.
    fn dual_master_ms(&self, from: Instant, to: Instant) -> u64 {
        let (a, b) = (self.tick_of(from), self.tick_of(to));
        let acc = self.accepted.lock().expect("accepted");
        let mut count = std::collections::BTreeMap::<u64, usize>::new();
        for ticks in acc.iter() {
            for &t in ticks.iter().filter(|&&t| t >= a && t <= b) {
                *count.entry(t).or_default() += 1;
            }
        }
        count.values().filter(|&&c| c >= 2).count() as u64 * PROBE_EVERY.as_millis() as u64
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The acknowledged seqs among `acks` that `port` does not have (MGET in chunks).
fn missing_on(port: SocketAddr, acks: &[Ack]) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for chunk in acks.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|a| format!("w:{}", a.seq)).collect();
        let mut args: Vec<&str> = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        let vals = call(port, Duration::from_secs(5), &args)?;
        if vals.len() != chunk.len() {
            return Err(format!(
                "MGET returned {} values for {}",
                vals.len(),
                chunk.len()
            ));
        }
        out.extend(
            chunk
                .iter()
                .zip(vals)
                .filter(|(_, v)| v.is_none())
                .map(|(a, _)| a.seq),
        );
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// The services.

struct Inst {
    dir: tempfile::TempDir,
    config: PathBuf,
    svc: Option<Service>,
}

fn instance(id: &str, etcd_proxy: u16, nodes: &[Node], engine: &Engine) -> Inst {
    let dir = tempfile::Builder::new()
        .prefix("pika-remedy-chaos-")
        .tempdir()
        .expect("temp dir");
    let bearer = dir.path().join("bearer");
    std::fs::write(&bearer, "chaos-h00k-t0ken").expect("write bearer");
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("{{ addr = \"{}\" }}", n.addr))
        .collect();
    // Pika answers `SLAVEOF NO ONE` to a replica of a live master in ~1.6 s and refuses to
    // follow while replicas are attached for a while after the last left (pika.md A.9):
    // longer command and step budgets than for Redis.
    let (timeouts, steps) = match engine {
        Engine::Redis => (
            "connect = \"200ms\"\ncommand = \"500ms\"",
            "promote_timeout = \"2s\"\nlink_timeout = \"3s\"\ndetach_timeout = \"1s\"\nswitchover_pause = \"1s\"\nlock_ttl = \"15s\"",
        ),
        Engine::Pika(_) => (
            "connect = \"300ms\"\ncommand = \"2s\"",
            "promote_timeout = \"10s\"\nlink_timeout = \"10s\"\ndetach_timeout = \"10s\"\nswitchover_pause = \"10s\"\nlock_ttl = \"60s\"",
        ),
    };
    let text = format!(
        r#"[service]
instance_id = "{id}"
events_file = "{events}"
poll_interval = "500ms"
check_interval = "1s"
[timeouts]
{timeouts}
[policy]
confirm_window = "1s"
cooldown = "1s"
{steps}
diverged = "{diverged}"
[coordinator]
kind = "etcd"
[coordinator.etcd]
endpoints = ["http://127.0.0.1:{etcd_proxy}"]
[webhook]
bearer_token = {{ file = "{bearer}" }}
[[cluster]]
name = "{CLUSTER}"
nodes = [{nodes}]
"#,
        events = dir.path().join("events.jsonl").display(),
        bearer = bearer.display(),
        nodes = addrs.join(", "),
        // `CHAOS_DIVERGED=report` (or `refuse`) runs the same faults under another policy.
        diverged = std::env::var("CHAOS_DIVERGED").unwrap_or_else(|_| "snapshot".into()),
    );
    let config = dir.path().join("pika-remedy.toml");
    std::fs::write(&config, text).expect("write config");
    Inst {
        dir,
        config,
        svc: None,
    }
}

// ------------------------------------------------------------------------------------------
// Faults.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Kill9,
    Pause,
    /// Cut off from the service only (the node's replication still works).
    CutService,
    /// Cut off from the other nodes only (the service still sees everything).
    CutNodes,
    /// Both: the node is alone with the clients on its side.
    Isolate,
    /// 200–1000 ms added to every chunk to and from the node (netem-like delay).
    Delay,
    /// Silent: the service's traffic to the node is held (timeouts, no reset).
    StallService,
    /// Silent isolation: the service's and the other nodes' traffic is held.
    StallIsolate,
    ServeRestart,
    EtcdKill,
    CoordCut,
    /// Emulated packet loss (stands in for `netem loss`): the node's proxied traffic, both
    /// directions, stops in random 50–400 ms bursts every 0.1–1 s.
    Lossy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Kill9 => "kill9",
            Kind::Pause => "pause",
            Kind::CutService => "cut_service",
            Kind::CutNodes => "cut_nodes",
            Kind::Isolate => "isolate",
            Kind::Delay => "delay",
            Kind::StallService => "stall_service",
            Kind::StallIsolate => "stall_isolate",
            Kind::ServeRestart => "serve_restart",
            Kind::EtcdKill => "etcd_kill",
            Kind::CoordCut => "coord_cut",
            Kind::Lossy => "lossy",
        }
    }
}

struct Outcome {
    kind: Kind,
    target: String,
    hold_ms: u64,
    failover: bool,
    converge_s: Option<f64>,
    dual_master_ms: u64,
    acked: usize,
    lost: usize,
    /// The lost writes' keys and the fault's wall-clock window (for the snapshot check).
    loss: LossWindow,
    /// How the lost writes are accounted for (filled after the run by `check_snapshots`).
    account: Account,
}

struct World {
    nodes: Vec<Node>,
    etcd: EtcdServer,
    etcd_proxy: Proxy,
    insts: Vec<Inst>,
    rt: tokio::runtime::Runtime,
}

impl World {
    fn start_serve(&mut self, i: usize) {
        let cfg = self.insts[i].config.clone();
        let s = self.rt.block_on(Service::start(&cfg));
        self.insts[i].svc = Some(s);
    }

    fn logs(&self) -> String {
        self.insts
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let log = x.svc.as_ref().map(|s| s.log()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "--- serve {i} ({}):\n{}",
                    x.dir.path().display(),
                    tail.join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn master_index(nodes: &[Node]) -> Option<usize> {
    (0..nodes.len()).find(|&i| role_of(nodes[i].direct).is_some_and(|r| r.0 == "master"))
}

/// Start the three nodes, linked: the master, then each replica. Pika: one after the other,
/// each link up before the next starts (two first syncs to a fresh master microseconds apart
/// can get different ReplicationIDs, pika.md A.13).
fn start_nodes(engine: &Engine) -> Vec<Node> {
    let nodes = match engine {
        Engine::Redis => {
            let m = Node::start_redis(0, None);
            let r1 = Node::start_redis(1, Some(m.addr));
            let r2 = Node::start_redis(2, Some(m.addr));
            vec![m, r1, r2]
        }
        Engine::Pika(bin) => {
            let ks = netns::free_subnets(3).unwrap_or_else(|e| panic!("{e}"));
            let m = Node::start_pika(bin, 0, ks[0], None);
            let mut nodes = vec![m];
            for i in 1..3u8 {
                let r = Node::start_pika(bin, i, ks[i as usize], Some(nodes[0].addr));
                let (direct, maddr) = (r.direct, nodes[0].addr);
                nodes.push(r);
                assert!(
                    support::redis::wait_until(real_pika::LINK_TIMEOUT, || role_of(direct)
                        .is_some_and(|r| r.1 == Some(maddr) && r.2)),
                    "pika n{i} did not link to {maddr}: {:?}",
                    role_of(direct)
                );
            }
            nodes
        }
    };
    let sources: Vec<IpAddr> = nodes.iter().map(|n| n.source).collect();
    for n in &nodes {
        n.proxies.iter().for_each(|p| p.set_peers(&sources));
    }
    nodes
}

/// One chaos world at a time per test process (the short Redis and Pika runs of `make test`
/// would otherwise share the 2 cores and each other's timings).
static WORLD: Mutex<()> = Mutex::new(());

fn run_chaos(engine: &Engine, n: usize, seed: u64) -> Vec<Outcome> {
    let _one = WORLD.lock().unwrap_or_else(|e| e.into_inner());
    let etcd = EtcdServer::start_new();
    let etcd_port: u16 = etcd
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("etcd port");
    let etcd_proxy = Proxy::start();
    etcd_proxy.set_target(SocketAddr::from(([127, 0, 0, 1], etcd_port)));
    let nodes = start_nodes(engine);
    assert!(
        support::redis::wait_until(Duration::from_secs(30), || converged(&nodes).is_some()),
        "initial cluster did not link"
    );
    let insts = vec![
        instance("chaos-a", etcd_proxy.port(), &nodes, engine),
        instance("chaos-b", etcd_proxy.port(), &nodes, engine),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut w = World {
        nodes,
        etcd,
        etcd_proxy,
        insts,
        rt,
    };
    // The operator's bootstrap of the record.
    let cfg = w.insts[0].config.display().to_string();
    let master = w.nodes[0].addr.to_string();
    let (code, out, err) = cli(
        &[
            "record",
            "--config",
            &cfg,
            "--cluster",
            CLUSTER,
            "--master",
            &master,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, 0, "record failed:\n{out}\n{err}");
    w.start_serve(0);
    w.start_serve(1);

    let ports: Vec<SocketAddr> = w.nodes.iter().map(|n| n.direct).collect();
    let budget = Duration::from_secs(60 + n as u64 * 60);
    let mut load = Load::start(ports, budget);
    let mut rng = Rng::new(seed);
    // `lossy` replaces one fault in 12, drawn from its own stream so that every other draw
    // (kinds, holds, targets) stays what the seed gave before the kind existed.
    let mut loss_rng = Rng::new(seed ^ 0x1055_u64.wrapping_mul(0x9E37_79B9));
    let mut outcomes = Vec::new();
    std::thread::sleep(Duration::from_secs(1));
    for f in 0..n {
        let kind = match rng.below(19) {
            0..=2 => Kind::Kill9,
            3..=4 => Kind::Pause,
            5..=6 => Kind::CutService,
            7..=8 => Kind::CutNodes,
            9..=11 => Kind::Isolate,
            12 => Kind::Delay,
            13 => Kind::ServeRestart,
            14 => Kind::EtcdKill,
            15..=16 => Kind::CoordCut,
            17 => Kind::StallService,
            _ => Kind::StallIsolate,
        };
        let kind = if loss_rng.below(12) == 0 {
            Kind::Lossy
        } else {
            kind
        };
        let loss_seed = loss_rng.next();
        let delay = 200 + rng.below(800);
        let hold = Duration::from_millis(HOLD_MIN_MS + rng.below(HOLD_MAX_MS - HOLD_MIN_MS));
        let current = master_index(&w.nodes).unwrap_or(0);
        // Node faults hit the master half the time, else a random node.
        let node = if rng.below(2) == 0 {
            current
        } else {
            rng.below(w.nodes.len() as u64) as usize
        };
        let serve = rng.below(2) as usize;
        let start = Instant::now();
        let start_ms = snaps::unix_ms(SystemTime::now());
        let target = match kind {
            Kind::Kill9
            | Kind::Pause
            | Kind::CutService
            | Kind::CutNodes
            | Kind::Isolate
            | Kind::Delay
            | Kind::StallService
            | Kind::StallIsolate
            | Kind::Lossy => {
                let role = if node == current { "master" } else { "replica" };
                format!("{} ({role})", w.nodes[node].name)
            }
            Kind::ServeRestart => format!("serve {serve}"),
            Kind::EtcdKill | Kind::CoordCut => "etcd".to_string(),
        };
        match kind {
            Kind::Kill9 => {
                w.nodes[node].kill9();
                std::thread::sleep(hold);
                w.nodes[node].restart();
            }
            Kind::Pause => {
                let pid = w.nodes[node].pid();
                if let Some(p) = pid {
                    signal(p, "STOP");
                }
                std::thread::sleep(hold);
                if let Some(p) = pid {
                    signal(p, "CONT");
                }
            }
            Kind::CutService | Kind::CutNodes | Kind::Isolate => {
                if kind != Kind::CutNodes {
                    w.nodes[node].block(SERVICE_IP);
                }
                if kind != Kind::CutService {
                    let me = w.nodes[node].source;
                    for (y, other) in w.nodes.iter().enumerate() {
                        if y != node {
                            w.nodes[node].block(other.source);
                            other.block(me);
                        }
                    }
                }
                std::thread::sleep(hold);
                for n in &mut w.nodes {
                    n.heal();
                }
            }
            Kind::StallService | Kind::StallIsolate => {
                // Held at both ends: what reaches the node, and what it sends to its peers.
                w.nodes[node].stall(SERVICE_IP);
                if kind == Kind::StallIsolate {
                    let me = w.nodes[node].source;
                    for (y, other) in w.nodes.iter().enumerate() {
                        if y != node {
                            w.nodes[node].stall(other.source);
                            other.stall(me);
                        }
                    }
                }
                std::thread::sleep(hold);
                for n in &mut w.nodes {
                    n.heal();
                }
            }
            Kind::Delay => {
                w.nodes[node].set_delay(delay);
                std::thread::sleep(hold);
                w.nodes[node].heal();
            }
            Kind::Lossy => {
                w.nodes[node].set_lossy(loss_seed);
                std::thread::sleep(hold);
                w.nodes[node].heal();
            }
            Kind::ServeRestart => {
                if let Some(mut s) = w.insts[serve].svc.take() {
                    s.kill();
                }
                std::thread::sleep(hold);
                w.start_serve(serve);
            }
            Kind::EtcdKill => {
                w.etcd.stop();
                std::thread::sleep(hold);
                w.etcd.start();
            }
            Kind::CoordCut => {
                w.etcd_proxy.cut();
                std::thread::sleep(hold);
                w.etcd_proxy.heal();
            }
        }
        let healed = Instant::now();
        let mut final_master = None;
        while healed.elapsed() < engine.converge_timeout() {
            if let Some(m) = converged(&w.nodes) {
                final_master = Some(m);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let converge_s = final_master.map(|_| healed.elapsed().as_secs_f64());
        let done = Instant::now();
        let window: Vec<Ack> = load
            .acks
            .lock()
            .expect("acks")
            .iter()
            .filter(|a| a.at >= start && a.at <= done)
            .copied()
            .collect();
        let all: Vec<u64> = window.iter().map(|a| a.seq).collect();
        let lost_seqs = match final_master {
            Some(m) => missing_on(w.nodes[m].direct, &window).unwrap_or(all),
            None => all,
        };
        let lost = lost_seqs.len();
        let o = Outcome {
            kind,
            target,
            hold_ms: hold.as_millis() as u64,
            failover: final_master.is_some_and(|m| m != current),
            converge_s,
            dual_master_ms: load.dual_master_ms(start, done),
            acked: window.len(),
            lost,
            loss: LossWindow {
                from_ms: start_ms,
                to_ms: snaps::unix_ms(SystemTime::now()),
                lost: lost_seqs.iter().map(|s| format!("w:{s}")).collect(),
            },
            account: Account::default(),
        };
        eprintln!(
            "chaos fault {f}: {} {} held {} ms: converged {} s, failover {}, dual-master {} ms, {} acked, {} lost",
            o.kind.name(),
            o.target,
            o.hold_ms,
            o.converge_s.map(|s| format!("{s:.1}")).unwrap_or("NOT".into()),
            o.failover,
            o.dual_master_ms,
            o.acked,
            o.lost
        );
        if converge_s.is_none() {
            eprintln!("not converged; service logs:\n{}", w.logs());
        }
        outcomes.push(o);
        std::thread::sleep(Duration::from_millis(500));
    }
    load.stop();
    // Every acknowledged write of the whole run, checked on the final master.
    let acks = load.acks.lock().expect("acks").clone();
    let final_master = converged(&w.nodes);
    let all: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    let total_missing = final_master
        .map(|m| missing_on(w.nodes[m].direct, &acks).unwrap_or_else(|_| all.clone()))
        .unwrap_or(all);
    let total_lost = total_missing.len();
    let check = check_snapshots(&w, &mut outcomes, &total_missing);
    report(
        engine.name(),
        seed,
        &outcomes,
        acks.len(),
        total_lost,
        &check,
    );
    for i in 0..w.insts.len() {
        if let Some(mut s) = w.insts[i].svc.take() {
            s.kill();
        }
    }
    outcomes
}

/// After the run: the snapshots the services took (both events files), every lost write looked
/// for in them, each fault's `account` filled (`support::snapshots::check`).
fn check_snapshots(w: &World, outcomes: &mut [Outcome], total_missing: &[u64]) -> SnapCheck {
    let files: Vec<PathBuf> = w
        .insts
        .iter()
        .map(|i| i.dir.path().join("events.jsonl"))
        .collect();
    let windows: Vec<&LossWindow> = outcomes.iter().map(|o| &o.loss).collect();
    let missing: Vec<String> = total_missing.iter().map(|s| format!("w:{s}")).collect();
    let (check, accounts) = snaps::check(&files, &windows, &missing);
    for (o, a) in outcomes.iter_mut().zip(accounts) {
        o.account = a;
    }
    check
}

fn report(
    engine: &str,
    seed: u64,
    outcomes: &[Outcome],
    total_acked: usize,
    total_lost: usize,
    check: &SnapCheck,
) {
    let mut table = format!("engine {engine}, seed {seed}\n");
    table.push_str(&format!(
        "{:>3} {:<14} {:<14} {:>7} {:>8} {:>11} {:>9} {:>6} {:>5} {:>9} {:>9}\n",
        "#",
        "fault",
        "target",
        "hold_ms",
        "failover",
        "converge_s",
        "dual_ms",
        "acked",
        "lost",
        "preserved",
        "not_pres"
    ));
    for (i, o) in outcomes.iter().enumerate() {
        table.push_str(&format!(
            "{:>3} {:<14} {:<14} {:>7} {:>8} {:>11} {:>9} {:>6} {:>5} {:>9} {:>9}\n",
            i,
            o.kind.name(),
            o.target,
            o.hold_ms,
            o.failover,
            o.converge_s
                .map(|s| format!("{s:.1}"))
                .unwrap_or("NOT".into()),
            o.dual_master_ms,
            o.acked,
            o.lost,
            o.account.preserved,
            o.account.not_preserved()
        ));
    }
    // Per kind: count, max convergence, total dual-master window, lost writes.
    let kinds = [
        Kind::Kill9,
        Kind::Pause,
        Kind::CutService,
        Kind::CutNodes,
        Kind::Isolate,
        Kind::Delay,
        Kind::StallService,
        Kind::StallIsolate,
        Kind::ServeRestart,
        Kind::EtcdKill,
        Kind::CoordCut,
        Kind::Lossy,
    ];
    let mut summary = Vec::new();
    table.push_str(
        "\nper fault kind: count, failovers, max converge_s, max dual_ms, lost, preserved in \
         snapshot, lost and not preserved\n",
    );
    for k in kinds {
        let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == k).collect();
        if of.is_empty() {
            continue;
        }
        let max_conv = of
            .iter()
            .filter_map(|o| o.converge_s)
            .fold(0.0f64, f64::max);
        let not_conv = of.iter().filter(|o| o.converge_s.is_none()).count();
        let max_dual = of.iter().map(|o| o.dual_master_ms).max().unwrap_or(0);
        let lost: usize = of.iter().map(|o| o.lost).sum();
        let fo = of.iter().filter(|o| o.failover).count();
        let preserved: usize = of.iter().map(|o| o.account.preserved).sum();
        let not_preserved: usize = of.iter().map(|o| o.account.not_preserved()).sum();
        let reported: usize = of.iter().map(|o| o.account.reported).sum();
        table.push_str(&format!(
            "  {:<14} {:>3} {:>3} {:>6.1}{} {:>6} {:>5} {:>5} {:>5}\n",
            k.name(),
            of.len(),
            fo,
            max_conv,
            if not_conv > 0 {
                format!(" ({not_conv} NOT)")
            } else {
                String::new()
            },
            max_dual,
            lost,
            preserved,
            not_preserved
        ));
        summary.push(json!({"kind": k.name(), "count": of.len(), "failovers": fo,
            "max_converge_s": max_conv, "not_converged": not_conv, "max_dual_master_ms": max_dual,
            "lost": lost, "preserved_in_snapshot": preserved,
            "lost_and_not_preserved": not_preserved, "not_preserved_but_reported": reported}));
    }
    table.push_str(&format!(
        "\nwhole run: {total_acked} acknowledged writes, {total_lost} missing on the final master, \
         {} of them preserved in a snapshot, {} lost and not preserved\n",
        check.total_preserved,
        total_lost - check.total_preserved
    ));
    table.push_str(&check.text());
    println!("\n{table}");
    let j: Value = json!({
        "engine": engine,
        "seed": seed,
        "faults": outcomes.len(),
        "acknowledged_writes": total_acked,
        "lost_on_final_master": total_lost,
        "preserved_in_snapshot": check.total_preserved,
        "lost_and_not_preserved": total_lost - check.total_preserved,
        "snapshot_check_error": check.error,
        "snapshots": check.steps.iter().zip(&check.per_step).map(|(s, n)| {
            let mut v = s.to_json();
            v["lost_writes_held"] = json!(n);
            v
        }).collect::<Vec<_>>(),
        "per_kind": summary,
        "runs": outcomes.iter().map(|o| json!({
            "fault": o.kind.name(), "target": o.target, "hold_ms": o.hold_ms,
            "failover": o.failover, "converge_s": o.converge_s,
            "dual_master_ms": o.dual_master_ms, "acked": o.acked, "lost": o.lost,
            "preserved_in_snapshot": o.account.preserved,
            "lost_and_not_preserved": o.account.not_preserved(),
            "not_preserved_but_reported": o.account.reported,
        })).collect::<Vec<_>>(),
    });
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("chaos");
    let _ = std::fs::create_dir_all(&dir);
    // Redis keeps the name it always had; other engines are prefixed.
    let prefix = if engine == "redis" {
        "chaos".to_string()
    } else {
        format!("chaos-{engine}")
    };
    let p = dir.join(format!("{prefix}-seed{seed}-n{}.json", outcomes.len()));
    std::fs::write(&p, serde_json::to_string_pretty(&j).expect("json")).expect("write json");
    println!("JSON: {}", p.display());
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The Pika engine, or why it cannot run here: no `PIKA_BIN` (under CI=true that is a failure
/// naming the variable, see `real_pika::pika_bin`), or not root (network namespaces).
fn pika_engine() -> Result<Engine, String> {
    let Some(bin) = real_pika::pika_bin() else {
        return Err("PIKA_BIN is not set: set it to a Pika server binary".into());
    };
    netns::available()
        .map_err(|e| format!("the Pika chaos run puts each node in a network namespace: {e}"))?;
    Ok(Engine::Pika(bin))
}

fn assert_converged(outcomes: &[Outcome]) {
    let stuck: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.converge_s.is_none())
        .map(|(i, o)| format!("#{i} {} {}", o.kind.name(), o.target))
        .collect();
    assert!(stuck.is_empty(), "not converged after: {stuck:?}");
    // A pause or a partition may lose acknowledged writes only into a snapshot the service took
    // before discarding them, or with the estimate reported (`policy.diverged = "report"`).
    let unaccounted: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            matches!(
                o.kind,
                Kind::Pause
                    | Kind::CutService
                    | Kind::CutNodes
                    | Kind::Isolate
                    | Kind::StallService
                    | Kind::StallIsolate
                    | Kind::Delay
                    | Kind::Lossy
            ) && o.account.unaccounted > 0
        })
        .map(|(i, o)| {
            format!(
                "#{i} {} {}: {} of {} lost writes in no snapshot and not reported",
                o.kind.name(),
                o.target,
                o.account.unaccounted,
                o.lost
            )
        })
        .collect();
    assert!(unaccounted.is_empty(), "{unaccounted:#?}");
}

/// The short run in `make test` (3 faults); `make chaos N=… SEED=… ENGINE=…` runs the long
/// one (`CHAOS_ENGINE=redis|pika`, default redis; pika needs `PIKA_BIN` and root). Fails if
/// any fault left the cluster unconverged past the engine's bound.
#[test]
fn chaos() {
    let n = env_u64("CHAOS_N", 3) as usize;
    let seed = env_u64("CHAOS_SEED", 1);
    let engine = match std::env::var("CHAOS_ENGINE").as_deref() {
        Err(_) | Ok("") | Ok("redis") => Engine::Redis,
        Ok("pika") => pika_engine().unwrap_or_else(|e| panic!("CHAOS_ENGINE=pika: {e}")),
        Ok(other) => panic!("CHAOS_ENGINE={other}: expected redis or pika"),
    };
    let outcomes = run_chaos(&engine, n, seed);
    assert_eq!(outcomes.len(), n);
    assert_converged(&outcomes);
}

/// The short Pika run of `make test` (3 faults, seed `CHAOS_SEED`, default 1) when `PIKA_BIN`
/// is set; skipped with a message otherwise, a failure naming what is missing under CI=true.
#[test]
fn chaos_pika() {
    let engine = match pika_engine() {
        Ok(e) => e,
        Err(e) if ci() => panic!("CI=true: {e}"),
        Err(e) => {
            eprintln!("SKIPPED chaos_pika: {e}");
            return;
        }
    };
    let seed = env_u64("CHAOS_SEED", 1);
    let outcomes = run_chaos(&engine, 3, seed);
    assert_eq!(outcomes.len(), 3);
    assert_converged(&outcomes);
}
