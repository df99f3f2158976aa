//! `make bench`, real-Pika rows: the same fault as `benches/failover.rs` (kill -9 of the
//! master under a writer, then a restart of the old master with a stale client pinned to it), on
//! a real Pika master + 2 replicas (`PIKA_BIN`, default in `make bench`: ../shared/pika/bin/pika),
//! handled by pika-remedy (real Prometheus + Alertmanager, shipped rules and routes, plus the
//! periodic check every 1 s) and by Redis Sentinel (3 sentinels, quorum 2,
//! down-after-milliseconds 1000, failover-timeout 10000), alternating within one run of this
//! program.
//!
//! Per run and system: does a replica get promoted, is the other replica repointed (link up),
//! is the restarted old master demoted (role slave), does it resync (link up to the new master
//! AND it has a key written on the new master after the failover); kill → a replica reports
//! role master, kill → the writer's first acknowledged write on the new master; acknowledged
//! writes lost; stale writes the restarted old master acknowledges. `BENCH_RUNS` (default 10).
//! Without `PIKA_BIN` it prints one line saying the rows were skipped and exits 0 (the bench is
//! not CI). Output: the "Real Pika" section of docs/bench.md and target/bench/pika.json.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::conn::Conn;
use support::prom::{Alertmanager, Coord, Prometheus, Remedy, RemedyOptions};
use support::real_pika::{PikaNode, PikaOptions, PikaSet};
use support::redis::{free_port, info_field, require_binary, resp_call};

const CLUSTER: &str = "c";
const WRITE_EVERY: Duration = Duration::from_millis(5);
/// Bound for the promotion phase (Pika: a slave's INFO blocks ~2.5 s after its master dies).
const PROMOTE_BOUND: Duration = Duration::from_secs(45);
/// Bound for the demotion and resync phases (a forced full sync of a tiny set takes ~8 s;
/// Sentinel's demotion never links on Pika, so this bound is what a failed resync costs).
const REJOIN_BOUND: Duration = Duration::from_secs(40);
/// Where docs/bench.md's real-Pika section starts (failover.rs keeps it when it rewrites).
pub const SECTION: &str = "## Real Pika 4.0.1";

/// The writers' connection: 200 ms to connect, 1 s per read or write.
fn open(port: u16) -> Result<Conn, String> {
    Conn::open_with(
        port,
        Duration::from_millis(200),
        Duration::from_millis(1000),
    )
}

type Discover = Arc<dyn Fn() -> Option<u16> + Send + Sync>;

#[derive(Default)]
struct WriterState {
    acked: Vec<String>,
    failed: u64,
    killed: Option<(Instant, u16)>,
    first_ack: Option<(Instant, u16, String)>,
}

fn spawn_writer(
    discover: Discover,
    stop: Arc<AtomicBool>,
    st: Arc<Mutex<WriterState>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conn: Option<(u16, Conn)> = None;
        let mut n: u64 = 0;
        let mut next = Instant::now();
        let t = Instant::now();
        while !stop.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(600) {
            next += WRITE_EVERY;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            if conn.is_none() {
                conn = discover().and_then(|p| open(p).ok().map(|c| (p, c)));
            }
            let Some((port, c)) = conn.as_mut() else {
                st.lock().map(|mut s| s.failed += 1).ok();
                continue;
            };
            n += 1;
            let key = format!("k:{n}");
            match c.set(&key, &n.to_string()) {
                Ok(()) => {
                    let now = Instant::now();
                    if let Ok(mut s) = st.lock() {
                        if let (Some((_, old)), None) = (s.killed, &s.first_ack) {
                            if old != *port {
                                s.first_ack = Some((now, *port, key.clone()));
                            }
                        }
                        s.acked.push(key);
                    }
                }
                Err(_) => {
                    st.lock().map(|mut s| s.failed += 1).ok();
                    conn = None;
                }
            }
        }
    })
}

fn spawn_stale_writer(
    port: u16,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conn: Option<Conn> = None;
        let mut n = 0u64;
        let t = Instant::now();
        while !stop.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(600) {
            std::thread::sleep(WRITE_EVERY);
            if conn.is_none() {
                conn = open(port).ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            n += 1;
            match c.set(&format!("stale:{n}"), "x") {
                Ok(()) => {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => conn = None,
            }
        }
    })
}

fn count_existing(port: u16, keys: &[String]) -> Result<usize, String> {
    let mut n = 0usize;
    for chunk in keys.chunks(500) {
        let mut args = vec!["EXISTS"];
        args.extend(chunk.iter().map(String::as_str));
        n += resp_call(port, None, &args)?
            .parse::<usize>()
            .map_err(|e| e.to_string())?;
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Redis Sentinel on Pika.

struct Sentinel {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(bin: &std::path::Path, master_port: u16) -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("pika-remedy-sentinel-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir \"{}\"\nlogfile \"{}\"\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 10000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir.path().display(),
                dir.path().join("sentinel.log").display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new(bin)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-sentinel");
        let s = Sentinel {
            child: Some(child),
            port,
            dir,
        };
        assert!(
            support::redis::wait_until(Duration::from_secs(10), || resp_call(
                port,
                None,
                &["PING"]
            )
            .is_ok()),
            "sentinel on {port} did not start"
        );
        s
    }

    fn master_info(&self) -> BTreeMap<String, String> {
        let text =
            resp_call(self.port, None, &["SENTINEL", "master", "mymaster"]).unwrap_or_default();
        let parts: Vec<&str> = text.lines().collect();
        parts
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect()
    }

    /// The `+…`/`-…` event lines of its log (what Sentinel did).
    fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("sentinel.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(" # ").map(|(_, e)| e.to_string()))
            .filter(|e| e.starts_with('+') || e.starts_with('-'))
            .collect()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sentinel_discover(ports: Vec<u16>) -> Discover {
    Arc::new(move || {
        for p in &ports {
            if let Ok(t) = resp_call(
                *p,
                None,
                &["SENTINEL", "get-master-addr-by-name", "mymaster"],
            ) {
                if let Some(port) = t.lines().nth(1).and_then(|p| p.parse().ok()) {
                    return Some(port);
                }
            }
        }
        None
    })
}

// ---------------------------------------------------------------------------------------------
// One measured fault.

#[derive(Default, Debug, Clone)]
struct Measured {
    promoted: bool,
    repointed: bool,
    demoted: bool,
    resynced: bool,
    kill_to_promotion: Option<f64>,
    kill_to_first_ack: Option<f64>,
    restart_to_demoted: Option<f64>,
    restart_to_resynced: Option<f64>,
    acked: usize,
    lost: Option<usize>,
    stale_acked: u64,
    /// The master the system's discovery names at the end, when it is not the one first
    /// promoted (a second failover during the run): the lost writes are counted on it.
    refailed_to: Option<u16>,
    error: Option<String>,
}

/// Role, master port, link up, from `INFO replication` (a blocked INFO counts as no answer).
fn role_of(port: u16) -> Option<(String, Option<u16>, bool)> {
    let info = resp_call(port, None, &["INFO", "replication"]).ok()?;
    Some((
        info_field(&info, "role")?,
        info_field(&info, "master_port").and_then(|p| p.parse().ok()),
        info_field(&info, "master_link_status").as_deref() == Some("up"),
    ))
}

fn poll<T>(bound: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn measure(set: &mut PikaSet, discover: Discover) -> Measured {
    let mut m = Measured::default();
    let old = set.master.port();
    let replicas: Vec<u16> = set.replicas.iter().map(PikaNode::port).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::new(Mutex::new(WriterState::default()));
    let writer = spawn_writer(discover.clone(), stop.clone(), st.clone());
    std::thread::sleep(Duration::from_millis(1500));

    let t_kill = Instant::now();
    st.lock().map(|mut s| s.killed = Some((t_kill, old))).ok();
    set.master.kill9();
    let promoted = poll(PROMOTE_BOUND, || {
        replicas
            .iter()
            .find(|p| role_of(**p).is_some_and(|(r, _, _)| r == "master"))
            .copied()
    });
    let Some(new) = promoted else {
        m.error = Some(format!(
            "no replica promoted within {}s",
            PROMOTE_BOUND.as_secs()
        ));
        stop.store(true, Ordering::SeqCst);
        let _ = writer.join();
        return m;
    };
    m.promoted = true;
    m.kill_to_promotion = Some(t_kill.elapsed().as_secs_f64());
    let first = poll(PROMOTE_BOUND, || {
        st.lock().ok().and_then(|s| s.first_ack.clone())
    });
    m.kill_to_first_ack = first
        .as_ref()
        .map(|(t, _, _)| t.duration_since(t_kill).as_secs_f64());
    let other = *replicas.iter().find(|p| **p != new).unwrap_or(&new);
    m.repointed = poll(REJOIN_BOUND, || {
        role_of(other)
            .is_some_and(|(r, mp, up)| r == "slave" && mp == Some(new) && up)
            .then_some(())
    })
    .is_some();
    let mut errors = Vec::new();
    if first.is_none() {
        errors.push("no acknowledged write on the new master".to_string());
    }
    if !m.repointed {
        errors.push(format!(
            "the other replica did not follow the new master with link up within {}s",
            REJOIN_BOUND.as_secs()
        ));
    }

    // Restart the old master from its own pika.conf (it comes back as role:master, the bug).
    let stale_stop = Arc::new(AtomicBool::new(false));
    let stale_acked = Arc::new(AtomicU64::new(0));
    let t_restart = Instant::now();
    set.master.restart();
    let stale = spawn_stale_writer(old, stale_stop.clone(), stale_acked.clone());
    m.restart_to_demoted = poll(REJOIN_BOUND, || {
        role_of(old)
            .is_some_and(|(r, _, _)| r == "slave")
            .then(|| t_restart.elapsed().as_secs_f64())
    });
    m.demoted = m.restart_to_demoted.is_some();
    // Resynced: link up to the new master AND it has the first post-failover write.
    let marker = first.as_ref().map(|(_, _, k)| k.clone());
    m.restart_to_resynced = poll(REJOIN_BOUND, || {
        let linked = role_of(old).is_some_and(|(r, mp, up)| r == "slave" && mp == Some(new) && up);
        let has = marker
            .as_ref()
            .is_some_and(|k| resp_call(old, None, &["EXISTS", k]).as_deref() == Ok("1"));
        (linked && has).then(|| t_restart.elapsed().as_secs_f64())
    });
    m.resynced = m.restart_to_resynced.is_some();
    if !m.demoted {
        errors.push(format!(
            "the restarted old master is not a slave within {}s",
            REJOIN_BOUND.as_secs()
        ));
    } else if !m.resynced {
        let info = resp_call(old, None, &["INFO", "replication"]).unwrap_or_default();
        let state: Vec<&str> = info
            .lines()
            .map(str::trim_end)
            .filter(|l| l.starts_with("master_link_status") || l.starts_with("db_repl_state"))
            .collect();
        errors.push(format!(
            "the old master is a slave but did not resync within {}s ({})",
            REJOIN_BOUND.as_secs(),
            state.join(", ")
        ));
    }
    stale_stop.store(true, Ordering::SeqCst);
    let _ = stale.join();
    m.stale_acked = stale_acked.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let _ = writer.join();
    let keys = st.lock().map(|s| s.acked.clone()).unwrap_or_default();
    m.acked = keys.len();
    // Lost = acknowledged but not on the master the clients end on. That is the first
    // promoted one unless the system failed over again meanwhile (Sentinel may, when the new
    // Pika master's INFO stalls past down-after-milliseconds): then it is where discovery
    // points now, not the first one, whose keys stopped at the second failover.
    let last = discover().unwrap_or(new);
    if last != new {
        m.refailed_to = Some(last);
    }
    m.lost = count_existing(last, &keys)
        .ok()
        .map(|found| keys.len() - found);
    if !errors.is_empty() {
        m.error = Some(errors.join("; "));
    }
    m
}

fn start_set(bin: &std::path::Path) -> PikaSet {
    PikaSet::start(bin, 2, PikaOptions::default())
}

fn run_remedy(bin: &std::path::Path) -> (Measured, Value) {
    let mut set = start_set(bin);
    let old = set.master.addr().to_string();
    let mut opts = RemedyOptions::new(Coord::Local, set.cluster_toml(CLUSTER));
    opts.service_extra = vec!["check_interval = \"1s\"".into()];
    // Pika-sized waits, as in the real-Pika suite (the defaults are sized for redis-server).
    opts.policy_extra = vec![
        "link_timeout = \"15s\"".into(),
        "detach_timeout = \"20s\"".into(),
        "lock_ttl = \"120s\"".into(),
    ];
    let remedy = Arc::new(Remedy::start(&opts));
    remedy.record(CLUSTER, &old);
    let am = Alertmanager::start(&remedy.webhook_url(), support::prom::TOKEN);
    let prom = Prometheus::start(remedy.port, am.port);
    support::redis::wait_for(Duration::from_secs(30), "prometheus armed", || {
        prom.query("pika_remedy_node_up == 1")
            .is_ok_and(|v| v.len() == 3)
    });
    let r = Arc::clone(&remedy);
    let discover: Discover = Arc::new(move || {
        r.recorded_master(CLUSTER)
            .and_then(|m| m.rsplit(':').next().and_then(|p| p.parse().ok()))
    });
    let m = measure(&mut set, discover);
    let events = remedy.events(CLUSTER).unwrap_or_default();
    let actions: Vec<String> = events
        .iter()
        .filter(|e| e["outcome"]["result"]["kind"] == "applied")
        .map(|e| {
            format!(
                "{} ({})",
                e["outcome"]["plan"]["action"]["kind"]
                    .as_str()
                    .unwrap_or("?"),
                e["source"].as_str().unwrap_or("?")
            )
        })
        .collect();
    (m, json!({ "applied": actions }))
}

fn run_sentinel(bin: &std::path::Path, sentinel_bin: &std::path::Path) -> (Measured, Value) {
    let mut set = start_set(bin);
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::start(sentinel_bin, set.master.port()))
        .collect();
    let armed = support::redis::wait_until(Duration::from_secs(30), || {
        sentinels.iter().all(|s| {
            let i = s.master_info();
            i.get("num-slaves").map(String::as_str) == Some("2")
                && i.get("num-other-sentinels").map(String::as_str) == Some("2")
        })
    });
    if !armed {
        let m = Measured {
            error: Some(format!(
                "sentinels not armed within 30 s: {:?}",
                sentinels[0].master_info()
            )),
            ..Measured::default()
        };
        return (m, json!({ "sentinel_events": sentinels[0].events() }));
    }
    let discover = sentinel_discover(sentinels.iter().map(|s| s.port).collect());
    let m = measure(&mut set, discover);
    (m, json!({ "sentinel_events": sentinels[0].events() }))
}

// ---------------------------------------------------------------------------------------------

fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let med = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    Some((s[0], med, s[s.len() - 1]))
}

fn fmt_stats(v: &[f64], unit: &str, of: usize) -> String {
    let n = if v.len() == of {
        String::new()
    } else {
        format!(" ({} of {of} runs)", v.len())
    };
    match stats(v) {
        None => "never".into(),
        Some((a, m, b)) if unit == "s" => format!("{a:.2} / **{m:.2}** / {b:.2}{n}"),
        Some((a, m, b)) => format!("{a:.0} / **{m:.0}** / {b:.0}{n}"),
    }
}

fn main() {
    let Some(bin) = std::env::var_os("PIKA_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
    else {
        println!(
            "real-Pika bench rows SKIPPED: PIKA_BIN is not set (make bench PIKA_BIN=/path/to/pika; \
             `make bench` sets it to ../shared/pika/bin/pika when that file exists)"
        );
        return;
    };
    assert!(bin.is_file(), "PIKA_BIN={} is not a file", bin.display());
    let sentinel_bin = require_binary("redis-sentinel", "redis-sentinel");
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    let version = Command::new(&bin)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).replace('\n', " "))
        .unwrap_or_default();
    // The machine's 1-minute load average every 10 s while the runs go (other work shares it).
    let sampling = Arc::new(AtomicBool::new(true));
    let loads = Arc::new(Mutex::new(Vec::<f64>::new()));
    let sampler = {
        let (on, loads) = (Arc::clone(&sampling), Arc::clone(&loads));
        std::thread::spawn(move || {
            let t = Instant::now();
            while on.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(7200) {
                if let Some(l) = std::fs::read_to_string("/proc/loadavg")
                    .ok()
                    .and_then(|s| s.split(' ').next().and_then(|x| x.parse::<f64>().ok()))
                {
                    loads.lock().map(|mut v| v.push(l)).ok();
                }
                for _ in 0..100 {
                    if !on.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };
    let systems = ["pika-remedy (alerts + check 1s)", "Sentinel"];
    let mut results: Vec<Vec<(Measured, Value)>> = vec![Vec::new(), Vec::new()];
    let t0 = Instant::now();
    for run in 1..=runs {
        for (i, name) in systems.iter().enumerate() {
            let t = Instant::now();
            let (m, d) = if i == 0 {
                run_remedy(&bin)
            } else {
                run_sentinel(&bin, &sentinel_bin)
            };
            eprintln!(
                "pika run {run}/{runs} {name}: promoted {} repointed {} demoted {} resynced {}; kill→promotion {:?}s, kill→first ack {:?}s, restart→demoted {:?}s, →resynced {:?}s, lost {:?}/{}, stale acked {}{}{} ({:.0}s)\n    {d}",
                m.promoted,
                m.repointed,
                m.demoted,
                m.resynced,
                m.kill_to_promotion.map(|x| (x * 100.0).round() / 100.0),
                m.kill_to_first_ack.map(|x| (x * 100.0).round() / 100.0),
                m.restart_to_demoted.map(|x| (x * 100.0).round() / 100.0),
                m.restart_to_resynced.map(|x| (x * 100.0).round() / 100.0),
                m.lost,
                m.acked,
                m.stale_acked,
                m.refailed_to.map(|p| format!(", failed over again to port {p}")).unwrap_or_default(),
                m.error.as_ref().map(|e| format!(" ERROR: {e}")).unwrap_or_default(),
                t.elapsed().as_secs_f64()
            );
            results[i].push((m, d));
        }
    }
    let took = t0.elapsed();
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.join();
    let load = loads
        .lock()
        .ok()
        .and_then(|v| stats(&v).map(|(a, m, b)| (a, m, b, v.len())));
    let build = if cfg!(debug_assertions) {
        "a dev build (debug assertions on)"
    } else {
        "a release build (`cargo bench`, optimised)"
    };
    let load_text = load.map_or_else(
        || "load average not read".to_string(),
        |(a, m, b, n)| {
            format!("1-minute load average {a:.2} / {m:.2} / {b:.2} (min / median / max of {n} samples, every 10 s)")
        },
    );
    let count = |i: usize, f: &dyn Fn(&Measured) -> bool| -> String {
        format!(
            "{} of {runs}",
            results[i].iter().filter(|(m, _)| f(m)).count()
        )
    };
    let col = |i: usize, f: &dyn Fn(&Measured) -> Option<f64>| -> Vec<f64> {
        results[i].iter().filter_map(|(m, _)| f(m)).collect()
    };
    let mut table = format!(
        "| real Pika, {runs} runs (min / **median** / max) | {} | {} |\n| --- | --- | --- |\n",
        systems[0], systems[1]
    );
    type Yes<'a> = (&'a str, Box<dyn Fn(&Measured) -> bool>);
    let yes: Vec<Yes> = vec![
        ("a replica promoted", Box::new(|m: &Measured| m.promoted)),
        (
            "the other replica repointed (link up)",
            Box::new(|m: &Measured| m.repointed),
        ),
        (
            "restarted old master demoted (role slave)",
            Box::new(|m: &Measured| m.demoted),
        ),
        (
            "old master resynced (link up + has the new master's writes)",
            Box::new(|m: &Measured| m.resynced),
        ),
    ];
    for (name, f) in &yes {
        table.push_str(&format!(
            "| {name} | {} | {} |\n",
            count(0, f.as_ref()),
            count(1, f.as_ref())
        ));
    }
    type Metric<'a> = (&'a str, &'a str, Box<dyn Fn(&Measured) -> Option<f64>>);
    let metrics: Vec<Metric> = vec![
        (
            "kill → replica reports role master (s)",
            "s",
            Box::new(|m: &Measured| m.kill_to_promotion),
        ),
        (
            "kill → first acked write on the new master (s)",
            "s",
            Box::new(|m: &Measured| m.kill_to_first_ack),
        ),
        (
            "acknowledged writes lost",
            "n",
            Box::new(|m: &Measured| m.lost.map(|x| x as f64)),
        ),
        (
            "restart → old master role slave (s)",
            "s",
            Box::new(|m: &Measured| m.restart_to_demoted),
        ),
        (
            "restart → old master resynced (s)",
            "s",
            Box::new(|m: &Measured| m.restart_to_resynced),
        ),
        (
            "stale-client writes acked by the restarted old master",
            "n",
            Box::new(|m: &Measured| Some(m.stale_acked as f64)),
        ),
    ];
    for (name, unit, f) in &metrics {
        table.push_str(&format!(
            "| {name} | {} | {} |\n",
            fmt_stats(&col(0, f.as_ref()), unit, runs),
            fmt_stats(&col(1, f.as_ref()), unit, runs)
        ));
    }
    let errors: Vec<String> = results
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.iter().enumerate().filter_map(move |(n, (m, _))| {
                m.error
                    .as_ref()
                    .map(|e| format!("{} run {}: {e}", systems[i], n + 1))
            })
        })
        .collect();
    let refailed: Vec<String> = results
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.iter().enumerate().filter_map(move |(n, (m, _))| {
                m.refailed_to.map(|p| {
                    format!(
                        "{} run {}: failed over a second time (the master at the end is port {p}, not the replica first promoted); writes lost are counted on the master at the end",
                        systems[i],
                        n + 1
                    )
                })
            })
        })
        .collect();
    let sentinel_seen: Vec<String> = results[1]
        .first()
        .and_then(|(_, d)| d["sentinel_events"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    println!("\n{table}");
    for e in errors.iter().chain(&refailed) {
        println!("{e}");
    }

    let raw: Vec<Value> = results
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.iter().enumerate().map(move |(n, (m, d))| {
                json!({
                    "system": systems[i], "run": n + 1,
                    "promoted": m.promoted, "repointed": m.repointed,
                    "demoted": m.demoted, "resynced": m.resynced,
                    "kill_to_promotion_s": m.kill_to_promotion,
                    "kill_to_first_ack_s": m.kill_to_first_ack,
                    "restart_to_demoted_s": m.restart_to_demoted,
                    "restart_to_resynced_s": m.restart_to_resynced,
                    "acked_writes": m.acked, "lost_writes": m.lost,
                    "stale_acked": m.stale_acked, "refailed_to_port": m.refailed_to,
                    "error": m.error, "detail": d,
                })
            })
        })
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join("pika.json"),
        serde_json::to_string_pretty(&json!({ "runs": runs, "results": raw })).unwrap_or_default(),
    );
    let mut s = format!("{SECTION}: pika-remedy vs Redis Sentinel\n\n");
    s.push_str(&format!(
        "Generated by `make bench` (`benches/pika.rs`, `PIKA_BIN`); raw numbers in `target/bench/pika.json`. \
         Pika binary: `{}` (`pika -v`: {}), reports `pika_version:4.0.0`. {runs} runs, each system once per run, \
         alternating; {:.0} s in total ({:.0} s per run and system on average), {build} of pika-remedy and the bench; \
         2 cores shared with other work: {load_text}.\n\n",
        bin.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        version.trim(),
        took.as_secs_f64(),
        took.as_secs_f64() / (2 * runs) as f64
    ));
    s.push_str("Same fault and writer as above, on a fresh real Pika master + 2 replicas (1 DB) per run and system. \
                pika-remedy: shipped rules and Alertmanager route, periodic check every 1 s, Pika-sized `link_timeout 15s`, \
                `detach_timeout 20s`. Sentinel: 3 sentinels, quorum 2, down-after-milliseconds 1000, failover-timeout 10000. \
                Phases are bounded (promotion 45 s, demotion and resync 40 s each): \"never\" means not within the bound in any run. \
                \"Resynced\" = the old master is a slave of the new master with link up AND has the writer's first write on the new master.\n\n");
    s.push_str(&table);
    if !sentinel_seen.is_empty() {
        s.push_str(&format!(
            "\nWhat Sentinel logged in run 1 (its `+`/`-` events, first 40): `{}`\n",
            sentinel_seen
                .iter()
                .take(40)
                .cloned()
                .collect::<Vec<_>>()
                .join("`, `")
        ));
    }
    if !refailed.is_empty() {
        s.push_str("\nSecond failovers:\n\n");
        for e in &refailed {
            s.push_str(&format!("- {e}\n"));
        }
    }
    if !errors.is_empty() {
        s.push_str("\nPer-run failures:\n\n");
        for e in &errors {
            s.push_str(&format!("- {e}\n"));
        }
    }
    let doc = root.join("docs/bench.md");
    let old = std::fs::read_to_string(&doc).unwrap_or_default();
    let (head, tail) = match old.find(SECTION) {
        Some(i) => {
            let rest = &old[i + SECTION.len()..];
            // Keep a hand-written reading after the generated part ("### Reading").
            let keep = rest.find("### Reading").map(|j| rest[j..].to_string());
            (old[..i].to_string(), keep)
        }
        None => (format!("{}\n\n", old.trim_end()), None),
    };
    let mut out = head + &s;
    if let Some(t) = tail {
        out.push('\n');
        out.push_str(&t);
    }
    let _ = std::fs::write(&doc, out);
    println!("wrote {} and target/bench/pika.json", doc.display());
}
