//! Every `--json` output of the CLI is valid against the one documented schema
//! (`docs/json-schema.json`, described in `docs/json.md`), with RFC 3339 times and no Rust
//! enum shapes. The real binary against real `redis-server`s and the local coordinator; the
//! API answers are validated in `tests/controls.rs` (two `serve` instances).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::redis::RedisCluster;
use support::schema::assert_valid;

const BIN: &str = env!("CARGO_BIN_EXE_pika-remedy");

fn write_config(dir: &Path, cluster: &str) -> PathBuf {
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
[coordinator]
kind = "local"
[coordinator.local]
dir = "{coord}"
[webhook]
allow_unauthenticated = true
{cluster}
"#,
        events = dir.join("events.jsonl").display(),
        coord = dir.join("coord").display(),
    );
    let path = dir.join("pika-remedy.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Run with `--json` and the config; (exit code, parsed stdout).
fn json(config: &Path, args: &[&str]) -> (i32, Value) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--json")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pika-remedy");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// The validator can fail: a missing field, a non-RFC 3339 time, a Rust enum shape.
#[test]
fn the_validator_rejects_bad_shapes() {
    for (def, v) in [
        ("record_output", serde_json::json!({"cluster": "c"})),
        (
            "ack",
            serde_json::json!({"cluster": "c", "failover_at": 1700000000, "reason": "", "who": "", "at": "2023-11-14T22:13:20Z"}),
        ),
        (
            "error",
            serde_json::json!({"error": "x", "detail": {"Ok": 1}}),
        ),
    ] {
        let r = std::panic::catch_unwind(|| assert_valid(def, &v));
        assert!(r.is_err(), "{def} accepted {v}");
    }
}

#[test]
fn every_json_output_matches_the_documented_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rc = RedisCluster::start(2, None);
    let cfg = write_config(dir.path(), &rc.cluster_toml("c", &[]));
    let m = rc.master.addr().to_string();
    let r1 = rc.replicas[0].addr().to_string();

    let (_, v) = json(&cfg, &["status"]);
    assert_valid("status_report", &v);
    let (_, v) = json(&cfg, &["plan", "--cluster", "c"]);
    assert_valid("plan_output", &v);
    assert_eq!(v["plan"]["action"]["kind"], "bootstrap", "{v:#}");

    let (code, v) = json(&cfg, &["record", "--cluster", "c", "--master", &m]);
    assert_eq!(code, 0, "{v:#}");
    assert_valid("record_output", &v);
    let (code, v) = json(&cfg, &["record", "--cluster", "c", "--master", &r1]);
    assert_eq!(code, 1, "a replica is not recorded without --force: {v:#}");
    assert_valid("error", &v);

    let (_, v) = json(&cfg, &["status"]);
    assert_valid("status_report", &v);
    assert_eq!(v["clusters"][0]["record_agrees"], true, "{v:#}");
    let (_, v) = json(&cfg, &["plan", "--cluster", "c", "--failover"]);
    assert_valid("plan_output", &v);

    let (_, v) = json(&cfg, &["failover", "--cluster", "c", "--dry-run"]);
    assert_valid("outcome", &v);
    let (code, v) = json(&cfg, &["switchover", "--cluster", "c", "--to", &r1]);
    assert_eq!(code, 0, "{v:#}");
    assert_valid("outcome", &v);
    assert_eq!(v["result"]["kind"], "applied", "{v:#}");
    let (_, v) = json(
        &cfg,
        &["demote", "--cluster", "c", "--node", &m, "--dry-run"],
    );
    assert_valid("outcome", &v);

    let (code, v) = json(
        &cfg,
        &["pause", "--cluster", "c", "--reason", "r", "--for", "1h"],
    );
    assert_eq!(code, 0, "{v:#}");
    assert_valid("controls", &v);
    let (_, v) = json(
        &cfg,
        &[
            "maintenance",
            "set",
            "--cluster",
            "c",
            "--node",
            &m,
            "--mode",
            "hands-off",
            "--reason",
            "r",
        ],
    );
    assert_valid("controls", &v);
    let (_, v) = json(&cfg, &["maintenance", "list"]);
    assert_valid("controls", &v);
    assert_eq!(v["pauses"][0]["active"], true, "{v:#}");
    let (_, v) = json(&cfg, &["status"]);
    assert_valid("status_report", &v);
    let (_, v) = json(
        &cfg,
        &["maintenance", "clear", "--cluster", "c", "--node", &m],
    );
    assert_valid("controls", &v);
    let (_, v) = json(&cfg, &["resume", "--cluster", "c"]);
    assert_valid("controls", &v);
    // A scheduled switchover (far ahead: nothing runs it here) in the controls and in status.
    let (code, v) = json(
        &cfg,
        &["switchover", "--cluster", "c", "--to", &m, "--at", "+1h"],
    );
    assert_eq!(code, 0, "{v:#}");
    assert_valid("controls", &v);
    assert_eq!(v["switchovers"][0]["state"], "waiting", "{v:#}");
    let (_, v) = json(&cfg, &["status"]);
    assert_valid("status_report", &v);
    assert_eq!(
        v["clusters"][0]["scheduled_switchover"]["to"],
        m.as_str(),
        "{v:#}"
    );
    let (code, v) = json(&cfg, &["switchover", "--cluster", "c", "--cancel"]);
    assert_eq!(code, 0, "{v:#}");
    assert_valid("controls", &v);

    let (code, v) = json(&cfg, &["history", "--cluster", "c", "--since", "1h"]);
    assert_eq!(code, 0, "{v:#}");
    assert_valid("history", &v);
    let events = v["events"].as_array().expect("events");
    assert!(
        events.len() >= 4,
        "record, switchover and controls are audited: {v:#}"
    );
    let ids: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(
        ids.len(),
        events.len(),
        "event ids unique across CLI processes: {v:#}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["reason"].as_str().unwrap_or("").contains("record master")),
        "record is audited: {v:#}"
    );
    let (_, v) = json(&cfg, &["history", "--limit", "1"]);
    assert_eq!(v["events"].as_array().map(Vec::len), Some(1), "{v:#}");
}
