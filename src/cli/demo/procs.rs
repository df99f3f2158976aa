//! The demo's processes: redis-servers or real Pika servers started from their own config
//! files, and the temp dir.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::model::Addr;

use super::DemoError;

/// Which server the demo runs.
#[derive(Clone, Debug)]
pub enum Server {
    /// `redis-server` from `PATH` (Debian package redis-server): Redis stands in for Pika.
    Redis,
    /// A real Pika binary and the stock `pika.conf` each node's config is written from.
    Pika { bin: PathBuf, stock_conf: PathBuf },
}

impl Server {
    /// Pika at `bin`; the stock config is `conf`, else `pika.conf` beside the binary's folder
    /// (`…/pika/pika.conf` for `…/pika/bin/pika`) or in it.
    pub fn pika(bin: PathBuf, conf: Option<PathBuf>) -> Result<Server, DemoError> {
        let nothing = |what: String| DemoError::setup(what, std::io::ErrorKind::NotFound.into());
        if !bin.is_file() {
            return Err(nothing(format!("no Pika binary at {}", bin.display())));
        }
        let stock_conf = match conf {
            Some(c) => c,
            None => {
                let dir = bin.parent().unwrap_or(Path::new("."));
                [dir.join("../pika.conf"), dir.join("pika.conf")]
                    .into_iter()
                    .find(|c| c.is_file())
                    .ok_or_else(|| {
                        nothing(format!(
                            "no pika.conf beside {} (pass --pika-conf)",
                            bin.display()
                        ))
                    })?
            }
        };
        Ok(Server::Pika { bin, stock_conf })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Server::Redis => "redis-server",
            Server::Pika { .. } => "pika",
        }
    }

    /// A free client port. Pika also listens on port + 2000 (replication, every interface) and
    /// port + 10001 (rsync), and its ports must stay below the ephemeral range.
    pub fn free_port(&self) -> Result<u16, DemoError> {
        match self {
            Server::Redis => free_port(),
            Server::Pika { .. } => {
                let seed = u64::from(std::process::id()) * 7919 + u64::from(free_port()?);
                for i in 0..500u64 {
                    let p = 12000 + ((seed + i * 97) % 10001) as u16;
                    if [p, p + 2000, p + 10001].into_iter().all(port_free) {
                        return Ok(p);
                    }
                }
                Err(DemoError::setup(
                    "no free Pika port triple (p, p+2000, p+10001) in 12000..=22000",
                    std::io::ErrorKind::AddrInUse.into(),
                ))
            }
        }
    }
}

fn port_free(p: u16) -> bool {
    TcpListener::bind(("0.0.0.0", p)).is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok()
}

/// One server process started from its own config file (so CONFIG REWRITE persists roles),
/// killed on drop.
pub struct ServerProc {
    pub port: u16,
    pub conf: PathBuf,
    dir: PathBuf,
    server: Server,
    child: Option<Child>,
}

/// `stock` with every `key : value` of `set` replacing the stock line of that key, or appended.
fn pika_conf(stock: &str, set: &[(&str, String)]) -> String {
    let mut out: Vec<String> = stock
        .lines()
        .filter(|l| {
            let key = l.split(':').next().unwrap_or("").trim();
            !set.iter().any(|(k, _)| *k == key)
        })
        .map(str::to_string)
        .collect();
    out.extend(set.iter().map(|(k, v)| format!("{k} : {v}")));
    out.join("\n") + "\n"
}

impl ServerProc {
    /// Write the node's config file in `dir` and start the server.
    pub fn start(
        server: &Server,
        dir: &Path,
        port: u16,
        replica_of: Option<u16>,
    ) -> Result<ServerProc, DemoError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| DemoError::setup(format!("create {}", dir.display()), e))?;
        let (conf, text) = match server {
            Server::Redis => (dir.join("redis.conf"), redis_conf(dir, port, replica_of)),
            Server::Pika { stock_conf, .. } => {
                let stock = std::fs::read_to_string(stock_conf)
                    .map_err(|e| DemoError::setup(format!("read {}", stock_conf.display()), e))?;
                let sub = |s: &str| format!("{}/{s}/", dir.display());
                let mut set = vec![
                    ("port", port.to_string()),
                    ("daemonize", "no".into()),
                    // Without it Pika rewrites 127.0.0.1 in SLAVEOF to the first interface.
                    ("network-interface", "lo".into()),
                    ("log-path", sub("log")),
                    ("db-path", sub("db")),
                    ("dump-path", sub("dump")),
                    ("db-sync-path", sub("dbsync")),
                    ("pidfile", format!("{}/pika.pid", dir.display())),
                    ("write-buffer-size", "16M".into()),
                    ("max-write-buffer-size", "64M".into()),
                    // The stock 20000 needs an open-files limit raised beyond what we may set.
                    ("maxclients", "10000".into()),
                    ("thread-pool-size", "2".into()),
                    ("sync-thread-num", "2".into()),
                    ("databases", "1".into()),
                ];
                if let Some(m) = replica_of {
                    set.push(("slaveof", format!("127.0.0.1:{m}")));
                }
                (dir.join("pika.conf"), pika_conf(&stock, &set))
            }
        };
        std::fs::write(&conf, text)
            .map_err(|e| DemoError::setup(format!("write {}", conf.display()), e))?;
        let mut p = ServerProc {
            port,
            conf,
            dir: dir.to_path_buf(),
            server: server.clone(),
            child: None,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> Result<(), DemoError> {
        let log = std::fs::File::create(self.dir.join("stdout.log"))
            .map_err(|e| DemoError::setup("create the server's output file", e))?;
        let err = log
            .try_clone()
            .map_err(|e| DemoError::setup("create the server's output file", e))?;
        let mut cmd = match &self.server {
            Server::Redis => Command::new("redis-server"),
            Server::Pika { bin, .. } => {
                let mut c = Command::new(bin);
                c.arg("-c");
                c
            }
        };
        let child = cmd
            .arg(&self.conf)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                let what = match &self.server {
                    Server::Redis => {
                        "cannot start redis-server (Debian package redis-server)".into()
                    }
                    Server::Pika { bin, .. } => format!("cannot start {}", bin.display()),
                };
                DemoError::setup(what, e)
            })?;
        self.child = Some(child);
        // Pika needs a few seconds to open RocksDB; redis-server starts at once.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(DemoError::NotStarted {
            server: self.server.name(),
            port: self.port,
            log: self.dir.clone(),
        })
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
    pub fn restart(&mut self) -> Result<(), DemoError> {
        self.kill9();
        self.spawn()
    }
}

fn redis_conf(dir: &Path, port: u16, replica_of: Option<u16>) -> String {
    let mut text = format!(
        "port {port}\nbind 127.0.0.1\ndir {}\nsave \"\"\nappendonly no\nprotected-mode no\nlogfile {}\n\
         # Start a full sync at once (Redis waits 5 s by default to batch replicas).\n\
         repl-diskless-sync-delay 0\n\
         # The snapshot before a demotion sets dbfilename (protected in Redis 7).\n\
         enable-protected-configs local\n",
        dir.display(),
        dir.join("redis.log").display()
    );
    if let Some(m) = replica_of {
        let _ = writeln!(text, "replicaof 127.0.0.1 {m}");
    }
    text
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn free_port() -> Result<u16, DemoError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DemoError::setup("no free port", e))
}

/// Removes the demo's directory when the demo ends.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
