//! A Consul HTTP API test server: a small axum server on 127.0.0.1 implementing the documented
//! semantics of exactly the endpoints `coord::consul` calls (no Consul binary is available in
//! CI). It is a model of the documented behaviour, not a copy of Consul:
//!
//! - **Sessions:** `PUT /v1/session/create` (`Name`, `TTL`, `Behavior` release|delete,
//!   `LockDelay` default 15 s and at most 60 s, `Checks`/`NodeChecks`; neither given = the
//!   default `serfHealth`), `PUT /v1/session/renew/<id>` (404 if unknown), `PUT
//!   /v1/session/destroy/<id>`, `GET /v1/session/info/<id>`.
//! - **TTL:** Consul accepts 10 s to 24 h; the test-only option `min_ttl` lowers the minimum so
//!   renewal tests do not take minutes. A session is invalidated once `ttl_multiplier × TTL`
//!   has passed since the last renewal; the default multiplier is 2, modelling Consul's 2×TTL
//!   timer. Time can be faked with [`FakeConsul::advance`], and [`FakeConsul::expire_session`]
//!   invalidates a session on demand (like an operator's destroy or a failed check).
//! - **Invalidation:** `Behavior=release` clears the `Session` of held keys (bumping
//!   `ModifyIndex`), `delete` removes them; either way the keys cannot be acquired for the
//!   session's `LockDelay`. An explicit `?release=` sets no lock-delay.
//! - **KV:** `GET` (JSON array of `{LockIndex, Key, Flags, Value (base64), Session,
//!   CreateIndex, ModifyIndex}`, 404 when absent, `?consistent` accepted, `?keys`,
//!   `?recurse`), `PUT` (plain, `?acquire=`, `?release=`, `?cas=` with 0 = create only),
//!   `DELETE` (with `?recurse`), `PUT /v1/txn` with verbs `set`, `cas`, `get`, `delete`
//!   (all-or-nothing, 409 with `Errors` on failure).
//! - **Catalog:** `PUT /v1/catalog/register`, `PUT /v1/catalog/deregister`, `GET
//!   /v1/catalog/service/<name>` (optional `?tag=`).
//! - `GET /v1/status/leader`.
//! - **ACL:** when started with a token, every request except `status/leader` without the
//!   right `X-Consul-Token` gets 403 "Permission denied".
//! - A global raft-like index increments on every write and is returned as `X-Consul-Index`;
//!   `GET /v1/kv/...?index=N&wait=D` blocks until it passes N (at most `D`, at most 60 s).
//! - Fault injection: [`FakeConsul::stop`]/[`FakeConsul::restart`] (connection refused) and
//!   [`FakeConsul::set_hang`] (requests hang, to test client timeouts).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

/// How the test server is configured.
#[derive(Clone, Debug)]
pub struct Options {
    /// If set, requests need this `X-Consul-Token`.
    pub token: Option<String>,
    /// Smallest accepted session TTL (Consul: 10 s). Lower only in tests.
    pub min_ttl: Duration,
    /// Sessions expire after `ttl_multiplier × TTL` without renewal (Consul: 2).
    pub ttl_multiplier: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            min_ttl: Duration::from_secs(10),
            ttl_multiplier: 2,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub ttl: Option<Duration>,
    pub behavior: String,
    pub lock_delay: Duration,
    pub checks: Vec<String>,
    pub create_index: u64,
    renewed: Instant,
}

#[derive(Clone, Debug)]
pub struct KvEntry {
    pub value: Vec<u8>,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub session: Option<String>,
    pub flags: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    pub node: String,
    pub address: String,
    pub service_id: String,
    pub service: String,
    pub service_address: String,
    pub port: u16,
    pub tags: Vec<String>,
}

#[derive(Default)]
struct Store {
    index: u64,
    time_offset: Duration,
    session_seq: u64,
    sessions: HashMap<String, Session>,
    kv: BTreeMap<String, KvEntry>,
    lock_delay_until: HashMap<String, Instant>,
    /// node → (address, service id → entry)
    catalog: BTreeMap<String, (String, BTreeMap<String, CatalogEntry>)>,
}

impl Store {
    fn now(&self) -> Instant {
        Instant::now() + self.time_offset
    }
    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }
    fn invalidate(&mut self, id: &str) -> bool {
        let Some(s) = self.sessions.remove(id) else {
            return false;
        };
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        let idx = self.bump();
        let until = self.now() + s.lock_delay;
        for k in held {
            if s.behavior == "delete" {
                self.kv.remove(&k);
            } else if let Some(e) = self.kv.get_mut(&k) {
                e.session = None;
                e.modify_index = idx;
            }
            if !s.lock_delay.is_zero() {
                self.lock_delay_until.insert(k, until);
            }
        }
        true
    }
    fn sweep(&mut self, mult: u32) {
        let now = self.now();
        let dead: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.ttl.is_some_and(|t| now >= s.renewed + t * mult))
            .map(|s| s.id.clone())
            .collect();
        for id in dead {
            self.invalidate(&id);
        }
    }
    fn in_lock_delay(&self, key: &str) -> bool {
        self.lock_delay_until
            .get(key)
            .is_some_and(|u| *u > self.now())
    }
    fn set(&mut self, key: &str, value: Vec<u8>, idx: u64) {
        match self.kv.get_mut(key) {
            Some(e) => {
                e.value = value;
                e.modify_index = idx;
            }
            None => {
                self.kv.insert(
                    key.to_string(),
                    KvEntry {
                        value,
                        create_index: idx,
                        modify_index: idx,
                        lock_index: 0,
                        session: None,
                        flags: 0,
                    },
                );
            }
        }
    }
}

#[derive(Clone)]
struct Shared {
    store: Arc<Mutex<Store>>,
    opts: Arc<Options>,
    hang: Arc<AtomicBool>,
    /// Set by `stop`: blocking queries in flight answer at once, so the shutdown is quick.
    stopping: Arc<AtomicBool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        let mut g = self.store.lock().unwrap_or_else(|p| p.into_inner());
        g.sweep(self.opts.ttl_multiplier);
        g
    }
}

/// Handle to a running test server. Dropping it stops the server.
pub struct FakeConsul {
    shared: Shared,
    addr: SocketAddr,
    server: Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<()>,
        )>,
    >,
}

fn entry_json(key: &str, e: &KvEntry, with_value: bool) -> Value {
    let mut v = json!({
        "LockIndex": e.lock_index,
        "Key": key,
        "Flags": e.flags,
        "Value": if with_value { json!(base64::engine::general_purpose::STANDARD.encode(&e.value)) } else { Value::Null },
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
    });
    if let Some(s) = &e.session {
        v["Session"] = json!(s);
    }
    v
}

fn session_json(s: &Session) -> Value {
    json!({
        "ID": s.id,
        "Name": s.name,
        "Node": "fake-node",
        "LockDelay": s.lock_delay.as_nanos() as u64,
        "Behavior": s.behavior,
        "TTL": s.ttl.map(|t| format!("{}ms", t.as_millis())).unwrap_or_default(),
        "NodeChecks": s.checks,
        "ServiceChecks": null,
        "CreateIndex": s.create_index,
        "ModifyIndex": s.create_index,
    })
}

fn with_index(idx: u64, status: StatusCode, body: Value) -> Response {
    (status, [("X-Consul-Index", idx.to_string())], Json(body)).into_response()
}

fn err(status: StatusCode, text: &str) -> Response {
    (status, text.to_string()).into_response()
}

/// Go duration strings as Consul accepts them: `15s`, `1500ms`, `1m30s`, `0`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[u_end..];
        total += Duration::from_secs_f64(n * unit);
    }
    Some(total)
}

async fn gate(State(sh): State<Shared>, req: Request, next: Next) -> Response {
    if sh.hang.load(Ordering::SeqCst) {
        // Bounded: long enough for any client timeout under test.
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if let Some(tok) = &sh.opts.token {
        let sent = req
            .headers()
            .get("X-Consul-Token")
            .and_then(|v| v.to_str().ok());
        if req.uri().path() != "/v1/status/leader" && sent != Some(tok.as_str()) {
            return err(StatusCode::FORBIDDEN, "Permission denied");
        }
    }
    next.run(req).await
}

async fn session_create(State(sh): State<Shared>, body: Bytes) -> Response {
    let v: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    &format!("Request decode failed: {e}"),
                )
            }
        }
    };
    let ttl = match v
        .get("TTL")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(s) => match parse_go_duration(s) {
            Some(t) if t >= sh.opts.min_ttl && t <= Duration::from_secs(86400) => Some(t),
            _ => {
                return err(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "Invalid Session TTL '{s}', must be between [{:?}=24h0m0s]",
                        sh.opts.min_ttl
                    ),
                )
            }
        },
    };
    let lock_delay = match v.get("LockDelay") {
        None | Some(Value::Null) => Duration::from_secs(15),
        Some(Value::String(s)) => match parse_go_duration(s) {
            Some(d) => d,
            None => return err(StatusCode::BAD_REQUEST, "Invalid LockDelay"),
        },
        // Consul treats small numbers as seconds and large ones as nanoseconds.
        Some(Value::Number(n)) => {
            let n = n.as_u64().unwrap_or(0);
            if n < 1000 {
                Duration::from_secs(n)
            } else {
                Duration::from_nanos(n)
            }
        }
        Some(_) => return err(StatusCode::BAD_REQUEST, "Invalid LockDelay"),
    };
    if lock_delay > Duration::from_secs(60) {
        return err(StatusCode::BAD_REQUEST, "LockDelay must be at most 60s");
    }
    let behavior = v
        .get("Behavior")
        .and_then(Value::as_str)
        .unwrap_or("release")
        .to_string();
    if behavior != "release" && behavior != "delete" {
        return err(StatusCode::BAD_REQUEST, "Invalid Behavior setting");
    }
    let list = |k: &str| {
        v.get(k).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect::<Vec<_>>()
        })
    };
    let checks = match (list("Checks"), list("NodeChecks")) {
        (None, None) => vec!["serfHealth".to_string()],
        (a, b) => {
            let mut all = a.unwrap_or_default();
            for c in b.unwrap_or_default() {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
            all
        }
    };
    let mut st = sh.lock();
    st.session_seq += 1;
    let idx = st.bump();
    let id = format!("00000000-0000-4000-8000-{:012x}", st.session_seq);
    let now = st.now();
    st.sessions.insert(
        id.clone(),
        Session {
            id: id.clone(),
            name: v
                .get("Name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            ttl,
            behavior,
            lock_delay,
            checks,
            create_index: idx,
            renewed: now,
        },
    );
    with_index(idx, StatusCode::OK, json!({ "ID": id }))
}

async fn session_renew(State(sh): State<Shared>, Path(id): Path<String>) -> Response {
    let mut st = sh.lock();
    let now = st.now();
    let idx = st.index;
    match st.sessions.get_mut(&id) {
        Some(s) => {
            s.renewed = now;
            let body = json!([session_json(s)]);
            with_index(idx, StatusCode::OK, body)
        }
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Session id '{id}' not found"),
        ),
    }
}

async fn session_destroy(State(sh): State<Shared>, Path(id): Path<String>) -> Response {
    let mut st = sh.lock();
    st.invalidate(&id);
    let idx = st.index;
    with_index(idx, StatusCode::OK, json!(true))
}

async fn session_info(State(sh): State<Shared>, Path(id): Path<String>) -> Response {
    let st = sh.lock();
    let body = match st.sessions.get(&id) {
        Some(s) => json!([session_json(s)]),
        None => json!([]),
    };
    with_index(st.index, StatusCode::OK, body)
}

async fn kv_get(
    State(sh): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // Blocking query: `?index=N` waits until the index passes N or `wait` (default 5 min,
    // here at most 60 s) elapsed, polling the store every 10 ms (a fake: the global index
    // stands for the prefix's).
    if let Some(n) = q.get("index").and_then(|v| v.parse::<u64>().ok()) {
        let wait = q
            .get("wait")
            .and_then(|w| parse_go_duration(w))
            .unwrap_or(Duration::from_secs(300))
            .min(Duration::from_secs(60));
        let until = Instant::now() + wait;
        while sh.lock().index <= n && Instant::now() < until && !sh.stopping.load(Ordering::SeqCst)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let st = sh.lock();
    let idx = st.index;
    if q.contains_key("keys") {
        let keys: Vec<&String> = st.kv.keys().filter(|k| k.starts_with(&key)).collect();
        if keys.is_empty() {
            return (StatusCode::NOT_FOUND, [("X-Consul-Index", idx.to_string())]).into_response();
        }
        return with_index(idx, StatusCode::OK, json!(keys));
    }
    let entries: Vec<Value> = if q.contains_key("recurse") {
        st.kv
            .iter()
            .filter(|(k, _)| k.starts_with(&key))
            .map(|(k, e)| entry_json(k, e, true))
            .collect()
    } else {
        st.kv
            .get(&key)
            .map(|e| entry_json(&key, e, true))
            .into_iter()
            .collect()
    };
    if entries.is_empty() {
        return (StatusCode::NOT_FOUND, [("X-Consul-Index", idx.to_string())]).into_response();
    }
    with_index(idx, StatusCode::OK, Value::Array(entries))
}

async fn kv_put(
    State(sh): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut st = sh.lock();
    let value = body.to_vec();
    let ok = if let Some(sid) = q.get("acquire") {
        if !st.sessions.contains_key(sid) {
            return err(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("invalid session \"{sid}\""),
            );
        }
        let holder = st.kv.get(&key).and_then(|e| e.session.clone());
        match holder {
            // Same session: update the value, LockIndex unchanged.
            Some(h) if &h == sid => {
                let idx = st.bump();
                st.set(&key, value, idx);
                true
            }
            Some(_) => false,
            None if st.in_lock_delay(&key) => false,
            None => {
                let idx = st.bump();
                st.set(&key, value, idx);
                if let Some(e) = st.kv.get_mut(&key) {
                    e.lock_index += 1;
                    e.session = Some(sid.clone());
                }
                true
            }
        }
    } else if let Some(sid) = q.get("release") {
        match st.kv.get(&key).and_then(|e| e.session.clone()) {
            Some(h) if &h == sid => {
                let idx = st.bump();
                if !value.is_empty() {
                    st.set(&key, value, idx);
                }
                if let Some(e) = st.kv.get_mut(&key) {
                    e.session = None;
                    e.modify_index = idx;
                }
                true
            }
            _ => false,
        }
    } else if let Some(cas) = q.get("cas") {
        let Ok(cas) = cas.parse::<u64>() else {
            return err(StatusCode::BAD_REQUEST, "Invalid cas index");
        };
        let current = st.kv.get(&key).map(|e| e.modify_index);
        let matches = match current {
            None => cas == 0,
            Some(m) => cas != 0 && m == cas,
        };
        if matches {
            let idx = st.bump();
            st.set(&key, value, idx);
        }
        matches
    } else {
        let idx = st.bump();
        st.set(&key, value, idx);
        true
    };
    with_index(st.index, StatusCode::OK, json!(ok))
}

async fn kv_delete(
    State(sh): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = sh.lock();
    st.bump();
    if q.contains_key("recurse") {
        st.kv.retain(|k, _| !k.starts_with(&key));
    } else {
        st.kv.remove(&key);
    }
    with_index(st.index, StatusCode::OK, json!(true))
}

async fn txn(State(sh): State<Shared>, Json(ops): Json<Vec<Value>>) -> Response {
    let mut st = sh.lock();
    // Check every op against the current state first: all or nothing.
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let kv = &op["KV"];
        let verb = kv["Verb"].as_str().unwrap_or("").to_string();
        let key = kv["Key"].as_str().unwrap_or("").to_string();
        let value = match kv["Value"].as_str() {
            Some(b) => match base64::engine::general_purpose::STANDARD.decode(b) {
                Ok(v) => v,
                Err(_) => return err(StatusCode::BAD_REQUEST, "Value is not base64"),
            },
            None => Vec::new(),
        };
        let index = kv["Index"].as_u64().unwrap_or(0);
        let current = st.kv.get(&key).map(|e| e.modify_index);
        match verb.as_str() {
            "set" | "delete" => {}
            "get" if current.is_none() => {
                errors.push(json!({"OpIndex": i, "What": format!("key \"{key}\" doesn't exist")}))
            }
            "get" => {}
            "cas" => {
                let ok = match current {
                    None => index == 0,
                    Some(m) => index != 0 && m == index,
                };
                if !ok {
                    errors.push(json!({"OpIndex": i, "What": format!("failed to set key \"{key}\", index is stale")}));
                }
            }
            other => {
                return err(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown KV verb {other:?}"),
                )
            }
        }
        parsed.push((verb, key, value));
    }
    if !errors.is_empty() {
        return with_index(
            st.index,
            StatusCode::CONFLICT,
            json!({"Results": null, "Errors": errors}),
        );
    }
    let idx = st.bump();
    let mut results = Vec::new();
    for (verb, key, value) in parsed {
        match verb.as_str() {
            "set" | "cas" => {
                st.set(&key, value, idx);
                if let Some(e) = st.kv.get(&key) {
                    results.push(json!({"KV": entry_json(&key, e, false)}));
                }
            }
            "get" => {
                if let Some(e) = st.kv.get(&key) {
                    results.push(json!({"KV": entry_json(&key, e, true)}));
                }
            }
            _ => {
                st.kv.remove(&key);
            }
        }
    }
    with_index(
        idx,
        StatusCode::OK,
        json!({"Results": results, "Errors": null}),
    )
}

async fn catalog_register(State(sh): State<Shared>, Json(v): Json<Value>) -> Response {
    let Some(node) = v["Node"].as_str().map(String::from) else {
        return err(StatusCode::BAD_REQUEST, "Must provide node");
    };
    let Some(address) = v["Address"].as_str().map(String::from) else {
        return err(StatusCode::BAD_REQUEST, "Must provide address");
    };
    let mut st = sh.lock();
    st.bump();
    let slot = st
        .catalog
        .entry(node.clone())
        .or_insert_with(|| (address.clone(), BTreeMap::new()));
    slot.0 = address.clone();
    let svc = &v["Service"];
    if let Some(name) = svc["Service"].as_str() {
        let id = svc["ID"].as_str().unwrap_or(name).to_string();
        let tags = svc["Tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        slot.1.insert(
            id.clone(),
            CatalogEntry {
                node,
                address,
                service_id: id,
                service: name.to_string(),
                service_address: svc["Address"].as_str().unwrap_or("").to_string(),
                port: svc["Port"].as_u64().unwrap_or(0) as u16,
                tags,
            },
        );
    }
    with_index(st.index, StatusCode::OK, json!(true))
}

async fn catalog_deregister(State(sh): State<Shared>, Json(v): Json<Value>) -> Response {
    let node = v["Node"].as_str().unwrap_or("").to_string();
    let mut st = sh.lock();
    st.bump();
    match v["ServiceID"].as_str() {
        Some(id) => {
            if let Some(n) = st.catalog.get_mut(&node) {
                n.1.remove(id);
            }
        }
        None => {
            st.catalog.remove(&node);
        }
    }
    with_index(st.index, StatusCode::OK, json!(true))
}

fn catalog_list(st: &Store, name: &str, tag: Option<&str>) -> Vec<CatalogEntry> {
    st.catalog
        .values()
        .flat_map(|(_, svcs)| svcs.values())
        .filter(|e| e.service == name && tag.is_none_or(|t| e.tags.iter().any(|x| x == t)))
        .cloned()
        .collect()
}

async fn catalog_service(
    State(sh): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = sh.lock();
    let list: Vec<Value> = catalog_list(&st, &name, q.get("tag").map(String::as_str))
        .into_iter()
        .map(|e| {
            json!({
                "Node": e.node, "Address": e.address, "ServiceID": e.service_id,
                "ServiceName": e.service, "ServiceAddress": e.service_address,
                "ServicePort": e.port, "ServiceTags": e.tags,
            })
        })
        .collect();
    with_index(st.index, StatusCode::OK, Value::Array(list))
}

async fn status_leader() -> Response {
    Json(json!("127.0.0.1:8300")).into_response()
}

fn router(sh: Shared) -> Router {
    Router::new()
        .route("/v1/session/create", put(session_create))
        .route("/v1/session/renew/{id}", put(session_renew))
        .route("/v1/session/destroy/{id}", put(session_destroy))
        .route("/v1/session/info/{id}", get(session_info))
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/v1/txn", put(txn))
        .route("/v1/catalog/register", put(catalog_register))
        .route("/v1/catalog/deregister", put(catalog_deregister))
        .route("/v1/catalog/service/{name}", get(catalog_service))
        .route("/v1/status/leader", get(status_leader))
        .layer(axum::middleware::from_fn_with_state(sh.clone(), gate))
        .with_state(sh)
}

async fn serve(
    listener: tokio::net::TcpListener,
    sh: Shared,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(sh);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    (tx, task)
}

impl FakeConsul {
    pub async fn start() -> FakeConsul {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> FakeConsul {
        let listener = super::ports::listen_tokio();
        let addr = listener.local_addr().expect("local addr");
        let shared = Shared {
            store: Arc::new(Mutex::new(Store::default())),
            opts: Arc::new(opts),
            hang: Arc::new(AtomicBool::new(false)),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        let server = serve(listener, shared.clone()).await;
        FakeConsul {
            shared,
            addr,
            server: Mutex::new(Some(server)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Invalidate a session now (as a destroy, a failed check or a lapsed TTL would).
    pub fn expire_session(&self, id: &str) -> bool {
        self.shared.lock().invalidate(id)
    }

    /// Move the server's clock forward; sessions whose TTL lapsed are invalidated.
    pub fn advance(&self, d: Duration) {
        let mut st = self.shared.store.lock().unwrap_or_else(|p| p.into_inner());
        st.time_offset += d;
        st.sweep(self.shared.opts.ttl_multiplier);
    }

    pub fn sessions(&self) -> Vec<Session> {
        self.shared.lock().sessions.values().cloned().collect()
    }

    pub fn kv(&self, key: &str) -> Option<KvEntry> {
        self.shared.lock().kv.get(key).cloned()
    }

    pub fn kv_keys(&self, prefix: &str) -> Vec<String> {
        self.shared
            .lock()
            .kv
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn catalog_service(&self, name: &str) -> Vec<CatalogEntry> {
        catalog_list(&self.shared.lock(), name, None)
    }

    /// While set, every request hangs for 30 s before being handled.
    pub fn set_hang(&self, on: bool) {
        self.shared.hang.store(on, Ordering::SeqCst);
    }

    /// Stop listening (clients get "connection refused"); state is kept for `restart`.
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some((tx, task)) = server {
            let _ = tx.send(());
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Listen again on the same address, with the same state.
    pub async fn restart(&self) {
        self.stop().await;
        let mut last = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    self.shared.stopping.store(false, Ordering::SeqCst);
                    let server = serve(l, self.shared.clone()).await;
                    *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
                    return;
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("cannot rebind {}: {last:?}", self.addr);
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
            task.abort();
        }
    }
}
