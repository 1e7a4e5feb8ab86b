//! Randomized fault injection on real daemons (`cargo xtask chaos`), in the spirit of
//! Pacemaker's CTS and Jepsen: on the seed network with two real `fwclusterd`, each iteration
//! picks a fault from [`FaultKind::ALL`], checks what the specification promises while the fault
//! lasts, heals it, waits for the cluster to settle and audits it from the outside:
//!
//! - each group answered by exactly one node, seen from a client with ARP (FIP and PARP) and
//!   with data traffic through the floating gateway;
//! - flow-share frames passed by exactly one node (UDP flows counted in both data paths);
//! - `clpstat --json` on both nodes agrees on every holder, and with what the client sees;
//! - STARTING=DENY only where the specification says (then cleared the operator's way);
//! - no leaked namespaces, processes (hung scripts), file descriptors or memory in the daemons;
//! - at the end, one alert mail for every takeover after a failure.
//!
//! Iteration `i` draws its fault from a generator seeded by `(seed, i)`, so a failure is
//! reproduced by `--seed S --from i`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail, ensure};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::{
    Direction, Lab,
    cluster::Cluster,
    seed::{self, FWS1, FWS2, IC_IF, INET_CLIENT, INET_IF, INTRA_IF},
    smtp::{self, Smtp},
    verdict::{Verdict, around},
};

const NODES: [&str; 2] = [FWS1, FWS2];
const GROUPS: [&str; 2] = ["group0", "group1"];
/// Addresses the client must see answered by the holder of the group: (group, FIP, PARP).
const ADDRESSES: [(&str, Ipv4Addr, Ipv4Addr); 2] = [
    (
        "group0",
        Ipv4Addr::new(192, 0, 2, 10),
        Ipv4Addr::new(192, 0, 2, 20),
    ),
    (
        "group1",
        Ipv4Addr::new(192, 0, 2, 11),
        Ipv4Addr::new(192, 0, 2, 21),
    ),
];
const SHARED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 30);
const FLOWS: u16 = 64;
/// How long a daemon may take to settle after a fault is healed.
const SETTLE: Duration = Duration::from_secs(15);
/// Growth allowed in one daemon process over the run, beyond the first audit.
const FD_SLACK: usize = 16;
const RSS_SLACK_KIB: u64 = 16 * 1024;

/// The cluster under test: both groups with every resource type, and a flow share, at the
/// headline timing (10 ms heartbeats, 30 ms timeout), with the real-time scheduling that the
/// daemon's own pause warning (FWC013) recommends for timeouts this short on a shared machine.
const CONFIG: &str = concat!(
    r#"heartbeat_interval = "10ms"
heartbeat_timeout = "30ms"
wait_timeout = "3s"
realtime_priority = 10

[mail]
smtp = "smtp://192.0.2.254:2525"
from = "cluster@fws.example"
to = ["admin@example.com"]
outbox = "{dir}/outbox"

"#,
    crate::seed_servers!(),
    r#"
[[group]]
name = "group0"
policy = ["fws1", "fws2"]
failback = "auto"

  [[group.fip]]
  address = "192.0.2.10/24"
  interface = "eth0"

  [[group.fip]]
  address = "203.0.113.10/24"

  [[group.parp]]
  address = "192.0.2.20"
  interface = "eth0"

  [[group.ipw]]
  targets = ["192.0.2.254"]
  interval = "100ms"
  timeout = "200ms"
  retry = 1

  [[group.exec]]
  name = "fwalive"
  start = "exec sleep 100000"
  stop = "true"
  monitor = true
  retry = 0
  recover = "failover"

[[group]]
name = "group1"
policy = ["fws2", "fws1"]
failback = "manual"

  [[group.fip]]
  address = "192.0.2.11/24"
  interface = "eth0"

  [[group.parp]]
  address = "192.0.2.21"
  interface = "eth0"

  [[group.ipw]]
  targets = ["192.0.2.254"]
  interval = "100ms"
  timeout = "200ms"
  retry = 1

  [[group.exec]]
  name = "ckcstat"
  start = "if [ -e {dir}/hang-$FWCLUSTER_NODE ]; then exec sleep 1000; fi"
  stop = "true"
  timeout = "1s"
  retry = 0
  recover = "failover"

[[flowshare]]
name = "ls0"
address = "192.0.2.30/24"
interface = "eth0"
mac = "01:00:5e:00:02:1e"
hash = "5tuple"
buckets = 1024
"#
);

/// The fault catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum FaultKind {
    /// SIGKILL of a daemon (supervisor and worker); the peer takes over; restarted.
    KillDaemon,
    /// SIGSTOP of a worker beyond its lease: it fences itself, the peer takes over; SIGCONT.
    Freeze,
    /// One interconnect of a node down: a warning, no failover.
    InterconnectDown,
    /// Every interconnect of a node down (both run everything), then healed (one holder again).
    Partition,
    /// Everything a node sends on one interconnect lost (nftables, one way): no failover.
    OneWayLoss,
    /// 1 % loss both ways on one interconnect: no failover.
    Loss1,
    /// 10 % loss both ways on one interconnect: no failover.
    Loss10,
    /// 30 % loss both ways on one interconnect: no failover.
    Loss30,
    /// A node's internet and DMZ links cut: its IP watch fails, its groups move, DENY there.
    DataLinksCut,
    /// A node's IP watch target stops answering (nftables): its groups move, DENY there.
    IpwTargetLost,
    /// The monitored process of group0 killed: failover, DENY until `clpgrp -s`.
    MonitoredProcessKilled,
    /// group1's start script hangs on the node it is moved to: timeout, back, DENY there.
    HungExecScript,
    /// A daemon killed and started again at once. Within its lease nothing moves and ARP is
    /// answered throughout; past it (a restart takes longer than a 30 ms timeout) its peer takes
    /// over within the takeover bound and group0 fails back.
    RestartDaemon,
    /// SIGHUP with an unchanged, an invalid and a mail-only changed file: nothing moves.
    ConfigReload,
    /// SIGTERM (planned stop): groups handed over at once; started again.
    CleanStopStart,
    /// `clpgrp -m` of every group while one interconnect is down.
    ManualMoveDuringFailure,
    /// The SMTP server down while a takeover happens: the alert waits and is delivered later.
    MailServerDown,
}

/// The takeover bound of a failure that heartbeats detect: timeout (30 ms) + interval (10 ms),
/// plus the resources (addresses, the exec start, the first gratuitous ARP), scheduling, and the
/// watch asking for its four internet addresses in turn.
const HEARTBEAT_TAKEOVER: Duration = Duration::from_millis(100);

impl FaultKind {
    /// The longest a cluster address may go unanswered during this fault while a healthy node
    /// exists: the detection the fault needs, then a takeover.
    fn unanswered_bound(self) -> Duration {
        match self {
            // IP watch: up to an interval (100 ms) to the first probe after the fault, then
            // retry + 1 = 2 probes failing by their 200 ms timeout, then a takeover.
            Self::DataLinksCut | Self::IpwTargetLost => {
                Duration::from_millis(100 + 2 * 200) + HEARTBEAT_TAKEOVER
            }
            // The monitor reports the death of the process at once; the group is stopped here
            // and started on the peer.
            Self::MonitoredProcessKilled => Duration::from_millis(300),
            // The move stops group1, its start hangs on the target until the 1 s exec timeout,
            // then it is started where it was.
            Self::HungExecScript => Duration::from_millis(1500),
            _ => HEARTBEAT_TAKEOVER,
        }
    }

    pub const ALL: [FaultKind; 17] = [
        Self::KillDaemon,
        Self::Freeze,
        Self::InterconnectDown,
        Self::Partition,
        Self::OneWayLoss,
        Self::Loss1,
        Self::Loss10,
        Self::Loss30,
        Self::DataLinksCut,
        Self::IpwTargetLost,
        Self::MonitoredProcessKilled,
        Self::HungExecScript,
        Self::RestartDaemon,
        Self::ConfigReload,
        Self::CleanStopStart,
        Self::ManualMoveDuringFailure,
        Self::MailServerDown,
    ];
}

/// One drawn fault: its kind, the node it hits and the interconnect (when it takes one).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub node: &'static str,
    pub link: &'static str,
}

impl Fault {
    /// The fault of iteration `iteration`. Kinds come from a shuffled bag: every run of
    /// `ALL.len()` iterations takes each kind once, in an order drawn from the seed.
    fn draw(seed: u64, iteration: usize) -> Self {
        let kinds = FaultKind::ALL.len();
        let block = (iteration / kinds) as u64;
        let mut bag = FaultKind::ALL;
        rand::seq::SliceRandom::shuffle(
            &mut bag[..],
            &mut ChaCha8Rng::seed_from_u64(seed ^ block.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        );
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed.rotate_left(32) ^ (iteration as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9),
        );
        Self {
            kind: bag[iteration % kinds],
            node: NODES[rng.random_range(0..NODES.len())],
            link: [IC_IF, INTRA_IF][rng.random_range(0..2)],
        }
    }
}

impl Fault {
    /// Whether the fault cuts or impairs a node's intranet link (the second interconnect).
    fn impairs_the_intranet(self) -> bool {
        // A partition cuts both interconnects, whichever link was drawn.
        self.kind == FaultKind::Partition
            || self.link == INTRA_IF
                && matches!(
                    self.kind,
                    FaultKind::InterconnectDown
                        | FaultKind::OneWayLoss
                        | FaultKind::Loss1
                        | FaultKind::Loss10
                        | FaultKind::Loss30
                        | FaultKind::ManualMoveDuringFailure
                )
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} on {} ({})", self.kind, self.node, self.link)
    }
}

/// What a run did.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub first_iteration: usize,
    pub iterations: usize,
    pub wall_seconds: f64,
    pub faults: BTreeMap<FaultKind, usize>,
    /// Takeovers after a failure (FWC201 ACT_FAILOVER) in the daemons' logs.
    pub takeovers: usize,
    /// NOTICE mails received for them.
    pub takeover_mails: usize,
    pub max_fd_growth: usize,
    pub max_rss_growth_kib: u64,
    /// Faults during which a group moved or a peer was declared OFFLINE although nothing should
    /// move, or an address stayed unanswered past its bound, each explained by a daemon that
    /// reported not having been scheduled (FWC013).
    pub machine_moves: usize,
    /// The first failure: iteration, fault and what the audit found (the run stops there).
    pub failure: Option<String>,
}

/// Runs `iterations` iterations from `first` with `seed`; prints a line per iteration.
pub fn run(seed: u64, first: usize, iterations: usize) -> Result<Summary> {
    let started = Instant::now();
    let lab = seed::build()?;
    let mut chaos = Chaos::start(&lab)?;
    let mut summary = Summary {
        seed,
        first_iteration: first,
        iterations,
        wall_seconds: 0.0,
        faults: BTreeMap::new(),
        takeovers: 0,
        takeover_mails: 0,
        max_fd_growth: 0,
        max_rss_growth_kib: 0,
        machine_moves: 0,
        failure: None,
    };
    let outcome = (|| -> Result<()> {
        chaos.settle().context("the cluster did not come up")?;
        chaos.audit().context("audit after start")?;
        for iteration in first..first + iterations {
            let fault = Fault::draw(seed, iteration);
            *summary.faults.entry(fault.kind).or_default() += 1;
            let step = Instant::now();
            let since = SystemTime::now();
            // Who claims the cluster's addresses is watched for the whole fault, not only
            // audited after it.
            let watches = Watches::start(&lab)?;
            chaos.disturbed = false;
            let outcome = chaos.iteration(fault);
            let (overlaps, gaps) = watches.stop(fault)?;
            let (machine, unanswered): (Vec<Gap>, Vec<Gap>) = gaps
                .into_iter()
                .partition(|gap| machine_gap(&chaos.cluster, fault, since, gap));
            if chaos.disturbed || !machine.is_empty() {
                summary.machine_moves += 1;
            }
            if !machine.is_empty() {
                println!(
                    "chaos {iteration}: unanswered past the bound while a daemon reported its own \
                     pause (FWC013): {:?}",
                    machine.iter().map(|g| &g.text).collect::<Vec<_>>()
                );
            }
            let unanswered: Vec<&String> = unanswered.iter().map(|g| &g.text).collect();
            outcome
                .and_then(|()| {
                    // Without a tie-breaker a partition has both sides run every group, by
                    // the specification's choice: the one fault whose overlap is expected.
                    ensure!(
                        fault.kind == FaultKind::Partition || overlaps.is_empty(),
                        "two nodes claimed a cluster address at once during the fault: {overlaps:#?}"
                    );
                    // Every fault of the catalog leaves a healthy node that can take over.
                    ensure!(
                        unanswered.is_empty(),
                        "a cluster address went unanswered longer than the takeover bound: \
                         {unanswered:#?}"
                    );
                    Ok(())
                })
                .with_context(|| format!("iteration {iteration}: {fault}"))
                .map_err(|e| {
                    let saved = save_logs(&chaos.cluster, seed, iteration);
                    anyhow::anyhow!(
                        "{e:#}\nreproduce: cargo xtask chaos --seed {seed} --from {iteration} --iterations 1\nfull logs: {saved}\n{}",
                        chaos.cluster.all_logs_tail(60)
                    )
                })?;
            println!(
                "chaos {iteration}: {fault}: ok ({:.1} s)",
                step.elapsed().as_secs_f64()
            );
        }
        chaos.check_mails(&mut summary)
    })();
    summary.max_fd_growth = chaos.max_fd_growth;
    summary.max_rss_growth_kib = chaos.max_rss_growth_kib;
    summary.wall_seconds = started.elapsed().as_secs_f64();
    if let Err(e) = outcome {
        summary.failure = Some(format!("{e:#}"));
    }
    drop(chaos);
    // The lab's own cleanup is part of the audit: nothing of this run may stay behind.
    let prefix = lab.prefix().to_owned();
    drop(lab);
    let left: Vec<String> = crate::existing_lab_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    if !left.is_empty() && summary.failure.is_none() {
        summary.failure = Some(format!("namespaces left after the run: {left:?}"));
    }
    Ok(summary)
}

/// ARP watches on the client segments of the cluster's addresses (internet: both groups' FIPs
/// and PARPs; intranet: group0's FIP), one request every millisecond.
struct Watches(Vec<crate::arp::ArpWatch>);

impl Watches {
    fn start(lab: &Lab) -> Result<Self> {
        let internet: Vec<Ipv4Addr> = ADDRESSES
            .iter()
            .flat_map(|(_, fip, parp)| [*fip, *parp])
            .collect();
        Ok(Self(vec![
            lab.arp_watch(INET_CLIENT, INET_IF, internet, Duration::from_millis(1))?,
            lab.arp_watch(
                seed::INTRA_CLIENT1,
                "eth0",
                vec![Ipv4Addr::new(203, 0, 113, 10)],
                Duration::from_millis(1),
            )?,
        ]))
    }

    /// Stops; returns every moment two MACs claimed one address (within 10 ms), and every
    /// address that went unanswered for longer than the fault's takeover bound.
    fn stop(self, fault: Fault) -> Result<(Vec<String>, Vec<Gap>)> {
        let bound = fault.kind.unanswered_bound();
        let mut overlaps = Vec::new();
        let mut unanswered = Vec::new();
        for (segment, watch) in self.0.into_iter().enumerate() {
            let intranet = segment == 1;
            let (sightings, _) = watch.stop()?;
            overlaps.extend(crate::arp::overlapping_claims(
                &sightings,
                Duration::from_millis(10),
            ));
            // The intranet doubles as the second interconnect: a fault on that link of the
            // holder cuts it off the intranet too, which the configuration does not monitor
            // (its IP watch looks at the internet router), so nothing takes over there.
            if intranet && fault.impairs_the_intranet() {
                continue;
            }
            for (address, (gap, ended)) in crate::arp::longest_unanswered(&sightings) {
                if gap > bound {
                    let to = SystemTime::now() - Instant::now().saturating_duration_since(ended);
                    unanswered.push(Gap {
                        text: format!(
                            "{address} unanswered for {:.1} ms (bound {:.0} ms)",
                            gap.as_secs_f64() * 1e3,
                            bound.as_secs_f64() * 1e3
                        ),
                        from: to - gap,
                        to,
                        length: gap,
                    });
                }
            }
        }
        Ok((overlaps, unanswered))
    }
}

/// An address unanswered longer than the fault's takeover bound, on the logs' wall clock.
#[derive(Debug)]
struct Gap {
    text: String,
    from: SystemTime,
    to: SystemTime,
    length: Duration,
}

/// The longest gap a daemon's reported pause may explain: the pause, the takeover it caused and
/// the handover back fit in it; a longer one is not the machine's.
const MACHINE_GAP: Duration = Duration::from_secs(1);

/// Whether a pause that a daemon reported itself (FWC013) during the gap explains it. Liveness
/// is promised to daemons that run: a gap overlapping such a pause is the machine's (the safety
/// watch still applies). The pause a Freeze fault injects into its node is the fault itself and
/// explains nothing.
fn machine_gap(cluster: &Cluster, fault: Fault, since: SystemTime, gap: &Gap) -> bool {
    gap.length <= MACHINE_GAP
        && NODES
            .iter()
            .filter(|node| !(fault.kind == FaultKind::Freeze && **node == fault.node))
            .flat_map(|node| crate::verdict::reported_pauses(cluster, node, since))
            .any(|(start, end)| start <= gap.to && end + Duration::from_millis(2) >= gap.from)
}

/// Baseline of one daemon process, taken at its first audit.
struct Baseline {
    fds: usize,
    rss_kib: u64,
}

struct Chaos<'a> {
    lab: &'a Lab,
    cluster: Cluster,
    smtp: Option<Smtp>,
    maildir: std::path::PathBuf,
    macs: BTreeMap<&'static str, [u8; 6]>,
    /// DENY the specification expects after healing, until the operator clears it.
    expected_deny: BTreeSet<(&'static str, &'static str)>,
    /// group0 was moved off its primary by an operator: auto failback leaves it there.
    operator_placed_group0: bool,
    baselines: BTreeMap<u32, Baseline>,
    max_fd_growth: usize,
    max_rss_growth_kib: u64,
    /// The current fault moved something that a daemon's reported pause explains.
    disturbed: bool,
}

impl<'a> Chaos<'a> {
    fn start(lab: &'a Lab) -> Result<Self> {
        let mut cluster = Cluster::new(lab, CONFIG)?;
        let maildir = cluster.dir.path().join("maildir");
        let smtp = Some(smtp::smtp(lab, &maildir)?);
        let mut macs = BTreeMap::new();
        for node in NODES {
            macs.insert(node, lab.mac(node, INET_IF)?);
        }
        for node in NODES {
            cluster.start(lab, node)?;
        }
        Ok(Self {
            lab,
            cluster,
            smtp,
            maildir,
            macs,
            expected_deny: BTreeSet::new(),
            operator_placed_group0: false,
            baselines: BTreeMap::new(),
            max_fd_growth: 0,
            max_rss_growth_kib: 0,
            disturbed: false,
        })
    }

    fn other(node: &'static str) -> &'static str {
        if node == FWS1 { FWS2 } else { FWS1 }
    }

    /// `clpstat -s --json` on `node`.
    fn clpstat(&self, node: &str) -> Result<cluster_ctl::status::StatusView> {
        let (ok, output) = self
            .cluster
            .tool(self.lab, node, "clpstat", &["-s", "--json"])?;
        ensure!(ok, "clpstat on {node} failed: {output}");
        serde_json::from_str(&output).with_context(|| format!("clpstat --json on {node}: {output}"))
    }

    /// Where each group is ONLINE according to `node`.
    fn holders(&self, node: &str) -> Result<BTreeMap<String, Vec<String>>> {
        let view = self.cluster.status(node)?;
        Ok(view
            .groups
            .iter()
            .map(|g| {
                let on = g
                    .states
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| *s == "ONLINE")
                    .map(|(n, _)| view.servers[n].name.clone())
                    .collect();
                (g.name.clone(), on)
            })
            .collect())
    }

    /// The MACs answering ARP for `address` from the client, each once (the ARP watch asks from
    /// the same address meanwhile, and its answers arrive here too).
    fn answerers(&self, address: Ipv4Addr) -> Result<Vec<[u8; 6]>> {
        let mut macs: Vec<[u8; 6]> = Vec::new();
        for answer in
            self.lab
                .arp_request(INET_CLIENT, "eth0", address, Duration::from_millis(80))?
        {
            if !macs.contains(&answer.mac) {
                macs.push(answer.mac);
            }
        }
        Ok(macs)
    }

    fn node_of_mac(&self, mac: [u8; 6]) -> String {
        self.macs
            .iter()
            .find(|(_, m)| **m == mac)
            .map(|(n, _)| (*n).to_owned())
            .unwrap_or_else(|| crate::arp::format_mac(&mac))
    }

    /// Waits until `check` passes (at most `timeout`); the last error otherwise.
    fn until(&self, timeout: Duration, mut check: impl FnMut(&Self) -> Result<()>) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match check(self) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("still so after {timeout:?}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Every group ONLINE on `node` and answered by it alone (a node down, fenced or stopped).
    fn everything_on(&self, node: &str) -> Result<()> {
        for (group, on) in self.holders(node)? {
            ensure!(on == [node], "{node} sees {group} on {on:?}");
        }
        for (group, fip, parp) in ADDRESSES {
            for address in [fip, parp] {
                let who: Vec<String> = self
                    .answerers(address)?
                    .into_iter()
                    .map(|m| self.node_of_mac(m))
                    .collect();
                ensure!(who == [node], "{group} {address} answered by {who:?}");
            }
        }
        Ok(())
    }

    /// The holders stay as they were for `duration`, with no takeover and no peer lost. A move
    /// that a daemon's own reported pause explains (it was not scheduled for about a timeout:
    /// FWC013, see [`Verdict`]) ends the window instead and is counted as the machine's.
    fn nothing_moves(
        &mut self,
        duration: Duration,
        before: &BTreeMap<String, Vec<String>>,
    ) -> Result<()> {
        let since = SystemTime::now();
        let takeovers = self.log_count("FWC201", "");
        let offline = self.log_count("FWC102", "");
        let held = (|| -> Result<()> {
            let until = Instant::now() + duration;
            while Instant::now() < until {
                for node in NODES {
                    let now = self.holders(node)?;
                    ensure!(&now == before, "{node} sees {now:?}, was {before:?}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            ensure!(
                self.log_count("FWC201", "") == takeovers,
                "a group was activated while nothing should move"
            );
            ensure!(
                self.log_count("FWC102", "") == offline,
                "a peer was declared OFFLINE while an interconnect worked"
            );
            Ok(())
        })();
        let Err(moved) = held else {
            return Ok(());
        };
        // The logs of a takeover are written before clpstat shows it.
        let verdict = Verdict::of(&self.cluster, since, &[]);
        if verdict.is_clean() && verdict.machine_offline > 0 {
            self.disturbed = true;
            println!(
                "chaos: {moved:#}, after a daemon reported that it had not been scheduled \
                 (FWC013): {} OFFLINE, {} takeovers explained",
                verdict.machine_offline, verdict.machine_failovers
            );
            return Ok(());
        }
        Err(moved.context(format!(
            "unexplained by any pause a daemon reported: {:#?} {:#?}\n{}",
            verdict.false_offline,
            verdict.false_failovers,
            around(&self.cluster, "FWC102")
        )))
    }

    fn log_count(&self, id: &str, text: &str) -> usize {
        NODES
            .iter()
            .map(|n| {
                self.cluster
                    .lines_with(n, id)
                    .iter()
                    .filter(|l| l.contains(text))
                    .count()
            })
            .sum()
    }

    fn holder_of(&self, group: &str) -> Result<&'static str> {
        let holders = self.holders(FWS1)?;
        let on = holders.get(group).context("no such group")?;
        ensure!(on.len() == 1, "{group} on {on:?}");
        NODES
            .into_iter()
            .find(|n| *n == on[0])
            .context("unknown holder")
    }

    fn clpgrp(&self, node: &str, args: &[&str]) -> Result<()> {
        let (ok, output) = self.cluster.tool(self.lab, node, "clpgrp", args)?;
        ensure!(ok, "clpgrp {} on {node}: {output}", args.join(" "));
        Ok(())
    }

    fn restart(&mut self, node: &str) -> Result<()> {
        if !self.cluster.running(node) {
            self.cluster.kill(node)?;
            self.cluster.start(self.lab, node)?;
        }
        Ok(())
    }

    fn ipw_blocked(&self, node: &str, blocked: bool) -> Result<()> {
        if blocked {
            self.lab.nft(
                node,
                "table inet chaos_ipw {\n chain in { type filter hook input priority 0; ip saddr 192.0.2.254 icmp type echo-reply drop\n }\n}\n",
            )
        } else {
            let _ = self
                .lab
                .run(node, "nft", &["delete", "table", "inet", "chaos_ipw"]);
            Ok(())
        }
    }

    fn hang_flag(&self, node: &str) -> std::path::PathBuf {
        self.cluster.dir.path().join(format!("hang-{node}"))
    }

    /// One fault: inject, check the promise while it lasts, heal, settle, audit.
    fn iteration(&mut self, fault: Fault) -> Result<()> {
        let node = fault.node;
        let other = Self::other(node);
        let before = self.holders(FWS1)?;
        match fault.kind {
            FaultKind::KillDaemon => {
                self.cluster.kill(node)?;
                self.until(SETTLE, |c| c.everything_on(other))?;
                self.restart(node)?;
            }
            FaultKind::Freeze => {
                let worker = self.cluster.worker_pid(node).context("no worker")?;
                crate::freeze(worker)?;
                let during = self.until(SETTLE, |c| c.everything_on(other));
                crate::thaw(worker)?;
                during?;
            }
            FaultKind::InterconnectDown => {
                self.lab.cut(node, fault.link)?;
                let during = self.nothing_moves(Duration::from_millis(1500), &before);
                self.lab.restore(node, fault.link)?;
                during?;
            }
            FaultKind::Partition => {
                self.lab.cut(node, IC_IF)?;
                self.lab.cut(node, INTRA_IF)?;
                // Without a tie-breaker both sides run every group (the specification's
                // choice: availability over a shared address while nothing connects them).
                let during = self.until(SETTLE, |c| {
                    for n in NODES {
                        let view = c.cluster.status(n)?;
                        let peer = &view.servers[1 - view.local];
                        ensure!(peer.status == "OFFLINE", "{n} still sees {}", peer.name);
                        for (group, on) in c.holders(n)? {
                            ensure!(on == [n], "{n} sees {group} on {on:?}");
                        }
                    }
                    Ok(())
                });
                self.lab.restore(node, IC_IF)?;
                self.lab.restore(node, INTRA_IF)?;
                during?;
            }
            FaultKind::OneWayLoss => {
                self.lab
                    .set_loss(node, fault.link, 100, Direction::FromHost)?;
                let during = self.nothing_moves(Duration::from_millis(1500), &before);
                self.lab.set_loss(node, fault.link, 0, Direction::Both)?;
                during?;
            }
            FaultKind::Loss1 | FaultKind::Loss10 | FaultKind::Loss30 => {
                let percent = match fault.kind {
                    FaultKind::Loss1 => 1,
                    FaultKind::Loss10 => 10,
                    _ => 30,
                };
                self.lab
                    .set_loss(node, fault.link, percent, Direction::Both)?;
                let during = self.nothing_moves(Duration::from_secs(2), &before);
                self.lab.set_loss(node, fault.link, 0, Direction::Both)?;
                during?;
            }
            FaultKind::DataLinksCut | FaultKind::IpwTargetLost => {
                if fault.kind == FaultKind::DataLinksCut {
                    self.lab.cut(node, INET_IF)?;
                    self.lab.cut(node, seed::DMZ_IF)?;
                } else {
                    self.ipw_blocked(node, true)?;
                }
                let held: Vec<String> = before
                    .iter()
                    .filter(|(_, on)| on.as_slice() == [node])
                    .map(|(g, _)| g.clone())
                    .collect();
                let during = self.until(SETTLE, |c| {
                    let view = c.cluster.status(other)?;
                    let holders = c.holders(other)?;
                    for group in &held {
                        ensure!(
                            holders[group] == [other],
                            "{group} still on {:?}",
                            holders[group]
                        );
                        let g = view
                            .groups
                            .iter()
                            .find(|g| &g.name == group)
                            .context("group")?;
                        let index = view
                            .servers
                            .iter()
                            .position(|s| s.name == node)
                            .context("server")?;
                        ensure!(
                            g.starting[index] == "DENY",
                            "{group} STARTING on {node} is {}",
                            g.starting[index]
                        );
                    }
                    if fault.kind == FaultKind::IpwTargetLost {
                        c.everything_on(other)?;
                    }
                    Ok(())
                });
                if fault.kind == FaultKind::DataLinksCut {
                    self.lab.restore(node, INET_IF)?;
                    self.lab.restore(node, seed::DMZ_IF)?;
                } else {
                    self.ipw_blocked(node, false)?;
                }
                during?;
            }
            FaultKind::MonitoredProcessKilled => {
                let holder = self.holder_of("group0")?;
                let pid = *self
                    .cluster
                    .status(holder)?
                    .exec_pids
                    .get("group0-exec0")
                    .context("no monitored process on the holder")?;
                crate::kill(pid)?;
                self.until(SETTLE, |c| {
                    ensure!(
                        c.holder_of("group0")? == Self::other(holder),
                        "group0 did not move"
                    );
                    Ok(())
                })?;
                self.expected_deny.insert(("group0", holder));
            }
            FaultKind::HungExecScript => {
                let holder = self.holder_of("group1")?;
                let target = Self::other(holder);
                fs::write(self.hang_flag(target), b"")?;
                let moved = self.clpgrp(holder, &["-m", "-g", "group1", "--wait", "10s"]);
                let back = self.until(SETTLE, |c| {
                    ensure!(
                        c.holder_of("group1")? == holder,
                        "group1 not back on {holder}"
                    );
                    ensure!(
                        c.cluster
                            .lines_with(target, "FWC302")
                            .iter()
                            .any(|l| l.contains("hung")),
                        "no hung start script reported on {target}"
                    );
                    Ok(())
                });
                fs::remove_file(self.hang_flag(target))?;
                // The operator sees the move fail; the group is back where it was.
                ensure!(
                    moved.is_err(),
                    "clpgrp -m reported success onto a hung script"
                );
                back?;
                self.expected_deny.insert(("group1", target));
            }
            FaultKind::RestartDaemon => {
                let holder = self.holder_of("group0")?;
                let takeovers = self.cluster.lines_with(Self::other(node), "FWC201").len();
                let starts = self.cluster.lines_with(node, "FWC001").len();
                self.cluster.kill(node)?;
                self.cluster.start(self.lab, node)?;
                let deadline = Instant::now() + SETTLE;
                while self.cluster.lines_with(node, "FWC001").len() == starts {
                    ensure!(Instant::now() < deadline, "{node} did not start again");
                    std::thread::sleep(Duration::from_millis(10));
                }
                std::thread::sleep(Duration::from_millis(500));
                // The ARP watch has checked the answers throughout; which branch was taken
                // decides what else must hold.
                let taken_over =
                    self.cluster.lines_with(Self::other(node), "FWC201").len() > takeovers;
                if !taken_over {
                    self.nothing_moves(Duration::from_millis(500), &before)?;
                } else {
                    ensure!(
                        holder == node || self.holder_of("group0")? == holder,
                        "group0 moved although its holder {holder} kept running"
                    );
                }
            }
            FaultKind::ConfigReload => {
                let original = fs::read_to_string(&self.cluster.config)?;
                let variants = [
                    (
                        format!("# reloaded by chaos\n{original}"),
                        "FWC008",
                        "unchanged",
                    ),
                    (
                        original.replace(
                            "heartbeat_timeout = \"30ms\"",
                            "heartbeat_timeout = \"5ms\"",
                        ),
                        "FWC009",
                        "not valid",
                    ),
                    (
                        original.replace("admin@example.com", "noc@example.com"),
                        "FWC008",
                        "reloaded",
                    ),
                ];
                for (text, id, expect) in variants {
                    let seen = self.log_count(id, expect);
                    fs::write(&self.cluster.config, text)?;
                    self.cluster
                        .signal(node, nix::sys::signal::Signal::SIGHUP)?;
                    self.until(Duration::from_secs(3), |c| {
                        ensure!(
                            c.log_count(id, expect) > seen,
                            "{node} did not log {id} {expect:?}"
                        );
                        Ok(())
                    })?;
                }
                fs::write(&self.cluster.config, &original)?;
                self.cluster
                    .signal(node, nix::sys::signal::Signal::SIGHUP)?;
                self.nothing_moves(Duration::from_millis(500), &before)?;
                ensure!(
                    self.log_count("FWC106", "") == 0,
                    "a reload made the nodes disagree"
                );
            }
            FaultKind::CleanStopStart => {
                self.cluster.stop(node, Duration::from_secs(10))?;
                self.until(Duration::from_secs(2), |c| c.everything_on(other))?;
                self.cluster.start(self.lab, node)?;
            }
            FaultKind::ManualMoveDuringFailure => {
                self.lab.cut(node, fault.link)?;
                let moved = (|| -> Result<()> {
                    for group in GROUPS {
                        let holder = self.holder_of(group)?;
                        let target = Self::other(holder);
                        let activations = self.cluster.lines_with(target, "FWC201").len();
                        self.clpgrp(holder, &["-m", "-g", group])?;
                        // group0 fails back automatically right after, so the activation on
                        // the target is the proof of the move.
                        ensure!(
                            self.cluster.lines_with(target, "FWC201").len() > activations,
                            "{group} was not activated on {target}"
                        );
                        self.until(Duration::from_secs(2), |c| {
                            ensure!(
                                c.holder_of(group)? == target,
                                "{group} did not stay on {target}"
                            );
                            Ok(())
                        })?;
                        if group == "group0" {
                            self.operator_placed_group0 = target != FWS1;
                        }
                    }
                    Ok(())
                })();
                self.lab.restore(node, fault.link)?;
                moved?;
            }
            FaultKind::MailServerDown => {
                self.smtp = None;
                let holder = self.holder_of("group0")?;
                self.cluster.kill(holder)?;
                let during = self.until(SETTLE, |c| c.everything_on(Self::other(holder)));
                self.restart(holder)?;
                during?;
                self.smtp = Some(smtp::smtp(self.lab, &self.maildir)?);
            }
        }
        self.heal()?;
        self.settle()?;
        self.audit()
    }

    /// Undoes whatever a failed iteration may have left: links, loss, IP watch, flags,
    /// stopped or dead daemons, the mail server.
    fn heal(&mut self) -> Result<()> {
        for node in NODES {
            self.lab.restore_host(node)?;
            for link in [IC_IF, INTRA_IF] {
                self.lab.set_loss(node, link, 0, Direction::Both)?;
            }
            self.ipw_blocked(node, false)?;
            let _ = fs::remove_file(self.hang_flag(node));
            if let Some(worker) = self.cluster.worker_pid(node) {
                crate::thaw(worker)?;
            }
            self.restart(node)?;
        }
        if self.smtp.is_none() {
            self.smtp = Some(smtp::smtp(self.lab, &self.maildir)?);
        }
        Ok(())
    }

    /// Waits until both daemons see each other and agree on exactly one holder per group, then
    /// checks the STARTING flags and clears the ones the operator must clear.
    fn settle(&mut self) -> Result<()> {
        self.until(SETTLE, |c| {
            let mut agreed = None;
            for node in NODES {
                let view = c.cluster.status(node)?;
                for server in &view.servers {
                    ensure!(
                        server.status == "ONLINE",
                        "{node} sees {} {}",
                        server.name,
                        server.status
                    );
                }
                let holders = c.holders(node)?;
                for (group, on) in &holders {
                    ensure!(on.len() == 1, "{node} sees {group} on {on:?}");
                }
                match &agreed {
                    None => agreed = Some(holders),
                    Some(first) => ensure!(
                        first == &holders,
                        "{FWS1} sees {first:?}, {node} sees {holders:?}"
                    ),
                }
            }
            Ok(())
        })?;
        // DENY exactly where the specification keeps it after healing (a monitored process
        // that died, an activation that failed); IP watch DENY clears by itself.
        self.until(Duration::from_secs(3), |c| {
            let deny = c.deny()?;
            ensure!(
                deny == c.expected_deny,
                "STARTING=DENY on {deny:?}, expected {:?}",
                c.expected_deny
            );
            Ok(())
        })?;
        for (group, node) in std::mem::take(&mut self.expected_deny) {
            // The group runs elsewhere, so the start itself is refused; DENY is cleared.
            let (_, output) = self
                .cluster
                .tool(self.lab, node, "clpgrp", &["-s", "-g", group])?;
            ensure!(
                output.contains("STARTING=DENY cleared"),
                "clpgrp -s -g {group} on {node}: {output}"
            );
        }
        self.until(Duration::from_secs(3), |c| {
            let deny = c.deny()?;
            ensure!(
                deny.is_empty(),
                "STARTING=DENY left after clpgrp -s: {deny:?}"
            );
            Ok(())
        })?;
        // Automatic failback may still move group0 after DENY cleared: the cluster has settled
        // when both nodes agree and nothing moved for a while.
        let quiet = Duration::from_millis(1500);
        let mut last: Option<(BTreeMap<String, Vec<String>>, Instant)> = None;
        self.until(SETTLE, |c| {
            let holders = c.holders(FWS1)?;
            ensure!(holders == c.holders(FWS2)?, "the nodes disagree");
            match &last {
                Some((seen, since)) if *seen == holders => {
                    ensure!(since.elapsed() >= quiet, "settling");
                    Ok(())
                }
                _ => {
                    last = Some((holders, Instant::now()));
                    bail!("groups still moving")
                }
            }
        })?;
        // Unless an operator placed it elsewhere, auto failback has group0 on its primary.
        let holders = self.holders(FWS1)?;
        if holders["group0"] == [FWS1] {
            self.operator_placed_group0 = false;
        } else if !self.operator_placed_group0 {
            bail!(
                "group0 (auto failback) on {:?}, not on its primary fws1",
                holders["group0"]
            );
        }
        Ok(())
    }

    /// (group, node) pairs with STARTING=DENY, as the node itself reports them.
    fn deny(&self) -> Result<BTreeSet<(&'static str, &'static str)>> {
        let mut deny = BTreeSet::new();
        for node in NODES {
            let view = self.cluster.status(node)?;
            for group in GROUPS {
                let g = view
                    .groups
                    .iter()
                    .find(|g| g.name == group)
                    .context("group")?;
                if g.starting[view.local] == "DENY" {
                    deny.insert((group, node));
                }
            }
        }
        Ok(deny)
    }

    /// The audit of a settled cluster, from the outside.
    fn audit(&mut self) -> Result<()> {
        // clpstat on both nodes agrees on the holders...
        let views = [self.clpstat(FWS1)?, self.clpstat(FWS2)?];
        let holder = |view: &cluster_ctl::status::StatusView, group: &str| -> Option<String> {
            let g = view.groups.iter().find(|g| g.name == group)?;
            let on = g.states.iter().position(|s| s == "ONLINE")?;
            Some(view.servers[on].name.clone())
        };
        for group in GROUPS {
            let (a, b) = (holder(&views[0], group), holder(&views[1], group));
            ensure!(
                a.is_some() && a == b,
                "clpstat: {group} on {a:?} for {FWS1}, {b:?} for {FWS2}"
            );
        }
        // ...and with the client: each address answered by the holder alone.
        for (group, fip, parp) in ADDRESSES {
            let expected = holder(&views[0], group).expect("checked");
            for address in [fip, parp] {
                self.until(Duration::from_secs(2), |c| {
                    let who: Vec<String> = c
                        .answerers(address)?
                        .into_iter()
                        .map(|m| c.node_of_mac(m))
                        .collect();
                    ensure!(
                        who == [expected.clone()],
                        "{group} {address} answered by {who:?}, clpstat says {expected}"
                    );
                    Ok(())
                })?;
            }
        }
        // Data through the floating gateway (group0) and to group1's address.
        for destination in [seed::INTRA_CLIENT1_ADDRESS, ADDRESSES[1].1] {
            self.until(Duration::from_secs(3), |c| {
                ensure!(
                    c.lab.ping(INET_CLIENT, destination, 2)? > 0,
                    "no reply from {destination}"
                );
                Ok(())
            })?;
        }
        self.flows_once()?;
        self.leaks()
    }

    /// UDP flows to the shared address: each frame passed by exactly one node.
    fn flows_once(&self) -> Result<()> {
        let counters = |c: &Self| -> Result<(u64, u64)> {
            let mut passed = 0;
            let mut dropped = 0;
            for node in NODES {
                let view = c.cluster.status(node)?;
                passed += view.xdp_counters.get("flow_passed").copied().unwrap_or(0);
                dropped += view.xdp_counters.get("flow_dropped").copied().unwrap_or(0);
            }
            Ok((passed, dropped))
        };
        let owned: usize = NODES
            .iter()
            .map(|n| {
                self.cluster
                    .status(n)
                    .map(|v| v.flow_buckets.get("ls0").copied().unwrap_or(0))
            })
            .sum::<Result<usize>>()?;
        ensure!(owned == 1024, "the nodes own {owned} of 1024 buckets");
        // The first frame resolves the shared address; the kernel may hold only a few frames
        // while it does.
        self.send_flows(1)?;
        std::thread::sleep(Duration::from_millis(100));
        let (p0, d0) = counters(self)?;
        self.send_flows(FLOWS)?;
        self.until(Duration::from_secs(1), |c| {
            let (p, d) = counters(c)?;
            ensure!(
                p - p0 == u64::from(FLOWS) && d - d0 == u64::from(FLOWS),
                "{FLOWS} flow-share frames: {} passed, {} dropped in total (each must be passed once and dropped once)",
                p - p0,
                d - d0
            );
            Ok(())
        })
    }

    fn send_flows(&self, count: u16) -> Result<()> {
        crate::in_netns(self.lab.ns(INET_CLIENT), move || -> Result<()> {
            for _ in 0..count {
                // A new source port (a new flow) each time.
                let socket = std::net::UdpSocket::bind(("192.0.2.100", 0))?;
                socket.send_to(b"chaos", (SHARED, 9))?;
            }
            Ok(())
        })?
    }

    /// No stray processes in the firewalls (hung scripts are killed), no namespaces beyond the
    /// lab's, and no file descriptor or memory growth in a daemon process.
    fn leaks(&mut self) -> Result<()> {
        let mine: BTreeSet<String> = self.lab.namespaces().into_iter().collect();
        let prefix = self.lab.prefix();
        let extra: Vec<String> = crate::existing_lab_namespaces()
            .into_iter()
            .filter(|n| n.starts_with(prefix) && !mine.contains(n))
            .collect();
        ensure!(extra.is_empty(), "namespaces nobody made: {extra:?}");
        for node in NODES {
            let supervisor = self.cluster.pid(node).context("daemon")?;
            let worker = self.cluster.worker_pid(node).context("worker")?;
            let mut expected = BTreeSet::from([supervisor, worker]);
            let holders = self.holders(node)?;
            if holders["group0"] == [node] {
                expected.insert(
                    *self
                        .cluster
                        .status(node)?
                        .exec_pids
                        .get("group0-exec0")
                        .context("monitored process")?,
                );
            }
            let processes: BTreeSet<u32> = crate::netns::processes(self.lab.ns(node))?
                .into_iter()
                .collect();
            ensure!(
                processes == expected,
                "processes in {node}: {:?}, expected {expected:?}",
                processes
                    .iter()
                    .map(|p| format!("{p} {}", crate::netns::command_line(*p)))
                    .collect::<Vec<_>>()
            );
            for pid in [supervisor, worker] {
                let fds = fs::read_dir(format!("/proc/{pid}/fd"))?.count();
                let rss = rss_kib(pid)?;
                let base = self
                    .baselines
                    .entry(pid)
                    .or_insert(Baseline { fds, rss_kib: rss });
                let fd_growth = fds.saturating_sub(base.fds);
                let rss_growth = rss.saturating_sub(base.rss_kib);
                self.max_fd_growth = self.max_fd_growth.max(fd_growth);
                self.max_rss_growth_kib = self.max_rss_growth_kib.max(rss_growth);
                ensure!(
                    fd_growth <= FD_SLACK,
                    "{node} pid {pid}: {} → {fds} open files",
                    base.fds
                );
                ensure!(
                    rss_growth <= RSS_SLACK_KIB,
                    "{node} pid {pid}: RSS {} → {rss} KiB",
                    base.rss_kib
                );
            }
        }
        Ok(())
    }

    /// One NOTICE mail per takeover after a failure (delivered after the server's outages).
    fn check_mails(&self, summary: &mut Summary) -> Result<()> {
        let takeovers = self.log_count("FWC201", "ACT_FAILOVER");
        let received = self.until(Duration::from_secs(90), |c| {
            let notices = smtp::mails(&c.maildir)
                .iter()
                .filter(|m| m.subject.starts_with("NOTICE"))
                .count();
            ensure!(
                notices >= takeovers,
                "{notices} takeover mails for {takeovers} takeovers"
            );
            Ok(())
        });
        summary.takeovers = takeovers;
        summary.takeover_mails = smtp::mails(&self.maildir)
            .iter()
            .filter(|m| m.subject.starts_with("NOTICE"))
            .count();
        received?;
        ensure!(
            summary.takeover_mails == takeovers,
            "{} takeover mails for {takeovers} takeovers (duplicates)",
            summary.takeover_mails
        );
        Ok(())
    }
}

/// Keeps the daemons' logs of a failed iteration (the cluster's directory goes with the run).
fn save_logs(cluster: &Cluster, seed: u64, iteration: usize) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/chaos-failures")
        .join(format!("seed{seed}-iteration{iteration}"));
    let views: String = NODES
        .iter()
        .map(|n| match cluster.status(n) {
            Ok(view) => format!(
                "--- {n} ---\n{}\n",
                serde_json::to_string_pretty(&view).unwrap_or_default()
            ),
            Err(e) => format!("--- {n} ---\n{e:#}\n"),
        })
        .collect();
    // Where each daemon's threads wait, and what runs under it (for a hang).
    let mut threads = String::new();
    for node in NODES {
        let Some(worker) = cluster.worker_pid(node) else {
            continue;
        };
        threads.push_str(&format!("--- {node} worker {worker} ---\n"));
        for task in fs::read_dir(format!("/proc/{worker}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let read = |f: &str| fs::read_to_string(task.path().join(f)).unwrap_or_default();
            threads.push_str(&format!(
                "{} {} {} | {}\n",
                read("comm").trim(),
                read("wchan").trim(),
                read("stat").split_whitespace().nth(2).unwrap_or(""),
                read("stack")
                    .lines()
                    .take(6)
                    .collect::<Vec<_>>()
                    .join(" < ")
            ));
        }
        // A user-space stack of every thread, where the machine has eu-stack (elfutils).
        if let Ok(out) = std::process::Command::new("eu-stack")
            .args(["-p", &worker.to_string()])
            .output()
        {
            threads.push_str(&String::from_utf8_lossy(&out.stdout));
            threads.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        for task in fs::read_dir(format!("/proc/{worker}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for pid in children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let fields: Vec<&str> = status
                    .lines()
                    .filter(|l| {
                        ["State", "PPid", "SigBlk", "SigIgn"]
                            .iter()
                            .any(|f| l.starts_with(f))
                    })
                    .collect();
                threads.push_str(&format!(
                    "child {pid} of task {}: {} | {}\n",
                    task.file_name().to_string_lossy(),
                    crate::netns::command_line(pid),
                    fields.join(" ")
                ));
            }
        }
    }
    let saved = fs::create_dir_all(&dir)
        .and_then(|()| fs::write(dir.join("threads.txt"), threads))
        .and_then(|()| fs::write(dir.join("daemons.log"), cluster.all_logs()))
        .and_then(|()| fs::write(dir.join("status.json"), views));
    match saved {
        Ok(()) => dir.join("daemons.log").display().to_string(),
        Err(e) => format!("not saved ({e})"),
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no VmRSS for {pid}"))
}

/// Prints a run's summary.
pub fn print(summary: &Summary) {
    println!(
        "chaos: seed {}, iterations {}..{}, {:.0} s",
        summary.seed,
        summary.first_iteration,
        summary.first_iteration + summary.iterations,
        summary.wall_seconds
    );
    for (kind, count) in &summary.faults {
        println!("  {kind:?}: {count}");
    }
    println!(
        "  takeovers after a failure: {}, takeover mails: {}; daemon growth: {} fds, {} KiB RSS at most",
        summary.takeovers,
        summary.takeover_mails,
        summary.max_fd_growth,
        summary.max_rss_growth_kib
    );
    println!(
        "  faults with a move or a gap that a daemon's reported pause (FWC013) explains: {}",
        summary.machine_moves
    );
    match &summary.failure {
        None => println!("chaos: all {} iterations passed", summary.iterations),
        Some(failure) => println!("chaos: FAILED (seed {}): {failure}", summary.seed),
    }
}

/// Writes a summary as JSON.
pub fn write_json(summary: &Summary, path: &Path) -> Result<()> {
    fs::write(path, serde_json::to_string_pretty(summary)?)?;
    Ok(())
}

/// Fails when a run failed.
pub fn check(summary: &Summary) -> Result<()> {
    if let Some(failure) = &summary.failure {
        bail!("chaos failed (seed {}): {failure}", summary.seed);
    }
    Ok(())
}
