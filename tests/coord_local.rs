//! The `local` coordinator: the shared contract, the cross-process lock file, and the
//! atomic record file.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pika_remedy::coord::local::Local;
use pika_remedy::coord::{CasOutcome, CoordError, Coordinator, LockOutcome};
use support::contract;

const TTL: Duration = Duration::from_secs(30);
const CHILD_ENV: &str = "PIKA_REMEDY_LOCK_CHILD_DIR";

#[tokio::test]
async fn contract_two_clones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Local::new(dir.path()).expect("local");
    let b = a.clone();
    contract::run_all(&a, &b, "clones", TTL).await;
}

/// Two independent `Local`s over one directory (separate lock tables): only the OS lock file
/// and the files on disk keep them consistent, as for two processes.
#[tokio::test]
async fn contract_two_independent_handles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Local::new(dir.path()).expect("local a");
    let b = Local::new(dir.path()).expect("local b");
    contract::run_all(&a, &b, "indep", TTL).await;
}

/// Not a test on its own: the child half of `cross_process_lock`, run as a separate process.
#[tokio::test]
#[ignore = "helper: run by cross_process_lock in a child process"]
async fn child_holds_lock() {
    let dir = std::env::var(CHILD_ENV).expect("run by cross_process_lock only");
    let c = Local::new(Path::new(&dir)).expect("local");
    let lease = match c
        .try_lock("xp", &contract::holder("child"), TTL)
        .await
        .expect("try_lock")
    {
        LockOutcome::Acquired(l) => l,
        other => panic!("child could not lock: {other:?}"),
    };
    println!("\nLOCKED {}", lease.token);
    std::io::stdout().flush().expect("flush");
    // Hold the lock until the parent closes our stdin (bounded by the reader's own EOF/30 s).
    let done = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    });
    let _ = tokio::time::timeout(Duration::from_secs(30), done).await;
    c.release(lease).await.expect("release");
}

/// A `serve` and a CLI on the same host are two processes: the OS lock file must exclude
/// them, name the holder, and be freed when the holder exits.
#[tokio::test]
async fn cross_process_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_holds_lock",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process");
    let child_pid = child.id();
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The harness prints "test child_holds_lock ... " before our output.
            if let Some((_, tok)) = line.split_once("LOCKED ") {
                let _ = tx.send(tok.trim().to_string());
            }
        }
    });
    let child_token = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("child reported LOCKED within 60 s");

    let me = Local::new(dir.path()).expect("local");
    match me
        .try_lock("xp", &contract::holder("parent"), TTL)
        .await
        .expect("try_lock")
    {
        LockOutcome::HeldBy(Some(h)) => {
            assert_eq!(h.instance, "child");
            assert_eq!(h.pid, child_pid, "holder must name the other process");
        }
        other => panic!("lock held by another process must be HeldBy(child), got {other:?}"),
    }
    // An unrelated program sees the same OS lock (util-linux flock(1), same flock(2) lock).
    let lock_file = dir.path().join("xp.lock");
    let status = Command::new("flock")
        .args(["-n", "-E", "75"])
        .arg(&lock_file)
        .arg("true")
        .status()
        .expect("flock(1) runs (Debian package util-linux)");
    assert_eq!(
        status.code(),
        Some(75),
        "flock(1) must find the lock file locked"
    );

    // The child releases and exits when its stdin closes.
    drop(child.stdin.take());
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait child").is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "child did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let lease = contract::lock_within(
        &me,
        "xp",
        &contract::holder("parent"),
        TTL,
        Duration::from_secs(5),
    )
    .await;
    assert_ne!(
        lease.token, child_token,
        "fencing token must change across processes"
    );
    me.release(lease).await.expect("release");
}

/// A process that dies holding the lock frees it (the kernel drops flock locks).
#[tokio::test]
async fn lock_of_a_killed_process_is_freed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_holds_lock",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process");
    let stdout = child.stdout.take().expect("child stdout");
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    let start = Instant::now();
    while !line.contains("LOCKED ") {
        line.clear();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child never locked"
        );
        if reader.read_line(&mut line).expect("read child") == 0 {
            panic!("child exited before locking");
        }
    }
    let me = Local::new(dir.path()).expect("local");
    assert!(matches!(
        me.try_lock("xp", &contract::holder("parent"), TTL)
            .await
            .expect("try_lock"),
        LockOutcome::HeldBy(Some(_))
    ));
    child.kill().expect("kill child");
    child.wait().expect("reap child");
    let lease = contract::lock_within(
        &me,
        "xp",
        &contract::holder("parent"),
        TTL,
        Duration::from_secs(5),
    )
    .await;
    me.release(lease).await.expect("release");
}

#[tokio::test]
async fn dropped_lease_frees_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Local::new(dir.path()).expect("local");
    let b = Local::new(dir.path()).expect("local");
    let la =
        contract::lock_within(&a, "d", &contract::holder("a"), TTL, Duration::from_secs(1)).await;
    assert!(matches!(
        b.try_lock("d", &contract::holder("b"), TTL)
            .await
            .expect("try"),
        LockOutcome::HeldBy(Some(_))
    ));
    drop(la);
    let lb =
        contract::lock_within(&b, "d", &contract::holder("b"), TTL, Duration::from_secs(1)).await;
    b.release(lb).await.expect("release");
}

/// The generation (fencing token) survives a restart: a new `Local` continues the count.
#[tokio::test]
async fn generation_is_persisted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Local::new(dir.path()).expect("local");
    let l1 =
        contract::lock_within(&a, "g", &contract::holder("a"), TTL, Duration::from_secs(1)).await;
    let t1 = l1.token.clone();
    a.release(l1).await.expect("release");
    drop(a);
    let a2 = Local::new(dir.path()).expect("local again");
    let l2 = contract::lock_within(
        &a2,
        "g",
        &contract::holder("a"),
        TTL,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(t1, "local:1");
    assert_eq!(l2.token, "local:2");
    a2.release(l2).await.expect("release");
}

/// Lease renewal: a lease held for several TTLs stays held.
#[tokio::test]
async fn lease_is_renewed_past_its_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Local::new(dir.path()).expect("local");
    let ttl = Duration::from_millis(300);
    let l =
        contract::lock_within(&a, "r", &contract::holder("a"), ttl, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        a.still_held(&l).await.expect("still_held"),
        "renewed lease must survive 4×TTL"
    );
    a.release(l).await.expect("release");
}

/// Writes go through a temp file and a rename: none is left behind, and the file on disk is
/// always a complete `{version, record}`.
#[tokio::test]
async fn record_writes_leave_no_temp_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Local::new(dir.path()).expect("local");
    let mut version = None;
    for epoch in 1..=20 {
        match a
            .write_record("main", &contract::record("127.0.0.1:1", epoch), version)
            .await
            .expect("write")
        {
            CasOutcome::Written(v) => version = Some(v),
            CasOutcome::Conflict => panic!("unexpected conflict"),
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["main.record.lock", "main.topology.json"],
        "no temp files left"
    );
    let text = std::fs::read_to_string(dir.path().join("main.topology.json")).expect("read");
    let v: serde_json::Value = serde_json::from_str(&text).expect("complete JSON");
    assert_eq!(v["version"], 20);
    assert_eq!(v["record"]["epoch"], 20);
}

#[tokio::test]
async fn corrupt_record_is_a_clear_backend_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Local::new(dir.path()).expect("local");
    let path = dir.path().join("main.topology.json");
    std::fs::write(&path, b"{\"version\": 3, \"rec").expect("write garbage");
    let e = a
        .read_record("main")
        .await
        .expect_err("corrupt file must be an error");
    assert!(matches!(e, CoordError::Backend(_)), "{e:?}");
    assert!(!e.is_retryable());
    assert!(
        e.to_string().contains(&path.display().to_string()),
        "error names the file: {e}"
    );
    let e = a
        .write_record("main", &contract::record("127.0.0.1:1", 1), Some(3))
        .await
        .expect_err("no write over a corrupt file");
    assert!(matches!(e, CoordError::Backend(_)), "{e:?}");
}

#[tokio::test]
async fn missing_directory_is_unreachable_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("store");
    let a = Local::new(&sub).expect("local");
    a.ping().await.expect("ping");
    std::fs::remove_dir_all(&sub).expect("remove");
    let e = a
        .ping()
        .await
        .expect_err("ping must fail without the directory");
    assert!(e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains(&sub.display().to_string()), "{e}");
    let e = a
        .try_lock("main", &contract::holder("a"), TTL)
        .await
        .expect_err("lock must fail without the directory");
    assert!(matches!(e, CoordError::Unreachable(_)), "{e:?}");

    // A regular file where the directory should be.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").expect("write");
    let e = Local::new(&file).expect_err("a file is not a store directory");
    assert!(
        e.is_retryable() && e.to_string().contains("plain-file"),
        "{e}"
    );
}

#[tokio::test]
async fn cluster_names_cannot_escape_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Local::new(dir.path()).expect("local");
    for bad in ["../x", "a/b", "", ".hidden"] {
        let e = a.read_record(bad).await.expect_err("bad name");
        assert!(matches!(e, CoordError::Backend(_)), "{bad:?}: {e:?}");
    }
}

/// Membership expiry (scale-out): two `serve` processes sharing one directory.
#[tokio::test]
async fn member_expiry_two_handles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Local::new(dir.path()).expect("local a");
    let b = Local::new(dir.path()).expect("local b");
    contract::member_expiry(
        &a,
        &b,
        "local",
        Duration::from_secs(1),
        Duration::from_secs(5),
    )
    .await;
}
