//! Config reload without a restart: `pika-remedy serve` (a real process) gets SIGHUP after its
//! config file gained a cluster; the new cluster is polled and remediated by the periodic
//! check (its master is killed, a replica is promoted). A bad file, by SIGHUP or
//! `POST /v1/reload`, is refused with its error (logged, answered 422) and the old config
//! keeps running. Every wait is bounded; children are killed on drop.

mod support;
#[path = "support/serve.rs"]
mod svc;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis::RedisCluster;
use svc::{cli, Service};

const BEARER: &str = "reload-t0ken";

fn config_text(dir: &Path, clusters: &str) -> String {
    format!(
        r#"[service]
events_file = "{events}"
poll_interval = "300ms"
check_interval = "500ms"
[timeouts]
connect = "200ms"
command = "300ms"
[policy]
confirm_window = "0s"
promote_timeout = "2s"
link_timeout = "2s"
detach_timeout = "500ms"
lock_ttl = "10s"
[coordinator]
kind = "local"
[coordinator.local]
dir = "{coord}"
[webhook]
bearer_token = {{ file = "{bearer}" }}
{clusters}"#,
        events = dir.join("events.jsonl").display(),
        coord = dir.join("coord").display(),
        bearer = dir.join("bearer").display(),
    )
}

/// GET without connection reuse: a reload closes the old generation's open connections, so
/// a pooled one may be gone (clients retry, as this does, bounded).
async fn get(svc: &Service, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut last = String::new();
    for _ in 0..50 {
        match client.get(svc.url(path)).bearer_auth(BEARER).send().await {
            Ok(r) => {
                let st = r.status().as_u16();
                return (st, r.text().await.unwrap_or_default());
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("GET {path}: {last}\nlog:\n{}", svc.log());
}

async fn post(svc: &Service, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let r = client
        .post(svc.url(path))
        .bearer_auth(BEARER)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}\nlog:\n{}", svc.log()));
    let st = r.status().as_u16();
    (st, r.text().await.unwrap_or_default())
}

async fn clusters(svc: &Service) -> Vec<String> {
    let (st, body) = get(svc, "/v1/clusters").await;
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

async fn wait_clusters(svc: &Service, want: &[&str], within: Duration) {
    let t = Instant::now();
    loop {
        let got = clusters(svc).await;
        if got == want {
            return;
        }
        assert!(
            t.elapsed() < within,
            "clusters {got:?}, want {want:?}\nlog:\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_cluster_and_a_bad_file_keeps_the_old_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("bearer"), BEARER).expect("bearer");
    let a = RedisCluster::start(1, None);
    let mut b = RedisCluster::start(2, None);
    let cfg = dir.path().join("pika-remedy.toml");
    let one = config_text(dir.path(), &a.cluster_toml("a", &[]));
    std::fs::write(&cfg, &one).expect("write config");
    let svc = Service::start(&cfg).await;
    assert_eq!(clusters(&svc).await, ["a"]);

    // Cluster b appears in the file; its record is written by the operator; SIGHUP.
    let two = config_text(
        dir.path(),
        &format!("{}\n{}", a.cluster_toml("a", &[]), b.cluster_toml("b", &[])),
    );
    std::fs::write(&cfg, &two).expect("write config");
    let cfg_s = cfg.display().to_string();
    let master_b = b.master.addr().to_string();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        cli(
            &[
                "record",
                "--config",
                &cfg_s,
                "--cluster",
                "b",
                "--master",
                &master_b,
            ],
            Duration::from_secs(20),
        )
    })
    .await
    .expect("record");
    assert_eq!(code, 0, "{out}{err}");
    svc.signal("HUP");
    wait_clusters(&svc, &["a", "b"], Duration::from_secs(10)).await;
    // Polled: b's nodes are observed.
    let t = Instant::now();
    loop {
        let (_, body) = get(&svc, "/v1/clusters/b").await;
        let v: Value = serde_json::from_str(&body).expect("json");
        if v["observation"]["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 3)
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "b not polled: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Remediated: its master dies, the periodic check promotes a replica.
    b.master.kill9();
    support::redis::wait_for(Duration::from_secs(20), "a replica of b promoted", || {
        b.replicas.iter().any(|r| r.role() == "master")
    });

    // A bad file: SIGHUP logs the error, the old config (a and b) stays.
    std::fs::write(&cfg, "[service]\npoll_interval = \"soon\"\n").expect("write bad config");
    svc.signal("HUP");
    let t = Instant::now();
    while !svc.log().contains("config reload refused") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no refusal logged:\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        svc.log().contains("expected a duration"),
        "the error is logged:\n{}",
        svc.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(clusters(&svc).await, ["a", "b"]);
    // The API says the same, with the error.
    let (st, body) = post(&svc, "/v1/reload").await;
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("expected a duration"), "{body}");
    assert_eq!(clusters(&svc).await, ["a", "b"]);

    // Back to one cluster through the API: b is removed.
    std::fs::write(&cfg, &one).expect("write config");
    let (st, body) = post(&svc, "/v1/reload").await;
    assert_eq!(st, 200, "{body}");
    wait_clusters(&svc, &["a"], Duration::from_secs(10)).await;
}
