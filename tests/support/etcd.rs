//! A real single-member `etcd` (Debian package `etcd-server`) on free 127.0.0.1 ports with a
//! temporary data dir. Killed on drop. `stop`/`start` keep the data dir and ports (etcd stored
//! its peer URL in the data dir) to simulate an outage and recovery; `pause`/`resume` freeze
//! the process (SIGSTOP/SIGCONT) to simulate a server that accepts connections but never answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Absolute path of `bin` on PATH; panics naming the Debian package if it is missing (tests must
/// never skip silently).
pub fn require_binary(bin: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{bin}` not found on PATH: install the Debian package `{debian_package}` (apt-get install -y {debian_package})");
}

use super::ports::free_port;

/// PEM files for a TLS etcd: a throwaway CA, the server's cert (SAN IP 127.0.0.1) and a client
/// cert for mutual TLS, generated with the `openssl` CLI.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let bin = require_binary("openssl", "openssl");
    let out = Command::new(bin)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsFiles {
    pub fn generate(dir: &Path) -> TlsFiles {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=pika-remedy-test-ca",
        ];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &ca);
        for (name, eku) in [("server", "serverAuth"), ("client", "clientAuth")] {
            let ext = format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={eku}\nsubjectAltName=IP:127.0.0.1\n"
            );
            std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write ext");
            let (key, csr, pem, extf) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let subj = format!("/CN={name}");
            let mut req = vec!["req", "-subj", &subj, "-keyout", &key, "-out", &csr];
            req.extend(ec);
            openssl(dir, &req);
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-out",
                    &pem,
                    "-extfile",
                    &extf,
                ],
            );
        }
        TlsFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

pub struct EtcdServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub client_port: u16,
    pub peer_port: u16,
    /// Plain-HTTP `/health` (and `/metrics`), also when clients must use TLS.
    pub metrics_port: u16,
    pub tls: Option<TlsFiles>,
    child: Option<Child>,
}

impl EtcdServer {
    /// Start a fresh etcd and wait until it is healthy (bounded).
    pub fn start_new() -> EtcdServer {
        Self::start_with(false)
    }

    /// Clients must use https and present a certificate signed by the test CA.
    pub fn start_new_tls() -> EtcdServer {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> EtcdServer {
        let bin = require_binary("etcd", "etcd-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = tls.then(|| TlsFiles::generate(dir.path()));
        let mut s = EtcdServer {
            bin,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            tls,
            child: None,
        };
        // Free ports are only free a moment ago: a first start that loses one to another
        // process ("bind: address already in use") is retried on new ports, from a fresh data dir.
        for _ in 0..3 {
            match s.try_start() {
                Ok(()) => return s,
                Err(e) if e.contains("address already in use") => {
                    s.stop();
                    let _ = std::fs::remove_dir_all(s.data_dir());
                    s.client_port = free_port();
                    s.peer_port = free_port();
                    s.metrics_port = free_port();
                }
                Err(e) => panic!("{e}"),
            }
        }
        s.start();
        s
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Last part of etcd's log, for panic messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = text.len().saturating_sub(3000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text[start..].to_string()
    }

    /// (Re)start on the same data dir and ports; waits up to 20 s for `/health`.
    pub fn start(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
    }

    fn try_start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "etcd already running");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd log");
        let mut cmd = Command::new(&self.bin);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--listen-metrics-urls")
            .arg(format!("http://127.0.0.1:{}", self.metrics_port))
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("test={peer}"))
            // Short raft timers: a single member elects itself faster.
            .arg("--heartbeat-interval")
            .arg("50")
            .arg("--election-timeout")
            .arg("500")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(20))
    }

    fn wait_healthy(&mut self, within: Duration) -> Result<(), String> {
        let start = Instant::now();
        for _ in 0..1000 {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "etcd exited early ({status}); log:\n{}",
                        self.log_tail()
                    ));
                }
            }
            if health(self.metrics_port) {
                return Ok(());
            }
            if start.elapsed() > within {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "etcd not healthy within {within:?}; log:\n{}",
            self.log_tail()
        ))
    }

    /// Kill (SIGKILL) and reap; the data dir stays for `start`.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("etcd running").id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// Freeze the process: connections are accepted by the kernel but nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    pub fn data_path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped (paused) process.
        self.stop();
    }
}

/// `GET /health` over plain HTTP/1.0 (no client crate needed, blocking, short timeouts).
fn health(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.take(64 * 1024).read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}
