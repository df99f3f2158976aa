//! The decision table: one named row per rule (trigger, observation, record, policy, gate →
//! exact action and reason), plus step-compilation tests. Observations are written with a
//! compact chainable builder that produces realistic `NodeStatus` values (Pika 4.0.1 or
//! Redis 7.0.15), e.g.
//! `cluster("c").master("m1:1").offset(100).replica("r1:1").of("m1:1").link(Up).offset(90).down("r2:1")`.

use std::collections::BTreeMap;

use pika_remedy::config::Policy;
use pika_remedy::decide::{
    decide, Action, ExpectedLoss, Gate, LinkSnapshot, Plan, PriorLink, Step, Trigger,
};
use pika_remedy::model::{
    Addr, BinlogPos, Engine, LinkState, NodeObservation, NodeStatus, Observation, ReplicaLine,
    Role, TopologyRecord,
};

use LinkState::{Connecting, Down, Error, FullSync, Up};

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

const BINLOG_FILE_SIZE: u64 = 104_857_600;
const NOW: u64 = 1_000_000;

fn a(s: &str) -> Addr {
    s.parse().unwrap()
}

fn addrs(list: &[&str]) -> Vec<Addr> {
    list.iter().map(|s| a(s)).collect()
}

#[derive(Clone)]
struct NodeB {
    addr: Addr,
    /// `None`: unreachable.
    role: Option<Role>,
    engine: Engine,
    master: Option<Addr>,
    link: LinkState,
    offset: Option<u64>,
    /// Per-DB positions; empty means "db0 at `offset`".
    dbs: BTreeMap<String, BinlogPos>,
    db_links: BTreeMap<String, LinkState>,
    priority: u32,
    never_promote: bool,
    slave_priority: Option<Option<i64>>,
    eligible: Option<Option<bool>>,
    /// `None`: the engine's usual cluster ID.
    replid: Option<Option<String>>,
}

#[derive(Clone)]
struct ClusterB {
    name: String,
    engine: Engine,
    nodes: Vec<NodeB>,
}

/// A Pika cluster.
fn cluster(name: &str) -> ClusterB {
    ClusterB {
        name: name.into(),
        engine: Engine::Pika,
        nodes: Vec::new(),
    }
}

/// A Redis cluster.
fn redis_cluster(name: &str) -> ClusterB {
    ClusterB {
        engine: Engine::Redis,
        ..cluster(name)
    }
}

impl ClusterB {
    fn push(mut self, addr: &str, role: Option<Role>) -> Self {
        self.nodes.push(NodeB {
            addr: a(addr),
            role,
            engine: self.engine,
            master: None,
            link: Up,
            offset: Some(0),
            dbs: BTreeMap::new(),
            db_links: BTreeMap::new(),
            priority: 100,
            never_promote: false,
            slave_priority: None,
            eligible: None,
            replid: None,
        });
        self
    }
    fn last(&mut self) -> &mut NodeB {
        self.nodes.last_mut().expect("add a node first")
    }
    fn master(self, addr: &str) -> Self {
        self.push(addr, Some(Role::Master))
    }
    /// A replica with link up; say `.of(…)` whom it follows.
    fn replica(self, addr: &str) -> Self {
        self.push(addr, Some(Role::Slave))
    }
    /// A Pika `master&&slave` (a replica with replicas of its own).
    fn chained(self, addr: &str) -> Self {
        self.push(addr, Some(Role::MasterSlave))
    }
    /// A configured node that did not answer.
    fn down(self, addr: &str) -> Self {
        self.push(addr, None)
    }
    fn of(mut self, master: &str) -> Self {
        self.last().master = Some(a(master));
        self
    }
    fn link(mut self, l: LinkState) -> Self {
        self.last().link = l;
        self
    }
    fn offset(mut self, o: u64) -> Self {
        self.last().offset = Some(o);
        self
    }
    fn no_offset(mut self) -> Self {
        self.last().offset = None;
        self
    }
    /// A Pika DB at binlog (filenum, offset). The aggregate offset becomes the Pika sum.
    fn db(mut self, db: &str, filenum: u64, offset: u64) -> Self {
        let n = self.last();
        n.dbs.insert(db.into(), BinlogPos { filenum, offset });
        n.offset = Some(
            n.dbs
                .values()
                .map(|p| p.filenum * BINLOG_FILE_SIZE + p.offset)
                .sum(),
        );
        self
    }
    fn db_link(mut self, db: &str, l: LinkState) -> Self {
        self.last().db_links.insert(db.into(), l);
        self
    }
    fn priority(mut self, p: u32) -> Self {
        self.last().priority = p;
        self
    }
    fn never_promote(mut self) -> Self {
        self.last().never_promote = true;
        self
    }
    fn slave_priority(mut self, p: i64) -> Self {
        self.last().slave_priority = Some(Some(p));
        self
    }
    fn eligible(mut self, e: Option<bool>) -> Self {
        self.last().eligible = Some(e);
        self
    }
    fn replid(mut self, id: Option<&str>) -> Self {
        self.last().replid = Some(id.map(str::to_string));
        self
    }

    fn build(&self) -> Observation {
        let nodes = self.nodes.iter().map(|n| self.node(n)).collect();
        Observation {
            cluster: self.name.clone(),
            nodes,
        }
    }

    fn node(&self, n: &NodeB) -> NodeObservation {
        let status = match n.role {
            None => Err("connection refused".to_string()),
            Some(role) => Ok(self.status(n, role)),
        };
        NodeObservation {
            addr: n.addr.clone(),
            priority: n.priority,
            never_promote: n.never_promote,
            status,
        }
    }

    fn status(&self, n: &NodeB, role: Role) -> NodeStatus {
        let pika = n.engine == Engine::Pika;
        let replica = role.is_replica();
        let db_offsets: BTreeMap<String, BinlogPos> = match (pika, n.dbs.is_empty(), n.offset) {
            (false, _, _) | (true, true, None) => BTreeMap::new(),
            (true, true, Some(o)) => [(
                "db0".to_string(),
                BinlogPos {
                    filenum: 0,
                    offset: o,
                },
            )]
            .into(),
            (true, false, _) => n.dbs.clone(),
        };
        // Pika shows one link state per DB; the overall link is up only if every DB is connected.
        // A replica always lists its DBs' link states, even when no offset could be read.
        let db_names: Vec<String> = if db_offsets.is_empty() {
            vec!["db0".to_string()]
        } else {
            db_offsets.keys().cloned().collect()
        };
        let db_links: BTreeMap<String, LinkState> = if pika && replica {
            db_names
                .iter()
                .map(|db| (db.clone(), n.db_links.get(db).copied().unwrap_or(n.link)))
                .chain(n.db_links.iter().map(|(k, v)| (k.clone(), *v)))
                .collect()
        } else {
            BTreeMap::new()
        };
        let full_sync = n.link == FullSync || db_links.values().any(|l| *l == FullSync);
        // Pika 4.0.1 reports is_eligible_for_master_election:false during a full sync.
        let eligible = n
            .eligible
            .unwrap_or(if pika { Some(!full_sync) } else { None });
        let slave_priority =
            n.slave_priority
                .unwrap_or(if replica || !pika { Some(100) } else { None });
        // The replica lines this node would list (reachable nodes following it with link up).
        let replicas: Vec<ReplicaLine> = self
            .nodes
            .iter()
            .filter(|r| r.role.is_some() && r.master.as_ref() == Some(&n.addr) && r.link == Up)
            .map(|r| {
                let lag = match (n.offset, r.offset) {
                    (Some(m), Some(o)) => Some(m.saturating_sub(o)),
                    _ => None,
                };
                ReplicaLine {
                    ip: r.addr.host.clone(),
                    port: r.addr.port,
                    state: if pika { None } else { Some("online".into()) },
                    offset: if pika { None } else { r.offset },
                    db_lag: if pika {
                        [("db0".to_string(), lag)].into()
                    } else {
                        BTreeMap::new()
                    },
                    lag_bytes: lag,
                    lag_seconds: if pika { None } else { Some(0) },
                }
            })
            .collect();
        NodeStatus {
            engine: n.engine,
            version: Some(if pika { "4.0.1" } else { "7.0.15" }.into()),
            role,
            master: if replica { n.master.clone() } else { None },
            link: if replica { Some(n.link) } else { None },
            db_links,
            db_offsets,
            offset: n.offset,
            replid: n.replid.clone().unwrap_or_else(|| {
                Some(if pika {
                    "6d1b5bba1d8d0f7ad47b77d0cbc3e11c9a1e8e4fd6f33c5b01".into()
                } else {
                    "3f2a0d4c8e1b7a6f5d4c3b2a19080706f5e4d3c2".into()
                })
            }),
            eligible,
            priority: slave_priority,
            connected_replicas: replicas.len() as u32,
            replicas,
            psync: None,
        }
    }
}

struct RecB {
    master: Addr,
    epoch: u64,
    last_failover_at: Option<u64>,
    pending: Option<Addr>,
}

fn record(master: &str) -> RecB {
    RecB {
        master: a(master),
        epoch: 3,
        last_failover_at: None,
        pending: None,
    }
}

impl RecB {
    fn epoch(mut self, e: u64) -> Self {
        self.epoch = e;
        self
    }
    fn last_failover_at(mut self, t: u64) -> Self {
        self.last_failover_at = Some(t);
        self
    }
    fn pending(mut self, p: &str) -> Self {
        self.pending = Some(a(p));
        self
    }
    fn build(&self, obs: &Observation) -> TopologyRecord {
        TopologyRecord {
            master: self.master.clone(),
            replicas: obs
                .nodes
                .iter()
                .filter(|n| n.addr != self.master)
                .map(|n| n.addr.clone())
                .collect(),
            epoch: self.epoch,
            updated_at: NOW - 3600,
            last_failover_at: self.last_failover_at,
            pending: self.pending.clone(),
            reason: "recorded by test".into(),
        }
    }
}

// Action shorthands.
fn failover(promote: &str, repoint: &[&str], old: &str, automatic: bool) -> Action {
    Action::Failover {
        promote: a(promote),
        repoint: addrs(repoint),
        old_master: a(old),
        automatic,
    }
}
fn switchover(promote: &str, repoint: &[&str], old: &str) -> Action {
    Action::Switchover {
        promote: a(promote),
        repoint: addrs(repoint),
        old_master: a(old),
    }
}
fn demote(node: &str, to: &str) -> Action {
    Action::Demote {
        node: a(node),
        to: a(to),
    }
}
fn repoint(nodes: &[&str], to: &str) -> Action {
    Action::Repoint {
        nodes: addrs(nodes),
        to: a(to),
    }
}
fn bootstrap(master: &str, replicas: &[&str]) -> Action {
    Action::Bootstrap {
        master: a(master),
        replicas: addrs(replicas),
    }
}
const REFUSE: Action = Action::Refuse { retryable: false };
const NOTHING: Action = Action::NoAction;

fn manual_failover(to: Option<&str>) -> Trigger {
    Trigger::Failover {
        to: to.map(a),
        accept_data_loss: false,
    }
}
fn accept_loss(to: Option<&str>) -> Trigger {
    Trigger::Failover {
        to: to.map(a),
        accept_data_loss: true,
    }
}
fn manual_switchover(to: Option<&str>) -> Trigger {
    Trigger::Switchover { to: to.map(a) }
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

enum Reason {
    Exact(&'static str),
    Has(&'static str),
}

struct Row {
    name: &'static str,
    trigger: Trigger,
    obs: ClusterB,
    record: Option<RecB>,
    policy: Policy,
    gate: Gate,
    action: Action,
    reason: Reason,
    /// Expected `Plan::candidates` as (addr, exclusion phrase), when the row is about ranking.
    candidates: Option<Vec<(&'static str, Option<&'static str>)>>,
    /// Expected `Plan::expected_loss` as its text, when the row is about data loss.
    loss: Option<&'static str>,
}

fn row(name: &'static str, trigger: Trigger, obs: ClusterB, record: Option<RecB>) -> Row {
    Row {
        name,
        trigger,
        obs,
        record,
        policy: Policy::default(),
        gate: Gate {
            now: NOW,
            paused: false,
            last_master_offset: None,
            ..Gate::default()
        },
        action: NOTHING,
        reason: Reason::Has(""),
        candidates: None,
        loss: None,
    }
}

impl Row {
    fn policy(mut self, f: impl FnOnce(&mut Policy)) -> Self {
        f(&mut self.policy);
        self
    }
    fn master_last_seen_at(mut self, offset: u64) -> Self {
        self.gate.last_master_offset = Some(offset);
        self
    }
    /// The poller's last sighting of the Pika master: its binlog per DB (and their sum).
    fn master_last_dbs(mut self, dbs: &[(&str, u64, u64)]) -> Self {
        self.gate.last_master_dbs = dbs
            .iter()
            .map(|(d, filenum, offset)| {
                (
                    d.to_string(),
                    BinlogPos {
                        filenum: *filenum,
                        offset: *offset,
                    },
                )
            })
            .collect();
        self.gate.last_master_offset =
            Some(dbs.iter().map(|(_, f, o)| f * BINLOG_FILE_SIZE + o).sum());
        self.gate.last_master_seen_at = Some(NOW - 3);
        self
    }
    fn loss(mut self, want: &'static str) -> Self {
        self.loss = Some(want);
        self
    }
    /// What the poller saw of `node` in the last polls that saw m1:1 alive: a replica of
    /// `master` with `link` (and these DB links), not linked in `polls` polls in a row.
    fn was(
        mut self,
        node: &str,
        master: &str,
        link: LinkState,
        dbs: &[(&str, LinkState)],
        polls: u32,
    ) -> Self {
        let last = LinkSnapshot {
            role: Role::Slave,
            master: Some(a(master)),
            link: Some(link),
            db_links: dbs.iter().map(|(d, l)| (d.to_string(), *l)).collect(),
        };
        self.gate.links_before.insert(
            a(node),
            PriorLink {
                last,
                unlinked_polls: polls,
            },
        );
        self
    }
    fn paused(mut self) -> Self {
        self.gate.paused = true;
        self
    }
    fn expect(mut self, action: Action, reason: &'static str) -> Self {
        self.action = action;
        self.reason = Reason::Exact(reason);
        self
    }
    fn expect_has(mut self, action: Action, reason: &'static str) -> Self {
        self.action = action;
        self.reason = Reason::Has(reason);
        self
    }
    fn candidates(mut self, c: &[(&'static str, Option<&'static str>)]) -> Self {
        self.candidates = Some(c.to_vec());
        self
    }
    fn run(&self) -> (Observation, Plan) {
        let obs = self.obs.build();
        let rec = self.record.as_ref().map(|r| r.build(&obs));
        let plan = decide(&self.trigger, &obs, rec.as_ref(), &self.policy, &self.gate);
        (obs, plan)
    }
}

/// m1 master, r1 and r2 following it with link up (Pika).
fn healthy() -> ClusterB {
    cluster("c")
        .master("m1:1")
        .offset(1000)
        .replica("r1:1")
        .of("m1:1")
        .offset(1000)
        .replica("r2:1")
        .of("m1:1")
        .offset(990)
}

/// m1 dead; r1 (offset 990) and r2 (offset 1000) still point at it, links down.
fn master_dead() -> ClusterB {
    cluster("c")
        .down("m1:1")
        .replica("r1:1")
        .of("m1:1")
        .link(Down)
        .offset(990)
        .replica("r2:1")
        .of("m1:1")
        .link(Down)
        .offset(1000)
}

fn m1() -> Option<RecB> {
    Some(record("m1:1"))
}

fn rows() -> Vec<Row> {
    vec![
        // --- preconditions ---------------------------------------------------------------
        row("min_observed: too few answers refuses, retryable", Trigger::MasterDown,
            cluster("c").down("m1:1").replica("r1:1").of("m1:1").link(Down).down("r2:1"), m1())
            .policy(|p| p.min_observed = 2)
            .expect(Action::Refuse { retryable: true }, "not enough observations: 1 of 3 nodes answered (need 2)"),
        row("min_observed is checked before the pause", Trigger::Periodic,
            cluster("c").down("m1:1").down("r1:1"), m1())
            .paused()
            .expect(Action::Refuse { retryable: true }, "not enough observations: 0 of 2 nodes answered (need 1)"),
        row("pause blocks an automatic failover", Trigger::MasterDown, master_dead(), m1())
            .paused()
            .expect(NOTHING, "cluster is paused; no automatic action"),
        row("pause blocks an automatic demotion too", Trigger::RoleMismatch,
            healthy().master("m2:1"), m1())
            .paused()
            .expect(NOTHING, "cluster is paused; no automatic action"),
        row("pause does not block a manual failover", manual_failover(None), master_dead(), m1())
            .paused()
            .expect(failover("r2:1", &["r1:1"], "m1:1", false),
                "operator requested failover; recorded master m1:1 is unreachable; promoting r2:1 (priority 100, offset 1000)"),

        // --- no record ---------------------------------------------------------------------
        row("no record, clean picture: bootstrap with every other configured node", Trigger::Periodic,
            healthy().down("r3:1"), None)
            .expect(bootstrap("m1:1", &["r1:1", "r2:1", "r3:1"]),
                "no topology record for cluster c; m1:1 is the only node claiming master and every reachable replica follows it; recording it"),
        row("no record, two masters: refuse naming them", Trigger::RoleMismatch,
            healthy().master("m2:1"), None)
            .expect(REFUSE,
                "no topology record for cluster c and 2 nodes claim master (m1:1, m2:1); not guessing: record the master with pika-remedy record --cluster c --master host:port"),
        row("no record, no master: refuse", Trigger::MasterDown, master_dead(), None)
            .expect_has(REFUSE, "no topology record for cluster c and no node claims master; not guessing"),
        row("no record, a replica follows someone else: refuse", Trigger::Periodic,
            healthy().replica("r3:1").of("m9:1").link(Down), None)
            .expect_has(REFUSE, "m1:1 claims master but r3:1 follows m9:1; not guessing"),
        row("no record, manual failover: refuse naming the record command", manual_failover(None), healthy(), None)
            .expect(REFUSE,
                "no topology record for cluster c; record the current master first: pika-remedy record --cluster c --master host:port"),
        row("recorded master not in the config: refuse", Trigger::Periodic, healthy(), Some(record("m9:1")))
            .expect(REFUSE,
                "recorded master m9:1 is not a configured node of cluster c; fix the config or re-record the master"),

        // --- healthy recorded master: repair --------------------------------------------------
        row("false alarm: master down alert but recorded master answers as master", Trigger::MasterDown, healthy(), m1())
            .expect(NOTHING, "recorded master m1:1 is reachable and reports role master; no failover (false alarm)"),
        row("periodic on a healthy cluster: converged", Trigger::Periodic, healthy(), m1())
            .expect(NOTHING, "topology converged on m1:1 at epoch 3"),
        row("already converged after a failover (record r1, m1 follows r1)", Trigger::RoleMismatch,
            cluster("c").replica("m1:1").of("r1:1").master("r1:1").offset(500).replica("r2:1").of("r1:1"),
            Some(record("r1:1").epoch(4)))
            .expect(NOTHING, "topology converged on r1:1 at epoch 4"),
        row("old master back as master: demote it to the recorded master", Trigger::RoleMismatch,
            cluster("c").master("m1:1").offset(2000).master("r1:1").offset(1500).replica("r2:1").of("r1:1"),
            Some(record("r1:1").epoch(4)))
            .expect(demote("m1:1", "r1:1"),
                "m1:1 claims master while the record names r1:1 at epoch 4; demoting m1:1 to follow r1:1"),
        row("old master back, even on a master-down alert for it", Trigger::MasterDown,
            cluster("c").master("m1:1").master("r1:1").replica("r2:1").of("r1:1"),
            Some(record("r1:1").epoch(4)))
            .expect_has(demote("m1:1", "r1:1"), "m1:1 claims master while the record names r1:1 at epoch 4"),
        row("two stale masters: demote the first in config order", Trigger::Periodic,
            cluster("c").master("r1:1").master("r2:1").master("m1:1"),
            Some(record("r1:1").epoch(5)))
            .expect_has(demote("r2:1", "r1:1"), "r2:1 claims master while the record names r1:1 at epoch 5"),
        row("stale master with a replica attached: reason says the replica goes first", Trigger::RoleMismatch,
            cluster("c").master("m1:1").master("r1:1").replica("r2:1").of("m1:1"),
            Some(record("r1:1").epoch(4)))
            .expect(demote("m1:1", "r1:1"),
                "m1:1 claims master while the record names r1:1 at epoch 4; demoting m1:1 to follow r1:1; its replicas r2:1 are repointed first"),
        row("stale master is demoted before a wrong-master replica is repointed", Trigger::Periodic,
            healthy().replica("r3:1").of("m9:1").master("m2:1"), m1())
            .expect_has(demote("m2:1", "m1:1"), "m2:1 claims master"),
        row("replica following another master: repoint", Trigger::RoleMismatch,
            healthy().replica("r3:1").of("m9:1").link(Down), m1())
            .expect(repoint(&["r3:1"], "m1:1"), "repointing to recorded master m1:1 (epoch 3): r3:1 follows m9:1"),
        row("replica of the master in link error: repoint (Pika never leaves Error)", Trigger::Periodic,
            healthy().replica("r3:1").of("m1:1").link(Error), m1())
            .expect(repoint(&["r3:1"], "m1:1"),
                "repointing to recorded master m1:1 (epoch 3): r3:1 has a replication link error"),
        row("replica of the master with one DB in error: repoint", Trigger::Periodic,
            cluster("c").master("m1:1").db("db0", 0, 10).db("db1", 0, 10)
                .replica("r1:1").of("m1:1").link(Down).db("db0", 0, 10).db("db1", 0, 10).db_link("db1", Error),
            m1())
            .expect(repoint(&["r1:1"], "m1:1"), "repointing to recorded master m1:1 (epoch 3): r1:1 has a replication link error"),
        row("replica with link down to the master is left alone (Pika retries)", Trigger::Periodic,
            healthy().replica("r3:1").of("m1:1").link(Down), m1())
            .expect(NOTHING, "topology converged on m1:1 at epoch 3"),
        row("chained replicas: plain ones are repointed before the chained one", Trigger::Periodic,
            cluster("c").master("m1:1").chained("r1:1").of("m9:1").replica("r2:1").of("r1:1"), m1())
            .expect(repoint(&["r2:1", "r1:1"], "m1:1"),
                "repointing to recorded master m1:1 (epoch 3): r1:1 follows m9:1; r2:1 follows r1:1"),
        row("manual failover with a healthy master: use switchover", manual_failover(Some("r1:1")), healthy(), m1())
            .expect(REFUSE, "recorded master m1:1 is healthy; use switchover"),
        row("recorded master reports slave: operator needed", Trigger::MasterDown,
            cluster("c").replica("m1:1").of("r1:1").master("r1:1").replica("r2:1").of("r1:1"), m1())
            .expect(REFUSE,
                "recorded master m1:1 reports role slave (of r1:1); topology changed outside pika-remedy; operator needed"),

        // --- recorded master unreachable -------------------------------------------------------
        row("recorded master unreachable while another node claims master: refuse", Trigger::RoleMismatch,
            cluster("c").master("m1:1").down("r1:1").replica("r2:1").of("r1:1").link(Down),
            Some(record("r1:1").epoch(4)))
            .expect(REFUSE, "recorded master r1:1 is unreachable while m1:1 claims master; operator needed"),
        row("intent recorded and the intended node claims master: complete the failover", Trigger::Periodic,
            cluster("c").down("m1:1").master("r1:1").offset(1000).replica("r2:1").of("m1:1").link(Down).offset(990),
            Some(record("m1:1").pending("r1:1")))
            .expect(failover("r1:1", &["r2:1"], "m1:1", true),
                "a failover from m1:1 to r1:1 was started (intent recorded) and r1:1 claims master; completing it"),
        row("intent for another node does not excuse a different claimer", Trigger::Periodic,
            cluster("c").down("m1:1").master("r1:1").offset(1000).replica("r2:1").of("m1:1").link(Down).offset(990),
            Some(record("m1:1").pending("r2:1")))
            .expect(REFUSE, "recorded master m1:1 is unreachable while r1:1 claims master; operator needed"),
        row("healthy master with a stale intent: clear it", Trigger::Periodic, healthy(),
            Some(record("m1:1").pending("r1:1")))
            .expect_has(Action::Bootstrap { master: a("m1:1"), replicas: vec![a("r1:1"), a("r2:1")] },
                "clearing a stale failover intent to r1:1"),
        row("holistic check: a replica still sees the master", Trigger::MasterDown,
            master_dead().replica("r3:1").of("m1:1").link(Up).offset(1000), m1())
            .expect(NOTHING,
                "recorded master m1:1 is unreachable from here, but r3:1 still reports its link up; not failing over on our own view"),
        row("absolute lag: every replica far behind the master's last seen offset: refuse", Trigger::MasterDown,
            master_dead(), m1())
            .policy(|p| p.max_lag_bytes = 100)
            .master_last_seen_at(5000)
            .expect(REFUSE, "no promotable replica: r1:1: behind the master's last seen offset by 4010 bytes (limit 100); estimated loss if promoted: 4010 bytes; r2:1: behind the master's last seen offset by 4000 bytes (limit 100); estimated loss if promoted: 4000 bytes; to promote the best of them anyway, accepting that loss: pika-remedy failover --cluster c --accept-data-loss"),
        row("loss: the lag refusal states the estimated loss per Pika DB", Trigger::MasterDown,
            cluster("c").down("m1:1")
                .replica("r1:1").of("m1:1").link(Down).db("db0", 1, 100).db("db1", 0, 50)
                .replica("r2:1").of("m1:1").link(Down).db("db0", 1, 90).db("db1", 0, 80), m1())
            .policy(|p| p.max_lag_bytes = 100)
            .master_last_dbs(&[("db0", 1, 400), ("db1", 0, 80)])
            .expect(REFUSE, "no promotable replica: r1:1: behind the master's last seen offset by 330 bytes (limit 100); estimated loss if promoted: db0 300 bytes, db1 30 bytes; r2:1: behind the master's last seen offset by 310 bytes (limit 100); estimated loss if promoted: db0 310 bytes, db1 0 bytes; to promote the best of them anyway, accepting that loss: pika-remedy failover --cluster c --accept-data-loss"),
        row("loss: --accept-data-loss promotes the best laggard and states the accepted estimate", accept_loss(None),
            cluster("c").down("m1:1")
                .replica("r1:1").of("m1:1").link(Down).db("db0", 1, 100).db("db1", 0, 50)
                .replica("r2:1").of("m1:1").link(Down).db("db0", 1, 90).db("db1", 0, 80), m1())
            .policy(|p| p.max_lag_bytes = 100)
            .master_last_dbs(&[("db0", 1, 400), ("db1", 0, 80)])
            .expect(failover("r2:1", &["r1:1"], "m1:1", false),
                "operator requested failover accepting data loss; recorded master m1:1 is unreachable and every candidate is more than 100 bytes behind its last seen offset; promoting r2:1 (priority 100, offset 104857770); accepted estimated loss: db0 310 bytes, db1 0 bytes")
            .loss("db0 310 bytes, db1 0 bytes"),
        row("loss: --accept-data-loss on Redis: one stream, the loss in bytes", accept_loss(None),
            redis_cluster("c").down("m1:1")
                .replica("r1:1").of("m1:1").link(Down).offset(990)
                .replica("r2:1").of("m1:1").link(Down).offset(1000), m1())
            .policy(|p| p.max_lag_bytes = 100)
            .master_last_seen_at(5000)
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", false), "accepted estimated loss: 4000 bytes")
            .loss("4000 bytes"),
        row("loss: --accept-data-loss promotes a laggard, never a node with a hard exclusion", accept_loss(None),
            master_dead().link(Error), m1())
            .policy(|p| p.max_lag_bytes = 100)
            .master_last_seen_at(5000)
            .expect_has(failover("r1:1", &["r2:1"], "m1:1", false), "promoting r1:1 (priority 100, offset 990); accepted estimated loss: 4010 bytes")
            .candidates(&[("r1:1", Some("behind the master's last seen offset by 4010 bytes (limit 100); estimated loss if promoted: 4010 bytes")), ("r2:1", Some("link error"))]),
        row("loss: no laggard left, only other exclusions: --accept-data-loss still refuses", accept_loss(None),
            cluster("c").down("m1:1")
                .replica("r1:1").of("m1:1").link(Down).offset(990).never_promote()
                .replica("r2:1").of("m1:1").link(Error).offset(1000), m1())
            .policy(|p| p.max_lag_bytes = 100)
            .master_last_seen_at(5000)
            .expect(REFUSE, "no promotable replica: r1:1: never_promote; r2:1: link error"),
        row("loss: --accept-data-loss with candidates within the limit is a plain failover", accept_loss(None),
            master_dead(), m1())
            .policy(|p| p.max_lag_bytes = 100)
            .master_last_seen_at(1050)
            .expect(failover("r2:1", &["r1:1"], "m1:1", false),
                "operator requested failover; recorded master m1:1 is unreachable; promoting r2:1 (priority 100, offset 1000)")
            .loss("50 bytes"),
        row("loss: a candidate at the master's last seen offset loses nothing", Trigger::MasterDown,
            master_dead(), m1())
            .master_last_seen_at(1000)
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", true), "promoting r2:1")
            .loss("none (0 bytes)"),
        row("loss: without the poller's history (CLI) the loss is unknown, said so", manual_failover(None),
            master_dead(), m1())
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", false), "promoting r2:1")
            .loss("unknown (the master's last offset was not seen: no poller history (one-shot CLI, or the service never saw this master alive))"),
        row("loss: a Redis switchover pauses writes: nothing lost", manual_switchover(None),
            redis_cluster("c").master("m1:1").offset(1000)
                .replica("r1:1").of("m1:1").offset(1000), m1())
            .expect_has(switchover("r1:1", &[], "m1:1"), "operator requested switchover")
            .loss("none (0 bytes)"),
        row("absolute lag: within the limit of the master's last seen offset: fail over", Trigger::MasterDown,
            master_dead(), m1())
            .policy(|p| p.max_lag_bytes = 100)
            .master_last_seen_at(1050)
            .expect(failover("r2:1", &["r1:1"], "m1:1", true),
                "recorded master m1:1 is unreachable and no replica sees it; promoting r2:1 (priority 100, offset 1000)"),
        row("absolute lag: an operator may override it by naming the node", manual_failover(Some("r1:1")),
            master_dead(), m1())
            .policy(|p| p.max_lag_bytes = 100)
            .master_last_seen_at(5000)
            .expect_has(failover("r1:1", &["r2:1"], "m1:1", false), "operator override of: behind the master's last seen offset"),
        row("pika: a candidate whose ReplicationID differs from the others' is skipped", Trigger::MasterDown,
            cluster("c").down("m1:1").replica("r1:1").of("m1:1").link(Down).offset(990)
                .replica("r2:1").of("m1:1").link(Down).offset(1000).replid(Some("0000000000ffffffffffffffffffffffffffffffffffffffff"))
                .replica("r3:1").of("m1:1").link(Down).offset(980), m1())
            .expect_has(failover("r1:1", &["r2:1", "r3:1"], "m1:1", true), "promoting r1:1")
            .candidates(&[("r1:1", None), ("r3:1", None),
                ("r2:1", Some("ReplicationID 0000000000ff… differs from the other nodes'"))]),
        row("pika: a candidate with an empty ReplicationID is skipped (it would mint a new one)", Trigger::MasterDown,
            cluster("c").down("m1:1").replica("r1:1").of("m1:1").link(Down).offset(990)
                .replica("r2:1").of("m1:1").link(Down).offset(1000).replid(None)
                .replica("r3:1").of("m1:1").link(Down).offset(980), m1())
            .expect_has(failover("r1:1", &["r2:1", "r3:1"], "m1:1", true), "promoting r1:1")
            .candidates(&[("r1:1", None), ("r3:1", None),
                ("r2:1", Some("empty ReplicationID while the other nodes have one"))]),
        row("pika: two replicas with different IDs and no majority: nothing excluded for it", Trigger::MasterDown,
            master_dead().replid(Some("0000000000ffffffffffffffffffffffffffffffffffffffff")), m1())
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", true), "promoting r2:1"),
        row("pika: a replica whose replication id differs from the master's is repointed (full sync)", Trigger::Periodic,
            cluster("c").master("m1:1").offset(1000)
                .replica("r1:1").of("m1:1").offset(1000)
                .replica("r2:1").of("m1:1").link(Down).offset(990).replid(Some("281edf9b7a026aa5681526b0b649d008936be52dc9fba01cb0")), m1())
            .expect(repoint(&["r2:1"], "m1:1"),
                "repointing to recorded master m1:1 (epoch 3): r2:1's replication id differs from m1:1's (it needs a full sync)"),
        row("pika: a replica whose master has no replication id yet while it has one is repointed (full sync)", Trigger::Periodic,
            cluster("c").master("m1:1").offset(0).replid(None)
                .replica("r1:1").of("m1:1").link(Down).offset(0), m1())
            .expect(repoint(&["r1:1"], "m1:1"),
                "repointing to recorded master m1:1 (epoch 3): r1:1's replication id differs from m1:1's (it needs a full sync)"),
        row("pika: a replica without a replication id takes the master's by itself: nothing to do", Trigger::Periodic,
            cluster("c").master("m1:1").offset(1000)
                .replica("r1:1").of("m1:1").link(Down).offset(990).replid(None), m1())
            .expect(Action::NoAction, "topology converged on m1:1 at epoch 3"),
        row("pika: a replica with link up is never repointed for its replication id", Trigger::Periodic,
            cluster("c").master("m1:1").offset(1000)
                .replica("r1:1").of("m1:1").offset(1000).replid(Some("281edf9b7a026aa5681526b0b649d008936be52dc9fba01cb0")), m1())
            .expect(Action::NoAction, "topology converged on m1:1 at epoch 3"),
        row("redis: a different master_replid on a replica is not a conflict (Redis resyncs by itself)", Trigger::Periodic,
            redis_cluster("c").master("m1:1").offset(1000)
                .replica("r1:1").of("m1:1").link(Down).offset(990).replid(Some("ffffffffffffffffffffffffffffffffffffffff")), m1())
            .expect(Action::NoAction, "topology converged on m1:1 at epoch 3"),
        row("history: a replica in db0 error while the master lived is not promoted (Pika shows no_connect once it died)", Trigger::MasterDown,
            master_dead(), m1())
            .was("r1:1", "m1:1", Up, &[("db0", Up)], 0)
            .was("r2:1", "m1:1", Down, &[("db0", Error)], 7)
            .expect(failover("r1:1", &["r2:1"], "m1:1", true),
                "recorded master m1:1 is unreachable and no replica sees it; promoting r1:1 (priority 100, offset 990)")
            .candidates(&[("r1:1", None), ("r2:1", Some("was not linked to the master before it died: db0 link error"))]),
        row("history: a replica in full sync while the master lived is not promoted, from one poll on", Trigger::MasterDown,
            master_dead(), m1())
            .was("r2:1", "m1:1", FullSync, &[], 1)
            .expect_has(failover("r1:1", &["r2:1"], "m1:1", true), "promoting r1:1")
            .candidates(&[("r1:1", None), ("r2:1", Some("was not linked to the master before it died: in full sync"))]),
        row("history: a link down in one poll only is the poll that raced the death: no exclusion", Trigger::MasterDown,
            master_dead(), m1())
            .was("r1:1", "m1:1", Down, &[("db0", Down)], 1)
            .was("r2:1", "m1:1", Down, &[("db0", Down)], 1)
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", None)]),
        row("history: a link down in two polls in a row while the master lived is an exclusion", Trigger::MasterDown,
            master_dead(), m1())
            .was("r2:1", "m1:1", Down, &[("db0", Connecting)], 2)
            .expect_has(failover("r1:1", &["r2:1"], "m1:1", true), "promoting r1:1")
            .candidates(&[("r1:1", None), ("r2:1", Some("was not linked to the master before it died: link db0 connecting"))]),
        row("history: following another node while the master lived is an exclusion", Trigger::MasterDown,
            master_dead(), m1())
            .was("r2:1", "x:1", Up, &[], 3)
            .expect_has(failover("r1:1", &["r2:1"], "m1:1", true), "promoting r1:1")
            .candidates(&[("r1:1", None), ("r2:1", Some("was not linked to the master before it died: followed x:1"))]),
        row("history: linked then (the count is reset): no exclusion", Trigger::MasterDown,
            master_dead(), m1())
            .was("r2:1", "m1:1", Up, &[("db0", Up)], 0)
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", true), "promoting r2:1"),
        row("history: every replica was not linked: refuse naming why", Trigger::MasterDown,
            master_dead(), m1())
            .was("r1:1", "m1:1", Down, &[("db0", Error)], 1)
            .was("r2:1", "m1:1", Down, &[("db0", FullSync)], 4)
            .expect(REFUSE, "no promotable replica: r1:1: was not linked to the master before it died: db0 link error; r2:1: was not linked to the master before it died: db0 in full sync"),
        row("history: an operator naming the node overrides it (soft)", manual_failover(Some("r2:1")),
            master_dead(), m1())
            .was("r2:1", "m1:1", Down, &[("db0", Error)], 2)
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", false),
                "operator override of: was not linked to the master before it died: db0 link error"),
        row("history: a healthy master is repaired as usual (history is only for a failover)", Trigger::Periodic,
            healthy(), m1())
            .was("r2:1", "m1:1", Down, &[("db0", Error)], 2)
            .expect(NOTHING, "topology converged on m1:1 at epoch 3"),
        row("master dead: fail over to the best offset", Trigger::MasterDown, master_dead(), m1())
            .expect(failover("r2:1", &["r1:1"], "m1:1", true),
                "recorded master m1:1 is unreachable and no replica sees it; promoting r2:1 (priority 100, offset 1000)")
            .candidates(&[("r2:1", None), ("r1:1", None)]),
        row("exclusion: unreachable", Trigger::MasterDown,
            cluster("c").down("m1:1").down("r1:1").replica("r2:1").of("m1:1").link(Down).offset(10), m1())
            .expect_has(failover("r2:1", &[], "m1:1", true), "promoting r2:1 (priority 100, offset 10)")
            .candidates(&[("r2:1", None), ("r1:1", Some("unreachable"))]),
        row("exclusion: in full sync (Redis)", Trigger::MasterDown,
            redis_cluster("c").down("m1:1").replica("r1:1").of("m1:1").link(FullSync).offset(5000)
                .replica("r2:1").of("m1:1").link(Down).offset(1000), m1())
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", Some("in full sync"))]),
        row("exclusion: in full sync (Pika without the eligibility field, one DB syncing)", Trigger::MasterDown,
            cluster("c").down("m1:1")
                .replica("r1:1").of("m1:1").link(Down).db("db0", 0, 900).db("db1", 0, 900).db_link("db1", FullSync).eligible(None)
                .replica("r2:1").of("m1:1").link(Down).db("db0", 0, 800).db("db1", 0, 800).eligible(None), m1())
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", Some("in full sync"))]),
        row("exclusion: link error (still repointed to the new master)", Trigger::MasterDown,
            master_dead().replica("r3:1").of("m1:1").link(Error).offset(5000), m1())
            .expect_has(failover("r2:1", &["r1:1", "r3:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", None), ("r3:1", Some("link error"))]),
        row("exclusion: link error on one DB only", Trigger::MasterDown,
            cluster("c").down("m1:1")
                .replica("r1:1").of("m1:1").link(Down).db("db0", 0, 900).db("db1", 0, 900).db_link("db1", Error)
                .replica("r2:1").of("m1:1").link(Down).db("db0", 0, 800).db("db1", 0, 800), m1())
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", Some("link error"))]),
        row("exclusion: not eligible for master election (Pika full sync)", Trigger::MasterDown,
            master_dead().replica("r3:1").of("m1:1").link(FullSync).offset(5000), m1())
            .expect_has(failover("r2:1", &["r1:1", "r3:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", None), ("r3:1", Some("not eligible for master election"))]),
        row("exclusion: never_promote", Trigger::MasterDown,
            master_dead().replica("r3:1").of("m1:1").link(Down).offset(5000).never_promote().priority(1), m1())
            .expect_has(failover("r2:1", &["r1:1", "r3:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", None), ("r3:1", Some("never_promote"))]),
        row("exclusion: config priority 0", Trigger::MasterDown,
            master_dead().replica("r3:1").of("m1:1").link(Down).offset(5000).priority(0), m1())
            .expect_has(failover("r2:1", &["r1:1", "r3:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", None), ("r3:1", Some("priority 0"))]),
        row("exclusion: node slave_priority 0", Trigger::MasterDown,
            master_dead().replica("r3:1").of("m1:1").link(Down).offset(5000).slave_priority(0), m1())
            .expect_has(failover("r2:1", &["r1:1", "r3:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", None), ("r3:1", Some("priority 0"))]),
        row("exclusion: follows another master", Trigger::MasterDown,
            master_dead().replica("r3:1").of("m9:1").link(Up).offset(5000), m1())
            .expect_has(failover("r2:1", &["r1:1", "r3:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", None), ("r3:1", Some("follows m9:1, not the recorded master"))]),
        row("exclusion: lag over the limit", Trigger::MasterDown, master_dead(), m1())
            .policy(|p| p.max_lag_bytes = 9)
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", Some("behind the best by 10 bytes (limit 9)"))]),
        row("lag exactly at the limit is allowed", Trigger::MasterDown, master_dead(), m1())
            .policy(|p| p.max_lag_bytes = 10)
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", None)]),
        row("lag is measured against candidates only, not against an excluded node", Trigger::MasterDown,
            master_dead().replica("r3:1").of("m1:1").link(Error).offset(90_000), m1())
            .policy(|p| p.max_lag_bytes = 10)
            .expect_has(failover("r2:1", &["r1:1", "r3:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", None), ("r3:1", Some("link error"))]),
        row("exclusion: missing DB (multi-DB Pika)", Trigger::MasterDown,
            cluster("c").down("m1:1")
                .replica("r1:1").of("m1:1").link(Down).db("db0", 0, 100).db("db1", 0, 100).db("db2", 0, 100)
                .replica("r2:1").of("m1:1").link(Down).db("db0", 1, 0).db("db1", 1, 0), m1())
            .expect_has(failover("r1:1", &["r2:1"], "m1:1", true), "promoting r1:1 (priority 100, offset 300)")
            .candidates(&[("r1:1", None), ("r2:1", Some("missing DB db2"))]),
        row("exclusion: offset unknown while others have one", Trigger::MasterDown,
            master_dead().replica("r3:1").of("m1:1").link(Down).no_offset().priority(1), m1())
            .expect_has(failover("r2:1", &["r1:1", "r3:1"], "m1:1", true), "promoting r2:1")
            .candidates(&[("r2:1", None), ("r1:1", None), ("r3:1", Some("offset unknown"))]),
        row("ranking: priority before offset", Trigger::MasterDown,
            cluster("c").down("m1:1")
                .replica("r1:1").of("m1:1").link(Down).offset(1000)
                .replica("r2:1").of("m1:1").link(Down).offset(900).priority(10), m1())
            .expect(failover("r2:1", &["r1:1"], "m1:1", true),
                "recorded master m1:1 is unreachable and no replica sees it; promoting r2:1 (priority 10, offset 900)")
            .candidates(&[("r2:1", None), ("r1:1", None)]),
        row("ranking: same priority and offset, lowest address wins (not config order)", Trigger::MasterDown,
            cluster("c").down("m1:1")
                .replica("r2:1").of("m1:1").link(Down).offset(1000)
                .replica("r1:1").of("m1:1").link(Down).offset(1000), m1())
            .expect_has(failover("r1:1", &["r2:1"], "m1:1", true), "promoting r1:1")
            .candidates(&[("r1:1", None), ("r2:1", None)]),
        // Sync tie-break: on equal offsets, a node with evidence of having synced (link up now,
        // or last seen linked while the master lived) ranks above one that never linked,
        // whatever their addresses (m1:1 sorts before r1:1).
        row("ranking: offsets tie at 0, the replica seen linked beats a restarted old master that never linked", Trigger::MasterDown,
            cluster("c").down("m2:1")
                .replica("m1:1").of("m2:1").link(Connecting).offset(0)
                .replica("r1:1").of("m2:1").link(Down).offset(0), Some(record("m2:1")))
            .was("r1:1", "m2:1", Up, &[], 0)
            .was("m1:1", "m2:1", Connecting, &[], 1)
            .expect_has(failover("r1:1", &["m1:1"], "m2:1", true), "promoting r1:1 (priority 100, offset 0)")
            .candidates(&[("r1:1", None), ("m1:1", None)]),
        row("ranking: equal offsets, the replica with link up now beats one never linked (no history)", manual_failover(None),
            cluster("c").down("m2:1")
                .replica("m1:1").of("m2:1").link(Connecting).offset(500)
                .replica("r1:1").of("m2:1").link(Up).offset(500), Some(record("m2:1")))
            .expect_has(failover("r1:1", &["m1:1"], "m2:1", false), "promoting r1:1 (priority 100, offset 500)")
            .candidates(&[("r1:1", None), ("m1:1", None)]),
        row("ranking: the sync tie-break never beats a higher offset", Trigger::MasterDown,
            cluster("c").down("m2:1")
                .replica("m1:1").of("m2:1").link(Down).offset(1000)
                .replica("r1:1").of("m2:1").link(Down).offset(900), Some(record("m2:1")))
            .was("r1:1", "m2:1", Up, &[], 0)
            .was("m1:1", "m2:1", Down, &[], 1)
            .expect_has(failover("m1:1", &["r1:1"], "m2:1", true), "promoting m1:1 (priority 100, offset 1000)")
            .candidates(&[("m1:1", None), ("r1:1", None)]),
        row("multi-DB Pika: best aggregate offset wins even if behind in one DB", Trigger::MasterDown,
            cluster("c").down("m1:1")
                .replica("r1:1").of("m1:1").link(Down).db("db0", 2, 0).db("db1", 0, 100)
                .replica("r2:1").of("m1:1").link(Down).db("db0", 1, 0).db("db1", 0, 500), m1())
            .expect_has(failover("r1:1", &["r2:1"], "m1:1", true),
                "promoting r1:1 (priority 100, offset 209715300)"),
        row("none qualifies: refuse listing each node", Trigger::MasterDown,
            cluster("c").down("m1:1").down("r1:1")
                .replica("r2:1").of("m1:1").link(FullSync)
                .replica("r3:1").of("m1:1").link(Down).never_promote(), m1())
            .expect(REFUSE,
                "no promotable replica: r1:1: unreachable; r2:1: not eligible for master election; r3:1: never_promote")
            .candidates(&[("r1:1", Some("unreachable")), ("r2:1", Some("not eligible for master election")), ("r3:1", Some("never_promote"))]),
        row("cooldown blocks an automatic failover", Trigger::MasterDown, master_dead(),
            Some(record("m1:1").last_failover_at(NOW - 100)))
            .expect(REFUSE, "cooldown: last automatic failover 100s ago, cooldown 300s"),
        row("cooldown has expired", Trigger::MasterDown, master_dead(),
            Some(record("m1:1").last_failover_at(NOW - 300)))
            .expect_has(failover("r2:1", &["r1:1"], "m1:1", true), "promoting r2:1"),
        row("cooldown does not block a manual failover", manual_failover(None), master_dead(),
            Some(record("m1:1").last_failover_at(NOW - 100)))
            .expect(failover("r2:1", &["r1:1"], "m1:1", false),
                "operator requested failover; recorded master m1:1 is unreachable; promoting r2:1 (priority 100, offset 1000)"),
        row("manual failover skips the holistic check", manual_failover(None),
            master_dead().replica("r3:1").of("m1:1").link(Up).offset(2000), m1())
            .expect_has(failover("r3:1", &["r1:1", "r2:1"], "m1:1", false), "promoting r3:1 (priority 100, offset 2000)"),
        row("manual failover to a lagging node: operator override", manual_failover(Some("r1:1")), master_dead(), m1())
            .policy(|p| p.max_lag_bytes = 5)
            .expect(failover("r1:1", &["r2:1"], "m1:1", false),
                "operator requested failover; recorded master m1:1 is unreachable; promoting r1:1 (priority 100, offset 990); operator override of: behind the best by 10 bytes (limit 5)"),
        row("manual failover to a never_promote node: operator override", manual_failover(Some("r2:1")),
            master_dead().never_promote(), m1())
            .expect(failover("r2:1", &["r1:1"], "m1:1", false),
                "operator requested failover; recorded master m1:1 is unreachable; promoting r2:1 (priority 100, offset 1000); operator override of: never_promote"),
        row("manual failover to an unreachable node: refused", manual_failover(Some("r3:1")),
            master_dead().down("r3:1"), m1())
            .expect(REFUSE, "cannot fail over to r3:1: unreachable"),
        row("manual failover: a hard exclusion behind a soft one still refuses", manual_failover(Some("r3:1")),
            master_dead().replica("r3:1").of("m1:1").link(FullSync).never_promote(), m1())
            .expect(REFUSE, "cannot fail over to r3:1: not eligible for master election"),
        row("manual failover to an unknown node: refused", manual_failover(Some("x1:1")), master_dead(), m1())
            .expect(REFUSE, "x1:1 is not a configured node of cluster c"),

        // --- switchover --------------------------------------------------------------------------
        row("switchover on Redis to the best replica", manual_switchover(None),
            redis_cluster("c").master("m1:1").offset(1000)
                .replica("r1:1").of("m1:1").offset(990)
                .replica("r2:1").of("m1:1").offset(1000), m1())
            .expect(switchover("r2:1", &["r1:1"], "m1:1"),
                "operator requested switchover from m1:1 to r2:1 (priority 100, offset 1000)"),
        row("switchover on Pika to a named replica", manual_switchover(Some("r2:1")), healthy(), m1())
            .expect(switchover("r2:1", &["r1:1"], "m1:1"),
                "operator requested switchover from m1:1 to r2:1 (priority 100, offset 990)"),
        row("switchover to a named never_promote replica: operator override", manual_switchover(Some("r2:1")),
            healthy().never_promote(), m1())
            .expect(switchover("r2:1", &["r1:1"], "m1:1"),
                "operator requested switchover from m1:1 to r2:1 (priority 100, offset 990); operator override of: never_promote"),
        row("switchover skips replicas whose link is not up", manual_switchover(None),
            cluster("c").master("m1:1").replica("r1:1").of("m1:1").link(Down).offset(5000).replica("r2:1").of("m1:1"), m1())
            .expect_has(switchover("r2:1", &["r1:1"], "m1:1"), "to r2:1")
            .candidates(&[("r2:1", None), ("r1:1", Some("link down"))]),
        row("switchover to a replica with link down: refused", manual_switchover(Some("r1:1")),
            cluster("c").master("m1:1").replica("r1:1").of("m1:1").link(Down).replica("r2:1").of("m1:1"), m1())
            .expect(REFUSE, "cannot switch over to r1:1: link down"),
        row("switchover to the current master: nothing to do", manual_switchover(Some("m1:1")), healthy(), m1())
            .expect(NOTHING, "m1:1 is already the recorded master"),
        row("switchover with the master down: use failover", manual_switchover(None), master_dead(), m1())
            .expect(REFUSE, "recorded master m1:1 is unreachable; switchover needs a healthy master; use failover"),

        // --- manual demote -----------------------------------------------------------------------
        row("manual demote of a stray master", Trigger::Demote { node: a("m2:1"), accept_data_loss: false }, healthy().master("m2:1"), m1())
            .expect(demote("m2:1", "m1:1"), "operator asked to demote m2:1; it will follow recorded master m1:1 (epoch 3)"),
        row("manual demote of a replica that already follows", Trigger::Demote { node: a("r1:1"), accept_data_loss: false }, healthy(), m1())
            .expect(NOTHING, "r1:1 already follows recorded master m1:1 with link up"),
        row("manual demote of the recorded master: use switchover", Trigger::Demote { node: a("m1:1"), accept_data_loss: false }, healthy(), m1())
            .expect(REFUSE, "cannot demote the recorded master m1:1; use switchover"),
        row("manual demote while the recorded master is down: refused", Trigger::Demote { node: a("r1:1"), accept_data_loss: false },
            master_dead(), m1())
            .expect(REFUSE, "recorded master m1:1 is unreachable; cannot demote r1:1 to it"),
        row("manual demote of an unreachable node: retryable refusal", Trigger::Demote { node: a("r3:1"), accept_data_loss: false },
            healthy().down("r3:1"), m1())
            .expect(Action::Refuse { retryable: true }, "r3:1 is unreachable; cannot demote it now"),
    ]
}

#[test]
fn decision_table() {
    let rows = rows();
    assert!(rows.len() >= 30, "the table has only {} rows", rows.len());
    let mut names = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for r in &rows {
        assert!(names.insert(r.name), "duplicate row name {:?}", r.name);
        let (_, plan) = r.run();
        let mut why = Vec::new();
        if plan.action != r.action {
            why.push(format!(
                "action: expected {:?}, got {:?}",
                r.action, plan.action
            ));
        }
        match r.reason {
            Reason::Exact(want) if plan.reason != want => {
                why.push(format!("reason: expected {want:?}, got {:?}", plan.reason))
            }
            Reason::Has(want) if !plan.reason.contains(want) => why.push(format!(
                "reason: expected to contain {want:?}, got {:?}",
                plan.reason
            )),
            _ => {}
        }
        if let Some(want) = r.loss {
            let got = plan.expected_loss.as_ref().map(ToString::to_string);
            if got.as_deref() != Some(want) {
                why.push(format!("expected loss: expected {want:?}, got {got:?}"));
            }
        }
        if let Some(want) = &r.candidates {
            let got: Vec<(String, Option<String>)> = plan
                .candidates
                .iter()
                .map(|c| (c.addr.to_string(), c.excluded.clone()))
                .collect();
            let want: Vec<(String, Option<String>)> = want
                .iter()
                .map(|(a, e)| (a.to_string(), e.map(String::from)))
                .collect();
            if got != want {
                why.push(format!("candidates: expected {want:?}, got {got:?}"));
            }
        }
        if !why.is_empty() {
            failures.push(format!("row {:?}:\n  {}", r.name, why.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// Invariants over every row's steps: the record follows the promotion immediately, `force`
/// never goes to a non-Pika node, and only mutating actions compile to node commands.
#[test]
fn step_invariants_hold_for_every_row() {
    for r in rows() {
        let (obs, plan) = r.run();
        let steps = plan.steps(&obs, &r.policy);
        if !plan.action.mutates_nodes() {
            assert!(
                steps.iter().all(|s| !s.mutates()),
                "row {:?}: {steps:?}",
                r.name
            );
        }
        for (i, s) in steps.iter().enumerate() {
            if let Step::Promote { node } = s {
                assert_eq!(
                    steps.get(i + 1),
                    Some(&Step::Persist { node: node.clone() }),
                    "row {:?}",
                    r.name
                );
                assert!(
                    matches!(steps.get(i + 2), Some(Step::Record { master, .. }) if master == node),
                    "row {:?}: record must follow the promotion: {steps:?}",
                    r.name
                );
            }
            if let Step::Follow {
                force: true,
                engine,
                ..
            } = s
            {
                assert_eq!(
                    *engine,
                    Engine::Pika,
                    "row {:?}: force on a non-Pika node",
                    r.name
                );
            }
            if let Step::Follow { node, .. } = s {
                assert_eq!(
                    steps.get(i + 1),
                    Some(&Step::Persist { node: node.clone() }),
                    "row {:?}",
                    r.name
                );
            }
        }
        let reason = plan.reason.to_lowercase();
        assert!(
            !reason.contains(&NOW.to_string()),
            "row {:?}: timestamp in reason",
            r.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Step compilation
// ---------------------------------------------------------------------------------------------

fn plan_of(trigger: Trigger, obs: &ClusterB, rec: Option<RecB>) -> (Observation, Plan) {
    let r = row("steps", trigger, obs.clone(), rec);
    r.run()
}

fn follow(node: &str, master: &str, force: bool, engine: Engine) -> Step {
    Step::Follow {
        node: a(node),
        master: a(master),
        force,
        engine,
        reset: false,
        full_sync: None,
    }
}
/// The same follow, planned as a full sync for `why`.
fn full(step: Step, why: &str) -> Step {
    match step {
        Step::Follow {
            node,
            master,
            force,
            engine,
            reset,
            ..
        } => Step::Follow {
            node,
            master,
            force,
            engine,
            reset,
            full_sync: Some(why.to_string()),
        },
        other => other,
    }
}
/// The full-sync budget's wait for `node`'s full sync from `master` before `before` starts.
fn wait_synced(node: &str, master: &str, before: &str) -> Step {
    Step::WaitSynced {
        node: a(node),
        master: a(master),
        before: a(before),
    }
}
fn persist(node: &str) -> Step {
    Step::Persist { node: a(node) }
}

/// Step `i` snapshots `node` (ahead of its new master by `bytes`) before it follows; returns
/// the steps without it, for comparing the rest.
fn snapshot_at(mut steps: Vec<Step>, i: usize, node: &str, bytes: u64) -> Vec<Step> {
    match steps.get(i) {
        Some(Step::Diverged {
            node: n,
            estimate,
            snapshot: true,
            ..
        }) if n == &a(node) && !estimate.claims_master && estimate.bytes_ahead == Some(bytes) => {}
        other => panic!("step {i}: expected the snapshot of {node} ({bytes} bytes ahead), got {other:?} in {steps:#?}"),
    }
    steps.remove(i);
    steps
}
fn kill(node: &str) -> Step {
    Step::KillClients {
        node: a(node),
        unsupported: None,
    }
}

#[test]
fn failover_steps_promote_persist_record_then_repoint() {
    let (obs, plan) = plan_of(Trigger::MasterDown, &master_dead(), m1());
    assert_eq!(
        plan.steps(&obs, &Policy::default()),
        vec![
            Step::Intent { promote: a("r2:1") },
            Step::Promote { node: a("r2:1") },
            persist("r2:1"),
            Step::Record {
                master: a("r2:1"),
                replicas: addrs(&["m1:1", "r1:1"]),
                automatic_failover: true,
            },
            follow("r1:1", "r2:1", false, Engine::Pika),
            persist("r1:1"),
        ]
    );
}

#[test]
fn failover_forces_pika_replicas_in_error_or_ahead_in_some_db() {
    // r1 wins on aggregate offset; r2 is ahead of it in db1; r3 is in link error.
    let c = cluster("c")
        .down("m1:1")
        .replica("r1:1")
        .of("m1:1")
        .link(Down)
        .db("db0", 2, 0)
        .db("db1", 0, 100)
        .replica("r2:1")
        .of("m1:1")
        .link(Down)
        .db("db0", 1, 0)
        .db("db1", 0, 500)
        .replica("r3:1")
        .of("m1:1")
        .link(Error)
        .db("db0", 0, 0)
        .db("db1", 0, 0)
        .replica("r4:1")
        .of("m1:1")
        .link(Down)
        .db("db0", 1, 0)
        .db("db1", 0, 100);
    let (obs, plan) = plan_of(Trigger::MasterDown, &c, m1());
    assert_eq!(
        plan.action,
        failover("r1:1", &["r2:1", "r3:1", "r4:1"], "m1:1", true)
    );
    let steps = plan.steps(&obs, &Policy::default());
    // r2 has 400 bytes of db1 the new master lacks: saved before its forced resync drops them.
    let steps = snapshot_at(steps, 4, "r2:1", 400);
    assert_eq!(
        steps[4..],
        [
            full(
                follow("r2:1", "r1:1", true, Engine::Pika),
                "full sync: db1 binlog (0 500) is ahead of the master's (0 100)"
            ),
            persist("r2:1"),
            // At most one full sync at a time (policy.max_parallel_full_syncs = 1).
            wait_synced("r2:1", "r1:1", "r3:1"),
            full(
                follow("r3:1", "r1:1", true, Engine::Pika),
                "full sync: SLAVEOF force (its link is in error)"
            ),
            persist("r3:1"),
            follow("r4:1", "r1:1", false, Engine::Pika),
            persist("r4:1"),
        ]
    );
}

#[test]
fn redis_switchover_pauses_and_unpauses_the_old_master() {
    let c = redis_cluster("c")
        .master("m1:1")
        .offset(1000)
        .replica("r1:1")
        .of("m1:1")
        .offset(1000)
        .replica("r2:1")
        .of("m1:1")
        .offset(990);
    let (obs, plan) = plan_of(manual_switchover(None), &c, m1());
    let policy = Policy {
        switchover_pause: std::time::Duration::from_millis(2500),
        ..Policy::default()
    };
    assert_eq!(
        plan.steps(&obs, &policy),
        vec![
            Step::PauseWrites {
                node: a("m1:1"),
                millis: 2500
            },
            Step::WaitCatchUp {
                node: a("r1:1"),
                of: a("m1:1")
            },
            Step::Promote { node: a("r1:1") },
            persist("r1:1"),
            Step::Record {
                master: a("r1:1"),
                replicas: addrs(&["m1:1", "r2:1"]),
                automatic_failover: false,
            },
            // Stale clients fenced before the old master follows (they reconnect, rediscover).
            kill("m1:1"),
            follow("m1:1", "r1:1", false, Engine::Redis),
            persist("m1:1"),
            Step::Unpause { node: a("m1:1") },
            follow("r2:1", "r1:1", false, Engine::Redis),
            persist("r2:1"),
        ]
    );
}

#[test]
fn pika_4_switchover_fences_writes_and_moves_the_other_slaves_first() {
    let (obs, plan) = plan_of(manual_switchover(Some("r2:1")), &healthy(), m1());
    assert_eq!(
        plan.steps(&obs, &Policy::default()),
        vec![
            Step::FenceWrites { node: a("m1:1") },
            Step::WaitCatchUp {
                node: a("r2:1"),
                of: a("m1:1")
            },
            Step::Promote { node: a("r2:1") },
            persist("r2:1"),
            Step::Record {
                master: a("r2:1"),
                replicas: addrs(&["m1:1", "r1:1"]),
                automatic_failover: false,
            },
            // r1 (offset 1000) is ahead of r2 (990) in db0: an incremental sync would fail.
            full(
                follow("r1:1", "r2:1", true, Engine::Pika),
                "full sync: db0 binlog (0 1000) is ahead of the master's (0 990)"
            ),
            persist("r1:1"),
            kill("m1:1"),
            // Fenced, so not ahead of the new master: no forced full resync. It goes last:
            // Pika refuses SLAVEOF while any slave is still attached.
            follow("m1:1", "r2:1", false, Engine::Pika),
            persist("m1:1"),
            Step::UnfenceWrites { node: a("m1:1") },
        ]
    );
    let cmds: Vec<String> = plan
        .steps(&obs, &Policy::default())
        .iter()
        .flat_map(|s| s.commands(false))
        .collect();
    assert!(
        cmds.contains(&"m1:1: ACL SETUSER default -@write".to_string()),
        "{cmds:?}"
    );
    assert!(
        cmds.contains(&"m1:1: ACL SETUSER default +@write".to_string()),
        "{cmds:?}"
    );
}

#[test]
fn pika_3_switchover_cannot_fence_so_it_forces_the_old_master_last() {
    let (mut obs, plan) = plan_of(manual_switchover(Some("r2:1")), &healthy(), m1());
    for n in &mut obs.nodes {
        if let Ok(s) = &mut n.status {
            s.version = Some("3.5.2".into());
        }
    }
    let steps = plan.steps(&obs, &Policy::default());
    assert!(
        !steps.iter().any(|s| matches!(s, Step::FenceWrites { .. })),
        "{steps:?}"
    );
    assert_eq!(
        &steps[steps.len() - 2..],
        &[
            full(
                follow("m1:1", "r2:1", true, Engine::Pika),
                "full sync: db0 binlog (0 1000) is ahead of the master's (0 990)"
            ),
            persist("m1:1")
        ]
    );
}

#[test]
fn demote_forces_on_pika_and_repoints_attached_replicas_first() {
    let c = cluster("c")
        .master("m1:1")
        .offset(2000)
        .master("r1:1")
        .offset(1500)
        .replica("r2:1")
        .of("m1:1")
        .offset(2000);
    let (obs, plan) = plan_of(Trigger::RoleMismatch, &c, Some(record("r1:1").epoch(4)));
    assert_eq!(plan.action, demote("m1:1", "r1:1"));
    let steps = plan.steps(&obs, &Policy::default());
    // It claims master and is 500 bytes ahead: a snapshot first (policy.diverged default),
    // with its writes fenced (Pika 4.x ACL) from before the snapshot until it follows, so
    // nothing it acknowledges after the BGSAVE is discarded outside the snapshot.
    assert_eq!(steps[0], Step::FenceWrites { node: a("m1:1") });
    assert_eq!(steps.last(), Some(&Step::UnfenceWrites { node: a("m1:1") }));
    let steps = steps[1..steps.len() - 1].to_vec();
    match &steps[0] {
        Step::Diverged {
            node,
            estimate,
            snapshot: true,
            ..
        } => {
            assert_eq!(node.to_string(), "m1:1");
            assert!(estimate.claims_master);
            assert_eq!(estimate.bytes_ahead, Some(500), "{estimate:?}");
        }
        other => panic!("expected the snapshot step first, got {other:?}"),
    }
    assert_eq!(
        steps[1..].to_vec(),
        vec![
            full(
                follow("r2:1", "r1:1", true, Engine::Pika),
                "full sync: db0 binlog (0 2000) is ahead of the master's (0 1500)"
            ),
            persist("r2:1"),
            wait_synced("r2:1", "r1:1", "m1:1"),
            full(
                follow("m1:1", "r1:1", true, Engine::Pika),
                "full sync: db0 binlog (0 2000) is ahead of the master's (0 1500)"
            ),
            persist("m1:1"),
            kill("m1:1"),
        ]
    );
}

#[test]
fn demote_never_forces_on_redis() {
    let c = redis_cluster("c")
        .master("m1:1")
        .offset(5000)
        .master("r1:1")
        .offset(10);
    let (obs, plan) = plan_of(Trigger::RoleMismatch, &c, Some(record("r1:1")));
    assert_eq!(plan.action, demote("m1:1", "r1:1"));
    let steps = plan.steps(&obs, &Policy::default());
    // Its writes are paused from before the snapshot until it follows: none is acknowledged
    // after the BGSAVE's fork and then discarded (snapshot_timeout 30 s + link_timeout 15 s).
    assert_eq!(
        steps[0],
        Step::PauseWrites {
            node: a("m1:1"),
            millis: 45_000
        }
    );
    assert!(
        matches!(&steps[1], Step::Diverged { engine: Engine::Redis, snapshot: true, estimate, .. }
            if estimate.bytes_ahead == Some(4990)),
        "{steps:?}"
    );
    assert_eq!(
        steps[2..].to_vec(),
        vec![
            full(
                follow("m1:1", "r1:1", false, Engine::Redis),
                "full sync: offset 5000 is ahead of the master's 10"
            ),
            persist("m1:1"),
            kill("m1:1"),
            Step::Unpause { node: a("m1:1") },
        ]
    );
    // Redis before 6.2 has no `CLIENT PAUSE … WRITE`: the snapshot without the pause.
    let mut old = obs.clone();
    for n in &mut old.nodes {
        if let Ok(s) = &mut n.status {
            s.version = Some("6.0.16".into());
        }
    }
    let steps = plan.steps(&old, &Policy::default());
    assert!(
        matches!(&steps[0], Step::Diverged { snapshot: true, .. }),
        "{steps:?}"
    );
    assert!(
        !steps
            .iter()
            .any(|s| matches!(s, Step::PauseWrites { .. } | Step::Unpause { .. })),
        "{steps:?}"
    );
    // Under `report` nothing is saved, so nothing is paused either.
    let report = Policy {
        diverged: pika_remedy::config::DivergedPolicy::Report,
        ..Policy::default()
    };
    let steps = plan.steps(&obs, &report);
    assert!(
        matches!(
            &steps[0],
            Step::Diverged {
                snapshot: false,
                ..
            }
        ),
        "{steps:?}"
    );
    assert!(
        !steps
            .iter()
            .any(|s| matches!(s, Step::PauseWrites { .. } | Step::Unpause { .. })),
        "{steps:?}"
    );
}

#[test]
fn repoint_forces_only_pika_nodes_in_error_or_ahead() {
    let c = cluster("c")
        .master("m1:1")
        .offset(1000)
        .replica("r1:1")
        .of("m9:1")
        .offset(500)
        .replica("r2:1")
        .of("m9:1")
        .offset(1500)
        .replica("r3:1")
        .of("m1:1")
        .link(Error)
        .offset(10);
    let (obs, plan) = plan_of(Trigger::Periodic, &c, m1());
    assert_eq!(plan.action, repoint(&["r1:1", "r2:1", "r3:1"], "m1:1"));
    // r2 is 500 bytes ahead of m1: a snapshot before its forced resync.
    assert_eq!(
        snapshot_at(plan.steps(&obs, &Policy::default()), 2, "r2:1", 500),
        vec![
            follow("r1:1", "m1:1", false, Engine::Pika),
            persist("r1:1"),
            full(
                follow("r2:1", "m1:1", true, Engine::Pika),
                "full sync: db0 binlog (0 1500) is ahead of the master's (0 1000)"
            ),
            persist("r2:1"),
            wait_synced("r2:1", "m1:1", "r3:1"),
            // It already names m1: the plan resets it first (an identical SLAVEOF is a no-op).
            Step::Follow {
                node: a("r3:1"),
                master: a("m1:1"),
                force: true,
                engine: Engine::Pika,
                reset: true,
                full_sync: Some("full sync: SLAVEOF force (its link is in error)".into()),
            },
            persist("r3:1"),
        ]
    );
}

#[test]
fn pika_children_move_first_as_steps_of_the_plan() {
    // A chain m9 <- r1 <- r2 <- r3, listed top-down: Pika refuses SLAVEOF on a node with
    // slaves, so each node's followers move to m1 before it does, deepest first.
    let c = cluster("c")
        .master("m1:1")
        .offset(1000)
        .chained("r1:1")
        .of("m9:1")
        .offset(900)
        .chained("r2:1")
        .of("r1:1")
        .offset(900)
        .replica("r3:1")
        .of("r2:1")
        .offset(900);
    let (obs, plan) = plan_of(Trigger::Periodic, &c, m1());
    assert_eq!(plan.action, repoint(&["r3:1", "r1:1", "r2:1"], "m1:1"));
    assert_eq!(
        plan.steps(&obs, &Policy::default()),
        vec![
            follow("r3:1", "m1:1", false, Engine::Pika),
            persist("r3:1"),
            follow("r2:1", "m1:1", false, Engine::Pika),
            persist("r2:1"),
            follow("r1:1", "m1:1", false, Engine::Pika),
            persist("r1:1"),
        ]
    );
}

#[test]
fn repoint_on_redis_never_forces() {
    let c = redis_cluster("c")
        .master("m1:1")
        .offset(1000)
        .replica("r1:1")
        .of("m9:1")
        .offset(5000);
    let (obs, plan) = plan_of(Trigger::Periodic, &c, m1());
    // Its full resync drops everything it has: saved first.
    assert_eq!(
        snapshot_at(plan.steps(&obs, &Policy::default()), 0, "r1:1", 4000),
        vec![
            full(
                follow("r1:1", "m1:1", false, Engine::Redis),
                "full sync: offset 5000 is ahead of the master's 1000"
            ),
            persist("r1:1")
        ]
    );
}

#[test]
fn bootstrap_only_records() {
    let (obs, plan) = plan_of(Trigger::Periodic, &healthy(), None);
    assert_eq!(
        plan.steps(&obs, &Policy::default()),
        vec![Step::Record {
            master: a("m1:1"),
            replicas: addrs(&["r1:1", "r2:1"]),
            automatic_failover: false,
        }]
    );
}

#[test]
fn no_action_and_refusal_have_no_steps() {
    for (trigger, rec) in [(Trigger::MasterDown, m1()), (manual_failover(None), None)] {
        let (obs, plan) = plan_of(trigger, &healthy(), rec);
        assert!(plan.steps(&obs, &Policy::default()).is_empty(), "{plan:?}");
    }
}

#[test]
fn commands_show_the_exact_wire_commands_without_secrets() {
    let f = follow("10.0.0.12:9221", "10.0.0.11:9221", true, Engine::Pika);
    assert_eq!(
        f.commands(true),
        vec![
            "10.0.0.12:9221: CONFIG SET masterauth <password>",
            "10.0.0.11:9221: BGSAVE",
            "10.0.0.12:9221: SLAVEOF 10.0.0.11 9221 force",
            "10.0.0.12:9221: poll INFO until master_link_status:up",
            "10.0.0.12:9221: on link timeout, once: SLAVEOF NO ONE; SLAVEOF 10.0.0.11 9221 force",
        ]
    );
    let r = follow("10.0.0.22:6379", "10.0.0.21:6379", false, Engine::Redis);
    assert_eq!(
        r.commands(false),
        vec![
            "10.0.0.22:6379: SLAVEOF 10.0.0.21 6379",
            "10.0.0.22:6379: poll INFO until master_link_status:up",
            "10.0.0.22:6379: on link timeout, once: SLAVEOF NO ONE; SLAVEOF 10.0.0.21 6379",
        ]
    );
    assert_eq!(
        Step::PauseWrites {
            node: a("m1:1"),
            millis: 5000
        }
        .commands(false),
        vec!["m1:1: CLIENT PAUSE 5000 WRITE"]
    );
    assert_eq!(
        Step::Record {
            master: a("r1:1"),
            replicas: addrs(&["m1:1", "r2:1"]),
            automatic_failover: true
        }
        .commands(true),
        vec!["coordinator: record master r1:1, replicas m1:1, r2:1 (compare-and-set)"]
    );
}

#[test]
fn a_replid_conflict_clears_the_id_then_follows_as_a_full_sync() {
    let c = cluster("c")
        .master("m1:1")
        .offset(1000)
        .replica("r1:1")
        .of("m1:1")
        .offset(1000)
        .replica("r2:1")
        .of("m1:1")
        .link(Down)
        .offset(990)
        .replid(Some("281edf9b7a026aa5681526b0b649d008936be52dc9fba01cb0"));
    let (obs, plan) = plan_of(Trigger::Periodic, &c, m1());
    let steps = plan.steps(&obs, &Policy::default());
    let why = "full sync: replication id differs (281edf9b7a02… here, 6d1b5bba1d8d… on the master)";
    assert_eq!(
        steps,
        vec![
            Step::ClearReplicationId {
                node: a("r2:1"),
                master: a("m1:1"),
                why: why.into(),
            },
            // Detached by the clear: no reset, and no force (an empty id means a full sync).
            full(follow("r2:1", "m1:1", false, Engine::Pika), why),
            persist("r2:1"),
        ]
    );
    let cmds: Vec<String> = steps.iter().flat_map(|s| s.commands(false)).collect();
    assert_eq!(
        cmds[..3],
        [
            "r2:1: SLAVEOF NO ONE".to_string(),
            "r2:1: CLEARREPLICATIONID".to_string(),
            format!("r2:1: {why}: the follow below copies all data from m1:1"),
        ]
    );
    // A full sync: the master's dump is refreshed first.
    assert_eq!(cmds[3], "m1:1: BGSAVE");
    assert_eq!(cmds[4], "r2:1: SLAVEOF m1 1");
    assert_eq!(cmds[5], format!("r2:1: {why}"));
}

#[test]
fn failover_clears_the_replica_whose_id_differs_from_the_promoted_one() {
    // The race: r1 and r2 got different IDs from m1; r2 (best offset) is promoted.
    let c = master_dead().replid(Some("0000000000ffffffffffffffffffffffffffffffffffffffff"));
    let (obs, plan) = plan_of(Trigger::MasterDown, &c, m1());
    assert_eq!(plan.action, failover("r2:1", &["r1:1"], "m1:1", true));
    let steps = plan.steps(&obs, &Policy::default());
    assert!(
        matches!(&steps[4], Step::ClearReplicationId { node, master, why }
            if node == &a("r1:1") && master == &a("r2:1") && why.starts_with("full sync: replication id differs")),
        "{steps:?}"
    );
    assert_eq!(
        steps[5..],
        [
            full(
                follow("r1:1", "r2:1", false, Engine::Pika),
                "full sync: replication id differs (6d1b5bba1d8d… here, 0000000000ff… on the master)"
            ),
            persist("r1:1")
        ]
    );
}

#[test]
fn client_kill_is_planned_only_where_the_engine_supports_it() {
    let c = cluster("c")
        .master("m1:1")
        .offset(2000)
        .master("r1:1")
        .offset(1500);
    let (mut obs, plan) = plan_of(Trigger::RoleMismatch, &c, Some(record("r1:1")));
    for n in &mut obs.nodes {
        if let Ok(s) = &mut n.status {
            s.version = Some("3.3.6".into());
        }
    }
    let steps = plan.steps(&obs, &Policy::default());
    let last = steps.last().expect("steps");
    assert!(
        matches!(last, Step::KillClients { unsupported: Some(why), .. } if why.contains("pika 3.3.6 has no CLIENT KILL TYPE")),
        "{steps:?}"
    );
    assert!(!last.mutates());
    assert_eq!(
        last.commands(false),
        vec!["m1:1: not sent: CLIENT KILL TYPE normal (pika 3.3.6 has no CLIENT KILL TYPE (Redis 2.8.12+, Pika 3.5.5+); clients pinned to m1:1 keep their connections)"]
    );
    assert!(last.wire(false, &Default::default()).is_empty());
    // Pika 4 (the 4.0.1 release reports 4.0.0) and Redis 7: sent.
    for v in ["4.0.0", "3.5.5"] {
        for n in &mut obs.nodes {
            if let Ok(s) = &mut n.status {
                s.version = Some(v.into());
            }
        }
        let steps = plan.steps(&obs, &Policy::default());
        // Pika 4.x lifts the snapshot's write fence after the kill (see the demote rows).
        let steps: Vec<Step> = steps
            .into_iter()
            .filter(|s| !matches!(s, Step::UnfenceWrites { .. }))
            .collect();
        assert_eq!(steps.last(), Some(&kill("m1:1")), "{v}");
        assert_eq!(
            steps.last().map(|s| s.commands(false)),
            Some(vec!["m1:1: CLIENT KILL TYPE normal".to_string()])
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Full-sync budget (policy.max_parallel_full_syncs)
// ---------------------------------------------------------------------------------------------

/// Redis: m1 dead; r1 (best) is promoted; r2 shares its history (partial sync); r3 and r4
/// were attached to another master (their replication id is not r1's history: full sync).
fn redis_two_need_full_sync() -> ClusterB {
    redis_cluster("c")
        .down("m1:1")
        .replica("r1:1")
        .of("m1:1")
        .link(Down)
        .offset(1000)
        .replid(Some("aaaa"))
        .replica("r2:1")
        .of("m1:1")
        .link(Down)
        .offset(990)
        .replid(Some("aaaa"))
        .replica("r3:1")
        .of("m1:1")
        .link(Down)
        .offset(500)
        .replid(Some("bbbb"))
        .replica("r4:1")
        .of("m1:1")
        .link(Down)
        .offset(400)
        .replid(Some("bbbb"))
}

#[test]
fn redis_full_syncs_are_planned_as_such_and_serialised_by_the_budget() {
    let (obs, plan) = plan_of(Trigger::MasterDown, &redis_two_need_full_sync(), m1());
    assert_eq!(
        plan.action,
        failover("r1:1", &["r2:1", "r3:1", "r4:1"], "m1:1", true)
    );
    let why = "full sync: replication id bbbb is not in the master's history";
    let steps = plan.steps(&obs, &Policy::default());
    assert_eq!(
        steps[4..],
        [
            // Same history, not ahead: a partial resync, no budget.
            follow("r2:1", "r1:1", false, Engine::Redis),
            persist("r2:1"),
            full(follow("r3:1", "r1:1", false, Engine::Redis), why),
            persist("r3:1"),
            // The default budget is one: r4 waits for r3's full sync to end.
            wait_synced("r3:1", "r1:1", "r4:1"),
            full(follow("r4:1", "r1:1", false, Engine::Redis), why),
            persist("r4:1"),
        ]
    );
    let text: Vec<String> = steps.iter().map(ToString::to_string).collect();
    assert!(
        text.contains(&"r3:1 follows r1:1 (full sync)".to_string()),
        "{text:?}"
    );
    assert!(
        text.contains(
            &"wait for the full sync of r3:1 from r1:1 before repointing r4:1".to_string()
        ),
        "{text:?}"
    );
    let cmds: Vec<String> = steps.iter().flat_map(|s| s.commands(false)).collect();
    assert!(cmds.contains(&format!("r3:1: {why}")), "{cmds:?}");
    assert!(
        cmds.contains(
            &"r3:1: poll INFO until master_link_status:up from r1:1 (its full sync is done)"
                .to_string()
        ),
        "{cmds:?}"
    );
    // WaitSynced sends nothing and is no mutation (the executor runs exactly the plan).
    let wait = wait_synced("r3:1", "r1:1", "r4:1");
    assert!(!wait.mutates());
}

#[test]
fn a_budget_of_two_lets_two_full_syncs_run_at_once() {
    let (obs, plan) = plan_of(Trigger::MasterDown, &redis_two_need_full_sync(), m1());
    let policy = Policy {
        max_parallel_full_syncs: 2,
        ..Policy::default()
    };
    let steps = plan.steps(&obs, &policy);
    assert!(
        !steps.iter().any(|s| matches!(s, Step::WaitSynced { .. })),
        "{steps:?}"
    );
}

#[test]
fn a_full_sync_already_running_from_the_master_counts_against_the_budget() {
    // r2 is in full sync from m1 right now; r1 follows another master and needs one too.
    let c = redis_cluster("c")
        .master("m1:1")
        .offset(1000)
        .replid(Some("aaaa"))
        .replica("r1:1")
        .of("m9:1")
        .offset(10)
        .replid(Some("bbbb"))
        .replica("r2:1")
        .of("m1:1")
        .link(FullSync)
        .replid(Some("cccc"));
    let (obs, plan) = plan_of(Trigger::Periodic, &c, m1());
    assert_eq!(plan.action, repoint(&["r1:1"], "m1:1"));
    assert_eq!(
        plan.steps(&obs, &Policy::default()),
        vec![
            wait_synced("r2:1", "m1:1", "r1:1"),
            full(
                follow("r1:1", "m1:1", false, Engine::Redis),
                "full sync: replication id bbbb is not in the master's history"
            ),
            persist("r1:1"),
        ]
    );
}

#[test]
fn redis_partial_resync_through_replid2_is_not_a_full_sync() {
    // m1 was promoted from a replica of an old master with id "old" at offset 800: a replica
    // still carrying "old" at offset 700 continues with PSYNC (master_replid2).
    let (obs, _) = plan_of(
        Trigger::Periodic,
        &redis_cluster("c")
            .master("m1:1")
            .offset(1000)
            .replid(Some("new")),
        m1(),
    );
    let mut master = obs.nodes[0].status.clone().expect("status");
    master.psync = Some(pika_remedy::model::Psync {
        replid2: Some("old".into()),
        second_offset: Some(801),
        backlog_first: Some(1),
    });
    let mut replica = master.clone();
    replica.role = Role::Slave;
    replica.replid = Some("old".into());
    replica.offset = Some(700);
    replica.psync = None;
    assert_eq!(
        pika_remedy::decide::full_sync_reason(&replica, &master, false),
        None
    );
    // Past second_repl_offset: that history diverged from m1's.
    replica.offset = Some(900);
    assert!(pika_remedy::decide::full_sync_reason(&replica, &master, false).is_some());
    // Outside the backlog.
    replica.offset = Some(700);
    master.psync.as_mut().expect("psync").backlog_first = Some(750);
    assert_eq!(
        pika_remedy::decide::full_sync_reason(&replica, &master, false).as_deref(),
        Some("full sync: offset 700 is older than the master's backlog (from 750)")
    );
}

#[test]
fn pika_binlog_older_than_the_kept_files_is_a_full_sync() {
    let c = cluster("c")
        .master("m1:1")
        .db("db0", 30, 10)
        .replica("r1:1")
        .of("m9:1")
        .db("db0", 12, 0)
        .replica("r2:1")
        .of("m9:1")
        .db("db0", 25, 0);
    let (obs, plan) = plan_of(Trigger::Periodic, &c, m1());
    let steps = plan.steps(&obs, &Policy::default());
    assert_eq!(
        steps,
        vec![
            full(
                follow("r1:1", "m1:1", false, Engine::Pika),
                "full sync: db0 binlog file 12 may be purged on the master (at file 30; it keeps the newest 10 by default)"
            ),
            persist("r1:1"),
            follow("r2:1", "m1:1", false, Engine::Pika),
            persist("r2:1"),
        ]
    );
}

#[test]
fn the_expected_loss_is_data_in_the_plan_json() {
    let r = row(
        "json",
        accept_loss(None),
        cluster("c")
            .down("m1:1")
            .replica("r1:1")
            .of("m1:1")
            .link(Down)
            .db("db0", 1, 100),
        m1(),
    )
    .policy(|p| p.max_lag_bytes = 100)
    .master_last_dbs(&[("db0", 1, 400)]);
    let (_, plan) = r.run();
    assert_eq!(
        plan.expected_loss,
        Some(ExpectedLoss::Bytes {
            total: 300,
            dbs: [("db0".to_string(), 300)].into_iter().collect(),
            master_seen_at: Some(NOW - 3),
        })
    );
    let v = serde_json::to_value(&plan).expect("json");
    assert_eq!(
        v["expected_loss"],
        serde_json::json!({"kind": "bytes", "total": 300, "dbs": {"db0": 300}, "master_seen_at": NOW - 3})
    );
}

/// Pika serves a full sync from the master's last dump while that dump's binlog file exists,
/// even after the master's own data was replaced by a full sync (e.g. after a snapshot of its
/// diverged writes): the replica loads the stale dump and its `TrySync` fails for good. Found
/// by the Pika chaos run. A Pika follow that is a full sync (forced or planned) so refreshes
/// the master's dump first; a plain Pika follow and Redis follows do not.
#[test]
fn pika_full_sync_follow_refreshes_the_master_dump_first() {
    let d = Default::default();
    let wire = |s: &Step| -> Vec<String> {
        s.wire(false, &d)
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect()
    };
    let forced = follow("10.0.0.2:9221", "10.0.0.1:9221", true, Engine::Pika);
    assert!(forced.refreshes_dump());
    assert_eq!(
        wire(&forced),
        [
            "10.0.0.1:9221: BGSAVE",
            "10.0.0.2:9221: SLAVEOF 10.0.0.1 9221 force"
        ]
    );
    let planned = full(
        follow("10.0.0.2:9221", "10.0.0.1:9221", false, Engine::Pika),
        "full sync: replication id cleared",
    );
    assert_eq!(
        wire(&planned),
        [
            "10.0.0.1:9221: BGSAVE",
            "10.0.0.2:9221: SLAVEOF 10.0.0.1 9221"
        ]
    );
    let plain = follow("10.0.0.2:9221", "10.0.0.1:9221", false, Engine::Pika);
    assert!(!plain.refreshes_dump());
    assert_eq!(wire(&plain), ["10.0.0.2:9221: SLAVEOF 10.0.0.1 9221"]);
    // Its one retry is forced, so a full sync: the plan says the dump is refreshed then.
    let lines = plain.commands_in(false, &d);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("on link timeout, once: 10.0.0.1:9221: BGSAVE")),
        "{lines:?}"
    );
    let redis = follow("10.0.0.2:6379", "10.0.0.1:6379", false, Engine::Redis);
    assert!(!redis.refreshes_dump());
    assert_eq!(wire(&redis), ["10.0.0.2:6379: SLAVEOF 10.0.0.1 6379"]);
}
