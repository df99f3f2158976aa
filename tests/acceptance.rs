//! Whole-pipeline acceptance (issue 7 part 1): real redis-server master + 2 replicas, the real
//! `pika-remedy serve` binary, real Prometheus 2.42 scraping it every 1 s and evaluating the
//! shipped rules every 1 s, real Alertmanager 0.25 routing the shipped config to the webhook
//! with a bearer `credentials_file`. No periodic check (`check_interval = 0s`): every action
//! must come from an alert, and the event log must say so.
//!
//! Scenarios, in one run per coordinator (local, etcd):
//! (c) a forced PikaMasterDown alert (the captured Alertmanager fixture, relabelled) POSTed
//!     while the master is healthy: handled, no failover, topology unchanged;
//! (a) `kill -9` the master: PikaMasterDown fires, Alertmanager posts, a replica is promoted,
//!     the other repointed, the record updated;
//! (b) the old master restarted with its original config (role master, empty): PikaRoleMismatch
//!     fires and it is demoted under the new master.
//!
//! Settings (all shipped except where noted): scrape 1 s, evaluation 1 s, `for: 1s`
//! (MasterDown) / `for: 2s` (RoleMismatch), Alertmanager group_wait 0s, group_interval 1s;
//! pika-remedy poll 1 s, confirm_window 500 ms (defaults); timeouts connect 200 ms / command
//! 1 s (shortened from 500 ms / 2 s so a dead node is classified quickly).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::etcd::EtcdServer;
use support::prom::{
    event_line, last_seq, wait_event, Alertmanager, Coord, DumpOnPanic, Prometheus, Remedy,
    RemedyOptions, Timeline,
};
use support::redis::{wait_for, RedisCluster};

const CLUSTER: &str = "c";
const PASSWORD: &str = "acceptance-node-pw";
/// Bound for "alert fires, webhook arrives, action applied".
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> String {
    let p: PathBuf = support::prom::shared_dir()
        .join("fixtures/alertmanager")
        .join(name);
    support::fixtures::starts_now(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())),
    )
}

fn alert_names(e: &Value) -> Vec<String> {
    e["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["alertname"].as_str().map(str::to_string))
        .collect()
}

fn is_action(e: &Value, action: &str, result: &str) -> bool {
    e["outcome"]["plan"]["action"]["kind"] == action && e["outcome"]["result"]["kind"] == result
}

fn run(coord: Coord, tag: &str) {
    let tl = Timeline::new();
    let _dump = DumpOnPanic(tl.clone());
    let t0 = Instant::now();

    let mut cl = RedisCluster::start(2, Some(PASSWORD));
    let addrs: Vec<String> = cl.addrs().iter().map(|a| a.to_string()).collect();
    let (old, r1, r2) = (addrs[0].clone(), addrs[1].clone(), addrs[2].clone());
    tl.note(format!("[{tag}] redis master {old}, replicas {r1} {r2}"));

    let mut opts = RemedyOptions::new(coord, cl.cluster_toml(CLUSTER, &[]));
    opts.timeouts_extra = vec!["connect = \"200ms\"".into(), "command = \"1s\"".into()];
    // The alert pipeline under test: the poller's own triggers would act first.
    opts.service_extra = vec!["self_trigger = false".into()];
    let remedy = Remedy::start(&opts);
    remedy.record(CLUSTER, &old);
    tl.note(format!("pika-remedy serving on {}", remedy.port));
    let am = Alertmanager::start(&remedy.webhook_url(), support::prom::TOKEN);
    let prom = Prometheus::start(remedy.port, am.port);
    tl.note(format!(
        "prometheus on {}, alertmanager on {}",
        prom.port, am.port
    ));
    {
        let log = remedy.log_path();
        let events = remedy.events(CLUSTER);
        let prom_log = prom.log_tail(15);
        let am_log = am.log_tail(15);
        tl.on_failure(move || {
            let ev = events
                .as_ref()
                .map(|v| v.iter().map(event_line).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default();
            format!(
                "---- pika-remedy log ----\n{}\n---- events at setup ----\n{ev}\n---- prometheus ----\n{prom_log}\n---- alertmanager ----\n{am_log}",
                support::prom::log_tail(&log, 60)
            )
        });
    }

    // Prometheus has scraped pika-remedy, honoured its instance labels, and sees the record.
    wait_for(
        Duration::from_secs(15),
        "prometheus sees 3 nodes up and the recorded master",
        || {
            prom.query("pika_remedy_node_up == 1")
                .is_ok_and(|v| v.len() == 3)
                && prom.value_for("pika_remedy_node_expected_role{role=\"master\"}", &old)
                    == Some(1.0)
        },
    );
    tl.note(format!(
        "setup done in {:.1}s: prometheus scrapes 3 nodes",
        t0.elapsed().as_secs_f64()
    ));

    // (c) A forced alert while the master is healthy: no failover.
    let seq = last_seq(&remedy, CLUSTER);
    let port = cl.master.port().to_string();
    let body = fixture("firing.json")
        .replace("RedisDown", "PikaMasterDown")
        .replace("mymaster", CLUSTER)
        .replace("127.0.0.1:7000", &format!("127.0.0.1:{port}"));
    let r = remedy.post_alert(&body).expect("POST fixture");
    tl.note(format!(
        "(c) forced PikaMasterDown POSTed: HTTP {} {}",
        r.status, r.body
    ));
    assert_eq!(r.status, 200, "forced alert: {}", r.body);
    let e = wait_event(
        &remedy,
        CLUSTER,
        seq,
        Duration::from_secs(10),
        "reconcile for the forced alert",
        |e| e["kind"] == "reconcile",
    );
    tl.note(format!("(c) {}", event_line(&e)));
    assert_eq!(e["source"], "alertmanager");
    assert_eq!(e["trigger"]["kind"], "master_down");
    assert!(alert_names(&e).contains(&"PikaMasterDown".to_string()));
    let action = e["outcome"]["plan"]["action"]["kind"].clone();
    assert!(
        action == "no_action" || action == "refuse",
        "a healthy master must not be failed over, got {action}"
    );
    assert_eq!(cl.master.role(), "master");
    assert!(cl.replicas.iter().all(|r| r.is_linked_to(cl.master.port())));
    assert_eq!(
        remedy.recorded_master(CLUSTER).as_deref(),
        Some(old.as_str())
    );

    // (a) kill -9 the master.
    let seq = last_seq(&remedy, CLUSTER);
    let t_kill = Instant::now();
    cl.master.kill9();
    tl.note(format!("(a) kill -9 master {old}"));
    let fired = prom.wait_firing("PikaMasterDown", Some(&old), ACTION_TIMEOUT);
    tl.note(format!(
        "(a) prometheus: PikaMasterDown firing (active since {})",
        fired.active_at
    ));
    let e = wait_event(
        &remedy,
        CLUSTER,
        seq,
        ACTION_TIMEOUT,
        "applied failover",
        |e| is_action(e, "failover", "applied"),
    );
    tl.note(format!(
        "(a) failover applied {:.2}s after the kill: {}",
        t_kill.elapsed().as_secs_f64(),
        event_line(&e)
    ));
    assert_eq!(e["source"], "alertmanager", "failover not alert-driven");
    assert_eq!(e["trigger"]["kind"], "master_down");
    assert!(
        alert_names(&e).contains(&"PikaMasterDown".to_string()),
        "{}",
        event_line(&e)
    );
    let new = e["outcome"]["plan"]["action"]["promote"]
        .as_str()
        .expect("promote")
        .to_string();
    assert!(new == r1 || new == r2, "promoted {new}");
    let (new_node, other) = if new == r1 {
        (&cl.replicas[0], &cl.replicas[1])
    } else {
        (&cl.replicas[1], &cl.replicas[0])
    };
    assert_eq!(new_node.role(), "master");
    wait_for(
        Duration::from_secs(10),
        "the other replica follows the new master",
        || other.is_linked_to(new_node.port()),
    );
    let rec = remedy.cluster(CLUSTER).expect("cluster")["record"].clone();
    assert_eq!(rec["master"], new.as_str());
    assert_eq!(rec["epoch"], 2, "record: {rec}");
    tl.note(format!("(a) record: {rec}"));

    // (b) restart the old master with its original config: it claims master.
    let seq = last_seq(&remedy, CLUSTER);
    let t_restart = Instant::now();
    cl.master.restart();
    tl.note(format!(
        "(b) old master restarted: role {}",
        cl.master.role()
    ));
    let e = wait_event(
        &remedy,
        CLUSTER,
        seq,
        ACTION_TIMEOUT,
        "applied demotion",
        |e| is_action(e, "demote", "applied"),
    );
    tl.note(format!(
        "(b) demotion applied {:.2}s after the restart: {}",
        t_restart.elapsed().as_secs_f64(),
        event_line(&e)
    ));
    assert_eq!(e["source"], "alertmanager", "demotion not alert-driven");
    assert_eq!(e["trigger"]["kind"], "role_mismatch");
    assert!(
        alert_names(&e).contains(&"PikaRoleMismatch".to_string()),
        "{}",
        event_line(&e)
    );
    assert_eq!(e["outcome"]["plan"]["action"]["node"], old.as_str());
    let new_port = new_node.port();
    wait_for(
        Duration::from_secs(15),
        "old master linked under the new master",
        || cl.master.is_linked_to(new_port),
    );
    // Final topology: one master (the promoted one), both others linked to it, record unchanged.
    assert_eq!(new_node.role(), "master");
    assert!(other.is_linked_to(new_port));
    let rec = remedy.cluster(CLUSTER).expect("cluster")["record"].clone();
    assert_eq!(rec["master"], new.as_str());
    assert_eq!(rec["epoch"], 2);
    // The demotion was persisted (CONFIG REWRITE): the config file now points at the new master.
    assert!(
        cl.master
            .conf_text()
            .contains(&format!("replicaof 127.0.0.1 {new_port}")),
        "old master config not rewritten:\n{}",
        cl.master.conf_text()
    );
    tl.note(format!(
        "[{tag}] done in {:.1}s",
        t0.elapsed().as_secs_f64()
    ));
    // Every acting reconcile of this run came from Alertmanager.
    let evs = remedy.events(CLUSTER).expect("events");
    for e in &evs {
        if e["kind"] == "reconcile"
            && e["outcome"]["plan"]["action"]["kind"]
                .as_str()
                .is_some_and(|k| k != "no_action" && k != "refuse")
        {
            assert_eq!(e["source"], "alertmanager", "{}", event_line(e));
        }
    }
}

#[test]
fn pipeline_local_coordinator() {
    run(Coord::Local, "local");
}

#[test]
fn pipeline_etcd_coordinator() {
    let etcd = EtcdServer::start_new();
    run(Coord::Etcd(etcd.endpoint()), "etcd");
}
