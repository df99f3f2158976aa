//! Operator hooks (Sentinel's `client-reconfig-script`, Patroni's callbacks): commands run
//! around a failover, a switchover and a demotion, with the cluster, the roles, the addresses
//! and the epoch in `PIKA_REMEDY_*` env vars.
//!
//! - **No shell.** A hook is an argv array; `["sh", "-c", "…"]` if the operator wants one.
//! - **Clean env.** Only `PATH` (the service's own), the names listed in `env_passthrough`
//!   (never one the config reads a secret from: `validate` refuses it) and the `PIKA_REMEDY_*`
//!   vars. No password, no token, nothing else inherited.
//! - **Bounded.** Each run has `timeout`; then its process group gets SIGTERM, and SIGKILL
//!   after `kill_grace`. Output (stdout and stderr, in arrival order) is kept up to
//!   [`OUTPUT_LINES`] lines / [`OUTPUT_BYTES`] bytes; the rest is read and dropped.
//! - **Where.** `pre_failover` / `pre_switchover` run under the cluster's lock after the
//!   re-check, before the first command to a node. A failing pre hook (exit ≠ 0, timeout,
//!   cannot start) **vetoes** the action when `pre_failover_veto` / `pre_switchover_veto` is
//!   set (defaults: failover `false`, an automatic failover must not depend on a script;
//!   switchover `true`, it is planned, so a "not now" from the operator's tooling wins):
//!   nothing is sent to any node and the outcome is `vetoed`. Otherwise the failure is
//!   recorded and the plan goes on. `post_failover` / `post_switchover` run once the new
//!   master is recorded, `post_demote` once the demoted node follows the recorded master;
//!   their failures never undo anything.
//! - **Audited.** Every run ([`HookRun`]: hook, program, result, exit code, duration, first
//!   lines of output) is part of the reconcile's outcome, so of the audit trail (events file,
//!   `GET /v1/events`, `history`), for `serve` and for the CLI alike.
//!
//! Not in `plan` output: hooks are not node commands built from the observation (the plan's
//! steps are, and `tests/exec_matches_plan.rs` holds the executor to exactly them); they come
//! from the config and show up in the outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::config::{Config, ConfigError};
use crate::decide::{Action, Plan};
use crate::model::{Addr, TopologyRecord};

/// Lines of a hook's output kept in the audit trail.
pub const OUTPUT_LINES: usize = 20;
/// Bytes of a hook's output kept in the audit trail.
pub const OUTPUT_BYTES: usize = 4096;
/// After the hook exited, how long its pipes may stay open (a backgrounded child holding
/// them) before we stop reading.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);
/// Largest accepted `timeout`.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// `PATH` when the service has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One set of hooks: `[hooks]`, or a cluster's `[hooks.cluster.NAME]` (its keys override
/// the global ones, unset keys inherit them).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HookSet {
    /// argv; empty = no hook.
    pub pre_failover: Vec<String>,
    pub post_failover: Vec<String>,
    pub pre_switchover: Vec<String>,
    pub post_switchover: Vec<String>,
    pub post_demote: Vec<String>,
    /// Bound of one run.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// After `timeout`: SIGTERM to the process group, then SIGKILL after this long.
    #[serde(with = "humantime_serde")]
    pub kill_grace: Duration,
    /// A failing `pre_failover` stops the failover.
    pub pre_failover_veto: bool,
    /// A failing `pre_switchover` stops the switchover.
    pub pre_switchover_veto: bool,
    /// Env vars of the service passed to hooks (besides `PATH`). Never a secret's source.
    pub env_passthrough: Vec<String>,
}

impl Default for HookSet {
    fn default() -> Self {
        HookSet {
            pre_failover: Vec::new(),
            post_failover: Vec::new(),
            pre_switchover: Vec::new(),
            post_switchover: Vec::new(),
            post_demote: Vec::new(),
            timeout: Duration::from_secs(10),
            kill_grace: Duration::from_secs(2),
            pre_failover_veto: false,
            pre_switchover_veto: true,
            env_passthrough: Vec::new(),
        }
    }
}

/// `[hooks]`: the global set and the per-cluster sets (already merged with the global one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HooksConfig {
    pub global: HookSet,
    pub cluster: BTreeMap<String, HookSet>,
}

impl<'de> Deserialize<'de> for HooksConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(d)?;
        let clusters = table.remove("cluster");
        let global = HookSet::deserialize(table.clone()).map_err(D::Error::custom)?;
        let mut cluster = BTreeMap::new();
        if let Some(c) = clusters {
            let toml::Value::Table(c) = c else {
                return Err(D::Error::custom(
                    "hooks.cluster: expected tables [hooks.cluster.NAME]",
                ));
            };
            for (name, v) in c {
                let toml::Value::Table(own) = v else {
                    return Err(D::Error::custom(format!(
                        "hooks.cluster.{name}: expected a table"
                    )));
                };
                let mut merged = table.clone();
                merged.extend(own);
                let set = HookSet::deserialize(merged)
                    .map_err(|e| D::Error::custom(format!("hooks.cluster.{name}: {e}")))?;
                cluster.insert(name, set);
            }
        }
        Ok(HooksConfig { global, cluster })
    }
}

impl HooksConfig {
    /// The hooks of `cluster`.
    pub fn for_cluster(&self, cluster: &str) -> HookSet {
        self.cluster.get(cluster).unwrap_or(&self.global).clone()
    }

    /// Called by `Config::validate`.
    pub fn validate(&self, config: &Config, file: &str) -> Result<(), ConfigError> {
        let err = |field: String, message: String| ConfigError {
            file: file.to_string(),
            field,
            message,
        };
        let names: BTreeSet<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        let secret_envs = secret_env_names(config);
        let sets = std::iter::once(("hooks".to_string(), &self.global)).chain(
            self.cluster
                .iter()
                .map(|(n, s)| (format!("hooks.cluster.{n}"), s)),
        );
        for (at, set) in sets {
            if let Some(name) = at.strip_prefix("hooks.cluster.") {
                if !names.contains(name) {
                    return Err(err(at.clone(), format!("no [[cluster]] named {name:?}")));
                }
            }
            for hook in Hook::ALL {
                let argv = set.argv(hook);
                if argv.first().is_some_and(|p| p.is_empty()) {
                    return Err(err(
                        format!("{at}.{}", hook.name()),
                        "the program (first element) is empty".into(),
                    ));
                }
            }
            if set.timeout.is_zero() || set.timeout > MAX_TIMEOUT {
                return Err(err(
                    format!("{at}.timeout"),
                    format!(
                        "must be more than 0 and at most {}",
                        humantime::format_duration(MAX_TIMEOUT)
                    ),
                ));
            }
            if set.kill_grace > MAX_TIMEOUT {
                return Err(err(
                    format!("{at}.kill_grace"),
                    format!("at most {}", humantime::format_duration(MAX_TIMEOUT)),
                ));
            }
            for v in &set.env_passthrough {
                let valid = !v.is_empty()
                    && !v.contains('=')
                    && !v.contains('\0')
                    && v != "PATH"
                    && !v.starts_with("PIKA_REMEDY_");
                if !valid {
                    return Err(err(
                        format!("{at}.env_passthrough"),
                        format!("{v:?}: not a name that can be passed (PATH and PIKA_REMEDY_* are set by pika-remedy)"),
                    ));
                }
                if secret_envs.contains(v.as_str()) {
                    return Err(err(
                        format!("{at}.env_passthrough"),
                        format!("{v:?} holds a secret of this config; hooks never get secrets"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The env var names this config reads secrets from.
fn secret_env_names(c: &Config) -> BTreeSet<&str> {
    let mut sources = vec![
        c.coordinator.consul.token.as_ref(),
        c.coordinator.etcd.password.as_ref(),
        c.webhook.bearer_token.as_ref(),
        c.webhook.basic_password.as_ref(),
        c.webhook.read_only_token.as_ref(),
        c.notify.bearer_token.as_ref(),
        c.notify.basic_password.as_ref(),
    ];
    sources.extend(c.clusters.iter().map(|cl| cl.password.as_ref()));
    sources
        .into_iter()
        .flatten()
        .filter_map(|s| s.env.as_deref())
        .collect()
}

/// Which hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    PreFailover,
    PostFailover,
    PreSwitchover,
    PostSwitchover,
    PostDemote,
}

impl Hook {
    pub const ALL: [Hook; 5] = [
        Hook::PreFailover,
        Hook::PostFailover,
        Hook::PreSwitchover,
        Hook::PostSwitchover,
        Hook::PostDemote,
    ];
    /// The config key, the `hook` label of `pika_remedy_hook_runs_total`, `PIKA_REMEDY_HOOK`.
    pub fn name(self) -> &'static str {
        match self {
            Hook::PreFailover => "pre_failover",
            Hook::PostFailover => "post_failover",
            Hook::PreSwitchover => "pre_switchover",
            Hook::PostSwitchover => "post_switchover",
            Hook::PostDemote => "post_demote",
        }
    }
}

impl HookSet {
    pub fn argv(&self, hook: Hook) -> &[String] {
        match hook {
            Hook::PreFailover => &self.pre_failover,
            Hook::PostFailover => &self.post_failover,
            Hook::PreSwitchover => &self.pre_switchover,
            Hook::PostSwitchover => &self.post_switchover,
            Hook::PostDemote => &self.post_demote,
        }
    }

    fn vetoes(&self, hook: Hook) -> bool {
        match hook {
            Hook::PreFailover => self.pre_failover_veto,
            Hook::PreSwitchover => self.pre_switchover_veto,
            _ => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        Hook::ALL.iter().all(|h| self.argv(*h).is_empty())
    }

    /// The longest the hooks can add to one reconcile (one pre and one post hook, each up to
    /// its timeout, the kill grace, the final wait and the pipe drain); zero without hooks.
    /// The service adds it to its bound on a reconcile.
    pub fn worst_case(&self) -> Duration {
        if self.is_empty() {
            return Duration::ZERO;
        }
        (self.timeout + self.kill_grace + Duration::from_secs(1) + DRAIN_AFTER_EXIT) * 2
    }
}

/// How a run ended (the `result` label of `pika_remedy_hook_runs_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookResult {
    /// Exit code 0.
    Ok,
    /// Non-zero exit code, or killed by a signal we did not send.
    Failed,
    /// Still running at `timeout`: its process group was killed.
    Timeout,
    /// Could not be started (no such program, not executable).
    SpawnError,
}

impl HookResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HookResult::Ok => "ok",
            HookResult::Failed => "failed",
            HookResult::Timeout => "timeout",
            HookResult::SpawnError => "spawn_error",
        }
    }
}

/// One hook run, as kept in the outcome and the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRun {
    /// `pre_failover`, `post_failover`, …
    pub hook: String,
    /// The program (`argv[0]`; the arguments are not repeated here).
    pub program: String,
    pub result: HookResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub millis: u64,
    /// The first [`OUTPUT_LINES`] lines / [`OUTPUT_BYTES`] bytes of stdout and stderr.
    #[serde(default)]
    pub output: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    /// This failing pre hook stopped the action (`pre_*_veto`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vetoed: bool,
    /// `PIKA_REMEDY_EVENT_ID`: the same for every hook of one reconcile.
    pub event_id: String,
    /// One line: "exit 0 after 12 ms", "timed out after 10s: process group killed", …
    pub detail: String,
}

/// What a hook is told (its `PIKA_REMEDY_*` env).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookEnv {
    pub cluster: String,
    /// `failover`, `switchover`, `demote`.
    pub action: String,
    pub trigger: String,
    pub old_master: Option<Addr>,
    pub new_master: Option<Addr>,
    /// Pre hooks: the recorded epoch (before the action); post hooks: the new record's epoch.
    pub epoch: Option<u64>,
    pub replicas: Vec<Addr>,
    pub reason: String,
    pub event_id: String,
}

impl HookEnv {
    fn vars(&self, hook: Hook) -> Vec<(&'static str, String)> {
        let addr = |a: &Option<Addr>| a.as_ref().map(|a| a.to_string()).unwrap_or_default();
        vec![
            ("PIKA_REMEDY_HOOK", hook.name().to_string()),
            ("PIKA_REMEDY_CLUSTER", self.cluster.clone()),
            ("PIKA_REMEDY_ACTION", self.action.clone()),
            ("PIKA_REMEDY_TRIGGER", self.trigger.clone()),
            ("PIKA_REMEDY_OLD_MASTER", addr(&self.old_master)),
            ("PIKA_REMEDY_NEW_MASTER", addr(&self.new_master)),
            (
                "PIKA_REMEDY_EPOCH",
                self.epoch.map(|e| e.to_string()).unwrap_or_default(),
            ),
            (
                "PIKA_REMEDY_REPLICAS",
                self.replicas
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("PIKA_REMEDY_REASON", self.reason.clone()),
            ("PIKA_REMEDY_EVENT_ID", self.event_id.clone()),
        ]
    }
}

/// A fresh id for one reconcile's hooks: unique per process and across processes in practice
/// (clock, pid, counter).
pub fn event_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "hook-{nanos:x}-{:x}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed) + 1
    )
}

/// The pre hook of a plan's action, if any: (hook, env).
pub fn pre_for(
    plan: &Plan,
    cluster: &str,
    trigger: &str,
    record: Option<&TopologyRecord>,
    event_id: &str,
) -> Option<(Hook, HookEnv)> {
    let (hook, old, new, replicas) = match &plan.action {
        Action::Failover {
            promote,
            repoint,
            old_master,
            ..
        } => (Hook::PreFailover, old_master, promote, repoint),
        Action::Switchover {
            promote,
            repoint,
            old_master,
        } => (Hook::PreSwitchover, old_master, promote, repoint),
        _ => return None,
    };
    Some((
        hook,
        HookEnv {
            cluster: cluster.to_string(),
            action: plan.action.label().to_string(),
            trigger: trigger.to_string(),
            old_master: Some(old.clone()),
            new_master: Some(new.clone()),
            epoch: record.map(|r| r.epoch),
            replicas: replicas.clone(),
            reason: plan.reason.clone(),
            event_id: event_id.to_string(),
        },
    ))
}

/// The post hook of a plan whose role change took effect (`record`: the record now stored).
pub fn post_for(
    plan: &Plan,
    cluster: &str,
    trigger: &str,
    record: Option<&TopologyRecord>,
    event_id: &str,
) -> Option<(Hook, HookEnv)> {
    let (hook, old, new) = match &plan.action {
        Action::Failover {
            promote,
            old_master,
            ..
        } => (Hook::PostFailover, old_master, promote),
        Action::Switchover {
            promote,
            old_master,
            ..
        } => (Hook::PostSwitchover, old_master, promote),
        Action::Demote { node, to } => (Hook::PostDemote, node, to),
        _ => return None,
    };
    Some((
        hook,
        HookEnv {
            cluster: cluster.to_string(),
            action: plan.action.label().to_string(),
            trigger: trigger.to_string(),
            old_master: Some(old.clone()),
            new_master: Some(new.clone()),
            epoch: record.map(|r| r.epoch),
            replicas: record.map(|r| r.replicas.clone()).unwrap_or_default(),
            reason: plan.reason.clone(),
            event_id: event_id.to_string(),
        },
    ))
}

/// Run `hook` of `set` if configured. `None`: no such hook.
pub async fn run(set: &HookSet, hook: Hook, env: &HookEnv) -> Option<HookRun> {
    let argv = set.argv(hook);
    let program = argv.first()?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    for name in &set.env_passthrough {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    for (k, v) in env.vars(hook) {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut run = HookRun {
        hook: hook.name().to_string(),
        program: program.clone(),
        result: HookResult::Ok,
        exit_code: None,
        millis: 0,
        output: String::new(),
        output_truncated: false,
        vetoed: false,
        event_id: env.event_id.clone(),
        detail: String::new(),
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            run.result = HookResult::SpawnError;
            run.detail = format!("cannot start {program}: {e}");
            run.vetoed = set.vetoes(hook);
            log(&run, &env.cluster);
            return Some(run);
        }
    };
    let pid = child.id();
    let captured = Arc::new(Mutex::new(Captured::default()));
    let mut reader = tokio::spawn(capture(
        child.stdout.take(),
        child.stderr.take(),
        Arc::clone(&captured),
    ));
    match tokio::time::timeout(set.timeout, child.wait()).await {
        Ok(Ok(status)) => {
            run.millis = start.elapsed().as_millis() as u64;
            run.exit_code = status.code();
            let took = humantime::format_duration(Duration::from_millis(run.millis));
            match status.code() {
                Some(0) => run.detail = format!("exit 0 after {took}"),
                Some(c) => {
                    run.result = HookResult::Failed;
                    run.detail = format!("exit {c} after {took}");
                }
                None => {
                    run.result = HookResult::Failed;
                    run.detail = format!("killed by a signal after {took}");
                }
            }
        }
        Ok(Err(e)) => {
            run.millis = start.elapsed().as_millis() as u64;
            run.result = HookResult::Failed;
            run.detail = format!("waiting for {program} failed: {e}");
        }
        Err(_) => {
            signal_group(pid, Signal::Term);
            let how = match tokio::time::timeout(set.kill_grace, child.wait()).await {
                Ok(_) => "SIGTERM",
                Err(_) => {
                    signal_group(pid, Signal::Kill);
                    let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
                    "SIGTERM, then SIGKILL"
                }
            };
            run.millis = start.elapsed().as_millis() as u64;
            run.result = HookResult::Timeout;
            run.detail = format!(
                "timed out after {}: process group killed ({how}) after {}",
                humantime::format_duration(set.timeout),
                humantime::format_duration(Duration::from_millis(run.millis))
            );
        }
    }
    if tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reader)
        .await
        .is_err()
    {
        reader.abort();
    }
    if let Ok(c) = captured.lock() {
        run.output = String::from_utf8_lossy(&c.bytes).into_owned();
        run.output_truncated = c.truncated;
    }
    run.vetoed = run.result != HookResult::Ok && set.vetoes(hook);
    log(&run, &env.cluster);
    Some(run)
}

fn log(run: &HookRun, cluster: &str) {
    if run.result == HookResult::Ok {
        tracing::info!(cluster, hook = %run.hook, program = %run.program, millis = run.millis, "hook: {}", run.detail);
    } else {
        tracing::warn!(cluster, hook = %run.hook, program = %run.program, millis = run.millis, vetoed = run.vetoed, "hook: {}", run.detail);
    }
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    lines: usize,
    truncated: bool,
}

impl Captured {
    /// Keep what fits in the bounds, drop the rest.
    fn push(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.lines >= OUTPUT_LINES || self.bytes.len() >= OUTPUT_BYTES {
                self.truncated = true;
                return;
            }
            self.bytes.push(b);
            if b == b'\n' {
                self.lines += 1;
            }
        }
    }
}

/// Read both pipes to their end (so the hook never blocks on a full pipe), keeping the first
/// bytes in `into`.
async fn capture(
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    into: Arc<Mutex<Captured>>,
) {
    let mut out = stdout;
    let mut err = stderr;
    let mut b1 = [0u8; 1024];
    let mut b2 = [0u8; 1024];
    while out.is_some() || err.is_some() {
        tokio::select! {
            r = read_some(&mut out, &mut b1), if out.is_some() => match r {
                Ok(n) if n > 0 => keep(&into, &b1[..n]),
                _ => out = None,
            },
            r = read_some(&mut err, &mut b2), if err.is_some() => match r {
                Ok(n) if n > 0 => keep(&into, &b2[..n]),
                _ => err = None,
            },
        }
    }
}

/// One read from an open pipe; a closed one (`None`) reads as its end.
async fn read_some<R: tokio::io::AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => Ok(0),
    }
}

fn keep(into: &Mutex<Captured>, chunk: &[u8]) {
    if let Ok(mut c) = into.lock() {
        c.push(chunk);
    }
}

enum Signal {
    Term,
    Kill,
}

/// Signal the hook's process group (its pgid is its pid: `process_group(0)`).
fn signal_group(pid: Option<u32>, sig: Signal) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) else {
        return;
    };
    let sig = match sig {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    // SAFETY: kill(2) with a negative pid signals that process group; it takes no pointers
    // and has no memory effects on this process. `pid > 1`, so never -1 (every process).
    unsafe {
        libc::kill(-pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded_by_lines_and_bytes() {
        let mut c = Captured::default();
        for i in 0..30 {
            c.push(format!("line {i}\n").as_bytes());
        }
        assert_eq!(c.lines, OUTPUT_LINES);
        assert!(c.truncated);
        let mut c = Captured::default();
        c.push(&vec![b'x'; OUTPUT_BYTES + 10]);
        assert_eq!(c.bytes.len(), OUTPUT_BYTES);
        assert!(c.truncated);
    }

    #[test]
    fn a_cluster_table_overrides_the_global_keys_it_names() {
        let text = r#"
pre_failover = ["/bin/true"]
timeout = "3s"
env_passthrough = ["LANG"]
[cluster.b]
timeout = "1s"
pre_failover_veto = true
"#;
        let h: HooksConfig = toml::from_str(text).expect("parse");
        assert_eq!(h.global.timeout, Duration::from_secs(3));
        let b = h.for_cluster("b");
        assert_eq!(b.timeout, Duration::from_secs(1));
        assert!(b.pre_failover_veto);
        assert_eq!(b.pre_failover, ["/bin/true"]);
        assert_eq!(b.env_passthrough, ["LANG"]);
        assert_eq!(h.for_cluster("a"), h.global);
        let e = toml::from_str::<HooksConfig>("[cluster.b]\nbogus = 1\n").expect_err("unknown");
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn event_ids_differ() {
        assert_ne!(event_id(), event_id());
    }
}
