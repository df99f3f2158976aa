//! `pika-remedy demo` (`make demo`): a self-contained run on this machine. Three local
//! `redis-server` processes (Redis stands in for Pika, which Debian does not package), the
//! service's periodic check with the embedded `local` coordinator, a writer, a `kill -9` of the
//! master (failover), a restart of the old master (demotion) and a second restart (the demotion
//! was persisted with CONFIG REWRITE). Prints a timeline and cleans up everything it started.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{ClusterConfig, NodeConfig, Policy, Timeouts};
use crate::coord::local::Local;
use crate::coord::{Coordinator, Holder};
use crate::decide::{Action, Trigger};
use crate::model::{Addr, Role};
use crate::node::redis::RedisNodes;
use crate::node::Nodes;
use crate::reconcile::{reconcile, Ctx, Result_};

/// A redis-server started from its own config file (so CONFIG REWRITE persists roles), killed on drop.
pub struct RedisProc {
    pub port: u16,
    pub conf: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisProc {
    /// Write `redis.conf` in `dir` and start the server.
    pub fn start(dir: &Path, port: u16, replica_of: Option<u16>) -> Result<RedisProc, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let conf = dir.join("redis.conf");
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsave \"\"\nappendonly no\nprotected-mode no\nlogfile {}\n\
             # Start a full sync at once (Redis waits 5 s by default to batch replicas).\n\
             repl-diskless-sync-delay 0\n",
            dir.display(),
            dir.join("redis.log").display()
        );
        if let Some(m) = replica_of {
            let _ = writeln!(text, "replicaof 127.0.0.1 {m}");
        }
        std::fs::write(&conf, text).map_err(|e| format!("write {}: {e}", conf.display()))?;
        let mut p = RedisProc {
            port,
            conf,
            dir: dir.to_path_buf(),
            child: None,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (Debian package redis-server): {e}"))?;
        self.child = Some(child);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis-server on port {} did not start; see {}",
            self.port,
            self.dir.join("redis.log").display()
        ))
    }

    pub fn addr(&self) -> Addr {
        Addr::new("127.0.0.1", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again from the same config file (whatever CONFIG REWRITE left in it).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill9();
        self.spawn()
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
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

/// Run the demo. Returns a non-zero exit code if the cluster did not converge as expected.
pub async fn run() -> Result<i32, String> {
    let tmp = std::env::temp_dir().join(format!("pika-remedy-demo-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(tmp.clone());
    let ports = [free_port()?, free_port()?, free_port()?];
    println!(
        "pika-remedy demo: 3 redis-server processes on 127.0.0.1:{:?}, data in {}",
        ports,
        tmp.display()
    );
    let mut procs = vec![RedisProc::start(&tmp.join("n0"), ports[0], None)?];
    for (i, p) in ports.iter().enumerate().skip(1) {
        procs.push(RedisProc::start(
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
    let timeouts = Timeouts {
        connect: Duration::from_millis(200),
        command: Duration::from_millis(500),
    };
    let policy = Policy {
        confirm_window: Duration::from_millis(200),
        link_timeout: Duration::from_secs(10),
        ..Policy::default()
    };
    let nodes = RedisNodes::new(&timeouts, None);
    let coord = Local::new(&tmp.join("coord")).map_err(|e| e.to_string())?;
    let holder = Holder {
        instance: "demo".into(),
        host: "localhost".into(),
        pid: std::process::id(),
        since: crate::reconcile::now_unix(),
    };
    let ctx = Ctx {
        cluster: &cluster,
        nodes: &nodes,
        coord: &coord,
        policy: &policy,
        holder: &holder,
        has_password: false,
        dry_run: false,
        paused: false,
        last_seen_master: None,
    };
    let tl = Arc::new(Timeline {
        start: Instant::now(),
        lines: Mutex::new(Vec::new()),
    });

    // Wait for both replicas to be in sync, then bootstrap the record.
    wait_for(Duration::from_secs(10), || async {
        let mut ok = 0;
        for p in &procs[1..] {
            if matches!(nodes.status(&p.addr()).await, Ok(s) if s.follows_with_link_up(&procs[0].addr())) {
                ok += 1;
            }
        }
        ok == 2
    })
    .await
    .map_err(|_| "replicas did not sync with the master within 10 s".to_string())?;
    let out = reconcile(&ctx, Trigger::Periodic).await;
    tl.note(format!(
        "bootstrap: {} — {}",
        out.plan.action.label(),
        out.plan.reason
    ));

    // The writer follows the recorded master, like a client using discovery.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let acked_keys = Arc::new(Mutex::new(Vec::<u64>::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let after_kill = Arc::new(Mutex::new(AfterKill::default()));
    let writer = tokio::spawn(writer_loop(
        coord.clone(),
        stop.clone(),
        acked.clone(),
        failed.clone(),
        after_kill.clone(),
        acked_keys.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    tl.note(format!(
        "writer running: {} writes acknowledged so far",
        acked.load(Ordering::SeqCst)
    ));

    // Failover.
    let old = procs[0].addr();
    let acked_at_kill = acked.load(Ordering::SeqCst);
    let t_kill = Instant::now();
    procs[0].kill9();
    tl.note(format!("kill -9 master {old}"));
    if let Ok(mut k) = after_kill.lock() {
        k.killed = Some((t_kill, old.clone()));
    }
    let new_master = check_until(&ctx, &tl, Duration::from_secs(30), |a| {
        matches!(a, Action::Failover { .. })
    })
    .await
    .ok_or("no failover within 30 s")?;
    let failover_s = t_kill.elapsed().as_secs_f64();
    let promoted = match coord.read_record("demo").await {
        Ok(Some(r)) => r.value.master,
        _ => return Err("no record after failover".into()),
    };
    tl.note(format!(
        "failover done in {failover_s:.3}s: {new_master}; recorded master {promoted}"
    ));
    wait_for(Duration::from_secs(10), || async {
        after_kill
            .lock()
            .map(|k| k.first_ack.is_some())
            .unwrap_or(false)
    })
    .await
    .map_err(|_| "no write acknowledged by the new master within 10 s".to_string())?;
    if let Some((d, at)) = after_kill.lock().ok().and_then(|k| k.first_ack.clone()) {
        tl.note(format!(
            "first write acknowledged by the new master {at}: {d:.3}s after the kill"
        ));
    }

    // Demotion.
    let t_restart = Instant::now();
    procs[0].restart()?;
    tl.note(format!(
        "old master {old} restarted with its original config"
    ));
    match nodes.status(&old).await {
        Ok(s) => tl.note(format!(
            "  it says role:{} (the split brain pika-remedy fixes)",
            s.role.as_str()
        )),
        Err(e) => tl.note(format!("  not answering yet: {e}")),
    }
    check_until(&ctx, &tl, Duration::from_secs(30), |a| {
        matches!(a, Action::Demote { .. })
    })
    .await
    .ok_or("old master not demoted within 30 s")?;
    wait_for(Duration::from_secs(15), || async {
        matches!(nodes.status(&old).await, Ok(s) if s.follows_with_link_up(&promoted))
    })
    .await
    .map_err(|_| "old master link not up within 15 s".to_string())?;
    tl.note(format!(
        "old master demoted, link up: {:.3}s after its restart",
        t_restart.elapsed().as_secs_f64()
    ));

    // Persistence: a second restart must come back as a replica without any help.
    procs[0].restart()?;
    let back_as_replica = wait_for(Duration::from_secs(10), || async {
        matches!(nodes.status(&old).await, Ok(s) if s.role == Role::Slave && s.master.as_ref() == Some(&promoted))
    })
    .await
    .is_ok();
    tl.note(format!(
        "second restart of {old}: {}",
        if back_as_replica {
            "comes back as a replica of the new master (CONFIG REWRITE persisted it)"
        } else {
            "did NOT come back as a replica"
        }
    ));

    stop.store(true, Ordering::SeqCst);
    let _ = writer.await;
    let out = reconcile(&ctx, Trigger::Periodic).await;
    tl.note(format!(
        "final check: {} — {}",
        out.plan.action.label(),
        out.plan.reason
    ));
    println!("\nfinal topology:");
    for line in crate::reconcile::summarize(&crate::observe::observe(&nodes, &cluster).await) {
        println!("  {line}");
    }
    let keys = acked_keys.lock().map(|k| k.clone()).unwrap_or_default();
    let lost = count_missing(&promoted, &keys).await;
    println!(
        "\nwrites: {} acknowledged ({} before the kill), {} failed attempts while the master was down; \
         acknowledged writes missing on the new master: {}",
        acked.load(Ordering::SeqCst),
        acked_at_kill,
        failed.load(Ordering::SeqCst),
        lost.map(|n| n.to_string()).unwrap_or_else(|| "could not check".into())
    );
    let ok = back_as_replica && matches!(out.plan.action, Action::NoAction);
    println!("{}", if ok { "demo OK" } else { "demo FAILED" });
    Ok(if ok { 0 } else { 1 })
}

/// The writer's view of the failover: when the master was killed, and the first write a
/// different master acknowledged after that.
#[derive(Default)]
struct AfterKill {
    killed: Option<(Instant, Addr)>,
    first_ack: Option<(f64, Addr)>,
}

/// Run the periodic check every 200 ms until it applies an action matching `want`.
async fn check_until<N: Nodes, C: Coordinator>(
    ctx: &Ctx<'_, N, C>,
    tl: &Timeline,
    bound: Duration,
    want: impl Fn(&Action) -> bool,
) -> Option<String> {
    let t = Instant::now();
    while t.elapsed() < bound {
        let out = reconcile(ctx, Trigger::Periodic).await;
        if !matches!(out.plan.action, Action::NoAction) {
            tl.note(format!(
                "check: {} — {}",
                out.plan.action.label(),
                out.plan.reason
            ));
            for s in &out.steps {
                tl.note(format!(
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

async fn writer_loop(
    coord: Local,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    after_kill: Arc<Mutex<AfterKill>>,
    acked_keys: Arc<Mutex<Vec<u64>>>,
) {
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

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
