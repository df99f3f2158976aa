//! https to Consul through rustls (the one TLS stack): a server certificate signed by a private
//! CA is accepted with `ca_file` and refused without it. The server is `openssl s_server -WWW`
//! (Debian: openssl) serving `/v1/status/leader` from a temp dir on a loopback port.

mod support;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pika_remedy::config::{ConsulConfig, Timeouts};
use pika_remedy::coord::consul::Consul;
use pika_remedy::coord::Coordinator;
use support::etcd::{require_binary, TlsFiles};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use support::ports::free_port;

fn start(dir: &std::path::Path, tls: &TlsFiles) -> (Server, u16) {
    let bin = require_binary("openssl", "openssl");
    std::fs::create_dir_all(dir.join("v1/status")).expect("mkdir");
    std::fs::write(dir.join("v1/status/leader"), "\"127.0.0.1:8300\"").expect("leader");
    let port = free_port();
    let child = Command::new(bin)
        .current_dir(dir)
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&tls.server_cert)
        .arg("-key")
        .arg(&tls.server_key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn openssl s_server");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        command: Duration::from_secs(3),
    }
}

#[tokio::test]
async fn custom_ca_file_is_trusted_and_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = TlsFiles::generate(dir.path());
    let www = dir.path().join("www");
    let (_server, port) = start(&www, &tls);
    let address = format!("https://127.0.0.1:{port}");

    let with_ca = ConsulConfig {
        address: address.clone(),
        ca_file: Some(tls.ca.clone()),
        ..ConsulConfig::default()
    };
    let trusted = Consul::new(&with_ca, None, &timeouts()).expect("client with ca_file");
    trusted
        .ping()
        .await
        .expect("https ping with the private CA");

    // Without ca_file only the system store is trusted: the private CA is unknown.
    let without = ConsulConfig {
        address,
        ..ConsulConfig::default()
    };
    let c = Consul::new(&without, None, &timeouts()).expect("client without ca_file");
    let e = c.ping().await.expect_err("unknown issuer must be refused");
    assert!(format!("{e:?}").contains("Unreachable"), "{e:?}");
    // The server is still there: the refusal was the certificate, not the connection.
    trusted.ping().await.expect("https ping again with the CA");
}
