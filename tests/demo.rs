//! `pika-remedy demo` end to end, as `make demo` runs it: on redis-server, and on real Pika
//! when `PIKA_BIN` is set (CI=true without it fails, like the rest of the real-Pika suite).
//! Judged from the demo's own output: it checks the topology on the nodes itself and says
//! "demo OK" only when the old master came back as a replica and the final check is a no-op.

mod support;

use std::process::Command;

use support::real_pika::{pika_or_skip, stock_conf};
use support::redis::require_binary;

const BIN: &str = env!("CARGO_BIN_EXE_pika-remedy");

fn run_demo(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("demo")
        .args(args)
        .output()
        .expect("run pika-remedy demo");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo exited {:?}:\n{text}",
        out.status
    );
    for want in [
        "check: failover",
        "it says role:master",
        "check: demote",
        "comes back as a replica of the new master",
        "final check: no_action",
        "demo OK",
    ] {
        assert!(
            text.contains(want),
            "no {want:?} in the demo's output:\n{text}"
        );
    }
    text
}

#[test]
fn demo_on_redis_server() {
    require_binary("redis-server", "redis-server");
    let text = run_demo(&[]);
    assert!(text.contains("3 redis-server processes"), "{text}");
}

#[test]
fn demo_on_real_pika() {
    let Some(bin) = pika_or_skip("demo_on_real_pika") else {
        return;
    };
    let conf = stock_conf(&bin);
    let text = run_demo(&[
        "--pika-bin",
        &bin.to_string_lossy(),
        "--pika-conf",
        &conf.to_string_lossy(),
    ]);
    assert!(text.contains("3 pika processes"), "{text}");
    // The nodes really were Pika: the final topology lines name the engine.
    assert!(text.contains(" pika role=master"), "{text}");
}
