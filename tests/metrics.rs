//! The exporter, end to end without nodes: realistic observations → `Metrics` → text, read
//! back with prometheus-parse and linted with the real `promtool`; the shipped rule files
//! through `promtool check rules` / `promtool test rules`; the Alertmanager config through
//! `amtool check-config`; and the poll loop against fake nodes and a fake coordinator.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pika_remedy::config::{ClusterConfig, NodeConfig};
use pika_remedy::coord::{CasOutcome, CoordError, Coordinator, Holder, Lease, LockOutcome};
use pika_remedy::metrics::{Metrics, CLASSIC_CONTENT_TYPE, CONTENT_TYPE};
use pika_remedy::model::{
    Addr, BinlogPos, Engine, LinkState, NodeObservation, NodeStatus, Observation, ReplicaLine,
    Role, TopologyRecord, Versioned,
};
use pika_remedy::node::{NodeError, Nodes};
use pika_remedy::service::poller::{poll_loop, PollSettings, PollShared, PollTarget};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn addr(s: &str) -> Addr {
    s.parse().unwrap()
}

/// Run a tool we require; a missing binary fails the test naming the Debian package.
fn run(bin: &str, package: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let path = Path::new("/usr/bin").join(bin);
    let exe = if path.exists() {
        path
    } else {
        PathBuf::from(bin)
    };
    let mut cmd = Command::new(&exe);
    cmd.args(args)
        .current_dir(repo())
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run {bin} ({e}); install the Debian package `{package}`")
    });
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    // Bounded: these tools finish in well under a second; 60 s covers a loaded CI box.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{bin} {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn pika_master() -> NodeStatus {
    // pika-4.0.1-master-2slaves-3dbs.txt, with the replicas renamed to our configured hosts.
    NodeStatus {
        engine: Engine::Pika,
        version: Some("4.0.1".into()),
        role: Role::Master,
        master: None,
        link: None,
        db_links: BTreeMap::new(),
        db_offsets: BTreeMap::from([
            (
                "db0".into(),
                BinlogPos {
                    filenum: 12,
                    offset: 48_210_334,
                },
            ),
            (
                "db1".into(),
                BinlogPos {
                    filenum: 3,
                    offset: 1_048_833,
                },
            ),
            (
                "db2".into(),
                BinlogPos {
                    filenum: 0,
                    offset: 52_213,
                },
            ),
        ]),
        offset: Some(1_622_175_380),
        replid: Some("6b780f95ad38efc2ebff0db75577eae46e7a7287ddb70cf251".into()),
        eligible: Some(true),
        priority: None,
        connected_replicas: 2,
        replicas: vec![
            ReplicaLine {
                ip: "127.0.0.1".into(),
                port: 9222,
                state: None,
                offset: None,
                db_lag: BTreeMap::from([
                    ("db0".into(), Some(0)),
                    ("db1".into(), Some(512)),
                    ("db2".into(), Some(0)),
                ]),
                lag_bytes: Some(512),
                lag_seconds: None,
            },
            ReplicaLine {
                ip: "127.0.0.1".into(),
                port: 9223,
                state: None,
                offset: None,
                db_lag: BTreeMap::from([
                    ("db0".into(), Some(0)),
                    ("db1".into(), None),
                    ("db2".into(), Some(0)),
                ]),
                lag_bytes: None,
                lag_seconds: None,
            },
        ],
        psync: None,
    }
}

fn pika_replica(link: LinkState, db1: LinkState) -> NodeStatus {
    NodeStatus {
        engine: Engine::Pika,
        version: Some("4.0.1".into()),
        role: Role::Slave,
        master: Some(addr("127.0.0.1:9221")),
        link: Some(link),
        db_links: BTreeMap::from([
            ("db0".into(), LinkState::Up),
            ("db1".into(), db1),
            ("db2".into(), LinkState::Up),
        ]),
        db_offsets: BTreeMap::from([
            (
                "db0".into(),
                BinlogPos {
                    filenum: 12,
                    offset: 48_210_334,
                },
            ),
            (
                "db1".into(),
                BinlogPos {
                    filenum: 3,
                    offset: 1_048_321,
                },
            ),
            (
                "db2".into(),
                BinlogPos {
                    filenum: 0,
                    offset: 52_213,
                },
            ),
        ]),
        offset: Some(1_622_174_868),
        replid: Some("6b780f95ad38efc2ebff0db75577eae46e7a7287ddb70cf251".into()),
        eligible: Some(true),
        priority: Some(100),
        connected_replicas: 0,
        replicas: vec![],
        psync: None,
    }
}

fn node(a: &str, status: Result<NodeStatus, String>) -> NodeObservation {
    NodeObservation {
        addr: addr(a),
        priority: 100,
        never_promote: false,
        status,
    }
}

/// Pika cluster: a master, an up replica, a replica in full sync on db1, an old master that
/// came back claiming master, and an unreachable node.
fn pika_observation() -> Observation {
    let mut old_master = pika_master();
    old_master.connected_replicas = 0;
    old_master.replicas.clear();
    old_master.offset = Some(1_500_000_000);
    Observation {
        cluster: "pika-a".into(),
        nodes: vec![
            node("127.0.0.1:9221", Ok(pika_master())),
            node(
                "127.0.0.1:9222",
                Ok(pika_replica(LinkState::Up, LinkState::Up)),
            ),
            node(
                "127.0.0.1:9223",
                Ok(pika_replica(LinkState::FullSync, LinkState::FullSync)),
            ),
            node("127.0.0.1:9224", Ok(old_master)),
            node("127.0.0.1:9225", Err("connection refused".into())),
        ],
    }
}

fn pika_record() -> TopologyRecord {
    TopologyRecord {
        master: addr("127.0.0.1:9221"),
        replicas: vec![
            addr("127.0.0.1:9222"),
            addr("127.0.0.1:9223"),
            addr("127.0.0.1:9224"),
            addr("127.0.0.1:9225"),
        ],
        epoch: 7,
        updated_at: 1_700_000_000,
        last_failover_at: Some(1_700_000_000),
        pending: None,
        reason: "test".into(),
    }
}

fn redis_observation() -> Observation {
    let master = NodeStatus {
        engine: Engine::Redis,
        version: Some("7.0.15".into()),
        role: Role::Master,
        master: None,
        link: None,
        db_links: BTreeMap::new(),
        db_offsets: BTreeMap::new(),
        offset: Some(88_234_567),
        replid: Some("98d5d4c595670b13a4fb60484a8f943f6873f945".into()),
        eligible: None,
        priority: None,
        connected_replicas: 1,
        replicas: vec![ReplicaLine {
            ip: "127.0.0.1".into(),
            port: 6380,
            state: Some("online".into()),
            offset: Some(88_234_413),
            db_lag: BTreeMap::new(),
            lag_bytes: Some(154),
            lag_seconds: Some(1),
        }],
        psync: None,
    };
    let replica = NodeStatus {
        engine: Engine::Redis,
        version: Some("7.0.15".into()),
        role: Role::Slave,
        master: Some(addr("127.0.0.1:6379")),
        link: Some(LinkState::Down),
        db_links: BTreeMap::new(),
        db_offsets: BTreeMap::new(),
        offset: Some(88_234_413),
        replid: None,
        eligible: None,
        priority: Some(100),
        connected_replicas: 0,
        replicas: vec![],
        psync: None,
    };
    Observation {
        cluster: "redis-b".into(),
        nodes: vec![
            node("127.0.0.1:6379", Ok(master)),
            node("127.0.0.1:6380", Ok(replica)),
        ],
    }
}

type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

fn parse(text: &str) -> Samples {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let labels: BTreeMap<String, String> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Some((s.metric, labels, v))
        })
        .collect()
}

/// The value of the one sample `name` whose labels include `want`; panics if none or several.
fn value(samples: &Samples, name: &str, want: &[(&str, &str)]) -> f64 {
    let hits: Vec<f64> = find(samples, name, want);
    assert_eq!(hits.len(), 1, "{name} {want:?}: {hits:?}");
    hits[0]
}

fn find(samples: &Samples, name: &str, want: &[(&str, &str)]) -> Vec<f64> {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect()
}

fn observed_metrics() -> Metrics {
    let m = Metrics::new();
    m.observe_cluster(
        &pika_observation(),
        Some(&pika_record()),
        false,
        1_700_000_090,
    );
    m.observe_cluster(&redis_observation(), None, true, 1_700_000_090);
    m.poll_done("pika-a", Duration::from_millis(12), 1);
    m.poll_skipped("pika-a");
    m.webhook("accepted");
    m.webhook("accepted");
    m.webhook("unauthorized");
    m.reconcile("pika-a", "master_down", "failover", "applied");
    m.remediation("pika-a", "failover", "applied", Duration::from_millis(1800));
    m.lock_held("pika-a", false);
    m.coordinator_up(true);
    m
}

#[test]
fn values_read_back() {
    let m = observed_metrics();
    let s = parse(&m.encode());
    let c = ("cluster", "pika-a");
    let i = |a: &'static str| ("instance", a);

    // up, and the unreachable node keeps only up 0 / eligible 0.
    assert_eq!(
        value(&s, "pika_remedy_node_up", &[c, i("127.0.0.1:9221")]),
        1.0
    );
    assert_eq!(
        value(&s, "pika_remedy_node_up", &[c, i("127.0.0.1:9225")]),
        0.0
    );
    assert!(find(&s, "pika_remedy_node_role", &[c, i("127.0.0.1:9225")]).is_empty());
    assert!(find(&s, "pika_remedy_node_info", &[c, i("127.0.0.1:9225")]).is_empty());
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_promotion_eligible",
            &[c, i("127.0.0.1:9225")]
        ),
        0.0
    );

    // Role: three series per reachable node, exactly one at 1.
    for (inst, role) in [
        ("127.0.0.1:9221", "master"),
        ("127.0.0.1:9222", "slave"),
        ("127.0.0.1:9224", "master"),
    ] {
        let all = find(&s, "pika_remedy_node_role", &[c, ("instance", inst)]);
        assert_eq!(all.len(), 3, "{inst}");
        assert_eq!(all.iter().sum::<f64>(), 1.0, "{inst}");
        assert_eq!(
            value(
                &s,
                "pika_remedy_node_role",
                &[c, ("instance", inst), ("role", role)]
            ),
            1.0
        );
    }
    // Expected role from the record: the returning old master is expected to be a slave.
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_expected_role",
            &[c, i("127.0.0.1:9224"), ("role", "slave")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_expected_role",
            &[c, i("127.0.0.1:9224"), ("role", "master")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_expected_role",
            &[c, i("127.0.0.1:9221"), ("role", "master")]
        ),
        1.0
    );
    assert_eq!(value(&s, "pika_remedy_cluster_masters_claimed", &[c]), 2.0);

    // Link.
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_master_link_up",
            &[c, i("127.0.0.1:9222")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_master_link_up",
            &[c, i("127.0.0.1:9223")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_master_link_state",
            &[c, i("127.0.0.1:9223"), ("state", "full_sync")]
        ),
        1.0
    );
    assert!(find(
        &s,
        "pika_remedy_node_master_link_up",
        &[c, i("127.0.0.1:9221")]
    )
    .is_empty());
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_db_link_up",
            &[c, i("127.0.0.1:9223"), ("db", "db1")]
        ),
        0.0
    );

    // Offsets, per-DB binlog positions.
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_replication_offset_bytes",
            &[c, i("127.0.0.1:9221")]
        ),
        1_622_175_380.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_binlog_file_number",
            &[c, i("127.0.0.1:9221"), ("db", "db0")]
        ),
        12.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_binlog_file_offset_bytes",
            &[c, i("127.0.0.1:9221"), ("db", "db1")]
        ),
        1_048_833.0
    );
    assert_eq!(
        find(
            &s,
            "pika_remedy_node_binlog_file_offset_bytes",
            &[c, i("127.0.0.1:9222")]
        )
        .len(),
        3
    );

    // Lag as reported by the master, labelled with the replica's configured address; the
    // replica in full sync on db1 has no lag series.
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_replica_lag_bytes",
            &[c, i("127.0.0.1:9222"), ("master", "127.0.0.1:9221")]
        ),
        512.0
    );
    assert!(find(
        &s,
        "pika_remedy_node_replica_lag_bytes",
        &[c, i("127.0.0.1:9223")]
    )
    .is_empty());
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_connected_replicas",
            &[c, i("127.0.0.1:9221")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_promotion_eligible",
            &[c, i("127.0.0.1:9222")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_promotion_eligible",
            &[c, i("127.0.0.1:9223")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_info",
            &[
                c,
                i("127.0.0.1:9221"),
                ("engine", "pika"),
                ("version", "4.0.1")
            ]
        ),
        1.0
    );

    // Cluster level.
    assert_eq!(
        value(
            &s,
            "pika_remedy_cluster_recorded_master_info",
            &[c, ("master", "127.0.0.1:9221")]
        ),
        1.0
    );
    assert_eq!(value(&s, "pika_remedy_cluster_epoch", &[c]), 7.0);
    assert_eq!(
        value(&s, "pika_remedy_cluster_last_failover_age_seconds", &[c]),
        90.0
    );
    assert_eq!(value(&s, "pika_remedy_cluster_paused", &[c]), 0.0);
    assert_eq!(value(&s, "pika_remedy_cluster_nodes_reachable", &[c]), 4.0);

    // Redis cluster: no record, paused, link down, lag from offset.
    let r = ("cluster", "redis-b");
    assert_eq!(value(&s, "pika_remedy_cluster_paused", &[r]), 1.0);
    assert_eq!(value(&s, "pika_remedy_cluster_record_present", &[r]), 0.0);
    assert!(find(&s, "pika_remedy_cluster_epoch", &[r]).is_empty());
    assert!(find(&s, "pika_remedy_node_expected_role", &[r]).is_empty());
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_master_link_up",
            &[r, i("127.0.0.1:6380")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_replica_lag_bytes",
            &[r, i("127.0.0.1:6380")]
        ),
        154.0
    );
    assert_eq!(value(&s, "pika_remedy_cluster_masters_claimed", &[r]), 1.0);

    // Service.
    assert_eq!(
        value(&s, "pika_remedy_webhooks_total", &[("outcome", "accepted")]),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_reconciles_total",
            &[
                c,
                ("trigger", "master_down"),
                ("action", "failover"),
                ("result", "applied")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_remediations_total",
            &[c, ("kind", "failover"), ("outcome", "applied")]
        ),
        1.0
    );
    assert_eq!(value(&s, "pika_remedy_poll_errors_total", &[c]), 1.0);
    assert_eq!(value(&s, "pika_remedy_polls_skipped_total", &[c]), 1.0);
    assert_eq!(value(&s, "pika_remedy_coordinator_up", &[]), 1.0);
    assert_eq!(value(&s, "pika_remedy_lock_held", &[c]), 0.0);
    let text = m.encode();
    assert!(text.contains("pika_remedy_remediation_duration_seconds_bucket{le=\"2.5\",cluster=\"pika-a\",kind=\"failover\",outcome=\"applied\"} 1")
        || text.contains("pika_remedy_remediation_duration_seconds_bucket{cluster=\"pika-a\",kind=\"failover\",outcome=\"applied\",le=\"2.5\"} 1"),
        "{text}");
    assert!(text.contains("# TYPE pika_remedy_remediation_duration_seconds histogram"));
    assert!(text.contains("# UNIT pika_remedy_node_replica_lag_bytes bytes"));
}

#[test]
fn series_follow_state_changes() {
    let m = Metrics::new();
    let mut obs = pika_observation();
    m.observe_cluster(&obs, Some(&pika_record()), false, 0);
    // The old master is demoted, the master becomes unreachable, and the record moves on.
    obs.nodes[3].status = Ok(pika_replica(LinkState::Up, LinkState::Up));
    obs.nodes[0].status = Err("timeout".into());
    let mut rec = pika_record();
    rec.master = addr("127.0.0.1:9222");
    rec.epoch = 8;
    rec.last_failover_at = None;
    m.observe_cluster(&obs, Some(&rec), false, 0);
    let s = parse(&m.encode());
    let c = ("cluster", "pika-a");
    assert!(find(
        &s,
        "pika_remedy_node_role",
        &[c, ("instance", "127.0.0.1:9221")]
    )
    .is_empty());
    assert!(find(
        &s,
        "pika_remedy_node_binlog_file_number",
        &[c, ("instance", "127.0.0.1:9221")]
    )
    .is_empty());
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_role",
            &[c, ("instance", "127.0.0.1:9224"), ("role", "slave")]
        ),
        1.0
    );
    assert_eq!(value(&s, "pika_remedy_cluster_masters_claimed", &[c]), 0.0);
    // Exactly one recorded-master series, the new one.
    assert_eq!(
        find(&s, "pika_remedy_cluster_recorded_master_info", &[c]).len(),
        1
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_cluster_recorded_master_info",
            &[c, ("master", "127.0.0.1:9222")]
        ),
        1.0
    );
    assert!(find(&s, "pika_remedy_cluster_last_failover_age_seconds", &[c]).is_empty());
    // The lag reported by the (now unreachable) master is gone.
    assert!(find(&s, "pika_remedy_node_replica_lag_bytes", &[c]).is_empty());
}

fn promtool_check_metrics(text: &str) -> (bool, String) {
    // promtool 2.42 reads the exposition from stdin only.
    run("promtool", "prometheus", &["check", "metrics"], Some(text))
}

#[test]
fn promtool_lints_our_output() {
    let m = observed_metrics();
    let (ok, out) = promtool_check_metrics(&m.encode_classic());
    assert!(ok, "promtool check metrics on the classic text:\n{out}");
    // The OpenMetrics text is what Prometheus scrapes; promtool's classic linter cannot read
    // its counters (documented in src/metrics/mod.rs). Pin that finding so a promtool that learns
    // OpenMetrics shows up here.
    let (ok_om, out_om) = promtool_check_metrics(&m.encode());
    assert!(!ok_om && out_om.contains("_total no help text"), "{out_om}");
    // Prometheus' own OpenMetrics parser (the one a scrape uses) must read every sample.
    // promtool reaches it only through the backfill command, which needs timestamps.
    let om = m.encode();
    assert!(om.ends_with("# EOF\n"));
    let stamped: String = om
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("{l}\n")
            } else {
                format!("{l} 1700000000\n")
            }
        })
        .collect();
    let samples = om.lines().filter(|l| !l.starts_with('#')).count();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.om");
    std::fs::write(&input, stamped).unwrap();
    let blocks = dir.path().join("blocks");
    let (ok, out) = run(
        "promtool",
        "prometheus",
        &[
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            input.to_str().unwrap(),
            blocks.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "promtool tsdb create-blocks-from openmetrics:\n{out}");
    assert!(
        out.split_whitespace().any(|w| w == samples.to_string()),
        "expected {samples} samples in:\n{out}"
    );
    assert_eq!(
        m.encode_for_accept(Some("application/openmetrics-text; version=1.0.0"))
            .0,
        CONTENT_TYPE
    );
    assert_eq!(
        m.encode_for_accept(Some("text/plain")).0,
        CLASSIC_CONTENT_TYPE
    );
}

#[test]
fn rules_check_and_unit_tests_pass() {
    let (ok, out) = run(
        "promtool",
        "prometheus",
        &[
            "check",
            "rules",
            "rules/pika-remedy.yml",
            "rules/pika-exporter.yml",
        ],
        None,
    );
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = run(
        "promtool",
        "prometheus",
        &[
            "test",
            "rules",
            "rules/pika-remedy_test.yml",
            "rules/pika-exporter_test.yml",
        ],
        None,
    );
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.matches("SUCCESS").count() >= 2, "{out}");
}

#[test]
fn prometheus_config_checks() {
    let (ok, out) = run(
        "promtool",
        "prometheus",
        &["check", "config", "deploy/prometheus/prometheus.yml"],
        None,
    );
    assert!(ok, "promtool check config:\n{out}");
    let (ok, out) = run(
        "promtool",
        "prometheus",
        &["check", "config", "deploy/compose/prometheus.yml"],
        None,
    );
    assert!(ok, "promtool check config (compose):\n{out}");
    let (ok, out) = run(
        "amtool",
        "prometheus-alertmanager",
        &["check-config", "deploy/compose/alertmanager.yml"],
        None,
    );
    assert!(ok, "amtool check-config (compose):\n{out}");
}

/// Every PromQL expression of the Grafana dashboard parses (as a recording rule, through
/// `promtool check rules`), with Grafana's variables replaced.
#[test]
fn grafana_dashboard_queries_parse() {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/pika-remedy.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dash, &mut exprs);
    assert!(exprs.len() >= 20, "{}", exprs.len());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$cluster", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let (ok, out) = run(
        "promtool",
        "prometheus",
        &["check", "rules", file.to_str().unwrap()],
        None,
    );
    assert!(ok, "dashboard queries:\n{out}");
}

#[test]
fn alertmanager_config_checks() {
    let (ok, out) = run(
        "amtool",
        "prometheus-alertmanager",
        &["check-config", "alerts/alertmanager.yml"],
        None,
    );
    assert!(ok, "amtool check-config:\n{out}");
    // Routing: trigger alerts reach the webhook and humans; the rest humans only.
    for (labels, receivers) in [
        (
            &["alertname=PikaMasterDown", "cluster=c1"][..],
            "pika-remedy,pika-oncall",
        ),
        (
            &["alertname=PikaRoleMismatch", "cluster=c1"],
            "pika-remedy,pika-oncall",
        ),
        (
            &["alertname=PikaReplicaLinkDown", "cluster=c1"],
            "pika-oncall",
        ),
        (
            &["alertname=PikaReplicationLagHigh", "cluster=c1"],
            "pika-oncall",
        ),
        (
            &["alertname=PikaRemediationFailed", "cluster=c1"],
            "pika-oncall",
        ),
        (&["alertname=PikaRemedyDown"], "pika-oncall"),
        (&["alertname=PikaRemedyCoordinatorDown"], "pika-oncall"),
        (
            &["alertname=PikaRemedyLockHeldTooLong", "cluster=c1"],
            "pika-oncall",
        ),
        (
            &["alertname=PikaRemedyLockRefusals", "cluster=c1"],
            "pika-oncall",
        ),
        (&["alertname=SomethingElse"], "ops-default"),
    ] {
        let verify = format!("--verify.receivers={receivers}");
        let mut args = vec![
            "config",
            "routes",
            "test",
            "--config.file=alerts/alertmanager.yml",
            verify.as_str(),
        ];
        args.extend_from_slice(labels);
        let (ok, out) = run("amtool", "prometheus-alertmanager", &args, None);
        assert!(ok, "amtool config routes test {labels:?}:\n{out}");
    }
}

// ---- the poll loop, against fakes ----

/// Nodes that answer from a fixed map, counting calls; `slow` makes every call take that long.
struct FakeNodes {
    answers: BTreeMap<Addr, NodeStatus>,
    calls: AtomicUsize,
    slow: Duration,
}

impl Nodes for FakeNodes {
    async fn status(&self, node: &Addr) -> Result<NodeStatus, NodeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.slow).await;
        self.answers.get(node).cloned().ok_or(NodeError::Refused)
    }
    async fn promote(&self, _: &Addr) -> Result<(), NodeError> {
        unreachable!("the poller never mutates")
    }
    async fn follow(&self, _: &Addr, _: &Addr, _: bool) -> Result<(), NodeError> {
        unreachable!("the poller never mutates")
    }
    async fn set_masterauth(&self, _: &Addr) -> Result<(), NodeError> {
        unreachable!("the poller never mutates")
    }
    async fn config_rewrite(&self, _: &Addr) -> Result<(), NodeError> {
        unreachable!("the poller never mutates")
    }
    async fn pause_writes(&self, _: &Addr, _: Duration) -> Result<(), NodeError> {
        unreachable!("the poller never mutates")
    }
    async fn unpause_writes(&self, _: &Addr) -> Result<(), NodeError> {
        unreachable!("the poller never mutates")
    }
}

/// A coordinator that only serves a record (or an outage).
struct RecordOnly {
    record: Mutex<Result<Option<TopologyRecord>, CoordError>>,
}

impl Coordinator for RecordOnly {
    fn kind(&self) -> &'static str {
        "fake"
    }
    async fn try_lock(&self, _: &str, _: &Holder, _: Duration) -> Result<LockOutcome, CoordError> {
        Err(CoordError::Backend("not in this test".into()))
    }
    async fn still_held(&self, _: &Lease) -> Result<bool, CoordError> {
        Err(CoordError::Backend("not in this test".into()))
    }
    async fn release(&self, _: Lease) -> Result<(), CoordError> {
        Ok(())
    }
    async fn read_record(&self, _: &str) -> Result<Option<Versioned<TopologyRecord>>, CoordError> {
        self.record
            .lock()
            .unwrap()
            .clone()
            .map(|r| r.map(|value| Versioned { value, version: 1 }))
    }
    async fn write_record(
        &self,
        _: &str,
        _: &TopologyRecord,
        _: Option<u64>,
    ) -> Result<CasOutcome, CoordError> {
        Err(CoordError::Backend("not in this test".into()))
    }
    async fn append_event(&self, _: &str, _: &str) -> Result<(), CoordError> {
        Ok(())
    }
    async fn publish_roles(&self, _: &str, _: &Addr, _: &[Addr]) -> Result<(), CoordError> {
        Ok(())
    }
    async fn ping(&self) -> Result<(), CoordError> {
        Ok(())
    }
}

fn cluster_config(obs: &Observation) -> ClusterConfig {
    ClusterConfig {
        name: obs.cluster.clone(),
        password: None,
        paused: false,
        rename_commands: Default::default(),
        nodes: obs
            .nodes
            .iter()
            .map(|n| NodeConfig {
                addr: n.addr.clone(),
                priority: 100,
                never_promote: false,
            })
            .collect(),
    }
}

fn fake_nodes(obs: &Observation, slow: Duration) -> Arc<FakeNodes> {
    Arc::new(FakeNodes {
        answers: obs
            .nodes
            .iter()
            .filter_map(|n| n.status.clone().ok().map(|s| (n.addr.clone(), s)))
            .collect(),
        calls: AtomicUsize::new(0),
        slow,
    })
}

#[tokio::test(start_paused = true)]
async fn poll_loop_updates_metrics_skips_overlaps_and_stops() {
    let pika = pika_observation();
    let redis = redis_observation();
    let fast = fake_nodes(&pika, Duration::from_millis(5));
    // Each redis poll takes 2.5 ticks: ticks in between must be skipped, not stacked.
    let slow = fake_nodes(&redis, Duration::from_millis(2500));
    let metrics = Arc::new(Metrics::new());
    let latest = pika_remedy::service::poller::ClusterCache::default();
    let coord = Arc::new(RecordOnly {
        record: Mutex::new(Ok(Some(pika_record()))),
    });
    let shared = Arc::new(PollShared {
        coord: Arc::clone(&coord),
        metrics: Arc::clone(&metrics),
        cache: latest.clone(),
        paused: |c: &str| c == "redis-b",
        settings: PollSettings {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        },
        self_trigger: None,
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    let targets = vec![
        PollTarget {
            cluster: cluster_config(&pika),
            nodes: Arc::clone(&fast),
        },
        PollTarget {
            cluster: cluster_config(&redis),
            nodes: Arc::clone(&slow),
        },
    ];
    let task = tokio::spawn(poll_loop(targets, shared, rx));
    tokio::time::sleep(Duration::from_millis(5500)).await;

    // The coordinator goes away: the last record keeps the expected roles.
    *coord.record.lock().unwrap() = Err(CoordError::Unreachable("down".into()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("poll_loop stops on shutdown")
        .unwrap();

    let pika_polls = fast.calls.load(Ordering::SeqCst) / pika.nodes.len();
    let redis_polls = slow.calls.load(Ordering::SeqCst) / redis.nodes.len();
    // Ticks at 0,1,…,7 s: 8 polls of the fast cluster; the slow one starts at 0, 3, 6.
    assert!((7..=9).contains(&pika_polls), "{pika_polls}");
    assert!((2..=3).contains(&redis_polls), "{redis_polls}");

    let s = parse(&metrics.encode());
    let skipped = find(
        &s,
        "pika_remedy_polls_skipped_total",
        &[("cluster", "redis-b")],
    );
    assert!(
        skipped.first().copied().unwrap_or(0.0) >= 4.0,
        "{skipped:?}"
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_polls_skipped_total",
            &[("cluster", "pika-a")]
        ),
        0.0
    );
    assert_eq!(value(&s, "pika_remedy_coordinator_up", &[]), 0.0);
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_expected_role",
            &[
                ("cluster", "pika-a"),
                ("instance", "127.0.0.1:9221"),
                ("role", "master")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(&s, "pika_remedy_cluster_paused", &[("cluster", "redis-b")]),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "pika_remedy_node_up",
            &[("cluster", "pika-a"), ("instance", "127.0.0.1:9225")]
        ),
        0.0
    );
    assert_eq!(latest.len(), 2);
    assert_eq!(latest.observation("pika-a").unwrap().reachable_count(), 4);
}
