//! Hooks (`[hooks]`, `src/hooks.rs`) on real redis-servers and the local coordinator, through
//! the config file and the cluster handles the service and the CLI use (and the real binary
//! for the CLI path and its audit trail): the env a hook gets (and what it never gets), the
//! timeout, the veto, post hooks seeing the new master and epoch.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pika_remedy::config::load;
use pika_remedy::coord::Coordinator;
use pika_remedy::decide::{Action, Trigger};
use pika_remedy::hooks::HookResult;
use pika_remedy::model::Addr;
use pika_remedy::reconcile::handle::{Handles, Mode};
use pika_remedy::reconcile::{Outcome, Result_};
use support::redis::{info_field, wait_for, RedisCluster};

const BIN: &str = env!("CARGO_BIN_EXE_pika-remedy");
const CLUSTER: &str = "main";
const PASSWORD: &str = "hook-test-secret-7f3a";
/// The env var the node password comes from (set in this process; never a hook's).
const PW_ENV: &str = "HOOKS_TEST_NODE_PW";
const PASSED_ENV: &str = "HOOKS_TEST_PASSED";
const NOT_LISTED_ENV: &str = "HOOKS_TEST_NOT_LISTED";
const BOUND: Duration = Duration::from_secs(60);

/// The hook script: writes its env to `<dir>/<hook>.env`, prints two lines, exits `$2`.
const SCRIPT: &str = r#"#!/bin/sh
env > "$1/$PIKA_REMEDY_HOOK.env"
echo "hook $PIKA_REMEDY_HOOK for $PIKA_REMEDY_CLUSTER"
echo "to stderr" >&2
exit "$2"
"#;

struct Env {
    rc: RedisCluster,
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn set_process_env() {
    // Same values from every test, so concurrent tests agree.
    std::env::set_var(PW_ENV, PASSWORD);
    std::env::set_var(PASSED_ENV, "passed-value");
    std::env::set_var(NOT_LISTED_ENV, "must-not-be-seen");
}

impl Env {
    /// A master and two replicas with a password; `hooks` is the body of `[hooks]` (the
    /// script is `{script}`, the output dir `{out}`).
    fn start(hooks: &str) -> Env {
        set_process_env();
        let rc = RedisCluster::start(2, Some(PASSWORD));
        let dir = tempfile::Builder::new()
            .prefix("pika-remedy-hooks-")
            .tempdir()
            .expect("temp dir");
        let script = dir.path().join("hook.sh");
        std::fs::write(&script, SCRIPT).expect("write script");
        let hooks = hooks
            .replace("{script}", &script.display().to_string())
            .replace("{out}", &dir.path().display().to_string());
        let nodes: Vec<String> = rc
            .addrs()
            .iter()
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect();
        let text = format!(
            r#"[service]
events_file = "{events}"
[timeouts]
connect = "300ms"
command = "2s"
[policy]
confirm_window = "0s"
promote_timeout = "5s"
link_timeout = "5s"
detach_timeout = "2s"
[coordinator]
kind = "local"
[coordinator.local]
dir = "{coord}"
[webhook]
allow_unauthenticated = true
[hooks]
{hooks}
[[cluster]]
name = "{CLUSTER}"
password = {{ env = "{PW_ENV}" }}
nodes = [{nodes}]
"#,
            events = dir.path().join("events.jsonl").display(),
            coord = dir.path().join("coord").display(),
            nodes = nodes.join(", "),
        );
        let config = dir.path().join("pika-remedy.toml");
        std::fs::write(&config, text).expect("write config");
        Env { rc, dir, config }
    }

    async fn handles(&self) -> Handles {
        let loaded = load(&self.config).expect("config loads");
        Handles::connect(&loaded).await.expect("handles")
    }

    async fn reconcile(&self, trigger: Trigger) -> Outcome {
        let hs = self.handles().await;
        let h = hs.get(CLUSTER).expect("cluster");
        tokio::time::timeout(BOUND, h.reconcile(trigger, &Mode::default()))
            .await
            .expect("reconcile is bounded")
    }

    /// Record the running master (bootstrap), then kill it and wait until both replicas see
    /// their link down.
    async fn bootstrap_and_kill_master(&mut self) {
        let out = self.reconcile(Trigger::Periodic).await;
        assert!(
            matches!(out.plan.action, Action::Bootstrap { .. }) && out.result == Result_::Applied,
            "{out:#?}"
        );
        assert!(out.hooks.is_empty(), "no hook for a bootstrap: {out:#?}");
        self.rc.master.kill9();
        for r in &self.rc.replicas {
            wait_for(
                Duration::from_secs(10),
                "replica sees the master down",
                || {
                    r.try_cmd(&["INFO", "replication"]).is_ok_and(|i| {
                        info_field(&i, "master_link_status").as_deref() == Some("down")
                    })
                },
            );
        }
    }

    fn hook_env(&self, hook: &str) -> Option<BTreeMap<String, String>> {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{hook}.env"))).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn events(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("events.jsonl")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> (i32, String) {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn pika-remedy");
        let deadline = Instant::now() + BOUND;
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("pika-remedy {args:?} did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

fn addr_of(a: &Addr) -> String {
    a.to_string()
}

/// Only these names may be in a hook's env: PATH, the listed pass-through, ours, and what
/// `sh` itself sets.
fn assert_clean(env: &BTreeMap<String, String>) {
    for (k, v) in env {
        let allowed = k == "PATH"
            || k == PASSED_ENV
            || k.starts_with("PIKA_REMEDY_")
            || ["PWD", "OLDPWD", "SHLVL", "_"].contains(&k.as_str());
        assert!(allowed, "unexpected {k} in the hook's env: {env:#?}");
        assert!(!v.contains(PASSWORD), "the password leaked into {k}");
    }
    assert!(!env.contains_key(PW_ENV) && !env.contains_key(NOT_LISTED_ENV));
    assert_eq!(
        env.get(PASSED_ENV).map(String::as_str),
        Some("passed-value")
    );
    assert!(env.get("PATH").is_some_and(|p| !p.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_and_post_hooks_get_the_roles_addresses_and_epoch_and_no_secret() {
    let mut env = Env::start(&format!(
        r#"pre_failover = ["/bin/sh", "{{script}}", "{{out}}", "0"]
post_failover = ["/bin/sh", "{{script}}", "{{out}}", "0"]
post_demote = ["/bin/sh", "{{script}}", "{{out}}", "0"]
env_passthrough = ["{PASSED_ENV}"]
"#
    ));
    let old = env.rc.master.addr();
    env.bootstrap_and_kill_master().await;
    let out = env.reconcile(Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    let Action::Failover {
        promote, repoint, ..
    } = &out.plan.action
    else {
        panic!("not a failover: {out:#?}");
    };
    assert_eq!(out.hooks.len(), 2, "{:#?}", out.hooks);
    let (pre_run, post_run) = (&out.hooks[0], &out.hooks[1]);
    assert_eq!(
        (pre_run.hook.as_str(), post_run.hook.as_str()),
        ("pre_failover", "post_failover")
    );
    for r in &out.hooks {
        assert_eq!(r.result, HookResult::Ok, "{r:#?}");
        assert_eq!(r.exit_code, Some(0));
        assert!(
            r.output.contains(&format!("hook {} for main", r.hook)),
            "{r:#?}"
        );
        assert!(r.output.contains("to stderr"), "{r:#?}");
        assert!(!r.vetoed);
    }
    let json = serde_json::to_string(&out).expect("json");
    assert!(!json.contains(PASSWORD), "the password is in the outcome");

    let pre = env.hook_env("pre_failover").expect("pre_failover ran");
    assert_clean(&pre);
    let get = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_default();
    assert_eq!(get(&pre, "PIKA_REMEDY_CLUSTER"), "main");
    assert_eq!(get(&pre, "PIKA_REMEDY_ACTION"), "failover");
    assert_eq!(get(&pre, "PIKA_REMEDY_TRIGGER"), "master_down");
    assert_eq!(get(&pre, "PIKA_REMEDY_OLD_MASTER"), addr_of(&old));
    assert_eq!(get(&pre, "PIKA_REMEDY_NEW_MASTER"), addr_of(promote));
    assert_eq!(get(&pre, "PIKA_REMEDY_EPOCH"), "1", "pre: the epoch before");
    let want: Vec<String> = repoint.iter().map(addr_of).collect();
    assert_eq!(get(&pre, "PIKA_REMEDY_REPLICAS"), want.join(","));
    assert!(
        get(&pre, "PIKA_REMEDY_REASON").contains("promoting"),
        "{pre:#?}"
    );
    let id = get(&pre, "PIKA_REMEDY_EVENT_ID");
    assert!(!id.is_empty());
    assert_eq!(pre_run.event_id, id);

    let post = env.hook_env("post_failover").expect("post_failover ran");
    assert_clean(&post);
    assert_eq!(get(&post, "PIKA_REMEDY_NEW_MASTER"), addr_of(promote));
    assert_eq!(get(&post, "PIKA_REMEDY_OLD_MASTER"), addr_of(&old));
    assert_eq!(
        get(&post, "PIKA_REMEDY_EPOCH"),
        "2",
        "post: the new record's epoch"
    );
    assert_eq!(
        get(&post, "PIKA_REMEDY_EVENT_ID"),
        id,
        "one id per reconcile"
    );
    let replicas = get(&post, "PIKA_REMEDY_REPLICAS");
    assert!(
        replicas.contains(&addr_of(&old)),
        "record replicas: {replicas}"
    );
    assert!(!replicas.contains(&addr_of(promote)), "{replicas}");

    // The old master comes back claiming master: demoted, and post_demote is told.
    env.rc.master.restart();
    let out = env.reconcile(Trigger::RoleMismatch).await;
    assert!(
        matches!(out.plan.action, Action::Demote { .. }) && out.result == Result_::Applied,
        "{out:#?}"
    );
    assert_eq!(out.hooks.len(), 1, "{:#?}", out.hooks);
    let demote = env.hook_env("post_demote").expect("post_demote ran");
    assert_clean(&demote);
    assert_eq!(get(&demote, "PIKA_REMEDY_ACTION"), "demote");
    assert_eq!(get(&demote, "PIKA_REMEDY_OLD_MASTER"), addr_of(&old));
    assert_eq!(get(&demote, "PIKA_REMEDY_NEW_MASTER"), addr_of(promote));
    assert_eq!(get(&demote, "PIKA_REMEDY_EPOCH"), "2");
    assert_ne!(get(&demote, "PIKA_REMEDY_EVENT_ID"), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_past_its_timeout_is_killed_with_its_children_and_the_failover_goes_on() {
    // The shell and its `sleep` ignore SIGTERM: only the SIGKILL to the group ends them.
    let env_text = r#"pre_failover = ["/bin/sh", "-c", "trap '' TERM; echo started; sleep 30 & echo $! > {out}/sleep.pid; wait"]
timeout = "700ms"
kill_grace = "300ms"
"#;
    let mut env = Env::start(env_text);
    env.bootstrap_and_kill_master().await;
    let t = Instant::now();
    let out = env.reconcile(Trigger::MasterDown).await;
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(out.result, Result_::Applied, "no veto by default: {out:#?}");
    let run = &out.hooks[0];
    assert_eq!(run.result, HookResult::Timeout, "{run:#?}");
    assert!(!run.vetoed);
    assert_eq!(run.exit_code, None);
    assert!(
        (1000..10_000).contains(&run.millis),
        "timeout + grace, then killed: {run:#?}"
    );
    assert!(run.detail.contains("timed out after 700ms"), "{run:#?}");
    assert!(run.detail.contains("SIGKILL"), "{run:#?}");
    assert!(run.output.contains("started"), "{run:#?}");
    let pid = std::fs::read_to_string(env.dir.path().join("sleep.pid")).expect("sleep pid");
    let stat = format!("/proc/{}/stat", pid.trim());
    wait_for(Duration::from_secs(5), "the hook's child is gone", || {
        std::fs::read_to_string(&stat).map_or(true, |s| s.contains(") Z "))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_hook_with_veto_stops_the_cli_failover_before_any_node_is_touched() {
    let mut env = Env::start(&format!(
        r#"pre_failover = ["/bin/sh", "{{script}}", "{{out}}", "3"]
post_failover = ["/bin/sh", "{{script}}", "{{out}}", "0"]
pre_failover_veto = true
env_passthrough = ["{PASSED_ENV}"]
"#
    ));
    let old_port = env.rc.master.port();
    env.bootstrap_and_kill_master().await;
    let (code, text) = env.cli(&["failover", "--cluster", CLUSTER]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("vetoed by the pre_failover hook (exit 3"),
        "{text}"
    );
    // No replica was touched: both still replicas of the dead master.
    for r in &env.rc.replicas {
        let i = r.info_replication();
        assert_eq!(info_field(&i, "role").as_deref(), Some("slave"), "{i}");
        assert_eq!(
            info_field(&i, "master_port"),
            Some(old_port.to_string()),
            "{i}"
        );
    }
    assert!(
        env.hook_env("post_failover").is_none(),
        "no post hook after a veto"
    );
    let hs = env.handles().await;
    let rec = hs
        .coord
        .read_record(CLUSTER)
        .await
        .expect("read")
        .expect("record");
    assert_eq!(rec.value.epoch, 1);
    assert_eq!(rec.value.master.port, old_port);
    // The audit trail (the events file the CLI appends to) says so.
    let events = env.events();
    let line = events
        .lines()
        .find(|l| l.contains("\"vetoed\""))
        .unwrap_or_else(|| panic!("no vetoed event: {events}"));
    let ev: serde_json::Value = serde_json::from_str(line).expect("event json");
    assert_eq!(ev["source"], "cli");
    let o = &ev["outcome"];
    assert_eq!(o["result"]["kind"], "vetoed");
    assert_eq!(o["result"]["hook"], "pre_failover");
    assert_eq!(o["steps"].as_array().map(Vec::len), Some(0));
    let h = &o["hooks"][0];
    assert_eq!(h["result"], "failed");
    assert_eq!(h["exit_code"], 3);
    assert_eq!(h["vetoed"], true);
    assert!(h["millis"].is_u64());
    assert!(
        h["output"]
            .as_str()
            .is_some_and(|s| s.contains("hook pre_failover")),
        "{h}"
    );
    assert!(!events.contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_hook_without_veto_is_audited_and_the_failover_proceeds() {
    let mut env = Env::start(
        r#"pre_failover = ["/bin/sh", "{script}", "{out}", "1"]
post_failover = ["/nonexistent/hook"]
"#,
    );
    env.bootstrap_and_kill_master().await;
    let (code, text) = env.cli(&["failover", "--cluster", CLUSTER]);
    assert_eq!(code, 0, "{text}");
    let events = env.events();
    let ev: serde_json::Value = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["source"] == "cli")
        .unwrap_or_else(|| panic!("no CLI event: {events}"));
    let o = &ev["outcome"];
    assert_eq!(o["result"]["kind"], "applied", "{o}");
    let hooks = o["hooks"].as_array().expect("hooks");
    assert_eq!(hooks.len(), 2, "{o}");
    assert_eq!(hooks[0]["hook"], "pre_failover");
    assert_eq!(hooks[0]["result"], "failed");
    assert_eq!(hooks[0]["exit_code"], 1);
    assert!(hooks[0].get("vetoed").is_none(), "{o}");
    // A post hook that cannot even start is audited; nothing is undone.
    assert_eq!(hooks[1]["hook"], "post_failover");
    assert_eq!(hooks[1]["result"], "spawn_error");
    assert!(
        hooks[1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("/nonexistent/hook")),
        "{o}"
    );
    let hs = env.handles().await;
    let rec = hs
        .coord
        .read_record(CLUSTER)
        .await
        .expect("read")
        .expect("record");
    assert_eq!(rec.value.epoch, 2);
}

#[test]
fn env_passthrough_of_a_secrets_variable_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path: &Path = &dir.path().join("c.toml");
    std::fs::write(
        path,
        format!(
            r#"[webhook]
allow_unauthenticated = true
[hooks]
post_failover = ["/bin/true"]
env_passthrough = ["{PW_ENV}"]
[[cluster]]
name = "main"
password = {{ env = "{PW_ENV}" }}
nodes = [{{ addr = "127.0.0.1:7001" }}, {{ addr = "127.0.0.1:7002" }}]
"#
        ),
    )
    .expect("write");
    set_process_env();
    let e = load(path).expect_err("refused").to_string();
    assert!(e.contains("hooks.env_passthrough"), "{e}");
    assert!(e.contains("holds a secret"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
}

#[test]
fn serve_runs_the_hooks_and_counts_them() {
    use support::prom::{get, Coord, Remedy, RemedyOptions};
    use support::redis::wait_until;
    let mut rc = RedisCluster::start(1, None);
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("hook.sh");
    std::fs::write(&script, SCRIPT).expect("write script");
    let argv = |code: &str| {
        format!(
            "[\"/bin/sh\", \"{}\", \"{}\", \"{code}\"]",
            script.display(),
            dir.path().display()
        )
    };
    // `[hooks]` precedes the first `[[cluster]]`.
    let toml = format!(
        "[hooks]\npre_failover = {}\npost_failover = {}\n\n{}",
        argv("5"),
        argv("0"),
        rc.cluster_toml(CLUSTER, &[])
    );
    let mut opts = RemedyOptions::new(Coord::Local, toml);
    opts.service_extra = vec![
        "check_interval = \"200ms\"".into(),
        "poll_interval = \"200ms\"".into(),
    ];
    opts.policy_extra = vec!["confirm_window = \"100ms\"".into()];
    let remedy = Remedy::start(&opts);
    let master = rc.master.addr().to_string();
    assert!(
        wait_until(Duration::from_secs(15), || remedy
            .recorded_master(CLUSTER)
            .as_deref()
            == Some(master.as_str())),
        "no bootstrap record: {}",
        remedy.log_tail(40)
    );
    rc.master.kill9();
    let series = |hook: &str, result: &str| -> f64 {
        get(remedy.port, "/metrics")
            .map(|r| r.body)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.starts_with("pika_remedy_hook_runs_total{")
                    && l.contains(&format!("hook=\"{hook}\""))
                    && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        wait_until(Duration::from_secs(30), || series("post_failover", "ok")
            == 1.0),
        "{}",
        remedy.log_tail(60)
    );
    assert_eq!(series("pre_failover", "failed"), 1.0);
    let env = std::fs::read_to_string(dir.path().join("post_failover.env")).expect("post env");
    assert!(env.contains("PIKA_REMEDY_EPOCH=2"), "{env}");
    let log = std::fs::read_to_string(remedy.log_path()).unwrap_or_default();
    assert!(
        log.contains("hook: exit 5"),
        "the failing hook is logged: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_switchover_vetoes_by_default_and_the_master_stays() {
    let env = Env::start(
        r#"pre_switchover = ["/bin/sh", "{script}", "{out}", "2"]
post_switchover = ["/bin/sh", "{script}", "{out}", "0"]
"#,
    );
    let out = env.reconcile(Trigger::Periodic).await;
    assert_eq!(out.result, Result_::Applied, "bootstrap: {out:#?}");
    let out = env.reconcile(Trigger::Switchover { to: None }).await;
    assert!(
        matches!(&out.result, Result_::Vetoed { hook, .. } if hook == "pre_switchover"),
        "{out:#?}"
    );
    assert!(out.steps.is_empty(), "nothing sent: {out:#?}");
    assert_eq!(out.hooks.len(), 1);
    assert!(out.hooks[0].vetoed && out.hooks[0].exit_code == Some(2));
    assert_eq!(env.rc.master.role(), "master");
    for r in &env.rc.replicas {
        assert!(r.is_linked_to(env.rc.master.port()));
    }
    assert!(env.hook_env("post_switchover").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_switchover_sees_the_new_master_and_epoch() {
    let env = Env::start(
        r#"pre_switchover = ["/bin/sh", "{script}", "{out}", "0"]
post_switchover = ["/bin/sh", "{script}", "{out}", "0"]
"#,
    );
    let old = env.rc.master.addr();
    let out = env.reconcile(Trigger::Periodic).await;
    assert_eq!(out.result, Result_::Applied, "bootstrap: {out:#?}");
    let out = env.reconcile(Trigger::Switchover { to: None }).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    let Action::Switchover { promote, .. } = &out.plan.action else {
        panic!("{out:#?}");
    };
    let pre = env.hook_env("pre_switchover").expect("pre ran");
    let post = env.hook_env("post_switchover").expect("post ran");
    let get = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_default();
    assert_eq!(get(&pre, "PIKA_REMEDY_EPOCH"), "1");
    assert_eq!(get(&post, "PIKA_REMEDY_EPOCH"), "2");
    assert_eq!(get(&post, "PIKA_REMEDY_ACTION"), "switchover");
    assert_eq!(get(&post, "PIKA_REMEDY_OLD_MASTER"), addr_of(&old));
    assert_eq!(get(&post, "PIKA_REMEDY_NEW_MASTER"), addr_of(promote));
}
