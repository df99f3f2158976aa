//! The shipped rules fire on real data (issue 6 "done when"): real Prometheus 2.42 scrapes the
//! real `pika-remedy serve` (paused, so it never remediates) watching a real redis master + 2
//! replicas, and evaluates `rules/pika-remedy.yml` unchanged (scrape and evaluation 1 s, as
//! shipped in deploy/prometheus/prometheus.yml).
//!
//! 1. healthy: the per-node series carry the node's `instance` (honor_labels) with the right
//!    values, and neither trigger alert is active;
//! 2. `kill -9` the master: PikaMasterDown fires for it;
//! 3. an operator promotes a replica by hand (REPLICAOF NO ONE, repoint the other, `pika-remedy
//!    record`): PikaMasterDown resolves;
//! 4. the old master restarts from its original config (role master): PikaRoleMismatch fires.
//!
//! No Alertmanager here: Prometheus' own `/api/v1/alerts` is the observable.

mod support;

use std::time::{Duration, Instant};

use support::prom::{DumpOnPanic, Prometheus, Remedy, RemedyOptions, Timeline};
use support::redis::{free_port, wait_for, RedisCluster};

const CLUSTER: &str = "c";

#[test]
fn shipped_rules_fire_on_real_metrics() {
    let tl = Timeline::new();
    let _dump = DumpOnPanic(tl.clone());
    let mut cl = RedisCluster::start(2, None);
    let a: Vec<String> = cl.addrs().iter().map(|a| a.to_string()).collect();
    let (old, r1, r2) = (a[0].clone(), a[1].clone(), a[2].clone());
    let mut opts = RemedyOptions::new(support::prom::Coord::Local, cl.cluster_toml(CLUSTER, &[]));
    // Observe and export only: an automatic action would hide what the rules do.
    opts.service_extra = vec!["paused = true".into()];
    opts.timeouts_extra = vec!["connect = \"200ms\"".into(), "command = \"1s\"".into()];
    let remedy = Remedy::start(&opts);
    remedy.record(CLUSTER, &old);
    // Alerts go nowhere (a closed port): the rules are evaluated all the same.
    let prom = Prometheus::start(remedy.port, free_port());
    {
        let log = remedy.log_path();
        tl.on_failure(move || {
            format!(
                "---- pika-remedy log ----\n{}",
                support::prom::log_tail(&log, 40)
            )
        });
    }
    tl.note(format!(
        "master {old}, replicas {r1} {r2}; prometheus on {}",
        prom.port
    ));

    // 1. Healthy cluster: values per node.
    let role_master = "pika_remedy_node_role{role=\"master\"}";
    let expected_master = "pika_remedy_node_expected_role{role=\"master\"}";
    wait_for(
        Duration::from_secs(15),
        "first scrapes with the record",
        || {
            prom.value_for(expected_master, &old) == Some(1.0)
                && prom.value_for("pika_remedy_node_master_link_up", &r2) == Some(1.0)
        },
    );
    for n in [&old, &r1, &r2] {
        assert_eq!(
            prom.value_for("pika_remedy_node_up", n),
            Some(1.0),
            "{n} up"
        );
        let m = if n == &old { 1.0 } else { 0.0 };
        assert_eq!(prom.value_for(role_master, n), Some(m), "{n} role master");
        assert_eq!(
            prom.value_for(expected_master, n),
            Some(m),
            "{n} expected master"
        );
        assert_eq!(
            prom.value_for("pika_remedy_node_role{role=\"slave\"}", n),
            Some(1.0 - m),
            "{n} role slave"
        );
    }
    for n in [&r1, &r2] {
        assert_eq!(
            prom.value_for("pika_remedy_node_master_link_up", n),
            Some(1.0)
        );
        assert_eq!(
            prom.value_for("pika_remedy_node_promotion_eligible", n),
            Some(1.0)
        );
    }
    let claimed = prom
        .query("pika_remedy_cluster_masters_claimed")
        .expect("query");
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(
        claimed[0].0.get("cluster").map(String::as_str),
        Some(CLUSTER)
    );
    assert_eq!(claimed[0].1, 1.0);
    let rec = prom
        .query("pika_remedy_cluster_recorded_master_info")
        .expect("query");
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(rec[0].0.get("master"), Some(&old));
    // Evaluate for a few cycles: no trigger alert on a healthy cluster.
    std::thread::sleep(Duration::from_secs(3));
    let active: Vec<_> = prom
        .alerts()
        .expect("alerts")
        .into_iter()
        .filter(|a| a.name() == "PikaMasterDown" || a.name() == "PikaRoleMismatch")
        .collect();
    assert!(active.is_empty(), "alerts on a healthy cluster: {active:?}");
    tl.note("healthy: values correct, no trigger alert");

    // 2. Master dies.
    let t = Instant::now();
    cl.master.kill9();
    let fired = prom.wait_firing("PikaMasterDown", Some(&old), Duration::from_secs(20));
    tl.note(format!(
        "PikaMasterDown firing {:.2}s after kill -9: {:?}",
        t.elapsed().as_secs_f64(),
        fired.labels
    ));
    assert_eq!(fired.label("cluster"), CLUSTER);
    assert_eq!(fired.label("severity"), "critical");
    assert_eq!(fired.label("source"), "pika-remedy");
    assert_eq!(prom.value_for("pika_remedy_node_up", &old), Some(0.0));
    // pika-remedy is paused: nothing was promoted.
    assert_eq!(cl.replicas[0].role(), "slave");
    assert_eq!(cl.replicas[1].role(), "slave");

    // 3. Manual failover to r1, recorded by the operator.
    cl.replicas[0].cmd(&["REPLICAOF", "NO", "ONE"]);
    let p1 = cl.replicas[0].port().to_string();
    cl.replicas[1].cmd(&["REPLICAOF", "127.0.0.1", &p1]);
    remedy.record(CLUSTER, &r1);
    tl.note(format!("operator promoted {r1} and recorded it"));
    wait_for(
        Duration::from_secs(20),
        "PikaMasterDown resolved after the manual failover",
        || {
            prom.alerts().is_ok_and(|a| {
                !a.iter()
                    .any(|a| a.name() == "PikaMasterDown" && a.state == "firing")
            })
        },
    );
    tl.note("PikaMasterDown resolved");

    // 4. The old master comes back as master: role mismatch.
    let t = Instant::now();
    cl.master.restart();
    assert_eq!(cl.master.role(), "master");
    let fired = prom.wait_firing("PikaRoleMismatch", Some(&old), Duration::from_secs(20));
    tl.note(format!(
        "PikaRoleMismatch firing {:.2}s after the restart: {:?}",
        t.elapsed().as_secs_f64(),
        fired.labels
    ));
    assert_eq!(fired.label("cluster"), CLUSTER);
    assert_eq!(prom.value_for(role_master, &old), Some(1.0));
    assert_eq!(prom.value_for(expected_master, &old), Some(0.0));
    assert_eq!(prom.value_for(expected_master, &r1), Some(1.0));
    // Only the stale master is mismatched, not the legitimate new one.
    let mism: Vec<String> = prom
        .alerts()
        .expect("alerts")
        .iter()
        .filter(|a| a.name() == "PikaRoleMismatch")
        .map(|a| a.label("instance").to_string())
        .collect();
    assert_eq!(mism, vec![old.clone()]);
    // Still paused: the old master was left alone.
    assert_eq!(cl.master.role(), "master");
}
