//! The series types: label sets, [`Tracked`] gauge families replaced as a whole set per
//! cluster, and [`AsMetric`], which lets the registration table in `mod.rs` register every
//! kind of field the same way.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Metric;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct NodeLabels {
    pub(super) cluster: String,
    pub(super) instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RoleLabels {
    pub(super) cluster: String,
    pub(super) instance: String,
    pub(super) role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LinkStateLabels {
    pub(super) cluster: String,
    pub(super) instance: String,
    pub(super) state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DbLabels {
    pub(super) cluster: String,
    pub(super) instance: String,
    pub(super) db: String,
}

/// `instance` is the replica; `master` is the node that reported the lag.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LagLabels {
    pub(super) cluster: String,
    pub(super) instance: String,
    pub(super) master: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct NodeInfoLabels {
    pub(super) cluster: String,
    pub(super) instance: String,
    pub(super) engine: String,
    pub(super) version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ClusterLabels {
    pub(super) cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RecordedMasterLabels {
    pub(super) cluster: String,
    pub(super) master: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    pub(super) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ObservationLabels {
    pub(super) source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HookLabels {
    pub(super) cluster: String,
    pub(super) hook: String,
    pub(super) result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReconcileLabels {
    pub(super) cluster: String,
    pub(super) trigger: String,
    pub(super) action: String,
    pub(super) result: String,
}

/// `result`: `ok`, `failed` (failed or timed out: the demotion was stopped) or `skipped`
/// (policy `report`, or an accepted loss: no snapshot taken).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SnapshotLabels {
    pub(super) cluster: String,
    pub(super) result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RemediationLabels {
    pub(super) cluster: String,
    pub(super) kind: String,
    pub(super) outcome: String,
}

/// `holder` is [`LOCK_HOLDER_SELF`] or [`LOCK_HOLDER_OTHER`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LockRefusalLabels {
    pub(super) cluster: String,
    pub(super) holder: String,
}

/// A node under operator maintenance; `mode` is `no-promote` or `hands-off`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct MaintenanceLabels {
    pub(super) cluster: String,
    pub(super) instance: String,
    pub(super) mode: String,
}

/// `change`: pause, resume, maintenance_set, maintenance_clear, ack.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ControlLabels {
    pub(super) change: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildLabels {
    pub(super) version: String,
}

pub(super) type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A gauge family whose series are replaced as a whole set per cluster (see module docs).
pub(super) struct Tracked<
    L: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
> {
    pub(super) family: Family<L, Gauge>,
    emitted: Mutex<HashMap<String, HashSet<L>>>,
}

impl<L> Tracked<L>
where
    L: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    pub(super) fn new() -> Self {
        Tracked {
            family: Family::default(),
            emitted: Mutex::new(HashMap::new()),
        }
    }

    /// Set exactly these series for `cluster`; remove the ones set last time and not now.
    pub(super) fn replace(&self, cluster: &str, series: Vec<(L, i64)>) {
        let mut emitted = match self.emitted.lock() {
            Ok(g) => g,
            // A panic while holding this lock cannot leave the map inconsistent in a way that
            // matters more than losing metrics, so keep going with the inner value.
            Err(poisoned) => poisoned.into_inner(),
        };
        let now: HashSet<L> = series.iter().map(|(l, _)| l.clone()).collect();
        if let Some(before) = emitted.get(cluster) {
            for stale in before.difference(&now) {
                self.family.remove(stale);
            }
        }
        for (labels, value) in series {
            self.family.get_or_create(&labels).set(value);
        }
        emitted.insert(cluster.to_string(), now);
    }
}

impl<L> Default for Tracked<L>
where
    L: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

/// What a field of `Metrics` hands to the registry (a clone shares the series).
pub(super) trait AsMetric {
    fn as_metric(&self) -> impl Metric;
}

impl<L> AsMetric for Tracked<L>
where
    L: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    fn as_metric(&self) -> impl Metric {
        self.family.clone()
    }
}

impl<L> AsMetric for Family<L, Counter>
where
    L: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    fn as_metric(&self) -> impl Metric {
        self.clone()
    }
}

impl<L> AsMetric for Family<L, Gauge>
where
    L: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    fn as_metric(&self) -> impl Metric {
        self.clone()
    }
}

impl<L> AsMetric for HistogramFamily<L>
where
    L: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    fn as_metric(&self) -> impl Metric {
        self.clone()
    }
}

impl AsMetric for Gauge {
    fn as_metric(&self) -> impl Metric {
        self.clone()
    }
}
