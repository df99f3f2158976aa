//! `pika-remedy demo` (`make demo`): a self-contained run on this machine. Three local
//! `redis-server` processes (Redis stands in for Pika, which Debian does not package) or, with
//! `--pika-bin` (`make demo PIKA_BIN=…`), three real Pika servers; the
//! service's periodic check with the embedded `local` coordinator, a writer, a `kill -9` of the
//! master (failover), a restart of the old master (demotion) and a second restart (the demotion
//! was persisted with CONFIG REWRITE). Prints a timeline and cleans up everything it started.

mod procs;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{ClusterConfig, NodeConfig, Policy, Timeouts};
use crate::coord::local::Local;
use crate::coord::{Coordinator, Holder};
use crate::decide::{Action, Trigger};
use crate::error::Exit;
use crate::model::{Addr, Role};
use crate::node::redis::RedisNodes;
use crate::node::Nodes;
use crate::observe::observe;
use crate::reconcile::handle::{ClusterHandle, Mode};
use crate::reconcile::Result_;

pub use self::procs::Server;
use self::procs::{RemoveOnDrop, ServerProc};

/// Why the demo could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A local resource (directory, file, port, process) could not be set up.
    #[error("{what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{server} on port {port} did not start; see the logs in {}", log.display())]
    NotStarted {
        server: &'static str,
        port: u16,
        log: std::path::PathBuf,
    },
    #[error(transparent)]
    Coord(#[from] crate::coord::CoordError),
    /// The cluster did not reach the next stage in time.
    #[error("{0}")]
    Stalled(&'static str),
}

impl DemoError {
    fn setup(what: impl Into<String>, source: std::io::Error) -> DemoError {
        DemoError::Setup {
            what: what.into(),
            source,
        }
    }
}

struct Timeline {
    start: Instant,
    lines: Mutex<Vec<String>>,
}

impl Timeline {
    fn note(&self, what: impl AsRef<str>) {
        let line = format!(
            "{:>8.3}s  {}",
            self.start.elapsed().as_secs_f64(),
            what.as_ref()
        );
        println!("{line}");
        if let Ok(mut l) = self.lines.lock() {
            l.push(line);
        }
    }
}

/// The demo's cluster: its processes, the handle the checks run through, and the timeline.
struct Demo {
    procs: Vec<ServerProc>,
    handle: ClusterHandle<RedisNodes, Local>,
    tl: Timeline,
}

/// The writer's shared counters.
#[derive(Clone, Default)]
struct Writes {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    acked_keys: Arc<Mutex<Vec<u64>>>,
    failed: Arc<AtomicU64>,
    after_kill: Arc<Mutex<AfterKill>>,
}

/// Run the demo. Returns `NotDone` if the cluster did not converge as expected.
pub async fn run(server: Server) -> Result<Exit, DemoError> {
    let tmp = std::env::temp_dir().join(format!("pika-remedy-demo-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(tmp.clone());
    let mut demo = Demo::start(&server, &tmp)?;
    demo.wait_synced().await?;
    let out = demo
        .handle
        .reconcile(Trigger::Periodic, &Mode::default())
        .await;
    demo.tl.note(format!(
        "bootstrap: {} — {}",
        out.plan.action.label(),
        out.plan.reason
    ));

    // The writer follows the recorded master, like a client using discovery.
    let w = Writes::default();
    let writer = tokio::spawn(writer_loop(demo.handle.coord.as_ref().clone(), w.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    demo.tl.note(format!(
        "writer running: {} writes acknowledged so far",
        w.acked.load(Ordering::SeqCst)
    ));
    let acked_at_kill = w.acked.load(Ordering::SeqCst);
    let promoted = demo.failover(&w).await?;
    demo.demotion(&promoted).await?;
    let back_as_replica = demo.second_restart(&promoted).await?;

    w.stop.store(true, Ordering::SeqCst);
    let _ = writer.await;
    let out = demo
        .handle
        .reconcile(Trigger::Periodic, &Mode::default())
        .await;
    demo.tl.note(format!(
        "final check: {} — {}",
        out.plan.action.label(),
        out.plan.reason
    ));
    println!("\nfinal topology:");
    let h = &demo.handle;
    for line in crate::reconcile::summarize(&observe(h.nodes.as_ref(), &h.cluster).await) {
        println!("  {line}");
    }
    let keys = w.acked_keys.lock().map(|k| k.clone()).unwrap_or_default();
    let lost = count_missing(&promoted, &keys).await;
    println!(
        "\nwrites: {} acknowledged ({} before the kill), {} failed attempts while the master was down; \
         acknowledged writes missing on the new master: {}",
        w.acked.load(Ordering::SeqCst),
        acked_at_kill,
        w.failed.load(Ordering::SeqCst),
        lost.map(|n| n.to_string()).unwrap_or_else(|| "could not check".into())
    );
    let ok = back_as_replica && matches!(out.plan.action, Action::NoAction);
    println!("{}", if ok { "demo OK" } else { "demo FAILED" });
    Ok(Exit::of_health(ok))
}

impl Demo {
    /// Three redis-servers (the first the master), and the handle over them: the same one the
    /// CLI and the service build, with the embedded `local` coordinator and short timeouts.
    fn start(server: &Server, tmp: &Path) -> Result<Demo, DemoError> {
        let mut ports = Vec::new();
        for _ in 0..20 {
            let p = server.free_port()?;
            if !ports.contains(&p) {
                ports.push(p);
            }
            if ports.len() == 3 {
                break;
            }
        }
        if ports.len() < 3 {
            return Err(DemoError::Stalled("could not find 3 distinct free ports"));
        }
        println!(
            "pika-remedy demo: 3 {} processes on 127.0.0.1:{:?}, data in {}",
            server.name(),
            ports,
            tmp.display()
        );
        let mut procs = vec![ServerProc::start(server, &tmp.join("n0"), ports[0], None)?];
        for (i, p) in ports.iter().enumerate().skip(1) {
            procs.push(ServerProc::start(
                server,
                &tmp.join(format!("n{i}")),
                *p,
                Some(ports[0]),
            )?);
        }
        let cluster = ClusterConfig {
            name: "demo".into(),
            password: None,
            paused: false,
            rename_commands: Default::default(),
            nodes: procs
                .iter()
                .map(|p| NodeConfig {
                    addr: p.addr(),
                    priority: 100,
                    never_promote: false,
                })
                .collect(),
        };
        // Pika answers INFO more slowly than Redis, and a slave's INFO blocks for a few
        // seconds after its master dies.
        let command = match server {
            Server::Redis => Duration::from_millis(500),
            Server::Pika { .. } => Duration::from_secs(2),
        };
        let timeouts = Timeouts {
            connect: Duration::from_millis(200),
            command,
        };
        let policy = Policy {
            confirm_window: Duration::from_millis(200),
            link_timeout: Duration::from_secs(10),
            ..Policy::default()
        };
        let coord = Local::new(&tmp.join("coord"))?;
        let holder = Holder {
            instance: "demo".into(),
            host: "localhost".into(),
            pid: std::process::id(),
            since: crate::reconcile::now_unix(),
        };
        let handle = ClusterHandle::redis(
            cluster,
            &timeouts,
            None,
            Arc::new(coord),
            policy,
            Arc::new(holder),
        );
        let tl = Timeline {
            start: Instant::now(),
            lines: Mutex::new(Vec::new()),
        };
        Ok(Demo { procs, handle, tl })
    }

    fn nodes(&self) -> &RedisNodes {
        self.handle.nodes.as_ref()
    }

    /// Wait for both replicas to be in sync with the master.
    async fn wait_synced(&self) -> Result<(), DemoError> {
        let master = self.procs[0].addr();
        wait_for(Duration::from_secs(30), || async {
            let mut ok = 0;
            for p in &self.procs[1..] {
                if matches!(self.nodes().status(&p.addr()).await, Ok(s) if s.follows_with_link_up(&master))
                {
                    ok += 1;
                }
            }
            ok == 2
        })
        .await
        .map_err(|_| DemoError::Stalled("replicas did not sync with the master within 30 s"))
    }

    /// `kill -9` the master, wait for the failover and the first write on the new master.
    /// Returns the new recorded master.
    async fn failover(&mut self, w: &Writes) -> Result<Addr, DemoError> {
        let old = self.procs[0].addr();
        let t_kill = Instant::now();
        self.procs[0].kill9();
        self.tl.note(format!("kill -9 master {old}"));
        if let Ok(mut k) = w.after_kill.lock() {
            k.killed = Some((t_kill, old.clone()));
        }
        let new_master = self
            .check_until(Duration::from_secs(30), |a| {
                matches!(a, Action::Failover { .. })
            })
            .await
            .ok_or(DemoError::Stalled("no failover within 30 s"))?;
        let failover_s = t_kill.elapsed().as_secs_f64();
        let promoted = match self.handle.coord.read_record("demo").await {
            Ok(Some(r)) => r.value.master,
            _ => return Err(DemoError::Stalled("no record after failover")),
        };
        self.tl.note(format!(
            "failover done in {failover_s:.3}s: {new_master}; recorded master {promoted}"
        ));
        wait_for(Duration::from_secs(10), || async {
            w.after_kill
                .lock()
                .map(|k| k.first_ack.is_some())
                .unwrap_or(false)
        })
        .await
        .map_err(|_| DemoError::Stalled("no write acknowledged by the new master within 10 s"))?;
        if let Some((d, at)) = w.after_kill.lock().ok().and_then(|k| k.first_ack.clone()) {
            self.tl.note(format!(
                "first write acknowledged by the new master {at}: {d:.3}s after the kill"
            ));
        }
        Ok(promoted)
    }

    /// Restart the old master with its original config: the check must demote it.
    async fn demotion(&mut self, promoted: &Addr) -> Result<(), DemoError> {
        let old = self.procs[0].addr();
        let t_restart = Instant::now();
        self.procs[0].restart()?;
        self.tl.note(format!(
            "old master {old} restarted with its original config"
        ));
        match self.nodes().status(&old).await {
            Ok(s) => self.tl.note(format!(
                "  it says role:{} (the split brain pika-remedy fixes)",
                s.role.as_str()
            )),
            Err(e) => self.tl.note(format!("  not answering yet: {e}")),
        }
        self.check_until(Duration::from_secs(30), |a| {
            matches!(a, Action::Demote { .. })
        })
        .await
        .ok_or(DemoError::Stalled("old master not demoted within 30 s"))?;
        wait_for(Duration::from_secs(15), || async {
            matches!(self.nodes().status(&old).await, Ok(s) if s.follows_with_link_up(promoted))
        })
        .await
        .map_err(|_| DemoError::Stalled("old master link not up within 15 s"))?;
        self.tl.note(format!(
            "old master demoted, link up: {:.3}s after its restart",
            t_restart.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Persistence: a second restart must come back as a replica without any help.
    async fn second_restart(&mut self, promoted: &Addr) -> Result<bool, DemoError> {
        let old = self.procs[0].addr();
        self.procs[0].restart()?;
        let back_as_replica = wait_for(Duration::from_secs(10), || async {
            matches!(self.nodes().status(&old).await, Ok(s) if s.role == Role::Slave && s.master.as_ref() == Some(promoted))
        })
        .await
        .is_ok();
        self.tl.note(format!(
            "second restart of {old}: {}",
            if back_as_replica {
                "comes back as a replica of the new master (CONFIG REWRITE persisted it)"
            } else {
                "did NOT come back as a replica"
            }
        ));
        Ok(back_as_replica)
    }

    /// Run the periodic check every 200 ms until it applies an action matching `want`.
    async fn check_until(&self, bound: Duration, want: impl Fn(&Action) -> bool) -> Option<String> {
        let t = Instant::now();
        while t.elapsed() < bound {
            let out = self
                .handle
                .reconcile(Trigger::Periodic, &Mode::default())
                .await;
            if !matches!(out.plan.action, Action::NoAction) {
                self.tl.note(format!(
                    "check: {} — {}",
                    out.plan.action.label(),
                    out.plan.reason
                ));
                for s in &out.steps {
                    self.tl.note(format!(
                        "    [{}] {:>5} ms {}",
                        if s.ok { "ok" } else { "FAILED" },
                        s.millis,
                        s.detail
                    ));
                }
            }
            if out.result == Result_::Applied && want(&out.plan.action) {
                return Some(out.plan.reason);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }
}

/// The writer's view of the failover: when the master was killed, and the first write a
/// different master acknowledged after that.
#[derive(Default)]
struct AfterKill {
    killed: Option<(Instant, Addr)>,
    first_ack: Option<(f64, Addr)>,
}

async fn wait_for<F, Fut>(bound: Duration, f: F) -> Result<(), ()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < bound {
        if f().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(())
}

async fn writer_loop(coord: Local, w: Writes) {
    let Writes {
        stop,
        acked,
        acked_keys,
        failed,
        after_kill,
    } = w;
    let mut n: u64 = 0;
    let mut conn: Option<(Addr, redis::aio::MultiplexedConnection)> = None;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let master = match coord.read_record("demo").await {
            Ok(Some(r)) => r.value.master,
            _ => continue,
        };
        if conn.as_ref().map(|(a, _)| a) != Some(&master) {
            conn = connect(&master).await.map(|c| (master.clone(), c));
        }
        let Some((addr, c)) = conn.as_mut() else {
            failed.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        n += 1;
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("k:{n}"))
            .arg(n)
            .query_async(c)
            .await;
        match r {
            Ok(()) => {
                acked.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut k) = acked_keys.lock() {
                    k.push(n);
                }
                if let Ok(mut k) = after_kill.lock() {
                    if let (Some((t, old)), None) = (&k.killed, &k.first_ack) {
                        if old != addr {
                            k.first_ack = Some((t.elapsed().as_secs_f64(), addr.clone()));
                        }
                    }
                }
            }
            Err(_) => {
                failed.fetch_add(1, Ordering::SeqCst);
                conn = None;
            }
        }
    }
}

/// How many of the acknowledged keys the master does not have (asynchronous replication can
/// lose the last writes before a crash; Redis Sentinel has the same exposure).
async fn count_missing(master: &Addr, keys: &[u64]) -> Option<usize> {
    let mut c = connect(master).await?;
    let mut missing = 0;
    for chunk in keys.chunks(500) {
        let mut p = redis::pipe();
        for n in chunk {
            p.cmd("EXISTS").arg(format!("k:{n}"));
        }
        let found: Vec<i64> = p.query_async(&mut c).await.ok()?;
        missing += found.iter().filter(|x| **x == 0).count();
    }
    Some(missing)
}

async fn connect(a: &Addr) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{}:{}/", a.host, a.port)).ok()?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .ok()
}
