//! `fwclusterd`: the daemon of one node. One thread runs the engine and owns the data path;
//! heartbeat receivers, monitors, resource steps, signals and control requests feed it through
//! one channel, and it ticks every heartbeat interval (renew leases, send heartbeats).

use std::{
    collections::{BTreeSet, VecDeque},
    path::PathBuf,
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use cluster_common::{AddressEntry, AddressKey, AddressKind};

use crate::{
    catalog,
    config::{Config, XdpModeConfig},
    control::{GroupOp, Request, Response},
    dataplane::{self, Dataplane, DataplaneError, ModePreference},
    engine::Command,
    engine::{
        ActReason, Action, Cause, DeactReason, Engine, EngineConfig, Event, GroupId, Nanos, Notice,
    },
    flowshare::FlowShares,
    heartbeat::{
        self, Inbound, Transport,
        wire::{Kind, Reject},
    },
    resources::{Reported, Resources, StepOutcome},
    status::{Extras, StatusView, XdpView},
};

/// How many queued datagrams per heartbeat socket the loop reads itself before it judges a
/// silence (a few intervals' worth from every peer; more is a flood, left to the receivers).
const QUEUED_READ_LIMIT: usize = 64;

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
    /// A request on the control socket.
    Control(crate::control::Pending),
}

struct Daemon {
    config: Config,
    takeovers: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    /// The configuration file, read again on SIGHUP.
    config_path: std::path::PathBuf,
    /// Groups an operator placed here, and the file (one name per line) that keeps them
    /// across restarts; written only when the set changes.
    placed: BTreeSet<String>,
    placements: std::path::PathBuf,
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
    answering: crate::resources::Answering,
    inputs: Sender<Input>,
}

fn xdp_preference(mode: XdpModeConfig) -> ModePreference {
    match mode {
        XdpModeConfig::Auto => ModePreference::Auto,
        XdpModeConfig::Native => ModePreference::Native,
        XdpModeConfig::Generic => ModePreference::Generic,
    }
}

/// Runs the daemon until it has left the cluster (SIGTERM) or fails.
pub fn run(options: Options) -> Result<()> {
    let config = Config::load(&options.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (me, node) = config
        .resolve_node(options.node.as_deref())
        .map_err(anyhow::Error::msg)?;
    let key = heartbeat::load_key(&config.cluster.key_file).map_err(anyhow::Error::msg)?;
    let engine_config = EngineConfig::from_config(&config, me);
    let lease = engine_config.lease();

    realtime(config.cluster.realtime_priority);
    // Block the signals in every thread; one thread waits for them.
    let signals = nix::sys::signal::SigSet::from_iter([
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
    ]);
    signals
        .thread_block()
        .context("blocking SIGTERM/SIGINT/SIGHUP")?;
    let (inputs, receiver) = mpsc::channel::<Input>();
    {
        let inputs = inputs.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                while let Ok(signal) = signals.wait() {
                    let input = match signal {
                        nix::sys::signal::Signal::SIGHUP => Input::Reload,
                        _ => Input::Terminate,
                    };
                    if inputs.send(input).is_err() {
                        return;
                    }
                }
            })?;
    }

    dataplane::check_pin_root(&options.pin_root).map_err(anyhow::Error::msg)?;
    // Before anything is attached or configured: the kernel must not answer for a cluster
    // address whatever happens to the XDP program.
    guard_cluster_addresses(&config).context("installing the ARP guard")?;
    let pin_dir = options.pin_root.join(&config.cluster.name).join(&node);
    let node_lock = dataplane::NodeLock::take(&pin_dir, &node).map_err(anyhow::Error::msg)?;
    let mut dataplane = Dataplane::open(&pin_dir, me as u32, false)
        .with_context(|| format!("data path in {}", pin_dir.display()))?;
    attach_interfaces(&config, me, &mut dataplane)?;
    // Pinned leases belong to groups by name, not by position: a configuration that reordered
    // the groups must not have a restarted daemon adopt one group's lease for another.
    std::fs::create_dir_all(&options.state_dir).with_context(|| {
        format!(
            "creating the state directory {}",
            options.state_dir.display()
        )
    })?;
    let slots = options
        .state_dir
        .join(format!("{}.{node}.slots", config.cluster.name));
    let moved = take_moved_leases(&config, &mut dataplane, &slots)?;
    configure_addresses(&config, &mut dataplane)?;
    put_moved_leases(&config, &mut dataplane, moved)?;
    let labels: String = slot_labels(&config)
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    crate::incarnation::write_atomically(&slots, &labels)?;
    let flowshares =
        FlowShares::start(&config, &mut dataplane, lease).context("configuring flow share")?;

    // The engine's clock is CLOCK_MONOTONIC, the data path's: lease ends pass through as they
    // are, and heartbeat send times keep increasing across restarts of the daemon.
    let mut engine = Engine::new(engine_config, dataplane::monotonic_ns());
    let placements = options.run_dir.join(format!("{node}.placed"));
    let placed: BTreeSet<String> = std::fs::read_to_string(&placements)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let adopted = adopt_pinned(&config, &dataplane, &mut engine, &placed)?;

    let store = crate::incarnation::Store::new(&options.state_dir, &config.cluster.name, &node)?;
    let incarnation = store.next(crate::incarnation::wall_clock_ns())?;
    let deliver: heartbeat::Deliver = {
        let inputs = inputs.clone();
        std::sync::Arc::new(move |inbound| inputs.send(Input::Heartbeat(inbound)).is_ok())
    };
    let transport = Transport::start(&config, me, key.clone(), incarnation, store, deliver)
        .context("starting the heartbeat transport")?;
    let answering = crate::resources::Answering::new(config.group.len());
    for (g, adopted) in adopted.iter().enumerate() {
        if *adopted && let Some(lease) = dataplane.lease(g as u32)? {
            answering.set(g, lease.expires_ns);
        }
    }
    let reports: crate::resources::Deliver = {
        let inputs = inputs.clone();
        std::sync::Arc::new(move |reported| {
            let input = match reported {
                Reported::Step(outcome) => Input::Step(outcome),
                Reported::Ipw { group, entry, ok } => Input::Ipw { group, entry, ok },
            };
            inputs.send(input).is_ok()
        })
    };
    let resources = Resources::start(
        &config,
        me,
        reports,
        options.run_dir.join(format!("{node}.exec")),
        answering.clone(),
    )?;
    resources.adopt(&adopted);
    // The peer API on the interconnect addresses, and the control socket, which forwards
    // requests for other servers over it.
    {
        let (pending_tx, pending_rx) = mpsc::channel::<crate::control::Pending>();
        let forward = inputs.clone();
        std::thread::spawn(move || {
            for pending in pending_rx {
                if forward.send(Input::Control(pending)).is_err() {
                    return;
                }
            }
        });
        let api = |n: usize| -> Vec<std::net::SocketAddr> {
            config.server[n]
                .interconnect
                .iter()
                .map(|net| std::net::SocketAddr::from((net.addr(), config.cluster.api_port)))
                .collect()
        };
        crate::peer::serve(&api(me), key.clone(), pending_tx.clone())?;
        let servers: Vec<(String, Vec<std::net::SocketAddr>)> = (0..config.server.len())
            .map(|n| (config.server[n].name.clone(), api(n)))
            .collect();
        let me_name = node.clone();
        let local = pending_tx.clone();
        let remote = move |host: &str, request: &crate::control::Request| {
            let Some((_, addresses)) = servers.iter().find(|(name, _)| name == host) else {
                anyhow::bail!("no server named {host}");
            };
            if host == me_name {
                let (reply, answer) = mpsc::channel();
                local
                    .send(crate::control::Pending {
                        request: request.clone(),
                        reply,
                    })
                    .context("daemon loop gone")?;
                return Ok(answer.recv_timeout(crate::control::ANSWER_TIMEOUT)?);
            }
            crate::peer::request(addresses, &key, &me_name, request)
        };
        crate::control::serve(
            &crate::control::socket_path(&options.run_dir, &node),
            move |pending| pending_tx.send(pending).is_ok(),
            Box::new(remote),
        )?;
    }
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
        let inputs = inputs.clone();
        let (pending, requests) = mpsc::channel::<crate::control::Pending>();
        std::thread::spawn(move || {
            for request in requests {
                if inputs.send(Input::Control(request)).is_err() {
                    return;
                }
            }
        });
        crate::metrics::serve(metrics.listen, pending)?;
    }
    let mut daemon = Daemon {
        takeovers: Default::default(),
        config_path: options.config.clone(),
        placed,
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
    };
    daemon.main_loop(&receiver)
}

/// Real-time scheduling (inherited by every thread started later) and locked memory, so that
/// heartbeats and lease renewals keep their schedule on a busy firewall. Without the privilege
/// the daemon runs on, saying so.
fn realtime(priority: u8) {
    if priority == 0 {
        return;
    }
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: plain system calls on this process.
    let (scheduled, locked) = unsafe {
        (
            libc::sched_setscheduler(0, libc::SCHED_FIFO, &param),
            libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE),
        )
    };
    if scheduled != 0 || locked != 0 {
        tracing::warn!(
            id = catalog::DAEMON_STARTED.id,
            priority,
            error = %std::io::Error::last_os_error(),
            "real-time scheduling or memory locking unavailable; running without"
        );
    }
}

/// Attaches the program to every interface that carries a cluster address of this node.
fn attach_interfaces(config: &Config, me: usize, dataplane: &mut Dataplane) -> Result<()> {
    let mut interfaces = BTreeSet::new();
    for group in &config.group {
        for fip in &group.fip {
            if let Some(i) = &fip.interface {
                interfaces.insert(i.clone());
            }
        }
        for parp in &group.parp {
            interfaces.insert(parp.interface.clone());
        }
    }
    for share in &config.flowshare {
        interfaces.insert(share.interface.clone());
    }
    let local = crate::netif::interface_addresses()?;
    let problems = crate::config::check_against_interfaces(config, me, &local);
    if !problems.is_empty() {
        bail!(
            "the configuration does not fit this node's interfaces:\n  {}",
            problems.join("\n  ")
        );
    }
    // FIPs without an interface name are on the interface of their subnet.
    for group in &config.group {
        for fip in group.fip.iter().filter(|f| f.interface.is_none()) {
            if let Some(name) = crate::netif::subnet_interface(&local, fip.address.addr()) {
                interfaces.insert(name.to_owned());
            }
        }
    }
    let preference = xdp_preference(config.cluster.xdp_mode);
    for interface in interfaces {
        let attachment = dataplane
            .attach(&interface, preference)
            .with_context(|| format!("attaching XDP to {interface}"))?;
        tracing::info!(
            id = catalog::XDP_ATTACHED.id,
            interface,
            mode = attachment.mode.as_str(),
            adopted = attachment.adopted,
            "XDP attached"
        );
    }
    Ok(())
}

/// Installs the ARP guard for every cluster address of the configuration and has the kernel
/// announce from primary addresses on their interfaces (see [`crate::arp_guard`]).
fn guard_cluster_addresses(config: &Config) -> Result<()> {
    let mut addresses = BTreeSet::new();
    let mut interfaces = BTreeSet::new();
    for (g, group) in config.group.iter().enumerate() {
        for (f, fip) in group.fip.iter().enumerate() {
            addresses.insert(fip.address.addr());
            interfaces.insert(crate::netif::fip_interface(config, g, f)?);
        }
        for parp in &group.parp {
            addresses.insert(parp.address);
            interfaces.insert(parp.interface.clone());
        }
    }
    for share in &config.flowshare {
        addresses.insert(share.address.addr());
        interfaces.insert(share.interface.clone());
    }
    crate::arp_guard::install(&config.cluster.name, &addresses)?;
    for interface in &interfaces {
        crate::arp_guard::announce_from_primary(interface)?;
    }
    tracing::info!(
        id = catalog::ARP_GUARD.id,
        table = crate::arp_guard::table_name(&config.cluster.name),
        addresses = addresses.len(),
        interfaces = interfaces.len(),
        "ARP guard installed"
    );
    Ok(())
}

/// Writes every FIP, PARP and shared address into the data path (ownership comes later,
/// by lease).
fn configure_addresses(config: &Config, dataplane: &mut Dataplane) -> Result<()> {
    let mut entries = Vec::new();
    let mut hit_slot = 0u32;
    for (g, group) in config.group.iter().enumerate() {
        for f in 0..group.fip.len() {
            let interface = crate::netif::fip_interface(config, g, f)?;
            entries.push((
                AddressKey {
                    ifindex: dataplane::ifindex(&interface)?,
                    addr: u32::from_ne_bytes(group.fip[f].address.addr().octets()),
                },
                {
                    let mac = crate::netif::interface_mac(&interface)?;
                    AddressEntry {
                        lease: g as u32,
                        hit_slot,
                        mac,
                        kind: AddressKind::Fip as u8,
                        _pad: 0,
                        eth_source: mac,
                        _pad2: [0; 2],
                    }
                },
            ));
            hit_slot += 1;
        }
        for parp in &group.parp {
            let mac = match parp.mac {
                Some(mac) => mac.0,
                None => crate::netif::interface_mac(&parp.interface)?,
            };
            entries.push((
                AddressKey {
                    ifindex: dataplane::ifindex(&parp.interface)?,
                    addr: u32::from_ne_bytes(parp.address.octets()),
                },
                AddressEntry {
                    lease: g as u32,
                    hit_slot,
                    mac,
                    kind: AddressKind::Parp as u8,
                    _pad: 0,
                    eth_source: mac,
                    _pad2: [0; 2],
                },
            ));
            hit_slot += 1;
        }
    }
    entries.extend(crate::flowshare::address_entries(config)?);
    // One replacement: addresses a restarted controller's configuration no longer has go too.
    dataplane.replace_addresses(entries)?;
    Ok(())
}

/// What each lease slot is for: `g NAME` for the groups, then `f NAME` for the flow-share
/// instances (whose slots follow the groups').
fn slot_labels(config: &Config) -> Vec<String> {
    config
        .group
        .iter()
        .map(|g| format!("g {}", g.name))
        .chain(config.flowshare.iter().map(|f| format!("f {}", f.name)))
        .collect()
}

/// Leases of groups whose slot changed since the last start (recorded in `slots`, one label
/// per slot, see [`slot_labels`]), taken out of their old slots: every slot whose label changed
/// is released before the address table maps the slots anew, so that no address is ever
/// answered under another group's lease. Flow-share leases are taken anew at start anyway.
fn take_moved_leases(
    config: &Config,
    dataplane: &mut Dataplane,
    slots: &std::path::Path,
) -> Result<Vec<(String, cluster_common::Lease)>> {
    let previous: Vec<String> = match std::fs::read_to_string(slots) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", slots.display())),
    };
    let labels = slot_labels(config);
    let mut moved = Vec::new();
    for (slot, label) in previous.iter().enumerate() {
        if labels.get(slot) == Some(label) {
            continue;
        }
        if let Some(lease) = dataplane.lease(slot as u32)? {
            if lease.owned != 0
                && let Some(group) = label.strip_prefix("g ")
            {
                moved.push((group.to_owned(), lease));
            }
            dataplane.release(slot as u32, lease.epoch)?;
        }
    }
    Ok(moved)
}

/// Puts the leases [`take_moved_leases`] took into the new slots of their groups (under an
/// epoch above both slots' ones); leases of groups no longer configured stay released.
fn put_moved_leases(
    config: &Config,
    dataplane: &mut Dataplane,
    moved: Vec<(String, cluster_common::Lease)>,
) -> Result<()> {
    for (name, lease) in moved {
        let Some(slot) = config.group.iter().position(|g| g.name == name) else {
            tracing::warn!(
                group = name,
                "lease of a group no longer configured released"
            );
            continue;
        };
        let current = dataplane.lease(slot as u32)?.map_or(0, |l| l.epoch);
        let epoch = lease.epoch.max(current) + 1;
        dataplane.acquire_until(slot as u32, epoch, lease.expires_ns)?;
        tracing::warn!(
            id = catalog::ADOPTED.id,
            group = name,
            slot,
            epoch,
            "the group's pinned lease moved to its new slot (the configuration reordered the groups)"
        );
    }
    Ok(())
}

/// Adopts groups whose pinned lease is still valid, and continues the pinned epochs; returns
/// which groups were adopted.
fn adopt_pinned(
    config: &Config,
    dataplane: &Dataplane,
    engine: &mut Engine,
    placed: &BTreeSet<String>,
) -> Result<Vec<bool>> {
    let now = dataplane::monotonic_ns();
    let mut adopted = vec![false; config.group.len()];
    for (g, adopted) in adopted.iter_mut().enumerate() {
        if let Some(lease) = dataplane.lease(g as u32)? {
            engine.seed_epoch(g, lease.epoch);
            if lease.owned != 0 && lease.expires_ns > now {
                *adopted = true;
                let by_operator = placed.contains(&config.group[g].name);
                engine.adopt(g, lease.epoch, lease.expires_ns, by_operator);
                tracing::warn!(
                    id = catalog::ADOPTED.id,
                    group = config.group[g].name,
                    epoch = lease.epoch,
                    "adopted a group held by the previous process"
                );
            }
        }
    }
    Ok(adopted)
}

impl Daemon {
    /// The engine's time: CLOCK_MONOTONIC, the data path's clock.
    fn now(&self) -> Nanos {
        dataplane::monotonic_ns()
    }

    fn main_loop(&mut self, receiver: &Receiver<Input>) -> Result<()> {
        let interval = self.config.cluster.heartbeat_interval;
        // Heartbeats the loop read from the sockets itself, to be handled before anything else.
        let mut queued: VecDeque<Input> = VecDeque::new();
        // The tick and engine deadline the sockets were last read for: once per wake, so a
        // flood of packets cannot keep the tick from coming.
        let mut read_for: Option<(Instant, Option<Nanos>)> = None;
        let mut next_tick = Instant::now();
        loop {
            // The tick comes first when it is due, however busy the inputs are: a flood of
            // packets must not delay lease renewal and heartbeats. Between ticks the loop also
            // wakes exactly when a peer would time out, so detection does not wait for a tick.
            let engine_deadline = self.engine.next_deadline();
            let deadline = engine_deadline
                .map(|ns| Instant::now() + Duration::from_nanos(ns.saturating_sub(self.now())))
                .filter(|d| *d < next_tick);
            let wake = deadline.unwrap_or(next_tick);
            let wait = wake.saturating_duration_since(Instant::now());
            let tick_due = Instant::now() >= next_tick;
            let mut input = if let Some(input) = queued.pop_front() {
                Some(input)
            } else if tick_due {
                None
            } else if wait.is_zero() {
                // A peer's deadline is due: what already arrived counts first (a heartbeat
                // queued while this thread woke up late must not be judged as silence). A
                // flood cannot hold the deadline off for long: the tick still comes first.
                receiver.try_recv().ok()
            } else {
                match receiver.recv_timeout(wait) {
                    Ok(input) => Some(input),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => bail!("all input channels closed"),
                }
            };
            // Heartbeats still in the kernel count first too: after a stall of the machine this
            // thread often runs before the receiving threads, and the silence it would judge is
            // its own. It reads them itself rather than wait for those threads to be scheduled;
            // a bounded number per socket, so a flood cannot hold detection or renewal off.
            let wake_key = (next_tick, engine_deadline);
            if input.is_none() && (tick_due || wait.is_zero()) && read_for != Some(wake_key) {
                read_for = Some(wake_key);
                queued.extend(
                    self.transport
                        .read_queued(QUEUED_READ_LIMIT)
                        .into_iter()
                        .map(Input::Heartbeat),
                );
                input = queued.pop_front();
            }
            let now = self.now();
            let event = match input {
                None if Instant::now() < next_tick => Event::Timer,
                None => {
                    next_tick += interval;
                    // After a stall, do not fire a burst of ticks.
                    if next_tick < Instant::now() {
                        next_tick = Instant::now() + interval;
                    }
                    let actions = self.engine.handle(now, Event::Tick);
                    if self.execute(actions)? {
                        return Ok(());
                    }
                    let rejoined = self.engine.rejoined(now);
                    if let Err(e) = self.flowshares.renew(&mut self.dataplane, rejoined) {
                        tracing::error!(id = catalog::LEASE_REFUSED.id, error = %e, "flow share");
                    }
                    self.rebalance();
                    self.send(Kind::Heartbeat);
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    continue;
                }
                Some(Input::Heartbeat(Inbound::Packet {
                    from,
                    link,
                    kind,
                    report,
                })) => match kind {
                    Kind::Heartbeat => Event::Heartbeat { from, link, report },
                    Kind::Leaving => Event::Leaving { from },
                },
                Some(Input::Heartbeat(Inbound::Mismatch { from, link, report })) => {
                    Event::Mismatch { from, link, report }
                }
                Some(Input::Heartbeat(Inbound::Rejected {
                    link,
                    source,
                    reason,
                })) => {
                    // Every refusal is counted (clpstat, metrics). Stale packets of a known
                    // peer (a restored link delivers what it queued; a restarted peer's old
                    // packets) are routine: logged at debug level, not as warnings.
                    if matches!(reason, Reject::Replay | Reject::OldIncarnation) {
                        tracing::debug!(
                            id = catalog::PACKET_REJECTED.id,
                            link,
                            %source,
                            reason = %reason,
                            "stale heartbeat packet refused"
                        );
                    } else {
                        tracing::warn!(
                            id = catalog::PACKET_REJECTED.id,
                            link,
                            %source,
                            reason = %reason,
                            "heartbeat packet refused"
                        );
                    }
                    continue;
                }
                Some(Input::Step(outcome)) => outcome.into_event(),
                Some(Input::Ipw { group, entry, ok }) => Event::Ipw { group, entry, ok },
                Some(Input::Tiebreaker { reachable }) => Event::Tiebreaker { reachable },
                Some(Input::LeaseRefused { group }) => Event::LeaseRefused { group },
                Some(Input::Control(pending)) => {
                    let response = self.control(now, pending.request)?;
                    let _ = pending.reply.send(response);
                    continue;
                }
                Some(Input::Terminate) => {
                    tracing::warn!(id = catalog::DAEMON_STOPPING.id, "stopping");
                    Event::Shutdown
                }
                Some(Input::Reload) => {
                    self.reload();
                    continue;
                }
            };
            let actions = self.engine.handle(now, event);
            if self.execute(actions)? {
                return Ok(());
            }
            // Membership may have changed: flow-share buckets move at once, not at the tick.
            self.rebalance();
        }
    }

    /// A refused grant or extension is a resource error of the group: the engine hears of it
    /// (through the loop's own channel, after the actions at hand) and applies the recovery.
    fn lease_op(&self, group: GroupId, result: Result<(), DataplaneError>) {
        if let Err(e) = result {
            tracing::error!(
                id = catalog::LEASE_REFUSED.id,
                group = self.config.group.get(group).map_or("?", |g| g.name.as_str()),
                error = %e,
                "lease operation refused: the data path does not answer for the group here"
            );
            let _ = self.inputs.send(Input::LeaseRefused { group });
        }
    }

    /// SIGHUP: reads the configuration file again. Mail settings apply at once; any other
    /// change would alter what the cluster does (and the digest the nodes compare), so it is
    /// refused as a whole and takes effect when the daemon restarts. A file that does not
    /// validate changes nothing.
    fn reload(&mut self) {
        let file = self.config_path.display().to_string();
        let new = match Config::load(&self.config_path) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(
                    id = catalog::RELOAD_REFUSED.id,
                    file,
                    error = %e,
                    "configuration not reloaded: the file is not valid; the running configuration stays"
                );
                return;
            }
        };
        let changed = self.config.changed_sections(&new);
        if changed.iter().any(|section| *section != "mail") {
            tracing::error!(
                id = catalog::RELOAD_REFUSED.id,
                file,
                sections = changed.join(", "),
                "configuration not reloaded: only [mail] changes apply to a running daemon; \
                 restart it (one node after the other) to apply the others"
            );
            return;
        }
        if changed.is_empty() {
            tracing::info!(
                id = catalog::CONFIG_RELOADED.id,
                file,
                "configuration unchanged"
            );
            return;
        }
        let applied = match (&self.mail, &new.mail) {
            (Some(sender), Some(settings)) => sender.reconfigure(settings.clone()),
            (None, Some(settings)) => crate::mail::start_sender(settings.clone(), &self.node)
                .map(|sender| self.mail = Some(sender)),
            // Dropping the sender ends the thread; queued mail stays in the outbox.
            (_, None) => {
                self.mail = None;
                Ok(())
            }
        };
        match applied {
            Ok(()) => {
                self.config.mail = new.mail;
                tracing::info!(
                    id = catalog::CONFIG_RELOADED.id,
                    file,
                    sections = "mail",
                    "configuration reloaded"
                );
            }
            Err(e) => tracing::error!(
                id = catalog::RELOAD_REFUSED.id,
                file,
                error = format!("{e:#}"),
                "mail settings not applied; the running ones stay"
            ),
        }
    }

    /// Keeps the list of groups an operator placed here up to date, so a restarted daemon
    /// that adopts them does not fail them back.
    fn record_placement(&mut self, notice: &Notice) {
        let (group, placed) = match *notice {
            Notice::GroupOnline { group, cause, .. } => (group, cause == Cause::Command),
            Notice::GroupOffline { group, .. } | Notice::GroupError { group, .. } => (group, false),
            _ => return,
        };
        let name = self.config.group[group].name.clone();
        let changed = if placed {
            self.placed.insert(name)
        } else {
            self.placed.remove(&name)
        };
        if !changed {
            return;
        }
        let body: String = self.placed.iter().map(|n| format!("{n}\n")).collect();
        if let Err(e) = std::fs::write(&self.placements, body) {
            tracing::error!(file = %self.placements.display(), error = %e, "cannot record operator placement");
        }
    }

    fn rebalance(&mut self) {
        let live: Vec<u32> = (0..self.config.server.len())
            .filter(|n| self.engine.shares_flows(*n))
            .map(|n| n as u32)
            .collect();
        if let Err(e) = self.flowshares.rebalance(&mut self.dataplane, &live) {
            tracing::error!(id = catalog::LEASE_REFUSED.id, error = %e, "flow share");
        }
    }

    fn control(&mut self, now: Nanos, request: Request) -> Result<Response> {
        Ok(match request {
            Request::Status => Response::Status {
                view: Box::new(self.status_view(now)?),
            },
            // Answered by the control thread (peer API); never reaches the loop.
            Request::Remote { host, .. } => Response::Error {
                message: format!("{host}: not forwarded"),
            },
            Request::Group { op, group, to } => {
                let Some(g) = self.config.group.iter().position(|c| c.name == group) else {
                    return Ok(Response::Refused {
                        message: format!("no group named {group}"),
                    });
                };
                let to = match to {
                    None => None,
                    Some(name) => match self.config.server_index(&name) {
                        Some(n) => Some(n),
                        None => {
                            return Ok(Response::Refused {
                                message: format!("no server named {name}"),
                            });
                        }
                    },
                };
                let command = match op {
                    GroupOp::Start => Command::Start { group: g },
                    GroupOp::Stop => Command::Stop { group: g },
                    GroupOp::Move => Command::Move { group: g, to },
                };
                match self.engine.command(now, command) {
                    Ok(actions) => {
                        tracing::warn!(id = catalog::COMMAND.id, ?op, group, "command accepted");
                        self.execute(actions)?;
                        Response::Accepted {
                            message: format!("{op:?} of {group} accepted").to_lowercase(),
                        }
                    }
                    Err(refusal) => {
                        tracing::warn!(id = catalog::COMMAND.id, ?op, group, refusal = %refusal, "command refused");
                        Response::Refused {
                            message: refusal.to_string(),
                        }
                    }
                }
            }
        })
    }

    fn status_view(&self, now: Nanos) -> Result<StatusView> {
        let counters = self.dataplane.counters()?;
        let xdp_counters = [
            ("packets", counters.packets),
            ("arp_requests", counters.arp_requests),
            ("arp_replies", counters.arp_replies),
            ("arp_not_owned", counters.arp_not_owned),
            ("arp_lease_expired", counters.arp_lease_expired),
            ("malformed", counters.malformed),
            ("flow_passed", counters.flow_passed),
            ("flow_dropped", counters.flow_dropped),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let extras = Extras {
            xdp: self
                .dataplane
                .attachments()?
                .into_iter()
                .map(|a| XdpView {
                    interface: a.ifname,
                    mode: a.mode.as_str().to_uppercase(),
                })
                .collect(),
            xdp_counters,
            rejected_packets: self
                .transport
                .rejected
                .snapshot()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            exec_pids: self.resources.exec_pids(),
            flow_buckets: self
                .flowshares
                .owned_by(&self.config, self.engine.config().me as u32),
            takeovers: self.takeovers.clone(),
            heartbeats: self
                .transport
                .links
                .snapshot()
                .into_iter()
                .map(|((peer, link), stats)| crate::status::HeartbeatView {
                    peer: self.config.server[peer].name.clone(),
                    link,
                    received: stats.received,
                    max_gap_us: stats.max_gap.as_micros() as u64,
                })
                .collect(),
        };
        Ok(StatusView::build(
            &self.config,
            &self.engine.status(now),
            extras,
        ))
    }

    /// Queues the seed's alert mails: group down here, and takeover here after a failure.
    fn mail(&self, notice: &Notice) {
        let Some(mail) = &self.mail else {
            return;
        };
        let cfg = self.engine.config();
        let host = &cfg.nodes[cfg.me];
        let address = self.config.server[cfg.me]
            .interconnect
            .first()
            .map(|n| n.addr().to_string())
            .unwrap_or_default();
        let group = |g: usize| cfg.groups[g].name.clone();
        let alert = match *notice {
            Notice::GroupOffline {
                group: g,
                reason: DeactReason::Illegal,
                cause,
            }
            | Notice::GroupError { group: g, cause } => Some(crate::mail::group_down(
                &group(g),
                host,
                &address,
                &catalog::cause_text(cfg, cause),
            )),
            Notice::GroupOnline {
                group: g,
                reason: ActReason::Failover,
                cause,
            } => Some(crate::mail::takeover(
                &group(g),
                host,
                &address,
                &catalog::cause_text(cfg, cause),
            )),
            _ => None,
        };
        if let Some(alert) = alert
            && let Err(e) = mail.send(alert)
        {
            tracing::error!(id = catalog::MAIL_RETRY.id, error = %e, "alert not queued");
        }
    }

    fn send(&self, kind: Kind) {
        let now = self.now();
        let engine = &self.engine;
        self.transport
            .send(kind, |peer| engine.report_for(peer, now));
    }

    /// Carries out the engine's actions; returns true when the daemon must exit.
    fn execute(&mut self, actions: Vec<Action>) -> Result<bool> {
        let mut send_now = false;
        for action in actions {
            match action {
                Action::GrantLease {
                    group,
                    epoch,
                    until,
                } => {
                    let result = self.dataplane.acquire_until(group as u32, epoch, until);
                    let granted = result.is_ok();
                    if granted {
                        self.answering.set(group, until);
                    }
                    self.lease_op(group, result);
                    // The first gratuitous ARP right after the map flip (R-XDP-6).
                    if granted {
                        self.resources.announce_now(group);
                    }
                }
                Action::RenewLease {
                    group,
                    epoch,
                    until,
                } => {
                    let result = self.dataplane.extend_to(group as u32, epoch, until);
                    if result.is_ok() {
                        self.answering.set(group, until);
                    }
                    self.lease_op(group, result);
                }
                Action::RevokeLease { group, epoch } => {
                    self.answering.set(group, 0);
                    if let Err(e) = self.dataplane.release(group as u32, epoch) {
                        tracing::error!(id = catalog::LEASE_REFUSED.id, error = %e, "lease release");
                    }
                }
                Action::Activate {
                    group,
                    step,
                    reason,
                } => {
                    self.resources.activate(group, step, reason);
                }
                Action::Deactivate {
                    group,
                    step,
                    reason,
                } => {
                    self.resources.deactivate(group, step, reason);
                }
                Action::Reannounce { group } => self.resources.reannounce(group),
                Action::SendNow => send_now = true,
                Action::ProbeTiebreaker => {
                    let targets = self.config.cluster.tiebreakers.clone();
                    let inputs = self.inputs.clone();
                    std::thread::spawn(move || {
                        let reachable =
                            crate::resources::any_reachable(&targets, Duration::from_millis(500));
                        let _ = inputs.send(Input::Tiebreaker { reachable });
                    });
                }
                Action::Exit => {
                    self.flowshares.stop(&mut self.dataplane);
                    self.send(Kind::Leaving);
                    tracing::warn!(id = catalog::DAEMON_STOPPED.id, "left the cluster");
                    return Ok(true);
                }
                Action::Notify(notice) => {
                    catalog::log_notice(self.engine.config(), &notice);
                    self.mail(&notice);
                    self.record_placement(&notice);
                    if let Notice::GroupOnline {
                        group,
                        reason: ActReason::Failover,
                        cause,
                    } = notice
                    {
                        *self
                            .takeovers
                            .entry(self.config.group[group].name.clone())
                            .or_default()
                            .entry(catalog::cause_label(cause).to_owned())
                            .or_default() += 1;
                    }
                }
            }
        }
        if send_now {
            self.send(Kind::Heartbeat);
        }
        Ok(false)
    }
}
