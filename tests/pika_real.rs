//! The real-Pika suite: the `pika-remedy` binary (`serve`, the CLI) against real Pika servers
//! (`PIKA_BIN`; in CI `../shared/pika/bin/pika`). Every case is judged from `INFO` on the nodes
//! and from the keys, not from pika-remedy's own report. Without `PIKA_BIN` each case prints
//! `SKIPPED …` and passes, except under `CI=true`, where it fails naming `PIKA_BIN`.

#[path = "support/serve.rs"]
mod serve;
mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use serve::{assert_no_secret, cli, Service};
use support::real_pika::{pika_or_skip, PikaNode, PikaOptions, PikaSet};
use support::redis::{info_field, resp_call, resp_calls, wait_for, wait_until};

const CLUSTER: &str = "mymaster";
const BEARER: &str = "pika-real-bearer-7f3a";
const PASSWORD: &str = "pika-real-pw-91c2";
/// Upper bound for a Pika link to come up in these tests (a forced full sync takes ~8 s).
const SYNC: Duration = Duration::from_secs(40);

/// The captured firing `RedisDown` payload, about `addr`, as alert `alertname`.
fn payload(alertname: &str, addr: &str) -> Vec<u8> {
    support::fixtures::firing_about(addr, alertname)
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn arg(&self) -> &str {
        self.config.to_str().expect("utf-8 path")
    }
}

/// A config for `set` with the local coordinator, Pika-sized link timeouts and `extra_policy`.
fn setup(set: &PikaSet, extra_policy: &str) -> Setup {
    setup_cluster(&set.cluster_toml(CLUSTER), extra_policy, "2s")
}

/// A `[[cluster]]` block for nodes started one by one (no password).
fn cluster_of(nodes: &[&PikaNode]) -> String {
    let list: Vec<String> = nodes
        .iter()
        .map(|n| format!("{{ addr = \"{}\" }}", n.addr()))
        .collect();
    format!(
        "[[cluster]]\nname = \"{CLUSTER}\"\nnodes = [{}]\n",
        list.join(", ")
    )
}

/// A config for the `cluster` block; `check_interval = "0s"` turns the periodic check off.
fn setup_cluster(cluster: &str, extra_policy: &str, check_interval: &str) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("pika-remedy-real-")
        .tempdir()
        .expect("temp dir");
    let bearer = dir.path().join("bearer");
    std::fs::write(&bearer, format!("{BEARER}\n")).expect("bearer");
    std::fs::create_dir_all(dir.path().join("coord")).expect("coord dir");
    let text = format!(
        r#"
[service]
instance_id = "pika-real"
events_file = "{events}"
poll_interval = "500ms"
# These tests drive reconciles by alerts and API calls and assert on their answers; the
# poller's own triggers (service.self_trigger) would act first.
self_trigger = false
# The periodic check finishes what a webhook could not see: a slave whose INFO timed out
# during the failover (Pika blocks INFO ~2.5 s per DB while it stops its rsync clients after
# its master died) is repointed by the next check.
check_interval = "{check_interval}"
[timeouts]
connect = "500ms"
command = "2s"
[policy]
confirm_window = "200ms"
promote_timeout = "10s"
link_timeout = "15s"
detach_timeout = "20s"
switchover_pause = "10s"
lock_ttl = "120s"
{extra_policy}
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
    );
    let config = dir.path().join("pika-remedy.toml");
    std::fs::write(&config, text).expect("config");
    Setup { dir, config }
}

/// POST a webhook the way Alertmanager does: a 5xx is retried (here every 500 ms, at most 60
/// times); returns the last answer and how many tries it took. Right after a kill -9 of its
/// master a Pika slave's `INFO` can block for seconds (seen: 3.9 s and 7.9 s with 3 DBs), so
/// the first look may get too few observations and answer 503.
async fn alert(svc: &Service, body: Vec<u8>) -> (u16, String, usize) {
    let mut tries = 0;
    loop {
        tries += 1;
        let (st, text) = svc.post("/v1/alerts", BEARER, body.clone()).await;
        if st < 500 || tries >= 60 {
            return (st, text, tries);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn record_master(s: &Setup, master: &str) {
    let (code, out, err) = cli(
        &[
            "record",
            "--config",
            s.arg(),
            "--cluster",
            CLUSTER,
            "--master",
            master,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "record failed:\n{out}\n{err}");
}

async fn recorded(svc: &Service) -> Value {
    let (st, body) = svc.get(&format!("/v1/clusters/{CLUSTER}"), BEARER).await;
    assert_eq!(st, 200, "{body}");
    json(&body)["record"].clone()
}

/// The recorded master, read from the local coordinator's record file (the CLI runs leave no
/// service to ask).
fn recorded_master_in_file(s: &Setup) -> String {
    let p = s
        .dir
        .path()
        .join("coord")
        .join(format!("{CLUSTER}.topology.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let v = json(&text);
    v["record"]["master"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no master in {text}"))
}

/// `SET key value` on a node, with the set's password. `Ok` only for an acknowledged write.
fn set_key(port: u16, pw: Option<&str>, key: &str, value: &str) -> Result<String, String> {
    resp_call(port, pw, &["SET", key, value])
}

fn get_key(port: u16, pw: Option<&str>, key: &str) -> Option<String> {
    resp_call(port, pw, &["GET", key])
        .ok()
        .filter(|v| v != "(nil)")
}

/// `SET key value` in DB `db` of a node (SELECT on the same connection); panics on error.
fn set_in_db(port: u16, pw: Option<&str>, db: u32, key: &str, value: &str) {
    let db = db.to_string();
    resp_calls(port, pw, &[&["SELECT", &db], &["SET", key, value]])
        .unwrap_or_else(|e| panic!("SET {key} in db{db} on {port}: {e}"));
}

/// `GET key` in DB `db` of a node; `None` for a missing key or any error.
fn get_in_db(port: u16, pw: Option<&str>, db: u32, key: &str) -> Option<String> {
    let db = db.to_string();
    resp_calls(port, pw, &[&["SELECT", &db], &["GET", key]])
        .ok()
        .filter(|v| v != "(nil)")
}

fn replid(n: &PikaNode) -> String {
    info_field(&n.info_replication(), "ReplicationID").unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------

/// kill -9 of the master → webhook → one slave promoted, the other repointed (link up), epoch
/// plus one; the old master restarts as `role:master` (the bug) and takes a write (it has diverged)
/// → role-mismatch webhook → demoted with `force`, resynced, has the new master's keys and not
/// its diverged one; restarts of the promoted and of the demoted node keep their roles.
async fn failover_demote_restart(dbs: u32, password: Option<&str>) {
    let Some(bin) = pika_or_skip("pika_real failover_demote_restart") else {
        return;
    };
    let mut set = PikaSet::start(
        &bin,
        2,
        PikaOptions {
            password: password.map(str::to_string),
            databases: Some(dbs),
            ..PikaOptions::default()
        },
    );
    let pw = password;
    for db in 0..dbs {
        set_in_db(set.master.port(), pw, db, "before", &format!("b{db}"));
    }
    let s = setup(&set, "");
    record_master(&s, &set.master.addr().to_string());
    let svc = Service::start(&s.config).await;
    let e0 = recorded(&svc).await["epoch"].as_u64().expect("epoch");
    // The slaves have the data before the kill.
    for r in &set.replicas {
        let p = r.port();
        wait_for(SYNC, "slaves have the pre-kill keys", || {
            (0..dbs).all(|db| get_in_db(p, pw, db, "before").as_deref() == Some(&format!("b{db}")))
        });
    }

    // --- kill -9 → master-down webhook → failover.
    let old = set.master.addr().to_string();
    set.master.kill9();
    let t = Instant::now();
    let (st, body, tries) = alert(&svc, payload("PikaMasterDown", &old)).await;
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    eprintln!("master-down answer after {tries} tries: {body}");
    let promoted_port = {
        let mut found = None;
        wait_for(SYNC, "a slave is promoted to role:master", || {
            found = set
                .replicas
                .iter()
                .find(|r| {
                    r.try_cmd(&["INFO", "replication"])
                        .is_ok_and(|i| info_field(&i, "role").as_deref() == Some("master"))
                })
                .map(PikaNode::port);
            found.is_some()
        });
        found.expect("promoted")
    };
    let promote_ms = t.elapsed().as_millis();
    let pi = set.index_of(&format!("127.0.0.1:{promoted_port}"));
    let oi = if pi == 1 { 2 } else { 1 };
    let other_port = set.node_mut(oi).port();
    if !wait_until(SYNC, || set.node_mut(oi).is_linked_to(promoted_port)) {
        let n = set.node_mut(oi);
        panic!(
            "the other slave does not follow the new master with link up:\n{}\nlog:\n{}\nevents:\n{}",
            n.try_cmd(&["INFO", "replication"]).unwrap_or_default(),
            n.log_tail(),
            std::fs::read_to_string(s.dir.path().join("events.jsonl")).unwrap_or_default()
        );
    }
    assert_eq!(
        set.node_mut(oi).role(),
        "slave",
        "exactly one node is promoted"
    );
    let rec = recorded(&svc).await;
    assert_eq!(rec["master"], format!("127.0.0.1:{promoted_port}"), "{rec}");
    assert_eq!(rec["epoch"].as_u64(), Some(e0 + 1), "{rec}");
    // Writes on the new master reach the other slave, in every DB.
    for db in 0..dbs {
        set_in_db(promoted_port, pw, db, "after", &format!("a{db}"));
    }
    wait_for(SYNC, "writes on the new master replicate", || {
        (0..dbs)
            .all(|db| get_in_db(other_port, pw, db, "after").as_deref() == Some(&format!("a{db}")))
    });

    // --- the old master restarts as role:master (the bug) and diverges.
    set.master.restart();
    assert_eq!(
        set.master.role(),
        "master",
        "the bug: the old master restarts as master"
    );
    // The service may already be demoting it (its poller saw the restart): then the write is
    // refused by the write fence before the snapshot (NOPERM), not acknowledged and lost.
    match resp_calls(
        set.master.port(),
        pw,
        &[&["SELECT", "0"], &["SET", "diverged", "yes"]],
    ) {
        Ok(_) => {}
        Err(e) if e.contains("NOPERM") => eprintln!("the diverged write was fenced: {e}"),
        Err(e) => panic!("SET diverged on the restarted old master: {e}"),
    }
    let (st, body, _) = alert(&svc, payload("PikaRoleMismatch", &old)).await;
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    let old_port = set.master.port();
    wait_for(SYNC, "the old master follows the new one, link up", || {
        set.master.is_linked_to(promoted_port)
    });
    wait_for(
        SYNC,
        "the old master resynced: has the new master's keys",
        || {
            (0..dbs).all(|db| {
                get_in_db(old_port, pw, db, "after").as_deref() == Some(&format!("a{db}"))
            })
        },
    );
    assert_eq!(
        get_in_db(old_port, pw, 0, "diverged"),
        None,
        "the forced resync discarded the diverged key"
    );
    // The reconcile's event is written when its last step (the fence lifted) is done, which
    // can be after the link is up: wait for it (bounded).
    let events_path = s.dir.path().join("events.jsonl");
    wait_for(SYNC, "the demotion's event (SLAVEOF … force)", || {
        std::fs::read_to_string(&events_path)
            .unwrap_or_default()
            .contains("\"force\":true")
    });
    let events = std::fs::read_to_string(&events_path).unwrap_or_default();
    assert_eq!(recorded(&svc).await["epoch"].as_u64(), Some(e0 + 1));

    // --- restarts keep the roles (CONFIG REWRITE).
    let mut svc = svc;
    svc.kill(); // nothing may repair the roles for us now
    let pidx = set.index_of(&format!("127.0.0.1:{promoted_port}"));
    set.node_mut(pidx).restart();
    assert_eq!(
        set.node_mut(pidx).role(),
        "master",
        "the promoted node stays master"
    );
    set.master.restart();
    wait_for(
        SYNC,
        "the demoted node comes back as a slave of the new master",
        || set.master.is_linked_to(promoted_port),
    );
    wait_for(
        SYNC,
        "the other slave relinks after the master's restart",
        || set.node_mut(oi).is_linked_to(promoted_port),
    );
    for n in set.nodes() {
        assert_eq!(replid(n), replid(set.nodes()[pidx]), "one ReplicationID");
    }
    eprintln!(
        "pika failover: kill -9 → promoted seen in {promote_ms} ms after {tries} webhook tries (dbs={dbs})"
    );
    if let Some(p) = pw {
        assert_no_secret(&svc.log(), "serve log", &[p, BEARER]);
        assert_no_secret(&events, "events file", &[p, BEARER]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_demote_restart_one_db() {
    failover_demote_restart(1, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_demote_restart_three_dbs_with_auth() {
    failover_demote_restart(3, Some(PASSWORD)).await;
}

/// A master-down alert about a healthy Pika master: no mutating command reaches any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn false_alarm_on_a_healthy_master_changes_nothing() {
    let Some(bin) = pika_or_skip("pika_real false_alarm") else {
        return;
    };
    let set = PikaSet::start(&bin, 2, PikaOptions::default());
    let s = setup(&set, "");
    record_master(&s, &set.master.addr().to_string());
    let confs: Vec<String> = set.nodes().iter().map(|n| n.conf_text()).collect();
    let svc = Service::start(&s.config).await;
    let before = recorded(&svc).await;
    for _ in 0..3 {
        let (st, body) = svc
            .post(
                "/v1/alerts",
                BEARER,
                payload("PikaMasterDown", &set.master.addr().to_string()),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        let a = json(&body);
        assert_eq!(a["clusters"][CLUSTER]["action"], "no_action", "{body}");
    }
    // Judged on the nodes: same roles, links up, config files untouched (a SLAVEOF or
    // CONFIG REWRITE would have rewritten them), same record.
    set.wait_linked(Duration::from_secs(5));
    assert_eq!(set.master.role(), "master");
    for (n, c) in set.nodes().iter().zip(&confs) {
        assert_eq!(&n.conf_text(), c, "config of {} changed", n.addr());
    }
    assert_eq!(recorded(&svc).await, before);
}

// ---------------------------------------------------------------------------------------------
// Planned switchover under a writer.

/// A writer that sends `SET w:<n> <n>` to whichever node claims `role:master` and accepts
/// writes, re-discovering on any error; it remembers every acknowledged `n`.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    errors: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(ports: Vec<u16>, pw: Option<String>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicU64::new(0));
        let (s, a, e) = (stop.clone(), acked.clone(), errors.clone());
        let handle = std::thread::spawn(move || {
            let mut n: u64 = 0;
            let mut target: Option<u16> = None;
            let deadline = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Some(port) = target else {
                    target = ports.iter().copied().find(|p| {
                        resp_call(*p, pw.as_deref(), &["INFO", "replication"])
                            .is_ok_and(|i| info_field(&i, "role").as_deref() == Some("master"))
                    });
                    if target.is_none() {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    continue;
                };
                n += 1;
                match set_key(port, pw.as_deref(), &format!("w:{n}"), &n.to_string()) {
                    Ok(_) => a.lock().expect("acked").push(n),
                    Err(_) => {
                        e.fetch_add(1, Ordering::Relaxed);
                        target = None;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        Writer {
            stop,
            acked,
            errors,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (Vec<u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let acked = self.acked.lock().expect("acked").clone();
        (acked, self.errors.load(Ordering::Relaxed))
    }
}

/// Acknowledged writes missing on the node at `port`.
fn missing(port: u16, pw: Option<&str>, acked: &[u64]) -> Vec<u64> {
    acked
        .iter()
        .copied()
        .filter(|n| get_key(port, pw, &format!("w:{n}")).as_deref() != Some(&n.to_string()))
        .collect()
}

/// Three `switchover`s in a row on real Pika with a writer attached: each ends with one
/// master, the other two following it, exit 0, and 0 acknowledged writes missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_switchovers_under_a_writer_lose_nothing() {
    let Some(bin) = pika_or_skip("pika_real three_switchovers") else {
        return;
    };
    let set = PikaSet::start(&bin, 2, PikaOptions::default());
    let s = setup(&set, "");
    record_master(&s, &set.master.addr().to_string());
    let ports: Vec<u16> = set.nodes().iter().map(|n| n.port()).collect();
    let writer = Writer::start(ports.clone(), None);
    wait_until(Duration::from_secs(5), || {
        writer.acked.lock().map(|a| a.len() > 50).unwrap_or(false)
    });
    let mut report = Vec::new();
    for round in 1..=3 {
        let before = recorded_master_in_file(&s);
        let t = Instant::now();
        let (code, out, err) = cli(
            &["switchover", "--config", s.arg(), "--cluster", CLUSTER],
            Duration::from_secs(180),
        );
        let took = t.elapsed();
        assert_eq!(code, 0, "switchover {round} failed:\n{out}\n{err}");
        let after = recorded_master_in_file(&s);
        assert_ne!(before, after, "switchover {round} moved the master");
        let mport: u16 = after
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        // One master, the other two following it.
        wait_for(SYNC, "every other node follows the new master", || {
            set.nodes()
                .iter()
                .filter(|n| n.port() != mport)
                .all(|n| n.is_linked_to(mport))
        });
        let masters = set.nodes().iter().filter(|n| n.role() == "master").count();
        assert_eq!(masters, 1, "switchover {round}: one master");
        report.push(format!(
            "switchover {round}: {before} → {after} in {:.1}s",
            took.as_secs_f64()
        ));
        // Let the writer find the new master before the next round.
        let n0 = writer.acked.lock().map(|a| a.len()).unwrap_or(0);
        wait_until(Duration::from_secs(10), || {
            writer
                .acked
                .lock()
                .map(|a| a.len() > n0 + 50)
                .unwrap_or(false)
        });
    }
    let (acked, errors) = writer.finish();
    let final_master = recorded_master_in_file(&s);
    let fport: u16 = final_master
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let lost = missing(fport, None, &acked);
    for r in &report {
        eprintln!("{r}");
    }
    eprintln!(
        "writer: {} acknowledged, {errors} refused/failed attempts, {} acknowledged writes missing on the final master {final_master}",
        acked.len(),
        lost.len()
    );
    assert!(
        acked.len() > 150,
        "the writer kept writing ({})",
        acked.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged writes missing on the final master, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

// ---------------------------------------------------------------------------------------------
// Through the real alert pipeline: real Prometheus scraping `serve` and evaluating the shipped
// rules, real Alertmanager routing the shipped config to the webhook. No periodic check: every
// action comes from an alert.

fn is_action(e: &Value, action: &str, result: &str) -> bool {
    e["outcome"]["plan"]["action"]["kind"] == action && e["outcome"]["result"]["kind"] == result
}

#[test]
fn alert_pipeline_kill_promotes_and_restart_demotes() {
    use support::prom::{
        last_seq, wait_event, Alertmanager, Coord, Prometheus, Remedy, RemedyOptions,
    };
    let Some(bin) = pika_or_skip("pika_real alert_pipeline") else {
        return;
    };
    let mut set = PikaSet::start(&bin, 2, PikaOptions::default());
    let old = set.master.addr().to_string();
    let mut opts = RemedyOptions::new(Coord::Local, set.cluster_toml(CLUSTER));
    opts.service_extra = vec!["self_trigger = false".into()];
    opts.policy_extra = vec![
        "link_timeout = \"15s\"".into(),
        "detach_timeout = \"20s\"".into(),
        "lock_ttl = \"120s\"".into(),
    ];
    let remedy = Remedy::start(&opts);
    remedy.record(CLUSTER, &old);
    let am = Alertmanager::start(&remedy.webhook_url(), support::prom::TOKEN);
    let prom = Prometheus::start(remedy.port, am.port);
    wait_for(
        Duration::from_secs(30),
        "prometheus sees 3 Pika nodes up",
        || {
            prom.query("pika_remedy_node_up == 1")
                .is_ok_and(|v| v.len() == 3)
        },
    );

    // kill -9 → PikaMasterDown → Alertmanager → webhook → promotion.
    let seq = last_seq(&remedy, CLUSTER);
    let t = Instant::now();
    set.master.kill9();
    let e = wait_event(
        &remedy,
        CLUSTER,
        seq,
        Duration::from_secs(60),
        "applied failover",
        |e| is_action(e, "failover", "applied"),
    );
    let kill_to_applied = t.elapsed();
    assert_eq!(
        e["source"], "alertmanager",
        "the failover came from an alert"
    );
    let new = e["outcome"]["plan"]["action"]["promote"]
        .as_str()
        .expect("promote")
        .to_string();
    let ni = set.index_of(&new);
    let new_port = set.node_mut(ni).port();
    assert_eq!(set.node_mut(ni).role(), "master", "judged on the node");

    // Restart of the old master → PikaRoleMismatch → demotion, judged on the node.
    let seq = last_seq(&remedy, CLUSTER);
    let t = Instant::now();
    set.master.restart();
    let e = wait_event(
        &remedy,
        CLUSTER,
        seq,
        Duration::from_secs(60),
        "applied demotion",
        |e| is_action(e, "demote", "applied"),
    );
    let restart_to_demoted = t.elapsed();
    assert_eq!(
        e["source"], "alertmanager",
        "the demotion came from an alert"
    );
    assert_eq!(e["outcome"]["plan"]["action"]["node"], old.as_str());
    wait_for(SYNC, "the old master follows the new one, link up", || {
        set.master.is_linked_to(new_port)
    });
    let masters = set.nodes().iter().filter(|n| n.role() == "master").count();
    assert_eq!(masters, 1, "one master at the end");
    eprintln!(
        "pika alert pipeline: kill -9 → failover applied {:.2}s; restart → demotion applied {:.2}s",
        kill_to_applied.as_secs_f64(),
        restart_to_demoted.as_secs_f64()
    );
}

/// The Pika answers pika-remedy's plans rely on, seen on the real server: `SLAVEOF … force` is
/// a no-op on a slave already attached to that master; a master with a slave attached refuses
/// `SLAVEOF` with `already master of others`; writes on a slave are refused; there is no `ROLE`.
#[test]
fn pika_dialect_seen_for_real() {
    let Some(bin) = pika_or_skip("pika_real pika_dialect") else {
        return;
    };
    let set = PikaSet::start(&bin, 2, PikaOptions::default());
    let mport = set.master.port();
    let (s1, s2) = (&set.replicas[0], &set.replicas[1]);

    // An identical forced SLAVEOF: OK, and the link never drops (no resync).
    let r = s1.try_cmd(&["SLAVEOF", "127.0.0.1", &mport.to_string(), "force"]);
    assert_eq!(r.as_deref(), Ok("OK"), "{r:?}");
    for _ in 0..10 {
        assert!(
            s1.is_linked_to(mport),
            "the identical forced SLAVEOF broke the link"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Writes on a slave and ROLE.
    let w = s2
        .try_cmd(&["SET", "k", "v"])
        .expect_err("a slave refuses writes");
    assert!(w.contains("READONLY"), "{w}");
    let role = set.master.try_cmd(&["ROLE"]).expect_err("no ROLE on Pika");
    assert!(role.to_lowercase().contains("unknown command"), "{role}");

    // Promote s1; the old master still has s2 attached: SLAVEOF is refused.
    assert_eq!(s1.try_cmd(&["SLAVEOF", "NO", "ONE"]).as_deref(), Ok("OK"));
    wait_for(Duration::from_secs(10), "s1 is master", || {
        s1.role() == "master"
    });
    let e = set
        .master
        .try_cmd(&["SLAVEOF", "127.0.0.1", &s1.port().to_string()])
        .expect_err("a master with an attached slave refuses SLAVEOF");
    assert!(e.contains("already master of others"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Replicas that must never be promoted, blocking INFO, and the re-attach wait, built for real.

/// `repl_connect_status` tokens of a Pika slave's INFO (`db0:connected`, `db0:error`, …).
fn db_tokens(info: &str) -> Vec<String> {
    info.lines()
        .map(str::trim_end)
        .filter(|l| {
            l.starts_with("db") && !l.contains("binlog_offset") && !l.starts_with("db_repl")
        })
        .map(str::to_string)
        .collect()
}

fn events_text(s: &Setup) -> String {
    std::fs::read_to_string(s.dir.path().join("events.jsonl")).unwrap_or_default()
}

/// `n` keys `bulk:<i>` of `size` pseudo-random hex bytes (incompressible enough that a full
/// sync has real bytes to copy), written in batches on one connection each.
fn load_bulk(port: u16, n: usize, size: usize) {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut value = || {
        let mut v = String::with_capacity(size);
        while v.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push_str(&format!("{x:016x}"));
        }
        v.truncate(size);
        v
    };
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let owned: Vec<(String, String)> = chunk
            .iter()
            .map(|i| (format!("bulk:{i}"), value()))
            .collect();
        let cmds: Vec<[&str; 3]> = owned
            .iter()
            .map(|(k, v)| ["SET", k.as_str(), v.as_str()])
            .collect();
        let refs: Vec<&[&str]> = cmds.iter().map(|c| &c[..]).collect();
        resp_calls(port, None, &refs).unwrap_or_else(|e| panic!("bulk load on {port}: {e}"));
    }
}

/// Make the slave `c` of `master` diverge and end in Pika's per-DB sync error: `SLAVEOF NO
/// ONE`, writes of its own (its binlog is now ahead of the master's), then `SLAVEOF` the same
/// master without `force`. Pika answers the TrySync with an offset error and leaves the slave
/// at `db0:error` / `master_link_status:down`, never retrying (pika.md A.5, A.10).
fn diverge_into_link_error(c: &PikaNode, master: &PikaNode) {
    assert_eq!(c.cmd(&["SLAVEOF", "NO", "ONE"]), "OK");
    wait_for(Duration::from_secs(10), "c detached", || {
        c.role() == "master"
    });
    for i in 0..200 {
        c.cmd(&["SET", &format!("diverged:{i}"), "x"]);
    }
    let mport = master.port().to_string();
    assert_eq!(c.cmd(&["SLAVEOF", "127.0.0.1", &mport]), "OK");
    let mut last = String::new();
    let ok = wait_until(SYNC, || {
        last = c.try_cmd(&["INFO", "replication"]).unwrap_or_default();
        db_tokens(&last).iter().any(|t| t == "db0:error")
    });
    assert!(
        ok,
        "the diverged slave did not reach db0:error:\n{last}\nlog:\n{}",
        c.log_tail()
    );
    assert_eq!(
        info_field(&last, "master_link_status").as_deref(),
        Some("down")
    );
}

async fn snapshot(svc: &Service) -> Value {
    let (st, body) = svc.get(&format!("/v1/clusters/{CLUSTER}"), BEARER).await;
    assert_eq!(st, 200, "{body}");
    json(&body)
}

/// `INFO replication` on a raw connection that waits up to `timeout` for the answer (the
/// support client gives up after 5 s; a blocked Pika INFO can take longer).
fn info_patient(port: u16, timeout: Duration) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    loop {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(head) = text.find("\r\n") {
            let len: usize = text[1..head].parse().map_err(|_| text.clone())?;
            if buf.len() >= head + 2 + len + 2 {
                return Ok(text[head + 2..head + 2 + len].to_string());
            }
        }
        if Instant::now() >= deadline {
            return Err("timeout".into());
        }
    }
}

fn offset_of(n: &PikaNode) -> u64 {
    info_field(&n.info_replication(), "slave_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A slave in `db0:error` (diverged, binlog AHEAD of the healthy slave's, so an offset ranking
/// alone would pick it) is never promoted when the master dies: the healthy slave is. Judged
/// from INFO on the nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_in_link_error_is_never_promoted() {
    let Some(bin) = pika_or_skip("pika_real replica_in_link_error") else {
        return;
    };
    let mut set = PikaSet::start(&bin, 2, PikaOptions::default());
    set.master.cmd(&["SET", "before", "1"]);
    let (b_port, c_port) = (set.replicas[0].port(), set.replicas[1].port());
    wait_for(SYNC, "b has the key", || {
        get_key(b_port, None, "before").is_some()
    });
    diverge_into_link_error(&set.replicas[1], &set.master);
    // A write the error slave never gets: promoting it would lose it.
    set.master.cmd(&["SET", "later", "1"]);
    wait_for(SYNC, "b has the later key", || {
        get_key(b_port, None, "later").is_some()
    });
    let (ob, oc) = (offset_of(&set.replicas[0]), offset_of(&set.replicas[1]));
    assert!(
        oc > ob,
        "the error slave's binlog is ahead ({oc} > {ob}): offsets alone would pick it"
    );
    // No periodic check: it would repair the error slave (forced repoint) before the kill.
    let s = setup_cluster(&set.cluster_toml(CLUSTER), "", "0s");
    record_master(&s, &set.master.addr().to_string());
    let svc = Service::start(&s.config).await;
    let old = set.master.addr().to_string();
    // The service must have seen the error while the master lived: once it died, Pika shows
    // `db0:no_connect` and only the service's memory of the link tells the two slaves apart.
    let c_addr = set.replicas[1].addr().to_string();
    let t = Instant::now();
    loop {
        let v = snapshot(&svc).await;
        let c_links = v["observation"]["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["addr"] == c_addr.as_str()).cloned())
            .map(|n| n["status"]["ok"]["db_links"].to_string())
            .unwrap_or_default();
        if c_links.contains("error") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the poller never saw the error slave in error: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    set.master.kill9();
    // What the nodes say once the master is gone (the error state does not survive the loss
    // of the connection: this is what the decision sees).
    let after_kill: Vec<String> = set
        .replicas
        .iter()
        .map(|r| info_patient(r.port(), Duration::from_secs(20)).unwrap_or_default())
        .collect();
    eprintln!(
        "after the kill: healthy slave {} | error slave {}",
        db_tokens(&after_kill[0]).join(","),
        db_tokens(&after_kill[1]).join(",")
    );
    let (st, body, tries) = alert(&svc, payload("PikaMasterDown", &old)).await;
    eprintln!("master-down answer after {tries} tries: {st} {body}");
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    let is_master = |n: &PikaNode| {
        n.try_cmd(&["INFO", "replication"])
            .is_ok_and(|i| info_field(&i, "role").as_deref() == Some("master"))
    };
    wait_for(SYNC, "a slave is promoted", || {
        set.replicas.iter().any(is_master)
    });
    assert!(
        !is_master(&set.replicas[1]),
        "the slave that was in db0:error until the master died was promoted (it lacks the \
         master's key `later` and carries its own diverged keys); answer: {body}"
    );
    assert!(is_master(&set.replicas[0]), "the healthy slave is promoted");
    let answer = json(&body);
    assert_eq!(
        answer["clusters"][CLUSTER]["plan"]["action"]["promote"],
        format!("127.0.0.1:{b_port}"),
        "{body}"
    );
    let cands = answer["clusters"][CLUSTER]["plan"]["candidates"].to_string();
    assert!(
        cands.contains("link error"),
        "the error slave is excluded as `link error`: {cands}"
    );
    // It is repointed (forced: its binlog is diverged) and ends a working slave of the new
    // master, without its diverged keys.
    set.replicas[0].cmd(&["SET", "after", "2"]);
    if !wait_until(Duration::from_secs(60), || {
        set.replicas[1].is_linked_to(b_port)
            && get_key(c_port, None, "after").as_deref() == Some("2")
    }) {
        panic!(
            "the error slave did not end attached to the new master:\n{}\nevents:\n{}",
            set.replicas[1]
                .try_cmd(&["INFO", "replication"])
                .unwrap_or_default(),
            events_text(&s)
        );
    }
    assert_eq!(get_key(c_port, None, "diverged:0"), None);
    eprintln!("link-error slave (offset {oc} > {ob}) not promoted; answer after {tries} tries");
}

/// A slave in the middle of a full sync (its rsync throttled so the copy of a few MB lasts
/// long enough) is never promoted: a switchover to it is refused while the master lives, and
/// after a kill -9 of the master the failover refuses (it is the only other node), with no
/// node mutated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_in_full_sync_is_never_promoted() {
    let Some(bin) = pika_or_skip("pika_real replica_in_full_sync") else {
        return;
    };
    let mut m = PikaNode::start(&bin, PikaOptions::default());
    load_bulk(m.port(), 3000, 2048);
    let c = PikaNode::start(
        &bin,
        PikaOptions {
            slaveof: Some(m.port()),
            // Pika's rsync is throttled by the SLAVE; 6 MB at 256 KB/s is ~25 s of full sync.
            extra: vec![("throttle-bytes-per-second".into(), "262144".into())],
            ..PikaOptions::default()
        },
    );
    let mut last = String::new();
    let syncing = wait_until(Duration::from_secs(20), || {
        last = c.try_cmd(&["INFO", "replication"]).unwrap_or_default();
        db_tokens(&last).iter().any(|t| t == "db0:syncing_full")
    });
    assert!(syncing, "the slave never showed db0:syncing_full:\n{last}");
    eprintln!("full sync INFO: {}", last.replace("\r\n", " | "));
    let s = setup_cluster(&cluster_of(&[&m, &c]), "", "0s");
    record_master(&s, &m.addr().to_string());
    let svc = Service::start(&s.config).await;

    // Planned switchover to it: refused, nothing changes.
    let (st, body) = svc
        .post(
            &format!("/v1/clusters/{CLUSTER}/switchover"),
            BEARER,
            format!("{{\"to\":\"{}\"}}", c.addr()).into_bytes(),
        )
        .await;
    eprintln!("switchover to the syncing slave: {st} {body}");
    assert!(
        body.contains("full sync") || body.contains("not eligible"),
        "refused for the full sync: {st} {body}"
    );
    assert_eq!(m.role(), "master");
    let still = c.try_cmd(&["INFO", "replication"]).unwrap_or_default();
    assert_eq!(
        info_field(&still, "role").as_deref(),
        Some("slave"),
        "{still}"
    );

    // The master dies mid-copy: the failover refuses (the slave's data is half a copy).
    let old = m.addr().to_string();
    m.kill9();
    let (st, body, tries) = alert(&svc, payload("PikaMasterDown", &old)).await;
    eprintln!("master-down with only a syncing slave: {st} after {tries} tries: {body}");
    assert!(
        body.contains("full sync") || body.contains("not eligible"),
        "refused naming the full sync: {st} {body}"
    );
    // Judged on the node for a while after the answer: never promoted.
    for _ in 0..10 {
        if let Ok(i) = c.try_cmd(&["INFO", "replication"]) {
            assert_ne!(
                info_field(&i, "role").as_deref(),
                Some("master"),
                "the syncing slave was promoted:\n{i}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ev = events_text(&s);
    assert!(
        !ev.contains("\"kind\":\"applied\""),
        "no plan was applied:\n{ev}"
    );
}

/// After a kill -9 of its master, a Pika slave's INFO blocks for seconds (~2.5 s per DB,
/// 3 DBs here). That node (in the cluster, following a master outside it) must not stall the
/// poll of the others: while its INFO is still blocked, the service's observations of the
/// healthy master keep moving (its offset grows under a writer), and afterwards the node is
/// seen again, not taken for dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_info_does_not_stall_the_poll() {
    let Some(bin) = pika_or_skip("pika_real blocking_info") else {
        return;
    };
    let three = PikaOptions {
        databases: Some(3),
        ..PikaOptions::default()
    };
    let set = PikaSet::start(&bin, 1, three.clone());
    let mut x = PikaNode::start(&bin, three.clone());
    let c = PikaNode::start(
        &bin,
        PikaOptions {
            slaveof: Some(x.port()),
            ..three.clone()
        },
    );
    wait_for(SYNC, "c linked to x", || c.is_linked_to(x.port()));
    let nodes = [&set.master, &set.replicas[0], &c];
    let s = setup_cluster(&cluster_of(&nodes), "", "0s");
    record_master(&s, &set.master.addr().to_string());
    let svc = Service::start(&s.config).await;
    let (m_addr, c_addr) = (set.master.addr().to_string(), c.addr().to_string());
    let node_of = |v: &Value, addr: &str| -> Value {
        v["observation"]["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["addr"] == addr).cloned())
            .unwrap_or(Value::Null)
    };
    let m_offset = |v: &Value| node_of(v, &m_addr)["status"]["ok"]["offset"].as_u64();
    // A writer on the master moves its offset.
    let mport = set.master.port();
    let stop = Arc::new(AtomicBool::new(false));
    let st2 = stop.clone();
    let w = std::thread::spawn(move || {
        let mut i = 0u64;
        let t = Instant::now();
        while !st2.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(120) {
            i += 1;
            let _ = set_key(mport, None, "tick", &i.to_string());
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let t = Instant::now();
    loop {
        let v = snapshot(&svc).await;
        if node_of(&v, &c_addr)["status"]["ok"]["role"] == "slave" && m_offset(&v).is_some() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the poller never saw the three nodes: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Kill c's master. Pika blocks c's INFO once it notices the death (not at once: a first
    // INFO right after the kill may still answer in microseconds), so a thread asks INFO back
    // to back, each with a long timeout, and records every call's window.
    let baseline = m_offset(&snapshot(&svc).await).unwrap_or(0);
    x.kill9();
    let cport = c.port();
    let t0 = Instant::now();
    let calls: Arc<Mutex<Vec<(Duration, Duration)>>> = Arc::default();
    let c2 = calls.clone();
    let probe = std::thread::spawn(move || {
        let until = Duration::from_secs(20);
        for _ in 0..2000 {
            let start = t0.elapsed();
            if start > until {
                break;
            }
            let _ = info_patient(cport, Duration::from_secs(30));
            let end = t0.elapsed();
            if let Ok(mut v) = c2.lock() {
                v.push((start, end));
            }
            if end - start >= Duration::from_secs(3) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // Meanwhile: the service's view of the master, with the time it was read.
    let mut seen: Vec<(Duration, u64)> = Vec::new();
    while !probe.is_finished() && t0.elapsed() < Duration::from_secs(40) {
        let (st, body) = svc.get(&format!("/v1/clusters/{CLUSTER}"), BEARER).await;
        if st == 200 {
            if let Some(o) = m_offset(&json(&body)) {
                seen.push((t0.elapsed(), o));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    probe.join().expect("probe");
    stop.store(true, Ordering::Relaxed);
    let _ = w.join();
    let calls = calls.lock().expect("calls").clone();
    let (bs, be) = calls
        .iter()
        .copied()
        .max_by_key(|(s, e)| *e - *s)
        .unwrap_or_default();
    let took = be - bs;
    eprintln!(
        "c's longest INFO after its master's kill: {:.1}s (from {:.1}s, {} calls); master offsets seen: {seen:?}",
        took.as_secs_f64(),
        bs.as_secs_f64(),
        calls.len()
    );
    assert!(
        took >= Duration::from_secs(3),
        "c's INFO never blocked for 3 s within 20 s of its master's kill ({} calls): the case was not exercised",
        calls.len()
    );
    // A poll round waits for every node up to the command bound (2 s here), not for the
    // blocking node's answer: during the block the master's observation is refreshed about
    // every 2.5 s (bound + poll interval), so at least once in a block of ≥ 3 s.
    let during: Vec<u64> = seen
        .iter()
        .filter(|(t, _)| *t > bs && *t < be)
        .map(|(_, o)| *o)
        .collect();
    let before = seen
        .iter()
        .filter(|(t, _)| *t <= bs)
        .map(|(_, o)| *o)
        .max()
        .unwrap_or(baseline);
    assert!(
        during.iter().any(|o| *o > before),
        "the master's observation did not move past {before} while c's INFO blocked ({:.1}s): {during:?}",
        took.as_secs_f64()
    );
    // Afterwards c is observed again (reachable, a slave), not taken for dead.
    let t = Instant::now();
    loop {
        let v = snapshot(&svc).await;
        if node_of(&v, &c_addr)["status"]["ok"]["role"] == "slave" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "c is not observed again after its INFO unblocked: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ev = events_text(&s);
    assert!(
        !ev.contains("\"kind\":\"applied\""),
        "nothing was applied:\n{ev}"
    );
}

/// The re-attach wait. A slave in `db0:error` is still registered by its master; pika-remedy's
/// periodic check repoints it with `force` (`SLAVEOF NO ONE`, then `SLAVEOF m force`, since an
/// identical SLAVEOF is a no-op). The master still holds the old entry and refuses the new
/// handshake: the slave logs `Meta Sync Failed: Slave AlreadyExist`, the master `Slave Already
/// Exist, ip_port: …`, and INFO shows `db0:no_connect` for ~12 s until the entry is dropped.
/// pika-remedy must wait that out (bounded by `link_timeout`, here the default 10 s, then one
/// re-issue) and the slave must end attached, link up, with the master's keys and without its
/// diverged ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_repoint_waits_out_slave_already_exist() {
    let Some(bin) = pika_or_skip("pika_real reattach_wait") else {
        return;
    };
    let set = PikaSet::start(&bin, 1, PikaOptions::default());
    set.master.cmd(&["SET", "kept", "1"]);
    let c = &set.replicas[0];
    let (mport, cport) = (set.master.port(), c.port());
    wait_for(SYNC, "c has the key", || {
        get_key(cport, None, "kept").is_some()
    });
    diverge_into_link_error(c, &set.master);
    // The master still lists c.
    let minfo = set.master.info_replication();
    assert!(
        minfo.contains(&format!("port={cport}")),
        "the master still registers the error slave:\n{minfo}"
    );
    set.master.cmd(&["SET", "later", "2"]);
    // The default link_timeout (10 s), not the suite's 15 s: the real default must cope.
    let s = setup_cluster(&set.cluster_toml(CLUSTER), "", "2s");
    let text = std::fs::read_to_string(&s.config).expect("config");
    std::fs::write(&s.config, text.replace("link_timeout = \"15s\"\n", "")).expect("config");
    record_master(&s, &set.master.addr().to_string());
    let t = Instant::now();
    let svc = Service::start(&s.config).await;
    let ok = wait_until(Duration::from_secs(90), || {
        c.is_linked_to(mport) && get_key(cport, None, "later").as_deref() == Some("2")
    });
    let took = t.elapsed();
    // The reconcile's event is written when its follow has seen the link up too and the
    // node's config is persisted: this test can see the link first. Bounded.
    wait_until(Duration::from_secs(30), || {
        events_text(&s)
            .lines()
            .any(|l| l.contains("\"applied\"") && l.contains(&format!("127.0.0.1:{cport}")))
    });
    let ev = events_text(&s);
    if !ok {
        panic!(
            "the error slave did not end attached within 90 s:\n{}\nlog:\n{}\nevents:\n{ev}\nserve log:\n{}",
            c.try_cmd(&["INFO", "replication"]).unwrap_or_default(),
            c.log_tail(),
            svc.log()
        );
    }
    assert_eq!(
        get_key(cport, None, "diverged:0"),
        None,
        "diverged keys discarded"
    );
    assert_eq!(get_key(cport, None, "kept").as_deref(), Some("1"));
    // The transient refusal seen for real, on both sides.
    let logs = |n: &PikaNode| {
        let mut all = String::new();
        if let Ok(rd) = std::fs::read_dir(n.dir().join("log")) {
            for e in rd.flatten() {
                all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        all
    };
    let (clog, mlog) = (logs(c), logs(&set.master));
    assert!(
        clog.contains("Meta Sync Failed: Slave AlreadyExist"),
        "the slave saw Slave AlreadyExist"
    );
    assert!(
        mlog.contains(&format!("Slave Already Exist, ip_port: 127.0.0.1:{cport}")),
        "the master refused the re-attach as Slave Already Exist"
    );
    // What pika-remedy waited on: its forced follow of c, and the link-up wait it reports.
    let follow: Vec<&str> = ev
        .lines()
        .filter(|l| l.contains("\"applied\"") && l.contains(&format!("127.0.0.1:{cport}")))
        .collect();
    eprintln!(
        "re-attach: attached after {:.1}s; applied events about c:\n{}",
        took.as_secs_f64(),
        follow.join("\n")
    );
    // The forced follow of c, as the audit trail has it: what it waited on is the link
    // (Pika shows the refused handshake only as `db0:no_connect`; the words "Slave
    // AlreadyExist" are in Pika's logs alone), for seconds, and it succeeded.
    let steps: Vec<Value> = follow
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|e| {
            e["outcome"]["steps"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|st| {
            st["step"]["step"] == "follow" && st["step"]["node"] == format!("127.0.0.1:{cport}")
        })
        .collect();
    let step = steps
        .iter()
        .find(|st| st["ok"] == true)
        .unwrap_or_else(|| panic!("an applied, successful follow of c:\n{ev}"));
    assert_eq!(
        step["step"]["force"], true,
        "forced (diverged binlog): {step}"
    );
    let detail = step["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("link up after"),
        "waited for the link: {step}"
    );
    assert!(
        step["millis"].as_u64().unwrap_or(0) >= 5000,
        "the follow sat out the refused re-attach (seconds, not an instant attach): {step}"
    );
}

// ---------------------------------------------------------------------------------------------
// ReplicationID conflicts.

/// A Pika slave whose ReplicationID differs from its master's is refused for good (`replicationid
/// on both sides of the connection are inconsistent`; INFO shows only the link down, and
/// `SLAVEOF … force` does not help). Forced here as it happens in production: the node first
/// synced from another fresh master, which gave it that master's ID. pika-remedy's periodic
/// check plans the recovery as a full sync (`SLAVEOF NO ONE`, `CLEARREPLICATIONID`, `SLAVEOF`),
/// and the node ends attached with link up and the master's keys (judged on the nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replid_mismatch_is_cleared_and_resynced() {
    let Some(bin) = pika_or_skip("pika_real replid_mismatch") else {
        return;
    };
    let mut set = PikaSet::start(&bin, 1, PikaOptions::default());
    let mport = set.master.port();
    set_key(mport, None, "m:key", "from-m").expect("write on the master");
    // Another fresh master X gives F its own ReplicationID.
    let x = PikaNode::start(&bin, PikaOptions::default());
    set_key(x.port(), None, "x:key", "from-x").expect("write on x");
    let f = PikaNode::start(
        &bin,
        PikaOptions {
            slaveof: Some(x.port()),
            ..PikaOptions::default()
        },
    );
    wait_for(SYNC, "f linked to x", || f.is_linked_to(x.port()));
    let foreign = replid(&f);
    assert!(!foreign.is_empty() && foreign != replid(&set.master));

    // F moves to M by hand: refused for good, forced or not.
    assert_eq!(
        f.try_cmd(&["SLAVEOF", "127.0.0.1", &mport.to_string()])
            .as_deref(),
        Ok("OK")
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(!f.is_linked_to(mport), "a conflicting id must not link");
    assert_eq!(f.try_cmd(&["SLAVEOF", "NO", "ONE"]).as_deref(), Ok("OK"));
    assert_eq!(
        f.try_cmd(&["SLAVEOF", "127.0.0.1", &mport.to_string(), "force"])
            .as_deref(),
        Ok("OK")
    );
    std::thread::sleep(Duration::from_secs(4));
    let info = f.info_replication();
    assert!(
        !f.is_linked_to(mport),
        "SLAVEOF … force does not help: {info}"
    );
    assert_eq!(
        info_field(&info, "master_link_status").as_deref(),
        Some("down")
    );
    assert_eq!(replid(&f), foreign, "still the foreign id");
    assert!(
        f.log_tail()
            .contains("replicationid on both sides of the connection are inconsistent")
            || std::fs::read_dir(f.dir().join("log"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .contains("replicationid on both sides")),
        "Pika's own reason is in its log"
    );
    // CLEARREPLICATIONID is refused on a slave (so the plan detaches first).
    let ro = f
        .try_cmd(&["CLEARREPLICATIONID"])
        .expect_err("refused on a slave");
    assert!(ro.contains("READONLY"), "{ro}");
    drop(x);

    // The cluster as pika-remedy sees it: M, R1, F.
    let nodes = [set.master.addr(), set.replicas[0].addr(), f.addr()];
    let toml = format!(
        "[[cluster]]\nname = \"{CLUSTER}\"\nnodes = [{}]\n",
        nodes
            .iter()
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let s = setup_cluster(&toml, "", "2s");
    record_master(&s, &set.master.addr().to_string());
    let (code, out, err) = cli(
        &["plan", "--config", s.arg(), "--cluster", CLUSTER],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "plan:\n{out}\n{err}");
    let fa = f.addr().to_string();
    for want in [
        format!("{fa}: SLAVEOF NO ONE"),
        format!("{fa}: CLEARREPLICATIONID"),
        "full sync: replication id differs".to_string(),
        format!("{fa}'s replication id differs from {}'s", set.master.addr()),
    ] {
        assert!(out.contains(&want), "plan lacks {want:?}:\n{out}");
    }
    eprintln!("plan:\n{out}");

    // The periodic check repairs it.
    let t = Instant::now();
    let svc = Service::start(&s.config).await;
    if !wait_until(Duration::from_secs(90), || f.is_linked_to(mport)) {
        panic!(
            "f did not attach to the master:\n{}\nlog:\n{}\nevents:\n{}\nservice:\n{}",
            f.try_cmd(&["INFO", "replication"]).unwrap_or_default(),
            f.log_tail(),
            std::fs::read_to_string(s.dir.path().join("events.jsonl")).unwrap_or_default(),
            svc.log()
        );
    }
    let took = t.elapsed();
    wait_for(SYNC, "f has the master's keys", || {
        get_key(f.port(), None, "m:key").as_deref() == Some("from-m")
    });
    assert_eq!(
        get_key(f.port(), None, "x:key"),
        None,
        "a full sync: x's data is gone"
    );
    assert_eq!(replid(&f), replid(&set.master), "one ReplicationID");
    set_key(mport, None, "m:after", "1").expect("write");
    wait_for(SYNC, "new writes replicate to f", || {
        get_key(f.port(), None, "m:after").as_deref() == Some("1")
    });
    assert!(set.replicas[0].is_linked_to(mport), "r1 untouched");
    let events = std::fs::read_to_string(s.dir.path().join("events.jsonl")).unwrap_or_default();
    assert!(
        events.contains("\"clear_replication_id\"") && events.contains("replication id cleared"),
        "the audit trail has the clear step"
    );
    eprintln!(
        "pika replid mismatch: foreign id {} → attached with link up and the master's keys {:.1}s after the service started",
        &foreign[..12],
        took.as_secs_f64()
    );
    let _ = set.node_mut(0);
}

// ---------------------------------------------------------------------------------------------
// Fencing stale clients.

/// Pika 4.0.1 answers `CLIENT KILL TYPE normal` with `+OK` and closes every normal client
/// connection but the caller's; replication links (port + 2000) are untouched.
#[test]
fn client_kill_type_normal_seen_for_real() {
    use support::stale_client::IdleClient;
    let Some(bin) = pika_or_skip("pika_real client_kill") else {
        return;
    };
    let set = PikaSet::start(&bin, 1, PikaOptions::default());
    let mut idle = IdleClient::connect(set.master.port(), None);
    assert!(!idle.is_closed());
    assert_eq!(
        set.master
            .try_cmd(&["CLIENT", "KILL", "TYPE", "normal"])
            .as_deref(),
        Ok("OK")
    );
    // Pika closes them asynchronously (its worker threads): poll, bounded.
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::thread::sleep(Duration::from_millis(100));
            idle.is_closed()
        }),
        "the other client was disconnected"
    );
    set.wait_linked(Duration::from_secs(5));
}

/// Fence stale clients on real Pika: the old master restarts as `role:master` (the bug), a
/// client pinned to its address writes to it; the role-mismatch webhook demotes it and the
/// plan closes its normal client connections right after (`CLIENT KILL TYPE normal`). An idle
/// client is disconnected, the pinned writer's connection is closed, and no write is
/// acknowledged after the demotion. The writes the restarted old master acknowledged (and
/// the forced resync then discarded) are counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demotion_closes_stale_clients_on_pika() {
    use support::stale_client::{IdleClient, StaleClient};
    let Some(bin) = pika_or_skip("pika_real demotion_closes_stale_clients") else {
        return;
    };
    let mut set = PikaSet::start(&bin, 2, PikaOptions::default());
    // No periodic check: the demotion comes from the webhook, sent at once.
    let s = setup(&set, "");
    let text = std::fs::read_to_string(&s.config)
        .expect("config")
        .replace("check_interval = \"2s\"\n", "");
    std::fs::write(&s.config, text).expect("config");
    record_master(&s, &set.master.addr().to_string());
    let svc = Service::start(&s.config).await;

    let old = set.master.addr().to_string();
    set.master.kill9();
    let (st, body, _) = alert(&svc, payload("PikaMasterDown", &old)).await;
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    let mut new_port = None;
    wait_for(SYNC, "a slave is promoted", || {
        new_port = set
            .replicas
            .iter()
            .find(|r| {
                r.try_cmd(&["INFO", "replication"])
                    .is_ok_and(|i| info_field(&i, "role").as_deref() == Some("master"))
            })
            .map(PikaNode::port);
        new_port.is_some()
    });
    let new_port = new_port.expect("promoted");

    set.master.restart();
    assert_eq!(set.master.role(), "master", "the bug");
    let oport = set.master.port();
    let mut idle = IdleClient::connect(oport, None);
    let stale = StaleClient::start(oport, None, "stale");
    wait_for(
        Duration::from_secs(10),
        "the pinned client writes to the restarted old master",
        || !stale.stats().acked.is_empty(),
    );
    let at_trigger = stale.now();
    let (st, body, _) = alert(&svc, payload("PikaRoleMismatch", &old)).await;
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    let at_answer = stale.now();
    wait_for(SYNC, "the old master follows the new one, link up", || {
        set.master.is_linked_to(new_port)
    });
    let events = std::fs::read_to_string(s.dir.path().join("events.jsonl")).unwrap_or_default();
    assert!(
        events.contains("\"kill_clients\"") && events.contains("normal client connections closed"),
        "the audit trail has the client-kill step:\n{events}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::thread::sleep(Duration::from_millis(100));
            idle.is_closed()
        }),
        "the idle client was disconnected"
    );
    std::thread::sleep(Duration::from_millis(300));
    let st = stale.finish();
    let during = st.acked.iter().filter(|t| **t >= at_trigger).count();
    let after = st.acked.iter().filter(|t| **t > at_answer).count();
    assert!(
        st.closed.iter().any(|t| *t >= at_trigger),
        "the pinned connection was closed under the client: {st:?}"
    );
    assert_eq!(after, 0, "no write acknowledged after the demotion");
    assert_eq!(
        get_key(oport, None, &format!("stale:{}", st.acked.len())),
        None,
        "the forced resync discarded the stale writes"
    );
    eprintln!(
        "pika stale pinned client: {} writes acknowledged by the restarted old master ({during} of them after the webhook was sent, webhook answered in {:.0} ms), {} refused, connection closed {} time(s), 0 after the demotion",
        st.acked.len(),
        (at_answer - at_trigger).as_secs_f64() * 1000.0,
        st.refused,
        st.closed.len()
    );
}

/// The race after a failover: two slaves that were given different ReplicationIDs by their
/// master (forced here by editing one slave's persisted `replication-id` while it is stopped,
/// which is what Pika reads back at start). The master dies; pika-remedy promotes one slave
/// and plans the other's follow as a full sync (clear, then `SLAVEOF`): it ends attached with
/// link up and the new master's keys, with the new master's ReplicationID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_recovers_the_replica_whose_replid_differs() {
    let Some(bin) = pika_or_skip("pika_real failover_replid") else {
        return;
    };
    let mut set = PikaSet::start(&bin, 2, PikaOptions::default());
    let mport = set.master.port();
    set_key(mport, None, "before", "1").expect("write");
    for r in &set.replicas {
        let p = r.port();
        wait_for(SYNC, "slaves have the key", || {
            get_key(p, None, "before").as_deref() == Some("1")
        });
    }
    let s = setup(&set, "");
    record_master(&s, &set.master.addr().to_string());
    let old = set.master.addr().to_string();
    set.master.kill9();
    // Slave 2 gets another ReplicationID, as the race would have given it.
    let other_id = "0123456789abcdef0123456789abcdef0123456789abcdef01";
    {
        let r2 = set.node_mut(2);
        r2.kill9();
        let conf = r2.dir().join("pika.conf");
        let text = std::fs::read_to_string(&conf).expect("conf");
        assert!(
            text.contains("\nreplication-id : "),
            "Pika persisted its id"
        );
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("replication-id") {
                    format!("replication-id : {other_id}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        std::fs::write(&conf, text).expect("conf");
        r2.restart();
        assert_eq!(replid(r2), other_id, "Pika read the edited id back");
    }
    assert_ne!(replid(&set.replicas[0]), replid(&set.replicas[1]));

    let svc = Service::start(&s.config).await;
    let (st, body, tries) = alert(&svc, payload("PikaMasterDown", &old)).await;
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    let mut promoted = None;
    wait_for(SYNC, "a slave is promoted", || {
        promoted = set
            .replicas
            .iter()
            .position(|r| {
                r.try_cmd(&["INFO", "replication"])
                    .is_ok_and(|i| info_field(&i, "role").as_deref() == Some("master"))
            })
            .map(|i| i + 1);
        promoted.is_some()
    });
    let pi = promoted.expect("promoted");
    let oi = if pi == 1 { 2 } else { 1 };
    let pport = set.node_mut(pi).port();
    if !wait_until(Duration::from_secs(90), || {
        set.node_mut(oi).is_linked_to(pport)
    }) {
        let n = set.node_mut(oi);
        panic!(
            "the other slave is not attached:\n{}\nlog:\n{}\nevents:\n{}",
            n.try_cmd(&["INFO", "replication"]).unwrap_or_default(),
            n.log_tail(),
            std::fs::read_to_string(s.dir.path().join("events.jsonl")).unwrap_or_default()
        );
    }
    let oport = set.node_mut(oi).port();
    set_key(pport, None, "after", "2").expect("write on the new master");
    wait_for(SYNC, "the other slave has the new master's keys", || {
        get_key(oport, None, "after").as_deref() == Some("2")
            && get_key(oport, None, "before").as_deref() == Some("1")
    });
    assert_eq!(
        replid(set.node_mut(oi)),
        replid(set.node_mut(pi)),
        "one ReplicationID"
    );
    let events = std::fs::read_to_string(s.dir.path().join("events.jsonl")).unwrap_or_default();
    assert!(
        events.contains("\"clear_replication_id\"")
            && events.contains("full sync: replication id differs"),
        "the failover planned the clear as a full sync:\n{events}"
    );
    eprintln!(
        "pika failover with differing ReplicationIDs: promoted node {pi}, the other (full sync) attached; {tries} webhook tries"
    );
}
