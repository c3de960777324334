//! Live trace: what happens to connections (connect, messages in and out with their sizes,
//! group changes, upstream calls, disconnect with its reason), for an operator watching one
//! hub or one connection. Nothing is built unless someone watches: an emit costs one atomic
//! load otherwise. Events go to a bounded broadcast channel; a watcher that falls behind
//! loses the oldest events and is told how many.

use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::broadcast;

/// Events kept for watchers that fall behind.
const CAPACITY: usize = 1024;

/// One thing that happened to one connection.
#[derive(Debug, Clone, Serialize)]
pub struct TraceEvent {
    /// Unix milliseconds.
    pub at_ms: u64,
    pub hub: String,
    pub connection: String,
    /// `connected`, `message-in`, `message-out`, `group-join`, `group-leave`, `upstream`,
    /// `disconnected`.
    pub kind: &'static str,
    /// What it was about: a transport and protocol, a target, a group, an upstream event and
    /// status, a reason.
    pub detail: String,
    /// The message's size, for messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<usize>,
    /// An upstream call's duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
}

impl TraceEvent {
    pub fn new(hub: &str, connection: &str, kind: &'static str, detail: impl Into<String>) -> TraceEvent {
        TraceEvent {
            at_ms: crate::unix_now_ms(),
            hub: hub.to_owned(),
            connection: connection.to_owned(),
            kind,
            detail: detail.into(),
            bytes: None,
            ms: None,
        }
    }

    pub fn bytes(mut self, bytes: usize) -> TraceEvent {
        self.bytes = Some(bytes);
        self
    }

    pub fn ms(mut self, ms: u64) -> TraceEvent {
        self.ms = Some(ms);
        self
    }
}

/// The node's trace. Cheap to share behind an `Arc`.
pub struct Tracer {
    sender: broadcast::Sender<Arc<TraceEvent>>,
    /// Live watchers (an atomic, unlike the channel's own count, which takes a lock).
    watchers: Arc<AtomicUsize>,
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer { sender: broadcast::channel(CAPACITY).0, watchers: Arc::default() }
    }
}

impl Tracer {
    /// Whether anyone watches.
    pub fn active(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// Publishes the event `make` builds, only when someone watches.
    pub fn emit(&self, make: impl FnOnce() -> TraceEvent) {
        if self.active() {
            let _ = self.sender.send(Arc::new(make()));
        }
    }

    /// Starts watching; events flow until the [`Watch`] is dropped.
    pub fn watch(&self) -> Watch {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watch { receiver: self.sender.subscribe(), watchers: self.watchers.clone() }
    }
}

/// One watcher's events.
pub struct Watch {
    receiver: broadcast::Receiver<Arc<TraceEvent>>,
    watchers: Arc<AtomicUsize>,
}

/// What a watcher gets next.
pub enum Watched {
    Event(Arc<TraceEvent>),
    /// This many events were lost because the watcher fell behind.
    Missed(u64),
}

impl Watch {
    /// The next event; `None` once the node shuts its trace down.
    pub async fn next(&mut self) -> Option<Watched> {
        match self.receiver.recv().await {
            Ok(event) => Some(Watched::Event(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Watched::Missed(missed)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_built_only_while_watched() {
        let tracer = Tracer::default();
        let mut built = 0;
        tracer.emit(|| {
            built += 1;
            TraceEvent::new("h", "c", "connected", "")
        });
        assert_eq!(built, 0);
        let mut watch = tracer.watch();
        assert!(tracer.active());
        tracer.emit(|| TraceEvent::new("h", "c", "message-out", "").bytes(5));
        match watch.next().await {
            Some(Watched::Event(event)) => assert_eq!((event.kind, event.bytes), ("message-out", Some(5))),
            _ => panic!("an event"),
        }
        for _ in 0..CAPACITY + 10 {
            tracer.emit(|| TraceEvent::new("h", "c", "message-out", ""));
        }
        assert!(matches!(watch.next().await, Some(Watched::Missed(10))));
        drop(watch);
        assert!(!tracer.active());
    }
}
