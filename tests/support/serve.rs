//! The real `pika-remedy` binary as a child process for end-to-end tests: `serve` on a free
//! 127.0.0.1 port with its stderr captured (to check logs and that no secret leaks), bounded
//! waits for readiness and exit, signals via `kill(1)`, and bounded one-shot CLI runs.
//!
//! Included with `#[path = "support/serve.rs"]` by `tests/serve.rs` and `tests/exporter.rs`
//! only (it is not part of `support/mod.rs`, so other test binaries do not compile it).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test (built by cargo for integration tests).
pub const BIN: &str = env!("CARGO_BIN_EXE_pika-remedy");

/// How long `serve` gets to answer `/readyz` with 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `pika-remedy serve`. SIGKILLed on drop if still running.
pub struct Service {
    child: Option<Child>,
    pub base: String,
    pub config: PathBuf,
    log: Arc<Mutex<String>>,
    pub client: reqwest::Client,
}

use crate::support::ports::free_port;

impl Service {
    /// Start `pika-remedy serve --config <config> --listen 127.0.0.1:<free port>` and wait
    /// until `/readyz` answers 200. Retries with a new port (up to 3 times) if the port was
    /// taken meanwhile; panics with the captured log otherwise.
    pub async fn start(config: &Path) -> Service {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(BIN)
                .args(["serve", "--config"])
                .arg(config)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .env("RUST_LOG", "info")
                .env("PIKA_REMEDY_LOG_FORMAT", "text")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn pika-remedy serve");
            let log = Arc::new(Mutex::new(String::new()));
            let stderr = child.stderr.take().expect("piped stderr");
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut r = BufReader::new(stderr);
                let mut line = String::new();
                // Ends when the child closes stderr (exit); bounded by the child's life.
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    sink.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
            let mut svc = Service {
                child: Some(child),
                base: format!("http://127.0.0.1:{port}"),
                config: config.to_path_buf(),
                log,
                client: {
                    pika_remedy::tls::install_crypto_provider();
                    reqwest::Client::builder()
                        .timeout(Duration::from_secs(60))
                        .pool_max_idle_per_host(64)
                        .build()
                        .expect("reqwest client")
                },
            };
            match svc.wait_ready(READY_TIMEOUT).await {
                Ok(()) => return svc,
                Err(e) => {
                    last = format!("{e}\nlog:\n{}", svc.log());
                    svc.kill();
                }
            }
        }
        panic!("pika-remedy serve did not become ready: {last}");
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!("serve exited early with {status}"));
            }
            let r = self
                .client
                .get(self.url("/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("/readyz not 200 within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Send a signal (`TERM`, `INT`, …) with kill(1).
    pub fn signal(&self, sig: &str) {
        signal_pid(self.pid(), sig);
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Wait (bounded) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                // Give the stderr reader a moment to drain the pipe.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// GET with the bearer token; (status, body text).
    pub async fn get(&self, path: &str, bearer: &str) -> (u16, String) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nlog:\n{}", self.log()));
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// POST a body with the bearer token and `content-type: application/json`.
    pub async fn post(&self, path: &str, bearer: &str, body: Vec<u8>) -> (u16, String) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}\nlog:\n{}", self.log()));
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn signal_pid(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill(1)");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// Run `pika-remedy <args>` to completion, bounded by `timeout` (killed after it).
/// Returns (exit code, stdout, stderr).
pub fn cli(args: &[&str], timeout: Duration) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pika-remedy");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pika-remedy {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    (status.code().unwrap_or(-1), stdout, stderr)
}

/// Panics if any of `secrets` occurs in `text` (names `what`, never prints the secret).
pub fn assert_no_secret(text: &str, what: &str, secrets: &[&str]) {
    for (i, s) in secrets.iter().enumerate() {
        assert!(!s.is_empty());
        assert!(
            !text.contains(s),
            "secret #{i} appears in {what} ({} bytes checked)",
            text.len()
        );
    }
}
