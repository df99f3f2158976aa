//! Scale-out (`service.scale_out`, docs/scale-out.md): three `pika-remedy serve` PROCESSES on
//! one real etcd share 300 clusters.
//!
//! - 297 clusters are a master and a replica on the scripted Pika peer (in this process: 594
//!   listeners), 3 are real redis-server clusters (master + replica, records bootstrapped).
//! - **Exactly one poller:** once the three see each other, every cluster is owned (gauge
//!   `pika_remedy_cluster_owned`) by exactly one instance, the one rendezvous hashing names;
//!   over a window only the owner's poll count of a cluster grows, and every scripted node
//!   got INFOs in it.
//! - **Owner shown:** every instance's `GET /v1/clusters` names the same owner for every
//!   cluster (`owner.instance`, `this_instance` true on that one only), `GET /v1/members` lists
//!   the live members and their shares, and `status` names the same owner; the window check
//!   above uses the owners the API reports, so a wrong `owner` fails it.
//! - **Takeover:** one instance is SIGKILLed: within one member TTL (plus the re-read and a
//!   margin, and below the lock TTL) the two survivors own its clusters and poll them, and
//!   the `owner` fields of the dead instance's clusters move to the survivors.
//! - **Failover:** then the master of a real cluster that belonged to the dead instance is
//!   SIGKILLed: its new owner's poller self-triggers and fails it over (record epoch +1, the
//!   replica promoted). No webhook is sent.
//!
//! Every wait is bounded; children are SIGKILLed on drop.

mod support;
#[path = "support/serve.rs"]
mod svc;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pika_remedy::model::TopologyRecord;
use pika_remedy::service::ownership::owner_of;
use support::etcd::EtcdServer;
use support::pika::{PeerLink, PikaPeer, PikaState};
use support::redis::RedisCluster;
use svc::{cli, Service};

const BEARER: &str = "scale-h00k-t0ken";
const SCRIPTED: usize = 297;
const REAL: usize = 3;
const MEMBER_TTL: Duration = Duration::from_secs(4);
const LOCK_TTL: Duration = Duration::from_secs(20);
const IDS: [&str; 3] = ["scale-a", "scale-b", "scale-c"];

fn config_text(id: &str, dir: &std::path::Path, etcd: &str, clusters: &str) -> String {
    format!(
        r#"[service]
instance_id = "{id}"
events_file = "{events}"
poll_interval = "500ms"
scale_out = true
member_ttl = "{member}s"
# Generous for a loaded test machine: 300 record reads per poll interval share one etcd.
[timeouts]
connect = "500ms"
command = "1s"
[policy]
confirm_window = "500ms"
promote_timeout = "1s"
link_timeout = "2s"
detach_timeout = "500ms"
switchover_pause = "1s"
lock_ttl = "{lock}s"
[coordinator]
kind = "etcd"
[coordinator.etcd]
endpoints = ["{etcd}"]
[webhook]
bearer_token = {{ file = "{bearer}" }}
{clusters}"#,
        events = dir.join("events.jsonl").display(),
        member = MEMBER_TTL.as_secs(),
        lock = LOCK_TTL.as_secs(),
        bearer = dir.join("bearer").display(),
    )
}

/// `name{cluster="c"} value` lines of one metric, by cluster.
fn by_cluster(metrics: &str, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let head = format!("{name}{{");
    for line in metrics.lines().filter(|l| l.starts_with(&head)) {
        let Some(rest) = line.split("cluster=\"").nth(1) else {
            continue;
        };
        let Some((cluster, _)) = rest.split_once('"') else {
            continue;
        };
        let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        out.insert(cluster.to_string(), v);
    }
    out
}

fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// GET /metrics (three tries: a kept-alive connection may be closed under the request).
async fn metrics(s: &Service) -> String {
    let mut last = String::new();
    for _ in 0..3 {
        match s
            .client
            .get(s.url("/metrics"))
            .bearer_auth(BEARER)
            .timeout(Duration::from_secs(20))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {
                if let Ok(body) = r.text().await {
                    return body;
                }
            }
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "GET /metrics failed 3 times: {last}\nlog tail:\n{}",
        tail(&s.log(), 30)
    );
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Wait (bounded) until every live instance in `live` sees exactly `live` as the members
/// and owns exactly what rendezvous hashing over `live` gives it. Returns the time it took.
async fn wait_converged(
    svcs: &[Option<Service>],
    live: &[String],
    clusters: &[String],
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let mut ok = true;
        let mut why = String::new();
        for (i, s) in svcs.iter().enumerate() {
            let Some(s) = s else { continue };
            let m = metrics(s).await;
            let owned = by_cluster(&m, "pika_remedy_cluster_owned");
            let members = gauge(&m, "pika_remedy_members");
            if members != Some(live.len() as f64) {
                ok = false;
                why = format!("{} sees {members:?} members", IDS[i]);
                break;
            }
            for c in clusters {
                let want = owner_of(c, live) == Some(IDS[i]);
                if owned.get(c).copied() != Some(f64::from(u8::from(want))) {
                    ok = false;
                    why = format!("{}: cluster_owned{{{c}}} = {:?}", IDS[i], owned.get(c));
                    break;
                }
            }
            if !ok {
                break;
            }
        }
        if ok {
            return start.elapsed();
        }
        if std::env::var("SCALE_DEBUG").is_ok() {
            eprintln!("{:?}: {why}", start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "ownership did not converge on {live:?} within {within:?}: {why}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET `path` as JSON (three tries, like [`metrics`]).
async fn get_json(s: &Service, path: &str) -> serde_json::Value {
    let mut last = String::new();
    for _ in 0..3 {
        match s
            .client
            .get(s.url(path))
            .bearer_auth(BEARER)
            .timeout(Duration::from_secs(20))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    return v;
                }
            }
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("GET {path} failed 3 times: {last}");
}

/// The owners as the instances report them (`owner` in `GET /v1/clusters`, and
/// `GET /v1/members`): every live instance names the same owner for every cluster, the one
/// hashing over `live` gives, with `this_instance` true on that instance only; the members
/// are `live` with shares adding up to every cluster. Returns cluster → reported owner.
async fn reported_owners(
    svcs: &[Option<Service>],
    live: &[String],
    clusters: &[String],
) -> BTreeMap<String, String> {
    let mut agreed: BTreeMap<String, String> = BTreeMap::new();
    for (i, s) in svcs.iter().enumerate() {
        let Some(s) = s else { continue };
        let list = get_json(s, "/v1/clusters").await;
        support::schema::assert_valid("cluster_list", &list);
        let views = list["clusters"].as_array().expect("clusters array");
        assert_eq!(views.len(), clusters.len(), "{}: cluster count", IDS[i]);
        for v in views {
            let c = v["name"].as_str().expect("name").to_string();
            let owner = &v["owner"];
            assert_eq!(owner["scale_out"], true, "{}: {c}: {owner}", IDS[i]);
            let o = owner["instance"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: {c} has no owner: {owner}", IDS[i]))
                .to_string();
            assert_eq!(
                owner["this_instance"].as_bool(),
                Some(o == IDS[i]),
                "{}: {c}: {owner}",
                IDS[i]
            );
            if let Some(prev) = agreed.get(&c) {
                assert_eq!(
                    prev, &o,
                    "{c}: {} names {o}, another instance {prev}",
                    IDS[i]
                );
            }
            agreed.insert(c, o);
        }
        let m = get_json(s, "/v1/members").await;
        support::schema::assert_valid("members", &m);
        assert_eq!(
            m, list["scale_out"],
            "{}: /v1/members vs /v1/clusters",
            IDS[i]
        );
        assert_eq!(m["this_instance"], IDS[i], "{m}");
        let names: Vec<&str> = m["members"]
            .as_array()
            .expect("members array")
            .iter()
            .map(|x| x["instance"].as_str().expect("instance"))
            .collect();
        assert_eq!(names, live, "{}: members {m}", IDS[i]);
        let shares: u64 = m["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x["clusters"].as_u64().expect("share"))
            .sum();
        assert_eq!(shares, clusters.len() as u64, "{m}");
        let mine = agreed.values().filter(|o| *o == IDS[i]).count();
        assert_eq!(m["owned"].as_u64(), Some(mine as u64), "{m}");
    }
    for c in clusters {
        assert_eq!(
            agreed.get(c).map(String::as_str),
            owner_of(c, live),
            "{c}: the reported owner is not the rendezvous owner over {live:?}"
        );
    }
    agreed
}

/// `status --json --cluster c` names `owner` and lists `live` as the members.
async fn status_owner(config: &std::path::Path, cluster: &str, live: &[String]) -> String {
    let args = [
        "status".to_string(),
        "--json".into(),
        "--config".into(),
        config.display().to_string(),
        "--cluster".into(),
        cluster.to_string(),
    ];
    let (_, out, err) = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&a, Duration::from_secs(30))
    })
    .await
    .expect("status task");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}
{out}
{err}"
        )
    });
    support::schema::assert_valid("status_report", &v);
    assert_eq!(v["scale_out"], true, "{v}");
    assert_eq!(v["members"], serde_json::json!(live), "{v}");
    v["clusters"][0]["owner"]["instance"]
        .as_str()
        .unwrap_or_else(|| panic!("status names no owner of {cluster}: {v}"))
        .to_string()
}

/// Poll counts (`poll_duration_seconds_count`) of every cluster on every live instance.
async fn poll_counts(svcs: &[Option<Service>]) -> Vec<Option<BTreeMap<String, f64>>> {
    let mut out = Vec::new();
    for s in svcs {
        out.push(match s {
            Some(s) => Some(by_cluster(
                &metrics(s).await,
                "pika_remedy_poll_duration_seconds_count",
            )),
            None => None,
        });
    }
    out
}

/// Over a window of a few poll intervals, each cluster is polled by its owner (as the API
/// reported it) and by no one else.
async fn check_one_poller(
    svcs: &[Option<Service>],
    owners: &BTreeMap<String, String>,
    clusters: &[String],
) {
    // A poll started just before the member list changed may still finish: wait out the poll
    // bound (connect + command + 1 s) before the window opens.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = poll_counts(svcs).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = poll_counts(svcs).await;
    for c in clusters {
        let owner = owners.get(c).expect("an owner");
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            let (Some(b), Some(a)) = (b, a) else { continue };
            let grew = a.get(c).copied().unwrap_or(0.0) - b.get(c).copied().unwrap_or(0.0);
            if IDS[i] == owner {
                assert!(
                    grew >= 2.0,
                    "{c}: its owner {owner} polled it {grew} times in 3 s"
                );
            } else {
                assert!(
                    grew == 0.0,
                    "{c}: {} polled it {grew} times though {owner} owns it",
                    IDS[i]
                );
            }
        }
    }
}

async fn etcd_record(client: &etcd_client::Client, cluster: &str) -> Option<TopologyRecord> {
    let mut c = client.clone();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        c.get(format!("/pika-remedy/{cluster}/topology"), None),
    )
    .await
    .expect("etcd get within 5 s")
    .expect("etcd get");
    r.kvs()
        .first()
        .map(|kv| serde_json::from_slice(kv.value()).expect("record JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_three_hundred_clusters() {
    let etcd = tokio::task::spawn_blocking(EtcdServer::start_new)
        .await
        .expect("start etcd");
    let client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("etcd client");

    // 297 scripted clusters, 3 real ones.
    let mut peers: Vec<(PikaPeer, PikaPeer)> = Vec::new();
    let mut toml = String::new();
    let mut clusters: Vec<String> = Vec::new();
    for i in 0..SCRIPTED {
        let m = PikaPeer::start(PikaState::master()).await;
        let r = PikaPeer::start(PikaState::slave_of(&m.addr(), PeerLink::Up)).await;
        let name = format!("scripted-{i:03}");
        toml.push_str(&format!(
            "[[cluster]]\nname = \"{name}\"\nnodes = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n",
            m.addr(),
            r.addr()
        ));
        clusters.push(name);
        peers.push((m, r));
    }
    let mut real: Vec<RedisCluster> = tokio::task::spawn_blocking(|| {
        (0..REAL)
            .map(|_| RedisCluster::start(1, None))
            .collect::<Vec<_>>()
    })
    .await
    .expect("start redis");
    for (i, rc) in real.iter().enumerate() {
        let name = format!("real-{i}");
        toml.push_str(&rc.cluster_toml(&name, &[]));
        clusters.push(name);
    }
    assert_eq!(clusters.len(), 300);

    let dirs: Vec<tempfile::TempDir> = IDS
        .iter()
        .map(|_| {
            tempfile::Builder::new()
                .prefix("pika-remedy-scale-")
                .tempdir()
                .expect("temp dir")
        })
        .collect();
    let configs: Vec<PathBuf> = IDS
        .iter()
        .zip(&dirs)
        .map(|(id, d)| {
            std::fs::write(d.path().join("bearer"), BEARER).expect("bearer");
            let p = d.path().join("pika-remedy.toml");
            std::fs::write(&p, config_text(id, d.path(), &etcd.endpoint(), &toml)).expect("config");
            p
        })
        .collect();

    // The operator's bootstrap of the real clusters' records.
    for (i, rc) in real.iter().enumerate() {
        let args = [
            "record".to_string(),
            "--config".into(),
            configs[0].display().to_string(),
            "--cluster".into(),
            format!("real-{i}"),
            "--master".into(),
            rc.master.addr().to_string(),
        ];
        let (code, out, err) = tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&a, Duration::from_secs(20))
        })
        .await
        .expect("record task");
        assert_eq!(code, 0, "record failed:\n{out}\n{err}");
    }

    let mut svcs: Vec<Option<Service>> = Vec::new();
    for c in &configs {
        svcs.push(Some(Service::start(c).await));
    }
    let all: Vec<String> = IDS.iter().map(|s| s.to_string()).collect();
    let took = wait_converged(&svcs, &all, &clusters, Duration::from_secs(60)).await;
    eprintln!("3 instances converged {took:?} after the last one was ready");
    if std::env::var("SCALE_DEBUG").is_ok() {
        for s in svcs.iter().flatten() {
            let l = s.log();
            let lines: Vec<&str> = l
                .lines()
                .filter(|l| l.contains("scale-out") || l.contains("member"))
                .collect();
            eprintln!("---\n{}", lines.join("\n"));
        }
    }
    let shares: Vec<usize> = IDS
        .iter()
        .map(|id| {
            clusters
                .iter()
                .filter(|c| owner_of(c, &all) == Some(*id))
                .count()
        })
        .collect();
    eprintln!("shares: {shares:?}");
    assert!(shares.iter().all(|n| *n >= 60), "uneven shares {shares:?}");

    // Each cluster polled by exactly one instance; every scripted node got INFOs meanwhile.
    for (m, r) in &peers {
        m.clear_commands();
        r.clear_commands();
    }
    let owners = reported_owners(&svcs, &all, &clusters).await;
    check_one_poller(&svcs, &owners, &clusters).await;
    assert_eq!(
        status_owner(&configs[0], "real-0", &all).await,
        owners["real-0"],
        "status and the API disagree on the owner of real-0"
    );
    for (m, r) in &peers {
        for p in [m, r] {
            let infos = p
                .commands()
                .iter()
                .filter(|c| c.first().is_some_and(|x| x.eq_ignore_ascii_case("INFO")))
                .count();
            assert!(infos > 0, "scripted node {} got no INFO in 3 s", p.addr());
        }
    }

    // Kill the instance that owns real-0.
    let victim_id = owner_of("real-0", &all).expect("owner").to_string();
    let victim = IDS.iter().position(|i| *i == victim_id).expect("victim");
    let mut dead = svcs[victim].take().expect("running");
    dead.kill();
    let killed_at = Instant::now();
    let live: Vec<String> = all.iter().filter(|m| **m != victim_id).cloned().collect();
    let within = MEMBER_TTL + Duration::from_secs(6);
    wait_converged(&svcs, &live, &clusters, within).await;
    let moved = killed_at.elapsed();
    eprintln!("{victim_id} killed: its share moved in {moved:?} (member TTL {MEMBER_TTL:?})");
    assert!(
        moved < LOCK_TTL,
        "the share moved after {moved:?}, beyond one lock TTL"
    );
    let after = reported_owners(&svcs, &live, &clusters).await;
    let moved_owner: Vec<&String> = clusters
        .iter()
        .filter(|c| owners[*c] != after[*c])
        .collect();
    assert!(
        moved_owner.iter().all(|c| owners[*c] == victim_id),
        "only the dead instance's clusters change owner: {moved_owner:?}"
    );
    let share = owners.values().filter(|o| **o == victim_id).count();
    assert_eq!(
        moved_owner.len(),
        share,
        "all of {victim_id}'s clusters moved"
    );
    assert_ne!(
        status_owner(&configs[0], "real-0", &live).await,
        victim_id,
        "status still names the dead instance"
    );
    check_one_poller(&svcs, &after, &clusters).await;

    // A master of the dead instance's share dies: its new owner fails it over by itself.
    let rc = &mut real[0];
    let before = etcd_record(&client, "real-0").await.expect("real-0 record");
    let replica = rc.replicas[0].addr();
    let new_owner = owner_of("real-0", &live).expect("owner").to_string();
    rc.master.kill9();
    let t = Instant::now();
    loop {
        let rec = etcd_record(&client, "real-0").await.expect("record");
        if rec.epoch > before.epoch && rec.master == replica && rec.pending.is_none() {
            eprintln!(
                "real-0 failed over by {new_owner} {:?} after its master was killed",
                t.elapsed()
            );
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            let logs: Vec<String> = svcs
                .iter()
                .flatten()
                .map(|s| {
                    s.log()
                        .lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .collect();
            panic!(
                "real-0 not failed over within 30 s: {rec:?}\nlogs:\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rc.replicas[0].role(), "master", "the replica was promoted");
    let i = IDS
        .iter()
        .position(|x| *x == new_owner)
        .expect("owner index");
    let m = metrics(svcs[i].as_ref().expect("owner alive")).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("pika_remedy_reconciles_total{")
                && l.contains("cluster=\"real-0\"")
                && l.contains("trigger=\"master_down\"")
                && l.contains("result=\"applied\"")),
        "the new owner ran the failover"
    );
}

// ------------------------------------------------------------------------------------------
// CPU measurement (not a timed test: run by hand, numbers in docs/bench.md):
//   cargo test --test scale_out bench_cpu -- --ignored --nocapture
// Env: SCALE_BENCH_BIN (default: the debug binary cargo built), SCALE_BENCH_NODES (3000),
// SCALE_BENCH_SECS (30).

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of `pid` in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // The command name (field 2) is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // `after` starts at field 3, so field 14 is index 11.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// A `serve` child started from `bin` (SIGKILLed on drop).
struct BenchServe {
    child: std::process::Child,
    base: String,
    client: reqwest::Client,
}

impl Drop for BenchServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn bench_serve(bin: &str, config: &std::path::Path) -> BenchServe {
    let s = bench_spawn(bin, config);
    bench_ready(&s).await;
    s
}

fn bench_spawn(bin: &str, config: &std::path::Path) -> BenchServe {
    eprintln!("bench: serve --config {}", config.display());
    let port = support::redis::free_port();
    let child = std::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create(config.with_extension("log"))
                .map(std::process::Stdio::from)
                .unwrap_or_else(|_| std::process::Stdio::null()),
        )
        .spawn()
        .expect("spawn serve");
    let s = BenchServe {
        child,
        base: format!("http://127.0.0.1:{port}"),
        client: {
            pika_remedy::tls::install_crypto_provider();
            reqwest::Client::new()
        },
    };
    s
}

async fn bench_ready(s: &BenchServe) {
    let t = Instant::now();
    loop {
        let r = s
            .client
            .get(format!("{}/readyz", s.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "serve {} not ready",
            s.base
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn bench_gauge(s: &BenchServe, name: &str) -> Option<f64> {
    let body = s
        .client
        .get(format!("{}/metrics", s.base))
        .bearer_auth(BEARER)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    gauge(&body, name)
}

/// Percent of one core each of `pids` used over `secs`.
async fn measure(pids: &[u32], secs: u64) -> Vec<f64> {
    let tck = 100.0; // CLK_TCK on Linux
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let wall = t.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|(p, b)| (cpu_ticks(*p) - b) as f64 / tck / wall * 100.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "CPU measurement for docs/bench.md; run by hand"]
async fn bench_cpu() {
    let bin: String = env_or("SCALE_BENCH_BIN", svc::BIN.to_string());
    let nodes: usize = env_or("SCALE_BENCH_NODES", 3000);
    let secs: u64 = env_or("SCALE_BENCH_SECS", 30);
    let etcd = tokio::task::spawn_blocking(EtcdServer::start_new)
        .await
        .expect("start etcd");
    let mut peers = Vec::new();
    let mut toml = String::new();
    for i in 0..nodes / 2 {
        let m = PikaPeer::start(PikaState::master()).await;
        let r = PikaPeer::start(PikaState::slave_of(&m.addr(), PeerLink::Up)).await;
        toml.push_str(&format!(
            "[[cluster]]\nname = \"b{i:04}\"\nnodes = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n",
            m.addr(),
            r.addr()
        ));
        peers.push((m, r));
    }
    // The peers log every command: keep their memory bounded during the run, counting the
    // INFOs they got (the steady-state INFO rate).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let infos = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let peers = std::sync::Arc::new(peers);
    let count_infos = {
        let (peers, infos) = (peers.clone(), infos.clone());
        move || {
            for (m, r) in peers.iter() {
                for p in [m, r] {
                    let n = p
                        .commands()
                        .iter()
                        .filter(|c| c.first().is_some_and(|x| x.eq_ignore_ascii_case("INFO")))
                        .count();
                    p.clear_commands();
                    infos.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    };
    let cleaner = {
        let (stop, count) = (stop.clone(), count_infos.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                count();
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    // INFOs per second over a measurement of `secs` that starts now.
    let info_rate = |before: u64, took: Duration| {
        count_infos();
        (infos.load(std::sync::atomic::Ordering::Relaxed) - before) as f64 / took.as_secs_f64()
    };
    let dir = tempfile::Builder::new()
        .prefix("pika-remedy-bench-")
        .tempdir()
        .expect("tempdir");
    std::fs::write(dir.path().join("bearer"), BEARER).expect("bearer");
    // local (default): the members and records in files on this host, so the numbers are
    // the instances' own cost and not an overloaded etcd's; etcd: the real store.
    let coord: String = env_or("SCALE_BENCH_COORD", "local".to_string());
    let local_dir = dir.path().join("coord");
    let write = |id: &str, scale_out: bool| {
        let mut text = config_text(id, dir.path(), &etcd.endpoint(), &toml);
        if coord == "local" {
            text = text.replace(
                &format!(
                    "kind = \"etcd\"\n[coordinator.etcd]\nendpoints = [\"{}\"]",
                    etcd.endpoint()
                ),
                &format!(
                    "kind = \"local\"\n[coordinator.local]\ndir = \"{}\"",
                    local_dir.display()
                ),
            );
        }
        let text = text
            .replace("scale_out = true", &format!("scale_out = {scale_out}"))
            .replace("events_file = ", "# events_file = ");
        let p = dir.path().join(format!("{id}.toml"));
        std::fs::write(&p, text).expect("config");
        p
    };
    eprintln!(
        "bench: {nodes} nodes, {} clusters, coordinator {coord}, {bin}",
        nodes / 2
    );

    let one = bench_serve(&bin, &write("solo", false)).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // warm-up: connections made
    count_infos();
    let (before, t) = (
        infos.load(std::sync::atomic::Ordering::Relaxed),
        Instant::now(),
    );
    let solo = measure(&[one.child.id()], secs).await;
    let rate = info_rate(before, t.elapsed());
    let rss = std::fs::read_to_string(format!("/proc/{}/status", one.child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    eprintln!(
        "bench: one instance, all {nodes} nodes: {:.1} % of one core, {rate:.0} INFO/s, RSS {rss}",
        solo[0]
    );
    drop(one);

    let mut three = Vec::new();
    for id in IDS {
        three.push(bench_spawn(&bin, &write(id, true)));
    }
    for s in &three {
        bench_ready(s).await;
    }
    let t = Instant::now();
    for s in &three {
        while bench_gauge(s, "pika_remedy_members").await != Some(3.0) {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "members did not converge"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pids: Vec<u32> = three.iter().map(|s| s.child.id()).collect();
    count_infos();
    let (before, t) = (
        infos.load(std::sync::atomic::Ordering::Relaxed),
        Instant::now(),
    );
    let shared = measure(&pids, secs).await;
    let rate = info_rate(before, t.elapsed());
    let mut owned = Vec::new();
    for s in &three {
        owned.push(bench_gauge(s, "pika_remedy_owned_clusters").await);
    }
    eprintln!("bench: three instances sharing {nodes} nodes: {shared:.1?} % of one core, owning {owned:?} clusters, {rate:.0} INFO/s in all");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = cleaner.await;
}
