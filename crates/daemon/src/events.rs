//! The event bus: every state change of every service, numbered, for
//! `GET /v1/events`, `blackhole events` and the dashboard.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use blackhole_api::{Event, State, rfc3339};
use tokio::sync::broadcast;

/// Events kept for slow subscribers before they are told they lagged.
const CAPACITY: usize = 1024;

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    seq: Arc<AtomicU64>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        EventBus {
            tx,
            seq: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl EventBus {
    /// How many events have been published (for tests of their order).
    #[cfg(test)]
    pub fn published(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    pub fn publish(
        &self,
        service: &str,
        kind: &str,
        from: Option<State>,
        to: Option<State>,
        pid: Option<u32>,
        message: String,
    ) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if self.tx.receiver_count() == 0 {
            return;
        }
        let _ = self.tx.send(Arc::new(Event {
            seq,
            time: rfc3339(SystemTime::now()),
            service: service.to_string(),
            kind: kind.to_string(),
            from,
            to,
            pid,
            message,
        }));
    }

    pub fn state(&self, service: &str, from: State, to: State, pid: Option<u32>, message: String) {
        self.publish(service, "state", Some(from), Some(to), pid, message);
    }
}
