//! The snapshots the services took before discarding a diverged node's data, read back.
//!
//! A demotion of a diverged node starts with a `diverged` step (src/decide/diverged.rs); its
//! report in the audit event (events file, `GET /v1/events`) carries the estimate and, under
//! `policy.diverged = "snapshot"`, where the snapshot is. [`diverged_steps`] lists them from the
//! events; [`keys_present`] starts a server on a COPY of a snapshot (docs/recovery.md: Pika on
//! a copy of the dump dir, redis-server on a copy of the RDB file; free loopback ports, temp
//! dirs, killed and removed on drop) and tells which of the given keys it holds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::conn::Conn;
use super::real_pika::{PikaNode, PikaOptions};
use super::redis::{NodeOptions, RedisNode};

/// One `diverged` step of an applied (or attempted) demotion, from an audit event.
#[derive(Clone, Debug)]
pub struct DivergedStep {
    /// The event's `at` (RFC 3339 UTC with milliseconds).
    pub at: String,
    /// The event's time in unix milliseconds (0 if `at` does not parse).
    pub at_ms: u64,
    /// The node whose data the demotion discards (`host:port` as configured).
    pub node: String,
    /// `redis` or `pika`.
    pub engine: String,
    /// The step succeeded (a snapshot step that failed stopped the demotion).
    pub ok: bool,
    /// The estimate as recorded (`claims_master`, `bytes_ahead`, …).
    pub estimate: Value,
    /// The step's text.
    pub detail: String,
    /// Where the snapshot is, if one was taken.
    pub snapshot: Option<Snapshot>,
}

/// A snapshot as the step report has it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Redis: the RDB file; Pika: the dump dir (holding `db0/`, …).
    pub path: PathBuf,
    /// Pika: `db_size` when saved.
    pub size_bytes: Option<u64>,
    /// Redis: `DBSIZE` when saved.
    pub keys: Option<u64>,
    pub millis: u64,
}

impl DivergedStep {
    /// The estimate's `bytes_ahead`, if known.
    pub fn bytes_ahead(&self) -> Option<u64> {
        self.estimate["bytes_ahead"].as_u64()
    }

    /// The estimate says the node may hold writes the master lacks (the rule of
    /// `Divergence::diverged`: claims master, or ahead by some bytes).
    pub fn diverged(&self) -> bool {
        self.estimate["claims_master"] == true || self.bytes_ahead().is_some_and(|b| b > 0)
    }

    /// As JSON for a report.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "at": self.at,
            "node": self.node,
            "engine": self.engine,
            "ok": self.ok,
            "estimate": self.estimate,
            "snapshot": self.snapshot.as_ref().map(|s| serde_json::json!({
                "path": s.path.display().to_string(),
                "size_bytes": s.size_bytes,
                "keys": s.keys,
                "millis": s.millis,
            })),
        })
    }
}

/// Events from the text of an events file (one JSON object a line) or of a `GET /v1/events`
/// body (a JSON array).
pub fn parse_events(text: &str) -> Vec<Value> {
    if let Ok(Value::Array(v)) = serde_json::from_str::<Value>(text) {
        return v;
    }
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The events of an events file (empty if it does not exist yet).
pub fn read_events_file(path: &Path) -> Vec<Value> {
    parse_events(&std::fs::read_to_string(path).unwrap_or_default())
}

/// Every `diverged` step in `events`, oldest first, duplicates (the same event read from two
/// trails) removed.
pub fn diverged_steps(events: &[Value]) -> Vec<DivergedStep> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for e in events {
        let id = e["id"].as_str().unwrap_or("").to_string();
        let steps = e["outcome"]["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, r) in steps.iter().enumerate() {
            if r["step"]["step"] != "diverged" {
                continue;
            }
            if !id.is_empty() && !seen.insert((id.clone(), i)) {
                continue;
            }
            let at = e["at"].as_str().unwrap_or("").to_string();
            let snapshot = r["snapshot"]["path"].as_str().map(|p| Snapshot {
                path: PathBuf::from(p),
                size_bytes: r["snapshot"]["size_bytes"].as_u64(),
                keys: r["snapshot"]["keys"].as_u64(),
                millis: r["snapshot"]["millis"].as_u64().unwrap_or(0),
            });
            out.push(DivergedStep {
                at_ms: rfc3339_ms(&at).unwrap_or(0),
                at,
                node: r["step"]["node"].as_str().unwrap_or("").to_string(),
                engine: r["step"]["engine"].as_str().unwrap_or("").to_string(),
                ok: r["ok"] == true,
                estimate: r["step"]["estimate"].clone(),
                detail: r["detail"].as_str().unwrap_or("").to_string(),
                snapshot,
            });
        }
    }
    out.sort_by_key(|d| d.at_ms);
    out
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` to unix milliseconds.
pub fn rfc3339_ms(at: &str) -> Option<u64> {
    let (date, time) = at.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + hh) * 60 + mm) * 60 * 1000 + ss * 1000 + ms).ok()
}

/// Unix milliseconds of `t`.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A Pika started on a COPY of the dump dir `snapshot` (docs/recovery.md: `db-path` at the
/// copy, no `slaveof`): a standalone master with the data as of the snapshot. Both are removed
/// on drop (the node is SIGKILLed first: keep the node before the dir in a tuple pattern).
pub fn start_pika_on_snapshot(bin: &Path, snapshot: &Path) -> (PikaNode, tempfile::TempDir) {
    assert!(
        snapshot.join("db0").is_dir(),
        "{} has no db0",
        snapshot.display()
    );
    let copy = tempfile::Builder::new()
        .prefix("pika-remedy-recovered-")
        .tempdir()
        .expect("temp dir");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", snapshot.display()))
        .arg(copy.path())
        .status()
        .expect("cp");
    assert!(status.success());
    let node = PikaNode::start(
        bin,
        PikaOptions {
            extra: vec![("db-path".into(), format!("{}/", copy.path().display()))],
            ..PikaOptions::default()
        },
    );
    (node, copy)
}

/// A redis-server started on a COPY of the RDB file `rdb` (its `dbfilename` in the node's own
/// temp dir, no AOF): a standalone master with the data as of the snapshot.
pub fn start_redis_on_rdb(rdb: &Path) -> RedisNode {
    assert!(rdb.is_file(), "{} is not a file", rdb.display());
    let mut node = RedisNode::start(NodeOptions {
        extra: vec!["dbfilename recovered.rdb".into()],
        ..NodeOptions::default()
    });
    std::fs::copy(rdb, node.dir().join("recovered.rdb")).expect("copy the rdb");
    // The node started empty; started again it loads the copy.
    node.restart();
    node
}

/// Which of `keys` exist on the server on `port`: one `EXISTS` per key, on one connection
/// (presence only: values are not compared).
pub fn present_on(port: u16, keys: &[String]) -> Result<BTreeSet<String>, String> {
    let mut conn = Conn::open_with(port, Duration::from_secs(2), Duration::from_secs(5))?;
    let mut out = BTreeSet::new();
    for k in keys {
        let r = conn.call(&["EXISTS", k])?;
        let n: u64 = r.trim().parse().map_err(|_| format!("EXISTS {k}: {r:?}"))?;
        if n > 0 {
            out.insert(k.clone());
        }
    }
    Ok(out)
}

/// Which of `keys` the snapshot holds: a server is started on a copy of it (Pika needs
/// `pika_bin`), asked, killed and its copy removed.
pub fn keys_present(
    snap: &DivergedStep,
    pika_bin: Option<&Path>,
    keys: &[String],
) -> Result<BTreeSet<String>, String> {
    let Some(s) = &snap.snapshot else {
        return Ok(BTreeSet::new());
    };
    if keys.is_empty() {
        return Ok(BTreeSet::new());
    }
    let is_pika = snap.engine == "pika" || s.path.is_dir();
    if is_pika {
        let bin = pika_bin.ok_or_else(|| {
            format!(
                "{} is a Pika dump: reading it needs PIKA_BIN",
                s.path.display()
            )
        })?;
        let (node, _copy) = start_pika_on_snapshot(bin, &s.path);
        present_on(node.port(), keys)
    } else {
        if !s.path.is_file() {
            return Err(format!("{}: no such RDB file", s.path.display()));
        }
        let node = start_redis_on_rdb(&s.path);
        present_on(node.port(), keys)
    }
}

/// Which of `keys` are in at least one of the snapshots (each read back once), and per
/// snapshot how many of them it holds (same order as `steps`, 0 for a step without one).
pub fn preserved(
    steps: &[DivergedStep],
    pika_bin: Option<&Path>,
    keys: &[String],
) -> Result<(BTreeSet<String>, Vec<usize>), String> {
    let mut all = BTreeSet::new();
    let mut per = Vec::with_capacity(steps.len());
    for s in steps {
        let found = keys_present(s, pika_bin, keys)?;
        per.push(found.len());
        all.extend(found);
    }
    Ok((all, per))
}

/// The acknowledged writes one fault lost, and when the fault was (unix ms, from the fault to
/// the cluster's convergence after its heal).
#[derive(Clone, Debug, Default)]
pub struct LossWindow {
    pub from_ms: u64,
    pub to_ms: u64,
    /// The keys acknowledged in the window and missing on the converged master.
    pub lost: Vec<String>,
}

/// How a fault's lost writes are accounted for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// Lost writes held by a snapshot (any of the run's: the keys are unique).
    pub preserved: usize,
    /// Lost writes in no snapshot, but the window has a diverged step that recorded its
    /// estimate without a snapshot (`policy.diverged = "report"` or an accepted loss).
    pub reported: usize,
    /// Lost writes in no snapshot and not covered by a report.
    pub unaccounted: usize,
}

impl Account {
    /// Lost and not preserved in a snapshot (reported or not).
    pub fn not_preserved(&self) -> usize {
        self.reported + self.unaccounted
    }
}

/// Slack after a window's end for the event of a demotion that happened in it (the event is
/// written when the reconcile ends; its `at` may be a little later than the convergence seen).
pub const EVENT_SLACK_MS: u64 = 2_000;

/// The account of `w` given the keys found in the snapshots (`present`) and the run's
/// diverged steps.
pub fn account(w: &LossWindow, present: &BTreeSet<String>, steps: &[DivergedStep]) -> Account {
    let preserved = w.lost.iter().filter(|k| present.contains(*k)).count();
    let rest = w.lost.len() - preserved;
    let reported_in_window = steps.iter().any(|s| {
        s.ok && s.snapshot.is_none()
            && s.diverged()
            && s.at_ms >= w.from_ms
            && s.at_ms <= w.to_ms + EVENT_SLACK_MS
    });
    if reported_in_window {
        Account {
            preserved,
            reported: rest,
            unaccounted: 0,
        }
    } else {
        Account {
            preserved,
            reported: 0,
            unaccounted: rest,
        }
    }
}

/// A run's diverged steps, read back against its lost writes.
pub struct SnapCheck {
    pub steps: Vec<DivergedStep>,
    /// Per step: how many of the run's lost writes its snapshot holds.
    pub per_step: Vec<usize>,
    /// Of the writes missing at the end, how many a snapshot holds.
    pub total_preserved: usize,
    /// Reading a snapshot back failed (then nothing counts as preserved).
    pub error: Option<String>,
}

impl SnapCheck {
    /// A few lines for a report: every step, its snapshot and the lost writes it holds.
    pub fn text(&self) -> String {
        let mut t = format!(
            "snapshots: {} diverged steps, {} with a snapshot\n",
            self.steps.len(),
            self.steps.iter().filter(|s| s.snapshot.is_some()).count()
        );
        for (s, n) in self.steps.iter().zip(&self.per_step) {
            let snap = s
                .snapshot
                .as_ref()
                .map(|x| {
                    format!(
                        "{} ({} keys, {} ms)",
                        x.path.display(),
                        x.keys.unwrap_or(0),
                        x.millis
                    )
                })
                .unwrap_or_else(|| "no snapshot".into());
            let bytes = s.bytes_ahead().map(|b| b.to_string());
            t.push_str(&format!(
                "  {} {} ok={} bytes_ahead={} {snap} holds {n} lost writes\n",
                s.at,
                s.node,
                s.ok,
                bytes.as_deref().unwrap_or("?"),
            ));
        }
        if let Some(e) = &self.error {
            t.push_str(&format!("  reading the snapshots back failed: {e}\n"));
        }
        t
    }
}

/// The diverged steps of the events in `event_files` (the services' trails), every key of
/// `windows` and `missing` looked for in their snapshots (a Pika dump needs `PIKA_BIN`), and
/// the account of each window.
pub fn check(
    event_files: &[PathBuf],
    windows: &[&LossWindow],
    missing: &[String],
) -> (SnapCheck, Vec<Account>) {
    let events: Vec<Value> = event_files
        .iter()
        .flat_map(|f| read_events_file(f))
        .collect();
    let steps = diverged_steps(&events);
    let mut keys: BTreeSet<String> = windows
        .iter()
        .flat_map(|w| w.lost.iter().cloned())
        .collect();
    keys.extend(missing.iter().cloned());
    let keys: Vec<String> = keys.into_iter().collect();
    // Only a Pika dump needs the Pika binary to be read back.
    let pika = steps
        .iter()
        .any(|s| s.engine == "pika")
        .then(super::real_pika::pika_bin)
        .flatten();
    let (present, per_step, error) = match preserved(&steps, pika.as_deref(), &keys) {
        Ok((p, per)) => (p, per, None),
        Err(e) => (BTreeSet::new(), vec![0; steps.len()], Some(e)),
    };
    let accounts = windows
        .iter()
        .map(|w| account(w, &present, &steps))
        .collect();
    let total_preserved = missing.iter().filter(|k| present.contains(*k)).count();
    (
        SnapCheck {
            steps,
            per_step,
            total_preserved,
            error,
        },
        accounts,
    )
}
