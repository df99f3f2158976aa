//! `Local`: the default coordinator for a single instance on one host.
//!
//! - **Lock:** an in-process lock table (cluster → generation, holder, expiry) plus an OS
//!   advisory lock (`flock` via `File::try_lock`) on `<dir>/<cluster>.lock`, so a CLI
//!   `pika-remedy failover` and a running `serve` on the same host exclude each other. The
//!   holder JSON is written into the lock file so the loser can name the holder.
//! - **Fencing token:** a generation counter persisted in `<dir>/<cluster>.generation`,
//!   incremented on every acquisition (token `local:<generation>`).
//! - **TTL:** in-process. A background task extends the expiry while the `Lease` is alive
//!   (the contract's "renewed in the background"); `release` or dropping the `Lease` stops it
//!   and frees the lock. Across processes the OS lock lasts until release, drop or process
//!   exit (the kernel drops `flock` locks of a dead process), which is the failure that
//!   matters on one host.
//! - **No orphans:** `release` and dropping a `Lease` only remove the table entry, which closes
//!   the lock file (freeing the `flock`); neither touches the disk, so neither can fail and
//!   leave the lock behind. The generation file is a counter and stays by design (the next
//!   acquisition increments it). `tests/faults_lock.rs` checks both paths.
//! - **Record:** `<dir>/<cluster>.topology.json` holding `{version, record}`, replaced
//!   atomically (temp file in the same dir, fsync, rename, fsync dir). The compare-and-set is
//!   serialised across processes by a short `flock` on `<dir>/<cluster>.record.lock`.
//! - **Record for the poller** ([`Coordinator::poll_record`]): the last record read is kept
//!   with its file's identity (device, inode, size, modification and change times, from
//!   `fstat` of the file it was read from). A poll `stat`s the file and gets the kept record
//!   only if the identity is the same; anything else (another process replaced it: a rename
//!   gives a new inode and change time) is a full read. A record read while its file is
//!   younger than [`SETTLE`] is not kept, so two replacements within one tick of the file
//!   system's clock cannot look alike. Our own `write_record` drops the entry. `read_record`
//!   (the reconcile) never uses it.
//! - **Members** (scale-out): `<dir>/_members/<member>` holds the registration's expiry (unix
//!   milliseconds), rewritten atomically on every heartbeat; `members` lists the files whose
//!   expiry has not passed. So `serve` processes sharing one directory on one host share its
//!   clusters; a single process is the single member and owns them all.
//! - I/O problems name the path: `CoordError::Unreachable` for what may clear up (a full disk,
//!   an I/O error), `CoordError::Backend` for a permission error or a read-only mount (the
//!   real cause, not "unreachable") and for a record file we cannot parse.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    CasOutcome, CoordError, Coordinator, HeldLock, Holder, Lease, LeaseInner, LockOutcome,
};
use crate::controls::Controls;
use crate::model::{TopologyRecord, Versioned};

/// Sub-directory of the member registrations.
const MEMBERS_DIR: &str = "_members";

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long `write_record` waits for another process's record update (they take milliseconds).
const RECORD_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Local file-backed coordinator. `Clone` shares the lock table.
#[derive(Clone, Debug)]
pub struct Local {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    table: Mutex<HashMap<String, Entry>>,
    /// Makes temp file names unique within the process.
    tmp_seq: AtomicU64,
    /// The records the poller read, with their files' identity ([`Coordinator::poll_record`]).
    polled: Mutex<HashMap<String, Polled>>,
    /// Full reads of a record file by `poll_record` (for tests and diagnostics).
    poll_reads: AtomicU64,
}

/// A record file younger than this (modification or change time) is read in full at every
/// poll: identities taken within one tick of the file system's clock could be equal for two
/// different contents.
pub const SETTLE: Duration = Duration::from_secs(1);

/// What identifies one version of a record file: an atomic replace (temp file + rename)
/// always gives a new inode and change time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Both times at least [`SETTLE`] before `now` (unix seconds and nanoseconds).
    fn settled(&self, now: std::time::SystemTime) -> bool {
        let Ok(now) = now.duration_since(std::time::UNIX_EPOCH) else {
            return false;
        };
        let newest = self.mtime.max(self.ctime);
        let (Ok(secs), Ok(nanos)) = (u64::try_from(newest.0), u32::try_from(newest.1)) else {
            return false;
        };
        let at = Duration::new(secs, nanos.min(999_999_999));
        now.checked_sub(at).is_some_and(|age| age >= SETTLE)
    }
}

/// The poller's last read of one record: `None` stamp = the file did not exist.
#[derive(Clone, Debug)]
struct Polled {
    stamp: Option<Stamp>,
    record: Option<Versioned<TopologyRecord>>,
}

#[derive(Debug)]
struct Entry {
    generation: u64,
    holder: Holder,
    expires: Instant,
    since: Instant,
    /// Open lock file holding the OS lock; dropping it releases the lock.
    _file: File,
}

/// Stops the renewal and frees the lock if a `Lease` is dropped without `release`.
#[derive(Debug)]
pub(crate) struct LocalGuard {
    shared: Arc<Shared>,
    cluster: String,
    generation: u64,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        self.renew.abort();
        let mut table = lock_table(&self.shared);
        if table.get(&self.cluster).map(|e| e.generation) == Some(self.generation) {
            table.remove(&self.cluster);
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ControlsFile {
    version: u64,
    controls: Controls,
}

#[derive(Serialize, Deserialize)]
struct RecordFile {
    version: u64,
    record: TopologyRecord,
}

/// An I/O error naming the path. A permission problem or a read-only mount is `Backend` (a
/// retry will not fix it, and it is not "unreachable"); anything else (a full disk, an I/O
/// error) may clear up and is `Unreachable`.
fn io_err(path: &Path, what: &str, e: std::io::Error) -> CoordError {
    use std::io::ErrorKind as K;
    let text = format!("local store: {what} {}: {e}", path.display());
    match e.kind() {
        K::PermissionDenied | K::ReadOnlyFilesystem => CoordError::Backend(text),
        _ => CoordError::Unreachable(text),
    }
}

fn lock_table(shared: &Shared) -> MutexGuard<'_, HashMap<String, Entry>> {
    // A panic while holding the table cannot leave it half-updated (single inserts/removes).
    shared.table.lock().unwrap_or_else(|p| p.into_inner())
}

/// Cluster names become file names: refuse anything that could escape the directory.
fn check_name(cluster: &str) -> Result<(), CoordError> {
    let ok = !cluster.is_empty()
        && !cluster.starts_with('.')
        && cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(CoordError::Backend(format!(
            "local store: cluster name {cluster:?} is not usable as a file name"
        )))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoordError> + Send + 'static,
) -> Result<T, CoordError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoordError::Backend(format!("local store: worker failed: {e}")))?
}

impl Local {
    /// Use `dir` (created if missing) for lock, generation and record files.
    pub fn new(dir: &Path) -> Result<Local, CoordError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "cannot create directory", e))?;
        Ok(Local {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                table: Mutex::new(HashMap::new()),
                tmp_seq: AtomicU64::new(0),
                polled: Mutex::new(HashMap::new()),
                poll_reads: AtomicU64::new(0),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// How many times [`Coordinator::poll_record`] read a record file in full (not from
    /// its kept copy).
    pub fn poll_reads(&self) -> u64 {
        self.shared.poll_reads.load(Ordering::Relaxed)
    }

    fn polled(&self) -> MutexGuard<'_, HashMap<String, Polled>> {
        self.shared.polled.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, cluster: &str, suffix: &str) -> PathBuf {
        self.shared.dir.join(format!("{cluster}.{suffix}"))
    }
}

/// Hold a short `flock` on `lock_path` (bounded wait) while `f` runs.
fn with_file_lock<T>(
    lock_path: &Path,
    f: impl FnOnce() -> Result<T, CoordError>,
) -> Result<T, CoordError> {
    let lock_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
        .map_err(|e| io_err(lock_path, "cannot open", e))?;
    let start = Instant::now();
    loop {
        match lock_file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < RECORD_LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CoordError::Unreachable(format!(
                    "local store: {} stayed locked for {RECORD_LOCK_WAIT:?}",
                    lock_path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err(lock_path, "cannot lock", e))
            }
        }
    }
    let out = f();
    drop(lock_file);
    out
}

impl Shared {
    fn read_controls(&self, path: &Path) -> Result<Option<ControlsFile>, CoordError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(path, "cannot read", e)),
        };
        serde_json::from_slice(&text).map(Some).map_err(|e| {
            CoordError::Backend(format!(
                "local store: {} is not a valid controls file ({e}); fix or remove it",
                path.display()
            ))
        })
    }

    /// Write `bytes` to `path` atomically: a temp file in the same dir, fsync, rename, fsync dir.
    /// The temp file is removed on any failure.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), CoordError> {
        self.write_atomic_in(&self.dir, path, bytes)
    }

    /// [`Shared::write_atomic`] for a file in `dir` (a sub-directory of the store).
    fn write_atomic_in(&self, dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), CoordError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp-{}-{seq}", std::process::id()));
        let res = (|| {
            let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, "cannot create", e))?;
            f.write_all(bytes)
                .map_err(|e| io_err(&tmp, "cannot write", e))?;
            f.sync_all().map_err(|e| io_err(&tmp, "cannot fsync", e))?;
            std::fs::rename(&tmp, path).map_err(|e| io_err(path, "cannot rename into", e))?;
            // The rename is durable only once the directory entry is.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err(dir, "cannot fsync directory", e))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    fn read_record(&self, path: &Path) -> Result<Option<RecordFile>, CoordError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(path, "cannot read", e)),
        };
        parse_record(path, &text).map(Some)
    }

    /// [`Shared::read_record`] and the identity of the file the bytes came from (`fstat` of
    /// the open file, so the two always belong together).
    fn read_record_stamped(
        &self,
        path: &Path,
    ) -> Result<(Option<Stamp>, Option<RecordFile>), CoordError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, None)),
            Err(e) => return Err(io_err(path, "cannot read", e)),
        };
        let stamp = file
            .metadata()
            .map_err(|e| io_err(path, "cannot read", e))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)
            .map_err(|e| io_err(path, "cannot read", e))?;
        Ok((Some(Stamp::of(&stamp)), Some(parse_record(path, &text)?)))
    }
}

fn parse_record(path: &Path, text: &[u8]) -> Result<RecordFile, CoordError> {
    serde_json::from_slice(text).map_err(|e| {
        CoordError::Backend(format!(
            "local store: {} is not a valid topology record ({e}); fix or remove it",
            path.display()
        ))
    })
}

fn renew_loop(
    shared: Arc<Shared>,
    cluster: String,
    generation: u64,
    ttl: Duration,
) -> tokio::task::JoinHandle<()> {
    let every = (ttl / 3).max(Duration::from_millis(10));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let mut table = lock_table(&shared);
            match table.get_mut(&cluster) {
                Some(e) if e.generation == generation && e.expires > Instant::now() => {
                    e.expires = Instant::now() + ttl;
                }
                // Expired, released or taken over: never resurrect a lost lease.
                _ => return,
            }
        }
    })
}

impl Coordinator for Local {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn try_lock(
        &self,
        cluster: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<LockOutcome, CoordError> {
        check_name(cluster)?;
        let me = self.clone();
        let cluster_s = cluster.to_string();
        let holder = holder.clone();
        let got = blocking(move || {
            let shared = &me.shared;
            let mut table = lock_table(shared);
            if let Some(e) = table.get(&cluster_s) {
                if e.expires > Instant::now() {
                    return Ok(Err(Some(e.holder.clone())));
                }
                // Expired: dropping the entry closes the file and frees the OS lock.
                table.remove(&cluster_s);
            }
            let lock_path = me.path(&cluster_s, "lock");
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
                .map_err(|e| io_err(&lock_path, "cannot open", e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    // Another process holds it; it wrote its holder JSON into the file.
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Ok(Err(serde_json::from_str::<Holder>(&text).ok()));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(io_err(&lock_path, "cannot lock", e))
                }
            }
            let gen_path = me.path(&cluster_s, "generation");
            let previous = match std::fs::read_to_string(&gen_path) {
                Ok(t) => t.trim().parse::<u64>().map_err(|_| {
                    CoordError::Backend(format!(
                        "local store: {} does not hold a number; fix or remove it",
                        gen_path.display()
                    ))
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(io_err(&gen_path, "cannot read", e)),
            };
            let generation = previous + 1;
            shared.write_atomic(&gen_path, format!("{generation}\n").as_bytes())?;
            let json = serde_json::to_vec(&holder).map_err(|e| {
                CoordError::Backend(format!("local store: cannot encode holder: {e}"))
            })?;
            file.set_len(0)
                .and_then(|_| file.seek(SeekFrom::Start(0)))
                .and_then(|_| file.write_all(&json))
                .map_err(|e| io_err(&lock_path, "cannot write holder to", e))?;
            table.insert(
                cluster_s.clone(),
                Entry {
                    generation,
                    holder: holder.clone(),
                    expires: Instant::now() + ttl,
                    since: Instant::now(),
                    _file: file,
                },
            );
            Ok(Ok((generation, holder)))
        })
        .await?;
        match got {
            Err(who) => Ok(LockOutcome::HeldBy(who)),
            Ok((generation, holder)) => {
                let renew = renew_loop(self.shared.clone(), cluster.to_string(), generation, ttl);
                Ok(LockOutcome::Acquired(Lease {
                    cluster: cluster.to_string(),
                    token: format!("local:{generation}"),
                    holder,
                    inner: LeaseInner::Local {
                        generation,
                        guard: LocalGuard {
                            shared: self.shared.clone(),
                            cluster: cluster.to_string(),
                            generation,
                            renew,
                        },
                    },
                }))
            }
        }
    }

    async fn still_held(&self, lease: &Lease) -> Result<bool, CoordError> {
        let LeaseInner::Local { generation, .. } = &lease.inner else {
            return Err(CoordError::Backend(
                "lease was not issued by the local coordinator".into(),
            ));
        };
        let in_table = {
            let table = lock_table(&self.shared);
            matches!(table.get(&lease.cluster), Some(e) if e.generation == *generation && e.expires > Instant::now())
        };
        if !in_table {
            return Ok(false);
        }
        // Answer from the store too: the persisted generation must still be ours.
        let gen_path = self.path(&lease.cluster, "generation");
        let text = tokio::fs::read_to_string(&gen_path)
            .await
            .map_err(|e| io_err(&gen_path, "cannot read", e))?;
        Ok(text.trim().parse::<u64>().ok() == Some(*generation))
    }

    async fn release(&self, lease: Lease) -> Result<(), CoordError> {
        if let LeaseInner::Local { generation, guard } = &lease.inner {
            guard.renew.abort();
            let mut table = lock_table(&self.shared);
            if table.get(&lease.cluster).map(|e| e.generation) == Some(*generation) {
                // Dropping the entry closes the lock file, which frees the OS lock.
                table.remove(&lease.cluster);
            }
        }
        Ok(())
    }

    async fn read_record(
        &self,
        cluster: &str,
    ) -> Result<Option<Versioned<TopologyRecord>>, CoordError> {
        check_name(cluster)?;
        let me = self.clone();
        let path = self.path(cluster, "topology.json");
        blocking(move || {
            Ok(me.shared.read_record(&path)?.map(|r| Versioned {
                value: r.record,
                version: r.version,
            }))
        })
        .await
    }

    async fn poll_record(
        &self,
        cluster: &str,
    ) -> Result<Option<Versioned<TopologyRecord>>, CoordError> {
        check_name(cluster)?;
        let path = self.path(cluster, "topology.json");
        // One `stat` (no blocking thread): a local file's metadata, answered from the
        // kernel's inode cache. Anything but an equal identity is a full read below.
        let now = match std::fs::metadata(&path) {
            Ok(m) => Some(Some(Stamp::of(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(None),
            Err(_) => None,
        };
        if let Some(now) = now {
            if let Some(p) = self.polled().get(cluster) {
                if p.stamp == now {
                    return Ok(p.record.clone());
                }
            }
        }
        self.shared.poll_reads.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        let name = cluster.to_string();
        blocking(move || {
            let (stamp, file) = me.shared.read_record_stamped(&path)?;
            let record = file.map(|r| Versioned {
                value: r.record,
                version: r.version,
            });
            // Absence is exact; a file is kept only once it has settled (see [`SETTLE`]).
            let keep = stamp.is_none_or(|s| s.settled(std::time::SystemTime::now()));
            let mut polled = me.polled();
            if keep {
                let p = Polled {
                    stamp,
                    record: record.clone(),
                };
                polled.insert(name, p);
            } else {
                polled.remove(&name);
            }
            Ok(record)
        })
        .await
    }

    async fn write_record(
        &self,
        cluster: &str,
        record: &TopologyRecord,
        expected: Option<u64>,
    ) -> Result<CasOutcome, CoordError> {
        check_name(cluster)?;
        // Our own write: the poller reads the file again (its identity changes anyway).
        self.polled().remove(cluster);
        let me = self.clone();
        let path = self.path(cluster, "topology.json");
        let lock_path = self.path(cluster, "record.lock");
        let record = record.clone();
        blocking(move || {
            let lock_file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
                .map_err(|e| io_err(&lock_path, "cannot open", e))?;
            // Bounded wait: another process's read-compare-rename takes milliseconds.
            let start = Instant::now();
            loop {
                match lock_file.try_lock() {
                    Ok(()) => break,
                    Err(std::fs::TryLockError::WouldBlock)
                        if start.elapsed() < RECORD_LOCK_WAIT =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(CoordError::Unreachable(format!(
                            "local store: {} stayed locked for {RECORD_LOCK_WAIT:?}",
                            lock_path.display()
                        )))
                    }
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(io_err(&lock_path, "cannot lock", e))
                    }
                }
            }
            let current = me.shared.read_record(&path)?.map(|r| r.version);
            if current != expected {
                return Ok(CasOutcome::Conflict);
            }
            let version = current.unwrap_or(0) + 1;
            let bytes =
                serde_json::to_vec_pretty(&RecordFile { version, record }).map_err(|e| {
                    CoordError::Backend(format!("local store: cannot encode record: {e}"))
                })?;
            me.shared.write_atomic(&path, &bytes)?;
            drop(lock_file);
            Ok(CasOutcome::Written(version))
        })
        .await
    }

    async fn lock_holder(&self, cluster: &str) -> Result<Option<Holder>, CoordError> {
        check_name(cluster)?;
        let now = Instant::now();
        if let Some(e) = lock_table(&self.shared).get(cluster) {
            if e.expires > now {
                return Ok(Some(e.holder.clone()));
            }
        }
        let path = self.path(cluster, "lock");
        blocking(move || {
            let mut file = match OpenOptions::new().read(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err(&path, "cannot open", e)),
            };
            match file.try_lock_shared() {
                // Nobody holds the exclusive lock (our shared one ends when `file` closes).
                Ok(()) => Ok(None),
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    Ok(Some(
                        serde_json::from_str::<Holder>(&text).unwrap_or_else(|_| Holder::unknown()),
                    ))
                }
                Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path, "cannot lock", e)),
            }
        })
        .await
    }

    async fn read_controls(&self) -> Result<Option<Versioned<Controls>>, CoordError> {
        let me = self.clone();
        // A leading dot: no cluster name (which cannot start with one) maps to these files.
        let path = self.shared.dir.join(".controls.json");
        blocking(move || {
            Ok(me.shared.read_controls(&path)?.map(|c| Versioned {
                value: c.controls,
                version: c.version,
            }))
        })
        .await
    }

    async fn write_controls(
        &self,
        controls: &Controls,
        expected: Option<u64>,
    ) -> Result<CasOutcome, CoordError> {
        let me = self.clone();
        let path = self.shared.dir.join(".controls.json");
        let lock_path = self.shared.dir.join(".controls.lock");
        let controls = controls.clone();
        blocking(move || {
            with_file_lock(&lock_path, || {
                let current = me.shared.read_controls(&path)?.map(|c| c.version);
                if current != expected {
                    return Ok(CasOutcome::Conflict);
                }
                let version = current.unwrap_or(0) + 1;
                let bytes = serde_json::to_vec_pretty(&ControlsFile { version, controls })
                    .map_err(|e| {
                        CoordError::Backend(format!("local store: cannot encode controls: {e}"))
                    })?;
                me.shared.write_atomic(&path, &bytes)?;
                Ok(CasOutcome::Written(version))
            })
        })
        .await
    }

    fn held_locks(&self) -> Vec<HeldLock> {
        // Release cannot fail here (it only drops the table entry, which closes the lock file
        // and so frees the flock), so there are no orphans: the table is the whole truth.
        let now = Instant::now();
        let mut v: Vec<HeldLock> = lock_table(&self.shared)
            .iter()
            .filter(|(_, e)| e.expires > now)
            .map(|(c, e)| HeldLock {
                cluster: c.clone(),
                held_for: e.since.elapsed(),
                release_pending: false,
            })
            .collect();
        v.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        v
    }

    async fn heartbeat_member(
        &self,
        member: &str,
        ttl: Duration,
        _token: Option<&str>,
    ) -> Result<String, CoordError> {
        super::check_member_id(member)?;
        let me = self.clone();
        let member = member.to_string();
        blocking(move || {
            let dir = me.shared.dir.join(MEMBERS_DIR);
            std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "cannot create", e))?;
            let expires = unix_millis().saturating_add(ttl.as_millis() as u64);
            let path = dir.join(&member);
            me.shared
                .write_atomic_in(&dir, &path, expires.to_string().as_bytes())?;
            Ok(format!("local:{member}"))
        })
        .await
    }

    async fn leave_members(&self, member: &str, _token: &str) -> Result<(), CoordError> {
        super::check_member_id(member)?;
        let path = self.shared.dir.join(MEMBERS_DIR).join(member);
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, "cannot remove", e)),
        })
        .await
    }

    async fn members(&self) -> Result<Vec<String>, CoordError> {
        let dir = self.shared.dir.join(MEMBERS_DIR);
        blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_err(&dir, "cannot list", e)),
            };
            let now = unix_millis();
            let mut out = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| io_err(&dir, "cannot list", e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with('.') {
                    continue; // a temp file of a heartbeat in progress
                }
                // A file that vanished or is half-written counts as not live.
                let live = std::fs::read_to_string(entry.path())
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .is_some_and(|exp| exp > now);
                if live {
                    out.push(name);
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn ping(&self) -> Result<(), CoordError> {
        let me = self.clone();
        blocking(move || {
            let probe = me.shared.dir.join(format!(".ping-{}", std::process::id()));
            let res = File::create(&probe)
                .and_then(|mut f| f.write_all(b"ok"))
                .map_err(|e| io_err(&me.shared.dir, "directory is not writable:", e));
            let _ = std::fs::remove_file(&probe);
            res
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_are_not_unreachable() {
        let p = Path::new("/var/lib/pika-remedy/c.lock");
        for kind in [
            std::io::ErrorKind::PermissionDenied,
            std::io::ErrorKind::ReadOnlyFilesystem,
        ] {
            let e = io_err(p, "cannot open", std::io::Error::from(kind));
            assert!(matches!(e, CoordError::Backend(_)), "{kind:?}: {e:?}");
            assert!(!e.is_retryable());
            let text = e.to_string();
            assert!(!text.contains("unreachable"), "{text}");
            assert!(text.contains("/var/lib/pika-remedy/c.lock"), "{text}");
        }
        let e = io_err(
            p,
            "cannot write",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert!(e.is_retryable(), "{e:?}");
        assert_eq!(e.to_string().matches("unreachable").count(), 1, "{e}");
    }
}

#[cfg(test)]
mod poll_tests {
    use super::*;
    use crate::model::Addr;

    fn rec(master: &str, epoch: u64, reason: &str) -> TopologyRecord {
        TopologyRecord {
            master: master.parse::<Addr>().expect("addr"),
            replicas: Vec::new(),
            epoch,
            updated_at: 0,
            last_failover_at: None,
            reason: reason.into(),
            pending: None,
        }
    }

    async fn polled(c: &Local) -> Option<TopologyRecord> {
        c.poll_record("c")
            .await
            .expect("poll_record")
            .map(|v| v.value)
    }

    /// Wait until the record file is older than [`SETTLE`] (so the poller may keep it).
    async fn settle() {
        tokio::time::sleep(SETTLE + Duration::from_millis(200)).await;
    }

    #[tokio::test]
    async fn the_poller_gets_a_settled_record_without_reading_it_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Local::new(dir.path()).expect("local");
        // No record: absence is kept at once (one full read, then none).
        assert_eq!(polled(&c).await, None);
        assert_eq!(polled(&c).await, None);
        assert_eq!(c.poll_reads(), 1);
        let w = c
            .write_record("c", &rec("m:1", 1, "first"), None)
            .await
            .expect("write");
        assert!(matches!(w, CasOutcome::Written(1)), "{w:?}");
        // A fresh file is read in full at every poll until it has settled.
        assert_eq!(polled(&c).await, Some(rec("m:1", 1, "first")));
        assert_eq!(polled(&c).await, Some(rec("m:1", 1, "first")));
        assert_eq!(c.poll_reads(), 3);
        settle().await;
        for _ in 0..5 {
            assert_eq!(polled(&c).await, Some(rec("m:1", 1, "first")));
        }
        assert_eq!(
            c.poll_reads(),
            4,
            "one full read once settled, then the kept copy"
        );
    }

    /// Another process (another `Local` on the same directory) replaces the record the
    /// poller keeps, with one of the same size: the very next poll sees the new one.
    #[tokio::test]
    async fn a_kept_record_replaced_by_another_process_is_seen_at_the_next_poll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = Local::new(dir.path()).expect("local");
        let theirs = Local::new(dir.path()).expect("local");
        theirs
            .write_record("c", &rec("m:1", 1, "aaaa"), None)
            .await
            .expect("write");
        settle().await;
        assert_eq!(polled(&ours).await, Some(rec("m:1", 1, "aaaa")));
        assert_eq!(polled(&ours).await, Some(rec("m:1", 1, "aaaa")));
        let reads = ours.poll_reads();
        // Same length, same epoch: only the content differs.
        theirs
            .write_record("c", &rec("m:1", 1, "bbbb"), Some(1))
            .await
            .expect("write");
        assert_eq!(polled(&ours).await, Some(rec("m:1", 1, "bbbb")));
        assert_eq!(ours.poll_reads(), reads + 1);
        // Settled again and replaced again (a failover elsewhere).
        settle().await;
        assert_eq!(polled(&ours).await, Some(rec("m:1", 1, "bbbb")));
        theirs
            .write_record("c", &rec("r:1", 2, "bbbb"), Some(2))
            .await
            .expect("write");
        assert_eq!(polled(&ours).await, Some(rec("r:1", 2, "bbbb")));
        // Removed by hand: gone at the next poll.
        settle().await;
        assert!(polled(&ours).await.is_some());
        std::fs::remove_file(dir.path().join("c.topology.json")).expect("rm");
        assert_eq!(polled(&ours).await, None);
        // And what read_record says always agrees.
        assert_eq!(ours.read_record("c").await.expect("read"), None);
    }

    #[test]
    fn a_young_file_is_not_settled() {
        let now = std::time::SystemTime::now();
        let secs = |t: std::time::SystemTime| {
            let d = t
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after the epoch");
            (d.as_secs() as i64, i64::from(d.subsec_nanos()))
        };
        let at = |t| Stamp {
            dev: 1,
            ino: 1,
            size: 1,
            mtime: secs(t),
            ctime: secs(t),
        };
        assert!(!at(now).settled(now));
        assert!(at(now - Duration::from_secs(2)).settled(now));
        // A change time newer than the modification time (a rename) counts.
        let mut s = at(now - Duration::from_secs(2));
        s.ctime = secs(now);
        assert!(!s.settled(now));
        // A file from the future (clock stepped back): not settled.
        assert!(!at(now + Duration::from_secs(5)).settled(now));
    }
}
