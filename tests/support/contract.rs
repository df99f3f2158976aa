//! The `Coordinator` contract, run against every backend (local, consul test server or a real
//! Consul when `CONSUL_HTTP_ADDR` is set, real etcd). `a` and `b` are two independent
//! instances (separate clients) over the same store.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use pika_remedy::coord::{CasOutcome, Coordinator, Holder, LockOutcome};
use pika_remedy::model::{Addr, TopologyRecord};

pub use super::fixtures::holder;

pub fn record(master: &str, epoch: u64) -> TopologyRecord {
    TopologyRecord {
        master: master.parse::<Addr>().expect("addr"),
        replicas: vec!["127.0.0.1:2".parse().expect("addr")],
        epoch,
        updated_at: 1_700_000_000 + epoch,
        last_failover_at: None,
        pending: None,
        reason: format!("test epoch {epoch}"),
    }
}

/// Record semantics: absent → None; create-only; CAS on version; conflicts write nothing.
pub async fn record_cas<C: Coordinator>(a: &C, b: &C, cluster: &str) {
    assert_eq!(
        a.read_record(cluster).await.expect("read"),
        None,
        "fresh cluster has no record"
    );
    let v1 = match a
        .write_record(cluster, &record("127.0.0.1:1", 1), None)
        .await
        .expect("create")
    {
        CasOutcome::Written(v) => v,
        other => panic!("create should succeed, got {other:?}"),
    };
    assert_eq!(
        b.write_record(cluster, &record("127.0.0.1:9", 1), None)
            .await
            .expect("create again"),
        CasOutcome::Conflict,
        "create-only must fail when the record exists"
    );
    let got = b
        .read_record(cluster)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(got.value, record("127.0.0.1:1", 1));
    assert_eq!(got.version, v1);
    let v2 = match b
        .write_record(cluster, &record("127.0.0.1:2", 2), Some(v1))
        .await
        .expect("cas")
    {
        CasOutcome::Written(v) => v,
        other => panic!("cas with the current version should succeed, got {other:?}"),
    };
    assert_ne!(v1, v2, "version must change on every write");
    assert_eq!(
        a.write_record(cluster, &record("127.0.0.1:3", 3), Some(v1))
            .await
            .expect("stale cas"),
        CasOutcome::Conflict,
        "cas with a stale version must fail"
    );
    let got = a
        .read_record(cluster)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(
        got.value.epoch, 2,
        "the conflicting write must not have landed"
    );
    assert_eq!(got.version, v2);
}

/// Take the lock, retrying for up to `within` (lock-delay after a release may apply).
pub async fn lock_within<C: Coordinator>(
    c: &C,
    cluster: &str,
    h: &Holder,
    ttl: Duration,
    within: Duration,
) -> pika_remedy::coord::Lease {
    let start = Instant::now();
    loop {
        match c.try_lock(cluster, h, ttl).await.expect("try_lock") {
            LockOutcome::Acquired(l) => return l,
            LockOutcome::HeldBy(who) => {
                assert!(
                    start.elapsed() < within,
                    "lock still held by {who:?} after {within:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Lock semantics: mutual exclusion, holder reported, fencing token changes, release frees it.
pub async fn lock_exclusion<C: Coordinator>(a: &C, b: &C, cluster: &str, ttl: Duration) {
    let ha = holder("instance-a");
    let hb = holder("instance-b");
    let la = match a.try_lock(cluster, &ha, ttl).await.expect("lock a") {
        LockOutcome::Acquired(l) => l,
        other => panic!("first lock must be acquired, got {other:?}"),
    };
    assert_eq!(la.holder, ha);
    assert!(
        a.still_held(&la).await.expect("still_held"),
        "holder must see itself holding"
    );
    match b.try_lock(cluster, &hb, ttl).await.expect("lock b") {
        LockOutcome::HeldBy(Some(h)) => {
            assert_eq!(h.instance, "instance-a", "must name the holder")
        }
        other => panic!("second lock must report the holder, got {other:?}"),
    }
    // Same instance asking again does not get a second lease either.
    match a.try_lock(cluster, &ha, ttl).await.expect("lock a again") {
        LockOutcome::HeldBy(_) => {}
        LockOutcome::Acquired(_) => {
            panic!("a second lease for the same cluster must not be granted")
        }
    }
    let token_a = la.token.clone();
    a.release(la).await.expect("release");
    let lb = lock_within(b, cluster, &hb, ttl, Duration::from_secs(5)).await;
    assert_ne!(
        lb.token, token_a,
        "fencing token must change on every acquisition"
    );
    assert!(b.still_held(&lb).await.expect("still_held b"));
    b.release(lb).await.expect("release b");
}

/// Locks of different clusters are independent.
pub async fn clusters_independent<C: Coordinator>(a: &C, b: &C, c1: &str, c2: &str, ttl: Duration) {
    let la = match a.try_lock(c1, &holder("a"), ttl).await.expect("lock c1") {
        LockOutcome::Acquired(l) => l,
        other => panic!("lock c1: {other:?}"),
    };
    let lb = match b.try_lock(c2, &holder("b"), ttl).await.expect("lock c2") {
        LockOutcome::Acquired(l) => l,
        other => panic!("a different cluster must not be blocked: {other:?}"),
    };
    a.release(la).await.expect("release");
    b.release(lb).await.expect("release");
}

/// Controls: one document, read by every instance, compare-and-set like the record.
pub async fn controls_cas<C: Coordinator>(a: &C, b: &C, tag: &str) {
    use pika_remedy::controls::{Controls, Pause};
    let cluster = format!("{tag}-ctl");
    let start = a.read_controls().await.expect("read controls");
    let v0 = start.as_ref().map(|v| v.version);
    let mut doc = start.map(|v| v.value).unwrap_or_default();
    doc.set_pause(Pause {
        cluster: Some(cluster.clone()),
        reason: "contract".into(),
        who: "tester".into(),
        since: 1_700_000_000,
        until: None,
    });
    let v1 = match a.write_controls(&doc, v0).await.expect("write controls") {
        CasOutcome::Written(v) => v,
        other => panic!("write with the current version should succeed, got {other:?}"),
    };
    let got = b
        .read_controls()
        .await
        .expect("read")
        .expect("present after a write");
    assert_eq!(got.value, doc, "the other instance reads what was written");
    assert_eq!(got.version, v1);
    assert_eq!(
        b.write_controls(&Controls::default(), v0)
            .await
            .expect("stale"),
        CasOutcome::Conflict,
        "a stale version must not overwrite"
    );
    assert_eq!(
        b.write_controls(&Controls::default(), None)
            .await
            .expect("create-only"),
        CasOutcome::Conflict,
        "create-only must fail once the document exists"
    );
    assert!(b
        .read_controls()
        .await
        .expect("read")
        .expect("present")
        .value
        .pause_for(&cluster, 1_700_000_001)
        .is_some());
    pika_remedy::controls::update(b, |d| {
        if d.clear_pause(Some(&cluster)) {
            Ok(())
        } else {
            Err("not paused".into())
        }
    })
    .await
    .expect("update through b");
    let after = a.read_controls().await.expect("read").expect("present");
    assert!(after.value.pause_for(&cluster, 1_700_000_001).is_none());
    assert_ne!(after.version, v1, "version changes on every write");
}

/// Only the members of this test (a real store may list others).
async fn members_of<C: Coordinator>(c: &C, tag: &str) -> Vec<String> {
    c.members()
        .await
        .expect("members")
        .into_iter()
        .filter(|m| m.starts_with(tag))
        .collect()
}

/// Membership (scale-out): a heartbeat registers, every instance lists the live members
/// sorted, a heartbeat with the returned token renews, leaving removes at once, a bad member
/// id is refused.
pub async fn membership<C: Coordinator>(a: &C, b: &C, tag: &str, ttl: Duration) {
    let ma = format!("{tag}-member-a");
    let mb = format!("{tag}-member-b");
    let ta = a
        .heartbeat_member(&ma, ttl, None)
        .await
        .expect("register a");
    assert_eq!(
        members_of(b, tag).await,
        vec![ma.clone()],
        "the other instance sees the registration"
    );
    let tb = b
        .heartbeat_member(&mb, ttl, None)
        .await
        .expect("register b");
    assert_eq!(members_of(a, tag).await, vec![ma.clone(), mb.clone()]);
    let ta2 = a
        .heartbeat_member(&ma, ttl, Some(&ta))
        .await
        .expect("renew a");
    assert_eq!(ta2, ta, "a renewal keeps the registration");
    assert_eq!(members_of(b, tag).await, vec![ma.clone(), mb.clone()]);
    a.leave_members(&ma, &ta).await.expect("leave a");
    assert_eq!(
        members_of(b, tag).await,
        vec![mb.clone()],
        "a member that left is gone at once"
    );
    b.leave_members(&mb, &tb).await.expect("leave b");
    assert!(members_of(a, tag).await.is_empty());
    for bad in ["", "a/b", "../x", ".hidden", "sp ace"] {
        let e = a
            .heartbeat_member(bad, ttl, None)
            .await
            .expect_err("a member id that could name another key");
        assert!(!e.is_retryable(), "{bad:?}: {e}");
    }
}

/// A member that stops heartbeating drops out within `within` (its TTL, Consul 2×TTL, plus a
/// margin), while one that keeps heartbeating stays; a heartbeat with the lost token
/// registers again.
pub async fn member_expiry<C: Coordinator>(
    a: &C,
    b: &C,
    tag: &str,
    ttl: Duration,
    within: Duration,
) {
    let ma = format!("{tag}-exp-a");
    let mb = format!("{tag}-exp-b");
    let ta = a
        .heartbeat_member(&ma, ttl, None)
        .await
        .expect("register a");
    let mut tb = b
        .heartbeat_member(&mb, ttl, None)
        .await
        .expect("register b");
    assert_eq!(members_of(a, tag).await, vec![ma.clone(), mb.clone()]);
    let start = Instant::now();
    loop {
        // b keeps renewing (every TTL/3, like the service); a does not.
        tb = b
            .heartbeat_member(&mb, ttl, Some(&tb))
            .await
            .expect("renew b");
        let now = members_of(b, tag).await;
        if now == vec![mb.clone()] {
            break;
        }
        assert!(
            start.elapsed() < within,
            "{ma} still listed {:?} after {within:?}: {now:?}",
            start.elapsed()
        );
        tokio::time::sleep(ttl / 3).await;
    }
    assert!(
        start.elapsed() + Duration::from_millis(300) >= ttl.min(Duration::from_secs(1)),
        "{ma} dropped out after {:?}, before its TTL {ttl:?}",
        start.elapsed()
    );
    let again = a
        .heartbeat_member(&ma, ttl, Some(&ta))
        .await
        .expect("heartbeat after the registration was lost");
    assert_eq!(
        members_of(b, tag).await,
        vec![ma.clone(), mb.clone()],
        "a lost registration is made again by the next heartbeat"
    );
    a.leave_members(&ma, &again).await.expect("leave a");
    b.leave_members(&mb, &tb).await.expect("leave b");
}

/// Run the whole contract with cluster names made unique by `tag`.
pub async fn run_all<C: Coordinator>(a: &C, b: &C, tag: &str, ttl: Duration) {
    a.ping().await.expect("ping");
    record_cas(a, b, &format!("{tag}-rec")).await;
    controls_cas(a, b, tag).await;
    lock_exclusion(a, b, &format!("{tag}-lock"), ttl).await;
    clusters_independent(a, b, &format!("{tag}-c1"), &format!("{tag}-c2"), ttl).await;
    membership(a, b, tag, ttl).await;
}

// --- poll_record answered from a watched cache (etcd: one watch, Consul: one blocking query) ---

/// The test hooks of a backend whose `poll_record` answers from a watched cache.
pub trait WatchedRecords: Coordinator {
    /// The watch (or blocking query) is known healthy.
    fn watch_healthy(&self) -> bool;
    /// Direct store reads made by `poll_record`.
    fn direct_reads(&self) -> u64;
    /// Hold the watch's changes (queued, as on a slow connection) or let them through.
    fn hold_watch(&self, hold: bool);
}

/// Poll until the watch is healthy (bounded: 10 s).
pub async fn watch_ready<C: WatchedRecords>(c: &C, cluster: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = c.poll_record(cluster).await;
        if c.watch_healthy() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "record watch not healthy in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll until `poll_record` answers `epoch` (bounded: `within`); the last answer otherwise.
pub async fn poll_until_epoch<C: Coordinator>(
    c: &C,
    cluster: &str,
    epoch: u64,
    within: Duration,
) -> Option<u64> {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        if let Ok(r) = c.poll_record(cluster).await {
            last = r.map(|v| v.value.epoch);
            if last == Some(epoch) {
                return last;
            }
        }
        if Instant::now() >= deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A CAS of `cluster` to `record(master, epoch)` over the version `c` reads now.
pub async fn cas_over_current<C: Coordinator>(c: &C, cluster: &str, master: &str, epoch: u64) {
    let v = c
        .read_record(cluster)
        .await
        .expect("read")
        .expect("rec")
        .version;
    c.write_record(cluster, &record(master, epoch), Some(v))
        .await
        .expect("cas");
}

/// `a` watches while `b` writes: the first write is polled, 50 polls of the unchanged record
/// make no store read (with `absent_cached`, neither does a poll of a never-written cluster),
/// and `b`'s CAS is seen. `store` names the backend in the messages.
pub async fn poll_sees_other_writes<C: WatchedRecords>(
    a: &C,
    b: &C,
    store: &str,
    absent_cached: bool,
) {
    b.write_record("c", &record("127.0.0.1:1", 1), None)
        .await
        .expect("write 1");
    watch_ready(a, "c").await;
    assert_eq!(
        poll_until_epoch(a, "c", 1, Duration::from_secs(1)).await,
        Some(1)
    );
    // Served from the cache now: no further direct reads however often it polls.
    let reads = a.direct_reads();
    for _ in 0..50 {
        let r = a.poll_record("c").await.expect("poll").expect("record");
        assert_eq!(r.value.epoch, 1);
    }
    if absent_cached {
        assert!(a.poll_record("never").await.expect("poll").is_none());
    }
    assert_eq!(
        a.direct_reads(),
        reads,
        "polls of an unchanged record read {store}"
    );
    // Another instance's CAS.
    cas_over_current(b, "c", "127.0.0.1:3", 2).await;
    assert_eq!(
        poll_until_epoch(a, "c", 2, Duration::from_secs(10)).await,
        Some(2),
        "another instance's write not seen by poll_record"
    );
}

/// The version `poll_record` answers is the one `read_record` reads.
pub async fn poll_version_is_read_version<C: Coordinator>(a: &C, cluster: &str) {
    let polled = a.poll_record(cluster).await.expect("poll").expect("rec");
    let read = a.read_record(cluster).await.expect("read").expect("rec");
    assert_eq!(polled.version, read.version);
}

/// With the watch held, the cache must still not answer older than this instance's own CAS:
/// a written CAS updates it, a conflict puts the entry in doubt (direct reads) until the
/// watch caught up. Fails if `write_record` does not call `cache.wrote` / `cache.doubt`.
pub async fn poll_never_older_than_own_cas<C: WatchedRecords>(a: &C, b: &C) {
    a.write_record("c", &record("127.0.0.1:1", 1), None)
        .await
        .expect("write 1");
    watch_ready(a, "c").await;
    let v1 = a.poll_record("c").await.expect("poll").expect("rec");
    assert_eq!(v1.value.epoch, 1);
    a.hold_watch(true);
    // Own CAS written: the very next poll has it.
    let CasOutcome::Written(v2) = a
        .write_record("c", &record("127.0.0.1:2", 2), Some(v1.version))
        .await
        .expect("cas 2")
    else {
        panic!("cas 2 conflicted");
    };
    let p = a.poll_record("c").await.expect("poll").expect("rec");
    assert_eq!(
        (p.value.epoch, p.version),
        (2, v2),
        "poll older than own CAS"
    );
    // Another instance writes; our CAS with the old version conflicts; the next poll must
    // not answer the version that conflicted.
    b.write_record("c", &record("127.0.0.1:3", 3), Some(v2))
        .await
        .expect("b cas");
    let out = a
        .write_record("c", &record("127.0.0.1:9", 9), Some(v2))
        .await
        .expect("cas 9");
    assert_eq!(out, CasOutcome::Conflict);
    let p = a.poll_record("c").await.expect("poll").expect("rec");
    assert_eq!(
        p.value.epoch, 3,
        "poll answered the record our CAS conflicted with"
    );
    a.hold_watch(false);
    assert_eq!(
        poll_until_epoch(a, "c", 3, Duration::from_secs(5)).await,
        Some(3)
    );
}

/// With the store down, polls must fail like reads (bounded: `within`) instead of answering
/// from the cache; the error is returned.
pub async fn poll_fails_while_down<C: Coordinator>(
    a: &C,
    cluster: &str,
    within: Duration,
    store: &str,
) -> pika_remedy::coord::CoordError {
    let deadline = Instant::now() + within;
    loop {
        match a.poll_record(cluster).await {
            Err(e) => return e,
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "poll_record kept answering from the cache while {store} was down"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// After the store came back: `b` (a client that did not watch) writes epoch 2, which `a`'s
/// polls return (only a re-established watch or a direct read can show it); once the watch
/// is back, a later write arrives through it.
pub async fn poll_after_restart<C: WatchedRecords>(a: &C, b: &C, store: &str) {
    cas_over_current(b, "c", "127.0.0.1:2", 2).await;
    assert_eq!(
        poll_until_epoch(a, "c", 2, Duration::from_secs(20)).await,
        Some(2),
        "poll_record after a {store} restart did not return the current record"
    );
    watch_ready(a, "c").await;
    cas_over_current(b, "c", "127.0.0.1:3", 3).await;
    assert_eq!(
        poll_until_epoch(a, "c", 3, Duration::from_secs(10)).await,
        Some(3)
    );
}
