//! A connection's bounded queue of outbound frames.
//!
//! Senders push shared [`Bytes`] (the same allocation for every target of a message) and never
//! block; the transport task waits on [`Outbox::ready`] and drains everything queued into one
//! write. A queue over its byte bound closes the connection instead of growing (G5).
//!
//! A connection in a hub also reads the hub's broadcasts from its [`BroadcastLog`]: each
//! queued frame carries the log's end when it was queued, and a drain puts the broadcasts
//! before it that were appended first, so one sender's sends arrive in order (G4).

use crate::broadcast_log::{BroadcastLog, Cursor, Lagged, Reader};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Waker};

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

impl CloseRequest {
    fn slow_consumer() -> Self {
        CloseRequest {
            error: Some("Connection closed: the client is not reading messages fast enough.".into()),
            allow_reconnect: true,
        }
    }
}

#[derive(Default)]
struct State {
    /// Targeted frames, each with the broadcast log's end when it was queued.
    frames: VecDeque<(u64, Bytes)>,
    queued_bytes: usize,
    close: Option<CloseRequest>,
    /// Where this connection is in its hub's broadcasts (`None`: not in a hub, or left it).
    cursor: Option<Cursor>,
    /// The task waiting in [`Outbox::ready`], woken by the next frame or close request.
    waiter: Option<Waker>,
    /// A wake-up that came while nobody waited, kept for the next wait.
    woken: bool,
}

impl State {
    /// Marks a wake-up and hands back the waiter to wake once the lock is released.
    fn wake(&mut self) -> Option<Waker> {
        self.woken = true;
        self.waiter.take()
    }
}

/// The most a single frame may cost when nothing is queued before it: twice `limit`, so that
/// one message as large as a REST body may be (1 MiB) reaches a client that keeps up even
/// where the limit was set that low. The broadcast log keeps its newest entry up to the same
/// size.
pub(crate) fn largest_alone(limit: usize) -> usize {
    limit.saturating_mul(2)
}

/// See the module docs.
#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
    /// The hub's broadcasts, once the connection joined a hub (outside the lock: waiting
    /// borrows it).
    broadcasts: OnceLock<Arc<BroadcastLog>>,
}

impl Outbox {
    /// Queues `frame` unless that would exceed `limit` queued bytes; an empty queue takes a
    /// frame up to [`largest_alone`] (the limit bounds a backlog).
    pub fn push(&self, frame: Bytes, limit: usize) -> Result<(), PushError> {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return Err(PushError::Closed);
        }
        let cost = frame.len() + FRAME_OVERHEAD;
        let bound = if state.queued_bytes == 0 { largest_alone(limit) } else { limit };
        if state.queued_bytes + cost > bound {
            self.overflowed(&mut state);
            wake(state.wake(), state);
            return Err(PushError::Overflow);
        }
        state.queued_bytes += cost;
        let was_empty = state.frames.is_empty();
        // Read under the lock: stamps never decrease along the queue.
        let stamp = self.broadcasts.get().map_or(0, |log| log.end());
        state.frames.push_back((stamp, frame));
        if was_empty {
            wake(state.wake(), state);
        }
        Ok(())
    }

    /// Clears the queue and asks for the slow-consumer close.
    fn overflowed(&self, state: &mut State) {
        state.frames.clear();
        state.queued_bytes = 0;
        self.request_close(state, CloseRequest::slow_consumer());
    }

    /// The first request wins; broadcasts appended after it are not read.
    fn request_close(&self, state: &mut State, request: CloseRequest) {
        if state.close.is_none() {
            state.close = Some(request);
            if let (Some(cursor), Some(log)) = (&mut state.cursor, self.broadcasts.get()) {
                log.stop_at_end(cursor);
            }
            self.leave_once_read(state);
        }
    }

    /// A closing connection that has read every broadcast from before its close leaves the
    /// log: it holds no entry there, and entries dropped later cannot find it behind (and
    /// clear the frames it still has to write before its Close).
    fn leave_once_read(&self, state: &mut State) {
        let Some(log) = self.broadcasts.get() else { return };
        if state.close.is_some() && state.cursor.as_ref().is_some_and(|cursor| !log.has_unread(cursor)) {
            log.leave(&state.cursor.take().expect("checked"));
        }
    }

    /// Starts reading `log` from its end (the hub calls this as the connection joins it),
    /// unless the connection is already closing.
    pub(crate) fn subscribe(&self, log: &Arc<BroadcastLog>) {
        let log = self.broadcasts.get_or_init(|| log.clone());
        let mut state = self.state.lock();
        if state.cursor.is_none() && state.close.is_none() {
            state.cursor = Some(log.subscribe());
        }
    }

    /// Stops reading the hub's broadcasts (the connection left the hub).
    pub(crate) fn unsubscribe(&self) {
        let cursor = self.state.lock().cursor.take();
        if let (Some(cursor), Some(log)) = (cursor, self.broadcasts.get()) {
            log.leave(&cursor);
        }
    }

    /// Closes the connection as a slow consumer if broadcasts it had not read were dropped.
    /// Returns whether it did.
    pub(crate) fn close_if_behind(&self) -> bool {
        let Some(log) = self.broadcasts.get() else { return false };
        let mut state = self.state.lock();
        if !state.cursor.as_ref().is_some_and(|cursor| log.is_behind(cursor)) {
            return false;
        }
        let cursor = state.cursor.take().expect("checked");
        log.leave(&cursor);
        let first = state.close.is_none();
        self.overflowed(&mut state);
        wake(state.wake(), state);
        first
    }

    /// Wakes the waiting writer (or the next wait) to look for frames and broadcasts.
    pub(crate) fn wake(&self) {
        let mut state = self.state.lock();
        wake(state.wake(), state);
    }

    /// Asks the transport to close the connection; the first request wins. Frames already
    /// queued are still written before the Close message.
    pub fn close(&self, request: CloseRequest) {
        let mut state = self.state.lock();
        self.request_close(&mut state, request);
        wake(state.wake(), state);
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.state.lock().close.is_some()
    }

    /// Resolves when frames, broadcasts or a close request may be waiting. One waiter at a
    /// time: a later wait takes the place of an earlier one, which is not woken any more. Cancel-safe: a
    /// wake-up that arrives while nobody waits is kept for the next call, and broadcasts
    /// appended meanwhile are seen at once.
    pub async fn ready(&self) {
        // Waiting on the log costs a lock on a hub-wide list per wait: a hub that never
        // broadcast skips it, and its first broadcast wakes every connection ([`Self::wake`]).
        let log = self.broadcasts.get().filter(|log| log.end() > 0);
        let mut appended = pin!(log.map(|log| log.appended()));
        if let Some(appended) = appended.as_mut().as_pin_mut() {
            appended.enable();
        }
        poll_fn(|cx| {
            {
                let mut state = self.state.lock();
                let unread = |cursor: &Cursor| log.is_some_and(|log| log.has_unread(cursor));
                if std::mem::take(&mut state.woken) || state.cursor.as_ref().is_some_and(unread) {
                    return Poll::Ready(());
                }
                if !state.waiter.as_ref().is_some_and(|waiter| waiter.will_wake(cx.waker())) {
                    state.waiter = Some(cx.waker().clone());
                }
            }
            match appended.as_mut().as_pin_mut() {
                Some(appended) => appended.poll(cx),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Hands every queued frame and the unread broadcasts meant for `reader` to `visit`, in
    /// order, and reports a pending close request; returns how many it handed. Used through
    /// [`Connection::drain_with`](crate::Connection::drain_with).
    pub(crate) fn drain_with(&self, reader: Reader, mut visit: impl FnMut(&Bytes)) -> (usize, Option<CloseRequest>) {
        let mut count = 0;
        let mut visit = |frame: &Bytes| {
            count += 1;
            visit(frame);
        };
        let mut state = self.state.lock();
        let State { frames, queued_bytes, close, cursor, .. } = &mut *state;
        match (cursor, self.broadcasts.get()) {
            (Some(cursor), Some(log)) if log.has_unread(cursor) => {
                let mut own = frames.drain(..).peekable();
                // Lagged: the broadcast that dropped its entries closes it (`close_if_behind`).
                let _: Result<(), Lagged> = log.read(cursor, reader, |seq, frame| {
                    // A frame queued while the log ended at `stamp` goes before entry `stamp`.
                    while let Some((_, queued)) = own.next_if(|(stamp, _)| *stamp <= seq) {
                        visit(&queued);
                    }
                    visit(frame);
                });
                own.for_each(|(_, queued)| visit(&queued));
            }
            _ => frames.drain(..).for_each(|(_, queued)| visit(&queued)),
        }
        *queued_bytes = 0;
        // Storage a burst grew is given back rather than kept by an idle connection.
        if frames.capacity() > 64 {
            *frames = VecDeque::new();
        }
        let close = close.clone();
        self.leave_once_read(&mut state);
        (count, close)
    }

    /// Bytes waiting (with per-frame overhead), unread broadcasts included, for metrics.
    pub fn queued_bytes(&self) -> usize {
        let state = self.state.lock();
        let broadcasts = match (&state.cursor, self.broadcasts.get()) {
            (Some(cursor), Some(log)) => log.bytes_after(cursor),
            _ => 0,
        };
        state.queued_bytes + broadcasts
    }
}

/// Wakes `waiter` after releasing the lock it was taken under.
fn wake<T>(waiter: Option<Waker>, guard: T) {
    drop(guard);
    if let Some(waiter) = waiter {
        waiter.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::Protocol;

    impl Outbox {
        fn drain(&self, out: &mut VecDeque<Bytes>) -> (usize, Option<CloseRequest>) {
            self.drain_with(Reader { protocol: Protocol::Json, id: "c" }, |frame| out.push_back(frame.clone()))
        }
    }

    /// What was queued before a close is written before the Close, however many broadcasts
    /// the hub makes after it.
    #[test]
    fn a_closing_connection_keeps_what_it_queued_before_the_close() {
        let log = Arc::new(BroadcastLog::new(10 * (1 + 32)));
        let outbox = Outbox::default();
        outbox.subscribe(&log);
        broadcast(&log, "a");
        let mut out = VecDeque::new();
        outbox.drain(&mut out);
        outbox.push(frame("t"), 1000).unwrap();
        outbox.close(CloseRequest { error: None, allow_reconnect: false });
        let mut dropped_unread = false;
        for _ in 0..20 {
            dropped_unread |= log.append([Some(frame("b")), None], &[]);
        }
        assert!(!dropped_unread && !outbox.close_if_behind());
        assert_eq!(log.retained(), 0, "nobody left to read");
        out.clear();
        let (count, close) = outbox.drain(&mut out);
        assert_eq!((count, out), (1, VecDeque::from([frame("t")])));
        assert_eq!(close, Some(CloseRequest { error: None, allow_reconnect: false }));
    }

    /// A connection closing with broadcasts still to read reads them, then leaves the log.
    #[test]
    fn a_closing_connection_reads_the_broadcasts_from_before_its_close_then_leaves() {
        let log = Arc::new(BroadcastLog::new(1 << 20));
        let outbox = Outbox::default();
        outbox.subscribe(&log);
        broadcast(&log, "before");
        outbox.close(CloseRequest { error: None, allow_reconnect: true });
        broadcast(&log, "after");
        assert_eq!(log.retained(), 2);
        let mut out = VecDeque::new();
        assert_eq!(outbox.drain(&mut out).0, 1);
        assert_eq!(out, [frame("before")]);
        assert_eq!(log.retained(), 0, "the closing reader left once it had read its part");
        outbox.unsubscribe();
        // A connection closed before it joins a hub never reads it.
        let late = Outbox::default();
        late.close(CloseRequest { error: None, allow_reconnect: true });
        late.subscribe(&log);
        broadcast(&log, "later");
        assert_eq!((log.retained(), late.drain(&mut out).0), (0, 0));
    }

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
    fn an_empty_queue_takes_a_frame_of_up_to_twice_the_limit() {
        let outbox = Outbox::default();
        let large = Bytes::from(vec![b'x'; 200 - FRAME_OVERHEAD]);
        assert_eq!(outbox.push(large.clone(), 100), Ok(()));
        assert_eq!(outbox.push(Bytes::from_static(b"x"), 100), Err(PushError::Overflow));
        let other = Outbox::default();
        assert_eq!(other.push(large.clone(), 100), Ok(()));
        let mut out = VecDeque::new();
        assert_eq!(other.drain(&mut out), (1, None));
        assert_eq!(other.push(large, 100), Ok(()), "drained, the queue is empty again");
        let too_large = Outbox::default();
        assert_eq!(too_large.push(Bytes::from(vec![b'x'; 200 - FRAME_OVERHEAD + 1]), 100), Err(PushError::Overflow));
    }

    fn frame(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    /// A task that waits for the outbox and drains it until it gets frames, as a transport's
    /// writer does: a wake may come with nothing to read (the wake thread runs an earlier
    /// append's wake late, after the next wait began).
    fn drain_when_ready(outbox: &Arc<Outbox>) -> tokio::task::JoinHandle<VecDeque<Bytes>> {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            let mut out = VecDeque::new();
            while out.is_empty() {
                outbox.ready().await;
                outbox.drain(&mut out);
            }
            out
        })
    }

    fn broadcast(log: &BroadcastLog, text: &'static str) {
        log.append([Some(frame(text)), None], &[]);
    }

    #[test]
    fn a_drain_puts_each_queued_frame_after_the_broadcasts_appended_before_it() {
        let log = Arc::new(BroadcastLog::new(1 << 20));
        let outbox = Outbox::default();
        outbox.subscribe(&log);
        broadcast(&log, "b0");
        outbox.push(frame("t1"), 1000).unwrap();
        broadcast(&log, "b1");
        broadcast(&log, "b2");
        outbox.push(frame("t2"), 1000).unwrap();
        outbox.push(frame("t3"), 1000).unwrap();
        assert_eq!(outbox.queued_bytes(), 3 * (2 + FRAME_OVERHEAD) + 3 * (2 + 32));
        let mut out = VecDeque::new();
        assert_eq!(outbox.drain(&mut out).0, 6);
        assert_eq!(out, ["b0", "t1", "b1", "b2", "t2", "t3"].map(frame));
        // A batch still holding frames gets the new ones after them.
        outbox.push(frame("t4"), 1000).unwrap();
        broadcast(&log, "b3");
        assert_eq!(outbox.drain(&mut out).0, 2);
        assert_eq!(out.len(), 8);
        assert_eq!(out.back(), Some(&frame("b3")));
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_broadcast_wakes_a_waiting_reader() {
        let log = Arc::new(BroadcastLog::new(1 << 20));
        let outbox = Arc::new(Outbox::default());
        outbox.subscribe(&log);
        // A log that has had a broadcast is watched by every wait (before that, the hub wakes
        // its connections at the first one).
        broadcast(&log, "a");
        outbox.drain(&mut VecDeque::new());
        let waiter = drain_when_ready(&outbox);
        tokio::task::yield_now().await;
        broadcast(&log, "b");
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await.unwrap().unwrap();
        assert_eq!(got, [frame("b")]);
        // Unread broadcasts make the next wait return at once.
        broadcast(&log, "c");
        tokio::time::timeout(std::time::Duration::from_secs(10), outbox.ready()).await.unwrap();
    }

    #[tokio::test]
    async fn wakes_a_waiter_and_keeps_order() {
        let outbox = Arc::new(Outbox::default());
        let waiter = drain_when_ready(&outbox);
        outbox.push(Bytes::from_static(b"a"), 1000).unwrap();
        outbox.push(Bytes::from_static(b"b"), 1000).unwrap();
        let got = waiter.await.unwrap();
        assert!(!got.is_empty());
        assert_eq!(got[0], Bytes::from_static(b"a"));
    }
}
