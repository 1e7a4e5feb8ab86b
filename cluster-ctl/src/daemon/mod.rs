//! `fwclusterd`: the daemon of one node. One thread runs the engine and owns the data path;
//! heartbeat receivers, monitors, resource steps, signals and control requests feed it through
//! one channel ([`Input`]), and it ticks every heartbeat interval (renew leases, send
//! heartbeats).
//!
//! - [`run`] (here) wires it up in order: signals, ARP guard, data path ([`startup`]), adopted
//!   groups ([`adopt`]), heartbeats, resources and the control surfaces ([`wiring`]);
//! - [`event_loop`] turns inputs into engine events, waking as [`wake`] decides;
//! - [`effects`] carries out the engine's actions, [`notices`] its notices (logs, mail,
//!   [`placement`], takeover counts);
//! - [`requests`] answers status requests and operator commands, [`reload`] SIGHUP,
//!   [`restart`] `clpcfg restart` (an in-place restart that moves nothing).

mod adopt;
mod effects;
mod event_loop;
mod notices;
mod placement;
mod reload;
mod requests;
mod restart;
mod session_sync;
mod startup;
mod wake;
mod wiring;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::mpsc::{self, Sender},
};

use anyhow::{Context as _, Result};

use crate::{
    catalog,
    config::Config,
    dataplane::{self, Dataplane},
    flowshare::FlowShares,
    heartbeat::{self, Inbound, Transport},
    resources::{Answering, Resources, StepOutcome},
};
use cluster_engine::{Engine, GroupId, Instant as EngineInstant};
use placement::Placements;
pub use restart::RESTART_EXIT_CODE;

/// How the daemon ended (without an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It left the cluster (SIGTERM): groups handed over.
    Left,
    /// It exits for an in-place restart (`clpcfg restart`): groups held, data path pinned.
    Restart,
}

/// How the daemon was started.
#[derive(Clone, Debug)]
pub struct Options {
    pub config: PathBuf,
    pub node: Option<String>,
    /// Root of the pins (default `/sys/fs/bpf`); the daemon pins under `<root>/<cluster>/<node>`.
    pub pin_root: PathBuf,
    /// Directory of the control socket (default `/run/fwcluster`).
    pub run_dir: PathBuf,
    /// Directory of state that must outlive reboots: incarnations (default
    /// `/var/lib/fwcluster`).
    pub state_dir: PathBuf,
}

/// Everything that wakes the daemon's loop.
#[derive(Debug)]
pub enum Input {
    Heartbeat(Inbound),
    Step(StepOutcome),
    /// An IP watch entry changed its verdict.
    Ipw {
        group: GroupId,
        entry: usize,
        ok: bool,
    },
    Tiebreaker {
        reachable: bool,
    },
    /// The data path refused a lease operation for a group held here.
    LeaseRefused {
        group: GroupId,
    },
    /// SIGTERM or SIGINT.
    Terminate,
    /// SIGHUP: read the configuration file again.
    Reload,
    /// A request from the control socket, the peer API or the metrics endpoint.
    Control(crate::control::Pending),
}

struct Daemon {
    config: Config,
    /// Takeovers after a failure here, per group and cause (clpstat, metrics).
    takeovers: BTreeMap<String, BTreeMap<String, u64>>,
    /// The configuration file, read again on SIGHUP.
    config_path: PathBuf,
    placements: Placements,
    node: String,
    /// The mail thread, which queues alerts on disk and delivers them.
    mail: Option<crate::mail::MailSender>,
    flowshares: FlowShares,
    engine: Engine,
    dataplane: Dataplane,
    transport: Transport,
    resources: Resources,
    /// Held while the daemon runs: one daemon per node.
    _node_lock: dataplane::NodeLock,
    /// What the data path answers for, shared with the announcers.
    answering: Answering,
    inputs: Sender<Input>,
    /// conntrackd, while `[sync]` is configured; stopped with the daemon.
    conntrackd: Option<crate::sync::process::Conntrackd>,
    /// The sync link's judgement, acted on at the tick.
    sync_watch: crate::sync::monitor::SyncWatch,
    /// conntrackd's resend-queue overflows when the sync link was lost.
    sync_overflows_at_loss: Option<u64>,
    /// This daemon's life (clpstat, `clpcfg restart`).
    incarnation: u64,
    /// An in-place restart announced with `clpcfg restart`.
    restart: Option<restart::Announced>,
    /// What became of the last one (clpstat).
    restart_note: Option<String>,
    /// Where the promise of an in-place restart is left for the next life.
    promise_path: PathBuf,
}

/// Runs the daemon until it has left the cluster (SIGTERM), exits for an in-place restart, or
/// fails.
pub fn run(options: Options) -> Result<Exit> {
    let config = Config::load(&options.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (me, node) = config.resolve_node(options.node.as_deref())?;
    let key = heartbeat::load_key(&config.cluster.key_file)?;
    let engine_config = config.engine_config(me);
    let lease = engine_config.lease();

    startup::realtime(config.cluster.realtime_priority);
    let (inputs, receiver) = mpsc::channel::<Input>();
    wiring::spawn_signals(inputs.clone())?;

    dataplane::check_pin_root(&options.pin_root)?;
    // Before anything is attached or configured: the kernel must not answer for a cluster
    // address whatever happens to the XDP program.
    startup::guard_cluster_addresses(&config).context("installing the ARP guard")?;
    let pin_dir = options.pin_root.join(&config.cluster.name).join(&node);
    let node_lock = dataplane::NodeLock::take(&pin_dir, &node)?;
    let mut dataplane = Dataplane::open(&pin_dir, me as u32, false)
        .with_context(|| format!("data path in {}", pin_dir.display()))?;
    startup::attach_interfaces(&config, me, &mut dataplane)?;
    startup::restore_slots(&config, &node, &options.state_dir, &mut dataplane)?;
    let flowshares =
        FlowShares::start(&config, &mut dataplane, lease).context("configuring flow share")?;

    // The engine's clock is CLOCK_MONOTONIC, the data path's: lease ends pass through as they
    // are, and heartbeat send times keep increasing across restarts of the daemon.
    let mut engine = Engine::new(
        engine_config,
        EngineInstant::from_nanos(dataplane::monotonic_ns()),
    );
    let promise_path = restart::promise_path(&options.state_dir, &config.cluster.name, &node);
    let started_at = EngineInstant::from_nanos(dataplane::monotonic_ns());
    if let Some(promise) = restart::load_promise(&promise_path, started_at) {
        engine.keep_promise(promise);
        tracing::warn!(
            id = catalog::RESTART_PROMISE.id,
            promise_ms = promise.saturating_since(started_at).as_millis() as u64,
            "keeping the promise of the previous life"
        );
    }
    let placements = Placements::load(&options.run_dir, &node);
    let (adopted, answering) = adopt::adopt_pinned(&config, &dataplane, &mut engine, &placements)?;

    let store = crate::incarnation::Store::new(&options.state_dir, &config.cluster.name, &node)?;
    let incarnation = store.next(crate::incarnation::wall_clock_ns())?;
    let transport = Transport::start(
        &config,
        me,
        key.clone(),
        incarnation,
        store,
        wiring::heartbeat_deliver(&inputs),
    )
    .context("starting the heartbeat transport")?;
    let resources = Resources::start(
        &config,
        me,
        wiring::resource_deliver(&inputs),
        options.run_dir.join(format!("{node}.exec")),
        answering.clone(),
    )?;
    resources.adopt(&adopted);
    let send_helper_copies = wiring::send_helper_copies(&config, me, key.clone());
    wiring::serve_control(
        &config,
        me,
        &node,
        key,
        &options.run_dir,
        wiring::forward_control(&inputs),
    )?;
    // Session synchronization runs before the loop takes anything: peers' entries arrive in
    // this node's kernel table from now on (R-SYNC-1, R-SYNC-2).
    let runs_nothing = !adopted.iter().any(|a| *a);
    let conntrackd = crate::sync::process::Conntrackd::start(
        &config,
        me,
        &options.run_dir,
        runs_nothing,
        send_helper_copies,
    )
    .context("starting session synchronization (conntrackd)")?;
    tracing::info!(
        id = catalog::DAEMON_STARTED.id,
        node,
        cluster = config.cluster.name,
        incarnation,
        "fwclusterd started"
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let mail = match &config.mail {
        Some(mail) => Some(crate::mail::start_sender(mail.clone(), &node)?),
        None => None,
    };
    if let Some(metrics) = &config.metrics {
        crate::metrics::serve(metrics.listen, wiring::forward_control(&inputs))?;
    }
    let mut daemon = Daemon {
        takeovers: BTreeMap::new(),
        config_path: options.config.clone(),
        placements,
        node,
        mail,
        config,
        flowshares,
        engine,
        dataplane,
        transport,
        resources,
        _node_lock: node_lock,
        answering,
        inputs,
        conntrackd,
        sync_watch: Default::default(),
        sync_overflows_at_loss: None,
        incarnation,
        restart: None,
        restart_note: None,
        promise_path,
    };
    daemon.main_loop(&receiver)
}

impl Daemon {
    /// The engine's time: CLOCK_MONOTONIC, the data path's clock.
    fn now(&self) -> EngineInstant {
        EngineInstant::from_nanos(dataplane::monotonic_ns())
    }
}
