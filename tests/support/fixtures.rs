//! The few values most tests need, defined once: policies for the two tiers, timeouts, holders.

use std::time::Duration;

use pika_remedy::config::{Policy, Timeouts};
use pika_remedy::coord::Holder;

/// Against fakes and scripted peers: short waits, no confirmation window.
pub fn fake_policy() -> Policy {
    Policy {
        confirm_window: Duration::ZERO,
        promote_timeout: Duration::from_secs(2),
        link_timeout: Duration::from_millis(500),
        detach_timeout: Duration::from_secs(3),
        switchover_pause: Duration::from_secs(2),
        ..Policy::default()
    }
}

/// Against real processes (redis-server, etcd): waits long enough for a loaded 2-core machine.
pub fn real_policy() -> Policy {
    Policy {
        confirm_window: Duration::ZERO,
        promote_timeout: Duration::from_secs(5),
        link_timeout: Duration::from_secs(5),
        detach_timeout: Duration::from_secs(2),
        switchover_pause: Duration::from_secs(3),
        ..Policy::default()
    }
}

/// Node or coordinator call bounds.
pub fn timeouts(connect: Duration, command: Duration) -> Timeouts {
    Timeouts { connect, command }
}

/// A lock holder named `name` (this process's pid).
pub fn holder(name: &str) -> Holder {
    Holder {
        instance: name.into(),
        host: "test".into(),
        pid: std::process::id(),
        since: 1,
    }
}

/// A captured Alertmanager body with every `startsAt` set to now. The captures are days old;
/// Alertmanager's `startsAt` is never before the failure it reports, and the service may
/// answer an alert from a poll taken after its `startsAt` (`service.reuse_observation_within`),
/// so a test that kills a node and posts at once must not claim the alert began long before.
pub fn starts_now(body: &str) -> String {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    const KEY: &str = "\"startsAt\":\"";
    while let Some(i) = rest.find(KEY) {
        let start = i + KEY.len();
        let Some(len) = rest[start..].find('"') else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&now);
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// The shared material (`../shared`, or `PIKA_REMEDY_SHARED`).
pub fn shared_dir() -> std::path::PathBuf {
    std::env::var("PIKA_REMEDY_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

/// The captured firing `RedisDown` webhook (`fixtures/alertmanager/firing.json`) about `addr`
/// (`host:port`), as alert `alertname`, with `startsAt` = now ([`starts_now`]).
pub fn firing_about(addr: &str, alertname: &str) -> Vec<u8> {
    const FIXTURE_INSTANCE: &str = "redis://127.0.0.1:7000";
    let p = shared_dir().join("fixtures/alertmanager/firing.json");
    let body =
        starts_now(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    assert!(body.contains(FIXTURE_INSTANCE));
    body.replace(FIXTURE_INSTANCE, &format!("redis://{addr}"))
        .replace("\"RedisDown\"", &format!("\"{alertname}\""))
        .replace(
            "alertname=\\\"RedisDown\\\"",
            &format!("alertname=\\\"{alertname}\\\""),
        )
        .into_bytes()
}
