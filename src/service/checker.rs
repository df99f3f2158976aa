//! The service's background ticks: the optional periodic check (the same reconcile without an
//! alert: level-triggered repair) and the flush of long runs of repeated not-acted events.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::info;

use crate::decide::{Action, Trigger};

use super::events::{EventLog, TriggerSource, REPEAT_FLUSH};
use super::supervisor::{Reconciler, Request, Supervisor};

/// Every `every`, submit a periodic check of each cluster `owns` accepts (concurrently;
/// scale-out: this instance's share) until `stop` changes.
pub async fn periodic<R: Reconciler>(
    sup: Arc<Supervisor<R>>,
    every: Duration,
    clusters: Vec<String>,
    owns: impl Fn(&str) -> bool + Send,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        for c in clusters.iter().filter(|c| owns(c)) {
            let sup = Arc::clone(&sup);
            let c = c.clone();
            tokio::spawn(async move {
                let req = Request::new(Trigger::Periodic, TriggerSource::Periodic);
                if let Ok(out) = sup.submit(&c, req).await {
                    if !matches!(out.plan.action, Action::NoAction) {
                        info!(cluster = %c, action = out.plan.action.label(), reason = %out.plan.reason, "periodic check");
                    }
                }
            });
        }
    }
}

/// A long run of repeated not-acted events gets its count written every [`REPEAT_FLUSH`].
pub async fn flush_repeats(events: Arc<EventLog>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(REPEAT_FLUSH);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => events.flush(),
            _ = stop.changed() => return,
        }
    }
}
