//! The `consul` coordinator against the in-repo Consul API test server
//! (`support::fake_consul`), and against a real Consul when `CONSUL_HTTP_ADDR` is set.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use pika_remedy::config::{ConsulConfig, Secret, Timeouts};
use pika_remedy::coord::consul::Consul;
use pika_remedy::coord::{CasOutcome, CoordError, Coordinator, Lease, LockOutcome};
use pika_remedy::model::Addr;
use support::contract::{self, poll_until_epoch, watch_ready};
use support::fake_consul::{FakeConsul, Options};

const TOKEN: &str = "tok-5f1c2e9a-very-secret";
const TTL: Duration = Duration::from_secs(15);

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(300),
        command: Duration::from_millis(1000),
    }
}

fn cfg(address: &str) -> ConsulConfig {
    ConsulConfig {
        address: address.to_string(),
        prefix: "pika-remedy".into(),
        ..ConsulConfig::default()
    }
}

async fn fake_with_token() -> FakeConsul {
    FakeConsul::start_with(Options {
        token: Some(TOKEN.into()),
        ..Options::default()
    })
    .await
}

fn client(fake: &FakeConsul, c: ConsulConfig) -> Consul {
    Consul::new(
        &ConsulConfig {
            address: fake.url(),
            ..c
        },
        Some(Secret::new(TOKEN)),
        &timeouts(),
    )
    .expect("client")
}

fn session_of(lease: &Lease) -> String {
    lease
        .token
        .split(':')
        .next()
        .expect("token has a session")
        .to_string()
}

/// A session TTL below Consul's 10 s minimum; only the test server accepts it (`min_ttl`).
const SHORT_TTL: Duration = Duration::from_millis(600);

async fn acquired(c: &Consul, cluster: &str, who: &str) -> Lease {
    acquired_with(c, cluster, who, TTL).await
}

async fn acquired_with(c: &Consul, cluster: &str, who: &str, ttl: Duration) -> Lease {
    match c
        .try_lock(cluster, &contract::holder(who), ttl)
        .await
        .expect("try_lock")
    {
        LockOutcome::Acquired(l) => l,
        other => panic!("{who} should get the lock: {other:?}"),
    }
}

/// Write to the real stderr, not the test harness's capture, so the line is always visible.
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The contract against the test server, which demands the ACL token: passing also proves
/// the `X-Consul-Token` header is sent on every call.
#[tokio::test]
async fn contract_fake_consul() {
    let fake = fake_with_token().await;
    let a = client(&fake, cfg(""));
    let b = client(&fake, cfg(""));
    contract::run_all(&a, &b, "fake", TTL).await;
    announce(
        "contract_fake_consul: Consul backend checked against the in-repo Consul API test server",
    );
}

/// The same contract against a real Consul when `CONSUL_HTTP_ADDR` is set (token from
/// `CONSUL_HTTP_TOKEN`). Without it this test checks nothing and says so.
#[tokio::test]
async fn contract_real_consul_if_configured() {
    let Ok(addr) = std::env::var("CONSUL_HTTP_ADDR") else {
        announce(
            "contract_real_consul_if_configured: CONSUL_HTTP_ADDR is not set: NOT tested against a real \
             Consul; the Consul backend ran against the in-repo test server only",
        );
        return;
    };
    let address = if addr.contains("://") {
        addr.clone()
    } else {
        format!("http://{addr}")
    };
    let token = std::env::var("CONSUL_HTTP_TOKEN").ok().map(Secret::new);
    let unique = format!(
        "pika-remedy-test/{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let c = ConsulConfig {
        address,
        prefix: unique,
        ..ConsulConfig::default()
    };
    let t = Timeouts {
        connect: Duration::from_secs(2),
        command: Duration::from_secs(5),
    };
    let a = Consul::new(&c, token.clone(), &t).expect("client a");
    let b = Consul::new(&c, token, &t).expect("client b");
    contract::run_all(&a, &b, "real", TTL).await;
    announce(&format!(
        "contract_real_consul_if_configured: contract passed against real Consul at {addr}"
    ));
}

#[tokio::test]
async fn session_has_no_checks_release_behavior_and_short_lock_delay() {
    let fake = fake_with_token().await;
    let a = client(&fake, cfg(""));
    let l = acquired(&a, "s", "a").await;
    let sessions = fake.sessions();
    assert_eq!(
        sessions.len(),
        1,
        "the losing or unused sessions are destroyed"
    );
    let s = &sessions[0];
    assert_eq!(s.id, session_of(&l));
    assert!(
        s.checks.is_empty(),
        "no serfHealth check by default: {:?}",
        s.checks
    );
    assert_eq!(s.behavior, "release");
    assert_eq!(s.lock_delay, Duration::from_millis(1));
    assert_eq!(s.ttl, Some(Duration::from_secs(15)));
    let key = fake.kv("pika-remedy/s/lock").expect("lock key");
    assert_eq!(key.session.as_deref(), Some(s.id.as_str()));
    assert_eq!(l.token, format!("{}:{}", s.id, key.lock_index));
    a.release(l).await.expect("release");
    assert!(fake.sessions().is_empty(), "release destroys the session");

    // Configured checks go to both Checks and NodeChecks.
    let b = client(
        &fake,
        ConsulConfig {
            checks: vec!["serfHealth".into()],
            ..cfg("")
        },
    );
    let l = acquired(&b, "s2", "b").await;
    assert_eq!(fake.sessions()[0].checks, vec!["serfHealth".to_string()]);
    b.release(l).await.expect("release");
}

#[tokio::test]
async fn session_invalidation_loses_the_lock() {
    let fake = fake_with_token().await;
    let a = client(&fake, cfg(""));
    let b = client(&fake, cfg(""));
    let la = acquired(&a, "inv", "a").await;
    assert!(a.still_held(&la).await.expect("still_held"));
    assert!(fake.expire_session(&session_of(&la)), "session existed");
    assert!(
        !a.still_held(&la).await.expect("still_held"),
        "invalidated session must not hold"
    );
    let lb = contract::lock_within(
        &b,
        "inv",
        &contract::holder("b"),
        TTL,
        Duration::from_secs(5),
    )
    .await;
    assert!(!a.still_held(&la).await.expect("still_held a"));
    assert!(b.still_held(&lb).await.expect("still_held b"));
    a.release(la)
        .await
        .expect("release of a lost lease is harmless");
    assert!(b
        .still_held(&lb)
        .await
        .expect("b still holds after a's late release"));
    b.release(lb).await.expect("release");
}

#[tokio::test]
async fn lock_delay_is_honoured_after_invalidation_not_after_release() {
    let fake = fake_with_token().await;
    let c = ConsulConfig {
        lock_delay: Duration::from_secs(20),
        ..cfg("")
    };
    let a = client(&fake, c.clone());
    let b = client(&fake, c);
    // Invalidation (TTL lapse, destroy, check): the key is blocked for the lock-delay.
    let la = acquired(&a, "ld", "a").await;
    fake.expire_session(&session_of(&la));
    match b
        .try_lock("ld", &contract::holder("b"), TTL)
        .await
        .expect("try_lock")
    {
        LockOutcome::HeldBy(None) => {}
        other => {
            panic!("during the lock-delay the lock is not available and has no holder: {other:?}")
        }
    }
    fake.advance(Duration::from_secs(21));
    let lb = acquired(&b, "ld", "b").await;
    // An explicit release sets no lock-delay: the next acquire succeeds at once.
    b.release(lb).await.expect("release");
    let la2 = acquired(&a, "ld", "a").await;
    a.release(la2).await.expect("release");
}

/// Short TTLs are a test-only option of the fake (Consul's minimum is 10 s).
#[tokio::test]
async fn renewal_keeps_the_lease_past_its_ttl_and_stops_when_dropped() {
    let fake = FakeConsul::start_with(Options {
        token: Some(TOKEN.into()),
        min_ttl: Duration::from_millis(100),
        ttl_multiplier: 2,
    })
    .await;
    let a = client(&fake, cfg(""));
    let l = acquired_with(&a, "ren", "a", SHORT_TTL).await;
    // 5× the TTL, 2.5× the fake's 2×TTL expiry: only renewal can keep it.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(
        a.still_held(&l).await.expect("still_held"),
        "renewed lease must survive"
    );
    assert_eq!(fake.sessions().len(), 1);

    // Without renewal the session lapses: jump the server clock past 2×TTL.
    fake.advance(Duration::from_secs(5));
    assert!(
        !a.still_held(&l).await.expect("still_held"),
        "lapsed session must not hold"
    );
    drop(l);

    // A dropped lease stops renewing, so its session lapses on the real clock too.
    let l2 = acquired_with(&a, "ren2", "a", SHORT_TTL).await;
    drop(l2);
    let start = Instant::now();
    while !fake.sessions().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "dropped lease kept renewing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fake.kv("pika-remedy/ren2/lock").expect("key").session, None);
}

#[tokio::test]
async fn stopped_or_hanging_server_is_unreachable_within_the_timeout() {
    let fake = fake_with_token().await;
    let a = client(&fake, cfg(""));
    a.ping().await.expect("ping");
    let limit = timeouts().connect + timeouts().command + Duration::from_secs(2);

    fake.stop().await;
    let start = Instant::now();
    let e = a.ping().await.expect_err("stopped server");
    assert!(
        matches!(e, CoordError::Unreachable(_)) && e.is_retryable(),
        "{e:?}"
    );
    let e = a
        .try_lock("down", &contract::holder("a"), TTL)
        .await
        .expect_err("stopped server");
    assert!(e.is_retryable(), "{e:?}");
    let e = a.read_record("down").await.expect_err("stopped server");
    assert!(e.is_retryable(), "{e:?}");
    assert!(start.elapsed() < limit, "took {:?}", start.elapsed());

    fake.restart().await;
    a.ping().await.expect("ping after restart");

    fake.set_hang(true);
    let start = Instant::now();
    let e = a.read_record("hang").await.expect_err("hanging server");
    assert!(matches!(e, CoordError::Unreachable(_)), "{e:?}");
    assert!(
        start.elapsed() < limit,
        "timeout not honoured: {:?}",
        start.elapsed()
    );
    fake.set_hang(false);
}

#[tokio::test]
async fn catalog_tags_follow_publish_roles() {
    let fake = fake_with_token().await;
    let a = client(&fake, cfg(""));
    let m: Addr = "127.0.0.1:9221".parse().expect("addr");
    let r1: Addr = "127.0.0.1:9222".parse().expect("addr");
    let r2: Addr = "127.0.0.1:9223".parse().expect("addr");
    a.publish_roles("main", &m, &[r1.clone(), r2.clone()])
        .await
        .expect("publish");
    let tags = |fake: &FakeConsul| {
        let mut v: Vec<(u16, Vec<String>, String)> = fake
            .catalog_service("pika-main")
            .into_iter()
            .map(|e| (e.port, e.tags, e.node))
            .collect();
        v.sort();
        v
    };
    let got = tags(&fake);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].1, vec!["master"]);
    assert_eq!(got[1].1, vec!["replica"]);
    assert_eq!(got[2].1, vec!["replica"]);
    assert_eq!(got[0].2, "pika-main-127-0-0-1-9221");
    // After a failover the tags move, and no stale master remains.
    a.publish_roles("main", &r1, &[m.clone(), r2.clone()])
        .await
        .expect("publish");
    let got = tags(&fake);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].1, vec!["replica"]);
    assert_eq!(got[1].1, vec!["master"]);

    // catalog = false: nothing is registered.
    let off = client(
        &fake,
        ConsulConfig {
            catalog: false,
            ..cfg("")
        },
    );
    off.publish_roles("other", &m, &[r1]).await.expect("no-op");
    assert!(fake.catalog_service("pika-other").is_empty());
}

#[tokio::test]
async fn master_mirror_is_written_with_the_record() {
    let fake = fake_with_token().await;
    let a = client(&fake, cfg(""));
    let v1 = match a
        .write_record("mm", &contract::record("127.0.0.1:7001", 1), None)
        .await
        .expect("write")
    {
        CasOutcome::Written(v) => v,
        other => panic!("{other:?}"),
    };
    let master = fake.kv("pika-remedy/mm/master").expect("mirror key");
    assert_eq!(master.value, b"127.0.0.1:7001");
    let topo = fake.kv("pika-remedy/mm/topology").expect("record key");
    assert_eq!(topo.modify_index, v1, "version is the ModifyIndex");
    // A conflicting write changes neither key.
    assert_eq!(
        a.write_record("mm", &contract::record("127.0.0.1:7002", 2), Some(v1 + 100))
            .await
            .expect("write"),
        CasOutcome::Conflict
    );
    assert_eq!(
        fake.kv("pika-remedy/mm/master").expect("mirror").value,
        b"127.0.0.1:7001"
    );
    a.write_record("mm", &contract::record("127.0.0.1:7002", 2), Some(v1))
        .await
        .expect("write");
    assert_eq!(
        fake.kv("pika-remedy/mm/master").expect("mirror").value,
        b"127.0.0.1:7002"
    );
}

#[tokio::test]
async fn events_are_appended_and_trimmed() {
    let fake = fake_with_token().await;
    let a = client(
        &fake,
        ConsulConfig {
            events_keep: 3,
            ..cfg("")
        },
    );
    for i in 0..5 {
        a.append_event("ev", &format!("{{\"n\":{i}}}"))
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let keys = fake.kv_keys("pika-remedy/ev/events/");
    assert_eq!(keys.len(), 3, "{keys:?}");
    let newest = fake.kv(&keys[2]).expect("newest");
    assert_eq!(newest.value, b"{\"n\":4}", "the newest events are kept");
    let leaf = keys[0].rsplit('/').next().expect("leaf");
    let (millis, _) = leaf.split_once('-').expect("<millis>-<rand>");
    assert_eq!(millis.len(), 20, "zero-padded millis: {leaf}");
}

#[tokio::test]
async fn acl_denial_names_the_permission_never_the_token() {
    let fake = fake_with_token().await;
    let wrong = Consul::new(
        &cfg(&fake.url()),
        Some(Secret::new("wrong-token-value")),
        &timeouts(),
    )
    .expect("client");
    let none = Consul::new(&cfg(&fake.url()), None, &timeouts()).expect("client");
    let right = client(&fake, cfg(""));
    for c in [&wrong, &none] {
        let e = c
            .try_lock("acl", &contract::holder("x"), TTL)
            .await
            .expect_err("denied");
        assert!(
            matches!(e, CoordError::Backend(_)) && !e.is_retryable(),
            "{e:?}"
        );
        assert!(e.to_string().contains("session:write"), "{e}");
        assert!(e.to_string().contains("403"), "{e}");
        let e = c.read_record("acl").await.expect_err("denied");
        assert!(
            e.to_string().contains("key:read on \"pika-remedy/\""),
            "{e}"
        );
        let e = c
            .write_record("acl", &contract::record("127.0.0.1:1", 1), None)
            .await
            .expect_err("denied");
        assert!(e.to_string().contains("key:write"), "{e}");
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(
                !text.contains("wrong-token-value") && !text.contains(TOKEN),
                "{text}"
            );
        }
    }
    for text in [format!("{wrong:?}"), format!("{right:?}")] {
        assert!(
            !text.contains("wrong-token-value") && !text.contains(TOKEN),
            "client Debug leaks: {text}"
        );
    }
    // The right token gets through.
    right.read_record("acl").await.expect("read with token");
}

#[tokio::test]
async fn https_address_needs_tls_support() {
    let c = ConsulConfig {
        address: "https://127.0.0.1:8501".into(),
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..ConsulConfig::default()
    };
    let e = Consul::new(&c, None, &timeouts()).expect_err("bad https setup");
    if cfg!(feature = "consul-tls") {
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    } else {
        assert!(e.to_string().contains("consul-tls"), "{e}");
    }
    let e = Consul::new(
        &ConsulConfig {
            address: "127.0.0.1:8500".into(),
            ..ConsulConfig::default()
        },
        None,
        &timeouts(),
    )
    .expect_err("no scheme");
    assert!(e.to_string().contains("http://"), "{e}");
}

/// Membership expiry (scale-out): a member session not renewed is invalidated after 2×TTL
/// (the test server models Consul's timer) and its key deleted (`Behavior = delete`).
#[tokio::test]
async fn member_expiry_fake_consul() {
    let fake = FakeConsul::start_with(Options {
        token: Some(TOKEN.into()),
        min_ttl: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    let a = client(&fake, cfg(""));
    let b = client(&fake, cfg(""));
    contract::member_expiry(&a, &b, "fake", SHORT_TTL, Duration::from_secs(5)).await;
    assert!(
        fake.kv_keys("pika-remedy/_members/").is_empty(),
        "left members leave no keys behind"
    );
    let s = {
        let t = a
            .heartbeat_member("fake-checks", TTL, None)
            .await
            .expect("register");
        fake.sessions()
            .into_iter()
            .find(|s| s.id == t)
            .expect("the member session")
    };
    assert_eq!(s.behavior, "delete");
    assert!(s.checks.is_empty(), "no serfHealth binding: {:?}", s.checks);
}

// --- poll_record: answered from one blocking query on the records' prefix ---

impl contract::WatchedRecords for Consul {
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
async fn poll_record_sees_other_clients_writes_from_the_blocking_query() {
    let fake = fake_with_token().await;
    let a = client(&fake, cfg(""));
    let b = client(&fake, cfg(""));
    // A cluster never written is absent from the query's answer: no read either.
    contract::poll_sees_other_writes(&a, &b, "Consul", true).await;
    // A raw KV put by another client.
    let json = serde_json::to_string(&contract::record("127.0.0.1:4", 3)).expect("json");
    let resp = reqwest::Client::new()
        .put(format!("{}/v1/kv/pika-remedy/c/topology", fake.url()))
        .header("X-Consul-Token", TOKEN)
        .body(json)
        .send()
        .await
        .expect("raw put");
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(
        poll_until_epoch(&a, "c", 3, Duration::from_secs(10)).await,
        Some(3),
        "a raw Consul KV put not seen by poll_record"
    );
    contract::poll_version_is_read_version(&a, "c").await;
}

/// With the query's answers held, the cache must not answer older than our own CAS.
/// Fails if `write_record` does not call `cache.wrote` / `cache.doubt`.
#[tokio::test]
async fn poll_record_is_never_older_than_own_cas() {
    let fake = fake_with_token().await;
    let a = client(&fake, cfg(""));
    let b = client(&fake, cfg(""));
    contract::poll_never_older_than_own_cas(&a, &b).await;
}

/// Consul stopped and restarted: afterwards `poll_record` returns the record written since.
#[tokio::test]
async fn poll_record_after_the_query_broke_returns_the_current_record() {
    let fake = fake_with_token().await;
    let a = client(&fake, cfg(""));
    a.write_record("c", &contract::record("127.0.0.1:1", 1), None)
        .await
        .expect("write 1");
    watch_ready(&a, "c").await;
    fake.stop().await;
    contract::poll_fails_while_down(&a, "c", Duration::from_secs(45), "Consul").await;
    fake.restart().await;
    let b = client(&fake, cfg(""));
    contract::poll_after_restart(&a, &b, "Consul").await;
}
