//! The exporter against a real topology: `pika-remedy serve` (the binary) polls a real
//! `redis-server` master and two replicas; its `/metrics` body is linted with the real
//! `promtool check metrics` and parsed with prometheus-parse, and the values are checked
//! against what the nodes themselves report. Remediation is paused (`service.paused = true`),
//! so killing the master only changes what is exported.

mod support;
#[path = "support/serve.rs"]
mod svc;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};
use support::redis::{info_field, require_binary, RedisCluster};
use svc::{assert_no_secret, cli, Service};

const CLUSTER: &str = "c";
const PASSWORD: &str = "exp0rter-n0de-pw";
const BEARER: &str = "exp0rter-bearer";

fn parse(text: &str) -> Vec<Sample> {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse reads the classic exposition")
        .samples
}

fn value(s: &Sample) -> f64 {
    match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        _ => f64::NAN,
    }
}

/// Values of `metric` whose labels include all of `labels`, keyed by the `instance` label
/// (or "" if it has none).
fn series(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| (s.labels.get("instance").unwrap_or("").to_string(), value(s)))
        .collect()
}

fn one(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    let m = series(samples, metric, labels);
    assert_eq!(m.len(), 1, "{metric}{labels:?}: {m:?}");
    *m.values().next().unwrap()
}

/// `promtool check metrics` (reads stdin). Missing promtool fails naming the package.
fn promtool_check(text: &str) -> (bool, String) {
    let bin = require_binary("promtool", "prometheus");
    let mut child = Command::new(bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "promtool did not finish in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn scrape(svc: &Service, accept: Option<&str>) -> (String, String) {
    let mut r = svc.client.get(svc.url("/metrics"));
    if let Some(a) = accept {
        r = r.header("accept", a);
    }
    let r = r.send().await.expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (ct, r.text().await.unwrap())
}

/// Scrape (classic) until `pred` holds on the parsed samples, bounded.
async fn scrape_until(
    svc: &Service,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&[Sample]) -> bool,
) -> (String, Vec<Sample>) {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, text) = scrape(svc, None).await;
        let s = parse(&text);
        if pred(&s) {
            return (text, s);
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}\nlast body:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_topology_exposition() {
    let mut c = RedisCluster::start(2, Some(PASSWORD));
    let dir = tempfile::tempdir().unwrap();
    let bearer = dir.path().join("bearer");
    std::fs::write(&bearer, BEARER).unwrap();
    let config = dir.path().join("pika-remedy.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\npaused = true\npoll_interval = \"200ms\"\n\
             [coordinator.local]\ndir = \"{}\"\n\
             [webhook]\nbearer_token = {{ file = \"{}\" }}\n{}",
            dir.path().display(),
            bearer.display(),
            c.cluster_toml(CLUSTER, &[])
        ),
    )
    .unwrap();
    let master = c.master.addr().to_string();
    let replicas: Vec<String> = c.replicas.iter().map(|r| r.addr().to_string()).collect();
    let (code, out, err) = cli(
        &[
            "record",
            "--config",
            config.to_str().unwrap(),
            "--cluster",
            CLUSTER,
            "--master",
            &master,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, 0, "{out}{err}");

    // Writes, then wait until both replicas have acknowledged everything.
    for i in 0..200 {
        c.master.cmd(&["SET", &format!("k{i}"), &"v".repeat(100)]);
    }
    let settled = support::redis::wait_until(Duration::from_secs(10), || {
        let m = info_field(&c.master.info_replication(), "master_repl_offset");
        c.replicas
            .iter()
            .all(|r| info_field(&r.info_replication(), "slave_repl_offset") == m && m.is_some())
    });
    assert!(settled, "replicas did not catch up");

    let svc = Service::start(&config).await;
    let (text, s) = scrape_until(
        &svc,
        Duration::from_secs(10),
        "a poll with all three up",
        |s| {
            series(s, "pika_remedy_node_up", &[("cluster", CLUSTER)])
                .values()
                .filter(|v| **v == 1.0)
                .count()
                == 3
                && !series(s, "pika_remedy_cluster_epoch", &[("cluster", CLUSTER)]).is_empty()
        },
    )
    .await;

    // The classic body passes promtool.
    let (ok, lint) = promtool_check(&text);
    assert!(ok, "promtool check metrics:\n{lint}\n--- body:\n{text}");
    // Content negotiation: Prometheus gets OpenMetrics, everything else the classic text.
    let (ct_om, om) = scrape(&svc, Some("application/openmetrics-text; version=1.0.0")).await;
    assert!(ct_om.starts_with("application/openmetrics-text"), "{ct_om}");
    assert!(om.trim_end().ends_with("# EOF"));
    assert!(om.contains("pika_remedy_node_up{"));
    let (ct_classic, _) = scrape(&svc, None).await;
    assert!(
        ct_classic.starts_with("text/plain; version=0.0.4"),
        "{ct_classic}"
    );

    // Values against the real topology.
    for inst in std::iter::once(&master).chain(&replicas) {
        assert_eq!(one(&s, "pika_remedy_node_up", &[("instance", inst)]), 1.0);
        let want = if inst == &master { "master" } else { "slave" };
        let roles = s
            .iter()
            .filter(|x| {
                x.metric == "pika_remedy_node_role" && x.labels.get("instance") == Some(inst)
            })
            .map(|x| (x.labels.get("role").unwrap().to_string(), value(x)))
            .collect::<BTreeMap<_, _>>();
        assert_eq!(roles.len(), 3, "{inst}: {roles:?}");
        for (role, v) in &roles {
            assert_eq!(*v, f64::from(u8::from(role == want)), "{inst} role {role}");
        }
        let expected = s
            .iter()
            .filter(|x| {
                x.metric == "pika_remedy_node_expected_role"
                    && x.labels.get("instance") == Some(inst)
                    && value(x) == 1.0
            })
            .map(|x| x.labels.get("role").unwrap().to_string())
            .collect::<Vec<_>>();
        assert_eq!(expected, [want], "{inst} expected role from the record");
    }
    for r in &replicas {
        assert_eq!(
            one(&s, "pika_remedy_node_master_link_up", &[("instance", r)]),
            1.0
        );
    }
    assert!(series(
        &s,
        "pika_remedy_node_master_link_up",
        &[("instance", &master)]
    )
    .is_empty());
    let offsets = series(
        &s,
        "pika_remedy_node_replication_offset_bytes",
        &[("cluster", CLUSTER)],
    );
    assert_eq!(offsets.len(), 3, "{offsets:?}");
    let (lo, hi) = offsets
        .values()
        .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    assert!(lo > 20_000.0, "200 writes of 100 bytes: {offsets:?}");
    // Equal after the writes settled, up to the master's periodic PINGs to its replicas.
    assert!(hi - lo <= 1024.0, "{offsets:?}");
    let cl = [("cluster", CLUSTER)];
    assert_eq!(one(&s, "pika_remedy_cluster_masters_claimed", &cl), 1.0);
    assert_eq!(one(&s, "pika_remedy_cluster_nodes", &cl), 3.0);
    assert_eq!(one(&s, "pika_remedy_cluster_nodes_reachable", &cl), 3.0);
    assert_eq!(one(&s, "pika_remedy_cluster_record_present", &cl), 1.0);
    assert_eq!(
        one(
            &s,
            "pika_remedy_cluster_recorded_master_info",
            &[("cluster", CLUSTER), ("master", &master)]
        ),
        1.0
    );
    assert_eq!(one(&s, "pika_remedy_cluster_epoch", &cl), 1.0);
    assert_eq!(one(&s, "pika_remedy_cluster_paused", &cl), 1.0);
    assert_eq!(
        one(
            &s,
            "pika_remedy_node_connected_replicas",
            &[("instance", &master)]
        ),
        2.0
    );
    for r in &replicas {
        assert_eq!(
            one(
                &s,
                "pika_remedy_node_promotion_eligible",
                &[("instance", r)]
            ),
            1.0
        );
    }

    // Kill the master: after a poll it is `node_up 0`, its role series are gone, nobody
    // claims master, and nothing was remediated (paused).
    c.master.kill9();
    let t = Instant::now();
    let (_, s) = scrape_until(&svc, Duration::from_secs(10), "master node_up 0", |s| {
        series(s, "pika_remedy_node_up", &[("instance", &master)]).get(&master) == Some(&0.0)
    })
    .await;
    let seen_after = t.elapsed();
    assert!(s.iter().all(
        |x| !(x.metric == "pika_remedy_node_role" && x.labels.get("instance") == Some(&master))
    ));
    assert_eq!(one(&s, "pika_remedy_cluster_masters_claimed", &cl), 0.0);
    assert_eq!(one(&s, "pika_remedy_cluster_nodes_reachable", &cl), 2.0);
    for r in &replicas {
        assert_eq!(one(&s, "pika_remedy_node_up", &[("instance", r)]), 1.0);
        assert_eq!(
            one(&s, "pika_remedy_node_master_link_up", &[("instance", r)]),
            0.0
        );
    }
    assert_eq!(one(&s, "pika_remedy_cluster_epoch", &cl), 1.0);
    assert!(
        c.replicas.iter().all(|r| r.role() == "slave"),
        "paused: nobody was promoted"
    );
    eprintln!(
        "master down visible in /metrics {:.2}s after kill -9",
        seen_after.as_secs_f64()
    );
    assert_no_secret(&svc.log(), "serve log", &[PASSWORD, BEARER]);
    assert_no_secret(&text, "/metrics", &[PASSWORD, BEARER]);
}
