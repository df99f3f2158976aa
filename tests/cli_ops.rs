//! Operator CLI smoke tests: the real binary against real `redis-server` processes and the
//! `local` coordinator in a temp dir, with a config file written by the test. Exit codes:
//! 0 ok / nothing to do, 1 refused / failed / lock held, 2 config or usage, 3 retryable.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::redis::{wait_for, RedisCluster};

const BIN: &str = env!("CARGO_BIN_EXE_pika-remedy");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run the binary with `args` (the config path is appended as `--config`), bounded in time.
fn cli(config: &Path, args: &[&str]) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn pika-remedy");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pika-remedy {args:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Config for `cluster` named "c" with short timeouts; `coordinator` is the TOML section.
fn write_config(dir: &Path, cluster: &str, coordinator: &str) -> PathBuf {
    let text = format!(
        r#"[service]
events_file = "{events}"

[timeouts]
connect = "300ms"
command = "1s"

[policy]
confirm_window = "0s"
promote_timeout = "5s"
link_timeout = "3s"
detach_timeout = "1s"
lock_ttl = "60s"

{coordinator}

[webhook]
allow_unauthenticated = true

{cluster}
"#,
        events = dir.join("events.jsonl").display(),
    );
    let path = dir.join("pika-remedy.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn local_coordinator(dir: &Path) -> String {
    format!(
        "[coordinator]\nkind = \"local\"\n\n[coordinator.local]\ndir = \"{}\"\n",
        dir.join("coord").display()
    )
}

fn dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pika-remedy-cli-")
        .tempdir()
        .expect("temp dir")
}

/// Roles and config files of every node: what "changes nothing" compares.
fn snapshot(rc: &RedisCluster) -> Vec<(String, String)> {
    rc.nodes()
        .iter()
        .filter_map(|n| {
            n.try_cmd(&["INFO", "replication"])
                .ok()
                .map(|i| (i, n.conf_text()))
        })
        .map(|(i, conf)| {
            let role = support::redis::info_field(&i, "role").unwrap_or_default();
            let mport = support::redis::info_field(&i, "master_port").unwrap_or_default();
            (format!("{role} {mport}"), conf)
        })
        .collect()
}

#[test]
fn operator_commands_from_bootstrap_to_demotion() {
    let d = dir();
    let mut rc = RedisCluster::start(2, None);
    let cfg = write_config(
        d.path(),
        &rc.cluster_toml("c", &[]),
        &local_coordinator(d.path()),
    );
    let m = rc.master.addr().to_string();
    let r1 = rc.replicas[0].addr().to_string();

    // No record yet: status needs attention (exit 1) and says what serve would do.
    let r = cli(&cfg, &["status"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains(&m), "{r:?}");
    assert!(r.stdout.contains("no topology record"), "{r:?}");

    // Healthy, no record yet: the periodic plan would bootstrap it; nothing is written.
    let r = cli(&cfg, &["plan", "--cluster", "c"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("plan: bootstrap"), "{r:?}");
    assert!(r.stdout.contains("record: none"), "{r:?}");
    assert!(
        r.stdout.contains(&format!("{m} redis role=master")),
        "{r:?}"
    );
    assert!(
        r.stdout.contains(&format!("{r1} redis role=slave")),
        "{r:?}"
    );
    let r = cli(&cfg, &["history", "--cluster", "c"]);
    assert!(r.stdout.contains("cluster c: no record"), "{r:?}");

    // `record` refuses a replica without --force, records the master.
    let r = cli(&cfg, &["record", "--cluster", "c", "--master", &r1]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("--force"), "{r:?}");
    let r = cli(&cfg, &["record", "--cluster", "c", "--master", &m]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("recorded master {m} at epoch 1")),
        "{r:?}"
    );
    let r = cli(&cfg, &["plan", "--cluster", "c"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("converged"), "{r:?}");

    // The master dies.
    rc.master.kill9();
    let mport = rc.master.port();
    wait_for(Duration::from_secs(5), "replica links down", || {
        rc.replicas.iter().all(|n| !n.is_linked_to(mport))
    });
    let before = snapshot(&rc);
    let r = cli(&cfg, &["plan", "--cluster", "c", "--failover"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("plan: failover"), "{r:?}");
    assert!(r.stdout.contains(&format!("{m} unreachable")), "{r:?}");
    assert!(r.stdout.contains("candidates (best first):"), "{r:?}");
    assert!(r.stdout.contains("eligible  priority 100"), "{r:?}");
    assert!(r.stdout.contains(": SLAVEOF NO ONE"), "{r:?}");
    assert!(r.stdout.contains(": CONFIG REWRITE"), "{r:?}");
    assert!(r.stdout.contains(": SLAVEOF 127.0.0.1 "), "{r:?}");
    // The periodic plan sees the same dead master (automatic rules).
    let r = cli(&cfg, &["plan", "--cluster", "c"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("plan: failover"), "{r:?}");
    let r = cli(&cfg, &["failover", "--cluster", "c", "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("dry run: nothing sent"), "{r:?}");
    assert_eq!(snapshot(&rc), before, "plan and dry run change nothing");
    let r = cli(&cfg, &["history", "--cluster", "c"]);
    assert!(r.stdout.contains(&format!("master {m} epoch 1")), "{r:?}");

    let r = cli(&cfg, &["failover", "--cluster", "c"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("result: applied"), "{r:?}");
    assert!(r.stdout.contains("[ok]"), "{r:?}");
    assert!(r.stdout.contains(" ms  promote "), "step timings: {r:?}");
    let new = rc
        .replicas
        .iter()
        .find(|n| n.role() == "master")
        .expect("a promoted replica")
        .addr();
    let other = rc.replicas.iter().find(|n| n.addr() != new).expect("other");
    wait_for(Duration::from_secs(5), "other replica follows", || {
        other.is_linked_to(new.port)
    });

    // The old master comes back as a master; the operator demotes it.
    rc.master.restart();
    let r = cli(&cfg, &["demote", "--cluster", "c", "--node", &m]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("result: applied"), "{r:?}");
    wait_for(Duration::from_secs(5), "old master follows", || {
        rc.master.is_linked_to(new.port)
    });
    let r = cli(&cfg, &["demote", "--cluster", "c", "--node", &m]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("no action"), "{r:?}");

    let r = cli(&cfg, &["history", "--cluster", "c"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("cluster c: master {new} epoch 2")),
        "{r:?}"
    );
    assert!(r.stdout.contains("events ("), "{r:?}");
    let r = cli(&cfg, &["status"]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn unreachable_coordinator_exits_3() {
    let d = dir();
    let rc = RedisCluster::start(1, None);
    let dead = support::redis::free_port();
    let etcd = format!(
        "[coordinator]\nkind = \"etcd\"\n\n[coordinator.etcd]\nendpoints = [\"http://127.0.0.1:{dead}\"]\n"
    );
    let cfg = write_config(d.path(), &rc.cluster_toml("c", &[]), &etcd);
    let m = rc.master.addr().to_string();
    for args in [
        vec!["plan", "--cluster", "c"],
        vec!["failover", "--cluster", "c"],
        vec!["record", "--cluster", "c", "--master", &m],
        vec!["history", "--cluster", "c"],
    ] {
        let r = cli(&cfg, &args);
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
        assert!(
            r.stdout.contains("coordinator unreachable"),
            "{args:?}: {r:?}"
        );
    }
}

#[test]
fn refusals_and_switchover_exit_codes() {
    let d = dir();
    let rc = RedisCluster::start(2, None);
    let cfg = write_config(
        d.path(),
        &rc.cluster_toml("c", &[]),
        &local_coordinator(d.path()),
    );
    let m = rc.master.addr().to_string();
    let to = rc.replicas[1].addr();

    // Manual triggers need a record first.
    let r = cli(&cfg, &["failover", "--cluster", "c"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("pika-remedy record --cluster c"), "{r:?}");
    let r = cli(&cfg, &["record", "--cluster", "c", "--master", &m]);
    assert_eq!(r.code, 0, "{r:?}");

    let r = cli(&cfg, &["failover", "--cluster", "c"]);
    assert_eq!(r.code, 1, "healthy master: {r:?}");
    assert!(r.stdout.contains("use switchover"), "{r:?}");
    let r = cli(&cfg, &["demote", "--cluster", "c", "--node", &m]);
    assert_eq!(r.code, 1, "{r:?}");
    let r = cli(&cfg, &["plan", "--cluster", "nope"]);
    assert_eq!(r.code, 2, "{r:?}");

    let r = cli(
        &cfg,
        &["switchover", "--cluster", "c", "--to", &to.to_string()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("result: applied"), "{r:?}");
    assert!(r.stdout.contains("pause writes on"), "{r:?}");
    assert!(r.stdout.contains("unpause"), "{r:?}");
    wait_for(
        Duration::from_secs(5),
        "old master follows the target",
        || rc.master.is_linked_to(to.port),
    );
    assert_eq!(rc.replicas[1].cmd(&["SET", "k", "v"]), "OK");
    let r = cli(&cfg, &["history", "--cluster", "c"]);
    assert!(r.stdout.contains(&format!("master {to} epoch 2")), "{r:?}");
}

#[test]
fn unusable_local_coordinator_dir_exits_3() {
    let d = dir();
    let rc = RedisCluster::start(1, None);
    // A regular file where the coordinator's directory should be: every access fails.
    let blocker = d.path().join("not-a-dir");
    std::fs::write(&blocker, "").expect("write");
    let local = format!(
        "[coordinator]\nkind = \"local\"\n\n[coordinator.local]\ndir = \"{}\"\n",
        blocker.join("coord").display()
    );
    let cfg = write_config(d.path(), &rc.cluster_toml("c", &[]), &local);
    for args in [
        vec!["plan", "--cluster", "c"],
        vec!["failover", "--cluster", "c"],
        vec!["history", "--cluster", "c"],
    ] {
        let r = cli(&cfg, &args);
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
        assert!(
            r.stdout.contains("coordinator unreachable"),
            "{args:?}: {r:?}"
        );
    }
}

#[test]
fn record_takes_the_cluster_lock() {
    use pika_remedy::coord::{local::Local, Coordinator, Holder, LockOutcome};
    let d = dir();
    let rc = RedisCluster::start(1, None);
    let cfg = write_config(
        d.path(),
        &rc.cluster_toml("c", &[]),
        &local_coordinator(d.path()),
    );
    let m = rc.master.addr().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Another instance (this test) holds the cluster's lock: `record` must not write.
    let coord = rt
        .block_on(async { Local::new(&d.path().join("coord")) })
        .expect("local coordinator");
    let holder = Holder {
        instance: "other-instance".into(),
        host: "localhost".into(),
        pid: std::process::id(),
        since: 0,
    };
    let lease = match rt
        .block_on(coord.try_lock("c", &holder, Duration::from_secs(60)))
        .expect("lock")
    {
        LockOutcome::Acquired(l) => l,
        LockOutcome::HeldBy(h) => panic!("lock held by {h:?}"),
    };
    let r = cli(&cfg, &["record", "--cluster", "c", "--master", &m]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("the lock is held by"), "{r:?}");
    assert!(r.stdout.contains("other-instance"), "{r:?}");
    assert!(rt.block_on(coord.read_record("c")).expect("read").is_none());

    // Once it is released, the record is written.
    rt.block_on(coord.release(lease)).expect("release");
    let r = cli(&cfg, &["record", "--cluster", "c", "--master", &m]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// `switchover` prints each step live on stderr as it starts and as it ends (result and
/// milliseconds), in plan order, before the outcome on stdout; `--json` prints none of it.
#[test]
fn switchover_prints_live_step_progress_on_stderr() {
    let rc = RedisCluster::start(1, None);
    let d = dir();
    let cfg = write_config(
        d.path(),
        &rc.cluster_toml("c", &[]),
        &local_coordinator(d.path()),
    );
    let m = rc.master.addr().to_string();
    let r = cli(&cfg, &["record", "--cluster", "c", "--master", &m]);
    assert_eq!(r.code, 0, "{r:?}");
    // stdout and stderr into one file: the order of the lines is the order they were written.
    let both = d.path().join("both.txt");
    let f = std::fs::File::create(&both).expect("create");
    let mut child = Command::new(BIN)
        .args(["switchover", "--cluster", "c", "--yes", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(f.try_clone().expect("clone"))
        .stderr(f)
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "switchover did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&both).expect("read");
    assert_eq!(status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let pos = |p: &str| lines.iter().position(|l| l.starts_with(p));
    let outcome = pos("cluster c: switchover").unwrap_or_else(|| panic!("no outcome:\n{text}"));
    let plan = pos("plan switchover: ").unwrap_or_else(|| panic!("no plan line:\n{text}"));
    assert!(plan < outcome, "{text}");
    let mut last = plan;
    let mut n = 0;
    while let Some(start) = pos(&format!("step {} start: ", n + 1)) {
        let done = pos(&format!("step {} ok (", n + 1))
            .unwrap_or_else(|| panic!("step {} has no end line:\n{text}", n + 1));
        assert!(
            last < start && start < done && done < outcome,
            "order:\n{text}"
        );
        assert!(lines[done].contains(" ms): "), "{text}");
        last = done;
        n += 1;
    }
    assert!(
        n >= 4,
        "pause, catch-up, promote, record, follow … :\n{text}"
    );

    // --json: the outcome only, no progress lines.
    let r = cli(&cfg, &["switchover", "--cluster", "c", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("step 1 start"), "{r:?}");
}
