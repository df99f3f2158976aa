//! The `Coordinator` seam: one failover lock per cluster with a fencing token, and the
//! recorded topology with compare-and-set.
//!
//! # Contract (every backend; checked by `tests/support/contract.rs`)
//! - **Atomic:** `try_lock` (at most one live lease per cluster across all instances),
//!   `write_record` (applies only if the stored version still equals `expected`).
//! - **Fencing:** a `Lease` carries a token that changes on every acquisition. `still_held`
//!   answers from the store (a consistent read), never from local memory alone: `Ok(false)`
//!   once the lease expired, was released, or another instance took the lock.
//! - **Unreachable store** is `Err(CoordError::Unreachable)` with `is_retryable() == true`,
//!   never a silent `false` or `None`.
//! - **TTL:** a lease not renewed is lost after its TTL (Consul: up to 2×TTL, documented).
//!   Backends renew in the background while the lease is alive; `release` stops that.
//! - `read_record` of a cluster never written is `Ok(None)`; `write_record(.., None)` creates
//!   only if absent.
//! - **Controls:** `read_controls`/`write_controls` keep one JSON document (pauses,
//!   maintenance, acks) with the same compare-and-set semantics as the record.
//! - **Own locks:** a backend knows the locks it took for this process (`held_locks`). A lease
//!   whose release failed, that was dropped without `release`, or whose lock request failed
//!   half-way is this process's *orphan*: a background task retries its release until it
//!   succeeds or the lease is gone, and `try_lock` releases it before taking the lock again,
//!   so an instance never answers "lock held" to itself after a store outage.
//! - **Membership** (scale-out, see `docs/scale-out.md`): `heartbeat_member` registers an
//!   instance under `<prefix>/_members/<id>`, bound to a lease/session of the given TTL, and
//!   renews it on the next call (registering again if the registration was lost);
//!   `members` lists the live registrations, sorted; `leave_members` removes one. A member
//!   that stops heartbeating drops out of the list after its TTL (Consul: up to 2×TTL).

pub mod consul;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod local;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::controls::Controls;
use crate::model::{TopologyRecord, Versioned};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    /// The store could not be reached or did not answer in time. Retrying may help.
    #[error("coordinator unreachable: {0}")]
    Unreachable(String),
    /// The store answered with something we cannot use (bad auth, bad JSON, …).
    #[error("coordinator error: {0}")]
    Backend(String),
}

impl CoordError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, CoordError::Unreachable(_))
    }
}

/// Who holds a lock, as written into the lock value (JSON) so operators and other instances can see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub instance: String,
    pub host: String,
    pub pid: u32,
    /// Unix seconds when the lock was taken.
    pub since: u64,
}

impl Holder {
    /// A lock whose value could not be read as a holder.
    pub fn unknown() -> Holder {
        Holder {
            instance: "unknown".into(),
            host: "unknown".into(),
            pid: 0,
            since: 0,
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (host {}, pid {})",
            self.instance, self.host, self.pid
        )
    }
}

/// A held lock. `token` is the fencing token (Consul `Session`+`LockIndex`, etcd
/// lease id + create revision, local generation); it is opaque to callers.
#[derive(Debug)]
pub struct Lease {
    pub cluster: String,
    pub token: String,
    pub holder: Holder,
    /// Backend state needed to check, renew and release (session id, lease id, renew task…).
    pub(crate) inner: LeaseInner,
}

#[derive(Debug)]
pub(crate) enum LeaseInner {
    /// A coordinator implemented outside this crate (test doubles) keeps its state elsewhere.
    External,
    Local {
        generation: u64,
        /// Stops renewal and frees the lock when the lease is dropped without `release`.
        guard: local::LocalGuard,
    },
    Consul {
        session: String,
        lock_index: u64,
        /// The renewal task; aborted when the lease is released or dropped.
        renew: consul::RenewTask,
    },
    #[cfg(feature = "etcd")]
    Etcd {
        lease_id: i64,
        create_revision: i64,
        /// Aborts the renewal task when dropped.
        keepalive: etcd::KeepAlive,
    },
}

impl Lease {
    /// A lease for a coordinator implemented outside this crate (e.g. a test double), which
    /// keeps its own state keyed by `token`.
    pub fn external(cluster: &str, token: &str, holder: Holder) -> Lease {
        Lease {
            cluster: cluster.to_string(),
            token: token.to_string(),
            holder,
            inner: LeaseInner::External,
        }
    }
}

#[derive(Debug)]
pub enum LockOutcome {
    Acquired(Lease),
    /// Someone else holds it. `holder` is `None` if the value could not be read as a `Holder`.
    HeldBy(Option<Holder>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written; the new version.
    Written(u64),
    /// The stored version was not the expected one; nothing written.
    Conflict,
}

pub trait Coordinator: Send + Sync {
    /// Short backend name for logs and metrics: "local", "consul", "etcd".
    fn kind(&self) -> &'static str;
    /// Take the cluster's failover lock for `ttl`, renewed in the background until released.
    fn try_lock(
        &self,
        cluster: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> impl Future<Output = Result<LockOutcome, CoordError>> + Send;
    /// Is `lease` still the current holder, by a consistent read from the store?
    fn still_held(&self, lease: &Lease) -> impl Future<Output = Result<bool, CoordError>> + Send;
    /// Give the lock up (stops renewal; best effort if the store is down, the TTL then covers it).
    fn release(&self, lease: Lease) -> impl Future<Output = Result<(), CoordError>> + Send;
    fn read_record(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Option<Versioned<TopologyRecord>>, CoordError>> + Send;
    /// The record for the poller (metrics, the master's sighting, self-triggers): the same
    /// answer as [`Coordinator::read_record`] (never an older version than the store holds
    /// when the call starts), but a backend may answer from a cache it can prove current.
    /// `local` checks the record file's identity (inode, size, times) with one `stat`
    /// instead of reading and parsing it on a blocking thread; `etcd` and `consul` answer
    /// from a cache kept by one watch / blocking query on the records' prefix per
    /// coordinator (`RecordCache`): a change by another client is served once its event
    /// arrived (milliseconds), our own CAS at once, and whenever the watch is not known
    /// healthy or an entry is in doubt they read directly. Default: `read_record`. The
    /// reconcile (first look and the look under the lock) always calls `read_record`.
    fn poll_record(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Option<Versioned<TopologyRecord>>, CoordError>> + Send {
        self.read_record(cluster)
    }
    /// Compare-and-set: write only if the stored version equals `expected` (`None` = must not exist).
    fn write_record(
        &self,
        cluster: &str,
        record: &TopologyRecord,
        expected: Option<u64>,
    ) -> impl Future<Output = Result<CasOutcome, CoordError>> + Send;
    /// Append an audit event (JSON) to the store's bounded event list. Default: no-op (the
    /// local backend keeps events in the JSON-lines file only). Best effort.
    fn append_event(
        &self,
        cluster: &str,
        event_json: &str,
    ) -> impl Future<Output = Result<(), CoordError>> + Send {
        let _ = (cluster, event_json);
        async { Ok(()) }
    }
    /// The events `append_event` kept for `cluster`, oldest first (JSON texts). Default: none.
    fn read_events(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<String>, CoordError>> + Send {
        let _ = cluster;
        async { Ok(Vec::new()) }
    }
    /// Does `append_event` keep anything? (The local backend keeps events in the file only.)
    fn keeps_events(&self) -> bool {
        false
    }
    /// Publish node roles for client discovery (the Consul catalog). Default: no-op (etcd and
    /// local clients read the recorded master instead).
    fn publish_roles(
        &self,
        cluster: &str,
        master: &crate::model::Addr,
        replicas: &[crate::model::Addr],
    ) -> impl Future<Output = Result<(), CoordError>> + Send {
        let _ = (cluster, master, replicas);
        async { Ok(()) }
    }
    /// The shared operator controls (pauses, maintenance, acknowledgements; see
    /// [`crate::controls`]): one document for all clusters. `Ok(None)` if never written.
    /// Default (test doubles): none.
    fn read_controls(
        &self,
    ) -> impl Future<Output = Result<Option<Versioned<Controls>>, CoordError>> + Send {
        async { Ok(None) }
    }
    /// Compare-and-set of the controls document, like `write_record` (`None` = must not exist).
    fn write_controls(
        &self,
        controls: &Controls,
        expected: Option<u64>,
    ) -> impl Future<Output = Result<CasOutcome, CoordError>> + Send {
        let _ = (controls, expected);
        async {
            Err(CoordError::Backend(
                "this coordinator does not store controls".into(),
            ))
        }
    }
    /// Who holds the cluster's lock now, read from the store (for `status`); `None` if free.
    /// A holder value that cannot be parsed is reported as instance "unknown".
    /// Default (test doubles): free.
    fn lock_holder(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Option<Holder>, CoordError>> + Send {
        let _ = cluster;
        async { Ok(None) }
    }
    /// Cheap reachability probe for `/readyz` and the `coordinator_up` metric.
    fn ping(&self) -> impl Future<Output = Result<(), CoordError>> + Send;
    /// Register `member` as live for `ttl`, or renew the registration `token` returned by the
    /// previous call (a lost registration is made again). Returns the token for the next call.
    /// Default (test doubles): nothing stored.
    fn heartbeat_member(
        &self,
        member: &str,
        ttl: Duration,
        token: Option<&str>,
    ) -> impl Future<Output = Result<String, CoordError>> + Send {
        let _ = (member, ttl, token);
        async { Ok(String::new()) }
    }
    /// Remove `member`'s registration (`token` from `heartbeat_member`) now instead of after
    /// its TTL. Default: nothing to remove.
    fn leave_members(
        &self,
        member: &str,
        token: &str,
    ) -> impl Future<Output = Result<(), CoordError>> + Send {
        let _ = (member, token);
        async { Ok(()) }
    }
    /// The live members, sorted and without duplicates. Default (test doubles): none (callers
    /// then count only themselves).
    fn members(&self) -> impl Future<Output = Result<Vec<String>, CoordError>> + Send {
        async { Ok(Vec::new()) }
    }
    /// The locks this client holds in the store for this process, from memory (no request):
    /// live leases and leases whose release is not confirmed yet. For `lock_held` metrics.
    fn held_locks(&self) -> Vec<HeldLock> {
        Vec::new()
    }
}

/// Member ids become key and file names: anything but `[A-Za-z0-9._-]` is refused, so a
/// member can never name another key.
pub fn check_member_id(member: &str) -> Result<(), CoordError> {
    let ok = !member.is_empty()
        && member.len() <= 128
        && !member.starts_with('.')
        && member
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(CoordError::Backend(format!(
            "member id {member:?}: use only letters, digits, '.', '-', '_' (at most 128)"
        )))
    }
}

/// One lock this process holds (or may still hold) in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLock {
    pub cluster: String,
    /// Since the lock was taken.
    pub held_for: Duration,
    /// The release failed (or the lease was dropped without one) and is being retried.
    pub release_pending: bool,
}

/// Bookkeeping of the leases one coordinator client took, per cluster: `live` ones (a `Lease`
/// exists) and `orphans` (our lease may still hold the lock in the store but nobody uses it).
/// `K` identifies a lease in the store (etcd lease id, Consul session id).
#[derive(Debug)]
pub(crate) struct LockBook<K> {
    inner: Mutex<HashMap<String, Vec<BookEntry<K>>>>,
}

#[derive(Debug, Clone)]
struct BookEntry<K> {
    key: K,
    since: Instant,
    orphan: bool,
}

impl<K: Clone + PartialEq> LockBook<K> {
    pub(crate) fn new() -> Self {
        LockBook {
            inner: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<BookEntry<K>>>> {
        // Single pushes/removes: a panic while holding it cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lock was taken with lease `key`.
    pub(crate) fn acquired(&self, cluster: &str, key: K) {
        self.map()
            .entry(cluster.to_string())
            .or_default()
            .push(BookEntry {
                key,
                since: Instant::now(),
                orphan: false,
            });
    }

    /// Lease `key` no longer holds anything in the store (released, revoked or expired).
    pub(crate) fn gone(&self, cluster: &str, key: &K) {
        let mut m = self.map();
        if let Some(v) = m.get_mut(cluster) {
            v.retain(|e| &e.key != key);
            if v.is_empty() {
                m.remove(cluster);
            }
        }
    }

    /// Lease `key` may still hold the lock but no `Lease` uses it any more. Returns true if
    /// it was not an orphan before (the caller then starts the retrying release).
    pub(crate) fn orphaned(&self, cluster: &str, key: K) -> bool {
        let mut m = self.map();
        let v = m.entry(cluster.to_string()).or_default();
        match v.iter_mut().find(|e| e.key == key) {
            Some(e) if e.orphan => false,
            Some(e) => {
                e.orphan = true;
                true
            }
            None => {
                v.push(BookEntry {
                    key,
                    since: Instant::now(),
                    orphan: true,
                });
                true
            }
        }
    }

    /// The orphaned leases of `cluster`.
    pub(crate) fn orphans(&self, cluster: &str) -> Vec<K> {
        self.map()
            .get(cluster)
            .map(|v| {
                v.iter()
                    .filter(|e| e.orphan)
                    .map(|e| e.key.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn is_orphan(&self, cluster: &str, key: &K) -> bool {
        self.map()
            .get(cluster)
            .is_some_and(|v| v.iter().any(|e| e.orphan && &e.key == key))
    }

    pub(crate) fn held(&self) -> Vec<HeldLock> {
        let m = self.map();
        let mut out: Vec<HeldLock> = m
            .iter()
            .flat_map(|(c, v)| {
                v.iter().map(move |e| HeldLock {
                    cluster: c.clone(),
                    held_for: e.since.elapsed(),
                    release_pending: e.orphan,
                })
            })
            .collect();
        out.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        out
    }
}

/// A doubling wait: from `first`, twice as long after each wait, at most `max`.
pub(crate) struct Doubling {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Doubling {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Doubling {
            first,
            next: first,
            max,
        }
    }

    /// Start over from `first`.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }
}

/// Backoff of the background release of an orphaned lease: from 200 ms, doubling, at most
/// `ttl / 3` (within 200 ms..5 s); given up after a day (the store then expires the lease by
/// its TTL once it is back, since nobody renews it, and `try_lock` releases it too).
pub(crate) struct ReleaseRetry {
    wait: Doubling,
    deadline: Instant,
}

impl ReleaseRetry {
    pub(crate) fn new(ttl: Duration) -> Self {
        let first = Duration::from_millis(200);
        ReleaseRetry {
            wait: Doubling::new(first, (ttl / 3).clamp(first, Duration::from_secs(5))),
            deadline: Instant::now() + Duration::from_secs(86_400),
        }
    }

    /// Wait before the next attempt; false once the retry gives up.
    pub(crate) async fn wait(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        self.wait.wait().await;
        true
    }
}

/// The configured backend (closed enum dispatch: no trait objects needed).
/// One instance per process, so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum AnyCoord {
    Local(local::Local),
    Consul(consul::Consul),
    #[cfg(feature = "etcd")]
    Etcd(etcd::Etcd),
}

macro_rules! dispatch {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            AnyCoord::Local($c) => $e,
            AnyCoord::Consul($c) => $e,
            #[cfg(feature = "etcd")]
            AnyCoord::Etcd($c) => $e,
        }
    };
}

impl Coordinator for AnyCoord {
    fn kind(&self) -> &'static str {
        dispatch!(self, c => c.kind())
    }
    async fn try_lock(
        &self,
        cluster: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<LockOutcome, CoordError> {
        dispatch!(self, c => c.try_lock(cluster, holder, ttl).await)
    }
    async fn still_held(&self, lease: &Lease) -> Result<bool, CoordError> {
        dispatch!(self, c => c.still_held(lease).await)
    }
    async fn release(&self, lease: Lease) -> Result<(), CoordError> {
        dispatch!(self, c => c.release(lease).await)
    }
    async fn read_record(
        &self,
        cluster: &str,
    ) -> Result<Option<Versioned<TopologyRecord>>, CoordError> {
        dispatch!(self, c => c.read_record(cluster).await)
    }
    async fn poll_record(
        &self,
        cluster: &str,
    ) -> Result<Option<Versioned<TopologyRecord>>, CoordError> {
        dispatch!(self, c => c.poll_record(cluster).await)
    }
    async fn write_record(
        &self,
        cluster: &str,
        record: &TopologyRecord,
        expected: Option<u64>,
    ) -> Result<CasOutcome, CoordError> {
        dispatch!(self, c => c.write_record(cluster, record, expected).await)
    }
    async fn append_event(&self, cluster: &str, event_json: &str) -> Result<(), CoordError> {
        dispatch!(self, c => c.append_event(cluster, event_json).await)
    }
    async fn publish_roles(
        &self,
        cluster: &str,
        master: &crate::model::Addr,
        replicas: &[crate::model::Addr],
    ) -> Result<(), CoordError> {
        dispatch!(self, c => c.publish_roles(cluster, master, replicas).await)
    }
    async fn read_controls(&self) -> Result<Option<Versioned<Controls>>, CoordError> {
        dispatch!(self, c => c.read_controls().await)
    }
    async fn write_controls(
        &self,
        controls: &Controls,
        expected: Option<u64>,
    ) -> Result<CasOutcome, CoordError> {
        dispatch!(self, c => c.write_controls(controls, expected).await)
    }
    async fn read_events(&self, cluster: &str) -> Result<Vec<String>, CoordError> {
        dispatch!(self, c => c.read_events(cluster).await)
    }
    async fn lock_holder(&self, cluster: &str) -> Result<Option<Holder>, CoordError> {
        dispatch!(self, c => c.lock_holder(cluster).await)
    }
    async fn ping(&self) -> Result<(), CoordError> {
        dispatch!(self, c => c.ping().await)
    }
    async fn heartbeat_member(
        &self,
        member: &str,
        ttl: Duration,
        token: Option<&str>,
    ) -> Result<String, CoordError> {
        dispatch!(self, c => c.heartbeat_member(member, ttl, token).await)
    }
    async fn leave_members(&self, member: &str, token: &str) -> Result<(), CoordError> {
        dispatch!(self, c => c.leave_members(member, token).await)
    }
    async fn members(&self) -> Result<Vec<String>, CoordError> {
        dispatch!(self, c => c.members().await)
    }
    fn held_locks(&self) -> Vec<HeldLock> {
        dispatch!(self, c => c.held_locks())
    }
    fn keeps_events(&self) -> bool {
        dispatch!(self, c => c.keeps_events())
    }
}

/// What a watch (etcd) or a blocking query (Consul) tells of one cluster's record.
#[derive(Clone, Debug)]
pub(crate) enum Seen {
    Present(Versioned<TopologyRecord>),
    Absent,
    /// The stored value is not a record we can parse: `poll_record` reads it directly (and
    /// reports the error the way `read_record` does).
    Bad,
}

#[derive(Clone, Debug)]
struct Slot {
    seen: Seen,
    /// The store revision/index at which this state was established (etcd mod_revision or
    /// delete revision, Consul ModifyIndex): a state is replaced only by a newer one.
    at: u64,
}

#[derive(Clone, Copy, Debug)]
struct Doubt {
    /// Cleared once the watch has applied every change up to this revision (a CAS conflict's
    /// store revision); `u64::MAX` when unknown (a write whose outcome is unknown).
    until: u64,
    /// Cleared by a direct read that started after the doubt arose.
    ticket: u64,
}

#[derive(Default, Debug)]
struct CacheState {
    /// The watch is established, has applied an initial full read and has not failed since.
    healthy: bool,
    /// The watch delivers every change after this store revision/index: states established
    /// before it (by a read or write of ours) are not taken, the watch may have missed a
    /// later change.
    base: u64,
    /// Every change up to this store revision/index is applied.
    applied: u64,
    /// Clusters missing here are unknown (`poll_record` reads them directly once), or absent
    /// once `complete`.
    records: HashMap<String, Slot>,
    /// The last answer named every record (Consul's blocking query on the whole prefix).
    complete: bool,
    doubts: HashMap<String, Doubt>,
}

/// The records of all clusters of one coordinator, kept current by ONE watch on the records'
/// prefix (etcd watch, Consul blocking query), for [`Coordinator::poll_record`].
///
/// A cached answer is given only while the watch is known healthy and the cluster's entry is
/// not in doubt; otherwise the caller reads directly. Our own writes update the entry (a
/// written CAS) or put it in doubt (a conflict, an unknown outcome) until the watch caught up
/// or a direct read started after the doubt. Staleness: a change made by another client is
/// served once its watch event arrived (milliseconds on a healthy connection); a broken watch
/// is noticed when its stream fails (at once for a closed connection, within the gRPC/HTTP
/// keep-alive or wait bound for a silent one), and then every poll reads directly.
#[derive(Debug, Default)]
pub(crate) struct RecordCache {
    state: Mutex<CacheState>,
    tickets: std::sync::atomic::AtomicU64,
    /// Direct reads made by `poll_record` (for tests and diagnostics).
    direct_reads: std::sync::atomic::AtomicU64,
    /// Test hook: while set, the watch loop does not take the next change off its stream.
    hold: std::sync::atomic::AtomicBool,
}

impl RecordCache {
    fn st(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // Every update is a single insert/remove/assignment: a panic cannot leave it torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ticket(&self) -> u64 {
        self.tickets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    /// The cached record, or `None` when the caller must read the store itself.
    pub(crate) fn lookup(&self, cluster: &str) -> Option<Option<Versioned<TopologyRecord>>> {
        let mut st = self.st();
        if !st.healthy {
            return None;
        }
        if let Some(d) = st.doubts.get(cluster).copied() {
            if st.applied >= d.until {
                st.doubts.remove(cluster);
            } else {
                return None;
            }
        }
        match st.records.get(cluster).map(|s| &s.seen) {
            Some(Seen::Absent) => Some(None),
            Some(Seen::Present(v)) => Some(Some(v.clone())),
            None if st.complete => Some(None),
            None | Some(Seen::Bad) => None,
        }
    }

    /// Start of a direct read by `poll_record`: the ticket for [`RecordCache::read_done`].
    pub(crate) fn read_start(&self) -> u64 {
        self.direct_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.ticket()
    }

    /// A direct read that began with `ticket` answered `rec`, as of store revision/index
    /// `at` (the response's header revision / X-Consul-Index).
    pub(crate) fn read_done(
        &self,
        cluster: &str,
        ticket: u64,
        rec: &Option<Versioned<TopologyRecord>>,
        at: u64,
    ) {
        let mut st = self.st();
        if !st.healthy || at < st.base {
            return;
        }
        let (seen, at) = match rec {
            Some(v) => (Seen::Present(v.clone()), v.version),
            None => (Seen::Absent, at),
        };
        merge(&mut st.records, cluster, seen, at);
        if st.doubts.get(cluster).is_some_and(|d| d.ticket < ticket) {
            st.doubts.remove(cluster);
        }
    }

    /// Our own CAS wrote `record` at `version`.
    pub(crate) fn wrote(&self, cluster: &str, record: &TopologyRecord, version: u64) {
        let seen = Seen::Present(Versioned {
            value: record.clone(),
            version,
        });
        let mut st = self.st();
        if version < st.base {
            // Older than the watch's start: what the cache holds is already as new.
            return;
        }
        merge(&mut st.records, cluster, seen, version);
    }

    /// The cached entry of `cluster` may be older than the store: do not serve it until the
    /// watch applied revision `until` (`None`: unknown) or a direct read starts after now.
    pub(crate) fn doubt(&self, cluster: &str, until: Option<u64>) {
        let ticket = self.ticket();
        self.st().doubts.insert(
            cluster.to_string(),
            Doubt {
                until: until.unwrap_or(u64::MAX),
                ticket,
            },
        );
    }

    /// A new watch delivers every change after store revision/index `rev`: every entry is
    /// unknown again (changes may have been missed), the cache is not healthy until
    /// [`RecordCache::set_healthy`].
    pub(crate) fn resync(&self, rev: u64) {
        let mut st = self.st();
        st.healthy = false;
        st.complete = false;
        st.records.clear();
        st.base = rev;
        st.applied = rev;
    }

    /// The whole prefix at store index `index` (a Consul blocking query's answer): the records
    /// in `full` at their own index, every other known record gone, and clusters never seen
    /// are absent from now on (instead of unknown).
    pub(crate) fn snapshot(&self, full: Vec<(String, Seen, u64)>, index: u64) {
        let mut st = self.st();
        let named: std::collections::HashSet<String> =
            full.iter().map(|(c, _, _)| c.clone()).collect();
        let gone: Vec<String> = st
            .records
            .keys()
            .filter(|c| !named.contains(*c))
            .cloned()
            .collect();
        for c in gone {
            merge(&mut st.records, &c, Seen::Absent, index);
        }
        for (c, seen, at) in full {
            merge(&mut st.records, &c, seen, at);
        }
        st.complete = true;
        st.applied = st.applied.max(index);
    }

    /// A change from the watch.
    pub(crate) fn apply(&self, cluster: &str, seen: Seen, at: u64) {
        merge(&mut self.st().records, cluster, seen, at);
    }

    /// Every change up to `rev` is applied.
    pub(crate) fn advance(&self, rev: u64) {
        let mut st = self.st();
        st.applied = st.applied.max(rev);
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.st().healthy = healthy;
    }

    pub(crate) fn healthy(&self) -> bool {
        self.st().healthy
    }

    pub(crate) fn direct_reads(&self) -> u64 {
        self.direct_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_hold(&self, hold: bool) {
        self.hold.store(hold, std::sync::atomic::Ordering::SeqCst);
    }

    /// Test hook: wait (bounded by nothing but the flag, polled every 10 ms) while held.
    pub(crate) async fn wait_unheld(&self) {
        while self.hold.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn merge(records: &mut HashMap<String, Slot>, cluster: &str, seen: Seen, at: u64) {
    match records.get_mut(cluster) {
        Some(s) if s.at > at => {}
        Some(s) => *s = Slot { seen, at },
        None => {
            records.insert(cluster.to_string(), Slot { seen, at });
        }
    }
}

/// Backoff between attempts to re-establish a record watch: 100 ms doubling to 5 s.
pub(crate) fn watch_backoff() -> Doubling {
    Doubling::new(Duration::from_millis(100), Duration::from_secs(5))
}

#[cfg(test)]
mod record_cache_tests {
    use super::*;

    fn rec(epoch: u64) -> TopologyRecord {
        TopologyRecord {
            master: "127.0.0.1:1".parse().expect("addr"),
            replicas: vec![],
            epoch,
            updated_at: 0,
            last_failover_at: None,
            pending: None,
            reason: String::new(),
        }
    }

    fn present(epoch: u64, version: u64) -> Seen {
        Seen::Present(Versioned {
            value: rec(epoch),
            version,
        })
    }

    fn epoch(c: &RecordCache, cluster: &str) -> Option<Option<u64>> {
        c.lookup(cluster).map(|r| r.map(|v| v.value.epoch))
    }

    fn healthy_at(base: u64) -> RecordCache {
        let c = RecordCache::default();
        c.resync(base);
        c.set_healthy(true);
        c
    }

    #[test]
    fn serves_only_while_healthy_and_known() {
        let c = RecordCache::default();
        c.apply("a", present(1, 5), 5);
        assert_eq!(epoch(&c, "a"), None, "unhealthy: read directly");
        let c = healthy_at(10);
        assert_eq!(epoch(&c, "a"), None, "unknown: read directly");
        c.apply("a", present(1, 11), 11);
        assert_eq!(epoch(&c, "a"), Some(Some(1)));
        c.apply("a", present(0, 9), 9);
        assert_eq!(
            epoch(&c, "a"),
            Some(Some(1)),
            "an older state never replaces"
        );
        c.apply("a", Seen::Absent, 12);
        assert_eq!(epoch(&c, "a"), Some(None));
        c.apply("a", Seen::Bad, 13);
        assert_eq!(epoch(&c, "a"), None, "bad JSON: read directly");
        c.set_healthy(false);
        c.apply("a", present(2, 14), 14);
        assert_eq!(epoch(&c, "a"), None);
        c.resync(20);
        c.set_healthy(true);
        assert_eq!(epoch(&c, "a"), None, "a new watch forgets everything");
    }

    #[test]
    fn own_writes_and_reads_below_the_watch_start_are_not_taken() {
        let c = healthy_at(10);
        c.wrote("a", &rec(1), 9);
        assert_eq!(epoch(&c, "a"), None);
        let t = c.read_start();
        c.read_done("a", t, &None, 9);
        assert_eq!(epoch(&c, "a"), None);
        c.wrote("a", &rec(2), 11);
        assert_eq!(epoch(&c, "a"), Some(Some(2)));
        let t = c.read_start();
        c.read_done("b", t, &None, 12);
        assert_eq!(epoch(&c, "b"), Some(None));
    }

    #[test]
    fn a_doubt_holds_until_the_watch_caught_up_or_a_later_read() {
        let c = healthy_at(10);
        c.apply("a", present(1, 11), 11);
        c.doubt("a", Some(15));
        assert_eq!(epoch(&c, "a"), None);
        c.advance(14);
        assert_eq!(epoch(&c, "a"), None);
        c.advance(15);
        assert_eq!(epoch(&c, "a"), Some(Some(1)));
        // Unknown outcome: a read that started before the doubt does not clear it.
        let early = c.read_start();
        c.doubt("a", None);
        c.read_done(
            "a",
            early,
            &Some(Versioned {
                value: rec(1),
                version: 11,
            }),
            16,
        );
        assert_eq!(epoch(&c, "a"), None);
        c.advance(1_000);
        assert_eq!(epoch(&c, "a"), None);
        let late = c.read_start();
        c.read_done(
            "a",
            late,
            &Some(Versioned {
                value: rec(3),
                version: 17,
            }),
            17,
        );
        assert_eq!(epoch(&c, "a"), Some(Some(3)));
    }

    #[test]
    fn a_snapshot_names_every_record() {
        let c = healthy_at(10);
        c.apply("gone", present(1, 11), 11);
        c.wrote("ours", &rec(5), 30);
        c.snapshot(vec![("a".into(), present(2, 12), 12)], 20);
        assert_eq!(epoch(&c, "a"), Some(Some(2)));
        assert_eq!(epoch(&c, "gone"), Some(None));
        assert_eq!(epoch(&c, "never"), Some(None));
        assert_eq!(epoch(&c, "ours"), Some(Some(5)), "a newer own write stays");
    }
}
