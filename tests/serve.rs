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
use support::redis::{info_field, wait_for, RedisCluster, RedisNode};
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
    support::fixtures::starts_now(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
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
        .replace(
            "alertname=\\\"RedisDown\\\"",
            "alertname=\\\"PikaRoleMismatch\\\"",
        )
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
    // Defaults for these tests unless the caller sets them.
    let mut policy = policy.to_string();
    for (k, v) in [("confirm_window", "\"200ms\""), ("link_timeout", "\"5s\"")] {
        if !policy.contains(k) {
            policy.push_str(&format!("\n{k} = {v}"));
        }
    }
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
    assert!(
        reason.contains(&old) && reason.contains("promoting"),
        "{reason}"
    );
    let promoted = ans["plan"]["action"]["promote"]
        .as_str()
        .unwrap()
        .to_string();
    let p = replica_index(&c, &promoted);
    let other = 1 - p;
    assert_eq!(c.replicas[p].role(), "master");
    let new_port = c.replicas[p].port();
    wait_for(
        Duration::from_secs(10),
        "other replica follows the new master",
        || c.replicas[other].is_linked_to(new_port),
    );
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
    assert_eq!(
        ev["alerts"][0]["labels"]["instance"],
        format!("redis://{old}")
    );
    assert_eq!(ev["alerts"][0]["labels"]["cluster"], CLUSTER);
    let out = &ev["outcome"];
    assert_eq!(out["result"]["kind"], "applied");
    let steps = out["steps"].as_array().unwrap();
    assert!(steps.len() >= 4, "{out}");
    for st in steps {
        assert_eq!(st["ok"], true, "{st}");
        assert!(st["millis"].as_u64().is_some(), "{st}");
    }
    let kinds: Vec<&str> = steps
        .iter()
        .map(|s| s["step"]["step"].as_str().unwrap())
        .collect();
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
    wait_for(
        Duration::from_secs(10),
        "old master follows the new one",
        || c.master.is_linked_to(new_port),
    );
    // CONFIG REWRITE persisted the demotion.
    assert!(
        c.master
            .conf_text()
            .contains(&format!("replicaof 127.0.0.1 {new_port}")),
        "{}",
        c.master.conf_text()
    );
    assert_eq!(
        epoch(&recorded(&svc).await),
        e0 + 1,
        "a demotion keeps the epoch"
    );

    // --- idempotency: the same firing payload again after convergence.
    let (st, body) = svc.post("/v1/alerts", BEARER, payload).await;
    bodies.push_str(&body);
    assert_eq!(st, 200, "{body}");
    let a = json(&body);
    assert_eq!(a["clusters"][CLUSTER]["action"], "no_action", "{body}");
    assert_eq!(
        a["clusters"][CLUSTER]["result"]["kind"], "no_action",
        "{body}"
    );
    let rec = recorded(&svc).await;
    assert_eq!(epoch(&rec), e0 + 1);
    assert_eq!(rec["master"], promoted);
    assert!(c.master.is_linked_to(new_port) && c.replicas[other].is_linked_to(new_port));

    eprintln!("failover webhook answered in {failover_ms} ms, demotion in {demote_ms} ms");
    no_secrets(&bodies, "API answers");
    no_secrets(&svc.log(), "serve log");
    no_secrets(&file, "events file");
}

/// Count reconcile events in the JSON-lines file whose plan action is `action`.
fn file_events(s: &Setup, action: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(s.events_file()).unwrap_or_default();
    let evs: Vec<Value> = text.lines().map(json).collect();
    let reconciles = evs.iter().filter(|e| e["kind"] == "reconcile").count();
    let matching = evs
        .iter()
        .filter(|e| e["kind"] == "reconcile" && e["outcome"]["plan"]["action"]["kind"] == action)
        .count();
    (reconciles, matching)
}

/// N identical firing webhooks at once against a dead master: exactly one failover (epoch +1)
/// and a small, bounded number of INFO calls per surviving node (single flight + one
/// coalesced follow-up), not one look per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_webhooks_fail_over_once() {
    // 1000 at once is fine on 2 cores: the requests only queue on the single flight, the
    // service does one reconcile (+ one follow-up) for all of them. ulimit -n is checked by
    // reqwest/axum failing loudly, not silently.
    const N: usize = 1000;
    let mut c = RedisCluster::start(2, Some(PASSWORD));
    // The poller ticks once at start, then not again during the test: every INFO counted
    // below comes from reconciles.
    let s = setup(&c, "poll_interval = \"1h\"", "confirm_window = \"2s\"");
    record(&s, &c.master);
    let svc = Service::start(&s.config).await;
    let e0 = epoch(&recorded(&svc).await);
    // Let the poller's first (immediate) tick finish before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<u64> = c.replicas.iter().map(info_calls).collect();

    let payload = master_down_payload(&c.master);
    c.master.kill9();
    let t = Instant::now();
    let reqs = (0..N).map(|_| {
        let client = svc.client.clone();
        let url = svc.url("/v1/alerts");
        let body = payload.clone();
        async move {
            let r = client
                .post(url)
                .bearer_auth(BEARER)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("webhook request");
            let st = r.status().as_u16();
            (st, r.text().await.unwrap_or_default())
        }
    });
    let answers = futures_util::future::join_all(reqs).await;
    let all_ms = t.elapsed().as_millis();
    let after: Vec<u64> = c.replicas.iter().map(info_calls).collect();

    let mut failovers = 0;
    for (st, body) in &answers {
        assert_eq!(*st, 200, "{body}");
        let a = json(body);
        match a["clusters"][CLUSTER]["action"].as_str() {
            Some("failover") => failovers += 1,
            Some("no_action") => {}
            other => panic!("unexpected action {other:?}: {body}"),
        }
    }
    // Every answer is either the failover's outcome (joined it) or a later no-op.
    assert!(failovers >= 1);
    let rec = recorded(&svc).await;
    assert_eq!(epoch(&rec), e0 + 1, "exactly one failover: {rec}");
    let (reconciles, failover_events) = file_events(&s, "failover");
    assert_eq!(failover_events, 1, "one failover in the audit trail");
    // All requests arrive during the failover (its 2 s confirmation window) and share ONE
    // queued follow-up. (With a 200 ms window, measured: the 1000 requests trickle in over
    // ~1 s of connection set-up, so 5 to 29 short no-op follow-ups ran, still one failover.)
    assert!(
        reconciles <= 3,
        "{N} duplicates ran {reconciles} reconciles; expected the single flight to coalesce them"
    );
    // Per node and reconcile: two looks (one INFO each), plus the promote/link waits of the
    // failover and our two INFO commandstats.
    let calls: Vec<u64> = before.iter().zip(&after).map(|(b, a)| a - b).collect();
    for (i, n) in calls.iter().enumerate() {
        assert!(
            *n <= 20,
            "replica {i}: {n} INFO calls for {N} duplicate webhooks ({reconciles} reconciles)"
        );
    }
    eprintln!(
        "{N} concurrent webhooks: all answered in {all_ms} ms; {reconciles} reconciles; \
         {failovers} answers carried the failover; INFO calls per surviving node: {calls:?}"
    );
    no_secrets(&svc.log(), "serve log");
}

/// Bad requests get their 4xx and leave the service serving: a good webhook right after works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_keeps_the_service_serving() {
    let c = RedisCluster::start(1, Some(PASSWORD));
    let s = setup(&c, "poll_interval = \"500ms\"", "");
    let svc = Service::start(&s.config).await;
    let good = master_down_payload(&c.master);
    let post = |body: Vec<u8>, ct: &'static str, auth: Option<&'static str>| {
        let mut r = svc
            .client
            .post(svc.url("/v1/alerts"))
            .header("content-type", ct)
            .body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        async move {
            let r = r.send().await.expect("request");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let bearer: &'static str = Box::leak(format!("Bearer {BEARER}").into_boxed_str());
    let json_ct = "application/json";
    let mut bodies = String::new();
    type Case = (
        &'static str,
        u16,
        Vec<u8>,
        &'static str,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        ("no credentials", 401, good.clone(), json_ct, None),
        (
            "wrong token",
            401,
            good.clone(),
            json_ct,
            Some("Bearer nope"),
        ),
        (
            "not JSON",
            400,
            b"{\"version\":".to_vec(),
            json_ct,
            Some(bearer),
        ),
        (
            "wrong version",
            400,
            String::from_utf8(good.clone())
                .unwrap()
                .replace("\"version\":\"4\"", "\"version\":\"3\"")
                .into_bytes(),
            json_ct,
            Some(bearer),
        ),
        (
            "deep nesting",
            400,
            [b'['; 5000].to_vec(),
            json_ct,
            Some(bearer),
        ),
        ("too large", 413, vec![b' '; 70_000], json_ct, Some(bearer)),
        ("text/plain", 415, good.clone(), "text/plain", Some(bearer)),
    ];
    for (what, want, body, ct, auth) in cases {
        let (st, text) = post(body, ct, auth).await;
        assert_eq!(st, want, "{what}: {text}");
        bodies.push_str(&text);
        let h = svc.client.get(svc.url("/healthz")).send().await.unwrap();
        assert_eq!(h.status(), 200, "healthz after {what}");
    }
    // No record yet and a clean picture: the good alert bootstraps the record.
    let (st, text) = post(good, json_ct, Some(bearer)).await;
    assert_eq!(st, 200, "{text}");
    bodies.push_str(&text);
    let a = json(&text);
    assert_eq!(a["clusters"][CLUSTER]["action"], "bootstrap", "{text}");
    assert_eq!(recorded(&svc).await["master"], c.master.addr().to_string());
    // Every answer was counted by outcome.
    let m = svc
        .client
        .get(svc.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (outcome, n) in [
        ("unauthorized", 2),
        ("bad_request", 3),
        ("too_large", 1),
        ("unsupported_media_type", 1),
        ("handled", 1),
    ] {
        let line = format!("pika_remedy_webhooks_total{{outcome=\"{outcome}\"}} {n}");
        assert!(m.contains(&line), "missing `{line}` in /metrics:\n{m}");
    }
    no_secrets(&bodies, "API answers");
    no_secrets(&svc.log(), "serve log");
}

/// Operator API: pause → a master-down alert does nothing ("cluster is paused"); resume; a
/// manual failover to a named replica over the API works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_pause_resume_and_manual_failover() {
    let mut c = RedisCluster::start(2, Some(PASSWORD));
    let s = setup(&c, "poll_interval = \"500ms\"", "");
    record(&s, &c.master);
    let svc = Service::start(&s.config).await;
    let e0 = epoch(&recorded(&svc).await);

    let (st, body) = svc.post("/v1/pause", BEARER, Vec::new()).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["paused"], true);
    let payload = master_down_payload(&c.master);
    c.master.kill9();
    let (st, body) = svc.post("/v1/alerts", BEARER, payload).await;
    assert_eq!(st, 200, "{body}");
    let a = json(&body);
    assert_eq!(a["clusters"][CLUSTER]["action"], "no_action", "{body}");
    assert!(
        a["clusters"][CLUSTER]["reason"]
            .as_str()
            .unwrap()
            .contains("cluster is paused"),
        "{body}"
    );
    assert_eq!(epoch(&recorded(&svc).await), e0);
    assert!(c.replicas.iter().all(|r| r.role() == "slave"));
    let (_, view) = svc.get(&format!("/v1/clusters/{CLUSTER}"), BEARER).await;
    assert_eq!(json(&view)["effectively_paused"], true, "{view}");

    let (st, body) = svc.post("/v1/resume", BEARER, Vec::new()).await;
    assert_eq!(st, 200, "{body}");
    // A manual failover to the second replica (not necessarily the one ranked first).
    let to = c.replicas[1].addr().to_string();
    let (st, body) = svc
        .post(
            &format!("/v1/clusters/{CLUSTER}/failover"),
            BEARER,
            format!("{{\"to\":\"{to}\"}}").into_bytes(),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let o = &json(&body)["outcome"];
    assert_eq!(o["plan"]["action"]["kind"], "failover", "{body}");
    assert_eq!(o["plan"]["action"]["promote"], to, "{body}");
    assert_eq!(o["result"]["kind"], "applied", "{body}");
    assert_eq!(c.replicas[1].role(), "master");
    let port = c.replicas[1].port();
    wait_for(
        Duration::from_secs(10),
        "replica 0 follows the new master",
        || c.replicas[0].is_linked_to(port),
    );
    let rec = recorded(&svc).await;
    assert_eq!(rec["master"], to);
    assert_eq!(epoch(&rec), e0 + 1);
    // Audit: pause and resume are recorded as control events, the failover with source api.
    let (_, evs) = svc.get("/v1/events", BEARER).await;
    let evs = json(&evs);
    let evs = evs.as_array().unwrap();
    assert_eq!(evs.iter().filter(|e| e["kind"] == "control").count(), 2);
    assert!(evs
        .iter()
        .any(|e| e["source"] == "api" && e["outcome"]["plan"]["action"]["kind"] == "failover"));
    no_secrets(&svc.log(), "serve log");
}

/// The local coordinator's generation counter (bumped on every lock acquisition).
fn generation(s: &Setup) -> u64 {
    std::fs::read_to_string(s.coord_dir().join(format!("{CLUSTER}.generation")))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// SIGTERM while a failover holds the lock: new work gets 503, the in-flight reconcile
/// finishes (its webhook gets 200), the process exits 0 within the grace period, and the
/// lock is free right after (a CLI `demote` takes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_the_in_flight_reconcile() {
    const GRACE: Duration = Duration::from_secs(10);
    let mut c = RedisCluster::start(2, Some(PASSWORD));
    let s = setup(
        &c,
        "poll_interval = \"500ms\"\nshutdown_grace = \"10s\"",
        "confirm_window = \"1s\"",
    );
    record(&s, &c.master);
    let mut svc = Service::start(&s.config).await;
    let g0 = generation(&s);

    // A stopped replica accepts TCP connections (kernel backlog) but never answers: every
    // look waits for it until the connect timeout (500 ms, AUTH is part of the connection
    // set-up), so the reconcile takes ~2 s, ~1.5 s of them under the lock (confirm window 1 s
    // + the second look).
    let stopped_pid = redis_pid(&c.replicas[1]);
    svc::signal_pid(stopped_pid, "STOP");
    let payload = master_down_payload(&c.master);
    c.master.kill9();
    let t0 = Instant::now();
    let hook = {
        let client = svc.client.clone();
        let url = svc.url("/v1/alerts");
        let body = payload.clone();
        tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(BEARER)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("in-flight webhook");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        })
    };
    let locked = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if generation(&s) > g0 {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    assert!(
        locked,
        "the failover never took the lock; log:\n{}",
        svc.log()
    );
    let t_lock = t0.elapsed();
    svc.signal("TERM");
    let t_term = Instant::now();

    // While draining: new work is refused with 503 (Alertmanager retries), not dropped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (st, body) = svc.post("/v1/alerts", BEARER, payload).await;
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    let r = svc.client.get(svc.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);

    let (st, body) = hook.await.unwrap();
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    let a = json(&body);
    assert_eq!(a["clusters"][CLUSTER]["action"], "failover", "{body}");
    assert_eq!(
        a["clusters"][CLUSTER]["result"]["kind"], "applied",
        "{body}"
    );
    let status = svc
        .wait_exit(GRACE + Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("serve did not exit; log:\n{}", svc.log()));
    let exit_after = t_term.elapsed();
    assert_eq!(status.code(), Some(0), "log:\n{}", svc.log());
    assert!(
        exit_after < GRACE + Duration::from_secs(2),
        "{exit_after:?}"
    );
    let log = svc.log();
    let i_sig = log
        .find("shutdown: refusing new work, waiting for in-flight reconciles")
        .unwrap_or_else(|| panic!("no shutdown line:\n{log}"));
    let i_done = log[i_sig..]
        .find("reconcile done")
        .unwrap_or_else(|| panic!("the reconcile did not finish after SIGTERM:\n{log}"));
    assert!(
        log[i_sig + i_done..].contains("shutdown: no reconcile in flight"),
        "{log}"
    );
    assert!(log.contains("pika-remedy stopped"), "{log}");

    // The lock is free: the CLI takes it and repairs the replica we had stopped.
    svc::signal_pid(stopped_pid, "CONT");
    let promoted = a["clusters"][CLUSTER]["plan"]["action"]["promote"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(promoted, c.replicas[0].addr().to_string());
    let g1 = generation(&s);
    let (code, out, err) = cli(
        &[
            "demote",
            "--config",
            s.config_arg(),
            "--cluster",
            CLUSTER,
            "--node",
            &c.replicas[1].addr().to_string(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "demote after shutdown:\n{out}\n{err}");
    assert!(generation(&s) > g1);
    let port = c.replicas[0].port();
    wait_for(
        Duration::from_secs(10),
        "stopped replica follows the new master",
        || c.replicas[1].is_linked_to(port),
    );
    eprintln!(
        "lock taken {:.1}s after the webhook; SIGTERM → exit 0 in {:.1}s (grace {GRACE:?})",
        t_lock.as_secs_f64(),
        exit_after.as_secs_f64()
    );
    no_secrets(&log, "serve log");
    no_secrets(&(out + &err), "demote output");
}

/// A minimal stand-in for a Consul agent whose KV answers fail: `/v1/status/leader` says
/// there is a leader (so the service is ready), every other call gets HTTP 500 with Consul's
/// "ACL not found" text. Counts the requests that carried `token` in `X-Consul-Token`.
fn fake_consul(token: &'static str) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = support::ports::listen();
    let port = l.local_addr().unwrap().port();
    let with_token = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&with_token);
    std::thread::spawn(move || {
        // Lives as long as the test process; each connection is handled and closed.
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let seen = std::sync::Arc::clone(&seen);
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                let mut first = String::new();
                if r.read_line(&mut first).unwrap_or(0) == 0 {
                    return;
                }
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if lower.starts_with("x-consul-token:") && h.contains(token) {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                let (status, text) = if first.starts_with("GET /v1/status/leader") {
                    ("200 OK", "\"127.0.0.1:8300\"")
                } else {
                    (
                        "500 Internal Server Error",
                        "rpc error making call: ACL not found",
                    )
                };
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
            });
        }
    });
    (port, with_token)
}

/// Secrets never show up: the node password, the webhook token and the Consul token are all
/// in use (nodes polled with AUTH, webhooks authenticated, Consul called with the token and
/// failing), and none of them appears in the log, the answers, the events or /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_or_answers_with_consul() {
    const CONSUL_TOKEN: &str = "c0nsul-acl-t0ken-Qw8";
    let c = RedisCluster::start(1, Some(PASSWORD));
    let (consul_port, with_token) = fake_consul(CONSUL_TOKEN);
    let s = setup(&c, "poll_interval = \"200ms\"", "");
    let token_file = s.dir.path().join("consul-token");
    std::fs::write(&token_file, CONSUL_TOKEN).unwrap();
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(
            "kind = \"local\"",
            &format!(
                "kind = \"consul\"\n[coordinator.consul]\naddress = \"http://127.0.0.1:{consul_port}\"\n\
                 token = {{ file = \"{}\" }}",
                token_file.display()
            ),
        );
    std::fs::write(&s.config, text).unwrap();
    let svc = Service::start(&s.config).await;
    let mut bodies = String::new();
    // The coordinator fails: the webhook is answered 503 (retryable) with the reason.
    let (st, body) = svc
        .post("/v1/alerts", BEARER, master_down_payload(&c.master))
        .await;
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("ACL not found"), "{body}");
    bodies.push_str(&body);
    for path in ["/v1/clusters", "/v1/events", "/v1/clusters/mymaster"] {
        let (st, body) = svc.get(path, BEARER).await;
        assert_eq!(st, 200, "{path}: {body}");
        bodies.push_str(&body);
    }
    let (st, body) = svc.get("/v1/events", "wrong-token").await;
    assert_eq!(st, 401);
    bodies.push_str(&body);
    let metrics = svc
        .client
        .get(svc.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    bodies.push_str(&metrics);
    assert!(
        metrics.contains("pika_remedy_node_up{cluster=\"mymaster\""),
        "the poller reached the nodes (AUTH with the password):\n{metrics}"
    );
    assert!(
        with_token.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "Consul never saw the token"
    );
    let log = svc.log();
    assert!(
        log.contains("ACL not found"),
        "the Consul error is logged:\n{log}"
    );
    let secrets = [PASSWORD, BEARER, CONSUL_TOKEN];
    assert_no_secret(&log, "serve log", &secrets);
    assert_no_secret(&bodies, "API answers and /metrics", &secrets);
    let events = std::fs::read_to_string(s.events_file()).unwrap_or_default();
    assert_no_secret(&events, "events file", &secrets);
}

/// SIGTERM while a reconcile outlasts `shutdown_grace`: the process still exits 0 soon after
/// the grace period (it does not hang on the running reconcile), says so in the log, the
/// in-flight webhook gets no 2xx (Alertmanager retries), and the lock is free afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_up_after_the_grace_period() {
    let mut c = RedisCluster::start(2, Some(PASSWORD));
    // The failover sleeps 5 s under the lock (confirmation window) before acting.
    let s = setup(
        &c,
        "poll_interval = \"500ms\"\nshutdown_grace = \"1s\"",
        "confirm_window = \"5s\"",
    );
    record(&s, &c.master);
    let mut svc = Service::start(&s.config).await;
    let g0 = generation(&s);
    let payload = master_down_payload(&c.master);
    c.master.kill9();
    let hook = {
        let client = svc.client.clone();
        let url = svc.url("/v1/alerts");
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(BEARER)
                .header("content-type", "application/json")
                .body(payload)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while generation(&s) == g0 {
        assert!(
            Instant::now() < deadline,
            "no lock taken; log:\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    svc.signal("TERM");
    let t = Instant::now();
    let status = svc
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("serve hung after the grace period; log:\n{}", svc.log()));
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0), "log:\n{}", svc.log());
    // grace 1 s + CLOSE_MARGIN 1 s, plus slack for a loaded machine.
    assert!(took < Duration::from_secs(4), "exit took {took:?}");
    let log = svc.log();
    assert!(
        log.contains("a reconcile is still running after the grace period"),
        "{log}"
    );
    // No answer at all (connection closed) is fine too: Alertmanager retries.
    if let Ok(st) = hook.await.unwrap() {
        assert!(
            st >= 500,
            "the interrupted webhook must not be answered 2xx: {st}"
        );
    }
    // Nothing was done (the process died in the confirmation window) and the lock is free:
    // a CLI failover takes it and completes the job.
    assert!(c.replicas.iter().all(|r| r.role() == "slave"));
    let (code, out, err) = cli(
        &["failover", "--config", s.config_arg(), "--cluster", CLUSTER],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "failover after shutdown:\n{out}\n{err}");
    assert_eq!(
        c.replicas.iter().filter(|r| r.role() == "master").count(),
        1
    );
    eprintln!(
        "SIGTERM with a 1 s grace: exit 0 after {:.1}s",
        took.as_secs_f64()
    );
    no_secrets(&log, "serve log");
}

/// The same failover with a real etcd (auth enabled) as coordinator: the etcd password is in
/// use for every record/lock call and never appears in the log or the answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_with_etcd_auth_leaks_no_secret() {
    const ETCD_PASSWORD: &str = "etcd-r00t-pw-Kd3";
    let etcd = support::etcd::EtcdServer::start_new();
    let ep = etcd.endpoint();
    for args in [vec!["user", "add", "root"], vec!["auth", "enable"]] {
        let mut cmd =
            std::process::Command::new(support::redis::require_binary("etcdctl", "etcd-client"));
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={ep}"))
            .args(&args);
        if args[0] == "user" {
            cmd.arg(format!("--new-user-password={ETCD_PASSWORD}"));
        }
        let out = cmd.output().expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut c = RedisCluster::start(2, Some(PASSWORD));
    let s = setup(&c, "poll_interval = \"500ms\"", "");
    let pw_file = s.dir.path().join("etcd-password");
    std::fs::write(&pw_file, ETCD_PASSWORD).unwrap();
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "kind = \"local\"",
        &format!(
            "kind = \"etcd\"\n[coordinator.etcd]\nendpoints = [\"{ep}\"]\nprefix = \"/serve-test\"\n\
             user = \"root\"\npassword = {{ file = \"{}\" }}",
            pw_file.display()
        ),
    );
    std::fs::write(&s.config, text).unwrap();
    record(&s, &c.master);
    let svc = Service::start(&s.config).await;
    let e0 = epoch(&recorded(&svc).await);
    let payload = master_down_payload(&c.master);
    c.master.kill9();
    let (st, body) = svc.post("/v1/alerts", BEARER, payload).await;
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    let a = json(&body);
    assert_eq!(a["clusters"][CLUSTER]["action"], "failover", "{body}");
    assert_eq!(
        a["clusters"][CLUSTER]["result"]["kind"], "applied",
        "{body}"
    );
    let rec = recorded(&svc).await;
    assert_eq!(epoch(&rec), e0 + 1);
    let (_, evs) = svc.get("/v1/events", BEARER).await;
    let secrets = [PASSWORD, BEARER, ETCD_PASSWORD];
    assert_no_secret(&svc.log(), "serve log", &secrets);
    assert_no_secret(&(body + &evs + &rec.to_string()), "API answers", &secrets);
}
