//! Pika-only command paths through `RedisNodes` + `reconcile`, against the scripted Pika peer
//! (`tests/support/pika.rs`): `SLAVEOF … force` demotion, the lingering `already master of
//! others`, the handshake that never retries, a failing `CONFIG REWRITE`, masterauth before
//! SLAVEOF, and never a Redis-only command. Each peer serves its own INFO; the tests script
//! them so that together they describe one cluster (the master lists its slaves, slaves name
//! their master), as the real nodes would.

mod support;

use std::time::{Duration, Instant};
use support::fixtures::fake_policy;

use pika_remedy::config::{ClusterConfig, NodeConfig, Policy, Secret, Timeouts};
use pika_remedy::coord::local::Local;
use pika_remedy::coord::{CasOutcome, Coordinator, Holder};
use pika_remedy::decide::{Action, Step, Trigger};
use pika_remedy::model::{Addr, TopologyRecord};
use pika_remedy::node::redis::RedisNodes;
use pika_remedy::reconcile::{reconcile, Ctx, Outcome, Result_, StepReport};
use support::fakes::ctx;
use support::pika::{PeerLink, PeerRole, PikaPeer, PikaState};

const CLUSTER: &str = "p";

struct Env {
    cfg: ClusterConfig,
    nodes: RedisNodes,
    coord: Local,
    policy: Policy,
    holder: Holder,
    has_password: bool,
    _dir: tempfile::TempDir,
}

impl Env {
    /// `nodes`: (address, priority) in config order; `record`: the recorded master.
    async fn new(nodes: &[(Addr, u32)], record: &Addr, epoch: u64, password: Option<&str>) -> Env {
        let cfg = ClusterConfig {
            name: CLUSTER.into(),
            password: None,
            paused: false,
            rename_commands: Default::default(),
            nodes: nodes
                .iter()
                .map(|(addr, priority)| NodeConfig {
                    addr: addr.clone(),
                    priority: *priority,
                    never_promote: false,
                })
                .collect(),
        };
        let dir = tempfile::Builder::new()
            .prefix("pika-remedy-pika-")
            .tempdir()
            .expect("temp dir");
        let coord = Local::new(dir.path()).expect("local coordinator");
        let rec = TopologyRecord {
            master: record.clone(),
            replicas: nodes
                .iter()
                .map(|(a, _)| a.clone())
                .filter(|a| a != record)
                .collect(),
            epoch,
            updated_at: 1,
            last_failover_at: None,
            reason: "test".into(),
            pending: None,
        };
        assert!(matches!(
            coord.write_record(CLUSTER, &rec, None).await,
            Ok(CasOutcome::Written(_))
        ));
        let timeouts = Timeouts {
            connect: Duration::from_millis(300),
            command: Duration::from_secs(1),
        };
        Env {
            cfg,
            nodes: RedisNodes::new(&timeouts, password.map(Secret::new)),
            coord,
            policy: fake_policy(),
            holder: Holder {
                instance: "pika-test".into(),
                host: "test".into(),
                pid: std::process::id(),
                since: 1,
            },
            has_password: password.is_some(),
            _dir: dir,
        }
    }

    async fn run(&self, trigger: Trigger) -> Outcome {
        let ctx = Ctx {
            has_password: self.has_password,
            ..ctx(
                &self.cfg,
                &self.nodes,
                &self.coord,
                &self.policy,
                &self.holder,
            )
        };
        tokio::time::timeout(Duration::from_secs(30), reconcile(&ctx, trigger))
            .await
            .expect("reconcile is bounded")
    }

    async fn record(&self) -> TopologyRecord {
        self.coord
            .read_record(CLUSTER)
            .await
            .expect("read record")
            .expect("a record")
            .value
    }
}

fn hp(a: &Addr) -> (String, u16) {
    (a.host.clone(), a.port)
}

/// Pika has no `REPLICAOF`, `ROLE`, `CLIENT SETINFO` (nor `HELLO`): none may ever be sent.
fn assert_pika_dialect(peers: &[&PikaPeer]) {
    for p in peers {
        for c in p.commands() {
            let name = c
                .first()
                .map(|s| s.to_ascii_uppercase())
                .unwrap_or_default();
            let sub = c.get(1).map(|s| s.to_ascii_uppercase()).unwrap_or_default();
            let redis_only = matches!(name.as_str(), "REPLICAOF" | "ROLE" | "HELLO")
                || (name == "CLIENT" && sub == "SETINFO");
            assert!(!redis_only, "{} received {c:?}", p.addr());
        }
    }
}

/// The mutating commands a peer received (INFO and AUTH left out, and the snapshot taken
/// before a demotion: see [`snapshot_then`]), as lines.
fn mutations(p: &PikaPeer) -> Vec<String> {
    all_sent(p)
        .into_iter()
        .filter(|l| !is_snapshot(l))
        .collect()
}

fn all_sent(p: &PikaPeer) -> Vec<String> {
    p.command_lines()
        .into_iter()
        .filter(|l| {
            let up = l.to_ascii_uppercase();
            !up.starts_with("INFO") && !up.starts_with("AUTH")
        })
        .collect()
}

/// The commands of the snapshot before a demotion (policy.diverged = "snapshot").
/// The snapshot's commands, and on Pika 4.x the write fence around it (`ACL SETUSER default
/// -@write` before the snapshot, `+@write` once the node follows).
fn is_snapshot(line: &str) -> bool {
    let up = line.to_ascii_uppercase();
    up.starts_with("CONFIG GET DUMP-")
        || up.starts_with("CONFIG SET DUMP-PREFIX")
        || up == "BGSAVE"
        || up.starts_with("ACL SETUSER DEFAULT ")
}

/// True when `p` got the whole snapshot (dump folder and prefix read, a prefix of its own set,
/// BGSAVE, the prefix put back) before `first`; on Pika 4.x with its writes fenced from before
/// the snapshot, and unfenced as the last command.
fn snapshot_then(p: &PikaPeer, first: &str) -> bool {
    let state = p.state();
    let all = all_sent(p);
    let mut sent: &[String] = &all;
    if state.family.starts_with("4.") {
        let fenced_around = matches!(
            (sent.first(), sent.last()),
            (Some(f), Some(l)) if f == "ACL SETUSER default -@write" && l == "ACL SETUSER default +@write"
        );
        if !fenced_around || state.fenced {
            return false;
        }
        sent = &sent[1..];
    }
    let Some(at) = sent.iter().position(|l| l == first) else {
        return false;
    };
    let before: Vec<&str> = sent[..at].iter().map(String::as_str).collect();
    matches!(
        before.as_slice(),
        ["CONFIG GET dump-path", "CONFIG GET dump-prefix", set, "BGSAVE", "CONFIG SET dump-prefix "]
            if set.starts_with("CONFIG SET dump-prefix pika-remedy-")
    )
}

/// A new master M2 with one replica R, and the old master M1 back from a restart with its old
/// config (a master without slaves): the state after a failover Pika cannot repair itself.
async fn restarted_old_master(m1: PikaState) -> (PikaPeer, PikaPeer, PikaPeer) {
    let m2 = PikaPeer::start(PikaState::master()).await;
    let r = PikaPeer::start(PikaState::slave_of(&m2.addr(), PeerLink::Up)).await;
    m2.with_state(|s| s.slaves = vec![hp(&r.addr())]);
    let m1 = PikaPeer::start(m1).await;
    (m1, m2, r)
}

async fn demote_env(m1: &PikaPeer, m2: &PikaPeer, r: &PikaPeer, password: Option<&str>) -> Env {
    Env::new(
        &[(m1.addr(), 100), (m2.addr(), 100), (r.addr(), 100)],
        &m2.addr(),
        2,
        password,
    )
    .await
}

/// The report of the first step that `is_kind` accepts.
fn step_report<'a>(
    out: &'a Outcome,
    what: &str,
    is_kind: impl Fn(&Step) -> bool,
) -> &'a StepReport {
    out.steps
        .iter()
        .find(|s| is_kind(&s.step))
        .unwrap_or_else(|| panic!("a {what} step: {out:#?}"))
}

fn follow_step_millis(out: &Outcome, node: &Addr) -> u64 {
    step_report(
        out,
        "follow",
        |s| matches!(s, Step::Follow { node: n, .. } if n == node),
    )
    .millis
}

#[tokio::test]
async fn restarted_old_master_is_demoted_with_slaveof_force_and_rewrite() {
    let (m1, m2, r) = restarted_old_master(PikaState::master()).await;
    let env = demote_env(&m1, &m2, &r, None).await;

    let out = env.run(Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_eq!(
        out.plan.action,
        Action::Demote {
            node: m1.addr(),
            to: m2.addr()
        }
    );
    assert_eq!(
        mutations(&m1),
        vec![
            format!("SLAVEOF 127.0.0.1 {} force", m2.port()),
            "CONFIG REWRITE".to_string(),
            "CLIENT KILL TYPE normal".to_string(),
        ]
    );
    let force = format!("SLAVEOF 127.0.0.1 {} force", m2.port());
    assert!(
        snapshot_then(&m1, &force),
        "the diverged old master is snapshotted first: {:?}",
        all_sent(&m1)
    );
    assert!(mutations(&m2).is_empty(), "{:?}", mutations(&m2));
    assert!(mutations(&r).is_empty(), "{:?}", mutations(&r));
    assert_eq!(
        persist_detail(&out, &m1.addr()),
        "config rewritten",
        "no caveat on 4.x"
    );
    assert_eq!(m1.state().persisted_master, Some(hp(&m2.addr())));
    assert_eq!(env.record().await.epoch, 2, "a demotion keeps the epoch");

    // A restart of the real Pika comes back from the rewritten config: still a slave.
    m1.restart();
    m2.with_state(|s| s.slaves.push(hp(&m1.addr())));
    assert_eq!(m1.state().role, PeerRole::Slave);
    let out = env.run(Trigger::Periodic).await;
    assert_eq!(out.result, Result_::NoAction, "{out:#?}");
    assert!(out.plan.reason.contains("converged"), "{}", out.plan.reason);
    assert_pika_dialect(&[&m1, &m2, &r]);
}

fn persist_detail(out: &Outcome, node: &Addr) -> String {
    step_report(
        out,
        "persist",
        |s| matches!(s, Step::Persist { node: n } if n == node),
    )
    .detail
    .clone()
}

#[tokio::test]
async fn pika_3_3_demotion_warns_that_the_rewrite_may_not_persist_and_a_restart_is_demoted_again() {
    // Pika 3.2–3.4 with the stock pika.conf (`#slaveof`): CONFIG REWRITE says +OK and
    // persists nothing. No command shows the file, so the tool cannot verify it: it warns.
    let old = PikaState {
        family: "3.3".into(),
        ..PikaState::master()
    };
    let (m1, m2, r) = restarted_old_master(old).await;
    let env = demote_env(&m1, &m2, &r, None).await;

    let out = env.run(Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    let detail = persist_detail(&out, &m1.addr());
    assert!(
        detail.starts_with(
            "config rewritten; warning: Pika 3.3.6 rewrites slaveof only if pika.conf"
        ),
        "{detail}"
    );
    assert_eq!(
        m1.state().persisted_master,
        None,
        "the stock 3.3 file kept nothing"
    );

    // Exactly what the warning says: the restart brings it back as a master, and the next
    // check demotes it again (the record still names m2).
    m1.restart();
    assert_eq!(m1.state().role, PeerRole::Master);
    let out = env.run(Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_eq!(
        out.plan.action,
        Action::Demote {
            node: m1.addr(),
            to: m2.addr()
        }
    );

    // With an uncommented `slaveof` line the rewrite sticks (still warned: not verifiable).
    m1.with_state(|s| s.conf_has_slaveof_line = true);
    m1.restart();
    let out = env.run(Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(persist_detail(&out, &m1.addr()).contains("warning"));
    assert_eq!(m1.state().persisted_master, Some(hp(&m2.addr())));
    m1.restart();
    assert_eq!(m1.state().role, PeerRole::Slave);
}

#[tokio::test]
async fn lingering_already_master_of_others_is_retried_with_backoff_until_it_clears() {
    // The restarted old master still lists R (which follows M2 now) for three more refusals.
    let (m1, m2, r) = restarted_old_master(PikaState::master()).await;
    m1.with_state(|s| {
        s.slaves = vec![hp(&r.addr())];
        s.slaves_linger = Some(3);
    });
    let env = demote_env(&m1, &m2, &r, None).await;

    let out = env.run(Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    let slaveof = format!("SLAVEOF 127.0.0.1 {} force", m2.port());
    assert_eq!(
        mutations(&m1),
        vec![
            slaveof.clone(),
            slaveof.clone(),
            slaveof.clone(),
            slaveof,
            "CONFIG REWRITE".to_string(),
            "CLIENT KILL TYPE normal".to_string(),
        ]
    );
    // Backoff 200 + 400 + 800 ms between the four attempts.
    let ms = follow_step_millis(&out, &m1.addr());
    assert!((1300..3000).contains(&ms), "follow took {ms} ms");
    assert!(mutations(&r).is_empty(), "R follows M2 and is left alone");
    assert_pika_dialect(&[&m1, &m2, &r]);
}

#[tokio::test]
async fn already_master_of_others_that_never_clears_fails_clearly_within_detach_timeout() {
    let (m1, m2, r) = restarted_old_master(PikaState::master()).await;
    m1.with_state(|s| {
        s.slaves = vec![hp(&r.addr())];
        s.slaves_linger = None;
    });
    let mut env = demote_env(&m1, &m2, &r, None).await;
    env.policy.detach_timeout = Duration::from_secs(1);

    let t = Instant::now();
    let out = env.run(Trigger::RoleMismatch).await;
    let elapsed = t.elapsed();
    match &out.result {
        Result_::Failed { error } => {
            assert!(error.contains("already master of others"), "{error}");
            assert!(error.contains(&m1.addr().to_string()), "{error}");
        }
        other => panic!("expected a failure, got {other:?}: {out:#?}"),
    }
    assert!(
        elapsed < Duration::from_secs(3),
        "bounded by detach_timeout: {elapsed:?}"
    );
    let m = mutations(&m1);
    assert!(m.len() >= 2, "retried: {m:?}");
    assert!(
        m.iter().all(|l| l.starts_with("SLAVEOF")),
        "nothing after the failed SLAVEOF: {m:?}"
    );
    assert_eq!(m1.state().role, PeerRole::Master);
    assert_pika_dialect(&[&m1, &m2, &r]);
}

#[tokio::test]
async fn a_handshake_that_never_retries_gets_exactly_one_forced_reissue() {
    // The master died (nothing listens on its port); R1 (preferred) and R2 follow it, links down.
    let dead = Addr::new("127.0.0.1", support::redis::free_port());
    let r1 = PikaPeer::start(PikaState::slave_of(&dead, PeerLink::Down)).await;
    let mut s2 = PikaState::slave_of(&dead, PeerLink::Down);
    s2.handshake_never_retries = true;
    let r2 = PikaPeer::start(s2).await;
    let env = Env::new(
        &[(dead.clone(), 100), (r1.addr(), 1), (r2.addr(), 100)],
        &dead,
        1,
        None,
    )
    .await;

    let out = env.run(Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(matches!(&out.plan.action, Action::Failover { promote, .. } if *promote == r1.addr()));
    assert_eq!(
        mutations(&r1),
        vec!["SLAVEOF NO ONE".to_string(), "CONFIG REWRITE".to_string()]
    );
    let to = format!("SLAVEOF 127.0.0.1 {}", r1.port());
    assert_eq!(
        mutations(&r2),
        vec![
            to.clone(),
            "SLAVEOF NO ONE".to_string(),
            format!("{to} force"),
            "CONFIG REWRITE".to_string()
        ]
    );
    let st = r2.state();
    assert_eq!((st.role, st.link), (PeerRole::Slave, PeerLink::Up));
    let step = out
        .steps
        .iter()
        .find(|s| matches!(&s.step, Step::Follow { node, .. } if *node == r2.addr()))
        .expect("follow step");
    assert!(step.detail.contains("retrying"), "{}", step.detail);
    assert!(step.millis >= 500, "waited link_timeout first");
    let rec = env.record().await;
    assert_eq!((rec.master, rec.epoch), (r1.addr(), 2));
    assert_pika_dialect(&[&r1, &r2]);
}

#[tokio::test]
async fn a_failed_config_rewrite_is_reported_not_ignored() {
    let mut s = PikaState::master();
    s.rewrite_fails = true;
    let (m1, m2, r) = restarted_old_master(s).await;
    let env = demote_env(&m1, &m2, &r, None).await;

    let out = env.run(Trigger::RoleMismatch).await;
    match &out.result {
        Result_::Failed { error } => {
            assert!(error.contains("CONFIG REWRITE"), "{error}");
            assert!(error.contains("Rewire CONFIG fail"), "{error}");
        }
        other => panic!("expected a failure, got {other:?}: {out:#?}"),
    }
    let persist = out
        .steps
        .iter()
        .find(|s| matches!(s.step, Step::Persist { .. }))
        .expect("persist step");
    assert!(!persist.ok);
    // The role change itself happened; only its persistence failed.
    assert_eq!(m1.state().role, PeerRole::Slave);
    assert_eq!(m1.state().persisted_master, None);
    assert_pika_dialect(&[&m1, &m2, &r]);
}

#[tokio::test]
async fn masterauth_is_set_before_slaveof_when_the_cluster_has_a_password() {
    let pw = "pika-secret";
    let with_pw = |mut s: PikaState| {
        s.requirepass = Some(pw.into());
        s
    };
    let mut s1 = with_pw(PikaState::master());
    // The link only comes up if the right masterauth was set first.
    s1.expected_masterauth = Some(pw.into());
    let m2 = PikaPeer::start(with_pw(PikaState::master())).await;
    let r = PikaPeer::start(with_pw(PikaState::slave_of(&m2.addr(), PeerLink::Up))).await;
    m2.with_state(|s| s.slaves = vec![hp(&r.addr())]);
    let m1 = PikaPeer::start(s1).await;
    let env = demote_env(&m1, &m2, &r, Some(pw)).await;

    let out = env.run(Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_eq!(
        mutations(&m1),
        vec![
            "CONFIG SET masterauth <redacted>".to_string(),
            format!("SLAVEOF 127.0.0.1 {} force", m2.port()),
            "CONFIG REWRITE".to_string(),
            "CLIENT KILL TYPE normal".to_string(),
        ]
    );
    assert_eq!(m1.state().masterauth.as_deref(), Some(pw));
    assert!(!format!("{out:?}").contains(pw), "secret in the outcome");
    assert_pika_dialect(&[&m1, &m2, &r]);
}

/// Make the peers' INFO agree with each other: every master lists exactly the peers that are
/// slaves of it (what the real nodes report once links settle).
fn reflect(peers: &[&PikaPeer]) {
    let states: Vec<(Addr, PikaState)> = peers.iter().map(|p| (p.addr(), p.state())).collect();
    for p in peers {
        let me = hp(&p.addr());
        let slaves: Vec<(String, u16)> = states
            .iter()
            .filter(|(_, s)| s.role == PeerRole::Slave && s.master.as_ref() == Some(&me))
            .map(|(a, _)| hp(a))
            .collect();
        p.with_state(|s| {
            if s.role == PeerRole::Master {
                s.slaves = slaves;
            }
        });
    }
}

#[tokio::test]
async fn pika_failover_then_restarted_old_master_is_demoted_and_stays_a_slave() {
    let m1 = PikaPeer::start(PikaState::master()).await;
    let r1 = PikaPeer::start(PikaState::slave_of(&m1.addr(), PeerLink::Up)).await;
    let r2 = PikaPeer::start(PikaState::slave_of(&m1.addr(), PeerLink::Up)).await;
    let all = [&m1, &r1, &r2];
    reflect(&all);
    let env = Env::new(
        &[(m1.addr(), 100), (r1.addr(), 1), (r2.addr(), 100)],
        &m1.addr(),
        1,
        None,
    )
    .await;

    // The master dies: its port stops answering, the replicas' links go down.
    let m1_state = m1.state();
    let m1_addr = m1.addr();
    drop(m1);
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", m1_addr.port))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the dropped peer's port still answers");
    for r in [&r1, &r2] {
        r.with_state(|s| s.link = PeerLink::Down);
    }
    let out = env.run(Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_eq!(
        mutations(&r1),
        vec!["SLAVEOF NO ONE".to_string(), "CONFIG REWRITE".to_string()]
    );
    assert_eq!(
        mutations(&r2),
        vec![
            format!("SLAVEOF 127.0.0.1 {}", r1.port()),
            "CONFIG REWRITE".to_string()
        ]
    );
    assert_eq!(r1.state().persisted_master, None, "promotion persisted");
    assert_eq!(r2.state().persisted_master, Some(hp(&r1.addr())));

    // The old master restarts on its port from its config (no slaveof): a second master.
    let port = m1_addr.port;
    let mut st = m1_state;
    st.commands.clear();
    st.restart();
    let m1 = PikaPeer::start_on(port, st).await;
    reflect(&[&m1, &r1, &r2]);
    let out = env.run(Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_eq!(
        mutations(&m1),
        vec![
            format!("SLAVEOF 127.0.0.1 {} force", r1.port()),
            "CONFIG REWRITE".to_string(),
            "CLIENT KILL TYPE normal".to_string(),
        ]
    );
    // And after one more restart it is still a slave of the new master.
    m1.restart();
    reflect(&[&m1, &r1, &r2]);
    let out = env.run(Trigger::Periodic).await;
    assert_eq!(out.result, Result_::NoAction, "{out:#?}");
    assert!(out.plan.reason.contains("converged"), "{}", out.plan.reason);
    let rec = env.record().await;
    assert_eq!((rec.master, rec.epoch), (r1.addr(), 2));
    assert_pika_dialect(&[&m1, &r1, &r2]);
}

#[tokio::test]
async fn demotion_repoints_the_old_masters_replicas_first() {
    // The restarted old master M1 picked up a replica R2; Pika refuses SLAVEOF on M1 until R2
    // has left (its stale entry then lingers for two more refusals).
    let m2 = PikaPeer::start(PikaState::master()).await;
    let r = PikaPeer::start(PikaState::slave_of(&m2.addr(), PeerLink::Up)).await;
    let m1 = PikaPeer::start(PikaState::master()).await;
    let r2 = PikaPeer::start(PikaState::slave_of(&m1.addr(), PeerLink::Up)).await;
    reflect(&[&m1, &m2, &r, &r2]);
    m1.with_state(|s| s.slaves_linger = Some(2));
    let env = Env::new(
        &[
            (m1.addr(), 100),
            (m2.addr(), 100),
            (r.addr(), 100),
            (r2.addr(), 100),
        ],
        &m2.addr(),
        2,
        None,
    )
    .await;

    let out = env.run(Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(
        out.plan.reason.contains("repointed first"),
        "{}",
        out.plan.reason
    );
    let to = format!("SLAVEOF 127.0.0.1 {}", m2.port());
    assert_eq!(
        mutations(&r2),
        vec![to.clone(), "CONFIG REWRITE".to_string()]
    );
    let forced = format!("{to} force");
    assert_eq!(
        mutations(&m1),
        vec![
            forced.clone(),
            forced.clone(),
            forced,
            "CONFIG REWRITE".to_string(),
            // Stale clients fenced right after the demotion (Pika 4.x).
            "CLIENT KILL TYPE normal".to_string()
        ]
    );
    assert_eq!(r2.state().master, Some(hp(&m2.addr())));
    assert_eq!(m1.state().master, Some(hp(&m2.addr())));
    assert_pika_dialect(&[&m1, &m2, &r, &r2]);
}

/// A connection closed before the `SLAVEOF` reply (seen on the real Pika 4.0.1 under load: its
/// asynchronous `CLIENT KILL TYPE normal` closed the follow's connection, "Connection reset by
/// peer") is retried within `detach_timeout`, not a failed step.
#[tokio::test]
async fn a_slaveof_whose_reply_is_lost_is_sent_again() {
    let (m1, m2, r) = restarted_old_master(PikaState::master()).await;
    m1.with_state(|s| s.drop_slaveof_replies = 1);
    let env = demote_env(&m1, &m2, &r, None).await;
    let out = env.run(Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    let force = format!("SLAVEOF 127.0.0.1 {} force", m2.port());
    let sent = all_sent(&m1);
    assert_eq!(
        sent.iter().filter(|l| **l == force).count(),
        2,
        "sent again after the lost reply: {sent:?}"
    );
    assert_eq!(m1.state().master, Some(hp(&m2.addr())));
}
