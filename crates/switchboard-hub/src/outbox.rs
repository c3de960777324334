//! A connection's bounded queue of outbound frames.
//!
//! Senders push shared [`Bytes`] (the same allocation for every target of a message) and never
//! block; the transport task waits on [`Outbox::ready`] and drains everything queued into one
//! write. A queue over its byte bound closes the connection instead of growing (G5).

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use tokio::sync::Notify;

/// Accounting overhead charged per queued frame, so a flood of tiny frames is bounded too.
const FRAME_OVERHEAD: usize = 32;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The connection is closing or closed.
    Closed,
    /// The queue exceeded its bound; the connection is now being closed as a slow consumer.
    Overflow,
}

/// How the transport should end the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// Sent to the client in the hub-protocol Close message.
    pub error: Option<String>,
    pub allow_reconnect: bool,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    queued_bytes: usize,
    close: Option<CloseRequest>,
}

/// See the module docs.
#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
}

impl Outbox {
    /// Queues `frame` unless that would exceed `limit` queued bytes.
    pub fn push(&self, frame: Bytes, limit: usize) -> Result<(), PushError> {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return Err(PushError::Closed);
        }
        let cost = frame.len() + FRAME_OVERHEAD;
        if state.queued_bytes + cost > limit {
            state.frames.clear();
            state.queued_bytes = 0;
            state.close = Some(CloseRequest {
                error: Some("Connection closed: the client is not reading messages fast enough.".into()),
                allow_reconnect: true,
            });
            drop(state);
            self.notify.notify_one();
            return Err(PushError::Overflow);
        }
        state.queued_bytes += cost;
        let was_empty = state.frames.is_empty();
        state.frames.push_back(frame);
        drop(state);
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Asks the transport to close the connection; the first request wins. Frames already
    /// queued are still written before the Close message.
    pub fn close(&self, request: CloseRequest) {
        let mut state = self.state.lock();
        if state.close.is_none() {
            state.close = Some(request);
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.state.lock().close.is_some()
    }

    /// Resolves when frames or a close request may be waiting. Cancel-safe: a wake-up that
    /// arrives while nobody waits is kept for the next call.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Moves every queued frame into `out` (in order) and reports a pending close request.
    /// Returns the number of frames moved.
    pub fn drain(&self, out: &mut Vec<Bytes>) -> (usize, Option<CloseRequest>) {
        let mut state = self.state.lock();
        let count = state.frames.len();
        out.extend(state.frames.drain(..));
        state.queued_bytes = 0;
        if state.frames.capacity() > 64 {
            state.frames = VecDeque::new();
        }
        (count, state.close.clone())
    }

    /// Bytes waiting (with per-frame overhead), for metrics.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().queued_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_and_clears() {
        let outbox = Outbox::default();
        assert_eq!(outbox.push(Bytes::from_static(b"0123456789"), 100), Ok(()));
        assert_eq!(outbox.push(Bytes::from_static(b"0123456789"), 100), Ok(()));
        assert_eq!(outbox.push(Bytes::from_static(b"0123456789"), 100), Err(PushError::Overflow));
        assert_eq!(outbox.push(Bytes::from_static(b"x"), 100), Err(PushError::Closed));
        let mut out = Vec::new();
        let (count, close) = outbox.drain(&mut out);
        assert_eq!(count, 0);
        assert!(close.unwrap().error.unwrap().contains("not reading"));
    }

    #[tokio::test]
    async fn wakes_a_waiter_and_keeps_order() {
        let outbox = std::sync::Arc::new(Outbox::default());
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                outbox.ready().await;
                let mut out = Vec::new();
                outbox.drain(&mut out);
                out
            })
        };
        outbox.push(Bytes::from_static(b"a"), 1000).unwrap();
        outbox.push(Bytes::from_static(b"b"), 1000).unwrap();
        let got = waiter.await.unwrap();
        assert!(!got.is_empty());
        assert_eq!(got[0], Bytes::from_static(b"a"));
    }
}
