//! `Consul`: sessions + KV acquire + CAS over Consul's HTTP API, as a thin client on reqwest.
//!
//! No maintained crate covers sessions with renewal, `?acquire=` and `?cas=` together (see
//! the README), and the needed surface is a dozen calls, so we speak the HTTP API directly.
//!
//! # Keys (all under `<prefix>/<cluster>/`)
//! - `lock`: the failover lock, acquired with `?acquire=<session>`; value = the `Holder` JSON.
//! - `topology`: the `TopologyRecord` JSON; version = its `ModifyIndex`; written with a
//!   transaction whose first op is a `cas` (index 0 = create only) and whose second op sets
//!   `master` = `host:port` as plain text for consul-template, so the mirror never disagrees
//!   with the record.
//! - `events/<20-digit unix millis>-<random>`: audit events, trimmed to `events_keep`.
//! - `<prefix>/_members/<instance id>` (scale-out): a live `serve` instance, acquired by its
//!   own member session (TTL `service.member_ttl`, `Behavior = delete`), renewed by every
//!   heartbeat; `members` lists the keys that a session holds.
//! - `<prefix>/_controls` (not under a cluster): the shared operator controls JSON, written
//!   with `?cas=<ModifyIndex>` (0 = create only).
//!
//! # Lock, fencing and TTL
//! Every `try_lock` creates a fresh session (`Behavior = release`, TTL and lock-delay from the
//! config) because Consul lets the *same* session re-acquire a key it holds; a fresh session
//! makes a second `try_lock` by the same instance answer `HeldBy` like anyone else's. The
//! fencing token is `<session>:<LockIndex>` read with `?consistent`; `still_held` re-reads
//! the key and compares both. The session is renewed every TTL/2 by a background task that
//! stops on `release`, when the `Lease` is dropped, or when Consul answers 404 (session gone).
//! The session TTL is the `ttl` argument of `try_lock` (the service passes `policy.lock_ttl`,
//! which config validation keeps above the longest step and within Consul's 10 s..24 h), so one
//! knob governs every backend.
//!
//! # Consul pitfalls this design accounts for
//! - **Session TTL is a lower bound:** Consul arms its timer at 2×TTL (and may extend it
//!   under load), so a holder that stopped renewing keeps the lock for up to 2×TTL, plus the
//!   lock-delay. Holders must re-check `still_held` before acting (fencing), not trust time.
//! - **Health checks drop locks on blips:** Consul binds new sessions to the node's
//!   `serfHealth` check by default, and a few seconds of gossip trouble then invalidates the
//!   session and releases the lock mid-failover. We therefore send `Checks: []` and
//!   `NodeChecks: []` (both, because Consul ≥ 1.7 reads `NodeChecks`/`ServiceChecks` and older
//!   versions read `Checks`) unless `checks` is configured: only the TTL or an explicit destroy
//!   ends our sessions.
//! - **Lock-delay:** after a session is invalidated (TTL, destroy, check failure) its keys
//!   cannot be re-acquired for `LockDelay` (Consul default 15 s). We default to 1 ms (as
//!   Patroni does) so a takeover is not stalled, and `release` clears the key with
//!   `?release=` *before* destroying the session, which involves no lock-delay at all.
//!   During a lock-delay the key has no `Session`; `try_lock` then answers `HeldBy(None)`.
//! - **Own orphaned sessions:** a session whose release failed (Consul unreachable), whose
//!   `Lease` was dropped without `release`, or whose acquire failed without an answer may still
//!   hold the lock until it lapses (up to 2×TTL after its last renewal). It is recorded as this
//!   client's orphan: a background task releases and destroys it (retrying until Consul
//!   answers), and `try_lock` does so before acquiring again, so this instance never answers
//!   "lock held" to itself.
//! - Locking is advisory: writes without `?acquire` still succeed on a locked key, which is
//!   why the record is guarded by its own CAS and fencing is checked by callers.
//!
//! # Records for the poller
//! `poll_record` answers from a cache kept by ONE blocking query per coordinator, `GET
//! /v1/kv/<prefix>/?recurse&index=<last X-Consul-Index>&wait=30s`, re-issued as soon as it
//! answers (started by the first `poll_record`). Each answer is the whole prefix: every
//! `…/topology` record is taken at its `ModifyIndex`, records gone from it are gone, and a
//! cluster it does not name is absent. An index that goes backwards starts over with every
//! entry unknown; a failed query marks the cache unhealthy (every poll reads directly) and
//! starts over from index 0 after a backoff of 100 ms doubling to 5 s. Our own written CAS
//! updates the cache at once; a conflict or an unknown outcome puts the cluster in doubt
//! until a direct read that started after it. Staleness: the query returns as soon as
//! anything under the prefix changes; a silently dead connection is noticed within the wait
//! plus 5 s. Cost: each change under the prefix (locks, events, members) re-sends the whole
//! prefix to each instance once.
//!
//! # Discovery
//! `publish_roles` registers each node as an external node `pika-<cluster>-<host>-<port>`
//! with one service instance (name from `catalog_service`, default `pika-<cluster>`) tagged
//! `master` or `replica`. Clients can resolve `master.pika-<cluster>.service.consul`.
//! Nodes removed from the config stay registered until deregistered by hand.
//!
//! # Errors
//! Transport errors, timeouts, 429 and 5xx are `Unreachable`; 403 is `Backend` naming the ACL
//! permission that is missing. The token travels only in the `X-Consul-Token` header (marked
//! sensitive) and never appears in logs, `Debug` or error texts.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::header::HeaderValue;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::{
    CasOutcome, CoordError, Coordinator, HeldLock, Holder, Lease, LeaseInner, LockBook,
    LockOutcome, RecordCache, ReleaseRetry, Seen,
};
use crate::config::{ConsulConfig, Secret, Timeouts};
use crate::controls::Controls;
use crate::model::{Addr, TopologyRecord, Versioned};

/// The session renewal task; aborted when dropped, so a dropped `Lease` stops renewing, and
/// its session is then handed to the orphan reaper (released and destroyed in the background).
#[derive(Debug)]
pub(crate) struct RenewTask {
    task: tokio::task::JoinHandle<()>,
    /// `None` once `release` took over.
    orphan: Option<Orphan>,
}

impl RenewTask {
    /// Stop renewing; the caller releases the session itself.
    fn disarm(mut self) -> Option<Orphan> {
        self.task.abort();
        self.orphan.take()
    }
}

impl Drop for RenewTask {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(o) = self.orphan.take() {
            o.adopt();
        }
    }
}

/// A session of ours that may still hold a lock nobody uses.
#[derive(Debug)]
pub(crate) struct Orphan {
    inner: Arc<Inner>,
    cluster: String,
    session: String,
    ttl: Duration,
}

impl Orphan {
    /// Record it and start the retrying release (once per session).
    fn adopt(self) {
        if !self
            .inner
            .book
            .orphaned(&self.cluster, self.session.clone())
        {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let mut retry = ReleaseRetry::new(self.ttl);
            loop {
                match free_session(&self.inner, &self.cluster, &self.session).await {
                    Ok(()) => {
                        tracing::info!(cluster = %self.cluster, session = %self.session, "orphaned consul lock session released");
                        self.inner.book.gone(&self.cluster, &self.session);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(cluster = %self.cluster, session = %self.session, error = %e, "releasing an orphaned consul session failed; retrying");
                    }
                }
                if !retry.wait().await {
                    tracing::warn!(cluster = %self.cluster, session = %self.session, "gave up releasing an orphaned consul session; its TTL frees it");
                    return;
                }
            }
        });
    }
}

/// Give up `session`'s hold on the cluster's lock: `?release=` (no lock-delay), then destroy
/// the session (which also releases, and stops it from being renewed or reused). Done when
/// either succeeded: the lock is then no longer held by this session.
async fn free_session(inner: &Inner, cluster: &str, session: &str) -> Result<(), CoordError> {
    let key = format!("{}/{cluster}/lock", inner.prefix);
    let released = call(
        inner,
        Method::PUT,
        &format!("/v1/kv/{key}"),
        &[("release", session.to_string())],
        Body::Empty,
        Perm::KeyWrite,
    )
    .await
    .and_then(|r| r.ok(&format!("release {key}")).map(|_| ()));
    let destroyed = call(
        inner,
        Method::PUT,
        &format!("/v1/session/destroy/{session}"),
        &[],
        Body::Empty,
        Perm::Session,
    )
    .await
    .and_then(|r| r.ok("destroy session").map(|_| ()));
    match (released, destroyed) {
        (Ok(()), _) | (_, Ok(())) => Ok(()),
        (Err(e), Err(_)) => Err(e),
    }
}

/// Consul coordinator. `Clone` shares the HTTP connection pool.
#[derive(Clone, Debug)]
pub struct Consul {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// `http(s)://host:port` without a trailing slash.
    base: String,
    /// Marked sensitive: its `Debug` prints `Sensitive`.
    token: Option<HeaderValue>,
    datacenter: Option<String>,
    prefix: String,
    lock_delay: Duration,
    checks: Vec<String>,
    catalog: bool,
    catalog_service: String,
    events_keep: usize,
    event_seq: AtomicU64,
    /// The lock sessions this client created (live and orphaned).
    book: LockBook<String>,
    /// The records for `poll_record`, kept by one blocking query on the prefix (started by
    /// the first `poll_record`).
    cache: Arc<RecordCache>,
    watch: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = self.watch.get_mut().ok().and_then(Option::take) {
            t.abort();
        }
    }
}

/// Wait of one blocking query on the records' prefix (Consul caps it at 10 min; 30 s keeps a
/// silently dead connection from looking healthy for long: the request times out 5 s later).
const WATCH_WAIT: Duration = Duration::from_secs(30);

/// One KV entry as Consul returns it (`GET /v1/kv/<key>`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvEntry {
    #[serde(default)]
    lock_index: u64,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    modify_index: u64,
}

impl KvEntry {
    fn bytes(&self) -> Result<Vec<u8>, CoordError> {
        match &self.value {
            None => Ok(Vec::new()),
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| CoordError::Backend(format!("consul: KV value is not base64: {e}"))),
        }
    }
    fn holder_session(&self) -> Option<&str> {
        self.session.as_deref().filter(|s| !s.is_empty())
    }
}

/// Which ACL permission a request needs, for 403 messages.
#[derive(Clone, Copy)]
enum Perm {
    KeyRead,
    KeyWrite,
    Session,
    Catalog,
    None,
}

impl Perm {
    fn describe(self, prefix: &str) -> String {
        match self {
            Perm::KeyRead => format!("key:read on \"{prefix}/\""),
            Perm::KeyWrite => format!("key:write on \"{prefix}/\""),
            Perm::Session => "session:write on the agent's node".into(),
            Perm::Catalog => "node:write and service:write for the registered nodes".into(),
            Perm::None => "no permission (unexpected 403)".into(),
        }
    }
}

enum Body {
    Empty,
    Json(serde_json::Value),
    Raw(Vec<u8>),
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    /// `X-Consul-Index`.
    index: Option<u64>,
}

impl Reply {
    fn text(&self) -> String {
        let t = String::from_utf8_lossy(&self.body);
        let t = t.trim();
        // Bounded: error texts end up in logs.
        t.chars().take(200).collect()
    }
    fn json<T: for<'de> Deserialize<'de>>(&self, what: &str) -> Result<T, CoordError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CoordError::Backend(format!(
                "consul: {what}: unexpected answer ({e}): {}",
                self.text()
            ))
        })
    }
    fn ok(self, what: &str) -> Result<Reply, CoordError> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(CoordError::Backend(format!(
                "consul: {what}: HTTP {}: {}",
                self.status,
                self.text()
            )))
        }
    }
}

/// Go duration syntax, as Consul parses it.
fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

/// Consul node names: keep `[A-Za-z0-9-]`, map everything else to `-`.
fn node_name(cluster: &str, a: &Addr) -> String {
    format!("pika-{cluster}-{}-{}", a.host, a.port)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl Consul {
    /// Build the client. No request is made; use `ping` to check reachability.
    /// `https://` addresses need the `consul-tls` cargo feature (on by default).
    pub fn new(
        cfg: &ConsulConfig,
        token: Option<Secret>,
        timeouts: &Timeouts,
    ) -> Result<Consul, CoordError> {
        let base = cfg.address.trim_end_matches('/').to_string();
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            return Err(CoordError::Backend(format!(
                "consul address {base:?} must start with http:// or https://"
            )));
        }
        crate::tls::install_crypto_provider();
        let builder = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.connect + timeouts.command);
        let builder = if https {
            with_tls(builder, cfg)?
        } else {
            builder
        };
        let http = builder
            .build()
            .map_err(|e| CoordError::Backend(format!("consul: cannot build HTTP client: {e}")))?;
        let token = token
            .map(|t| {
                HeaderValue::from_str(t.expose())
                    .map(|mut v| {
                        v.set_sensitive(true);
                        v
                    })
                    .map_err(|_| {
                        CoordError::Backend(
                            "consul token contains characters not allowed in a header".into(),
                        )
                    })
            })
            .transpose()?;
        Ok(Consul {
            inner: Arc::new(Inner {
                http,
                base,
                token,
                datacenter: cfg.datacenter.clone(),
                prefix: cfg.prefix.trim_matches('/').to_string(),
                lock_delay: cfg.lock_delay,
                checks: cfg.checks.clone(),
                catalog: cfg.catalog,
                catalog_service: cfg.catalog_service.clone(),
                events_keep: cfg.events_keep,
                event_seq: AtomicU64::new(0),
                book: LockBook::new(),
                cache: Arc::new(RecordCache::default()),
                watch: std::sync::Mutex::new(None),
            }),
        })
    }

    fn key(&self, cluster: &str, leaf: &str) -> String {
        format!("{}/{cluster}/{leaf}", self.inner.prefix)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body,
        perm: Perm,
    ) -> Result<Reply, CoordError> {
        call(&self.inner, method, path, query, body, perm).await
    }

    /// Start the blocking query on the records' prefix once.
    fn start_watch(&self) {
        let mut w = self.inner.watch.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_none() {
            *w = Some(tokio::spawn(record_watch(WatchConn {
                http: self.inner.http.clone(),
                base: self.inner.base.clone(),
                token: self.inner.token.clone(),
                datacenter: self.inner.datacenter.clone(),
                prefix: self.inner.prefix.clone(),
                cache: Arc::clone(&self.inner.cache),
            })));
        }
    }

    /// Is the blocking query on the records healthy (`poll_record` then answers from it)?
    pub fn record_watch_healthy(&self) -> bool {
        self.inner.cache.healthy()
    }

    /// How many times `poll_record` read a record from Consul (not from the cache).
    pub fn poll_reads(&self) -> u64 {
        self.inner.cache.direct_reads()
    }

    /// Test hook: while `hold` is set, answers of the blocking query are not applied (as with
    /// a slow connection).
    #[doc(hidden)]
    pub fn hold_record_watch(&self, hold: bool) {
        self.inner.cache.set_hold(hold);
    }

    /// The record and the `X-Consul-Index` of the read.
    async fn read_record_at(
        &self,
        cluster: &str,
    ) -> Result<(Option<Versioned<TopologyRecord>>, u64), CoordError> {
        let key = self.key(cluster, "topology");
        let r = self
            .call(
                Method::GET,
                &format!("/v1/kv/{key}"),
                &[("consistent", String::new())],
                Body::Empty,
                Perm::KeyRead,
            )
            .await?;
        let index = r.index.unwrap_or(0);
        if r.status == 404 {
            return Ok((None, index));
        }
        let entries: Vec<KvEntry> = r.ok(&format!("read {key}"))?.json(&format!("read {key}"))?;
        let Some(e) = entries.into_iter().next() else {
            return Ok((None, index));
        };
        let value: TopologyRecord = serde_json::from_slice(&e.bytes()?).map_err(|err| {
            CoordError::Backend(format!(
                "consul: {key} is not a valid topology record: {err}"
            ))
        })?;
        Ok((
            Some(Versioned {
                value,
                version: e.modify_index,
            }),
            index,
        ))
    }

    async fn get_kv(&self, key: &str) -> Result<Option<KvEntry>, CoordError> {
        let r = self
            .call(
                Method::GET,
                &format!("/v1/kv/{key}"),
                &[("consistent", String::new())],
                Body::Empty,
                Perm::KeyRead,
            )
            .await?;
        if r.status == 404 {
            return Ok(None);
        }
        let entries: Vec<KvEntry> = r.ok(&format!("read {key}"))?.json(&format!("read {key}"))?;
        Ok(entries.into_iter().next())
    }

    async fn create_session(
        &self,
        cluster: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<String, CoordError> {
        let i = &self.inner;
        let body = json!({
            "Name": format!("pika-remedy {cluster} {}", holder.instance),
            "TTL": go_duration(ttl),
            "Behavior": "release",
            "LockDelay": go_duration(i.lock_delay),
            "Checks": i.checks,
            "NodeChecks": i.checks,
        });
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let r = self
            .call(
                Method::PUT,
                "/v1/session/create",
                &[],
                Body::Json(body),
                Perm::Session,
            )
            .await?
            .ok("create session")?;
        Ok(r.json::<Created>("create session")?.id)
    }

    async fn destroy_session(&self, session: &str) -> Result<(), CoordError> {
        self.call(
            Method::PUT,
            &format!("/v1/session/destroy/{session}"),
            &[],
            Body::Empty,
            Perm::Session,
        )
        .await?
        .ok("destroy session")
        .map(|_| ())
    }

    /// Free this client's orphaned sessions of `cluster` (see the module docs). An error means
    /// the lock may still be ours: the caller must not report "held by".
    async fn free_orphans(&self, cluster: &str) -> Result<(), CoordError> {
        for session in self.inner.book.orphans(cluster) {
            free_session(&self.inner, cluster, &session).await?;
            tracing::info!(cluster, session = %session, "released this instance's orphaned consul lock session before locking again");
            self.inner.book.gone(cluster, &session);
        }
        Ok(())
    }

    /// The part of `try_lock` after the session exists; the caller destroys the session on
    /// any outcome but `Acquired`.
    async fn acquire(
        &self,
        cluster: &str,
        holder: &Holder,
        session: &str,
    ) -> Result<Option<(u64, Holder)>, CoordError> {
        let key = self.key(cluster, "lock");
        let value = serde_json::to_vec(holder)
            .map_err(|e| CoordError::Backend(format!("consul: cannot encode holder: {e}")))?;
        let got: bool = self
            .call(
                Method::PUT,
                &format!("/v1/kv/{key}"),
                &[("acquire", session.to_string())],
                Body::Raw(value),
                Perm::KeyWrite,
            )
            .await?
            .ok(&format!("acquire {key}"))?
            .json(&format!("acquire {key}"))?;
        if !got {
            return Ok(None);
        }
        match self.get_kv(&key).await? {
            Some(e) if e.holder_session() == Some(session) => {
                Ok(Some((e.lock_index, holder.clone())))
            }
            // Acquired and lost within one round trip (an operator or a TTL): report as held.
            _ => Ok(None),
        }
    }
}

#[cfg(feature = "consul-tls")]
fn with_tls(
    builder: reqwest::ClientBuilder,
    cfg: &ConsulConfig,
) -> Result<reqwest::ClientBuilder, CoordError> {
    let Some(path) = &cfg.ca_file else {
        return Ok(builder);
    };
    let pem = std::fs::read(path).map_err(|e| {
        CoordError::Backend(format!(
            "consul ca_file {}: cannot read: {e}",
            path.display()
        ))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        CoordError::Backend(format!(
            "consul ca_file {}: not a PEM bundle: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(CoordError::Backend(format!(
            "consul ca_file {}: no certificate found",
            path.display()
        )));
    }
    Ok(certs
        .into_iter()
        .fold(builder, |b, c| b.add_root_certificate(c)))
}

#[cfg(not(feature = "consul-tls"))]
fn with_tls(
    _builder: reqwest::ClientBuilder,
    _cfg: &ConsulConfig,
) -> Result<reqwest::ClientBuilder, CoordError> {
    Err(CoordError::Backend(
        "https needs the `consul-tls` cargo feature (this binary was built without it)".into(),
    ))
}

async fn call(
    inner: &Inner,
    method: Method,
    path: &str,
    query: &[(&str, String)],
    body: Body,
    perm: Perm,
) -> Result<Reply, CoordError> {
    let what = format!("{method} {path}");
    let mut req = inner.http.request(method, format!("{}{path}", inner.base));
    if !query.is_empty() {
        req = req.query(query);
    }
    if let Some(dc) = &inner.datacenter {
        req = req.query(&[("dc", dc)]);
    }
    if let Some(t) = &inner.token {
        req = req.header("X-Consul-Token", t.clone());
    }
    req = match body {
        Body::Empty => req,
        Body::Json(v) => req.json(&v),
        Body::Raw(b) => req.body(b),
    };
    // reqwest errors name the URL (no token: it is only in a header).
    let resp = req
        .send()
        .await
        .map_err(|e| CoordError::Unreachable(format!("consul {what}: {e}")))?;
    let status = resp.status().as_u16();
    let index = consul_index(&resp);
    let body = resp
        .bytes()
        .await
        .map_err(|e| CoordError::Unreachable(format!("consul {what}: reading the answer: {e}")))?
        .to_vec();
    let reply = Reply {
        status,
        body,
        index,
    };
    match status {
        403 => Err(CoordError::Backend(format!(
            "consul {what}: permission denied (HTTP 403): the ACL token needs {}",
            perm.describe(&inner.prefix)
        ))),
        429 | 500..=599 => Err(CoordError::Unreachable(format!(
            "consul {what}: HTTP {status}: {}",
            reply.text()
        ))),
        _ => Ok(reply),
    }
}

fn consul_index(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get("X-Consul-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// What the blocking query needs (not `Inner`: the task must not keep the client alive).
struct WatchConn {
    http: reqwest::Client,
    base: String,
    token: Option<HeaderValue>,
    datacenter: Option<String>,
    prefix: String,
    cache: Arc<RecordCache>,
}

/// The cluster of a `<prefix>/<cluster>/topology` key.
fn topology_cluster<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    let c = key
        .strip_prefix(prefix)?
        .strip_prefix('/')?
        .strip_suffix("/topology")?;
    (!c.is_empty()).then_some(c)
}

/// One blocking query `GET /v1/kv/<prefix>/?recurse&index=<last>&wait=30s`, re-issued for as
/// long as the coordinator lives. Every answer is the whole prefix at its `X-Consul-Index`:
/// the cache takes each record at its `ModifyIndex` and marks the records that are gone. An
/// index that goes backwards (a restored or new cluster) starts over from index 0 with every
/// entry unknown; any failure marks the cache unhealthy (polls read directly) and starts over
/// after a bounded backoff.
async fn record_watch(w: WatchConn) {
    let mut backoff = super::watch_backoff();
    let mut last: u64 = 0;
    loop {
        let started = std::time::Instant::now();
        match watch_round(&w, last).await {
            Ok(index) => {
                if index == last && started.elapsed() < Duration::from_secs(1) {
                    // Unchanged at once: the wait was not honoured (a proxy?). Pace the
                    // loop; what changes meanwhile is seen at most a second later.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                // (An index that went backwards was answered with a fresh snapshot.)
                last = index.max(1);
                w.cache.set_healthy(true);
                backoff.reset();
            }
            Err(e) => {
                w.cache.set_healthy(false);
                last = 0;
                tracing::debug!(error = %e, "consul record query failed; polls read directly until it is back");
                backoff.wait().await;
            }
        }
    }
}

/// One blocking query; applies its answer and returns its `X-Consul-Index`.
async fn watch_round(w: &WatchConn, last: u64) -> Result<u64, CoordError> {
    let dir = format!("{}/", w.prefix);
    let what = format!("GET /v1/kv/{dir} (blocking)");
    let mut req = w
        .http
        .get(format!("{}/v1/kv/{dir}", w.base))
        .query(&[("recurse", String::new())])
        .timeout(WATCH_WAIT + Duration::from_secs(5));
    if last > 0 {
        req = req.query(&[
            ("index", last.to_string()),
            ("wait", go_duration(WATCH_WAIT)),
        ]);
    }
    if let Some(dc) = &w.datacenter {
        req = req.query(&[("dc", dc)]);
    }
    if let Some(t) = &w.token {
        req = req.header("X-Consul-Token", t.clone());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| CoordError::Unreachable(format!("consul {what}: {e}")))?;
    let status = resp.status().as_u16();
    let Some(index) = consul_index(&resp) else {
        return Err(CoordError::Backend(format!(
            "consul {what}: HTTP {status} without X-Consul-Index"
        )));
    };
    let body = resp
        .bytes()
        .await
        .map_err(|e| CoordError::Unreachable(format!("consul {what}: reading the answer: {e}")))?;
    let entries: Vec<serde_json::Value> = match status {
        404 => Vec::new(),
        200 => serde_json::from_slice(&body)
            .map_err(|e| CoordError::Backend(format!("consul {what}: unexpected answer: {e}")))?,
        s => {
            return Err(CoordError::Unreachable(format!("consul {what}: HTTP {s}")));
        }
    };
    w.cache.wait_unheld().await;
    if index < last || last == 0 {
        w.cache.resync(index);
    }
    let mut full = Vec::new();
    for e in entries {
        let Some(key) = e.get("Key").and_then(|k| k.as_str()) else {
            continue;
        };
        let Some(cluster) = topology_cluster(&w.prefix, key) else {
            continue;
        };
        let at = e.get("ModifyIndex").and_then(|v| v.as_u64()).unwrap_or(0);
        let value = e
            .get("Value")
            .and_then(|v| v.as_str())
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .and_then(|b| serde_json::from_slice::<TopologyRecord>(&b).ok());
        let seen = match value {
            Some(value) => Seen::Present(Versioned { value, version: at }),
            None => Seen::Bad,
        };
        full.push((cluster.to_string(), seen, at));
    }
    w.cache.snapshot(full, index);
    Ok(index)
}

/// Renew `session` every TTL/2 until aborted or Consul says the session is gone.
fn spawn_renew(inner: Arc<Inner>, cluster: &str, session: String, ttl: Duration) -> RenewTask {
    let every = ttl / 2;
    let orphan = Orphan {
        inner: Arc::clone(&inner),
        cluster: cluster.to_string(),
        session: session.clone(),
        ttl,
    };
    let task = tokio::spawn(async move {
        let mut wait = every;
        loop {
            tokio::time::sleep(wait).await;
            let path = format!("/v1/session/renew/{session}");
            match call(&inner, Method::PUT, &path, &[], Body::Empty, Perm::Session).await {
                Ok(r) if r.status == 404 => {
                    tracing::warn!(session = %session, "consul session is gone; lock lost, renewal stopped");
                    return;
                }
                Ok(r) if (200..300).contains(&r.status) => wait = every,
                Ok(r) => {
                    tracing::warn!(session = %session, status = r.status, "consul session renewal refused; retrying");
                    wait = every / 4;
                }
                Err(e) => {
                    tracing::warn!(session = %session, error = %e, "consul session renewal failed; retrying");
                    wait = every / 4;
                }
            }
        }
    });
    RenewTask {
        task,
        orphan: Some(orphan),
    }
}

impl Coordinator for Consul {
    fn kind(&self) -> &'static str {
        "consul"
    }

    async fn try_lock(
        &self,
        cluster: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<LockOutcome, CoordError> {
        // Our own leftovers first: a lock our orphaned session holds is not "held by" anyone.
        self.free_orphans(cluster).await?;
        let session = self.create_session(cluster, holder, ttl).await?;
        // Two rounds at most: the second only after freeing an orphan of ours found holding it.
        for round in 0..2 {
            match self.acquire(cluster, holder, &session).await {
                Ok(Some((lock_index, holder))) => {
                    self.inner.book.acquired(cluster, session.clone());
                    let renew = spawn_renew(self.inner.clone(), cluster, session.clone(), ttl);
                    return Ok(LockOutcome::Acquired(Lease {
                        cluster: cluster.to_string(),
                        token: format!("{session}:{lock_index}"),
                        holder,
                        inner: LeaseInner::Consul {
                            session,
                            lock_index,
                            renew,
                        },
                    }));
                }
                Ok(None) => {}
                Err(e) => {
                    // The acquire may have applied without an answer: then this session holds
                    // the lock, and must be freed even if Consul is down right now.
                    if self.destroy_session(&session).await.is_err() {
                        Orphan {
                            inner: Arc::clone(&self.inner),
                            cluster: cluster.to_string(),
                            session: session.clone(),
                            ttl,
                        }
                        .adopt();
                    }
                    return Err(e);
                }
            }
            let entry = match self.get_kv(&self.key(cluster, "lock")).await {
                Ok(e) => e,
                Err(e) => {
                    let _ = self.destroy_session(&session).await;
                    return Err(e);
                }
            };
            let owner = entry
                .as_ref()
                .and_then(|e| e.holder_session().map(str::to_string));
            if round == 0
                && owner
                    .as_ref()
                    .is_some_and(|o| self.inner.book.is_orphan(cluster, o))
            {
                if let Err(e) = self.free_orphans(cluster).await {
                    let _ = self.destroy_session(&session).await;
                    return Err(e);
                }
                continue;
            }
            // Best effort: an unused session lapses after its TTL anyway.
            if let Err(e) = self.destroy_session(&session).await {
                tracing::debug!(error = %e, "could not destroy an unused consul session");
            }
            let who = entry
                .filter(|e| e.holder_session().is_some())
                .and_then(|e| e.bytes().ok())
                .and_then(|b| serde_json::from_slice::<Holder>(&b).ok());
            return Ok(LockOutcome::HeldBy(who));
        }
        // Unreachable in practice (round 1 always returns); answer like a lock-delay.
        let _ = self.destroy_session(&session).await;
        Ok(LockOutcome::HeldBy(None))
    }

    async fn still_held(&self, lease: &Lease) -> Result<bool, CoordError> {
        let LeaseInner::Consul {
            session,
            lock_index,
            ..
        } = &lease.inner
        else {
            return Err(CoordError::Backend(
                "lease was not issued by the consul coordinator".into(),
            ));
        };
        Ok(
            match self.get_kv(&self.key(&lease.cluster, "lock")).await? {
                Some(e) => {
                    e.holder_session() == Some(session.as_str()) && e.lock_index == *lock_index
                }
                None => false,
            },
        )
    }

    async fn release(&self, lease: Lease) -> Result<(), CoordError> {
        let LeaseInner::Consul { session, renew, .. } = lease.inner else {
            return Err(CoordError::Backend(
                "lease was not issued by the consul coordinator".into(),
            ));
        };
        let orphan = renew.disarm();
        match free_session(&self.inner, &lease.cluster, &session).await {
            Ok(()) => {
                self.inner.book.gone(&lease.cluster, &session);
                Ok(())
            }
            Err(e) => {
                // Retried in the background until Consul answers.
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
        self.start_watch();
        if let Some(r) = self.inner.cache.lookup(cluster) {
            return Ok(r);
        }
        let ticket = self.inner.cache.read_start();
        let (rec, index) = self.read_record_at(cluster).await?;
        self.inner.cache.read_done(cluster, ticket, &rec, index);
        Ok(rec)
    }

    async fn write_record(
        &self,
        cluster: &str,
        record: &TopologyRecord,
        expected: Option<u64>,
    ) -> Result<CasOutcome, CoordError> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let value = serde_json::to_vec(record)
            .map_err(|e| CoordError::Backend(format!("consul: cannot encode record: {e}")))?;
        // One transaction: the CAS on the record and the plain-text master mirror.
        let ops = json!([
            {"KV": {"Verb": "cas", "Key": self.key(cluster, "topology"), "Value": b64(&value), "Index": expected.unwrap_or(0)}},
            {"KV": {"Verb": "set", "Key": self.key(cluster, "master"), "Value": b64(record.master.to_string().as_bytes())}},
        ]);
        let out = self.write_record_txn(ops).await;
        match &out {
            Ok(CasOutcome::Written(v)) => self.inner.cache.wrote(cluster, record, *v),
            // The store holds another version than we thought, or the outcome is unknown.
            _ => self.inner.cache.doubt(cluster, None),
        }
        out
    }

    async fn read_events(&self, cluster: &str) -> Result<Vec<String>, CoordError> {
        let dir = self.key(cluster, "events/");
        let r = self
            .call(
                Method::GET,
                &format!("/v1/kv/{dir}"),
                &[("recurse", String::new())],
                Body::Empty,
                Perm::KeyRead,
            )
            .await?;
        if r.status == 404 {
            return Ok(Vec::new());
        }
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Keyed {
            key: String,
            #[serde(default)]
            value: Option<String>,
        }
        let list: Vec<Keyed> = r.ok("list events")?.json("list events")?;
        for k in list {
            let bytes = match k.value {
                Some(v) => base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|e| {
                        CoordError::Backend(format!("consul: event is not base64: {e}"))
                    })?,
                None => Vec::new(),
            };
            entries.push((k.key, bytes));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries
            .into_iter()
            .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
            .collect())
    }

    async fn lock_holder(&self, cluster: &str) -> Result<Option<Holder>, CoordError> {
        Ok(self
            .get_kv(&self.key(cluster, "lock"))
            .await?
            .filter(|e| e.holder_session().is_some())
            .map(|e| {
                e.bytes()
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
                    .unwrap_or_else(Holder::unknown)
            }))
    }

    async fn read_controls(&self) -> Result<Option<Versioned<Controls>>, CoordError> {
        let key = format!("{}/_controls", self.inner.prefix);
        let Some(e) = self.get_kv(&key).await? else {
            return Ok(None);
        };
        let value: Controls = serde_json::from_slice(&e.bytes()?).map_err(|err| {
            CoordError::Backend(format!(
                "consul: {key} is not a valid controls document: {err}"
            ))
        })?;
        Ok(Some(Versioned {
            value,
            version: e.modify_index,
        }))
    }

    async fn write_controls(
        &self,
        controls: &Controls,
        expected: Option<u64>,
    ) -> Result<CasOutcome, CoordError> {
        let key = format!("{}/_controls", self.inner.prefix);
        let value = serde_json::to_vec(controls)
            .map_err(|e| CoordError::Backend(format!("consul: cannot encode controls: {e}")))?;
        let written: bool = self
            .call(
                Method::PUT,
                &format!("/v1/kv/{key}"),
                &[("cas", expected.unwrap_or(0).to_string())],
                Body::Raw(value),
                Perm::KeyWrite,
            )
            .await?
            .ok("write controls")?
            .json("write controls")?;
        if !written {
            return Ok(CasOutcome::Conflict);
        }
        // The new ModifyIndex, for the caller's next compare-and-set.
        match self.get_kv(&key).await? {
            Some(e) => Ok(CasOutcome::Written(e.modify_index)),
            None => Err(CoordError::Backend(
                "consul: controls vanished right after the write".into(),
            )),
        }
    }

    async fn append_event(&self, cluster: &str, event_json: &str) -> Result<(), CoordError> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        // Random suffix: events from two instances in the same millisecond must not collide.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(self.inner.event_seq.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        let key = self.key(
            cluster,
            &format!("events/{millis:020}-{:08x}", h.finish() as u32),
        );
        self.call(
            Method::PUT,
            &format!("/v1/kv/{key}"),
            &[],
            Body::Raw(event_json.as_bytes().to_vec()),
            Perm::KeyWrite,
        )
        .await?
        .ok("append event")?;
        let dir = self.key(cluster, "events/");
        let r = self
            .call(
                Method::GET,
                &format!("/v1/kv/{dir}"),
                &[("keys", String::new())],
                Body::Empty,
                Perm::KeyRead,
            )
            .await?;
        if r.status == 404 {
            return Ok(());
        }
        let mut keys: Vec<String> = r.ok("list events")?.json("list events")?;
        keys.sort();
        let excess = keys.len().saturating_sub(self.inner.events_keep);
        for old in &keys[..excess] {
            self.call(
                Method::DELETE,
                &format!("/v1/kv/{old}"),
                &[],
                Body::Empty,
                Perm::KeyWrite,
            )
            .await?
            .ok("trim events")?;
        }
        Ok(())
    }

    async fn publish_roles(
        &self,
        cluster: &str,
        master: &Addr,
        replicas: &[Addr],
    ) -> Result<(), CoordError> {
        if !self.inner.catalog {
            return Ok(());
        }
        let service = self.inner.catalog_service.replace("{cluster}", cluster);
        let nodes =
            std::iter::once((master, "master")).chain(replicas.iter().map(|r| (r, "replica")));
        for (addr, tag) in nodes {
            let node = node_name(cluster, addr);
            let mut body = json!({
                "Node": node,
                "Address": addr.host,
                "NodeMeta": {"external-node": "true", "external-probe": "false"},
                "Service": {
                    "ID": node,
                    "Service": service,
                    "Address": addr.host,
                    "Port": addr.port,
                    "Tags": [tag],
                },
            });
            if let Some(dc) = &self.inner.datacenter {
                body["Datacenter"] = json!(dc);
            }
            self.call(
                Method::PUT,
                "/v1/catalog/register",
                &[],
                Body::Json(body),
                Perm::Catalog,
            )
            .await?
            .ok(&format!("register {node}"))?;
        }
        Ok(())
    }

    fn keeps_events(&self) -> bool {
        self.inner.events_keep > 0
    }

    fn held_locks(&self) -> Vec<HeldLock> {
        self.inner.book.held()
    }

    async fn heartbeat_member(
        &self,
        member: &str,
        ttl: Duration,
        token: Option<&str>,
    ) -> Result<String, CoordError> {
        super::check_member_id(member)?;
        if let Some(session) = token.filter(|t| !t.is_empty()) {
            let r = self
                .call(
                    Method::PUT,
                    &format!("/v1/session/renew/{session}"),
                    &[],
                    Body::Empty,
                    Perm::Session,
                )
                .await?;
            if r.status != 404 {
                r.ok("renew member session")?;
                return Ok(session.to_string());
            }
            tracing::warn!(
                member,
                session,
                "consul member session expired; registering again"
            );
        }
        let i = &self.inner;
        let body = json!({
            "Name": format!("pika-remedy member {member}"),
            "TTL": go_duration(ttl),
            "Behavior": "delete",
            "LockDelay": go_duration(i.lock_delay),
            "Checks": i.checks,
            "NodeChecks": i.checks,
        });
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let session = self
            .call(
                Method::PUT,
                "/v1/session/create",
                &[],
                Body::Json(body),
                Perm::Session,
            )
            .await?
            .ok("create member session")?
            .json::<Created>("create member session")?
            .id;
        let key = format!("{}/_members/{member}", i.prefix);
        let got = self
            .call(
                Method::PUT,
                &format!("/v1/kv/{key}"),
                &[("acquire", session.clone())],
                Body::Raw(member.as_bytes().to_vec()),
                Perm::KeyWrite,
            )
            .await
            .and_then(|r| r.ok(&format!("acquire {key}")))
            .and_then(|r| r.json::<bool>(&format!("acquire {key}")));
        match got {
            Ok(true) => Ok(session),
            other => {
                let _ = self.destroy_session(&session).await;
                match other {
                    Err(e) => Err(e),
                    _ => Err(CoordError::Backend(format!(
                        "consul: {key} is held by another session (a previous run with the same instance id?); retrying"
                    ))),
                }
            }
        }
    }

    async fn leave_members(&self, member: &str, token: &str) -> Result<(), CoordError> {
        super::check_member_id(member)?;
        // Destroying the session deletes the key (`Behavior = delete`).
        self.destroy_session(token).await
    }

    async fn members(&self) -> Result<Vec<String>, CoordError> {
        let dir = format!("{}/_members/", self.inner.prefix);
        let r = self
            .call(
                Method::GET,
                &format!("/v1/kv/{dir}"),
                &[("recurse", String::new()), ("consistent", String::new())],
                Body::Empty,
                Perm::KeyRead,
            )
            .await?;
        if r.status == 404 {
            return Ok(Vec::new());
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Keyed {
            key: String,
            #[serde(default)]
            session: Option<String>,
        }
        let list: Vec<Keyed> = r.ok("list members")?.json("list members")?;
        let mut out: Vec<String> = list
            .into_iter()
            .filter(|k| k.session.as_deref().is_some_and(|s| !s.is_empty()))
            .filter_map(|k| k.key.strip_prefix(dir.as_str()).map(str::to_string))
            .filter(|m| !m.is_empty())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn ping(&self) -> Result<(), CoordError> {
        let leader: String = self
            .call(
                Method::GET,
                "/v1/status/leader",
                &[],
                Body::Empty,
                Perm::None,
            )
            .await?
            .ok("status/leader")?
            .json("status/leader")?;
        if leader.is_empty() {
            return Err(CoordError::Unreachable("consul has no leader".into()));
        }
        Ok(())
    }
}

impl Consul {
    async fn write_record_txn(&self, ops: serde_json::Value) -> Result<CasOutcome, CoordError> {
        let r = self
            .call(Method::PUT, "/v1/txn", &[], Body::Json(ops), Perm::KeyWrite)
            .await?;
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct TxnKv {
            #[serde(rename = "KV")]
            kv: KvEntry,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct TxnError {
            op_index: usize,
            what: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct TxnReply {
            #[serde(default)]
            results: Option<Vec<TxnKv>>,
            #[serde(default)]
            errors: Option<Vec<TxnError>>,
        }
        match r.status {
            200 => {
                let reply: TxnReply = r.json("write record")?;
                let first = reply
                    .results
                    .and_then(|v| v.into_iter().next())
                    .ok_or_else(|| {
                        CoordError::Backend(
                            "consul: write record: transaction answered without results".into(),
                        )
                    })?;
                Ok(CasOutcome::Written(first.kv.modify_index))
            }
            409 => {
                let reply: TxnReply = r.json("write record")?;
                let errors = reply.errors.unwrap_or_default();
                if let Some(e) = errors
                    .iter()
                    .find(|e| e.what.to_ascii_lowercase().contains("permission denied"))
                {
                    return Err(CoordError::Backend(format!(
                        "consul: write record: permission denied ({}): the ACL token needs {}",
                        e.what,
                        Perm::KeyWrite.describe(&self.inner.prefix)
                    )));
                }
                if errors.iter().all(|e| e.op_index == 0) {
                    Ok(CasOutcome::Conflict)
                } else {
                    let what: Vec<&str> = errors.iter().map(|e| e.what.as_str()).collect();
                    Err(CoordError::Backend(format!(
                        "consul: write record: {}",
                        what.join("; ")
                    )))
                }
            }
            _ => Err(r.ok("write record").err().unwrap_or_else(|| {
                CoordError::Backend("consul: write record: unexpected answer".into())
            })),
        }
    }
}
