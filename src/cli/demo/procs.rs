//! The demo's processes: redis-servers started from their own config files, and the temp dir.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::model::Addr;

use super::DemoError;

/// A redis-server started from its own config file (so CONFIG REWRITE persists roles), killed on drop.
pub struct RedisProc {
    pub port: u16,
    pub conf: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisProc {
    /// Write `redis.conf` in `dir` and start the server.
    pub fn start(dir: &Path, port: u16, replica_of: Option<u16>) -> Result<RedisProc, DemoError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| DemoError::setup(format!("create {}", dir.display()), e))?;
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
        std::fs::write(&conf, text)
            .map_err(|e| DemoError::setup(format!("write {}", conf.display()), e))?;
        let mut p = RedisProc {
            port,
            conf,
            dir: dir.to_path_buf(),
            child: None,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> Result<(), DemoError> {
        let child = Command::new("redis-server")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                DemoError::setup("cannot start redis-server (Debian package redis-server)", e)
            })?;
        self.child = Some(child);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(DemoError::NotStarted {
            port: self.port,
            log: self.dir.join("redis.log"),
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

impl Drop for RedisProc {
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
