//! Notifications through a REAL Alertmanager (Debian `prometheus-alertmanager`): a real
//! `pika-remedy serve` (periodic check on) with `[notify]` pointing at that Alertmanager and at a
//! closed port (a second, dead Alertmanager), real `redis-server`s, and a small webhook receiver
//! in this test that Alertmanager routes every alert to.
//!
//! - after a `kill -9` failover, `PikaFailoverPerformed` arrives at the receiver with the
//!   cluster, old and new master, epoch and reason, and an `endsAt` in the future;
//! - when the old master returns and is demoted, `PikaDemotionPerformed` arrives;
//! - after a refusal that needs a human (the recorded master dies while the other node was
//!   promoted by hand: "operator needed"), `PikaRemediationRefused` arrives, and although the
//!   refusal repeats on every periodic check it is sent once (the counter says so);
//! - the dead URL is counted as failed and delays nothing; a third URL (the test's own
//!   receiver, standing for an authenticating proxy) gets the bearer token from the file;
//! - against an Alertmanager with `--web.config.file` `basic_auth_users` (bcrypt): with the
//!   right `basic_user`/`basic_password` the notification arrives; with a wrong password (file
//!   changed, config reloaded) it is refused (401), counted as failed and logged without either
//!   password.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::prom::{get, Coord, Remedy, RemedyOptions};
use support::redis::{free_port, require_binary, wait_until, RedisCluster};

const CLUSTER: &str = "main";

/// Collects the JSON bodies Alertmanager POSTs (webhook v4).
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
    /// (path, Authorization header) of every request.
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let l = support::ports::listen();
        let port = l.local_addr().expect("addr").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bodies);
        let reqs = Arc::clone(&requests);
        // Ends with the test process; each connection is bounded by socket timeouts.
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut r = BufReader::new(match s.try_clone() {
                    Ok(c) => c,
                    Err(_) => continue,
                });
                let mut len = 0usize;
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut auth = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line.to_ascii_lowercase().starts_with("authorization:") {
                        auth = line["authorization:".len()..].trim().to_string();
                    }
                }
                let mut buf = vec![0u8; len.min(1 << 20)];
                reqs.lock().unwrap().push((path, auth));
                if r.read_exact(&mut buf).is_ok() {
                    if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                        sink.lock().unwrap().push(v);
                    }
                }
                let mut s = s;
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Receiver {
            port,
            bodies,
            requests,
        }
    }

    /// Every alert received so far (firing), flattened out of the webhook bodies.
    fn alerts(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    fn wait_alert(&self, name: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = self
                .alerts()
                .into_iter()
                .find(|a| a["labels"]["alertname"] == name)
            {
                return Some(a);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Alertmanager routing everything to the receiver at once.
struct Am {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    log: PathBuf,
    port: u16,
}

impl Am {
    fn start(receiver_port: u16) -> Am {
        Am::start_with(receiver_port, None)
    }

    /// With `web_config`: the text of a `--web.config.file` (e.g. `basic_auth_users`).
    fn start_with(receiver_port: u16, web_config: Option<&str>) -> Am {
        let bin = require_binary("prometheus-alertmanager", "prometheus-alertmanager");
        let dir = tempfile::Builder::new()
            .prefix("pika-remedy-notify-am-")
            .tempdir()
            .expect("temp dir");
        let conf = dir.path().join("alertmanager.yml");
        std::fs::write(
            &conf,
            format!(
                "route:\n  receiver: test\n  group_by: [alertname, cluster, epoch]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n- name: test\n  webhook_configs:\n  - url: http://127.0.0.1:{receiver_port}/hook\n    send_resolved: false\n"
            ),
        )
        .expect("write alertmanager.yml");
        let log = dir.path().join("alertmanager.log");
        let web = web_config.map(|text| {
            let p = dir.path().join("web.yml");
            std::fs::write(&p, text).expect("write web.yml");
            p
        });
        for _ in 0..3 {
            let port = free_port();
            let f = std::fs::File::create(&log).expect("log");
            let mut cmd = Command::new(&bin);
            if let Some(w) = &web {
                cmd.arg(format!("--web.config.file={}", w.display()));
            }
            let mut child = cmd
                .arg(format!("--config.file={}", conf.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .stdin(Stdio::null())
                .stdout(f.try_clone().expect("clone"))
                .stderr(f)
                .spawn()
                .expect("spawn alertmanager");
            if wait_until(Duration::from_secs(20), || {
                matches!(child.try_wait(), Ok(Some(_)))
                    // Behind basic auth, a 401 also says it is up.
                    || get(port, "/-/ready").is_ok_and(|r| r.status == 200 || r.status == 401)
            }) && matches!(child.try_wait(), Ok(None))
            {
                return Am {
                    child: Some(child),
                    _dir: dir,
                    log,
                    port,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "alertmanager did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

impl Drop for Am {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn metric(remedy: &Remedy, kind: &str, outcome: &str) -> f64 {
    let body = get(remedy.port, "/metrics")
        .map(|r| r.body)
        .unwrap_or_default();
    body.lines()
        .filter(|l| {
            l.starts_with("pika_remedy_notifications_total{")
                && l.contains(&format!("kind=\"{kind}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn failover_and_refusal_reach_the_receiver_through_alertmanager() {
    let rx = Receiver::start();
    let am = Am::start(rx.port);
    let dead = free_port();
    // A third URL is the receiver itself, standing for an authenticating proxy in front of an
    // Alertmanager: it records the Authorization header pika-remedy sends.
    let direct = Receiver::start();
    let secrets = tempfile::tempdir().expect("temp dir");
    let token_file = secrets.path().join("am.token");
    std::fs::write(&token_file, "am-token-0123").expect("write token");
    let mut cl = RedisCluster::start(2, None);
    let addrs: Vec<String> = cl.addrs().iter().map(|a| a.to_string()).collect();
    // `[notify]` precedes the first `[[cluster]]`.
    let toml = format!(
        "[notify]\nalertmanager_urls = [\"http://127.0.0.1:{}\", \"http://127.0.0.1:{dead}\", \"http://127.0.0.1:{}/\"]\n\
         bearer_token = {{ file = \"{}\" }}\n\
         timeout = \"500ms\"\nresolve_after = \"10m\"\nresend_interval = \"5m\"\nlabels = {{ team = \"db\" }}\n\n{}",
        am.port,
        direct.port,
        token_file.display(),
        cl.cluster_toml(CLUSTER, &[])
    );
    let mut opts = RemedyOptions::new(Coord::Local, toml);
    opts.service_extra = vec![
        "check_interval = \"200ms\"".into(),
        "poll_interval = \"200ms\"".into(),
    ];
    opts.timeouts_extra = vec!["connect = \"200ms\"".into(), "command = \"1s\"".into()];
    opts.policy_extra = vec!["confirm_window = \"100ms\"".into()];
    let remedy = Remedy::start(&opts);
    // The periodic check bootstraps the record (the only master, every replica following it);
    // an explicit `record` here would race with it.
    assert!(
        wait_until(Duration::from_secs(15), || remedy
            .recorded_master(CLUSTER)
            .as_deref()
            == Some(addrs[0].as_str())),
        "no bootstrap record: {}",
        remedy.log_tail(40)
    );
    let diag = || {
        format!(
            "received: {:?}\nalertmanager log:\n{}\npika-remedy log:\n{}",
            rx.alerts(),
            std::fs::read_to_string(&am.log).unwrap_or_default(),
            remedy.log_tail(60)
        )
    };

    // 1. kill -9 → failover → PikaFailoverPerformed at the receiver.
    let killed = Instant::now();
    cl.master.kill9();
    let a = rx
        .wait_alert("PikaFailoverPerformed", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no PikaFailoverPerformed\n{}", diag()));
    let arrived = killed.elapsed();
    let new_master = remedy.recorded_master(CLUSTER).unwrap_or_default();
    let l = &a["labels"];
    assert_eq!(l["cluster"], CLUSTER);
    assert_eq!(l["old_master"], addrs[0].as_str());
    assert_eq!(l["new_master"], new_master.as_str());
    assert_eq!(l["epoch"], "2", "{a}");
    assert_eq!(l["team"], "db");
    assert_eq!(l["source"], "pika-remedy");
    assert!(
        a["annotations"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unreachable")),
        "{a}"
    );
    // The webhook shows a firing alert without its end; Alertmanager's own API has it.
    let held = get(am.port, "/api/v2/alerts")
        .and_then(|r| r.json())
        .unwrap_or_default();
    let held = held
        .as_array()
        .and_then(|v| {
            v.iter()
                .find(|x| x["labels"]["alertname"] == "PikaFailoverPerformed")
                .cloned()
        })
        .unwrap_or_else(|| panic!("alertmanager does not hold the alert\n{}", diag()));
    let ends = held["endsAt"].as_str().unwrap_or_default();
    let ends =
        humantime::parse_rfc3339_weak(ends).unwrap_or_else(|e| panic!("endsAt {ends:?}: {e}"));
    assert!(
        ends > std::time::SystemTime::now() + Duration::from_secs(300)
            && ends < std::time::SystemTime::now() + Duration::from_secs(660),
        "endsAt {held} should be ~10m ahead (resolve_after)"
    );

    // 2. The old master returns as role:master and is demoted: PikaDemotionPerformed.
    cl.master.restart();
    let d = rx
        .wait_alert("PikaDemotionPerformed", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no PikaDemotionPerformed\n{}", diag()));
    assert_eq!(d["labels"]["node"], addrs[0].as_str(), "{d}");
    assert_eq!(d["labels"]["new_master"], new_master.as_str(), "{d}");
    assert_eq!(d["labels"]["epoch"], "2", "{d}");

    // 3. The recorded master dies while the other node is made master by hand: operator needed.
    let other = cl
        .replicas
        .iter()
        .position(|r| r.addr().to_string() != new_master)
        .expect("the other replica");
    let promoted = cl
        .replicas
        .iter()
        .position(|r| r.addr().to_string() == new_master)
        .expect("the new master");
    assert!(wait_until(Duration::from_secs(10), || cl.replicas[other]
        .is_linked_to(cl.replicas[promoted].port())));
    cl.replicas[promoted].kill9();
    cl.replicas[other].cmd(&["REPLICAOF", "NO", "ONE"]);
    let r = rx
        .wait_alert("PikaRemediationRefused", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no PikaRemediationRefused\n{}", diag()));
    assert_eq!(r["labels"]["refusal"], "operator_needed", "{r}");
    assert_eq!(r["labels"]["cluster"], CLUSTER);
    assert!(
        r["annotations"]["reason"]
            .as_str()
            .is_some_and(|x| x.contains("operator needed")),
        "{r}"
    );
    // The refusal repeats every 200 ms; it is sent once per URL within resend_interval.
    std::thread::sleep(Duration::from_secs(2));
    // Two URLs answer (Alertmanager and the direct receiver): 2 sends per event.
    assert_eq!(metric(&remedy, "refusal", "sent"), 2.0, "{}", diag());
    assert_eq!(metric(&remedy, "failover", "sent"), 2.0, "{}", diag());
    assert_eq!(metric(&remedy, "demotion", "sent"), 2.0, "{}", diag());
    // The dead Alertmanager: counted as failed (after its retries), once per event.
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            &remedy, "refusal", "failed"
        ) == 1.0
            && metric(&remedy, "failover", "failed") == 1.0
            && metric(&remedy, "demotion", "failed") == 1.0),
        "{}",
        diag()
    );
    let log = std::fs::read_to_string(remedy.log_path()).unwrap_or_default();
    assert_eq!(log.matches("notification sent").count(), 6, "{log}");
    assert_eq!(log.matches("notification failed").count(), 3, "{log}");
    assert!(
        !log.contains("am-token-0123"),
        "the Alertmanager token leaked into the log"
    );
    let reqs = direct.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(
        reqs.iter()
            .all(|(p, a)| p == "/api/v2/alerts" && a == "Bearer am-token-0123"),
        "{reqs:?}"
    );
    assert_eq!(
        direct.bodies.lock().unwrap().len(),
        3,
        "one v2 alert list per event"
    );
    eprintln!(
        "notify: PikaFailoverPerformed at the receiver {:.3}s after the kill; PikaRemediationRefused \
         (operator_needed) and PikaDemotionPerformed received; refusal sent once per URL (periodic check every 200 ms for 2 s)",
        arrived.as_secs_f64()
    );
}

/// `AM_PASSWORD` hashed with bcrypt (cost 4, so the check is quick), for Alertmanager's
/// `basic_auth_users`. Made once with Python's `crypt.crypt(AM_PASSWORD,
/// crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))`; any bcrypt tool gives an equivalent hash.
const AM_HASH: &str = "$2b$04$yGlCVI/gx1KBSJuYnJqN6Ohi9LOooMp4Shvo3HduTxdxcNWFdLfp.";
const AM_USER: &str = "pika-remedy";
const AM_PASSWORD: &str = "am-basic-pass-42";
const AM_WRONG: &str = "not-the-am-password-17";

#[test]
fn basic_auth_against_a_real_alertmanager_and_a_wrong_password_is_failed_without_the_secret() {
    let rx = Receiver::start();
    let am = Am::start_with(
        rx.port,
        Some(&format!("basic_auth_users:\n  {AM_USER}: {AM_HASH}\n")),
    );
    // The Alertmanager really wants the password.
    let anon = get(am.port, "/api/v2/status")
        .map(|r| r.status)
        .unwrap_or(0);
    assert_eq!(anon, 401, "alertmanager without credentials");
    let secrets = tempfile::tempdir().expect("temp dir");
    let pw_file = secrets.path().join("am.password");
    std::fs::write(&pw_file, AM_PASSWORD).expect("write password");
    let mut cl = RedisCluster::start(1, None);
    let addrs: Vec<String> = cl.addrs().iter().map(|a| a.to_string()).collect();
    let toml = format!(
        "[notify]\nalertmanager_urls = [\"http://127.0.0.1:{}\"]\n\
         basic_user = \"{AM_USER}\"\nbasic_password = {{ file = \"{}\" }}\ntimeout = \"500ms\"\n\n{}",
        am.port,
        pw_file.display(),
        cl.cluster_toml(CLUSTER, &[])
    );
    let mut opts = RemedyOptions::new(Coord::Local, toml);
    opts.service_extra = vec![
        "check_interval = \"200ms\"".into(),
        "poll_interval = \"200ms\"".into(),
    ];
    opts.timeouts_extra = vec!["connect = \"200ms\"".into(), "command = \"1s\"".into()];
    opts.policy_extra = vec!["confirm_window = \"100ms\"".into()];
    let remedy = Remedy::start(&opts);
    assert!(
        wait_until(Duration::from_secs(15), || remedy
            .recorded_master(CLUSTER)
            .as_deref()
            == Some(addrs[0].as_str())),
        "no bootstrap record: {}",
        remedy.log_tail(40)
    );
    let diag = || {
        format!(
            "received: {:?}\nalertmanager log:\n{}\npika-remedy log:\n{}",
            rx.alerts(),
            std::fs::read_to_string(&am.log).unwrap_or_default(),
            remedy.log_tail(60)
        )
    };

    // The right password: the failover's notification arrives through Alertmanager.
    cl.master.kill9();
    let a = rx
        .wait_alert("PikaFailoverPerformed", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no PikaFailoverPerformed through basic auth\n{}", diag()));
    assert_eq!(a["labels"]["old_master"], addrs[0].as_str(), "{a}");
    assert!(
        wait_until(Duration::from_secs(5), || metric(
            &remedy, "failover", "sent"
        ) == 1.0),
        "{}",
        diag()
    );

    // A wrong password (the file changed, config reloaded): the demotion's notification is
    // refused by Alertmanager, counted as failed, logged without either secret.
    std::fs::write(&pw_file, AM_WRONG).expect("write wrong password");
    let r = support::prom::http(
        "POST",
        remedy.port,
        "/v1/reload",
        &[("Authorization", &format!("Bearer {}", support::prom::TOKEN))],
        None,
    )
    .expect("reload");
    assert_eq!(r.status, 200, "reload: {}", r.body);
    cl.master.restart();
    assert!(
        wait_until(Duration::from_secs(30), || metric(
            &remedy, "demotion", "failed"
        ) == 1.0),
        "{}",
        diag()
    );
    assert_eq!(metric(&remedy, "demotion", "sent"), 0.0, "{}", diag());
    assert!(
        rx.wait_alert("PikaDemotionPerformed", Duration::from_secs(1))
            .is_none(),
        "a notification with a wrong password arrived"
    );
    let log = std::fs::read_to_string(remedy.log_path()).unwrap_or_default();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("notification failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert!(
        failed[0].contains("PikaDemotionPerformed") && failed[0].contains("401"),
        "{}",
        failed[0]
    );
    for secret in [AM_PASSWORD, AM_WRONG] {
        assert!(!log.contains(secret), "a password leaked into the log");
    }
}
