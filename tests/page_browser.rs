//! The status page in a real browser: headless Chromium (Debian `chromium`) against the real
//! `pika-remedy serve` binary over real `redis-server` processes (master + 2 replicas), all on
//! 127.0.0.1. Chromium runs with `--dump-dom` (the DOM after the page's script ran and polled
//! the API) and `--screenshot` (PNGs under `target/page-screenshots/` for review), each run
//! with a fresh `--user-data-dir` and bounded in time. The browser logs in as the read-only
//! user with the read-only token in the URL, which is how an operator's browser would too.
//!
//! The story: the live topology renders; kill -9 of the master plus a master-down alert
//! gives a failover, and the page shows the new master and the event; the old master comes
//! back claiming master and is marked (the split brain); a role-mismatch alert demotes it and
//! the page shows that too. Every run checks that the page's script raised no error and
//! logged nothing to the console.

mod support;
#[path = "support/serve.rs"]
mod svc;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis::{require_binary, RedisCluster, RedisNode};
use svc::{assert_no_secret, cli, Service};

/// The cluster label of the captured alerts.
const CLUSTER: &str = "mymaster";
const PASSWORD: &str = "n0de-pa55-Pg4";
const BEARER: &str = "hook-t0ken-Pg7";
const READ_ONLY: &str = "v1ewer-t0ken-Pg2";
/// One Chromium run (start, load, script, polls, dump) must end within this.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the page gets to show a change (several Chromium runs, each a few seconds).
const PAGE_WAIT: Duration = Duration::from_secs(60);

/// The captured Alertmanager 0.25 firing `RedisDown` payload about `node`.
fn master_down_payload(node: &RedisNode) -> Vec<u8> {
    support::fixtures::firing_about(&node.addr().to_string(), "RedisDown")
}

/// The same payload as a role-mismatch alert about `node`.
fn role_mismatch_payload(node: &RedisNode) -> Vec<u8> {
    let body = String::from_utf8(master_down_payload(node)).unwrap();
    body.replace("\"RedisDown\"", "\"PikaRoleMismatch\"")
        .replace(
            "alertname=\\\"RedisDown\\\"",
            "alertname=\\\"PikaRoleMismatch\\\"",
        )
        .into_bytes()
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let d = target.join("page-screenshots");
    std::fs::create_dir_all(&d).expect("create target/page-screenshots");
    d
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// One headless Chromium run; returns (stdout, stderr). Killed after [`BROWSER_TIMEOUT`].
fn chromium(args: &[String]) -> (String, String) {
    let bin = require_binary("chromium", "chromium");
    let profile = tempfile::Builder::new()
        .prefix("pika-remedy-chromium-")
        .tempdir()
        .expect("temp dir");
    let out_file = profile.path().join("stdout");
    let err_file = profile.path().join("stderr");
    let mut cmd = Command::new(bin);
    cmd.arg("--headless")
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("p").display()
        ))
        .args([
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            // Loopback only: every other host name fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            // Time for the script to load, poll the API and render (virtual: no real wait
            // once the network is idle).
            "--virtual-time-budget=5000",
        ]);
    if is_root() {
        // Chromium's sandbox refuses to run as root.
        cmd.arg("--no-sandbox");
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).expect("stdout file"))
        .stderr(std::fs::File::create(&err_file).expect("stderr file"))
        .spawn()
        .expect("spawn chromium");
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {args:?} did not finish within {BROWSER_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&err_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (
        std::fs::read_to_string(&out_file).unwrap_or_default(),
        std::fs::read_to_string(&err_file).unwrap_or_default(),
    )
}

/// The page URL with the read-only credentials (basic auth, user `read-only`).
fn page_url(svc: &Service, path: &str) -> String {
    let base = svc.base.trim_start_matches("http://");
    format!("http://read-only:{READ_ONLY}@{base}{path}")
}

/// The rendered DOM of `path`; asserts the script raised no error and logged nothing.
fn dom(svc: &Service, path: &str) -> String {
    let (out, err) = chromium(&["--dump-dom".to_string(), page_url(svc, path)]);
    no_console_output(&err, path);
    assert!(
        out.contains("data-js-errors=\"0\""),
        "{path}: the page counted script errors:\n{out}"
    );
    out
}

/// Console messages (our script logs none; errors and uncaught exceptions show up here).
fn no_console_output(stderr: &str, what: &str) {
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "{what}: console messages from the page:\n{}",
        console.join("\n")
    );
}

/// Screenshot of `path` at `width`x`height` into target/page-screenshots/`name`.
fn screenshot(svc: &Service, path: &str, name: &str, (width, height): (u32, u32)) -> PathBuf {
    let file = screenshots_dir().join(name);
    let _ = std::fs::remove_file(&file);
    let (_, err) = chromium(&[
        format!("--window-size={width},{height}"),
        format!("--screenshot={}", file.display()),
        page_url(svc, path),
    ]);
    no_console_output(&err, path);
    let meta = std::fs::metadata(&file)
        .unwrap_or_else(|e| panic!("no screenshot {} ({e}); stderr:\n{err}", file.display()));
    assert!(meta.len() > 1000, "screenshot {} is empty", file.display());
    file
}

/// Render `path` until `cond` holds on its DOM, at most [`PAGE_WAIT`]; returns that DOM.
fn dom_until(svc: &Service, path: &str, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PAGE_WAIT;
    let mut last;
    let mut runs = 0;
    loop {
        last = dom(svc, path);
        runs += 1;
        if cond(&last) {
            return last;
        }
        if Instant::now() >= deadline || runs >= 30 {
            panic!(
                "the page did not show {what} within {PAGE_WAIT:?} ({runs} renders); last DOM:\n{last}\nservice log:\n{}",
                svc.log()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The opening tag of the node card of `addr` (its data attributes).
fn node_tag<'a>(dom: &'a str, addr: &str) -> &'a str {
    let needle = format!("data-addr=\"{addr}\"");
    let at = dom
        .find(&needle)
        .unwrap_or_else(|| panic!("no node card for {addr} in:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap_or(0);
    let end = at + dom[at..].find('>').unwrap_or(0);
    &dom[start..end]
}

fn has_event(dom: &str, action: &str, result: &str) -> bool {
    dom.contains(&format!(
        "data-action=\"{action}\" data-result=\"{result}\""
    ))
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn setup(cluster: &RedisCluster) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("pika-remedy-page-")
        .tempdir()
        .unwrap();
    let bearer = dir.path().join("bearer");
    std::fs::write(&bearer, format!("{BEARER}\n")).unwrap();
    let read_only = dir.path().join("read-only");
    std::fs::write(&read_only, format!("{READ_ONLY}\n")).unwrap();
    std::fs::create_dir_all(dir.path().join("coord")).unwrap();
    let text = format!(
        r#"
[service]
instance_id = "page-test"
events_file = "{events}"
poll_interval = "300ms"
# The page is shown in states the poller's own triggers would repair at once (a restarted
# old master as a split brain): the alerts drive this story.
self_trigger = false
[timeouts]
connect = "500ms"
command = "2s"
[policy]
confirm_window = "200ms"
link_timeout = "5s"
[coordinator]
kind = "local"
[coordinator.local]
dir = "{coord}"
[webhook]
bearer_token = {{ file = "{bearer}" }}
read_only_token = {{ file = "{read_only}" }}
master_down_alerts = ["RedisDown", "PikaMasterDown"]
role_mismatch_alerts = ["PikaRoleMismatch"]
{cluster}"#,
        events = dir.path().join("events.jsonl").display(),
        coord = dir.path().join("coord").display(),
        bearer = bearer.display(),
        read_only = read_only.display(),
        cluster = cluster.cluster_toml(CLUSTER, &[]),
    );
    let config = dir.path().join("pika-remedy.toml");
    std::fs::write(&config, text).unwrap();
    Setup { dir, config }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Everything of the page story in one service run (Chromium runs are the slow part).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_topology_failover_split_brain_and_demotion_in_a_real_browser() {
    require_binary("chromium", "chromium");
    let mut c = RedisCluster::start(2, Some(PASSWORD));
    let s = setup(&c);
    let (code, out, err) = cli(
        &[
            "record",
            "--config",
            s.config.to_str().unwrap(),
            "--cluster",
            CLUSTER,
            "--master",
            &c.master.addr().to_string(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, 0, "record failed:\n{out}\n{err}");
    let svc = Service::start(&s.config).await;
    let cluster_path = format!("/clusters/{CLUSTER}");
    let old = c.master.addr().to_string();
    let replicas: Vec<String> = c.replicas.iter().map(|r| r.addr().to_string()).collect();

    // --- 1. the live topology: the recorded master with its two replicas, links up.
    let d = dom_until(&svc, &cluster_path, "the live topology", |d| {
        d.contains("data-view=\"cluster\"")
            && replicas
                .iter()
                .all(|r| d.contains(&format!("data-addr=\"{r}\"")) && d.contains("data-lag=\"0\""))
    });
    assert!(d.contains(&format!("data-master=\"{old}\"")), "{d}");
    assert!(node_tag(&d, &old).contains("data-role=\"master\""), "{d}");
    assert!(node_tag(&d, &old).contains("recorded"), "{d}");
    for r in &replicas {
        let tag = node_tag(&d, r);
        assert!(tag.contains("data-role=\"slave\""), "{tag}");
        assert!(tag.contains("data-rogue=\"false\""), "{tag}");
    }
    assert!(d.contains("converged"), "{d}");
    assert!(!d.contains("Split brain"), "{d}");
    assert!(d.contains("would be promoted first"), "{d}");
    let overview = dom(&svc, "/");
    assert!(
        overview.contains("data-cluster=\"mymaster\" data-health=\"ok\""),
        "{overview}"
    );
    // Scale-out is off: the page says this instance polls every cluster.
    for page in [&overview, &d] {
        assert!(
            page.contains("this instance (scale-out off: every instance polls every cluster)"),
            "{page}"
        );
    }
    screenshot(&svc, "/", "0-overview.png", (1280, 700));
    screenshot(&svc, &cluster_path, "1-healthy.png", (1280, 1500));
    screenshot(&svc, &cluster_path, "1-healthy-phone.png", (390, 1800));

    // --- 2. kill -9 the master, a master-down alert: failover; the page shows the new master.
    let payload = master_down_payload(&c.master);
    c.master.kill9();
    let (st, body) = svc.post("/v1/alerts", BEARER, payload).await;
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    // "pending": not decided within `webhook.reply_within` on a slow machine; the page shows it.
    let ans = &json(&body)["clusters"][CLUSTER];
    assert!(
        ans["action"] == "failover" || ans["action"] == "pending",
        "{body}"
    );
    let t = Instant::now();
    let d = dom_until(
        &svc,
        &cluster_path,
        "the new master and the failover event",
        |d| !d.contains(&format!("data-master=\"{old}\"")) && has_event(d, "failover", "applied"),
    );
    let shown_after = t.elapsed();
    let (st, body) = svc.get(&format!("/v1/clusters/{CLUSTER}"), BEARER).await;
    assert_eq!(st, 200, "{body}");
    let new = json(&body)["record"]["master"]
        .as_str()
        .expect("record master")
        .to_string();
    assert!(replicas.contains(&new), "{new} is not a former replica");
    assert!(d.contains(&format!("data-master=\"{new}\"")), "{d}");
    assert!(node_tag(&d, &new).contains("data-role=\"master\""), "{d}");
    assert!(
        node_tag(&d, &old).contains("data-role=\"unreachable\""),
        "{d}"
    );
    assert!(d.contains("by Alertmanager"), "{d}");
    assert!(
        d.contains("cooldown") && d.contains("no automatic failover"),
        "{d}"
    );
    eprintln!("page showed the failover {shown_after:?} after the webhook answered");
    screenshot(&svc, &cluster_path, "2-after-failover.png", (1280, 1800));

    // --- 3. the old master comes back claiming master: marked, and the plan is a demotion.
    c.master.restart();
    let d = dom_until(
        &svc,
        &cluster_path,
        "the old master marked as a split brain",
        |d| {
            d.contains(&format!(
                "data-addr=\"{old}\" data-role=\"master\" data-rogue=\"true\""
            ))
        },
    );
    assert!(d.contains("Split brain"), "{d}");
    assert!(d.contains("CLAIMS MASTER AGAINST THE RECORD"), "{d}");
    assert!(
        d.contains("<div class=\"plan\" data-action=\"demote\">"),
        "{d}"
    );
    let (host, port) = new.rsplit_once(':').unwrap();
    assert!(
        d.contains(&format!("{old}: SLAVEOF {host} {port}")),
        "the exact demotion command is shown: {d}"
    );
    assert!(d.contains("CONFIG SET masterauth &lt;password&gt;"), "{d}");
    for r in &replicas {
        if *r != new {
            assert!(node_tag(&d, r).contains("data-rogue=\"false\""), "{d}");
        }
    }
    let demotion_png = screenshot(&svc, &cluster_path, "3-split-brain.png", (1280, 1900));
    screenshot(&svc, &cluster_path, "3-split-brain-phone.png", (390, 2400));

    // --- 4. a role-mismatch alert demotes it; the page shows it following the new master.
    let (st, body) = svc
        .post("/v1/alerts", BEARER, role_mismatch_payload(&c.master))
        .await;
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    let action = &json(&body)["clusters"][CLUSTER]["action"];
    assert!(action == "demote" || action == "pending", "{body}");
    let d = dom_until(&svc, &cluster_path, "the demoted old master", |d| {
        has_event(d, "demote", "applied")
            && node_tag(d, &old).contains("data-role=\"slave\"")
            && !d.contains("Split brain")
    });
    assert!(node_tag(&d, &old).contains("data-rogue=\"false\""), "{d}");
    screenshot(&svc, &cluster_path, "4-demoted.png", (1280, 2200));

    // --- 5. access: the page is behind auth, the read-only token reads but never acts,
    // a cross-site POST is refused, and pause from the page's endpoint is audited.
    let r = svc.client.get(svc.url("/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"),
        "a browser must be able to prompt"
    );
    let (st, _) = svc.get("/", READ_ONLY).await;
    assert_eq!(st, 200);
    let (st, body) = svc
        .post(
            &format!("/v1/pause?cluster={CLUSTER}"),
            READ_ONLY,
            Vec::new(),
        )
        .await;
    assert_eq!(st, 403, "{body}");
    let r = svc
        .client
        .post(svc.url(&format!("/v1/pause?cluster={CLUSTER}")))
        .bearer_auth(BEARER)
        .header("origin", "http://evil.invalid")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let (st, body) = svc
        .post(&format!("/v1/pause?cluster={CLUSTER}"), BEARER, Vec::new())
        .await;
    assert_eq!(st, 200, "{body}");
    let d = dom_until(&svc, &cluster_path, "the paused cluster", |d| {
        d.contains("data-act=\"resume\"") && d.contains("paused by operator: cluster mymaster")
    });
    assert!(d.contains("by operator (API/page)"), "{d}");

    // No secret on the page or in the log.
    let (_, plan) = svc
        .get(&format!("/v1/clusters/{CLUSTER}/plan"), READ_ONLY)
        .await;
    for text in [&d, &plan, &svc.log()] {
        assert_no_secret(text, "page, plan or log", &[PASSWORD, BEARER, READ_ONLY]);
    }
    eprintln!("screenshots in {}", screenshots_dir().display());
    assert!(demotion_png.exists());
    drop(svc);
    drop(s.dir);
}
