//! `pika-remedy status` end to end: the real binary against real redis-server processes.
//! `status_json_*` needs the INFO parser; the unreachable/timeout checks do not depend on it
//! for their exit code and timing.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pika_remedy::model::Addr;
use serde_json::Value;

use support::redis::{free_port, RedisCluster};

const BIN: &str = env!("CARGO_BIN_EXE_pika-remedy");

/// Write a config with short timeouts around `clusters_toml`; returns (dir guard, path).
fn write_config(clusters_toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pika-remedy.toml");
    let text = format!(
        "[timeouts]\nconnect = \"300ms\"\ncommand = \"500ms\"\n\n[policy]\nlock_ttl = \"10m\"\n\n\
         [coordinator.local]\ndir = \"{}\"\n\n\
         [webhook]\nallow_unauthenticated = true\n\n{clusters_toml}",
        dir.path().join("state").display()
    );
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn status(config: &PathBuf, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("status")
        .arg("--config")
        .arg(config)
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .expect("run pika-remedy")
}

/// `pika-remedy record` (with `--force` if asked); panics unless it exits 0.
fn record(config: &PathBuf, cluster: &str, master: &str, force: bool) {
    let mut cmd = Command::new(BIN);
    cmd.args(["record", "--config"])
        .arg(config)
        .args(["--cluster", cluster, "--master", master]);
    if force {
        cmd.arg("--force");
    }
    let out = cmd.env_remove("RUST_LOG").output().expect("run record");
    assert_eq!(
        out.status.code(),
        Some(0),
        "record: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn status_json_shows_roles_master_and_offsets() {
    let c = RedisCluster::start(2, Some("status-secret"));
    let (_dir, cfg) = write_config(&c.cluster_toml("main", &[]));
    // Without a record serve would refuse to act: exit 1, saying so.
    let out = status(&cfg, &["--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    assert!(
        v["clusters"][0]["problems"]
            .to_string()
            .contains("no topology record"),
        "{v:#}"
    );
    record(&cfg, "main", &c.master.addr().to_string(), false);
    let out = status(&cfg, &["--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["ok"], true);
    let rec = &v["clusters"][0]["record"];
    assert_eq!(rec["master"], c.master.addr().to_string(), "{v:#}");
    assert_eq!(rec["epoch"], 1, "{v:#}");
    assert!(
        rec["updated"].as_str().unwrap().ends_with('Z'),
        "RFC 3339: {v:#}"
    );
    assert_eq!(v["clusters"][0]["record_agrees"], true, "{v:#}");
    assert_eq!(v["clusters"][0]["lock_holder"], Value::Null, "{v:#}");
    assert_eq!(
        v["clusters"][0]["serve_would"]["action"], "no_action",
        "{v:#}"
    );
    let cl = &v["clusters"][0];
    assert_eq!(cl["name"], "main");
    assert_eq!(cl["healthy"], true, "{cl:#}");
    assert_eq!(
        cl["masters"],
        serde_json::json!([c.master.addr().to_string()])
    );
    let nodes = cl["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["addr"], c.master.addr().to_string());
    assert_eq!(nodes[0]["role"], "master");
    assert_eq!(nodes[0]["engine"], "redis");
    assert_eq!(nodes[0]["connected_replicas"], 2);
    for (n, r) in nodes[1..].iter().zip(&c.replicas) {
        assert_eq!(n["addr"], r.addr().to_string());
        assert_eq!(n["reachable"], true);
        assert_eq!(n["role"], "slave");
        assert_eq!(n["master"], c.master.addr().to_string());
        assert_eq!(n["link"], "up");
        assert!(n["offset"].is_u64(), "{n:#}");
        assert!(n["lag_bytes"].is_u64(), "{n:#}");
    }
    assert!(nodes[0]["offset"].is_u64());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("status-secret"),
        "password leaked: {stdout}"
    );

    // The table form says the same.
    let out = status(&cfg, &[]);
    let t = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.starts_with(&format!("cluster main: OK (master {})", c.master.addr())),
        "{t}"
    );
}

#[test]
fn unreachable_and_silent_nodes_give_exit_1_within_the_timeouts() {
    let c = RedisCluster::start(1, None);
    // Nothing listens on `refused`; `silent` accepts TCP (kernel backlog) but never answers.
    let refused = Addr::new("127.0.0.1", free_port());
    let silent_listener = support::ports::listen();
    let silent = Addr::new("127.0.0.1", silent_listener.local_addr().unwrap().port());
    let (_dir, cfg) = write_config(&c.cluster_toml("main", &[refused.clone(), silent.clone()]));

    let start = Instant::now();
    let out = status(&cfg, &["--json"]);
    let took = start.elapsed();
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    assert_eq!(v["ok"], false);
    // Per-node bound: connect 0.3 s + 3 × 0.5 s + 0.25 s margin ≈ 2 s, nodes in parallel;
    // plus process start. Generous, as the machine is shared.
    assert!(took < Duration::from_secs(6), "status took {took:?}");

    let cl = &v["clusters"][0];
    assert_eq!(cl["healthy"], false);
    let nodes = cl["nodes"].as_array().unwrap();
    let by_addr = |a: &Addr| {
        nodes
            .iter()
            .find(|n| n["addr"] == a.to_string())
            .unwrap_or_else(|| panic!("{a} missing in {cl:#}"))
    };
    assert_eq!(by_addr(&refused)["reachable"], false);
    assert_eq!(by_addr(&refused)["error"], "connection refused");
    assert_eq!(by_addr(&silent)["reachable"], false);
    assert_eq!(by_addr(&silent)["error"], "timeout");
    let problems = cl["problems"].to_string();
    assert!(
        problems.contains(&format!("{refused} is unreachable")),
        "{problems}"
    );
    assert!(
        problems.contains(&format!("{silent} is unreachable")),
        "{problems}"
    );
    drop(silent_listener);
}

#[test]
fn status_json_two_masters_is_exit_1() {
    let c = RedisCluster::start(1, None);
    c.replicas[0].cmd(&["REPLICAOF", "NO", "ONE"]);
    let (_dir, cfg) = write_config(&c.cluster_toml("main", &[]));
    let out = status(&cfg, &["--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    assert_eq!(
        v["clusters"][0]["masters"].as_array().map(Vec::len),
        Some(2),
        "{v:#}"
    );
}

/// The record names a replica (forced) while the real master is alive: reality disagrees, serve
/// would act, so `status` exits 1 and says why; the shared pause and maintenance are shown.
#[test]
fn record_disagreeing_with_reality_is_exit_1_with_why() {
    let c = RedisCluster::start(2, None);
    let (_dir, cfg) = write_config(&c.cluster_toml("main", &[]));
    let wrong = c.replicas[0].addr().to_string();
    record(&cfg, "main", &wrong, true);
    let out = status(&cfg, &["--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    let cl = &v["clusters"][0];
    assert_eq!(cl["record_agrees"], false, "{cl:#}");
    let problems = cl["problems"].to_string();
    assert!(
        problems.contains(&format!(
            "the record names {wrong} as master (epoch 1), but it reports role:slave and {} claims master",
            c.master.addr()
        )),
        "{problems}"
    );
    // The table says the same.
    let out = status(&cfg, &[]);
    let t = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("DISAGREES"), "{t}");
    assert!(
        t.contains(&format!("the record names {wrong} as master")),
        "{t}"
    );

    // Controls are part of the report.
    let ctl = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env_remove("RUST_LOG")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
    };
    ctl(&[
        "pause",
        "--cluster",
        "main",
        "--reason",
        "investigating",
        "--for",
        "1h",
    ]);
    ctl(&[
        "maintenance",
        "set",
        "--cluster",
        "main",
        "--node",
        &wrong,
        "--mode",
        "no-promote",
        "--reason",
        "bad disk",
    ]);
    let v = json(&status(&cfg, &["--json"]));
    let cl = &v["clusters"][0];
    assert_eq!(cl["pause"]["reason"], "investigating", "{cl:#}");
    assert!(
        cl["pause"]["until"].as_str().unwrap().ends_with('Z'),
        "{cl:#}"
    );
    assert_eq!(cl["maintenance"][0]["node"], wrong, "{cl:#}");
    assert_eq!(cl["maintenance"][0]["mode"], "no-promote", "{cl:#}");
}

#[test]
fn unknown_cluster_or_bad_config_is_exit_2() {
    let (_dir, cfg) = write_config(
        "[[cluster]]\nname = \"main\"\nnodes = [{ addr = \"127.0.0.1:1\" }, { addr = \"127.0.0.1:2\" }]\n",
    );
    let out = status(&cfg, &["--cluster", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown cluster \"nope\""));

    let out = status(&PathBuf::from("/nonexistent/pika-remedy.toml"), &[]);
    assert_eq!(out.status.code(), Some(2));

    // Default path comes from PIKA_REMEDY_CONFIG.
    let out = Command::new(BIN)
        .args(["status", "--cluster", "nope"])
        .env("PIKA_REMEDY_CONFIG", &cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown cluster"));
}
