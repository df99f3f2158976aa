//! INFO parser against every shared fixture, synthetic bodies for the formats without a
//! fixture, property tests (never panics), and one check against a real redis-server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pika_remedy::model::{Addr, BinlogPos, Engine, LinkState, NodeStatus, Role};
use pika_remedy::node::info::{parse, parse_with_binlog_size, DEFAULT_BINLOG_FILE_SIZE};
use proptest::prelude::*;
use serde::Deserialize;

use LinkState::{Connecting, Down, Error as Err_, FullSync, Up};

fn shared_dir() -> PathBuf {
    std::env::var("PIKA_REMEDY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn fixture_dir() -> PathBuf {
    shared_dir().join("fixtures/info")
}

fn fixture(name: &str) -> String {
    let p = fixture_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn fixture_names() -> BTreeSet<String> {
    let dir = fixture_dir();
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "README.md")
        .collect()
}

const RID: &str = "6b780f95ad38efc2ebff0db75577eae46e7a7287ddb70cf251";
const MB100: u64 = DEFAULT_BINLOG_FILE_SIZE;

/// Expected results of the captures, one `[[capture]]` per fixture file.
fn expected_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/info/expected.toml")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    capture: Vec<Row>,
}

/// What one capture must parse to. A key missing from the file means `None`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    file: String,
    engine: Engine,
    role: Role,
    master: Option<String>,
    link: Option<LinkState>,
    db_links: BTreeMap<String, LinkState>,
    db_offsets: BTreeMap<String, BinlogPos>,
    offset: Option<u64>,
    replid: Option<String>,
    eligible: Option<bool>,
    priority: Option<i64>,
    connected: u32,
    replicas: Vec<Rep>,
}

/// One replica line as an operator reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rep {
    ip: String,
    port: u16,
    state: Option<String>,
    offset: Option<u64>,
    db_lag: BTreeMap<String, Lag>,
    lag_bytes: Option<u64>,
    lag_seconds: Option<u64>,
}

/// A DB's lag as Pika prints it: bytes, or `not syncing`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lag {
    Bytes(u64),
    Word(NotSyncing),
}

#[derive(Deserialize)]
enum NotSyncing {
    #[serde(rename = "not syncing")]
    NotSyncing,
}

impl Lag {
    fn bytes(&self) -> Option<u64> {
        match self {
            Lag::Bytes(n) => Some(*n),
            Lag::Word(NotSyncing::NotSyncing) => None,
        }
    }
}

fn rows() -> Vec<Row> {
    let p = expected_path();
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    let expected: Expected =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    expected.capture
}

fn check_row(row: &Row, s: &NodeStatus) {
    let f = &row.file;
    assert_eq!(s.engine, row.engine, "{f}: engine");
    assert_eq!(s.version, None, "{f}: version (no # Server section)");
    assert_eq!(s.role, row.role, "{f}: role");
    assert_eq!(
        s.master,
        row.master.as_deref().map(|m| m.parse::<Addr>().unwrap()),
        "{f}: master"
    );
    assert_eq!(s.link, row.link, "{f}: link");
    assert_eq!(s.db_links, row.db_links, "{f}: db_links");
    assert_eq!(s.db_offsets, row.db_offsets, "{f}: db_offsets");
    assert_eq!(s.offset, row.offset, "{f}: offset");
    assert_eq!(s.replid, row.replid, "{f}: replid");
    assert_eq!(s.eligible, row.eligible, "{f}: eligible");
    assert_eq!(s.priority, row.priority, "{f}: priority");
    assert_eq!(
        s.connected_replicas, row.connected,
        "{f}: connected_replicas"
    );
    assert_eq!(s.replicas.len(), row.replicas.len(), "{f}: replica count");
    for (i, (got, want)) in s.replicas.iter().zip(&row.replicas).enumerate() {
        assert_eq!(got.ip, want.ip, "{f}: slave{i} ip");
        assert_eq!(got.port, want.port, "{f}: slave{i} port");
        assert_eq!(got.state, want.state, "{f}: slave{i} state");
        assert_eq!(got.offset, want.offset, "{f}: slave{i} offset");
        let lag: BTreeMap<String, Option<u64>> = want
            .db_lag
            .iter()
            .map(|(d, l)| (d.clone(), l.bytes()))
            .collect();
        assert_eq!(got.db_lag, lag, "{f}: slave{i} db_lag");
        assert_eq!(got.lag_bytes, want.lag_bytes, "{f}: slave{i} lag_bytes");
        assert_eq!(
            got.lag_seconds, want.lag_seconds,
            "{f}: slave{i} lag_seconds"
        );
    }
}

#[test]
fn every_fixture_has_a_row_and_parses_as_expected() {
    let rows = rows();
    let row_names: BTreeSet<String> = rows.iter().map(|r| r.file.to_string()).collect();
    assert_eq!(row_names.len(), rows.len(), "duplicate rows");
    let on_disk = fixture_names();
    assert_eq!(
        on_disk,
        row_names,
        "fixture files without a row: {:?}; rows without a file: {:?}",
        on_disk.difference(&row_names).collect::<Vec<_>>(),
        row_names.difference(&on_disk).collect::<Vec<_>>()
    );
    for row in &rows {
        let text = fixture(&row.file);
        assert!(text.contains("\r\n"), "{}: fixtures are CRLF", row.file);
        let s = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", row.file));
        check_row(row, &s);
    }
}

// ---------------------------------------------------------------------------------------------
// Body transformations that must not change the result.

fn crlf(lines: &[&str]) -> String {
    let mut s = lines.join("\r\n");
    s.push_str("\r\n");
    s
}

/// Lines grouped so that a `repl_connect_status:` block stays together when shuffled.
fn units(text: &str) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        let is_block_line = line.starts_with("db")
            && line.contains(':')
            && !line.contains('=')
            && !line.contains(' ');
        if in_block && is_block_line {
            if let Some(last) = out.last_mut() {
                last.push(line.to_string());
            }
            continue;
        }
        in_block = line.starts_with("repl_connect_status:");
        out.push(vec![line.to_string()]);
    }
    out
}

fn join_units(units: &[Vec<String>], eol: &str) -> String {
    let mut s = String::new();
    for u in units {
        for l in u {
            s.push_str(l);
            s.push_str(eol);
        }
    }
    s
}

#[test]
fn lf_only_line_ends_give_the_same_status() {
    for name in fixture_names() {
        let text = fixture(&name);
        let lf = text.replace("\r\n", "\n");
        assert!(!lf.contains('\r'));
        assert_eq!(parse(&lf).unwrap(), parse(&text).unwrap(), "{name}");
        // No final newline either.
        assert_eq!(
            parse(lf.trim_end()).unwrap(),
            parse(&text).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn field_order_does_not_matter() {
    for name in fixture_names() {
        let text = fixture(&name);
        let want = parse(&text).unwrap();
        let u = units(&text);
        let mut reversed = u.clone();
        reversed.reverse();
        assert_eq!(
            parse(&join_units(&reversed, "\r\n")).unwrap(),
            want,
            "{name} reversed"
        );
        for k in 1..u.len() {
            let mut rotated = u.clone();
            rotated.rotate_left(k);
            assert_eq!(
                parse(&join_units(&rotated, "\n")).unwrap(),
                want,
                "{name} rotated by {k}"
            );
        }
    }
}

#[test]
fn unknown_fields_interleaved_are_ignored() {
    let junk = [
        "future_field:42",
        "some_flag:yes",
        "a line without a colon",
        "# Weird section",
        "",
        "db9 consensus last_log=5",
        "db3:keys=10,expires=0,avg_ttl=0",
        "db0 Strings_keys=1046836, expires=1046836, invaild_keys=10361",
        "Strings: keys=0, expires=0, invaild_keys=0",
        "slave_read_only:1",
        "master_link_down_since_seconds:12",
        ":",
        "x:",
    ];
    for name in fixture_names() {
        let text = fixture(&name);
        let want = parse(&text).unwrap();
        let mut mixed = Vec::new();
        for (i, u) in units(&text).into_iter().enumerate() {
            mixed.push(vec![junk[i % junk.len()].to_string()]);
            mixed.push(u);
        }
        mixed.push(vec![junk[junk.len() - 1].to_string()]);
        assert_eq!(parse(&join_units(&mixed, "\r\n")).unwrap(), want, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Synthetic bodies for versions without a fixture.

#[test]
fn pika_3_0_master_full_info() {
    // Shape of v3.0.16 `INFO`: binlog position in `# Log`, slave lines with state/sid/lag bytes.
    let text = crlf(&[
        "# Server",
        "pika_version:3.0.16",
        "pika_git_sha:0000000000000000000000000000000000000000",
        "pika_build_compile_date: Dec 20 2019",
        "tcp_port:9221",
        "server_id:1",
        "",
        "# Log",
        "log_size:68984",
        "safety_purge:none",
        "expire_logs_days:7",
        "binlog_offset:3 1024",
        "",
        "# Replication(MASTER)",
        "role:master",
        "connected_slaves:2",
        "slave0:ip=10.0.0.12,port=9221,state=online,sid=1,lag=100",
        "slave1:ip=10.0.0.13,port=9221,state=offline,sid=2,lag=0",
        "",
        "# Keyspace",
        "# Time: 1970-01-01 08:00:00",
        "Strings: keys=0, expires=0, invaild_keys=0",
        "Hashes: keys=0, expires=0, invaild_keys=0",
    ]);
    let s = parse(&text).unwrap();
    assert_eq!(s.engine, Engine::Pika);
    assert_eq!(s.version.as_deref(), Some("3.0.16"));
    assert_eq!(s.role, Role::Master);
    assert_eq!(s.link, None);
    assert_eq!(s.master, None);
    assert_eq!(
        s.db_offsets,
        BTreeMap::from([(
            "db0".to_string(),
            BinlogPos {
                filenum: 3,
                offset: 1024
            }
        )])
    );
    assert_eq!(s.offset, Some(3 * MB100 + 1024));
    assert_eq!(s.replid, None);
    assert_eq!(s.connected_replicas, 2);
    assert_eq!(s.replicas.len(), 2);
    let r0 = &s.replicas[0];
    assert_eq!((r0.ip.as_str(), r0.port), ("10.0.0.12", 9221));
    assert_eq!(r0.state.as_deref(), Some("online"));
    assert_eq!(r0.lag_bytes, Some(100));
    assert_eq!(r0.lag_seconds, None);
    assert!(r0.db_lag.is_empty());
    assert_eq!(s.replicas[1].state.as_deref(), Some("offline"));
    assert_eq!(s.replicas[1].lag_bytes, Some(0));

    // Same without `# Server`: the slave lines (`sid=`) and the header still say Pika.
    let bare = crlf(&[
        "role:master",
        "connected_slaves:1",
        "slave0:ip=10.0.0.12,port=9221,state=online,sid=1,lag=100",
    ]);
    let s = parse(&bare).unwrap();
    assert_eq!(s.engine, Engine::Pika);
    assert_eq!(s.replicas[0].lag_bytes, Some(100));
    assert_eq!(s.offset, None, "no binlog line, no offset");
}

fn pika30_slave(link_status: &str, repl_state: &str) -> String {
    crlf(&[
        "# Server",
        "pika_version:3.0.16",
        "",
        "# Log",
        "safety_purge:none",
        "binlog_offset:7 4096",
        "",
        "# Replication(SLAVE)",
        "role:slave",
        "master_host:10.0.0.11",
        "master_port:9221",
        &format!("master_link_status:{link_status}"),
        "slave_priority:90",
        "slave_read_only:1",
        &format!("repl_state: {repl_state}"),
    ])
}

#[test]
fn pika_3_0_slave_repl_state() {
    let s = parse(&pika30_slave("up", "connected")).unwrap();
    assert_eq!(s.engine, Engine::Pika);
    assert_eq!(s.role, Role::Slave);
    assert_eq!(s.master, Some(Addr::new("10.0.0.11", 9221)));
    assert_eq!(s.link, Some(Up));
    assert_eq!(s.db_links, BTreeMap::from([("db0".to_string(), Up)]));
    assert_eq!(s.offset, Some(7 * MB100 + 4096));
    assert_eq!(s.priority, Some(90));
    assert_eq!(s.connected_replicas, 0);

    for (state, want) in [
        ("wait dbsync", FullSync),
        ("error", Err_),
        ("connecting", Connecting),
        ("connect", Connecting),
        ("no connect", Down),
    ] {
        let s = parse(&pika30_slave("down", state)).unwrap();
        assert_eq!(s.link, Some(want), "repl_state: {state}");
        assert!(
            s.db_links.is_empty(),
            "no per-DB state on 3.0 when the link is not up"
        );
    }

    // A custom binlog-file-size only matters when slave_repl_offset is absent.
    let s = parse_with_binlog_size(&pika30_slave("up", "connected"), 1000).unwrap();
    assert_eq!(s.offset, Some(7 * 1000 + 4096));
}

#[test]
fn pika_3_0_double_master_and_master_slave_header() {
    let dm = crlf(&[
        "# Replication(DOUBLEMASTER)",
        "role:double_master",
        "connected_slaves:0",
    ]);
    let s = parse(&dm).unwrap();
    assert_eq!(s.role, Role::Master);
    assert_eq!(s.engine, Engine::Pika);
    assert_eq!(s.link, None);

    // Both role bits outside double-master mode: `role:slave` under a MASTER/SLAVE header.
    let ms = crlf(&[
        "# Replication(MASTER/SLAVE)",
        "role:slave",
        "master_host:10.0.0.11",
        "master_port:9221",
        "master_link_status:up",
        "slave_priority:100",
        "repl_state: connected",
        "connected_slaves:1",
        "slave0:ip=10.0.0.13,port=9221,state=online,sid=3,lag=7",
    ]);
    let s = parse(&ms).unwrap();
    assert_eq!(s.role, Role::MasterSlave);
    assert_eq!(s.link, Some(Up));
    assert_eq!(s.replicas[0].lag_bytes, Some(7));
}

#[test]
fn pika_3_2_db_repl_error_state() {
    // v3.2.0: `db_repl_error_state:` and no `slave_read_only`.
    let text = crlf(&[
        "# Replication(SLAVE)",
        "role:slave",
        "master_host:10.0.0.11",
        "master_port:9221",
        "master_link_status:down",
        "slave_priority:100",
        "db_repl_error_state:(db0:NoConnect)",
        "db0 binlog_offset=5462 16676965,safety_purge=write2file5452",
    ]);
    let s = parse(&text).unwrap();
    assert_eq!(s.engine, Engine::Pika);
    assert_eq!(s.link, Some(Down));
    assert_eq!(s.db_links, BTreeMap::from([("db0".to_string(), Down)]));
    assert_eq!(s.offset, Some(5462 * MB100 + 16676965));

    let err = text.replace("(db0:NoConnect)", "(db0: InternalError)");
    let s = parse(&err).unwrap();
    assert_eq!(s.link, Some(Err_));
    assert_eq!(s.db_links["db0"], Err_);

    let syncing = text.replace("(db0:NoConnect)", "(db0:kTryDBSync)");
    assert_eq!(parse(&syncing).unwrap().link, Some(FullSync));
}

#[test]
fn pika_3_5_1_replication_id_with_space() {
    let slave = crlf(&[
        "# Replication(SLAVE)",
        "role:slave",
        &format!("ReplicationID: {RID}"),
        "master_host:10.0.0.11",
        "master_port:9221",
        "master_link_status:up",
        "slave_priority:100",
        "slave_read_only:1",
        "db0 binlog_offset=21 10443328,safety_purge=write2file11",
    ]);
    let s = parse(&slave).unwrap();
    assert_eq!(s.engine, Engine::Pika);
    assert_eq!(s.replid.as_deref(), Some(RID));
    assert_eq!(s.link, Some(Up));
    assert_eq!(s.db_links, BTreeMap::from([("db0".to_string(), Up)]));
    assert_eq!(s.offset, Some(2212452928));

    // Empty ID: `ReplicationID: ` with a trailing space.
    let fresh = "# Replication(MASTER)\r\nrole:master\r\nReplicationID: \r\n\
                 connected_slaves:0\r\ndb0 binlog_offset=0 7341,safety_purge=none\r\n";
    assert!(fresh.contains("ReplicationID: \r\n"));
    let s = parse(fresh).unwrap();
    assert_eq!(s.replid, None);
    assert_eq!(s.role, Role::Master);
    assert_eq!(s.offset, Some(7341));
}

#[test]
fn full_info_with_server_section_pika_3_5_4() {
    let repl = fixture("pika-3.5.4-slave-up.txt");
    let text = format!(
        "# Server\r\npika_version:3.5.4\r\npika_git_sha:abc\r\nos:Linux\r\ntcp_port:9221\r\n\
         server_id:1\r\nrun_id:8f2c\r\n\r\n# Data\r\ndb_size:645807\r\ndb_fatal:0\r\n\r\n\
         # Clients\r\nconnected_clients:1\r\n\r\n# Stats\r\nis_bgsaving:No\r\n\r\n\
         # CPU\r\nused_cpu_sys:1.56\r\n\r\n{repl}\r\n# Keyspace\r\n\
         # Use \"info keyspace 1\" to do async statistics\r\n# Time:0\r\n\
         db0 Strings_keys=0, expires=0, invalid_keys=0\r\n\
         db0 Hashes_keys=0, expires=0, invalid_keys=0\r\n"
    );
    let s = parse(&text).unwrap();
    let mut want = parse(&repl).unwrap();
    want.version = Some("3.5.4".into());
    assert_eq!(s, want);
}

#[test]
fn full_info_with_server_section_pika_4_0_1_keyspace_after_block() {
    // The Keyspace lines `db0 …` come after the repl_connect_status block and must not join it.
    let repl = fixture("pika-4.0.1-slave-connecting.txt");
    let text = format!(
        "# Server\r\npika_version:4.0.0\r\n\r\n{repl}\r\n# Keyspace\r\n\
         db0 Strings_keys=0, expires=0, invalid_keys=0\r\n"
    );
    let s = parse(&text).unwrap();
    let mut want = parse(&repl).unwrap();
    want.version = Some("4.0.0".into());
    assert_eq!(s, want);
}

#[test]
fn full_info_with_server_section_redis_7_0_15() {
    let repl = fixture("redis-7-replica.txt");
    let text = format!(
        "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n\
         os:Linux\r\narch_bits:64\r\ntcp_port:6379\r\n\r\n# Clients\r\nconnected_clients:1\r\n\r\n\
         # Persistence\r\nloading:0\r\nrdb_changes_since_last_save:0\r\n\r\n# Stats\r\n\
         sync_full:0\r\nsync_partial_ok:0\r\n\r\n{repl}\r\n# CPU\r\nused_cpu_sys:0.1\r\n\r\n\
         # Keyspace\r\ndb0:keys=10,expires=0,avg_ttl=0\r\ndb3:keys=1,expires=1,avg_ttl=100\r\n"
    );
    let s = parse(&text).unwrap();
    assert_eq!(s.engine, Engine::Redis);
    assert_eq!(s.version.as_deref(), Some("7.0.15"));
    assert!(s.db_offsets.is_empty() && s.db_links.is_empty());
    let mut want = parse(&repl).unwrap();
    want.version = Some("7.0.15".into());
    assert_eq!(s, want);
}

#[test]
fn multi_db_3x_slave_and_master_lag() {
    let slave = crlf(&[
        "# Replication(SLAVE)",
        "role:slave",
        "master_host:10.0.0.11",
        "master_port:9221",
        "master_link_status:down",
        "slave_priority:100",
        "slave_read_only:1",
        "db_repl_state:(db0:WaitDBSync)(db1:NoConnect)",
        "db0 binlog_offset=0 0,safety_purge=none",
        "db1 binlog_offset=4 100,safety_purge=none",
        "db2 binlog_offset=1 5,safety_purge=none",
    ]);
    let s = parse(&slave).unwrap();
    assert_eq!(s.link, Some(FullSync), "worst DB state wins");
    assert_eq!(
        s.db_links,
        BTreeMap::from([
            ("db0".to_string(), FullSync),
            ("db1".to_string(), Down),
            // Not listed in db_repl_state: Pika lists only DBs that are not connected.
            ("db2".to_string(), Up),
        ])
    );
    assert_eq!(s.db_offsets.len(), 3);
    assert_eq!(s.offset, Some(4 * MB100 + 100 + MB100 + 5));

    let master = crlf(&[
        "# Replication(MASTER)",
        "role:master",
        "connected_slaves:1",
        "slave0:ip=10.0.0.12,port=9221,conn_fd=112,lag=(db0:not syncing)(db1:12)",
        "db0 binlog_offset=0 10,safety_purge=none",
        "db1 binlog_offset=4 112,safety_purge=none",
    ]);
    let s = parse(&master).unwrap();
    let r = &s.replicas[0];
    assert_eq!(
        r.db_lag,
        BTreeMap::from([("db0".to_string(), None), ("db1".to_string(), Some(12))])
    );
    assert_eq!(r.lag_bytes, None, "one DB not syncing: no total");
    assert_eq!(r.lag_seconds, None);
}

#[test]
fn chained_3_3_format() {
    let text = crlf(&[
        "# Replication(Master && SLAVE)",
        "role:master&&slave",
        "master_host:10.0.0.11",
        "master_port:9221",
        "master_link_status:up",
        "slave_read_only:1",
        "connected_slaves:1",
        "slave0:ip=10.0.0.13,port=9221,conn_fd=97,lag=(db0:25)",
        "db0 binlog_offset=57 73201044,safety_purge=none",
    ]);
    let s = parse(&text).unwrap();
    assert_eq!(s.engine, Engine::Pika);
    assert_eq!(s.role, Role::MasterSlave);
    assert_eq!(s.master, Some(Addr::new("10.0.0.11", 9221)));
    assert_eq!(s.link, Some(Up));
    assert_eq!(s.db_links, BTreeMap::from([("db0".to_string(), Up)]));
    assert_eq!(s.priority, None, "chained nodes print no slave_priority");
    assert_eq!(s.connected_replicas, 1);
    assert_eq!(s.replicas[0].lag_bytes, Some(25));
    assert_eq!(s.offset, Some(6050084244));

    // Same chained node with a DB in trouble.
    let down = text
        .replace("master_link_status:up", "master_link_status:down")
        .replace(
            "slave_read_only:1\r\n",
            "slave_read_only:1\r\ndb_repl_state:(db0:kTryConnect)\r\n",
        );
    let s = parse(&down).unwrap();
    assert_eq!(s.link, Some(Connecting));
}

#[test]
fn both_db_state_sources_more_severe_wins() {
    let base = fixture("pika-4.0.1-slave-connecting.txt");
    // Block says connecting, db_repl_state says Error → Error.
    let t = base.replace("(db0:kWaitReply)", "(db0:Error)");
    let s = parse(&t).unwrap();
    assert_eq!(s.db_links["db0"], Err_);
    assert_eq!(s.link, Some(Err_));
    // Block says error, db_repl_state says connecting → still Error.
    let t = base.replace("db0:connecting", "db0:error");
    assert_eq!(parse(&t).unwrap().link, Some(Err_));
    // All DBs connected but the node-wide flag is down (MetaSync not done) → Down.
    let t = fixture("pika-4.0.1-slave-up.txt")
        .replace("master_link_status:up", "master_link_status:down");
    let s = parse(&t).unwrap();
    assert_eq!(s.link, Some(Down));
    assert_eq!(s.db_links["db0"], Up);
}

#[test]
fn multi_db_repl_connect_status_block() {
    let text = crlf(&[
        "# Replication(SLAVE)",
        "role:slave",
        &format!("ReplicationID:{RID}"),
        "master_host:10.0.0.11",
        "master_port:9221",
        "master_link_status:down",
        "repl_connect_status:",
        "db0:connected",
        "db1:try_to_full_sync",
        "db2:try_to_incr_sync",
        "slave_priority:10",
        "slave_read_only:1",
        "db_repl_state:(db1:kTryDBSync)(db2:kTryConnect)",
        "is_eligible_for_master_election:true",
        "db0:binlog_offset=1 1,safety_purge=none",
        "db1:binlog_offset=0 0,safety_purge=none",
        "db2:binlog_offset=2 2,safety_purge=none",
        "slave_repl_offset:314572803",
    ]);
    let s = parse(&text).unwrap();
    assert_eq!(
        s.db_links,
        BTreeMap::from([
            ("db0".to_string(), Up),
            ("db1".to_string(), FullSync),
            ("db2".to_string(), Connecting),
        ])
    );
    assert_eq!(s.link, Some(FullSync));
    assert_eq!(
        s.offset,
        Some(314572803),
        "printed slave_repl_offset wins over the sum"
    );
    assert_eq!(
        parse_with_binlog_size(&text, 1).unwrap().offset,
        Some(314572803)
    );
    assert_eq!(s.priority, Some(10));
}

#[test]
fn redis_sync_in_progress_and_engine_inference() {
    let t = fixture("redis-7-replica-down.txt")
        .replace("master_sync_in_progress:0", "master_sync_in_progress:1");
    assert_eq!(parse(&t).unwrap().link, Some(FullSync));

    // Neither flavour's fields: Unknown.
    let s =
        parse("role:slave\r\nmaster_host:h\r\nmaster_port:1\r\nmaster_link_status:up\r\n").unwrap();
    assert_eq!(s.engine, Engine::Unknown);
    assert_eq!(s.link, Some(Up));
    assert_eq!(s.master, Some(Addr::new("h", 1)));
    // A bad port leaves master unknown rather than failing.
    let s = parse("role:slave\nmaster_host:h\nmaster_port:99999\n").unwrap();
    assert_eq!(s.master, None);
    assert_eq!(s.link, None);
    // Redis by its replid alone; Pika by its header alone.
    assert_eq!(
        parse("role:master\nmaster_replid:abc\n").unwrap().engine,
        Engine::Redis
    );
    assert_eq!(
        parse("# Replication(MASTER)\nrole:master\n")
            .unwrap()
            .engine,
        Engine::Pika
    );
    // Server section beats inference.
    assert_eq!(
        parse("# Server\nredis_version:7.0.15\n\n# Replication(MASTER)\nrole:master\n")
            .unwrap()
            .engine,
        Engine::Redis
    );
    // Replica priority under its newer name.
    assert_eq!(
        parse("role:slave\nreplica_priority:5\n").unwrap().priority,
        Some(5)
    );
}

#[test]
fn missing_or_unknown_role_is_an_error() {
    let t = fixture("pika-4.0.1-slave-up.txt").replace("role:slave\r\n", "");
    assert!(parse(&t).is_err());
    let t = fixture("redis-7-master.txt").replace("role:master", "role:sentinel");
    let e = parse(&t).unwrap_err();
    assert!(e.to_string().contains("sentinel"), "{e}");
    assert!(parse("").is_err());
}

// ---------------------------------------------------------------------------------------------
// Properties: parse never panics, and a master never reports a link.

fn fixture_lines() -> Vec<String> {
    let mut lines: Vec<String> = fixture_names()
        .iter()
        .flat_map(|n| fixture(n).lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    lines.sort();
    lines.dedup();
    lines
}

fn check_invariants(s: &NodeStatus) {
    if s.role == Role::Master {
        assert_eq!(s.link, None);
    }
    for r in &s.replicas {
        if !r.db_lag.is_empty() && r.db_lag.values().any(Option::is_none) {
            assert_eq!(r.lag_bytes, None);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics_on_arbitrary_strings(s in any::<String>()) {
        if let Ok(st) = parse(&s) {
            check_invariants(&st);
        }
    }

    #[test]
    fn never_panics_on_info_like_strings(
        s in "([a-z_]{0,12}[: ]?[a-zA-Z0-9 =,()&:#.\u{e9}-]{0,30}(\r\n|\n|\r)){0,30}"
    ) {
        if let Ok(st) = parse(&s) {
            check_invariants(&st);
        }
    }
}

#[test]
fn never_panics_on_line_soups_of_real_lines() {
    use proptest::test_runner::{Config, TestRunner};
    let real = fixture_lines();
    assert!(real.len() > 50, "expected many distinct fixture lines");
    let random_line = prop_oneof![
        "[ -~]{0,40}",
        "(db[0-9]{1,3}|slave[0-9]{1,2})[ :][ -~]{0,40}",
        "db[0-9][ :]binlog_offset=[0-9 ]{0,25}(,safety_purge=[a-z0-9]{0,10})?",
        "slave[0-9]:ip=[0-9.]{0,15},port=[0-9]{0,6},(conn_fd=[0-9]{1,3},)?lag=[()a-z0-9: ]{0,30}",
        "(db_repl_state|db_repl_error_state):[()a-zA-Z0-9: ]{0,40}",
        "role:(master|slave|master&&slave|double_master|[a-z&]{0,8})",
        "(slave_repl_offset|master_repl_offset|connected_slaves|master_port):-?[0-9]{0,22}",
        "repl_connect_status:[ a-z]{0,5}",
        "db[0-9]:(connected|no_connect|syncing_full|error|[a-z_]{0,10})",
    ];
    let line = prop_oneof![
        3 => proptest::sample::select(real.clone()),
        2 => random_line,
    ];
    let soup = (
        proptest::collection::vec(line, 0..40),
        prop_oneof![Just("\r\n"), Just("\n")],
    );
    let mut runner = TestRunner::new(Config {
        cases: 1024,
        ..Config::default()
    });
    runner
        .run(&soup, |(lines, eol)| {
            let body = lines.join(eol);
            if let Ok(st) = parse(&body) {
                check_invariants(&st);
            }
            let _ = parse_with_binlog_size(&body, u64::MAX);
            let _ = parse_with_binlog_size(&body, 0);
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// A real redis-server 7: bounded, self-cleaning.

mod real_redis {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// Kills and reaps the server when dropped, even if the test panics.
    struct Server {
        child: Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn start(extra: &[&str]) -> Server {
        let bin = "/usr/bin/redis-server";
        assert!(
            Path::new(bin).exists(),
            "{bin} missing: install the Debian package `redis-server`"
        );
        // A port can be taken between probing and binding; retry a few times.
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let child = Command::new(bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut server = Server {
                child,
                port,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // exited (port taken?): try another port
                }
                if info(port).is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("redis-server did not start within 5 attempts");
    }

    /// `INFO` over a raw RESP connection; returns the bulk-string body exactly as sent.
    fn info(port: u16) -> std::io::Result<String> {
        let addr = ("127.0.0.1", port);
        let mut c = TcpStream::connect(addr)?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        c.set_write_timeout(Some(Duration::from_secs(2)))?;
        c.write_all(b"*1\r\n$4\r\nINFO\r\n")?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                let header = String::from_utf8_lossy(&buf[..pos]).into_owned();
                let len: usize = header
                    .strip_prefix('$')
                    .and_then(|l| l.parse().ok())
                    .ok_or_else(|| std::io::Error::other(format!("bad reply {header:?}")))?;
                if buf.len() >= pos + 2 + len {
                    return Ok(String::from_utf8_lossy(&buf[pos + 2..pos + 2 + len]).into_owned());
                }
            }
            if Instant::now() > deadline || buf.len() > 1 << 20 {
                return Err(std::io::Error::other("INFO reply incomplete"));
            }
            let n = c.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// `SET pika-remedy-test 1`, expecting `+OK`.
    fn set_key(port: u16) -> std::io::Result<()> {
        let mut c = TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        c.write_all(b"*3\r\n$3\r\nSET\r\n$16\r\npika-remedy-test\r\n$1\r\n1\r\n")?;
        let mut reply = [0u8; 5];
        c.read_exact(&mut reply)?;
        if &reply != b"+OK\r\n" {
            return Err(std::io::Error::other(format!("SET replied {reply:?}")));
        }
        Ok(())
    }

    #[test]
    fn real_redis_7_master_and_replica() {
        let master = start(&[]);
        let replica = start(&["--replicaof", "127.0.0.1", &master.port.to_string()]);

        // Wait (bounded) until the replica reports its link up and the master lists it online.
        let deadline = Instant::now() + Duration::from_secs(15);
        let (m, r) = loop {
            let m = parse(&info(master.port).unwrap()).unwrap();
            let r = parse(&info(replica.port).unwrap()).unwrap();
            let online = m
                .replicas
                .first()
                .is_some_and(|l| l.state.as_deref() == Some("online"));
            if r.link == Some(Up) && online {
                break (m, r);
            }
            assert!(
                Instant::now() < deadline,
                "replica not up in 15 s: {r:?} / {m:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };

        // Visible with --nocapture, for eyeballing against `redis-cli INFO`.
        println!("real master: {m:?}\nreal replica: {r:?}");
        assert_eq!(m.engine, Engine::Redis);
        assert!(
            m.version.as_deref().is_some_and(|v| v.starts_with("7.")),
            "{:?}",
            m.version
        );
        assert_eq!(m.role, Role::Master);
        assert_eq!(m.link, None);
        assert_eq!(m.master, None);
        assert_eq!(m.connected_replicas, 1);
        let line = &m.replicas[0];
        assert_eq!(line.ip, "127.0.0.1");
        assert_eq!(line.port, replica.port);
        assert!(line.offset.is_some() && line.lag_seconds.is_some());
        assert!(line.lag_bytes.is_some());
        assert!(m.offset.is_some());
        let replid = m.replid.clone().unwrap();
        assert_eq!(replid.len(), 40);
        assert!(m.db_offsets.is_empty() && m.db_links.is_empty());

        assert_eq!(r.engine, Engine::Redis);
        assert_eq!(r.role, Role::Slave);
        assert_eq!(r.master, Some(Addr::new("127.0.0.1", master.port)));
        assert_eq!(r.link, Some(Up));
        assert_eq!(r.priority, Some(100));
        assert_eq!(r.replid.as_deref(), Some(replid.as_str()));
        assert!(r.offset.is_some());
        assert_eq!(r.connected_replicas, 0);

        // One write moves the offsets; the replica's offset catches up to the master's.
        set_key(master.port).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = parse(&info(master.port).unwrap()).unwrap();
            let r = parse(&info(replica.port).unwrap()).unwrap();
            let mo = m.offset.unwrap();
            if mo > 0 && r.offset == Some(mo) && m.replicas[0].offset == Some(mo) {
                assert_eq!(m.replicas[0].lag_bytes, Some(0));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "offsets did not converge in 10 s: {r:?} / {m:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        drop(replica);
        drop(master);
    }
}
