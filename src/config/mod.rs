//! The one TOML config file: parsed strictly (unknown keys are errors), then validated.
//! Errors name the file and the field. Secrets are never inline: they come from an env var
//! or a file, are read at load time, and are wrapped in [`Secret`], whose `Debug` is redacted.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Addr;

/// A secret value. `Debug`/`Display` never print it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where a secret comes from: exactly one of `env` or `file`.
///
/// Deserialized by hand so that an inline secret (`password = "hunter2"`) is rejected
/// without echoing its value in the error, which serde's default message would do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretSource;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table { env = \"VAR\" } or { file = \"/path\" }")
            }
            fn visit_str<E: serde::de::Error>(self, _v: &str) -> Result<SecretSource, E> {
                Err(E::custom(
                    "inline secrets are not accepted (the value is not shown); use { env = \"VAR\" } or { file = \"/path\" }",
                ))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<SecretSource, A::Error> {
                let mut out = SecretSource {
                    env: None,
                    file: None,
                };
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "env" => out.env = Some(m.next_value()?),
                        "file" => out.file = Some(m.next_value()?),
                        other => {
                            return Err(serde::de::Error::unknown_field(other, &["env", "file"]));
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    /// `Ok` for no error; else the first, its message followed by one `error: file: field:
    /// message` line per further error (so `check-config` prints every one).
    pub fn all(errs: Vec<ConfigError>) -> Result<(), ConfigError> {
        let mut it = errs.into_iter();
        let Some(mut first) = it.next() else {
            return Ok(());
        };
        for e in it {
            first.message.push_str(&format!("\nerror: {e}"));
        }
        Err(first)
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub service: ServiceConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub coordinator: CoordinatorConfig,
    #[serde(default)]
    pub webhook: WebhookConfig,
    /// Alertmanager notifications after remediations and refusals (`crate::notify`).
    #[serde(default)]
    pub notify: crate::notify::NotifyConfig,
    /// Commands run around failovers, switchovers and demotions (`crate::hooks`).
    #[serde(default)]
    pub hooks: crate::hooks::HooksConfig,
    #[serde(rename = "cluster", default)]
    pub clusters: Vec<ClusterConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// HTTP listen address for the webhook, API and `/metrics`.
    pub listen: SocketAddr,
    /// Instance id written into lock values; default `<hostname>-<pid>`.
    pub instance_id: Option<String>,
    /// How often every node is polled for `/metrics` (and the periodic check).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Run a periodic reconcile (trigger `periodic`) every this long; `0s` = off.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Start a reconcile (source `self`) as soon as a poll sees the recorded master unreachable
    /// or another node claiming master, without waiting for an alert. `false`: alerts only.
    pub self_trigger: bool,
    /// Share the clusters with the other `serve` instances registered in the same coordinator
    /// (`docs/scale-out.md`): each instance polls, self-triggers and runs the periodic check
    /// only for its share (rendezvous hashing over the live members); webhooks and the API
    /// still work on every instance for every cluster. `false`: this instance polls all.
    pub scale_out: bool,
    /// TTL of this instance's membership registration (scale-out): a dead instance's share
    /// moves to the others within about this long. Default: `policy.lock_ttl`.
    #[serde(with = "humantime_serde")]
    pub member_ttl: Option<Duration>,
    /// A reconcile for an alert may decide whether to act on the poller's last observation
    /// instead of asking every node again, if that poll started at most this long ago and not
    /// before the alert's `startsAt`. Only the first look: the look under the lock is always
    /// fresh. `0s`: every look asks the nodes.
    #[serde(with = "humantime_serde")]
    pub reuse_observation_within: Duration,
    /// Audit trail as JSON lines; none if unset.
    pub events_file: Option<PathBuf>,
    /// In-memory audit ring size.
    pub events_capacity: usize,
    /// Size cap of `events_file`: when a line would take it past this, the file is rotated
    /// (`events.jsonl` → `events.jsonl.1` → … ; the oldest beyond `events_file_keep` is removed).
    pub events_file_max_bytes: u64,
    /// How many events files to keep, the current one included (at least 2).
    pub events_file_keep: usize,
    /// A client must send a request's headers within this long, or the connection is closed
    /// (slow clients holding connections open).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// ... and its body within this long after the headers (else 408 and close).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Open HTTP connections at most; beyond it new connections are closed at once.
    pub max_connections: usize,
    /// Decide and log, but never send a mutating command.
    pub dry_run: bool,
    /// Global pause at start-up (like Patroni's pause): no automatic action.
    pub paused: bool,
    /// How long shutdown waits for an in-flight reconcile.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            // 9655: marked free in Prometheus' "Default port allocations" list; 9121 is
            // redis_exporter's (and pika_exporter's) port on the same hosts.
            listen: SocketAddr::from(([127, 0, 0, 1], 9655)),
            instance_id: None,
            poll_interval: Duration::from_millis(500),
            check_interval: Duration::from_secs(0),
            self_trigger: true,
            scale_out: false,
            member_ttl: None,
            reuse_observation_within: Duration::from_millis(500),
            events_file: None,
            events_capacity: 1000,
            events_file_max_bytes: crate::service::events::DEFAULT_FILE_MAX_BYTES,
            events_file_keep: crate::service::events::DEFAULT_FILE_KEEP,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            dry_run: false,
            paused: false,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    #[serde(with = "humantime_serde")]
    pub command: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_millis(500),
            command: Duration::from_secs(2),
        }
    }
}

/// Decision and execution policy (also the input of the pure `decide`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// A candidate more than this many bytes behind the best one is excluded.
    pub max_lag_bytes: u64,
    /// Before a failover, the master must still look dead after this long (a second observation).
    #[serde(with = "humantime_serde")]
    pub confirm_window: Duration,
    /// After an automatic failover, no other automatic failover for this long (manual still allowed;
    /// demotions of a returning old master are never blocked).
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Minimum number of nodes that must answer before any action.
    pub min_observed: usize,
    /// Bound for "role is master" after `SLAVEOF NO ONE`.
    #[serde(with = "humantime_serde")]
    pub promote_timeout: Duration,
    /// Bound for "link up" after `SLAVEOF host port`, before one forced retry. Default 15 s:
    /// after a forced re-attach to the same master, Pika refuses the slave with `Slave
    /// AlreadyExist` for 11–13 s before the link comes up.
    #[serde(with = "humantime_serde")]
    pub link_timeout: Duration,
    /// Bound for retries of Pika's `already master of others`.
    #[serde(with = "humantime_serde")]
    pub detach_timeout: Duration,
    /// Switchover: how long writes are paused while the candidate catches up.
    #[serde(with = "humantime_serde")]
    pub switchover_pause: Duration,
    /// Failover lock TTL. Must exceed the worst-case action time (checked by `validate`).
    #[serde(with = "humantime_serde")]
    pub lock_ttl: Duration,
    /// What to do before a demotion discards a node's diverged writes (see [`DivergedPolicy`]).
    pub diverged: DivergedPolicy,
    /// Bound for the `BGSAVE` of a diverged node (policy `snapshot`); past it the demotion is
    /// refused, nothing discarded. Not part of the `lock_ttl` check: the lease is renewed
    /// during the wait, and the lock is re-checked before the demotion's first command.
    #[serde(with = "humantime_serde")]
    pub snapshot_timeout: Duration,
    /// At most this many full syncs (a replica copying all data from its master) run at once
    /// per cluster; the plan makes the others wait in order. Default 1; at least 1.
    pub max_parallel_full_syncs: usize,
    /// Bound for one full sync to finish (link up) when a later one waits for it.
    #[serde(with = "humantime_serde")]
    pub full_sync_timeout: Duration,
}

/// `policy.diverged`: a node about to be demoted (its own writes discarded by a forced full
/// resync) that may hold writes the recorded master never had.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DivergedPolicy {
    /// `BGSAVE` on the node first (bounded by `snapshot_timeout`), its location recorded; a
    /// snapshot that fails or times out stops the demotion.
    #[default]
    Snapshot,
    /// Demote, recording the estimate of what diverged.
    Report,
    /// No automatic demotion of a diverged node: an operator decides
    /// (`pika-remedy demote --accept-data-loss`).
    Refuse,
}

impl DivergedPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DivergedPolicy::Snapshot => "snapshot",
            DivergedPolicy::Report => "report",
            DivergedPolicy::Refuse => "refuse",
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_lag_bytes: 1024 * 1024,
            confirm_window: Duration::from_millis(200),
            cooldown: Duration::from_secs(300),
            min_observed: 1,
            promote_timeout: Duration::from_secs(10),
            link_timeout: Duration::from_secs(15),
            detach_timeout: Duration::from_secs(10),
            switchover_pause: Duration::from_secs(5),
            lock_ttl: Duration::from_secs(60),
            diverged: DivergedPolicy::Snapshot,
            snapshot_timeout: Duration::from_secs(30),
            max_parallel_full_syncs: 1,
            full_sync_timeout: Duration::from_secs(600),
        }
    }
}

impl Policy {
    /// Worst case for the longest single step: a Pika detach retry, a link wait, one forced
    /// re-issue and a second link wait, plus command round trips, after the confirmation window.
    ///
    /// Why a single step and not the whole plan: the lease is renewed in the background and
    /// re-checked (fencing) before every mutating command, so the TTL only has to outlive the
    /// longest stretch in which a stalled holder could still be mid-step when its renewals stop.
    /// It also bounds how long a crashed holder blocks a takeover, so it should not be huge.
    pub fn worst_case_action(&self, t: &Timeouts) -> Duration {
        let per_cmd = t.connect + t.command;
        let follow = self.detach_timeout + self.link_timeout * 2;
        self.confirm_window
            + follow.max(self.promote_timeout).max(self.switchover_pause)
            + per_cmd * 6
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CoordinatorKind {
    #[default]
    Local,
    Consul,
    Etcd,
}

impl CoordinatorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CoordinatorKind::Local => "local",
            CoordinatorKind::Consul => "consul",
            CoordinatorKind::Etcd => "etcd",
        }
    }
}

impl Config {
    /// The membership TTL in force: `service.member_ttl`, else `policy.lock_ttl`.
    pub fn member_ttl(&self) -> Duration {
        self.service.member_ttl.unwrap_or(self.policy.lock_ttl)
    }
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    pub kind: CoordinatorKind,
    pub local: LocalConfig,
    pub consul: ConsulConfig,
    pub etcd: EtcdConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Directory for `<cluster>.topology.json`.
    pub dir: PathBuf,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            dir: PathBuf::from("/var/lib/pika-remedy"),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsulConfig {
    /// `http://127.0.0.1:8500` or `https://…`.
    pub address: String,
    pub token: Option<SecretSource>,
    pub datacenter: Option<String>,
    /// CA bundle (PEM) for https.
    pub ca_file: Option<PathBuf>,
    /// KV prefix: keys are `<prefix>/<cluster>/{lock,topology,master,events}`.
    pub prefix: String,
    /// Session lock-delay (Consul's default 15 s would stall a takeover).
    #[serde(with = "humantime_serde")]
    pub lock_delay: Duration,
    /// Health checks bound to the session. Empty = none (only TTL ends the session), which
    /// avoids losing the lock on a serfHealth blip.
    pub checks: Vec<String>,
    /// Register nodes in the catalog as service `<catalog_service>` with master/replica tags.
    pub catalog: bool,
    /// Service name template; `{cluster}` is replaced.
    pub catalog_service: String,
    /// How many events to keep under `<prefix>/<cluster>/events/`.
    pub events_keep: usize,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            address: "http://127.0.0.1:8500".into(),
            token: None,
            datacenter: None,
            ca_file: None,
            prefix: "pika-remedy".into(),
            lock_delay: Duration::from_millis(1),
            checks: Vec::new(),
            catalog: true,
            catalog_service: "pika-{cluster}".into(),
            events_keep: 100,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub user: Option<String>,
    pub password: Option<SecretSource>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub events_keep: usize,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/pika-remedy".into(),
            user: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            events_keep: 100,
        }
    }
}

/// Authentication of incoming webhook and API calls (Alertmanager `http_config`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Bearer token (Alertmanager `authorization: {credentials_file: …}`).
    pub bearer_token: Option<SecretSource>,
    /// Basic auth user and password (Alertmanager `basic_auth`).
    pub basic_user: Option<String>,
    pub basic_password: Option<SecretSource>,
    /// Read-only token for the status page and `GET /v1/*` (never `POST`): sent as
    /// `Authorization: Bearer <token>`, or in a browser as basic auth with user `read-only`.
    pub read_only_token: Option<SecretSource>,
    /// Accept unauthenticated requests (only for local demos; logged loudly).
    pub allow_unauthenticated: bool,
    /// Maximum body size in bytes.
    pub max_body_bytes: usize,
    /// Alert label naming the cluster.
    pub cluster_label: String,
    /// Alert label naming the node.
    pub instance_label: String,
    /// Alert names that mean "master down".
    pub master_down_alerts: Vec<String>,
    /// Alert names that mean "role mismatch".
    pub role_mismatch_alerts: Vec<String>,
    /// Answer a webhook within this long (below Alertmanager's 10 s notification timeout): a
    /// reconcile still running by then is answered 200 "in_progress" with its plan, and its
    /// outcome goes to the audit trail.
    #[serde(with = "humantime_serde")]
    pub reply_within: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            bearer_token: None,
            basic_user: None,
            basic_password: None,
            read_only_token: None,
            allow_unauthenticated: false,
            max_body_bytes: 1024 * 1024,
            cluster_label: "cluster".into(),
            instance_label: "instance".into(),
            master_down_alerts: vec!["PikaMasterDown".into()],
            role_mismatch_alerts: vec!["PikaRoleMismatch".into()],
            reply_within: Duration::from_secs(8),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    /// Node password (`requirepass`, also used as `masterauth`).
    pub password: Option<SecretSource>,
    /// Start paused (no automatic action for this cluster).
    #[serde(default)]
    pub paused: bool,
    /// The nodes' `rename-command` map: original command name -> the name the nodes know it
    /// by, e.g. `{ SLAVEOF = "sl4ve0f-x", CONFIG = "c0nf1g-x" }`. Keys are case-insensitive
    /// (see [`RENAMEABLE_COMMANDS`]); every node of the cluster must use the same renames.
    /// Use [`ClusterConfig::renames`] for the normalised (upper-case keys) map.
    #[serde(default)]
    pub rename_commands: BTreeMap<String, String>,
    pub nodes: Vec<NodeConfig>,
}

/// The commands pika-remedy sends and that `rename_commands` may rename. `AUTH` is not among
/// them: the redis crate sends it itself on connect, under its fixed name.
pub const RENAMEABLE_COMMANDS: [&str; 4] = ["SLAVEOF", "CONFIG", "INFO", "CLIENT"];

impl ClusterConfig {
    /// `rename_commands` with upper-case keys (what `RedisNodes::with_renames` expects).
    pub fn renames(&self) -> BTreeMap<String, String> {
        self.rename_commands
            .iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
            .collect()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub addr: Addr,
    /// Lower is preferred (like `slave-priority`); 0 = never promote.
    #[serde(default = "default_priority")]
    pub priority: u32,
    #[serde(default)]
    pub never_promote: bool,
}

fn default_priority() -> u32 {
    100
}

/// A validated config plus the secrets it names, resolved.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    /// Per cluster name: node password.
    pub cluster_passwords: std::collections::BTreeMap<String, Secret>,
    pub consul_token: Option<Secret>,
    pub etcd_password: Option<Secret>,
    pub webhook_bearer: Option<Secret>,
    pub webhook_basic_password: Option<Secret>,
    /// `webhook.read_only_token`, resolved.
    pub read_only_token: Option<Secret>,
}

impl Loaded {
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.config.clusters.iter().find(|c| c.name == name)
    }
    pub fn password(&self, cluster: &str) -> Option<&Secret> {
        self.cluster_passwords.get(cluster)
    }
}

mod load;
mod validate;

pub use load::{load, resolve_secret};

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[webhook]
allow_unauthenticated = true
[[cluster]]
name = "main"
nodes = [{ addr = "127.0.0.1:9221" }, { addr = "127.0.0.1:9222", priority = 10 }]
"#;

    #[test]
    fn minimal_config_is_valid() {
        let c = Config::parse(MIN, "t.toml").unwrap();
        c.validate("t.toml").unwrap();
        assert_eq!(c.clusters[0].nodes[1].priority, 10);
        assert_eq!(c.clusters[0].nodes[0].priority, 100);
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_file() {
        let e = Config::parse(&format!("{MIN}\nbogus = 1\n"), "t.toml").unwrap_err();
        assert!(e.to_string().starts_with("t.toml: "), "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn inline_secret_is_rejected_without_echoing_it() {
        let text = MIN.replace("name = \"main\"", "name = \"main\"\npassword = \"hunter2\"");
        let e = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("inline secrets are not accepted"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn error_line_numbers_are_one_based() {
        let e = Config::parse("\nbogus = 1\n", "t.toml").unwrap_err();
        assert_eq!(e.field, "line 2", "{e}");
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }

    #[test]
    fn lock_ttl_must_exceed_worst_case() {
        let text = format!("[policy]\nlock_ttl = \"5s\"\n{MIN}");
        let c = Config::parse(&text, "t.toml").unwrap();
        let e = c.validate("t.toml").unwrap_err();
        assert_eq!(e.field, "policy.lock_ttl", "{e}");
    }

    #[test]
    fn default_link_timeout_outlasts_pikas_already_exist_window_and_fits_the_default_lock_ttl() {
        let p = Policy::default();
        // Pika refuses a forced re-attach to the same master for 11–13 s ("Slave AlreadyExist").
        assert!(
            p.link_timeout >= Duration::from_secs(15),
            "{:?}",
            p.link_timeout
        );
        let worst = p.worst_case_action(&Timeouts::default());
        assert!(
            p.lock_ttl > worst,
            "lock_ttl {:?} <= worst case {worst:?}",
            p.lock_ttl
        );
        let c = Config::parse(MIN, "t.toml").unwrap();
        c.validate("t.toml").unwrap();
    }

    fn with_renames(table: &str) -> Result<Config, ConfigError> {
        let text = MIN.replace(
            "name = \"main\"",
            &format!("name = \"main\"\nrename_commands = {table}"),
        );
        let c = Config::parse(&text, "t.toml")?;
        c.validate("t.toml")?;
        Ok(c)
    }

    #[test]
    fn rename_commands_are_normalised_to_upper_case() {
        let c = with_renames(r#"{ slaveof = "sl4ve0f-x", Config = "c0nf1g-x" }"#).unwrap();
        let r = c.clusters[0].renames();
        assert_eq!(r.get("SLAVEOF").map(String::as_str), Some("sl4ve0f-x"));
        assert_eq!(r.get("CONFIG").map(String::as_str), Some("c0nf1g-x"));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn rename_commands_default_to_none() {
        let c = Config::parse(MIN, "t.toml").unwrap();
        assert!(c.clusters[0].renames().is_empty());
    }

    #[test]
    fn bad_rename_commands_are_rejected_naming_the_field() {
        for (table, needle) in [
            (r#"{ FLUSHALL = "x" }"#, "cannot be renamed"),
            (r#"{ AUTH = "x" }"#, "cannot be renamed"),
            (r#"{ SLAVEOF = "" }"#, "disabled"),
            (r#"{ CONFIG = "c 1" }"#, "whitespace"),
            (r#"{ slaveof = "a", SLAVEOF = "b" }"#, "renamed twice"),
            (r#"{ SLAVEOF = "a", CONFIG = "A" }"#, "cannot both"),
        ] {
            let e = with_renames(table).unwrap_err();
            assert!(
                e.field.starts_with("cluster.main.rename_commands."),
                "{table}: {e}"
            );
            assert!(e.message.contains(needle), "{table}: {e}");
        }
    }
}
