//! End-to-end: the real `pika-remedy serve` binary over HTTP against real `redis-server`
//! processes, with the local coordinator and a bearer token read from a file. Webhook bodies
//! are the captured Alertmanager 0.25 payloads with only the `instance` label (and, for role
//! mismatch, the alert name) rewritten to the test cluster; everything else is byte for byte.

mod support;
#[path = "support/serve.rs"]
mod svc;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis::{info_field, wait_for, wait_until, RedisCluster, RedisNode};
use svc::{assert_no_secret, cli, Service};

const CLUSTER: &str = "mymaster";
const PASSWORD: &str = "n0de-pa55-Xq7";
const BEARER: &str = "hook-t0ken-Zr9";
/// The fingerprint of the captured `RedisDown` alert (depends only on its original labels).
const FINGERPRINT: &str = "cfb61736801859ef";
/// The fixture's instance label (the master of the capture run).
const FIXTURE_INSTANCE: &str = "redis://127.0.0.1:7000";

fn shared() -> PathBuf {
    std::env::var("PIKA_REMEDY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn fixture(name: &str) -> String {
    let p = shared().join("fixtures/alertmanager").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The captured firing `RedisDown` payload about `node` (only the instance label rewritten).
fn master_down_payload(node: &RedisNode) -> Vec<u8> {
    let body = fixture("firing.json");
    assert!(body.contains(FIXTURE_INSTANCE));
    body.replace(FIXTURE_INSTANCE, &format!("redis://{}", node.addr()))
        .into_bytes()
}

/// The same payload as a role-mismatch alert (`PikaRoleMismatch`) about `node`.
fn role_mismatch_payload(node: &RedisNode) -> Vec<u8> {
    let body = String::from_utf8(master_down_payload(node)).unwrap();
    body.replace("\"RedisDown\"", "\"PikaRoleMismatch\"")
        .replace("alertname=\\\"RedisDown\\\"", "alertname=\\\"PikaRoleMismatch\\\"")
        .into_bytes()
}

/// A test's service directory: config, bearer file, events file, local coordinator dir.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn events_file(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }
    fn coord_dir(&self) -> PathBuf {
        self.dir.path().join("coord")
    }
    fn config_arg(&self) -> &str {
        self.config.to_str().unwrap()
    }
}

/// Write a config for `cluster`. `service`/`policy` are extra TOML lines for those tables.
fn setup(cluster: &RedisCluster, service: &str, policy: &str) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("pika-remedy-serve-")
        .tempdir()
        .unwrap();
    let bearer = dir.path().join("bearer");
    std::fs::write(&bearer, format!("{BEARER}\n")).unwrap();
    std::fs::create_dir_all(dir.path().join("coord")).unwrap();
    let text = format!(
        r#"
[service]
instance_id = "serve-test"
events_file = "{events}"
{service}
[timeouts]
connect = "500ms"
command = "2s"
[policy]
confirm_window = "200ms"
link_timeout = "5s"
{policy}
[coordinator]
kind = "local"
[coordinator.local]
dir = "{coord}"
[webhook]
bearer_token = {{ file = "{bearer}" }}
master_down_alerts = ["RedisDown", "PikaMasterDown"]
role_mismatch_alerts = ["PikaRoleMismatch"]
max_body_bytes = 65536
{cluster}"#,
        events = dir.path().join("events.jsonl").display(),
        coord = dir.path().join("coord").display(),
        bearer = bearer.display(),
        cluster = cluster.cluster_toml(CLUSTER, &[]),
    );
    let config = dir.path().join("pika-remedy.toml");
    std::fs::write(&config, text).unwrap();
    Setup { dir, config }
}

/// Bootstrap the record with the CLI (`pika-remedy record`), as an operator would.
fn record(s: &Setup, master: &RedisNode) {
    let (code, out, err) = cli(
        &[
            "record",
            "--config",
            s.config_arg(),
            "--cluster",
            CLUSTER,
            "--master",
            &master.addr().to_string(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, 0, "record failed:\n{out}\n{err}");
    assert_no_secret(&(out + &err), "`record` output", &[PASSWORD, BEARER]);
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `GET /v1/clusters/mymaster` → the record.
async fn recorded(s: &Service) -> Value {
    let (st, body) = s.get(&format!("/v1/clusters/{CLUSTER}"), BEARER).await;
    assert_eq!(st, 200, "{body}");
    json(&body)["record"].clone()
}

fn epoch(record: &Value) -> u64 {
    record["epoch"].as_u64().expect("record has an epoch")
}

/// `cmdstat_info` calls of a node (`INFO commandstats`; this call itself counts too).
fn info_calls(n: &RedisNode) -> u64 {
    let stats = n.cmd(&["INFO", "commandstats"]);
    info_field(&stats, "cmdstat_info")
        .and_then(|v| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|c| c.parse().ok())
        })
        .unwrap_or(0)
}

/// `process_id` from `INFO server` (to SIGSTOP/SIGCONT a node).
fn redis_pid(n: &RedisNode) -> u32 {
    info_field(&n.cmd(&["INFO", "server"]), "process_id")
        .and_then(|p| p.parse().ok())
        .expect("process_id")
}

/// The index of the replica that is `addr`.
fn replica_index(c: &RedisCluster, addr: &str) -> usize {
    c.replicas
        .iter()
        .position(|r| r.addr().to_string() == addr)
        .unwrap_or_else(|| panic!("{addr} is not one of the replicas"))
}

/// Every secret of these tests must be absent from `text`.
fn no_secrets(text: &str, what: &str) {
    assert_no_secret(text, what, &[PASSWORD, BEARER]);
}

// -------------------------------------------------------------------------------------------

/// kill -9 the master → alert → failover; restart the old master → role-mismatch alert →
/// demotion; the same alert again → nothing. Checks the answers, the record over the API, the
/// audit trail (API and file), the nodes themselves, and that no secret leaked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_then_demotion_then_idempotent() {
    let mut c = RedisCluster::start(2, Some(PASSWORD));
    let s = setup(&c, "poll_interval = \"500ms\"", "");
    record(&s, &c.master);
    let svc = Service::start(&s.config).await;
    let mut bodies = String::new();

    let before = recorded(&svc).await;
    assert_eq!(before["master"], c.master.addr().to_string());
    let e0 = epoch(&before);

    // --- failover
    let old = c.master.addr().to_string();
    let payload = master_down_payload(&c.master);
    c.master.kill9();
    let t = Instant::now();
    let (st, body) = svc.post("/v1/alerts", BEARER, payload.clone()).await;
    let failover_ms = t.elapsed().as_millis();
    bodies.push_str(&body);
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    let a = json(&body);
    let ans = &a["clusters"][CLUSTER];
    assert_eq!(ans["action"], "failover", "{body}");
    assert_eq!(ans["trigger"]["kind"], "master_down", "{body}");
    assert_eq!(ans["result"]["kind"], "applied", "{body}");
    let reason = ans["reason"].as_str().unwrap();
    assert!(reason.contains(&old) && reason.contains("promoting"), "{reason}");
    let promoted = ans["plan"]["action"]["promote"].as_str().unwrap().to_string();
    let p = replica_index(&c, &promoted);
    let other = 1 - p;
    assert_eq!(c.replicas[p].role(), "master");
    let new_port = c.replicas[p].port();
    wait_for(Duration::from_secs(10), "other replica follows the new master", || {
        c.replicas[other].is_linked_to(new_port)
    });
    let rec = recorded(&svc).await;
    assert_eq!(rec["master"], promoted);
    assert_eq!(epoch(&rec), e0 + 1);
    assert!(rec["last_failover_at"].as_u64().is_some(), "{rec}");

    // The audit trail: API and file.
    let (st, evs) = svc.get("/v1/events?limit=100", BEARER).await;
    assert_eq!(st, 200);
    bodies.push_str(&evs);
    let evs = json(&evs);
    let ev = evs
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "reconcile" && e["outcome"]["plan"]["action"]["kind"] == "failover")
        .unwrap_or_else(|| panic!("no failover event in {evs}"));
    assert_eq!(ev["source"], "alertmanager");
    assert_eq!(ev["cluster"], CLUSTER);
    assert_eq!(ev["alerts"][0]["fingerprint"], FINGERPRINT);
    assert_eq!(ev["alerts"][0]["alertname"], "RedisDown");
    assert_eq!(ev["alerts"][0]["node"], old);
    assert_eq!(ev["alerts"][0]["labels"]["instance"], format!("redis://{old}"));
    assert_eq!(ev["alerts"][0]["labels"]["cluster"], CLUSTER);
    let out = &ev["outcome"];
    assert_eq!(out["result"]["kind"], "applied");
    let steps = out["steps"].as_array().unwrap();
    assert!(steps.len() >= 4, "{out}");
    for st in steps {
        assert_eq!(st["ok"], true, "{st}");
        assert!(st["millis"].as_u64().is_some(), "{st}");
    }
    let kinds: Vec<&str> = steps.iter().map(|s| s["step"]["step"].as_str().unwrap()).collect();
    for k in ["promote", "persist", "record", "follow"] {
        assert!(kinds.contains(&k), "step {k} missing in {kinds:?}");
    }
    let file = std::fs::read_to_string(s.events_file()).unwrap();
    let line = file
        .lines()
        .find(|l| l.contains(FINGERPRINT) && l.contains("\"failover\""))
        .unwrap_or_else(|| panic!("no failover event in the events file:\n{file}"));
    let fe = json(line);
    assert_eq!(fe["seq"], ev["seq"]);
    assert_eq!(fe["outcome"]["result"]["kind"], "applied");

    // --- demotion: the old master comes back with its original config (role master).
    c.master.restart();
    assert_eq!(c.master.role(), "master");
    let t = Instant::now();
    let (st, body) = svc
        .post("/v1/alerts", BEARER, role_mismatch_payload(&c.master))
        .await;
    let demote_ms = t.elapsed().as_millis();
    bodies.push_str(&body);
    assert_eq!(st, 200, "{body}");
    let a = json(&body);
    let ans = &a["clusters"][CLUSTER];
    assert_eq!(ans["trigger"]["kind"], "role_mismatch", "{body}");
    assert_eq!(ans["action"], "demote", "{body}");
    assert_eq!(ans["result"]["kind"], "applied", "{body}");
    assert_eq!(ans["plan"]["action"]["node"], old);
    assert_eq!(ans["plan"]["action"]["to"], promoted);
    wait_for(Duration::from_secs(10), "old master follows the new one", || {
        c.master.is_linked_to(new_port)
    });
    // CONFIG REWRITE persisted the demotion.
    assert!(
        c.master
            .conf_text()
            .contains(&format!("replicaof 127.0.0.1 {new_port}")),
        "{}",
        c.master.conf_text()
    );
    assert_eq!(epoch(&recorded(&svc).await), e0 + 1, "a demotion keeps the epoch");

    // --- idempotency: the same firing payload again after convergence.
    let (st, body) = svc.post("/v1/alerts", BEARER, payload).await;
    bodies.push_str(&body);
    assert_eq!(st, 200, "{body}");
    let a = json(&body);
    assert_eq!(a["clusters"][CLUSTER]["action"], "no_action", "{body}");
    assert_eq!(a["clusters"][CLUSTER]["result"]["kind"], "no_action", "{body}");
    let rec = recorded(&svc).await;
    assert_eq!(epoch(&rec), e0 + 1);
    assert_eq!(rec["master"], promoted);
    assert!(c.master.is_linked_to(new_port) && c.replicas[other].is_linked_to(new_port));

    eprintln!("failover webhook answered in {failover_ms} ms, demotion in {demote_ms} ms");
    no_secrets(&bodies, "API answers");
    no_secrets(&svc.log(), "serve log");
    no_secrets(&file, "events file");
}
