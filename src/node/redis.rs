//! `RedisNodes`: the production `Nodes` over the `redis` crate (tokio), with connect and
//! command timeouts and AUTH.
//!
//! Decisions:
//! - A fresh multiplexed connection per call (per `status` call for its two INFOs), except for
//!   [`Nodes::status_pooled`]: the poller and a reconcile's first look keep one connection
//!   per node (shared by every clone of this client), so an idle poll costs one `INFO
//!   replication` (`INFO server` is read once per connection: engine and version change only
//!   with a restart, which ends the connection) and no TCP or AUTH handshake. A kept
//!   connection is plain RESP2 on the TCP stream ([`super::kept`]: no driver task, no channel
//!   per reply), used by one call at a time. A pooled connection that fails (other than by a timeout or an
//!   error reply) is dropped and the call is made once on a fresh connection, bounded by the
//!   connect timeout as always, so a dead node is still seen at once (refused) and a
//!   restarted one is reconnected. Everything that decides under the lock or acts (the look
//!   under the lock, every step and wait) uses fresh connections: no state of a connection
//!   manager can hide an outage from them.
//! - Nothing but `AUTH` (when a password is set) is sent on connect: `CLIENT SETINFO` is
//!   disabled because Pika does not know it, and RESP2 avoids `HELLO`.
//! - Only `SLAVEOF` is used (never `REPLICAOF`/`ROLE`): Pika has neither.
//! - Every call is bounded twice: by the crate's connect/response timeouts, and by an overall
//!   tokio timeout as a safety net for anything the crate does not cover.
//! - Every command sent is built by [`Dialect`] (`node::commands`, the same functions `plan`
//!   prints from), under the nodes' `rename-command` names ([`RedisNodes::with_renames`]).
//!   There is no fallback to the original name: a node that answers "unknown command" is an
//!   error, so a wrong map is loud instead of half-working. The password placeholder of a
//!   command is filled in here, at the last moment, and nowhere else.
//! - Error texts are built from the server's reply or the error kind; the password is
//!   additionally scrubbed from every text before it leaves this module.
//! - What is read from a node is capped ([`MAX_READ_PER_CONNECTION`] per connection, i.e.
//!   per call; on a pooled connection, since the start of the last call): a node (or anything listening on its port) answering a 100 MB INFO cannot
//!   grow our memory; the call fails with a `Protocol` error saying so.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError, Value,
};

use crate::config::{Secret, Timeouts};
use crate::model::{Addr, Engine, NodeStatus};
use crate::node::commands::{Arg, Command, Dialect};
use crate::node::kept::{self, CallError, Kept, Reply};
use crate::node::{info, NodeError, Nodes, SnapshotInfo};

/// Bytes read from a node per connection (one call: AUTH plus at most two INFO sections, a few
/// KiB normally, tens of KiB for a Pika with many DBs).
pub const MAX_READ_PER_CONNECTION: usize = 1024 * 1024;

/// The text of the error a capped stream returns (recognised in `map_err`).
const TOO_LARGE: &str = "reply from the node exceeds";

/// A TCP stream that fails reading once more than `limit` bytes came in (counted in `read`,
/// which a pooled connection's owner resets at the start of each call).
struct Capped {
    inner: tokio::net::TcpStream,
    read: Arc<AtomicUsize>,
    limit: usize,
}

impl tokio::io::AsyncRead for Capped {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let too_large = |limit: usize| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{TOO_LARGE} {limit} bytes"),
            )
        };
        if self.read.load(Ordering::Relaxed) > self.limit {
            return std::task::Poll::Ready(Err(too_large(self.limit)));
        }
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            let n = buf.filled().len() - before;
            let total = self.read.fetch_add(n, Ordering::Relaxed) + n;
            if total > self.limit {
                return std::task::Poll::Ready(Err(too_large(self.limit)));
            }
        }
        r
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Extra time on top of the configured bounds before the safety-net timeout fires.
const SAFETY_MARGIN: Duration = Duration::from_millis(250);

/// The least time a role change (`SLAVEOF …`) gets to answer, whatever the command timeout:
/// on a real Pika 4.0.1, `SLAVEOF NO ONE` on a slave of a live master answers after ~1.6 s and
/// `SLAVEOF host port` after up to ~3 s, both above the usual 2 s command timeout.
pub const ROLE_CHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// Talks RESP2 to Pika or Redis nodes of one cluster (one password per cluster).
#[derive(Clone)]
pub struct RedisNodes {
    connect_timeout: Duration,
    command_timeout: Duration,
    password: Option<Secret>,
    /// The commands under the nodes' `rename-command` names.
    dialect: Dialect,
    /// One connection per node for [`Nodes::status_pooled`], shared by every clone. A call
    /// takes it out and puts it back when it succeeded (two calls at once on one node: the
    /// second opens its own, and the last one back is kept).
    pool: Arc<Mutex<HashMap<Addr, Pooled>>>,
}

/// A kept connection.
struct Pooled {
    conn: Kept,
    /// The `INFO server` text read when this connection was opened. What `status` takes from
    /// it (engine, version) changes only with a restart, which ends the connection, so later
    /// polls on it ask for `INFO replication` alone.
    server: Arc<str>,
}

impl std::fmt::Debug for RedisNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisNodes")
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dialect", &self.dialect)
            .finish()
    }
}

impl RedisNodes {
    /// `password` is the cluster's `requirepass` (also used as `masterauth`); `None` = no AUTH.
    pub fn new(timeouts: &Timeouts, password: Option<Secret>) -> Self {
        RedisNodes {
            connect_timeout: timeouts.connect,
            command_timeout: timeouts.command,
            // An empty password means "no password": AUTH "" would only fail.
            password: password.filter(|p| !p.expose().is_empty()),
            dialect: Dialect::default(),
            pool: Arc::default(),
        }
    }

    /// Use the nodes' `rename-command` map (original name -> renamed), e.g. the cluster's
    /// [`ClusterConfig::renames`](crate::config::ClusterConfig::renames). Keys are matched
    /// case-insensitively; empty values are ignored (config validation rejects them).
    pub fn with_renames(mut self, renames: BTreeMap<String, String>) -> Self {
        self.dialect = Dialect::new(renames);
        self
    }

    /// The name a command has on the nodes (`name` itself unless renamed).
    pub fn command_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.dialect.name(name)
    }

    /// The commands of this cluster's nodes (renames applied); see [`commands`](crate::node::commands).
    pub fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    /// The wire form of `c`; [`Arg::Password`] becomes the cluster's password here and only here.
    fn to_cmd(&self, c: &Command) -> Result<redis::Cmd, NodeError> {
        let mut cmd = redis::cmd(&c.name);
        for a in &c.args {
            match a {
                Arg::Word(w) => {
                    cmd.arg(w);
                }
                Arg::Password => match &self.password {
                    Some(pw) => {
                        cmd.arg(pw.expose());
                    }
                    None => {
                        return Err(NodeError::Protocol(format!(
                            "{c} needs a password and the cluster has none"
                        )))
                    }
                },
            }
        }
        Ok(cmd)
    }

    /// The TCP connection to `node`, bounded by the connect timeout.
    async fn tcp(&self, node: &Addr) -> Result<tokio::net::TcpStream, NodeError> {
        let tcp = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((node.host.as_str(), node.port)),
        )
        .await
        {
            Err(_) => return Err(NodeError::Timeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(NodeError::Refused)
            }
            Ok(Err(e)) => return Err(NodeError::Io(self.scrub(&e.to_string()))),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// Open one connection (AUTH included), bounded by the connect timeout; replies are
    /// awaited for at most `response_timeout`; what it reads is capped at
    /// [`MAX_READ_PER_CONNECTION`].
    async fn connect(
        &self,
        node: &Addr,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, NodeError> {
        let info = ConnectionAddr::Tcp(node.host.clone(), node.port)
            .into_connection_info()
            .map_err(|e| self.map_err(e))?;
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(pw) = &self.password {
            settings = settings.set_password(pw.expose());
        }
        let tcp = self.tcp(node).await?;
        let stream = Capped {
            inner: tcp,
            read: Arc::new(AtomicUsize::new(0)),
            limit: MAX_READ_PER_CONNECTION,
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(response_timeout));
        // The handshake (AUTH) is bounded by one command timeout.
        let (conn, driver) = match tokio::time::timeout(
            self.command_timeout,
            MultiplexedConnection::new_with_config(&settings, stream, config),
        )
        .await
        {
            Err(_) => return Err(NodeError::Timeout),
            Ok(r) => r.map_err(|e| self.map_err(e))?,
        };
        // Ends when the connection is dropped (after the call) or fails.
        tokio::spawn(driver);
        Ok(conn)
    }

    /// The RESP2 bytes of `c` for a kept connection; [`Arg::Password`] is filled in here.
    fn to_wire(&self, c: &Command) -> Result<Vec<u8>, NodeError> {
        let mut words: Vec<&[u8]> = Vec::with_capacity(c.args.len() + 1);
        words.push(c.name.as_bytes());
        for a in &c.args {
            match a {
                Arg::Word(w) => words.push(w.as_bytes()),
                Arg::Password => match &self.password {
                    Some(pw) => words.push(pw.expose().as_bytes()),
                    None => {
                        return Err(NodeError::Protocol(format!(
                            "{c} needs a password and the cluster has none"
                        )))
                    }
                },
            }
        }
        Ok(kept::encode(&words))
    }

    /// One call on a kept connection, bounded by the command timeout; the reply's text
    /// (an `INFO` section) appended to `text`, or the error.
    async fn kept_info(
        &self,
        conn: &mut Kept,
        command: &[u8],
        text: &mut String,
    ) -> Result<(), NodeError> {
        let reply = match tokio::time::timeout(
            self.command_timeout,
            conn.call(command, MAX_READ_PER_CONNECTION),
        )
        .await
        {
            Err(_) => return Err(NodeError::Timeout),
            Ok(r) => r.map_err(|e| self.kept_err(e))?,
        };
        match reply {
            Reply::Bulk(b) | Reply::Status(b) => {
                push_section(text, &String::from_utf8_lossy(b));
                Ok(())
            }
            Reply::Error(e) => Err(self.kept_server_err(e)),
            Reply::Nil | Reply::Int(_) => {
                Err(NodeError::Protocol("INFO reply is not a string".into()))
            }
        }
    }

    fn kept_err(&self, e: CallError) -> NodeError {
        match e {
            CallError::Io(e) => NodeError::Io(self.scrub(&e.to_string())),
            CallError::Closed => NodeError::Io("connection closed by the node".into()),
            CallError::TooLarge => NodeError::Protocol(format!(
                "{TOO_LARGE} {MAX_READ_PER_CONNECTION} bytes; connection closed"
            )),
            CallError::Protocol(t) => NodeError::Protocol(t),
        }
    }

    /// An error reply on a kept connection (`CODE detail`), classified as the crate's are.
    fn kept_server_err(&self, e: &[u8]) -> NodeError {
        let text = String::from_utf8_lossy(e);
        match text.split_once(' ') {
            Some((code, detail)) => self.classify_server(code, Some(detail)),
            None => self.classify_server(&text, None),
        }
    }

    /// A new kept connection: TCP, `AUTH` when the cluster has a password, `INFO server`
    /// (kept) and `INFO replication` (appended to `text` after the server section).
    async fn open_kept(
        &self,
        node: &Addr,
        info_server: &[u8],
        info_replication: &[u8],
        text: &mut String,
    ) -> Result<Pooled, NodeError> {
        let mut conn = Kept::new(self.tcp(node).await?);
        if self.password.is_some() {
            let auth = self.to_wire(&Command {
                name: "AUTH".into(),
                args: vec![Arg::Password],
            })?;
            let reply = tokio::time::timeout(
                self.command_timeout,
                conn.call(&auth, MAX_READ_PER_CONNECTION),
            )
            .await
            .map_err(|_| NodeError::Timeout)?
            .map_err(|e| self.kept_err(e))?;
            match reply {
                Reply::Status(_) => {}
                // Any refusal of AUTH is an auth problem (as the crate reports it).
                Reply::Error(e) => {
                    return Err(NodeError::Auth(self.scrub(&String::from_utf8_lossy(e))))
                }
                _ => return Err(NodeError::Protocol("AUTH: unexpected reply".into())),
            }
        }
        let mut server = String::new();
        self.kept_info(&mut conn, info_server, &mut server).await?;
        text.push_str(&server);
        self.kept_info(&mut conn, info_replication, text).await?;
        Ok(Pooled {
            conn,
            server: server.into(),
        })
    }

    /// The two INFO sections on the node's kept connection (see the module docs): a failed
    /// kept connection is dropped and the call made once on a fresh one, which is kept. On a
    /// kept connection only `INFO replication` is asked for; `INFO server` comes from when the
    /// connection was opened ([`Pooled::server`]).
    async fn info_text_pooled(&self, node: &Addr) -> Result<String, NodeError> {
        let info_replication = self.to_wire(&self.dialect.info("replication"))?;
        let kept = self.pool_lock().remove(node);
        if let Some(mut p) = kept {
            let mut text = String::with_capacity(p.server.len() + 2048);
            text.push_str(&p.server);
            match self
                .kept_info(&mut p.conn, &info_replication, &mut text)
                .await
            {
                Ok(()) => {
                    self.pool_lock().insert(node.clone(), p);
                    return Ok(text);
                }
                // A hung node or an error reply: the node's answer, not the connection's fault.
                Err(
                    e @ (NodeError::Timeout
                    | NodeError::Auth(_)
                    | NodeError::Node(_)
                    | NodeError::MasterOfOthers(_)
                    | NodeError::ReadOnly(_)),
                ) => return Err(e),
                // Anything else (closed, reset): once more on a fresh connection.
                Err(_) => {}
            }
        }
        let info_server = self.to_wire(&self.dialect.info("server"))?;
        let bound = self.connect_timeout + self.command_timeout * 3 + SAFETY_MARGIN;
        let mut text = String::new();
        let p = tokio::time::timeout(
            bound,
            self.open_kept(node, &info_server, &info_replication, &mut text),
        )
        .await
        .unwrap_or(Err(NodeError::Timeout))?;
        self.pool_lock().insert(node.clone(), p);
        Ok(text)
    }

    fn pool_lock(&self) -> std::sync::MutexGuard<'_, HashMap<Addr, Pooled>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many nodes have a kept connection (for tests and diagnostics).
    pub fn pooled_connections(&self) -> usize {
        self.pool_lock().len()
    }

    /// Connect and send `commands` in order on one connection; returns every reply.
    /// The whole exchange is bounded by connect + (AUTH + commands) × command timeout + margin.
    async fn exchange(&self, node: &Addr, commands: Vec<Command>) -> Result<Vec<Value>, NodeError> {
        self.exchange_within(node, commands, self.command_timeout)
            .await
    }

    /// [`Self::exchange`] with each reply awaited for at most `per_command`.
    async fn exchange_within(
        &self,
        node: &Addr,
        commands: Vec<Command>,
        per_command: Duration,
    ) -> Result<Vec<Value>, NodeError> {
        let commands = commands
            .iter()
            .map(|c| self.to_cmd(c))
            .collect::<Result<Vec<_>, _>>()?;
        let bound =
            self.connect_timeout + per_command * (commands.len() as u32 + 1) + SAFETY_MARGIN;
        let work = async {
            let mut conn = self.connect(node, per_command).await?;
            let mut replies = Vec::with_capacity(commands.len());
            for c in &commands {
                let v: Value = c
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.map_err(e))?;
                if let Value::ServerError(e) = &v {
                    return Err(self.classify_server(e.code(), e.details()));
                }
                replies.push(v);
            }
            Ok(replies)
        };
        match tokio::time::timeout(bound, work).await {
            Ok(r) => r,
            Err(_) => Err(NodeError::Timeout),
        }
    }

    /// Send one command and return the raw reply (server errors become `NodeError`s).
    /// For diagnostics and tests; the `Nodes` methods are the normal interface. The command
    /// name goes through the rename map like every other command.
    pub async fn command(&self, node: &Addr, args: &[&str]) -> Result<Value, NodeError> {
        let Some((name, rest)) = args.split_first() else {
            return Err(NodeError::Protocol("empty command".into()));
        };
        let c = self.dialect.command(name, rest);
        let mut replies = self.exchange(node, vec![c]).await?;
        replies
            .pop()
            .ok_or_else(|| NodeError::Protocol("no reply".into()))
    }

    /// The raw text of `INFO server` + `INFO replication` (what `status` parses).
    pub async fn info_text(&self, node: &Addr) -> Result<String, NodeError> {
        let replies = self
            .exchange(
                node,
                vec![
                    self.dialect.info("server"),
                    self.dialect.info("replication"),
                ],
            )
            .await?;
        info_of(replies)
    }

    /// Send one command that must answer `+OK` (Redis may append words: `+OK Already connected…`).
    async fn expect_ok(&self, node: &Addr, c: Command) -> Result<(), NodeError> {
        self.expect_ok_within(node, c, self.command_timeout).await
    }

    /// A role change: `+OK` awaited for at least [`ROLE_CHANGE_TIMEOUT`].
    async fn expect_ok_slow(&self, node: &Addr, c: Command) -> Result<(), NodeError> {
        let t = self.command_timeout.max(ROLE_CHANGE_TIMEOUT);
        self.expect_ok_within(node, c, t).await
    }

    async fn expect_ok_within(
        &self,
        node: &Addr,
        c: Command,
        per_command: Duration,
    ) -> Result<(), NodeError> {
        let mut replies = self.exchange_within(node, vec![c], per_command).await?;
        match replies.pop() {
            Some(Value::Okay) => Ok(()),
            Some(Value::SimpleString(s)) if s.starts_with("OK") => Ok(()),
            Some(other) => Err(NodeError::Protocol(
                self.scrub(&format!("expected OK, got {}", describe(&other))),
            )),
            None => Err(NodeError::Protocol("no reply".into())),
        }
    }

    fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(pw) => text.replace(pw.expose(), "<redacted>"),
            None => text.to_string(),
        }
    }

    /// An error reply from the server: auth problems by their well-known texts (Redis and
    /// every Pika version, see pika.md §3.1), everything else verbatim as `Node`.
    fn classify_server(&self, code: &str, detail: Option<&str>) -> NodeError {
        let text = self.scrub(&match detail {
            Some(d) => format!("{code} {d}"),
            None => code.to_string(),
        });
        if is_auth_text(&text) {
            NodeError::Auth(text)
        } else if text.contains(MASTER_OF_OTHERS) {
            NodeError::MasterOfOthers(text)
        } else if code == "READONLY" || text.contains("READONLY ") {
            // Redis: code READONLY; Pika 4.x: `ERR READONLY You can't write against a read only replica.`
            NodeError::ReadOnly(text)
        } else {
            NodeError::Node(text)
        }
    }

    fn map_err(&self, e: RedisError) -> NodeError {
        if e.is_timeout() {
            return NodeError::Timeout;
        }
        if e.is_connection_refusal() {
            return NodeError::Refused;
        }
        if e.kind() == ErrorKind::AuthenticationFailed {
            // The crate hides the server's reply to AUTH; it never holds the password either.
            return NodeError::Auth("password rejected by the node".into());
        }
        if let ErrorKind::Server(_) | ErrorKind::Extension = e.kind() {
            if let Some(code) = e.code() {
                return self.classify_server(code, e.detail());
            }
        }
        let text = self.scrub(&e.to_string());
        if text.contains(TOO_LARGE) {
            return NodeError::Protocol(format!(
                "{TOO_LARGE} {MAX_READ_PER_CONNECTION} bytes; connection closed"
            ));
        }
        if is_auth_text(&text) {
            return NodeError::Auth(text);
        }
        match e.kind() {
            ErrorKind::Io => NodeError::Io(text),
            _ => NodeError::Protocol(text),
        }
    }
}

/// Pika's refusal of `SLAVEOF` while slaves are attached (pika.md §2.1).
const MASTER_OF_OTHERS: &str = "already master of others";

/// Old Pika's answer to a `CLIENT` form it does not know (`ERR Syntax error, try CLIENT (LIST …`).
const PIKA_CLIENT_SYNTAX: &str = "Syntax error, try CLIENT";

/// For the commands only some versions have (`CLEARREPLICATIONID`: Pika 3.5.1+; `CLIENT KILL
/// TYPE`: Redis 2.8.12+, Pika 3.5.5+): "unknown command" (Redis, Pika 4.x), "unknown or
/// unsupported command" (Pika 3.x) and old Pika's `CLIENT` syntax error (it knows only
/// `CLIENT KILL ip:port|all`) become `Unsupported`.
fn unsupported(e: NodeError) -> NodeError {
    match e {
        NodeError::Node(t)
            if t.contains("unknown command")
                || t.contains("unknown or unsupported command")
                || t.contains(PIKA_CLIENT_SYNTAX) =>
        {
            NodeError::Unsupported(t)
        }
        e => e,
    }
}

/// Substrings that mean "authentication is the problem" across Redis and Pika versions.
fn is_auth_text(text: &str) -> bool {
    const NEEDLES: [&str; 6] = [
        "NOAUTH",
        "WRONGPASS",
        "invalid password",
        "Authentication required",
        "without any password configured",
        "no password is set",
    ];
    NEEDLES.iter().any(|n| text.contains(n))
}

impl RedisNodes {
    /// One `CONFIG GET key`'s value (`[key, value]`, or a map on RESP3).
    async fn config_value(&self, node: &Addr, key: &str) -> Result<String, NodeError> {
        let replies = self
            .exchange(node, vec![self.dialect.config_get(key)])
            .await?;
        let value = match replies.last() {
            Some(Value::Array(items)) => items.get(1).and_then(value_text),
            Some(Value::Map(pairs)) => pairs.first().and_then(|(_, v)| value_text(v)),
            _ => None,
        };
        value.ok_or_else(|| NodeError::Protocol(format!("CONFIG GET {key}: no value")))
    }

    /// One field of `INFO <section>`.
    async fn info_field(
        &self,
        node: &Addr,
        section: &str,
        key: &str,
    ) -> Result<Option<String>, NodeError> {
        let text = info_of(
            self.exchange(node, vec![self.dialect.info(section)])
                .await?,
        )?;
        Ok(text.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        }))
    }

    /// Redis: the count of finished saves (`rdb_saves`, 7.0+), else `rdb_last_save_time`.
    async fn redis_saves(&self, node: &Addr) -> Result<String, NodeError> {
        let text = info_of(
            self.exchange(node, vec![self.dialect.info("persistence")])
                .await?,
        )?;
        let field = |key: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        Ok(field("rdb_saves")
            .map(|v| format!("saves {v}"))
            .or_else(|| field("rdb_last_save_time").map(|v| format!("at {v}")))
            .unwrap_or_default())
    }

    /// `BGSAVE`, then the bounded wait for its end. `Ok(())` when it finished and (Redis)
    /// reported `ok`.
    async fn bgsave_and_wait(
        &self,
        node: &Addr,
        engine: Engine,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let before = match engine {
            Engine::Pika => String::new(),
            _ => self.redis_saves(node).await?,
        };
        let replies = self.exchange(node, vec![self.dialect.bgsave()]).await?;
        match replies.last().and_then(value_text) {
            Some(t) if t.contains("started") || t.contains("scheduled") || t == "OK" => {}
            Some(t) => {
                return Err(NodeError::Protocol(self.scrub(&format!(
                    "BGSAVE answered {}",
                    t.chars().take(80).collect::<String>()
                ))))
            }
            None => return Err(NodeError::Protocol("BGSAVE: no reply".into())),
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let done = match engine {
                // Pika sets the flag inside BGSAVE itself, so "No" after it means finished.
                Engine::Pika => self
                    .info_field(node, "stats", "is_bgsaving")
                    .await?
                    .is_some_and(|v| v.starts_with("No")),
                _ => {
                    let idle = self
                        .info_field(node, "persistence", "rdb_bgsave_in_progress")
                        .await?
                        .is_some_and(|v| v == "0");
                    idle && self.redis_saves(node).await? != before
                }
            };
            if done {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::Node(format!(
                    "BGSAVE did not finish within {}",
                    humantime::format_duration(timeout)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if engine != Engine::Pika {
            let status = self
                .info_field(node, "persistence", "rdb_last_bgsave_status")
                .await?
                .unwrap_or_default();
            if status != "ok" {
                return Err(NodeError::Node(format!(
                    "BGSAVE failed (rdb_last_bgsave_status:{status})"
                )));
            }
        }
        Ok(())
    }
}

/// `YYYYMMDD` of the local clock in UTC (Pika names the dump dir by the node's local date).
fn today_utc() -> String {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    stamp
        .chars()
        .take(10)
        .filter(char::is_ascii_digit)
        .collect()
}

/// The INFO sections' replies as one text, sections separated by an empty line as in a plain
/// `INFO`.
fn info_of(replies: Vec<Value>) -> Result<String, NodeError> {
    let mut text = String::new();
    for v in replies {
        let part = value_text(&v)
            .ok_or_else(|| NodeError::Protocol("INFO reply is not a string".into()))?;
        push_section(&mut text, &part);
    }
    Ok(text)
}

/// Append one INFO section's text and the empty line that ends it.
fn push_section(text: &mut String, part: &str) {
    text.push_str(part);
    if !part.ends_with("\r\n") {
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// A short description of an unexpected reply, never longer than a line.
fn describe(v: &Value) -> String {
    let s = match value_text(v) {
        Some(t) => t,
        None => format!("{v:?}"),
    };
    s.chars().take(80).collect()
}

impl Nodes for RedisNodes {
    async fn status(&self, node: &Addr) -> Result<NodeStatus, NodeError> {
        let text = self.info_text(node).await?;
        info::parse(&text).map_err(|e| NodeError::Protocol(e.to_string()))
    }

    async fn status_pooled(&self, node: &Addr) -> Result<NodeStatus, NodeError> {
        let text = self.info_text_pooled(node).await?;
        info::parse(&text).map_err(|e| NodeError::Protocol(e.to_string()))
    }

    async fn promote(&self, node: &Addr) -> Result<(), NodeError> {
        self.expect_ok_slow(node, self.dialect.promote()).await
    }

    async fn follow(&self, node: &Addr, master: &Addr, force: bool) -> Result<(), NodeError> {
        self.expect_ok_slow(node, self.dialect.follow(master, force))
            .await
    }

    async fn fence_writes(&self, node: &Addr) -> Result<(), NodeError> {
        self.expect_ok(node, self.dialect.fence(true)).await
    }

    async fn unfence_writes(&self, node: &Addr) -> Result<(), NodeError> {
        self.expect_ok(node, self.dialect.fence(false)).await
    }

    async fn set_masterauth(&self, node: &Addr) -> Result<(), NodeError> {
        if self.password.is_none() {
            return Ok(());
        }
        self.expect_ok(node, self.dialect.masterauth()).await
    }

    async fn config_rewrite(&self, node: &Addr) -> Result<(), NodeError> {
        self.expect_ok(node, self.dialect.rewrite()).await
    }

    async fn pause_writes(&self, node: &Addr, for_how_long: Duration) -> Result<(), NodeError> {
        self.expect_ok(node, self.dialect.pause(for_how_long)).await
    }

    async fn unpause_writes(&self, node: &Addr) -> Result<(), NodeError> {
        self.expect_ok(node, self.dialect.unpause()).await
    }

    async fn clear_replication_id(&self, node: &Addr) -> Result<(), NodeError> {
        self.expect_ok(node, self.dialect.clear_replication_id())
            .await
            .map_err(unsupported)
    }

    async fn refresh_dump(
        &self,
        node: &Addr,
        engine: Engine,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        self.bgsave_and_wait(node, engine, timeout).await
    }

    async fn snapshot(
        &self,
        node: &Addr,
        engine: Engine,
        tag: &str,
        timeout: Duration,
    ) -> Result<SnapshotInfo, NodeError> {
        let (dir_key, name_key) = match engine {
            Engine::Pika => ("dump-path", "dump-prefix"),
            _ => ("dir", "dbfilename"),
        };
        let dir = self.config_value(node, dir_key).await?;
        let previous = self.config_value(node, name_key).await?;
        let name = crate::decide::snapshot_name(engine, tag);
        self.expect_ok(node, self.dialect.config_set(name_key, &name))
            .await
            .map_err(|e| match e {
                NodeError::Node(t) if t.contains("protected config") => NodeError::Node(format!(
                    "{t} (Redis 7 protects dbfilename: set enable-protected-configs local or yes on the node)"
                )),
                e => e,
            })?;
        let t = std::time::Instant::now();
        let saved = self.bgsave_and_wait(node, engine, timeout).await;
        let millis = t.elapsed().as_millis() as u64;
        // Put the name back in every case: the follow's CONFIG REWRITE must not persist ours.
        let restored = self
            .expect_ok(node, self.dialect.config_set(name_key, &previous))
            .await;
        saved?;
        restored?;
        let sep = if dir.ends_with('/') { "" } else { "/" };
        let (path, size_bytes, keys) = match engine {
            Engine::Pika => {
                let size = self
                    .info_field(node, "data", "db_size")
                    .await
                    .ok()
                    .flatten()
                    .and_then(|v| v.parse().ok());
                (format!("{dir}{sep}{name}{}", today_utc()), size, None)
            }
            _ => {
                let keys = match self.command(node, &["DBSIZE"]).await {
                    Ok(Value::Int(n)) => u64::try_from(n).ok(),
                    _ => None,
                };
                (format!("{dir}{sep}{name}"), None, keys)
            }
        };
        Ok(SnapshotInfo {
            path,
            size_bytes,
            keys,
            millis,
        })
    }

    async fn kill_clients(&self, node: &Addr) -> Result<Option<u64>, NodeError> {
        let replies = self
            .exchange(node, vec![self.dialect.kill_clients()])
            .await
            .map_err(unsupported)?;
        match replies.last() {
            Some(Value::Int(n)) => Ok(Some(u64::try_from(*n).unwrap_or(0))),
            Some(Value::Okay) => Ok(None),
            Some(Value::SimpleString(s)) if s.starts_with("OK") => Ok(None),
            Some(other) => Err(NodeError::Protocol(
                self.scrub(&format!("expected OK or a count, got {}", describe(other))),
            )),
            None => Err(NodeError::Protocol("no reply".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(pw: Option<&str>) -> RedisNodes {
        RedisNodes::new(&Timeouts::default(), pw.map(Secret::new))
    }

    #[test]
    fn debug_never_shows_the_password() {
        let d = format!("{:?}", nodes(Some("hunter2")));
        assert!(!d.contains("hunter2"), "{d}");
    }

    #[test]
    fn server_errors_are_classified() {
        let n = nodes(Some("hunter2"));
        assert_eq!(
            n.classify_server("ERR", Some("already master of others, invalid usage")),
            NodeError::MasterOfOthers("ERR already master of others, invalid usage".into())
        );
        assert!(matches!(
            n.classify_server("ERR", Some("NOAUTH Authentication required.")),
            NodeError::Auth(_)
        ));
        assert!(matches!(
            n.classify_server(
                "WRONGPASS",
                Some("invalid username-password pair or user is disabled.")
            ),
            NodeError::Auth(_)
        ));
        assert!(matches!(
            n.classify_server("ERR", Some("invalid password")),
            NodeError::Auth(_)
        ));
        assert!(matches!(
            n.classify_server(
                "ERR",
                Some("READONLY You can't write against a read only replica.")
            ),
            NodeError::ReadOnly(_)
        ));
        assert!(matches!(
            n.classify_server(
                "READONLY",
                Some("You can't write against a read only replica.")
            ),
            NodeError::ReadOnly(_)
        ));
        assert_eq!(
            unsupported(NodeError::Node(
                "ERR unknown command 'clearreplicationid'".into()
            )),
            NodeError::Unsupported("ERR unknown command 'clearreplicationid'".into())
        );
        assert!(matches!(
            unsupported(NodeError::Node(
                "ERR Syntax error, try CLIENT (LIST [order by [addr|idle]| KILL ip:port)".into()
            )),
            NodeError::Unsupported(_)
        ));
        assert!(matches!(
            unsupported(NodeError::Node("ERR other".into())),
            NodeError::Node(_)
        ));
        assert_eq!(
            n.classify_server("ERR", Some("echo hunter2")),
            NodeError::Node("ERR echo <redacted>".into())
        );
    }

    #[test]
    fn empty_password_means_none() {
        assert!(nodes(Some("")).password.is_none());
    }

    /// The command's words as sent on the wire.
    fn words(n: &RedisNodes, c: &Command) -> Vec<String> {
        n.to_cmd(c)
            .expect("password known")
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<other>".into(),
            })
            .collect()
    }

    #[test]
    fn commands_are_built_with_the_renamed_names() {
        let renames = BTreeMap::from([
            ("slaveof".to_string(), "sl4ve0f-x".to_string()),
            ("CONFIG".to_string(), "c0nf1g-x".to_string()),
            ("Info".to_string(), "1nf0-x".to_string()),
            ("CLIENT".to_string(), "cl1ent-x".to_string()),
        ]);
        let n = nodes(Some("pw")).with_renames(renames);
        let master = Addr::new("127.0.0.1", 6380);
        let d = n.dialect();
        let sent: Vec<Vec<String>> = [
            d.info("replication"),
            d.promote(),
            d.follow(&master, true),
            d.masterauth(),
            d.rewrite(),
            d.pause(Duration::from_millis(1500)),
            d.unpause(),
        ]
        .iter()
        .map(|c| words(&n, c))
        .collect();
        let expected: Vec<Vec<&str>> = vec![
            vec!["1nf0-x", "replication"],
            vec!["sl4ve0f-x", "NO", "ONE"],
            vec!["sl4ve0f-x", "127.0.0.1", "6380", "force"],
            vec!["c0nf1g-x", "SET", "masterauth", "pw"],
            vec!["c0nf1g-x", "REWRITE"],
            vec!["cl1ent-x", "PAUSE", "1500", "WRITE"],
            vec!["cl1ent-x", "UNPAUSE"],
        ];
        assert_eq!(sent, expected);
        assert_eq!(n.command_name("slaveof"), "sl4ve0f-x");
        assert_eq!(n.command_name("PING"), "PING");
    }

    #[test]
    fn without_renames_the_original_names_are_used() {
        let n = nodes(None);
        let d = n.dialect();
        assert_eq!(words(&n, &d.promote()), ["SLAVEOF", "NO", "ONE"]);
        assert_eq!(words(&n, &d.rewrite()), ["CONFIG", "REWRITE"]);
        assert_eq!(words(&n, &d.info("server")), ["INFO", "server"]);
        assert_eq!(words(&n, &d.unpause()), ["CLIENT", "UNPAUSE"]);
        assert!(n.to_cmd(&d.masterauth()).is_err());
    }

    /// A scripted node for the kept connection: answers AUTH (`good` is the password),
    /// INFO server and INFO replication; records the commands' first two words.
    async fn kept_peer(
        good: &'static str,
    ) -> (Addr, Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut b = vec![0u8; 4096];
                    loop {
                        let n = match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let text = String::from_utf8_lossy(&b[..n]).to_string();
                        let words: Vec<&str> = text
                            .split("\r\n")
                            .filter(|w| !w.starts_with(['*', '$']))
                            .collect();
                        let reply: String = match words.as_slice() {
                            ["AUTH", pw, ..] if *pw == good => "+OK\r\n".into(),
                            ["AUTH", ..] => "-ERR invalid password\r\n".into(),
                            ["INFO", "server", ..] => {
                                let t = "# Server\r\npika_version:4.0.0\r\n";
                                format!("${}\r\n{t}\r\n", t.len())
                            }
                            ["INFO", "replication", ..] => {
                                let t = "# Replication(MASTER)\r\nrole:master\r\nconnected_slaves:0\r\n";
                                format!("${}\r\n{t}\r\n", t.len())
                            }
                            _ => "-ERR unknown\r\n".into(),
                        };
                        let first_two = words.iter().take(2).map(|w| {
                            if words.first() == Some(&"AUTH") && *w != "AUTH" {
                                "<pw>"
                            } else {
                                w
                            }
                        });
                        log.lock()
                            .expect("log")
                            .push(first_two.collect::<Vec<_>>().join(" "));
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (Addr::new("127.0.0.1", port), seen, task)
    }

    #[tokio::test]
    async fn a_kept_connection_authenticates_once_and_then_asks_for_replication_only() {
        let (addr, seen, task) = kept_peer("s3cret-pw").await;
        let n = nodes(Some("s3cret-pw"));
        for _ in 0..3 {
            let s = n.status_pooled(&addr).await.expect("pooled status");
            assert_eq!(s.role, crate::model::Role::Master);
            assert_eq!(s.engine, Engine::Pika);
        }
        assert_eq!(n.pooled_connections(), 1);
        let log = seen.lock().expect("log").clone();
        assert_eq!(
            log,
            [
                "AUTH <pw>",
                "INFO server",
                "INFO replication",
                "INFO replication",
                "INFO replication"
            ]
        );
        // A wrong password is an auth error that never shows the password.
        let err = nodes(Some("wrong-pw-123"))
            .status_pooled(&addr)
            .await
            .expect_err("wrong password");
        assert!(matches!(err, NodeError::Auth(_)), "{err:?}");
        assert!(
            !format!("{err} {err:?}").contains("wrong-pw-123"),
            "{err:?}"
        );
        task.abort();
    }
}
