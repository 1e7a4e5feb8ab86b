//! What `clpstat` shows: a serializable view of the cluster from one node, and the three screens
//! of the seed (`-s` status, `-n` interconnect map, `-i` configuration).

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, Failback, Recover, StartMode},
    sync::monitor::{ConntrackdStats, SyncLink, SyncSnapshot},
};
use cluster_engine::{GroupState, Status};

/// One resource line of `clpstat -s`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceView {
    pub name: String,
    /// `ipw`, `fip`, `parp`, `exec`.
    pub kind: String,
    /// Runs on every server (`<A>`, IPW) or on the active one (`<U>`).
    pub all_servers: bool,
    /// Address lines, or `S:`/`W:` and `E:` paths.
    pub details: Vec<String>,
    /// Per server: ONLINE, OFFLINE, ERROR or UNKNOWN.
    pub states: Vec<String>,
    pub recover: String,
    /// Retries used here / allowed.
    pub retry: (u32, u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    /// Per server: ONLINE, OFFLINE, STARTING, STOPPING, ERROR or UNKNOWN.
    pub states: Vec<String>,
    /// Per server: its position in the policy ("1st", "2nd", …, or "-").
    pub policy: Vec<String>,
    /// Per server: ALLOW, DENY or UNKNOWN.
    pub starting: Vec<String>,
    pub resources: Vec<ResourceView>,
    /// Epoch of the ownership on each server.
    pub epochs: Vec<Option<u64>>,
    pub environment: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerView {
    pub name: String,
    /// ONLINE or OFFLINE.
    pub status: String,
    pub interconnect: Vec<String>,
    /// Per link: heartbeats of this server arrive here (always true for the local server).
    pub links: Vec<bool>,
    /// Per link as this server reports it (it hears the local server), if known.
    pub heard_by_it: Option<Vec<bool>>,
    pub config_mismatch: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpView {
    pub interface: String,
    pub mode: String,
}

/// Everything `clpstat` can show, as one node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub cluster: String,
    pub version: String,
    /// Index of the server that answered.
    pub local: usize,
    pub servers: Vec<ServerView>,
    pub groups: Vec<GroupView>,
    pub xdp: Vec<XdpView>,
    pub xdp_counters: BTreeMap<String, u64>,
    pub rejected_packets: BTreeMap<String, u64>,
    /// PIDs of running monitored EXEC processes, by resource name.
    pub exec_pids: BTreeMap<String, u32>,
    /// Flow-share buckets owned by the local server, by instance.
    pub flow_buckets: BTreeMap<String, usize>,
    /// Groups this node took over after a failure: group → cause → count.
    pub takeovers: BTreeMap<String, BTreeMap<String, u64>>,
    /// Heartbeats received from each peer on each interconnect.
    pub heartbeats: Vec<HeartbeatView>,
    /// The MAC each proxy-ARP address is answered with here, by resource name.
    #[serde(default)]
    pub proxy_arp_macs: BTreeMap<String, String>,
    /// Session synchronization, when `[sync]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncView>,
    /// This daemon's life (its boot id): another one after a restart.
    #[serde(default)]
    pub incarnation: u64,
    /// The heartbeat wire version this daemon speaks (0: a release from before it was shown).
    #[serde(default)]
    pub wire_version: u8,
    /// The version of its data path's map layouts (`cluster_common::ABI_VERSION`; 0: not shown).
    #[serde(default)]
    pub abi_version: u32,
    /// An in-place restart asked for with `clpcfg restart`: under way, or why it was
    /// withdrawn (the daemon then runs on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    pub config: Config,
}

/// Session synchronization as this node sees it (R-SYNC-5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncView {
    /// Per server: OK (its connections are replicated), SYNCING (starting: it waits for the
    /// peers' entries), NG (not replicated: conntrackd down or the sync link lost) or `-`
    /// (offline).
    pub states: Vec<String>,
    /// The sync link to the peer: up, silent, peer offline, conntrackd not running.
    pub link: String,
    pub conntrackd_pid: u32,
    /// Entries in this node's kernel table, the peers' included.
    pub kernel_entries: Option<u64>,
    /// conntrackd's counters; `None` while it does not answer.
    pub stats: Option<ConntrackdStats>,
    /// Since the peer's sync messages last arrived, in milliseconds.
    pub silent_ms: Option<u64>,
    /// When this node last sent its whole table to the peers, in seconds since the Unix epoch.
    pub last_bulk_sent: Option<u64>,
    /// How long the last takeover's claim of the peers' entries took, in the background.
    pub last_claim_ms: Option<u64>,
    /// How often this node reads its table to keep the peers' copies of its flows from
    /// expiring, in seconds; entries refreshed so far; the last reading's entries and time.
    #[serde(default)]
    pub refresh_period_s: Option<u64>,
    #[serde(default)]
    pub refreshed: Option<u64>,
    #[serde(default)]
    pub refresh_read: Option<u64>,
    #[serde(default)]
    pub refresh_took_ms: Option<u64>,
    /// Helpers' state (FTP, SIP expectations; sequence adjustments) sent to the peers,
    /// written here from them, refused here.
    #[serde(default)]
    pub helper_copies_sent: u64,
    #[serde(default)]
    pub helper_copies_written: u64,
    #[serde(default)]
    pub helper_copies_refused: u64,
}

impl SyncView {
    /// The view from the engine's snapshot, the judged link and conntrackd's snapshot.
    pub fn build(
        status: &Status,
        link: SyncLink,
        snapshot: &SyncSnapshot,
        conntrackd_pid: u32,
        now: std::time::Instant,
    ) -> Self {
        let states = (0..status.online.len())
            .map(|n| {
                if !status.online[n] {
                    "-"
                } else if link.lost() {
                    "NG"
                } else if status.syncing[n] {
                    "SYNCING"
                } else {
                    "OK"
                }
                .to_owned()
            })
            .collect();
        Self {
            states,
            link: link.as_str().to_owned(),
            conntrackd_pid,
            kernel_entries: snapshot.kernel_entries,
            stats: snapshot.stats.clone(),
            silent_ms: snapshot
                .heard_at
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            last_bulk_sent: snapshot.last_bulk.and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            }),
            last_claim_ms: snapshot.last_claim.map(|d| d.as_millis() as u64),
            refresh_period_s: snapshot.refresh_period.map(|d| d.as_secs()),
            refreshed: snapshot.refresh.map(|r| r.refreshed),
            refresh_read: snapshot.refresh.map(|r| r.read),
            refresh_took_ms: snapshot.refresh.map(|r| r.took.as_millis() as u64),
            helper_copies_sent: snapshot.helper_copies.sent,
            helper_copies_written: snapshot.helper_copies.written,
            helper_copies_refused: snapshot.helper_copies.refused,
        }
    }
}

/// Heartbeats from one peer on one interconnect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatView {
    pub peer: String,
    pub link: usize,
    pub received: u64,
    /// Longest gap between two heartbeats, in microseconds (the interval when nothing is lost).
    pub max_gap_us: u64,
    /// The interface on which this peer's heartbeats arrive but the local firewall drops them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_locally_on: Option<String>,
}

fn ordinal(n: usize) -> String {
    match n + 1 {
        1 => "1st".into(),
        2 => "2nd".into(),
        3 => "3rd".into(),
        k => format!("{k}th"),
    }
}

fn on_off(flag: bool) -> &'static str {
    if flag { "on" } else { "off" }
}

fn dotted_mask(prefix: u8) -> String {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    std::net::Ipv4Addr::from(mask).to_string()
}

/// Address `a.b.c.d/255.255.255.0`, as the seed prints it; IPv6 addresses with their prefix
/// length (`2001:db8::10/64`), as IPv6 is written everywhere.
pub fn address_with_mask(net: &ipnet::IpNet) -> String {
    match net {
        ipnet::IpNet::V4(net) => format!("{}/{}", net.addr(), dotted_mask(net.prefix_len())),
        ipnet::IpNet::V6(net) => net.to_string(),
    }
}

impl StatusView {
    /// Builds the view from the engine's snapshot and the configuration.
    pub fn build(config: &Config, status: &Status, extras: Extras) -> Self {
        let servers = config
            .server
            .iter()
            .enumerate()
            .map(|(n, s)| ServerView {
                name: s.name.clone(),
                status: if status.online[n] {
                    "ONLINE"
                } else {
                    "OFFLINE"
                }
                .into(),
                interconnect: s.interconnect.iter().map(address_with_mask).collect(),
                links: status.links[n].clone(),
                heard_by_it: status.peer_links[n].map(|bits| {
                    (0..s.interconnect.len())
                        .map(|l| bits & (1 << l) != 0)
                        .collect()
                }),
                config_mismatch: status.mismatch.get(n).copied().unwrap_or(false),
            })
            .collect();
        let groups = config
            .group
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let nodes = &status.groups[g].nodes;
                let policy = (0..config.server.len())
                    .map(|n| {
                        group
                            .policy
                            .iter()
                            .position(|p| *p == config.server[n].name)
                            .map_or("-".into(), ordinal)
                    })
                    .collect();
                let states = nodes
                    .iter()
                    .map(|r| r.map_or("UNKNOWN".into(), |r| r.state.as_str().to_owned()))
                    .collect();
                let starting = nodes
                    .iter()
                    .map(|r| {
                        r.map_or("UNKNOWN".into(), |r| {
                            if r.deny { "DENY" } else { "ALLOW" }.into()
                        })
                    })
                    .collect();
                let step_state = |step: usize| -> Vec<String> {
                    nodes
                        .iter()
                        .map(|r| match r {
                            None => "UNKNOWN".into(),
                            Some(r) if r.errors & (1 << step.min(30)) != 0 => "ERROR".into(),
                            Some(r)
                                if matches!(
                                    r.state,
                                    GroupState::Online
                                        | GroupState::Deactivating
                                        | GroupState::Activating
                                ) =>
                            {
                                "ONLINE".into()
                            }
                            Some(_) => "OFFLINE".into(),
                        })
                        .collect()
                };
                let retries = &status.groups[g].retries;
                let mut resources = Vec::new();
                for (k, ipw) in group.ipw.iter().enumerate() {
                    resources.push(ResourceView {
                        name: format!("{}-ipw{k}", group.name),
                        kind: "ipw".into(),
                        all_servers: true,
                        details: vec![
                            ipw.targets
                                .iter()
                                .map(|t| t.to_string())
                                .collect::<Vec<_>>()
                                .join(" | "),
                        ],
                        states: nodes
                            .iter()
                            .map(|r| match r {
                                None => "UNKNOWN".into(),
                                Some(r) if r.healthy => "ONLINE".into(),
                                Some(_) => "ERROR".into(),
                            })
                            .collect(),
                        recover: ipw.recover.as_str().into(),
                        retry: (ipw.retry, ipw.retry),
                    });
                }
                let mut step = 0;
                for (k, fip) in group.fip.iter().enumerate() {
                    resources.push(ResourceView {
                        name: format!("{}-fip{k}", group.name),
                        kind: "fip".into(),
                        all_servers: false,
                        details: vec![address_with_mask(&fip.address)],
                        states: step_state(step),
                        recover: fip.recover.as_str().into(),
                        retry: (retries.get(step).copied().unwrap_or(0), fip.retry),
                    });
                    step += 1;
                }
                for (k, parp) in group.parp.iter().enumerate() {
                    resources.push(ResourceView {
                        name: format!("{}-parp{k}", group.name),
                        kind: "parp".into(),
                        all_servers: false,
                        details: vec![parp.address.to_string()],
                        states: step_state(step),
                        recover: parp.recover.as_str().into(),
                        retry: (retries.get(step).copied().unwrap_or(0), parp.retry),
                    });
                    step += 1;
                }
                for (k, exec) in group.exec.iter().enumerate() {
                    resources.push(ResourceView {
                        name: format!("{}-exec{k}", group.name),
                        kind: "exec".into(),
                        all_servers: false,
                        details: vec![
                            format!("{}: {}", if exec.monitor { "W" } else { "S" }, exec.start),
                            format!("E: {}", exec.stop),
                        ],
                        states: step_state(step),
                        recover: exec.recover.as_str().into(),
                        retry: (retries.get(step).copied().unwrap_or(0), exec.retry),
                    });
                    step += 1;
                }
                GroupView {
                    name: group.name.clone(),
                    states,
                    policy,
                    starting,
                    resources,
                    epochs: nodes.iter().map(|r| r.map(|r| r.epoch)).collect(),
                    environment: status.groups[g].environment.into(),
                }
            })
            .collect();
        Self {
            cluster: config.cluster.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            local: status.me,
            servers,
            groups,
            xdp: extras.xdp,
            xdp_counters: extras.xdp_counters,
            rejected_packets: extras.rejected_packets,
            exec_pids: extras.exec_pids,
            flow_buckets: extras.flow_buckets,
            takeovers: extras.takeovers,
            heartbeats: extras.heartbeats,
            proxy_arp_macs: extras.proxy_arp_macs,
            sync: extras.sync,
            incarnation: extras.incarnation,
            wire_version: crate::heartbeat::wire::VERSION,
            abi_version: cluster_common::ABI_VERSION,
            restart: extras.restart,
            config: config.clone(),
        }
    }
}

/// Facts from outside the engine.
#[derive(Default)]
pub struct Extras {
    pub xdp: Vec<XdpView>,
    pub xdp_counters: BTreeMap<String, u64>,
    pub rejected_packets: BTreeMap<String, u64>,
    pub exec_pids: BTreeMap<String, u32>,
    pub flow_buckets: BTreeMap<String, usize>,
    pub takeovers: BTreeMap<String, BTreeMap<String, u64>>,
    pub heartbeats: Vec<HeartbeatView>,
    pub proxy_arp_macs: BTreeMap<String, String>,
    pub sync: Option<SyncView>,
    pub incarnation: u64,
    pub restart: Option<String>,
}

const LABEL: usize = 22;
const COLUMN: usize = 9;

fn row(out: &mut String, label: &str, cells: &[String]) {
    let _ = write!(out, "{label:<LABEL$}");
    for cell in cells {
        let _ = write!(out, "{cell:<COLUMN$}");
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
}

fn rule(out: &mut String, servers: usize) {
    out.push_str(&"-".repeat(LABEL + COLUMN * servers));
    out.push('\n');
}

/// `clpstat -s`.
pub fn render_status(view: &StatusView) -> String {
    let mut out = String::from("===== CLUSTER STATUS =====\n");
    for (n, server) in view.servers.iter().enumerate() {
        let marker = if n == view.local { '*' } else { ' ' };
        let line = format!("{marker} server{n} : {}", server.name);
        if n == 0 {
            let _ = writeln!(out, "{line:<32}{}", view.version);
        } else {
            let _ = writeln!(out, "{line}");
        }
    }
    let headers: Vec<String> = (0..view.servers.len())
        .map(|n| format!("server{n}"))
        .collect();
    row(&mut out, "", &headers);
    rule(&mut out, view.servers.len());
    let statuses: Vec<String> = view.servers.iter().map(|s| s.status.clone()).collect();
    row(&mut out, "SERVER STATUS", &statuses);
    if let Some(sync) = &view.sync {
        row(&mut out, "SYNC", &sync.states);
    }
    for (g, group) in view.groups.iter().enumerate() {
        row(&mut out, &format!("GROUP{g} STATUS"), &group.states);
        row(&mut out, "POLICY", &group.policy);
        row(&mut out, "STARTING", &group.starting);
        for resource in &group.resources {
            let tag = if resource.all_servers { "<A>" } else { "<U>" };
            row(
                &mut out,
                &format!("{tag} {}", resource.name),
                &resource.states,
            );
            for detail in &resource.details {
                let _ = writeln!(out, "    {detail}");
            }
        }
    }
    rule(&mut out, view.servers.len());
    for (n, server) in view.servers.iter().enumerate() {
        if server.config_mismatch {
            let _ = writeln!(
                out,
                "! server{n} ({}) runs a different configuration (or a release with another flow \
                 hash): its state is ignored and nothing new is started until the files match \
                 (FWC106)",
                server.name
            );
        }
    }
    if let Some(sync) = &view.sync {
        let _ = writeln!(out, "{}", sync_line(sync));
    }
    for xdp in &view.xdp {
        let _ = writeln!(out, "XDP {} : {}", xdp.interface, xdp.mode);
    }
    for (name, buckets) in &view.flow_buckets {
        let share = view.config.flowshare.iter().find(|f| &f.name == name);
        let total = share.map_or(0, |f| f.buckets);
        let _ = writeln!(out, "FLOWSHARE {name} : {buckets}/{total} buckets here");
    }
    out
}

/// The sync summary under `clpstat -s`: the link, the table, what is unacknowledged.
fn sync_line(sync: &SyncView) -> String {
    let mut line = format!("SYNC : link {}", sync.link);
    if let Some(entries) = sync.kernel_entries {
        let _ = write!(line, ", {entries} entries in the kernel table");
    }
    if let Some(stats) = &sync.stats {
        let _ = write!(
            line,
            ", {} replicated from here, {} received, {} unacknowledged, {} lost and resent",
            stats.replicated, stats.injected_created, stats.unacknowledged, stats.lost_messages
        );
    }
    if let Some(silent) = sync.silent_ms {
        let _ = write!(line, ", peer heard {:.1} s ago", silent as f64 / 1000.0);
    }
    if let Some(bulk) = sync.last_bulk_sent {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(bulk);
        let _ = write!(
            line,
            ", last bulk sent {}",
            humantime::format_rfc3339_seconds(at)
        );
    }
    let _ = write!(
        line,
        ", helpers' state {} sent, {} received",
        sync.helper_copies_sent, sync.helper_copies_written
    );
    if sync.helper_copies_refused > 0 {
        let _ = write!(line, " ({} refused)", sync.helper_copies_refused);
    }
    if let Some(period) = sync.refresh_period_s {
        let _ = write!(line, ", live flows' copies refreshed every {period} s");
        if let Some(refreshed) = sync.refreshed {
            let _ = write!(line, " ({refreshed} so far)");
        }
    }
    line
}

/// `clpstat -n`: every server's interconnects as seen from each server. For the local server
/// that is what it hears; for a peer, what the peer reports hearing from the local server
/// (other pairs are not known here: `-`).
pub fn render_interconnects(view: &StatusView) -> String {
    let mut out = String::from("===== INTERCONNECT INFORMATION =====\n");
    for (n, server) in view.servers.iter().enumerate() {
        let _ = writeln!(out, "server{n} : {}", server.name);
    }
    let count = view.servers.len();
    let headers: Vec<String> = (0..count).map(|k| format!("server{k}")).collect();
    for (n, server) in view.servers.iter().enumerate() {
        out.push('\n');
        let _ = writeln!(out, "[on server{n} : {}]", server.status);
        row(&mut out, "address", &headers);
        rule(&mut out, count);
        for (link, address) in server.interconnect.iter().enumerate() {
            let cells: Vec<String> = (0..count)
                .map(|k| {
                    let ok = if k == n {
                        Some(true)
                    } else if n == view.local {
                        view.servers[k].links.get(link).copied()
                    } else if k == view.local {
                        server
                            .heard_by_it
                            .as_ref()
                            .and_then(|h| h.get(link).copied())
                    } else {
                        None
                    };
                    let dropped = n == view.local
                        && view.heartbeats.iter().any(|hb| {
                            hb.link == link
                                && hb.peer == view.servers[k].name
                                && hb.dropped_locally_on.is_some()
                        });
                    match ok {
                        Some(true) => "OK".into(),
                        Some(false) if dropped => "DROPPED".into(),
                        Some(false) => "NG".into(),
                        None => "-".into(),
                    }
                })
                .collect();
            let address = address.split('/').next().unwrap_or(address);
            row(&mut out, address, &cells);
        }
    }
    for hb in view.heartbeats.iter() {
        if let Some(interface) = &hb.dropped_locally_on {
            let _ = writeln!(
                out,
                "\n! interconnect {}: heartbeats from {} reach {interface} but the local firewall \
                 drops them; accept UDP {} from the servers' interconnect addresses (clpcfg nft)",
                hb.link, hb.peer, view.config.cluster.heartbeat_port
            );
        }
    }
    out
}

/// The seed's RETRY count: retries left of those configured (`5/5` for a healthy address, `4/5`
/// after one retry), the same form for every resource.
fn retries_left((used, max): (u32, u32)) -> String {
    format!("{}/{max}", max.saturating_sub(used))
}

fn recover_text(r: Recover) -> &'static str {
    r.as_str()
}

/// `clpstat -i`.
pub fn render_config(view: &StatusView) -> String {
    let c = &view.config;
    let mut out = String::from("===== CLUSTER INFORMATION =====\n");
    let local = &view.servers[view.local].name;
    let _ = writeln!(out, "SERVER : {local}");
    out.push_str("-----\nCLUSTER :\n");
    let secs = |d: std::time::Duration| humantime::format_duration(d).to_string();
    // The seed's STARTUP: whether the groups start by themselves when the cluster does, from
    // the groups' `start` (MIXED when they differ; each group's own is its START below).
    let startup = match (
        c.group.iter().all(|g| g.start == StartMode::Auto),
        c.group.iter().all(|g| g.start == StartMode::Manual),
    ) {
        (true, _) => "AUTO",
        (_, true) => "MANUAL",
        _ => "MIXED",
    };
    let fields: Vec<(&str, String)> = vec![
        ("STARTUP", startup.into()),
        ("WAIT timeout", secs(c.cluster.wait_timeout)),
        ("HB port", c.cluster.heartbeat_port.to_string()),
        ("HB interval", secs(c.cluster.heartbeat_interval)),
        ("HB timeout", secs(c.cluster.heartbeat_timeout)),
        ("API port", c.cluster.api_port.to_string()),
        ("API timeout", secs(c.cluster.api_timeout)),
        ("RECOVER", format!("{:?}", c.cluster.recover).to_uppercase()),
        ("RETRY count", c.cluster.retry.to_string()),
        (
            "TIEBREAKER",
            if c.cluster.tiebreakers.is_empty() {
                "NONE".into()
            } else {
                c.cluster
                    .tiebreakers
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        ),
        (
            "XDP mode",
            format!("{:?}", c.cluster.xdp_mode).to_uppercase(),
        ),
    ];
    for (k, v) in fields {
        let _ = writeln!(out, "  {k:<14}: {v}");
    }
    if let Some(sync) = &c.sync {
        let _ = writeln!(out, "SYNC :");
        let _ = writeln!(out, "  INTERCONNECT  : {}", sync.interconnect);
        let _ = writeln!(out, "  UDP port      : {}", sync.port);
        let _ = writeln!(out, "  WAIT          : {}", secs(sync.wait));
        let _ = writeln!(out, "  TRANSPORT     : conntrackd FTFW over UDP");
        let _ = writeln!(
            out,
            "  PEER ENTRIES  : in the kernel table as they arrive (no commit at takeover)"
        );
    }
    for (n, server) in c.server.iter().enumerate() {
        let _ = writeln!(out, "SERVER{n} : {}", server.name);
        for (i, net) in server.interconnect.iter().enumerate() {
            let _ = writeln!(out, "  INTERCONNECT{i} : {}", address_with_mask(net));
        }
    }
    for (g, group) in c.group.iter().enumerate() {
        let gv = &view.groups[g];
        let _ = writeln!(out, "GROUP{g} : {}", group.name);
        let start = match group.start {
            StartMode::Auto => "AUTO",
            StartMode::Manual => "MANUAL",
        };
        let failback = match group.failback {
            Failback::Auto => "AUTO",
            Failback::Manual => "MANUAL",
        };
        let policy: Vec<String> = group
            .policy
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{i}:{n}"))
            .collect();
        let _ = writeln!(out, "  START          : {start}");
        let _ = writeln!(out, "  FAILBACK       : {failback}");
        let _ = writeln!(out, "  ENVIRONMENT    : {}", gv.environment);
        // A group recovers through its resources (each has its own RECOVER/RETRY below); the
        // group itself has no recovery action or retries of its own, as in the seed's example.
        let _ = writeln!(out, "  RECOVER        : IGNORE");
        let _ = writeln!(out, "  RETRY count    : 0/0");
        let _ = writeln!(out, "  FAILOVER policy : {}", policy.join(" "));
        for (k, ipw) in group.ipw.iter().enumerate() {
            let _ = writeln!(out, "IPW{k} : {}-ipw{k}", group.name);
            let _ = writeln!(out, "  TYPE           : ASR");
            let targets: Vec<String> = ipw.targets.iter().map(|t| t.to_string()).collect();
            let _ = writeln!(out, "  POLLING address : {}", targets.join(" | "));
            let _ = writeln!(out, "  INTERVAL       : {}", secs(ipw.interval));
            let _ = writeln!(out, "  TIMEOUT        : {}", secs(ipw.timeout));
            let _ = writeln!(out, "  RECOVER        : {}", recover_text(ipw.recover));
            // An IP watch entry's retries are its tolerated failed rounds, renewed each round.
            let _ = writeln!(out, "  RETRY count    : {}", retries_left((0, ipw.retry)));
        }
        let resource = |name: &str| gv.resources.iter().find(|r| r.name == name);
        let mut labels: BTreeMap<String, usize> = BTreeMap::new();
        for (k, fip) in group.fip.iter().enumerate() {
            let name = format!("{}-fip{k}", group.name);
            let retry = resource(&name).map_or((0, fip.retry), |r| r.retry);
            let interface = fip
                .interface
                .clone()
                .unwrap_or_else(|| "(by subnet)".into());
            let _ = writeln!(out, "FIP{k} : {name}");
            let _ = writeln!(out, "  TYPE           : USR");
            let _ = writeln!(
                out,
                "  ADDRESS        : {}",
                address_with_mask(&fip.address)
            );
            // IPv4 addresses carry a label (`eth0:1`); IPv6 addresses have none.
            if fip.address.addr().is_ipv4() {
                let n = labels.entry(interface.clone()).or_insert(0);
                *n += 1;
                let _ = writeln!(out, "  INTERFACE      : {interface}:{n}");
            } else {
                let _ = writeln!(out, "  INTERFACE      : {interface}");
                let _ = writeln!(out, "  ROUTER flag    : {}", on_off(fip.router));
            }
            let _ = writeln!(out, "  PING count     : {}", fip.ping_count);
            if !fip.hide.is_empty() {
                let sources: Vec<String> = fip.hide.iter().map(|n| n.to_string()).collect();
                let _ = writeln!(out, "  HIDE NAT       : {}", sources.join(" "));
            }
            let _ = writeln!(out, "  ARP count      : {}", fip.arp_count);
            let _ = writeln!(out, "  RECOVER        : {}", recover_text(fip.recover));
            let _ = writeln!(out, "  RETRY count    : {}", retries_left(retry));
        }
        for (k, parp) in group.parp.iter().enumerate() {
            let name = format!("{}-parp{k}", group.name);
            let retry = resource(&name).map_or((0, parp.retry), |r| r.retry);
            let _ = writeln!(out, "PARP{k} : {name}");
            let _ = writeln!(out, "  TYPE           : USR");
            let _ = writeln!(out, "  IP ADDRESS     : {}", parp.address);
            if parp.address.is_ipv6() {
                let _ = writeln!(out, "  ROUTER flag    : {}", on_off(parp.router));
            }
            let mac = view.proxy_arp_macs.get(&name).cloned().unwrap_or_else(|| {
                parp.mac
                    .map_or("(interface)".into(), |m| m.to_string().to_uppercase())
            });
            let _ = writeln!(out, "  MAC ADDRESS    : {mac}");
            let _ = writeln!(out, "  INTERFACE      : {}", parp.interface);
            if let Some(inner) = parp.static_nat {
                let _ = writeln!(out, "  STATIC NAT     : {inner}");
            }
            let _ = writeln!(out, "  ARP count      : {}", parp.arp_count);
            let _ = writeln!(out, "  RECOVER        : {}", recover_text(parp.recover));
            let _ = writeln!(out, "  RETRY count    : {}", retries_left(retry));
        }
        for (k, exec) in group.exec.iter().enumerate() {
            let name = format!("{}-exec{k}", group.name);
            let retry = resource(&name).map_or((0, exec.retry), |r| r.retry);
            let pid = view
                .exec_pids
                .get(&name)
                .map_or("-".into(), |p| p.to_string());
            let _ = writeln!(out, "EXEC{k} : {name}");
            let _ = writeln!(out, "  TYPE           : USR");
            let _ = writeln!(out, "  ACT path       : {}", exec.start);
            let _ = writeln!(out, "  DEACT path     : {}", exec.stop);
            let _ = writeln!(
                out,
                "  POLLING        : {}",
                if exec.monitor { "YES" } else { "NO" }
            );
            let _ = writeln!(out, "  PID            : {pid}");
            let _ = writeln!(out, "  RECOVER        : {}", recover_text(exec.recover));
            let _ = writeln!(out, "  RETRY count    : {}", retries_left(retry));
        }
    }
    out.push_str("=====\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(online: [bool; 2], syncing: [bool; 2]) -> Status {
        Status {
            me: 0,
            ready: !syncing[0],
            online: online.to_vec(),
            links: vec![vec![true], vec![online[1]]],
            peer_links: vec![None, online[1].then_some(1)],
            mismatch: vec![false, false],
            syncing: syncing.to_vec(),
            groups: Vec::new(),
        }
    }

    fn snapshot() -> SyncSnapshot {
        SyncSnapshot {
            answers: true,
            stats: Some(ConntrackdStats {
                replicated: 40,
                injected_created: 7,
                unacknowledged: 3,
                ..Default::default()
            }),
            kernel_entries: Some(47),
            heard_at: None,
            started_at: std::time::Instant::now(),
            last_bulk: None,
            last_claim: None,
            refresh_period: Some(std::time::Duration::from_secs(10)),
            refresh: Some(crate::sync::refresh::RefreshStats {
                refreshed: 12,
                read: 47,
                took: std::time::Duration::from_millis(3),
                failed: 0,
            }),
            helper_copies: crate::sync::helpers::HelperCounts {
                sent: 2,
                written: 1,
                refused: 0,
            },
        }
    }

    #[test]
    fn the_sync_row_says_ok_syncing_ng_or_offline_per_server() {
        let now = std::time::Instant::now();
        let row = |online, syncing, link| {
            SyncView::build(&status(online, syncing), link, &snapshot(), 1, now).states
        };
        assert_eq!(
            row([true, true], [false, false], SyncLink::Up),
            ["OK", "OK"]
        );
        assert_eq!(
            row([true, true], [true, false], SyncLink::Up),
            ["SYNCING", "OK"],
            "this node waits for the peer's entries"
        );
        assert_eq!(
            row([true, true], [false, true], SyncLink::Up),
            ["OK", "SYNCING"]
        );
        assert_eq!(
            row([true, true], [false, false], SyncLink::Silent),
            ["NG", "NG"]
        );
        assert_eq!(
            row([true, false], [false, false], SyncLink::PeerAway),
            ["OK", "-"]
        );
        assert_eq!(
            row([true, false], [false, false], SyncLink::NotRunning),
            ["NG", "-"]
        );
    }

    #[test]
    fn the_sync_summary_names_the_link_and_the_table() {
        let view = SyncView::build(
            &status([true, true], [false, false]),
            SyncLink::Silent,
            &snapshot(),
            1,
            std::time::Instant::now(),
        );
        assert_eq!(
            sync_line(&view),
            "SYNC : link silent, 47 entries in the kernel table, 40 replicated from here, 7 \
             received, 3 unacknowledged, 0 lost and resent, helpers' state 2 sent, 1 received, live \
             flows' copies refreshed every 10 s (12 so far)"
        );
    }
}
