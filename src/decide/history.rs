//! What the service remembers of a cluster between polls, as decide's input: each node's
//! link while the recorded master lived ([`PriorLink`]) and the master's last offset
//! ([`MasterSeen`]). Pure data and rules; the poller fills it in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Addr, BinlogPos, LinkState, NodeStatus, Role, TopologyRecord};

/// A node's replication link in one observation, reduced to what the failover rules need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSnapshot {
    pub role: Role,
    pub master: Option<Addr>,
    pub link: Option<LinkState>,
    pub db_links: BTreeMap<String, LinkState>,
}

impl LinkSnapshot {
    pub fn of(s: &NodeStatus) -> LinkSnapshot {
        LinkSnapshot {
            role: s.role,
            master: s.master.clone(),
            link: s.link,
            db_links: s.db_links.clone(),
        }
    }

    /// A replica of `master` with its link (and every DB's) up.
    pub fn linked_to(&self, master: &Addr) -> bool {
        self.role.is_replica()
            && self.master.as_ref() == Some(master)
            && self.link == Some(LinkState::Up)
            && self.db_links.values().all(|l| *l == LinkState::Up)
    }
}

impl PriorLink {
    /// Why this history bars a promotion after `master` died, if it does (see the fields).
    pub fn bars_promotion(&self, master: &Addr) -> Option<String> {
        let l = &self.last;
        if self.unlinked_polls == 0 || l.linked_to(master) {
            return None;
        }
        let dbs = |state: LinkState| -> Vec<&str> {
            l.db_links
                .iter()
                .filter(|(_, s)| **s == state)
                .map(|(db, _)| db.as_str())
                .collect()
        };
        let worst = |state: LinkState, what: &str| -> Option<String> {
            let in_db = dbs(state);
            if !in_db.is_empty() {
                Some(format!("{} {what}", in_db.join(", ")))
            } else if l.link == Some(state) {
                Some(what.to_string())
            } else {
                None
            }
        };
        if let Some(w) = worst(LinkState::Error, "link error")
            .or_else(|| worst(LinkState::FullSync, "in full sync"))
        {
            return Some(w);
        }
        if self.unlinked_polls < 2 {
            return None;
        }
        Some(if l.role == Role::Master {
            "claimed master".to_string()
        } else if l.master.as_ref() != Some(master) {
            format!("followed {}", master_of_snapshot(l))
        } else {
            let not_up: Vec<String> = l
                .db_links
                .iter()
                .filter(|(_, s)| **s != LinkState::Up)
                .map(|(db, s)| format!("{db} {}", s.as_str()))
                .collect();
            if not_up.is_empty() {
                format!("link {}", l.link.map_or("unknown", LinkState::as_str))
            } else {
                format!("link {}", not_up.join(", "))
            }
        })
    }
}

fn master_of_snapshot(l: &LinkSnapshot) -> String {
    l.master
        .as_ref()
        .map_or_else(|| "no master".to_string(), ToString::to_string)
}

/// What the service remembers of one node from the polls that saw the recorded master alive.
///
/// Pika forgets a link error once its master dies (`db0:error` becomes `db0:no_connect`), and
/// a replica that was diverged, in full sync or detached then looks like a healthy one whose
/// master just died, often with the higher offset. Its state while the master lived decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorLink {
    /// Its link in the last such poll in which it answered.
    pub last: LinkSnapshot,
    /// How many of those polls in a row (ending with that one) found it not linked to the
    /// master. A link error or a full sync counts at once; a link merely down or connecting
    /// only from two polls on, since the poll that races the master's death sees exactly that.
    pub unlinked_polls: u32,
}

/// What the service's poller saw of the recorded master the last time it was alive: the lag
/// reference (its offset) and the other nodes' links ([`super::Gate::links_before`]). It applies only
/// while the record still names that master at that epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterSeen {
    pub master: Addr,
    pub epoch: u64,
    /// Its offset (Redis `master_repl_offset`, Pika `slave_repl_offset` or the binlog sum).
    pub offset: Option<u64>,
    /// Pika: its binlog position per DB (`dbN:binlog_offset`); empty on Redis.
    #[serde(default)]
    pub db_offsets: BTreeMap<String, BinlogPos>,
    /// Unix seconds of the poll that saw it (0 if unknown).
    #[serde(default)]
    pub seen_at: u64,
    pub links: BTreeMap<Addr, PriorLink>,
}

impl MasterSeen {
    /// The gate's history for a record naming `master` at `epoch`: empty if it is another.
    pub fn for_record(&self, rec: &TopologyRecord) -> (Option<u64>, BTreeMap<Addr, PriorLink>) {
        if self.master == rec.master && self.epoch == rec.epoch {
            (self.offset, self.links.clone())
        } else {
            (None, BTreeMap::new())
        }
    }

    /// The master's last offsets for the loss estimate ([`super::Gate::last_master_dbs`],
    /// [`super::Gate::last_master_seen_at`]) if it is the one the record names.
    pub fn last_offsets(
        &self,
        rec: &TopologyRecord,
    ) -> Option<(BTreeMap<String, BinlogPos>, Option<u64>)> {
        (self.master == rec.master && self.epoch == rec.epoch).then(|| {
            (
                self.db_offsets.clone(),
                (self.seen_at > 0).then_some(self.seen_at),
            )
        })
    }
}
