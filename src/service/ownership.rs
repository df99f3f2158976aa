//! Scale-out (`service.scale_out`, `docs/scale-out.md`): which `serve` instance polls which
//! cluster.
//!
//! - **Membership** lives in the coordinator: every instance registers under
//!   `<prefix>/_members/<instance id>`, bound to a lease/session of `service.member_ttl`
//!   ([`crate::coord::Coordinator::heartbeat_member`]), renews it every TTL/3 and re-reads the
//!   member list every poll interval (at most TTL/3).
//! - **Ownership** is computed, not stored: the owner of a cluster is the live member with the
//!   highest rendezvous weight `hash(cluster, member)` ([`owner_of`]). Every instance that
//!   sees the same member list computes the same owners, no per-cluster write is needed, and
//!   when a member's lease expires only its own clusters move (each to the member with the
//!   next-highest weight), spread evenly over the survivors.
//! - **What ownership changes:** the poller and the periodic check run only for owned
//!   clusters (so self-triggers too). Webhooks and the API still act on any cluster on any
//!   instance: the per-cluster lock keeps one actor.
//! - **Coordinator away:** the last member list stays in force (this instance keeps polling
//!   its share; actions still need the lock). If this instance's lease expired meanwhile,
//!   the others poll its share too until it is back: double polling, never none.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::coord::Coordinator;
use crate::metrics::Metrics;

/// The rendezvous weight of `member` for `cluster`: FNV-1a 64 over both names (separated by a
/// byte no name contains), then the splitmix64 finaliser to spread it. Stable across builds
/// and platforms (it must agree between instances).
pub fn weight(cluster: &str, member: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in cluster
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0xffu8))
        .chain(member.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The owner of `cluster` among `members` (highest weight; ties by the larger id). `None` if
/// there are no members.
pub fn owner_of<'a>(cluster: &str, members: &'a [String]) -> Option<&'a str> {
    members
        .iter()
        .max_by(|a, b| {
            weight(cluster, a)
                .cmp(&weight(cluster, b))
                .then_with(|| a.cmp(b))
        })
        .map(String::as_str)
}

/// Who polls one cluster, as this instance sees it (`owner` in `GET /v1/clusters` and
/// `GET /v1/clusters/{c}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OwnerView {
    /// `service.scale_out` of this instance.
    pub scale_out: bool,
    /// The instance that polls the cluster: the owner among the live members with scale-out
    /// on, this instance with it off (every instance polls every cluster then). `None` only
    /// where the id is unknown (scale-out off and the service wired without one).
    pub instance: Option<String>,
    /// This instance polls the cluster (always true with scale-out off).
    pub this_instance: bool,
}

/// One live member and its share (`GET /v1/members`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberView {
    pub instance: String,
    pub this_instance: bool,
    /// How many of the configured clusters it polls (rendezvous over the live members).
    pub clusters: usize,
}

/// The membership as this instance sees it (`GET /v1/members`, `scale_out` in
/// `GET /v1/clusters`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MembersView {
    /// `service.scale_out` of this instance.
    pub scale_out: bool,
    /// This instance's id (its member id with scale-out on).
    pub this_instance: Option<String>,
    /// The live members as last read from the coordinator, sorted (this instance always
    /// included); with scale-out off only this instance, owning every cluster.
    pub members: Vec<MemberView>,
    /// Configured clusters, and how many of them this instance polls.
    pub clusters: usize,
    pub owned: usize,
    /// One line for people: who polls what.
    pub message: String,
}

/// This instance's view of the members, and so of the clusters it owns. Cheap to clone
/// (shared).
#[derive(Clone, Debug)]
pub struct Ownership {
    /// `None`: scale-out is off, this instance owns everything.
    me: Option<String>,
    /// This instance's id as shown with scale-out off (`None`: unknown).
    name: Option<String>,
    members: Arc<RwLock<Vec<String>>>,
}

impl Ownership {
    /// Scale-out off: every cluster is owned.
    pub fn all() -> Ownership {
        Ownership {
            me: None,
            name: None,
            members: Arc::default(),
        }
    }

    /// Scale-out off, for the instance named `instance` (shown in the views).
    pub fn all_as(instance: &str) -> Ownership {
        Ownership {
            name: Some(instance.to_string()),
            ..Ownership::all()
        }
    }

    /// Scale-out on for instance `me`; until the first member list is read, `me` is the only
    /// member (so a lone instance polls everything from its start).
    pub fn shared(me: &str) -> Ownership {
        Ownership {
            me: Some(me.to_string()),
            name: Some(me.to_string()),
            members: Arc::new(RwLock::new(vec![me.to_string()])),
        }
    }

    /// Who polls `cluster`, as this instance sees it.
    pub fn view(&self, cluster: &str) -> OwnerView {
        let Some(me) = &self.me else {
            return OwnerView {
                scale_out: false,
                instance: self.name.clone(),
                this_instance: true,
            };
        };
        let owner = self.owner(cluster);
        OwnerView {
            scale_out: true,
            this_instance: owner.as_deref() == Some(me.as_str()),
            instance: owner,
        }
    }

    /// The members and their shares of `clusters`, as this instance sees them.
    pub fn members_view(&self, clusters: &[String]) -> MembersView {
        let Some(me) = &self.me else {
            return MembersView {
                scale_out: false,
                this_instance: self.name.clone(),
                members: self
                    .name
                    .iter()
                    .map(|n| MemberView {
                        instance: n.clone(),
                        this_instance: true,
                        clusters: clusters.len(),
                    })
                    .collect(),
                clusters: clusters.len(),
                owned: clusters.len(),
                message: "scale-out is off: this instance polls every cluster".into(),
            };
        };
        let members = self.members();
        let mut count = vec![0usize; members.len()];
        for c in clusters {
            if let Some(o) = owner_of(c, &members) {
                if let Some(i) = members.iter().position(|m| m == o) {
                    count[i] += 1;
                }
            }
        }
        let owned = members
            .iter()
            .zip(&count)
            .find(|(m, _)| *m == me)
            .map_or(0, |(_, n)| *n);
        MembersView {
            scale_out: true,
            this_instance: Some(me.clone()),
            message: format!(
                "scale-out: {} live member(s); this instance ({me}) polls {owned} of {} clusters",
                members.len(),
                clusters.len()
            ),
            members: members
                .iter()
                .zip(count)
                .map(|(m, n)| MemberView {
                    instance: m.clone(),
                    this_instance: m == me,
                    clusters: n,
                })
                .collect(),
            clusters: clusters.len(),
            owned,
        }
    }

    pub fn enabled(&self) -> bool {
        self.me.is_some()
    }

    pub fn me(&self) -> Option<&str> {
        self.me.as_deref()
    }

    /// Does this instance poll `cluster`?
    pub fn owns(&self, cluster: &str) -> bool {
        let Some(me) = &self.me else { return true };
        let m = self.members.read().unwrap_or_else(|p| p.into_inner());
        owner_of(cluster, &m) == Some(me.as_str())
    }

    /// The instance that polls `cluster`, as this instance sees it (`None` with scale-out off).
    pub fn owner(&self, cluster: &str) -> Option<String> {
        self.me.as_ref()?;
        let m = self.members.read().unwrap_or_else(|p| p.into_inner());
        owner_of(cluster, &m).map(str::to_string)
    }

    /// The live members as last read (this instance always included).
    pub fn members(&self) -> Vec<String> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A new member list (this instance is added if missing: it is alive, whatever the store
    /// says this instant). Returns true if it changed.
    pub fn set_members(&self, mut members: Vec<String>) -> bool {
        let Some(me) = &self.me else { return false };
        if !members.contains(me) {
            members.push(me.clone());
        }
        members.sort();
        members.dedup();
        let mut m = self.members.write().unwrap_or_else(|p| p.into_inner());
        if *m == members {
            return false;
        }
        *m = members;
        true
    }
}

/// Timing of the membership loop.
#[derive(Clone, Copy, Debug)]
pub struct MemberTiming {
    /// Registration TTL (`service.member_ttl`).
    pub ttl: Duration,
    /// How often the member list is re-read (the poll interval, at most `ttl / 3`).
    pub refresh: Duration,
}

impl MemberTiming {
    pub fn new(ttl: Duration, poll_interval: Duration) -> MemberTiming {
        MemberTiming {
            ttl,
            refresh: poll_interval.min(ttl / 3).max(Duration::from_millis(100)),
        }
    }

    /// Time between heartbeats (renewals): a third of the TTL.
    pub fn heartbeat(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(100))
    }
}

/// Called after every change of the owned set with the clusters this instance stopped owning.
pub type OnRelease = Arc<dyn Fn(&[String]) + Send + Sync>;

/// Where the membership loop reports: the configured clusters, their ownership metrics, and
/// what to do with the clusters this instance stops owning.
pub struct MemberSink {
    pub clusters: Vec<String>,
    pub metrics: Arc<Metrics>,
    pub on_release: OnRelease,
}

/// Keep this instance registered and `own` up to date until `stop`; deregister on the way out.
/// `first_round` is sent after the first heartbeat and member read (well or not).
pub async fn membership_loop<C: Coordinator>(
    coord: Arc<C>,
    own: Ownership,
    timing: MemberTiming,
    sink: MemberSink,
    first_round: tokio::sync::oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let MemberSink {
        clusters,
        metrics,
        on_release,
    } = sink;
    let mut first_round = Some(first_round);
    let Some(me) = own.me().map(str::to_string) else {
        return;
    };
    let mut token: Option<String> = None;
    let mut last_beat: Option<tokio::time::Instant> = None;
    let mut owned: Vec<bool> = clusters.iter().map(|c| own.owns(c)).collect();
    metrics.ownership(&clusters, &owned, own.members().len());
    loop {
        let due = last_beat.is_none_or(|t| t.elapsed() >= timing.heartbeat());
        if due {
            match coord
                .heartbeat_member(&me, timing.ttl, token.as_deref())
                .await
            {
                Ok(t) => {
                    if token.as_deref() != Some(t.as_str()) {
                        info!(member = %me, ttl = ?timing.ttl, "registered as a scale-out member");
                    }
                    token = Some(t);
                    last_beat = Some(tokio::time::Instant::now());
                }
                Err(e) => {
                    warn!(member = %me, error = %e, "scale-out: membership heartbeat failed; keeping the last member list");
                    // Retry at the next refresh, not a whole heartbeat later.
                    last_beat = None;
                }
            }
        }
        match coord.members().await {
            Ok(list) => {
                if own.set_members(list) {
                    let now: Vec<bool> = clusters.iter().map(|c| own.owns(c)).collect();
                    let released: Vec<String> = clusters
                        .iter()
                        .zip(owned.iter().zip(&now))
                        .filter(|(_, (was, is))| **was && !**is)
                        .map(|(c, _)| c.clone())
                        .collect();
                    let count = now.iter().filter(|o| **o).count();
                    info!(
                        members = %own.members().join(","),
                        owned = count,
                        released = released.len(),
                        "scale-out: member list changed"
                    );
                    owned = now;
                    metrics.ownership(&clusters, &owned, own.members().len());
                    if !released.is_empty() {
                        on_release(&released);
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "scale-out: cannot list the members; keeping the last list");
            }
        }
        // The first heartbeat and read are done (well or not): the poller may start.
        if let Some(tx) = first_round.take() {
            let _ = tx.send(());
        }
        tokio::select! {
            _ = tokio::time::sleep(timing.refresh) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    if let Some(t) = token {
        // Hand the share over now rather than after the TTL.
        match tokio::time::timeout(Duration::from_secs(2), coord.leave_members(&me, &t)).await {
            Ok(Ok(())) => info!(member = %me, "left the scale-out members"),
            _ => warn!(member = %me, "could not deregister; the registration expires by its TTL"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: u64 = 10_642_479_900_064_976_237;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("instance-{i}")).collect()
    }

    #[test]
    fn every_cluster_has_one_owner_and_shares_are_even() {
        let m = members(3);
        let mut count = [0usize; 3];
        for c in 0..3000 {
            let o = owner_of(&format!("cluster-{c}"), &m).expect("an owner");
            let i = m.iter().position(|x| x == o).expect("a member");
            count[i] += 1;
        }
        for c in count {
            assert!((800..1200).contains(&c), "uneven shares: {count:?}");
        }
    }

    #[test]
    fn only_the_dead_members_clusters_move() {
        let all = members(3);
        let survivors: Vec<String> = all.iter().filter(|m| *m != "instance-1").cloned().collect();
        for c in 0..1000 {
            let name = format!("c{c}");
            let before = owner_of(&name, &all).expect("owner");
            let after = owner_of(&name, &survivors).expect("owner");
            if before != "instance-1" {
                assert_eq!(before, after, "{name} moved though its owner lives");
            }
        }
    }

    #[test]
    fn the_weight_is_stable() {
        // Instances built by different compilers must agree: pin the values.
        assert_eq!(weight("cluster-1", "instance-0"), PINNED);
        assert_ne!(weight("ab", ""), weight("a", "b"));
    }

    #[test]
    fn views_name_the_owner_and_the_shares() {
        let off = Ownership::all_as("solo");
        let v = off.view("x");
        assert_eq!(
            (v.scale_out, v.instance.as_deref(), v.this_instance),
            (false, Some("solo"), true)
        );
        let cl: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
        let mv = off.members_view(&cl);
        assert_eq!((mv.owned, mv.members.len()), (30, 1));
        assert!(mv.message.contains("polls every cluster"), "{}", mv.message);

        let m = members(3);
        let on = Ownership::shared("instance-1");
        on.set_members(m.clone());
        let mv = on.members_view(&cl);
        assert_eq!(mv.members.iter().map(|x| x.clusters).sum::<usize>(), 30);
        for c in &cl {
            let v = on.view(c);
            let want = owner_of(c, &m).map(str::to_string);
            assert_eq!(v.instance, want, "{c}");
            assert_eq!(v.this_instance, want.as_deref() == Some("instance-1"));
        }
        let mine = cl.iter().filter(|c| on.view(c).this_instance).count();
        assert_eq!(mv.owned, mine);
        assert!(mv.members[1].this_instance && !mv.members[0].this_instance);
    }

    #[test]
    fn off_owns_everything_and_alone_owns_everything() {
        assert!(Ownership::all().owns("x"));
        let o = Ownership::shared("me");
        assert!(o.owns("x"));
        assert!(!o.set_members(vec!["me".into()]));
        assert!(o.set_members(vec!["other".into()]));
        assert_eq!(o.members(), vec!["me".to_string(), "other".to_string()]);
    }
}
