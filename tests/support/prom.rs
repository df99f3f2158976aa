//! The whole alert pipeline as real processes: `pika-remedy serve` (the binary under test),
//! Prometheus 2.42 (Debian `prometheus`) scraping it and evaluating the SHIPPED
//! `rules/pika-remedy.yml`, and Alertmanager 0.25 (Debian `prometheus-alertmanager`) routing
//! with the SHIPPED `alerts/alertmanager.yml` to the pika-remedy webhook with a bearer
//! `credentials_file`.
//!
//! Templating is limited to what must differ on a test machine, and every replacement is
//! asserted to have matched, so a change in a shipped file breaks these tests loudly instead of
//! silently testing something else:
//! - `deploy/prometheus/prometheus.yml`: the Alertmanager and pika-remedy target addresses and
//!   the rule file path. Timings stay as shipped: scrape 1 s (timeout 1 s), evaluation 1 s.
//! - `alerts/alertmanager.yml`: the webhook URL, the credentials file path and the human
//!   receiver's URL (pointed at a closed port). Timings stay as shipped: pika-remedy route
//!   `group_wait 0s`, `group_interval 1s`, `repeat_interval 1m`.
//! - `rules/pika-remedy.yml` is loaded unchanged (`for: 1s` PikaMasterDown, `for: 2s`
//!   PikaRoleMismatch).
//!
//! Everything is synchronous: std processes and a tiny HTTP/1.0 client (no dependency on the
//! code under test). Processes are SIGKILLed and temp dirs removed on drop. Every wait is bounded.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::redis::{free_port, require_binary};

/// How long Prometheus / Alertmanager / pika-remedy get to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The bearer token Alertmanager presents to the webhook (and tests to the API).
pub const TOKEN: &str = "acceptance-token-0123456789";

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared fixtures dir (see BRIEF: `PIKA_REMEDY_SHARED` or `../shared`).
pub fn shared_dir() -> PathBuf {
    std::env::var("PIKA_REMEDY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_dir().join("../shared"))
}

/// Replace `from` by `to` in `text`, panicking if `from` does not occur (the shipped file changed).
fn replace_required(text: &str, from: &str, to: &str, file: &str) -> String {
    assert!(
        text.contains(from),
        "shipped {file} no longer contains {from:?}; update tests/support/prom.rs"
    );
    text.replace(from, to)
}

// ---------------------------------------------------------------------------------------------
// Tiny HTTP/1.0 client.

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.body).map_err(|e| format!("bad JSON ({e}): {}", self.body))
    }
}

/// One request to 127.0.0.1:`port`. HTTP/1.0 so every server answers without chunking and
/// closes the connection. Bounded by 5 s socket timeouts.
pub fn http(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<HttpResponse, String> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.take(64 * 1024 * 1024)
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header in answer: {text:.200}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:.100}"))?;
    Ok(HttpResponse {
        status,
        body: body.to_string(),
    })
}

pub fn get(port: u16, path: &str) -> Result<HttpResponse, String> {
    http("GET", port, path, &[], None)
}

/// Percent-encode a query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Timeline (printed when a test fails).

/// Text producers for the failure dump.
type Extras = Arc<Mutex<Vec<Box<dyn Fn() -> String + Send>>>>;

/// Labels of one series.
pub type Labels = BTreeMap<String, String>;

/// Notes with the elapsed time since creation; printed by `dump` (and on drop while panicking).
#[derive(Clone)]
pub struct Timeline {
    start: Instant,
    lines: Arc<Mutex<Vec<String>>>,
    /// Extra text for the failure dump (logs, events), produced at dump time.
    extra: Extras,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline {
            start: Instant::now(),
            lines: Arc::default(),
            extra: Arc::default(),
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn note(&self, what: impl AsRef<str>) {
        let line = format!(
            "{:>8.3}s  {}",
            self.start.elapsed().as_secs_f64(),
            what.as_ref()
        );
        eprintln!("{line}");
        if let Ok(mut l) = self.lines.lock() {
            l.push(line);
        }
    }

    /// Register something to print in the failure dump.
    pub fn on_failure(&self, f: impl Fn() -> String + Send + 'static) {
        if let Ok(mut e) = self.extra.lock() {
            e.push(Box::new(f));
        }
    }

    /// The notes so far.
    pub fn text(&self) -> String {
        let mut s = String::from("---- timeline ----\n");
        if let Ok(l) = self.lines.lock() {
            for line in l.iter() {
                s.push_str(line);
                s.push('\n');
            }
        }
        s
    }

    /// The notes plus everything registered with `on_failure`.
    pub fn dump(&self) -> String {
        let mut s = self.text();
        if let Ok(e) = self.extra.lock() {
            for f in e.iter() {
                s.push_str(&f());
                s.push('\n');
            }
        }
        s
    }
}

/// Prints the timeline if the test panics while this guard is alive.
pub struct DumpOnPanic(pub Timeline);

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.0.dump());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A child process with a temp dir and a log file.

struct Proc {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).expect("create log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("clone log handle"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name,
            child: Some(child),
            log,
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Wait until `GET path` answers 200 (bounded); panics with the log on timeout or exit.
    fn wait_ready(&mut self, port: u16, path: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "{} exited early ({st}); log:\n{}",
                        self.name,
                        self.log_tail(40)
                    );
                }
            }
            if get(port, path).is_ok_and(|r| r.status == 200) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} not ready on 127.0.0.1:{port}{path} within {READY_TIMEOUT:?}; log:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Prometheus.

/// One alert as Prometheus reports it (`/api/v1/alerts`).
#[derive(Clone, Debug)]
pub struct PromAlert {
    pub labels: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
    /// When the expression first held (RFC 3339).
    pub active_at: String,
}

impl PromAlert {
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

pub struct Prometheus {
    proc: Proc,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Prometheus {
    /// Start Prometheus with the shipped config scraping pika-remedy on `remedy_port` and
    /// sending alerts to Alertmanager on `am_port` (a closed port is fine: sends fail, rules
    /// still evaluate).
    pub fn start(remedy_port: u16, am_port: u16) -> Prometheus {
        let bin = require_binary("prometheus", "prometheus");
        let dir = tempfile::Builder::new()
            .prefix("pika-remedy-prom-")
            .tempdir()
            .expect("temp dir");
        let shipped_path = repo_dir().join("deploy/prometheus/prometheus.yml");
        let shipped = std::fs::read_to_string(&shipped_path).expect("read prometheus.yml");
        let f = "deploy/prometheus/prometheus.yml";
        let rules = repo_dir().join("rules/pika-remedy.yml");
        let mut text = replace_required(
            &shipped,
            "- ../../rules/pika-remedy.yml",
            &format!("- {}", rules.display()),
            f,
        );
        text = replace_required(
            &text,
            "targets: ['127.0.0.1:9093']",
            &format!("targets: ['127.0.0.1:{am_port}']"),
            f,
        );
        text = replace_required(
            &text,
            "targets: ['127.0.0.1:9655']",
            &format!("targets: ['127.0.0.1:{remedy_port}']"),
            f,
        );
        let conf = dir.path().join("prometheus.yml");
        std::fs::write(&conf, text).expect("write prometheus.yml");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--config.file={}", conf.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!("--web.external-url=http://127.0.0.1:{port}"))
                .arg("--web.enable-lifecycle");
            let mut proc = Proc::spawn("prometheus", &mut cmd, dir.path().join("prometheus.log"));
            // A port clash makes it exit at once; retry with another port.
            std::thread::sleep(Duration::from_millis(200));
            if let Some(Ok(Some(_))) = proc.child.as_mut().map(|c| c.try_wait()) {
                last = proc.log_tail(10);
                continue;
            }
            proc.wait_ready(port, "/-/ready");
            return Prometheus { proc, dir, port };
        }
        panic!("prometheus did not start after 3 attempts: {last}");
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }

    fn api(&self, path: &str) -> Result<Value, String> {
        let r = get(self.port, path)?;
        let v = r.json()?;
        if v["status"] != "success" {
            return Err(format!("prometheus {path}: {}", r.body));
        }
        Ok(v["data"].clone())
    }

    /// Instant query: (labels, value) per series.
    pub fn query(&self, promql: &str) -> Result<Vec<(Labels, f64)>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", urlencode(promql)))?;
        let mut out = Vec::new();
        for s in data["result"].as_array().cloned().unwrap_or_default() {
            let labels: Labels = serde_json::from_value(s["metric"].clone()).unwrap_or_default();
            let v = s["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            out.push((labels, v));
        }
        Ok(out)
    }

    /// The value of `promql` for the series whose `instance` label is `instance`.
    pub fn value_for(&self, promql: &str, instance: &str) -> Option<f64> {
        self.query(promql)
            .ok()?
            .into_iter()
            .find(|(l, _)| l.get("instance").map(String::as_str) == Some(instance))
            .map(|(_, v)| v)
    }

    pub fn alerts(&self) -> Result<Vec<PromAlert>, String> {
        let data = self.api("/api/v1/alerts")?;
        Ok(data["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|a| PromAlert {
                labels: serde_json::from_value(a["labels"].clone()).unwrap_or_default(),
                state: a["state"].as_str().unwrap_or_default().to_string(),
                active_at: a["activeAt"].as_str().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// Wait (bounded) until alert `name` is firing with `instance` (any instance if `None`).
    pub fn wait_firing(&self, name: &str, instance: Option<&str>, timeout: Duration) -> PromAlert {
        let deadline = Instant::now() + timeout;
        let mut last = Vec::new();
        loop {
            if let Ok(a) = self.alerts() {
                if let Some(hit) = a.iter().find(|a| {
                    a.name() == name
                        && a.state == "firing"
                        && instance.is_none_or(|i| a.label("instance") == i)
                }) {
                    return hit.clone();
                }
                last = a;
            }
            if Instant::now() >= deadline {
                panic!(
                    "alert {name} (instance {instance:?}) not firing within {timeout:?}; alerts now: {last:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Alertmanager.

pub struct Alertmanager {
    proc: Proc,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Alertmanager {
    /// Start Alertmanager (clustering off) with the shipped config routing the trigger alerts
    /// to `webhook_url` with the bearer token in a `credentials_file`.
    pub fn start(webhook_url: &str, token: &str) -> Alertmanager {
        let bin = require_binary("prometheus-alertmanager", "prometheus-alertmanager");
        let dir = tempfile::Builder::new()
            .prefix("pika-remedy-am-")
            .tempdir()
            .expect("temp dir");
        let token_file = dir.path().join("pika-remedy.token");
        std::fs::write(&token_file, token).expect("write token file");
        let f = "alerts/alertmanager.yml";
        let shipped =
            std::fs::read_to_string(repo_dir().join(f)).expect("read alerts/alertmanager.yml");
        let mut text = replace_required(
            &shipped,
            "url: http://127.0.0.1:9655/v1/alerts",
            &format!("url: {webhook_url}"),
            f,
        );
        text = replace_required(
            &text,
            "credentials_file: /etc/alertmanager/pika-remedy.token",
            &format!("credentials_file: {}", token_file.display()),
            f,
        );
        // The human receiver: a port nothing listens on (bind, read, release).
        text = replace_required(
            &text,
            "url: http://127.0.0.1:9099/oncall",
            &format!("url: http://127.0.0.1:{}/oncall", free_port()),
            f,
        );
        let conf = dir.path().join("alertmanager.yml");
        std::fs::write(&conf, text).expect("write alertmanager.yml");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--config.file={}", conf.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!("--web.external-url=http://127.0.0.1:{port}"))
                .arg("--cluster.listen-address=");
            let mut proc = Proc::spawn(
                "prometheus-alertmanager",
                &mut cmd,
                dir.path().join("alertmanager.log"),
            );
            std::thread::sleep(Duration::from_millis(200));
            if let Some(Ok(Some(_))) = proc.child.as_mut().map(|c| c.try_wait()) {
                last = proc.log_tail(10);
                continue;
            }
            proc.wait_ready(port, "/-/ready");
            return Alertmanager { proc, dir, port };
        }
        panic!("alertmanager did not start after 3 attempts: {last}");
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }

    /// Alerts Alertmanager currently holds (`/api/v2/alerts`), raw.
    pub fn alerts(&self) -> Result<Vec<Value>, String> {
        let r = get(self.port, "/api/v2/alerts")?;
        Ok(r.json()?.as_array().cloned().unwrap_or_default())
    }
}

// ---------------------------------------------------------------------------------------------
// pika-remedy serve.

/// Which coordinator the service uses.
#[derive(Clone, Debug)]
pub enum Coord {
    /// `kind = "local"` in the service's temp dir.
    Local,
    /// `kind = "etcd"` at this endpoint.
    Etcd(String),
}

/// Settings of one `pika-remedy serve`.
#[derive(Clone, Debug)]
pub struct RemedyOptions {
    pub coord: Coord,
    /// The `[[cluster]]` block(s).
    pub clusters_toml: String,
    /// Extra lines for `[service]` (e.g. `paused = true`, `check_interval = "1s"`).
    pub service_extra: Vec<String>,
    /// Extra lines for `[policy]`.
    pub policy_extra: Vec<String>,
    /// Extra lines for `[timeouts]`.
    pub timeouts_extra: Vec<String>,
}

impl RemedyOptions {
    pub fn new(coord: Coord, clusters_toml: String) -> RemedyOptions {
        RemedyOptions {
            coord,
            clusters_toml,
            service_extra: Vec::new(),
            policy_extra: Vec::new(),
            timeouts_extra: Vec::new(),
        }
    }
}

/// A running `pika-remedy serve` (the real binary), killed on drop.
pub struct Remedy {
    proc: Proc,
    dir: tempfile::TempDir,
    pub port: u16,
    pub config: PathBuf,
}

pub fn remedy_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pika-remedy"))
}

impl Remedy {
    /// Write the config (webhook bearer token from a file) and start serving on a free port;
    /// waits for `/healthz`.
    pub fn start(opts: &RemedyOptions) -> Remedy {
        let dir = tempfile::Builder::new()
            .prefix("pika-remedy-serve-")
            .tempdir()
            .expect("temp dir");
        let token_file = dir.path().join("webhook.token");
        std::fs::write(&token_file, TOKEN).expect("write token");
        let coord = match &opts.coord {
            Coord::Local => format!(
                "[coordinator]\nkind = \"local\"\n[coordinator.local]\ndir = \"{}\"\n",
                dir.path().join("coord").display()
            ),
            Coord::Etcd(ep) => format!(
                "[coordinator]\nkind = \"etcd\"\n[coordinator.etcd]\nendpoints = [\"{ep}\"]\nprefix = \"/pika-remedy-accept\"\n"
            ),
        };
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let text = format!(
                "[service]\nlisten = \"127.0.0.1:{port}\"\ninstance_id = \"accept\"\nevents_file = \"{}\"\n{}\n\
                 [timeouts]\n{}\n[policy]\n{}\n{coord}\n\
                 [webhook]\nbearer_token = {{ file = \"{}\" }}\n\n{}\n",
                dir.path().join("events.jsonl").display(),
                opts.service_extra.join("\n"),
                opts.timeouts_extra.join("\n"),
                opts.policy_extra.join("\n"),
                token_file.display(),
                opts.clusters_toml,
            );
            let config = dir.path().join("pika-remedy.toml");
            std::fs::write(&config, text).expect("write pika-remedy.toml");
            let mut cmd = Command::new(remedy_bin());
            cmd.arg("serve")
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "info");
            let mut proc = Proc::spawn("pika-remedy", &mut cmd, dir.path().join("serve.log"));
            std::thread::sleep(Duration::from_millis(100));
            if let Some(Ok(Some(_))) = proc.child.as_mut().map(|c| c.try_wait()) {
                last = proc.log_tail(20);
                continue;
            }
            proc.wait_ready(port, "/healthz");
            return Remedy {
                proc,
                dir,
                port,
                config,
            };
        }
        panic!("pika-remedy serve did not start after 3 attempts: {last}");
    }

    pub fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/alerts", self.port)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }

    pub fn log_path(&self) -> PathBuf {
        self.proc.log.clone()
    }

    /// Run a CLI subcommand against the same config; (exit code, stdout+stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(remedy_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run pika-remedy");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `pika-remedy record --cluster <c> --master <m>`; panics unless it exits 0.
    pub fn record(&self, cluster: &str, master: &str) {
        let (code, out) = self.cli(&["record", "--cluster", cluster, "--master", master]);
        assert_eq!(code, 0, "pika-remedy record failed: {out}");
    }

    fn api(&self, method: &str, path: &str, body: Option<&str>) -> Result<HttpResponse, String> {
        let auth = format!("Bearer {TOKEN}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        http(method, self.port, path, &headers, body)
    }

    /// `GET /v1/events?cluster=…` (oldest first).
    pub fn events(&self, cluster: &str) -> Result<Vec<Value>, String> {
        let r = self.api(
            "GET",
            &format!("/v1/events?limit=1000&cluster={}", urlencode(cluster)),
            None,
        )?;
        Ok(r.json()?.as_array().cloned().unwrap_or_default())
    }

    /// `GET /v1/clusters/<c>`.
    pub fn cluster(&self, cluster: &str) -> Result<Value, String> {
        let r = self.api("GET", &format!("/v1/clusters/{cluster}"), None)?;
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.body));
        }
        r.json()
    }

    /// The recorded master, via the API (what a client using discovery sees).
    pub fn recorded_master(&self, cluster: &str) -> Option<String> {
        self.cluster(cluster).ok()?["record"]["master"]
            .as_str()
            .map(str::to_string)
    }

    /// POST an Alertmanager payload to the webhook, as Alertmanager would.
    pub fn post_alert(&self, body: &str) -> Result<HttpResponse, String> {
        self.api("POST", "/v1/alerts", Some(body))
    }
}

/// Wait (bounded) for the first event after `after_seq` that matches `pred`; panics with the
/// events seen so far on timeout.
pub fn wait_event(
    remedy: &Remedy,
    cluster: &str,
    after_seq: u64,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        if let Ok(evs) = remedy.events(cluster) {
            if let Some(e) = evs
                .iter()
                .find(|e| e["seq"].as_u64().unwrap_or(0) > after_seq && pred(e))
            {
                return e.clone();
            }
            seen = evs;
        }
        if Instant::now() >= deadline {
            let lines: Vec<String> = seen.iter().map(event_line).collect();
            panic!(
                "no event `{what}` within {timeout:?}; events:\n{}",
                lines.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The highest event seq so far (0 if none).
pub fn last_seq(remedy: &Remedy, cluster: &str) -> u64 {
    remedy
        .events(cluster)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

/// One line per event for timelines.
pub fn event_line(e: &Value) -> String {
    let alerts: Vec<String> = e["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            format!(
                "{}[{}]@{}",
                a["alertname"].as_str().unwrap_or("?"),
                a["node"].as_str().unwrap_or("-"),
                a["starts_at"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let o = &e["outcome"];
    let steps: Vec<String> = o["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            format!(
                "{}{}:{}ms",
                s["step"]["step"].as_str().unwrap_or("?"),
                if s["ok"].as_bool() == Some(true) {
                    ""
                } else {
                    "(FAILED)"
                },
                s["millis"]
            )
        })
        .collect();
    format!(
        "#{} {} {} source={} trigger={} action={} result={} millis={} alerts=[{}] steps=[{}] reason={}",
        e["seq"],
        e["at"].as_str().unwrap_or("?"),
        e["kind"].as_str().unwrap_or("?"),
        e["source"].as_str().unwrap_or("?"),
        e["trigger"]["kind"].as_str().unwrap_or("-"),
        o["plan"]["action"]["kind"].as_str().unwrap_or("-"),
        o["result"]["kind"].as_str().unwrap_or("-"),
        o["millis"],
        alerts.join(", "),
        steps.join(", "),
        e["reason"].as_str().unwrap_or(""),
    )
}

/// Parse an RFC 3339 timestamp (Prometheus, Alertmanager and our events) to `SystemTime`.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s)
        .ok()
        .or_else(|| humantime::parse_rfc3339_weak(s).ok())
}

/// Seconds from `a` to `b` (negative if `b` is earlier).
pub fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}
