//! `make bench`, the cost at scale (release build of `pika-remedy serve`):
//!
//! - **Storm:** `STORM_CLUSTERS` (default 1000) healthy 3-node clusters of scripted Pika peers
//!   (tests/support/pika.rs, in this process) and `STORM_WEBHOOKS` (default 10000) firing
//!   `PikaMasterDown` webhooks, one at a time to a random cluster with a random 0–2 ms gap
//!   (spread, not overlapping), defaults otherwise. Counted: INFO commands received by the
//!   peers during the storm minus the poller's (its polls × 6), per webhook, and the first
//!   looks by source (`pika_remedy_observations_total`).
//! - **Exporter CPU:** `EXPORTER_NODES` (default 300) standalone `redis-server`s. pika-remedy
//!   polls them all (100 clusters of 3, paused, no self-trigger) every 500 ms, its `/metrics`
//!   scraped every second; redis_exporter (Debian `prometheus-redis-exporter`, one process in
//!   multi-target mode) is scraped for every node every 500 ms: the same rate per node. CPU =
//!   utime + stime from /proc over `EXPORTER_SECS` (default 30) s, per node.
//!
//! `SCALE=storm` or `SCALE=exporter` runs one part. Output: the "Scale" section of
//! docs/bench.md (kept by benches/failover.rs) and target/bench/scale.json.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use support::pika::{PeerLink, PikaPeer, PikaState};
use support::prom::{get, Coord, Remedy, RemedyOptions};
use support::redis::{free_port, require_binary, resp_call};

/// Where docs/bench.md's scale section starts.
const SECTION: &str = "## Scale";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Sum of the samples of `name` whose line contains `labels`.
fn metric(port: u16, name: &str, labels: &str) -> f64 {
    let Ok(r) = get(port, "/metrics") else {
        return f64::NAN;
    };
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

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15.
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(14) + ticks(15)) / 100.0
}

fn pid_on_port(port: u16) -> Option<u32> {
    // The serve process is the one listening on `port` (lsof-free: /proc/net/tcp inode).
    let hex = format!(":{port:04X}");
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1)?.ends_with(&hex) && f.get(3) == Some(&"0A"))
            .then(|| f.get(9).map(|s| s.to_string()))?
    })?;
    let target = format!("socket:[{inode}]");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target) {
                return Some(pid);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Storm.

fn storm(rt: &tokio::runtime::Runtime) -> Value {
    let n_clusters = env_or("STORM_CLUSTERS", 1000) as usize;
    let n_webhooks = env_or("STORM_WEBHOOKS", 10000) as usize;
    let t0 = Instant::now();
    let mut clusters: Vec<(String, Vec<PikaPeer>)> = Vec::new();
    for i in 0..n_clusters {
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
    support::redis::wait_for(Duration::from_secs(60), "every record polled", || {
        metric(remedy.port, "pika_remedy_cluster_record_present", "") >= n_clusters as f64
    });
    std::thread::sleep(Duration::from_secs(1));
    let infos = |clusters: &[(String, Vec<PikaPeer>)]| -> usize {
        clusters
            .iter()
            .flat_map(|(_, p)| p.iter())
            .map(|p| {
                p.with_state(|s| {
                    s.commands
                        .iter()
                        .filter(|c| c.first().is_some_and(|w| w.eq_ignore_ascii_case("INFO")))
                        .count()
                })
            })
            .sum()
    };
    let polls = || metric(remedy.port, "pika_remedy_poll_duration_seconds_count", "");
    let (info0, polls0) = (infos(&clusters), polls());
    let started = Instant::now();
    let since = SystemTime::now() - Duration::from_secs(60);
    let mut rng = Rng(0x005E_ED0F_5708);
    let mut not_ok = 0usize;
    for _ in 0..n_webhooks {
        let (name, peers) = &clusters[(rng.next() % n_clusters as u64) as usize];
        match remedy.post_alert(&alert(name, &peers[0].addr().to_string(), since)) {
            Ok(r) if r.status == 200 && r.body.contains("no_action") => {}
            _ => not_ok += 1,
        }
        std::thread::sleep(Duration::from_micros(rng.next() % 2000));
    }
    let took = started.elapsed();
    let (info1, polls1) = (infos(&clusters), polls());
    let poll_n = polls1 - polls0;
    let total = (info1 - info0) as f64;
    let per_webhook = (total - poll_n * 6.0) / n_webhooks as f64;
    let reused = metric(
        remedy.port,
        "pika_remedy_observations_total",
        "source=\"poller\"",
    );
    let fresh = metric(
        remedy.port,
        "pika_remedy_observations_total",
        "source=\"fresh\"",
    );
    let v = json!({
        "clusters": n_clusters, "webhooks": n_webhooks, "seconds": took.as_secs_f64(),
        "info_total": total, "polls": poll_n, "info_per_webhook": per_webhook,
        "first_looks_reused": reused, "first_looks_fresh": fresh,
        "info_per_webhook_from_fresh_looks": fresh * 6.0 / n_webhooks as f64,
        "webhooks_not_no_action": not_ok, "setup_seconds": (started - t0).as_secs_f64(),
    });
    eprintln!("storm: {v}");
    drop(remedy);
    drop(clusters);
    v
}

// ---------------------------------------------------------------------------------------------
// Exporter CPU.

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Scrape every URL every `every` from `tasks` tasks until `stop`; counts answers.
fn spawn_scrapers(
    rt: &tokio::runtime::Runtime,
    urls: Vec<String>,
    every: Duration,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) {
    pika_remedy::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(1024)
        .build()
        .expect("reqwest client");
    for (i, url) in urls.into_iter().enumerate() {
        let (client, stop, done) = (client.clone(), stop.clone(), done.clone());
        rt.spawn(async move {
            // Spread the scrapes over the interval.
            tokio::time::sleep(every.mul_f64((i % 97) as f64 / 97.0)).await;
            let mut tick = tokio::time::interval(every);
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                if let Ok(r) = client.get(&url).send().await {
                    if r.bytes().await.is_ok() {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
    }
}

fn exporter(rt: &tokio::runtime::Runtime) -> Value {
    let n = env_or("EXPORTER_NODES", 300) as usize;
    let secs = env_or("EXPORTER_SECS", 30);
    let redis = require_binary("redis-server", "redis-server");
    let exporter_bin = require_binary("prometheus-redis-exporter", "prometheus-redis-exporter");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = Procs(Vec::new());
    let mut ports = Vec::new();
    for _ in 0..n {
        let port = free_port();
        let child = Command::new(&redis)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        nodes.0.push(child);
        ports.push(port);
    }
    support::redis::wait_for(Duration::from_secs(60), "every redis-server up", || {
        ports.iter().all(|p| resp_call(*p, None, &["PING"]).is_ok())
    });

    // pika-remedy: clusters of 3, paused, no self-trigger, /metrics scraped every second.
    let toml: String = ports
        .chunks(3)
        .enumerate()
        .map(|(i, c)| {
            let nodes: Vec<String> = c
                .iter()
                .map(|p| format!("{{ addr = \"127.0.0.1:{p}\" }}"))
                .collect();
            format!(
                "[[cluster]]\nname = \"e{i}\"\nnodes = [{}]\n",
                nodes.join(", ")
            )
        })
        .collect();
    let mut opts = RemedyOptions::new(Coord::Local, toml);
    opts.service_extra = vec!["paused = true".into(), "self_trigger = false".into()];
    let remedy = Remedy::start(&opts);
    let remedy_pid = pid_on_port(remedy.port).expect("pika-remedy's pid");
    let remedy_cpu = measure(rt, remedy_pid, secs, |stop, done| {
        spawn_scrapers(
            rt,
            vec![format!("http://127.0.0.1:{}/metrics", remedy.port)],
            Duration::from_secs(1),
            stop,
            done,
        )
    });
    let polls_per_s = {
        let a = metric(remedy.port, "pika_remedy_poll_duration_seconds_count", "");
        std::thread::sleep(Duration::from_secs(5));
        (metric(remedy.port, "pika_remedy_poll_duration_seconds_count", "") - a) / 5.0
    };
    drop(remedy);

    // redis_exporter, multi-target, every node every 500 ms.
    let eport = free_port();
    let ex = Procs(vec![Command::new(&exporter_bin)
        .args(["-web.listen-address", &format!("127.0.0.1:{eport}")])
        .args(["-redis.addr", ""])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn prometheus-redis-exporter")]);
    support::redis::wait_for(Duration::from_secs(20), "redis_exporter up", || {
        get(eport, "/").is_ok()
    });
    let ex_pid = ex.0[0].id();
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{eport}/scrape?target=redis://127.0.0.1:{p}"))
        .collect();
    let ex_cpu = measure(rt, ex_pid, secs, |stop, done| {
        spawn_scrapers(rt, urls.clone(), Duration::from_millis(500), stop, done)
    });
    drop(ex);
    drop(nodes);
    let (rc, rs) = remedy_cpu;
    let (xc, xs) = ex_cpu;
    let per_node = |cpu: f64| cpu / secs as f64 / n as f64;
    let v = json!({
        "nodes": n, "seconds": secs,
        "pika_remedy": {
            "cpu_s": rc, "metrics_scrapes": rs, "cluster_polls_per_s": polls_per_s,
            "info_per_s": polls_per_s * 6.0,
            "cpu_ms_per_node_per_s": per_node(rc) * 1000.0,
        },
        "redis_exporter": {
            "cpu_s": xc, "scrapes": xs, "scrapes_per_s": xs as f64 / secs as f64,
            "cpu_ms_per_node_per_s": per_node(xc) * 1000.0,
        },
        "ratio": if xc > 0.0 { rc / xc } else { f64::NAN },
    });
    eprintln!("exporter: {v}");
    v
}

/// CPU seconds of `pid` over `secs` s while `load` runs; (cpu, answered requests).
fn measure(
    _rt: &tokio::runtime::Runtime,
    pid: u32,
    secs: u64,
    load: impl FnOnce(Arc<AtomicBool>, Arc<AtomicU64>),
) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    load(stop.clone(), done.clone());
    // Warm up (connections, first polls), then measure.
    std::thread::sleep(Duration::from_secs(3));
    let (c0, d0) = (cpu_secs(pid), done.load(Ordering::SeqCst));
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, d1) = (cpu_secs(pid), done.load(Ordering::SeqCst));
    stop.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(600));
    (c1 - c0, d1 - d0)
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let which = std::env::var("SCALE").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let t0 = Instant::now();
    let storm_v = (which.is_empty() || which == "storm").then(|| storm(&rt));
    let exporter_v = (which.is_empty() || which == "exporter").then(|| exporter(&rt));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let raw = json!({"storm": storm_v, "exporter": exporter_v});
    let _ = std::fs::write(
        dir.join("scale.json"),
        serde_json::to_string_pretty(&raw).unwrap_or_default(),
    );
    let mut s = format!("{SECTION}: webhook storm and exporter CPU\n\n");
    s.push_str(&format!(
        "Generated by `make bench` (`benches/scale.rs`, release build); raw numbers in `target/bench/scale.json`. \
         {} cores shared with other work while measuring; {:.0} s in total.\n\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        t0.elapsed().as_secs_f64()
    ));
    if let Some(v) = &storm_v {
        s.push_str(&format!(
            "**Storm** (defaults: poll 500 ms, `reuse_observation_within` 500 ms): {} healthy 3-node clusters of scripted Pika peers, \
             {} firing `PikaMasterDown` webhooks one at a time to random clusters (0–2 ms apart; `startsAt` a minute before), in {:.1} s. \
             First looks: {:.0} on the poller's observation, {:.0} fresh: **{:.2} INFO per webhook** (fresh looks × 3 nodes × 2 INFO; \
             every answer was no action, so there was no look under the lock). Cross-check at the peers: {:.0} INFO received meanwhile, \
             {:.0} of them the poller's ({:.0} polls × 6), leaving {:.2} per webhook (polls in flight at either end and polls \
             whose nodes did not all answer make this count noisy at this scale). Answers other than no action: {}. \
             Target ≤ 2.5 (was 6: one fresh observation of 3 nodes × 2 INFO each).\n\n",
            v["clusters"], v["webhooks"], v["seconds"].as_f64().unwrap_or(0.0),
            v["first_looks_reused"].as_f64().unwrap_or(0.0), v["first_looks_fresh"].as_f64().unwrap_or(0.0),
            v["info_per_webhook_from_fresh_looks"].as_f64().unwrap_or(0.0),
            v["info_total"].as_f64().unwrap_or(0.0),
            v["polls"].as_f64().unwrap_or(0.0) * 6.0, v["polls"].as_f64().unwrap_or(0.0),
            v["info_per_webhook"].as_f64().unwrap_or(0.0),
            v["webhooks_not_no_action"],
        ));
    }
    if let Some(v) = &exporter_v {
        let r = &v["pika_remedy"];
        let x = &v["redis_exporter"];
        s.push_str(&format!(
            "**Exporter CPU** over {} s, {} standalone `redis-server`s. pika-remedy polls every node every 500 ms \
             ({:.0} cluster polls/s = {:.0} INFO/s; `/metrics` scraped every second: {} scrapes): {:.2} CPU s = \
             **{:.4} ms CPU per node per second**. redis_exporter (`prometheus-redis-exporter`, Debian 1.45, one process, \
             multi-target `/scrape?target=…`) scraped for every node every 500 ms ({:.0} scrapes/s): {:.2} CPU s = \
             **{:.4} ms CPU per node per second**. Ratio pika-remedy / redis_exporter: **{:.3}×** (target ≤ 0.05×). \
             CPU = utime + stime from `/proc/<pid>/stat`; the scrapers run in the bench process and are not counted.\n",
            v["seconds"], v["nodes"],
            r["cluster_polls_per_s"].as_f64().unwrap_or(0.0), r["info_per_s"].as_f64().unwrap_or(0.0),
            r["metrics_scrapes"], r["cpu_s"].as_f64().unwrap_or(0.0),
            r["cpu_ms_per_node_per_s"].as_f64().unwrap_or(0.0),
            x["scrapes_per_s"].as_f64().unwrap_or(0.0), x["cpu_s"].as_f64().unwrap_or(0.0),
            x["cpu_ms_per_node_per_s"].as_f64().unwrap_or(0.0),
            v["ratio"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    println!("\n{s}");
    let doc = root.join("docs/bench.md");
    let old = std::fs::read_to_string(&doc).unwrap_or_default();
    // Replace the scale section (up to the real-Pika section or the end), or insert it before
    // the real-Pika section.
    let real = old.find("## Real Pika");
    let out = match (old.find(SECTION), real) {
        (Some(i), Some(j)) if i < j => format!("{}{s}\n{}", &old[..i], &old[j..]),
        (Some(i), _) => format!("{}{s}", &old[..i]),
        (None, Some(j)) => format!("{}{s}\n{}", &old[..j], &old[j..]),
        (None, None) => format!("{}\n\n{s}", old.trim_end()),
    };
    let _ = std::fs::write(&doc, out);
    println!("wrote {} and target/bench/scale.json", doc.display());
}
