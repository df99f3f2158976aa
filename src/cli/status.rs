//! `pika-remedy status`: observe every configured cluster once and show it, as a table or JSON.
//! Read-only: only `INFO` is sent.
//!
//! # Exit codes
//! - `0`: every node answered, every cluster has exactly one node claiming `role:master`, the
//!   record exists and names it, and `serve` would neither refuse nor act (a periodic check
//!   would do nothing, pause aside).
//! - `1`: something needs attention: a node is unreachable, no master, several masters, no
//!   record, the record disagrees with reality, `serve` would refuse (e.g. no promotable
//!   replica) or act, or the coordinator could not be read. The reasons are listed under each
//!   cluster (`problems`).
//! - `2`: config or usage error (unreadable/invalid config, unknown `--cluster`); set by `main`.
//!
//! Replicas whose link is not up, or that follow a node other than the one master, are
//! listed as `notes`: they show up in the output but do not change the exit code, so the code
//! stays a plain "is the topology sane" answer for scripts.

use futures_util::future::join_all;
use serde::Serialize;

use crate::config::{ClusterConfig, Loaded};
use crate::controls::{self, rfc3339, Controls, Maintenance, Pause};
use crate::coord::{AnyCoord, Coordinator, Holder};
use crate::decide::{decide, Action, Gate, Plan, Trigger};
use crate::error::{Error, Exit, Result};
use crate::model::TopologyRecord;
use crate::model::{Addr, Engine, LinkState, NodeObservation, Observation, Role};
use crate::observe::observe;
use crate::reconcile::handle::node_client;
use crate::reconcile::now_unix;

use super::ops::Reply;

/// Everything observed, per cluster in config order.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// True if every cluster is healthy (exit code 0).
    pub ok: bool,
    /// `service.scale_out` of the config.
    pub scale_out: bool,
    /// The live `serve` members in the coordinator, sorted (`None`: scale-out off, or the
    /// list could not be read).
    pub members: Option<Vec<String>>,
    pub clusters: Vec<ClusterStatus>,
}

/// One cluster's state, as shown by `status`.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub name: String,
    /// Configured `paused` flag.
    pub paused: bool,
    /// Every node reachable and exactly one master.
    pub healthy: bool,
    /// Reachable nodes claiming `role:master`, in config order.
    pub masters: Vec<Addr>,
    /// Reasons for `healthy == false`.
    pub problems: Vec<String>,
    /// Things worth a look that do not make the cluster unhealthy.
    pub notes: Vec<String>,
    pub nodes: Vec<NodeRow>,
    /// The recorded topology (`None`: none recorded, or the coordinator could not be read).
    pub record: Option<RecordView>,
    /// The shared pause in force (the cluster's own or the global one).
    pub pause: Option<Pause>,
    /// Maintenance entries of this cluster's nodes (expired ones too, until cleared).
    pub maintenance: Vec<Maintenance>,
    /// The switchover scheduled with `switchover --at` (with its `state`), if any.
    pub scheduled_switchover: Option<serde_json::Value>,
    /// Who holds the cluster's failover lock now.
    pub lock_holder: Option<HolderView>,
    /// The record exists and reality agrees with it (one master, the recorded one).
    pub record_agrees: bool,
    /// What a periodic check of `serve` would do now, pause aside.
    pub serve_would: Option<PlanView>,
    /// Which `serve` instance polls the cluster.
    pub owner: OwnerOf,
}

/// Which `serve` instance polls a cluster, computed as `serve` does (rendezvous over the live
/// members, `docs/scale-out.md`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct OwnerOf {
    /// `service.scale_out`; off: every `serve` instance polls every cluster.
    pub scale_out: bool,
    /// The owner (`None`: scale-out off, no live member, or the members unknown).
    pub instance: Option<String>,
}

/// The record as `status` shows it (times RFC 3339).
#[derive(Clone, Debug, Serialize)]
pub struct RecordView {
    pub master: Addr,
    pub replicas: Vec<Addr>,
    pub epoch: u64,
    pub updated: String,
    pub last_failover: Option<String>,
}

impl RecordView {
    fn of(r: &TopologyRecord) -> RecordView {
        RecordView {
            master: r.master.clone(),
            replicas: r.replicas.clone(),
            epoch: r.epoch,
            updated: rfc3339(r.updated_at),
            last_failover: r.last_failover_at.map(rfc3339),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct HolderView {
    pub instance: String,
    pub host: String,
    pub pid: u32,
    pub since: String,
}

/// A plan's action label and reason.
#[derive(Clone, Debug, Serialize)]
pub struct PlanView {
    pub action: String,
    pub reason: String,
}

/// One node's line.
#[derive(Clone, Debug, Serialize)]
pub struct NodeRow {
    pub addr: Addr,
    pub reachable: bool,
    /// Why it could not be read (secret-free), when unreachable.
    pub error: Option<String>,
    pub engine: Option<Engine>,
    pub version: Option<String>,
    /// `master`, `slave` or `master&&slave`.
    pub role: Option<String>,
    /// The master it follows (replicas).
    pub master: Option<Addr>,
    pub link: Option<LinkState>,
    /// Normalised replication offset.
    pub offset: Option<u64>,
    /// Bytes behind its master, from the master's replica lines (or the offset difference).
    pub lag_bytes: Option<u64>,
    /// Pika `is_eligible_for_master_election` (absent before 3.5.5/4.0.1 and on Redis).
    pub eligible: Option<bool>,
    pub priority: u32,
    pub never_promote: bool,
    pub connected_replicas: Option<u32>,
}

impl StatusReport {
    /// `Ok` (0) if all clusters are healthy, else `NotDone` (1) (see the module doc).
    pub fn exit(&self) -> Exit {
        Exit::of_health(self.ok)
    }
}

/// Pick the clusters to show: all, or the one named (unknown name = usage error).
fn selected<'a>(loaded: &'a Loaded, cluster: Option<&str>) -> Result<Vec<&'a ClusterConfig>> {
    match cluster {
        None => Ok(loaded.config.clusters.iter().collect()),
        Some(name) => loaded.cluster(name).map(|c| vec![c]).ok_or_else(|| {
            let known: Vec<&str> = loaded
                .config
                .clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            Error::Usage(format!(
                "unknown cluster {name:?} (configured: {})",
                known.join(", ")
            ))
        }),
    }
}

/// What the coordinator says about a cluster (or why it could not be read).
struct Stored {
    record: Result<Option<TopologyRecord>, String>,
    controls: Result<Controls, String>,
    holder: Result<Option<Holder>, String>,
}

async fn stored(coord: &Result<AnyCoord, String>, cluster: &str) -> Stored {
    let Ok(coord) = coord else {
        let e = coord.as_ref().err().cloned().unwrap_or_default();
        return Stored {
            record: Err(e.clone()),
            controls: Err(e.clone()),
            holder: Err(e),
        };
    };
    let (record, controls, holder) = tokio::join!(
        coord.read_record(cluster),
        controls::read(coord),
        coord.lock_holder(cluster)
    );
    Stored {
        record: record
            .map(|r| r.map(|v| v.value))
            .map_err(|e| e.to_string()),
        controls: controls.map_err(|e| e.to_string()),
        holder: holder.map_err(|e| e.to_string()),
    }
}

/// Observe the selected clusters (concurrently; each node bounded by the configured timeouts)
/// and read what the coordinator holds about them.
pub async fn collect(loaded: &Loaded, cluster: Option<&str>) -> Result<StatusReport> {
    let clusters = selected(loaded, cluster)?;
    let coord = crate::reconcile::handle::coordinator(loaded)
        .await
        .map_err(|e| e.to_string());
    let now = now_unix();
    let observations = join_all(clusters.iter().map(|c| {
        let coord = &coord;
        async move {
            let nodes = node_client(&loaded.config.timeouts, c, loaded.password(&c.name));
            let (obs, st) = tokio::join!(observe(&nodes, c), stored(coord, &c.name));
            (c.paused || loaded.config.service.paused, obs, st)
        }
    }))
    .await;
    let scale_out = loaded.config.service.scale_out;
    let members = match (&coord, scale_out) {
        (Ok(c), true) => Some(c.members().await.map_err(|e| e.to_string())),
        (Err(e), true) => Some(Err(e.clone())),
        (_, false) => None,
    };
    let clusters: Vec<ClusterStatus> = observations
        .iter()
        .map(|(paused, obs, st)| {
            let mut cs = cluster_status(obs, *paused);
            judge(&mut cs, obs, st, &loaded.config.policy, now);
            owner(&mut cs, members.as_ref());
            cs
        })
        .collect();
    Ok(StatusReport {
        ok: clusters.iter().all(|c| c.healthy),
        scale_out,
        members: members.and_then(|m| m.ok()).map(|mut m| {
            m.sort();
            m
        }),
        clusters,
    })
}

/// Who polls the cluster (`members`: `None` with scale-out off). A missing owner is a note,
/// not a problem: webhooks and the CLI still act on every cluster.
fn owner(cs: &mut ClusterStatus, members: Option<&std::result::Result<Vec<String>, String>>) {
    cs.owner = match members {
        None => OwnerOf::default(),
        Some(Ok(m)) => {
            let instance = crate::service::ownership::owner_of(&cs.name, m).map(str::to_string);
            if instance.is_none() {
                cs.notes
                    .push("scale-out: no live serve instance, nobody polls this cluster".into());
            }
            OwnerOf {
                scale_out: true,
                instance,
            }
        }
        Some(Err(e)) => {
            cs.notes.push(format!(
                "scale-out: members unknown ({e}), so the owner too"
            ));
            OwnerOf {
                scale_out: true,
                instance: None,
            }
        }
    };
}

/// Add the coordinator's view to a cluster's status: record, controls, lock holder, and
/// whether the record agrees with reality and what `serve` would do.
fn judge(
    cs: &mut ClusterStatus,
    obs: &Observation,
    st: &Stored,
    policy: &crate::config::Policy,
    now: u64,
) {
    let name = cs.name.clone();
    match &st.holder {
        Ok(h) => {
            cs.lock_holder = h.as_ref().map(|h| HolderView {
                instance: h.instance.clone(),
                host: h.host.clone(),
                pid: h.pid,
                since: rfc3339(h.since),
            })
        }
        Err(e) => cs.problems.push(format!("lock holder unknown: {e}")),
    }
    let controls = match &st.controls {
        Ok(c) => c.clone(),
        Err(e) => {
            cs.problems.push(format!("shared controls unknown: {e}"));
            Controls::default()
        }
    };
    cs.pause = controls.pause_for(&name, now).cloned();
    cs.maintenance = controls
        .maintenance
        .iter()
        .filter(|m| m.cluster == name)
        .cloned()
        .collect();
    if let Some(sw) = controls.switchover_for(&name) {
        cs.scheduled_switchover = Some(super::controls::switchover_json(sw, now));
        match sw.state(now) {
            controls::ScheduleState::Due if cs.pause.is_some() => cs.notes.push(format!(
                "scheduled switchover held: the cluster is paused ({})",
                cs.pause
                    .as_ref()
                    .map(|p| p.reason.as_str())
                    .unwrap_or_default()
            )),
            controls::ScheduleState::Expired => cs.notes.push(format!(
                "scheduled {} expired (more than {} s late) and will not run",
                sw.describe(),
                sw.max_delay_secs
            )),
            _ => {}
        }
    }
    for m in controls.expired_maintenance(now) {
        if m.cluster == name {
            cs.notes.push(format!(
                "maintenance {} of {} expired at {} and was not cleared",
                m.mode.as_str(),
                m.node,
                m.until.map(rfc3339).unwrap_or_default()
            ));
        }
    }
    let record = match &st.record {
        Ok(Some(r)) => r,
        Ok(None) => {
            let plan = decide(&Trigger::Periodic, obs, None, policy, &Gate::default());
            let what = match &plan.action {
                Action::Bootstrap { master, .. } => {
                    format!("serve's next check would record {master} as master (bootstrap)")
                }
                _ => format!("serve would not act: {}", plan.reason),
            };
            cs.problems.push(format!(
                "no topology record: {what}; to record it now: pika-remedy record --cluster {name} --master host:port"
            ));
            cs.serve_would = Some(PlanView {
                action: plan.action.label().to_string(),
                reason: plan.reason.clone(),
            });
            cs.healthy = false;
            return;
        }
        Err(e) => {
            cs.problems.push(format!("record unknown: {e}"));
            cs.healthy = false;
            return;
        }
    };
    cs.record = Some(RecordView::of(record));
    let rec_master = &record.master;
    let mut agrees = true;
    match cs.masters.as_slice() {
        [m] if m == rec_master => {}
        [m] => {
            agrees = false;
            let role = obs
                .node(rec_master)
                .map(|n| match &n.status {
                    Ok(s) => format!("reports role:{}", s.role.as_str()),
                    Err(_) => "is unreachable".to_string(),
                })
                .unwrap_or_else(|| "is not configured".into());
            cs.problems.push(format!(
                "the record names {rec_master} as master (epoch {}), but it {role} and {m} claims master",
                record.epoch
            ));
        }
        _ => agrees = false,
    }
    // What serve's periodic check would do, pause aside: a refusal or an action means it
    // does not accept the cluster as it is.
    let gate = Gate {
        now,
        paused: false,
        last_master_offset: None,
        holds: controls.holds(&name, now),
        cooldown_acked: record
            .last_failover_at
            .is_some_and(|t| controls.acked(&name, t)),
        ..Gate::default()
    };
    let plan: Plan = decide(&Trigger::Periodic, obs, Some(record), policy, &gate);
    match &plan.action {
        Action::NoAction => {}
        Action::Refuse { .. } => {
            agrees = false;
            cs.problems
                .push(format!("serve would refuse to act: {}", plan.reason));
        }
        a => {
            agrees = false;
            cs.problems
                .push(format!("serve would act ({}): {}", a.label(), plan.reason));
        }
    }
    cs.serve_would = Some(PlanView {
        action: plan.action.label().to_string(),
        reason: plan.reason.clone(),
    });
    cs.record_agrees = agrees;
    cs.healthy = cs.problems.is_empty();
}

/// Run the command: the text to print and the exit code.
pub async fn run(loaded: &Loaded, cluster: Option<&str>, json: bool) -> Result<Reply> {
    let report = collect(loaded, cluster).await?;
    let text = if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render_table(&report)
    };
    Ok(Reply::new(text, report.exit()))
}

/// `status --watch`: print the report every `every` until Ctrl-C / SIGTERM; the last exit code.
pub async fn watch(
    loaded: &Loaded,
    cluster: Option<&str>,
    json: bool,
    every: std::time::Duration,
) -> Result<Reply> {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stdout().is_terminal();
    loop {
        let reply = run(loaded, cluster, json).await?;
        {
            let mut out = std::io::stdout().lock();
            if tty && !json {
                // Clear the screen and home the cursor.
                let _ = write!(out, "\x1b[2J\x1b[H");
            }
            let _ = write!(out, "{}", reply.text);
            let _ = out.flush();
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(Reply::new(String::new(), reply.exit)),
        }
    }
}

/// Pure: one observation → the cluster's status lines, problems and notes.
pub fn cluster_status(obs: &Observation, paused: bool) -> ClusterStatus {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let masters: Vec<Addr> = obs.claiming_master().into_iter().cloned().collect();
    let rows: Vec<NodeRow> = obs
        .nodes
        .iter()
        .map(|n| node_row(obs, n, &masters, &mut problems, &mut notes))
        .collect();
    match masters.len() {
        0 => problems.push("no reachable node reports role:master".into()),
        1 => {}
        k => problems.push(format!(
            "{k} nodes report role:master: {}",
            masters
                .iter()
                .map(Addr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    if masters.len() == 1
        && obs
            .nodes
            .iter()
            .any(|n| matches!(&n.status, Ok(s) if s.role == Role::MasterSlave))
    {
        notes.push("chained replication (a replica has replicas)".into());
    }
    ClusterStatus {
        name: obs.cluster.clone(),
        paused,
        healthy: problems.is_empty(),
        masters,
        problems,
        notes,
        nodes: rows,
        record: None,
        pause: None,
        maintenance: Vec::new(),
        scheduled_switchover: None,
        lock_holder: None,
        record_agrees: false,
        serve_would: None,
        owner: OwnerOf::default(),
    }
}

/// One node's row; its problems (unreachable) and notes (link, other master) go to the lists.
fn node_row(
    obs: &Observation,
    n: &NodeObservation,
    masters: &[Addr],
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> NodeRow {
    let mut row = NodeRow {
        addr: n.addr.clone(),
        reachable: n.status.is_ok(),
        error: n.status.as_ref().err().cloned(),
        engine: None,
        version: None,
        role: None,
        master: None,
        link: None,
        offset: None,
        lag_bytes: None,
        eligible: None,
        priority: n.priority,
        never_promote: n.never_promote,
        connected_replicas: None,
    };
    match &n.status {
        Err(e) => problems.push(format!("{} is unreachable: {e}", n.addr)),
        Ok(s) => {
            row.engine = Some(s.engine);
            row.version = s.version.clone();
            row.role = Some(s.role.as_str().to_string());
            row.master = s.master.clone();
            row.link = s.link;
            row.offset = s.offset;
            row.lag_bytes = obs.lag_of(&n.addr, s);
            row.eligible = s.eligible;
            row.connected_replicas = Some(s.connected_replicas);
            if s.role.is_replica() {
                if s.link != Some(LinkState::Up) {
                    let link = s.link.map(LinkState::as_str).unwrap_or("unknown");
                    notes.push(format!("{}: replication link is {link}", n.addr));
                }
                if let (Some(m), [only]) = (&s.master, masters) {
                    if m != only {
                        notes.push(format!("{} follows {m}, not the master {only}", n.addr));
                    }
                }
            }
        }
    }
    row
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_else(|| "-".into())
}

/// Human-readable rendering: one block per cluster, a header line, a table, then problems/notes.
pub fn render_table(report: &StatusReport) -> String {
    let mut out = String::new();
    for c in &report.clusters {
        let state = if c.healthy { "OK" } else { "ATTENTION" };
        let master = match c.masters.as_slice() {
            [m] => format!("master {m}"),
            [] => "no master".into(),
            ms => format!("{} masters", ms.len()),
        };
        let paused = if c.paused { ", paused" } else { "" };
        out.push_str(&format!("cluster {}: {state} ({master}{paused})\n", c.name));
        match &c.record {
            Some(r) => out.push_str(&format!(
                "  record: master {} epoch {} updated {}{}{}\n",
                r.master,
                r.epoch,
                r.updated,
                r.last_failover
                    .as_ref()
                    .map(|t| format!(", last automatic failover {t}"))
                    .unwrap_or_default(),
                if c.record_agrees {
                    ", agrees with the nodes"
                } else {
                    ", DISAGREES with the nodes"
                }
            )),
            None => out.push_str("  record: none\n"),
        }
        if let Some(p) = &c.pause {
            out.push_str(&format!(
                "  paused: {} by {} since {}{}\n",
                p.reason,
                p.who,
                rfc3339(p.since),
                p.until
                    .map(|u| format!(" until {}", rfc3339(u)))
                    .unwrap_or_default()
            ));
        }
        for m in &c.maintenance {
            out.push_str(&format!(
                "  maintenance: {} {}: {} (by {}{})\n",
                m.node,
                m.mode.as_str(),
                m.reason,
                m.who,
                m.until
                    .map(|u| format!(", until {}", rfc3339(u)))
                    .unwrap_or_default()
            ));
        }
        if let Some(sw) = &c.scheduled_switchover {
            if let Ok(sw) = serde_json::from_value::<controls::ScheduledSwitchover>(sw.clone()) {
                out.push_str(&format!(
                    "  scheduled: {}\n",
                    super::controls::switchover_text(&sw, now_unix())
                ));
            }
        }
        out.push_str(&format!(
            "  lock: {}\n",
            c.lock_holder
                .as_ref()
                .map(|h| format!(
                    "held by {} (host {}, pid {}) since {}",
                    h.instance, h.host, h.pid, h.since
                ))
                .unwrap_or_else(|| "free".into())
        ));
        out.push_str(&format!(
            "  polled by: {}\n",
            match (&c.owner, &report.members) {
                (
                    OwnerOf {
                        scale_out: false, ..
                    },
                    _,
                ) => "every serve instance (scale-out off)".to_string(),
                (
                    OwnerOf {
                        instance: Some(i), ..
                    },
                    Some(m),
                ) => format!("{i} (scale-out, {} live members)", m.len()),
                (
                    OwnerOf {
                        instance: Some(i), ..
                    },
                    None,
                ) => format!("{i} (scale-out)"),
                (OwnerOf { instance: None, .. }, Some(_)) =>
                    "nobody (scale-out, no live member)".to_string(),
                (OwnerOf { instance: None, .. }, None) =>
                    "unknown (scale-out, members unreadable)".to_string(),
            }
        ));
        let header = [
            "NODE",
            "REACHABLE",
            "ENGINE",
            "ROLE",
            "MASTER",
            "LINK",
            "OFFSET",
            "LAG",
            "ELIGIBLE",
        ];
        let rows: Vec<[String; 9]> = c
            .nodes
            .iter()
            .map(|n| {
                let engine = match (&n.engine, &n.version) {
                    (Some(e), Some(v)) => format!("{} {v}", e.as_str()),
                    (Some(e), None) => e.as_str().to_string(),
                    _ => "-".into(),
                };
                [
                    n.addr.to_string(),
                    if n.reachable {
                        "yes".into()
                    } else {
                        format!("no ({})", n.error.as_deref().unwrap_or("?"))
                    },
                    engine,
                    opt(&n.role),
                    opt(&n.master),
                    n.link
                        .map(|l| l.as_str().to_string())
                        .unwrap_or_else(|| "-".into()),
                    opt(&n.offset),
                    opt(&n.lag_bytes),
                    opt(&n.eligible),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r.iter()) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: &[String]| {
            let mut l = String::from("  ");
            for (i, (cell, w)) in cells.iter().zip(widths.iter()).enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(cell);
                } else {
                    l.push_str(&format!("{cell:<w$}  "));
                }
            }
            l.trim_end().to_string() + "\n"
        };
        out.push_str(&line(&header.map(String::from)));
        for r in &rows {
            out.push_str(&line(r));
        }
        for p in &c.problems {
            out.push_str(&format!("  problem: {p}\n"));
        }
        for n in &c.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{NodeObservation, NodeStatus, ReplicaLine};

    fn status(role: Role, master: Option<&str>, offset: u64) -> NodeStatus {
        NodeStatus {
            engine: Engine::Redis,
            version: Some("7.0.15".into()),
            role,
            master: master.map(|m| m.parse().unwrap()),
            link: master.map(|_| LinkState::Up),
            db_links: BTreeMap::new(),
            db_offsets: BTreeMap::new(),
            offset: Some(offset),
            replid: None,
            eligible: None,
            priority: None,
            connected_replicas: 0,
            replicas: Vec::new(),
            psync: None,
        }
    }

    fn node(addr: &str, status: Result<NodeStatus, String>) -> NodeObservation {
        NodeObservation {
            addr: addr.parse().unwrap(),
            priority: 100,
            never_promote: false,
            status,
        }
    }

    #[test]
    fn one_master_all_reachable_is_healthy_with_lag() {
        let mut m = status(Role::Master, None, 1000);
        m.connected_replicas = 2;
        m.replicas.push(ReplicaLine {
            ip: "127.0.0.1".into(),
            port: 2,
            state: Some("online".into()),
            offset: Some(900),
            db_lag: BTreeMap::new(),
            lag_bytes: Some(100),
            lag_seconds: Some(0),
        });
        let obs = Observation {
            cluster: "main".into(),
            nodes: vec![
                node("127.0.0.1:1", Ok(m)),
                node(
                    "127.0.0.1:2",
                    Ok(status(Role::Slave, Some("127.0.0.1:1"), 900)),
                ),
                node(
                    "127.0.0.1:3",
                    Ok(status(Role::Slave, Some("127.0.0.1:1"), 700)),
                ),
            ],
        };
        let c = cluster_status(&obs, false);
        assert!(c.healthy, "{c:?}");
        assert_eq!(c.masters, vec!["127.0.0.1:1".parse::<Addr>().unwrap()]);
        assert_eq!(c.nodes[1].lag_bytes, Some(100), "from the replica line");
        assert_eq!(
            c.nodes[2].lag_bytes,
            Some(300),
            "from the offset difference"
        );
        let report = StatusReport {
            ok: true,
            scale_out: false,
            members: None,
            clusters: vec![c],
        };
        assert_eq!(report.exit().code(), 0);
        let t = render_table(&report);
        assert!(
            t.starts_with("cluster main: OK (master 127.0.0.1:1)\n"),
            "{t}"
        );
        assert!(t.contains("NODE"), "{t}");
    }

    #[test]
    fn unreachable_and_two_masters_need_attention() {
        let obs = Observation {
            cluster: "main".into(),
            nodes: vec![
                node("127.0.0.1:1", Ok(status(Role::Master, None, 1))),
                node("127.0.0.1:2", Ok(status(Role::Master, None, 1))),
                node("127.0.0.1:3", Err("connection refused".into())),
            ],
        };
        let c = cluster_status(&obs, false);
        assert!(!c.healthy);
        assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
        assert!(c.problems[0].contains("127.0.0.1:3 is unreachable: connection refused"));
        assert!(c.problems[1].contains("2 nodes report role:master"));
        assert!(!c.nodes[2].reachable);
    }

    #[test]
    fn no_master_is_a_problem_and_link_down_is_a_note() {
        let mut r = status(Role::Slave, Some("127.0.0.1:9"), 1);
        r.link = Some(LinkState::Down);
        let obs = Observation {
            cluster: "main".into(),
            nodes: vec![node("127.0.0.1:1", Ok(r))],
        };
        let c = cluster_status(&obs, true);
        assert_eq!(
            c.problems,
            vec!["no reachable node reports role:master".to_string()]
        );
        assert_eq!(
            c.notes,
            vec!["127.0.0.1:1: replication link is down".to_string()]
        );
        assert!(c.paused);
    }

    #[test]
    fn polled_by_names_the_rendezvous_owner_or_every_instance() {
        let obs = Observation {
            cluster: "main".into(),
            nodes: vec![node("127.0.0.1:1", Ok(status(Role::Master, None, 1)))],
        };
        let members = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let want = crate::service::ownership::owner_of("main", &members)
            .expect("an owner")
            .to_string();
        let mut c = cluster_status(&obs, false);
        owner(&mut c, Some(&Ok(members.clone())));
        assert_eq!(c.owner.instance.as_deref(), Some(want.as_str()));
        let on = StatusReport {
            ok: true,
            scale_out: true,
            members: Some(members),
            clusters: vec![c.clone()],
        };
        let t = render_table(&on);
        assert!(
            t.contains(&format!(
                "  polled by: {want} (scale-out, 3 live members)\n"
            )),
            "{t}"
        );
        owner(&mut c, Some(&Ok(Vec::new())));
        assert_eq!(c.owner.instance, None);
        assert!(
            c.notes.iter().any(|n| n.contains("nobody polls")),
            "{:?}",
            c.notes
        );
        owner(&mut c, None);
        let off = StatusReport {
            ok: true,
            scale_out: false,
            members: None,
            clusters: vec![c],
        };
        assert!(render_table(&off).contains("  polled by: every serve instance (scale-out off)\n"));
    }
}
