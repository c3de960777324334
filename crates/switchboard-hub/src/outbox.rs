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

    /// Moves every queued frame to the end of `out` (in order) and reports a pending close
    /// request. Returns the number of frames moved. An empty `out` trades places with the
    /// queue, storage and all: no frame is moved one by one under the lock, and a caller that
    /// keeps its emptied `out` hands the outbox that storage back at the next drain.
    pub fn drain(&self, out: &mut VecDeque<Bytes>) -> (usize, Option<CloseRequest>) {
        let mut state = self.state.lock();
        let count = state.frames.len();
        if out.is_empty() {
            std::mem::swap(&mut state.frames, out);
        } else {
            out.extend(state.frames.drain(..));
        }
        state.queued_bytes = 0;
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
        let mut out = VecDeque::new();
        let (count, close) = outbox.drain(&mut out);
        assert_eq!(count, 0);
        assert!(close.unwrap().error.unwrap().contains("not reading"));
    }

    #[test]
    fn a_drain_trades_storage_with_an_empty_batch_and_appends_to_a_full_one() {
        let outbox = Outbox::default();
        let frame = |text: &'static str| Bytes::from_static(text.as_bytes());
        outbox.push(frame("a"), 1000).unwrap();
        outbox.push(frame("b"), 1000).unwrap();
        let mut batch = VecDeque::with_capacity(16);
        let spare = batch.capacity();
        assert_eq!(outbox.drain(&mut batch).0, 2);
        assert_eq!(batch, [frame("a"), frame("b")]);
        // The batch's storage went to the outbox: it queues there, nothing allocated.
        assert!(outbox.state.lock().frames.capacity() >= spare);
        batch.clear();
        outbox.push(frame("c"), 1000).unwrap();
        outbox.drain(&mut batch);
        outbox.push(frame("d"), 1000).unwrap();
        // A batch still holding frames gets the new ones after them.
        outbox.drain(&mut batch);
        assert_eq!(batch, [frame("c"), frame("d")]);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn wakes_a_waiter_and_keeps_order() {
        let outbox = std::sync::Arc::new(Outbox::default());
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                outbox.ready().await;
                let mut out = VecDeque::new();
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
