//! Alertmanager webhook payloads (protocol version 4): parsing and mapping to work.
//!
//! Pure: bytes in, [`Payload`] out; payload + config + known clusters in, [`Classified`] out.
//! Alerts are hints: we only pick the trigger per cluster here; what to do is decided later
//! from our own observation. Unknown fields are ignored (newer Alertmanagers add fields).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::WebhookConfig;
use crate::decide::Trigger;
use crate::model::Addr;

/// Deepest `[`/`{` nesting we accept. Real payloads nest 3 levels. serde_json limits recursion
/// to 128 only where it recurses; unknown fields are skipped iteratively without a limit, so we
/// check the depth ourselves before parsing and reject consistently with a 400.
pub const MAX_JSON_DEPTH: usize = 32;

/// Why a body is not a payload we can read (→ HTTP 400; a retry cannot help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not valid UTF-8 (at byte {0})")]
    NotUtf8(usize),
    #[error("JSON nested deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("unsupported webhook version {0:?} (expected \"4\")")]
    Version(String),
}

/// The webhook body. Only the fields we use; everything else is ignored.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub version: String,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub status: String,
    pub alerts: Vec<Alert>,
    #[serde(default)]
    pub group_key: String,
    /// Alerts Alertmanager dropped because of `max_alerts`: we act on what we got and log it.
    #[serde(default)]
    pub truncated_alerts: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub fingerprint: String,
}

/// Parse a webhook body. Checks UTF-8 and nesting first, so each failure has a clear reason.
pub fn parse(body: &[u8]) -> Result<Payload, PayloadError> {
    std::str::from_utf8(body).map_err(|e| PayloadError::NotUtf8(e.valid_up_to()))?;
    if json_depth_exceeds(body, MAX_JSON_DEPTH) {
        return Err(PayloadError::TooDeep);
    }
    let p: Payload = serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
    if p.version != "4" {
        return Err(PayloadError::Version(p.version));
    }
    Ok(p)
}

/// True if brackets nest deeper than `max` (outside strings). Linear, no allocation.
fn json_depth_exceeds(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Normalise an instance label to `host:port`. Accepts `host:port`, `[v6]:port` and URL forms
/// such as `redis://127.0.0.1:7000`, `redis://:secret@host:7000/0` (user-info and path dropped).
pub fn parse_instance(s: &str) -> Option<Addr> {
    let rest = match s.split_once("://") {
        Some((_, r)) => r,
        None => s,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let hostport = match authority.rsplit_once('@') {
        Some((_, h)) => h,
        None => authority,
    };
    hostport.parse().ok()
}

/// Remove `user:password@` from URL-like label values, so audit entries never carry secrets.
pub fn redact_label(value: &str) -> String {
    if let Some((scheme, rest)) = value.split_once("://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            return format!("{scheme}://{}", &rest[at + 1..]);
        }
    }
    value.to_string()
}

/// One Alertmanager alert as it appears in the audit trail. Label values that look like URLs
/// have their user-info removed (a `redis://:password@host` instance label must not leak).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertInfo {
    pub alertname: String,
    /// `firing` or `resolved` (as sent).
    pub status: String,
    /// Depends only on the labels: together with `starts_at` it identifies one incident.
    pub fingerprint: String,
    pub starts_at: String,
    /// The node the alert is about, normalised to `host:port`, when the instance label parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// What to do for one cluster named by firing alerts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterWork {
    /// The strongest trigger among its firing alerts: MasterDown over RoleMismatch.
    pub trigger: Trigger,
    pub alerts: Vec<AlertInfo>,
}

/// Alerts we will not act on, each with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotActed {
    pub cluster: Option<String>,
    /// `resolved` or not (the audit entry kind differs).
    pub resolved: bool,
    pub alert: AlertInfo,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classified {
    /// One entry per cluster: one reconcile each, however many alerts named it.
    pub work: BTreeMap<String, ClusterWork>,
    pub not_acted: Vec<NotActed>,
}

/// Reason texts (stable: asserted in tests, shown over HTTP and in the audit trail).
pub const REASON_RESOLVED: &str = "resolved: not acted on";

fn info_of(a: &Alert, cfg: &WebhookConfig) -> AlertInfo {
    AlertInfo {
        alertname: a.labels.get("alertname").cloned().unwrap_or_default(),
        status: a.status.clone(),
        fingerprint: a.fingerprint.clone(),
        starts_at: a.starts_at.clone(),
        node: a
            .labels
            .get(&cfg.instance_label)
            .and_then(|i| parse_instance(i))
            .map(|n| n.to_string()),
        labels: a
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), redact_label(v)))
            .collect(),
    }
}

fn rank(t: &Trigger) -> u8 {
    match t {
        Trigger::MasterDown => 2,
        Trigger::RoleMismatch => 1,
        _ => 0,
    }
}

/// Map each alert on its own (a group can mix firing and resolved alerts).
pub fn classify(p: &Payload, cfg: &WebhookConfig, known: &BTreeSet<String>) -> Classified {
    let mut out = Classified::default();
    for a in &p.alerts {
        let info = info_of(a, cfg);
        let cluster = a.labels.get(&cfg.cluster_label).cloned();
        let mut skip = |resolved: bool, reason: String| {
            out.not_acted.push(NotActed {
                cluster: cluster.clone(),
                resolved,
                alert: info.clone(),
                reason,
            })
        };
        if a.status == "resolved" {
            skip(true, REASON_RESOLVED.to_string());
            continue;
        }
        if a.status != "firing" {
            skip(
                false,
                format!("ignored: alert status {:?} is not firing", a.status),
            );
            continue;
        }
        let name = info.alertname.as_str();
        let trigger = if cfg.master_down_alerts.iter().any(|n| n == name) {
            Trigger::MasterDown
        } else if cfg.role_mismatch_alerts.iter().any(|n| n == name) {
            Trigger::RoleMismatch
        } else {
            skip(false, format!("ignored: alert {name} is not a trigger"));
            continue;
        };
        let Some(c) = cluster.clone() else {
            skip(
                false,
                format!("ignored: alert {name} has no {} label", cfg.cluster_label),
            );
            continue;
        };
        if !known.contains(&c) {
            skip(false, format!("ignored: unknown cluster {c}"));
            continue;
        }
        let w = out.work.entry(c).or_insert_with(|| ClusterWork {
            trigger: trigger.clone(),
            alerts: Vec::new(),
        });
        if rank(&trigger) > rank(&w.trigger) {
            w.trigger = trigger;
        }
        w.alerts.push(info);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_forms() {
        let a = |s: &str| parse_instance(s).map(|a| a.to_string());
        assert_eq!(a("127.0.0.1:7000").as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(
            a("redis://127.0.0.1:7000").as_deref(),
            Some("127.0.0.1:7000")
        );
        assert_eq!(a("redis://:pw@h1:7000/0").as_deref(), Some("h1:7000"));
        assert_eq!(a("rediss://u:p@[::1]:7000").as_deref(), Some("[::1]:7000"));
        assert_eq!(a("redis://h1"), None);
        assert_eq!(a("nonsense"), None);
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_label("redis://:pw@h:1/0"), "redis://h:1/0");
        assert_eq!(redact_label("redis://h:1"), "redis://h:1");
        assert_eq!(redact_label("a@b"), "a@b");
    }

    #[test]
    fn depth_check_ignores_strings() {
        assert!(!json_depth_exceeds(br#"{"a":"[[[[[[[[[[[[[[["}"#, 2));
        assert!(json_depth_exceeds(b"[[[", 2));
        assert!(!json_depth_exceeds(br#"{"a":"\"[[[["}"#, 1));
    }

    #[test]
    fn errors() {
        assert!(matches!(parse(b"\xff"), Err(PayloadError::NotUtf8(0))));
        assert!(matches!(parse(b"{"), Err(PayloadError::Json(_))));
        assert!(matches!(
            parse(br#"{"version":"3","alerts":[]}"#),
            Err(PayloadError::Version(v)) if v == "3"
        ));
        let deep = format!(
            "{{\"version\":\"4\",\"alerts\":[],\"x\":{}{}}}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert_eq!(parse(deep.as_bytes()).unwrap_err(), PayloadError::TooDeep);
    }

    #[test]
    fn precedence_and_dedupe() {
        let cfg = WebhookConfig::default();
        let body = r#"{"version":"4","alerts":[
          {"status":"firing","labels":{"alertname":"PikaRoleMismatch","cluster":"c"},"fingerprint":"1"},
          {"status":"firing","labels":{"alertname":"PikaMasterDown","cluster":"c"},"fingerprint":"2"},
          {"status":"firing","labels":{"alertname":"PikaRoleMismatch","cluster":"c"},"fingerprint":"3"},
          {"status":"resolved","labels":{"alertname":"PikaMasterDown","cluster":"c"},"fingerprint":"4"},
          {"status":"firing","labels":{"alertname":"Other","cluster":"c"},"fingerprint":"5"},
          {"status":"firing","labels":{"alertname":"PikaMasterDown","cluster":"zz"},"fingerprint":"6"},
          {"status":"firing","labels":{"alertname":"PikaMasterDown"},"fingerprint":"7"}
        ],"unknown":{"x":1}}"#;
        let p = parse(body.as_bytes()).unwrap();
        let known: BTreeSet<String> = ["c".to_string()].into();
        let c = classify(&p, &cfg, &known);
        assert_eq!(c.work.len(), 1);
        assert_eq!(c.work["c"].trigger, Trigger::MasterDown);
        assert_eq!(c.work["c"].alerts.len(), 3);
        let reasons: Vec<&str> = c.not_acted.iter().map(|n| n.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                REASON_RESOLVED,
                "ignored: alert Other is not a trigger",
                "ignored: unknown cluster zz",
                "ignored: alert PikaMasterDown has no cluster label"
            ]
        );
    }
}
