//! Workers hold the connections. Every process may open at most 20,000 files, so a large run
//! is split over worker processes: the parent re-executes itself (`switchboard-loadtest
//! worker`) once per slice of the connections, writes the slice's [`Plan`] and then
//! [`Command`]s as JSON lines to its stdin, and reads [`Event`]s as JSON lines from its stdout.
//! With one worker the same code runs inside the parent over channels.
//!
//! Counters and stats are cumulative; the parent subtracts snapshots to get a step's share.

use crate::client::{self, Shared};
use crate::stats::{Counters, Stats};
use crate::{Protocol, Transport};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command as Process};
use tokio::sync::{mpsc, watch};

/// Connections whose first attempt succeeded: global index and, when asked for, connection id.
pub(crate) type Opened = Vec<(u64, Option<String>)>;

/// What one worker does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub(crate) worker: usize,
    pub(crate) endpoints: Vec<String>,
    pub(crate) hub: String,
    pub(crate) access_key: String,
    pub(crate) transport: Transport,
    pub(crate) protocol: Protocol,
    /// Global index of the first connection; the slice is `first..first + count`.
    pub(crate) first: u64,
    pub(crate) count: u64,
    /// New connections per second (this worker's share).
    pub(crate) rate: f64,
    pub(crate) sources: u8,
    /// When set, connection `i` is user `{prefix}u{i}`.
    pub(crate) user_prefix: Option<String>,
    /// Negotiate WebSockets too, so connection ids are known (send-to-connection).
    pub(crate) report_ids: bool,
    pub(crate) churn_percent: u64,
    pub(crate) churn_interval_ms: u64,
    /// The target is the baseline server (plain WebSocket, no hub protocol).
    pub(crate) baseline: bool,
    pub(crate) payload: usize,
    /// Second 0 of the per-second series, shared by every worker.
    pub(crate) epoch_us: u64,
    pub(crate) max_seconds: u64,
}

/// What the connections do right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Phase {
    /// Echo invocations per second per connection.
    pub(crate) echo_rate: f64,
    /// Whether churning connections leave and come back.
    pub(crate) churn: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Command {
    Phase(Phase),
    Snapshot,
    Stop,
}

/// A worker's report; `handled` counts the commands it has carried out, so the parent knows
/// what a report already reflects.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Event {
    Progress {
        worker: usize,
        handled: u64,
        counters: Counters,
    },
    /// Every first attempt has finished: who connected, with connection ids when asked for.
    Ready {
        worker: usize,
        opened: Opened,
    },
    Stats {
        worker: usize,
        handled: u64,
        stats: Box<Stats>,
    },
}

const TICK: Duration = Duration::from_millis(100);

/// Runs one worker until `Stop`, the end of `commands`, or its time limit.
pub(crate) async fn run(
    plan: Plan,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    let (phase, phase_rx) = watch::channel(Phase::default());
    let (stop, stopped) = watch::channel(false);
    let worker = plan.worker;
    let deadline = Instant::now() + Duration::from_secs(plan.max_seconds + 60);
    let shared = match Shared::new(plan, phase_rx) {
        Ok(shared) => Arc::new(shared),
        Err(e) => {
            eprintln!("switchboard-loadtest worker {worker}: {e:#}");
            return;
        }
    };
    tokio::spawn(open_all(shared.clone(), stopped));
    let mut tick = tokio::time::interval(TICK);
    let mut handled = 0u64;
    let mut ready = false;
    let count = shared.plan.count;
    while Instant::now() < deadline {
        let mut report = true;
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.settled_changed.notified(), if !ready => report = false,
            command = commands.recv() => {
                match command {
                    None | Some(Command::Stop) => break,
                    Some(Command::Phase(next)) => {
                        let _ = phase.send(next);
                    }
                    Some(Command::Snapshot) => {
                        let _ = events.send(Event::Stats { worker, handled: handled + 1, stats: Box::new(shared.recorder.snapshot()) });
                    }
                }
                handled += 1;
            }
        }
        if !ready && shared.settled.load(Ordering::Relaxed) >= count {
            ready = true;
            let mut opened = shared.opened.lock().unwrap_or_else(|e| e.into_inner()).clone();
            opened.sort_unstable_by_key(|(index, _)| *index);
            let _ = events.send(Event::Ready { worker, opened });
        }
        if report {
            let _ = events.send(Event::Progress { worker, handled, counters: shared.recorder.counters() });
        }
    }
    let _ = stop.send(true);
}

/// Starts the connections of the slice at the plan's rate.
async fn open_all(shared: Arc<Shared>, stopped: watch::Receiver<bool>) {
    let plan = &shared.plan;
    let started = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / plan.rate.max(0.001));
    for n in 0..plan.count {
        if *stopped.borrow() {
            return;
        }
        tokio::spawn(client::run(shared.clone(), plan.first + n, stopped.clone()));
        tokio::time::sleep_until(started + interval.mul_f64((n + 1) as f64)).await;
    }
}

/// The `worker` subcommand: a plan line, then commands, on stdin; events on stdout.
pub(crate) async fn serve_stdio() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let plan: Plan = serde_json::from_str(&lines.next_line().await?.context("no plan on stdin")?)?;
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str(&line) {
                Ok(command) => {
                    if command_tx.send(command).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("switchboard-loadtest worker: bad command: {e}"),
            }
        }
    });
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<Event>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(event) = event_rx.recv().await {
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    });
    run(plan, command_rx, event_tx).await;
    let _ = writer.await;
    Ok(())
}

/// What the parent knows of its workers.
#[derive(Debug, Default)]
pub(crate) struct FleetState {
    progress: Vec<Counters>,
    handled: Vec<u64>,
    ready: Vec<Option<Opened>>,
    stats: Vec<Option<(u64, Stats)>>,
    /// Workers that ended before they were told to.
    gone: Vec<bool>,
}

impl FleetState {
    pub(crate) fn counters(&self) -> Counters {
        let mut sum = Counters::default();
        for c in &self.progress {
            sum.add(c);
        }
        sum
    }

    fn all_handled(&self, seq: u64) -> bool {
        self.handled.iter().zip(&self.gone).all(|(h, gone)| *h >= seq || *gone)
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Progress { worker, handled, counters } => {
                self.progress[worker] = counters;
                self.handled[worker] = handled;
            }
            Event::Ready { worker, opened } => self.ready[worker] = Some(opened),
            Event::Stats { worker, handled, stats } => self.stats[worker] = Some((handled, *stats)),
        }
    }
}

/// The parent's handle on its workers.
pub(crate) struct Fleet {
    commands: Vec<mpsc::UnboundedSender<Command>>,
    state: watch::Receiver<FleetState>,
    children: Vec<Child>,
    sent: u64,
}

impl Fleet {
    /// Starts one worker per plan: in this process when there is one, else as child processes.
    pub(crate) fn start(plans: Vec<Plan>) -> anyhow::Result<Fleet> {
        let n = plans.len();
        let (state_tx, state) = watch::channel(FleetState {
            progress: vec![Counters::default(); n],
            handled: vec![0; n],
            ready: vec![None; n],
            stats: vec![None; n],
            gone: vec![false; n],
        });
        let state_tx = Arc::new(state_tx);
        let mut commands = Vec::new();
        let mut children = Vec::new();
        let in_process = n == 1;
        for plan in plans {
            let worker = plan.worker;
            let (command_tx, command_rx) = mpsc::unbounded_channel();
            commands.push(command_tx);
            let (event_tx, mut event_rx) = mpsc::unbounded_channel();
            if in_process {
                tokio::spawn(run(plan, command_rx, event_tx));
            } else {
                children.push(spawn_child(plan, command_rx, event_tx)?);
            }
            let state_tx = state_tx.clone();
            tokio::spawn(async move {
                while let Some(event) = event_rx.recv().await {
                    state_tx.send_modify(|s| s.apply(event));
                }
                state_tx.send_modify(|s| s.gone[worker] = true);
            });
        }
        Ok(Fleet { commands, state, children, sent: 0 })
    }

    pub(crate) fn state(&self) -> watch::Receiver<FleetState> {
        self.state.clone()
    }

    /// Sends a command to every worker; returns its sequence number.
    fn command(&mut self, command: Command) -> u64 {
        for tx in &self.commands {
            let _ = tx.send(command.clone());
        }
        self.sent += 1;
        self.sent
    }

    pub(crate) fn phase(&mut self, phase: Phase) -> u64 {
        self.command(Command::Phase(phase))
    }

    /// Waits until every worker has finished its first attempts; returns the connections that
    /// opened (global index and connection id), in index order.
    pub(crate) async fn ready(&mut self, deadline: Instant) -> anyhow::Result<Opened> {
        let done = |s: &FleetState| s.ready.iter().zip(&s.gone).all(|(r, gone)| r.is_some() || *gone);
        self.wait(deadline, done).await.context("time limit reached while connecting")?;
        let state = self.state.borrow();
        if state.gone.iter().any(|g| *g) {
            bail!("a worker ended while connecting");
        }
        let mut opened: Opened = state.ready.iter().flatten().flatten().cloned().collect();
        opened.sort_unstable_by_key(|(index, _)| *index);
        Ok(opened)
    }

    /// Waits until every worker has carried out command `seq` and `condition` holds for the
    /// summed counters. `false` at the deadline.
    pub(crate) async fn wait_counters(
        &mut self,
        deadline: Instant,
        seq: u64,
        condition: impl Fn(&Counters) -> bool,
    ) -> bool {
        self.wait(deadline, |s| s.all_handled(seq) && condition(&s.counters())).await.is_some()
    }

    async fn wait(&mut self, deadline: Instant, condition: impl Fn(&FleetState) -> bool) -> Option<()> {
        let wait = self.state.wait_for(|s| condition(s));
        match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), wait).await {
            Ok(Ok(_)) => Some(()),
            _ => None,
        }
    }

    /// Everything measured so far, merged over the workers.
    pub(crate) async fn snapshot(&mut self, deadline: Instant) -> anyhow::Result<Stats> {
        let seq = self.command(Command::Snapshot);
        let answered = |s: &FleetState| {
            s.stats.iter().zip(&s.gone).all(|(st, gone)| st.as_ref().is_some_and(|(h, _)| *h >= seq) || *gone)
        };
        self.wait(deadline, answered).await.context("workers did not report in time")?;
        let state = self.state.borrow();
        let mut merged = Stats::default();
        for (handled, stats) in state.stats.iter().flatten() {
            if *handled >= seq {
                merged.merge(stats);
            }
        }
        Ok(merged)
    }

    /// Tells the workers to close their connections and waits (briefly) for the processes.
    pub(crate) async fn stop(mut self) {
        self.command(Command::Stop);
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}

fn spawn_child(
    plan: Plan,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the harness binary to re-execute")?;
    let mut child = Process::new(exe)
        .arg("worker")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a worker process")?;
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    tokio::spawn(async move {
        let mut line = serde_json::to_vec(&plan).unwrap_or_default();
        line.push(b'\n');
        if stdin.write_all(&line).await.is_err() {
            return;
        }
        while let Some(command) = commands.recv().await {
            let mut line = serde_json::to_vec(&command).unwrap_or_default();
            line.push(b'\n');
            if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str(&line) {
                Ok(event) => {
                    if events.send(event).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("switchboard-loadtest: bad worker line: {e}"),
            }
        }
    });
    Ok(child)
}
