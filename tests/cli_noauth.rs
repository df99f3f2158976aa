//! Only `serve` needs the `[webhook]` authentication: `check-config`, `status` and `plan` run
//! without it (the real binary; `status` and `plan` against real `redis-server`s and the
//! local coordinator); `serve` refuses to start without it (exit 2).

mod support;

use std::path::Path;
use std::process::Command;

use support::redis::RedisCluster;

const BIN: &str = env!("CARGO_BIN_EXE_pika-remedy");

fn run(args: &[&str], config: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg(config)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("run pika-remedy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn only_serve_needs_webhook_authentication() {
    let rc = RedisCluster::start(1, None);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("noauth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[coordinator]\nkind = \"local\"\n[coordinator.local]\ndir = \"{}\"\n{}",
            dir.path().join("coord").display(),
            rc.cluster_toml("c", &[])
        ),
    )
    .expect("write");
    let (code, out, err) = run(&["check-config"], &cfg);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 1 cluster(s)"), "{out}");
    assert!(
        out.contains("note: webhook: serve needs authentication"),
        "{out}"
    );
    let (code, out, err) = run(&["status", "--cluster", "c", "--config"], &cfg);
    assert_ne!(code, 2, "status without [webhook]: {out}{err}");
    assert!(out.contains("cluster c"), "{out}{err}");
    let (code, out, err) = run(&["plan", "--cluster", "c", "--config"], &cfg);
    assert_ne!(code, 2, "plan without [webhook]: {out}{err}");
    assert!(!err.contains("webhook"), "{err}");
    // serve refuses to start without it (a config error, exit 2), naming what to set.
    let (code, out, err) = run(&["serve", "--listen", "127.0.0.1:0", "--config"], &cfg);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("bearer_token"), "{err}");
}
