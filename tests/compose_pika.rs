//! The Docker Compose demo's files against the real thing, without a container runtime:
//! its Pika config files start a real Pika v4.0.1 (`PIKA_BIN`, or `../shared/pika/bin/pika`),
//! replicate, and accept `CONFIG REWRITE` (which pika-remedy sends after every SLAVEOF; the
//! old compose file ran its nodes without a config file, so every rewrite failed and
//! PikaRemediationFailed fired); and its pika-remedy config passes validation.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real Pika binary, or None outside CI (CI must have it: then a missing one fails).
fn pika_bin() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("PIKA_BIN").map(PathBuf::from),
        std::env::var_os("PIKA_REMEDY_SHARED").map(|s| PathBuf::from(s).join("pika/bin/pika")),
        Some(root().join("../shared/pika/bin/pika")),
    ];
    if let Some(p) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("real Pika not found: set PIKA_BIN to a Pika v4.0.1 binary (Debian has no package)");
    }
    eprintln!("skipped: no Pika binary (set PIKA_BIN)");
    None
}

/// A client port p with p, p+2000 (replication) and p+10001 (rsync) free, p <= 22766.
fn pika_port(seed: u16) -> u16 {
    for i in 0..400u16 {
        let p = 12000 + (seed.wrapping_mul(97).wrapping_add(i * 13)) % 10000;
        let free = [p, p + 2000, p + 10001]
            .iter()
            .all(|q| TcpListener::bind(("127.0.0.1", *q)).is_ok());
        if free {
            return p;
        }
    }
    panic!("no free Pika port triple");
}

struct Node {
    child: Child,
    port: u16,
    conf: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGTERM takes Pika ~10 s; nothing here needs a clean shutdown.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(bin: &Path, dir: &Path, compose_conf: &str, master_port: Option<u16>) -> Node {
        let text = std::fs::read_to_string(root().join("deploy/compose/pika").join(compose_conf))
            .expect("compose pika conf");
        assert!(text.contains("port : 9221\n"), "{compose_conf}: port");
        let port = pika_port(
            std::process::id() as u16 ^ compose_conf.len() as u16 ^ (master_port.unwrap_or(7)),
        );
        let data = format!("{}/", dir.display());
        let mut conf = text
            .replace("port : 9221\n", &format!("port : {port}\n"))
            .replace("/data/", &data);
        match master_port {
            Some(m) => {
                assert!(
                    conf.contains("slaveof : 172.28.0.11:9221\n"),
                    "{compose_conf}: slaveof"
                );
                conf = conf.replace(
                    "slaveof : 172.28.0.11:9221\n",
                    &format!("slaveof : 127.0.0.1:{m}\n"),
                );
            }
            None => assert!(
                !conf.contains("slaveof"),
                "{compose_conf}: master has no slaveof"
            ),
        }
        assert!(
            !conf.contains("/data"),
            "{compose_conf}: a path outside /data/"
        );
        let conf_path = dir.join("pika.conf");
        std::fs::write(&conf_path, conf).expect("write conf");
        let log = std::fs::File::create(dir.join("stdout.log")).expect("log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn pika");
        let node = Node {
            child,
            port,
            conf: conf_path,
        };
        node.wait_for(Duration::from_secs(15), "PONG", |c| {
            redis::cmd("PING").query::<String>(c).ok()
        });
        node
    }

    fn conn(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).ok()?;
        client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()
    }

    fn cmd(&self, args: &[&str]) -> String {
        let mut c = self.conn().expect("connect to pika");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        match cmd.query::<redis::Value>(&mut c) {
            Ok(redis::Value::SimpleString(s)) => s,
            Ok(redis::Value::Okay) => "OK".into(),
            Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(v) => format!("{v:?}"),
            Err(e) => format!("ERR {e}"),
        }
    }

    /// Poll `f` until it returns Some(text) containing `want` (bounded in time).
    fn wait_for(
        &self,
        limit: Duration,
        want: &str,
        f: impl Fn(&mut redis::Connection) -> Option<String>,
    ) -> String {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(mut c) = self.conn() {
                if let Some(s) = f(&mut c) {
                    if s.contains(want) {
                        return s;
                    }
                    last = s;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "pika on {} did not show {want:?} within {limit:?}; last: {last}",
            self.port
        );
    }
}

#[test]
fn compose_pika_configs_replicate_and_accept_config_rewrite() {
    let Some(bin) = pika_bin() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (d1, d2) = (tmp.path().join("pika-1"), tmp.path().join("pika-2"));
    std::fs::create_dir_all(&d1).expect("mkdir");
    std::fs::create_dir_all(&d2).expect("mkdir");
    let master = Node::start(&bin, &d1, "pika-1.conf", None);
    let replica = Node::start(&bin, &d2, "pika-2.conf", Some(master.port));
    // pika-3.conf is pika-2.conf's twin: same keys, same slaveof line.
    let c2 = std::fs::read_to_string(root().join("deploy/compose/pika/pika-2.conf")).expect("2");
    let c3 = std::fs::read_to_string(root().join("deploy/compose/pika/pika-3.conf")).expect("3");
    assert_eq!(
        c2.replace("pika-2", "pika-N"),
        c3.replace("pika-3", "pika-N")
    );

    replica.wait_for(Duration::from_secs(30), "master_link_status:up", |c| {
        redis::cmd("INFO")
            .arg("replication")
            .query::<String>(c)
            .ok()
    });

    // What pika-remedy does on a promotion: SLAVEOF NO ONE, then CONFIG REWRITE.
    assert_eq!(replica.cmd(&["SLAVEOF", "NO", "ONE"]), "OK");
    assert_eq!(
        replica.cmd(&["CONFIG", "REWRITE"]),
        "OK",
        "CONFIG REWRITE on the replica"
    );
    let after = std::fs::read_to_string(&replica.conf).expect("conf");
    assert!(
        !after.contains(&format!(":{}\n", master.port)),
        "the rewrite did not drop the slaveof line:\n{after}"
    );
    // And on a demotion: SLAVEOF host port, then CONFIG REWRITE persists it.
    assert_eq!(
        replica.cmd(&["SLAVEOF", "127.0.0.1", &master.port.to_string()]),
        "OK"
    );
    assert_eq!(replica.cmd(&["CONFIG", "REWRITE"]), "OK");
    let after = std::fs::read_to_string(&replica.conf).expect("conf");
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("slaveof :") && l.ends_with(&format!(":{}", master.port))),
        "slaveof not persisted:\n{after}"
    );
    assert_eq!(
        master.cmd(&["CONFIG", "REWRITE"]),
        "OK",
        "CONFIG REWRITE on the master"
    );
}

#[test]
fn compose_pika_remedy_config_is_valid() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = tmp.path().join("webhook_token");
    std::fs::copy(root().join("deploy/compose/webhook.token"), &token).expect("token");
    let text = std::fs::read_to_string(root().join("deploy/compose/pika-remedy.toml"))
        .expect("compose config");
    assert!(text.contains("/run/secrets/webhook_token"));
    let cfg = tmp.path().join("pika-remedy.toml");
    std::fs::write(
        &cfg,
        text.replace("/run/secrets/webhook_token", &token.display().to_string()),
    )
    .expect("write");
    let loaded = pika_remedy::config::load(&cfg);
    assert!(loaded.is_ok(), "{:?}", loaded.err());
    // The nodes are the compose file's Pika containers on Pika's port.
    let compose = std::fs::read_to_string(root().join("deploy/docker-compose.yml")).expect("yml");
    for ip in ["172.28.0.11", "172.28.0.12", "172.28.0.13"] {
        assert!(
            text.contains(&format!("\"{ip}:9221\"")),
            "config lacks {ip}:9221"
        );
        assert!(
            compose.contains(&format!("ipv4_address: {ip}")),
            "compose lacks {ip}"
        );
    }
    assert!(compose.contains("image: pikadb/pika:v4.0.1"));
    for conf in ["pika-1.conf", "pika-2.conf", "pika-3.conf"] {
        assert!(
            compose.contains(&format!("./compose/pika/{conf}:/conf/pika.conf:ro")),
            "{conf} not mounted"
        );
    }
}
