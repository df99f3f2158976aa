//! Live progress of `failover`, `switchover` and `demote` on stderr (not with `--json`): each
//! step as it starts and as it ends (result, milliseconds, detail), and, during a long bounded
//! wait, what it waits for every few seconds. Fed by the reconcile's one progress hook
//! ([`crate::reconcile::PROGRESS`]), the same the supervisor uses for `webhook.reply_within`.
//!
//! ```text
//! step 1 start: pause writes on 127.0.0.1:6379 for 2000 ms (CLIENT PAUSE … WRITE)
//! step 1 ok (1 ms): writes paused for 2000 ms
//!   waiting for 127.0.0.1:6380 link up to 127.0.0.1:6379 (4 s of 20 s)
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::decide::{Plan, Step};
use crate::reconcile::{Progress, StepReport};

/// The first "waiting" line comes after this long, then one every [`WAIT_EVERY`].
pub const WAIT_FIRST: Duration = Duration::from_secs(1);
pub const WAIT_EVERY: Duration = Duration::from_secs(3);

#[derive(Default)]
struct State {
    step: usize,
    /// When the last "waiting" line was printed (per step).
    waited_note: Option<Instant>,
}

/// Writes progress lines to a sink (stderr in the binary).
pub struct Printer<W: Fn(&str) + Send + Sync> {
    state: Mutex<State>,
    write: W,
}

impl<W: Fn(&str) + Send + Sync> Printer<W> {
    pub fn new(write: W) -> Printer<W> {
        Printer {
            state: Mutex::new(State::default()),
            write,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Progress on the process's stderr.
pub fn stderr() -> Printer<impl Fn(&str) + Send + Sync> {
    Printer::new(|line: &str| eprintln!("{line}"))
}

impl<W: Fn(&str) + Send + Sync> Progress for Printer<W> {
    fn plan_started(&self, plan: &Plan) {
        (self.write)(&format!("plan {}: {}", plan.action.label(), plan.reason));
    }

    fn step_started(&self, step: &Step) {
        let n = {
            let mut s = self.state();
            s.step += 1;
            s.waited_note = None;
            s.step
        };
        (self.write)(&format!("step {n} start: {step}"));
    }

    fn step_done(&self, r: &StepReport) {
        let n = self.state().step;
        let result = if r.ok { "ok" } else { "FAILED" };
        (self.write)(&format!(
            "step {n} {result} ({} ms): {}",
            r.millis, r.detail
        ));
    }

    fn waiting(&self, what: &str, waited: Duration, bound: Duration) {
        if waited < WAIT_FIRST {
            return;
        }
        {
            let mut s = self.state();
            if s.waited_note.is_some_and(|t| t.elapsed() < WAIT_EVERY) {
                return;
            }
            s.waited_note = Some(Instant::now());
        }
        (self.write)(&format!(
            "  waiting for {what} ({} s of {} s)",
            waited.as_secs(),
            bound.as_secs()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn steps_are_numbered_and_waits_are_throttled() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = Arc::clone(&lines);
        let p = Printer::new(move |l: &str| sink.lock().expect("lock").push(l.to_string()));
        let node: crate::model::Addr = "127.0.0.1:1".parse().expect("addr");
        let step = Step::Persist { node };
        p.step_started(&step);
        p.waiting("x", Duration::from_millis(10), Duration::from_secs(20));
        p.waiting("x", Duration::from_secs(2), Duration::from_secs(20));
        p.waiting("x", Duration::from_secs(2), Duration::from_secs(20));
        p.step_done(&StepReport {
            step,
            ok: true,
            millis: 7,
            detail: "config rewritten".into(),
            snapshot: None,
        });
        let got = lines.lock().expect("lock").clone();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("step 1 start: "), "{got:?}");
        assert_eq!(got[1], "  waiting for x (2 s of 20 s)");
        assert_eq!(got[2], "step 1 ok (7 ms): config rewritten");
    }
}
