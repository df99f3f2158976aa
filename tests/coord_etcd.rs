//! The etcd coordinator against a real etcd 3.4 (Debian `etcd-server`), one server per test.
#![cfg(feature = "etcd")]

mod support;

use std::time::{Duration, Instant};

use pika_remedy::config::{EtcdConfig, Secret, Timeouts};
use pika_remedy::coord::etcd::Etcd;
use pika_remedy::coord::{CasOutcome, CoordError, Coordinator, Holder, LockOutcome};
use support::contract::{self, holder, lock_within, poll_until_epoch, record, watch_ready};
use support::etcd::EtcdServer;

const PREFIX: &str = "/pr-test";

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(500),
        command: Duration::from_secs(1),
    }
}

fn cfg(server: &EtcdServer) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![server.endpoint()],
        prefix: PREFIX.into(),
        events_keep: 3,
        ..EtcdConfig::default()
    }
}

async fn coord(server: &EtcdServer) -> Etcd {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Etcd::connect(&cfg(server), None, &timeouts())
        .await
        .expect("connect")
}

async fn raw(server: &EtcdServer) -> etcd_client::Client {
    etcd_client::Client::connect([server.endpoint()], None)
        .await
        .expect("raw client")
}

async fn raw_get(c: &mut etcd_client::Client, key: &str) -> Option<etcd_client::KeyValue> {
    c.get(key, None)
        .await
        .expect("raw get")
        .kvs()
        .first()
        .cloned()
}

async fn acquire(c: &Etcd, cluster: &str, h: &Holder, ttl: Duration) -> pika_remedy::coord::Lease {
    match c.try_lock(cluster, h, ttl).await.expect("try_lock") {
        LockOutcome::Acquired(l) => l,
        other => panic!("expected to acquire {cluster}, got {other:?}"),
    }
}

/// Run `op`, require `Unreachable` (retryable) within 10 s; returns the time it took.
async fn expect_unreachable<T: std::fmt::Debug>(
    what: &str,
    op: impl std::future::Future<Output = Result<T, CoordError>>,
) -> Duration {
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(30), op)
        .await
        .unwrap_or_else(|_| panic!("{what}: still running after 30 s"));
    let took = start.elapsed();
    match r {
        Err(e @ CoordError::Unreachable(_)) => assert!(e.is_retryable(), "{what}: {e}"),
        other => panic!("{what}: expected Unreachable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(10), "{what} took {took:?}");
    took
}

#[tokio::test]
async fn contract_suite() {
    let server = EtcdServer::start_new();
    let a = coord(&server).await;
    let b = coord(&server).await;
    contract::run_all(&a, &b, "etcd", Duration::from_secs(3)).await;
}

#[tokio::test]
async fn lock_value_renewal_and_lease_loss() {
    let server = EtcdServer::start_new();
    let a = coord(&server).await;
    let b = coord(&server).await;
    let mut r = raw(&server).await;
    let ttl = Duration::from_secs(2);
    let la = acquire(&a, "c", &holder("instance-a"), ttl).await;

    let key = format!("{PREFIX}/c/lock");
    let kv = raw_get(&mut r, &key).await.expect("lock key exists");
    let h: Holder = serde_json::from_slice(kv.value()).expect("lock value is Holder JSON");
    assert_eq!(h.instance, "instance-a");
    assert_ne!(kv.lease(), 0, "lock key is attached to a lease");
    assert_eq!(la.token, format!("{}:{}", kv.lease(), kv.create_revision()));

    // Renewal: held well beyond the TTL.
    tokio::time::sleep(ttl * 3).await;
    assert!(
        a.still_held(&la).await.expect("still_held"),
        "keep-alive must renew the lease"
    );
    match b
        .try_lock("c", &holder("instance-b"), ttl)
        .await
        .expect("b")
    {
        LockOutcome::HeldBy(Some(h)) => assert_eq!(h.instance, "instance-a"),
        other => panic!("b must see a's lock, got {other:?}"),
    }

    // Lease loss from outside (an operator or etcd itself revokes it).
    r.lease_revoke(kv.lease()).await.expect("revoke");
    assert!(!a.still_held(&la).await.expect("still_held after revoke"));
    let lb = lock_within(&b, "c", &holder("instance-b"), ttl, Duration::from_secs(5)).await;
    assert_ne!(lb.token, la.token);
    // Releasing the lost lease must not touch b's lock.
    a.release(la)
        .await
        .expect("release of a lost lease is fine");
    assert!(
        b.still_held(&lb).await.expect("b still_held"),
        "a's late release removed b's lock"
    );
    b.release(lb).await.expect("release b");
    assert!(
        raw_get(&mut r, &key).await.is_none(),
        "release deletes the lock key"
    );
}

#[tokio::test]
async fn dropped_lease_is_freed_without_waiting_for_its_ttl() {
    let server = EtcdServer::start_new();
    let a = coord(&server).await;
    let b = coord(&server).await;
    let ttl = Duration::from_secs(10);
    let la = acquire(&a, "d", &holder("instance-a"), ttl).await;
    drop(la); // renewal stops, and the lease becomes an orphan that `a` revokes in the background
    let start = Instant::now();
    let lb = lock_within(&b, "d", &holder("instance-b"), ttl, Duration::from_secs(5)).await;
    eprintln!(
        "dropped lease freed after {:?} (ttl {ttl:?})",
        start.elapsed()
    );
    b.release(lb).await.expect("release");
}

#[tokio::test]
async fn record_writes_master_mirror() {
    let server = EtcdServer::start_new();
    let a = coord(&server).await;
    let mut r = raw(&server).await;
    let v1 = match a
        .write_record("m", &record("127.0.0.1:7001", 1), None)
        .await
        .expect("w")
    {
        CasOutcome::Written(v) => v,
        other => panic!("{other:?}"),
    };
    let master = raw_get(&mut r, &format!("{PREFIX}/m/master"))
        .await
        .expect("master key");
    assert_eq!(master.value_str().expect("utf8"), "127.0.0.1:7001");
    let topo = raw_get(&mut r, &format!("{PREFIX}/m/topology"))
        .await
        .expect("topology key");
    assert_eq!(topo.mod_revision() as u64, v1);
    a.write_record("m", &record("127.0.0.1:7002", 2), Some(v1))
        .await
        .expect("w2");
    let master = raw_get(&mut r, &format!("{PREFIX}/m/master"))
        .await
        .expect("master key");
    assert_eq!(master.value_str().expect("utf8"), "127.0.0.1:7002");
    // A conflicting write changes neither key.
    assert_eq!(
        a.write_record("m", &record("127.0.0.1:7003", 3), Some(v1))
            .await
            .expect("w3"),
        CasOutcome::Conflict
    );
    let master = raw_get(&mut r, &format!("{PREFIX}/m/master"))
        .await
        .expect("master key");
    assert_eq!(master.value_str().expect("utf8"), "127.0.0.1:7002");
    // publish_roles is a documented no-op.
    a.publish_roles("m", &"127.0.0.1:7002".parse().expect("addr"), &[])
        .await
        .expect("no-op");
}

#[tokio::test]
async fn events_are_trimmed_to_keep() {
    let server = EtcdServer::start_new();
    let a = coord(&server).await;
    let mut r = raw(&server).await;
    for i in 0..7 {
        a.append_event("e", &format!("{{\"n\":{i}}}"))
            .await
            .expect("append");
    }
    let resp = r
        .get(
            format!("{PREFIX}/e/events/"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("list");
    let values: Vec<&str> = resp
        .kvs()
        .iter()
        .map(|kv| kv.value_str().expect("utf8"))
        .collect();
    assert_eq!(
        values,
        vec!["{\"n\":4}", "{\"n\":5}", "{\"n\":6}"],
        "newest 3 kept, in order"
    );
}

#[tokio::test]
async fn unreachable_then_recovers() {
    let mut server = EtcdServer::start_new();
    let a = coord(&server).await;
    let ttl = Duration::from_secs(2);
    let la = acquire(&a, "u", &holder("instance-a"), ttl).await;
    let v1 = match a
        .write_record("u", &record("127.0.0.1:1", 1), None)
        .await
        .expect("w")
    {
        CasOutcome::Written(v) => v,
        other => panic!("{other:?}"),
    };

    server.stop();
    let mut took = Vec::new();
    took.push(expect_unreachable("ping", a.ping()).await);
    took.push(expect_unreachable("read_record", a.read_record("u")).await);
    took.push(
        expect_unreachable(
            "write_record",
            a.write_record("u", &record("127.0.0.1:2", 2), Some(v1)),
        )
        .await,
    );
    took.push(expect_unreachable("try_lock", a.try_lock("u2", &holder("instance-a"), ttl)).await);
    took.push(expect_unreachable("still_held", a.still_held(&la)).await);
    took.push(expect_unreachable("append_event", a.append_event("u", "{}")).await);
    // A fresh instance while etcd is down: constructed lazily, operations report Unreachable.
    let start = Instant::now();
    let c = coord(&server).await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "connect blocked {:?}",
        start.elapsed()
    );
    took.push(expect_unreachable("ping (new instance)", c.ping()).await);
    took.push(expect_unreachable("release", a.release(la)).await);
    eprintln!("unreachable answers took {took:?}");

    server.start();
    let start = Instant::now();
    loop {
        match a.ping().await {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "no recovery: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    eprintln!("recovered {:?} after restart", start.elapsed());
    let got = a
        .read_record("u")
        .await
        .expect("read")
        .expect("record survived");
    assert_eq!(got.version, v1);
    assert!(matches!(
        a.write_record("u", &record("127.0.0.1:2", 2), Some(v1))
            .await
            .expect("w2"),
        CasOutcome::Written(_)
    ));
    c.ping()
        .await
        .expect("the lazily built instance works once etcd is back");
    // The old lease's key may survive the restart until its TTL runs out (etcd refreshes
    // leases on leader election), so allow a few TTLs.
    let l = lock_within(&c, "u", &holder("instance-c"), ttl, Duration::from_secs(10)).await;
    c.release(l).await.expect("release");
}

#[tokio::test]
async fn paused_server_times_out_then_recovers() {
    let server = EtcdServer::start_new();
    let a = coord(&server).await;
    a.ping().await.expect("ping");
    server.pause();
    let t1 = expect_unreachable("ping (paused)", a.ping()).await;
    let t2 = expect_unreachable("read_record (paused)", a.read_record("p")).await;
    server.resume();
    let start = Instant::now();
    loop {
        match a.ping().await {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "no recovery: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    eprintln!(
        "paused: ping {t1:?}, read {t2:?}; recovered after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn auth_wrong_password_is_not_retryable() {
    let mut server = EtcdServer::start_new();
    let mut r = raw(&server).await;
    r.user_add("root", "right-pw", None)
        .await
        .expect("user add");
    // etcd 3.4 requires the root user to hold the root role before auth can be enabled.
    let _ = r.role_add("root").await;
    r.user_grant_role("root", "root").await.expect("grant root");
    r.auth_enable().await.expect("auth enable");

    let mut c = cfg(&server);
    c.user = Some("root".into());
    let err = Etcd::connect(&c, Some(Secret::new("wrong-pw")), &timeouts())
        .await
        .expect_err("wrong password must fail");
    assert!(matches!(err, CoordError::Backend(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        !err.to_string().contains("wrong-pw"),
        "secret leaked: {err}"
    );
    eprintln!("wrong password: {err}");

    let ok = Etcd::connect(&c, Some(Secret::new("right-pw")), &timeouts())
        .await
        .expect("right password");
    ok.ping().await.expect("ping with auth");
    let l = acquire(&ok, "auth", &holder("instance-a"), Duration::from_secs(2)).await;
    assert!(ok.still_held(&l).await.expect("still_held"));
    ok.release(l).await.expect("release");

    // Without credentials against an auth-enabled etcd: a permission error, not "unreachable".
    // etcd down at start-up: the authenticated client is built lazily and logs in later.
    server.stop();
    let lazy = Etcd::connect(&c, Some(Secret::new("right-pw")), &timeouts())
        .await
        .expect("etcd down: lazy construction");
    expect_unreachable("ping with auth, etcd down", lazy.ping()).await;
    server.start();
    let start = Instant::now();
    while let Err(e) = lazy.ping().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no login after restart: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lazy.read_record("auth").await.expect("authenticated read");

    let err = Etcd::connect(&cfg(&server), None, &timeouts())
        .await
        .expect_err("anonymous client against auth-enabled etcd");
    assert!(!err.is_retryable(), "{err:?}");
    eprintln!("no credentials: {err}");
}

#[tokio::test]
async fn tls_with_client_certificate() {
    let server = EtcdServer::start_new_tls();
    let files = server.tls.clone().expect("tls files");
    let mut c = cfg(&server);
    c.ca_file = Some(files.ca.clone());
    c.cert_file = Some(files.client_cert.clone());
    c.key_file = Some(files.client_key.clone());
    let a = Etcd::connect(&c, None, &timeouts())
        .await
        .expect("connect tls");
    a.ping().await.expect("ping over TLS");
    let b = Etcd::connect(&c, None, &timeouts())
        .await
        .expect("connect tls b");
    contract::run_all(&a, &b, "etcd-tls", Duration::from_secs(3)).await;

    // The server demands a client certificate: CA alone is refused (reported, not hung).
    let mut no_cert = cfg(&server);
    no_cert.ca_file = Some(files.ca.clone());
    let n = Etcd::connect(&no_cert, None, &timeouts())
        .await
        .expect("lazy");
    let start = Instant::now();
    let err = n.ping().await.expect_err("no client cert");
    assert!(start.elapsed() < Duration::from_secs(10));
    eprintln!("tls without client cert: {err}");

    // Plain http against the TLS port fails too; https without ca_file is a config error.
    let mut plain = cfg(&server);
    plain.endpoints = vec![format!("http://127.0.0.1:{}", server.client_port)];
    let p = Etcd::connect(&plain, None, &timeouts())
        .await
        .expect("lazy");
    assert!(p.ping().await.is_err());
    let err = Etcd::connect(&cfg(&server), None, &timeouts())
        .await
        .expect_err("https w/o ca");
    assert!(
        !err.is_retryable() && err.to_string().contains("ca_file"),
        "{err}"
    );
}

/// Membership expiry (scale-out): a member whose lease is not renewed drops out after its TTL.
#[tokio::test]
async fn member_expiry() {
    let server = EtcdServer::start_new();
    let a = coord(&server).await;
    let b = coord(&server).await;
    contract::member_expiry(
        &a,
        &b,
        "etcd",
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .await;
}

// --- poll_record: answered from one watch on the records' prefix ---

impl contract::WatchedRecords for Etcd {
    fn watch_healthy(&self) -> bool {
        self.record_watch_healthy()
    }
    fn direct_reads(&self) -> u64 {
        self.poll_reads()
    }
    fn hold_watch(&self, hold: bool) {
        self.hold_record_watch(hold);
    }
}

#[tokio::test]
async fn poll_record_sees_other_clients_writes_from_the_watch() {
    let server = EtcdServer::start_new();
    let a = coord(&server).await;
    let b = coord(&server).await;
    contract::poll_sees_other_writes(&a, &b, "etcd", false).await;
    // A raw put by another client (e.g. an operator with etcdctl).
    let mut raw = raw(&server).await;
    let json = serde_json::to_string(&record("127.0.0.1:4", 3)).expect("json");
    raw.put(format!("{PREFIX}/c/topology"), json, None)
        .await
        .expect("raw put");
    assert_eq!(
        poll_until_epoch(&a, "c", 3, Duration::from_secs(10)).await,
        Some(3),
        "a raw etcd put not seen by poll_record"
    );
    contract::poll_version_is_read_version(&a, "c").await;
    // A cluster written after the watch started is seen too, and a deleted one is gone.
    b.write_record("d", &record("127.0.0.1:5", 7), None)
        .await
        .expect("write d");
    assert_eq!(
        poll_until_epoch(&a, "d", 7, Duration::from_secs(10)).await,
        Some(7)
    );
    raw.delete(format!("{PREFIX}/d/topology"), None)
        .await
        .expect("raw delete");
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.poll_record("d").await.expect("poll").is_some() {
        assert!(Instant::now() < deadline, "a deleted record still polled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With the watch held, the cache must still not answer older than this instance's own CAS.
/// Fails if `write_record` does not call `cache.wrote` / `cache.doubt`.
#[tokio::test]
async fn poll_record_is_never_older_than_own_cas() {
    let server = EtcdServer::start_new();
    let a = coord(&server).await;
    let b = coord(&server).await;
    contract::poll_never_older_than_own_cas(&a, &b).await;
}

/// etcd killed and restarted: the broken watch is noticed (polls fail like reads while etcd
/// is down, instead of answering from the cache), and after the restart `poll_record`
/// returns the record written meanwhile.
#[tokio::test]
async fn poll_record_after_the_watch_broke_returns_the_current_record() {
    let mut server = EtcdServer::start_new();
    let a = coord(&server).await;
    a.write_record("c", &record("127.0.0.1:1", 1), None)
        .await
        .expect("write 1");
    watch_ready(&a, "c").await;
    assert_eq!(
        poll_until_epoch(&a, "c", 1, Duration::from_secs(1)).await,
        Some(1)
    );
    server.stop();
    let e = contract::poll_fails_while_down(&a, "c", Duration::from_secs(20), "etcd").await;
    assert!(e.is_retryable(), "{e}");
    server.start();
    let b = coord(&server).await;
    contract::poll_after_restart(&a, &b, "etcd").await;
}
