//! A reconcile's first look may reuse the poller's observation (`service.reuse_observation_within`)
//! — the real `pika-remedy serve` binary, end to end:
//!
//! 1. **Guard** (real `redis-server`): an observation taken before an alert's `startsAt` is
//!    never reused. The only poll runs at start-up (`poll_interval = "1h"`, reuse bound 1 h,
//!    `self_trigger = false`); an alert older than that poll is answered from it ("no action",
//!    counted `source="poller"`); then the master is killed and an alert whose `startsAt` is
//!    after the poll gets a fresh look and a failover.
//! 2. **Storm** (scripted Pika peers): 1000 webhooks spread over 10 healthy 3-node clusters
//!    (default settings) cost at most 2.5 INFO each beyond the poller's own, counted at the
//!    peers.

mod support;

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use support::pika::{PeerLink, PikaPeer, PikaState};
use support::prom::{get, Coord, Remedy, RemedyOptions};
use support::redis::RedisCluster;

/// A firing `PikaMasterDown` notification about `instance` of `cluster`, started at `starts_at`.
fn alert(cluster: &str, instance: &str, starts_at: SystemTime) -> String {
    json!({
        "version": "4",
        "status": "firing",
        "receiver": "pika-remedy",
        "groupKey": format!("{{}}:{{cluster=\"{cluster}\"}}"),
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "PikaMasterDown", "cluster": cluster, "instance": instance},
            "startsAt": humantime::format_rfc3339_millis(starts_at).to_string(),
            "fingerprint": format!("fp-{cluster}"),
        }],
    })
    .to_string()
}

/// Sum of the samples of `name` (classic exposition) whose labels contain `labels`.
fn metric(remedy: &Remedy, name: &str, labels: &str) -> f64 {
    let r = get(remedy.port, "/metrics").expect("GET /metrics");
    r.body
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Wait (bounded) until `cond` holds.
fn wait(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_observation_older_than_the_alert_is_not_reused() {
    let mut cl = RedisCluster::start(2, None);
    cl.wait_linked(Duration::from_secs(10));
    let mut opts = RemedyOptions::new(Coord::Local, cl.cluster_toml("c", &[]));
    opts.service_extra = [
        "poll_interval = \"1h\"",
        "self_trigger = false",
        "reuse_observation_within = \"1h\"",
    ]
    .map(String::from)
    .to_vec();
    let remedy = Remedy::start(&opts);
    let old = cl.master.addr().to_string();
    remedy.record("c", &old);
    // The start-up poll (the only one) is done.
    wait(Duration::from_secs(10), "the first poll", || {
        metric(
            &remedy,
            "pika_remedy_poll_duration_seconds_count",
            "cluster=\"c\"",
        ) >= 1.0
    });
    let polled = SystemTime::now();

    // An alert that started before the poll: the poll (all healthy) answers it.
    let before = polled - Duration::from_secs(60);
    let r = remedy
        .post_alert(&alert("c", &old, before))
        .expect("webhook");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("no_action"), "{}", r.body);
    assert_eq!(
        metric(
            &remedy,
            "pika_remedy_observations_total",
            "source=\"poller\""
        ),
        1.0
    );

    // The master dies after the poll; an alert about it started after the poll: the poll's
    // "healthy" must not be reused, a fresh look fails over.
    cl.master.kill9();
    std::thread::sleep(Duration::from_millis(20));
    let r = remedy
        .post_alert(&alert("c", &old, SystemTime::now()))
        .expect("webhook");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        metric(
            &remedy,
            "pika_remedy_observations_total",
            "source=\"fresh\""
        ),
        1.0,
        "{}",
        r.body
    );
    assert_eq!(
        metric(
            &remedy,
            "pika_remedy_observations_total",
            "source=\"poller\""
        ),
        1.0
    );
    wait(Duration::from_secs(20), "a failover", || {
        remedy
            .recorded_master("c")
            .is_some_and(|m| m != old && !m.is_empty())
    });
    let new = remedy.recorded_master("c").unwrap_or_default();
    assert!(
        cl.replicas.iter().any(|r| r.addr().to_string() == new),
        "{new}\n{}",
        remedy.log_tail(40)
    );
}

/// A tiny deterministic generator (xorshift64*), for the spread of the storm.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const STORM_CLUSTERS: usize = 10;
const STORM_WEBHOOKS: usize = 1000;

#[test]
fn a_storm_of_spread_webhooks_costs_few_info() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // 10 healthy clusters of 3 scripted peers (a master and two linked replicas).
    let mut clusters: Vec<(String, Vec<PikaPeer>)> = Vec::new();
    for i in 0..STORM_CLUSTERS {
        let peers = rt.block_on(async {
            let m = PikaPeer::start(PikaState::master()).await;
            let r1 = PikaPeer::start(PikaState::slave_of(&m.addr(), PeerLink::Up)).await;
            let r2 = PikaPeer::start(PikaState::slave_of(&m.addr(), PeerLink::Up)).await;
            let slaves = [r1.addr(), r2.addr()];
            m.with_state(|s| *s = PikaState::master_with_slaves(&slaves));
            vec![m, r1, r2]
        });
        clusters.push((format!("s{i}"), peers));
    }
    let toml: String = clusters
        .iter()
        .map(|(name, peers)| {
            let nodes: Vec<String> = peers
                .iter()
                .map(|p| format!("{{ addr = \"{}\" }}", p.addr()))
                .collect();
            format!(
                "[[cluster]]\nname = \"{name}\"\nnodes = [{}]\n",
                nodes.join(", ")
            )
        })
        .collect();
    let remedy = Remedy::start(&RemedyOptions::new(Coord::Local, toml));
    for (name, peers) in &clusters {
        remedy.record(name, &peers[0].addr().to_string());
    }
    // Every cluster polled with its record.
    wait(Duration::from_secs(20), "a poll of every cluster", || {
        metric(&remedy, "pika_remedy_cluster_record_present", "") >= STORM_CLUSTERS as f64
    });
    std::thread::sleep(Duration::from_secs(1));

    let infos = |clusters: &[(String, Vec<PikaPeer>)]| -> usize {
        clusters
            .iter()
            .flat_map(|(_, p)| p.iter())
            .map(|p| {
                p.commands()
                    .iter()
                    .filter(|c| c.first().is_some_and(|w| w.eq_ignore_ascii_case("INFO")))
                    .count()
            })
            .sum()
    };
    let polls = || metric(&remedy, "pika_remedy_poll_duration_seconds_count", "");
    let (info0, polls0) = (infos(&clusters), polls());
    let started = Instant::now();
    // An alert that has been firing for a minute, re-sent to every cluster at random, spread.
    let since = SystemTime::now() - Duration::from_secs(60);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..STORM_WEBHOOKS {
        let (name, peers) = &clusters[(rng.next() % STORM_CLUSTERS as u64) as usize];
        let r = remedy
            .post_alert(&alert(name, &peers[0].addr().to_string(), since))
            .expect("webhook");
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("no_action"), "{}", r.body);
        std::thread::sleep(Duration::from_micros(rng.next() % 4000));
    }
    let took = started.elapsed();
    let (info1, polls1) = (infos(&clusters), polls());
    // Every poll of a 3-node cluster sends INFO replication to each node on its kept
    // connection (INFO server only once per connection, long before this window).
    let poller_infos = (polls1 - polls0) * 3.0;
    let reconcile_infos = (info1 - info0) as f64 - poller_infos;
    let per_webhook = reconcile_infos / STORM_WEBHOOKS as f64;
    let reused = metric(
        &remedy,
        "pika_remedy_observations_total",
        "source=\"poller\"",
    );
    let fresh = metric(
        &remedy,
        "pika_remedy_observations_total",
        "source=\"fresh\"",
    );
    println!(
        "storm: {STORM_WEBHOOKS} webhooks over {STORM_CLUSTERS} clusters in {took:?}: {} INFO in all, \
         {poller_infos} by {} polls, {per_webhook:.2} INFO per webhook; first looks reused {reused}, fresh {fresh}",
        info1 - info0,
        polls1 - polls0,
    );
    assert_eq!(reused + fresh, STORM_WEBHOOKS as f64);
    assert!(
        per_webhook <= 2.5,
        "{per_webhook:.2} INFO per webhook (reused {reused}, fresh {fresh})"
    );
    drop(remedy);
    drop(clusters);
}
