//! The JSON-lines events file: append, rotate at a size cap, never drop a line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::throttle::Throttle;

use super::{DEFAULT_FILE_KEEP, DEFAULT_FILE_MAX_BYTES, MIN_FILE_MAX_BYTES};

static FILE_ROTATE_FAILED: Throttle = Throttle::new();

/// The events file with its size and rotation settings.
pub(super) struct EventsFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

/// Size cap and number of files of the events file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileCap {
    pub max_bytes: u64,
    /// Files kept, the current one included (at least 2).
    pub keep: usize,
}

impl FileCap {
    /// The cap and rotation from `[service]`.
    pub fn of(service: &crate::config::ServiceConfig) -> FileCap {
        FileCap {
            max_bytes: service.events_file_max_bytes,
            keep: service.events_file_keep,
        }
    }
}

impl Default for FileCap {
    fn default() -> Self {
        FileCap {
            max_bytes: DEFAULT_FILE_MAX_BYTES,
            keep: DEFAULT_FILE_KEEP,
        }
    }
}

/// `events.jsonl.<n>`.
pub fn rotated_path(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl EventsFile {
    pub(super) fn open(path: &Path, cap: FileCap) -> std::io::Result<EventsFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(EventsFile {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes: cap.max_bytes.max(MIN_FILE_MAX_BYTES),
            keep: cap.keep.max(2),
        })
    }

    /// Shift `path` → `path.1` → … → `path.<keep-1>`; the old `path.<keep-1>` is removed.
    fn rotate(&mut self) -> std::io::Result<()> {
        let oldest = rotated_path(&self.path, self.keep - 1);
        match std::fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for i in (1..self.keep - 1).rev() {
            let from = rotated_path(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated_path(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated_path(&self.path, 1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Append one line, rotating first if it would pass the cap. Never drops the line.
    pub(super) fn append(&mut self, json: &str) -> std::io::Result<()> {
        let len = json.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            if let Err(e) = self.rotate() {
                if let Some(suppressed) = FILE_ROTATE_FAILED.check() {
                    tracing::warn!(path = %self.path.display(), error = %e, suppressed, "cannot rotate the events file; appending to it anyway");
                }
            }
        }
        let mut line = String::with_capacity(json.len() + 1);
        line.push_str(json);
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.size += len;
        Ok(())
    }
}
