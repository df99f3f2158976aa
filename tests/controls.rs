//! Shared operator controls across instances: two `pika-remedy serve` PROCESSES on one
//! coordinator (a real etcd, and the Consul API test server), real `redis-server` nodes.
//!
//! A pause set through instance A's API stops instance B; it survives a restart of both;
//! a pause set by the CLI with `--for` lifts itself; node maintenance set by the CLI or A's API
//! makes B refuse a plan that would touch a `hands-off` node and never promote a `no-promote`
//! one. Every wait is bounded; children are SIGKILLed on drop.

mod support;
#[path = "support/serve.rs"]
mod svc;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::etcd::EtcdServer;
use support::fake_consul::FakeConsul;
use support::redis::{RedisCluster, RedisNode};
use svc::{cli, Service};

const CLUSTER: &str = "mymaster";
const BEARER: &str = "controls-h00k-t0ken";

fn master_down_payload(node: &RedisNode) -> Vec<u8> {
    support::fixtures::firing_about(&node.addr().to_string(), "RedisDown")
}

enum Backend {
    Etcd(EtcdServer),
    Consul(FakeConsul),
}

impl Backend {
    fn coordinator_toml(&self) -> String {
        match self {
            Backend::Etcd(server) => format!(
                "[coordinator]\nkind = \"etcd\"\n[coordinator.etcd]\nendpoints = [\"{}\"]\n",
                server.endpoint()
            ),
            Backend::Consul(f) => format!(
                "[coordinator]\nkind = \"consul\"\n[coordinator.consul]\naddress = \"{}\"\n",
                f.url()
            ),
        }
    }
    fn ttl_ms(&self) -> u128 {
        match self {
            Backend::Etcd(_) => 10_000,
            Backend::Consul(_) => 10_000,
        }
    }
}

struct Inst {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

fn instance(backend: &Backend, cluster_toml: &str, id: &str) -> Inst {
    let dir = tempfile::Builder::new()
        .prefix("pika-remedy-controls-")
        .tempdir()
        .expect("temp dir");
    let bearer = dir.path().join("bearer");
    std::fs::write(&bearer, BEARER).expect("write bearer");
    let text = format!(
        r#"[service]
instance_id = "{id}"
events_file = "{events}"
poll_interval = "300ms"
[timeouts]
connect = "200ms"
command = "300ms"
[policy]
confirm_window = "0s"
promote_timeout = "1s"
link_timeout = "2s"
detach_timeout = "500ms"
switchover_pause = "1s"
lock_ttl = "{ttl}ms"
{coordinator}
[webhook]
bearer_token = {{ file = "{bearer}" }}
master_down_alerts = ["RedisDown"]
reply_within = "60s"
{cluster_toml}"#,
        events = dir.path().join("events.jsonl").display(),
        ttl = backend.ttl_ms(),
        coordinator = backend.coordinator_toml(),
        bearer = bearer.display(),
    );
    let config = dir.path().join("pika-remedy.toml");
    std::fs::write(&config, text).expect("write config");
    Inst { _dir: dir, config }
}

async fn run_cli(inst: &Inst, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.push("--config".into());
    all.push(inst.config.display().to_string());
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = all.iter().map(String::as_str).collect();
        cli(&a, Duration::from_secs(20))
    })
    .await
    .expect("cli task")
}

/// The cluster's part of a webhook answer.
async fn alert(svc: &Service, payload: &[u8]) -> Value {
    let (st, body) = svc.post("/v1/alerts", BEARER, payload.to_vec()).await;
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    let v: Value = serde_json::from_str(&body).expect("JSON answer");
    v["clusters"][CLUSTER].clone()
}

fn reason(a: &Value) -> String {
    a["reason"].as_str().unwrap_or_default().to_string()
}

async fn scenario(backend: Backend) {
    let mut c = RedisCluster::start(2, None);
    let toml = c.cluster_toml(CLUSTER, &[]);
    let ia = instance(&backend, &toml, "ctl-a");
    let ib = instance(&backend, &toml, "ctl-b");
    let (code, out, err) = run_cli(
        &ia,
        &[
            "record",
            "--cluster",
            CLUSTER,
            "--master",
            &c.master.addr().to_string(),
        ],
    )
    .await;
    assert_eq!(code, 0, "record: {out}{err}");
    let mut a = Service::start(&ia.config).await;
    let mut b = Service::start(&ib.config).await;

    // 1. Pause through A's API; B sees it (the view and the metric) and does nothing.
    let (st, body) = a
        .post(
            &format!("/v1/pause?cluster={CLUSTER}"),
            BEARER,
            br#"{"reason":"kernel upgrade","who":"alice"}"#.to_vec(),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["paused"], true, "{body}");
    support::schema::assert_valid("control_answer", &v);
    let (_, view) = b.get(&format!("/v1/clusters/{CLUSTER}"), BEARER).await;
    let view: Value = serde_json::from_str(&view).expect("json");
    assert_eq!(view["effectively_paused"], true, "{view}");
    support::schema::assert_valid("pause", &view["pause"]);
    for n in view["observation"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        support::schema::assert_valid("node_observation", n);
    }
    assert_eq!(view["pause"]["reason"], "kernel upgrade", "{view}");
    assert_eq!(view["pause"]["who"], "alice", "{view}");
    assert!(
        view["pause"]["since"].as_str().unwrap_or("").ends_with('Z'),
        "RFC 3339: {view}"
    );
    let payload = master_down_payload(&c.master);
    c.master.kill9();
    let ans = alert(&b, &payload).await;
    assert_eq!(ans["action"], "no_action", "{ans}");
    assert!(reason(&ans).contains("paused"), "{ans}");

    // 2. Both restart: the pause is still there.
    a.kill();
    b.kill();
    let a = Service::start(&ia.config).await;
    let b = Service::start(&ib.config).await;
    let ans = alert(&b, &payload).await;
    assert_eq!(ans["action"], "no_action", "after restarts: {ans}");
    assert!(reason(&ans).contains("paused"), "{ans}");
    // The metric follows the shared pause (refreshed every poll interval).
    let want = format!("pika_remedy_cluster_paused{{cluster=\"{CLUSTER}\"}} 1");
    let mut seen = String::new();
    for _ in 0..50 {
        seen = b.get("/metrics", BEARER).await.1;
        if seen.contains(&want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains(&want), "metric {want} not seen:\n{seen}");

    // 3. The CLI resumes the cluster and pauses everything for 2 s: that lifts itself.
    let (code, out, err) = run_cli(&ib, &["resume", "--cluster", CLUSTER]).await;
    assert_eq!(code, 0, "resume: {out}{err}");
    let (code, out, err) =
        run_cli(&ib, &["pause", "--reason", "short window", "--for", "2s"]).await;
    assert_eq!(code, 0, "pause --for: {out}{err}");
    assert!(out.contains("all clusters"), "{out}");
    let ans = alert(&b, &payload).await;
    assert_eq!(ans["action"], "no_action", "global pause: {ans}");
    // Maintenance meanwhile: hands-off on the replica that would be repointed.
    let r0 = c.replicas[0].addr().to_string();
    let r1 = c.replicas[1].addr().to_string();
    let (code, out, err) = run_cli(
        &ia,
        &[
            "maintenance",
            "set",
            "--cluster",
            CLUSTER,
            "--node",
            &r0,
            "--mode",
            "hands-off",
            "--reason",
            "disk swap",
        ],
    )
    .await;
    assert_eq!(code, 0, "maintenance set: {out}{err}");
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // 4. Pause expired; B refuses a failover that would send SLAVEOF to the hands-off node.
    let ans = alert(&b, &payload).await;
    assert_eq!(ans["action"], "refuse", "hands-off: {ans}");
    assert!(reason(&ans).contains(&r0), "{ans}");
    assert!(reason(&ans).contains("hands-off (disk swap)"), "{ans}");
    assert_eq!(c.replicas[0].role(), "slave");
    assert_eq!(c.replicas[1].role(), "slave");

    // 5. A's API turns it into no-promote: B fails over to the other replica.
    let (st, body) = a
        .post(
            &format!("/v1/clusters/{CLUSTER}/maintenance"),
            BEARER,
            format!(r#"{{"node":"{r0}","mode":"no-promote","reason":"flaky disk"}}"#).into_bytes(),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (code, out, _) = run_cli(&ib, &["maintenance", "list", "--json"]).await;
    assert_eq!(code, 0, "{out}");
    let list: Value = serde_json::from_str(&out).expect("list json");
    assert_eq!(list["maintenance"][0]["mode"], "no-promote", "{list}");
    assert_eq!(list["maintenance"][0]["active"], true, "{list}");
    let ans = alert(&b, &payload).await;
    assert_eq!(ans["action"], "failover", "no-promote: {ans}");
    assert_eq!(ans["result"]["kind"], "applied", "{ans}\n{}", b.log());
    support::redis::wait_for(Duration::from_secs(10), "r1 promoted", || {
        c.replicas[1].role() == "master"
    });
    assert_eq!(
        c.replicas[0].role(),
        "slave",
        "the no-promote node stays a replica"
    );
    let _ = r1;

    // 6. ack lifts the cooldown of that automatic failover (audited), clear ends maintenance.
    let (code, out, err) = run_cli(
        &ia,
        &[
            "ack",
            "--cluster",
            CLUSTER,
            "--reason",
            "checked the new master",
        ],
    )
    .await;
    assert_eq!(code, 0, "ack: {out}{err}");
    let (code, out, err) = run_cli(
        &ia,
        &["maintenance", "clear", "--cluster", CLUSTER, "--node", &r0],
    )
    .await;
    assert_eq!(code, 0, "clear: {out}{err}");
    let (_, controls) = a.get("/v1/controls", BEARER).await;
    let controls: Value = serde_json::from_str(&controls).expect("json");
    support::schema::assert_valid("controls", &controls);
    assert_eq!(controls["maintenance"], serde_json::json!([]), "{controls}");
    assert_eq!(controls["acks"][0]["cluster"], CLUSTER, "{controls}");
    let (code, out, _) = run_cli(
        &ia,
        &["maintenance", "clear", "--cluster", CLUSTER, "--node", &r0],
    )
    .await;
    assert_eq!(code, 1, "clearing twice says there is nothing: {out}");
    let (code, _, err) = run_cli(
        &ia,
        &[
            "maintenance",
            "set",
            "--cluster",
            CLUSTER,
            "--node",
            "127.0.0.1:1",
            "--mode",
            "hands-off",
            "--reason",
            "x",
        ],
    )
    .await;
    assert_eq!(code, 2, "an unconfigured node is a usage error: {err}");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_controls_on_etcd() {
    let server = tokio::task::spawn_blocking(EtcdServer::start_new)
        .await
        .expect("start etcd");
    scenario(Backend::Etcd(server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_controls_on_consul() {
    scenario(Backend::Consul(FakeConsul::start().await)).await;
}
