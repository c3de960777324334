//! A hub's broadcasts, stored once and read by every connection at its own pace.
//!
//! Pushing a broadcast into each of 10,000 outboxes touches 10,000 connections' cache lines
//! (a lock and a queue write each); at a few hundred broadcasts a second those misses were
//! the largest single cost of the node. Instead a broadcast appends one entry here and wakes
//! the connections that wait, and each [`Outbox`](crate::Outbox) reads the entries after its
//! cursor when it drains, in order with its targeted frames (G4).
//!
//! Each entry counts the readers whose next entry it is, so a read moves one reader between two
//! counts instead of writing every entry it passes (entries are shared by every reader, and
//! writing them bounced their cache lines between cores); the oldest entries go once no reader
//! waits at them. The entries kept are bounded by the hub's `max_queued_bytes` (the newest is
//! kept if it is at most twice that): an append past the bound drops the oldest entries, and
//! the connections that had not read them are closed as slow consumers (G5), as an overflowing
//! outbox is. The bound applies to the log and to each connection's own queue of targeted
//! frames separately, so a connection behind on both holds up to twice it.
//! An entry counts the frame a reader takes, so a hub speaking both protocols keeps up to twice
//! the bound in frames.

use crate::wake::Wakeup;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use switchboard_protocol::Protocol;
use tokio::sync::futures::Notified;

/// Accounting overhead charged per entry, as an outbox charges per frame.
const ENTRY_OVERHEAD: usize = 32;

/// What an entry counts against the bound: the frame a reader takes from it (the larger of
/// the two protocols': the bound is what one connection may be behind by, so a message of
/// half the bound still goes to a hub with both protocols), and its exclusions, which it holds
/// whoever reads it (a REST call may name thousands of connections to leave out).
fn entry_cost(frames: &[Option<Bytes>; 2], excluded: &[String]) -> usize {
    let frame = frames.iter().flatten().map(Bytes::len).max().unwrap_or(0);
    let excluded: usize = excluded.iter().map(|id| id.len() + size_of::<String>()).sum();
    frame + excluded + ENTRY_OVERHEAD
}

/// See the module docs.
pub(crate) struct BroadcastLog {
    entries: Mutex<Entries>,
    /// Sequence number of the next entry: a reader with a lower cursor has entries to read.
    end: AtomicU64,
    /// Woken (every waiter at once) by each append, from the wake thread ([`crate::wake`]).
    appended: Arc<Wakeup>,
    limit: usize,
}

#[derive(Default)]
struct Entries {
    /// Sequence number of `list[0]`.
    first: u64,
    list: VecDeque<Entry>,
    /// Cost of the entries in `list`.
    bytes: usize,
    /// Cost of every entry ever appended, so the bytes after a cursor are one subtraction.
    appended_bytes: u64,
    /// Readers that have read everything: the next entry appended is theirs to read next.
    waiting_at_end: usize,
}

struct Entry {
    /// The frame for each protocol (indexed by [`protocol_slot`]); `None` where no reader
    /// speaks it or the message cannot be put in it.
    frames: [Option<Bytes>; 2],
    /// Connection ids left out (`excluded` of the REST call; usually none).
    excluded: Box<[String]>,
    /// Readers whose next entry this is.
    waiting: usize,
    cost: usize,
    /// `appended_bytes` before this entry.
    offset: u64,
}

/// A reader's place in the log: the next sequence number it reads.
#[derive(Debug)]
pub(crate) struct Cursor {
    next: u64,
    /// Where reading stops: the end when the connection was asked to close (what was
    /// sent before the close still goes out, nothing after it).
    until: u64,
}

/// Who reads: which frame it takes and which exclusions name it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    pub(crate) protocol: Protocol,
    pub(crate) id: &'a str,
}

/// The reader's entries were dropped before it read them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Lagged;

impl BroadcastLog {
    pub(crate) fn new(limit: usize) -> Self {
        Self { entries: Mutex::default(), end: AtomicU64::new(0), appended: Arc::default(), limit }
    }

    /// The sequence number the next entry will get.
    pub(crate) fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// A cursor that reads what is appended from now on, until it [leaves](Self::leave).
    pub(crate) fn subscribe(&self) -> Cursor {
        let mut entries = self.entries.lock();
        entries.waiting_at_end += 1;
        Cursor { next: entries.first + entries.list.len() as u64, until: u64::MAX }
    }

    /// Whether `cursor` has entries to read.
    pub(crate) fn has_unread(&self, cursor: &Cursor) -> bool {
        cursor.next < self.end().min(cursor.until)
    }

    /// `cursor` reads nothing appended from now on.
    pub(crate) fn stop_at_end(&self, cursor: &mut Cursor) {
        cursor.until = cursor.until.min(self.end());
    }

    /// Appends a broadcast for every subscribed cursor, then wakes the waiting ones. Returns
    /// whether entries some reader had not read yet were dropped to stay within the bound:
    /// the caller then closes the readers that fell behind ([`is_behind`](Self::is_behind)).
    pub(crate) fn append(&self, frames: [Option<Bytes>; 2], excluded: &[String]) -> bool {
        let cost = entry_cost(&frames, excluded);
        let mut entries = self.entries.lock();
        let (offset, waiting) = (entries.appended_bytes, std::mem::take(&mut entries.waiting_at_end));
        entries.list.push_back(Entry { frames, excluded: excluded.into(), waiting, cost, offset });
        entries.bytes += cost;
        entries.appended_bytes += cost as u64;
        let mut dropped_unread = false;
        // The newest entry stays up to the size an empty outbox takes.
        while entries.bytes > self.limit
            && (entries.list.len() > 1 || cost > crate::outbox::largest_alone(self.limit))
            && let Some(oldest) = entries.pop_oldest()
        {
            dropped_unread |= oldest.waiting > 0;
        }
        entries.drop_read();
        self.end.store(entries.first + entries.list.len() as u64, Ordering::Release);
        drop(entries);
        self.appended.notify_waiters();
        dropped_unread
    }

    /// Whether `cursor` missed entries that were dropped.
    pub(crate) fn is_behind(&self, cursor: &Cursor) -> bool {
        cursor.next < self.entries.lock().first
    }

    /// Hands `visit` every entry from `cursor` to the end that is meant for `reader` (its
    /// protocol's frame, unless it is excluded), with the entry's sequence number, and moves
    /// the cursor past them.
    pub(crate) fn read(
        &self,
        cursor: &mut Cursor,
        reader: Reader,
        mut visit: impl FnMut(u64, &Bytes),
    ) -> Result<(), Lagged> {
        let mut entries = self.entries.lock();
        if cursor.next < entries.first {
            return Err(Lagged);
        }
        let first = entries.first;
        let end = (first + entries.list.len() as u64).min(cursor.until).max(cursor.next);
        if end == cursor.next {
            return Ok(());
        }
        *entries.waiting_at(cursor.next) -= 1;
        *entries.waiting_at(end) += 1;
        let slot = protocol_slot(reader.protocol);
        for seq in cursor.next..end {
            let entry = &entries.list[(seq - first) as usize];
            if let Some(frame) = &entry.frames[slot]
                && !entry.excluded.iter().any(|id| id == reader.id)
            {
                visit(seq, frame);
            }
        }
        cursor.next = end;
        entries.drop_read();
        Ok(())
    }

    /// A reader goes away: it will not read the entries after `cursor`.
    pub(crate) fn leave(&self, cursor: &Cursor) {
        let mut entries = self.entries.lock();
        // A reader behind the first entry waited at entries that were dropped with their counts.
        if cursor.next >= entries.first {
            *entries.waiting_at(cursor.next) -= 1;
            entries.drop_read();
        }
    }

    /// The bytes (with per-entry overhead) from `cursor` to the end, for metrics.
    pub(crate) fn bytes_after(&self, cursor: &Cursor) -> usize {
        let entries = self.entries.lock();
        let first = entries.first;
        let from = cursor.next.max(first) - first;
        entries.list.get(from as usize).map_or(0, |entry| (entries.appended_bytes - entry.offset) as usize)
    }

    /// Resolves at the next append after it is [enabled](Notified::enable) or first polled.
    pub(crate) fn appended(&self) -> Notified<'_> {
        self.appended.notified()
    }

    #[cfg(test)]
    pub(crate) fn retained(&self) -> usize {
        self.entries.lock().list.len()
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.entries.lock().list.capacity()
    }
}

impl Entries {
    /// The count of readers whose next entry is `seq` (`first..=` the end).
    fn waiting_at(&mut self, seq: u64) -> &mut usize {
        match self.list.get_mut((seq - self.first) as usize) {
            Some(entry) => &mut entry.waiting,
            None => &mut self.waiting_at_end,
        }
    }

    /// Drops the oldest entries while no reader waits at the first: every reader is past it
    /// (readers only move forward, and one that subscribes later starts at the end).
    fn drop_read(&mut self) {
        while self.list.front().is_some_and(|entry| entry.waiting == 0) {
            self.pop_oldest();
        }
        // Storage a burst grew is given back rather than kept by an idle hub.
        if self.list.is_empty() && self.list.capacity() > 64 {
            self.list = VecDeque::new();
        }
    }

    fn pop_oldest(&mut self) -> Option<Entry> {
        let entry = self.list.pop_front()?;
        self.bytes -= entry.cost;
        self.first += 1;
        Some(entry)
    }
}

/// Where a protocol's frame sits in an entry.
pub(crate) fn protocol_slot(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Json => 0,
        Protocol::MessagePack => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> [Option<Bytes>; 2] {
        [Some(Bytes::from_static(text.as_bytes())), None]
    }

    fn read_all(log: &BroadcastLog, cursor: &mut Cursor) -> ReadAll {
        read_as(log, cursor, Protocol::Json, "c")
    }

    fn read_as(log: &BroadcastLog, cursor: &mut Cursor, protocol: Protocol, id: &str) -> ReadAll {
        let mut got = Vec::new();
        log.read(cursor, Reader { protocol, id }, |seq, frame| got.push((seq, frame.clone()))).map(|()| got)
    }

    type ReadAll = Result<Vec<(u64, Bytes)>, Lagged>;

    #[test]
    fn entries_go_once_every_reader_passed_them() {
        let log = BroadcastLog::new(1 << 20);
        let mut a = log.subscribe();
        log.append(frame("1"), &[]);
        let mut b = log.subscribe();
        log.append(frame("2"), &[]);
        assert_eq!(read_all(&log, &mut b).unwrap(), [(1, Bytes::from_static(b"2"))], "b reads from its start");
        assert_eq!(log.retained(), 2);
        assert_eq!(read_all(&log, &mut a).unwrap().len(), 2);
        assert_eq!(log.retained(), 0);
        log.append(frame("3"), &[]);
        log.leave(&a);
        assert_eq!(read_all(&log, &mut b).unwrap().len(), 1);
        assert_eq!(log.retained(), 0, "a reader that left holds nothing");
        log.leave(&b);
        log.append(frame("4"), &[]);
        assert_eq!(log.retained(), 0, "nobody subscribed: nothing is kept");
    }

    #[test]
    fn readers_skip_what_excludes_them_or_is_not_in_their_protocol() {
        let log = BroadcastLog::new(1 << 20);
        let mut json = log.subscribe();
        let mut binary = log.subscribe();
        log.append(frame("to json only"), &[]);
        log.append([Some(Bytes::from_static(b"j")), Some(Bytes::from_static(b"m"))], &["j".to_owned()]);
        assert_eq!(read_as(&log, &mut json, Protocol::Json, "j").unwrap(), [(0, Bytes::from_static(b"to json only"))]);
        assert_eq!(read_as(&log, &mut binary, Protocol::MessagePack, "m").unwrap(), [(1, Bytes::from_static(b"m"))]);
        assert_eq!(log.retained(), 0);
    }

    #[test]
    fn a_stopped_reader_reads_only_what_came_before() {
        let log = BroadcastLog::new(1 << 20);
        let mut closing = log.subscribe();
        log.append(frame("before"), &[]);
        log.stop_at_end(&mut closing);
        log.append(frame("after"), &[]);
        assert!(log.has_unread(&closing));
        assert_eq!(read_all(&log, &mut closing).unwrap(), [(0, Bytes::from_static(b"before"))]);
        assert!(!log.has_unread(&closing));
        assert_eq!(read_all(&log, &mut closing).unwrap(), []);
        log.leave(&closing);
        assert_eq!(log.retained(), 0);
    }

    #[test]
    fn a_reader_behind_the_bound_has_lagged() {
        let log = BroadcastLog::new(3 * (ENTRY_OVERHEAD + 1));
        let mut slow = log.subscribe();
        let mut fast = log.subscribe();
        for _ in 0..3 {
            assert!(!log.append(frame("x"), &[]));
            read_all(&log, &mut fast).unwrap();
        }
        assert_eq!(log.bytes_after(&slow), 3 * (ENTRY_OVERHEAD + 1));
        assert!(log.append(frame("x"), &[]), "dropping an entry slow had not read");
        assert!(log.is_behind(&slow) && !log.is_behind(&fast));
        assert_eq!(read_all(&log, &mut slow), Err(Lagged));
        assert_eq!(read_all(&log, &mut fast).unwrap().len(), 1);
        log.leave(&slow);
        assert_eq!(log.retained(), 0);
    }

    #[test]
    fn the_newest_entry_is_kept_up_to_twice_the_bound() {
        let log = BroadcastLog::new(2 * ENTRY_OVERHEAD + 100);
        let mut reader = log.subscribe();
        let large = Bytes::from(vec![b'x'; 100]);
        assert!(!log.append([Some(large.clone()), None], &[]), "nothing unread was dropped");
        assert_eq!(read_all(&log, &mut reader).unwrap(), [(0, large.clone())]);
        let mut keeping_up = log.subscribe();
        assert!(!log.append([Some(large.clone()), None], &[]), "the one before it had been read");
        assert_eq!(read_all(&log, &mut keeping_up).unwrap(), [(1, large.clone())]);
        assert!(log.append([Some(large), None], &[]), "the unread one before it was dropped");
        assert_eq!(read_all(&log, &mut reader), Err(Lagged));
        assert!(!log.is_behind(&keeping_up) && read_all(&log, &mut keeping_up).unwrap().len() == 1);
        let too_large = Bytes::from(vec![b'x'; 2 * (2 * ENTRY_OVERHEAD + 100)]);
        assert!(log.append([Some(too_large), None], &[]), "more than twice the bound is not kept");
        assert_eq!(read_all(&log, &mut keeping_up), Err(Lagged));
    }

    #[test]
    fn an_entry_is_charged_for_the_frame_a_reader_takes_and_its_exclusions() {
        let log = BroadcastLog::new(1 << 20);
        let slow = log.subscribe();
        let both = [Some(Bytes::from_static(b"json")), Some(Bytes::from_static(b"mp"))];
        let excluded = ["abc".to_owned(), "de".to_owned()];
        log.append(both, &excluded);
        assert_eq!(log.bytes_after(&slow), 4 + (3 + 2 + 2 * size_of::<String>()) + ENTRY_OVERHEAD);
        // A message of over half the bound goes to a hub that speaks both protocols.
        let log = BroadcastLog::new(1000);
        let mut reader = log.subscribe();
        let big = Bytes::from(vec![b'x'; 600]);
        assert!(!log.append([Some(big.clone()), Some(big)], &[]));
        assert_eq!(read_all(&log, &mut reader).unwrap().len(), 1);
        // Long exclusion lists fill the bound as their memory does.
        let log = BroadcastLog::new(64 * 1024);
        let slow = log.subscribe();
        let excluded: Vec<String> = (0..1000).map(|i| format!("connection-{i:06}")).collect();
        let mut appended = 0;
        while !log.append(frame("x"), &excluded) {
            appended += 1;
        }
        assert!(log.is_behind(&slow));
        assert!(appended < 3, "{appended} entries of 1,000 exclusions each fit in 64 KiB");
    }

    #[test]
    fn an_emptied_log_gives_its_storage_back() {
        let log = BroadcastLog::new(1 << 20);
        let mut reader = log.subscribe();
        for _ in 0..1000 {
            log.append(frame("x"), &[]);
        }
        assert!(log.capacity() >= 1000);
        assert_eq!(read_all(&log, &mut reader).unwrap().len(), 1000);
        assert_eq!(log.retained(), 0);
        assert!(log.capacity() <= 64, "capacity {} kept", log.capacity());
    }
}
