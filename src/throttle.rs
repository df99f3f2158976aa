//! Rate-limited log lines: a message that can repeat at request rate (a rejected webhook, a
//! busy event sink, a failing disk) is written at most once per [`EVERY`], with the number of
//! occurrences left out since the previous line, so a flood cannot fill the disk with logs.
//!
//! ```
//! use pika_remedy::throttle::Throttle;
//! static BUSY: Throttle = Throttle::new();
//! if let Some(suppressed) = BUSY.check() {
//!     tracing::warn!(suppressed, "sink busy");
//! }
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line per this interval for each throttled message.
pub const EVERY: Duration = Duration::from_secs(10);

/// State of one throttled message.
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)`: write the line now; `n` occurrences were left out since the last one.
    /// `None`: counted, stay quiet.
    pub fn check(&self) -> Option<u64> {
        self.check_every(EVERY)
    }

    pub fn check_every(&self, every: Duration) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match s.last {
            Some(t) if now.duration_since(t) < every => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_a_count() {
        let t = Throttle::new();
        assert_eq!(t.check_every(Duration::from_secs(3600)), Some(0));
        for _ in 0..99 {
            assert_eq!(t.check_every(Duration::from_secs(3600)), None);
        }
        // A zero interval lets the next one through, reporting what was left out.
        assert_eq!(t.check_every(Duration::ZERO), Some(99));
        assert_eq!(t.check_every(Duration::ZERO), Some(0));
    }
}
