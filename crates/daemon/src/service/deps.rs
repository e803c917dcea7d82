//! What a service waits for: its dependencies' conditions, read from their
//! published snapshots, and the services it restarts with.

use blackhole_api::State;
use blackhole_core::config::Condition;
use futures_util::future::select_all;
use tokio::sync::watch;

use super::Snapshot;

pub struct DepWatch {
    pub name: String,
    pub condition: Condition,
    pub rx: watch::Receiver<Snapshot>,
}

pub struct WithWatch {
    pub name: String,
    pub rx: watch::Receiver<Snapshot>,
    /// Runs seen so far: a higher number means it restarted.
    pub seen_runs: u64,
}

#[derive(Default)]
pub struct Deps {
    pub on: Vec<DepWatch>,
    pub with: Vec<WithWatch>,
}

impl Deps {
    pub fn is_empty(&self) -> bool {
        self.on.is_empty() && self.with.is_empty()
    }

    /// `Ok` when every dependency meets its condition; else why not, naming
    /// each one that does not.
    pub fn evaluate(&mut self) -> Result<(), String> {
        let mut unmet = Vec::new();
        for d in &mut self.on {
            let snap = d.rx.borrow_and_update();
            let s = &snap.status;
            let met = match d.condition {
                Condition::Started => {
                    matches!(s.state, State::Running | State::Exited)
                        || (s.state == State::Starting && s.pid.is_some())
                }
                Condition::Ready => s.state == State::Running && s.ready,
                Condition::Completed => s.state == State::Exited && s.kind == "oneshot",
            };
            if met {
                continue;
            }
            let why = match s.state {
                State::Failed
                    if s.last_error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("invalid configuration")) =>
                {
                    format!("`{}` has an invalid configuration", d.name)
                }
                State::Failed => format!(
                    "`{}` failed ({}); waiting for it to recover",
                    d.name,
                    s.last_error.as_deref().unwrap_or("no reason given")
                ),
                State::Running if d.condition == Condition::Completed => {
                    format!("waiting for `{}` to complete (it is running)", d.name)
                }
                other => format!(
                    "waiting for `{}` to be {} (it is {other})",
                    d.name, d.condition
                ),
            };
            unmet.push(why);
        }
        if unmet.is_empty() {
            Ok(())
        } else {
            Err(unmet.join("; "))
        }
    }

    /// Resolves when any watched service changed; pends when there are none.
    pub async fn changed(&mut self) {
        let futures: Vec<_> = self
            .on
            .iter_mut()
            .map(|d| &mut d.rx)
            .chain(self.with.iter_mut().map(|w| &mut w.rx))
            // A service removed by a reload never changes again.
            .filter(|rx| rx.has_changed().is_ok())
            .map(|rx| Box::pin(rx.changed()))
            .collect();
        if futures.is_empty() {
            return std::future::pending().await;
        }
        let _ = select_all(futures).await;
    }

    /// A service this one restarts with has started a new run since last
    /// asked: its name.
    pub fn restarted(&mut self) -> Option<String> {
        let mut hit = None;
        for w in &mut self.with {
            let runs = w.rx.borrow_and_update().runs;
            if runs > w.seen_runs {
                if w.seen_runs > 0 && hit.is_none() {
                    hit = Some(w.name.clone());
                }
                w.seen_runs = runs;
            }
        }
        hit
    }
}
