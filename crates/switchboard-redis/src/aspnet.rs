//! The bridge to an ASP.NET Core SignalR Redis backplane (`AddStackExchangeRedis`): each
//! Switchboard node joins the app's backplane as one more hub server, so `IHubContext` calls
//! made on the ASP.NET servers reach Switchboard's clients, and Switchboard's REST calls reach
//! the clients still connected to the ASP.NET servers. The wire format is
//! `switchboard-backplane`'s; this is the I/O around it.
//!
//! ```text
//!  ASP.NET server ──PUBLISH──► app's Redis ──► every node: Hub::apply(Send) → its clients (blob verbatim)
//!  REST call ─► BridgedBus ─► the engine's bus (Switchboard's clients)
//!                          └► PUBLISH the envelope, marked with this deployment's origin
//!                             (Switchboard nodes skip their own deployment's echo)
//! ```
//!
//! Subscriptions follow what the node holds, as an ASP.NET server's do: per bridged hub its
//! `all`, `internal:groups`, and its own `ack` and `return` channels from the start; a
//! `connection:{id}` channel per local connection, `user:{u}` per local user, `group:{g}` per
//! group a local connection joined. Each is confirmed by Redis before the connection or the join
//! it is for is answered. Group commands for local connections are applied and acked; group
//! changes of ASP.NET connections asked through Switchboard are sent as group commands and wait
//! for the owner's ack (30 s, as ASP.NET waits). Client results cross both ways.
//!
//! Classic pub/sub only, as the backplane uses (a Redis Cluster relays it from any node; the
//! receiver count of a PUBLISH then covers one node only, so it is not used there).

use crate::link::{Link, Push, Servers};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use switchboard_backplane::{Ack, Channels, Completion, GroupAction, GroupCommand, Invocation};
use switchboard_engine::{Call, ClientInvocation, EngineError, EngineFuture, Invoked, Listed, NodeBus, Target};
use switchboard_hub::{Frames, InterestKind, InterestSink, Registry, Settled, owner_of};
use switchboard_protocol::{Protocol, json, msgpack};
use tokio::sync::{mpsc, oneshot};

/// How long a group command waits for its ack (ASP.NET gives up after 30 s too).
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a subscription change may take before the waits it holds resolve anyway.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the app's backplane is and which hubs join it.
#[derive(Debug, Clone)]
pub struct AspNetSettings {
    /// `redis://` or `rediss://` of the app's Redis (any node of a Redis Cluster).
    pub url: String,
    pub password: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
    /// StackExchange.Redis's `ChannelPrefix` as the app sets it (often empty).
    pub prefix: String,
    /// Switchboard hub (lower-cased) → the .NET hub type's full name (`Chat.Hubs.ChatHub`).
    pub hubs: Vec<(String, String)>,
    /// Marks what this deployment publishes, so its nodes skip their own echo.
    pub origin: String,
    /// Names this node's server on the backplane (with a random part).
    pub node_id: u64,
}

/// What the bridge counts (metrics).
#[derive(Debug, Default)]
pub struct BridgeStats {
    pub received: AtomicU64,
    pub published: AtomicU64,
    /// Messages that could not be used (not an envelope, an unknown protocol).
    pub refused: AtomicU64,
    pub group_commands_sent: AtomicU64,
    pub group_commands_answered: AtomicU64,
}

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct AspNetBridge(Arc<Bridge>);

struct Bridge {
    link: Link,
    /// This node's server name (ack and return channels).
    server: String,
    origin: String,
    /// Switchboard hub → its channels on the backplane.
    hubs: HashMap<String, Channels>,
    registry: OnceLock<Arc<Registry>>,
    subscriptions: mpsc::UnboundedSender<Event>,
    queue: Mutex<Option<(mpsc::Receiver<Push>, mpsc::UnboundedReceiver<Event>)>>,
    acks: Mutex<HashMap<u32, oneshot::Sender<()>>>,
    /// Client results asked of ASP.NET clients: invocation id → waiter.
    results: Mutex<HashMap<String, oneshot::Sender<Completion>>>,
    next_command: AtomicU32,
    /// The Redis is a Cluster: PUBLISH counts one node's subscribers only.
    cluster: AtomicBool,
    stats: BridgeStats,
}

/// A change for the subscription task.
enum Event {
    Interest { hub: String, kind: InterestKind, name: String, present: bool },
    Settle(oneshot::Sender<()>),
    Resubscribe,
}

impl AspNetBridge {
    /// Connects to the app's Redis and subscribes to every bridged hub's fixed channels.
    pub async fn connect(settings: &AspNetSettings) -> Result<AspNetBridge, crate::StartError> {
        if settings.hubs.is_empty() {
            return Err(crate::StartError::Invalid(
                "name at least one hub: --aspnet-hub chat=Chat.Hubs.ChatHub".into(),
            ));
        }
        let servers = Servers::Standalone(settings.url.clone());
        // A standalone Redis never ends a subscription on its own: nothing reads `_ended`.
        let (link, pushes, _ended) = Link::open(servers, settings.password.clone(), settings.ca_pem.clone())
            .await
            .map_err(|e| crate::StartError::Unreachable(e.to_string()))?;
        let server = format!(
            "switchboard-{}_{}",
            settings.node_id,
            switchboard_hub::new_invocation_id().replace(['-', '_'], "x")
        );
        let hubs = settings
            .hubs
            .iter()
            .map(|(hub, hub_type)| (hub.clone(), Channels::new(&settings.prefix, hub_type)))
            .collect();
        let (subscriptions, events) = mpsc::unbounded_channel();
        let bridge = Bridge {
            link,
            server,
            origin: settings.origin.clone(),
            hubs,
            registry: OnceLock::new(),
            subscriptions,
            queue: Mutex::new(Some((pushes, events))),
            acks: Mutex::default(),
            results: Mutex::default(),
            next_command: AtomicU32::new(1),
            cluster: AtomicBool::new(false),
            stats: BridgeStats::default(),
        };
        let info: String = bridge.link.query(redis::cmd("INFO").arg("cluster")).await.unwrap_or_default();
        bridge.cluster.store(info.contains("cluster_enabled:1"), Ordering::Relaxed);
        bridge
            .link
            .subscribe(&bridge.fixed_channels())
            .await
            .map_err(|e| crate::StartError::Unreachable(e.to_string()))?;
        Ok(AspNetBridge(Arc::new(bridge)))
    }

    /// What the registry reports to: connections, users and groups become subscriptions.
    pub fn interest(&self) -> Arc<dyn InterestSink> {
        Arc::new(Sink(self.0.clone()))
    }

    /// Starts handling the backplane for `registry`'s hubs.
    pub fn start(&self, registry: Arc<Registry>) {
        let _ = self.0.registry.set(registry);
        let Some((pushes, events)) = self.0.queue.lock().take() else { return };
        tokio::spawn(receive(self.0.clone(), pushes));
        tokio::spawn(subscribe(self.0.clone(), events));
        tokio::spawn(reconnect(self.0.clone()));
    }

    /// `bus`, with every call on a bridged hub also made on the backplane.
    pub fn wrap(&self, bus: Arc<dyn NodeBus>) -> Arc<dyn NodeBus> {
        Arc::new(BridgedBus { inner: bus, bridge: self.0.clone() })
    }

    pub fn stats(&self) -> &BridgeStats {
        &self.0.stats
    }

    /// This node's server name on the backplane.
    pub fn server(&self) -> &str {
        &self.0.server
    }

    pub fn stop(&self) {
        self.0.link.close();
    }
}

impl Bridge {
    fn fixed_channels(&self) -> Vec<String> {
        let each = |c: &Channels| [c.all(), c.group_commands(), c.acks(&self.server), c.returns(&self.server)];
        self.hubs.values().flat_map(each).collect()
    }

    /// The channel `kind` and `name` subscribe to on `hub`, if it is bridged.
    fn channel_of(&self, hub: &str, kind: InterestKind, name: &str) -> Option<String> {
        let channels = self.hubs.get(hub)?;
        match kind {
            InterestKind::User => Some(channels.user(name)),
            InterestKind::Group => Some(channels.group(name)),
            InterestKind::Connection => Some(channels.connection(name)),
            InterestKind::Hub => None,
        }
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<usize, EngineError> {
        let receivers =
            self.link.publish(channel, payload).await.map_err(|e| EngineError::Unavailable(e.to_string()))?;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(receivers)
    }

    /// The envelope of `frames` as this deployment publishes it.
    fn envelope(&self, frames: &Frames, excluded: Vec<String>, client_result: Option<(String, String)>) -> Vec<u8> {
        let frames = [(Protocol::Json, "json"), (Protocol::MessagePack, "messagepack")]
            .into_iter()
            .filter_map(|(protocol, name)| Some((name.to_owned(), frames.get(protocol)?.clone())))
            .collect();
        Invocation { excluded, frames, client_result, origin: Some(self.origin.clone()) }.encode()
    }
}

/// The registry's interest, for the subscription task.
struct Sink(Arc<Bridge>);

impl InterestSink for Sink {
    fn report(&self, hub: &str, kind: InterestKind, name: &str, present: bool) {
        if self.0.hubs.contains_key(hub) {
            let event = Event::Interest { hub: hub.to_owned(), kind, name: name.to_owned(), present };
            let _ = self.0.subscriptions.send(event);
        }
    }

    fn settled(&self) -> Settled {
        let (done, settled) = oneshot::channel();
        let sent = self.0.subscriptions.send(Event::Settle(done)).is_ok();
        Box::pin(async move { sent && tokio::time::timeout(SUBSCRIBE_TIMEOUT * 2, settled).await.is_ok() })
    }

    fn wants_connections(&self) -> bool {
        true
    }
}

/// Keeps the subscriptions equal to what the node holds, each batch confirmed before the waits
/// reported in it resolve.
async fn subscribe(bridge: Arc<Bridge>, mut events: mpsc::UnboundedReceiver<Event>) {
    let mut subscribed: HashSet<String> = HashSet::new();
    let mut batch = Vec::new();
    while events.recv_many(&mut batch, 1024).await > 0 {
        let (mut add, mut remove, mut waiting, mut everything) = (Vec::new(), Vec::new(), Vec::new(), false);
        for event in batch.drain(..) {
            match event {
                Event::Interest { hub, kind, name, present } => {
                    let Some(channel) = bridge.channel_of(&hub, kind, &name) else { continue };
                    if present && subscribed.insert(channel.clone()) {
                        add.push(channel);
                    } else if !present && subscribed.remove(&channel) {
                        remove.push(channel);
                    }
                }
                Event::Settle(done) => waiting.push(done),
                Event::Resubscribe => everything = true,
            }
        }
        if everything {
            add = bridge.fixed_channels().into_iter().chain(subscribed.iter().cloned()).collect();
        }
        let changes = async {
            if !add.is_empty() {
                bridge.link.subscribe(&add).await?;
            }
            if !remove.is_empty() {
                bridge.link.unsubscribe(&remove).await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, changes).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot change the ASP.NET backplane subscriptions"),
            Err(_) => tracing::warn!("the ASP.NET backplane did not confirm its subscriptions in time"),
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

/// Rebuilds a dropped connection and subscribes to everything again (messages published
/// meanwhile are lost, as on the ASP.NET servers).
async fn reconnect(bridge: Arc<Bridge>) {
    loop {
        bridge.link.disconnected.notified().await;
        tracing::warn!("lost the ASP.NET backplane's Redis; reconnecting");
        bridge.link.reconnect().await;
        if bridge.subscriptions.send(Event::Resubscribe).is_err() {
            return;
        }
    }
}

/// What a message's channel is, on which hub.
enum Addressed {
    Send(Target),
    GroupCommand,
    Ack,
    Return,
    /// Another server's ack or return channel, or a suffix this node does not use.
    Other,
}

/// Handles every message of the backplane, in arrival order.
async fn receive(bridge: Arc<Bridge>, mut pushes: mpsc::Receiver<Push>) {
    while let Some((channel, payload)) = pushes.recv().await {
        bridge.stats.received.fetch_add(1, Ordering::Relaxed);
        let Ok(channel) = std::str::from_utf8(&channel) else { continue };
        let Some((hub, addressed)) = address(&bridge, channel) else { continue };
        match addressed {
            Addressed::Send(target) => deliver(&bridge, &hub, target, &payload),
            Addressed::GroupCommand => match GroupCommand::decode(&payload) {
                Ok(command) => group_command(&bridge, &hub, command),
                Err(_) => refused(&bridge, channel),
            },
            Addressed::Ack => match Ack::decode(&payload) {
                Ok(ack) => {
                    if let Some(waiter) = bridge.acks.lock().remove(&ack.id) {
                        let _ = waiter.send(());
                    }
                }
                Err(_) => refused(&bridge, channel),
            },
            Addressed::Return => match Completion::decode(&payload) {
                Ok(completion) => {
                    let id = completion_id(&completion);
                    if let Some(waiter) = id.and_then(|id| bridge.results.lock().remove(&id)) {
                        let _ = waiter.send(completion);
                    }
                }
                Err(_) => refused(&bridge, channel),
            },
            Addressed::Other => {}
        }
    }
}

fn refused(bridge: &Bridge, channel: &str) {
    bridge.stats.refused.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(channel, "a backplane message that is not what its channel carries; ignored");
}

/// The hub and meaning of a backplane channel of this node.
fn address(bridge: &Bridge, channel: &str) -> Option<(String, Addressed)> {
    for (hub, channels) in &bridge.hubs {
        let base = channels.all();
        let base = &base[..base.len() - "all".len()];
        let Some(suffix) = channel.strip_prefix(base) else { continue };
        let addressed = if suffix == "all" {
            Addressed::Send(Target::All)
        } else if suffix == "internal:groups" {
            Addressed::GroupCommand
        } else if suffix.strip_prefix("internal:ack:") == Some(&bridge.server) {
            Addressed::Ack
        } else if suffix.strip_prefix("internal:return:") == Some(&bridge.server) {
            Addressed::Return
        } else if let Some(group) = suffix.strip_prefix("group:") {
            Addressed::Send(Target::Group(group.to_owned()))
        } else if let Some(user) = suffix.strip_prefix("user:") {
            Addressed::Send(Target::User(user.to_owned()))
        } else if let Some(id) = suffix.strip_prefix("connection:") {
            Addressed::Send(Target::Connection(id.to_owned()))
        } else {
            Addressed::Other
        };
        return Some((hub.clone(), addressed));
    }
    None
}

/// An ASP.NET server's send: written to this node's targets, each connection getting the
/// sender's frame for its protocol byte for byte (a protocol the sender did not include is
/// converted from the other). A client-result invocation waits for the client's answer and
/// publishes it on the invoker's return channel.
fn deliver(bridge: &Arc<Bridge>, hub: &str, target: Target, payload: &[u8]) {
    let Ok(invocation) = Invocation::decode(payload) else { return refused(bridge, hub) };
    if invocation.origin.as_deref() == Some(bridge.origin.as_str()) {
        return; // this deployment's own publish: its clients were reached by its own bus
    }
    let frames = Frames::prebuilt(invocation.frame("json").cloned(), invocation.frame("messagepack").cloned());
    let Some(registry) = bridge.registry.get() else { return };
    let Some(local) = registry.get(hub) else { return };
    match (&target, invocation.client_result) {
        (Target::Connection(id), Some((invocation_id, return_channel))) => {
            let Some(conn) = local.connection(id) else { return };
            let channel = bridge.hubs[hub].prefixed(&return_channel);
            let (bridge, protocol) = (bridge.clone(), conn.protocol);
            let answer_id = invocation_id.clone();
            let waiter = Box::new(move |frame: Option<Bytes>| {
                let frame = frame.unwrap_or_else(|| {
                    let mut out = Vec::new();
                    protocol.encode_completion_error(&answer_id, "Connection disconnected.", &mut out);
                    Bytes::from(out)
                });
                let completion = Completion { protocol: protocol.name().to_owned(), frame };
                tokio::spawn(async move {
                    if let Err(error) = bridge.publish(&channel, &completion.encode()).await {
                        tracing::warn!(%error, "cannot return a client result to the ASP.NET backplane");
                    }
                });
            });
            local.invoke(id, &invocation_id, &frames, waiter);
        }
        (_, _) => {
            local.apply(&Call::Send { target, excluded: invocation.excluded, frames });
        }
    }
}

/// A group change sent to every server: applied and acked when the connection is this node's
/// (after the group's subscription is confirmed), ignored otherwise.
fn group_command(bridge: &Arc<Bridge>, hub: &str, command: GroupCommand) {
    let Some(registry) = bridge.registry.get().cloned() else { return };
    let Some(local) = registry.get(hub) else { return };
    if local.connection(&command.connection_id).is_none() {
        return;
    }
    let (connection, group) = (command.connection_id.clone(), command.group.clone());
    let call = match command.action {
        GroupAction::Add => Call::AddToGroup { connection, group },
        GroupAction::Remove => Call::RemoveFromGroup { connection, group },
    };
    local.apply(&call);
    let (bridge, hub) = (bridge.clone(), hub.to_owned());
    tokio::spawn(async move {
        registry.interest_settled().await;
        let ack_channel = bridge.hubs[&hub].acks(&command.server);
        bridge.stats.group_commands_answered.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = bridge.publish(&ack_channel, &Ack { id: command.id }.encode()).await {
            tracing::warn!(%error, "cannot ack a group command on the ASP.NET backplane");
        }
    });
}

/// The invocation id a completion answers, read from its frame.
fn completion_id(completion: &Completion) -> Option<String> {
    match Protocol::from_name(&completion.protocol)? {
        Protocol::Json => json::decode(&completion.frame).ok()?.0.invocation_id().map(str::to_owned),
        Protocol::MessagePack => msgpack::decode(&completion.frame).ok()?.0.invocation_id().map(str::to_owned),
    }
}

/// Whether a connection id was made by a Switchboard node (it names its owner): anything else
/// is an ASP.NET server's connection.
fn is_switchboard_connection(id: &str) -> bool {
    owner_of(id).is_some()
}

/// The engine's bus, with every call on a bridged hub also made on the backplane.
struct BridgedBus {
    inner: Arc<dyn NodeBus>,
    bridge: Arc<Bridge>,
}

impl NodeBus for BridgedBus {
    fn call(&self, hub: &str, call: Call) -> EngineFuture<bool> {
        let Some(channels) = self.bridge.hubs.get(hub).cloned() else { return self.inner.call(hub, call) };
        let (inner, bridge, hub) = (self.inner.clone(), self.bridge.clone(), hub.to_owned());
        Box::pin(async move {
            match call {
                Call::Send { target: Target::Connection(id), excluded, frames } if !is_switchboard_connection(&id) => {
                    let envelope = bridge.envelope(&frames, excluded, None);
                    Ok(bridge.publish(&channels.connection(&id), &envelope).await? > 0)
                }
                Call::Send { target, excluded, frames } => {
                    let envelope = bridge.envelope(&frames, excluded.clone(), None);
                    let channel = match &target {
                        Target::All => Some(channels.all()),
                        Target::User(user) => Some(channels.user(user)),
                        Target::Group(group) => Some(channels.group(group)),
                        Target::Connection(_) => None,
                    };
                    let here = inner.call(&hub, Call::Send { target, excluded, frames }).await?;
                    let there = match channel {
                        Some(channel) => bridge.publish(&channel, &envelope).await? > 0,
                        None => false,
                    };
                    Ok(here || there)
                }
                Call::AddToGroup { connection, group } if !is_switchboard_connection(&connection) => {
                    group_change(&bridge, &channels, GroupAction::Add, connection, group).await
                }
                Call::RemoveFromGroup { connection, group } if !is_switchboard_connection(&connection) => {
                    group_change(&bridge, &channels, GroupAction::Remove, connection, group).await
                }
                call => inner.call(&hub, call).await,
            }
        })
    }

    fn list(&self, hub: &str, target: Target) -> EngineFuture<Vec<Listed>> {
        self.inner.list(hub, target)
    }

    fn http_address(&self, node: u64) -> Option<String> {
        self.inner.http_address(node)
    }

    fn invoke(&self, hub: &str, invocation: ClientInvocation) -> EngineFuture<Invoked> {
        let channels = self.bridge.hubs.get(hub).cloned();
        let Some(channels) = channels.filter(|_| !is_switchboard_connection(&invocation.connection)) else {
            return self.inner.invoke(hub, invocation);
        };
        let bridge = self.bridge.clone();
        Box::pin(async move {
            let (done, answered) = oneshot::channel();
            bridge.results.lock().insert(invocation.invocation_id.clone(), done);
            let return_channel = channels.returns_unprefixed(&bridge.server);
            let client_result = Some((invocation.invocation_id.clone(), return_channel));
            let envelope = bridge.envelope(&invocation.frames, Vec::new(), client_result);
            let receivers = bridge.publish(&channels.connection(&invocation.connection), &envelope).await;
            let forget = || bridge.results.lock().remove(&invocation.invocation_id);
            match receivers {
                // No ASP.NET server holds it (PUBLISH counts only one node's on a Cluster).
                Ok(0) if !bridge.cluster.load(Ordering::Relaxed) => {
                    forget();
                    return Ok(Invoked::NotFound);
                }
                Err(error) => {
                    forget();
                    return Err(error);
                }
                Ok(_) => {}
            }
            match tokio::time::timeout(invocation.timeout, answered).await {
                Ok(Ok(completion)) => match Protocol::from_name(&completion.protocol) {
                    Some(protocol) => Ok(Invoked::Completed { protocol, frame: completion.frame }),
                    None => Ok(Invoked::Disconnected),
                },
                _ => {
                    forget();
                    Ok(Invoked::TimedOut)
                }
            }
        })
    }
}

/// Sends a group command for an ASP.NET server's connection and waits for its owner's ack;
/// whether it came in time.
async fn group_change(
    bridge: &Bridge,
    channels: &Channels,
    action: GroupAction,
    connection_id: String,
    group: String,
) -> Result<bool, EngineError> {
    let id = bridge.next_command.fetch_add(1, Ordering::Relaxed);
    let (done, acked) = oneshot::channel();
    bridge.acks.lock().insert(id, done);
    let command = GroupCommand { id, server: bridge.server.clone(), action, group, connection_id };
    bridge.stats.group_commands_sent.fetch_add(1, Ordering::Relaxed);
    if let Err(error) = bridge.publish(&channels.group_commands(), &command.encode()).await {
        bridge.acks.lock().remove(&id);
        return Err(error);
    }
    let acked = tokio::time::timeout(ACK_TIMEOUT, acked).await.is_ok_and(|ack| ack.is_ok());
    bridge.acks.lock().remove(&id);
    Ok(acked)
}
