//! `RedisNodes` against real redis-server processes and the scripted Pika peer.
//!
//! Tests named `*_parsed_*` need the INFO parser (`node::info::parse`); everything else checks
//! raw round trips, errors and timeouts and does not depend on it.

mod support;

use std::time::{Duration, Instant};

use pika_remedy::config::{Secret, Timeouts};
use pika_remedy::model::{Addr, Engine, LinkState, Role};
use pika_remedy::node::redis::RedisNodes;
use pika_remedy::node::{NodeError, Nodes};
use redis::Value;

use support::pika::{PeerLink, PeerRole, PikaPeer, PikaState};
use support::redis::{
    free_port, info_field, resp_call, wait_for, NodeOptions, RedisCluster, RedisNode,
};

fn timeouts(connect_ms: u64, command_ms: u64) -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(connect_ms),
        command: Duration::from_millis(command_ms),
    }
}

/// Generous bounds: the machine is shared, timing goals are not asserted here.
fn nodes(password: Option<&str>) -> RedisNodes {
    RedisNodes::new(&timeouts(2000, 5000), password.map(Secret::new))
}

fn text(v: Value) -> String {
    match v {
        Value::SimpleString(s) => s,
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::Okay => "OK".into(),
        other => format!("{other:?}"),
    }
}

// ------------------------------------------------------------------ real redis-server

#[tokio::test]
async fn raw_commands_round_trip() {
    let node = RedisNode::start_master();
    let n = nodes(None);
    assert_eq!(
        text(n.command(&node.addr(), &["PING"]).await.unwrap()),
        "PONG"
    );
    let info = n.info_text(&node.addr()).await.unwrap();
    assert!(info.contains("# Server"), "{info}");
    assert!(info.contains("redis_version:"), "{info}");
    assert!(info.contains("# Replication"), "{info}");
    assert_eq!(info_field(&info, "role").as_deref(), Some("master"));
    // Server error replies come back as NodeError::Node with the server's own text.
    let err = n
        .command(&node.addr(), &["NOSUCHCOMMAND"])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NodeError::Node(t) if t.starts_with("ERR unknown command")),
        "{err:?}"
    );
}

#[tokio::test]
async fn status_parsed_of_master_and_replica() {
    let c = RedisCluster::start(1, None);
    let n = nodes(None);
    let m = n.status(&c.master.addr()).await.expect("master status");
    assert_eq!(m.engine, Engine::Redis);
    assert_eq!(m.role, Role::Master);
    assert!(
        m.version.as_deref().is_some_and(|v| v.starts_with("7.")),
        "{:?}",
        m.version
    );
    assert_eq!(m.connected_replicas, 1);
    assert_eq!(m.replicas.len(), 1);
    assert_eq!(m.replicas[0].port, c.replicas[0].port());
    let r = n
        .status(&c.replicas[0].addr())
        .await
        .expect("replica status");
    assert_eq!(r.role, Role::Slave);
    assert_eq!(r.master, Some(c.master.addr()));
    assert_eq!(r.link, Some(LinkState::Up));
    assert!(r.offset.is_some());
}

#[tokio::test]
async fn promote_follow_rewrite_round_trip_persists_replicaof() {
    let mut c = RedisCluster::start(1, Some("cluster-secret"));
    let n = nodes(Some("cluster-secret"));
    let old = c.master.addr();
    let new = c.replicas[0].addr();

    n.promote(&new).await.expect("promote");
    wait_for(Duration::from_secs(5), "replica becomes master", || {
        c.replicas[0].role() == "master"
    });
    n.config_rewrite(&new).await.expect("rewrite on new master");
    assert!(
        !c.replicas[0].conf_text().contains("replicaof"),
        "CONFIG REWRITE should drop replicaof:\n{}",
        c.replicas[0].conf_text()
    );

    n.set_masterauth(&old).await.expect("masterauth");
    n.follow(&old, &new, false).await.expect("follow");
    let new_port = c.replicas[0].port();
    wait_for(
        Duration::from_secs(15),
        "old master links to new master",
        || c.master.is_linked_to(new_port),
    );
    n.config_rewrite(&old).await.expect("rewrite on old master");
    let conf = c.master.conf_text();
    assert!(
        conf.contains(&format!("replicaof 127.0.0.1 {new_port}")),
        "{conf}"
    );

    // The point of the rewrite: a crash + restart keeps the new topology.
    c.master.kill9();
    c.master.restart();
    wait_for(
        Duration::from_secs(15),
        "restarted old master is a replica again",
        || c.master.is_linked_to(new_port),
    );
    assert_eq!(c.replicas[0].role(), "master");
}

#[tokio::test]
async fn follow_is_idempotent_for_the_same_master() {
    let c = RedisCluster::start(1, None);
    let n = nodes(None);
    // Redis answers `+OK Already connected to specified master`: still success.
    n.follow(&c.replicas[0].addr(), &c.master.addr(), false)
        .await
        .expect("same master");
}

#[tokio::test]
async fn redis_rejects_force_as_a_node_error() {
    let c = RedisCluster::start(1, None);
    let n = nodes(None);
    let err = n
        .follow(&c.replicas[0].addr(), &c.master.addr(), true)
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::Node(_)), "{err:?}");
}

#[tokio::test]
async fn pause_and_unpause_writes_on_redis() {
    let node = RedisNode::start_master();
    let n = nodes(None);
    n.pause_writes(&node.addr(), Duration::from_secs(5))
        .await
        .expect("pause");
    n.unpause_writes(&node.addr()).await.expect("unpause");
    assert_eq!(node.cmd(&["SET", "k", "v"]), "OK");
}

#[tokio::test]
async fn wrong_password_is_auth_and_never_shows_the_password() {
    let node = RedisNode::start(NodeOptions {
        password: Some("right-password".into()),
        ..NodeOptions::default()
    });
    let err = nodes(Some("wrong-password-xyz"))
        .promote(&node.addr())
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::Auth(_)), "{err:?}");
    assert!(!err.to_string().contains("wrong-password-xyz"), "{err}");
    assert!(
        !format!("{err:?}").contains("wrong-password-xyz"),
        "{err:?}"
    );

    // No password at all: the server's NOAUTH reply.
    let err = nodes(None).info_text(&node.addr()).await.unwrap_err();
    assert!(matches!(err, NodeError::Auth(_)), "{err:?}");

    // The right one works.
    let info = nodes(Some("right-password"))
        .info_text(&node.addr())
        .await
        .unwrap();
    assert!(info.contains("role:master"));
    // And was not changed by anything above.
    assert_eq!(node.role(), "master");
}

#[tokio::test]
async fn set_masterauth_sets_the_cluster_password() {
    let node = RedisNode::start(NodeOptions {
        password: Some("pw1".into()),
        ..NodeOptions::default()
    });
    let n = nodes(Some("pw1"));
    n.set_masterauth(&node.addr()).await.expect("set");
    assert_eq!(
        node.cmd(&["CONFIG", "GET", "masterauth"]),
        "masterauth\npw1"
    );
}

#[tokio::test]
async fn refused_port_is_refused() {
    let addr = Addr::new("127.0.0.1", free_port());
    let err = nodes(None).info_text(&addr).await.unwrap_err();
    assert_eq!(err, NodeError::Refused);
    assert_eq!(
        nodes(None).promote(&addr).await.unwrap_err(),
        NodeError::Refused
    );
}

#[tokio::test]
async fn listener_that_never_answers_times_out_within_the_bound() {
    // Accepts TCP (the kernel completes the handshake) but never replies.
    let l = support::ports::listen();
    let addr = Addr::new("127.0.0.1", l.local_addr().unwrap().port());
    let t = timeouts(300, 300);
    let n = RedisNodes::new(&t, None);
    let start = Instant::now();
    let err = n.info_text(&addr).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err, NodeError::Timeout);
    // The bound is connect + 3 × command + margin = 1.45 s; allow scheduling slack.
    assert!(took < Duration::from_secs(3), "took {took:?}");

    // Same with a password (AUTH is the first thing that waits).
    let n = RedisNodes::new(&t, Some(Secret::new("pw")));
    let start = Instant::now();
    assert_eq!(n.promote(&addr).await.unwrap_err(), NodeError::Timeout);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    drop(l);
}

#[tokio::test]
async fn slow_reply_times_out_with_the_command_timeout() {
    let node = RedisNode::start_master();
    let n = RedisNodes::new(&timeouts(1000, 300), None);
    let start = Instant::now();
    let err = n
        .command(&node.addr(), &["DEBUG", "SLEEP", "2"])
        .await
        .unwrap_err();
    assert_eq!(err, NodeError::Timeout);
    assert!(
        start.elapsed() < Duration::from_millis(1900),
        "took {:?}",
        start.elapsed()
    );
}

// ------------------------------------------------------------------ scripted Pika peer

/// Nothing a Pika would reject is ever sent by `RedisNodes`.
fn assert_pika_clean(peer: &PikaPeer) {
    for c in peer.commands() {
        let name = c[0].to_ascii_uppercase();
        assert!(
            name != "ROLE" && name != "REPLICAOF" && name != "HELLO",
            "sent {c:?}"
        );
        assert!(
            !(name == "CLIENT" && c.get(1).is_some_and(|s| s.eq_ignore_ascii_case("SETINFO"))),
            "sent {c:?}"
        );
    }
}

#[tokio::test]
async fn pika_connect_sends_only_auth_then_the_command() {
    let peer = PikaPeer::start(PikaState {
        requirepass: Some("pika-pw".into()),
        ..PikaState::master()
    })
    .await;
    let info = nodes(Some("pika-pw"))
        .info_text(&peer.addr())
        .await
        .expect("info");
    assert!(info.contains("pika_version:4.0.0"), "{info}");
    assert!(info.contains("# Replication(MASTER)"), "{info}");
    assert_eq!(
        peer.command_lines(),
        vec!["AUTH <redacted>", "INFO server", "INFO replication"]
    );

    let peer = PikaPeer::start(PikaState::master()).await;
    nodes(None).promote(&peer.addr()).await.expect("promote");
    assert_eq!(peer.command_lines(), vec!["SLAVEOF NO ONE"]);
    assert_pika_clean(&peer);
}

#[tokio::test]
async fn pika_follow_sends_force_literally() {
    let master = Addr::new("127.0.0.1", 9221);
    let peer = PikaPeer::start(PikaState::master()).await;
    let n = nodes(None);
    n.follow(&peer.addr(), &master, true)
        .await
        .expect("follow force");
    assert_eq!(peer.command_lines(), vec!["SLAVEOF 127.0.0.1 9221 force"]);
    assert!(peer.state().last_force);
    assert_eq!(peer.state().role, PeerRole::Slave);

    peer.clear_commands();
    n.promote(&peer.addr()).await.unwrap();
    n.follow(&peer.addr(), &master, false).await.unwrap();
    assert_eq!(
        peer.command_lines(),
        vec!["SLAVEOF NO ONE", "SLAVEOF 127.0.0.1 9221"]
    );
    assert!(!peer.state().last_force);
    assert_pika_clean(&peer);
}

#[tokio::test]
async fn pika_already_master_of_others_is_a_typed_node_error_until_slaves_go() {
    let peer = PikaPeer::start(PikaState {
        slaves_linger: Some(2),
        ..PikaState::master_with_slaves(&[Addr::new("127.0.0.1", 9222)])
    })
    .await;
    let n = nodes(None);
    let target = Addr::new("127.0.0.1", 9223);
    for _ in 0..2 {
        let err = n.follow(&peer.addr(), &target, true).await.unwrap_err();
        assert_eq!(
            err,
            NodeError::MasterOfOthers("ERR already master of others, invalid usage".into())
        );
    }
    n.follow(&peer.addr(), &target, true)
        .await
        .expect("slaves gone");
    assert_eq!(peer.state().master, Some(("127.0.0.1".into(), 9223)));
}

#[tokio::test]
async fn pika_auth_errors_are_auth() {
    let peer = PikaPeer::start(PikaState {
        requirepass: Some("pika-pw".into()),
        ..PikaState::master()
    })
    .await;
    let err = nodes(Some("bad-pika-pw"))
        .info_text(&peer.addr())
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::Auth(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("bad-pika-pw"));
    // `-ERR NOAUTH Authentication required.` (Pika's wording, ERR-prefixed).
    let err = nodes(None).promote(&peer.addr()).await.unwrap_err();
    assert!(
        matches!(&err, NodeError::Auth(t) if t.contains("NOAUTH")),
        "{err:?}"
    );
    // The recording never holds a password.
    assert!(peer
        .command_lines()
        .iter()
        .all(|l| !l.contains("bad-pika-pw")));
}

#[tokio::test]
async fn pika_rewrite_failure_and_masterauth() {
    let peer = PikaPeer::start(PikaState {
        requirepass: Some("cluster-pw".into()),
        ..PikaState::master()
    })
    .await;
    let n = nodes(Some("cluster-pw"));
    n.set_masterauth(&peer.addr()).await.unwrap();
    assert_eq!(peer.state().masterauth.as_deref(), Some("cluster-pw"));
    assert_eq!(
        peer.command_lines(),
        vec!["AUTH <redacted>", "CONFIG SET masterauth <redacted>"]
    );
    n.config_rewrite(&peer.addr()).await.unwrap();
    assert_eq!(peer.state().rewrites, 1);
    peer.with_state(|s| s.rewrite_fails = true);
    let err = n.config_rewrite(&peer.addr()).await.unwrap_err();
    assert_eq!(err, NodeError::Node("ERR Rewire CONFIG fail".into()));

    // Without a cluster password, set_masterauth sends nothing at all.
    let peer2 = PikaPeer::start(PikaState::master()).await;
    nodes(None).set_masterauth(&peer2.addr()).await.unwrap();
    assert!(peer2.commands().is_empty());
}

#[tokio::test]
async fn pika_has_no_write_pause() {
    let peer = PikaPeer::start(PikaState::master()).await;
    let err = nodes(None)
        .pause_writes(&peer.addr(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::Node(_)), "{err:?}");
}

#[tokio::test]
async fn pika_silent_peer_times_out() {
    let peer = PikaPeer::start(PikaState {
        silent: true,
        ..PikaState::master()
    })
    .await;
    let n = RedisNodes::new(&timeouts(300, 300), None);
    let start = Instant::now();
    assert_eq!(
        n.info_text(&peer.addr()).await.unwrap_err(),
        NodeError::Timeout
    );
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn status_parsed_of_pika_peer() {
    let master = Addr::new("127.0.0.1", 9221);
    let peer = PikaPeer::start(PikaState::slave_of(&master, PeerLink::Up)).await;
    let s = nodes(None).status(&peer.addr()).await.expect("status");
    assert_eq!(s.engine, Engine::Pika);
    assert_eq!(s.version.as_deref(), Some("4.0.0"));
    assert_eq!(s.role, Role::Slave);
    assert_eq!(s.master, Some(master));
    assert_eq!(s.link, Some(LinkState::Up));

    let peer = PikaPeer::start(PikaState::master_with_slaves(&[Addr::new(
        "127.0.0.1",
        9333,
    )]))
    .await;
    let s = nodes(None).status(&peer.addr()).await.expect("status");
    assert_eq!(s.role, Role::Master);
    assert_eq!(s.connected_replicas, 1);
    assert_eq!(s.replicas[0].port, 9333);
    assert_pika_clean(&peer);
}

// ------------------------------------------------------------------ the peer's own rules

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_follows_pika_slaveof_rules() {
    let peer = PikaPeer::start(PikaState {
        handshake_never_retries: true,
        ..PikaState::master()
    })
    .await;
    let port = peer.port();
    let call = move |args: Vec<&'static str>| {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            resp_call(port, None, &a)
        })
    };
    let wrong = Err("ERR wrong number of arguments for 'slaveof' command".to_string());
    assert_eq!(
        call(vec!["SLAVEOF", "127.0.0.1", "9221", "-f"])
            .await
            .unwrap(),
        wrong
    );
    assert_eq!(
        call(vec!["SLAVEOF", "127.0.0.1", "9221", "--force"])
            .await
            .unwrap(),
        wrong
    );
    assert_eq!(
        call(vec!["ROLE"]).await.unwrap(),
        Err("ERR unknown command \"role\"".to_string())
    );
    assert!(call(vec!["REPLICAOF", "NO", "ONE"]).await.unwrap().is_err());
    let self_port: &'static str = Box::leak(port.to_string().into_boxed_str());
    assert_eq!(
        call(vec!["SLAVEOF", "127.0.0.1", self_port]).await.unwrap(),
        Err("ERR The master ip:port and the slave ip:port are the same".to_string())
    );

    // Handshake that never retries: no force → link down; same master again is a no-op.
    assert_eq!(
        call(vec!["SLAVEOF", "127.0.0.1", "9221"]).await.unwrap(),
        Ok("OK".into())
    );
    assert_eq!(peer.state().link, PeerLink::Down);
    assert_eq!(
        call(vec!["SLAVEOF", "127.0.0.1", "9221", "FORCE"])
            .await
            .unwrap(),
        Ok("OK".into())
    );
    assert_eq!(
        peer.state().link,
        PeerLink::Down,
        "same master: silent no-op"
    );
    let info = call(vec!["INFO", "replication"]).await.unwrap().unwrap();
    assert_eq!(
        info_field(&info, "master_link_status").as_deref(),
        Some("down")
    );
    assert_eq!(info_field(&info, "master_port").as_deref(), Some("9221"));
    // NO ONE, then force: linked.
    call(vec!["SLAVEOF", "no", "one"]).await.unwrap().unwrap();
    call(vec!["SLAVEOF", "127.0.0.1", "9221", "force"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(peer.state().link, PeerLink::Up);
    let info = call(vec!["INFO", "replication"]).await.unwrap().unwrap();
    assert_eq!(
        info_field(&info, "master_link_status").as_deref(),
        Some("up")
    );

    // Restart without a rewrite forgets the SLAVEOF; with one it keeps it.
    peer.restart();
    assert_eq!(peer.state().role, PeerRole::Master);
    call(vec!["SLAVEOF", "127.0.0.1", "9221", "force"])
        .await
        .unwrap()
        .unwrap();
    call(vec!["CONFIG", "REWRITE"]).await.unwrap().unwrap();
    peer.restart();
    assert_eq!(peer.state().role, PeerRole::Slave);
    assert_eq!(peer.state().master, Some(("127.0.0.1".into(), 9221)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_requires_auth_and_checks_masterauth() {
    let peer = PikaPeer::start(PikaState {
        requirepass: Some("pw".into()),
        expected_masterauth: Some("master-pw".into()),
        ..PikaState::master()
    })
    .await;
    let port = peer.port();
    let r = tokio::task::spawn_blocking(move || {
        (
            resp_call(port, None, &["INFO"]),
            resp_call(port, Some("nope"), &["PING"]),
            resp_call(port, Some("pw"), &["SLAVEOF", "127.0.0.1", "9221"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(r.0, Err("ERR NOAUTH Authentication required.".into()));
    assert!(r.1.unwrap_err().contains("WRONGPASS"));
    assert_eq!(r.2, Ok("OK".into()));
    assert_eq!(
        peer.state().link,
        PeerLink::Down,
        "masterauth not set: handshake fails"
    );
    assert!(peer.command_lines().iter().all(|l| !l.contains("nope")));
}

// ------------------------------------------------------------------ kept connections

fn stat(node: &RedisNode, field: &str) -> u64 {
    let info = node.cmd(&["INFO", "stats"]);
    info_field(&info, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in INFO stats:\n{info}"))
}

#[tokio::test]
async fn pooled_status_keeps_one_connection_per_node_and_fresh_status_does_not() {
    let node = RedisNode::start_master();
    let n = nodes(None);
    let before = stat(&node, "total_connections_received");
    let info_calls = || -> u64 {
        let t = node.cmd(&["INFO", "commandstats"]);
        info_field(&t, "cmdstat_info")
            .and_then(|v| v.split(',').next()?.strip_prefix("calls=")?.parse().ok())
            .expect("cmdstat_info calls")
    };
    let infos_before = info_calls();
    for _ in 0..20 {
        let s = n.status_pooled(&node.addr()).await.expect("pooled status");
        assert_eq!(s.role, Role::Master);
        // `INFO server` is read once per kept connection; its facts stay in every status.
        assert_eq!(s.engine, Engine::Redis);
        assert!(s.version.is_some(), "{s:?}");
    }
    // 20 calls on one kept connection: INFO server once, INFO replication 20 times (and the
    // commandstats call above).
    assert_eq!(info_calls() - infos_before, 1 + 21);
    // A clone shares the kept connection (the poller and the reconcile share one client).
    let clone = n.clone();
    clone.status_pooled(&node.addr()).await.expect("clone");
    assert_eq!(n.pooled_connections(), 1);
    // One connection for 21 pooled calls, plus the two commandstats reads and the one `stat`
    // itself opens.
    let after = stat(&node, "total_connections_received");
    assert_eq!(
        after - before,
        4,
        "one kept connection (and the test's own three)"
    );
    // `status` (the look under the lock, the steps) opens a fresh connection each time.
    for _ in 0..3 {
        n.status(&node.addr()).await.expect("fresh status");
    }
    let fresh = stat(&node, "total_connections_received");
    assert_eq!(
        fresh - after,
        4,
        "three fresh connections (and the test's own)"
    );
}

#[tokio::test]
async fn pooled_status_sees_a_dead_node_at_once_and_reconnects_after_a_restart() {
    let mut node = RedisNode::start_master();
    let n = nodes(None);
    n.status_pooled(&node.addr()).await.expect("first");
    node.kill9();
    let err = n
        .status_pooled(&node.addr())
        .await
        .expect_err("a dead node is not hidden by a kept connection");
    assert_eq!(err, NodeError::Refused, "{err}");
    node.restart();
    let s = n
        .status_pooled(&node.addr())
        .await
        .expect("reconnected after the restart");
    assert_eq!(s.role, Role::Master);
    // A kept connection closed by the server is replaced within the same call.
    node.cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    let s = n
        .status_pooled(&node.addr())
        .await
        .expect("a closed kept connection is replaced");
    assert_eq!(s.role, Role::Master);
    assert_eq!(n.pooled_connections(), 1);
}
