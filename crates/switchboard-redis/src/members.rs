//! Memberships as a replicated log in one Redis stream (see the crate docs): [`RedisStore`]
//! appends, [`run`] applies, in log order, to this node's copy.
//!
//! An entry is `op` (`add`, `remove`, `remove-user`), `hub`, `user`, `group` and, for an add
//! with a TTL, `ttl` in seconds. Its id (`ms-seq`, Redis's clock) gives the time the TTL counts
//! from and the update order of the 100 TTL-less groups rule, so every node applies an entry
//! identically.
//!
//! The log does not grow without bound: every [`SNAPSHOT_EVERY`] entries (by default) the live node with the
//! lowest id stores every membership as of an entry (`{prefix}:members:snapshot`, a hash of `id`
//! and `data`) and trims the log before that entry, in one script that refuses an older
//! snapshot. A node whose place in the log is older than the snapshot (a new node, or one that
//! was away) loads the snapshot first, then reads the log after it.

use crate::Shared;
use crate::interest::Event;
use redis::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchboard_engine::{EngineError, EngineFuture, MembershipStore};
use switchboard_grpc::fanout::v1::ConnectionReply;
use switchboard_grpc::fanout::v1::bus_message::Body;
use switchboard_hub::{UserGroupReader, unix_now};
use tokio::sync::{mpsc, oneshot};

/// Entries read per round trip.
const READ_BATCH: usize = 1000;
/// How often a node reads the log even without being told to (a missed notice costs at most this).
const CATCH_UP: Duration = Duration::from_secs(2);
/// Entries applied between two snapshots.
pub(crate) const SNAPSHOT_EVERY: u64 = 10_000;
/// Catch-up rounds between two purges of expired memberships from this node's copy (a minute).
const PURGE_EVERY: u64 = 30;

/// Stores the snapshot `ARGV[2]` as of entry `ARGV[1]` in `KEYS[1]` and trims the log `KEYS[2]`
/// before that entry, unless the stored snapshot is as new or newer. Returns 1 when stored.
const SNAPSHOT_SCRIPT: &str = r"
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local current = redis.call('HGET', KEYS[1], 'id')
if current then
  local cms, cseq = parse(current)
  local nms, nseq = parse(ARGV[1])
  if nms < cms or (nms == cms and nseq <= cseq) then return 0 end
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'data', ARGV[2])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[1])
return 1
";

/// Writes memberships. See the module docs.
pub(crate) struct RedisStore(pub(crate) Arc<Shared>);

/// A request to apply the log (up to its end).
pub(crate) struct Sync {
    /// Reply to `(node, request)` once applied.
    reply_to: Option<(u64, u64)>,
    done: Option<oneshot::Sender<Result<(), EngineError>>>,
}

impl Sync {
    pub(crate) fn catch_up() -> Sync {
        Sync { reply_to: None, done: None }
    }

    /// A node's notice that it appended an entry: apply the log, then reply to `request` of `node`.
    pub(crate) fn reply_to(node: u64, request: u64) -> Sync {
        Sync { reply_to: Some((node, request)), done: None }
    }
}

/// Applies the log to its end now; resolves once applied here.
pub(crate) async fn catch_up_now(shared: &Shared) -> Result<(), EngineError> {
    let (done, applied) = oneshot::channel();
    let _ = shared.syncs.send(Sync { reply_to: None, done: Some(done) });
    applied.await.unwrap_or(Err(EngineError::ShuttingDown))
}

impl RedisStore {
    /// Appends one entry, then makes every node apply it.
    fn append(&self, fields: Vec<(&'static str, String)>) -> EngineFuture<()> {
        let shared = self.0.clone();
        Box::pin(async move {
            let mut command = redis::cmd("XADD");
            command.arg(shared.names.log()).arg("*");
            for (field, value) in fields {
                command.arg(field).arg(value);
            }
            let entry: String =
                shared.link.query(&command).await.map_err(|e| EngineError::Unavailable(e.to_string()))?;
            // This node first (its own subscription may be down), then every subscribed node.
            catch_up_now(&shared).await?;
            shared.request(&shared.names.members(), Body::MembershipSync(entry)).await.map_err(
                |error| match error {
                    EngineError::Incomplete { .. } => EngineError::Timeout(error.to_string()),
                    error => error,
                },
            )?;
            Ok(())
        })
    }
}

impl MembershipStore for RedisStore {
    fn add(&self, hub: &str, user: &str, group: &str, ttl_secs: Option<u64>) -> EngineFuture<()> {
        let mut fields =
            vec![("op", "add".into()), ("hub", hub.into()), ("user", user.into()), ("group", group.into())];
        if let Some(ttl) = ttl_secs {
            fields.push(("ttl", ttl.to_string()));
        }
        self.append(fields)
    }

    fn remove(&self, hub: &str, user: &str, group: &str) -> EngineFuture<()> {
        self.append(vec![("op", "remove".into()), ("hub", hub.into()), ("user", user.into()), ("group", group.into())])
    }

    fn remove_user(&self, hub: &str, user: &str) -> EngineFuture<()> {
        self.append(vec![("op", "remove-user".into()), ("hub", hub.into()), ("user", user.into())])
    }
}

impl UserGroupReader for RedisStore {
    fn is_member(&self, hub: &str, user: &str, group: &str, now: u64) -> bool {
        self.0.mirror.is_member(hub, user, group, now)
    }

    fn for_each_user_in(&self, hub: &str, group: &str, now: u64, f: &mut dyn FnMut(&str)) {
        self.0.mirror.for_each_user_in(hub, group, now, f)
    }

    fn member_count(&self, hub: &str, group: &str) -> usize {
        self.0.mirror.member_count(hub, group)
    }

    fn hub_membership_count(&self, hub: &str) -> usize {
        self.0.mirror.hub_membership_count(hub)
    }
}

/// Applies the log whenever asked, and every [`CATCH_UP`].
pub(crate) async fn run(shared: Arc<Shared>, mut syncs: mpsc::UnboundedReceiver<Sync>) {
    let mut place = Place { last: "0-0".into(), since_snapshot: 0 };
    let mut batch = Vec::new();
    let mut tick = tokio::time::interval(CATCH_UP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = 0u64;
    loop {
        tokio::select! {
            received = syncs.recv_many(&mut batch, 1024) => if received == 0 { return },
            _ = tick.tick() => {
                rounds += 1;
                if rounds.is_multiple_of(PURGE_EVERY) {
                    shared.mirror.purge_expired(unix_now());
                }
            }
        }
        let result = apply_to_end(&shared, &mut place).await;
        if result.is_ok() && place.since_snapshot >= shared.snapshot_every && shared.nodes.is_lowest(shared.node) {
            match store_snapshot(&shared, &place.last).await {
                Ok(()) => place.since_snapshot = 0,
                Err(error) => tracing::warn!(%error, "cannot store a membership snapshot; the log is trimmed later"),
            }
        }
        if result.is_ok() && batch.iter().any(|sync| sync.reply_to.is_some() || sync.done.is_some()) {
            crate::interest::settled(&shared).await;
        }
        for sync in batch.drain(..) {
            if let Some((node, request)) = sync.reply_to
                && result.is_ok()
            {
                shared.reply(node, request, ConnectionReply { found: true, ..ConnectionReply::default() });
            }
            if let Some(done) = sync.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

/// Where this node is in the log.
struct Place {
    /// The last entry applied (`0-0`: none).
    last: String,
    /// Entries applied since this node last stored or loaded a snapshot.
    since_snapshot: u64,
}

/// Reads and applies every entry after this node's place; first the snapshot, when it is newer
/// (the entries before it are gone). The groups whose members changed are reported to the
/// subscription task.
async fn apply_to_end(shared: &Shared, place: &mut Place) -> Result<(), EngineError> {
    let unavailable = |e: redis::RedisError| EngineError::Unavailable(e.to_string());
    let snapshot_id: Option<String> =
        shared.link.query(redis::cmd("HGET").arg(shared.names.snapshot()).arg("id")).await.map_err(unavailable)?;
    if let Some(id) = snapshot_id.filter(|id| is_after(id, &place.last)) {
        load_snapshot(shared, place).await?;
        tracing::debug!(entry = %id, "membership snapshot loaded");
    }
    loop {
        let command = redis::cmd("XRANGE")
            .arg(shared.names.log())
            .arg(format!("({}", place.last))
            .arg("+")
            .arg("COUNT")
            .arg(READ_BATCH)
            .clone();
        let entries: Value = shared.link.query(&command).await.map_err(unavailable)?;
        let entries = parse_entries(entries);
        let count = entries.len();
        for (id, fields) in entries {
            apply(shared, &id, &fields);
            place.last = id;
        }
        place.since_snapshot += count as u64;
        shared.stats.log_entries_applied.fetch_add(count as u64, Ordering::Relaxed);
        if count < READ_BATCH {
            return Ok(());
        }
    }
}

/// Replaces this node's copy with the stored snapshot.
async fn load_snapshot(shared: &Shared, place: &mut Place) -> Result<(), EngineError> {
    let command = redis::cmd("HMGET").arg(shared.names.snapshot()).arg("id").arg("data").clone();
    let (id, data): (Option<String>, Option<String>) =
        shared.link.query(&command).await.map_err(|e| EngineError::Unavailable(e.to_string()))?;
    let (Some(id), Some(data)) = (id, data) else { return Ok(()) };
    let hubs = serde_json::from_str(&data)
        .map_err(|e| EngineError::Invalid(format!("the membership snapshot at {id} cannot be read: {e}")))?;
    shared.mirror.import(hubs);
    place.last = id;
    place.since_snapshot = 0;
    let _ = shared.subscriptions.send(Event::Recheck);
    Ok(())
}

/// Stores this node's copy as the snapshot as of `last` and trims the log before it.
async fn store_snapshot(shared: &Shared, last: &str) -> redis::RedisResult<()> {
    let data = serde_json::to_string(&shared.mirror.export()).expect("memberships serialize");
    let mut command = redis::cmd("EVAL");
    command.arg(SNAPSHOT_SCRIPT).arg(2).arg(shared.names.snapshot()).arg(shared.names.log()).arg(last).arg(data);
    let _stored: u64 = shared.link.query(&command).await?;
    Ok(())
}

/// Whether stream id `a` comes after `b`.
fn is_after(a: &str, b: &str) -> bool {
    let parse = |id: &str| -> Option<(u64, u64)> {
        let (ms, seq) = id.split_once('-')?;
        Some((ms.parse().ok()?, seq.parse().ok()?))
    };
    parse(a) > parse(b)
}

/// Applies one entry to this node's copy. An entry this release cannot read is skipped.
fn apply(shared: &Shared, id: &str, fields: &[(String, String)]) {
    let field = |name: &str| fields.iter().find(|(f, _)| f == name).map(|(_, v)| v.as_str());
    let (Some(op), Some(hub), Some(user)) = (field("op"), field("hub"), field("user")) else {
        tracing::warn!(entry = id, "a membership log entry without op, hub or user; skipped");
        return;
    };
    let Some((at_ms, order)) = entry_time(id) else { return };
    let mirror = &shared.mirror;
    let changed: Vec<String> = match (op, field("group")) {
        ("add", Some(group)) => {
            let ttl = field("ttl").and_then(|ttl| ttl.parse().ok());
            mirror.add_at(hub, user, group, ttl, at_ms / 1000, order);
            vec![group.to_owned()]
        }
        ("remove", Some(group)) => {
            mirror.remove_now(hub, user, group);
            vec![group.to_owned()]
        }
        ("remove-user", _) => {
            let groups = mirror.groups_of(hub, user, unix_now());
            mirror.remove_user_now(hub, user);
            groups
        }
        _ => {
            tracing::warn!(entry = id, op, "a membership log entry this release cannot apply; skipped");
            return;
        }
    };
    for group in changed {
        let _ = shared.subscriptions.send(Event::Members { hub: hub.to_owned(), group });
    }
}

/// The Redis time (ms) of a stream id `ms-seq`, and its place in the log as one number.
fn entry_time(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some((ms, (ms << 20) | seq.min((1 << 20) - 1)))
}

/// `XRANGE`'s reply as `(id, [(field, value)])`, RESP2 or RESP3.
fn parse_entries(reply: Value) -> Vec<(String, Vec<(String, String)>)> {
    let Value::Array(entries) = reply else { return Vec::new() };
    entries
        .into_iter()
        .filter_map(|entry| {
            let Value::Array(mut parts) = entry else { return None };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id = text(parts.pop()?)?;
            let flat: Vec<String> = match fields {
                Value::Array(values) => values.into_iter().filter_map(text).collect(),
                Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [text(k), text(v)]).flatten().collect(),
                _ => return None,
            };
            let pairs = flat.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
            Some((id, pairs))
        })
        .collect()
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_as_numbers() {
        assert!(is_after("10-0", "9-5"));
        assert!(is_after("9-10", "9-9"));
        assert!(!is_after("9-9", "9-9"));
        assert!(is_after("1-0", "0-0"));
    }

    #[test]
    fn entry_ids_give_time_and_order() {
        assert_eq!(entry_time("1700000000123-0"), Some((1_700_000_000_123, 1_700_000_000_123 << 20)));
        assert!(entry_time("1-2").unwrap().1 < entry_time("1-3").unwrap().1);
        assert!(entry_time("1-999").unwrap().1 < entry_time("2-0").unwrap().1);
        assert_eq!(entry_time("x"), None);
    }

    #[test]
    fn stream_replies_parse_in_both_protocols() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |fields| Value::Array(vec![bulk("5-1"), fields]);
        let flat = Value::Array(vec![bulk("op"), bulk("add"), bulk("hub"), bulk("h")]);
        let map = Value::Map(vec![(bulk("op"), bulk("add")), (bulk("hub"), bulk("h"))]);
        for fields in [flat, map] {
            let parsed = parse_entries(Value::Array(vec![entry(fields)]));
            assert_eq!(parsed, vec![("5-1".into(), vec![("op".into(), "add".into()), ("hub".into(), "h".into())])]);
        }
    }
}
