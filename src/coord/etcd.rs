//! `Etcd`: lease + txn lock and mod_revision CAS over etcd v3 (etcd-client).
//!
//! # Key layout (`prefix` defaults to `/pika-remedy`)
//! - `<prefix>/<cluster>/lock`: the failover lock. Value: the [`Holder`] as JSON; attached to
//!   the holder's lease, so it vanishes when the lease expires or is revoked.
//! - `<prefix>/<cluster>/topology`: the [`TopologyRecord`] as JSON. Version = `mod_revision`.
//! - `<prefix>/<cluster>/master`: plain `host:port` of the recorded master, written in the same
//!   transaction as the record, for clients and scripts that only need the address.
//! - `<prefix>/_controls`: the shared operator controls (JSON). Version = `mod_revision`.
//! - `<prefix>/_members/<instance id>`: a live `serve` instance (scale-out), attached to its
//!   own lease (TTL `service.member_ttl`), renewed by every heartbeat; it vanishes when the
//!   instance stops renewing.
//! - `<prefix>/<cluster>/events/<millis:016>-<seq:06>`: audit events (JSON), trimmed to the
//!   newest `events_keep` (0 = no events in etcd). The sequence part keeps two events of the
//!   same millisecond apart.
//!
//! # Lock
//! Grant a lease with the TTL, then one transaction `if create_revision(lock) == 0 then put(lock,
//! holder, lease) else get(lock)`. The fencing token is `<lease id>:<create_revision>`; both
//! change on every acquisition. A background task renews the lease every TTL/3 until the lease
//! is released or dropped (dropping a [`Lease`] without `release` stops renewal, so the lock
//! then expires after its TTL instead of being held forever by a forgotten value).
//!
//! # Own orphaned leases
//! A lease whose release failed (etcd down), that was dropped without `release`, or whose
//! lock txn failed without an answer (it may have applied) is recorded as this client's
//! orphan. etcd keeps such a lease across a restart from its data dir (and restarts its TTL),
//! so the lock key would answer "held by" this very instance for another TTL. Instead a
//! background task revokes it (retrying until it succeeds or etcd says the lease is gone), and
//! `try_lock` revokes the cluster's orphans before taking the lock again: the next trigger
//! after an outage acts at once, under a fresh lease and fencing token.
//!
//! # Records for the poller
//! `poll_record` answers from a cache kept by ONE watch on `<prefix>/` per coordinator
//! (started by the first `poll_record`, from the revision after a count-only read of the
//! prefix; every entry starts unknown and is read directly once). Watch events (puts and
//! deletes of `…/topology` keys) update it; our own written CAS updates it at once; a
//! conflict puts the cluster in doubt until the watch applied the conflict's revision or a
//! direct read that started after it answered, an unknown outcome until such a read. A
//! cancelled or compacted watch, a stream error or end marks the cache unhealthy (every poll
//! reads directly) and starts again after a backoff of 100 ms doubling to 5 s, with every
//! entry unknown. Staleness: an event arrives within milliseconds; a connection that dies
//! silently is noticed by the gRPC keep-alive (10 s + the command timeout), and a member
//! that loses its leader cancels the watch (`require_leader`); meanwhile no write can be
//! acknowledged through that member either.
//!
//! # Not here
//! `publish_roles` is a no-op: etcd has no service catalog; clients read the `master` key.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use std::sync::Arc;

use super::{
    CasOutcome, CoordError, Coordinator, HeldLock, Holder, Lease, LeaseInner, LockBook,
    LockOutcome, RecordCache, ReleaseRetry, Seen,
};
use crate::config::{EtcdConfig, Secret, Timeouts};
use crate::controls::Controls;
use crate::model::{TopologyRecord, Versioned};

/// The renewal task of one lease. Aborted on drop, so a `Lease` that is dropped without
/// `release` stops renewing; the lease is then handed to the orphan reaper, which revokes it.
pub(crate) struct KeepAlive {
    task: JoinHandle<()>,
    /// `None` once `release` took over. Boxed: an etcd `Client` is large.
    orphan: Option<Box<Orphan>>,
}

impl fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepAlive").finish_non_exhaustive()
    }
}

impl KeepAlive {
    /// Stop renewing; the caller releases the lease itself.
    fn disarm(mut self) -> Option<Box<Orphan>> {
        self.task.abort();
        self.orphan.take()
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(o) = self.orphan.take() {
            o.adopt();
        }
    }
}

/// A lease of ours that may still hold a lock nobody uses: revoked in the background.
pub(crate) struct Orphan {
    book: Arc<LockBook<i64>>,
    client: Client,
    cluster: String,
    lease_id: i64,
    ttl: Duration,
    op_timeout: Duration,
}

impl Orphan {
    /// Record it and start the retrying revoke (once per lease).
    fn adopt(self) {
        if !self.book.orphaned(&self.cluster, self.lease_id) {
            return;
        }
        // Outside a runtime (a lease dropped at process exit) `try_lock` still revokes it.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let mut retry = ReleaseRetry::new(self.ttl);
            loop {
                match revoke_with(self.client.clone(), self.lease_id, self.op_timeout).await {
                    Ok(()) => {
                        tracing::info!(cluster = %self.cluster, lease_id = self.lease_id, "orphaned etcd lock lease revoked");
                        self.book.gone(&self.cluster, &self.lease_id);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(cluster = %self.cluster, lease_id = self.lease_id, error = %e, "revoking an orphaned etcd lease failed; retrying");
                    }
                }
                if !retry.wait().await {
                    tracing::warn!(cluster = %self.cluster, lease_id = self.lease_id, "gave up revoking an orphaned etcd lease; its TTL frees it");
                    return;
                }
            }
        });
    }
}

/// `LeaseRevoke` bounded by `op_timeout`; a lease etcd no longer knows counts as revoked.
async fn revoke_with(mut c: Client, lease_id: i64, op_timeout: Duration) -> Result<(), CoordError> {
    match tokio::time::timeout(op_timeout, c.lease_revoke(lease_id)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => match classify("lease revoke", e) {
            CoordError::Backend(m) if m.contains("lease not found") => Ok(()),
            other => Err(other),
        },
        Err(_) => Err(CoordError::Unreachable(format!(
            "etcd lease revoke: no answer within {op_timeout:?}"
        ))),
    }
}

/// etcd v3 coordinator. Cheap to share behind an `Arc`; the gRPC channel is connected lazily
/// and reconnects by itself.
pub struct Etcd {
    endpoints: Vec<String>,
    options: ConnectOptions,
    client: OnceCell<Client>,
    prefix: String,
    events_keep: usize,
    /// Bound for one etcd call, including (re)connecting: `connect + command`.
    op_timeout: Duration,
    event_seq: AtomicU64,
    /// The lock leases this client took (live and orphaned).
    book: Arc<LockBook<i64>>,
    /// The records for `poll_record`, kept by `watch` (started by the first `poll_record`).
    cache: Arc<RecordCache>,
    watch: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(t) = self.watch.get_mut().ok().and_then(Option::take) {
            t.abort();
        }
    }
}

// Manual: `ConnectOptions`' Debug would print the password.
impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("events_keep", &self.events_keep)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

fn config_err(msg: impl Into<String>) -> CoordError {
    CoordError::Backend(format!("etcd config: {}", msg.into()))
}

/// Map an etcd-client error: anything that smells like "could not reach / no answer / no
/// leader" is retryable; auth, permission and malformed requests are not.
fn classify(what: &str, e: etcd_client::Error) -> CoordError {
    use etcd_client::Error as E;
    use tonic::Code;
    let retryable = match &e {
        E::GRpcStatus(s) => !matches!(
            s.code(),
            Code::InvalidArgument
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::FailedPrecondition
                | Code::NotFound
                | Code::AlreadyExists
                | Code::OutOfRange
                | Code::Unimplemented
                | Code::DataLoss
        ),
        E::TransportError(_) | E::IoError(_) | E::LeaseKeepAliveError(_) | E::WatchError(_) => true,
        _ => false,
    };
    let text = match &e {
        // The status' message is etcd's own text ("etcdserver: ..."), shorter than Display.
        E::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    };
    if retryable {
        CoordError::Unreachable(format!("etcd {what}: {text}"))
    } else {
        CoordError::Backend(format!("etcd {what}: {text}"))
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parse_token(token: &str) -> Option<(i64, i64)> {
    let (l, c) = token.split_once(':')?;
    Some((l.parse().ok()?, c.parse().ok()?))
}

fn tls_options(cfg: &EtcdConfig) -> Result<Option<TlsOptions>, CoordError> {
    let read = |field: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| config_err(format!("{field} {}: {e}", p.display())))
    };
    let any_https = cfg.endpoints.iter().any(|e| e.starts_with("https://"));
    let any_http = cfg.endpoints.iter().any(|e| e.starts_with("http://"));
    let files = cfg.ca_file.is_some() || cfg.cert_file.is_some() || cfg.key_file.is_some();
    if !files {
        if any_https {
            // Without a CA there are no trust anchors (no system roots are compiled in).
            return Err(config_err("https endpoints need ca_file"));
        }
        return Ok(None);
    }
    if any_http {
        return Err(config_err(
            "ca_file/cert_file/key_file are set but an endpoint is http://; use https://",
        ));
    }
    let mut tls = TlsOptions::new();
    match &cfg.ca_file {
        Some(p) => tls = tls.ca_certificate(Certificate::from_pem(read("ca_file", p)?)),
        None => return Err(config_err("TLS needs ca_file")),
    }
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => {
            tls = tls.identity(Identity::from_pem(
                read("cert_file", c)?,
                read("key_file", k)?,
            ));
        }
        (None, None) => {}
        _ => return Err(config_err("cert_file and key_file must be set together")),
    }
    Ok(Some(tls))
}

impl Etcd {
    /// Build the client. Validates the config (endpoints, TLS files, user/password) and tries
    /// to connect once within `timeouts.connect + timeouts.command`: if etcd is merely
    /// unreachable the coordinator is still returned and connects on first use (so the service
    /// can start while etcd is down; `ping` reports it); a rejected login is a `Backend` error.
    pub async fn connect(
        cfg: &EtcdConfig,
        password: Option<Secret>,
        timeouts: &Timeouts,
    ) -> Result<Etcd, CoordError> {
        if cfg.endpoints.is_empty() {
            return Err(config_err("endpoints is empty"));
        }
        let prefix = cfg.prefix.trim_end_matches('/').to_string();
        if prefix.is_empty() {
            return Err(config_err("prefix is empty"));
        }
        // gRPC HTTP/2 pings detect a dead connection while a keepalive stream is open. etcd
        // rejects pings more often than every 5 s (`too_many_pings`), and pings without an
        // open stream by default, hence 10 s and not while idle.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeouts.connect)
            .with_timeout(timeouts.command)
            .with_keep_alive(
                Duration::from_secs(10),
                timeouts.command.max(timeouts.connect),
            )
            .with_keep_alive_while_idle(false)
            // A member without a leader answers "no leader" at once instead of letting a
            // linearizable request wait for the timeout.
            .with_require_leader(true)
            .with_auto_token_refresh(true);
        match (&cfg.user, password) {
            (Some(u), Some(p)) => options = options.with_user(u.clone(), p.expose().to_string()),
            (None, None) => {}
            (Some(_), None) => return Err(config_err("user is set but password is missing")),
            (None, Some(_)) => return Err(config_err("password is set but user is missing")),
        }
        if let Some(tls) = tls_options(cfg)? {
            options = options.with_tls(tls);
        }
        let etcd = Etcd {
            endpoints: cfg.endpoints.clone(),
            options,
            client: OnceCell::new(),
            prefix,
            events_keep: cfg.events_keep,
            op_timeout: timeouts.connect + timeouts.command,
            event_seq: AtomicU64::new(0),
            book: Arc::new(LockBook::new()),
            cache: Arc::new(RecordCache::default()),
            watch: std::sync::Mutex::new(None),
        };
        match etcd.ping().await {
            Ok(()) | Err(CoordError::Unreachable(_)) => Ok(etcd),
            Err(e) => Err(e),
        }
    }

    fn key(&self, cluster: &str, leaf: &str) -> String {
        format!("{}/{}/{}", self.prefix, cluster, leaf)
    }

    async fn client(&self) -> Result<Client, CoordError> {
        let c = self
            .client
            .get_or_try_init(|| async {
                // Without credentials this only builds a lazy channel; with credentials it
                // authenticates, which needs the server.
                Client::connect(&self.endpoints, Some(self.options.clone()))
                    .await
                    .map_err(|e| classify("connect", e))
            })
            .await?;
        Ok(c.clone())
    }

    /// One etcd call, bounded by `op_timeout` on top of the per-request gRPC timeout (a
    /// balanced channel with no ready endpoint may otherwise wait for readiness).
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, CoordError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let fut = async {
            let c = self.client().await?;
            f(c).await.map_err(|e| classify(what, e))
        };
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(CoordError::Unreachable(format!(
                "etcd {what}: no answer within {:?}",
                self.op_timeout
            ))),
        }
    }

    async fn revoke(&self, lease_id: i64) -> Result<(), CoordError> {
        let r = self
            .call("lease revoke", |mut c| async move {
                c.lease_revoke(lease_id).await
            })
            .await;
        match r {
            Ok(_) => Ok(()),
            // Already expired or revoked: the goal is reached.
            Err(CoordError::Backend(m)) if m.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Revoke this client's orphaned leases of `cluster` (see the module docs). An error means
    /// the lock may still be ours in the store: the caller must not report "held by".
    async fn revoke_orphans(&self, cluster: &str) -> Result<(), CoordError> {
        for lease_id in self.book.orphans(cluster) {
            self.revoke(lease_id).await?;
            tracing::info!(
                cluster,
                lease_id,
                "revoked this instance's orphaned etcd lock lease before locking again"
            );
            self.book.gone(cluster, &lease_id);
        }
        Ok(())
    }

    fn orphan(&self, client: Client, cluster: &str, lease_id: i64, ttl: Duration) -> Orphan {
        Orphan {
            book: Arc::clone(&self.book),
            client,
            cluster: cluster.to_string(),
            lease_id,
            ttl,
            op_timeout: self.op_timeout,
        }
    }

    async fn acquired(
        &self,
        cluster: &str,
        holder: &Holder,
        lease_id: i64,
        create_revision: i64,
        granted: Duration,
    ) -> Result<LockOutcome, CoordError> {
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                let _ = self.revoke(lease_id).await;
                return Err(e);
            }
        };
        self.book.acquired(cluster, lease_id);
        let task = tokio::spawn(keep_alive(
            client.clone(),
            lease_id,
            granted,
            self.op_timeout,
        ));
        Ok(LockOutcome::Acquired(Lease {
            cluster: cluster.to_string(),
            token: format!("{lease_id}:{create_revision}"),
            holder: holder.clone(),
            inner: LeaseInner::Etcd {
                lease_id,
                create_revision,
                keepalive: KeepAlive {
                    task,
                    orphan: Some(Box::new(self.orphan(client, cluster, lease_id, granted))),
                },
            },
        }))
    }

    /// The record and the store revision the read saw.
    async fn read_record_at(
        &self,
        cluster: &str,
    ) -> Result<(Option<Versioned<TopologyRecord>>, u64), CoordError> {
        let key = self.key(cluster, "topology");
        let resp = self
            .call(
                "get topology",
                |mut c| async move { c.get(key, None).await },
            )
            .await?;
        let rev = resp.header().map(|h| h.revision() as u64).unwrap_or(0);
        let Some(kv) = resp.kvs().first() else {
            return Ok((None, rev));
        };
        let value: TopologyRecord = serde_json::from_slice(kv.value()).map_err(|e| {
            CoordError::Backend(format!("etcd topology of {cluster}: bad JSON: {e}"))
        })?;
        Ok((
            Some(Versioned {
                value,
                version: kv.mod_revision() as u64,
            }),
            rev,
        ))
    }

    /// Start the record watch once (needs a client; a failed connect is retried by the next
    /// `poll_record`, which reads directly meanwhile).
    async fn start_watch(&self) {
        if self.watch_started() {
            return;
        }
        let Ok(client) = self.client().await else {
            return;
        };
        let mut w = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_none() {
            *w = Some(tokio::spawn(record_watch(
                client,
                self.prefix.clone(),
                Arc::clone(&self.cache),
                self.op_timeout,
            )));
        }
    }

    fn watch_started(&self) -> bool {
        self.watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Is the record watch established and healthy (`poll_record` then answers from it)?
    pub fn record_watch_healthy(&self) -> bool {
        self.cache.healthy()
    }

    /// How many times `poll_record` read a record from etcd (not from the watched cache).
    pub fn poll_reads(&self) -> u64 {
        self.cache.direct_reads()
    }

    /// Test hook: while `hold` is set, the record watch takes no change off its stream (they
    /// queue), as a slow watch would.
    #[doc(hidden)]
    pub fn hold_record_watch(&self, hold: bool) {
        self.cache.set_hold(hold);
    }

    async fn trim_events(&self, cluster: &str) -> Result<(), CoordError> {
        let dir = self.key(cluster, "events/");
        let d = dir.clone();
        let resp = self
            .call("list events", |mut c| async move {
                c.get(d, Some(GetOptions::new().with_prefix().with_keys_only()))
                    .await
            })
            .await?;
        // Range results are sorted by key ascending; keys sort by time.
        let kvs = resp.kvs();
        if kvs.len() <= self.events_keep {
            return Ok(());
        }
        let first = kvs[0].key().to_vec();
        let first_kept = kvs[kvs.len() - self.events_keep].key().to_vec();
        self.call("trim events", |mut c| async move {
            c.delete(first, Some(DeleteOptions::new().with_range(first_kept)))
                .await
        })
        .await?;
        Ok(())
    }
}

/// Renew `lease_id` every `ttl/3`. A failed renewal is retried (with a fresh stream) until
/// `ttl` has passed since the last success: by then etcd has expired the lease, so there is
/// nothing left to renew and the task stops. It also stops when etcd answers TTL 0 (the lease
/// is gone: revoked or expired).
/// The cluster of a `<prefix>/<cluster>/topology` key.
fn topology_cluster<'k>(prefix: &str, key: &'k [u8]) -> Option<&'k str> {
    let k = std::str::from_utf8(key).ok()?;
    let c = k
        .strip_prefix(prefix)?
        .strip_prefix('/')?
        .strip_suffix("/topology")?;
    (!c.is_empty()).then_some(c)
}

/// The one watch on `<prefix>/` that keeps `cache` current for `poll_record`. Runs until the
/// coordinator is dropped: on any failure (stream error or end, cancel, compaction) the
/// cache is marked unhealthy (polls read directly), and after a bounded backoff the watch
/// starts again from the current revision with every entry unknown.
async fn record_watch(
    client: Client,
    prefix: String,
    cache: Arc<RecordCache>,
    op_timeout: Duration,
) {
    let mut backoff = super::watch_backoff();
    loop {
        let e = watch_once(&client, &prefix, &cache, op_timeout, &mut backoff).await;
        cache.set_healthy(false);
        tracing::debug!(error = %e, "etcd record watch ended; polls read directly until it is back");
        backoff.wait().await;
    }
}

/// One watch: returns why it ended.
async fn watch_once(
    client: &Client,
    prefix: &str,
    cache: &RecordCache,
    op_timeout: Duration,
    backoff: &mut super::Doubling,
) -> CoordError {
    let dir = format!("{prefix}/");
    let mut c = client.clone();
    let d = dir.clone();
    let base = match tokio::time::timeout(
        op_timeout,
        c.get(d, Some(GetOptions::new().with_prefix().with_count_only())),
    )
    .await
    {
        Ok(Ok(r)) => r.header().map(|h| h.revision()).unwrap_or(0),
        Ok(Err(e)) => return classify("watch base read", e),
        Err(_) => return CoordError::Unreachable("etcd watch base read: no answer".into()),
    };
    cache.resync(base as u64);
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(base + 1);
    let mut stream = match tokio::time::timeout(op_timeout, c.watch(dir, Some(opts))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return classify("watch", e),
        Err(_) => return CoordError::Unreachable("etcd watch: no answer".into()),
    };
    loop {
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return CoordError::Unreachable("etcd watch: stream ended".into()),
            Err(e) => return classify("watch", e),
        };
        cache.wait_unheld().await;
        if resp.canceled() || resp.compact_revision() != 0 {
            return CoordError::Unreachable(format!(
                "etcd watch canceled (compacted at {}): {}",
                resp.compact_revision(),
                resp.cancel_reason()
            ));
        }
        if resp.created() {
            cache.set_healthy(true);
            backoff.reset();
        }
        let mut last = 0u64;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let at = kv.mod_revision() as u64;
            last = last.max(at);
            let Some(cluster) = topology_cluster(prefix, kv.key()) else {
                continue;
            };
            let seen = match ev.event_type() {
                EventType::Delete => Seen::Absent,
                EventType::Put => match serde_json::from_slice::<TopologyRecord>(kv.value()) {
                    Ok(value) => Seen::Present(Versioned { value, version: at }),
                    Err(_) => Seen::Bad,
                },
            };
            cache.apply(cluster, seen, at);
        }
        if last > 0 {
            cache.advance(last);
        }
    }
}

async fn keep_alive(client: Client, lease_id: i64, ttl: Duration, per_call: Duration) {
    let interval = (ttl / 3).max(Duration::from_millis(200));
    let mut last_ok = Instant::now();
    let mut stream = None;
    loop {
        tokio::time::sleep(interval).await;
        if last_ok.elapsed() >= ttl {
            tracing::warn!(
                lease_id,
                "etcd lease not renewed within its TTL; renewal stopped"
            );
            return;
        }
        if stream.is_none() {
            let mut c = client.clone();
            match tokio::time::timeout(per_call, c.lease_keep_alive(lease_id)).await {
                Ok(Ok(s)) => {
                    // Opening the stream sends one keep-alive and waits for its answer.
                    stream = Some(s);
                    last_ok = Instant::now();
                    continue;
                }
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => {
                    tracing::warn!(lease_id, "etcd lease is gone; renewal stopped");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease_id, error = %e, "etcd lease keep-alive stream failed");
                    continue;
                }
                Err(_) => {
                    tracing::warn!(lease_id, "etcd lease keep-alive stream timed out");
                    continue;
                }
            }
        }
        let Some((keeper, responses)) = stream.as_mut() else {
            continue;
        };
        let renewed = tokio::time::timeout(per_call, async {
            keeper.keep_alive().await?;
            responses.message().await
        })
        .await;
        match renewed {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                tracing::trace!(lease_id, ttl = r.ttl(), "etcd lease renewed");
                last_ok = Instant::now();
            }
            Ok(Ok(Some(_))) => {
                tracing::warn!(lease_id, "etcd lease is gone; renewal stopped");
                return;
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                tracing::warn!(lease_id, "etcd lease renewal failed; retrying");
                stream = None;
            }
        }
    }
}

impl Coordinator for Etcd {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn try_lock(
        &self,
        cluster: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<LockOutcome, CoordError> {
        let key = self.key(cluster, "lock");
        let value = serde_json::to_string(holder)
            .map_err(|e| CoordError::Backend(format!("encode holder: {e}")))?;
        // Our own leftovers first: a lock our orphaned lease still holds is not "held by" anyone.
        self.revoke_orphans(cluster).await?;
        // etcd counts leases in whole seconds (and raises tiny TTLs to its minimum).
        let ttl_secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let grant = self
            .call("lease grant", |mut c| async move {
                c.lease_grant(ttl_secs, None).await
            })
            .await?;
        let lease_id = grant.id();
        let granted = Duration::from_secs(grant.ttl().max(1) as u64);

        // Two rounds at most: the second only after revoking an orphan of ours found holding it.
        let mut found = None;
        for round in 0..2 {
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease_id)),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = match self
                .call("lock txn", |mut c| async move { c.txn(txn).await })
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    // The txn may or may not have applied; revoking the lease removes the key in
                    // either case. If the revoke fails too, the lease is an orphan of ours.
                    if self.revoke(lease_id).await.is_err() {
                        if let Ok(client) = self.client().await {
                            self.orphan(client, cluster, lease_id, granted).adopt();
                        }
                    }
                    return Err(e);
                }
            };
            if resp.succeeded() {
                // The put is the only write of the txn, so the txn's revision is the key's create_revision.
                let create_revision = resp.header().map(|h| h.revision()).unwrap_or(0);
                return self
                    .acquired(cluster, holder, lease_id, create_revision, granted)
                    .await;
            }
            let kv = resp.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            });
            let owner_lease = kv.as_ref().map(|kv| kv.lease()).unwrap_or(0);
            if round == 0 && owner_lease != 0 && self.book.is_orphan(cluster, &owner_lease) {
                self.revoke_orphans(cluster).await?;
                continue;
            }
            found = kv.and_then(|kv| serde_json::from_slice::<Holder>(kv.value()).ok());
            break;
        }
        if let Err(e) = self.revoke(lease_id).await {
            tracing::debug!(error = %e, "revoking an unused etcd lease failed; it expires by TTL");
        }
        Ok(LockOutcome::HeldBy(found))
    }

    async fn still_held(&self, lease: &Lease) -> Result<bool, CoordError> {
        let (lease_id, create_revision) = match &lease.inner {
            LeaseInner::Etcd {
                lease_id,
                create_revision,
                ..
            } => (*lease_id, *create_revision),
            _ => match parse_token(&lease.token) {
                Some(t) => t,
                None => return Err(CoordError::Backend("not an etcd lease".into())),
            },
        };
        let key = self.key(&lease.cluster, "lock");
        // Linearizable (the default): answered through the leader, never from a stale member.
        let resp = self
            .call("get lock", |mut c| async move { c.get(key, None).await })
            .await?;
        Ok(resp
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == create_revision && kv.lease() == lease_id))
    }

    async fn release(&self, lease: Lease) -> Result<(), CoordError> {
        let Lease { cluster, inner, .. } = lease;
        let LeaseInner::Etcd {
            lease_id,
            create_revision,
            keepalive,
        } = inner
        else {
            return Err(CoordError::Backend("not an etcd lease".into()));
        };
        let orphan = keepalive.disarm();
        let key = self.key(&cluster, "lock");
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                create_revision,
            )])
            .and_then([TxnOp::delete(key, None)]);
        let deleted = self
            .call("unlock txn", |mut c| async move { c.txn(txn).await })
            .await;
        // Revoking also deletes the key (it is attached to the lease); done even if the delete
        // failed. Either one succeeding means the lock is no longer ours in the store.
        let revoked = self.revoke(lease_id).await;
        match (deleted, revoked) {
            (_, Ok(())) | (Ok(_), _) => {
                self.book.gone(&cluster, &lease_id);
                Ok(())
            }
            (Err(e), Err(_)) => {
                // Retried in the background until etcd answers (or says the lease is gone).
                if let Some(o) = orphan {
                    o.adopt();
                }
                Err(e)
            }
        }
    }

    async fn read_record(
        &self,
        cluster: &str,
    ) -> Result<Option<Versioned<TopologyRecord>>, CoordError> {
        self.read_record_at(cluster).await.map(|(r, _)| r)
    }

    async fn poll_record(
        &self,
        cluster: &str,
    ) -> Result<Option<Versioned<TopologyRecord>>, CoordError> {
        self.start_watch().await;
        if let Some(r) = self.cache.lookup(cluster) {
            return Ok(r);
        }
        let ticket = self.cache.read_start();
        let (rec, rev) = self.read_record_at(cluster).await?;
        self.cache.read_done(cluster, ticket, &rec, rev);
        Ok(rec)
    }

    async fn write_record(
        &self,
        cluster: &str,
        record: &TopologyRecord,
        expected: Option<u64>,
    ) -> Result<CasOutcome, CoordError> {
        let key = self.key(cluster, "topology");
        let value = serde_json::to_string(record)
            .map_err(|e| CoordError::Backend(format!("encode record: {e}")))?;
        let guard = match expected {
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Some(v) => Compare::mod_revision(key.clone(), CompareOp::Equal, v as i64),
        };
        let txn = Txn::new().when([guard]).and_then([
            TxnOp::put(key, value, None),
            TxnOp::put(self.key(cluster, "master"), record.master.to_string(), None),
        ]);
        let resp = match self
            .call("topology txn", |mut c| async move { c.txn(txn).await })
            .await
        {
            Ok(r) => r,
            Err(e) => {
                // It may have applied: the poller reads until it knows.
                self.cache.doubt(cluster, None);
                return Err(e);
            }
        };
        let rev = resp.header().map(|h| h.revision() as u64);
        if !resp.succeeded() {
            // The store holds another version than we thought; the cache may hold ours.
            self.cache.doubt(cluster, rev);
            return Ok(CasOutcome::Conflict);
        }
        // Both puts share the txn's revision, which is the record's new mod_revision.
        match rev {
            Some(rev) => {
                self.cache.wrote(cluster, record, rev);
                Ok(CasOutcome::Written(rev))
            }
            None => {
                self.cache.doubt(cluster, None);
                Err(CoordError::Backend(
                    "etcd topology txn: response without header".into(),
                ))
            }
        }
    }

    async fn read_events(&self, cluster: &str) -> Result<Vec<String>, CoordError> {
        let dir = self.key(cluster, "events/");
        let resp = self
            .call("get events", |mut c| async move {
                c.get(dir, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        // Sorted by key, and keys sort by time.
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .collect())
    }

    async fn lock_holder(&self, cluster: &str) -> Result<Option<Holder>, CoordError> {
        let key = self.key(cluster, "lock");
        let resp = self
            .call("get lock", |mut c| async move { c.get(key, None).await })
            .await?;
        Ok(resp.kvs().first().map(|kv| {
            serde_json::from_slice::<Holder>(kv.value()).unwrap_or_else(|_| Holder::unknown())
        }))
    }

    async fn read_controls(&self) -> Result<Option<Versioned<Controls>>, CoordError> {
        let key = format!("{}/_controls", self.prefix);
        let resp = self
            .call(
                "get controls",
                |mut c| async move { c.get(key, None).await },
            )
            .await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let value: Controls = serde_json::from_slice(kv.value())
            .map_err(|e| CoordError::Backend(format!("etcd controls: bad JSON: {e}")))?;
        Ok(Some(Versioned {
            value,
            version: kv.mod_revision() as u64,
        }))
    }

    async fn write_controls(
        &self,
        controls: &Controls,
        expected: Option<u64>,
    ) -> Result<CasOutcome, CoordError> {
        let key = format!("{}/_controls", self.prefix);
        let value = serde_json::to_string(controls)
            .map_err(|e| CoordError::Backend(format!("encode controls: {e}")))?;
        let guard = match expected {
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Some(v) => Compare::mod_revision(key.clone(), CompareOp::Equal, v as i64),
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self
            .call("controls txn", |mut c| async move { c.txn(txn).await })
            .await?;
        if !resp.succeeded() {
            return Ok(CasOutcome::Conflict);
        }
        match resp.header() {
            Some(h) => Ok(CasOutcome::Written(h.revision() as u64)),
            None => Err(CoordError::Backend(
                "etcd controls txn: response without header".into(),
            )),
        }
    }

    async fn append_event(&self, cluster: &str, event_json: &str) -> Result<(), CoordError> {
        if self.events_keep == 0 {
            // `events_keep = 0` turns the etcd event list off (the JSON-lines file remains).
            return Ok(());
        }
        let millis = now_millis();
        let mut written = false;
        // Create-only, so two instances appending in the same millisecond with the same
        // sequence number do not overwrite each other; bounded retries with the next number.
        for _ in 0..3 {
            let seq = self.event_seq.fetch_add(1, Ordering::Relaxed) % 1_000_000;
            let key = self.key(cluster, &format!("events/{millis:016}-{seq:06}"));
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, event_json, None)]);
            let resp = self
                .call("event txn", |mut c| async move { c.txn(txn).await })
                .await?;
            if resp.succeeded() {
                written = true;
                break;
            }
        }
        if !written {
            return Err(CoordError::Backend(
                "etcd event: key collision three times".into(),
            ));
        }
        self.trim_events(cluster).await
    }

    fn keeps_events(&self) -> bool {
        self.events_keep > 0
    }

    fn held_locks(&self) -> Vec<HeldLock> {
        self.book.held()
    }

    async fn heartbeat_member(
        &self,
        member: &str,
        ttl: Duration,
        token: Option<&str>,
    ) -> Result<String, CoordError> {
        super::check_member_id(member)?;
        if let Some(lease_id) = token.and_then(|t| t.parse::<i64>().ok()) {
            // One keep-alive on a fresh stream; TTL 0 or "not found" means the lease is gone.
            let alive = self
                .call("member keep-alive", |mut c| async move {
                    let (mut keeper, mut responses) = c.lease_keep_alive(lease_id).await?;
                    keeper.keep_alive().await?;
                    responses.message().await
                })
                .await;
            match alive {
                Ok(Some(r)) if r.ttl() > 0 => return Ok(lease_id.to_string()),
                Ok(_) => {
                    tracing::warn!(
                        member,
                        lease_id,
                        "etcd member lease expired; registering again"
                    );
                }
                // etcd-client reports it as a keep-alive error or a NotFound status.
                Err(CoordError::Backend(m) | CoordError::Unreachable(m))
                    if m.contains("lease not found") || m.contains("NotFound") =>
                {
                    tracing::warn!(
                        member,
                        lease_id,
                        "etcd member lease expired; registering again"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let ttl_secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let grant = self
            .call("member lease grant", |mut c| async move {
                c.lease_grant(ttl_secs, None).await
            })
            .await?;
        let lease_id = grant.id();
        let key = format!("{}/_members/{member}", self.prefix);
        let value = member.to_string();
        let put = self
            .call("member put", |mut c| async move {
                c.put(key, value, Some(PutOptions::new().with_lease(lease_id)))
                    .await
            })
            .await;
        if let Err(e) = put {
            let _ = self.revoke(lease_id).await;
            return Err(e);
        }
        Ok(lease_id.to_string())
    }

    async fn leave_members(&self, member: &str, token: &str) -> Result<(), CoordError> {
        super::check_member_id(member)?;
        match token.parse::<i64>() {
            // Revoking the lease deletes the key.
            Ok(lease_id) => self.revoke(lease_id).await,
            Err(_) => {
                let key = format!("{}/_members/{member}", self.prefix);
                self.call(
                    "member delete",
                    |mut c| async move { c.delete(key, None).await },
                )
                .await
                .map(|_| ())
            }
        }
    }

    async fn members(&self) -> Result<Vec<String>, CoordError> {
        let dir = format!("{}/_members/", self.prefix);
        let d = dir.clone();
        let resp = self
            .call("list members", |mut c| async move {
                c.get(d, Some(GetOptions::new().with_prefix().with_keys_only()))
                    .await
            })
            .await?;
        let mut out: Vec<String> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                std::str::from_utf8(kv.key())
                    .ok()
                    .and_then(|k| k.strip_prefix(dir.as_str()))
                    .map(str::to_string)
            })
            .filter(|m| !m.is_empty())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn ping(&self) -> Result<(), CoordError> {
        // A linearizable count-only read: needs a leader and quorum, and works for a user whose
        // role only grants read on the prefix (unlike some maintenance RPCs).
        let key = format!("{}/", self.prefix);
        self.call("ping", |mut c| async move {
            c.get(key, Some(GetOptions::new().with_prefix().with_count_only()))
                .await
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip() {
        assert_eq!(parse_token("7587:42"), Some((7587, 42)));
        assert_eq!(parse_token("x"), None);
    }

    #[test]
    fn tls_validation() {
        let mut cfg = EtcdConfig::default();
        assert!(tls_options(&cfg).expect("plain").is_none());
        cfg.endpoints = vec!["https://127.0.0.1:2379".into()];
        let e = tls_options(&cfg).expect_err("https without ca");
        assert!(e.to_string().contains("ca_file"), "{e}");
        cfg.endpoints = vec!["http://127.0.0.1:2379".into()];
        cfg.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(tls_options(&cfg).is_err());
        cfg.endpoints = vec!["https://127.0.0.1:2379".into()];
        let e = tls_options(&cfg).expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn classify_codes() {
        let e = classify(
            "x",
            etcd_client::Error::GRpcStatus(tonic::Status::unavailable("down")),
        );
        assert!(e.is_retryable());
        let e = classify(
            "x",
            etcd_client::Error::GRpcStatus(tonic::Status::invalid_argument(
                "etcdserver: authentication failed, invalid user ID or password",
            )),
        );
        assert!(!e.is_retryable());
    }

    #[tokio::test]
    async fn debug_hides_password() {
        let cfg = EtcdConfig {
            user: Some("root".into()),
            endpoints: vec!["http://127.0.0.1:1".into()],
            ..EtcdConfig::default()
        };
        let t = Timeouts {
            connect: Duration::from_millis(100),
            command: Duration::from_millis(100),
        };
        let e = Etcd::connect(&cfg, Some(Secret::new("hunter2-secret")), &t)
            .await
            .expect("unreachable etcd still builds a lazy coordinator");
        assert!(!format!("{e:?}").contains("hunter2"));
        let err = e.ping().await.expect_err("nothing listens on port 1");
        assert!(err.is_retryable(), "{err}");
        assert!(!err.to_string().contains("hunter2"));
    }
}
