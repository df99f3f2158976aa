//! Scheduled switchovers (`switchover --at`): every `serve` instance looks at the shared
//! controls each tick; when a cluster's switchover comes due, the instance that removes it from
//! the controls by compare-and-set (exactly one can) submits an ordinary switchover to the
//! cluster's single-flight reconcile (lock, second look, steps, record). A paused cluster holds
//! it (it stays scheduled, the audit trail says so once); one more than its `max_delay_secs`
//! late expires without running (audited). A switchover that finds the cluster's lock held
//! elsewhere (or the coordinator down) is tried again, backing off, until that bound. Every
//! outcome goes to the audit trail. An instance that dies between taking it and running it
//! loses it (the audit trail shows it was started).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::controls::{self, rfc3339, Controls, ScheduleState, ScheduledSwitchover};
use crate::coord::Coordinator;
use crate::decide::Trigger;
use crate::reconcile::{now_unix, Result_};

use super::events::{EventKind, NewEvent, TriggerSource};
use super::supervisor::{Reconciler, Request, Supervisor};

/// What the schedule loop reads and asks.
pub struct ScheduleShared<C, F, P> {
    pub coord: Arc<C>,
    /// This instance's clusters (others' schedules are not ours to run).
    pub clusters: Vec<String>,
    /// The controls as last read (`None`: unknown, nothing is done).
    pub controls: F,
    /// Is the cluster paused (shared pause or this instance's)?
    pub paused: P,
    /// This instance, for the audit line.
    pub instance: String,
}

/// Check every `every` until `stop` changes.
pub async fn run<R, C, F, P>(
    sup: Arc<Supervisor<R>>,
    shared: ScheduleShared<C, F, P>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) where
    R: Reconciler,
    C: Coordinator + Send + Sync + 'static,
    F: Fn() -> Option<Controls> + Send + Sync,
    P: Fn(&str) -> bool + Send + Sync,
{
    let every = every.clamp(Duration::from_millis(100), Duration::from_secs(1));
    // Held schedules already reported (cluster, at): one audit line each, not one a tick.
    let mut held: BTreeSet<(String, u64)> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let Some(doc) = (shared.controls)() else {
            continue;
        };
        let now = now_unix();
        for s in &doc.switchovers {
            if !shared.clusters.contains(&s.cluster) {
                continue;
            }
            match s.state(now) {
                ScheduleState::Waiting => {}
                ScheduleState::Due if (shared.paused)(&s.cluster) => {
                    if held.insert((s.cluster.clone(), s.at)) {
                        let text = format!(
                            "scheduled {} held: the cluster is paused; it runs when resumed, or expires {} after its time",
                            s.describe(),
                            humantime::format_duration(Duration::from_secs(s.max_delay_secs))
                        );
                        info!(cluster = %s.cluster, "{text}");
                        audit(&sup, &s.cluster, text);
                    }
                }
                ScheduleState::Due => take(&sup, &shared, s, now).await,
                ScheduleState::Expired => expire(&sup, &shared, s, now).await,
            }
        }
    }
}

fn audit<R: Reconciler>(sup: &Supervisor<R>, cluster: &str, text: String) {
    sup.events().record(NewEvent::not_acted(
        EventKind::Control,
        Some(cluster.to_string()),
        TriggerSource::Schedule,
        Vec::new(),
        text,
    ));
}

/// Claim by compare-and-set; `true` when this instance removed it.
async fn claim<C: Coordinator, F, P>(
    shared: &ScheduleShared<C, F, P>,
    s: &ScheduledSwitchover,
) -> bool {
    match controls::claim_switchover(shared.coord.as_ref(), s).await {
        Ok(won) => won,
        Err(e) => {
            warn!(cluster = %s.cluster, error = %e, "cannot take the scheduled switchover; trying again");
            false
        }
    }
}

/// Due and not paused: claim it, then run it through the supervisor (in its own task, so one
/// cluster's switchover does not delay another's schedule).
async fn take<R, C, F, P>(
    sup: &Arc<Supervisor<R>>,
    shared: &ScheduleShared<C, F, P>,
    s: &ScheduledSwitchover,
    now: u64,
) where
    R: Reconciler,
    C: Coordinator,
{
    if !claim(shared, s).await {
        return;
    }
    let late = now.saturating_sub(s.at);
    audit(
        sup,
        &s.cluster,
        format!(
            "scheduled {} (by {}) started by instance {}{}",
            s.describe(),
            s.who,
            shared.instance,
            if late > 0 {
                format!(", {late} s late")
            } else {
                String::new()
            }
        ),
    );
    let sup = Arc::clone(sup);
    let cluster = s.cluster.clone();
    let trigger = Trigger::Switchover { to: s.to.clone() };
    let last_chance = s.at.saturating_add(s.max_delay_secs);
    tokio::spawn(async move {
        // The lock held elsewhere (another instance's or a CLI's reconcile) or the
        // coordinator not answering: tried again, backing off, until the schedule's
        // `max_delay` has passed. Every attempt is in the audit trail.
        let mut backoff = Duration::from_secs(1);
        let res = loop {
            let res = sup
                .submit(
                    &cluster,
                    Request::new(trigger.clone(), TriggerSource::Schedule),
                )
                .await;
            let again = matches!(
                &res,
                Ok(out) if matches!(
                    out.result,
                    Result_::LockHeld { .. } | Result_::CoordinatorUnreachable { .. }
                )
            );
            if !again || now_unix().saturating_add(backoff.as_secs()) > last_chance {
                break res;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        };
        match res {
            Ok(out) => {
                info!(cluster = %cluster, result = out.result.metric_label(), reason = %out.plan.reason, "scheduled switchover done")
            }
            Err(e) => {
                warn!(cluster = %cluster, error = %e, "scheduled switchover not run");
                sup.events().record(NewEvent::not_acted(
                    EventKind::Ignored,
                    Some(cluster.clone()),
                    TriggerSource::Schedule,
                    Vec::new(),
                    format!("scheduled switchover not run: {e}"),
                ));
            }
        }
    });
}

/// Too late: removed without running (one instance reports it).
async fn expire<R, C, F, P>(
    sup: &Arc<Supervisor<R>>,
    shared: &ScheduleShared<C, F, P>,
    s: &ScheduledSwitchover,
    now: u64,
) where
    R: Reconciler,
    C: Coordinator,
    P: Fn(&str) -> bool,
{
    if !claim(shared, s).await {
        return;
    }
    let why = if (shared.paused)(&s.cluster) {
        "the cluster stayed paused"
    } else {
        "no instance could run it in time"
    };
    let text = format!(
        "scheduled {} expired without running at {}: more than {} late ({why})",
        s.describe(),
        rfc3339(now),
        humantime::format_duration(Duration::from_secs(s.max_delay_secs))
    );
    warn!(cluster = %s.cluster, "{text}");
    audit(sup, &s.cluster, text);
}
