//! The steps that wait for a node: follow (with its one retry), catch-up and promote, and the
//! bounded poll they share. What they send is what [`Step::wire`](crate::decide::Step::wire)
//! lists for them.

use std::time::{Duration, Instant};

use super::exec::{Exec, StepError};
use crate::coord::Coordinator;
use crate::decide::replid_conflict;
use crate::model::{Addr, Engine, NodeStatus, Role};
use crate::node::{NodeError, Nodes};

/// The first pause of a bounded wait between two INFO polls; it doubles up to [`POLL_EVERY`].
/// On loopback a link comes up or a role changes within milliseconds, so a fixed 100 ms poll
/// was almost all of a step's time.
const FIRST_POLL_AFTER: Duration = Duration::from_millis(5);
/// The longest pause between two polls of a bounded wait.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Failed probes in a row after which a wait takes the node it depends on for gone...
const GONE_AFTER: u32 = 3;
/// ... provided the first of them is at least this old (the fast first polls must not turn a
/// blip of a few milliseconds into "gone").
const GONE_MIN: Duration = Duration::from_millis(200);

/// The pauses of a bounded wait: [`FIRST_POLL_AFTER`], doubling up to [`POLL_EVERY`].
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(FIRST_POLL_AFTER)
    }

    /// The next pause, and the one after it doubled (at most [`POLL_EVERY`]).
    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(POLL_EVERY);
        now
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.next()).await;
    }
}

/// Counts failed probes in a row of the node a wait depends on.
#[derive(Default)]
struct Misses {
    count: u32,
    first: Option<Instant>,
}

impl Misses {
    /// `Some(why)` once [`GONE_AFTER`] probes of `who` failed in a row over at least
    /// [`GONE_MIN`].
    fn see(&mut self, who: &Addr, probe: &Result<NodeStatus, NodeError>) -> Option<String> {
        match probe {
            Ok(_) => {
                *self = Misses::default();
                None
            }
            Err(e) => {
                self.count += 1;
                let first = *self.first.get_or_insert_with(Instant::now);
                (self.count >= GONE_AFTER && first.elapsed() >= GONE_MIN).then(|| {
                    format!(
                        "{who} stopped answering ({e}, {} probes in a row)",
                        self.count
                    )
                })
            }
        }
    }
}

/// Why a bounded wait ended without its condition.
enum WaitEnd {
    Timeout,
    /// The watched node stopped answering (the text says which, how and when).
    Gone(String),
}

impl<N: Nodes, C: Coordinator> Exec<'_, '_, N, C> {
    /// Wait (bounded by `switchover_pause`) until `node`'s offset reaches `of`'s; `of`
    /// stopping to answer ends the plan (`ClusterChanged`).
    pub(super) async fn catch_up(&self, node: &Addr, of: &Addr) -> Result<String, StepError> {
        let nodes = self.ctx.nodes;
        let p = self.ctx.policy;
        let t = Instant::now();
        let deadline = t + p.switchover_pause;
        let mut misses = Misses::default();
        let mut backoff = Backoff::new();
        loop {
            let (a, b) = tokio::join!(nodes.status(node), nodes.status(of));
            if let (Ok(a), Ok(b)) = (&a, &b) {
                if let (Some(x), Some(y)) = (a.offset, b.offset) {
                    if x >= y {
                        return Ok(format!(
                            "offset {x} >= {y} after {:.1}s",
                            t.elapsed().as_secs_f64()
                        ));
                    }
                }
            }
            if let Some(why) = misses.see(of, &b) {
                return Err(StepError::ClusterChanged(why));
            }
            if Instant::now() >= deadline {
                return Err(StepError::Timeout(format!(
                    "{node} did not catch up with {of} within {}",
                    humantime::format_duration(p.switchover_pause)
                )));
            }
            super::waiting(
                &format!("{node} to catch up with {of}"),
                t.elapsed(),
                p.switchover_pause,
            );
            backoff.pause().await;
        }
    }

    /// `SLAVEOF NO ONE`, then poll until the node reports master (bounded).
    pub(super) async fn promote(&self, node: &Addr) -> Result<String, StepError> {
        let p = self.ctx.policy;
        self.fence().await?;
        self.ctx
            .nodes
            .promote(node)
            .await
            .map_err(StepError::Node)?;
        let waited = self
            .wait(
                &format!("{node} to report role master"),
                node,
                p.promote_timeout,
                None,
                |s| s.role == Role::Master,
            )
            .await
            .map_err(|_| {
                StepError::Timeout(format!(
                    "{node} not master within {}",
                    humantime::format_duration(p.promote_timeout)
                ))
            })?;
        Ok(format!("role master after {waited:.1}s"))
    }

    /// Poll a node until `pred` holds, bounded, a few milliseconds after the command first and
    /// backing off to [`POLL_EVERY`] ([`Backoff`]). Returns seconds waited. With `watch`, the node
    /// it depends on (the master it was told to follow, the master it catches up with) is
    /// probed alongside: after [`GONE_AFTER`] failed probes in a row the wait ends early, so a
    /// plan never sits out a long bound behind a master that has died meanwhile.
    async fn wait(
        &self,
        what: &str,
        node: &Addr,
        bound: Duration,
        watch: Option<&Addr>,
        pred: impl Fn(&NodeStatus) -> bool,
    ) -> Result<f64, WaitEnd> {
        let t = Instant::now();
        let mut misses = Misses::default();
        let mut backoff = Backoff::new();
        loop {
            let (me, other) = tokio::join!(self.ctx.nodes.status(node), async {
                match watch {
                    Some(m) => Some(self.ctx.nodes.status(m).await),
                    None => None,
                }
            });
            if let Ok(s) = me {
                if pred(&s) {
                    return Ok(t.elapsed().as_secs_f64());
                }
            }
            if let (Some(m), Some(r)) = (watch, other) {
                if let Some(why) = misses.see(m, &r) {
                    return Err(WaitEnd::Gone(format!(
                        "{why} after {:.1}s",
                        t.elapsed().as_secs_f64()
                    )));
                }
            }
            if t.elapsed() >= bound {
                return Err(WaitEnd::Timeout);
            }
            super::waiting(what, t.elapsed(), bound);
            backoff.pause().await;
        }
    }

    /// Make `node` follow `master`, verified by `master_link_status:up`. Sends exactly the
    /// step's commands ([`Step::wire`]); the one retry on a link timeout is shown in the plan too.
    pub(super) async fn follow(
        &self,
        node: &Addr,
        master: &Addr,
        force: bool,
        engine: Engine,
        reset: bool,
        full_sync: bool,
    ) -> Result<String, StepError> {
        let nodes = self.ctx.nodes;
        let current = nodes.status(node).await.map_err(StepError::Node)?;
        if current.follows_with_link_up(master) && !force {
            return Ok("already following with link up".into());
        }
        let mut notes = Vec::new();
        // Pika refuses SLAVEOF while it has connected slaves; the plan moved every configured
        // one first. One still attached means the cluster changed since the plan was made.
        if engine == Engine::Pika && current.connected_replicas > 0 {
            if let Some(child) = self.attached_child(node, master).await {
                return Err(StepError::ClusterChanged(format!(
                    "{child} still follows {node}, which the plan did not move"
                )));
            }
        }
        if self.ctx.has_password {
            self.fence().await?;
            nodes.set_masterauth(node).await.map_err(StepError::Node)?;
        }
        if reset {
            self.fence().await?;
            nodes.promote(node).await.map_err(StepError::Node)?;
        }
        // A Pika full sync is served from the master's last dump: make it a fresh one
        // (Step::refreshes_dump).
        let refresh = engine == Engine::Pika && (force || full_sync);
        if refresh {
            self.refresh_dump(master, &mut notes).await?;
        }
        self.slaveof_with_detach_retry(node, master, force).await?;
        let t = Instant::now();
        if let Some(w) = self.link_up(node, master).await? {
            notes.push(format!("link up after {w:.1}s"));
            return Ok(notes.join("; "));
        }
        // A full sync that is still copying is not restarted: the plan's WaitSynced (or the
        // next reconcile) waits for its end.
        if full_sync && self.syncing(node, master).await {
            notes.push(format!(
                "full sync still under way after {:.1}s; not restarted",
                t.elapsed().as_secs_f64()
            ));
            return Ok(notes.join("; "));
        }
        // A ReplicationID conflict is refused for good, forced or not: say so (typed) instead
        // of retrying; the next reconcile plans the clear (a full sync).
        if engine == Engine::Pika {
            if let Some(e) = self.replid_mismatch(node, master).await {
                return Err(e);
            }
        }
        // Pika never retries a failed handshake: re-issue the whole sequence once, forced on Pika.
        let retry_force = engine == Engine::Pika;
        notes.push(format!(
            "link not up after {:.1}s; retrying with SLAVEOF NO ONE + SLAVEOF{}",
            t.elapsed().as_secs_f64(),
            if retry_force { " force" } else { "" }
        ));
        if retry_force && !refresh {
            self.refresh_dump(master, &mut notes).await?;
        }
        self.fence().await?;
        nodes.promote(node).await.map_err(StepError::Node)?;
        self.slaveof_with_detach_retry(node, master, retry_force)
            .await?;
        if let Some(w) = self.link_up(node, master).await? {
            notes.push(format!("link up after {w:.1}s"));
            return Ok(notes.join("; "));
        }
        if full_sync && self.syncing(node, master).await {
            notes.push("full sync still under way; not restarted".into());
            return Ok(notes.join("; "));
        }
        Err(StepError::Timeout(format!(
            "{node} link to {master} not up after retry ({}); {}",
            self.state_of(node).await,
            notes.join("; ")
        )))
    }

    /// `BGSAVE` on the Pika `master` and the wait for its end (bounded by
    /// `policy.snapshot_timeout`) before a full sync from it. A node that cannot (unsupported)
    /// is left as is; a failed save is noted and the follow goes on: the dump may well be
    /// current, and the link wait says whether the sync worked.
    async fn refresh_dump(&self, master: &Addr, notes: &mut Vec<String>) -> Result<(), StepError> {
        self.fence().await?;
        let timeout = self.ctx.policy.snapshot_timeout;
        match self
            .ctx
            .nodes
            .refresh_dump(master, Engine::Pika, timeout)
            .await
        {
            Ok(()) => notes.push(format!("fresh dump on {master}")),
            Err(NodeError::Unsupported(_)) => {}
            Err(e) => notes.push(format!("dump refresh on {master} failed: {e}")),
        }
        Ok(())
    }

    /// `SLAVEOF NO ONE` (Pika answers `READONLY` to `CLEARREPLICATIONID` on a slave), then
    /// `CLEARREPLICATIONID`, retried while the node still answers `READONLY` (bounded), then
    /// checked: the node must show no ReplicationID any more.
    pub(super) async fn clear_replid(
        &self,
        node: &Addr,
        master: &Addr,
        why: &str,
    ) -> Result<String, StepError> {
        const ATTEMPTS: u32 = 20;
        let nodes = self.ctx.nodes;
        self.fence().await?;
        nodes.promote(node).await.map_err(StepError::Node)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.fence().await?;
            match nodes.clear_replication_id(node).await {
                Ok(()) => break,
                Err(NodeError::ReadOnly(_)) if attempt < ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(StepError::Node(e)),
            }
        }
        let s = nodes.status(node).await.map_err(StepError::Node)?;
        if let Some(have) = s.replid {
            return Err(StepError::ReplidMismatch {
                node: node.clone(),
                master: master.clone(),
                have,
                want: "(none, after CLEARREPLICATIONID)".into(),
            });
        }
        Ok(format!(
            "replication id cleared ({why}); the follow that comes next is a full sync from {master}"
        ))
    }

    /// The typed error when `node` and `master` both have a ReplicationID right now and they
    /// differ. (A master without one yet is left to the retry: it may just not have minted it.)
    async fn replid_mismatch(&self, node: &Addr, master: &Addr) -> Option<StepError> {
        let (me, m) = tokio::join!(self.ctx.nodes.status(node), self.ctx.nodes.status(master));
        let (me, m) = (me.ok()?, m.ok()?);
        let want = m.replid.clone()?;
        replid_conflict(&me, &m)?;
        Some(StepError::ReplidMismatch {
            node: node.clone(),
            master: master.clone(),
            have: me.replid.unwrap_or_default(),
            want,
        })
    }

    /// `node` follows `master` and is in full sync right now.
    async fn syncing(&self, node: &Addr, master: &Addr) -> bool {
        self.ctx.nodes.status(node).await.is_ok_and(|s| {
            s.role.is_replica()
                && s.master.as_ref() == Some(master)
                && crate::decide::in_full_sync(&s)
        })
    }

    /// The full-sync budget's wait ([`Step::WaitSynced`](crate::decide::Step::WaitSynced)):
    /// `node`'s link to `master` up, bounded by `full_sync_timeout`; `master` stopping to
    /// answer ends the plan.
    pub(super) async fn full_sync_done(
        &self,
        node: &Addr,
        master: &Addr,
    ) -> Result<String, StepError> {
        let bound = self.ctx.policy.full_sync_timeout;
        match self
            .wait(
                &format!("{node} full sync from {master}"),
                node,
                bound,
                Some(master),
                |s| s.follows_with_link_up(master),
            )
            .await
        {
            Ok(w) => Ok(format!("full sync done, link up after {w:.1}s")),
            Err(WaitEnd::Gone(why)) => Err(StepError::ClusterChanged(why)),
            Err(WaitEnd::Timeout) => Err(StepError::Timeout(format!(
                "{node}'s full sync from {master} not done within {} ({}); the next full sync waits for the next reconcile",
                humantime::format_duration(bound),
                self.state_of(node).await
            ))),
        }
    }

    /// Wait for `node`'s link to `master` (bounded by `link_timeout`): `Some(seconds)` when
    /// up, `None` on timeout; `master` stopping to answer ends the plan (`ClusterChanged`).
    async fn link_up(&self, node: &Addr, master: &Addr) -> Result<Option<f64>, StepError> {
        let bound = self.ctx.policy.link_timeout;
        match self
            .wait(
                &format!("{node} link up to {master}"),
                node,
                bound,
                Some(master),
                |s| s.follows_with_link_up(master),
            )
            .await
        {
            Ok(w) => Ok(Some(w)),
            Err(WaitEnd::Gone(why)) => Err(StepError::ClusterChanged(why)),
            Err(WaitEnd::Timeout) => Ok(None),
        }
    }

    /// One line of a node's replication state, for a failure message.
    async fn state_of(&self, node: &Addr) -> String {
        match self.ctx.nodes.status(node).await {
            Ok(s) => format!(
                "role={} master={} link={}",
                s.role.as_str(),
                s.master
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.link.map(|l| l.as_str()).unwrap_or("-")
            ),
            Err(e) => format!("unreachable: {e}"),
        }
    }

    /// A configured node (other than `master`) that reports following `node` right now.
    async fn attached_child(&self, node: &Addr, master: &Addr) -> Option<Addr> {
        for n in &self.ctx.cluster.nodes {
            if &n.addr == node || &n.addr == master {
                continue;
            }
            if let Ok(s) = self.ctx.nodes.status(&n.addr).await {
                if s.role.is_replica() && s.master.as_ref() == Some(node) {
                    return Some(n.addr.clone());
                }
            }
        }
        None
    }

    /// `SLAVEOF`, retrying Pika's transient `already master of others` (a stale slave entry
    /// lingers 1–4 s after its slave left) with backoff, bounded by `detach_timeout`.
    async fn slaveof_with_detach_retry(
        &self,
        node: &Addr,
        master: &Addr,
        force: bool,
    ) -> Result<(), StepError> {
        let t = Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            self.fence().await?;
            match self.ctx.nodes.follow(node, master, force).await {
                Ok(()) => return Ok(()),
                // A connection lost before the reply (the real Pika's asynchronous `CLIENT KILL
                // TYPE normal` before this step can close one opened just after it): the same
                // `SLAVEOF` again is safe (to the same master it is a no-op) and says whether
                // it was taken.
                Err(e @ (NodeError::MasterOfOthers(_) | NodeError::Io(_))) => {
                    if t.elapsed() >= self.ctx.policy.detach_timeout {
                        return Err(StepError::Node(e));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(StepError::Node(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_poll_after_a_few_milliseconds_then_back_off_to_the_cap() {
        let mut b = Backoff::new();
        let got: Vec<u128> = (0..7).map(|_| b.next().as_millis()).collect();
        assert_eq!(got, vec![5, 10, 20, 40, 80, 100, 100]);
    }

    #[test]
    fn a_watched_node_is_gone_only_after_three_misses_spread_over_the_minimum() {
        let who: Addr = "m:1".parse().expect("addr");
        let miss: Result<NodeStatus, NodeError> = Err(NodeError::Refused);
        let mut m = Misses::default();
        // Three quick misses: not yet (the first poll is a few ms after the command).
        for _ in 0..3 {
            assert_eq!(m.see(&who, &miss), None);
        }
        // The first miss long enough ago: gone.
        m.first = Instant::now().checked_sub(GONE_MIN);
        let why = m.see(&who, &miss).expect("gone");
        assert!(why.contains("4 probes in a row"), "{why}");
        // An answer resets it.
        let ok = crate::node::info::parse("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n")
            .map_err(|e| NodeError::Protocol(e.to_string()));
        assert_eq!(m.see(&who, &ok), None);
        assert_eq!((m.count, m.first), (0, None));
    }
}
