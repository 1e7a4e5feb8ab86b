//! The resources of a group (SPEC §3): FIP, PARP, EXEC steps, and the IPW monitors.
//!
//! Steps run on their own threads and report to the daemon's loop; the engine guarantees one
//! outstanding step per group, in order (FIP → PARP → EXEC, reverse on deactivation). Data-path
//! ownership is not a step: the engine flips the lease before the first step and revokes it
//! before the first deactivation step.

mod arp;
mod exec;
mod icmp;
mod ndp;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use ipnet::IpNet;

pub use icmp::{any_reachable, ping_once};

use crate::config::Config;
use cluster_engine::{ActReason, DeactReason, Event, GroupId};

/// What the steps and monitors report.
#[derive(Debug)]
pub enum Reported {
    /// The answer to a step, or the death of a monitored process.
    Step(StepOutcome),
    /// An IP watch entry changed its verdict.
    Ipw {
        group: GroupId,
        entry: usize,
        ok: bool,
    },
}

/// Where the resources hand what they report (straight into the daemon's loop); false when
/// nobody listens any more. Like the heartbeat transport, the resources never name the daemon.
pub type Deliver = Arc<dyn Fn(Reported) -> bool + Send + Sync>;

/// The result of a step, for the daemon's loop.
#[derive(Debug)]
pub struct StepOutcome {
    pub group: GroupId,
    pub step: usize,
    pub ok: bool,
    /// A monitored process of an online group died (not the answer to a step).
    pub died: bool,
}

impl StepOutcome {
    pub fn into_event(self) -> Event {
        if self.died {
            Event::StepFailed {
                group: self.group,
                step: self.step,
            }
        } else {
            Event::StepDone {
                group: self.group,
                step: self.step,
                ok: self.ok,
            }
        }
    }
}

/// Sends the daemon's loop the answer to an activation or deactivation it asked for.
fn answer_step(deliver: &Deliver, group: GroupId, step: usize, ok: bool) {
    deliver(Reported::Step(StepOutcome {
        group,
        step,
        ok,
        died: false,
    }));
}

/// A FIP step.
#[derive(Clone, Debug)]
struct Fip {
    address: IpNet,
    interface: String,
    label: String,
    arp_count: u32,
    ping_count: u32,
    refresh: Duration,
    /// IPv6: the Router flag of its advertisements.
    router: bool,
}

/// A PARP step.
#[derive(Clone, Debug)]
struct Parp {
    address: IpAddr,
    interface: String,
    mac: Option<[u8; 6]>,
    arp_count: u32,
    router: bool,
}

#[derive(Clone, Debug)]
enum Step {
    Fip(Fip),
    Parp(Parp),
    Exec(exec::Exec),
}

/// Announcements to repeat while active (FIP refresh).
#[derive(Default)]
struct Announcer {
    /// (group, step) → (next announcement, period)
    active: BTreeMap<(GroupId, usize), (Instant, Duration)>,
}

/// Until when this node answers for each group in the data path (CLOCK_MONOTONIC ns, 0: not
/// at all), as its lease operations left it. Every gratuitous ARP — the first, the repeats
/// of `arp_count`, the refreshes, the re-announcements — goes out only while it answers: a
/// node whose group moved away, or whose lease ran out, never announces it.
#[derive(Clone, Debug)]
pub struct Answering(Arc<Vec<std::sync::atomic::AtomicU64>>);

impl Answering {
    pub fn new(groups: usize) -> Self {
        Self(Arc::new(
            (0..groups)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        ))
    }

    /// The data path answers for `group` until `until` (0: no longer).
    pub fn set(&self, group: GroupId, until: u64) {
        if let Some(slot) = self.0.get(group) {
            slot.store(until, std::sync::atomic::Ordering::Release);
        }
    }

    /// Whether the data path answers for `group` now.
    pub fn now(&self, group: GroupId) -> bool {
        self.0.get(group).is_some_and(|slot| {
            slot.load(std::sync::atomic::Ordering::Acquire) > crate::dataplane::monotonic_ns()
        })
    }
}

/// Runs resource steps and monitors for one node.
pub struct Resources {
    steps: Vec<Vec<Step>>,
    deliver: Deliver,
    env: exec::Env,
    execs: Arc<Mutex<exec::Running>>,
    announcer: Arc<Mutex<Announcer>>,
    answering: Answering,
}

impl Resources {
    /// Prepares the steps of every group and starts the IPW monitors (type ASR: they run on
    /// every node, so the standby's health is known too).
    /// Monitored processes are recorded in `state_dir`.
    pub fn start(
        config: &Config,
        me: usize,
        deliver: Deliver,
        state_dir: std::path::PathBuf,
        answering: Answering,
    ) -> Result<Self> {
        let mut steps = Vec::new();
        for (g, group) in config.group.iter().enumerate() {
            let mut list = Vec::new();
            let mut labels: BTreeMap<String, usize> = BTreeMap::new();
            for f in 0..group.fip.len() {
                let fip = &group.fip[f];
                let interface = crate::netif::fip_interface(config, g, f)?;
                // Labels are IPv4's (`eth0:1`); IPv6 addresses have none.
                let label = if fip.address.addr().is_ipv4() {
                    let n = labels.entry(interface.clone()).or_insert(0);
                    *n += 1;
                    format!("{interface}:{n}")
                } else {
                    interface.clone()
                };
                list.push(Step::Fip(Fip {
                    address: fip.address,
                    interface,
                    label,
                    arp_count: fip.arp_count,
                    ping_count: fip.ping_count,
                    refresh: fip.arp_refresh,
                    router: fip.router,
                }));
            }
            for parp in &group.parp {
                list.push(Step::Parp(Parp {
                    address: parp.address,
                    interface: parp.interface.clone(),
                    mac: parp.mac.map(|m| m.0),
                    arp_count: parp.arp_count,
                    router: parp.router,
                }));
            }
            for (k, e) in group.exec.iter().enumerate() {
                list.push(Step::Exec(exec::Exec {
                    name: format!("{}-exec{k}", group.name),
                    start: e.start.clone(),
                    stop: e.stop.clone(),
                    monitor: e.monitor,
                    timeout: e.timeout,
                }));
            }
            steps.push(list);
            for (entry, ipw) in group.ipw.iter().enumerate() {
                let deliver = deliver.clone();
                let monitor = icmp::Monitor {
                    targets: ipw.targets.clone(),
                    interval: ipw.interval,
                    timeout: ipw.timeout,
                    retry: ipw.retry,
                };
                let name = format!("{}-ipw{entry}", group.name);
                std::thread::Builder::new()
                    .name(format!("ipw-{g}-{entry}"))
                    .spawn(move || {
                        monitor.run(&name, |ok| {
                            deliver(Reported::Ipw {
                                group: g,
                                entry,
                                ok,
                            })
                        })
                    })?;
            }
        }
        let announcer = Arc::new(Mutex::new(Announcer::default()));
        let resources = Self {
            steps,
            deliver,
            env: exec::Env {
                cluster: config.cluster.name.clone(),
                node: config.server[me].name.clone(),
                groups: config.group.iter().map(|g| g.name.clone()).collect(),
            },
            execs: Arc::new(Mutex::new(exec::Running::new(exec::Records::open(
                state_dir,
            )?))),
            announcer: announcer.clone(),
            answering: answering.clone(),
        };
        let refresher = RefreshLoop {
            steps: resources.steps.clone(),
            announcer,
            answering,
        };
        std::thread::Builder::new()
            .name("arp-refresh".into())
            .spawn(move || refresher.run())?;
        Ok(resources)
    }

    fn report(&self, group: GroupId, step: usize, ok: bool) {
        answer_step(&self.deliver, group, step, ok);
    }

    /// Activates one step (asynchronously; the outcome comes through the channel).
    pub fn activate(&self, group: GroupId, step: usize, reason: ActReason) {
        let Some(spec) = self.steps.get(group).and_then(|s| s.get(step)).cloned() else {
            self.report(group, step, false);
            return;
        };
        let deliver = self.deliver.clone();
        let env = self.env.clone();
        let execs = self.execs.clone();
        let announcer = self.announcer.clone();
        let answering = self.answering.clone();
        std::thread::spawn(move || {
            let result = match &spec {
                Step::Fip(fip) => activate_fip(fip, group, &answering),
                Step::Parp(parp) => activate_parp(parp, group, &answering),
                Step::Exec(exec) => {
                    exec::start(exec, &env, group, reason, &execs, step, deliver.clone())
                }
            };
            let ok = match result {
                Ok(()) => {
                    tracing::info!(
                        id = crate::catalog::STEP_DONE.id,
                        group,
                        step,
                        what = describe(&spec),
                        "activated"
                    );
                    if let Step::Fip(fip) = &spec
                        && !fip.refresh.is_zero()
                    {
                        announcer
                            .lock()
                            .expect("announcer")
                            .active
                            .insert((group, step), (Instant::now() + fip.refresh, fip.refresh));
                    }
                    true
                }
                Err(e) => {
                    tracing::error!(
                        id = crate::catalog::STEP_FAILED.id,
                        group,
                        step,
                        what = describe(&spec),
                        error = format!("{e:#}"),
                        "activation failed"
                    );
                    false
                }
            };
            answer_step(&deliver, group, step, ok);
        });
    }

    /// Deactivates one step (asynchronously).
    pub fn deactivate(&self, group: GroupId, step: usize, reason: DeactReason) {
        let Some(spec) = self.steps.get(group).and_then(|s| s.get(step)).cloned() else {
            self.report(group, step, false);
            return;
        };
        self.announcer
            .lock()
            .expect("announcer")
            .active
            .remove(&(group, step));
        let deliver = self.deliver.clone();
        let env = self.env.clone();
        let execs = self.execs.clone();
        std::thread::spawn(move || {
            let result = match &spec {
                Step::Fip(fip) => deactivate_fip(fip),
                // The lease was revoked first: nothing answers for it any more.
                Step::Parp(parp) => match parp.address {
                    IpAddr::V6(address) => ndp::leave(&parp.interface, address),
                    IpAddr::V4(_) => Ok(()),
                },
                Step::Exec(exec) => exec::stop(exec, &env, group, reason, &execs, step),
            };
            let ok = match result {
                Ok(()) => {
                    tracing::info!(
                        id = crate::catalog::STEP_DONE.id,
                        group,
                        step,
                        what = describe(&spec),
                        "deactivated"
                    );
                    true
                }
                Err(e) => {
                    tracing::error!(
                        id = crate::catalog::STEP_FAILED.id,
                        group,
                        step,
                        what = describe(&spec),
                        error = format!("{e:#}"),
                        "deactivation failed"
                    );
                    false
                }
            };
            answer_step(&deliver, group, step, ok);
        });
    }

    /// After the daemon adopted the groups `adopted` from the pins: takes over the monitored
    /// processes of those groups (one that died meanwhile is reported as dead, so the group's
    /// recovery runs), and kills those of the other groups.
    pub fn adopt(&self, adopted: &[bool]) {
        self.execs
            .lock()
            .expect("running lock")
            .kill_unadopted(adopted);
        for (group, steps) in self.steps.iter().enumerate() {
            if !adopted.get(group).copied().unwrap_or(false) {
                continue;
            }
            // The memberships ended with the previous daemon's socket.
            join_all(steps);
            for (step, spec) in steps.iter().enumerate() {
                if let Step::Exec(exec) = spec
                    && exec.monitor
                    && !exec::adopt(exec, &self.execs, group, step, self.deliver.clone())
                {
                    tracing::error!(
                        id = crate::catalog::STEP_FAILED.id,
                        resource = exec.name,
                        "the monitored process of an adopted group is gone"
                    );
                    (self.deliver)(Reported::Step(StepOutcome {
                        group,
                        step,
                        ok: false,
                        died: true,
                    }));
                }
            }
        }
    }

    /// PIDs of the running monitored processes, by resource name.
    pub fn exec_pids(&self) -> BTreeMap<String, u32> {
        self.execs
            .lock()
            .expect("running lock")
            .pids()
            .into_iter()
            .filter_map(
                |((group, step), pid)| match self.steps.get(group)?.get(step)? {
                    Step::Exec(e) => Some((e.name.clone(), pid)),
                    _ => None,
                },
            )
            .collect()
    }

    /// Announces every address of a group again (after a partition healed).
    pub fn reannounce(&self, group: GroupId) {
        let Some(steps) = self.steps.get(group).cloned() else {
            return;
        };
        let answering = self.answering.clone();
        std::thread::spawn(move || {
            if answering.now(group) {
                announce_all(&steps);
            }
        });
    }

    /// Announces every address of a group at once, on the caller's thread: right after the
    /// data path took the group over, so that clients and routers turn to this node while the
    /// addresses are still being configured (the XDP program already answers for them). This
    /// is the first of each address's `arp_count` announcements; its activation sends the
    /// rest. The solicited-node groups of its IPv6 addresses are joined first, so that a switch
    /// with MLD snooping delivers the solicitations from then on.
    pub fn announce_now(&self, group: GroupId) {
        if let Some(steps) = self.steps.get(group)
            && self.answering.now(group)
        {
            join_all(steps);
            announce_all(steps);
        }
    }
}

/// Joins the solicited-node groups of the IPv6 addresses among `steps` (a failure is a
/// warning: the kernel joins a floating address's group by itself, and the activation tries
/// again).
fn join_all(steps: &[Step]) {
    for step in steps {
        let owned = match step {
            Step::Fip(fip) => (&fip.interface, fip.address.addr()),
            Step::Parp(parp) => (&parp.interface, parp.address),
            Step::Exec(_) => continue,
        };
        if let (interface, IpAddr::V6(address)) = owned
            && let Err(e) = ndp::join(interface, address)
        {
            tracing::warn!(error = format!("{e:#}"), "solicited-node group not joined");
        }
    }
}

fn announce_all(steps: &[Step]) {
    for step in steps {
        let result = match step {
            Step::Fip(fip) => announce(&fip.interface, fip.address.addr(), None, fip.router),
            Step::Parp(parp) => announce(&parp.interface, parp.address, parp.mac, parp.router),
            Step::Exec(_) => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = format!("{e:#}"), "announcement failed");
        }
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::Fip(f) => format!("fip {} on {}", f.address, f.label),
        Step::Parp(p) => format!("parp {} on {}", p.address, p.interface),
        Step::Exec(e) => format!("exec {}", e.name),
    }
}

/// Announces `address` at `mac` (default: the interface's): gratuitous ARP for IPv4, an
/// unsolicited Neighbor Advertisement for IPv6 (`router`: its Router flag).
fn announce(interface: &str, address: IpAddr, mac: Option<[u8; 6]>, router: bool) -> Result<()> {
    match address {
        IpAddr::V4(address) => arp::announce(interface, address, mac),
        IpAddr::V6(address) => ndp::announce(interface, address, mac, router),
    }
}

fn activate_fip(fip: &Fip, group: GroupId, answering: &Answering) -> Result<()> {
    // Refuse an address that someone else answers for (ping_count probes).
    for _ in 0..fip.ping_count {
        if ping_once(fip.address.addr(), Duration::from_millis(300)) {
            anyhow::bail!(
                "{} answers pings: another host holds it",
                fip.address.addr()
            );
        }
    }
    crate::netif::add_address(&fip.interface, fip.address, &fip.label)?;
    if let IpAddr::V6(address) = fip.address.addr()
        && let Err(e) = ndp::join(&fip.interface, address)
    {
        // The kernel joined the group with the address; only our own count is missing.
        tracing::warn!(error = format!("{e:#}"), "solicited-node group not joined");
    }
    announce_repeatedly(
        &fip.interface,
        fip.address.addr(),
        None,
        fip.router,
        fip.arp_count,
        group,
        answering,
    );
    Ok(())
}

/// Removes the address whatever happens to the group membership: an address left on a node
/// that gave it up would be answered by its kernel once the XDP program is gone.
fn deactivate_fip(fip: &Fip) -> Result<()> {
    if let IpAddr::V6(address) = fip.address.addr()
        && let Err(e) = ndp::leave(&fip.interface, address)
    {
        tracing::warn!(error = format!("{e:#}"), "solicited-node group not left");
    }
    crate::netif::remove_address(&fip.interface, fip.address)?;
    Ok(())
}

fn activate_parp(parp: &Parp, group: GroupId, answering: &Answering) -> Result<()> {
    // A proxied IPv6 address is on no interface, so the kernel joined no group for it.
    if let IpAddr::V6(address) = parp.address {
        ndp::join(&parp.interface, address)?;
    }
    announce_repeatedly(
        &parp.interface,
        parp.address,
        parp.mac,
        parp.router,
        parp.arp_count,
        group,
        answering,
    );
    Ok(())
}

/// Sends the announcements after the first (which went out at the map flip, see
/// [`Resources::announce_now`]) one second apart, in the background: `count` in all, each only
/// while this node answers for the group (the repeats stop when it moved away).
fn announce_repeatedly(
    interface: &str,
    address: IpAddr,
    mac: Option<[u8; 6]>,
    router: bool,
    count: u32,
    group: GroupId,
    answering: &Answering,
) {
    if count > 1 {
        let interface = interface.to_owned();
        let answering = answering.clone();
        std::thread::spawn(move || {
            for _ in 1..count {
                std::thread::sleep(Duration::from_secs(1));
                if !answering.now(group) {
                    continue;
                }
                if let Err(e) = announce(&interface, address, mac, router) {
                    tracing::warn!(error = format!("{e:#}"), "announcement failed");
                }
            }
        });
    }
}

struct RefreshLoop {
    steps: Vec<Vec<Step>>,
    announcer: Arc<Mutex<Announcer>>,
    answering: Answering,
}

impl RefreshLoop {
    fn run(self) {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let due: Vec<(GroupId, usize)> = {
                let mut a = self.announcer.lock().expect("announcer");
                let now = Instant::now();
                let due: Vec<_> = a
                    .active
                    .iter()
                    .filter(|(_, (next, _))| *next <= now)
                    .map(|(k, _)| *k)
                    .collect();
                for key in &due {
                    if let Some((next, period)) = a.active.get_mut(key) {
                        *next = now + *period;
                    }
                }
                due
            };
            for (group, step) in due.into_iter().filter(|(g, _)| self.answering.now(*g)) {
                if let Some(Step::Fip(fip)) = self.steps.get(group).and_then(|s| s.get(step))
                    && let Err(e) = announce(&fip.interface, fip.address.addr(), None, fip.router)
                {
                    tracing::warn!(error = format!("{e:#}"), "announcement refresh failed");
                }
            }
        }
    }
}
