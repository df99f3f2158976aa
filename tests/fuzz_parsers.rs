//! Long-running fuzzing of the three parsers that read untrusted text: the Alertmanager webhook
//! body (`alert::parse` + `alert::classify`), INFO (`node::info::parse`) and the TOML config
//! (`Config::parse` + `validate`).
//!
//! A seeded mutational fuzzer (no coverage feedback, see README "Fuzzing"): inputs start from
//! the seed corpus in `tests/data/fuzz/<target>/`, and each execution applies 1–8 mutations
//! (bit flips, random bytes, dictionary tokens of the format, deletions, duplications, splices
//! with another seed, truncation). Inputs the parser accepts join a bounded corpus, so mutations
//! go on from accepted shapes. Every execution checks:
//! - no panic (the harness catches it and prints the input, hex and text, and the seed);
//! - bounded time: no single execution over `MAX_EXEC`;
//! - bounded memory: the peak heap allocated during one execution (counted by this binary's
//!   global allocator) stays under `64 × input + 1 MiB`;
//! - invariants: the parsers are deterministic; INFO reads the same with CRLF or LF line ends and
//!   with surrounding spaces; an accepted webhook renders back (JSON) to the same payload
//!   (`parse(render(x)) == x`); `parse_instance(addr.to_string()) == addr`; `redact_label` is
//!   idempotent and leaves no `user:password@` in a URL.
//!
//! `FUZZ_EXECS` (per target, default 3000: the short run of `make test`) and `FUZZ_SEED`
//! (default 1) choose the run; `make fuzz` runs 10 M executions in total. Each target prints
//! one line `fuzz <target>: <execs> execs in <secs> s (<rate>/s), <n> accepted, 0 crashes`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pika_remedy::alert;
use pika_remedy::config::{Config, WebhookConfig};
use pika_remedy::model::Addr;
use pika_remedy::node::info;
use serde_json::{json, Value};

// ---------------------------------------------------------------- allocation accounting

/// Counts live heap bytes and the peak since the last reset. Tests run on two threads, so the
/// peak is a per-thread figure only approximately; the bound is generous for that reason.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak bytes above the level at the start of `f`.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

// ---------------------------------------------------------------- the mutator

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Longest input we build (parsers are linear; longer inputs only slow the run down).
const MAX_INPUT: usize = 8 * 1024;
/// No single execution may take longer (debug build, loaded 2-core machine: generous).
const MAX_EXEC: Duration = Duration::from_secs(2);
/// Bound on the corpus of accepted inputs kept for further mutation.
const MAX_CORPUS: usize = 512;

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>], dict: &[&[u8]]) {
    let n = 1 + rng.below(8);
    for _ in 0..n {
        let len = input.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 | 3 => {
                let tok = dict[rng.below(dict.len())];
                let i = rng.below(len + 1);
                input.splice(i..i, tok.iter().copied());
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let k = 1 + rng.below((len - i).min(64));
                input.drain(i..i + k);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let k = 1 + rng.below((len - i).min(256));
                let chunk: Vec<u8> = input[i..i + k].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = a + 1 + rng.below((other.len() - a).min(512));
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[a..b].iter().copied());
                }
            }
            7 if len > 0 => input.truncate(rng.below(len)),
            8 => {
                // A special character where parsers split: `:`, `=`, `,`, quotes, newlines.
                const SPECIAL: &[u8] = b":=,()[]{}\"'\\\r\n\t #@/.-0";
                let i = rng.below(len + 1);
                input.insert(i, SPECIAL[rng.below(SPECIAL.len())]);
            }
            _ if len > 0 => {
                // Replace a digit run with an extreme number.
                const NUMS: &[&[u8]] = &[
                    b"0",
                    b"-1",
                    b"65535",
                    b"65536",
                    b"18446744073709551615",
                    b"18446744073709551616",
                    b"99999999999999999999999",
                    b"1e308",
                    b"-0",
                ];
                let i = rng.below(len);
                let mut j = i;
                while j < len && input[j].is_ascii_digit() {
                    j += 1;
                }
                input.splice(i..j, NUMS[rng.below(NUMS.len())].iter().copied());
            }
            _ => {}
        }
    }
    input.truncate(MAX_INPUT);
}

// ---------------------------------------------------------------- the driver

fn seeds(dir: &str) -> Vec<Vec<u8>> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("seed dir {}: {e}", d.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let out: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).expect("read seed"))
        .collect();
    assert!(!out.is_empty(), "no seeds in {}", d.display());
    out
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn show(input: &[u8]) -> String {
    let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "text: {:?}\nhex: {hex}",
        String::from_utf8_lossy(&input[..input.len().min(4096)])
    )
}

/// Run `execs` executions of `check` (which returns true when the parser accepted the input).
/// Panics (with the input) on a crash, a timeout or a memory bound breach.
fn run(target: &str, dict: &[&[u8]], check: impl Fn(&[u8]) -> bool + std::panic::RefUnwindSafe) {
    let execs = env_u64("FUZZ_EXECS", 3000);
    let seed = env_u64("FUZZ_SEED", 1);
    let base = seeds(target);
    let mut corpus = base.clone();
    let mut rng = Rng::new(seed ^ target.len() as u64);
    let started = Instant::now();
    let mut accepted = 0u64;
    let mut slowest = Duration::ZERO;
    let mut max_peak = 0usize;
    // The seeds themselves first, unmutated.
    for s in &base {
        assert!(check(s), "{target}: a seed no longer parses:\n{}", show(s));
    }
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..execs {
        let mut input = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut input, &base, dict);
        let t0 = Instant::now();
        let (res, peak) = peak_during(|| std::panic::catch_unwind(|| check(&input)));
        let took = t0.elapsed();
        let ok = match res {
            Ok(ok) => ok,
            Err(e) => {
                std::panic::set_hook(quiet);
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "fuzz {target}: CRASH at exec {i} (FUZZ_SEED={seed}): {msg}\n{}",
                    show(&input)
                );
            }
        };
        slowest = slowest.max(took);
        max_peak = max_peak.max(peak);
        assert!(
            took <= MAX_EXEC,
            "fuzz {target}: exec {i} took {took:?} (> {MAX_EXEC:?}):\n{}",
            show(&input)
        );
        let bound = 64 * input.len() + (1 << 20);
        assert!(
            peak <= bound,
            "fuzz {target}: exec {i} allocated {peak} B at peak (> {bound}):\n{}",
            show(&input)
        );
        if ok {
            accepted += 1;
            if corpus.len() < MAX_CORPUS {
                corpus.push(input);
            } else {
                let k = rng.below(MAX_CORPUS);
                corpus[k] = input;
            }
        }
    }
    std::panic::set_hook(quiet);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {target}: {execs} execs in {secs:.1} s ({:.0}/s), {accepted} accepted, slowest {:?}, peak heap {} KiB, 0 crashes (FUZZ_SEED={seed})",
        execs as f64 / secs.max(1e-9),
        slowest,
        max_peak / 1024
    );
}

// ---------------------------------------------------------------- webhook

fn webhook_cfg() -> WebhookConfig {
    WebhookConfig {
        master_down_alerts: vec!["PikaMasterDown".into(), "RedisDown".into()],
        role_mismatch_alerts: vec!["PikaRoleMismatch".into(), "RedisReplicaLinkDown".into()],
        ..WebhookConfig::default()
    }
}

/// The JSON rendering of a parsed payload, with every field the parser keeps.
fn render_payload(p: &alert::Payload) -> Value {
    json!({
        "version": p.version,
        "receiver": p.receiver,
        "status": p.status,
        "groupKey": p.group_key,
        "truncatedAlerts": p.truncated_alerts,
        "alerts": p.alerts.iter().map(|a| json!({
            "status": a.status,
            "labels": a.labels,
            "startsAt": a.starts_at,
            "fingerprint": a.fingerprint,
        })).collect::<Vec<_>>(),
    })
}

fn same_payload(a: &alert::Payload, b: &alert::Payload) -> bool {
    a.version == b.version
        && a.receiver == b.receiver
        && a.status == b.status
        && a.group_key == b.group_key
        && a.truncated_alerts == b.truncated_alerts
        && a.alerts.len() == b.alerts.len()
        && a.alerts.iter().zip(&b.alerts).all(|(x, y)| {
            x.status == y.status
                && x.labels == y.labels
                && x.starts_at == y.starts_at
                && x.fingerprint == y.fingerprint
        })
}

fn check_label_helpers(v: &str) {
    if let Some(addr) = alert::parse_instance(v) {
        let back = alert::parse_instance(&addr.to_string());
        assert_eq!(
            back.as_ref(),
            Some(&addr),
            "parse_instance(render) of {v:?}"
        );
        let direct: Result<Addr, _> = addr.to_string().parse();
        assert_eq!(
            direct.ok().as_ref(),
            Some(&addr),
            "Addr round trip of {v:?}"
        );
    }
    let r = alert::redact_label(v);
    assert_eq!(
        alert::redact_label(&r),
        r,
        "redact_label not idempotent on {v:?}"
    );
    if let Some((_, rest)) = r.split_once("://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        assert!(!rest[..end].contains('@'), "user-info left in {r:?}");
    }
}

fn check_webhook(body: &[u8]) -> bool {
    let first = alert::parse(body);
    let again = alert::parse(body);
    match (&first, &again) {
        (Ok(a), Ok(b)) => assert!(same_payload(a, b), "parse not deterministic"),
        (Err(a), Err(b)) => assert_eq!(a, b, "parse not deterministic"),
        _ => panic!("parse not deterministic"),
    }
    let Ok(p) = first else { return false };
    assert_eq!(p.version, "4");
    let rendered = serde_json::to_vec(&render_payload(&p)).expect("render");
    let back = alert::parse(&rendered).expect("parse(render(x)) failed");
    assert!(same_payload(&p, &back), "parse(render(x)) != x");
    let known: BTreeSet<String> = ["main".to_string(), "c1".to_string()].into();
    let c = alert::classify(&p, &webhook_cfg(), &known);
    let n_work: usize = c.work.values().map(|w| w.alerts.len()).sum();
    assert_eq!(
        n_work + c.not_acted.len(),
        p.alerts.len(),
        "every alert is either work or not acted on"
    );
    for k in c.work.keys() {
        assert!(known.contains(k), "work for an unknown cluster {k}");
    }
    for a in &p.alerts {
        for v in a.labels.values() {
            check_label_helpers(v);
        }
    }
    true
}

const WEBHOOK_DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"null",
    b"true",
    b"\\u0026",
    b"\\ud800",
    b"\\\"",
    br#""version":"4""#,
    br#""version":4"#,
    br#""alerts":[]"#,
    br#""status":"firing""#,
    br#""status":"resolved""#,
    br#""labels":{"alertname":"PikaMasterDown","cluster":"main","instance":"redis://:pw@127.0.0.1:7000/0"}"#,
    br#""alertname":"RedisDown""#,
    br#""cluster":"c1""#,
    br#""instance":"[::1]:6379""#,
    br#""instance":"h@x://a:b@c:1?@""#,
    br#""truncatedAlerts":18446744073709551615"#,
    br#"{"status":"firing","labels":{"alertname":"PikaRoleMismatch","cluster":"main"}}"#,
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"\xff\xfe",
    b"\xe2\x82\xac",
];

#[test]
fn fuzz_webhook() {
    run("webhook", WEBHOOK_DICT, check_webhook);
}

// ---------------------------------------------------------------- INFO

fn check_info(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        // INFO arrives as a RESP bulk string; the node layer decodes it lossily.
        let lossy = String::from_utf8_lossy(bytes);
        let _ = info::parse(&lossy);
        return false;
    };
    let first = info::parse(text);
    if bytes.len().is_multiple_of(2) {
        assert_eq!(first, info::parse(text), "parse not deterministic");
    }
    // CRLF and LF read the same; so do spaces around lines. These re-parses cost 3 more
    // executions' worth, so they run on a quarter of the inputs (chosen by length).
    if bytes.len().is_multiple_of(4) {
        let lf = text.replace("\r\n", "\n");
        assert_eq!(info::parse(&lf), first, "CRLF vs LF differ");
        let crlf = lf.replace('\n', "\r\n");
        assert_eq!(info::parse(&crlf), first, "LF vs CRLF differ");
        let padded: String = lf.split('\n').map(|l| format!("  {l} \n")).collect();
        assert_eq!(
            info::parse(&padded),
            first,
            "surrounding spaces change the result"
        );
    }
    let size = [1u64, 0, u64::MAX][bytes.len() % 3];
    let _ = info::parse_with_binlog_size(text, size);
    match first {
        Ok(st) => {
            if let Some(m) = &st.master {
                assert!(m.port != 0, "master port 0 accepted");
            }
            true
        }
        Err(_) => false,
    }
}

const INFO_DICT: &[&[u8]] = &[
    b"# Replication\r\n",
    b"# Replication(MASTER/SLAVE)\r\n",
    b"# Server\r\n",
    b"# Keyspace\r\n",
    b"role:master\r\n",
    b"role:slave\r\n",
    b"role:master&&slave\r\n",
    b"role:double_master\r\n",
    b"pika_version:4.0.1\r\n",
    b"redis_version:7.0.15\r\n",
    b"master_host:127.0.0.1\r\n",
    b"master_port:9221\r\n",
    b"master_port:0\r\n",
    b"master_link_status:up\r\n",
    b"master_link_status:down\r\nmaster_sync_in_progress:1\r\n",
    b"repl_connect_status:\r\n",
    b"db0:connected\r\n",
    b"db1:syncing_full\r\n",
    b"db0:binlog_offset=3 1234,safety_purge=none\r\n",
    b"db1 binlog_offset=18446744073709551615 18446744073709551615\r\n",
    b"binlog_offset:1 2\r\n",
    b"db_repl_state:(db0:kTryConnect)(db1:WaitDBSync)\r\n",
    b"db_repl_error_state:(db0:Error)\r\n",
    b"repl_state: wait dbsync\r\n",
    b"slave0:ip=127.0.0.1,port=9222,conn_fd=88,lag=(db0:0)(db1:full syncing)\r\n",
    b"slave1:ip=127.0.0.1,port=6380,state=online,offset=100,lag=0\r\n",
    b"slave18446744073709551616:ip=::1,port=70000\r\n",
    b"lag=(",
    b"connected_slaves:2\r\n",
    b"slave_repl_offset:99999999999999999999\r\n",
    b"master_repl_offset:12\r\n",
    b"ReplicationID:\r\n",
    b"master_replid:abc\r\n",
    b"is_eligible_for_master_election:true\r\n",
    b"slave_priority:100\r\n",
    b"\r\n",
    b"\n",
    b":",
    b"=",
    b"(",
    b")",
];

#[test]
fn fuzz_info() {
    run("info", INFO_DICT, check_info);
}

// ---------------------------------------------------------------- config

fn check_config(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let first = Config::parse(text, "fuzz.toml");
    let again = Config::parse(text, "fuzz.toml");
    assert_eq!(
        first.as_ref().err().map(|e| e.to_string()),
        again.as_ref().err().map(|e| e.to_string()),
        "parse not deterministic"
    );
    match first {
        Ok(c) => {
            let v1 = c.validate("fuzz.toml").map_err(|e| e.to_string());
            let v2 = c.validate("fuzz.toml").map_err(|e| e.to_string());
            assert_eq!(v1, v2, "validate not deterministic");
            true
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("fuzz.toml"),
                "error does not name the file: {msg}"
            );
            false
        }
    }
}

const CONFIG_DICT: &[&[u8]] = &[
    b"\n[[cluster]]\nname = \"c2\"\nnodes = [{ addr = \"127.0.0.1:7000\" }]\n",
    b"\n[policy]\n",
    b"\n[service]\n",
    b"\n[webhook]\n",
    b"\n[coordinator]\nkind = \"etcd\"\n",
    b"\n[coordinator.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n",
    b"lock_ttl = \"5m\"\n",
    b"lock_ttl = \"0s\"\n",
    b"lock_ttl = \"18446744073709551615s\"\n",
    b"max_lag_bytes = 18446744073709551615\n",
    b"max_lag_bytes = -1\n",
    b"password = { env = \"X\" }\n",
    b"password = { file = \"/nonexistent\" }\n",
    b"rename = { SLAVEOF = \"\" }\n",
    b"addr = \"[::1]:0\"",
    b"\"\"\"",
    b"'''",
    b"\\u0000",
    b"= ",
    b"[",
    b"]",
    b"{",
    b"}",
    b"#",
    b"\n",
    b"1979-05-27T07:32:00Z",
    b"inf",
    b"nan",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
];

#[test]
fn fuzz_config() {
    run("config", CONFIG_DICT, check_config);
}
