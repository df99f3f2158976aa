//! Notifications through the operator's own Alertmanager: after every applied failover,
//! switchover or demotion, and after every refusal that needs a human ("operator needed",
//! "no promotable replica", "lag too high"), pika-remedy POSTs an alert to Alertmanager's API v2
//! (`/api/v2/alerts`) on every configured URL (like Prometheus, which sends to all of them):
//!
//! | alert | labels | when |
//! |---|---|---|
//! | `PikaFailoverPerformed` | `cluster`, `old_master`, `new_master`, `epoch`, `action` (failover, switchover) | a promotion was applied |
//! | `PikaDemotionPerformed` | `cluster`, `node`, `new_master`, `epoch` | a node claiming master was demoted |
//! | `PikaRemediationRefused` | `cluster`, `refusal` (operator_needed, no_promotable_replica, lag_too_high), `epoch` | such a refusal |
//!
//! Every alert also has `severity` and `source="pika-remedy"` labels, the plan's reason in the
//! `reason` and `description` annotations, `startsAt` now and `endsAt` = now +
//! `notify.resolve_after`, so it resolves by itself. Because `epoch` is a label, two failovers
//! are two alerts, and an Alertmanager that receives the same event twice merges it.
//!
//! **Never in the way of a reconcile:** [`Notifier::outcome`] only classifies and `try_send`s
//! into a bounded queue (full → dropped and counted); a background task sends, each POST bounded
//! by `notify.timeout`, retried at most twice per URL. Each send is logged once with its result
//! and counted (`pika_remedy_notifications_total{cluster,kind,outcome}`).
//!
//! **No duplicates on retries:** a performed action is sent once per (cluster, kind, epoch,
//! node); a refusal, which repeats on every alert retry and periodic check, is sent again only
//! after `notify.resend_interval` (to keep it firing while it lasts), never per reconcile.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::{resolve_secret, ConfigError, Loaded, Secret, SecretSource};
use crate::coord::Coordinator;
use crate::decide::Action;
use crate::metrics::Metrics;
use crate::reconcile::{Outcome, Result_};
use crate::throttle::Throttle;

/// `[notify]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Alertmanager base URLs (`http://host:9093`); empty = notifications off.
    pub alertmanager_urls: Vec<String>,
    /// `Authorization: Bearer` for Alertmanager (or a proxy in front of it).
    pub bearer_token: Option<SecretSource>,
    /// Basic auth user and password.
    pub basic_user: Option<String>,
    pub basic_password: Option<SecretSource>,
    /// On/off per kind.
    pub failover: bool,
    pub demotion: bool,
    pub refusal: bool,
    /// Bound of one POST.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `endsAt` = send time + this: the alert resolves by itself.
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
    /// A refusal that keeps repeating is sent again after this long (at most).
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Extra labels on every alert (e.g. `team = "db"`), for the operator's routes.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            alertmanager_urls: Vec::new(),
            bearer_token: None,
            basic_user: None,
            basic_password: None,
            failover: true,
            demotion: true,
            refusal: true,
            timeout: Duration::from_secs(2),
            resolve_after: Duration::from_secs(15 * 60),
            resend_interval: Duration::from_secs(5 * 60),
            labels: Default::default(),
        }
    }
}

impl NotifyConfig {
    /// Called by `Config::validate`.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: &str, message: &str| ConfigError {
            file: file.to_string(),
            field: format!("notify.{field}"),
            message: message.to_string(),
        };
        for u in &self.alertmanager_urls {
            let ok = reqwest::Url::parse(u)
                .ok()
                .is_some_and(|x| matches!(x.scheme(), "http" | "https") && x.host().is_some());
            if !ok {
                return Err(err(
                    "alertmanager_urls",
                    &format!("{u:?} is not an http(s) URL"),
                ));
            }
        }
        for (name, s) in [
            ("bearer_token", &self.bearer_token),
            ("basic_password", &self.basic_password),
        ] {
            if let Some(s) = s {
                if s.env.is_some() == s.file.is_some() {
                    return Err(err(
                        name,
                        "give exactly one of env = \"VAR\" or file = \"/path\"",
                    ));
                }
            }
        }
        if self.basic_user.is_some() != self.basic_password.is_some() {
            return Err(err(
                "basic_user",
                "basic_user and basic_password go together",
            ));
        }
        if self.bearer_token.is_some() && self.basic_user.is_some() {
            return Err(err(
                "bearer_token",
                "use either bearer_token or basic_user/basic_password",
            ));
        }
        if self.timeout.is_zero() {
            return Err(err("timeout", "must be > 0"));
        }
        if self.resolve_after < Duration::from_secs(60) {
            return Err(err("resolve_after", "must be at least 1m"));
        }
        if self.resend_interval.is_zero() || self.resend_interval >= self.resolve_after {
            return Err(err(
                "resend_interval",
                "must be > 0 and below resolve_after (a repeating refusal must stay firing)",
            ));
        }
        for k in self.labels.keys() {
            let valid = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid || RESERVED.contains(&k.as_str()) {
                return Err(err(
                    "labels",
                    &format!("{k:?} is not a valid label name or is one pika-remedy sets"),
                ));
            }
        }
        Ok(())
    }
}

const RESERVED: &[&str] = &[
    "alertname",
    "cluster",
    "old_master",
    "new_master",
    "node",
    "epoch",
    "action",
    "refusal",
    "severity",
    "source",
];

/// Which notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Failover,
    Demotion,
    Refusal,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Failover => "failover",
            Kind::Demotion => "demotion",
            Kind::Refusal => "refusal",
        }
    }
    pub fn alertname(self) -> &'static str {
        match self {
            Kind::Failover => "PikaFailoverPerformed",
            Kind::Demotion => "PikaDemotionPerformed",
            Kind::Refusal => "PikaRemediationRefused",
        }
    }
    fn severity(self) -> &'static str {
        match self {
            Kind::Failover => "warning",
            Kind::Demotion => "info",
            Kind::Refusal => "critical",
        }
    }
}

/// What happened, before the epoch is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub cluster: String,
    /// Labels specific to the kind (old_master/new_master/action, node/new_master, refusal).
    pub labels: Vec<(&'static str, String)>,
    pub reason: String,
}

/// The refusal class of a plan reason, if it needs a human.
pub fn refusal_class(reason: &str) -> Option<&'static str> {
    if reason.contains("operator needed") {
        Some("operator_needed")
    } else if reason.contains("no promotable replica") {
        Some(if reason.contains("behind") {
            "lag_too_high"
        } else {
            "no_promotable_replica"
        })
    } else {
        None
    }
}

/// Classify a reconcile outcome (pure).
pub fn classify(out: &Outcome) -> Option<Event> {
    let ev = |kind, labels| Event {
        kind,
        cluster: out.cluster.clone(),
        labels,
        reason: out.plan.reason.clone(),
    };
    match (&out.result, &out.plan.action) {
        (
            Result_::Applied,
            Action::Failover {
                promote,
                old_master,
                ..
            },
        ) => Some(ev(
            Kind::Failover,
            vec![
                ("old_master", old_master.to_string()),
                ("new_master", promote.to_string()),
                ("action", "failover".into()),
            ],
        )),
        (
            Result_::Applied,
            Action::Switchover {
                promote,
                old_master,
                ..
            },
        ) => Some(ev(
            Kind::Failover,
            vec![
                ("old_master", old_master.to_string()),
                ("new_master", promote.to_string()),
                ("action", "switchover".into()),
            ],
        )),
        (Result_::Applied, Action::Demote { node, to }) => Some(ev(
            Kind::Demotion,
            vec![("node", node.to_string()), ("new_master", to.to_string())],
        )),
        (Result_::Refused, Action::Refuse { .. }) => refusal_class(&out.plan.reason)
            .map(|c| ev(Kind::Refusal, vec![("refusal", c.to_string())])),
        _ => None,
    }
}

/// The Alertmanager v2 body for one event (pure, `now` given).
pub fn alert_body(
    ev: &Event,
    epoch: Option<u64>,
    extra: &std::collections::BTreeMap<String, String>,
    now: SystemTime,
    resolve_after: Duration,
) -> Value {
    let mut labels = serde_json::Map::new();
    for (k, v) in extra {
        labels.insert(k.clone(), json!(v));
    }
    labels.insert("alertname".into(), json!(ev.kind.alertname()));
    labels.insert("cluster".into(), json!(ev.cluster));
    labels.insert("severity".into(), json!(ev.kind.severity()));
    labels.insert("source".into(), json!("pika-remedy"));
    labels.insert(
        "epoch".into(),
        json!(epoch.map_or_else(|| "unknown".to_string(), |e| e.to_string())),
    );
    for (k, v) in &ev.labels {
        labels.insert((*k).into(), json!(v));
    }
    let summary = match ev.kind {
        Kind::Failover => format!(
            "pika-remedy promoted {} in cluster {}",
            label(ev, "new_master"),
            ev.cluster
        ),
        Kind::Demotion => format!(
            "pika-remedy demoted {} in cluster {}",
            label(ev, "node"),
            ev.cluster
        ),
        Kind::Refusal => format!(
            "pika-remedy refused to act on cluster {}: {}",
            ev.cluster,
            label(ev, "refusal").replace('_', " ")
        ),
    };
    json!([{
        "labels": labels,
        "annotations": {
            "summary": summary,
            "description": ev.reason,
            "reason": ev.reason,
        },
        "startsAt": humantime::format_rfc3339_millis(now).to_string(),
        "endsAt": humantime::format_rfc3339_millis(now + resolve_after).to_string(),
    }])
}

fn label<'a>(ev: &'a Event, k: &str) -> &'a str {
    ev.labels
        .iter()
        .find(|(n, _)| *n == k)
        .map_or("", |(_, v)| v.as_str())
}

/// The dedupe key of an event (see module docs).
fn dedupe_key(ev: &Event, epoch: Option<u64>) -> String {
    let labels: Vec<String> = ev.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    match ev.kind {
        Kind::Refusal => format!("{}|refusal|{}", ev.cluster, ev.reason),
        _ => format!(
            "{}|{}|{:?}|{}",
            ev.cluster,
            ev.kind.label(),
            epoch,
            labels.join(",")
        ),
    }
}

/// Remembers what was sent, so retries do not send it again.
#[derive(Default)]
struct Dedupe {
    sent: HashMap<String, Instant>,
}

impl Dedupe {
    /// True if `key` should be sent now (and remembers it).
    fn admit(&mut self, key: String, kind: Kind, resend: Duration, keep: Duration) -> bool {
        let now = Instant::now();
        self.sent.retain(|_, t| now.duration_since(*t) < keep);
        match self.sent.get(&key) {
            Some(t) if kind != Kind::Refusal || now.duration_since(*t) < resend => false,
            _ => {
                self.sent.insert(key, now);
                true
            }
        }
    }
}

/// How the POST authenticates.
#[derive(Clone)]
enum AmAuth {
    None,
    Bearer(Secret),
    Basic(String, Secret),
}

/// Queue capacity: events waiting to be sent; more are dropped (and counted).
const QUEUE: usize = 64;
/// Attempts per URL and event.
const ATTEMPTS: u32 = 3;

static DROPPED: Throttle = Throttle::new();

/// The sender. Cheap to call from a reconcile: classify + `try_send`.
pub struct Notifier {
    tx: mpsc::Sender<Event>,
    /// Shared with the sending task: refusals are deduplicated here, before the queue (they
    /// repeat at reconcile rate and must not crowd out a failover behind a slow Alertmanager).
    dedupe: Arc<Mutex<Dedupe>>,
    cfg: NotifyConfig,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// `None` when no URL is configured. Resolves the secrets (errors name the field, never the
    /// value) and starts the sending task, which reads the record's epoch through `coord`.
    pub fn start<C: Coordinator + 'static>(
        loaded: &Loaded,
        coord: Arc<C>,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Notifier>>, ConfigError> {
        let cfg = loaded.config.notify.clone();
        if cfg.alertmanager_urls.is_empty() {
            return Ok(None);
        }
        let file = loaded.path.display().to_string();
        let base = loaded.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let auth = match (&cfg.bearer_token, &cfg.basic_user, &cfg.basic_password) {
            (Some(t), _, _) => {
                AmAuth::Bearer(resolve_secret(t, "notify.bearer_token", &file, &base)?)
            }
            (None, Some(u), Some(p)) => AmAuth::Basic(
                u.clone(),
                resolve_secret(p, "notify.basic_password", &file, &base)?,
            ),
            _ => AmAuth::None,
        };
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| ConfigError {
                file: file.clone(),
                field: "notify".into(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let dedupe = Arc::new(Mutex::new(Dedupe::default()));
        let task = Sender {
            cfg: cfg.clone(),
            client,
            auth,
            metrics: Arc::clone(&metrics),
            dedupe: Arc::clone(&dedupe),
        };
        tokio::spawn(Arc::new(task).run(rx, coord));
        Ok(Some(Arc::new(Notifier {
            tx,
            dedupe,
            cfg,
            metrics,
        })))
    }

    /// After every reconcile: queue a notification if the outcome calls for one.
    pub fn outcome(&self, out: &Outcome) {
        let Some(ev) = classify(out) else {
            return;
        };
        let on = match ev.kind {
            Kind::Failover => self.cfg.failover,
            Kind::Demotion => self.cfg.demotion,
            Kind::Refusal => self.cfg.refusal,
        };
        if !on {
            return;
        }
        if ev.kind == Kind::Refusal && !self.admit(&ev, None) {
            return;
        }
        let (cluster, kind) = (ev.cluster.clone(), ev.kind);
        if self.tx.try_send(ev).is_err() {
            self.metrics.notification(&cluster, kind.label(), "dropped");
            if let Some(suppressed) = DROPPED.check() {
                tracing::warn!(cluster = %cluster, kind = kind.label(), suppressed, "notification dropped: the queue is full");
            }
        }
    }
}

impl Notifier {
    fn admit(&self, ev: &Event, epoch: Option<u64>) -> bool {
        admit(&self.dedupe, &self.cfg, ev, epoch)
    }
}

fn admit(d: &Mutex<Dedupe>, cfg: &NotifyConfig, ev: &Event, epoch: Option<u64>) -> bool {
    d.lock().map_or(true, |mut d| {
        d.admit(
            dedupe_key(ev, epoch),
            ev.kind,
            cfg.resend_interval,
            cfg.resolve_after,
        )
    })
}

struct Sender {
    cfg: NotifyConfig,
    client: reqwest::Client,
    auth: AmAuth,
    metrics: Arc<Metrics>,
    dedupe: Arc<Mutex<Dedupe>>,
}

impl Sender {
    async fn run<C: Coordinator>(self: Arc<Self>, mut rx: mpsc::Receiver<Event>, coord: Arc<C>) {
        while let Some(ev) = rx.recv().await {
            let epoch = match tokio::time::timeout(self.cfg.timeout, coord.read_record(&ev.cluster))
                .await
            {
                Ok(Ok(Some(r))) => Some(r.value.epoch),
                _ => None,
            };
            // Refusals were admitted before the queue (their key has no epoch).
            if ev.kind != Kind::Refusal && !admit(&self.dedupe, &self.cfg, &ev, epoch) {
                tracing::debug!(cluster = %ev.cluster, kind = ev.kind.label(), "notification already sent");
                continue;
            }
            let body = alert_body(
                &ev,
                epoch,
                &self.cfg.labels,
                SystemTime::now(),
                self.cfg.resolve_after,
            );
            // All URLs in parallel; the queue waits for this event (bounded by ATTEMPTS × timeout).
            let mut sends = tokio::task::JoinSet::new();
            for u in self.cfg.alertmanager_urls.clone() {
                let (me, body, ev) = (Arc::clone(&self), body.clone(), ev.clone());
                sends.spawn(async move { me.send(&u, &body, &ev, epoch).await });
            }
            while sends.join_next().await.is_some() {}
        }
    }

    async fn send(&self, base: &str, body: &Value, ev: &Event, epoch: Option<u64>) {
        let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let mut req = self.client.post(&url).json(body);
            req = match &self.auth {
                AmAuth::None => req,
                AmAuth::Bearer(t) => req.bearer_auth(t.expose()),
                AmAuth::Basic(u, p) => req.basic_auth(u, Some(p.expose())),
            };
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    self.metrics
                        .notification(&ev.cluster, ev.kind.label(), "sent");
                    tracing::info!(
                        cluster = %ev.cluster,
                        alert = ev.kind.alertname(),
                        epoch = ?epoch,
                        alertmanager = %base,
                        attempt,
                        "notification sent"
                    );
                    return;
                }
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                Err(e) => last = short_error(&e),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
        self.metrics
            .notification(&ev.cluster, ev.kind.label(), "failed");
        tracing::warn!(
            cluster = %ev.cluster,
            alert = ev.kind.alertname(),
            epoch = ?epoch,
            alertmanager = %base,
            error = %last,
            attempts = ATTEMPTS,
            "notification failed"
        );
    }
}

/// A transport error without the URL's credentials or query (reqwest prints the URL).
fn short_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Plan, Trigger};
    use crate::model::Addr;

    fn outcome(action: Action, result: Result_, reason: &str) -> Outcome {
        Outcome {
            cluster: "main".into(),
            trigger: Trigger::Periodic,
            plan: Plan {
                action,
                reason: reason.into(),
                candidates: vec![],
                expected_loss: None,
            },
            result,
            steps: vec![],
            observation: vec![],
            millis: 0,
            retryable: false,
            hooks: vec![],
        }
    }

    fn a(p: u16) -> Addr {
        Addr::new("10.0.0.1", p)
    }

    #[test]
    fn classifies_applied_actions_and_human_refusals() {
        let f = Action::Failover {
            promote: a(2),
            repoint: vec![],
            old_master: a(1),
            automatic: true,
        };
        let ev = classify(&outcome(f.clone(), Result_::Applied, "r")).expect("failover");
        assert_eq!(ev.kind, Kind::Failover);
        assert_eq!(label(&ev, "new_master"), "10.0.0.1:2");
        assert_eq!(label(&ev, "old_master"), "10.0.0.1:1");
        // A failed or dry-run failover is not "performed".
        assert!(classify(&outcome(f.clone(), Result_::DryRun, "r")).is_none());
        assert!(classify(&outcome(f, Result_::Failed { error: "x".into() }, "r")).is_none());
        let d = Action::Demote {
            node: a(1),
            to: a(2),
        };
        assert_eq!(
            classify(&outcome(d, Result_::Applied, "r")).map(|e| e.kind),
            Some(Kind::Demotion)
        );
        let refuse = |reason: &str| {
            classify(&outcome(
                Action::Refuse { retryable: false },
                Result_::Refused,
                reason,
            ))
            .map(|e| label(&e, "refusal").to_string())
        };
        assert_eq!(
            refuse("recorded master x is unreachable while y claims master; operator needed")
                .as_deref(),
            Some("operator_needed")
        );
        assert_eq!(
            refuse("no promotable replica: 10.0.0.1:2: unreachable").as_deref(),
            Some("no_promotable_replica")
        );
        assert_eq!(
            refuse("no promotable replica: 10.0.0.1:2: behind the master's last seen offset by 9 bytes (limit 1)")
                .as_deref(),
            Some("lag_too_high")
        );
        assert_eq!(refuse("cooldown: last automatic failover 3s ago"), None);
        assert!(classify(&outcome(Action::NoAction, Result_::NoAction, "converged")).is_none());
    }

    #[test]
    fn body_has_labels_annotations_and_an_end() {
        let ev = Event {
            kind: Kind::Failover,
            cluster: "main".into(),
            labels: vec![
                ("old_master", "a:1".into()),
                ("new_master", "b:2".into()),
                ("action", "failover".into()),
            ],
            reason: "recorded master a:1 is unreachable".into(),
        };
        let mut extra = std::collections::BTreeMap::new();
        extra.insert("team".to_string(), "db".to_string());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let b = alert_body(&ev, Some(7), &extra, now, Duration::from_secs(600));
        let x = &b[0];
        assert_eq!(x["labels"]["alertname"], "PikaFailoverPerformed");
        assert_eq!(x["labels"]["epoch"], "7");
        assert_eq!(x["labels"]["team"], "db");
        assert_eq!(x["labels"]["new_master"], "b:2");
        assert_eq!(
            x["annotations"]["reason"],
            "recorded master a:1 is unreachable"
        );
        assert_eq!(x["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(x["endsAt"], "2023-11-14T22:23:20.000Z");
    }

    #[test]
    fn dedupe_sends_an_action_once_and_a_refusal_again_only_after_resend() {
        let mut d = Dedupe::default();
        let (resend, keep) = (Duration::from_secs(60), Duration::from_secs(600));
        assert!(d.admit("k".into(), Kind::Failover, resend, keep));
        assert!(!d.admit("k".into(), Kind::Failover, resend, keep));
        assert!(d.admit("r".into(), Kind::Refusal, resend, keep));
        assert!(!d.admit("r".into(), Kind::Refusal, resend, keep));
        assert!(d.admit("r".into(), Kind::Refusal, Duration::ZERO, keep));
    }

    #[test]
    fn config_validation() {
        let ok = NotifyConfig {
            alertmanager_urls: vec!["http://127.0.0.1:9093".into()],
            ..NotifyConfig::default()
        };
        assert!(ok.validate("f").is_ok());
        let bad = NotifyConfig {
            alertmanager_urls: vec!["127.0.0.1:9093".into()],
            ..NotifyConfig::default()
        };
        assert_eq!(
            bad.validate("f").map_err(|e| e.field),
            Err("notify.alertmanager_urls".to_string())
        );
        let bad = NotifyConfig {
            resend_interval: Duration::from_secs(3600),
            ..ok.clone()
        };
        assert!(bad.validate("f").is_err());
        let mut bad = ok.clone();
        bad.labels.insert("cluster".into(), "x".into());
        assert!(bad.validate("f").is_err());
        let bad = NotifyConfig {
            basic_user: Some("u".into()),
            ..ok
        };
        assert!(bad.validate("f").is_err());
    }
}
