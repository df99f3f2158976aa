//! Pure parser for Pika (3.0.x–4.0.x) and Redis 7 `INFO` text.
//!
//! Input is a whole INFO body: any mix of sections (`# Server`, `# Replication`, `# Keyspace`,
//! …), CRLF or LF line ends, any field order. Unknown fields are ignored and malformed lines are
//! skipped; the only fatal error is a missing or unknown `role:`. Nothing here can panic.
//!
//! # How lines are read
//! 1. Lines are trimmed; empty lines are skipped. `# Name` lines are section headers; the text in
//!    parentheses of a Pika header (`# Replication(MASTER)`) is kept.
//! 2. Pika per-DB lines are recognised *before* any `key:value` split, and `dbN…` lines never
//!    reach the flat field map: in 4.x `db0:` appears twice with different meanings
//!    (`repl_connect_status` block and `db0:binlog_offset=`), and Redis' `# Keyspace` has
//!    `db0:keys=…`.
//!    * `dbN binlog_offset=F O,…` (≤ 3.5.2) and `dbN:binlog_offset=F O,…` (3.5.3+): per-DB
//!      offset.
//!    * After `repl_connect_status:` the following `dbN:<token>` lines are that block.
//!    * Any other `dbN…` line is ignored (`db0 consensus last_log=`, keyspace lines).
//! 3. `slaveN:` lines are replica lines; everything else is split on the first `:` and both
//!    sides trimmed (this absorbs `repl_state: connected` and `ReplicationID: <id>`). If a key
//!    repeats, the first occurrence wins.
//!
//! # Mapping decisions
//! * **engine / version**: `pika_version:` → [`Engine::Pika`](crate::model::Engine::Pika), else `redis_version:` →
//!   [`Engine::Redis`](crate::model::Engine::Redis) (Pika wins if both appear). Without a `# Server` section the engine is
//!   inferred: Pika-only evidence (binlog lines, `ReplicationID`, a `Replication(…)` header,
//!   `repl_connect_status`, `db_repl_state`, `db_repl_error_state`, `repl_state`,
//!   `is_eligible_for_master_election`, role `master&&slave`/`double_master`, replica lines with
//!   `conn_fd=`/`sid=`/`lag=(`) versus Redis-only evidence (`master_replid`,
//!   `master_repl_offset`, `master_failover_state`, `repl_backlog_*`, `master_sync_in_progress`,
//!   `slave_read_repl_offset`, `replica_announced`, replica lines with `offset=`). Evidence for
//!   exactly one side decides; none or both gives [`Engine::Unknown`](crate::model::Engine::Unknown).
//! * **role**: `master` → Master, `slave` → Slave, `master&&slave` → MasterSlave, `double_master`
//!   (3.0) → Master; case and spaces are ignored. A 3.0 node with both role bits prints
//!   `# Replication(MASTER/SLAVE)` with `role:slave`; that is a replica with replicas of its own,
//!   so it becomes MasterSlave. The header alone never supplies a missing role.
//! * **master**: `master_host` + `master_port` (port 1–65535), whatever the role.
//! * **db_links** (Pika): `repl_connect_status` tokens `connected`→Up, `no_connect`→Down,
//!   `syncing_full`/`try_to_full_sync`→FullSync, `connecting`/`try_to_incr_sync`→Connecting,
//!   `error`→Error (unknown tokens ignored). `db_repl_state` / `db_repl_error_state` tokens
//!   `(dbN:Tok)`, case-insensitive: `NoConnect`/`kDBNoConnect`/`Other`→Down,
//!   `kTryConnect`/`kWaitReply`→Connecting, `kTryDBSync`/`WaitDBSync`→FullSync,
//!   `Error`/`InternalError`→Error; Pika only lists DBs that are *not* connected, so an
//!   unrecognised token also maps to Down. When both sources name a DB the more severe state wins
//!   (Error > FullSync > Connecting > Down > Up). On a replica that printed `db_repl_state` but no
//!   `repl_connect_status`, a DB that has a binlog line but is not listed is connected, i.e. Up.
//! * **link** (replicas only, `None` on a master): the worst per-DB state if any is known and not
//!   Up; otherwise `master_link_status` (`up`→Up, `down`→Down, and Redis `down` with
//!   `master_sync_in_progress:1`→FullSync), combined (worse wins) with Pika 3.0 `repl_state:`
//!   (`connected`→Up, `wait dbsync`→FullSync, `error`→Error, `connecting`/`connect`→Connecting,
//!   `no connect`→Down). When the link is Up and no per-DB state was printed, every DB with a
//!   binlog line is Up in `db_links`.
//! * **db_offsets**: from the binlog lines; Pika 3.0 prints a single `binlog_offset:F O` in
//!   `# Log`, which is recorded as `db0` when no per-DB binlog line exists.
//! * **offset**: Redis replica `slave_repl_offset` (falling back to `master_repl_offset`), Redis
//!   master `master_repl_offset`; Pika `slave_repl_offset` if printed (3.5.5/4.0.1+, every role),
//!   else Σ filenum·binlog_file_size + offset over the DBs (`None` without binlog lines or on
//!   overflow). Unknown engine: the Redis field for the role, then `slave_repl_offset`, then
//!   the sum.
//! * **replid**: Pika `ReplicationID`, Redis `master_replid` (Unknown: whichever is present);
//!   empty → `None`.
//! * **eligible**: `is_eligible_for_master_election` `true`/`false`, else `None`.
//! * **priority**: `slave_priority` (or `replica_priority`).
//! * **connected_replicas**: `connected_slaves`, or the number of replica lines if absent.
//! * **replicas**: in `slaveN` order; values split on `,` into `k=v`; lines without a valid
//!   `ip` and `port` are skipped. Pika `lag=(db0:N)(db1:full syncing)…` gives per-DB
//!   `Option<u64>` (`None` when not numeric) and `lag_bytes` = their sum only if every DB is
//!   numeric. Pika 3.0 `lag=<n>` is bytes. Redis `lag=` is seconds (`lag_seconds`), `offset=` is
//!   the acked offset and `lag_bytes` = `master_repl_offset` − `offset` (saturating) when both
//!   are known. A numeric `lag=` on an Unknown engine is read the Redis way if the line has
//!   `offset=`, else as bytes.

mod fields;
mod lines;

use lines::*;

use std::collections::{BTreeMap, HashMap};

use crate::model::{BinlogPos, LinkState, NodeStatus};

/// Why an INFO body could not be turned into a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse INFO: {0}")]
pub struct InfoError(pub String);

/// Default Pika `binlog-file-size`, used to normalise per-DB offsets when `slave_repl_offset`
/// is absent.
pub const DEFAULT_BINLOG_FILE_SIZE: u64 = 104_857_600;

/// Parse an INFO body (any section mix, CRLF or LF), assuming the default Pika
/// `binlog-file-size` ([`DEFAULT_BINLOG_FILE_SIZE`]).
pub fn parse(text: &str) -> Result<NodeStatus, InfoError> {
    parse_with_binlog_size(text, DEFAULT_BINLOG_FILE_SIZE)
}

/// Parse an INFO body; `binlog_file_size` is the node's Pika `binlog-file-size`, used only when
/// the node does not print `slave_repl_offset` itself.
pub fn parse_with_binlog_size(text: &str, binlog_file_size: u64) -> Result<NodeStatus, InfoError> {
    let scan = Scan::new(text);
    scan.build(binlog_file_size)
}

/// What one pass over the lines collected, before any interpretation.
#[derive(Default)]
struct Scan<'a> {
    /// Flat `key:value` fields (first occurrence wins), never containing `dbN` keys.
    fields: HashMap<&'a str, &'a str>,
    /// Text in the parentheses of a `# Replication(…)` header.
    header_role: Option<&'a str>,
    /// The 4.x `repl_connect_status:` block.
    connect_status: BTreeMap<String, LinkState>,
    saw_connect_status: bool,
    db_offsets: BTreeMap<String, BinlogPos>,
    /// `slaveN:` lines as (N, value), sorted by N once the scan is done.
    replica_lines: Vec<(u64, &'a str)>,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Self {
        let mut scan = Scan::default();
        let mut in_connect_block = false;
        for raw in text.split('\n') {
            let line = raw.trim();
            if line.is_empty() {
                in_connect_block = false;
                continue;
            }
            if let Some(header) = line.strip_prefix('#') {
                in_connect_block = false;
                if let Some(inner) = replication_header_role(header) {
                    scan.header_role.get_or_insert(inner);
                }
                continue;
            }
            if in_connect_block {
                if let Some((db, token)) = connect_status_line(line) {
                    if let Some(state) = connect_status_token(token) {
                        scan.connect_status.insert(db.to_string(), state);
                    }
                    continue;
                }
                in_connect_block = false;
            }
            if let Some(name_len) = db_name_len(line) {
                if let Some((db, pos)) = binlog_line(line, name_len) {
                    scan.db_offsets.insert(db.to_string(), pos);
                }
                continue;
            }
            if let Some(entry) = replica_line_value(line) {
                scan.replica_lines.push(entry);
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                continue;
            }
            if key == "repl_connect_status" {
                in_connect_block = true;
                scan.saw_connect_status = true;
                continue;
            }
            scan.fields.entry(key).or_insert(value);
        }
        // Replicas are listed in `slaveN` order whatever order the lines came in.
        scan.replica_lines.sort_by_key(|(n, _)| *n);
        // Pika 3.0 has one keyspace and prints its position in `# Log` as `binlog_offset:F O`.
        if scan.db_offsets.is_empty() {
            if let Some(pos) = scan.fields.get("binlog_offset").and_then(|v| binlog_pos(v)) {
                scan.db_offsets.insert("db0".to_string(), pos);
            }
        }
        scan
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.fields.get(key).copied()
    }

    fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.parse().ok())
    }

    fn has(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    fn build(&self, binlog_file_size: u64) -> Result<NodeStatus, InfoError> {
        let role_text = self
            .get("role")
            .ok_or_else(|| InfoError("no role field".into()))?;
        let role = parse_role(role_text, self.header_role)?;
        let engine = self.engine(role_text);
        let version = self
            .get("pika_version")
            .or_else(|| self.get("redis_version"))
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let mut db_links = self.db_links(role);
        let link = if role.is_replica() {
            self.link(&db_links)
        } else {
            None
        };
        if link == Some(LinkState::Up) && db_links.is_empty() {
            for db in self.db_offsets.keys() {
                db_links.insert(db.clone(), LinkState::Up);
            }
        }
        let replicas = self.replicas(engine);
        let connected_replicas = self
            .get("connected_slaves")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or_else(|| u32::try_from(replicas.len()).unwrap_or(u32::MAX));
        Ok(NodeStatus {
            engine,
            version,
            role,
            master: self.master(),
            link,
            db_links,
            db_offsets: self.db_offsets.clone(),
            offset: self.offset(engine, role, binlog_file_size),
            replid: self.replid(engine),
            eligible: self.eligible(),
            priority: self
                .get("slave_priority")
                .or_else(|| self.get("replica_priority"))
                .and_then(|v| v.parse::<i64>().ok()),
            connected_replicas,
            replicas,
            psync: (engine == crate::model::Engine::Redis)
                .then(|| self.psync())
                .flatten(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fields::binlog_sum;
    use super::*;
    use crate::model::{Engine, Role};

    #[test]
    fn db_name_len_needs_digits_and_separator() {
        assert_eq!(db_name_len("db0 binlog_offset=1 2"), Some(3));
        assert_eq!(db_name_len("db12:binlog_offset=1 2"), Some(4));
        assert_eq!(db_name_len("db_repl_state:(db0:Error)"), None);
        assert_eq!(db_name_len("db0_Strings: keys=0"), None);
        assert_eq!(db_name_len("db"), None);
        assert_eq!(db_name_len("db7"), None);
        assert_eq!(db_name_len("xdb0 a"), None);
    }

    #[test]
    fn binlog_lines_both_spellings() {
        let p = BinlogPos {
            filenum: 57,
            offset: 73201044,
        };
        assert_eq!(
            binlog_line("db0 binlog_offset=57 73201044,safety_purge=none", 3),
            Some(("db0", p))
        );
        assert_eq!(
            binlog_line("db0:binlog_offset=57 73201044,safety_purge=write2file47", 3),
            Some(("db0", p))
        );
        assert_eq!(
            binlog_line("db0:binlog_offset=57 73201044", 3),
            Some(("db0", p))
        );
        assert_eq!(binlog_line("db0 consensus last_log=1", 3), None);
        assert_eq!(
            binlog_line("db0:binlog_offset=57,safety_purge=none", 3),
            None
        );
        assert_eq!(binlog_line("db0:binlog_offset=a b", 3), None);
        assert_eq!(binlog_line("db0:keys=1,expires=0", 3), None);
        assert_eq!(binlog_pos("1 2 3"), None);
        assert_eq!(
            binlog_pos(" 0  0 "),
            Some(BinlogPos {
                filenum: 0,
                offset: 0
            })
        );
    }

    #[test]
    fn header_role_text() {
        assert_eq!(
            replication_header_role(" Replication(MASTER)"),
            Some("MASTER")
        );
        assert_eq!(
            replication_header_role(" Replication(Master && SLAVE)"),
            Some("Master && SLAVE")
        );
        assert_eq!(replication_header_role(" Replication"), None);
        assert_eq!(replication_header_role(" Replication(broken"), None);
        assert_eq!(replication_header_role(" Server"), None);
    }

    #[test]
    fn roles() {
        assert_eq!(parse_role("master", None), Ok(Role::Master));
        assert_eq!(parse_role("double_master", None), Ok(Role::Master));
        assert_eq!(parse_role("slave", None), Ok(Role::Slave));
        assert_eq!(parse_role("slave", Some("SLAVE")), Ok(Role::Slave));
        assert_eq!(
            parse_role("slave", Some("MASTER/SLAVE")),
            Ok(Role::MasterSlave)
        );
        assert_eq!(parse_role("master&&slave", None), Ok(Role::MasterSlave));
        assert_eq!(parse_role("Master && SLAVE", None), Ok(Role::MasterSlave));
        assert!(parse_role("sentinel", None).is_err());
        assert!(parse_role("", None).is_err());
        let long = "x".repeat(500);
        let err = parse_role(&long, None).unwrap_err();
        assert!(err.0.len() < 80, "error text stays short: {}", err.0);
    }

    #[test]
    fn severity_order() {
        use LinkState::*;
        let order = [Up, Down, Connecting, FullSync, Error];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                let w = worse(*a, *b);
                assert_eq!(w, order[i.max(j)]);
            }
        }
    }

    #[test]
    fn connect_status_tokens() {
        assert_eq!(connect_status_token("connected"), Some(LinkState::Up));
        assert_eq!(connect_status_token("no_connect"), Some(LinkState::Down));
        assert_eq!(
            connect_status_token("syncing_full"),
            Some(LinkState::FullSync)
        );
        assert_eq!(
            connect_status_token("try_to_full_sync"),
            Some(LinkState::FullSync)
        );
        assert_eq!(
            connect_status_token("connecting"),
            Some(LinkState::Connecting)
        );
        assert_eq!(
            connect_status_token("try_to_incr_sync"),
            Some(LinkState::Connecting)
        );
        assert_eq!(connect_status_token("error"), Some(LinkState::Error));
        assert_eq!(connect_status_token("weird"), None);
        assert_eq!(
            connect_status_line("db3:connected"),
            Some(("db3", "connected"))
        );
        assert_eq!(connect_status_line("db0:binlog_offset=1 2,x=y"), None);
        assert_eq!(connect_status_line("db0 connected"), None);
        assert_eq!(connect_status_line("db0:"), None);
        assert_eq!(connect_status_line("slave_priority:100"), None);
    }

    #[test]
    fn db_repl_state_tokens() {
        let got = parse_db_repl_state(
            "(db0:NoConnect)(db1:kTryConnect)(db2:kTryDBSync)(db3:WaitDBSync)(db4:kWaitReply)\
             (db5:Error)(db6:kDBNoConnect)(db7:Other)(db8: InternalError)(db9:error)(db10:Zzz)",
        );
        use LinkState::*;
        let want = [
            ("db0", Down),
            ("db1", Connecting),
            ("db2", FullSync),
            ("db3", FullSync),
            ("db4", Connecting),
            ("db5", Error),
            ("db6", Down),
            ("db7", Down),
            ("db8", Error),
            ("db9", Error),
            ("db10", Down),
        ];
        let want: Vec<(String, LinkState)> =
            want.iter().map(|(d, s)| (d.to_string(), *s)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn paren_groups_are_tolerant() {
        assert_eq!(
            paren_groups("(db0:0)(db1:full syncing)(db2: not syncing )"),
            vec![
                ("db0", "0"),
                ("db1", "full syncing"),
                ("db2", "not syncing")
            ]
        );
        assert_eq!(paren_groups("(db0:1"), Vec::<(&str, &str)>::new());
        assert_eq!(paren_groups("(nocolon)(:x)(db1:2)"), vec![("db1", "2")]);
        assert_eq!(paren_groups(""), Vec::<(&str, &str)>::new());
        assert_eq!(paren_groups("))((é:ü)"), vec![("é", "ü")]);
    }

    #[test]
    fn repl_state_tokens() {
        assert_eq!(repl_state_token("connected"), Some(LinkState::Up));
        assert_eq!(repl_state_token("wait  dbsync"), Some(LinkState::FullSync));
        assert_eq!(repl_state_token("error"), Some(LinkState::Error));
        assert_eq!(repl_state_token("connect"), Some(LinkState::Connecting));
        assert_eq!(repl_state_token("connecting"), Some(LinkState::Connecting));
        assert_eq!(repl_state_token("no connect"), Some(LinkState::Down));
        assert_eq!(repl_state_token("?"), None);
    }

    #[test]
    fn replica_line_prefix() {
        assert_eq!(
            replica_line_value("slave0:ip=a,port=1"),
            Some((0, "ip=a,port=1"))
        );
        assert_eq!(replica_line_value("slave12:x"), Some((12, "x")));
        assert_eq!(
            replica_line_value("slave99999999999999999999999:x"),
            Some((u64::MAX, "x"))
        );
        assert_eq!(replica_line_value("slave_priority:100"), None);
        assert_eq!(replica_line_value("slave_repl_offset:1"), None);
        assert_eq!(replica_line_value("slave0"), None);
    }

    #[test]
    fn replica_lines_by_flavour() {
        let pika = parse_replica_line(
            "ip=10.0.0.12,port=9221,conn_fd=89,lag=(db0:3)(db1:4)",
            Engine::Pika,
            None,
        )
        .unwrap();
        assert_eq!(pika.lag_bytes, Some(7));
        assert_eq!(pika.lag_seconds, None);
        let pika30 = parse_replica_line(
            "ip=1.2.3.4,port=9224,state=online,sid=1,lag=100",
            Engine::Pika,
            None,
        )
        .unwrap();
        assert_eq!(pika30.lag_bytes, Some(100));
        assert_eq!(pika30.state.as_deref(), Some("online"));
        let redis = parse_replica_line(
            "ip=10.0.0.23,port=6379,state=online,offset=90,lag=2",
            Engine::Redis,
            Some(100),
        )
        .unwrap();
        assert_eq!(redis.lag_seconds, Some(2));
        assert_eq!(redis.lag_bytes, Some(10));
        let ahead =
            parse_replica_line("ip=a,port=1,offset=200,lag=0", Engine::Redis, Some(100)).unwrap();
        assert_eq!(ahead.lag_bytes, Some(0));
        assert!(parse_replica_line("ip=a,port=x", Engine::Redis, None).is_none());
        assert!(parse_replica_line("port=1", Engine::Redis, None).is_none());
        assert!(parse_replica_line("", Engine::Unknown, None).is_none());
    }

    #[test]
    fn binlog_sum_overflow_is_none() {
        let mut dbs = BTreeMap::new();
        assert_eq!(binlog_sum(&dbs, 10), None);
        dbs.insert(
            "db0".into(),
            BinlogPos {
                filenum: 2,
                offset: 3,
            },
        );
        dbs.insert(
            "db1".into(),
            BinlogPos {
                filenum: 1,
                offset: 0,
            },
        );
        assert_eq!(binlog_sum(&dbs, 10), Some(33));
        dbs.insert(
            "db2".into(),
            BinlogPos {
                filenum: u64::MAX,
                offset: 0,
            },
        );
        assert_eq!(binlog_sum(&dbs, 10), None);
    }

    #[test]
    fn missing_role_is_the_only_fatal_error() {
        assert!(parse("").is_err());
        assert!(parse("# Replication\r\nconnected_slaves:0\r\n").is_err());
        assert!(parse("role:\r\n").is_err());
        assert!(parse("garbage\nrole:master\n:::\nslave0:\n").is_ok());
    }
}
